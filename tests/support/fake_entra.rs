//! A stateful, in-process fake of the parts of Microsoft Graph v1.0 and the
//! Microsoft identity platform a directory reader uses (learn.microsoft.com:
//! "List users", "List groups", "List group members", "Paging Microsoft Graph data
//! in your app", "Use delta query to track changes", "user: delta", "group: delta",
//! "Microsoft Graph throttling guidance", "OAuth 2.0 client credentials flow",
//! "Certificate credentials"):
//!
//! - `/users`, `/groups`, `/groups/{id}/members` with `$top` (≤ 999) and
//!   `@odata.nextLink`; `/users?$filter=id in (…)`;
//! - `/users/microsoft.graph.delta()` and `/groups/microsoft.graph.delta()` from
//!   `$deltatoken=latest` or a delta link, with `@removed` users and groups and
//!   `members@delta`; a delta link the fake has forgotten answers 410
//!   `syncStateNotFound`;
//! - scripted 429/503/504 answers with `Retry-After`, counting requests that came
//!   back sooner;
//! - `POST /{tenant}/oauth2/v2.0/token` (client credentials with a client secret,
//!   or a client assertion checked by signature, claims and certificate `x5t`).
//!
//! Paths carry no `/v1.0`, like the vendor document Prism checks them against.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::fake_gateway::ServerTask;
use super::jwt::{verify_assertion, Expected, TEST_CERTIFICATE, TEST_PUBLIC_KEY};

pub const TENANT: &str = "11111111-2222-3333-4444-555555555555";
pub const CLIENT_ID: &str = "66666666-7777-8888-9999-000000000000";
pub const CLIENT_SECRET: &str = "entra-test-secret";
const SCOPE: &str = "https://graph.microsoft.com/.default";
const MAX_TOP: usize = 999;
const DELTA_PAGE: usize = 100;

#[derive(Clone, Debug, Default)]
pub struct EntraOptions {
    /// Added to every Graph answer.
    pub latency: Duration,
}

#[derive(Clone, Debug)]
pub struct EntraUser {
    pub id: String,
    pub display: String,
    pub mail: Option<String>,
    pub upn: String,
    pub enabled: bool,
}

#[derive(Clone, Debug, Default)]
pub struct EntraGroup {
    pub name: String,
    pub users: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

/// What changed, in order; a delta token is a position in this log.
#[derive(Clone, Debug)]
enum Event {
    User(String),
    Group(String),
    Member {
        group: String,
        member: String,
        is_user: bool,
    },
}

#[derive(Clone, Debug, Default)]
pub struct EntraFaults {
    /// Graph request number (from 1) → the status (429, 503, 504) and the
    /// `Retry-After` seconds to answer it with.
    pub throttle: BTreeMap<usize, (u16, u64)>,
    /// Every full `/users` page after this many answers 500.
    pub fail_user_pages_after: Option<usize>,
    /// Tokens issued so far stop working at this Graph request number.
    pub revoke_tokens_at: Option<usize>,
}

#[derive(Debug, Default, Clone)]
pub struct EntraStats {
    pub graph_requests: usize,
    /// `/users` pages without a filter: a full read's.
    pub full_user_pages: usize,
    pub delta_requests: usize,
    pub token_requests: usize,
    pub throttled: usize,
    /// Requests that came before the last `Retry-After` had passed.
    pub early_retries: usize,
    pub refused_delta_links: usize,
}

#[derive(Default)]
struct EntraState {
    users: BTreeMap<String, EntraUser>,
    groups: BTreeMap<String, EntraGroup>,
    log: Vec<Event>,
    /// Delta tokens before this position are forgotten.
    forgotten_before: usize,
    tokens: BTreeSet<String>,
    public_url: String,
    faults: EntraFaults,
    stats: EntraStats,
    retry_not_before: Option<Instant>,
}

type Shared = super::shared_state::Shared<EntraOptions, EntraState>;

pub struct FakeEntra {
    shared: Arc<Shared>,
    url: String,
    _server: ServerTask,
}

impl FakeEntra {
    pub async fn start(opts: EntraOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(listener, opts)
    }

    pub fn start_on(listener: TcpListener, opts: EntraOptions) -> Self {
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shared = Arc::new(Shared::new(
            opts,
            EntraState {
                public_url: url.clone(),
                ..EntraState::default()
            },
        ));
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self {
            shared,
            url,
            _server: server,
        }
    }

