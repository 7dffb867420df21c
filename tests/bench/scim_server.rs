//! A fast SCIM 2.0 directory for the benchmark (`tests/bench/run`).
//!
//! It generates a seeded directory of `--users` users once, keeps every resource as
//! JSON bytes, and answers `GET /scim/v2/Users` and `GET /scim/v2/Groups` with
//! `startIndex`/`count` paging (`count` capped at 1000, like scim2-style servers) by
//! copying one contiguous byte range between a header and a footer: no JSON is built
//! per request, so the server costs next to nothing beside the client it measures.
//!
//! The directory is shaped like a real one: users carry `schemas`, `id` (UUID),
//! `externalId`, `userName`, `displayName`, `name`, one or two `emails`, `active` and
//! `meta` with `location`; memberships live only in `Group.members` (as in
//! scim2-server and Okta), each user in `--groups-per-user` distinct groups (5 by
//! default) out of `max(50, users / 50)` groups, drawn with a skew so that a few
//! department-wide groups are large and most project groups are small.
//!
//! Usage: scim_server --users N [--listen 127.0.0.1:0] [--seed 1] [--delay-ms 0]
//!                    [--groups G] [--groups-per-user 5]
//!
//! Prints `listening on http://ADDR/scim/v2 users=N groups=G memberships=M
//! user_bytes=B group_bytes=B` on stdout once the directory is ready. Control, for the
//! driver: `PUT /_bench/delay?ms=N` sets the delay before every page answer,
//! `GET /_bench/stats` returns `{"pages":..,"bytes":..}` served since
//! `POST /_bench/reset`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

const USAGE: &str = "usage: scim_server --users N [--listen 127.0.0.1:0] [--seed 1] \
                     [--delay-ms 0] [--groups G] [--groups-per-user 5]";
const MAX_PAGE: usize = 1000;
const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// 2019-01-01T00:00:00Z: accounts are created over the five years after it.
const EPOCH_SECS: i64 = 1_546_300_800;

/// (as displayed, as written in an e-mail address)
const GIVEN: [(&str, &str); 40] = [
    ("Jane", "jane"),
    ("John", "john"),
    ("Amara", "amara"),
    ("Lukas", "lukas"),
    ("Sofia", "sofia"),
    ("Mateo", "mateo"),
    ("Yuki", "yuki"),
    ("Chen", "chen"),
    ("Priya", "priya"),
    ("Omar", "omar"),
    ("Inês", "ines"),
    ("Noah", "noah"),
    ("Freya", "freya"),
    ("Kwame", "kwame"),
    ("Elif", "elif"),
    ("Diego", "diego"),
    ("Zoë", "zoe"),
    ("Aleksandr", "aleksandr"),
    ("Margaret", "margaret"),
    ("Christopher", "christopher"),
    ("Olivia", "olivia"),
    ("Liam", "liam"),
    ("Fatima", "fatima"),
    ("Hiroshi", "hiroshi"),
    ("Isabella", "isabella"),
    ("Mohammed", "mohammed"),
    ("Siobhán", "siobhan"),
    ("Björn", "bjorn"),
    ("Anastasia", "anastasia"),
    ("Emeka", "emeka"),
    ("Lucía", "lucia"),
    ("Thomas", "thomas"),
    ("Mei", "mei"),
    ("Rahul", "rahul"),
    ("Ngozi", "ngozi"),
    ("Pierre", "pierre"),
    ("Katarzyna", "katarzyna"),
    ("Ahmed", "ahmed"),
    ("Elizabeth", "elizabeth"),
    ("Ji-woo", "jiwoo"),
];
const FAMILY: [(&str, &str); 40] = [
    ("Doe", "doe"),
    ("Smith", "smith"),
    ("Okafor", "okafor"),
    ("Schmidt", "schmidt"),
    ("Rossi", "rossi"),
    ("García", "garcia"),
    ("Tanaka", "tanaka"),
    ("Wei", "wei"),
    ("Sharma", "sharma"),
    ("Haddad", "haddad"),
    ("Silva", "silva"),
    ("Murphy", "murphy"),
    ("Larsen", "larsen"),
    ("Mensah", "mensah"),
    ("Yılmaz", "yilmaz"),
    ("Fernández", "fernandez"),
    ("Müller", "muller"),
    ("Kowalczyk", "kowalczyk"),
    ("Nakamura", "nakamura"),
    ("O'Brien", "obrien"),
    ("Van der Berg", "vanderberg"),
    ("Johansson", "johansson"),
    ("Papadopoulos", "papadopoulos"),
    ("Nguyen", "nguyen"),
    ("Abdullah", "abdullah"),
    ("Christensen", "christensen"),
    ("Dubois", "dubois"),
    ("Ivanova", "ivanova"),
    ("Kim", "kim"),
    ("Lefèvre", "lefevre"),
    ("Martinez-Lopez", "martinezlopez"),
    ("Oyelaran", "oyelaran"),
    ("Petrov", "petrov"),
    ("Rodríguez", "rodriguez"),
    ("Santos", "santos"),
    ("Thompson", "thompson"),
    ("Usman", "usman"),
    ("Wójcik", "wojcik"),
    ("Zhang", "zhang"),
    ("Andersson", "andersson"),
];
const DEPARTMENTS: [&str; 16] = [
    "engineering",
    "platform",
    "sre",
    "security",
    "data",
    "finance",
    "sales",
    "support",
    "marketing",
    "legal",
    "people",
    "it",
    "product",
    "design",
    "research",
    "operations",
];
const TEAMS: [&str; 16] = [
    "all",
    "oncall",
    "admins",
    "readers",
    "db-prod",
    "db-staging",
    "k8s",
    "payments",
    "search",
    "billing",
    "identity",
    "mobile",
    "web",
    "analytics",
    "infra",
    "tooling",
];
const PERSONAL_DOMAINS: [&str; 4] = [
    "mail.example.net",
    "post.example.org",
    "inbox.example.net",
    "home.example.org",
];

