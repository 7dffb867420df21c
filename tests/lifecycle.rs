//! The whole user lifecycle against the stateful fake gateway: groups policy,
//! adoption of existing users, updates, safe deprovisioning.

mod support;

use std::collections::BTreeMap;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use serde_json::{json, Value};
use support::directory::Directory;
use support::fake_gateway::{FakeGateway, GatewayOptions, GatewayUser};
use support::fake_idp::{FakeIdp, IdpFaults, IdpOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const LIFECYCLE: &str = r#"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 5
[groups]
rename = { "IdP Admins" = "admin" }
"#;

struct World {
    idp: FakeIdp,
    gateway: FakeGateway,
    cache: TempDir,
    sections: String,
}

impl World {
    async fn start(directory: Directory, sections: &str) -> Self {
        Self {
            idp: FakeIdp::start(IdpOptions::default(), directory).await,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            cache: tempfile::tempdir().expect("tempdir"),
            sections: sections.to_owned(),
        }
    }

    fn config(&self) -> Config {
        let target = "rate_limit_per_second = 1000\nburst = 50";
        let text = support::idsync_toml(
            &self.idp,
            &self.gateway,
            self.cache.path(),
            "",
            target,
            &self.sections,
        );
        Config::parse(&text, "test", &|_| None).expect("config")
    }

    async fn run_mode(&self, mode: RunMode) -> Result<Summary, Aborted> {
        let syncer = Syncer::new(&self.config(), mode).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    async fn run(&self) -> Summary {
        self.run_mode(RunMode::default()).await.expect("run")
    }

    /// Writes (POST/PUT/DELETE) the gateway received since the last clear.
    fn writes(&self) -> usize {
        self.gateway
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .count()
    }

    /// e-mail → (name, sorted groups, status), as the gateway holds it.
    fn held(&self) -> BTreeMap<String, (String, Vec<String>, String)> {
        let mut held = BTreeMap::new();
        for user in self.gateway.users() {
            let mut groups = user.groups.clone();
            groups.sort();
            let previous = held.insert(
                user.email.clone(),
                (user.name.clone(), groups, user.status.clone()),
            );
            assert!(previous.is_none(), "duplicate user {}", user.email);
        }
        held
    }
}

fn person(id: &str, email: &str, name: &str) -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "id": id,
        "userName": email,
        "displayName": name,
        "emails": [{"value": email, "type": "work", "primary": true}],
        "active": true
    })
}

fn group(id: &str, name: &str, members: &[&str]) -> Value {
    let members: Vec<Value> = members.iter().map(|m| json!({"value": m})).collect();
    json!({"id": id, "displayName": name, "members": members})
}

fn expect(name: &str, groups: &[&str], status: &str) -> (String, Vec<String>, String) {
    (
        name.into(),
        groups.iter().map(|g| g.to_string()).collect(),
        status.into(),
    )
}

fn first_directory() -> Directory {
    Directory {
        users: vec![
            person("u1", "Ann@Example.com", "Ann Lee"),
            person("u2", "bob@example.com", "Bob Stone"),
            person("u3", "cy@example.com", "Cy"),
            person("u4", "dee@example.com", "Dee Park"),
        ],
        groups: vec![
            group("g1", "sre", &["u1", "u2"]),
            group("g2", "dba", &["u3"]),
            group("g3", "IdP Admins", &["u1", "u4"]),
        ],
    }
}

