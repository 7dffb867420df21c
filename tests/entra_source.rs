//! `kind = "entra"` end to end: the stateful fake Microsoft Graph (behind Prism's
//! validating proxy on Graph's own OpenAPI document, where the test says so)
//! synced into the stateful fake gateway, with full and with delta reads.

mod support;

use std::path::PathBuf;

use support::fake_entra::{
    team_id, EntraFaults, EntraOptions, EntraUser, FakeEntra, CLIENT_ID, CLIENT_SECRET, TENANT,
};
use support::jwt::{TEST_CERTIFICATE, TEST_PRIVATE_KEY};
use support::vendor_world::{parse_source_tables, VendorWorld};

type World = VendorWorld<FakeEntra>;

#[derive(Clone, Copy)]
enum Credential {
    Secret,
    Certificate,
}

async fn world(prism: bool) -> World {
    VendorWorld::start(FakeEntra::start(EntraOptions::default()).await, prism).await
}

/// The `[source]` tables reading the world's Graph with `credential`.
fn source(world: &World, incremental: bool, credential: Credential) -> String {
    let credential = match credential {
        Credential::Secret => format!("client_secret = \"{CLIENT_SECRET}\""),
        Credential::Certificate => {
            let path = world.path("idsync-entra.pem");
            std::fs::write(&path, format!("{TEST_CERTIFICATE}{TEST_PRIVATE_KEY}")).expect("pem");
            format!("client_certificate_file = \"{}\"", path.display())
        }
    };
    // The token endpoint is not in Graph's document: straight to the fake.
    let table = format!(
        "tenant_id = \"{TENANT}\"\nclient_id = \"{CLIENT_ID}\"\nauthority = \"{authority}\"\n{credential}",
        authority = world.directory.url(),
    );
    world.source(incremental, &table)
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
    let world = world(true).await;
    let graph = &world.directory;
    let config = source(&world, false, Credential::Secret);
    graph.seed(2_000, 20);
    let first = world.run(&config).await.expect("first run");
    assert_eq!(first.counts.created, 2_000);
    let held = world.active();
    assert_eq!(held, graph.expected());
    let first_user = &held["u0001@contoso.com"];
    assert_eq!(
        first_user,
        &["company", "engineering", "team-001"],
        "nested three deep"
    );

    let second = world.assert_rerun_writes_nothing(&config).await;
    assert_eq!(second.counts.unchanged, 2_000);
    world.assert_no_violations();
}

/// Joiners (one with only a principal name, one guest), a leaver, a disabled user,
/// a move between groups, a renamed and a re-nested group.
async fn changes_converge(incremental: bool) {
    let world = world(true).await;
    let graph = &world.directory;
    let config = source(&world, incremental, Credential::Secret);
    graph.seed(300, 6);
    world.run(&config).await.expect("first run");
    let before = graph.stats();

    graph.add_user(user(1, None, "joiner@contoso.com"));
    graph.set_member(&team_id(3), &user(1, None, "").id, true, true);
    graph.add_user(user(
        2,
        None,
        "guest_example.com#EXT#@contoso.onmicrosoft.com",
    ));
    graph.delete_user("00000000-0000-4000-8000-000000000002");
    graph.update_user("00000000-0000-4000-8000-000000000003", |u| {
        u.enabled = false
    });
    graph.update_user("00000000-0000-4000-8000-000000000004", |u| {
        u.display = "Renamed".into()
    });
    graph.set_member(
        &team_id(5),
        "00000000-0000-4000-8000-000000000005",
        true,
        false,
    );
    graph.set_member(
        &team_id(4),
        "00000000-0000-4000-8000-000000000005",
        true,
        true,
    );
    graph.rename_group(&team_id(1), "team-one");
    graph.add_group("g-ops", "operations");
    graph.set_member("g-ops", &team_id(4), false, true);

    let second = world.run(&config).await.expect("second run");
    assert_eq!(world.active(), graph.expected());
    assert_eq!(
        second.counts.created, 1,
        "the joiner; the guest has no address"
    );
    assert_eq!(second.counts.deactivated, 2, "deleted and disabled");
    let after = graph.stats();
    let full_pages = after.full_user_pages - before.full_user_pages;
    assert_eq!(full_pages, if incremental { 0 } else { 1 });
    world.assert_rerun_writes_nothing(&config).await;
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
    let world = world(true).await;
    let graph = &world.directory;
    let config = source(&world, true, Credential::Secret);
    graph.seed(200, 4);
    world.run(&config).await.expect("first run");
    graph.delete_user("00000000-0000-4000-8000-000000000007");
    graph.forget_delta_links();
    let before = graph.stats();
    let second = world.run(&config).await.expect("second run");
    let after = graph.stats();
    assert_eq!(after.refused_delta_links - before.refused_delta_links, 1);
    assert_eq!(
        after.full_user_pages - before.full_user_pages,
        1,
        "read whole"
    );
    assert_eq!(second.counts.deactivated, 1);
    assert_eq!(world.active(), graph.expected());
    world.assert_no_violations();
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_waited_out_as_retry_after_says() {
    let world = world(false).await;
    let graph = &world.directory;
    graph.seed(2_000, 10);
    let throttle = [(3, (429, 1)), (8, (503, 1)), (12, (504, 1))].into();
    graph.set_faults(EntraFaults {
        throttle,
        ..EntraFaults::default()
    });
    world
        .run(&source(&world, false, Credential::Secret))
        .await
        .expect("run");
    assert_eq!(world.active(), graph.expected());
    let stats = graph.stats();
    assert_eq!(stats.throttled, 3, "{stats:?}");
    assert_eq!(
        stats.early_retries, 0,
        "no request before Retry-After: {stats:?}"
    );
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let world = world(false).await;
    let config = source(&world, false, Credential::Secret);
    world
        .assert_a_500_part_way_deactivates_nobody(&config, (1_500, 5), 1)
        .await;
}

#[tokio::test]
async fn a_certificate_credential_signs_with_x5t_and_a_revoked_token_is_refreshed_once() {
    let world = world(false).await;
    let graph = &world.directory;
    graph.seed(300, 3);
    graph.set_faults(EntraFaults {
        revoke_tokens_at: Some(4),
        ..EntraFaults::default()
    });
    world
        .run(&source(&world, false, Credential::Certificate))
        .await
        .expect("run");
    assert_eq!(world.active(), graph.expected());
    assert_eq!(
        graph.stats().token_requests,
        2,
        "the first token, then one fresh one"
    );
}

#[test]
fn credentials_must_be_given_exactly_one_way() {
    let parse = |entra: &str| parse_source_tables("entra", "", entra);
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
    let world = world(true).await;
    let graph = &world.directory;
    graph.seed(50, 2);
    let found = world
        .probe(&source(&world, false, Credential::Secret))
        .await;
    assert!(
        found.contains("read user 00000000-0000-4000-8000-000000000000"),
        "{found}"
    );
    let stats = graph.stats();
    assert_eq!((stats.token_requests, stats.graph_requests), (1, 1));
    world.assert_no_violations();
}
