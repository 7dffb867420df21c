//! Credentials for the IdP's directory API: a fixed token or API key, or a token
//! obtained from the IdP's token endpoint and refreshed before it expires.

mod cache;
mod grant;
mod oidc;

use crate::config::{ApiKey, Secret, SourceAuth};

pub use grant::GrantTokens;
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

/// Where the directory's credential comes from; built once per process.
pub enum TokenSource {
    Static(Secret),
    ApiKey(ApiKey),
    Oidc(Box<OidcTokens>),
    Grant(Box<GrantTokens>),
}

impl TokenSource {
    pub fn new(auth: &SourceAuth, http: reqwest::Client) -> Self {
        match auth {
            SourceAuth::Bearer(token) => Self::Static(token.clone()),
            SourceAuth::ApiKey(key) => Self::ApiKey(key.clone()),
            SourceAuth::Oidc(oidc) => Self::Oidc(Box::new(OidcTokens::new(oidc.clone(), http))),
            SourceAuth::Grant(grant) => {
                Self::Grant(Box::new(GrantTokens::new(grant.clone(), http)))
            }
        }
    }

    /// A token (or key) that is valid now, fetching a fresh one only when needed.
    pub async fn token(&self) -> Result<Secret, AuthError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::ApiKey(key) => Ok(key.key.clone()),
            Self::Oidc(tokens) => tokens.current().await,
            Self::Grant(tokens) => tokens.current().await,
        }
    }

    /// Called after the directory answered 401 to `rejected`: drop it and get a
    /// new one (once; a second 401 means the directory refuses us).
    pub async fn refresh(&self, rejected: &Secret) -> Result<Secret, AuthError> {
        match self {
            Self::Static(_) | Self::ApiKey(_) => self.token().await,
            Self::Oidc(tokens) => tokens.replace(rejected).await,
            Self::Grant(tokens) => tokens.replace(rejected).await,
        }
    }

    /// Whether a refresh can yield a different token at all.
    pub fn can_refresh(&self) -> bool {
        matches!(self, Self::Oidc(_) | Self::Grant(_))
    }

    /// The header that carries `token`, and its value.
    pub fn header(&self, token: &Secret) -> (&'static str, String) {
        match self {
            Self::ApiKey(ApiKey {
                header,
                scheme: Some(scheme),
                ..
            }) => (header, format!("{scheme} {}", token.expose())),
            Self::ApiKey(ApiKey { header, .. }) => (header, token.expose().to_owned()),
            _ => ("authorization", format!("Bearer {}", token.expose())),
        }
    }
}
