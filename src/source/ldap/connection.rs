//! One LDAP session: connect (ldaps, or StartTLS on ldap), verify the server's
//! certificate against the built-in roots and `source.ca_file`, bind, and run
//! searches whose items the caller takes one at a time.

use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, PagedResults};
use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapResult, Scope, SearchStream};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::entry::Entry;
use crate::config::LdapConfig;
use crate::source::SourceError;

/// LDAP result codes idsync tells apart.
pub mod code {
    pub const SUCCESS: u32 = 0;
    pub const TIME_LIMIT: u32 = 3;
    pub const SIZE_LIMIT: u32 = 4;
    pub const REFERRAL: u32 = 10;
    pub const ADMIN_LIMIT: u32 = 11;
    pub const UNAVAILABLE_CRITICAL_EXTENSION: u32 = 12;
    pub const NO_SUCH_OBJECT: u32 = 32;
    /// RFC 4533 e-syncRefreshRequired: the cookie is refused, read everything.
    pub const SYNC_REFRESH_REQUIRED: u32 = 4096;
}

/// The TLS settings for every connection of one source.
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<ClientConfig>, SourceError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in ca_pem
        .map(CertificateDer::pem_slice_iter)
        .into_iter()
        .flatten()
    {
        let added = cert
            .map_err(|err| err.to_string())
            .and_then(|cert| roots.add(cert).map_err(|err| err.to_string()));
        added.map_err(|reason| SourceError::Client(format!("source.ca_file: {reason}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| SourceError::Client(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

pub struct Connection {
    ldap: Ldap,
    url: String,
    timeout: Duration,
}

/// What one search hands out.
pub enum Item {
    Entry(Entry, Vec<RawControl>),
    /// RFC 4533 SyncInfo, still encoded.
    Intermediate(ldap3::asn1::StructureTag),
    Referral(Vec<String>),
}

/// A search in progress. A task of its own takes the server's answers off the
/// connection as they come and decodes them, so that a paged search asks for the
/// next page while the one before is still being read.
pub struct Search<'a> {
    items: tokio::sync::mpsc::Receiver<Result<Item, String>>,
    taking: tokio::task::JoinHandle<LdapResult>,
    url: &'a str,
}

/// Items decoded ahead of the reader: a page or two.
const AHEAD: usize = 2048;

impl Connection {
    /// Connects and binds as `source.ldap.bind_dn` (anonymously without one).
    pub async fn open(config: &LdapConfig, tls: &Arc<ClientConfig>) -> Result<Self, SourceError> {
        let url = config.url.as_str().trim_end_matches('/').to_owned();
        let settings = LdapConnSettings::new()
            .set_conn_timeout(config.timeout)
            .set_starttls(config.start_tls)
            .set_config(tls.clone());
        let (driver, mut ldap) = LdapConnAsync::with_settings(settings, &url)
            .await
            .map_err(|err| failure(&url, format!("cannot connect: {err}")))?;
        tokio::spawn(async move {
            if let Err(err) = driver.drive().await {
                tracing::debug!(error = %err, "the LDAP connection ended");
            }
        });
        if let Some(bind) = &config.bind {
            let answer = ldap
                .with_timeout(config.timeout)
                .simple_bind(&bind.dn, bind.password.expose())
                .await
                .map_err(|err| failure(&url, format!("bind as {} failed: {err}", bind.dn)))?;
            if answer.rc != code::SUCCESS {
                let reason = format!("bind as {} refused: {}", bind.dn, result_text(&answer));
                return Err(failure(&url, reason));
            }
        }
        Ok(Self {
            ldap,
            url,
            timeout: config.timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Starts a search; `page_size` pages it (RFC 2696), `controls` go with it.
    pub async fn search<'a>(
        &'a mut self,
        base: &str,
        filter: &str,
        attributes: &[&str],
        page_size: Option<u32>,
        controls: Vec<RawControl>,
    ) -> Result<Search<'a>, SourceError> {
        let attributes: Vec<String> = attributes.iter().map(|a| (*a).to_owned()).collect();
        let mut adapters: Vec<Box<dyn Adapter<'static, String, Vec<String>>>> = Vec::new();
        if let Some(size) = page_size {
            adapters.push(Box::new(PagedResults::new(
                i32::try_from(size).unwrap_or(i32::MAX),
            )));
        }
        let stream = self
            .ldap
            .with_timeout(self.timeout)
            .with_controls(controls)
            .streaming_search_with(adapters, base, Scope::Subtree, filter, attributes)
            .await
            .map_err(|err| failure(&self.url, format!("search of {base} failed: {err}")))?;
        let (sender, items) = tokio::sync::mpsc::channel(AHEAD);
        Ok(Search {
            items,
            taking: tokio::spawn(take_items(stream, sender)),
            url: &self.url,
        })
    }

    /// A search for at most one entry, to check that `base` can be read.
    pub async fn probe(&mut self, base: &str, filter: &str) -> Result<usize, SourceError> {
        let options = ldap3::SearchOptions::new().sizelimit(1);
        let answer = self
            .ldap
            .with_timeout(self.timeout)
            .with_search_options(options)
            .search(base, Scope::Subtree, filter, vec!["1.1"])
            .await
            .map_err(|err| failure(&self.url, format!("search of {base} failed: {err}")))?;
        match answer.1.rc {
            code::SUCCESS | code::SIZE_LIMIT => Ok(answer.0.len()),
            _ => Err(failure(
                &self.url,
                format!("search of {base} answered {}", result_text(&answer.1)),
            )),
        }
    }

    /// Whether the server's root DSE lists the control `oid`.
    pub async fn supports_control(&mut self, oid: &str) -> Result<bool, SourceError> {
        let answer = self
            .ldap
            .with_timeout(self.timeout)
            .search("", Scope::Base, "(objectClass=*)", vec!["supportedControl"])
            .await
            .map_err(|err| failure(&self.url, format!("reading the root DSE failed: {err}")))?;
        let entries = answer.0.into_iter().map(|e| Entry::decode(e.0));
        let mut found = false;
        for entry in entries {
            let entry = entry.map_err(|reason| failure(&self.url, reason))?;
            found |= entry.texts("supportedControl").any(|c| c == oid);
        }
        Ok(found)
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

/// Takes a search's answers off the connection, decoded, until it ends or the
/// reader goes away; returns the server's result for the whole search.
async fn take_items(
    mut stream: SearchStream<'static, String, Vec<String>>,
    items: tokio::sync::mpsc::Sender<Result<Item, String>>,
) -> LdapResult {
    loop {
        let item = match stream.next().await {
            Ok(Some(entry)) => decode(entry),
            Ok(None) => break,
            Err(err) => Err(format!("the search broke off: {err}")),
        };
        let failed = item.is_err();
        if items.send(item).await.is_err() || failed {
            break;
        }
    }
    stream.finish().await
}

fn decode(entry: ldap3::ResultEntry) -> Result<Item, String> {
    if entry.is_ref() {
        return Ok(Item::Referral(ldap3::parse_refs(entry.0)));
    }
    if entry.is_intermediate() {
        return Ok(Item::Intermediate(entry.0));
    }
    let controls = entry.1.into_iter().map(|control| control.1).collect();
    Ok(Item::Entry(Entry::decode(entry.0)?, controls))
}

impl Search<'_> {
    /// The next item, or `None` once the server said the search is done.
    pub async fn next(&mut self) -> Result<Option<Item>, SourceError> {
        match self.items.recv().await {
            Some(item) => item.map(Some).map_err(|reason| failure(self.url, reason)),
            None => Ok(None),
        }
    }

    /// The server's result for the whole search.
    pub async fn finish(self) -> LdapResult {
        drop(self.items);
        self.taking.await.unwrap_or_else(|err| LdapResult {
            rc: 80,
            matched: String::new(),
            text: format!("the search's reading task failed: {err}"),
            refs: Vec::new(),
            ctrls: Vec::new(),
        })
    }
}

/// A failed LDAP operation: the run aborts.
pub fn failure(url: &str, reason: String) -> SourceError {
    SourceError::Ldap {
        url: url.to_owned(),
        reason,
    }
}

/// A result code with its name and the server's text.
pub fn result_text(result: &LdapResult) -> String {
    // LdapResult's Display is "rc=N (name), dn: ..., text: ...".
    let text = result.text.trim();
    if text.is_empty() {
        format!("result {}", result.rc)
    } else {
        format!("result {} ({text})", result.rc)
    }
}
