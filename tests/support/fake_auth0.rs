//! An in-process, stateful Auth0 tenant: the client-credentials token endpoint
//! (which checks the Management API audience), and the Management API parts idsync
//! reads: `/api/v2/users` with `page`/`per_page`/`include_totals` and its
//! 1,000-result cap, user export jobs (create, poll, download a gzip NDJSON file
//! from a location that takes no token), roles (offset paging) with their users
//! and organizations with their members (checkpoint paging, `from`/`take`/`next`),
//! and the `x-ratelimit-*` headers on every answer, with 429 once the budget is
//! spent. Sources: tests/peers/README.md ("Auth0").

// Handlers return the refusal itself as their error: an axum `Response`.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::fake_gateway::ServerTask;

/// Auth0 pages through at most the first 1,000 users of a listing.
pub const MAX_PAGED: usize = 1000;
pub const MAX_PER_PAGE: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct Auth0Group {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Auth0Directory {
    pub users: Vec<Value>,
    pub roles: Vec<Auth0Group>,
    pub organizations: Vec<Auth0Group>,
}

#[derive(Clone, Debug)]
pub struct Auth0Options {
    pub client_id: String,
    pub client_secret: String,
    /// Management API requests allowed per one-second window.
    pub rate_limit: u32,
    /// Polls of a new export job answered `pending`/`processing` before `completed`.
    pub export_polls: usize,
}

impl Default for Auth0Options {
    fn default() -> Self {
        Self {
            client_id: "m2m-client".into(),
            client_secret: "m2m-secret-value".into(),
            rate_limit: 50,
            export_polls: 2,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Auth0Faults {
    /// Answer 500 to every `/api/v2/users` page at or after this page number.
    pub fail_users_from_page: Option<usize>,
    /// Serve only the first half of every export file.
    pub truncate_exports: bool,
    /// Export jobs end `failed`.
    pub fail_exports: bool,
}

/// What the fake counted.
#[derive(Clone, Debug, Default)]
pub struct Auth0Counts {
    pub token_requests: usize,
    /// Token requests whose `audience` was not `{url}/api/v2/`.
    pub wrong_audience: usize,
    pub api_requests: usize,
    /// Requests sent while the last answer said no budget remained before the reset.
    pub rate_violations: usize,
    pub user_pages: usize,
    pub export_jobs: usize,
    pub job_polls: usize,
    pub downloads: usize,
    /// Downloads of an export file that carried an `Authorization` header.
    pub token_sent_to_download: usize,
}

pub struct FakeAuth0 {
    shared: Arc<Shared>,
    _server: ServerTask,
}

struct Shared {
    base: String,
    opts: Auth0Options,
    state: Mutex<Tenant>,
}

#[derive(Default)]
struct Tenant {
    directory: Auth0Directory,
    faults: Auth0Faults,
    counts: Auth0Counts,
    tokens: Vec<String>,
    /// The current rate window (epoch second) and requests left in it.
    window: (u64, u32),
    jobs: HashMap<String, Job>,
    /// `user_id` → position in `directory.users`, for the member listings.
    user_index: HashMap<String, usize>,
}

impl Tenant {
    fn set_directory(&mut self, directory: Auth0Directory) {
        self.user_index = directory
            .users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u["user_id"].as_str().map(|id| (id.to_owned(), i)))
            .collect();
        self.directory = directory;
    }
}

struct Job {
    polls_left: usize,
    file: Vec<u8>,
}

impl FakeAuth0 {
    pub async fn start(opts: Auth0Options, directory: Auth0Directory) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, opts, directory)
    }

    /// Serves on `listener` (the demo's fixed port).
    pub fn start_on(listener: TcpListener, opts: Auth0Options, directory: Auth0Directory) -> Self {
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared {
            base,
            opts,
            state: Mutex::new(Tenant::default()),
        });
        shared.lock().set_directory(directory);
        let router = Router::new()
            .route("/oauth/token", post(token))
            .route("/api/v2/users", get(users))
            .route("/api/v2/jobs/users-exports", post(create_export))
            .route("/api/v2/jobs/{id}", get(job))
            .route("/exports/{file}", get(download))
            .route("/api/v2/roles", get(roles))
            .route("/api/v2/roles/{id}/users", get(role_users))
            .route("/api/v2/organizations", get(organizations))
            .route(
                "/api/v2/organizations/{id}/members",
                get(organization_members),
            )
            .with_state(shared.clone());
        Self {
            _server: ServerTask::spawn(listener, router),
            shared,
        }
    }

    /// The tenant's address, like `https://acme.eu.auth0.com`.
    pub fn url(&self) -> String {
        self.shared.base.clone()
    }

    pub fn client_id(&self) -> &str {
        &self.shared.opts.client_id
    }

    pub fn client_secret(&self) -> &str {
        &self.shared.opts.client_secret
    }

    pub fn set_directory(&self, directory: Auth0Directory) {
        self.shared.lock().set_directory(directory);
    }

    pub fn directory(&self) -> Auth0Directory {
        self.shared.lock().directory.clone()
    }

    pub fn set_faults(&self, faults: Auth0Faults) {
        self.shared.lock().faults = faults;
    }

    pub fn counts(&self) -> Auth0Counts {
        self.shared.lock().counts.clone()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Tenant> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks the bearer token and spends one unit of the rate budget; the answer
    /// to send instead when either says no. Returns the rate headers to send.
    fn admit(&self, headers: &HeaderMap) -> Result<RateHeaders, Response> {
        let mut st = self.lock();
        st.counts.api_requests += 1;
        let now = epoch_secs();
        if st.window.0 != now {
            st.window = (now, self.opts.rate_limit);
        }
        let rate = RateHeaders {
            limit: self.opts.rate_limit,
            remaining: st.window.1.saturating_sub(1),
            reset: now + 1,
        };
        if st.window.1 == 0 {
            st.counts.rate_violations += 1;
            let body = json!({"statusCode": 429, "error": "Too Many Requests", "message": "Global limit has been reached"});
            return Err((StatusCode::TOO_MANY_REQUESTS, rate.headers(), Json(body)).into_response());
        }
        st.window.1 -= 1;
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !bearer.is_some_and(|token| st.tokens.iter().any(|t| t == token)) {
            let body =
                json!({"statusCode": 401, "error": "Unauthorized", "message": "Invalid token"});
            return Err((StatusCode::UNAUTHORIZED, rate.headers(), Json(body)).into_response());
        }
        Ok(rate)
    }
}

struct RateHeaders {
    limit: u32,
    remaining: u32,
    reset: u64,
}

impl RateHeaders {
    fn headers(&self) -> [(&'static str, String); 3] {
        [
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            ("x-ratelimit-reset", self.reset.to_string()),
        ]
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn bad_request(message: &str) -> Response {
    let body = json!({"statusCode": 400, "error": "Bad Request", "message": message});
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// Client credentials, as a form or as JSON, for the Management API audience.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let form: HashMap<String, String> = if json_body {
        serde_json::from_slice(&body).unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&body).into_owned().collect()
    };
    let field = |name: &str| form.get(name).map(String::as_str);
    let mut st = shared.lock();
    st.counts.token_requests += 1;
    if field("grant_type") != Some("client_credentials") {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    if field("client_id") != Some(&shared.opts.client_id)
        || field("client_secret") != Some(&shared.opts.client_secret)
    {
        let body = json!({"error": "access_denied", "error_description": "Unauthorized"});
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    let audience = format!("{}/api/v2/", shared.base);
    if field("audience") != Some(&audience) {
        st.counts.wrong_audience += 1;
        let body = json!({"error": "access_denied", "error_description": format!("Service not found: {}", field("audience").unwrap_or(""))});
        return (StatusCode::FORBIDDEN, Json(body)).into_response();
    }
    let token = format!("eyJ.fake.{:032x}", rand::rng().random::<u128>());
    st.tokens.push(token.clone());
    let scope = "read:users read:roles read:organizations read:organization_members";
    Json(
        json!({"access_token": token, "token_type": "Bearer", "expires_in": 86400, "scope": scope}),
    )
    .into_response()
}

/// A number from the query, or its default.
fn number(query: &HashMap<String, String>, key: &str, default: usize) -> Result<usize, Response> {
    query.get(key).map_or(Ok(default), |v| {
        v.parse()
            .map_err(|_| bad_request(&format!("{key} must be a number")))
    })
}

async fn users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let rate = match shared.admit(&headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let (page, per_page) = match (number(&query, "page", 0), number(&query, "per_page", 50)) {
        (Ok(page), Ok(per_page)) => (page, per_page),
        (Err(bad), _) | (_, Err(bad)) => return bad,
    };
    if per_page > MAX_PER_PAGE {
        return bad_request("Query validation error: 'per_page' must be at most 100");
    }
    if (page + 1) * per_page > MAX_PAGED {
        return bad_request("You can only page through the first 1000 records. See https://auth0.com/docs/users/search/v3/view-search-results-by-page#limitation");
    }
    let mut st = shared.lock();
    st.counts.user_pages += 1;
    if st.faults.fail_users_from_page.is_some_and(|at| page >= at) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            rate.headers(),
            "upstream failure",
        )
            .into_response();
    }
    let fields: Option<Vec<&str>> = query.get("fields").map(|f| f.split(',').collect());
    let all = &st.directory.users;
    let listed: Vec<Value> = all
        .iter()
        .skip(page * per_page)
        .take(per_page)
        .map(|u| only(u, fields.as_deref()))
        .collect();
    let body = if query.get("include_totals").map(String::as_str) == Some("true") {
        json!({"start": page * per_page, "limit": per_page, "length": listed.len(), "total": all.len(), "users": listed})
    } else {
        json!(listed)
    };
    (rate.headers(), Json(body)).into_response()
}

/// `user` with only `fields` (all when none are asked for).
fn only(user: &Value, fields: Option<&[&str]>) -> Value {
    match (fields, user.as_object()) {
        (Some(fields), Some(object)) => Value::Object(
            object
                .iter()
                .filter(|(k, _)| fields.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        _ => user.clone(),
    }
}

async fn create_export(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rate = match shared.admit(&headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Payload validation error: invalid JSON");
    };
    if request["format"] != "json" && request["format"] != "csv" {
        return bad_request("Payload validation error: 'format' must be csv or json");
    }
    let fields: Vec<String> = request["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut st = shared.lock();
    st.counts.export_jobs += 1;
    let ndjson: String = st
        .directory
        .users
        .iter()
        .map(|u| format!("{}\n", only(u, Some(&names))))
        .collect();
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    let _ = gzip.write_all(ndjson.as_bytes());
    let file = gzip.finish().unwrap_or_default();
    let id = format!("job_{:016x}", rand::rng().random::<u64>());
    st.jobs.insert(
        id.clone(),
        Job {
            polls_left: shared.opts.export_polls,
            file,
        },
    );
    let answer = json!({"type": "users_export", "status": "pending", "id": id, "format": request["format"],
        "fields": request["fields"], "created_at": "2026-01-01T00:00:00.000Z"});
    (StatusCode::CREATED, rate.headers(), Json(answer)).into_response()
}

async fn job(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let rate = match shared.admit(&headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let mut st = shared.lock();
    st.counts.job_polls += 1;
    let failing = st.faults.fail_exports;
    let Some(job) = st.jobs.get_mut(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"statusCode": 404, "message": "The job does not exist"})),
        )
            .into_response();
    };
    let status = match job.polls_left {
        _ if failing => "failed",
        0 => "completed",
        1 => "processing",
        _ => "pending",
    };
    job.polls_left = job.polls_left.saturating_sub(1);
    let mut answer = json!({"type": "users_export", "status": status, "id": id, "format": "json",
        "created_at": "2026-01-01T00:00:00.000Z"});
    if status == "completed" {
        answer["location"] = json!(format!("{}/exports/{id}.json.gz", shared.base));
    } else if status != "failed" {
        answer["percentage_done"] = json!(50);
        answer["time_left_seconds"] = json!(1);
    }
    (rate.headers(), Json(answer)).into_response()
}

/// The export file, from "storage": no token needed, none should be sent.
async fn download(
    State(shared): State<Arc<Shared>>,
    Path(file): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut st = shared.lock();
    st.counts.downloads += 1;
    if headers.contains_key(header::AUTHORIZATION) {
        st.counts.token_sent_to_download += 1;
    }
    let truncate = st.faults.truncate_exports;
    let Some(job) = file.strip_suffix(".json.gz").and_then(|id| st.jobs.get(id)) else {
        return (StatusCode::NOT_FOUND, "NoSuchKey").into_response();
    };
    let bytes = if truncate {
        job.file[..job.file.len() / 2].to_vec()
    } else {
        job.file.clone()
    };
    ([(header::CONTENT_TYPE, "application/gzip")], bytes).into_response()
}

async fn roles(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let rate = match shared.admit(&headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let (page, per_page) = match (number(&query, "page", 0), number(&query, "per_page", 50)) {
        (Ok(page), Ok(per_page)) if per_page <= MAX_PER_PAGE => (page, per_page),
        _ => return bad_request("Query validation error"),
    };
    let st = shared.lock();
    let all = &st.directory.roles;
    let listed: Vec<Value> = all
        .iter()
        .skip(page * per_page)
        .take(per_page)
        .map(|r| json!({"id": r.id, "name": r.name, "description": ""}))
        .collect();
    let body = json!({"start": page * per_page, "limit": per_page, "length": listed.len(), "total": all.len(), "roles": listed});
    (rate.headers(), Json(body)).into_response()
}

/// One checkpoint page of `items`: `from` is the `next` of the page before.
fn checkpoint<T>(
    items: &[T],
    query: &HashMap<String, String>,
    key: &str,
    render: impl Fn(&T) -> Value,
) -> Result<Value, Response> {
    let take = number(query, "take", 50)?;
    if take == 0 || take > MAX_PER_PAGE {
        return Err(bad_request("Query validation error: 'take' must be 1..100"));
    }
    let start = match query.get("from") {
        None => 0,
        Some(from) => from
            .strip_prefix("cp_")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| bad_request("Query validation error: invalid 'from'"))?,
    };
    let page: Vec<Value> = items.iter().skip(start).take(take).map(render).collect();
    let mut body = json!({ key: page });
    if start + take < items.len() {
        body["next"] = json!(format!("cp_{}", start + take));
    }
    Ok(body)
}

/// A member as the member listings show one.
fn member(st: &Tenant, id: &String) -> Value {
    let user = st.user_index.get(id).map(|&i| &st.directory.users[i]);
    let field = |name: &str| user.map(|u| u[name].clone());
    json!({"user_id": id, "email": field("email"), "picture": "", "name": field("name")})
}

async fn role_users(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    group_members(&shared, &headers, &query, |d| &d.roles, &id, "users")
}

async fn organizations(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let rate = match shared.admit(&headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let st = shared.lock();
    let render =
        |o: &Auth0Group| json!({"id": o.id, "name": o.name, "display_name": o.name.to_uppercase()});
    match checkpoint(&st.directory.organizations, &query, "organizations", render) {
        Ok(body) => (rate.headers(), Json(body)).into_response(),
        Err(bad) => bad,
    }
}

async fn organization_members(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    group_members(
        &shared,
        &headers,
        &query,
        |d| &d.organizations,
        &id,
        "members",
    )
}

fn group_members(
    shared: &Shared,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    groups: fn(&Auth0Directory) -> &Vec<Auth0Group>,
    id: &str,
    key: &str,
) -> Response {
    let rate = match shared.admit(headers) {
        Ok(rate) => rate,
        Err(refused) => return refused,
    };
    let st = shared.lock();
    let Some(group) = groups(&st.directory).iter().find(|g| g.id == id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"statusCode": 404, "message": "not found"})),
        )
            .into_response();
    };
    match checkpoint(&group.members, query, key, |id| member(&st, id)) {
        Ok(body) => (rate.headers(), Json(body)).into_response(),
        Err(bad) => bad,
    }
}

