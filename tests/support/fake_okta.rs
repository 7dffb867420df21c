//! A stateful, in-process fake of the parts of Okta's Management API a directory
//! reader uses (developer.okta.com, "Users API", "Groups API", "Pagination",
//! "Rate limits", "Implement OAuth for Okta with a service app"):
//!
//! - `GET /api/v1/users` (`limit` ≤ 200, `after` cursors, `Link: <…>; rel="next"`;
//!   without a filter DEPROVISIONED users are left out, as Okta does; `filter` with
//!   `lastUpdated gt "…"` or `id eq "…" or …`), `GET /api/v1/groups` (`filter` by
//!   `type eq …`), `GET /api/v1/groups/{id}/users`;
//! - `X-Rate-Limit-Limit`/`-Remaining`/`-Reset` on every answer and a 429 once the
//!   window's budget is spent, counting every request sent over the budget;
//! - `Authorization: SSWS <api token>`, or `Bearer` tokens from
//!   `POST /oauth2/v1/token` (client credentials with a `private_key_jwt`
//!   assertion, checked by signature and claims, and the scopes asked for).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use super::fake_gateway::ServerTask;
use super::jwt::{verify_assertion, Expected, TEST_PUBLIC_KEY};

pub const API_TOKEN: &str = "00okta-test-api-token";
pub const CLIENT_ID: &str = "0oa-idsync-test";
const MAX_LIMIT: usize = 200;

#[derive(Clone, Debug)]
pub struct OktaOptions {
    /// Requests allowed per window, advertised in the rate-limit headers.
    pub rate_limit: u64,
    pub window_secs: u64,
    /// Added to every API answer, as a network and a busy org would.
    pub latency: Duration,
}

impl Default for OktaOptions {
    fn default() -> Self {
        Self {
            rate_limit: 10_000,
            window_secs: 60,
            latency: Duration::ZERO,
        }
    }
}

#[derive(Clone, Debug)]
pub struct OktaUser {
    pub id: String,
    pub status: String,
    pub email: String,
    pub first: String,
    pub last: String,
    pub display: Option<String>,
    pub last_updated: SystemTime,
}

#[derive(Clone, Debug)]
pub struct OktaGroup {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub members: BTreeSet<String>,
    pub last_updated: SystemTime,
    pub last_membership_updated: SystemTime,
}

/// Scripted faults.
#[derive(Clone, Debug, Default)]
pub struct OktaFaults {
    /// Every user-listing page after this many answers 500.
    pub fail_user_pages_after: Option<usize>,
    /// The API request with this number (from 1) answers 429 with the budget
    /// spent, as when another client of the org used it up.
    pub throttle_request: Option<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct OktaStats {
    pub api_requests: usize,
    pub user_pages: usize,
    /// User pages listing everyone (no `filter`): a full read's.
    pub unfiltered_user_pages: usize,
    pub token_requests: usize,
    /// 429s answered (scripted or for a spent budget).
    pub throttled: usize,
    /// Requests that came while the window's budget was already spent.
    pub over_budget: usize,
    /// Answers that said no budget remained.
    pub budget_spent: usize,
}

#[derive(Default)]
struct OktaState {
    users: BTreeMap<String, OktaUser>,
    groups: BTreeMap<String, OktaGroup>,
    tokens: BTreeSet<String>,
    public_url: String,
    faults: OktaFaults,
    stats: OktaStats,
    /// (window number, requests in it)
    window: (u64, u64),
    next_id: usize,
}

type Shared = super::shared_state::Shared<OktaOptions, OktaState>;

pub struct FakeOkta {
    shared: Arc<Shared>,
    url: String,
    _server: ServerTask,
}

impl FakeOkta {
    pub async fn start(opts: OktaOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, opts)
    }

    pub fn start_on(listener: TcpListener, opts: OktaOptions) -> Self {
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared::new(
            opts,
            OktaState {
                public_url: url.clone(),
                ..OktaState::default()
            },
        ));
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self {
            shared,
            url,
            _server: server,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth2/v1/token", self.shared.lock().public_url)
    }

    /// Where the `Link` headers point (a proxy in front of the fake).
    pub fn set_public_url(&self, url: &str) {
        self.shared.lock().public_url = url.trim_end_matches('/').to_owned();
    }