/// splitmix64: tiny, fast, and the same on every platform and `rand` version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64 * n as f64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn uuid(&mut self) -> [u8; 36] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_le_bytes());
        b[8..].copy_from_slice(&self.next().to_le_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in b.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        out
    }

    /// An Okta-style external id: `00u` and 17 base-62 characters.
    fn okta_id(&mut self) -> String {
        const ALNUM: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let mut id = String::with_capacity(20);
        id.push_str("00u");
        for _ in 0..17 {
            id.push(char::from(ALNUM[self.below(62)]));
        }
        id
    }
}

/// Resources serialized back to back, each followed by a comma, so that resources
/// `a..b` are the single range `bytes[offsets[a]..offsets[b] - 1]`.
struct Resources {
    bytes: Vec<u8>,
    offsets: Vec<usize>,
}

impl Resources {
    fn new(capacity: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(capacity),
            offsets: vec![0],
        }
    }

    fn push(&mut self, json: &str) {
        self.bytes.extend_from_slice(json.as_bytes());
        self.bytes.push(b',');
        self.offsets.push(self.bytes.len());
    }

    fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// A complete ListResponse for `startIndex` (1-based) and `count`.
    fn page(&self, start_index: usize, count: usize) -> Vec<u8> {
        let total = self.len();
        let first = start_index.max(1) - 1;
        let first = first.min(total);
        let end = (first + count.min(MAX_PAGE)).min(total);
        let body = if end > first {
            &self.bytes[self.offsets[first]..self.offsets[end] - 1]
        } else {
            &[][..]
        };
        let head = format!(
            r#"{{"schemas":["{LIST_SCHEMA}"],"totalResults":{total},"startIndex":{},"itemsPerPage":{},"Resources":["#,
            first + 1,
            end - first
        );
        let mut page = Vec::with_capacity(head.len() + body.len() + 2);
        page.extend_from_slice(head.as_bytes());
        page.extend_from_slice(body);
        page.extend_from_slice(b"]}");
        page
    }
}

struct Directory {
    users: Resources,
    groups: Resources,
    memberships: usize,
}

struct Spec {
    users: usize,
    groups: usize,
    groups_per_user: usize,
    seed: u64,
}

