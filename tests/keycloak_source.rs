//! `kind = "keycloak"` end to end: a realm of the stateful fake Keycloak synced
//! into the fake gateway — nested groups in either tree style, changes that
//! converge, throttling survived, a cut-off read that deactivates nobody — and
//! `check-config --connect` through the binary.

mod support;

use std::process::Command;

use support::fake_keycloak::{Cut, FakeKeycloak, KeycloakFaults, KeycloakOptions, TreeStyle};
use support::org::{Org, OrgGroup};
use support::org_world::OrgWorld;

fn source(keycloak: &FakeKeycloak, extra: &str) -> String {
    let opts = keycloak.options();
    format!(
        r#"[source]
kind = "keycloak"
url = "{url}"
page_size = 100
[source.keycloak]
realm = "{realm}"
client_id = "{client_id}"
client_secret = "{secret}"
{extra}
"#,
        url = keycloak.url(),
        realm = opts.realm,
        client_id = opts.client_id,
        secret = opts.client_secret,
    )
}

fn by_name(_: &Org, group: &OrgGroup) -> String {
    group.name.clone()
}

fn by_path(org: &Org, group: &OrgGroup) -> String {
    org.path(group)
}

async fn keycloak(tree: TreeStyle, org: Org) -> FakeKeycloak {
    let opts = KeycloakOptions {
        tree,
        ..KeycloakOptions::default()
    };
    FakeKeycloak::start(opts, org).await
}

#[tokio::test]
async fn two_thousand_users_in_nested_groups_sync_once_in_either_tree_style() {
    for tree in [TreeStyle::Paged, TreeStyle::Nested] {
        let org = Org::generate(2_000, 40, 7);
        assert!(
            org.groups.iter().any(|g| g.parent.is_some()),
            "nested groups"
        );
        let keycloak = keycloak(tree, org.clone()).await;
        let world = OrgWorld::start().await;
        let config = source(&keycloak, "inherit_parent_groups = true");
        let first = world.run(&config).await.expect("first run");
        assert_eq!(first.counts.created, 2_000, "{tree:?}");
        assert_eq!(world.writes(), 2_000, "{tree:?}: each user written once");
        world.assert_holds(&org, &org.expected_groups(true, by_name));
        let children = keycloak
            .requests()
            .iter()
            .filter(|r| r.contains("/children"))
            .count();
        match tree {
            TreeStyle::Paged => assert!(children > 0, "subgroups are paged from Keycloak 23"),
            TreeStyle::Nested => assert_eq!(children, 0, "the tree came whole"),
        }

        let again = world.run(&config).await.expect("second run");
        assert_eq!(
            (again.counts.unchanged, world.writes()),
            (2_000, 2_000),
            "{tree:?}: the rerun writes nothing"
        );
    }
}

#[tokio::test]
async fn without_inheritance_a_subgroup_member_has_only_its_own_groups_by_path() {
    let org = Org::generate(300, 12, 3);
    let keycloak = keycloak(TreeStyle::Paged, org.clone()).await;
    let world = OrgWorld::start().await;
    world
        .run(&source(&keycloak, "group_name = \"path\""))
        .await
        .expect("run");
    let expected = org.expected_groups(false, by_path);
    world.assert_holds(&org, &expected);
    assert!(
        expected
            .values()
            .flatten()
            .any(|path| path.matches('/').count() > 1),
        "some subgroup paths"
    );
}

#[tokio::test]
async fn joiners_leavers_a_disabled_user_and_group_moves_converge() {
    let mut org = Org::generate(2_000, 40, 11);
    let keycloak = keycloak(TreeStyle::Paged, org.clone()).await;
    let world = OrgWorld::start().await;
    let config = source(&keycloak, "inherit_parent_groups = true");
    world.run(&config).await.expect("first run");

    let changes = org.change();
    keycloak.set_org(org.clone());

    let second = world.run(&config).await.expect("second run");
    assert_eq!((second.counts.created, second.counts.deactivated), (1, 2));
    world.assert_holds(&org, &org.expected_groups(true, by_name));
    let held = world.held();
    assert_eq!(held[&changes.joiner].1, "invited");
    assert_eq!(held[&changes.leaver].1, "inactive");
    assert_eq!(held[&changes.disabled].1, "inactive");
    let writes = world.writes();
    world.run(&config).await.expect("third run");
    assert_eq!(world.writes(), writes, "converged: nothing more to write");
}

#[tokio::test]
async fn throttling_in_the_middle_of_the_read_is_waited_out() {
    let org = Org::generate(2_000, 40, 5);
    let keycloak = keycloak(TreeStyle::Paged, org.clone()).await;
    keycloak.set_faults(KeycloakFaults {
        throttle_from_request: Some(30),
        throttle_times: 2,
        ..KeycloakFaults::default()
    });
    let world = OrgWorld::start().await;
    let summary = world
        .run(&source(&keycloak, "inherit_parent_groups = true"))
        .await
        .expect("the read survives two 429s");
    assert_eq!(summary.counts.created, 2_000);
    assert_eq!(keycloak.throttled(), 2);
    world.assert_holds(&org, &org.expected_groups(true, by_name));
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let mut org = Org::generate(2_000, 40, 9);
    let keycloak = keycloak(TreeStyle::Paged, org.clone()).await;
    let world = OrgWorld::start().await;
    let config = source(&keycloak, "");
    world.run(&config).await.expect("first run");
    let leaver = org.users[0].email.clone();
    org.leave(&leaver);
    keycloak.set_org(org);
    for cut in [Cut::Failing, Cut::Truncated] {
        keycloak.set_faults(KeycloakFaults {
            cut_users_from: Some((1_000, cut)),
            ..KeycloakFaults::default()
        });
        world
            .assert_cut_off_run_writes_nothing(&config, &format!("{cut:?}"))
            .await;
    }
}

#[tokio::test]
async fn check_config_connect_gets_a_token_and_reads_one_user_without_showing_the_secret() {
    let org = Org::generate(3, 2, 1);
    let keycloak = keycloak(TreeStyle::Paged, org.clone()).await;
    let world = OrgWorld::start().await;
    let path = world.path("idsync.toml");
    std::fs::write(&path, world.config_text(&source(&keycloak, ""))).expect("config");
    let binary = env!("CARGO_BIN_EXE_idsync");
    let keycloak_url = keycloak.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args([
                "--config",
                path.to_str().expect("path"),
                "check-config",
                "--connect",
            ])
            .env("RUST_LOG", "debug")
            .output()
            .expect("idsync runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "token accepted; 3 users in {keycloak_url}/admin/realms/acme; read user"
        )),
        "{stdout}"
    );
    assert_eq!(keycloak.token_requests(), 1);
    let secret = &keycloak.options().client_secret;
    assert!(
        !stdout.contains(secret.as_str()) && !stderr.contains(secret.as_str()),
        "the secret never shows"
    );
    assert!(!stderr.contains("kc-at-"), "nor the token");
}
