//! An in-process fake Keycloak realm: OIDC discovery and the client-credentials
//! grant at `/realms/{realm}`, and the admin REST API's reads at
//! `/admin/realms/{realm}` (Keycloak Admin REST API, docs-api `UsersResource`,
//! `GroupsResource`, `GroupResource`), serving an [`Org`]:
//!
//! - `/users?first&max&briefRepresentation` sorted by username (default `max`
//!   100), `/users/count`;
//! - `/groups?first&max` pages the top-level groups. [`TreeStyle::Nested`] answers
//!   as Keycloak before 23 (the whole tree in `subGroups`, no `/children`);
//!   [`TreeStyle::Paged`] as 23 and later (`subGroupCount`, empty `subGroups`,
//!   children paged at `/groups/{id}/children?first&max`);
//! - `/groups/{id}/members?first&max&briefRepresentation`, direct members only.
//!
//! Faults: a run of 429s (with `Retry-After`) from a given admin request on, and
//! a users listing cut off from a given offset.

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
use super::fake_idp::client_credentials;
use super::org::{Org, OrgGroup};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeStyle {
    /// Keycloak before 23: `/groups` nests the whole tree.
    Nested,
    /// Keycloak 23 and later: children paged at `/groups/{id}/children`.
    Paged,
}

#[derive(Clone, Debug)]
pub struct KeycloakOptions {
    pub realm: String,
    pub client_id: String,
    pub client_secret: String,
    pub tree: TreeStyle,
    /// Waited before answering each admin request (the benchmark's latency).
    pub delay: Duration,
}

impl Default for KeycloakOptions {
    fn default() -> Self {
        Self {
            realm: "acme".into(),
            client_id: "idsync".into(),
            client_secret: "kc-secret".into(),
            tree: TreeStyle::Paged,
            delay: Duration::ZERO,
        }
    }
}

/// How a listing is cut off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// 500 to every request for it.
    Failing,
    /// 200 with a body that breaks off mid-JSON.
    Truncated,
}

#[derive(Clone, Debug, Default)]
pub struct KeycloakFaults {
    /// From this admin request on (counted from 1)…
    pub throttle_from_request: Option<usize>,
    /// …this many answer `429 Too Many Requests` with `Retry-After: 1`.
    pub throttle_times: usize,
    /// `/users` pages whose `first` is at or after this are cut off.
    pub cut_users_from: Option<(usize, Cut)>,
}

pub struct FakeKeycloak {
    shared: Arc<Shared>,
    server: ServerTask,
}

type Shared = super::shared_state::Shared<KeycloakOptions, State_>;

#[derive(Default)]
struct State_ {
    org: Org,
    /// Indexes of `org.users` by username, as Keycloak sorts them.
    by_username: Vec<usize>,
    /// Index of each user in `org.users` by id.
    by_id: HashMap<String, usize>,
    faults: KeycloakFaults,
    tokens: Vec<String>,
    token_requests: usize,
    /// Admin requests: path and query, in arrival order.
    requests: Vec<String>,
    /// 429s answered.
    throttled: usize,
}

impl FakeKeycloak {
    pub async fn start(opts: KeycloakOptions, org: Org) -> Self {
        Self::serve(opts, org, "127.0.0.1:0").await
    }

    /// Serves on `address` (the demo's fixed port).
    pub async fn serve(opts: KeycloakOptions, org: Org, address: &str) -> Self {
        let listener = TcpListener::bind(address)
            .await
            .expect("bind the fake Keycloak");
        let shared = Arc::new(Shared::new(opts, State_::default()));
        shared.lock().set_org(org);
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self { shared, server }
    }

    /// `http://127.0.0.1:PORT`, the server root.
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn options(&self) -> &KeycloakOptions {
        &self.shared.opts
    }

    pub fn org(&self) -> Org {
        self.shared.lock().org.clone()
    }

    pub fn set_org(&self, org: Org) {
        self.shared.lock().set_org(org);
    }

    pub fn set_faults(&self, faults: KeycloakFaults) {
        let mut state = self.shared.lock();
        state.faults = faults;
        state.requests.clear();
    }

