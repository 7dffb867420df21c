//! An in-process fake Google Workspace: the OAuth 2.0 token endpoint of a
//! service account's JWT bearer grant, and the Admin SDK Directory API's reads,
//! serving an [`Org`]. It follows Google's documentation:
//!
//! - "Using OAuth 2.0 for Server to Server Applications" (developers.google.com/
//!   identity/protocols/oauth2/service-account): `POST /token` with
//!   `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` and an RS256
//!   `assertion` whose `iss` is the service account, `sub` the impersonated
//!   admin, `aud` the token URI, `scope` the scopes; the signature is checked
//!   with the service account's public key (`tests/support/jwt.rs`).
//! - Directory API reference (`users.list`, `groups.list`, `members.list`):
//!   `customer` (or `domain`) required for listing users and groups,
//!   `maxResults` up to 500 for users (default 100) and 200 for groups and
//!   members, opaque `pageToken`/`nextPageToken`; members of type `USER` and
//!   `GROUP`, direct ones only unless `includeDerivedMembership=true`.
//! - "Directory API: Limits and quotas": `403 userRateLimitExceeded`,
//!   `403 rateLimitExceeded` and `429` when throttled; other 403s (`forbidden`)
//!   when the admin may not read.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::fake_gateway::ServerTask;
use super::fake_keycloak::Cut;
use super::jwt::{verify_assertion, Expected, TEST_PRIVATE_KEY, TEST_PUBLIC_KEY};
use super::org::{Org, OrgGroup};

pub const USER_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const GROUP_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly";

#[derive(Clone, Debug)]
pub struct GoogleOptions {
    pub client_email: String,
    pub private_key_id: String,
    pub delegated_admin: String,
    /// Waited before answering each directory request (the benchmark's latency).
    pub delay: Duration,
}

impl Default for GoogleOptions {
    fn default() -> Self {
        Self {
            client_email: "idsync@acme-idsync.iam.gserviceaccount.com".into(),
            private_key_id: "0f3c9d7e2b1a".into(),
            delegated_admin: "it-admin@example.com".into(),
            delay: Duration::ZERO,
        }
    }
}

/// What a throttled request is answered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Throttle {
    UserRateLimit,
    RateLimit,
    TooManyRequests,
}

#[derive(Clone, Debug, Default)]
pub struct GoogleFaults {
    /// From this directory request on (counted from 1), one answer each of these.
    pub throttle_from_request: Option<usize>,
    pub throttles: Vec<Throttle>,
    /// Every directory request answers `403 forbidden`.
    pub forbidden: bool,
    /// Users pages from this offset on are cut off.
    pub cut_users_from: Option<(usize, Cut)>,
}

pub struct FakeGoogle {
    shared: Arc<Shared>,
    server: ServerTask,
}

type Shared = super::shared_state::Shared<GoogleOptions, GoogleState>;

#[derive(Default)]
struct GoogleState {
    org: Org,
    /// Index of each user in `org.users` by id.
    by_id: HashMap<String, usize>,
    faults: GoogleFaults,
    tokens: Vec<String>,
    token_requests: usize,
    /// Why each refused token request was refused.
    token_refusals: Vec<String>,
    /// Issued page tokens: the offset each stands for.
    page_tokens: HashMap<String, usize>,
    /// Directory requests (path and query) in arrival order.
    requests: Vec<String>,
    throttled: usize,
}

impl FakeGoogle {
    pub async fn start(opts: GoogleOptions, org: Org) -> Self {
        Self::serve(opts, org, "127.0.0.1:0").await
    }

    /// Serves on `address` (the demo's fixed port).
    pub async fn serve(opts: GoogleOptions, org: Org, address: &str) -> Self {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind the fake Google");
        let shared = Arc::new(Shared::new(opts, GoogleState::default()));
        shared.lock().set_org(org);
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self { shared, server }
    }

