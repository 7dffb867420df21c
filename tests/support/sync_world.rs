//! What the source tests share around their fake directory: the stateful fake
//! gateway, a temporary cache, runs in-process and through the binary, and what
//! the gateway holds afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, SyncError, Syncer};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::fake_gateway::{FakeGateway, GatewayOptions};

pub struct SyncWorld {
    pub gateway: FakeGateway,
    pub dir: TempDir,
}

/// A user as the gateway holds it: sorted groups and status.
pub type Held = (Vec<String>, String);

impl SyncWorld {
    pub async fn start() -> Self {
        Self {
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A whole config: the `[source]` part given, the fake gateway as the target,
    /// deactivation on.
    pub fn config_text(&self, source: &str) -> String {
        format!(
            r#"{source}
[target]
url = "{url}"
api_key = "{key}"
rate_limit_per_second = 1000
burst = 100
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 20
"#,
            url = self.gateway.url(),
            key = self.gateway.admin_key(),
            cache = self.path("cache").display(),
        )
    }

    pub async fn run(&self, source: &str) -> Result<Summary, Aborted> {
        let config = Config::parse(&self.config_text(source), "test", &|_| None).expect("config");
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    /// Another run with `source` writes nothing: the gateway already holds what
    /// the directory says. That run's summary.
    pub async fn assert_rerun_writes_nothing(&self, source: &str) -> Summary {
        let writes = self.writes();
        let summary = self.run(source).await.expect("rerun");
        assert_eq!(self.writes(), writes, "converged: nothing more to write");
        summary
    }

    /// What the source's probe (`check-config --connect`) found.
    pub async fn probe(&self, source: &str) -> String {
        let config = Config::parse(&self.config_text(source), "test", &|_| None).expect("config");
        let source = idsync::source::open(&config.source).expect("source");
        source.probe().await.expect("probe")
    }

    /// e-mail → (sorted groups, status).
    pub fn held(&self) -> BTreeMap<String, Held> {
        self.gateway
            .users()
            .into_iter()
            .map(|user| {
                let mut groups = user.groups.clone();
                groups.sort();
                (user.email, (groups, user.status))
            })
            .collect()
    }

    /// e-mail → sorted groups of the users the gateway holds as not inactive.
    pub fn active(&self) -> BTreeMap<String, Vec<String>> {
        self.held()
            .into_iter()
            .filter(|(_, (_, status))| status != "inactive")
            .map(|(email, (groups, _))| (email, groups))
            .collect()
    }

    /// Requests to the gateway that change something.
    pub fn writes(&self) -> usize {
        let requests = self.gateway.requests();
        requests.iter().filter(|r| r.method != "GET").count()
    }

    /// A run whose read is cut off (`cut` set up before it) aborts as a source
    /// error and writes nothing: nobody is deactivated. What it aborted with, for
    /// the caller's own checks.
    pub async fn assert_cut_off_run_writes_nothing(&self, source: &str, cut: &str) -> Aborted {
        let writes = self.writes();
        let aborted = self.run(source).await.expect_err("the read is not trusted");
        assert!(
            matches!(aborted.error, SyncError::Source(_)),
            "{cut}: {}",
            aborted.error
        );
        assert_eq!(aborted.summary.counts.deactivated, 0, "{cut}");
        assert_eq!(self.writes(), writes, "{cut}: nothing written");
        aborted
    }

    /// The binary with the config written to a file, `args` after `--config`, and
    /// `RUST_LOG=debug` so that the most detailed logs are checked too.
    pub async fn idsync(&self, source: &str, args: &[&str]) -> Output {
        let config = self.path("idsync.toml");
        std::fs::write(&config, self.config_text(source)).expect("config file");
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_idsync"))
                .arg("--config")
                .arg(&config)
                .args(&args)
                .env("RUST_LOG", "debug")
                .output()
                .expect("idsync runs")
        })
        .await
        .expect("task")
    }
}

/// `(groups, status)` as [`SyncWorld::held`] gives them.
pub fn held(groups: &[&str], status: &str) -> Held {
    (
        groups.iter().map(|g| g.to_string()).collect(),
        status.to_owned(),
    )
}
