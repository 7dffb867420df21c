//! `kind = "entra"` end to end: the stateful fake Microsoft Graph (behind Prism's
//! validating proxy on Graph's own OpenAPI document, where the test says so)
//! synced into the stateful fake gateway, with full and with delta reads.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use support::fake_entra::{
    team_id, EntraFaults, EntraOptions, EntraUser, FakeEntra, CLIENT_ID, CLIENT_SECRET, TENANT,
};
use support::fake_gateway::{FakeGateway, GatewayOptions};
use support::jwt::{TEST_CERTIFICATE, TEST_PRIVATE_KEY};
use support::prism::{vendor_spec, Prism};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Copy)]
enum Credential {
    Secret,
    Certificate,
}

struct World {
    graph: FakeEntra,
    prism: Option<Prism>,
    gateway: FakeGateway,
    dir: TempDir,
    incremental: bool,
    credential: Credential,
}

impl World {
    async fn start(prism: bool, incremental: bool) -> Self {
        let graph = FakeEntra::start(EntraOptions::default()).await;
        let prism = match prism {
            true => {
                let prism = Prism::proxy(&vendor_spec("msgraph"), graph.url()).await;
                graph.set_public_url(prism.url());
                Some(prism)
            }
            false => None,
        };
        Self {
            graph,
            prism,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
            incremental,
            credential: Credential::Secret,
        }
    }

