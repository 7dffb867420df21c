//! An in-process fake identity provider: OIDC discovery and client-credentials tokens,
//! plus a SCIM 2.0 directory that only answers to those tokens.
//!
//! The real peers cannot check each other's tokens (scim2-server accepts one fixed
//! bearer), so token expiry in the middle of a SCIM walk, and paging faults such as a
//! short page before `totalResults`, can only be scripted here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::directory::Directory;
use super::fake_gateway::ServerTask;

pub const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";
const SCIM_CONTENT_TYPE: &str = "application/scim+json";

#[derive(Clone, Debug)]
pub struct IdpOptions {
    pub client_id: String,
    pub client_secret: String,
    pub token_ttl_secs: u64,
    /// Largest `count` a page may have, like real servers' cap (scim2-server: 1000);
    /// also the page size when the client sends no `count`.
    pub max_page_size: usize,
    /// When off, SCIM answers without a token, like scim2-server run without one.
    pub require_token: bool,
}

impl Default for IdpOptions {
    fn default() -> Self {
        Self {
            client_id: "idsync".to_owned(),
            client_secret: "idsync-secret".to_owned(),
            token_ttl_secs: 600,
            max_page_size: 1000,
            require_token: true,
        }
    }
}

/// Scripted SCIM faults, mostly on `/Users`. Indexes are SCIM's 1-based `startIndex`.
#[derive(Clone, Debug, Default)]
pub struct IdpFaults {
    /// Answer 500 to any `/Users` page whose `startIndex` is at or after this.
    pub fail_users_at_start_index: Option<usize>,
    /// How many such 500s before that page is served normally; `None` = forever.
    pub fail_users_times: Option<usize>,
    /// Serve users as if the directory ended after this many, while `totalResults`
    /// still reports the full size: a short or empty page before the total.
    pub truncate_users_at: Option<usize>,
    /// From this `startIndex` on, the page before it is served again first (and
    /// `totalResults` grows by that page): what offset paging does when entries move
    /// mid-walk. Nothing is lost, every user of that page is seen twice.
    pub duplicate_page: Option<usize>,
    /// Answer 500 to any `/Groups` page whose `startIndex` is at or after this.
    pub fail_groups_at_start_index: Option<usize>,
}

/// One SCIM request as the fake saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScimCall {
    /// `Users` or `Groups` (or whatever was asked for).
    pub resource: String,
    pub start_index: usize,
    pub count: usize,
    pub status: u16,
}

/// Handle of a running fake IdP; the server stops when it is dropped.
pub struct FakeIdp {
    shared: Arc<Shared>,
    _server: ServerTask,
}

impl FakeIdp {
    /// Binds 127.0.0.1 on a free port and serves in the background.
    pub async fn start(opts: IdpOptions, directory: Directory) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake IdP");
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            opts,
            state: Mutex::new(IdpState {
                directory,
                ..IdpState::default()
            }),
        });
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self {
            shared,
            _server: server,
        }
    }

    /// `http://127.0.0.1:PORT`, exactly as discovery reports it (no trailing slash).
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.shared.issuer)
    }

    pub fn scim_url(&self) -> String {
        format!("{}/scim/v2", self.shared.issuer)
    }

    pub fn client_id(&self) -> &str {
        &self.shared.opts.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.opts.client_secret
    }

    /// Replaces the directory, e.g. between two sync runs.
    pub fn set_directory(&self, directory: Directory) {
        self.shared.lock().directory = directory;
    }

    pub fn directory(&self) -> Directory {
        self.shared.lock().directory.clone()
    }

    /// Replaces the faults and restarts the failure budget.
    pub fn set_faults(&self, faults: IdpFaults) {
        let mut st = self.shared.lock();
        st.faults = faults;
        st.failures_served = 0;
    }

    /// Invalidates every token issued so far: the next SCIM call gets 401 and the
    /// client has to fetch a new token.
    pub fn expire_tokens_now(&self) {
        self.shared.lock().tokens.clear();
    }

    /// A valid token without going through `/token` (not counted), for tests that
    /// call SCIM directly.
    pub fn issue_token(&self) -> String {
        self.shared.lock().issue(self.shared.opts.token_ttl_secs)
    }

    /// Requests to `/token`, failed ones included.
    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Requests under `/scim/v2`, refused ones included.
    pub fn scim_requests(&self) -> usize {
        self.shared.lock().scim_calls.len()
    }

    /// Every SCIM request in arrival order.
    pub fn scim_calls(&self) -> Vec<ScimCall> {
        self.shared.lock().scim_calls.clone()
    }
}