    /// 429s answered so far.
    pub fn throttled(&self) -> usize {
        self.shared.lock().throttled
    }

    pub fn token_requests(&self) -> usize {
        self.shared.lock().token_requests
    }

    /// Admin requests since the start or the last [`set_faults`](Self::set_faults).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }
}

impl State_ {
    fn set_org(&mut self, org: Org) {
        let mut order: Vec<usize> = (0..org.users.len()).collect();
        order.sort_by(|a, b| org.users[*a].username.cmp(&org.users[*b].username));
        self.by_username = order;
        self.by_id = (org.users.iter().enumerate())
            .map(|(at, user)| (user.id.clone(), at))
            .collect();
        self.org = org;
    }

    fn user_json(&self, index: usize, brief: bool) -> Value {
        let user = &self.org.users[index];
        let mut json = json!({
            "id": user.id,
            "username": user.username,
            "firstName": user.given,
            "lastName": user.family,
            "email": user.email,
            "emailVerified": true,
            "enabled": user.active,
            "createdTimestamp": 1_704_067_200_000u64,
        });
        if !brief {
            json["totp"] = json!(false);
            json["attributes"] = json!({ "department": ["eng"] });
            json["requiredActions"] = json!([]);
            json["notBefore"] = json!(0);
            json["access"] = json!({ "manage": false, "view": true });
        }
        json
    }

    fn group_json(&self, group: &OrgGroup, style: TreeStyle) -> Value {
        let children: Vec<&OrgGroup> = self.org.children(&group.id).collect();
        let sub_groups: Vec<Value> = match style {
            TreeStyle::Nested => children.iter().map(|c| self.group_json(c, style)).collect(),
            TreeStyle::Paged => Vec::new(),
        };
        let mut json = json!({
            "id": group.id,
            "name": group.name,
            "path": self.org.path(group),
            "subGroups": sub_groups,
        });
        if style == TreeStyle::Paged {
            json["subGroupCount"] = json!(children.len());
        }
        json
    }

    /// The next scripted fault of an admin request, if any.
    fn throttling(&self) -> bool {
        let n = self.requests.len();
        let f = &self.faults;
        f.throttle_from_request
            .is_some_and(|from| n >= from && n < from + f.throttle_times)
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/realms/{realm}/.well-known/openid-configuration",
            get(discovery),
        )
        .route(
            "/realms/{realm}/protocol/openid-connect/certs",
            get(|| async { Json(json!({ "keys": [] })) }),
        )
        .route("/realms/{realm}/protocol/openid-connect/token", post(token))
        .route("/admin/realms/{realm}/{*rest}", get(admin))
        .with_state(shared)
}

fn issuer(headers: &HeaderMap, realm: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}/realms/{realm}")
}

async fn discovery(
    State(shared): State<Arc<Shared>>,
    Path(realm): Path<String>,
    headers: HeaderMap,
) -> Response {
    if realm != shared.opts.realm {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Realm does not exist"})),
        )
            .into_response();
    }
    let issuer = issuer(&headers, &realm);
    let oidc = format!("{issuer}/protocol/openid-connect");
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{oidc}/auth"),
        "token_endpoint": format!("{oidc}/token"),
        "jwks_uri": format!("{oidc}/certs"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "grant_types_supported": ["authorization_code", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }))
    .into_response()
}

