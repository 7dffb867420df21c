//! Directory sources: each reads one kind of identity provider's directory and
//! hands out normalized users. They never touch the cache or the gateway.
//!
//! The seam is [`Directory`]: a source delivers [`DirectoryUser`](crate::model::DirectoryUser)s in chunks to a
//! [`Delivery`] while it reads, and says at the end what its read covered
//! ([`Scope`]). [`open`] builds the configured source; it is the only place that
//! names the kinds, so adding one is a folder here and a `kind` in the config.

pub mod auth;
pub mod auth0;
pub mod cursor;
pub mod delivery;
pub mod entra;
pub mod file;
pub mod google;
pub mod group_table;
pub mod http;
pub mod jumpcloud;
pub mod keycloak;
pub mod ldap;
pub mod membership;
mod next_page;
pub mod normalize;
pub mod okta;
pub mod paged;
pub mod pushed;
pub mod scim;
pub mod user_pages;
mod vendor_read;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, SourceKind};
use crate::model::{Subject, UnusableEntry};
use auth::{AuthError, TokenSource};

pub use crate::model::Cursor;
pub use delivery::{Arrivals, Delivery};

/// A directory idsync can read.
pub trait Directory: Send + Sync {
    /// Reads the directory, handing its users to `delivery` as they are read. What
    /// the run does with them stands only once this returns `Ok`: an error means
    /// the read cannot be trusted, and nothing may be concluded from it.
    ///
    /// `cursor` is what the last successful run's [`Read::cursor`] left, for a
    /// source that [`reads_changes`](Directory::reads_changes); from it the
    /// source may read only what changed, as a [`Scope::Changes`].
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>>;

    /// Whether this source keeps a position between runs, so that the run must
    /// load it from the cache before reading.
    fn reads_changes(&self) -> bool {
        false
    }

    /// Told that this source will read run after run (a daemon's), so that it
    /// may keep what one read learnt, and its connections, for the next.
    fn reads_again(&self) {}

    /// Told that the run kept `cursor` (it did everything it planned), so a source
    /// may let go of what came before it (push: the queue up to there).
    fn cursor_kept(&self, _cursor: &str) {}

    /// For a source that is told of changes as they happen (push): notified after
    /// each, so the daemon runs without waiting for its schedule.
    fn wakeups(&self) -> Option<Arc<tokio::sync::Notify>> {
        None
    }

    /// The source's name in the cursor store and in logs: its kind and address.
    fn name(&self) -> String;

    /// Checks the credentials and the address with one small request
    /// (`check-config --connect`); says what it found.
    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>>;
}

/// What a read told besides its users, which were delivered while it read.
#[derive(Debug, Default)]
pub struct Read {
    /// Entries the directory listed, usable or not.
    pub entries: usize,
    /// Entries that could not even be keyed; reported and skipped.
    pub unusable: Vec<UnusableEntry>,
    pub scope: Scope,
    /// Where the next read should start, for a source that reads changes; kept
    /// only once the run that read it has done everything it planned.
    pub cursor: Option<String>,
    /// With `cursor`, a new [`Cursor::base`] to keep in place of the one kept;
    /// `None` keeps the one kept.
    pub cursor_base: Option<Arc<str>>,
    /// The names of every group the directory has, members or not, from a
    /// source that lists them (push, SCIM, file): with `groups.mirror` each is
    /// created in the gateway before anyone joins, so access rules can name it.
    pub groups: Option<Vec<String>>,
}

/// What a read covered, which decides who may be deactivated for being absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole directory: a managed user not in it has left.
    #[default]
    Complete,
    /// Only what changed since the last read: users not in it are as they were,
    /// and only the subjects in `removed` have left.
    Changes { removed: Vec<Subject> },
}

