//! `kind = "okta"` end to end: the stateful fake Okta org (behind Prism's
//! validating proxy on Okta's own OpenAPI document, where the test says so)
//! synced into the stateful fake gateway, with full and with incremental reads.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use support::fake_gateway::{FakeGateway, GatewayOptions};
use support::fake_okta::{FakeOkta, OktaFaults, OktaOptions, API_TOKEN, CLIENT_ID};
use support::prism::{vendor_spec, Prism};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const TYPES: [&str; 2] = ["OKTA_GROUP", "APP_GROUP"];

/// How idsync proves itself to the fake.
#[derive(Clone, Copy)]
enum Credential {
    ApiToken,
    ServiceApp,
}

struct World {
    okta: FakeOkta,
    prism: Option<Prism>,
    gateway: FakeGateway,
    dir: TempDir,
    incremental: bool,
    credential: Credential,
}

impl World {
    async fn start(opts: OktaOptions, prism: bool, incremental: bool) -> Self {
        let okta = FakeOkta::start(opts).await;
        let prism = match prism {
            true => {
                let prism = Prism::proxy(&vendor_spec("okta"), okta.url()).await;
                okta.set_public_url(prism.url());
                Some(prism)
            }
            false => None,
        };
        Self {
            okta,
            prism,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
            incremental,
            credential: Credential::ApiToken,
        }
    }

    fn source_url(&self) -> &str {
        self.prism.as_ref().map_or(self.okta.url(), Prism::url)
    }

    fn config_text(&self) -> String {
        let credential = match self.credential {
            Credential::ApiToken => format!("api_token = \"{API_TOKEN}\""),
            Credential::ServiceApp => format!(
                "client_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"",
                fixture("test-rsa-key.pem").display()
            ),
        };
        format!(
            r#"
[source]
kind = "okta"
url = "{url}"
incremental = {incremental}
[source.okta]
{credential}
[target]
url = "{target}"
api_key = "{key}"
rate_limit_per_second = 1000
burst = 100
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 50
full_read_every_secs = 86400
"#,
            url = self.source_url(),
            incremental = self.incremental,
            target = self.gateway.url(),
            key = self.gateway.admin_key(),
            cache = self.dir.path().join("cache").display(),
        )
    }