/// An Auth0 user as the Management API returns it (with fields idsync ignores).
pub fn auth0_user(i: usize) -> Value {
    json!({
        "user_id": format!("auth0|{i:06}"), "email": format!("Person{i}@Example.com"),
        "email_verified": true, "name": format!("Person {i}"), "nickname": format!("person{i}"),
        "given_name": "Person", "family_name": i.to_string(), "blocked": false,
        "identities": [{"provider": "auth0", "connection": "Username-Password-Authentication"}],
        "created_at": "2026-01-01T00:00:00.000Z", "logins_count": 3,
    })
}

/// `n` users; roles `admin-ish` names avoided: `dev` (i % 3 == 0), `ops` (i % 4 == 0)
/// and `viewer` (i % 7 == 0); organizations `acme` (even i) and `globex` (i % 5 == 0).
pub fn generate(n: usize) -> Auth0Directory {
    let ids = |rule: &dyn Fn(usize) -> bool| {
        (0..n)
            .filter(|i| rule(*i))
            .map(|i| format!("auth0|{i:06}"))
            .collect()
    };
    let group = |id: &str, name: &str, members| Auth0Group {
        id: id.into(),
        name: name.into(),
        members,
    };
    Auth0Directory {
        users: (0..n).map(auth0_user).collect(),
        roles: vec![
            group("rol_dev", "dev", ids(&|i| i % 3 == 0)),
            group("rol_ops", "ops", ids(&|i| i % 4 == 0)),
            group("rol_viewer", "viewer", ids(&|i| i % 7 == 0)),
        ],
        organizations: vec![
            group("org_acme", "acme", ids(&|i| i % 2 == 0)),
            group("org_globex", "globex", ids(&|i| i % 5 == 0)),
        ],
    }
}