    fn config_text(&self) -> String {
        let credential = match self.credential {
            Credential::Secret => format!("client_secret = \"{CLIENT_SECRET}\""),
            Credential::Certificate => {
                let path = self.dir.path().join("idsync-entra.pem");
                std::fs::write(&path, format!("{TEST_CERTIFICATE}{TEST_PRIVATE_KEY}"))
                    .expect("pem");
                format!("client_certificate_file = \"{}\"", path.display())
            }
        };
        format!(
            r#"
[source]
kind = "entra"
url = "{graph}"
incremental = {incremental}
[source.entra]
tenant_id = "{TENANT}"
client_id = "{CLIENT_ID}"
authority = "{authority}"
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
            graph = self.prism.as_ref().map_or(self.graph.url(), Prism::url),
            // The token endpoint is not in Graph's document: straight to the fake.
            authority = self.graph.url(),
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

fn user(n: u32, mail: Option<&str>, upn: &str) -> EntraUser {
    EntraUser {
        id: format!("aaaaaaaa-0000-4000-8000-{n:012}"),
        display: format!("New {n}"),
        mail: mail.map(str::to_owned),
        upn: upn.to_owned(),
        enabled: true,
    }
}

#[tokio::test]
async fn two_thousand_users_in_nested_groups_sync_exactly_once_and_a_rerun_writes_nothing() {
    let world = World::start(true, false).await;
    world.graph.seed(2_000, 20);
    let first = world.run().await.expect("first run");
    assert_eq!(first.counts.created, 2_000);
    let held = world.active();
    assert_eq!(held, world.graph.expected());
    let first_user = &held["u0001@contoso.com"];
    assert_eq!(
        first_user,
        &["company", "engineering", "team-001"],
        "nested three deep"
    );

    world.gateway.clear_requests();
    let second = world.run().await.expect("rerun");
    assert_eq!((second.counts.unchanged, world.writes()), (2_000, 0));
    world.assert_no_violations();
}

/// Joiners (one with only a principal name, one guest), a leaver, a disabled user,
/// a move between groups, a renamed and a re-nested group.
async fn changes_converge(incremental: bool) {
    let world = World::start(true, incremental).await;
    world.graph.seed(300, 6);
    world.run().await.expect("first run");
    let before = world.graph.stats();

    world.graph.add_user(user(1, None, "joiner@contoso.com"));
    world
        .graph
        .set_member(&team_id(3), &user(1, None, "").id, true, true);
    world.graph.add_user(user(
        2,
        None,
        "guest_example.com#EXT#@contoso.onmicrosoft.com",
    ));
    world
        .graph
        .delete_user("00000000-0000-4000-8000-000000000002");
    world
        .graph
        .update_user("00000000-0000-4000-8000-000000000003", |u| {
            u.enabled = false
        });
    world
        .graph
        .update_user("00000000-0000-4000-8000-000000000004", |u| {
            u.display = "Renamed".into()
        });
    world.graph.set_member(
        &team_id(5),
        "00000000-0000-4000-8000-000000000005",
        true,
        false,
    );
    world.graph.set_member(
        &team_id(4),
        "00000000-0000-4000-8000-000000000005",
        true,
        true,
    );
    world.graph.rename_group(&team_id(1), "team-one");
    world.graph.add_group("g-ops", "operations");
    world.graph.set_member("g-ops", &team_id(4), false, true);

    let second = world.run().await.expect("second run");
    assert_eq!(world.active(), world.graph.expected());
    assert_eq!(
        second.counts.created, 1,
        "the joiner; the guest has no address"
    );
    assert_eq!(second.counts.deactivated, 2, "deleted and disabled");
    let after = world.graph.stats();
    let full_pages = after.full_user_pages - before.full_user_pages;
    assert_eq!(full_pages, if incremental { 0 } else { 1 });
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
async fn changes_converge_with_delta_reads() {
    changes_converge(true).await;
}

#[tokio::test]
async fn a_delta_link_graph_no_longer_knows_means_a_full_read() {
    let world = World::start(true, true).await;
    world.graph.seed(200, 4);
    world.run().await.expect("first run");
    world
        .graph
        .delete_user("00000000-0000-4000-8000-000000000007");
    world.graph.forget_delta_links();
    let before = world.graph.stats();
    let second = world.run().await.expect("second run");
    let after = world.graph.stats();
    assert_eq!(after.refused_delta_links - before.refused_delta_links, 1);
    assert_eq!(
        after.full_user_pages - before.full_user_pages,
        1,
        "read whole"
    );
    assert_eq!(second.counts.deactivated, 1);
    assert_eq!(world.active(), world.graph.expected());
    world.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_waited_out_as_retry_after_says() {
    let world = World::start(false, false).await;
    world.graph.seed(2_000, 10);
    let throttle = [(3, (429, 1)), (8, (503, 1)), (12, (504, 1))].into();
    world.graph.set_faults(EntraFaults {
        throttle,
        ..EntraFaults::default()
    });
    world.run().await.expect("run");
    assert_eq!(world.active(), world.graph.expected());
    let stats = world.graph.stats();
    assert_eq!(stats.throttled, 3, "{stats:?}");
    assert_eq!(
        stats.early_retries, 0,
        "no request before Retry-After: {stats:?}"
    );
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let world = World::start(false, false).await;
    world.graph.seed(1_500, 5);
    world.run().await.expect("first run");
    world.graph.set_faults(EntraFaults {
        fail_user_pages_after: Some(1),
        ..EntraFaults::default()
    });
    world.gateway.clear_requests();
    let aborted = world.run().await.expect_err("the read fails part-way");
    assert!(
        aborted.error.to_string().contains("500"),
        "{}",
        aborted.error
    );
    assert_eq!(world.writes(), 0, "nothing written, nobody deactivated");
    assert_eq!(world.active().len(), 1_500);
}

#[tokio::test]
async fn a_certificate_credential_signs_with_x5t_and_a_revoked_token_is_refreshed_once() {
    let mut world = World::start(false, false).await;
    world.credential = Credential::Certificate;
    world.graph.seed(300, 3);
    world.graph.set_faults(EntraFaults {
        revoke_tokens_at: Some(4),
        ..EntraFaults::default()
    });
    world.run().await.expect("run");
    assert_eq!(world.active(), world.graph.expected());
    assert_eq!(
        world.graph.stats().token_requests,
        2,
        "the first token, then one fresh one"
    );
}

#[test]
fn credentials_must_be_given_exactly_one_way() {
    let parse = |entra: &str| {
        let text = format!(
            "[source]\nkind = \"entra\"\n[source.entra]\n{entra}\n[target]\nurl = \"https://hoop.example.com\"\napi_key = \"k\"\n"
        );
        Config::parse(&text, "test", &|_| None)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let ids = "tenant_id = \"t\"\nclient_id = \"c\"";
    let cert = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-rsa-cert.pem");
    assert!(parse(&format!("{ids}\nclient_secret = \"s\"")).is_ok());
    for (entra, names) in [
        (ids.to_owned(), "source.entra"),
        (
            "client_id = \"c\"\nclient_secret = \"s\"".to_owned(),
            "source.entra.tenant_id",
        ),
        (
            "tenant_id = \"t\"\nclient_secret = \"s\"".to_owned(),
            "source.entra.client_id",
        ),
        (
            format!(
                "{ids}\nclient_secret = \"s\"\nclient_certificate_file = \"{}\"",
                cert.display()
            ),
            "source.entra.client_certificate_file",
        ),
        (
            format!("{ids}\nclient_certificate_file = \"{}\"", cert.display()),
            "source.entra.client_certificate_file",
        ),
    ] {
        let err = parse(&entra).expect_err(&entra);
        assert!(err.contains(names), "{entra:?}: {err}");
    }
}

/// `check-config --connect`: a token, then one user.
#[tokio::test]
async fn the_probe_gets_a_token_and_reads_one_user() {
    let world = World::start(true, false).await;
    world.graph.seed(50, 2);
    let config = Config::parse(&world.config_text(), "test", &|_| None).expect("config");
    let source = idsync::source::open(&config.source).expect("source");
    let found = source.probe().await.expect("probe");
    assert!(
        found.contains("read user 00000000-0000-4000-8000-000000000000"),
        "{found}"
    );
    let stats = world.graph.stats();
    assert_eq!((stats.token_requests, stats.graph_requests), (1, 1));
    world.assert_no_violations();
}