/// Why the directory could not be read completely. Every variant aborts the run
/// before anything is written: a partial read must never look like a directory
/// in which people are missing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No token: see [`AuthError`].
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The directory refused our credentials (403, or 401 even after a fresh
    /// token); `request` is `GET https://…`, `reason` what the answer said, if anything.
    #[error("the directory refused our credentials: {request} answered {status}{reason}")]
    Refused {
        request: String,
        status: u16,
        reason: String,
    },
    /// The directory could not be reached, or kept failing after retries.
    #[error("the directory is unavailable: {request}: {reason}")]
    Unavailable { request: String, reason: String },
    /// The directory answered a request with a status that no retry changes
    /// (404, 410, …); kept as a status, for a source that reads meaning into one.
    #[error("the directory is unavailable: {request}: answered {status}")]
    Rejected {
        request: String,
        status: reqwest::StatusCode,
    },
    /// An answer broke the paging contract or was not SCIM; the read cannot be trusted.
    #[error("the directory's answer cannot be trusted: GET {url}: {reason}")]
    Inconsistent { url: String, reason: String },
    /// An export file could not be read completely; the run stops before it acts.
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    /// The HTTP client could not be built (e.g. from the CA bundle).
    #[error("cannot set up the directory client: {0}")]
    Client(String),
    /// An LDAP directory refused the bind, could not be reached, or could not be
    /// read completely (a size or time limit, a broken connection, a broken answer).
    #[error("the LDAP directory {url}: {reason}")]
    Ldap { url: String, reason: String },
    /// A shutdown was requested while reading.
    #[error("stopped by shutdown while reading the directory")]
    Interrupted,
}

/// The directory the config describes.
pub fn open(config: &SourceConfig) -> Result<Box<dyn Directory>, SourceError> {
    match &config.kind {
        SourceKind::Scim(scim) => {
            let http = http_client(scim.ca_pem.as_deref(), scim.timeout)?;
            let tokens = TokenSource::new(&scim.auth, http.clone());
            let source = scim::ScimSource::new(scim, &config.attributes, http, tokens);
            Ok(Box::new(source))
        }
        SourceKind::File(file) => Ok(Box::new(file::FileSource::new(file, &config.attributes))),
        SourceKind::Google(google) => {
            let http = vendor_client(&google.limits)?;
            let tokens = TokenSource::new(&google.auth, http.clone());
            Ok(Box::new(google::GoogleSource::new(google, http, tokens)))
        }
        SourceKind::Keycloak(keycloak) => {
            let http = vendor_client(&keycloak.limits)?;
            let tokens = TokenSource::new(&keycloak.auth, http.clone());
            Ok(Box::new(keycloak::KeycloakSource::new(
                keycloak, http, tokens,
            )))
        }
        SourceKind::Okta(okta) => {
            let http = vendor_client(&okta.limits)?;
            Ok(Box::new(okta::OktaSource::new(
                okta,
                config.incremental,
                http,
            )))
        }
        SourceKind::Entra(entra) => {
            let http = vendor_client(&entra.limits)?;
            Ok(Box::new(entra::EntraSource::new(
                entra,
                config.incremental,
                http,
            )))
        }
        SourceKind::JumpCloud(jumpcloud) => {
            let client = vendor_client(&jumpcloud.limits)?;
            Ok(Box::new(jumpcloud::JumpCloudSource::new(jumpcloud, client)))
        }
        SourceKind::Auth0(auth0) => {
            let client = vendor_client(&auth0.limits)?;
            Ok(Box::new(auth0::Auth0Source::new(auth0, client)))
        }
        SourceKind::Ldap(ldap) => Ok(Box::new(ldap::LdapSource::new(
            ldap,
            &config.attributes,
            config.incremental,
        )?)),
        SourceKind::Push(push) => Ok(Box::new(pushed::PushedDirectory::open(push)?)),
    }
}

/// The HTTP client of a vendor directory: its CA bundle and request timeout.
fn vendor_client(limits: &crate::config::DirectoryLimits) -> Result<reqwest::Client, SourceError> {
    http_client(limits.ca_pem.as_deref(), limits.timeout)
}

/// A directory's HTTP client: the extra CAs it trusts, and one request's timeout.
fn http_client(
    ca_pem: Option<&[u8]>,
    timeout: std::time::Duration,
) -> Result<reqwest::Client, SourceError> {
    crate::http::client_builder(ca_pem)
        .and_then(|b| b.timeout(timeout).build())
        .map_err(|err| SourceError::Client(crate::error_chain(&err)))
}