    /// `http://127.0.0.1:PORT`: the API root (`source.url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.url())
    }

    pub fn options(&self) -> &GoogleOptions {
        &self.shared.opts
    }

    /// A service-account key file for this fake, signed with the test key.
    pub fn key_file(&self) -> String {
        let opts = &self.shared.opts;
        json!({
            "type": "service_account",
            "project_id": "acme-idsync",
            "private_key_id": opts.private_key_id,
            "private_key": TEST_PRIVATE_KEY,
            "client_email": opts.client_email,
            "client_id": "104729384756102938475",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    pub fn org(&self) -> Org {
        self.shared.lock().org.clone()
    }

    pub fn set_org(&self, org: Org) {
        self.shared.lock().set_org(org);
    }

    pub fn set_faults(&self, faults: GoogleFaults) {
        let mut state = self.shared.lock();
        state.faults = faults;
        state.requests.clear();
    }

    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    pub fn token_refusals(&self) -> Vec<String> {
        self.shared.lock().token_refusals.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    pub fn throttled(&self) -> usize {
        self.shared.lock().throttled
    }
}

impl GoogleState {
    fn set_org(&mut self, org: Org) {
        self.by_id = (org.users.iter().enumerate())
            .map(|(at, user)| (user.id.clone(), at))
            .collect();
        self.org = org;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/token", post(token))
        .route("/admin/directory/v1/users", get(users))
        .route("/admin/directory/v1/groups", get(groups))
        .route("/admin/directory/v1/groups/{key}/members", get(members))
        .with_state(shared)
}

/// The JWT bearer grant: the assertion must be signed by the service account's
/// key, for this token URI, acting as the delegated admin, with exactly the two
/// read-only directory scopes (what the delegation in the README allows).
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let opts = &shared.opts;
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let audience = format!("http://{host}/token");
    let checked = (form.get("grant_type").map(String::as_str)
        == Some("urn:ietf:params:oauth:grant-type:jwt-bearer"))
    .then_some(())
    .ok_or_else(|| "unsupported_grant_type".to_owned())
    .and_then(|()| {
        let expected = Expected {
            issuer: &opts.client_email,
            subject: &opts.delegated_admin,
            audience: &audience,
        };
        let assertion = form.get("assertion").map(String::as_str).unwrap_or("");
        verify_assertion(assertion, TEST_PUBLIC_KEY, &expected)
    })
    .and_then(|(header, claims)| {
        if header.kid.as_deref() != Some(opts.private_key_id.as_str()) {
            return Err("the assertion's kid is not the key's private_key_id".into());
        }
        let mut scopes: Vec<&str> = claims["scope"].as_str().unwrap_or("").split(' ').collect();
        scopes.sort_unstable();
        if scopes != [GROUP_SCOPE, USER_SCOPE] {
            return Err(format!("unauthorized_client: scopes {scopes:?}"));
        }
        Ok(())
    });
    let mut state = shared.lock();
    state.token_requests += 1;
    if let Err(reason) = checked {
        let body = if reason.starts_with("unauthorized_client") {
            json!({"error": "unauthorized_client", "error_description": "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested."})
        } else {
            json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
        };
        state.token_refusals.push(reason);
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let token = format!("ya29.fake-{:032x}", rand::rng().random::<u128>());
    state.tokens.push(token.clone());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// An error as Google answers it.
pub struct GoogleError {
    status: StatusCode,
    reason: &'static str,
    message: &'static str,
}

fn google_error(status: StatusCode, reason: &'static str, message: &'static str) -> GoogleError {
    GoogleError {
        status,
        reason,
        message,
    }
}

impl IntoResponse for GoogleError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "code": self.status.as_u16(),
            "message": self.message,
            "errors": [{"message": self.message, "domain": "global", "reason": self.reason}],
        }});
        (self.status, Json(body)).into_response()
    }
}

