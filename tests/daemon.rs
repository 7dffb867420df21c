//! The built `idsync` binary as a daemon: its endpoints across its life, the
//! systemd notify protocol on a socket the test binds, SIGTERM mid-run, SIGHUP.

mod support;

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::directory::{Directory, GenSpec};
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions};
use support::fake_idp::{FakeIdp, IdpFaults, IdpOptions};
use tempfile::TempDir;

struct Daemon {
    child: Child,
    dir: TempDir,
    listen: String,
    /// Notify messages, read as they come (as systemd does).
    notifications: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn write_config(
    path: &Path,
    idp: &FakeIdp,
    gateway: &FakeGateway,
    cache: &Path,
    listen: &str,
    extra_target: &str,
) {
    let sections = format!(
        "[sync]\nschedule = \"* * * * * *\"\nrun_on_start = false\n\
         [service]\nlisten = \"{listen}\"\nunready_after_failed_runs = 2\n"
    );
    let target = format!("max_attempts = 3\n{extra_target}");
    let text = support::idsync_toml(idp, gateway, cache, "page_size = 50", &target, &sections);
    std::fs::write(path, text).expect("write config");
}

impl Daemon {
    fn start(idp: &FakeIdp, gateway: &FakeGateway, extra_target: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let listen = format!("127.0.0.1:{}", free_port());
        write_config(
            &dir.path().join("idsync.toml"),
            idp,
            gateway,
            &dir.path().join("cache"),
            &listen,
            extra_target,
        );
        let socket_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&socket_path).expect("bind notify socket");
        let notifications = Arc::new(Mutex::new(Vec::new()));
        let received = notifications.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n) = notify.recv(&mut buffer) {
                // A datagram holds newline-terminated assignments; keep one each.
                let message = String::from_utf8_lossy(&buffer[..n]);
                let lines = message.lines().map(str::to_owned);
                received.lock().expect("lock").extend(lines);
            }
        });
        let log = std::fs::File::create(dir.path().join("daemon.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_idsync"))
            .arg("--config")
            .arg(dir.path().join("idsync.toml"))
            .arg("--shutdown-grace-secs")
            .arg("10")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "400000")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn idsync");
        Self {
            child,
            dir,
            listen,
            notifications,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("idsync.toml")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Every notify message received so far.
    fn messages(&self) -> Vec<String> {
        self.notifications.lock().expect("lock").clone()
    }

    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.listen))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.ok()?))
    }

    async fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut(u16, &str) -> bool,
        path: &str,
    ) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((status, body)) = self.get(path).await {
                if check(status, &body) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the exit, returning its status and how long it took.
    async fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name{labels}` → value, from Prometheus text format; panics on a malformed line.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("malformed metric line {line:?}"));
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("malformed value in {line:?}"));
            (key.to_owned(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_metrics_and_notify_follow_the_daemons_life() {
    let directory = Directory::generate(GenSpec {
        users: 40,
        groups: 4,
        seed: 3,
        ..GenSpec::default()
    });
    let expected = directory.expected_created().len();
    let idp = FakeIdp::start(IdpOptions::default(), directory).await;
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    // The IdP fails first: the daemon is alive but not ready.
    idp.set_faults(IdpFaults {
        fail_users_at_start_index: Some(1),
        ..IdpFaults::default()
    });
    let mut daemon = Daemon::start(&idp, &gateway, "");

    daemon
        .wait_for("/healthz", |status, _| status == 200, "/healthz")
        .await;
    let (status, body) = daemon.get("/readyz").await.expect("readyz");
    assert_eq!(status, 503, "{body}");
    let body = daemon
        .wait_for(
            "two failed runs",
            |status, body| status == 503 && body.contains("runs failed"),
            "/readyz",
        )
        .await;
    assert!(body.contains("the last 2 runs failed"), "{body}");
    assert_eq!(
        gateway.count("POST", "/api/users"),
        0,
        "a failing IdP changes nothing"
    );

    // The IdP recovers: the next run creates everyone and the daemon is ready.
    idp.set_faults(IdpFaults::default());
    daemon
        .wait_for("ready", |status, _| status == 200, "/readyz")
        .await;

    let metrics = parse_metrics(&daemon.get("/metrics").await.expect("metrics").1);
    let created = metrics["idsync_users_total{action=\"create\",outcome=\"done\"}"];
    assert_eq!(created as usize, expected);
    let answered_2xx = gateway
        .requests()
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .count();
    assert_eq!(
        metrics["idsync_target_requests_total{status_class=\"2xx\"}"] as usize,
        answered_2xx
    );
    assert!(metrics["idsync_runs_total{outcome=\"aborted\"}"] >= 2.0);
    assert!(metrics["idsync_runs_total{outcome=\"ok\"}"] >= 1.0);
    assert!(metrics["idsync_last_success_timestamp_seconds"] > 1.7e9);
    assert!(metrics["idsync_next_run_timestamp_seconds"] > 1.7e9);
    assert_eq!(metrics["idsync_directory_users"], 40.0);
    assert!(metrics.contains_key("idsync_run_duration_seconds_bucket{le=\"0.5\"}"));
    assert!(
        metrics.keys().all(|k| !k.contains('@')),
        "no e-mail in any label"
    );

    daemon.signal("TERM");
    let (status, took) = daemon.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    assert!(took < Duration::from_secs(10));

    let messages = daemon.messages();
    assert_eq!(
        messages.first().map(String::as_str),
        Some("READY=1"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.starts_with("STATUS=next sync ")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m == "STATUS=syncing"),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains(&format!("last: {expected} created"))),
        "{messages:?}"
    );
    assert!(messages.iter().any(|m| m == "WATCHDOG=1"), "{messages:?}");
    assert_eq!(
        messages.last().map(String::as_str),
        Some("STOPPING=1"),
        "{messages:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_cleanly_and_nothing_is_lost() {
    let directory = Directory::generate(GenSpec {
        users: 200,
        groups: 4,
        seed: 5,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let idp = FakeIdp::start(IdpOptions::default(), directory).await;
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    gateway.set_faults(Faults {
        latency: Duration::from_millis(30),
        ..Faults::default()
    });
    let mut daemon = Daemon::start(&idp, &gateway, "rate_limit_per_second = 20\nburst = 1");
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.count("POST", "/api/users") < 20 {
        assert!(
            Instant::now() < deadline,
            "no run started; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.signal("TERM");
    let (status, took) = daemon.wait_exit(Duration::from_secs(12)).await;
    assert!(status.success(), "exit {status:?}; log:\n{}", daemon.log());
    assert!(
        took < Duration::from_secs(3),
        "in-flight requests finished promptly ({took:?})"
    );
    let created_before = gateway.users().len();
    assert!(
        created_before < expected.len(),
        "stopped part-way ({created_before})"
    );

    // The same cache, one more run: everyone exactly once.
    gateway.set_faults(Faults::default());
    let output = Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(daemon.config_path())
        .args(["--sync-now", "--output", "json"])
        .output()
        .expect("sync-now");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(
        summary["unchanged"].as_u64(),
        Some(created_before as u64),
        "{summary}"
    );
    let mut held: Vec<String> = gateway.users().into_iter().map(|u| u.email).collect();
    held.sort();
    assert_eq!(held, expected.keys().cloned().collect::<Vec<_>>());

    // `idsync status` reads the history while nothing holds the cache.
    let status = Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(daemon.config_path())
        .args(["status", "--output", "json"])
        .output()
        .expect("status");
    let runs: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    assert_eq!(runs["runs"][0]["outcome"], "ok", "{runs}");
    assert_eq!(
        runs["runs"][1]["outcome"], "aborted",
        "the interrupted run is in the history: {runs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_keeps_the_running_config_when_the_new_one_is_invalid() {
    let directory = Directory::generate(GenSpec {
        users: 5,
        groups: 1,
        seed: 9,
        ..GenSpec::default()
    });
    let idp = FakeIdp::start(IdpOptions::default(), directory).await;
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    let mut daemon = Daemon::start(&idp, &gateway, "");
    daemon
        .wait_for("ready", |status, _| status == 200, "/readyz")
        .await;

    std::fs::write(daemon.config_path(), "[source]\nkind = \"ldap\"\n").expect("break config");
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon.log().contains("keeping the running one") {
        assert!(
            Instant::now() < deadline,
            "no reload seen; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Still syncing with the old config, still ready.
    let (status, _) = daemon.get("/readyz").await.expect("readyz");
    assert_eq!(status, 200);
    daemon.signal("INT");
    let (status, _) = daemon.wait_exit(Duration::from_secs(15)).await;
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_names_the_part_that_fails() {
    let idp = FakeIdp::start(
        IdpOptions::default(),
        Directory::generate(GenSpec::default()),
    )
    .await;
    let gateway = FakeGateway::start(GatewayOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("idsync.toml");
    let check = |config: &Path| {
        let output = Command::new(env!("CARGO_BIN_EXE_idsync"))
            .arg("--config")
            .arg(config)
            .args(["check-config", "--connect", "--output", "json"])
            .output()
            .expect("check-config");
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        (output.status.code(), report)
    };

    write_config(
        &config,
        &idp,
        &gateway,
        &dir.path().join("cache"),
        "127.0.0.1:1",
        "",
    );
    let (code, report) = check(&config);
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report["directory"]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("10 users"),
        "{report}"
    );
    assert_eq!(report["gateway"]["ok"], true, "{report}");

    let text = std::fs::read_to_string(&config).expect("read");
    std::fs::write(&config, text.replace(gateway.admin_key(), "hpk_wrong")).expect("write");
    let (code, report) = check(&config);
    assert_eq!(code, Some(3), "{report}");
    assert_eq!(report["directory"]["ok"], true, "{report}");
    assert!(
        report["gateway"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("refused the API key"),
        "{report}"
    );
    assert!(
        !dir.path().join("cache").exists(),
        "check-config does not open the cache"
    );
}