#[tokio::test]
async fn a_changing_directory_converges_and_never_grants_admin() {
    let world = World::start(first_directory(), LIFECYCLE).await;
    let first = world.run().await;
    assert_eq!(first.counts.created, 4);
    let expected = BTreeMap::from([
        (
            "ann@example.com".to_owned(),
            expect("Ann Lee", &["sre"], "invited"),
        ),
        (
            "bob@example.com".to_owned(),
            expect("Bob Stone", &["sre"], "invited"),
        ),
        (
            "cy@example.com".to_owned(),
            expect("Cy", &["dba"], "invited"),
        ),
        (
            "dee@example.com".to_owned(),
            expect("Dee Park", &[], "invited"),
        ),
    ]);
    assert_eq!(
        world.held(),
        expected,
        "the IdP group mapped to admin was dropped"
    );

    // Ann logs in (her subject becomes the IdP's), then the directory changes: Bob
    // leaves, Cy is renamed, Ann moves to dba, Eve joins, Dee is switched off.
    world
        .gateway
        .simulate_login("ann@example.com", "idp-sub-ann");
    let mut changed = first_directory();
    changed.users.remove(1);
    changed.users[1]["displayName"] = "Cy Young".into();
    changed.users[2]["active"] = false.into();
    changed
        .users
        .push(person("u5", "eve@example.com", "Eve Hart"));
    changed.groups = vec![
        group("g1", "sre", &["u5"]),
        group("g2", "dba", &["u1", "u3"]),
        group("g3", "IdP Admins", &["u1", "u4", "u5"]),
    ];
    world.idp.set_directory(changed.clone());
    let second = world.run().await;
    assert_eq!(
        (
            second.counts.created,
            second.counts.updated,
            second.counts.deactivated
        ),
        (1, 2, 2),
        "{second:?}"
    );
    let expected = BTreeMap::from([
        (
            "ann@example.com".to_owned(),
            expect("Ann Lee", &["dba"], "active"),
        ),
        (
            "bob@example.com".to_owned(),
            expect("Bob Stone", &["sre"], "inactive"),
        ),
        (
            "cy@example.com".to_owned(),
            expect("Cy Young", &["dba"], "invited"),
        ),
        (
            "dee@example.com".to_owned(),
            expect("Dee Park", &[], "inactive"),
        ),
        (
            "eve@example.com".to_owned(),
            expect("Eve Hart", &["sre"], "invited"),
        ),
    ]);
    assert_eq!(world.held(), expected);
    assert!(
        !world.gateway.groups().contains(&"admin".to_owned()),
        "admin was never granted"
    );
    assert_eq!(
        world.gateway.count("DELETE", "/api"),
        0,
        "deprovisioning never DELETEs"
    );

    // A steady directory costs zero writes.
    world.gateway.clear_requests();
    let third = world.run().await;
    assert_eq!(world.writes(), 0);
    assert_eq!(world.gateway.requests().len(), 0, "not even reads");
    assert_eq!(third.counts.unchanged, 3);

    // Bob comes back: reactivated, as invited since he never logged in.
    let mut returning = changed;
    returning
        .users
        .push(person("u2", "bob@example.com", "Bob Stone"));
    returning.groups[0] = group("g1", "sre", &["u5", "u2"]);
    world.idp.set_directory(returning);
    let fourth = world.run().await;
    assert_eq!(fourth.counts.reactivated, 1);
    assert_eq!(
        world.held()["bob@example.com"],
        expect("Bob Stone", &["sre"], "invited")
    );
}

#[tokio::test]
async fn admin_is_synced_only_when_allowed() {
    let sections = format!("{LIFECYCLE}allow_admin_group = true\n");
    let world = World::start(first_directory(), &sections).await;
    world.run().await;
    assert_eq!(world.held()["dee@example.com"].1, ["admin"]);
}

#[tokio::test]
async fn a_failed_or_truncated_read_deactivates_nobody() {
    let world = World::start(first_directory(), LIFECYCLE).await;
    world.run().await;
    world.gateway.clear_requests();
    for faults in [
        IdpFaults {
            fail_users_at_start_index: Some(3),
            ..IdpFaults::default()
        },
        IdpFaults {
            truncate_users_at: Some(2),
            ..IdpFaults::default()
        },
        IdpFaults {
            fail_groups_at_start_index: Some(3),
            ..IdpFaults::default()
        },
    ] {
        world.idp.set_faults(faults);
        // A page size of 2 makes the fault hit mid-read.
        let mut config = world.config();
        let idsync::config::SourceKind::Scim(scim) = &mut config.source.kind else {
            panic!("a SCIM source")
        };
        scim.page_size = std::num::NonZeroU32::new(2).expect("2");
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        let aborted = syncer
            .run_once(&CancellationToken::new())
            .await
            .expect_err("abort");
        assert!(aborted.summary.counts.deactivated == 0, "{}", aborted.error);
    }
    assert_eq!(world.writes(), 0);
    assert!(world
        .held()
        .values()
        .all(|(_, _, status)| status == "invited"));
}

