//! An in-process, stateful JumpCloud: `GET /api/systemusers` (v1, `limit`/`skip`,
//! `{"totalCount", "results"}`), `GET /api/v2/usergroups` (a JSON array) and
//! `GET /api/v2/usergroups/{id}/membership` (every user member, nested groups
//! resolved), behind the `x-api-key` header and, when set, `x-org-id`.
//! Sources: tests/peers/README.md ("JumpCloud").

// Handlers return the refusal itself as their error: an axum `Response`.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::fake_gateway::ServerTask;

/// The most a v1 or v2 listing serves a page (JumpCloud: "Limited to 100").
pub const MAX_LIMIT: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct JumpCloudGroup {
    pub id: String,
    pub name: String,
    /// Ids of the system users directly in it.
    pub users: Vec<String>,
    /// Ids of the user groups nested in it.
    pub groups: Vec<String>,
}

/// The directory: system users as JumpCloud returns them, and user groups.
#[derive(Clone, Debug, Default)]
pub struct JumpCloudDirectory {
    pub users: Vec<Value>,
    pub groups: Vec<JumpCloudGroup>,
}

#[derive(Clone, Debug, Default)]
pub struct JumpCloudFaults {
    /// Answer 500 to every `/api/systemusers` page at or after this `skip`.
    pub fail_users_from_skip: Option<usize>,
    /// Answer every n-th request 429 with `Retry-After: 1`, as JumpCloud throttles.
    pub throttle_every: Option<usize>,
    /// Once the page at this `skip` is served, delete the first user: the pages
    /// after it shift by one, as `skip` paging does when the directory changes.
    pub delete_first_after_skip: Option<usize>,
}

/// One request as the fake saw it: path and query.
#[derive(Clone, Debug)]
pub struct JumpCloudCall {
    pub path: String,
    pub query: HashMap<String, String>,
    pub status: u16,
}

pub struct FakeJumpCloud {
    shared: Arc<Shared>,
    _server: ServerTask,
}

struct Shared {
    api_key: String,
    org_id: Option<String>,
    state: Mutex<State_>,
}

#[derive(Default)]
struct State_ {
    /// Users kept sorted by `_id`, the order `sort=_id` asks for.
    directory: JumpCloudDirectory,
    /// Each group's resolved membership, computed when the directory is set.
    memberships: HashMap<String, Vec<String>>,
    faults: JumpCloudFaults,
    calls: Vec<JumpCloudCall>,
}

impl State_ {
    fn set_directory(&mut self, mut directory: JumpCloudDirectory) {
        directory
            .users
            .sort_by(|a, b| a["_id"].as_str().cmp(&b["_id"].as_str()));
        self.memberships = directory
            .groups
            .iter()
            .map(|g| {
                let members = resolved_members(&directory.groups, &g.id);
                (g.id.clone(), members.into_iter().collect())
            })
            .collect();
        self.directory = directory;
    }
}

impl FakeJumpCloud {
    pub async fn start(api_key: &str, org_id: Option<&str>, directory: JumpCloudDirectory) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, api_key, org_id, directory)
    }

    /// Serves on `listener` (the demo's fixed port).
    pub fn start_on(
        listener: TcpListener,
        api_key: &str,
        org_id: Option<&str>,
        directory: JumpCloudDirectory,
    ) -> Self {
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            org_id: org_id.map(str::to_owned),
            state: Mutex::new(State_::default()),
        });
        shared.lock().set_directory(directory);
        let router = Router::new()
            .route("/api/systemusers", get(system_users))
            .route("/api/v2/usergroups", get(user_groups))
            .route("/api/v2/usergroups/{id}/membership", get(membership))
            .with_state(shared.clone());
        Self {
            _server: ServerTask::spawn(listener, router),
            shared,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self._server.addr)
    }

    pub fn set_directory(&self, directory: JumpCloudDirectory) {
        self.shared.lock().set_directory(directory);
    }

    pub fn directory(&self) -> JumpCloudDirectory {
        self.shared.lock().directory.clone()
    }

    pub fn set_faults(&self, faults: JumpCloudFaults) {
        self.shared.lock().faults = faults;
    }

    pub fn calls(&self) -> Vec<JumpCloudCall> {
        self.shared.lock().calls.clone()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The refusal or throttling this request gets, if any; records it either way.
    fn admit(
        &self,
        path: &str,
        headers: &HeaderMap,
        query: &HashMap<String, String>,
    ) -> Result<(), Response> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let mut st = self.lock();
        let n = st.calls.len() + 1;
        let refusal = if header("x-api-key") != Some(self.api_key.as_str()) {
            Some((StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"})))
        } else if self.org_id.is_some() && header("x-org-id") != self.org_id.as_deref() {
            Some((
                StatusCode::UNAUTHORIZED,
                json!({"message": "organization required"}),
            ))
        } else if st.faults.throttle_every.is_some_and(|every| n % every == 0) {
            Some((
                StatusCode::TOO_MANY_REQUESTS,
                Value::from("Too Many Requests"),
            ))
        } else if page(query).is_err() {
            Some((
                StatusCode::BAD_REQUEST,
                json!({"message": "limit must be 1..100"}),
            ))
        } else {
            None
        };
        let status = refusal.as_ref().map_or(200, |(status, _)| status.as_u16());
        st.calls.push(JumpCloudCall {
            path: path.to_owned(),
            query: query.clone(),
            status,
        });
        match refusal {
            None => Ok(()),
            Some((status, body)) => {
                Err((status, [("retry-after", "1")], Json(body)).into_response())
            }
        }
    }
}

/// `(limit, skip)`; JumpCloud's defaults are 10 and 0.
fn page(query: &HashMap<String, String>) -> Result<(usize, usize), ()> {
    let number = |key: &str, default: usize| {
        query
            .get(key)
            .map_or(Ok(default), |v| v.parse().map_err(|_| ()))
    };
    let limit = number("limit", 10)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(());
    }
    Ok((limit, number("skip", 0)?))
}