/// The client-credentials grant, as Keycloak answers it.
async fn token(
    State(shared): State<Arc<Shared>>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let mut state = shared.lock();
    state.token_requests += 1;
    let opts = &shared.opts;
    let client_ok = client_credentials(&headers, &form)
        .is_some_and(|(id, secret)| id == opts.client_id && secret == opts.client_secret);
    if realm != opts.realm || !client_ok {
        let body = json!({"error": "unauthorized_client", "error_description": "Invalid client or Invalid client credentials"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        let body = json!({"error": "unsupported_grant_type"});
        return (StatusCode::BAD_REQUEST, Json(body)).into_response();
    }
    let token = format!("kc-at-{:032x}", rand::rng().random::<u128>());
    state.tokens.push(token.clone());
    Json(json!({
        "access_token": token,
        "expires_in": 300,
        "refresh_expires_in": 0,
        "token_type": "Bearer",
        "not-before-policy": 0,
        "scope": "profile email",
    }))
    .into_response()
}

/// Every admin read, after the token and the scripted faults.
async fn admin(
    State(shared): State<Arc<Shared>>,
    Path((realm, rest)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if !shared.opts.delay.is_zero() {
        tokio::time::sleep(shared.opts.delay).await;
    }
    let mut state = shared.lock();
    let line = format!("/{rest}?{}", sorted_query(&query));
    state.requests.push(line);
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|t| state.tokens.iter().any(|known| known == t)) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "HTTP 401 Unauthorized"})),
        )
            .into_response();
    }
    if realm != shared.opts.realm {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "Realm not found."})),
        )
            .into_response();
    }
    if state.throttling() {
        state.throttled += 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "1")],
            "",
        )
            .into_response();
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let page = Window::of(&query);
    match segments.as_slice() {
        ["users"] => users(&state, &query, page),
        ["users", "count"] => Json(json!(state.org.users.len())).into_response(),
        ["groups"] => {
            let top: Vec<Value> = state
                .org
                .groups
                .iter()
                .filter(|g| g.parent.is_none())
                .map(|g| state.group_json(g, shared.opts.tree))
                .collect();
            Json(page.apply(top)).into_response()
        }
        ["groups", id, "children"] if shared.opts.tree == TreeStyle::Paged => {
            let children: Vec<Value> = state
                .org
                .children(id)
                .map(|g| state.group_json(g, TreeStyle::Paged))
                .collect();
            Json(page.apply(children)).into_response()
        }
        ["groups", id, "members"] => match state.org.group_by_id(id) {
            Some(group) => {
                let members = group.members.iter().filter_map(|member| {
                    let at = state.by_id.get(member)?;
                    Some(state.user_json(*at, true))
                });
                Json(page.apply(members.collect())).into_response()
            }
            None => not_found("Could not find group by id"),
        },
        _ => not_found("HTTP 404 Not Found"),
    }
}

/// `/users`, in username order, after the cut-off fault.
fn users(state: &State_, query: &HashMap<String, String>, page: Window) -> Response {
    let brief = query
        .get("briefRepresentation")
        .is_some_and(|b| b == "true");
    let cut = state
        .faults
        .cut_users_from
        .filter(|(from, _)| page.first >= *from)
        .map(|(_, cut)| cut);
    let listed: Vec<Value> = state.by_username[page.first.min(state.by_username.len())..]
        .iter()
        .take(page.max)
        .map(|at| state.user_json(*at, brief))
        .collect();
    match cut {
        None => Json(Value::Array(listed)).into_response(),
        Some(Cut::Failing) => (StatusCode::INTERNAL_SERVER_ERROR, "").into_response(),
        Some(Cut::Truncated) => {
            let text = Value::Array(listed).to_string();
            let half = text.len() / 2;
            (
                [(header::CONTENT_TYPE, "application/json")],
                text[..half].to_owned(),
            )
                .into_response()
        }
    }
}

fn not_found(message: &str) -> Response {
    (StatusCode::NOT_FOUND, Json(json!({ "error": message }))).into_response()
}

fn sorted_query(query: &HashMap<String, String>) -> String {
    let mut pairs: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join("&")
}

/// `first`/`max` of a listing; Keycloak's default page is 100.
#[derive(Clone, Copy)]
struct Window {
    first: usize,
    max: usize,
}

impl Window {
    fn of(query: &HashMap<String, String>) -> Self {
        let number = |name: &str, default: usize| {
            query
                .get(name)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(default)
        };
        Self {
            first: number("first", 0),
            max: number("max", 100),
        }
    }

    fn apply(self, items: Vec<Value>) -> Value {
        Value::Array(items.into_iter().skip(self.first).take(self.max).collect())
    }
}
