//! The directory's HTTP: requests with its credential, its retry policy and, where
//! the directory advertises one, its rate budget.

mod budget;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::ACCEPT;
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::SourceError;
use crate::config::Secret;
use crate::error_chain;
use crate::retry::{self, Attempt, Backoff, Class, Exhausted, WaitBound};
use budget::Budget;

pub use budget::RateBudget;

/// Transient directory failures are retried briefly; a longer outage fails the run,
/// and the next scheduled run tries again.
const BACKOFF: Backoff = Backoff {
    max_attempts: 3,
    base: Duration::from_millis(500),
    cap: Duration::from_secs(5),
};
/// The most of a refusal's body read for its reason.
const MAX_REFUSAL_BYTES: usize = 16 * 1024;
/// The most of that reason shown.
const MAX_REASON_CHARS: usize = 300;

/// Requests to the directory with its credential: a 401 gets one fresh token and
/// the request again; transport errors, 408, 429 and 5xx are retried with backoff,
/// never before a `Retry-After` or the advertised budget's reset; 403 is a refusal
/// unless the directory says it is throttling. Cheap to clone.
#[derive(Clone)]
pub struct DirectoryHttp {
    client: reqwest::Client,
    tokens: Arc<TokenSource>,
    /// The `Accept` header of every request.
    accept: &'static str,
    /// The longest `Retry-After` (or budget reset) waited for; a longer one fails
    /// the request.
    max_retry_after: WaitBound,
    /// Sent with every request, besides the credential.
    headers: Vec<(&'static str, String)>,
    budget: Option<Arc<Budget>>,
    /// Tells a 403 that only means "slow down" by its body.
    throttled: Option<fn(&[u8]) -> bool>,
}

/// What is sent: the method and, for a POST, its JSON body.
#[derive(Clone, Copy)]
enum Request<'a> {
    Get(&'a Url),
    PostJson(&'a Url, &'a serde_json::Value),
}

/// The token of one request's attempts, replaced at most once.
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
            headers: Vec::new(),
            budget: None,
            throttled: None,
        }
    }

    /// Sends `name: value` with every request (e.g. JumpCloud's `x-org-id`).
    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Paces the requests by the budget the directory's answers advertise.
    pub fn with_rate_budget(mut self, names: RateBudget) -> Self {
        self.budget = Some(Arc::new(Budget::new(names)));
        self
    }

    /// Retries a 403 whose body `throttled` says is throttling (Google answers
    /// `403 rateLimitExceeded`).
    pub fn with_throttle_check(mut self, throttled: fn(&[u8]) -> bool) -> Self {
        self.throttled = Some(throttled);
        self
    }

    /// The successful response to a GET of `url`, its body unread.
    pub async fn get(&self, url: &Url) -> Result<Response, SourceError> {
        self.send_with_retries(Request::Get(url)).await
    }

    /// A GET of `url` whose body is JSON, decoded into `T`. A body cut off is an
    /// unavailable directory; a body that is not a `T` cannot be trusted.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &Url,
    ) -> Result<T, SourceError> {
        let body = self
            .get(url)
            .await?
            .bytes()
            .await
            .map_err(|err| SourceError::Unavailable {
                request: format!("GET {url}"),
                reason: format!("the answer broke off: {}", error_chain(&err)),
            })?;
        serde_json::from_slice(&body).map_err(|err| SourceError::Inconsistent {
            url: url.to_string(),
            reason: format!("unexpected JSON: {err}"),
        })
    }

    /// The successful response to a POST of `body` as JSON to `url`.
    pub async fn post_json(
        &self,
        url: &Url,
        body: &serde_json::Value,
    ) -> Result<Response, SourceError> {
        self.send_with_retries(Request::PostJson(url, body)).await
    }

    async fn send_with_retries(&self, request: Request<'_>) -> Result<Response, SourceError> {
        let bearer = Mutex::new(Bearer {
            token: self.tokens.token().await?,
            refreshed: false,
        });
        // A read that is abandoned drops its requests, waits included.
        let never = CancellationToken::new();
        let retrying = |failure: &str, wait: Duration, _| {
            tracing::warn!(request = %request, %failure, wait_ms = wait.as_millis() as u64, "Directory request failed; retrying.");
        };
        let attempt = || self.attempt(request, &bearer);
        match retry::with_retries(&BACKOFF, &never, attempt, retrying).await {
            Ok(response) => Ok(response),
            Err(Exhausted::Failed(err)) => Err(err),
            Err(Exhausted::GaveUp { attempts, reason }) => Err(SourceError::Unavailable {
                request: request.to_string(),
                reason: format!("{reason} (after {attempts} attempts)"),
            }),
            Err(Exhausted::Interrupted) => Err(SourceError::Interrupted),
        }
    }

    /// One attempt: the request, and once per request the request again with a
    /// fresh token after a 401.
    async fn attempt(
        &self,
        request: Request<'_>,
        bearer: &Mutex<Bearer>,
    ) -> Attempt<Response, SourceError> {
        let mut bearer = bearer.lock().await;
        let mut sent = self.send(request, &bearer.token).await;
        let unauthorized = matches!(&sent, Ok(r) if r.status() == StatusCode::UNAUTHORIZED);
        if unauthorized && !bearer.refreshed && self.tokens.can_refresh() {
            tracing::info!("The directory refused the token; getting a fresh one.");
            bearer.token = match self.tokens.refresh(&bearer.token).await {
                Ok(token) => token,
                Err(err) => return Attempt::Fail(err.into()),
            };
            bearer.refreshed = true;
            sent = self.send(request, &bearer.token).await;
        }
        match sent {
            Ok(response) => self.judge(request, response).await,
            Err(SendError::Budget(wait)) => Attempt::GiveUp {
                reason: format!(
                    "the directory's rate limit resets in {} s (over {} = {})",
                    wait.as_secs(),
                    self.max_retry_after.key,
                    self.max_retry_after.max.as_secs()
                ),
            },
            Err(SendError::Transport(err)) => Attempt::Retry {
                reason: error_chain(&err),
                retry_after: None,
            },
        }
    }

    async fn send(&self, request: Request<'_>, token: &Secret) -> Result<Response, SendError> {
        if let Some(budget) = &self.budget {
            budget
                .take(self.max_retry_after.max)
                .await
                .map_err(SendError::Budget)?;
        }
        let (name, value) = self.tokens.header(token);
        let mut builder: RequestBuilder = match request {
            Request::Get(url) => self.client.get(url.clone()),
            Request::PostJson(url, body) => self.client.post(url.clone()).json(body),
        };
        builder = builder.header(ACCEPT, self.accept).header(name, value);
        for (name, value) in &self.headers {
            builder = builder.header(*name, value);
        }
        let response = builder.send().await.map_err(SendError::Transport)?;
        if let Some(budget) = &self.budget {
            budget.observe(response.headers()).await;
        }
        Ok(response)
    }

    /// What an answer means: a response to read, a failure worth another
    /// attempt, or the end of the read.
    async fn judge(
        &self,
        request: Request<'_>,
        response: Response,
    ) -> Attempt<Response, SourceError> {
        let status = response.status();
        match retry::classify(status) {
            Class::Success => Attempt::Done(response),
            Class::Transient => self.transient(status, &response),
            Class::Unauthorized => self.refusal(request, response).await,
            Class::Rejected => Attempt::Fail(SourceError::Rejected {
                request: request.to_string(),
                status,
            }),
        }
    }

    fn transient(&self, status: StatusCode, response: &Response) -> Attempt<Response, SourceError> {
        let now = SystemTime::now();
        match retry::retry_after(
            response.headers(),
            now,
            "the directory",
            self.max_retry_after,
        ) {
            Ok(retry_after) => Attempt::Retry {
                reason: format!("answered {status}"),
                retry_after,
            },
            Err(too_long) => Attempt::GiveUp {
                reason: format!("answered {status}; {too_long}"),
            },
        }
    }

    /// A 401 or 403: the end of the read, with what the directory said, unless
    /// the directory says it is only throttling.
    async fn refusal(
        &self,
        request: Request<'_>,
        response: Response,
    ) -> Attempt<Response, SourceError> {
        let status = response.status();
        let (body, _) = crate::http::body_up_to(response, MAX_REFUSAL_BYTES).await;
        if status == StatusCode::FORBIDDEN && self.throttled.is_some_and(|check| check(&body)) {
            return Attempt::Retry {
                reason: format!("answered {status} (throttled)"),
                retry_after: None,
            };
        }
        let said: String = String::from_utf8_lossy(&body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(MAX_REASON_CHARS)
            .collect();
        Attempt::Fail(SourceError::Refused {
            request: request.to_string(),
            status: status.as_u16(),
            reason: if said.is_empty() {
                said
            } else {
                format!(": {said}")
            },
        })
    }
}

