//! What the built binary shows an operator (issue 17): a signal during a hanging
//! directory request, colour on stderr, JSON logs, escaped directory text.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use tempfile::TempDir;

/// Which requests never answer.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Hang {
    /// The directory's SCIM listings; the gateway has no users.
    Directory,
    /// The gateway's user listing; the directory lists one user.
    Gateway,
}

/// A directory and a gateway on one address, where `hang`'s requests never
/// answer. Returns the address and how many hanging requests arrived.
async fn hanging_peers(hang: Hang) -> (String, Arc<AtomicUsize>) {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = asked.clone();
    let pending = move || {
        counter.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<String>()
    };
    let list = |resources: &'static str, total: usize| {
        format!(
            r#"{{"schemas":["urn:ietf:params:scim:api:messages:2.0:ListResponse"],"totalResults":{total},"itemsPerPage":{total},"startIndex":1,"Resources":[{resources}]}}"#
        )
    };
    let users = list(r#"{"id":"u1","userName":"ann@example.com"}"#, 1);
    let groups = list("", 0);
    let app = match hang {
        Hang::Directory => axum::Router::new()
            .route("/scim/Users", get(pending.clone()))
            .route("/scim/Groups", get(pending))
            .route("/api/users", get(|| async { "[]" })),
        Hang::Gateway => axum::Router::new()
            .route("/scim/Users", get(move || async move { users }))
            .route("/scim/Groups", get(move || async move { groups }))
            .route("/api/users", get(pending)),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{address}"), asked)
}

/// A config for `base` with its cache in `dir`; `extra` goes at the end.
fn write_config(dir: &Path, base: &str, extra: &str) -> PathBuf {
    let path = dir.join("idsync.toml");
    let text = format!(
        "[source]\nkind = \"scim\"\nurl = \"{base}/scim\"\nbearer_token = \"t\"\n\
         [target]\nurl = \"{base}/api\"\napi_key = \"k\"\nmax_attempts = 1\n\
         [cache]\npath = \"{}\"\n{extra}",
        dir.join("cache").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn idsync(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idsync"));
    command
        .arg("--config")
        .arg(config)
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    command
}

/// Waits for `child` to exit, for at most `limit`; kills it when it does not.
async fn wait_output(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    while child.try_wait().expect("try_wait").is_none() && started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let _ = child.kill();
    (child.wait_with_output().expect("output"), took)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_directory_request_aborts_with_exit_3_and_a_record() {
    let (base, asked) = hanging_peers(Hang::Directory).await;
    sigterm_mid_request_aborts_with_exit_3_and_a_record(&base, &asked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_hanging_gateway_listing_aborts_with_exit_3_and_a_record() {
    let (base, asked) = hanging_peers(Hang::Gateway).await;
    sigterm_mid_request_aborts_with_exit_3_and_a_record(&base, &asked).await;
}

/// Runs `--sync-now` against `base`, sends SIGTERM once a request hangs there,
/// and checks the exit code, the summary and the run record.
async fn sigterm_mid_request_aborts_with_exit_3_and_a_record(base: &str, asked: &AtomicUsize) {
    let dir = TempDir::new().expect("tempdir");
    let config = write_config(dir.path(), base, "");
    let child = idsync(&config)
        .arg("--sync-now")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idsync");
    let deadline = Instant::now() + Duration::from_secs(10);
    while asked.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: a plain kill(2) of the child this test spawned.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (output, took) = wait_output(child, Duration::from_secs(5)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(3),
        "after {took:?}; stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(stdout.contains("directory users"), "summary: {stdout}");
    assert!(
        stdout.starts_with("ABORTED: stopped by shutdown"),
        "summary: {stdout}"
    );

    let status = idsync(&config)
        .args(["status", "--output", "json"])
        .output()
        .expect("status");
    let runs: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(runs["runs"][0]["outcome"], "aborted", "{runs}");
    let error = runs["runs"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("shutdown"), "{runs}");
}

/// A run that logs warnings and errors and aborts: the export file is missing
/// and nothing listens where the gateway should be.
fn failing_run_config(dir: &Path) -> PathBuf {
    let path = dir.join("idsync.toml");
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n\
         [target]\nurl = \"http://127.0.0.1:9/api\"\napi_key = \"k\"\nmax_attempts = 1\n\
         [cache]\npath = \"{}\"\n",
        dir.join("missing.jsonl").display(),
        dir.join("cache").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn logs_into_a_pipe_carry_no_colour_codes() {
    let dir = TempDir::new().expect("tempdir");
    let config = failing_run_config(dir.path());
    let output = idsync(&config)
        .arg("--sync-now")
        .output()
        .expect("run idsync");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Run aborted"), "{stderr}");
    assert!(
        !stderr.contains("\x1b["),
        "colour codes in a pipe: {stderr:?}"
    );
}

/// Every line of `stderr` is a JSON object.
fn assert_json_lines(stderr: &[u8]) {
    let stderr = String::from_utf8_lossy(stderr);
    assert!(!stderr.trim().is_empty(), "nothing logged");
    for line in stderr.lines() {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(
            parsed.is_ok_and(|v| v.is_object()),
            "not a JSON line: {line:?}\nall of stderr:\n{stderr}"
        );
    }
}

#[test]
fn with_json_logs_a_bad_config_and_a_failed_run_write_only_json_lines() {
    let dir = TempDir::new().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[target]\nurl = \"use.hoop.dev\"\n").expect("write config");
    let output = idsync(&bad)
        .args(["--sync-now", "--log-format", "json"])
        .output()
        .expect("run idsync");
    assert_eq!(output.status.code(), Some(2));
    assert_json_lines(&output.stderr);

    let config = failing_run_config(dir.path());
    let output = idsync(&config)
        .args(["--sync-now", "--log-format", "json"])
        .output()
        .expect("run idsync");
    assert_eq!(output.status.code(), Some(3));
    assert_json_lines(&output.stderr);
}

#[test]
fn status_before_any_run_says_so_and_exits_0() {
    let dir = TempDir::new().expect("tempdir");
    let config = failing_run_config(dir.path());
    let output = idsync(&config)
        .args(["status", "--output", "json"])
        .output()
        .expect("status");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(value["runs"], serde_json::json!([]), "{value}");
    let output = idsync(&config).arg("status").output().expect("status");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("no runs yet"));
}

/// A gateway that already holds eve@example.com, and an export with Eve and a
/// user whose e-mail is unusable and whose name carries control characters.
async fn dry_run_against_a_populated_gateway() -> Output {
    let app = axum::Router::new().route(
        "/api/users",
        get(|| async {
            r#"[{"id":"eve@example.com","email":"eve@example.com","name":"Eve","groups":null,"status":"active"}]"#
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let dir = TempDir::new().expect("tempdir");
    let users = dir.path().join("users.jsonl");
    std::fs::write(
        &users,
        "{\"id\": \"u1\", \"email\": \"eve@example.com\", \"name\": \"Eve\"}\n\
         {\"id\": \"u5\", \"email\": \"nope\", \"name\": \"Mallory\\nERROR forged\\u001b[2J\"}\n",
    )
    .expect("write users");
    let config = dir.path().join("idsync.toml");
    let text = format!(
        "[source]\nkind = \"file\"\npath = \"{}\"\n\
         [target]\nurl = \"http://{address}/api\"\napi_key = \"k\"\n\
         [cache]\npath = \"{}\"\n",
        users.display(),
        dir.path().join("cache").display()
    );
    std::fs::write(&config, text).expect("write config");
    let child = idsync(&config)
        .args(["--sync-now", "--dry-run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn idsync");
    wait_output(child, Duration::from_secs(20)).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_logs_would_adopt_and_escapes_directory_text() {
    let output = dry_run_against_a_populated_gateway().await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stdout.contains("would adopt") && stderr.contains("would adopt"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(!stderr.contains("now managed"), "{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains('\x1b'), "{text:?}");
        assert!(!text.contains("\nERROR forged"), "{text:?}");
    }
    assert!(
        stdout.contains("subject u5 (Mallory\\nERROR forged\\u{1b}[2J)"),
        "{stdout}"
    );
}
