//! Tokens from a token endpoint at a known address: client credentials with a
//! secret or a signed assertion (RFC 6749 §4.4, RFC 7523 §2.2), or a JWT bearer
//! grant (RFC 7523 §2.1).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::ACCEPT;
use serde::Deserialize;
use serde_json::json;

use super::cache::{FreshToken, TokenCache};
use super::AuthError;
use crate::config::{GrantConfig, GrantMethod, Secret, SigningKey};
use crate::error_chain;

/// How long an assertion is valid: long enough for clock skew, short enough to
/// be useless if it leaked (Okta and Google accept at most an hour).
const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);
/// The most of a token answer read; real ones are a few KiB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

pub struct GrantTokens {
    config: GrantConfig,
    http: reqwest::Client,
    cache: TokenCache,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<u64>,
}

/// RFC 6749 §5.2.
#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    error_description: Option<String>,
}

impl GrantTokens {
    pub fn new(config: GrantConfig, http: reqwest::Client) -> Self {
        Self {
            config,
            http,
            cache: TokenCache::default(),
        }
    }

    pub(super) async fn current(&self) -> Result<Secret, AuthError> {
        self.cache.current(|| self.request_token()).await
    }

    pub(super) async fn replace(&self, rejected: &Secret) -> Result<Secret, AuthError> {
        self.cache.replace(rejected, || self.request_token()).await
    }

    async fn request_token(&self) -> Result<FreshToken, AuthError> {
        let form = self.form()?;
        let url = &self.config.token_url;
        let requested_at = Instant::now();
        let response = self
            .http
            .post(url.clone())
            .header(ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|err| AuthError::Unavailable(format!("POST {url}: {}", error_chain(&err))))?;
        let status = response.status();
        let (body, _) = crate::http::body_up_to(response, MAX_ANSWER_BYTES).await;
        if status.is_success() {
            let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|err| {
                AuthError::Unavailable(format!("POST {url}: not a token answer: {err}"))
            })?;
            return Ok(FreshToken {
                token: Secret::new(answer.access_token),
                lifetime: answer.expires_in.map(Duration::from_secs),
                requested_at,
            });
        }
        match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(refusal) if status.is_client_error() => Err(AuthError::Refused {
                client_id: self.config.client_id.clone(),
                reason: match refusal.error_description {
                    Some(text) => format!("{} ({text})", refusal.error),
                    None => refusal.error,
                },
            }),
            _ => Err(AuthError::Unavailable(format!(
                "POST {url} answered {status}"
            ))),
        }
    }

    /// The token request's form fields, with a freshly signed assertion where the
    /// method needs one.
    fn form(&self) -> Result<Vec<(&'static str, String)>, AuthError> {
        let client_id = &self.config.client_id;
        let audience = self.config.token_url.as_str();
        let mut form = match &self.config.method {
            GrantMethod::ClientSecret(secret) => vec![
                ("grant_type", "client_credentials".to_owned()),
                ("client_id", client_id.clone()),
                ("client_secret", secret.expose().to_owned()),
            ],
            GrantMethod::ClientAssertion(key) => {
                let claims = assertion_claims(client_id, client_id, audience);
                vec![
                    ("grant_type", "client_credentials".to_owned()),
                    ("client_id", client_id.clone()),
                    ("client_assertion_type", CLIENT_ASSERTION_TYPE.to_owned()),
                    ("client_assertion", sign(key, &claims)?),
                ]
            }
            GrantMethod::JwtBearer {
                key,
                issuer,
                subject,
                scope,
            } => {
                let mut claims = assertion_claims(issuer, subject, audience);
                claims["scope"] = json!(scope);
                vec![
                    ("grant_type", JWT_BEARER_GRANT.to_owned()),
                    ("assertion", sign(key, &claims)?),
                ]
            }
        };
        form.extend(self.config.params.iter().cloned());
        Ok(form)
    }
}

/// The claims RFC 7523 §3 asks of every assertion, with a unique `jti` so that
/// the endpoint can refuse a replay.
fn assertion_claims(issuer: &str, subject: &str, audience: &str) -> serde_json::Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME.as_secs(),
        "jti": format!("{:032x}", rand::random::<u128>()),
    })
}