struct Shared {
    issuer: String,
    opts: IdpOptions,
    state: Mutex<IdpState>,
}

#[derive(Default)]
struct IdpState {
    directory: Directory,
    faults: IdpFaults,
    failures_served: usize,
    /// Access token → expiry, on tokio's clock so `time::advance` expires tokens.
    tokens: HashMap<String, Instant>,
    token_requests: usize,
    scim_calls: Vec<ScimCall>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, IdpState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl IdpState {
    fn issue(&mut self, ttl_secs: u64) -> String {
        let token = format!("fake-at-{:032x}", rand::rng().random::<u128>());
        let expiry = Instant::now() + Duration::from_secs(ttl_secs);
        self.tokens.insert(token.clone(), expiry);
        token
    }

    fn token_valid(&self, headers: &HeaderMap) -> bool {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        token
            .and_then(|t| self.tokens.get(t))
            .is_some_and(|expiry| Instant::now() < *expiry)
    }

    /// One `/Users` page after the scripted faults; `None` means answer 500.
    fn users_page(&mut self, start: usize, count: usize) -> Option<(usize, Vec<Value>)> {
        let f = &self.faults;
        let failing = f.fail_users_at_start_index.is_some_and(|at| start >= at)
            && f.fail_users_times.is_none_or(|n| self.failures_served < n);
        if failing {
            self.failures_served += 1;
            return None;
        }
        let all = &self.directory.users;
        let mut total = all.len();
        let served = f.truncate_users_at.map_or(all.len(), |t| t.min(all.len()));
        let mut view: Vec<&Value> = all[..served].iter().collect();
        if let Some(at) = f.duplicate_page.filter(|at| start >= *at) {
            let end = at.saturating_sub(1).min(view.len());
            let again = view[end.saturating_sub(count)..end].to_vec();
            total += again.len();
            view.splice(end..end, again);
        }
        Some((total, window(view, start, count)))
    }
}

fn window<'a>(
    items: impl IntoIterator<Item = &'a Value>,
    start: usize,
    count: usize,
) -> Vec<Value> {
    items
        .into_iter()
        .skip(start - 1)
        .take(count)
        .cloned()
        .collect()
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/.well-known/openid-configuration", get(discovery))
        .route("/jwks", get(|| async { Json(json!({ "keys": [] })) }))
        .route("/token", post(token))
        .route("/scim/v2/{resource}", get(scim_list))
        .route("/scim/v2/{resource}/{id}", get(scim_get))
        .with_state(shared)
}

/// Enough metadata for the `openidconnect` crate's discovery, which also fetches
/// `jwks_uri` (an empty key set is fine: client credentials involve no ID token).
async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let issuer = &shared.issuer;
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": ["openid"],
    }))
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    let mut resp = (status, Json(json!({ "error": error }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fake-idp\""),
        );
    }
    resp
}

/// Client-credentials grant with `client_secret_basic` or `client_secret_post`.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut st = shared.lock();
    st.token_requests += 1;
    let opts = &shared.opts;
    let authenticated = client_credentials(&headers, &form)
        .is_some_and(|(id, secret)| id == opts.client_id && secret == opts.client_secret);
    if !authenticated {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request"),
    }
    let mut answer = json!({
        "access_token": st.issue(opts.token_ttl_secs),
        "token_type": "Bearer",
        "expires_in": opts.token_ttl_secs,
    });
    if let Some(scope) = form.get("scope") {
        answer["scope"] = json!(scope);
    }
    ([(header::CACHE_CONTROL, "no-store")], Json(answer)).into_response()
}