async fn system_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = shared.admit("/api/systemusers", &headers, &query) {
        return refused;
    }
    let (limit, skip) = page(&query).unwrap_or((10, 0));
    let mut st = shared.lock();
    if st.faults.fail_users_from_skip.is_some_and(|at| skip >= at) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "upstream failure").into_response();
    }
    let results: Vec<&Value> = st.directory.users.iter().skip(skip).take(limit).collect();
    let answer = json!({"totalCount": st.directory.users.len(), "results": results});
    if st.faults.delete_first_after_skip == Some(skip) {
        st.faults.delete_first_after_skip = None;
        let mut shifted = st.directory.clone();
        shifted.users.remove(0);
        st.set_directory(shifted);
    }
    Json(answer).into_response()
}

async fn user_groups(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Err(refused) = shared.admit("/api/v2/usergroups", &headers, &query) {
        return refused;
    }
    let (limit, skip) = page(&query).unwrap_or((10, 0));
    let st = shared.lock();
    let groups: Vec<Value> = st
        .directory
        .groups
        .iter()
        .skip(skip)
        .take(limit)
        .map(|g| json!({"id": g.id, "name": g.name, "type": "user_group", "attributes": {}}))
        .collect();
    Json(groups).into_response()
}

async fn membership(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/v2/usergroups/{id}/membership");
    if let Err(refused) = shared.admit(&path, &headers, &query) {
        return refused;
    }
    let (limit, skip) = page(&query).unwrap_or((10, 0));
    let st = shared.lock();
    let Some(resolved) = st.memberships.get(&id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"message": "Not Found"}))).into_response();
    };
    let members: Vec<Value> = resolved
        .iter()
        .skip(skip)
        .take(limit)
        .map(|user| {
            let path = json!([{"from": {"id": id, "type": "user_group"}, "to": {"id": user, "type": "user"}}]);
            json!({"id": user, "type": "user", "paths": [path], "compiledAttributes": {}})
        })
        .collect();
    Json(members).into_response()
}

/// Every user in `id` or in a group nested in it, at any depth (cycles end).
fn resolved_members(groups: &[JumpCloudGroup], id: &str) -> BTreeSet<String> {
    let mut users = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut pending = vec![id.to_owned()];
    while let Some(next) = pending.pop() {
        if !seen.insert(next.clone()) {
            continue;
        }
        if let Some(group) = groups.iter().find(|g| g.id == next) {
            users.extend(group.users.iter().cloned());
            pending.extend(group.groups.iter().cloned());
        }
    }
    users
}

/// A system user as JumpCloud lists it, with the fields idsync reads and some it does not.
pub fn system_user(id: &str, email: &str, first: &str, last: &str) -> Value {
    json!({
        "_id": id, "id": id, "email": email, "username": email.split('@').next(),
        "firstname": first, "lastname": last, "displayname": "",
        "activated": true, "suspended": false, "state": "ACTIVATED",
        "account_locked": false, "mfa": {"configured": false}, "attributes": [],
    })
}

/// `n` users (`5f00000000000000000000NN`-like ids, sorted as created) and groups
/// `eng` ⊃ `sre`, `sales`: user i is in `sre` when i % 3 == 0, in `eng` directly
/// when i % 3 == 1, in `sales` when i % 5 == 0.
pub fn generate(n: usize) -> JumpCloudDirectory {
    let users: Vec<Value> = (0..n)
        .map(|i| {
            system_user(
                &object_id(i),
                &format!("User{i}@Example.com"),
                "User",
                &i.to_string(),
            )
        })
        .collect();
    let pick = |rule: &dyn Fn(usize) -> bool| (0..n).filter(|i| rule(*i)).map(object_id).collect();
    let groups = vec![
        JumpCloudGroup {
            id: "g-eng".into(),
            name: "eng".into(),
            users: pick(&|i| i % 3 == 1),
            groups: vec!["g-sre".into()],
        },
        JumpCloudGroup {
            id: "g-sre".into(),
            name: "sre".into(),
            users: pick(&|i| i % 3 == 0),
            groups: vec![],
        },
        JumpCloudGroup {
            id: "g-sales".into(),
            name: "sales".into(),
            users: pick(&|i| i % 5 == 0),
            groups: vec![],
        },
    ];
    JumpCloudDirectory { users, groups }
}

/// A 24-hex-digit id like JumpCloud's, ordered like `i`.
pub fn object_id(i: usize) -> String {
    format!("5f{i:022x}")
}
