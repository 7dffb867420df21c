//! Push mode survives `kill -9`: 8 clients push 500 users while the gateway answers
//! 503 to every create, the daemon is killed mid-way and restarted, and the
//! clients retry what was not acknowledged, as an IdP's provisioning engine does.
//! Once the gateway recovers, every acknowledged push reaches it exactly once.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions};

const TOKEN: &str = "crash-push-token-0123456789";
const CLIENTS: usize = 8;
const USERS: usize = 500;

fn start_daemon(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Pushes user `n` until the endpoint acknowledges it: 201, or 409 when an
/// earlier attempt was stored but its answer lost in the crash.
async fn push_until_acknowledged(http: &reqwest::Client, base: &str, n: usize) -> u16 {
    let email = format!("user{n:04}@example.com");
    let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": email, "emails": [{"value": email, "primary": true}], "active": true});
    loop {
        match http
            .post(format!("{base}/Users"))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
        {
            Ok(response) if matches!(response.status().as_u16(), 201 | 409) => {
                return response.status().as_u16()
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_push_reaches_the_gateway_exactly_once_after_kill_9() {
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    gateway.set_faults(Faults {
        error_503_ratio: 1.0,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("idsync.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[source]
kind = "push"
[push]
listen = "127.0.0.1:{port}"
bearer_token = "{TOKEN}"
[target]
url = "{url}"
api_key = "{key}"
rate_limit_per_second = 500
burst = 50
max_in_flight = 8
max_attempts = 2
[cache]
path = "{cache}"
[sync]
run_on_start = true
schedule = "0 0 0 1 1 *"
"#,
            url = gateway.url(),
            key = gateway.admin_key(),
            cache = dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("idsync.log");
    let base = format!("http://127.0.0.1:{port}/scim/v2");
    let mut daemon = start_daemon(&config, &log);

    let acknowledged = Arc::new(AtomicUsize::new(0));
    let conflicts = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (base, acknowledged, conflicts) =
            (base.clone(), acknowledged.clone(), conflicts.clone());
        clients.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in (client..USERS).step_by(CLIENTS) {
                if push_until_acknowledged(&http, &base, n).await == 409 {
                    conflicts.lock().unwrap().push(n);
                }
                acknowledged.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::SeqCst) < USERS / 2 {
        assert!(
            Instant::now() < deadline,
            "the pushes did not get going ({} acknowledged)\n{}",
            acknowledged.load(Ordering::SeqCst),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.kill().unwrap(); // SIGKILL: no shutdown, no flush
    daemon.wait().unwrap();
    let at_kill = acknowledged.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut daemon = start_daemon(&config, &log);
    for client in clients {
        client.await.unwrap();
    }
    assert!(at_kill < USERS, "the kill came while pushes were in flight");

    gateway.set_faults(Faults::default());
    // One more push wakes the daemon's change run, which reads the whole queue.
    push_until_acknowledged(&reqwest::Client::new(), &base, USERS).await;
    let wanted: BTreeSet<String> = (0..=USERS)
        .map(|n| format!("user{n:04}@example.com"))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: BTreeSet<String> = gateway.users().into_iter().map(|u| u.email).collect();
        if held == wanted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway holds {} of {} users\n{}",
            held.len(),
            wanted.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let created = gateway
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/users" && r.status == 201)
        .count();
    assert_eq!(created, USERS + 1, "each user was created exactly once");
    assert_eq!(gateway.users().len(), USERS + 1, "and is held once");
    eprintln!(
        "killed at {at_kill} acknowledged; {} retries met 409",
        conflicts.lock().unwrap().len()
    );
}
