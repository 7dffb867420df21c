//! A stateful, in-process fake of the hoop gateway's user API.
//!
//! It follows `docs/gateway-api.md` (read from the gateway's Go
//! handlers) rather than the OpenAPI spec, because idsync's correctness hinges on the
//! quirks the spec hides: case-sensitive 409s, a create that stores the user and then
//! answers 500, deletes that match the subject only, and full-replace PUTs.
//! Faults are drawn from a seeded RNG so a failing test replays the same way.
//!
//! `examples/hoop_standin.rs` compiles this file on its own (via `#[path]`), so it must
//! not depend on the other support modules; they may depend on it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Membership in this group makes a user an admin of the gateway.
pub const ADMIN_GROUP: &str = "admin";
/// The values the gateway's database accepts for `status`; anything else is a 500.
pub const STATUSES: [&str; 4] = ["active", "inactive", "invited", "reviewing"];
/// Column sizes of the gateway's database; exceeding one is a 500, not a 4xx.
pub const MAX_EMAIL_CHARS: usize = 255;
pub const MAX_NAME_CHARS: usize = 255;
pub const MAX_SLACK_ID_CHARS: usize = 50;
pub const MAX_PICTURE_CHARS: usize = 2048;
pub const MAX_GROUP_CHARS: usize = 180;

const MAX_BODY_BYTES: usize = 1 << 20;

/// How long after a `Retry-After` went out a request may still arrive without
/// breaking it: one that was sent concurrently, before the client read the answer.
pub const RETRY_AFTER_GRACE: Duration = Duration::from_millis(50);

/// How a fake gateway is started.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// Key of an API key in the `admin` group (accepted as Bearer or `Api-Key`).
    pub admin_key: String,
    /// Key of a non-admin caller, to exercise 403s.
    pub standard_key: Option<String>,
    pub faults: Faults,
    /// Print one line per request on stderr (the standalone stand-in uses it).
    pub log_requests: bool,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            admin_key: "hpk_fake_admin_key".to_owned(),
            standard_key: None,
            faults: Faults::default(),
            log_requests: false,
        }
    }
}

/// Scripted failures. Unless noted they hit only user writes (`POST /api/users`,
/// `PUT /api/users/{emailOrID}`), where idsync's retry policy matters; reads stay clean
/// so tests can inspect the outcome through the API too. The default injects nothing.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seed of the RNG behind the ratios; reset by `set_faults`, so runs replay.
    pub seed: u64,
    /// Fraction of `POST /api/users` attempts answered 503 without doing anything.
    pub error_503_ratio: f64,
    /// `Retry-After` seconds sent with those 503s.
    pub retry_after_on_503: Option<u64>,
    /// `(every_n, burst_len, retry_after_secs)`: after every `every_n` user writes the
    /// next `burst_len` get 429 with `Retry-After: retry_after_secs`, as a rate-limiting
    /// proxy in front of the gateway would.
    pub burst_429: Option<(usize, usize, u64)>,
    /// `(every_n, delay)`: every n-th user write is done, then answered `delay` late, to
    /// trip client timeouts in the case where the work did happen.
    pub stall: Option<(usize, Duration)>,
    /// Fraction of `POST /api/users` that store the user and still answer 500 (the
    /// gateway's non-atomic create); a retry then gets 409.
    pub fail_after_create_ratio: f64,
    /// Added before every request, reads included.
    pub latency: Duration,
    /// Answer every user write `302 Found` with this `Location`, as a login proxy
    /// in front of a misconfigured URL would.
    pub redirect_to: Option<String>,
}

/// A user as the gateway stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayUser {
    /// Returned as `id` by GET/PUT: the e-mail until the first login, then the IdP's `sub`.
    pub subject: String,
    pub email: String,
    pub name: String,
    pub groups: Vec<String>,
    pub slack_id: String,
    pub picture: String,
    pub status: String,
    pub verified: bool,
}

impl GatewayUser {
    /// A user as `POST /api/users` with only an e-mail would leave it.
    pub fn invited(email: &str) -> Self {
        Self {
            subject: email.to_owned(),
            email: email.to_owned(),
            name: String::new(),
            groups: Vec::new(),
            slack_id: String::new(),
            picture: String::new(),
            status: "invited".to_owned(),
            verified: false,
        }
    }

