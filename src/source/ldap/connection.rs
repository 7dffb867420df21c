//! One LDAP session: connect (ldaps, or StartTLS on ldap), verify the server's
//! certificate against the built-in roots and `source.ca_file`, and bind. Its
//! searches are in [`super::search`].

use std::sync::Arc;
use std::time::Duration;

use ldap3::asn1::Tag;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::wire::{self, Answer, Outcome, Wire};
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

pub(super) type Session = Wire<Box<dyn Stream>>;

pub struct Connection {
    /// Lent to the search in progress; `None` after one broke the session.
    pub(super) session: Option<Session>,
    url: String,
    pub(super) timeout: Duration,
}

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

    /// A bound session over `stream`, for tests that play the server.
    #[cfg(test)]
    pub fn over(stream: impl Stream + 'static) -> Self {
        Self {
            session: Some(Wire::new(Box::new(stream))),
            url: "ldap://test".into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// Whether no search broke the session.
    pub fn is_intact(&self) -> bool {
        self.session.is_some()
    }

    /// Whether the session is intact and the server sent nothing since its last
    /// answer (see [`Wire::is_quiet`]).
    pub fn is_quiet(&mut self) -> bool {
        self.session.as_mut().is_some_and(Wire::is_quiet)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub(super) fn fail(&self, reason: String) -> SourceError {
        failure(&self.url, reason)
    }

    pub async fn close(mut self) {
        if let Some(session) = self.session.as_mut() {
            session.unbind().await;
        }
    }
}

pub(super) const BROKEN: &str = "the connection broke off during an earlier search";

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
pub(super) async fn receive_for<S: AsyncRead + AsyncWrite + Unpin>(
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
