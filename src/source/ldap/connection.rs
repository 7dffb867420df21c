//! One LDAP session: connect (ldaps, or StartTLS on ldap), verify the server's
//! certificate against the built-in roots and `source.ca_file`, bind, and run
//! searches whose items the caller takes one at a time.

use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::{Integer, StructureTag, Tag, TagClass};
use ldap3::controls::RawControl;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::ber::{self, tag, Reader};
use super::entry::Entry;
use super::wire::{self, Answer, Outcome, SearchRequest, Wire};
use crate::config::{LdapBind, LdapConfig};
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

/// The byte stream under a session: TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

type Session = Wire<Box<dyn Stream>>;

pub struct Connection {
    /// Lent to the search in progress; `None` after one broke the session.
    session: Option<Session>,
    url: String,
    timeout: Duration,
}

/// What one search hands out.
pub enum Item {
    Entry(Entry, Vec<RawControl>),
    /// RFC 4533 SyncInfo, still encoded.
    Intermediate(StructureTag),
    Referral(Vec<String>),
}

/// A search in progress. A task of its own reads the server's answers as they
/// come and decodes them, so that a paged search asks for the next page while
/// the one before is still being read. It hands them over in batches (whatever
/// was decoded before the socket had to be waited on) and reads no further
/// ahead than [`AHEAD`] batches: past that, TCP holds the server back.
pub struct Search<'a> {
    batches: mpsc::Receiver<Result<Vec<Item>, String>>,
    taken: std::vec::IntoIter<Item>,
    taking: JoinHandle<(Option<Session>, Outcome)>,
    connection: &'a mut Connection,
}

/// Items handed over at once, at most; each hand-over wakes the reader.
const BATCH: usize = 256;
/// Batches decoded ahead of the reader: a page or two.
const AHEAD: usize = 8;
/// RFC 2696 simple paged results.
const PAGED_RESULTS_OID: &str = "1.2.840.113556.1.4.319";
/// The result code idsync gives a search that ended without the server's result.
const OTHER: u32 = 80;

impl Connection {
    /// Connects and binds as `source.ldap.bind_dn` (anonymously without one).
    pub async fn open(config: &LdapConfig, tls: &Arc<ClientConfig>) -> Result<Self, SourceError> {
        let url = config.url.as_str().trim_end_matches('/').to_owned();
        let connecting = tokio::time::timeout(config.timeout, connect(config, tls)).await;
        let session = connecting
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", config.timeout)))
            .map_err(|reason| failure(&url, format!("cannot connect: {reason}")))?;
        let mut connection = Self {
            session: Some(session),
            url,
            timeout: config.timeout,
        };
        if let Some(bind) = &config.bind {
            connection.bind(bind).await?;
        }
        Ok(connection)
    }

    async fn bind(&mut self, bind: &LdapBind) -> Result<(), SourceError> {
        let request = wire::bind_request(&bind.dn, bind.password.expose());
        let answer = self.call(request).await;
        let answer =
            answer.map_err(|reason| self.fail(format!("bind as {} failed: {reason}", bind.dn)))?;
        if answer.code != code::SUCCESS {
            let reason = format!("bind as {} refused: {}", bind.dn, result_text(&answer));
            return Err(self.fail(reason));
        }
        Ok(())
    }

    /// Sends a request that is answered by its result alone.
    async fn call(&mut self, request: Tag) -> Result<Outcome, String> {
        let session = self.session.as_mut().ok_or(BROKEN)?;
        let answered = tokio::time::timeout(self.timeout, async {
            let id = session
                .send(request, &[])
                .await
                .map_err(|err| err.to_string())?;
            match receive_for(session, id).await?.answer {
                Answer::Done(outcome) => Ok(outcome),
                _ => Err("the server answered with something else".to_owned()),
            }
        });
        answered
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn fail(&self, reason: String) -> SourceError {
        failure(&self.url, reason)
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
        let request = SearchRequest {
            base,
            scope: 2,
            size_limit: 0,
            filter,
            attributes,
        };
        self.start(request, page_size, controls).await
    }

    async fn start<'a>(
        &'a mut self,
        request: SearchRequest<'_>,
        page_size: Option<u32>,
        controls: Vec<RawControl>,
    ) -> Result<Search<'a>, SourceError> {
        let base = request.base;
        let request = request
            .encode()
            .map_err(|reason| self.fail(format!("search of {base}: {reason}")))?;
        let session = self
            .session
            .take()
            .ok_or_else(|| self.fail(BROKEN.into()))?;
        let (sender, batches) = mpsc::channel(AHEAD);
        let query = Query {
            request,
            controls,
            page_size,
            timeout: self.timeout,
        };
        Ok(Search {
            batches,
            taken: Vec::new().into_iter(),
            taking: tokio::spawn(query.take_items(session, sender)),
            connection: self,
        })
    }

    /// A search for at most one entry, to check that `base` can be read.
    pub async fn probe(&mut self, base: &str, filter: &str) -> Result<usize, SourceError> {
        let request = SearchRequest {
            base,
            scope: 2,
            size_limit: 1,
            filter,
            attributes: &["1.1"],
        };
        let (entries, answer) = self.collect(request).await?;
        match answer.code {
            code::SUCCESS | code::SIZE_LIMIT => Ok(entries.len()),
            _ => Err(self.fail(format!(
                "search of {base} answered {}",
                result_text(&answer)
            ))),
        }
    }

    /// Whether the server's root DSE lists the control `oid`.
    pub async fn supports_control(&mut self, oid: &str) -> Result<bool, SourceError> {
        let request = SearchRequest {
            base: "",
            scope: 0,
            size_limit: 0,
            filter: "(objectClass=*)",
            attributes: &["supportedControl"],
        };
        let (entries, _) = self.collect(request).await?;
        Ok(entries
            .iter()
            .any(|entry| entry.texts("supportedControl").any(|c| c == oid)))
    }

    /// Every entry of a small search, and its result.
    async fn collect(
        &mut self,
        request: SearchRequest<'_>,
    ) -> Result<(Vec<Entry>, Outcome), SourceError> {
        let mut search = self.start(request, None, Vec::new()).await?;
        let mut entries = Vec::new();
        while let Some(item) = search.next().await? {
            if let Item::Entry(entry, _) = item {
                entries.push(entry);
            }
        }
        Ok((entries, search.finish().await))
    }

    pub async fn close(mut self) {
        if let Some(session) = self.session.as_mut() {
            session.unbind().await;
        }
    }
}