    pub fn role(&self) -> &'static str {
        role_of_groups(&self.groups)
    }

    /// The JSON the gateway answers for GET and PUT.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.subject,
            "email": self.email,
            "name": self.name,
            "groups": self.groups,
            "slack_id": self.slack_id,
            "picture": self.picture,
            "status": self.status,
            "role": self.role(),
            "verified": self.verified,
        })
    }
}

/// One request as the fake saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: String,
    /// Path as received, including `/api`, without the query.
    pub path: String,
    pub status: u16,
    /// Arrival time on tokio's clock, so it stays consistent under `time::pause()`.
    pub at: Instant,
    /// The body, when it was JSON.
    pub body: Option<Value>,
}

/// What `simulate_login` did, mirroring the gateway's OIDC callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// An existing user matched (by subject, else by exact lower-cased e-mail) and
    /// now carries the new subject; `invited` became `active`.
    Matched,
    /// No user had the lower-cased e-mail, so the login created a second one: what
    /// happens to a user created with a mixed-case address.
    CreatedNew,
    /// The matching user is `inactive`; nothing changed.
    Refused,
}

/// Handle of a running fake gateway; the server stops when it is dropped.
pub struct FakeGateway {
    shared: Arc<Shared>,
    server: ServerTask,
}

impl FakeGateway {
    /// Binds 127.0.0.1 on a free port and serves in the background.
    pub async fn start(opts: GatewayOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0 for the fake gateway");
        Self::start_on(listener, opts)
    }

    /// Serves on a listener the caller bound (must run inside a tokio runtime).
    pub fn start_on(listener: TcpListener, opts: GatewayOptions) -> Self {
        let shared = Arc::new(Shared::new(opts));
        let server = ServerTask::spawn(listener, router(shared.clone()));
        Self { shared, server }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr
    }

    /// `http://127.0.0.1:PORT/api`, the value idsync's `target.url` takes.
    pub fn url(&self) -> String {
        format!("http://{}/api", self.server.addr)
    }

    pub fn admin_key(&self) -> &str {
        &self.shared.admin_key
    }

    pub fn standard_key(&self) -> Option<&str> {
        self.shared.standard_key.as_deref()
    }

    /// Snapshot of the stored users in insertion order.
    pub fn users(&self) -> Vec<GatewayUser> {
        self.shared.lock().users.clone()
    }

    /// E-mail → sorted groups, as the gateway holds them; panics on a duplicate e-mail.
    pub fn groups_by_email(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let mut held = std::collections::BTreeMap::new();
        for user in self.users() {
            let mut groups = user.groups.clone();
            groups.sort();
            let email = user.email.clone();
            assert!(
                held.insert(email.clone(), groups).is_none(),
                "duplicate user {email}"
            );
        }
        held
    }

    /// The user with exactly this e-mail (case-sensitive, like the gateway).
    pub fn user_by_email(&self, email: &str) -> Option<GatewayUser> {
        self.shared
            .lock()
            .users
            .iter()
            .find(|u| u.email == email)
            .cloned()
    }

    /// Snapshot of the group set, sorted.
    pub fn groups(&self) -> Vec<String> {
        self.shared.lock().groups.iter().cloned().collect()
    }

    /// Pre-populates a group made in the gateway, bypassing validation and faults.
    pub fn seed_group(&self, name: &str) {
        self.shared.lock().groups.insert(name.to_owned());
    }

    /// Pre-populates a user (and its groups), bypassing validation and faults.
    pub fn seed_user(&self, user: GatewayUser) {
        let mut st = self.shared.lock();
        st.groups.extend(user.groups.iter().cloned());
        st.users.push(user);
    }

    /// Adds `group` to an existing user, as an admin would in the gateway's UI.
    pub fn add_to_group(&self, email: &str, group: &str) {
        let mut st = self.shared.lock();
        st.groups.insert(group.to_owned());
        for user in st.users.iter_mut().filter(|u| u.email == email) {
            user.groups.push(group.to_owned());
        }
    }