fn timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn meta(out: &mut String, resource_type: &str, rng: &mut Rng, base: &str, id: &str) {
    let created = EPOCH_SECS + rng.below(5 * 365 * 86_400) as i64;
    let modified = created + rng.below(365 * 86_400) as i64;
    let _ = write!(
        out,
        r#""meta":{{"resourceType":"{resource_type}","created":"{}","lastModified":"{}","location":"{base}/{resource_type}s/{id}"}}"#,
        timestamp(created),
        timestamp(modified),
    );
}

fn generate(spec: &Spec, base: &str) -> Directory {
    let mut rng = Rng(spec.seed);
    let n = spec.users;
    let mut ids: Vec<[u8; 36]> = Vec::with_capacity(n);
    let mut names: Vec<(u8, u8)> = Vec::with_capacity(n);
    let mut users = Resources::new(n * 700);
    let mut json = String::with_capacity(1024);
    for i in 0..n {
        let id_bytes = rng.uuid();
        let id = std::str::from_utf8(&id_bytes).expect("hex");
        let (g, f) = (rng.below(GIVEN.len()), rng.below(FAMILY.len()));
        let ((given, given_ascii), (family, family_ascii)) = (GIVEN[g], FAMILY[f]);
        let email = format!("{given_ascii}.{family_ascii}{i}@example.com");
        let display = format!("{given} {family}");
        json.clear();
        let _ = write!(
            json,
            r#"{{"schemas":["{USER_SCHEMA}"],"id":"{id}","externalId":"{}","userName":"{email}","name":{{"formatted":"{display}","familyName":"{family}","givenName":"{given}"}},"displayName":"{display}","emails":[{{"value":"{email}","type":"work","primary":true}}"#,
            rng.okta_id(),
        );
        if rng.below(4) == 0 {
            let domain = PERSONAL_DOMAINS[rng.below(PERSONAL_DOMAINS.len())];
            let _ = write!(
                json,
                r#",{{"value":"{given_ascii}{family_ascii}{}@{domain}","type":"home","primary":false}}"#,
                rng.below(1000)
            );
        }
        json.push_str(r#"],"active":true,"#);
        meta(&mut json, "User", &mut rng, base, id);
        json.push('}');
        users.push(&json);
        ids.push(id_bytes);
        names.push((g as u8, f as u8));
    }

    // Each user joins `groups_per_user` distinct groups; index = floor(G * u^2) makes
    // low-numbered (department-wide) groups large and the long tail small.
    let group_count = spec.groups.max(1);
    let per_user = spec.groups_per_user.min(group_count);
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); group_count];
    let mut picked: Vec<usize> = Vec::with_capacity(per_user);
    for user in 0..n {
        picked.clear();
        while picked.len() < per_user {
            let u = rng.unit();
            let g = ((u * u) * group_count as f64) as usize;
            let g = g.min(group_count - 1);
            if !picked.contains(&g) {
                picked.push(g);
            }
        }
        for &g in &picked {
            members[g].push(user as u32);
        }
    }
    let memberships = members.iter().map(Vec::len).sum::<usize>();
    let mut groups = Resources::new(memberships * 62 + group_count * 400);
    let mut display_of: HashMap<(u8, u8), String> = HashMap::new();
    for (g, list) in members.iter().enumerate() {
        let id_bytes = rng.uuid();
        let id = std::str::from_utf8(&id_bytes).expect("hex");
        let name = format!(
            "{}-{}-{g:04}",
            DEPARTMENTS[g % DEPARTMENTS.len()],
            TEAMS[(g / DEPARTMENTS.len()) % TEAMS.len()]
        );
        json.clear();
        let _ = write!(
            json,
            r#"{{"schemas":["{GROUP_SCHEMA}"],"id":"{id}","displayName":"{name}","members":["#
        );
        for (k, &user) in list.iter().enumerate() {
            let user = user as usize;
            let member_id = std::str::from_utf8(&ids[user]).expect("hex");
            let (gi, fi) = names[user];
            let display = display_of.entry((gi, fi)).or_insert_with(|| {
                format!("{} {}", GIVEN[usize::from(gi)].0, FAMILY[usize::from(fi)].0)
            });
            if k > 0 {
                json.push(',');
            }
            let _ = write!(json, r#"{{"value":"{member_id}","display":"{display}"}}"#);
        }
        json.push_str("],");
        meta(&mut json, "Group", &mut rng, base, id);
        json.push('}');
        groups.push(&json);
    }
    Directory {
        users,
        groups,
        memberships,
    }
}

