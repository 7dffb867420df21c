//! Typed client for the hoop gateway's user API (`{target.url}/users`), following
//! `docs/gateway-api.md`: bare lower-cased e-mails, 409 on an existing e-mail,
//! `{"message": ...}` error bodies, no rate limiting of its own.

use std::time::SystemTime;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, LOCATION};
use serde::Serialize;
use url::Url;

use super::{Answer, TargetError};
use crate::config::{ApiKeyHeader, TargetConfig};
use crate::error_chain;
use crate::events;
use crate::model::{Email, GatewayUser, Profile};
use crate::retry::{self, Class, WaitBound};

/// Longest gateway message kept for a report.
const MAX_MESSAGE_CHARS: usize = 300;

pub struct HoopClient {
    http: reqwest::Client,
    /// The API base, e.g. `https://use.hoop.dev/api`.
    base: Url,
    /// The longest `Retry-After` waited for; a longer one ends the request.
    max_retry_after: WaitBound,
    /// `target.max_error_body_bytes`: the most of an error body read.
    max_error_body_bytes: usize,
}

/// The body of `POST /users` (the spec's `openapi.User`, only the fields idsync owns).
#[derive(Serialize)]
struct NewUserBody<'a> {
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    groups: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slack_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    picture: Option<&'a str>,
    /// What the gateway stores for an empty status anyway; sent explicitly because
    /// the 201 echoes the request, and an echoed `""` breaks the published contract.
    status: &'static str,
}

impl HoopClient {
    pub fn new(
        config: &TargetConfig,
        builder: reqwest::ClientBuilder,
    ) -> Result<Self, TargetError> {
        let (name, value) = match config.api_key_header {
            ApiKeyHeader::Authorization => {
                (AUTHORIZATION, format!("Bearer {}", config.api_key.expose()))
            }
            ApiKeyHeader::ApiKey => (
                HeaderName::from_static("api-key"),
                config.api_key.expose().to_owned(),
            ),
        };
        let mut value = HeaderValue::from_str(&value).map_err(|_| TargetError::InvalidApiKey)?;
        // Keeps the key out of reqwest's and hyper's debug output.
        value.set_sensitive(true);
        let http = builder
            .default_headers(HeaderMap::from_iter([(name, value)]))
            .timeout(config.timeout)
            .build()
            .map_err(|err| TargetError::Client(error_chain(&err)))?;
        Ok(Self {
            http,
            base: config.url.clone(),
            max_retry_after: WaitBound {
                max: config.max_retry_after,
                key: "target.max_retry_after_secs",
            },
            max_error_body_bytes: config.max_error_body_bytes,
        })
    }

    pub async fn create_user(&self, profile: &Profile) -> Answer<()> {
        let body = NewUserBody {
            email: profile.email.as_str(),
            name: profile.name.as_deref(),
            groups: profile.groups.iter().map(|g| g.as_str()).collect(),
            slack_id: profile.slack_id.as_deref(),
            picture: profile.picture.as_deref(),
            status: "invited",
        };
        let request = self.http.post(self.url(&["users"])).json(&body);
        self.send(request, |_| async { Ok(()) }).await
    }

    /// Full replace of the user stored under `key` (see docs/gateway-api.md: every
    /// omitted field is cleared, so `user` must be complete).
    pub async fn put_user(&self, key: &Email, user: &GatewayUser) -> Answer<()> {
        let request = self.http.put(self.user_url(key)).json(user);
        self.send(request, |_| async { Ok(()) }).await
    }

    pub async fn get_user(&self, key: &Email) -> Answer<GatewayUser> {
        let request = self.http.get(self.user_url(key));
        self.send(request, |response| async move { response.json().await })
            .await
    }

    pub async fn list_users(&self) -> Answer<Vec<GatewayUser>> {
        let request = self.http.get(self.url(&["users"]));
        self.send(request, |response| async move { response.json().await })
            .await
    }

    /// `GET /serverinfo`: answers any valid key, so it checks the connection and
    /// the credentials without touching users.
    pub async fn server_info(&self) -> Answer<serde_json::Value> {
        let request = self.http.get(self.url(&["serverinfo"]));
        self.send(request, |response| async move { response.json().await })
            .await
    }

    /// `GET`/`PUT` key: an e-mail-shaped value is looked up by e-mail, which stays
    /// valid after the user's first login replaces the subject.
    fn user_url(&self, key: &Email) -> Url {
        self.url(&["users", key.as_str()])
    }

