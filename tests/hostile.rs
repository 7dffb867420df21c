//! Hostile answers from the gateway: each is bounded, and says which bound it hit.
//! The real sync, in-process, against the fake IdP and the fake gateway.

mod support;

use std::time::Duration;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use support::directory::{Directory, GenSpec};
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions};
use support::fake_idp::{FakeIdp, IdpOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

struct Harness {
    idp: FakeIdp,
    gateway: FakeGateway,
    cache: TempDir,
}

impl Harness {
    async fn start(users: usize) -> Self {
        let directory = Directory::generate(GenSpec {
            users,
            ..GenSpec::default()
        });
        Self {
            idp: FakeIdp::start(IdpOptions::default(), directory).await,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            cache: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn config(&self) -> Config {
        let text = support::idsync_toml(
            &self.idp,
            &self.gateway,
            &self.cache.path().join("cache"),
            "page_size = 100",
            "rate_limit_per_second = 2000\nburst = 50\nmax_attempts = 4\ntimeout_secs = 5",
            "",
        );
        Config::parse(&text, "test", &|_| None).expect("test config")
    }

    /// One `--sync-now` run, which must end within 30 s.
    async fn run(&self) -> Result<Summary, Aborted> {
        let syncer = Syncer::for_one_run(&self.config(), RunMode::default()).expect("syncer");
        let stop = CancellationToken::new();
        tokio::time::timeout(Duration::from_secs(30), syncer.run_once(&stop))
            .await
            .expect("the run ends within 30 s")
    }

    fn posts(&self) -> usize {
        self.gateway.count("POST", "/api/users")
    }
}

#[tokio::test]
async fn a_retry_after_over_the_bound_fails_the_user_at_once() {
    let h = Harness::start(3).await;
    h.gateway.set_faults(Faults {
        burst_429: Some((0, 1_000_000, 999_999_999)),
        ..Faults::default()
    });
    let summary = h.run().await.expect("the run finishes, with failures");
    assert_eq!(summary.counts.failed, 3, "{summary:?}");
    assert_eq!(h.posts(), 3, "each user was tried once, not retried");
    for failure in &summary.failures {
        assert!(
            failure.reason.contains(
                "the gateway asked to wait Retry-After: 999999999 (over target.max_retry_after_secs = 300)"
            ),
            "{}",
            failure.reason
        );
    }
    // Without the fault the next run creates them.
    h.gateway.set_faults(Faults::default());
    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.created, 3, "{summary:?}");
}

#[tokio::test]
async fn a_redirect_from_the_gateway_aborts_the_run_and_rejects_nobody() {
    let h = Harness::start(3).await;
    h.gateway.set_faults(Faults {
        redirect_to: Some("https://sso.example.com/login".into()),
        ..Faults::default()
    });
    let aborted = h.run().await.expect_err("the run aborts");
    let error = aborted.error.to_string();
    let said = format!(
        "the gateway answered 302 to POST {}/users (Location: https://sso.example.com/login); check target.url",
        h.gateway.url()
    );
    assert!(error.contains(&said), "{error}");
    assert_eq!(aborted.summary.counts.failed, 0, "{:?}", aborted.summary);
    // Nothing was recorded as rejected: without the fault the next run creates them.
    h.gateway.set_faults(Faults::default());
    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.created, 3, "{summary:?}");
}