    /// Plays the gateway's side of a user's OIDC login: the IdP's `sub` replaces the
    /// subject, so later DELETEs by e-mail no longer match.
    pub fn simulate_login(&self, email: &str, new_subject: &str) -> LoginOutcome {
        let email = email.trim().to_lowercase();
        let mut st = self.shared.lock();
        let found = st
            .users
            .iter()
            .position(|u| u.subject == new_subject)
            .or_else(|| st.users.iter().position(|u| u.email == email));
        let Some(idx) = found else {
            st.users.push(GatewayUser {
                subject: new_subject.to_owned(),
                status: "active".to_owned(),
                verified: true,
                ..GatewayUser::invited(&email)
            });
            return LoginOutcome::CreatedNew;
        };
        let user = &mut st.users[idx];
        if user.status == "inactive" {
            return LoginOutcome::Refused;
        }
        user.subject = new_subject.to_owned();
        user.verified = true;
        if user.status == "invited" {
            user.status = "active".to_owned();
        }
        LoginOutcome::Matched
    }

    /// Every finished request, ordered by arrival.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let mut all = self.shared.lock().requests.clone();
        all.sort_by_key(|r| r.at);
        all
    }

    /// Number of finished requests with this method whose path starts with the prefix
    /// (note `/api/users` also matches `/api/users/groups`).
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.shared
            .lock()
            .requests
            .iter()
            .filter(|r| r.method.eq_ignore_ascii_case(method) && r.path.starts_with(path_prefix))
            .count()
    }

    /// Forgets recorded requests and the Retry-After bookkeeping, so a test can look
    /// at one run at a time; users and groups stay.
    pub fn clear_requests(&self) {
        let mut st = self.shared.lock();
        st.requests.clear();
        st.retry_deadline = None;
        st.retry_after_violations = 0;
        st.max_in_flight = st.in_flight;
    }

    /// Replaces the faults and restarts their RNG and counters.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().set_faults(faults);
    }

    /// Requests (from anyone) that arrived while a `Retry-After` this fake sent was
    /// still running, except within [`RETRY_AFTER_GRACE`] of the first one of that
    /// window: requests that arrive that soon were already on their way before the
    /// client could read it. Later 429s extend the window but not the grace.
    pub fn retry_after_violations(&self) -> usize {
        self.shared.lock().retry_after_violations
    }

    /// The most requests that were being handled at the same moment.
    pub fn max_concurrent(&self) -> usize {
        self.shared.lock().max_in_flight
    }
}

/// Runs a fake gateway on `listener` until the future is dropped; for standalone use.
pub async fn serve(listener: TcpListener, opts: GatewayOptions) -> std::io::Result<()> {
    axum::serve(listener, router(Arc::new(Shared::new(opts)))).await
}