/// Token, faults and latency shared by every directory request; `Err` is the
/// answer instead.
async fn admit(shared: &Shared, headers: &HeaderMap, line: String) -> Result<(), GoogleError> {
    if !shared.opts.delay.is_zero() {
        tokio::time::sleep(shared.opts.delay).await;
    }
    let mut state = shared.lock();
    state.requests.push(line);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.tokens.iter().any(|known| known == t)) {
        return Err(google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Invalid Credentials",
        ));
    }
    if state.faults.forbidden {
        return Err(google_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not Authorized to access this resource/api",
        ));
    }
    let n = state.requests.len();
    let throttle = (state.faults.throttle_from_request)
        .and_then(|from| n.checked_sub(from))
        .and_then(|at| state.faults.throttles.get(at).copied());
    let Some(throttle) = throttle else {
        return Ok(());
    };
    state.throttled += 1;
    let quota = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user'";
    Err(match throttle {
        Throttle::UserRateLimit => {
            google_error(StatusCode::FORBIDDEN, "userRateLimitExceeded", quota)
        }
        Throttle::RateLimit => google_error(StatusCode::FORBIDDEN, "rateLimitExceeded", quota),
        Throttle::TooManyRequests => {
            google_error(StatusCode::TOO_MANY_REQUESTS, "rateLimitExceeded", quota)
        }
    })
}

fn line(path: &str, query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    format!("{path}?{}", pairs.join("&"))
}

/// `maxResults` (default, cap) and the offset `pageToken` stands for.
fn window(
    state: &GoogleState,
    query: &HashMap<String, String>,
    default: usize,
    cap: usize,
) -> Result<(usize, usize), GoogleError> {
    let max = match query.get("maxResults").map(|m| m.parse::<usize>()) {
        None => default,
        Some(Ok(max)) if (1..=cap).contains(&max) => max,
        Some(_) => {
            return Err(google_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                "Invalid value for: maxResults",
            ))
        }
    };
    let offset = match query.get("pageToken") {
        None => 0,
        Some(token) => match state.page_tokens.get(token) {
            Some(offset) => *offset,
            None => {
                return Err(google_error(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Invalid page token",
                ))
            }
        },
    };
    Ok((max, offset))
}

/// One page of a listing of `total` entries, `entry(i)` the i-th, with a fresh
/// `nextPageToken` when more follow.
fn page(
    state: &mut GoogleState,
    (kind, field): (&str, &str),
    total: usize,
    entry: impl Fn(&GoogleState, usize) -> Value,
    (max, offset): (usize, usize),
) -> Value {
    let entries: Vec<Value> = (offset..total.min(offset + max))
        .map(|i| entry(state, i))
        .collect();
    let mut body = json!({ "kind": kind, "etag": "\"fake-etag\"" });
    if !entries.is_empty() {
        body[field] = Value::Array(entries);
    }
    if offset + max < total {
        let token = format!("{:024x}", rand::rng().random::<u128>() >> 32);
        state.page_tokens.insert(token.clone(), offset + max);
        body["nextPageToken"] = json!(token);
    }
    body
}

fn customer_given(query: &HashMap<String, String>) -> Result<(), GoogleError> {
    if query.contains_key("customer") || query.contains_key("domain") {
        return Ok(());
    }
    Err(google_error(
        StatusCode::BAD_REQUEST,
        "badRequest",
        "Bad Request",
    ))
}

async fn users(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = admit(&shared, &headers, line("/users", &query)).await {
        return answer.into_response();
    }
    let mut state = shared.lock();
    let window = match customer_given(&query).and_then(|()| window(&state, &query, 100, 500)) {
        Ok(window) => window,
        Err(answer) => return answer.into_response(),
    };
    let cut = state
        .faults
        .cut_users_from
        .filter(|(from, _)| window.1 >= *from);
    let total = state.org.users.len();
    let body = page(
        &mut state,
        ("admin#directory#users", "users"),
        total,
        |s, i| user_json(&s.org.users[i]),
        window,
    );
    match cut.map(|(_, cut)| cut) {
        None => Json(body).into_response(),
        Some(Cut::Failing) => google_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "backendError",
            "Backend Error",
        )
        .into_response(),
        Some(Cut::Truncated) => {
            let text = body.to_string();
            (
                [(header::CONTENT_TYPE, "application/json")],
                text[..text.len() / 2].to_owned(),
            )
                .into_response()
        }
    }
}