    async fn run(&self) -> Result<Summary, Aborted> {
        let config = Config::parse(&self.config_text(), "test", &|_| None).expect("config");
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    /// e-mail → sorted groups of the gateway's active users.
    fn active(&self) -> BTreeMap<String, Vec<String>> {
        self.gateway
            .users()
            .into_iter()
            .filter(|u| u.status != "inactive")
            .map(|u| {
                let mut groups = u.groups.clone();
                groups.sort();
                (u.email, groups)
            })
            .collect()
    }

    fn writes(&self) -> usize {
        self.gateway
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    fn assert_no_violations(&self) {
        if let Some(prism) = &self.prism {
            assert!(prism.violations().is_empty(), "{}", prism.log_text());
            assert!(prism.requests() > 0, "the requests went through Prism");
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn two_thousand_users_sync_exactly_once_and_a_rerun_writes_nothing() {
    let world = World::start(OktaOptions::default(), true, false).await;
    world.okta.seed(2_000, 20);
    let first = world.run().await.expect("first run");
    assert_eq!(first.counts.created, 2_000);
    assert_eq!(world.active(), world.okta.expected(&TYPES));
    assert_eq!(world.gateway.users().len(), 2_000, "each user created once");
    let everyone = world
        .active()
        .values()
        .any(|g| g.contains(&"Everyone".to_owned()));
    assert!(!everyone, "BUILT_IN groups are left out unless listed");

    world.gateway.clear_requests();
    let second = world.run().await.expect("rerun");
    assert_eq!((second.counts.unchanged, world.writes()), (2_000, 0));
    world.assert_no_violations();
}

/// Joiners, leavers, a suspended and a deactivated user, a group move and a
/// renamed group: the gateway ends where the directory is, read whole or by changes.
async fn changes_converge(incremental: bool) {
    let world = World::start(OktaOptions::default(), true, incremental).await;
    world.okta.seed(300, 6);
    world.run().await.expect("first run");
    let before = world.okta.stats();

    let joiner = world.okta.add_user("joiner@example.com", "Jo", "Iner");
    world.okta.set_member("00g0000001", &joiner, true);
    world.okta.delete_user("00u0000002");
    world
        .okta
        .update_user("00u0000003", |u| u.status = "SUSPENDED".into());
    world
        .okta
        .update_user("00u0000004", |u| u.status = "DEPROVISIONED".into());
    world
        .okta
        .update_user("00u0000005", |u| u.display = Some("Renamed Person".into()));
    // A move between groups: only the groups' memberships change, not the user.
    world.okta.set_member("00g0000001", "00u0000007", false);
    world.okta.set_member("00g0000002", "00u0000007", true);
    world.okta.rename_group("00g0000003", "team-renamed");

    let second = world.run().await.expect("second run");
    assert_eq!(world.active(), world.okta.expected(&TYPES));
    assert_eq!(second.counts.created, 1);
    assert_eq!(
        second.counts.deactivated, 3,
        "deleted, suspended, deactivated"
    );
    let after = world.okta.stats();
    let listed_everyone = after.unfiltered_user_pages - before.unfiltered_user_pages;
    let user_pages = after.user_pages - before.user_pages;
    if incremental {
        assert_eq!(listed_everyone, 0, "a change read lists changed users only");
        assert!(
            user_pages <= 2,
            "the changed, then the group movers by id: {user_pages}"
        );
    } else {
        assert_eq!(listed_everyone, 2, "300 users at 200 a page");
    }
    world.gateway.clear_requests();
    world.run().await.expect("third run");
    assert_eq!(world.writes(), 0, "converged");
    world.assert_no_violations();
}

#[tokio::test]
async fn changes_converge_with_full_reads() {
    changes_converge(false).await;
}

#[tokio::test]
async fn changes_converge_with_incremental_reads() {
    changes_converge(true).await;
}

#[tokio::test]
async fn throttling_mid_read_is_waited_out_within_the_advertised_budget() {
    let opts = OktaOptions {
        // About 23 requests: the budget runs out in every window however slowly
        // a loaded machine sends them.
        rate_limit: 6,
        window_secs: 2,
        ..OktaOptions::default()
    };
    let world = World::start(opts, false, false).await;
    world.okta.seed(2_000, 10);
    world.okta.set_faults(OktaFaults {
        throttle_request: Some(5),
        ..OktaFaults::default()
    });
    world.run().await.expect("run");
    assert_eq!(world.active(), world.okta.expected(&TYPES));
    let stats = world.okta.stats();
    assert_eq!(
        stats.over_budget, 0,
        "never sent over the budget: {stats:?}"
    );
    assert_eq!(
        stats.throttled, 1,
        "one 429, the scripted one, no storm: {stats:?}"
    );
    assert!(
        stats.budget_spent >= 2,
        "the budget ran out and was waited for: {stats:?}"
    );
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let world = World::start(OktaOptions::default(), false, false).await;
    world.okta.seed(1_000, 5);
    world.run().await.expect("first run");
    world.okta.set_faults(OktaFaults {
        fail_user_pages_after: Some(2),
        ..OktaFaults::default()
    });
    world.gateway.clear_requests();
    let aborted = world.run().await.expect_err("the read fails part-way");
    assert!(
        aborted.error.to_string().contains("500"),
        "{}",
        aborted.error
    );
    assert_eq!(world.writes(), 0, "nothing written, nobody deactivated");
    assert_eq!(world.active().len(), 1_000);
}

#[tokio::test]
async fn a_service_app_signs_its_token_requests_and_the_token_is_reused() {
    let mut world = World::start(OktaOptions::default(), false, false).await;
    world.credential = Credential::ServiceApp;
    world.okta.seed(500, 5);
    world.run().await.expect("run");
    assert_eq!(world.active(), world.okta.expected(&TYPES));
    assert_eq!(
        world.okta.stats().token_requests,
        1,
        "one token for the whole read"
    );
}

#[test]
fn credentials_must_be_given_exactly_one_way() {
    let parse = |okta: &str| {
        let text = format!(
            "[source]\nkind = \"okta\"\nurl = \"https://acme.okta.com\"\n[source.okta]\n{okta}\n[target]\nurl = \"https://hoop.example.com\"\napi_key = \"k\"\n"
        );
        Config::parse(&text, "test", &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let key = fixture("test-rsa-key.pem").display().to_string();
    assert!(parse("api_token = \"t\"").is_ok());
    assert!(parse(&format!("client_id = \"c\"\nprivate_key_file = \"{key}\"")).is_ok());
    for (okta, names) in [
        ("", "source.okta"),
        (
            &format!("api_token = \"t\"\nclient_id = \"c\"\nprivate_key_file = \"{key}\"") as &str,
            "source.okta.client_id",
        ),
        ("client_id = \"c\"", "source.okta.private_key_file"),
        (
            &format!("private_key_file = \"{key}\""),
            "source.okta.client_id",
        ),
        (
            "api_token = \"t\"\ngroup_types = [\"SECRET_GROUP\"]",
            "source.okta.group_types",
        ),
        ("api_token = \"t\"\nbearer = \"x\"", "bearer"),
    ] {
        let err = parse(okta).expect_err(okta);
        assert!(err.contains(names), "{okta:?}: {err}");
        assert!(!err.contains("-----BEGIN"), "no key in errors");
    }
}

/// `check-config --connect`: a token from the service app, then one user.
#[tokio::test]
async fn the_probe_gets_a_token_and_reads_one_user() {
    let mut world = World::start(OktaOptions::default(), false, false).await;
    world.credential = Credential::ServiceApp;
    world.okta.seed(50, 2);
    let config = Config::parse(&world.config_text(), "test", &|_| None).expect("config");
    let source = idsync::source::open(&config.source).expect("source");
    let found = source.probe().await.expect("probe");
    assert!(found.contains("read user 00u0000000"), "{found}");
    let stats = world.okta.stats();
    assert_eq!((stats.token_requests, stats.api_requests), (1, 1));
}