/// A background axum server that is aborted when dropped, so fakes don't outlive
/// their test. Shared with the fake IdP.
pub struct ServerTask {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ServerTask {
    pub fn spawn(listener: TcpListener, app: Router) -> Self {
        let addr = listener
            .local_addr()
            .expect("local_addr of a bound listener");
        let task = tokio::spawn(async move {
            // The only error is the listener failing, which the test will notice as
            // refused connections.
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, task }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A random identifier formatted like a version-4 UUID (no `uuid` dependency needed).
pub fn uuid_like<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Approximates Go's `net/mail.ParseAddress`, which the gateway uses both to validate
/// `POST /users` and to decide whether a path value is an e-mail. Like Go it accepts
/// `a@b`, `<a@b>` and `Name <a@b>` (quoted local parts, domain literals and UTF-8 too);
/// comments and folding whitespace are not modelled. Returns the bare address.
pub fn parse_mail_address(input: &str) -> Option<&str> {
    let s = input.trim();
    let addr = match s.strip_suffix('>') {
        Some(rest) => {
            let open = rest.rfind('<')?;
            display_name_ok(rest[..open].trim()).then_some(&rest[open + 1..])?
        }
        None => s,
    };
    let at = addr.rfind('@')?;
    let (local, domain) = (&addr[..at], &addr[at + 1..]);
    let local_ok = is_quoted(local) || is_dot_atom(local);
    let domain_ok = (domain.starts_with('[') && domain.ends_with(']') && domain.len() > 2)
        || is_dot_atom(domain);
    (local_ok && domain_ok).then_some(addr)
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control() && !c.is_whitespace())
}

fn is_dot_atom(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
        && s.chars().all(|c| c == '.' || is_atext(c))
}

fn is_quoted(s: &str) -> bool {
    s.len() >= 2 && s.starts_with('"') && s.ends_with('"')
}

fn display_name_ok(s: &str) -> bool {
    is_quoted(s) || s.chars().all(|c| c == ' ' || c == '.' || is_atext(c))
}

fn role_of_groups(groups: &[String]) -> &'static str {
    if groups.iter().any(|g| g == ADMIN_GROUP) {
        "admin"
    } else {
        "standard"
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Admin,
    Standard,
}

struct Shared {
    admin_key: String,
    standard_key: Option<String>,
    log_requests: bool,
    state: Mutex<GatewayState>,
}

struct GatewayState {
    users: Vec<GatewayUser>,
    groups: BTreeSet<String>,
    faults: Faults,
    rng: StdRng,
    /// User writes seen since the faults were set; drives bursts and stalls.
    writes: usize,
    requests: Vec<RecordedRequest>,
    /// (start, end) of the Retry-After window this fake has announced.
    retry_deadline: Option<(Instant, Instant)>,
    retry_after_violations: usize,
    in_flight: usize,
    max_in_flight: usize,
}

impl Shared {
    fn new(opts: GatewayOptions) -> Self {
        let mut state = GatewayState {
            users: Vec::new(),
            groups: BTreeSet::new(),
            faults: Faults::default(),
            rng: StdRng::seed_from_u64(0),
            writes: 0,
            requests: Vec::new(),
            retry_deadline: None,
            retry_after_violations: 0,
            in_flight: 0,
            max_in_flight: 0,
        };
        state.set_faults(opts.faults);
        Self {
            admin_key: opts.admin_key,
            standard_key: opts.standard_key,
            log_requests: opts.log_requests,
            state: Mutex::new(state),
        }
    }

    /// A test that panicked while holding the lock must not hide the fake's state
    /// from the next assertion, hence no poisoning.
    fn lock(&self) -> MutexGuard<'_, GatewayState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn role(&self, headers: &HeaderMap) -> Option<Role> {
        let header = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let key = header(header::AUTHORIZATION.as_str())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .or_else(|| header("api-key").map(str::trim))?;
        if key == self.admin_key {
            Some(Role::Admin)
        } else if self.standard_key.as_deref() == Some(key) {
            Some(Role::Standard)
        } else {
            None
        }
    }

    /// Records a finished request and remembers any Retry-After it carries.
    fn finish(
        &self,
        method: &Method,
        path: &str,
        at: Instant,
        body: Option<Value>,
        resp: &Response,
    ) {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let mut st = self.lock();
        if let (Some(secs), 429 | 503) = (retry_after, status.as_u16()) {
            let now = Instant::now();
            let deadline = now + Duration::from_secs(secs);
            st.retry_deadline = match st.retry_deadline {
                // Inside a running window: extend it but keep its start, or the grace
                // would slide along with a client that retries in a tight loop.
                Some((sent, latest)) if now < latest => Some((sent, latest.max(deadline))),
                _ => Some((now, deadline)),
            };
        }
        st.requests.push(RecordedRequest {
            method: method.as_str().to_owned(),
            path: path.to_owned(),
            status: status.as_u16(),
            at,
            body,
        });
        if self.log_requests {
            eprintln!("{method} {path} -> {}", status.as_u16());
        }
    }
}

/// What the faults decided for one user write.
#[derive(Default)]
struct WritePlan {
    /// Answer this instead of doing the work.
    refuse: Option<Response>,
    fail_after_create: bool,
    stall: Option<Duration>,
}

impl GatewayState {
    fn set_faults(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
        self.writes = 0;
    }