    /// `{base}/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Sends `request` and classifies the answer; `read` turns a 2xx into `T`.
    async fn send<T, F, Fut>(&self, request: reqwest::RequestBuilder, read: F) -> Answer<T>
    where
        F: FnOnce(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = reqwest::Result<T>>,
    {
        let request = request.build().map(|request| {
            let asked = (request.method().clone(), request.url().clone());
            (self.http.execute(request), asked)
        });
        let (sent, (method, url)) = match request {
            Ok((sent, asked)) => (sent.await, asked),
            Err(err) => (Err(err), (reqwest::Method::GET, self.base.clone())),
        };
        let response = match sent {
            Ok(response) => response,
            Err(err) => {
                events::target_answered(None);
                return Answer::Transient {
                    // A request that was never connected cannot have been applied.
                    maybe_applied: !err.is_connect(),
                    reason: error_chain(&err),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        events::target_answered(Some(status.as_u16()));
        match status.as_u16() {
            409 => return Answer::Conflict,
            404 => return Answer::NotFound,
            _ if status.is_redirection() => {
                let location = response
                    .headers()
                    .get(LOCATION)
                    .map_or("none".into(), |value| {
                        String::from_utf8_lossy(value.as_bytes())
                    });
                return Answer::Misdirected {
                    reason: format!(
                        "the gateway answered {} to {method} {url} (Location: {location}); check target.url",
                        status.as_u16()
                    ),
                };
            }
            _ => {}
        }
        let now = SystemTime::now();
        let retry_after =
            retry::retry_after(response.headers(), now, "the gateway", self.max_retry_after);
        match retry::classify(status) {
            Class::Success => match read(response).await {
                Ok(value) => Answer::Done(value),
                Err(err) => Answer::Transient {
                    reason: format!("unreadable answer: {}", error_chain(&err)),
                    retry_after: None,
                    maybe_applied: true,
                },
            },
            class => {
                let message = message_of(response, self.max_error_body_bytes).await;
                match class {
                    Class::Unauthorized => Answer::Unauthorized {
                        status: status.as_u16(),
                        message,
                    },
                    Class::Rejected => Answer::Rejected {
                        status: status.as_u16(),
                        message,
                    },
                    _ => match retry_after {
                        Ok(retry_after) => Answer::Transient {
                            reason: format!("{status}: {message}"),
                            retry_after,
                            maybe_applied: status.is_server_error(),
                        },
                        Err(too_long) => Answer::WaitTooLong {
                            reason: format!("{status}: {message}; {too_long}"),
                        },
                    },
                }
            }
        }
    }
}

/// The gateway's `{"message": ...}`, else the start of the body; from the first
/// `max_bytes` of it, read in chunks (the rest is left unread), and then
/// `… (truncated)`.
async fn message_of(response: reqwest::Response, max_bytes: usize) -> String {
    let (body, truncated) = crate::http::body_up_to(response, max_bytes).await;
    let text = String::from_utf8_lossy(&body);
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| body.get("message")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| text.into_owned());
    let message: String = message.trim().chars().take(MAX_MESSAGE_CHARS).collect();
    if truncated {
        format!("{message} … (truncated)")
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Email;

    #[tokio::test]
    async fn a_huge_error_body_is_cut_at_64_kib() {
        let body = "x".repeat(10 << 20);
        let app = axum::Router::new().route(
            "/api/users",
            axum::routing::post(move || {
                let body = body.clone();
                async move { (axum::http::StatusCode::BAD_REQUEST, body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = format!("[source]\nkind = \"scim\"\nurl = \"https://x.com\"\nbearer_token = \"t\"\n[target]\nurl = \"http://{address}/api\"\napi_key = \"k\"\nmax_error_body_bytes = 4096\n");
        let config = crate::config::Config::parse(&config, "t", &|_| None).expect("config");
        let client = HoopClient::new(&config.target, reqwest::Client::builder()).expect("client");
        let profile = Profile {
            email: Email::parse("ann@x.com").expect("email"),
            name: None,
            groups: Vec::new(),
            slack_id: None,
            picture: None,
        };
        let Answer::Rejected { status, message } = client.create_user(&profile).await else {
            panic!("a rejection");
        };
        assert_eq!(status, 400);
        assert!(message.len() <= 4096 + 20, "{} bytes", message.len());
        assert!(message.ends_with("(truncated)"), "{message}");
    }
}