    /// The Graph root (and the token authority: both on this server).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Where next and delta links point (a proxy in front of the fake).
    pub fn set_public_url(&self, url: &str) {
        self.shared.lock().public_url = url.trim_end_matches('/').to_owned();
    }

    pub fn set_faults(&self, faults: EntraFaults) {
        self.shared.lock().faults = faults;
    }

    pub fn stats(&self) -> EntraStats {
        self.shared.lock().stats.clone()
    }

    /// Forgets every delta link handed out so far: they answer 410.
    pub fn forget_delta_links(&self) {
        let mut state = self.shared.lock();
        state.forgotten_before = state.log.len() + 1;
    }

    /// `users` people in `teams` teams (user i in team i % teams, every tenth also
    /// in the next), with `engineering` nesting the first two teams and `company`
    /// nesting `engineering` and the third: groups three deep.
    pub fn seed(&self, users: usize, teams: usize) {
        let mut state = self.shared.lock();
        for i in 0..users {
            let id = format!("00000000-0000-4000-8000-{i:012}");
            let user = EntraUser {
                id: id.clone(),
                display: format!("User {i}"),
                mail: Some(format!("u{i:04}@contoso.com")),
                upn: format!("u{i:04}@contoso.onmicrosoft.com"),
                enabled: true,
            };
            state.users.insert(id, user);
        }
        let ids: Vec<String> = state.users.keys().cloned().collect();
        for t in 0..teams {
            let members = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % teams == t || (i % 10 == 0 && (i + 1) % teams == t))
                .map(|(_, id)| id.clone())
                .collect();
            let team = EntraGroup {
                name: format!("team-{t:03}"),
                users: members,
                groups: BTreeSet::new(),
            };
            state.groups.insert(team_id(t), team);
        }
        let nest = |name: &str, groups: &[String]| EntraGroup {
            name: name.into(),
            users: BTreeSet::new(),
            groups: groups.iter().cloned().collect(),
        };
        state.groups.insert(
            "g-engineering".into(),
            nest("engineering", &[team_id(0), team_id(1)]),
        );
        state.groups.insert(
            "g-company".into(),
            nest("company", &["g-engineering".into(), team_id(2)]),
        );
    }

    pub fn add_user(&self, user: EntraUser) {
        let mut state = self.shared.lock();
        state.log.push(Event::User(user.id.clone()));
        state.users.insert(user.id.clone(), user);
    }

    pub fn update_user(&self, id: &str, change: impl FnOnce(&mut EntraUser)) {
        let mut state = self.shared.lock();
        change(state.users.get_mut(id).expect("known user"));
        state.log.push(Event::User(id.to_owned()));
    }

    /// Deleted, with its memberships (which `groups/delta` reports too).
    pub fn delete_user(&self, id: &str) {
        let mut state = self.shared.lock();
        state.users.remove(id);
        state.log.push(Event::User(id.to_owned()));
        let groups: Vec<String> = state
            .groups
            .iter()
            .filter(|(_, g)| g.users.contains(id))
            .map(|(gid, _)| gid.clone())
            .collect();
        for group in groups {
            state.groups.get_mut(&group).map(|g| g.users.remove(id));
            state.log.push(Event::Member {
                group,
                member: id.to_owned(),
                is_user: true,
            });
        }
    }

    /// Adds (or takes out) a user or a nested group.
    pub fn set_member(&self, group: &str, member: &str, is_user: bool, present: bool) {
        let mut state = self.shared.lock();
        let entry = state.groups.get_mut(group).expect("known group");
        let set = if is_user {
            &mut entry.users
        } else {
            &mut entry.groups
        };
        if present {
            set.insert(member.to_owned());
        } else {
            set.remove(member);
        }
        state.log.push(Event::Member {
            group: group.to_owned(),
            member: member.to_owned(),
            is_user,
        });
    }

    pub fn add_group(&self, id: &str, name: &str) {
        let mut state = self.shared.lock();
        state.groups.insert(
            id.to_owned(),
            EntraGroup {
                name: name.into(),
                ..EntraGroup::default()
            },
        );
        state.log.push(Event::Group(id.to_owned()));
    }