    pub fn set_faults(&self, faults: OktaFaults) {
        self.shared.lock().faults = faults;
    }

    pub fn stats(&self) -> OktaStats {
        self.shared.lock().stats.clone()
    }

    /// `users` people (`u0001@example.com` …), last changed a day ago, in `groups`
    /// groups of type OKTA_GROUP: user i is in group i % groups and, for every
    /// tenth user, also in the next group. One BUILT_IN group holds everyone.
    pub fn seed(&self, users: usize, groups: usize) {
        let day_ago = SystemTime::now() - Duration::from_secs(86_400);
        let mut state = self.shared.lock();
        let ids: Vec<String> = (0..users).map(|i| format!("00u{i:07}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let user = OktaUser {
                id: id.clone(),
                status: "ACTIVE".into(),
                email: format!("u{i:04}@example.com"),
                first: format!("User{i}"),
                last: "Example".into(),
                display: None,
                last_updated: day_ago,
            };
            state.users.insert(id.clone(), user);
        }
        for g in 0..groups {
            let members = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % groups == g || (i % 10 == 0 && (i + 1) % groups == g))
                .map(|(_, id)| id.clone())
                .collect();
            let group = okta_group(
                &format!("00g{g:07}"),
                &format!("team-{g:03}"),
                "OKTA_GROUP",
                members,
                day_ago,
            );
            state.groups.insert(group.id.clone(), group);
        }
        let everyone = okta_group(
            "00gEVERYONE",
            "Everyone",
            "BUILT_IN",
            ids.into_iter().collect(),
            day_ago,
        );
        state.groups.insert(everyone.id.clone(), everyone);
    }

    pub fn add_user(&self, email: &str, first: &str, last: &str) -> String {
        let mut state = self.shared.lock();
        state.next_id += 1;
        let id = format!("00uNEW{:04}", state.next_id);
        let user = OktaUser {
            id: id.clone(),
            status: "ACTIVE".into(),
            email: email.into(),
            first: first.into(),
            last: last.into(),
            display: None,
            last_updated: SystemTime::now(),
        };
        state.users.insert(id.clone(), user);
        id
    }

    pub fn update_user(&self, id: &str, change: impl FnOnce(&mut OktaUser)) {
        let mut state = self.shared.lock();
        let user = state.users.get_mut(id).expect("known user");
        change(user);
        user.last_updated = SystemTime::now();
    }

    /// Deleted outright, with its memberships.
    pub fn delete_user(&self, id: &str) {
        let mut state = self.shared.lock();
        state.users.remove(id);
        for group in state.groups.values_mut() {
            if group.members.remove(id) {
                group.last_membership_updated = SystemTime::now();
            }
        }
    }

    /// How many groups other than the BUILT_IN one had members move since `since`
    /// (`lastMembershipUpdated`): what a change read following the design
    /// must re-read whole.
    pub fn groups_moved_since(&self, since: SystemTime) -> usize {
        let state = self.shared.lock();
        let listed = state.groups.values().filter(|g| g.kind != "BUILT_IN");
        listed
            .filter(|g| g.last_membership_updated >= since)
            .count()
    }

    pub fn set_member(&self, group: &str, user: &str, member: bool) {
        let mut state = self.shared.lock();
        let group = state.groups.get_mut(group).expect("known group");
        let changed = if member {
            group.members.insert(user.to_owned())
        } else {
            group.members.remove(user)
        };
        if changed {
            group.last_membership_updated = SystemTime::now();
        }
    }

    pub fn rename_group(&self, group: &str, name: &str) {
        let mut state = self.shared.lock();
        let group = state.groups.get_mut(group).expect("known group");
        group.name = name.to_owned();
        group.last_updated = SystemTime::now();
    }

    pub fn user(&self, id: &str) -> OktaUser {
        self.shared.lock().users[id].clone()
    }

    /// What the gateway should hold once synced: each active user's e-mail with
    /// the names of its groups of `types`, sorted.
    pub fn expected(&self, types: &[&str]) -> BTreeMap<String, Vec<String>> {
        let state = self.shared.lock();
        let active = |u: &&OktaUser| !matches!(u.status.as_str(), "SUSPENDED" | "DEPROVISIONED");
        state
            .users
            .values()
            .filter(active)
            .map(|user| {
                let mut groups: Vec<String> = state
                    .groups
                    .values()
                    .filter(|g| types.contains(&g.kind.as_str()) && g.members.contains(&user.id))
                    .map(|g| g.name.clone())
                    .collect();
                groups.sort();
                groups.dedup();
                (user.email.clone(), groups)
            })
            .collect()
    }
}