/// Why a request was not answered.
enum SendError {
    /// The budget is spent until a reset further away than the bound.
    Budget(Duration),
    Transport(reqwest::Error),
}

impl std::fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Get(url) => write!(f, "GET {url}"),
            Self::PostJson(url, _) => write!(f, "POST {url}"),
        }
    }
}

/// `base` with `segments` appended to its path, each percent-encoded (an id or
/// a realm name cannot break out of its segment). An http(s) URL always takes
/// a path.
pub fn below(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
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

    /// A directory that answers each request with `answer(n, headers, body)`, n
    /// counting from 0, and remembers when each request arrived.
    async fn scripted<F>(answer: F) -> (Url, Arc<std::sync::Mutex<Vec<Instant>>>)
    where
        F: Fn(usize, &HeaderMap, &str) -> (u16, Vec<(&'static str, String)>, &'static str)
            + Send
            + Sync
            + 'static,
    {
        let arrivals = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let answer = Arc::new(answer);
        let app = axum::Router::new().fallback(move |headers: HeaderMap, body: String| {
            let n = {
                let mut seen = seen.lock().expect("arrivals");
                seen.push(Instant::now());
                seen.len() - 1
            };
            let (status, extra, text) = answer(n, &headers, &body);
            let mut headers = HeaderMap::new();
            for (name, value) in extra {
                headers.insert(name, value.parse().expect("header value"));
            }
            async move { (StatusCode::from_u16(status).expect("status"), headers, text) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (
            format!("http://{address}/x").parse().expect("url"),
            arrivals,
        )
    }

    /// Okta-style budget headers: `remaining` left, the window resetting
    /// `reset_in` seconds after the answer's own Date.
    fn budget_headers(remaining: u64, reset_in: u64) -> Vec<(&'static str, String)> {
        let now = SystemTime::now();
        let epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        vec![
            ("date", httpdate::fmt_http_date(now)),
            ("x-rate-limit-remaining", remaining.to_string()),
            ("x-rate-limit-reset", (epoch + reset_in).to_string()),
        ]
    }

    const OKTA_BUDGET: RateBudget = RateBudget {
        remaining: "x-rate-limit-remaining",
        reset: "x-rate-limit-reset",
    };

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_is_waited_out_before_the_next_request() {
        let (url, arrivals) =
            scripted(|n, _, _| (200, budget_headers(1 - n.min(1) as u64, 3), "{}")).await;
        let http = http().with_rate_budget(OKTA_BUDGET);
        for _ in 0..3 {
            http.get(&url).await.expect("answered");
        }
        let arrivals = arrivals.lock().expect("arrivals").clone();
        // After the second answer (0 remaining) the third waits for the reset.
        assert!(arrivals[1] - arrivals[0] < Duration::from_secs(1));
        assert!(
            arrivals[2] - arrivals[1] >= Duration::from_secs(2),
            "{arrivals:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_until_the_budget_resets() {
        let (url, arrivals) = scripted(|n, _, _| match n {
            0 => (429, budget_headers(0, 5), "{}"),
            _ => (200, budget_headers(10, 60), "{}"),
        })
        .await;
        http()
            .with_rate_budget(OKTA_BUDGET)
            .get(&url)
            .await
            .expect("the retry succeeds");
        let arrivals = arrivals.lock().expect("arrivals").clone();
        assert_eq!(arrivals.len(), 2);
        assert!(
            arrivals[1] - arrivals[0] >= Duration::from_secs(4),
            "{arrivals:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_further_than_the_bound_fails_at_once() {
        let (url, arrivals) = scripted(|_, _, _| (200, budget_headers(0, 3_600), "{}")).await;
        let http = http().with_rate_budget(OKTA_BUDGET);
        http.get(&url).await.expect("the first is answered");
        let err = http.get(&url).await.expect_err("the reset is an hour away");
        assert_eq!(arrivals.lock().expect("arrivals").len(), 1);
        assert!(err.to_string().contains("rate limit resets in"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttling_403_is_retried_and_another_403_names_its_reason() {
        let throttled = |body: &[u8]| String::from_utf8_lossy(body).contains("rateLimitExceeded");
        let (url, arrivals) = scripted(|n, _, _| match n {
            0 => (
                403,
                vec![],
                r#"{"error": {"errors": [{"reason": "rateLimitExceeded"}]}}"#,
            ),
            1 => (200, vec![], "{}"),
            _ => (
                403,
                vec![],
                r#"{"error": {"message": "Not Authorized to access this resource/api"}}"#,
            ),
        })
        .await;
        let http = http().with_throttle_check(throttled);
        http.get(&url)
            .await
            .expect("retried after the throttling 403");
        let err = http.get(&url).await.expect_err("refused");
        assert_eq!(arrivals.lock().expect("arrivals").len(), 3);
        assert!(
            err.to_string().ends_with(r#"answered 403: {"error": {"message": "Not Authorized to access this resource/api"}}"#),
            "{err}"
        );
    }

    #[tokio::test]
    async fn api_keys_go_in_their_vendors_header_with_the_extra_headers() {
        let (url, _) = scripted(|_, headers, body| {
            let ok = headers.get("authorization").is_some_and(|v| v == "SSWS k")
                && headers.get("x-org-id").is_some_and(|v| v == "org-1")
                && body == r#"{"format":"json"}"#;
            (if ok { 200 } else { 400 }, vec![], "{}")
        })
        .await;
        let client = reqwest::Client::new();
        let key = SourceAuth::ApiKey(crate::config::ApiKey {
            header: "authorization",
            scheme: Some("SSWS"),
            key: Secret::new("k"),
        });
        let http = DirectoryHttp::new(
            client.clone(),
            Arc::new(TokenSource::new(&key, client)),
            "application/json",
            Duration::from_secs(300),
        )
        .with_header("x-org-id", "org-1".into());
        http.post_json(&url, &serde_json::json!({"format": "json"}))
            .await
            .expect("the fake found the key, the header and the body");
    }
}