#[tokio::test]
async fn the_guard_stops_a_mass_deactivation_until_allowed() {
    let users: Vec<Value> = (0..20)
        .map(|i| {
            person(
                &format!("u{i}"),
                &format!("user{i}@example.com"),
                &format!("User {i}"),
            )
        })
        .collect();
    let full = Directory {
        users: users.clone(),
        groups: Vec::new(),
    };
    let sections = "[sync]\ndeprovision = \"deactivate\"\nmax_deactivations = \"10%\"\n";
    let world = World::start(full, sections).await;
    world.run().await;

    world.idp.set_directory(Directory {
        users: users[..12].to_vec(),
        groups: Vec::new(),
    });
    world.gateway.clear_requests();
    let held_back = world.run().await;
    assert_eq!(held_back.counts.deactivations_blocked, 8);
    assert_eq!(held_back.counts.deactivated, 0);
    assert!(held_back.has_failures(), "the run reports it (exit 1)");
    assert!(held_back
        .deactivation_guard
        .as_deref()
        .unwrap_or("")
        .contains("--allow-mass-deactivation"));
    assert_eq!(world.writes(), 0);

    let forced = world
        .run_mode(RunMode {
            allow_mass_deactivation: true,
            ..RunMode::default()
        })
        .await
        .expect("run");
    assert_eq!(forced.counts.deactivated, 8);
    let inactive = world
        .held()
        .values()
        .filter(|(_, _, s)| s == "inactive")
        .count();
    assert_eq!(inactive, 8);
}

#[tokio::test]
async fn a_populated_gateway_is_adopted_without_duplicates_or_409s() {
    let world = World::start(first_directory(), LIFECYCLE).await;
    let mut seeded = GatewayUser::invited("bob@example.com");
    seeded.name = "Robert".into();
    seeded.groups = vec!["legacy".into()];
    seeded.slack_id = "U0BOB".into();
    world.gateway.seed_user(seeded);
    let mut cy = GatewayUser::invited("cy@example.com");
    cy.name = "Cy".into();
    cy.groups = vec!["dba".into()];
    world.gateway.seed_user(cy);

    // The dry run shows every kind of action on an empty cache, writing nothing.
    let dry = world
        .run_mode(RunMode {
            dry_run: true,
            ..RunMode::default()
        })
        .await
        .expect("dry run");
    let kinds: BTreeMap<&str, usize> = dry.actions.iter().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.action).or_default() += 1;
        m
    });
    assert_eq!(
        kinds,
        BTreeMap::from([("adopt", 1), ("create", 2), ("update", 1)]),
        "{:?}",
        dry.actions
    );
    assert_eq!(world.writes(), 0);

    let summary = world.run().await;
    assert_eq!(
        (
            summary.counts.created,
            summary.counts.existing,
            summary.counts.updated
        ),
        (2, 1, 1)
    );
    assert_eq!(
        world
            .gateway
            .requests()
            .iter()
            .filter(|r| r.status == 409)
            .count(),
        0,
        "no 409 storm"
    );
    assert_eq!(world.gateway.users().len(), 4, "no duplicates");
    let bob = world.gateway.user_by_email("bob@example.com").expect("bob");
    assert_eq!(bob.name, "Bob Stone");
    assert_eq!(bob.groups, ["sre"]);
    assert_eq!(bob.slack_id, "U0BOB", "fields idsync does not own are kept");
}

/// Requests about one user's e-mail: (method, status).
fn requests_about(world: &World, email: &str) -> Vec<(String, u16)> {
    world
        .gateway
        .requests()
        .into_iter()
        .filter(|r| {
            r.path.ends_with(email)
                || r.body
                    .as_ref()
                    .is_some_and(|b| b["email"].as_str() == Some(email))
        })
        .map(|r| (r.method, r.status))
        .collect()
}