    pub fn rename_group(&self, id: &str, name: &str) {
        let mut state = self.shared.lock();
        state.groups.get_mut(id).expect("known group").name = name.to_owned();
        state.log.push(Event::Group(id.to_owned()));
    }

    /// Each enabled user's address (`mail`, else a non-guest principal name) with
    /// the names of every group it is in, nested ones included.
    pub fn expected(&self) -> BTreeMap<String, Vec<String>> {
        let state = self.shared.lock();
        let mut expected = BTreeMap::new();
        for user in state.users.values().filter(|u| u.enabled) {
            let address = match &user.mail {
                Some(mail) => mail.clone(),
                None if !user.upn.contains("#EXT#") => user.upn.clone(),
                None => continue,
            };
            let mut names: Vec<String> = state
                .groups
                .iter()
                .filter(|(id, _)| under(&state.groups, id).contains(&user.id))
                .map(|(_, g)| g.name.clone())
                .collect();
            names.sort();
            names.dedup();
            expected.insert(address.to_lowercase(), names);
        }
        expected
    }
}

pub fn team_id(t: usize) -> String {
    format!("g-team-{t:03}")
}

/// The users in group `id` or any group nested in it.
fn under(groups: &BTreeMap<String, EntraGroup>, id: &str) -> BTreeSet<String> {
    let mut users = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut pending = vec![id.to_owned()];
    while let Some(id) = pending.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        if let Some(group) = groups.get(&id) {
            users.extend(group.users.iter().cloned());
            pending.extend(group.groups.iter().cloned());
        }
    }
    users
}

/// The SHA-1 thumbprint of the test certificate, as `x5t`.
pub fn test_certificate_x5t() -> String {
    let certificate = pem::parse(TEST_CERTIFICATE).expect("test certificate");
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate.contents(),
    );
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/groups", get(list_groups))
        .route("/groups/{id}/members", get(list_members))
        .route("/users/microsoft.graph.delta()", get(users_delta))
        .route("/groups/microsoft.graph.delta()", get(groups_delta))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
        .with_state(shared)
}

type Params = Query<BTreeMap<String, String>>;

async fn list_users(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    let filter = params.get("$filter").cloned();
    if let Err(refusal) = shared.admit(&headers, filter.is_none()).await {
        return refusal;
    }
    let state = shared.lock();
    let users: Vec<&EntraUser> = match filter.as_deref().map(ids_in) {
        None => state.users.values().collect(),
        Some(Some(ids)) => ids.iter().filter_map(|id| state.users.get(id)).collect(),
        Some(None) => {
            return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Unsupported filter")
        }
    };
    page(&state.public_url, "/users", &params, &users, |u| {
        user_json(u)
    })
}

async fn list_groups(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, false).await {
        return refusal;
    }
    let state = shared.lock();
    let groups: Vec<(&String, &EntraGroup)> = state.groups.iter().collect();
    page(
        &state.public_url,
        "/groups",
        &params,
        &groups,
        |(id, g)| json!({"id": id, "displayName": g.name}),
    )
}

async fn list_members(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    if let Err(refusal) = shared.admit(&headers, false).await {
        return refusal;
    }
    let state = shared.lock();
    let Some(group) = state.groups.get(&id) else {
        return graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "No such group",
        );
    };
    let users = group.users.iter().map(|m| ("#microsoft.graph.user", m));
    let groups = group.groups.iter().map(|m| ("#microsoft.graph.group", m));
    let members: Vec<(&str, &String)> = users.chain(groups).collect();
    let path = format!("/groups/{id}/members");
    page(
        &state.public_url,
        &path,
        &params,
        &members,
        |(kind, id)| json!({"@odata.type": kind, "id": id}),
    )
}

/// A page of `items` from `$skiptoken` (an offset), `$top` long, with the next link.
fn page<T>(
    public_url: &str,
    path: &str,
    params: &BTreeMap<String, String>,
    items: &[T],
    to_json: impl Fn(&T) -> Value,
) -> Response {
    let top = params
        .get("$top")
        .and_then(|t| t.parse().ok())
        .unwrap_or(100)
        .clamp(1, MAX_TOP);
    let start: usize = params
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let end = (start + top).min(items.len());
    let mut body = json!({"@odata.context": format!("{public_url}/$metadata#{}", path.trim_start_matches('/')), "value": items[start.min(end)..end].iter().map(to_json).collect::<Vec<_>>()});
    if end < items.len() {
        let mut next = url::Url::parse(&format!("{public_url}{path}")).expect("url");
        for (key, value) in params.iter().filter(|(k, _)| *k != "$skiptoken") {
            next.query_pairs_mut().append_pair(key, value);
        }
        next.query_pairs_mut()
            .append_pair("$skiptoken", &end.to_string());
        body["@odata.nextLink"] = json!(next.to_string());
    }
    Json(body).into_response()
}

