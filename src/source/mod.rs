//! Directory sources: adapters that read an IdP's directory and hand out normalized
//! users. They never touch the cache or the gateway.

mod http;
mod list_response;
mod roster;
pub mod scim;

use crate::auth::AuthError;
use crate::model::UnusableEntry;

/// What a complete read of the directory tells besides its users, which are
/// handed out while it reads.
#[derive(Debug, Default)]
pub struct Listing {
    /// Entries the directory listed, usable or not.
    pub entries: usize,
    /// Entries that could not even be keyed; reported and skipped.
    pub unusable: Vec<UnusableEntry>,
}

/// Why the directory could not be read completely. Every variant aborts the run
/// before anything is written: a partial read must never look like a directory
/// in which people are missing.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// No token: see [`AuthError`].
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The directory refused our token (403, or 401 even after a fresh token).
    #[error("the directory refused our credentials: GET {url} answered {status}")]
    Refused { url: String, status: u16 },
    /// The directory could not be reached, or kept failing after retries.
    #[error("the directory is unavailable: GET {url}: {reason}")]
    Unavailable { url: String, reason: String },
    /// An answer broke the paging contract or was not SCIM; the read cannot be trusted.
    #[error("the directory's answer cannot be trusted: GET {url}: {reason}")]
    Inconsistent { url: String, reason: String },
    /// A shutdown was requested while reading.
    #[error("stopped by shutdown while reading the directory")]
    Interrupted,
}