#[tokio::test]
async fn an_admin_made_in_the_gateway_is_never_adopted_updated_or_deactivated() {
    let world = World::start(first_directory(), LIFECYCLE).await;
    let mut admin = GatewayUser::invited("bob@example.com");
    admin.name = "Robert".into();
    admin.groups = vec!["admin".into(), "legacy".into()];
    admin.status = "active".into();
    world.gateway.seed_user(admin);
    let bob = world.held()["bob@example.com"].clone();
    let is_admin_report = |r: &idsync::sync::Report| {
        r.user == "bob@example.com" && r.reason.contains("admin group \"admin\"")
    };

    // A first run reads the gateway's users: Bob is reported, not adopted.
    let first = world.run().await;
    assert_eq!((first.counts.created, first.counts.existing), (3, 0));
    assert!(first.skipped.iter().any(is_admin_report), "{first:?}");
    assert_eq!(world.held()["bob@example.com"], bob);

    // The next run knows nothing of Bob: its create meets a 409, and the user read
    // then shows the admin group. Recorded as rejected, not adopted.
    world.gateway.clear_requests();
    let second = world.run().await;
    assert_eq!(second.counts.existing, 0, "{second:?}");
    assert!(second.failures.iter().any(is_admin_report), "{second:?}");
    assert_eq!(
        requests_about(&world, "bob@example.com"),
        [("POST".to_owned(), 409), ("GET".to_owned(), 200)]
    );

    // From then on he is reported as skipped, with no request about him.
    world.gateway.clear_requests();
    let third = world.run().await;
    assert!(third.skipped.iter().any(is_admin_report), "{third:?}");
    assert!(third.failures.is_empty(), "{third:?}");
    assert_eq!(requests_about(&world, "bob@example.com"), []);

    // His entry changes in the directory: like any rejected user he is sent once
    // more (he may have left the admin group), met as an admin again, not written.
    let mut renamed = first_directory();
    renamed.users[1]["displayName"] = "Bobby Stone".into();
    world.idp.set_directory(renamed);
    world.gateway.clear_requests();
    let fourth = world.run().await;
    assert!(fourth.failures.iter().any(is_admin_report), "{fourth:?}");
    assert_eq!(
        requests_about(&world, "bob@example.com"),
        [("POST".to_owned(), 409), ("GET".to_owned(), 200)]
    );

    // He leaves the directory: never managed, so never deactivated.
    let mut without_bob = first_directory();
    without_bob.users.remove(1);
    world.idp.set_directory(without_bob);
    let leaving = world.run().await;
    assert_eq!(leaving.counts.deactivated, 0, "{leaving:?}");
    assert_eq!(world.held()["bob@example.com"], bob, "untouched throughout");
}

#[tokio::test]
async fn a_managed_user_made_admin_in_the_gateway_is_neither_updated_nor_deactivated() {
    let world = World::start(first_directory(), LIFECYCLE).await;
    assert_eq!(world.run().await.counts.created, 4);
    world.gateway.add_to_group("cy@example.com", "admin");
    let cy = world.held()["cy@example.com"].clone();

    // Cy changes in the directory: the update reads her, sees admin, and stops.
    let mut renamed = first_directory();
    renamed.users[2]["displayName"] = "Cy Young".into();
    world.idp.set_directory(renamed);
    let update = world.run().await;
    assert_eq!(update.counts.updated, 0, "{update:?}");
    assert!(
        update
            .failures
            .iter()
            .any(|r| r.user == "cy@example.com" && r.reason.contains("not updated")),
        "{update:?}"
    );
    assert_eq!(world.held()["cy@example.com"], cy);

    // Cy leaves: the deactivation is refused the same way.
    let mut without_cy = first_directory();
    without_cy.users.remove(2);
    world.idp.set_directory(without_cy);
    world.gateway.clear_requests();
    let leaving = world.run().await;
    assert_eq!(
        (
            leaving.counts.deactivated,
            leaving.counts.deactivation_failed
        ),
        (0, 1),
        "{leaving:?}"
    );
    assert_eq!(world.gateway.count("PUT", "/api"), 0);
    assert_eq!(world.held()["cy@example.com"], cy, "still an active admin");
}

#[tokio::test]
async fn slack_id_comes_from_a_mapped_extension_attribute() {
    let mut directory = first_directory();
    let urn = "urn:example:params:scim:schemas:extension:slack:2.0:User";
    directory.users[0][urn] = json!({"slackId": "U053ELZHB53"});
    directory.users[1][urn] = json!({"slackId": "U".repeat(51)});
    let sections = format!("{LIFECYCLE}[source.attributes]\nslack_id = \"{urn}:slackId\"\n");
    // `[source.attributes]` must come after the other [source] keys; it is a table of its own.
    let world = World::start(directory, &sections).await;
    let summary = world.run().await;
    assert_eq!(
        world
            .gateway
            .user_by_email("ann@example.com")
            .expect("ann")
            .slack_id,
        "U053ELZHB53"
    );
    assert_eq!(
        summary.counts.skipped_invalid, 1,
        "an over-long slack_id is reported"
    );
    assert!(summary.skipped[0].reason.contains("slack_id"));
}