const BROKEN: &str = "the connection broke off during an earlier search";

/// A TCP connection to the URL's host, with TLS for ldaps or after StartTLS.
async fn connect(config: &LdapConfig, tls: &Arc<ClientConfig>) -> Result<Session, String> {
    let host = config.url.host_str().ok_or("the URL names no host")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ldaps = config.url.scheme() == "ldaps";
    let port = config.url.port().unwrap_or(if ldaps { 636 } else { 389 });
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|err| err.to_string())?;
    // Requests are small and each waits for its answer.
    tcp.set_nodelay(true).map_err(|err| err.to_string())?;
    let tcp = if ldaps || !config.start_tls {
        tcp
    } else {
        start_tls(tcp).await?
    };
    if !ldaps && !config.start_tls {
        return Ok(Wire::new(Box::new(tcp)));
    }
    let name = ServerName::try_from(host.to_owned()).map_err(|err| err.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS: {err}"))?;
    Ok(Wire::new(Box::new(stream)))
}

/// Asks for StartTLS on a plain connection; the TLS handshake comes next.
async fn start_tls(tcp: TcpStream) -> Result<TcpStream, String> {
    let mut wire = Wire::new(tcp);
    let id = wire
        .send(wire::start_tls_request(), &[])
        .await
        .map_err(|err| err.to_string())?;
    match receive_for(&mut wire, id).await?.answer {
        Answer::Done(outcome) if outcome.code == code::SUCCESS => wire.into_stream(),
        Answer::Done(outcome) => Err(format!("StartTLS refused: {}", result_text(&outcome))),
        _ => Err("StartTLS: the server answered with something else".into()),
    }
}

/// The next message answering request `id`; answers to requests given up on are
/// passed over.
async fn receive_for<S: AsyncRead + AsyncWrite + Unpin>(
    wire: &mut Wire<S>,
    id: i32,
) -> Result<wire::Message, String> {
    loop {
        let message = wire.receive().await?;
        if message.id == id {
            return Ok(message);
        }
        if message.id == 0 {
            if let Answer::Done(notice) = message.answer {
                return Err(format!(
                    "the server ended the session: {}",
                    result_text(&notice)
                ));
            }
        }
    }
}

/// One search as the reading task runs it.
struct Query {
    request: Tag,
    controls: Vec<RawControl>,
    page_size: Option<u32>,
    timeout: Duration,
}

impl Query {
    /// Reads the search's answers, page after page, until it ends or the reader
    /// goes away; returns the session (unless it broke) and the server's result.
    async fn take_items(
        self,
        mut session: Session,
        items: mpsc::Sender<Result<Vec<Item>, String>>,
    ) -> (Option<Session>, Outcome) {
        let mut cookie = Vec::new();
        loop {
            let outcome = match self.page(&mut session, &cookie, &items).await {
                Ok(outcome) => outcome,
                Err(Stop::Broken(reason)) => {
                    let _ = items.send(Err(reason.clone())).await;
                    return (None, other(reason));
                }
                Err(Stop::ReaderGone) => {
                    return (Some(session), other("the reader stopped".into()))
                }
            };
            match self.next_cookie(&outcome) {
                Ok(Some(next)) => cookie = next,
                Ok(None) => return (Some(session), outcome),
                Err(reason) => {
                    let _ = items.send(Err(reason.clone())).await;
                    return (Some(session), other(reason));
                }
            }
        }
    }

