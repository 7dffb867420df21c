//! `kind = "okta"` end to end: the stateful fake Okta org (behind Prism's
//! validating proxy on Okta's own OpenAPI document, where the test says so)
//! synced into the stateful fake gateway, with full and with incremental reads.

mod support;

use std::path::PathBuf;

use support::fake_okta::{FakeOkta, OktaFaults, OktaOptions, API_TOKEN, CLIENT_ID};
use support::vendor_world::{parse_source_tables, VendorWorld};

const TYPES: [&str; 2] = ["OKTA_GROUP", "APP_GROUP"];

type World = VendorWorld<FakeOkta>;

/// How idsync proves itself to the fake.
#[derive(Clone, Copy)]
enum Credential {
    ApiToken,
    ServiceApp,
}

async fn world(opts: OktaOptions, prism: bool) -> World {
    VendorWorld::start(FakeOkta::start(opts).await, prism).await
}

/// The `[source]` tables reading the world's Okta with `credential`.
fn source(world: &World, incremental: bool, credential: Credential) -> String {
    let credential = match credential {
        Credential::ApiToken => format!("api_token = \"{API_TOKEN}\""),
        Credential::ServiceApp => format!(
            "client_id = \"{CLIENT_ID}\"\nprivate_key_file = \"{}\"",
            fixture("test-rsa-key.pem").display()
        ),
    };
    world.source(incremental, &credential)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
async fn two_thousand_users_sync_exactly_once_and_a_rerun_writes_nothing() {
    let world = world(OktaOptions::default(), true).await;
    let okta = &world.directory;
    let config = source(&world, false, Credential::ApiToken);
    okta.seed(2_000, 20);
    let first = world.run(&config).await.expect("first run");
    assert_eq!(first.counts.created, 2_000);
    assert_eq!(world.active(), okta.expected(&TYPES));
    assert_eq!(world.gateway.users().len(), 2_000, "each user created once");
    let everyone = world
        .active()
        .values()
        .any(|g| g.contains(&"Everyone".to_owned()));
    assert!(!everyone, "BUILT_IN groups are left out unless listed");

    let second = world.assert_rerun_writes_nothing(&config).await;
    assert_eq!(second.counts.unchanged, 2_000);
    world.assert_no_violations();
}

/// Joiners, leavers, a suspended and a deactivated user, a group move and a
/// renamed group: the gateway ends where the directory is, read whole or by changes.
async fn changes_converge(incremental: bool) {
    let world = world(OktaOptions::default(), true).await;
    let okta = &world.directory;
    let config = source(&world, incremental, Credential::ApiToken);
    okta.seed(300, 6);
    world.run(&config).await.expect("first run");
    let before = okta.stats();

    let joiner = okta.add_user("joiner@example.com", "Jo", "Iner");
    okta.set_member("00g0000001", &joiner, true);
    okta.delete_user("00u0000002");
    okta.update_user("00u0000003", |u| u.status = "SUSPENDED".into());
    okta.update_user("00u0000004", |u| u.status = "DEPROVISIONED".into());
    okta.update_user("00u0000005", |u| u.display = Some("Renamed Person".into()));
    // A move between groups: only the groups' memberships change, not the user.
    okta.set_member("00g0000001", "00u0000007", false);
    okta.set_member("00g0000002", "00u0000007", true);
    okta.rename_group("00g0000003", "team-renamed");

    let second = world.run(&config).await.expect("second run");
    assert_eq!(world.active(), okta.expected(&TYPES));
    assert_eq!(second.counts.created, 1);
    assert_eq!(
        second.counts.deactivated, 3,
        "deleted, suspended, deactivated"
    );
    let after = okta.stats();
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
    world.assert_rerun_writes_nothing(&config).await;
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
    let world = world(opts, false).await;
    let okta = &world.directory;
    okta.seed(2_000, 10);
    okta.set_faults(OktaFaults {
        throttle_request: Some(5),
        ..OktaFaults::default()
    });
    world
        .run(&source(&world, false, Credential::ApiToken))
        .await
        .expect("run");
    assert_eq!(world.active(), okta.expected(&TYPES));
    let stats = okta.stats();
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
    let world = world(OktaOptions::default(), false).await;
    let config = source(&world, false, Credential::ApiToken);
    world
        .assert_a_500_part_way_deactivates_nobody(&config, (1_000, 5), 2)
        .await;
}

#[tokio::test]
async fn a_service_app_signs_its_token_requests_and_the_token_is_reused() {
    let world = world(OktaOptions::default(), false).await;
    let okta = &world.directory;
    okta.seed(500, 5);
    world
        .run(&source(&world, false, Credential::ServiceApp))
        .await
        .expect("run");
    assert_eq!(world.active(), okta.expected(&TYPES));
    assert_eq!(
        okta.stats().token_requests,
        1,
        "one token for the whole read"
    );
}

#[test]
fn credentials_must_be_given_exactly_one_way() {
    let parse = |okta: &str| parse_source_tables("okta", "url = \"https://acme.okta.com\"", okta);
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
    let world = world(OktaOptions::default(), false).await;
    let okta = &world.directory;
    okta.seed(50, 2);
    let found = world
        .probe(&source(&world, false, Credential::ServiceApp))
        .await;
    assert!(found.contains("read user 00u0000000"), "{found}");
    let stats = okta.stats();
    assert_eq!((stats.token_requests, stats.api_requests), (1, 1));
}