struct AppState {
    directory: Directory,
    delay_ms: AtomicU64,
    pages: AtomicU64,
    bytes: AtomicU64,
}

#[derive(serde::Deserialize)]
struct Paging {
    #[serde(rename = "startIndex")]
    start_index: Option<usize>,
    count: Option<usize>,
}

async fn serve_page(state: &AppState, resources: &Resources, paging: Paging) -> Response {
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let page = resources.page(paging.start_index.unwrap_or(1), paging.count.unwrap_or(100));
    state.pages.fetch_add(1, Ordering::Relaxed);
    state.bytes.fetch_add(page.len() as u64, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/scim+json")],
        Body::from(page),
    )
        .into_response()
}

async fn users(State(state): State<Arc<AppState>>, Query(paging): Query<Paging>) -> Response {
    serve_page(&state, &state.directory.users, paging).await
}

async fn groups(State(state): State<Arc<AppState>>, Query(paging): Query<Paging>) -> Response {
    serve_page(&state, &state.directory.groups, paging).await
}

#[derive(serde::Deserialize)]
struct Delay {
    ms: u64,
}

async fn set_delay(State(state): State<Arc<AppState>>, Query(delay): Query<Delay>) -> StatusCode {
    state.delay_ms.store(delay.ms, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let body = format!(
        r#"{{"pages":{},"bytes":{},"delay_ms":{}}}"#,
        state.pages.load(Ordering::Relaxed),
        state.bytes.load(Ordering::Relaxed),
        state.delay_ms.load(Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    state.pages.store(0, Ordering::Relaxed);
    state.bytes.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

struct Args {
    listen: String,
    spec: Spec,
    delay_ms: u64,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut users = None;
    let mut groups = None;
    let mut groups_per_user = 5;
    let mut seed = 1;
    let mut delay_ms = 0;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} must be a whole number, got {v:?}"))
        };
        match flag.as_str() {
            "--listen" => listen = value,
            "--users" => users = Some(number(&value)? as usize),
            "--groups" => groups = Some(number(&value)? as usize),
            "--groups-per-user" => groups_per_user = number(&value)? as usize,
            "--seed" => seed = number(&value)?,
            "--delay-ms" => delay_ms = number(&value)?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    let users = users.ok_or("--users is required")?;
    if users > u32::MAX as usize {
        return Err("--users is too large".into());
    }
    Ok(Args {
        listen,
        spec: Spec {
            users,
            groups: groups.unwrap_or((users / 50).max(50)),
            groups_per_user,
            seed,
        },
        delay_ms,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("scim_server: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("scim_server: cannot listen on {}: {err}", args.listen);
                return ExitCode::from(1);
            }
        };
        let addr = listener.local_addr().expect("local address");
        let base = format!("http://{addr}/scim/v2");
        let started = std::time::Instant::now();
        let directory = generate(&args.spec, &base);
        eprintln!(
            "scim_server: generated {} users and {} groups in {:.1} s",
            directory.users.len(),
            directory.groups.len(),
            started.elapsed().as_secs_f64()
        );
        let line = format!(
            "listening on {base} users={} groups={} memberships={} user_bytes={} group_bytes={}",
            directory.users.len(),
            directory.groups.len(),
            directory.memberships,
            directory.users.bytes.len(),
            directory.groups.bytes.len()
        );
        let state = Arc::new(AppState {
            directory,
            delay_ms: AtomicU64::new(args.delay_ms),
            pages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let app = Router::new()
            .route("/scim/v2/Users", get(users))
            .route("/scim/v2/Groups", get(groups))
            .route("/_bench/delay", put(set_delay))
            .route("/_bench/stats", get(stats))
            .route("/_bench/reset", post(reset))
            .with_state(state);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{line}");
        let _ = stdout.flush();
        drop(stdout);
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("scim_server: {err}");
                ExitCode::from(1)
            }
        }
    })
}