fn user_json(user: &super::org::OrgUser) -> Value {
    json!({
        "kind": "admin#directory#user",
        "id": user.id,
        "etag": "\"fake-etag\"",
        "primaryEmail": user.email,
        "name": {"givenName": user.given, "familyName": user.family, "fullName": user.full_name()},
        "isAdmin": false,
        "isDelegatedAdmin": false,
        "lastLoginTime": "2026-11-30T09:00:00.000Z",
        "creationTime": "2024-01-01T00:00:00.000Z",
        "agreedToTerms": true,
        "suspended": !user.active,
        "archived": false,
        "changePasswordAtNextLogin": false,
        "ipWhitelisted": false,
        "emails": [{"address": user.email, "primary": true}],
        "customerId": "C03az79cb",
        "orgUnitPath": "/",
        "isMailboxSetup": true,
        "includeInGlobalAddressList": true,
    })
}

async fn groups(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = admit(&shared, &headers, line("/groups", &query)).await {
        return answer.into_response();
    }
    let mut state = shared.lock();
    let window = match customer_given(&query).and_then(|()| window(&state, &query, 200, 200)) {
        Ok(window) => window,
        Err(answer) => return answer.into_response(),
    };
    let total = state.org.groups.len();
    let entry = |s: &GoogleState, i: usize| group_json(&s.org, &s.org.groups[i]);
    Json(page(
        &mut state,
        ("admin#directory#groups", "groups"),
        total,
        entry,
        window,
    ))
    .into_response()
}

fn group_json(org: &Org, group: &OrgGroup) -> Value {
    let direct = group.members.len() + org.children(&group.id).count();
    json!({
        "kind": "admin#directory#group",
        "id": group.id,
        "etag": "\"fake-etag\"",
        "email": group.email(),
        "name": group.name,
        "directMembersCount": direct.to_string(),
        "description": "",
        "adminCreated": true,
    })
}

/// A group's direct members: its users, then the groups nested in it.
async fn members(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(answer) = admit(
        &shared,
        &headers,
        line(&format!("/groups/{key}/members"), &query),
    )
    .await
    {
        return answer.into_response();
    }
    let mut state = shared.lock();
    let window = match window(&state, &query, 200, 200) {
        Ok(window) => window,
        Err(answer) => return answer.into_response(),
    };
    let org = &state.org;
    let Some(group) = org.groups.iter().find(|g| g.id == key || g.email() == key) else {
        return google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            "Resource Not Found: groupKey",
        )
        .into_response();
    };
    let users = group.members.iter().filter_map(|id| {
        let user = &org.users[*state.by_id.get(id)?];
        let status = if user.active { "ACTIVE" } else { "SUSPENDED" };
        Some(member_json(&user.id, &user.email, "USER", status))
    });
    let nested = org
        .children(&group.id)
        .map(|g| member_json(&g.id, &g.email(), "GROUP", "ACTIVE"));
    let all: Vec<Value> = users.chain(nested).collect();
    let total = all.len();
    Json(page(
        &mut state,
        ("admin#directory#members", "members"),
        total,
        |_, i| all[i].clone(),
        window,
    ))
    .into_response()
}

fn member_json(id: &str, email: &str, kind: &str, status: &str) -> Value {
    json!({
        "kind": "admin#directory#member",
        "etag": "\"fake-etag\"",
        "id": id,
        "email": email,
        "role": "MEMBER",
        "type": kind,
        "status": status,
    })
}
