//! OIDC discovery and the client-credentials grant, via `openidconnect`.

use std::time::Instant;

use openidconnect::core::{CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthType, ClientId, ClientSecret, IssuerUrl, OAuth2TokenResponse, RequestTokenError, Scope,
};
use tokio::sync::Mutex;

use super::cache::{FreshToken, TokenCache};
use super::AuthError;
use crate::config::{ClientAuthMethod, OidcConfig, Secret};
use crate::error_chain;

/// Tokens from one IdP. Discovery happens at the first token request and its
/// result is reused.
pub struct OidcTokens {
    config: OidcConfig,
    http: reqwest::Client,
    token_endpoint: Mutex<Option<openidconnect::TokenUrl>>,
    cache: TokenCache,
}

impl OidcTokens {
    pub fn new(config: OidcConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            token_endpoint: Mutex::new(None),
            cache: TokenCache::default(),
        }
    }

    pub(super) async fn current(&self) -> Result<Secret, AuthError> {
        self.cache.current(|| self.request_token()).await
    }

    pub(super) async fn replace(&self, rejected: &Secret) -> Result<Secret, AuthError> {
        self.cache.replace(rejected, || self.request_token()).await
    }

    async fn token_endpoint(&self) -> Result<openidconnect::TokenUrl, AuthError> {
        let mut endpoint = self.token_endpoint.lock().await;
        if let Some(url) = endpoint.as_ref() {
            return Ok(url.clone());
        }
        let discovery_failed = |reason: String| AuthError::Discovery {
            issuer: self.config.issuer.clone(),
            reason,
        };
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|err| discovery_failed(err.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|err| discovery_failed(error_chain(&err)))?;
        let url = metadata.token_endpoint().cloned().ok_or_else(|| {
            discovery_failed("the discovery document has no token_endpoint".into())
        })?;
        *endpoint = Some(url.clone());
        Ok(url)
    }

    async fn request_token(&self) -> Result<FreshToken, AuthError> {
        let token_url = self.token_endpoint().await?;
        let client = CoreClient::new(
            ClientId::new(self.config.client_id.clone()),
            IssuerUrl::new(self.config.issuer.clone()).map_err(|err| AuthError::Discovery {
                issuer: self.config.issuer.clone(),
                reason: err.to_string(),
            })?,
            openidconnect::JsonWebKeySet::default(),
        )
        .set_client_secret(ClientSecret::new(
            self.config.client_secret.expose().to_owned(),
        ))
        .set_token_uri(token_url)
        .set_auth_type(match self.config.auth_method {
            ClientAuthMethod::ClientSecretBasic => AuthType::BasicAuth,
            ClientAuthMethod::ClientSecretPost => AuthType::RequestBody,
        });
        let mut request = client.exchange_client_credentials();
        for scope in &self.config.scopes {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let started = Instant::now();
        let response = request
            .request_async(&self.http)
            .await
            .map_err(|err| match err {
                RequestTokenError::ServerResponse(response) => AuthError::Refused {
                    client_id: self.config.client_id.clone(),
                    reason: match response.error_description() {
                        Some(text) => format!("{} ({text})", response.error().as_ref()),
                        None => response.error().as_ref().to_owned(),
                    },
                },
                other => AuthError::Unavailable(error_chain(&other)),
            })?;
        Ok(FreshToken {
            token: Secret::new(response.access_token().secret().clone()),
            lifetime: response.expires_in(),
            requested_at: started,
        })
    }
}