    /// One request (a page, or the whole search unpaged) and its answers.
    async fn page(
        &self,
        session: &mut Session,
        cookie: &[u8],
        items: &mpsc::Sender<Result<Vec<Item>, String>>,
    ) -> Result<Outcome, Stop> {
        let broken = |err: String| Stop::Broken(format!("the search broke off: {err}"));
        let mut controls = self.controls.clone();
        let paging = self.page_size.map(|size| paged_control(size, cookie));
        controls.extend(paging.transpose().map_err(|err| broken(err.to_string()))?);
        let id = session
            .send(self.request.clone(), &controls)
            .await
            .map_err(|err| broken(err.to_string()))?;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            if batch.len() >= BATCH || (!batch.is_empty() && !session.holds_message()) {
                hand_over(items, &mut batch, session, id).await?;
            }
            let received = tokio::time::timeout(self.timeout, receive_for(session, id)).await;
            let message = received
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", self.timeout)))
                .map_err(broken)?;
            let item = match message.answer {
                Answer::Entry(entry) => Item::Entry(entry, message.controls),
                Answer::Reference(urls) => Item::Referral(urls),
                Answer::Intermediate(info) => Item::Intermediate(info),
                Answer::Done(mut outcome) => {
                    hand_over(items, &mut batch, session, id).await?;
                    outcome.controls = message.controls;
                    return Ok(outcome);
                }
            };
            batch.push(item);
        }
    }

    /// The cookie of the next page, if the search is paged and not done.
    fn next_cookie(&self, outcome: &Outcome) -> Result<Option<Vec<u8>>, String> {
        if self.page_size.is_none() || outcome.code != code::SUCCESS {
            return Ok(None);
        }
        let Some(control) = outcome
            .controls
            .iter()
            .find(|c| c.ctype == PAGED_RESULTS_OID)
        else {
            return Ok(None);
        };
        let cookie = paged_cookie(control.val.as_deref().unwrap_or_default())
            .map_err(|why| format!("the paged results control is broken: {why}"))?;
        Ok((!cookie.is_empty()).then(|| cookie.to_vec()))
    }
}

/// Sends the batch to the reader; abandons search `id` if the reader is gone.
async fn hand_over(
    items: &mpsc::Sender<Result<Vec<Item>, String>>,
    batch: &mut Vec<Item>,
    session: &mut Session,
    id: i32,
) -> Result<(), Stop> {
    if batch.is_empty() {
        return Ok(());
    }
    let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
    if items.send(Ok(full)).await.is_err() {
        let _ = session.send(abandon(id), &[]).await;
        return Err(Stop::ReaderGone);
    }
    Ok(())
}

/// Why a search's reading task stopped early.
enum Stop {
    Broken(String),
    ReaderGone,
}

fn other(text: String) -> Outcome {
    Outcome {
        code: OTHER,
        text,
        ..Outcome::default()
    }
}

/// `SEQUENCE { size INTEGER, cookie OCTET STRING }`, non-critical as RFC 2696 allows.
fn paged_control(size: u32, cookie: &[u8]) -> std::io::Result<RawControl> {
    Ok(RawControl {
        ctype: PAGED_RESULTS_OID.into(),
        crit: false,
        val: Some(wire::paged_results_value(size, cookie)?),
    })
}

fn paged_cookie(value: &[u8]) -> Result<&[u8], ber::Broken> {
    let mut outer = Reader::new(value);
    let sequence = outer.expect(tag::SEQUENCE)?;
    let mut parts = outer.inside(&sequence);
    parts.expect(tag::INTEGER)?;
    let cookie = parts.expect(tag::OCTET_STRING)?;
    Ok(parts.contents(&cookie))
}

/// `AbandonRequest ::= [APPLICATION 16] MessageID`.
fn abandon(id: i32) -> Tag {
    Tag::Integer(Integer {
        id: 16,
        class: TagClass::Application,
        inner: i64::from(id),
    })
}

impl Search<'_> {
    /// The next item, or `None` once the server said the search is done.
    pub async fn next(&mut self) -> Result<Option<Item>, SourceError> {
        loop {
            if let Some(item) = self.taken.next() {
                return Ok(Some(item));
            }
            match self.batches.recv().await {
                Some(Ok(batch)) => self.taken = batch.into_iter(),
                Some(Err(reason)) => return Err(self.connection.fail(reason)),
                None => return Ok(None),
            }
        }
    }

    /// The server's result for the whole search; the connection is free again.
    pub async fn finish(self) -> Outcome {
        drop(self.batches);
        let (session, outcome) = self.taking.await.unwrap_or_else(|err| {
            (
                None,
                other(format!("the search's reading task failed: {err}")),
            )
        });
        self.connection.session = session;
        outcome
    }
}

/// A failed LDAP operation: the run aborts.
pub fn failure(url: &str, reason: String) -> SourceError {
    SourceError::Ldap {
        url: url.to_owned(),
        reason,
    }
}

/// A result code with the server's text and the servers it refers to.
pub fn result_text(result: &Outcome) -> String {
    let mut said = format!("result {}", result.code);
    let text = result.text.trim();
    if !text.is_empty() {
        said += &format!(" ({text})");
    }
    if !result.referrals.is_empty() {
        said += &format!(", referring to {}", result.referrals.join(" "));
    }
    said
}
