//! The built `idsync` binary killed with SIGKILL part-way through a first import
//! (no destructor, no flush, no signal handler runs), then run again: the gateway
//! ends with every directory user exactly once, and the runs account for them all.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::directory::{Directory, GenSpec};
use support::fake_gateway::{FakeGateway, GatewayOptions};
use support::fake_idp::{FakeIdp, IdpOptions};

/// An idsync config for the fakes, sending at most `rate` requests a second.
fn write_config(path: &Path, idp: &FakeIdp, gateway: &FakeGateway, cache: &Path, rate: u32) {
    let target =
        format!("rate_limit_per_second = {rate}\nburst = 1\nmax_in_flight = 4\nmax_attempts = 3\n");
    let text = support::idsync_toml(idp, gateway, cache, "page_size = 100", &target, "");
    std::fs::write(path, text).expect("write config");
}

fn idsync(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_idsync"));
    command
        .arg("--config")
        .arg(config)
        .args(["--sync-now", "--output", "json"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// Runs idsync to its end (on a blocking thread, so the fakes keep serving) and
/// returns its summary.
async fn run_to_completion(config: &Path) -> Value {
    let mut command = idsync(config);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("run idsync");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}\nstdout: {stdout}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("{err}: {stdout}"))
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no count {key} in {summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_import_killed_with_sigkill_converges_on_the_next_run() {
    let directory = Directory::generate(GenSpec {
        users: 1000,
        groups: 10,
        groups_per_user: 2,
        mixed_case: true,
        seed: 61,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let users = directory.users.len() as u64;
    let idp = FakeIdp::start(IdpOptions::default(), directory).await;
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, cache) = (dir.path().join("idsync.toml"), dir.path().join("cache"));

    // 100 creates a second: the import would take 10 s; it is killed after 150.
    write_config(&config, &idp, &gateway, &cache, 100);
    let mut child = idsync(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn idsync");
    let started = Instant::now();
    while gateway.users().len() < 150 {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("idsync ended before it was killed: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "idsync created {} users in 30 s",
            gateway.users().len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    // A request the gateway had read before the kill may still be done.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created_before = gateway.users().len();
    assert!(
        created_before < expected.len(),
        "killed part-way ({created_before} of {} created)",
        expected.len()
    );

    write_config(&config, &idp, &gateway, &cache, 10_000);
    let second = run_to_completion(&config).await;
    assert_eq!(
        gateway.groups_by_email(),
        expected,
        "each directory user once"
    );
    assert_eq!(count(&second, "directory_users"), users);
    assert_eq!(
        (count(&second, "failed"), count(&second, "interrupted")),
        (0, 0)
    );
    // Users created before the kill are remembered (unchanged) or, when the kill
    // came between the gateway's answer and the cache's flush, met again (409).
    let (created, existing) = (count(&second, "created"), count(&second, "existing"));
    let unchanged = count(&second, "unchanged");
    assert_eq!(created + existing + unchanged, users, "{second}");
    assert_eq!(
        existing + unchanged,
        created_before as u64,
        "only those created before the kill are not created again: {second}"
    );

    gateway.clear_requests();
    let third = run_to_completion(&config).await;
    assert_eq!(count(&third, "unchanged"), users, "{third}");
    assert!(
        gateway.requests().iter().all(|r| r.method == "GET"),
        "a third run writes nothing: {:?}",
        gateway.requests()
    );
    assert_eq!(gateway.groups_by_email(), expected);
}
