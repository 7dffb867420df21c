//! An instant hoop gateway stand-in for the benchmark (`tests/bench/run`).
//!
//! Unlike `hoop_standin` it keeps no users: every `POST /api/users` is answered 201 at
//! once (after `--latency-ms`, if set), `GET /api/users` (the inventory a first run
//! reads) `[]`, `GET /api/serverinfo` `{}`, and anything else 404 — except that an
//! update finds its user: `GET /api/users/{key}` answers an active user with that
//! e-mail and no groups, and `PUT /api/users/{key}` 200, so that the incremental
//! benchmarks' updates succeed and their cursors advance. It only counts requests
//! and records when each create arrived, so a million creates cost it a few bytes
//! each and the rate-fidelity check can look at the arrival times.
//!
//! Usage: bench_gateway [--listen 127.0.0.1:0] [--latency-ms 0]
//!
//! Prints `listening on http://ADDR/api` on stdout when ready. Control, for the driver
//! (not counted as gateway requests): `POST /_bench/reset` clears the counts and
//! restarts the clock, `PUT /_bench/latency?ms=N` sets the latency,
//! `GET /_bench/stats` returns `{"requests":..,"creates":..,"other":..,"updates":..}`
//! (`other`: every request but the creates; `updates`: the PUTs among them) and
//! `GET /_bench/arrivals` the arrival time of every create since the reset, in
//! microseconds, as a JSON array.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

const USAGE: &str = "usage: bench_gateway [--listen 127.0.0.1:0] [--latency-ms 0]";

struct Clock {
    since: Instant,
    arrivals_us: Vec<u64>,
}

struct AppState {
    latency_ms: AtomicU64,
    creates: AtomicU64,
    other: AtomicU64,
    updates: AtomicU64,
    clock: Mutex<Clock>,
}

async fn gateway(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    _body: Bytes,
) -> Response {
    let create = method == Method::POST && uri.path() == "/api/users";
    if create {
        let mut clock = state.clock.lock().unwrap_or_else(PoisonError::into_inner);
        let at = clock.since.elapsed().as_micros() as u64;
        clock.arrivals_us.push(at);
        drop(clock);
        state.creates.fetch_add(1, Ordering::Relaxed);
    } else {
        state.other.fetch_add(1, Ordering::Relaxed);
        if method == Method::PUT {
            state.updates.fetch_add(1, Ordering::Relaxed);
        }
    }
    let latency = state.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let user = uri
        .path()
        .strip_prefix("/api/users/")
        .filter(|key| key.contains('@') || key.contains("%40"));
    let (status, body) = match (&method, uri.path(), user) {
        _ if create => (StatusCode::CREATED, "{}".to_owned()),
        // The inventory idsync reads on a first run: a gateway with no users yet.
        (&Method::GET, "/api/users", _) => (StatusCode::OK, "[]".to_owned()),
        (&Method::GET, "/api/serverinfo", _) => (StatusCode::OK, "{}".to_owned()),
        (&Method::GET, _, Some(key)) => (StatusCode::OK, found_user(key)),
        (&Method::PUT, _, Some(_)) => (StatusCode::OK, "{}".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            r#"{"message":"not found"}"#.to_owned(),
        ),
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The user an update reads back before it replaces it.
fn found_user(key: &str) -> String {
    let email = key.replace("%40", "@");
    serde_json::json!({
        "id": email, "email": email, "name": "", "groups": null,
        "slack_id": "", "picture": "", "status": "active",
    })
    .to_string()
}

async fn reset(State(state): State<Arc<AppState>>) -> StatusCode {
    let mut clock = state.clock.lock().unwrap_or_else(PoisonError::into_inner);
    clock.since = Instant::now();
    clock.arrivals_us = Vec::new();
    state.creates.store(0, Ordering::Relaxed);
    state.other.store(0, Ordering::Relaxed);
    state.updates.store(0, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

#[derive(serde::Deserialize)]
struct Latency {
    ms: u64,
}

async fn set_latency(
    State(state): State<Arc<AppState>>,
    Query(latency): Query<Latency>,
) -> StatusCode {
    state.latency_ms.store(latency.ms, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<AppState>>) -> Response {
    let creates = state.creates.load(Ordering::Relaxed);
    let other = state.other.load(Ordering::Relaxed);
    let updates = state.updates.load(Ordering::Relaxed);
    let body = format!(
        r#"{{"requests":{},"creates":{creates},"other":{other},"updates":{updates},"latency_ms":{}}}"#,
        creates + other,
        state.latency_ms.load(Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn arrivals(State(state): State<Arc<AppState>>) -> Response {
    let clock = state.clock.lock().unwrap_or_else(PoisonError::into_inner);
    let body = serde_json::to_string(&clock.arrivals_us).unwrap_or_else(|_| "[]".into());
    drop(clock);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<(String, u64), String> {
    let mut listen = "127.0.0.1:0".to_owned();
    let mut latency_ms = 0;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = value,
            "--latency-ms" => {
                latency_ms = value
                    .parse()
                    .map_err(|_| format!("--latency-ms must be a whole number, got {value:?}"))?
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    Ok((listen, latency_ms))
}

fn main() -> ExitCode {
    let (listen, latency_ms) = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench_gateway: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&listen).await {
            Ok(listener) => listener,
            Err(err) => {
                eprintln!("bench_gateway: cannot listen on {listen}: {err}");
                return ExitCode::from(1);
            }
        };
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(AppState {
            latency_ms: AtomicU64::new(latency_ms),
            creates: AtomicU64::new(0),
            other: AtomicU64::new(0),
            updates: AtomicU64::new(0),
            clock: Mutex::new(Clock {
                since: Instant::now(),
                arrivals_us: Vec::new(),
            }),
        });
        let app = Router::new()
            .route("/_bench/reset", post(reset))
            .route("/_bench/latency", put(set_latency))
            .route("/_bench/stats", get(stats))
            .route("/_bench/arrivals", get(arrivals))
            .fallback(gateway)
            .with_state(state);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "listening on http://{addr}/api");
        let _ = stdout.flush();
        drop(stdout);
        match axum::serve(listener, app).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("bench_gateway: {err}");
                ExitCode::from(1)
            }
        }
    })
}