/// `id in ('a','b')`.
fn ids_in(filter: &str) -> Option<Vec<String>> {
    let list = filter.strip_prefix("id in (")?.strip_suffix(')')?;
    list.split(',')
        .map(|id| {
            id.trim()
                .strip_prefix('\'')?
                .strip_suffix('\'')
                .map(str::to_owned)
        })
        .collect()
}

async fn users_delta(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    delta(
        &shared,
        &headers,
        &params,
        "/users/microsoft.graph.delta()",
        user_entries,
    )
    .await
}

async fn groups_delta(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(params): Params,
) -> Response {
    delta(
        &shared,
        &headers,
        &params,
        "/groups/microsoft.graph.delta()",
        group_entries,
    )
    .await
}

/// A delta round: from `$deltatoken` (a log position, or `latest`) to now, in
/// pages linked by `$skiptoken` (`from.offset.to`), the last with the delta link.
async fn delta(
    shared: &Shared,
    headers: &HeaderMap,
    params: &BTreeMap<String, String>,
    path: &str,
    entries: fn(&EntraState, &[Event]) -> Vec<Value>,
) -> Response {
    if let Err(refusal) = shared.admit(headers, false).await {
        return refusal;
    }
    let mut state = shared.lock();
    state.stats.delta_requests += 1;
    let now = state.log.len();
    let (from, offset, to) = match (
        params.get("$deltatoken").map(String::as_str),
        params.get("$skiptoken"),
    ) {
        (Some("latest"), _) => (now, 0, now),
        (Some(token), _) => (token.parse().unwrap_or(usize::MAX), 0, now),
        (None, Some(skip)) => {
            let parts: Vec<usize> = skip.split('.').filter_map(|p| p.parse().ok()).collect();
            match parts[..] {
                [from, offset, to] => (from, offset, to),
                _ => return graph_error(StatusCode::BAD_REQUEST, "BadRequest", "Bad skiptoken"),
            }
        }
        (None, None) => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "idsync asks for latest or a link",
            )
        }
    };
    let latest = params.get("$deltatoken").is_some_and(|t| t == "latest");
    if !latest && (from < state.forgotten_before || from > now) {
        state.stats.refused_delta_links += 1;
        return graph_error(
            StatusCode::GONE,
            "syncStateNotFound",
            "The delta token is no longer valid",
        );
    }
    let all = entries(&state, &state.log[from..to]);
    let end = (offset + DELTA_PAGE).min(all.len());
    let mut body = json!({"value": all[offset.min(end)..end]});
    let public = &state.public_url;
    if end < all.len() {
        body["@odata.nextLink"] = json!(format!("{public}{path}?$skiptoken={from}.{end}.{to}"));
    } else {
        body["@odata.deltaLink"] = json!(format!("{public}{path}?$deltatoken={to}"));
    }
    Json(body).into_response()
}

fn user_entries(state: &EntraState, events: &[Event]) -> Vec<Value> {
    let touched: BTreeSet<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::User(id) => Some(id),
            _ => None,
        })
        .collect();
    touched
        .into_iter()
        .map(|id| match state.users.get(id) {
            Some(user) => user_json(user),
            None => json!({"id": id, "@removed": {"reason": "deleted"}}),
        })
        .collect()
}

