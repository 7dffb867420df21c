//! The directory's HTTP: a GET with its bearer token and its retry policy.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{ACCEPT, AUTHORIZATION};
use reqwest::{Response, StatusCode};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::SourceError;
use crate::config::Secret;
use crate::error_chain;
use crate::retry::{self, Attempt, Backoff, Class, Exhausted, WaitBound};

/// Transient directory failures are retried briefly; a longer outage fails the run,
/// and the next scheduled run tries again.
const BACKOFF: Backoff = Backoff {
    max_attempts: 3,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(5),
};

/// GETs from the directory with its bearer token: a 401 gets one fresh token and
/// the request again; transport errors, 408, 429 and 5xx are retried with backoff,
/// never before a `Retry-After`; 403 is a refusal. Cheap to clone.
#[derive(Clone)]
pub struct DirectoryHttp {
    client: reqwest::Client,
    tokens: Arc<TokenSource>,
    /// The `Accept` header of every request.
    accept: &'static str,
    /// The longest `Retry-After` waited for; a longer one fails the GET.
    max_retry_after: WaitBound,
}

/// The token of one GET's attempts, replaced at most once.
struct Bearer {
    token: Secret,
    refreshed: bool,
}

impl DirectoryHttp {
    pub fn new(
        client: reqwest::Client,
        tokens: Arc<TokenSource>,
        accept: &'static str,
        max_retry_after: Duration,
    ) -> Self {
        Self {
            client,
            tokens,
            accept,
            max_retry_after: WaitBound {
                max: max_retry_after,
                key: "source.max_retry_after_secs",
            },
        }
    }

    /// The successful response to a GET of `url`, its body unread.
    pub async fn get(&self, url: &Url) -> Result<Response, SourceError> {
        let bearer = Mutex::new(Bearer {
            token: self.tokens.bearer().await?,
            refreshed: false,
        });
        // A read that is abandoned drops its requests, waits included.
        let never = CancellationToken::new();
        let retrying = |failure: &str, wait: Duration, _| {
            tracing::warn!(%url, %failure, wait_ms = wait.as_millis() as u64, "Directory request failed; retrying.");
        };
        let attempt = || self.attempt(url, &bearer);
        match retry::with_retries(&BACKOFF, &never, attempt, retrying).await {
            Ok(response) => Ok(response),
            Err(Exhausted::Failed(err)) => Err(err),
            Err(Exhausted::GaveUp { attempts, reason }) => Err(SourceError::Unavailable {
                url: url.to_string(),
                reason: format!("{reason} (after {attempts} attempts)"),
            }),
            Err(Exhausted::Interrupted) => Err(SourceError::Interrupted),
        }
    }

    /// One attempt: the GET, and once per [`get`](Self::get) the GET again with a
    /// fresh token after a 401.
    async fn attempt(&self, url: &Url, bearer: &Mutex<Bearer>) -> Attempt<Response, SourceError> {
        let mut bearer = bearer.lock().await;
        let mut sent = self.send(url, &bearer.token).await;
        let unauthorized = matches!(&sent, Ok(r) if r.status() == StatusCode::UNAUTHORIZED);
        if unauthorized && !bearer.refreshed && self.tokens.can_refresh() {
            tracing::info!("The directory refused the token; getting a fresh one.");
            bearer.token = match self.tokens.refresh(&bearer.token).await {
                Ok(token) => token,
                Err(err) => return Attempt::Fail(err.into()),
            };
            bearer.refreshed = true;
            sent = self.send(url, &bearer.token).await;
        }
        judge(url, sent, self.max_retry_after)
    }

    /// A GET of `url` whose body is JSON, decoded into `T`. A body cut off is an
    /// unavailable directory; a body that is not a `T` cannot be trusted.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: &Url) -> Result<T, SourceError> {
        let body = self
            .get(url)
            .await?
            .bytes()
            .await
            .map_err(|err| SourceError::Unavailable {
                url: url.to_string(),
                reason: format!("the answer broke off: {}", error_chain(&err)),
            })?;
        serde_json::from_slice(&body).map_err(|err| SourceError::Inconsistent {
            url: url.to_string(),
            reason: format!("unexpected JSON: {err}"),
        })
    }

    async fn send(&self, url: &Url, token: &Secret) -> reqwest::Result<Response> {
        self.client
            .get(url.clone())
            .header(ACCEPT, self.accept)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .send()
            .await
    }
}