/// `(client_id, client_secret)` from HTTP Basic (each part form-urlencoded, RFC 6749
/// §2.3.1, as the oauth2 crate sends them) or else from the form body.
pub fn client_credentials(
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<(String, String)> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"));
    match basic {
        Some((_, encoded)) => {
            let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
            let (id, secret) = decoded.split_once(':')?;
            Some((form_decode(id), form_decode(secret)))
        }
        None => Some((
            form.get("client_id")?.clone(),
            form.get("client_secret")?.clone(),
        )),
    }
}

fn form_decode(s: &str) -> String {
    // Literal `&`/`=` (a client that did not encode) must not split the value.
    let literal = s.replace('&', "%26").replace('=', "%3D");
    url::form_urlencoded::parse(literal.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// Standard-alphabet base64, padding optional; the test tree has no base64 crate.
fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

fn scim_error(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "schemas": [ERROR_SCHEMA],
        "status": status.as_u16().to_string(),
        "detail": detail,
    });
    let mut resp = scim_json(status, body);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
    }
    resp
}

fn scim_json(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, SCIM_CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// A non-negative integer query parameter, SCIM-style: below the minimum is clamped,
/// not an error; garbage is an error detail for a 400.
fn query_number(
    query: &HashMap<String, String>,
    name: &str,
    default: usize,
    min: usize,
) -> Result<usize, String> {
    match query.get(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<i64>()
            .map(|n| usize::try_from(n).unwrap_or(0).max(min))
            .map_err(|_| format!("invalid {name}: {raw}")),
    }
}

/// `GET /scim/v2/{Users|Groups}?startIndex=&count=`; filters are ignored.
async fn scim_list(
    State(shared): State<Arc<Shared>>,
    Path(resource): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let max = shared.opts.max_page_size;
    let params = query_number(&query, "startIndex", 1, 1)
        .and_then(|start| Ok((start, query_number(&query, "count", max, 0)?.min(max))));
    let mut st = shared.lock();
    let (start, count) = params.as_ref().map_or((0, 0), |p| *p);
    let resp = if shared.opts.require_token && !st.token_valid(&headers) {
        scim_error(
            StatusCode::UNAUTHORIZED,
            "missing, unknown or expired token",
        )
    } else if let Err(detail) = &params {
        scim_error(StatusCode::BAD_REQUEST, detail)
    } else {
        let page = match resource.as_str() {
            "Users" => st
                .users_page(start, count)
                .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "injected failure")),
            "Groups"
                if st
                    .faults
                    .fail_groups_at_start_index
                    .is_some_and(|at| start >= at) =>
            {
                Err((StatusCode::INTERNAL_SERVER_ERROR, "injected failure"))
            }
            "Groups" => Ok((
                st.directory.groups.len(),
                window(&st.directory.groups, start, count),
            )),
            _ => Err((StatusCode::NOT_FOUND, "unknown resource type")),
        };
        match page {
            Ok((total, resources)) => scim_json(
                StatusCode::OK,
                json!({
                    "schemas": [LIST_RESPONSE_SCHEMA],
                    "totalResults": total,
                    "itemsPerPage": resources.len(),
                    "startIndex": start,
                    "Resources": resources,
                }),
            ),
            Err((status, detail)) => scim_error(status, detail),
        }
    };
    st.scim_calls.push(ScimCall {
        resource,
        start_index: start,
        count,
        status: resp.status().as_u16(),
    });
    resp
}

/// `GET /scim/v2/{Users|Groups}/{id}`.
async fn scim_get(
    State(shared): State<Arc<Shared>>,
    Path((resource, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut st = shared.lock();
    let resp = if shared.opts.require_token && !st.token_valid(&headers) {
        scim_error(
            StatusCode::UNAUTHORIZED,
            "missing, unknown or expired token",
        )
    } else {
        let list: &[Value] = match resource.as_str() {
            "Users" => &st.directory.users,
            "Groups" => &st.directory.groups,
            _ => &[],
        };
        match list.iter().find(|r| r["id"] == id.as_str()) {
            Some(found) => scim_json(StatusCode::OK, found.clone()),
            None => scim_error(StatusCode::NOT_FOUND, &format!("{resource} {id} not found")),
        }
    };
    st.scim_calls.push(ScimCall {
        resource,
        start_index: 0,
        count: 0,
        status: resp.status().as_u16(),
    });
    resp
}