    fn plan_write(&mut self, method: &Method) -> WritePlan {
        let n = self.writes;
        self.writes += 1;
        // Always draw both numbers so one ratio's sequence doesn't depend on the other.
        let roll_503: f64 = self.rng.random();
        let roll_fail: f64 = self.rng.random();
        let f = &self.faults;
        let is_create = method == Method::POST;
        if let Some(location) = &f.redirect_to {
            let mut resp = StatusCode::FOUND.into_response();
            if let Ok(location) = HeaderValue::from_str(location) {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            return WritePlan {
                refuse: Some(resp),
                ..WritePlan::default()
            };
        }
        if let Some((every, len, secs)) = f.burst_429 {
            if every + len > 0 && n % (every + len) >= every {
                let resp = message(StatusCode::TOO_MANY_REQUESTS, "too many requests");
                return WritePlan {
                    refuse: Some(with_retry_after(resp, secs)),
                    ..WritePlan::default()
                };
            }
        }
        if is_create && roll_503 < f.error_503_ratio {
            let mut resp = message(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
            if let Some(secs) = f.retry_after_on_503 {
                resp = with_retry_after(resp, secs);
            }
            return WritePlan {
                refuse: Some(resp),
                ..WritePlan::default()
            };
        }
        WritePlan {
            refuse: None,
            fail_after_create: is_create && roll_fail < f.fail_after_create_ratio,
            stall: f
                .stall
                .filter(|(every, _)| *every > 0 && (n + 1) % every == 0)
                .map(|(_, delay)| delay),
        }
    }

    /// The gateway's `emailOrID` rule: an e-mail-shaped value is looked up by e-mail,
    /// anything else by subject.
    fn find(&self, key: &str) -> Option<usize> {
        if parse_mail_address(key).is_some() {
            self.users.iter().position(|u| u.email == key)
        } else {
            self.users.iter().position(|u| u.subject == key)
        }
    }

    /// The group step, written after the user row: all-or-nothing, so on failure the
    /// user keeps its previous groups (none, for a new user) and the caller answers 500.
    fn set_groups(&mut self, idx: usize, groups: Vec<String>) -> Result<(), Failure> {
        if let Some(long) = groups.iter().find(|g| g.chars().count() > MAX_GROUP_CHARS) {
            return Err(Failure::db(format!("group name too long: {long}")));
        }
        let mut unique: Vec<String> = Vec::with_capacity(groups.len());
        for g in groups {
            if !unique.contains(&g) {
                unique.push(g);
            }
        }
        self.groups.extend(unique.iter().cloned());
        self.users[idx].groups = unique;
        Ok(())
    }
}

/// Counts a request as in flight for as long as it lives, even if the client gives up
/// and the future is dropped.
struct InFlight<'a>(&'a Shared);

impl<'a> InFlight<'a> {
    fn enter(shared: &'a Shared, at: Instant) -> Self {
        let mut st = shared.lock();
        if st
            .retry_deadline
            .is_some_and(|(sent, deadline)| sent + RETRY_AFTER_GRACE < at && at < deadline)
        {
            st.retry_after_violations += 1;
        }
        st.in_flight += 1;
        st.max_in_flight = st.max_in_flight.max(st.in_flight);
        Self(shared)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.lock().in_flight -= 1;
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/serverinfo", get(server_info))
        .route("/api/users", get(list_users).post(create_user))
        .route("/api/users/groups", get(list_groups).post(create_group))
        .route(
            "/api/users/groups/{name}",
            axum::routing::delete(delete_group),
        )
        .route(
            "/api/users/{email_or_id}",
            get(get_user).put(update_user).delete(delete_user),
        )
        .fallback(|| async { message(StatusCode::NOT_FOUND, "not found") })
        .layer(middleware::from_fn_with_state(shared.clone(), pipeline))
        .with_state(shared)
}

/// Everything around the handlers: concurrency and Retry-After bookkeeping, latency,
/// auth, faults and recording. Handlers only implement the gateway's logic.
async fn pipeline(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let at = Instant::now();
    let _in_flight = InFlight::enter(&shared, at);
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        let resp = message(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        shared.finish(&method, &path, at, None, &resp);
        return resp;
    };
    let body_json = serde_json::from_slice::<Value>(&bytes).ok();

    let latency = shared.lock().faults.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let mut stall = None;
    let resp = match shared.role(&parts.headers) {
        None => message(StatusCode::UNAUTHORIZED, "invalid authentication"),
        Some(Role::Standard) if method != Method::GET => {
            message(StatusCode::FORBIDDEN, "access denied")
        }
        Some(_) => {
            let is_user_write = (method == Method::POST && path == "/api/users")
                || (method == Method::PUT && path.starts_with("/api/users/"));
            let plan = if is_user_write {
                shared.lock().plan_write(&method)
            } else {
                WritePlan::default()
            };
            match plan.refuse {
                Some(resp) => resp,
                None => {
                    stall = plan.stall;
                    let resp = next
                        .run(Request::from_parts(parts, Body::from(bytes)))
                        .await;
                    if plan.fail_after_create && resp.status() == StatusCode::CREATED {
                        Failure::db("injected failure after the user row was written")
                            .into_response()
                    } else {
                        resp
                    }
                }
            }
        }
    };
    // Recorded before the stall: a client that times out still leaves a trace.
    shared.finish(&method, &path, at, body_json, &resp);
    if let Some(delay) = stall {
        tokio::time::sleep(delay).await;
    }
    resp
}

/// An error answer: `{"message": ...}`, the gateway's only error shape. Small, unlike
/// `Response`, so it travels in `Result`s and handlers can use `?`.
struct Failure(StatusCode, String);

impl Failure {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Self(status, text.into())
    }