fn okta_group(
    id: &str,
    name: &str,
    kind: &str,
    members: BTreeSet<String>,
    at: SystemTime,
) -> OktaGroup {
    OktaGroup {
        id: id.into(),
        name: name.into(),
        kind: kind.into(),
        members,
        last_updated: at,
        last_membership_updated: at,
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v1/users", get(list_users))
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{id}/users", get(list_members))
        .route("/oauth2/v1/token", post(token))
        .with_state(shared)
}

type Params = Query<BTreeMap<String, String>>;

async fn list_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let (limit_headers, refusal) = shared.admit(&headers, true).await;
    if let Some(refusal) = refusal {
        return with_headers(refusal, limit_headers);
    }
    let mut state = shared.lock();
    let filter = params.get("filter").map(String::as_str);
    state.stats.unfiltered_user_pages += usize::from(filter.is_none());
    let matches = match user_filter(filter) {
        Ok(matches) => matches,
        Err(reason) => {
            return with_headers(
                okta_error(StatusCode::BAD_REQUEST, "E0000031", &reason),
                limit_headers,
            )
        }
    };
    let users: Vec<&OktaUser> = state.users.values().filter(|u| matches(u)).collect();
    let page = Paged::new(&params, users.len(), |i| users[i].id.clone());
    let body: Vec<Value> = users[page.range.clone()]
        .iter()
        .map(|u| user_json(u))
        .collect();
    let link = page.link(&state.public_url, "/api/v1/users", &params);
    with_headers(Json(body).into_response(), [limit_headers, link].concat())
}

async fn list_groups(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let (limit_headers, refusal) = shared.admit(&headers, false).await;
    if let Some(refusal) = refusal {
        return with_headers(refusal, limit_headers);
    }
    let state = shared.lock();
    let types = type_filter(params.get("filter").map(String::as_str));
    let groups: Vec<&OktaGroup> = state
        .groups
        .values()
        .filter(|g| types.as_ref().is_none_or(|t| t.contains(&g.kind)))
        .collect();
    let page = Paged::new(&params, groups.len(), |i| groups[i].id.clone());
    let body: Vec<Value> = groups[page.range.clone()]
        .iter()
        .map(|g| group_json(g))
        .collect();
    let link = page.link(&state.public_url, "/api/v1/groups", &params);
    with_headers(Json(body).into_response(), [limit_headers, link].concat())
}

async fn list_members(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let (limit_headers, refusal) = shared.admit(&headers, false).await;
    if let Some(refusal) = refusal {
        return with_headers(refusal, limit_headers);
    }
    let state = shared.lock();
    let Some(group) = state.groups.get(&id) else {
        return with_headers(
            okta_error(
                StatusCode::NOT_FOUND,
                "E0000007",
                "Not found: Resource not found",
            ),
            limit_headers,
        );
    };
    let members: Vec<&OktaUser> = group
        .members
        .iter()
        .filter_map(|m| state.users.get(m))
        .collect();
    let page = Paged::new(&params, members.len(), |i| members[i].id.clone());
    let body: Vec<Value> = members[page.range.clone()]
        .iter()
        .map(|u| user_json(u))
        .collect();
    let link = page.link(
        &state.public_url,
        &format!("/api/v1/groups/{id}/users"),
        &params,
    );
    with_headers(Json(body).into_response(), [limit_headers, link].concat())
}