/// What a GET's result means: a response to read, a failure worth another
/// attempt, or the end of the read.
fn judge(
    url: &Url,
    sent: reqwest::Result<Response>,
    max_retry_after: WaitBound,
) -> Attempt<Response, SourceError> {
    let response = match sent {
        Ok(response) => response,
        Err(err) => {
            return Attempt::Retry {
                reason: error_chain(&err),
                retry_after: None,
            }
        }
    };
    let status = response.status();
    match retry::classify(status) {
        Class::Success => Attempt::Done(response),
        Class::Transient => {
            let now = SystemTime::now();
            match retry::retry_after(response.headers(), now, "the directory", max_retry_after) {
                Ok(retry_after) => Attempt::Retry {
                    reason: format!("answered {status}"),
                    retry_after,
                },
                Err(too_long) => Attempt::GiveUp {
                    reason: format!("answered {status}; {too_long}"),
                },
            }
        }
        Class::Unauthorized => Attempt::Fail(SourceError::Refused {
            url: url.to_string(),
            status: status.as_u16(),
        }),
        Class::Rejected => Attempt::Fail(SourceError::Unavailable {
            url: url.to_string(),
            reason: format!("answered {status}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap, StatusCode};
    use tokio::time::Instant;

    use super::*;
    use crate::config::SourceAuth;

    /// A directory that answers its requests in turn with `script` (then 200), and
    /// counts them.
    async fn directory(script: Vec<(u16, Option<&'static str>)>) -> (Url, Arc<AtomicUsize>) {
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let app = axum::Router::new().route(
            "/Users",
            axum::routing::get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let (status, retry_after) = script.get(n).copied().unwrap_or((200, None));
                let mut headers = HeaderMap::new();
                if let Some(value) = retry_after {
                    headers.insert("retry-after", value.parse().expect("header value"));
                }
                async move { (StatusCode::from_u16(status).expect("status"), headers, "{}") }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{address}/Users").parse().expect("url");
        (url, asked)
    }

    fn http() -> DirectoryHttp {
        let client = reqwest::Client::new();
        let tokens = TokenSource::new(&SourceAuth::Bearer(Secret::new("t")), client.clone());
        DirectoryHttp::new(
            client,
            Arc::new(tokens),
            "application/json",
            Duration::from_secs(300),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn transient_answers_are_retried_until_one_succeeds() {
        let (url, asked) = directory(vec![(503, None), (429, Some("2"))]).await;
        let started = Instant::now();
        let response = http().get(&url).await.expect("the third attempt succeeds");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After");
    }

    #[tokio::test(start_paused = true)]
    async fn a_directory_that_keeps_failing_is_unavailable_after_three_attempts() {
        let (url, asked) = directory(vec![(503, None); 5]).await;
        let err = http().get(&url).await.expect_err("gives up");
        assert_eq!(asked.load(Ordering::SeqCst), 3);
        assert!(
            err.to_string()
                .ends_with("answered 503 Service Unavailable (after 3 attempts)"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_and_rejections_are_not_retried() {
        // A static token cannot be refreshed: a 401 is as final as a 403.
        for refused in [401, 403] {
            let (url, asked) = directory(vec![(refused, None)]).await;
            let err = http().get(&url).await.expect_err("refused");
            assert!(
                matches!(err, SourceError::Refused { status, .. } if status == refused),
                "{err}"
            );
            assert_eq!(asked.load(Ordering::SeqCst), 1);
        }
        let (url, asked) = directory(vec![(404, None)]).await;
        let err = http().get(&url).await.expect_err("rejected");
        assert!(err.to_string().ends_with("answered 404 Not Found"), "{err}");
        assert_eq!(asked.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_up_to_the_bound_is_waited_out() {
        let (url, asked) = directory(vec![(503, Some("300"))]).await;
        let started = Instant::now();
        http().get(&url).await.expect("the second attempt succeeds");
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        let waited = started.elapsed();
        let bound = Duration::from_secs(300);
        assert!(
            waited >= bound && waited < bound + BACKOFF.cap,
            "waited {waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_over_the_bound_fails_the_read_at_once() {
        let year_2100 = "Fri, 01 Jan 2100 00:00:00 GMT";
        for value in [
            "999999999",
            "18446744073709551615",
            "1000000000000",
            year_2100,
        ] {
            let (url, asked) = directory(vec![(503, Some(value))]).await;
            let started = Instant::now();
            let err = http().get(&url).await.expect_err("not waited out");
            assert_eq!(asked.load(Ordering::SeqCst), 1, "{value}: not retried");
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{value}: no wait"
            );
            let said = format!(
                "the directory asked to wait Retry-After: {value} (over source.max_retry_after_secs = 300)"
            );
            assert!(err.to_string().contains(&said), "{err}");
        }
    }
}