    /// A database error, which the gateway passes on as a 500.
    fn db(text: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, text)
    }

    fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    Failure::new(status, text).into_response()
}

fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// `openapi.User` as gin binds it: unknown fields ignored, `null` means empty.
#[derive(Deserialize)]
struct UserBody {
    email: Option<String>,
    name: Option<String>,
    groups: Option<Vec<String>>,
    slack_id: Option<String>,
    picture: Option<String>,
    status: Option<String>,
}

/// gin's `ShouldBindJSON` with `email` `binding:"required"`: 400 on anything else.
fn parse_user_body(bytes: &[u8]) -> Result<UserBody, Failure> {
    let bad = |text: String| Failure::new(StatusCode::BAD_REQUEST, text);
    let value: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if !value.is_object() {
        return Err(bad(
            "json: cannot unmarshal into Go value of type openapi.User".into(),
        ));
    }
    let body: UserBody = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if body.email.as_deref().unwrap_or_default().is_empty() {
        return Err(bad(
            "Key: 'User.Email' Error:Field validation for 'Email' failed on the 'required' tag"
                .into(),
        ));
    }
    Ok(body)
}

/// The database's constraints on a user row; a violation is a 500.
fn check_row(user: &GatewayUser) -> Result<(), Failure> {
    if !STATUSES.contains(&user.status.as_str()) {
        return Err(Failure::db(format!(
            "invalid input value for enum user_status: \"{}\"",
            user.status
        )));
    }
    let limits = [
        ("email", &user.email, MAX_EMAIL_CHARS),
        ("name", &user.name, MAX_NAME_CHARS),
        ("slack_id", &user.slack_id, MAX_SLACK_ID_CHARS),
        ("picture", &user.picture, MAX_PICTURE_CHARS),
    ];
    for (column, value, max) in limits {
        if value.chars().count() > max {
            return Err(Failure::db(format!(
                "value too long for type character varying({max}) in column {column}"
            )));
        }
    }
    Ok(())
}

async fn server_info() -> Json<Value> {
    Json(json!({ "version": "fake", "auth_method": "oidc" }))
}

async fn list_users(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let mut users = shared.lock().users.clone();
    users.sort_by(|a, b| b.email.cmp(&a.email));
    Json(users.iter().map(GatewayUser::to_json).collect())
}

async fn get_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, Failure> {
    let st = shared.lock();
    let idx = st.find(&key).ok_or_else(Failure::not_found)?;
    Ok(Json(st.users[idx].to_json()))
}

async fn create_user(State(shared): State<Arc<Shared>>, bytes: Bytes) -> Result<Response, Failure> {
    let body = parse_user_body(&bytes)?;
    let email = body.email.clone().unwrap_or_default();
    if parse_mail_address(&email).is_none() {
        return Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid email",
        ));
    }
    let mut st = shared.lock();
    if st.users.iter().any(|u| u.email == email) {
        return Err(Failure::new(
            StatusCode::CONFLICT,
            format!("user already exists with email {email}"),
        ));
    }
    let sent_status = body.status.clone().unwrap_or_default();
    let user = GatewayUser {
        name: body.name.clone().unwrap_or_default(),
        slack_id: body.slack_id.clone().unwrap_or_default(),
        picture: body.picture.clone().unwrap_or_default(),
        status: if sent_status.is_empty() {
            "invited".to_owned()
        } else {
            sent_status.clone()
        },
        ..GatewayUser::invited(&email)
    };
    check_row(&user)?;
    st.users.push(user);
    let idx = st.users.len() - 1;
    st.set_groups(idx, body.groups.clone().unwrap_or_default())?;
    // The gateway echoes the bound request: `groups` is null when omitted, `status` is
    // what was sent, and `id` is a fresh internal UUID rather than the subject.
    let echo = json!({
        "id": uuid_like(&mut rand::rng()),
        "email": email,
        "name": body.name.unwrap_or_default(),
        "groups": body.groups,
        "slack_id": body.slack_id.unwrap_or_default(),
        "picture": body.picture.unwrap_or_default(),
        "status": sent_status,
        "role": st.users[idx].role(),
        "verified": false,
    });
    Ok((StatusCode::CREATED, Json(echo)).into_response())
}