/// Client credentials with a `private_key_jwt` assertion (RFC 7523 §2.2).
async fn token(
    State(shared): State<Arc<Shared>>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let token_url = {
        let mut state = shared.lock();
        state.stats.token_requests += 1;
        format!("{}/oauth2/v1/token", state.public_url)
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let refuse = |error: &str, description: String| {
        let body = json!({"error": error, "error_description": description});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    };
    if field("grant_type") != "client_credentials" {
        return refuse(
            "unsupported_grant_type",
            format!("grant_type {:?}", field("grant_type")),
        );
    }
    if field("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
        return refuse("invalid_client", "no client assertion".into());
    }
    let expect = Expected {
        issuer: CLIENT_ID,
        subject: CLIENT_ID,
        audience: &token_url,
    };
    if let Err(reason) = verify_assertion(field("client_assertion"), TEST_PUBLIC_KEY, &expect) {
        return refuse("invalid_client", reason);
    }
    let scopes: BTreeSet<&str> = field("scope").split(' ').collect();
    if scopes != BTreeSet::from(["okta.users.read", "okta.groups.read"]) {
        return refuse("invalid_scope", format!("scopes {:?}", field("scope")));
    }
    let token = format!("okta-at-{}", rand::random::<u64>());
    shared.lock().tokens.insert(token.clone());
    let body = json!({"token_type": "Bearer", "expires_in": 3600, "access_token": token, "scope": field("scope")});
    Json(body).into_response()
}

impl Shared {
    /// Counts the request against the window's budget and checks its credential:
    /// the rate-limit headers to answer with, and a refusal, if any.
    async fn admit(
        &self,
        headers: &HeaderMap,
        user_page: bool,
    ) -> (Vec<(&'static str, String)>, Option<Response>) {
        tokio::time::sleep(self.opts.latency).await;
        let mut state = self.lock();
        state.stats.api_requests += 1;
        if user_page {
            state.stats.user_pages += 1;
        }
        let (limit_headers, over, scripted) = self.take_budget(&mut state);
        if over || scripted {
            state.stats.over_budget += usize::from(over);
            state.stats.throttled += 1;
            let refusal = okta_error(
                StatusCode::TOO_MANY_REQUESTS,
                "E0000047",
                "API call exceeded rate limit due to too many requests.",
            );
            return (limit_headers, Some(refusal));
        }
        if !authorized(&state, headers) {
            let refusal = okta_error(
                StatusCode::UNAUTHORIZED,
                "E0000011",
                "Invalid token provided",
            );
            return (limit_headers, Some(refusal));
        }
        if user_page
            && state
                .faults
                .fail_user_pages_after
                .is_some_and(|n| state.stats.user_pages > n)
        {
            let failure = okta_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "E0000009",
                "Internal Server Error",
            );
            return (limit_headers, Some(failure));
        }
        (limit_headers, None)
    }
}

impl Shared {
    /// Counts a request in its window: the rate-limit headers to answer with,
    /// whether it came over the budget, and whether a 429 is scripted for it.
    fn take_budget(&self, state: &mut OktaState) -> (Vec<(&'static str, String)>, bool, bool) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let window = now / self.opts.window_secs;
        if state.window.0 != window {
            state.window = (window, 0);
        }
        state.window.1 += 1;
        let used = state.window.1;
        let scripted = state.faults.throttle_request == Some(state.stats.api_requests);
        let (remaining, reset) = match scripted {
            true => (0, now + 1),
            false => (
                self.opts.rate_limit.saturating_sub(used),
                (window + 1) * self.opts.window_secs,
            ),
        };
        if remaining == 0 {
            state.stats.budget_spent += 1;
        }
        let headers = vec![
            ("x-rate-limit-limit", self.opts.rate_limit.to_string()),
            ("x-rate-limit-remaining", remaining.to_string()),
            ("x-rate-limit-reset", reset.to_string()),
        ];
        (headers, used > self.opts.rate_limit, scripted)
    }
}

fn authorized(state: &OktaState, headers: &HeaderMap) -> bool {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match given.split_once(' ') {
        Some(("SSWS", token)) => token == API_TOKEN,
        Some(("Bearer", token)) => state.tokens.contains(token),
        _ => false,
    }
}

/// A page of a listing ordered by id: `after` the given id, at most `limit`.
struct Paged {
    range: std::ops::Range<usize>,
    limit: usize,
    last_id: Option<String>,
    more: bool,
}

impl Paged {
    fn new(
        params: &BTreeMap<String, String>,
        total: usize,
        id_at: impl Fn(usize) -> String,
    ) -> Self {
        let limit = params
            .get("limit")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(MAX_LIMIT)
            .clamp(1, MAX_LIMIT);
        // Listings are in id order: the page starts at the first id past `after`.
        let (mut start, mut past) = (0, total);
        if let Some(after) = params.get("after") {
            while start < past {
                let middle = (start + past) / 2;
                match id_at(middle).as_str() <= after.as_str() {
                    true => start = middle + 1,
                    false => past = middle,
                }
            }
        }
        let end = (start + limit).min(total);
        Self {
            range: start..end,
            limit,
            last_id: (end > start).then(|| id_at(end - 1)),
            more: end < total,
        }
    }

    /// The `Link` header of the next page, if there is one.
    fn link(
        &self,
        public_url: &str,
        path: &str,
        params: &BTreeMap<String, String>,
    ) -> Vec<(&'static str, String)> {
        let (true, Some(last)) = (self.more, &self.last_id) else {
            return Vec::new();
        };
        let mut next = url::Url::parse(&format!("{public_url}{path}")).expect("url");
        next.query_pairs_mut()
            .append_pair("after", last)
            .append_pair("limit", &self.limit.to_string());
        if let Some(filter) = params.get("filter") {
            next.query_pairs_mut().append_pair("filter", filter);
        }
        vec![("link", format!("<{next}>; rel=\"next\""))]
    }
}

/// Which users a `filter` selects: none given leaves out DEPROVISIONED users.
type UserFilter = Box<dyn Fn(&OktaUser) -> bool>;

fn user_filter(filter: Option<&str>) -> Result<UserFilter, String> {
    let Some(filter) = filter else {
        return Ok(Box::new(|u| u.status != "DEPROVISIONED"));
    };
    if let Some(since) = filter.strip_prefix("lastUpdated gt ") {
        let since = chrono::DateTime::parse_from_rfc3339(since.trim_matches('"'))
            .map_err(|err| format!("Invalid filter: {err}"))?;
        let since = SystemTime::from(since);
        return Ok(Box::new(move |u| u.last_updated > since));
    }
    let ids: Option<BTreeSet<String>> = filter
        .split(" or ")
        .map(|clause| {
            clause
                .strip_prefix("id eq \"")?
                .strip_suffix('"')
                .map(str::to_owned)
        })
        .collect();
    match ids {
        Some(ids) => Ok(Box::new(move |u| ids.contains(&u.id))),
        None => Err(format!("Invalid search criteria: {filter}")),
    }
}

/// `type eq "A" or type eq "B"`.
fn type_filter(filter: Option<&str>) -> Option<Vec<String>> {
    filter.map(|f| {
        f.split(" or ")
            .filter_map(|c| {
                c.strip_prefix("type eq \"")?
                    .strip_suffix('"')
                    .map(str::to_owned)
            })
            .collect()
    })
}

fn timestamp(time: SystemTime) -> String {
    let time: chrono::DateTime<chrono::Utc> = time.into();
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn user_json(user: &OktaUser) -> Value {
    let mut profile = json!({
        "firstName": user.first,
        "lastName": user.last,
        "email": user.email,
        "login": user.email,
    });
    if let Some(display) = &user.display {
        profile["displayName"] = json!(display);
    }
    json!({
        "id": user.id,
        "status": user.status,
        "created": "2024-01-02T03:04:05.000Z",
        "lastUpdated": timestamp(user.last_updated),
        "type": {"id": "oty1"},
        "profile": profile,
    })
}

fn group_json(group: &OktaGroup) -> Value {
    json!({
        "id": group.id,
        "created": "2024-01-02T03:04:05.000Z",
        "lastUpdated": timestamp(group.last_updated),
        "lastMembershipUpdated": timestamp(group.last_membership_updated),
        "objectClass": ["okta:user_group"],
        "type": group.kind,
        "profile": {"name": group.name, "description": ""},
    })
}

fn okta_error(status: StatusCode, code: &str, summary: &str) -> Response {
    let body = json!({"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae-test", "errorCauses": []});
    (status, Json(body)).into_response()
}

fn with_headers(mut response: Response, headers: Vec<(&'static str, String)>) -> Response {
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
