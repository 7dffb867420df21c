//! One cached access token per token source, fetched again shortly before it
//! expires or after the directory refused it.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use super::AuthError;
use crate::config::Secret;

/// Lifetime assumed when the IdP does not say (`expires_in` is optional in RFC 6749).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Refresh this much before expiry, so a token never dies between check and use.
const MAX_EARLY_REFRESH: Duration = Duration::from_secs(30);

/// A token as the token endpoint gave it.
pub(super) struct FreshToken {
    pub token: Secret,
    /// `expires_in`, when the answer had one.
    pub lifetime: Option<Duration>,
    /// When the request that got it was sent: the lifetime counts from there.
    pub requested_at: Instant,
}

struct CachedToken {
    token: Secret,
    refresh_at: Instant,
}

/// Concurrent callers wait for one token request.
#[derive(Default)]
pub(super) struct TokenCache {
    cached: Mutex<Option<CachedToken>>,
}

impl TokenCache {
    /// The cached token while it is good, else one from `fetch`.
    pub async fn current<F, Fut>(&self, fetch: F) -> Result<Secret, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FreshToken, AuthError>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some(entry) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(entry.token.clone());
        }
        Self::store(&mut cached, fetch().await?)
    }

    /// A token other than `rejected`: the one another caller fetched meanwhile,
    /// else a new one from `fetch`.
    pub async fn replace<F, Fut>(&self, rejected: &Secret, fetch: F) -> Result<Secret, AuthError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<FreshToken, AuthError>>,
    {
        let mut cached = self.cached.lock().await;
        if let Some(entry) = cached.as_ref().filter(|c| &c.token != rejected) {
            return Ok(entry.token.clone());
        }
        Self::store(&mut cached, fetch().await?)
    }

    fn store(cached: &mut Option<CachedToken>, fresh: FreshToken) -> Result<Secret, AuthError> {
        let lifetime = fresh.lifetime.unwrap_or(DEFAULT_LIFETIME);
        let early = (lifetime / 5).min(MAX_EARLY_REFRESH);
        tracing::debug!(
            lifetime_secs = lifetime.as_secs(),
            "Obtained an access token for the directory."
        );
        let token = fresh.token.clone();
        *cached = Some(CachedToken {
            token: fresh.token,
            refresh_at: fresh.requested_at + lifetime.saturating_sub(early),
        });
        Ok(token)
    }
}
