//! Credentials for the IdP's directory API: a fixed bearer token, or one obtained
//! from the IdP with the client-credentials grant and refreshed before it expires.

mod oidc;

use crate::config::{Secret, SourceAuth};

pub use oidc::OidcTokens;

/// Why no token could be had. Every variant aborts the run (exit 3): without a
/// token the directory cannot be read, and an unread directory changes nothing.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The IdP or its discovery document could not be reached or used.
    #[error("OIDC discovery at {issuer} failed: {reason}")]
    Discovery { issuer: String, reason: String },
    /// The token endpoint answered, and said no: wrong client id or secret, or a
    /// scope the client may not have.
    #[error("the IdP refused the client credentials of {client_id:?}: {reason}")]
    Refused { client_id: String, reason: String },
    /// The token endpoint could not be reached or gave an unreadable answer.
    #[error("token request to the IdP failed: {0}")]
    Unavailable(String),
}

/// Where the directory's bearer token comes from; built once per process.
pub enum TokenSource {
    Static(Secret),
    Oidc(Box<OidcTokens>),
}

impl TokenSource {
    pub fn new(auth: &SourceAuth, http: reqwest::Client) -> Self {
        match auth {
            SourceAuth::Bearer(token) => Self::Static(token.clone()),
            SourceAuth::Oidc(oidc) => Self::Oidc(Box::new(OidcTokens::new(oidc.clone(), http))),
        }
    }

    /// A token that is valid now, fetching a fresh one only when needed.
    pub async fn bearer(&self) -> Result<Secret, AuthError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::Oidc(tokens) => tokens.current().await,
        }
    }

    /// Called after the directory answered 401 to `rejected`: drop it and get a
    /// new one (once; a second 401 means the directory refuses us).
    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, AuthError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::Oidc(tokens) => tokens.replace(rejected).await,
        }
    }

    /// Whether a refresh can yield a different token at all.
    pub fn can_refresh(&self) -> bool {
        matches!(self, Self::Oidc(_))
    }
}