async fn update_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, Failure> {
    let parsed = parse_user_body(&bytes);
    let mut st = shared.lock();
    // The gateway looks the user up before binding the body, so 404 wins over 400.
    let idx = st.find(&key).ok_or_else(Failure::not_found)?;
    let body = parsed?;
    let updated = GatewayUser {
        name: body.name.unwrap_or_default(),
        picture: body.picture.unwrap_or_default(),
        status: body.status.unwrap_or_default(),
        slack_id: body.slack_id.unwrap_or_default(),
        ..st.users[idx].clone()
    };
    check_row(&updated)?;
    st.users[idx] = updated;
    st.set_groups(idx, body.groups.unwrap_or_default())?;
    Ok(Json(st.users[idx].to_json()))
}

async fn delete_user(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
) -> Result<StatusCode, Failure> {
    let mut st = shared.lock();
    st.find(&key).ok_or_else(Failure::not_found)?;
    // Found by e-mail perhaps, but deleted by subject: after a login this is a no-op.
    st.users.retain(|u| u.subject != key);
    Ok(StatusCode::NO_CONTENT)
}

async fn list_groups(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let st = shared.lock();
    if st.groups.is_empty() {
        Json(Value::Null)
    } else {
        Json(json!(st.groups))
    }
}

/// `DELETE /users/groups/{name}`: the group leaves every user; 422 for the
/// admin group, as the gateway's handler answers.
async fn delete_group(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, Failure> {
    if name == ADMIN_GROUP {
        return Err(Failure::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unable to delete the admin group",
        ));
    }
    let mut st = shared.lock();
    if !st.groups.remove(&name) {
        return Err(Failure::not_found());
    }
    for user in &mut st.users {
        user.groups.retain(|g| g != &name);
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn create_group(
    State(shared): State<Arc<Shared>>,
    bytes: Bytes,
) -> Result<Response, Failure> {
    let name = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("name")?.as_str().map(str::to_owned))
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            Failure::new(
                StatusCode::BAD_REQUEST,
                "Key: 'UserGroup.Name' Error:Field validation for 'Name' failed on the 'required' tag",
            )
        })?;
    if name.chars().count() > MAX_GROUP_CHARS {
        return Err(Failure::db(format!(
            "value too long for type character varying({MAX_GROUP_CHARS})"
        )));
    }
    let mut st = shared.lock();
    if !st.groups.insert(name.clone()) {
        return Err(Failure::new(StatusCode::CONFLICT, "group already exists"));
    }
    Ok((StatusCode::CREATED, Json(json!({ "name": name }))).into_response())
}