fn group_entries(state: &EntraState, events: &[Event]) -> Vec<Value> {
    let mut touched: BTreeMap<&String, BTreeMap<&String, bool>> = BTreeMap::new();
    for event in events {
        match event {
            Event::Group(id) => {
                touched.entry(id).or_default();
            }
            Event::Member {
                group,
                member,
                is_user,
            } => {
                touched.entry(group).or_default().insert(member, *is_user);
            }
            Event::User(_) => {}
        }
    }
    touched
        .into_iter()
        .map(|(id, members)| {
            let Some(group) = state.groups.get(id) else {
                return json!({"id": id, "@removed": {"reason": "deleted"}});
            };
            let delta: Vec<Value> = members
                .into_iter()
                .map(|(member, is_user)| {
                    let (kind, present) = match is_user {
                        true => ("#microsoft.graph.user", group.users.contains(member)),
                        false => ("#microsoft.graph.group", group.groups.contains(member)),
                    };
                    let mut entry = json!({"@odata.type": kind, "id": member});
                    if !present {
                        entry["@removed"] = json!({"reason": "deleted"});
                    }
                    entry
                })
                .collect();
            json!({"id": id, "displayName": group.name, "members@delta": delta})
        })
        .collect()
}

/// Client credentials: a client secret, or a client assertion signed by the
/// certificate's key and naming it by `x5t`.
async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let token_url = {
        let mut state = shared.lock();
        state.stats.token_requests += 1;
        format!("{}/{tenant}/oauth2/v2.0/token", state.public_url)
    };
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let refuse = |error: &str, description: String| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "error_description": description})),
        )
            .into_response()
    };
    if tenant != TENANT
        || field("client_id") != CLIENT_ID
        || field("grant_type") != "client_credentials"
    {
        return refuse(
            "invalid_request",
            format!("tenant {tenant}, client {:?}", field("client_id")),
        );
    }
    if field("scope") != SCOPE {
        return refuse(
            "invalid_scope",
            format!("AADSTS70011: scope {:?}", field("scope")),
        );
    }
    if let Err(reason) = client_authenticated(&form, &token_url) {
        return refuse("invalid_client", reason);
    }
    let token = format!("graph-at-{}", rand::random::<u64>());
    shared.lock().tokens.insert(token.clone());
    Json(json!({"token_type": "Bearer", "expires_in": 3599, "access_token": token})).into_response()
}

fn client_authenticated(form: &BTreeMap<String, String>, token_url: &str) -> Result<(), String> {
    if let Some(secret) = form.get("client_secret") {
        return (secret == CLIENT_SECRET)
            .then_some(())
            .ok_or("AADSTS7000215: Invalid client secret".into());
    }
    let assertion = form
        .get("client_assertion")
        .ok_or("AADSTS7000216: no client credential")?;
    let expect = Expected {
        issuer: CLIENT_ID,
        subject: CLIENT_ID,
        audience: token_url,
    };
    let (header, _) = verify_assertion(assertion, TEST_PUBLIC_KEY, &expect)?;
    match header.x5t {
        Some(x5t) if x5t == test_certificate_x5t() => Ok(()),
        other => Err(format!(
            "AADSTS700027: x5t {other:?} names no certificate of the app"
        )),
    }
}

impl Shared {
    /// Counts a Graph request, applies the scripted faults and checks the token.
    async fn admit(&self, headers: &HeaderMap, full_user_page: bool) -> Result<(), Response> {
        tokio::time::sleep(self.opts.latency).await;
        let mut state = self.lock();
        state.stats.graph_requests += 1;
        let n = state.stats.graph_requests;
        if state.retry_not_before.is_some_and(|t| Instant::now() < t) {
            state.stats.early_retries += 1;
        }
        if let Some(&(status, secs)) = state.faults.throttle.get(&n) {
            state.stats.throttled += 1;
            state.retry_not_before = Some(Instant::now() + Duration::from_secs(secs));
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let mut refusal = graph_error(status, "TooManyRequests", "Too many requests");
            refusal
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
            return Err(refusal);
        }
        if state.faults.revoke_tokens_at == Some(n) {
            state.tokens.clear();
        }
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !token.is_some_and(|t| state.tokens.contains(t)) {
            return Err(graph_error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            ));
        }
        if full_user_page {
            state.stats.full_user_pages += 1;
            if state
                .faults
                .fail_user_pages_after
                .is_some_and(|after| state.stats.full_user_pages > after)
            {
                return Err(graph_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "generalException",
                    "General exception while processing",
                ));
            }
        }
        Ok(())
    }
}

fn user_json(user: &EntraUser) -> Value {
    json!({
        "id": user.id,
        "displayName": user.display,
        "mail": user.mail,
        "userPrincipalName": user.upn,
        "accountEnabled": user.enabled,
    })
}

fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}
