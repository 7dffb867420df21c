//! A gateway fake and a cache directory for syncing a vendor fake's [`Org`], and
//! the checks the vendor source tests share: what the gateway holds against
//! what the organisation says.

use std::collections::BTreeMap;
use std::path::PathBuf;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, SyncError, Syncer};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

use super::fake_gateway::{FakeGateway, GatewayOptions};
use super::org::Org;

pub struct OrgWorld {
    pub gateway: FakeGateway,
    pub dir: TempDir,
}

impl OrgWorld {
    pub async fn start() -> Self {
        Self {
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A whole config: `source` (the `[source]` tables) and the gateway's.
    pub fn config_text(&self, source: &str) -> String {
        format!(
            r#"{source}
[target]
url = "{url}"
api_key = "{key}"
rate_limit_per_second = 100000
burst = 1000
max_in_flight = 16
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 10
"#,
            url = self.gateway.url(),
            key = self.gateway.admin_key(),
            cache = self.path("cache").display(),
        )
    }

    /// One run, in-process, with the `source` tables given.
    pub async fn run(&self, source: &str) -> Result<Summary, Aborted> {
        let config = Config::parse(&self.config_text(source), "test", &|_| None).expect("config");
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    /// e-mail → (sorted groups, status), as the gateway holds them.
    pub fn held(&self) -> BTreeMap<String, (Vec<String>, String)> {
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

    /// Requests that changed the gateway.
    pub fn writes(&self) -> usize {
        let requests = self.gateway.requests();
        requests.iter().filter(|r| r.method != "GET").count()
    }

    /// A run whose read is cut off (`cut` set up before it) aborts as a source
    /// error and writes nothing: nobody is deactivated.
    pub async fn assert_cut_off_run_writes_nothing(&self, source: &str, cut: &str) {
        let writes = self.writes();
        let err = self.run(source).await.expect_err("the read is not trusted");
        assert!(
            matches!(err.error, SyncError::Source(_)),
            "{cut}: {}",
            err.error
        );
        assert_eq!(err.summary.counts.deactivated, 0, "{cut}");
        assert_eq!(self.writes(), writes, "{cut}: nothing written");
    }

    /// Every active user of `org` is held, invited, with exactly its `expected`
    /// groups; every other held user is inactive.
    pub fn assert_holds(&self, org: &Org, expected: &BTreeMap<String, Vec<String>>) {
        let held = self.held();
        for user in org.users.iter().filter(|u| u.active) {
            let (groups, status) = held
                .get(&user.email)
                .unwrap_or_else(|| panic!("{} is held", user.email));
            assert_eq!(
                (groups, status.as_str()),
                (&expected[&user.email], "invited"),
                "{}",
                user.email
            );
        }
        let active: Vec<&str> = org
            .users
            .iter()
            .filter(|u| u.active)
            .map(|u| u.email.as_str())
            .collect();
        for (email, (_, status)) in &held {
            if !active.contains(&email.as_str()) {
                assert_eq!(status, "inactive", "{email} left or was disabled");
            }
        }
    }
}
