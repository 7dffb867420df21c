//! Typed client for the hoop gateway's user API (`{target.url}/users`), following
//! `hoop-api-behaviour.md`: bare lower-cased e-mails, 409 on an existing e-mail,
//! `{"message": ...}` error bodies, no rate limiting of its own.

use std::time::SystemTime;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use serde::Serialize;
use url::Url;

use super::{CreateAnswer, TargetError};
use crate::config::{ApiKeyHeader, TargetConfig};
use crate::error_chain;
use crate::plan::CreateUser;
use crate::retry::{self, Class};

/// Longest gateway message kept for a report.
const MAX_MESSAGE_CHARS: usize = 300;

pub struct HoopClient {
    http: reqwest::Client,
    users_url: Url,
}

/// The body of `POST /users` (the spec's `openapi.User`, only the fields idsync owns).
#[derive(Serialize)]
struct NewUserBody<'a> {
    email: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    groups: Vec<&'a str>,
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
        let mut users_url = config.url.clone();
        users_url.set_path(&format!("{}/users", config.url.path()));
        Ok(Self { http, users_url })
    }

    pub async fn create_user(&self, user: &CreateUser) -> CreateAnswer {
        let body = NewUserBody {
            email: user.email.as_str(),
            name: user.name.as_deref(),
            groups: user.groups.iter().map(|g| g.as_str()).collect(),
        };
        let response = match self
            .http
            .post(self.users_url.clone())
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(err) => {
                return CreateAnswer::Transient {
                    // A request that was never connected cannot have been applied.
                    maybe_applied: !err.is_connect(),
                    reason: error_chain(&err),
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = retry::retry_after(response.headers(), SystemTime::now());
        if status.as_u16() == 409 {
            return CreateAnswer::Conflict;
        }
        match retry::classify(status) {
            Class::Success => CreateAnswer::Created,
            class => {
                let message = message_of(response).await;
                match class {
                    Class::Unauthorized => CreateAnswer::Unauthorized {
                        status: status.as_u16(),
                        message,
                    },
                    Class::Rejected => CreateAnswer::Rejected {
                        status: status.as_u16(),
                        message,
                    },
                    _ => CreateAnswer::Transient {
                        reason: format!("{status}: {message}"),
                        retry_after,
                        maybe_applied: status.is_server_error(),
                    },
                }
            }
        }
    }
}

/// The gateway's `{"message": ...}`, else the start of the body.
async fn message_of(response: reqwest::Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|body| body.get("message")?.as_str().map(str::to_owned))
        .unwrap_or(text);
    message.trim().chars().take(MAX_MESSAGE_CHARS).collect()
}