fn sign(key: &SigningKey, claims: &serde_json::Value) -> Result<String, AuthError> {
    key.sign(claims)
        .map_err(|err| AuthError::Unavailable(format!("cannot sign the assertion: {err}")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use axum::extract::Form;
    use axum::http::StatusCode;
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use super::*;

    const PRIVATE_KEY: &str = include_str!("../../../tests/fixtures/test-rsa-key.pem");
    const PUBLIC_KEY: &str = include_str!("../../../tests/fixtures/test-rsa-public.pem");

    type Forms = Arc<Mutex<Vec<HashMap<String, String>>>>;

    /// A token endpoint that records each form and answers with `status` and `body`.
    async fn endpoint(status: u16, body: &'static str) -> (url::Url, Forms) {
        let forms = Forms::default();
        let seen = forms.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |Form(form): Form<HashMap<String, String>>| {
                seen.lock().expect("forms").push(form);
                async move { (StatusCode::from_u16(status).expect("status"), body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{address}/token").parse().expect("url");
        (url, forms)
    }

    fn tokens(token_url: url::Url, method: GrantMethod) -> GrantTokens {
        let config = GrantConfig {
            token_url,
            client_id: "client-1".into(),
            method,
            params: vec![("scope", "users.read".into())],
        };
        GrantTokens::new(config, reqwest::Client::new())
    }

    fn key() -> SigningKey {
        SigningKey::from_pem("test.key", &Secret::new(PRIVATE_KEY))
            .expect("the test key")
            .with_key_id("key-1".into())
    }

    /// The assertion's claims, after checking its RS256 signature and `kid`.
    fn verified(assertion: &str, audience: &url::Url) -> serde_json::Value {
        let header = jsonwebtoken::decode_header(assertion).expect("a JWT");
        assert_eq!(header.kid.as_deref(), Some("key-1"));
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_audience(&[audience.as_str()]);
        let key = DecodingKey::from_rsa_pem(PUBLIC_KEY.as_bytes()).expect("public key");
        jsonwebtoken::decode::<serde_json::Value>(assertion, &key, &validation)
            .expect("signed by the test key, for this audience, not expired")
            .claims
    }

    #[tokio::test]
    async fn a_client_secret_is_sent_in_the_body_and_the_token_is_kept() {
        let (url, forms) = endpoint(200, r#"{"access_token": "t1", "expires_in": 3600}"#).await;
        let tokens = tokens(url, GrantMethod::ClientSecret(Secret::new("s3cret")));
        assert_eq!(tokens.current().await.expect("token").expose(), "t1");
        assert_eq!(tokens.current().await.expect("cached").expose(), "t1");
        let forms = forms.lock().expect("forms");
        assert_eq!(forms.len(), 1, "one request for both calls");
        assert_eq!(forms[0]["grant_type"], "client_credentials");
        assert_eq!(forms[0]["client_secret"], "s3cret");
        assert_eq!(forms[0]["scope"], "users.read");
    }

    #[tokio::test]
    async fn a_client_assertion_is_signed_for_the_token_endpoint() {
        let (url, forms) = endpoint(200, r#"{"access_token": "t1"}"#).await;
        tokens(url.clone(), GrantMethod::ClientAssertion(key()))
            .current()
            .await
            .expect("token");
        let form = forms.lock().expect("forms")[0].clone();
        assert_eq!(form["client_assertion_type"], CLIENT_ASSERTION_TYPE);
        assert!(!form.contains_key("client_secret"));
        let claims = verified(&form["client_assertion"], &url);
        assert_eq!(claims["iss"], "client-1");
        assert_eq!(claims["sub"], "client-1");
        assert_eq!(claims["jti"].as_str().map(str::len), Some(32));
    }

    #[tokio::test]
    async fn a_jwt_bearer_grant_carries_subject_and_scope_in_the_assertion() {
        let (url, forms) = endpoint(200, r#"{"access_token": "t1"}"#).await;
        let method = GrantMethod::JwtBearer {
            key: key(),
            issuer: "sa@project.iam.example".into(),
            subject: "admin@example.com".into(),
            scope: "directory.readonly".into(),
        };
        tokens(url.clone(), method).current().await.expect("token");
        let form = forms.lock().expect("forms")[0].clone();
        assert_eq!(form["grant_type"], JWT_BEARER_GRANT);
        let claims = verified(&form["assertion"], &url);
        assert_eq!(claims["iss"], "sa@project.iam.example");
        assert_eq!(claims["sub"], "admin@example.com");
        assert_eq!(claims["scope"], "directory.readonly");
    }

    #[tokio::test]
    async fn a_refusal_says_what_the_endpoint_said_and_never_the_secret() {
        let refusal =
            r#"{"error": "invalid_client", "error_description": "Client authentication failed"}"#;
        let (url, _) = endpoint(401, refusal).await;
        let err = tokens(url, GrantMethod::ClientSecret(Secret::new("s3cret")))
            .current()
            .await
            .expect_err("refused");
        let said = err.to_string();
        assert!(
            said.ends_with("\"client-1\": invalid_client (Client authentication failed)"),
            "{said}"
        );
        assert!(!said.contains("s3cret"));
        let (url, _) = endpoint(503, "busy").await;
        let err = tokens(url, GrantMethod::ClientSecret(Secret::new("s3cret")))
            .current()
            .await
            .expect_err("unavailable");
        assert!(err.to_string().contains("answered 503"), "{err}");
    }
}
