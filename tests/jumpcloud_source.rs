//! `kind = "jumpcloud"` end to end: the stateful fake JumpCloud synced into the
//! fake gateway, in-process and through the binary.

mod support;

use serde_json::json;
use support::fake_jumpcloud::{
    generate, object_id, system_user, FakeJumpCloud, JumpCloudDirectory, JumpCloudFaults,
};
use support::sync_world::{held, SyncWorld};

const KEY: &str = "jc-0123456789abcdef0123456789abcdef01234567";
const ORG: &str = "5f00aa00bb00cc00dd00ee00";

struct World {
    jumpcloud: FakeJumpCloud,
    sync: SyncWorld,
}

impl World {
    async fn start(directory: JumpCloudDirectory) -> Self {
        let sync = SyncWorld::start().await;
        std::fs::write(sync.path("jumpcloud_key"), format!("{KEY}\n")).expect("key file");
        Self {
            jumpcloud: FakeJumpCloud::start(KEY, Some(ORG), directory).await,
            sync,
        }
    }

    fn source(&self) -> String {
        format!(
            "[source]\nkind = \"jumpcloud\"\nurl = \"{url}\"\npage_size = 100\n[source.jumpcloud]\napi_key_file = \"{key}\"\norg_id = \"{ORG}\"\n",
            url = self.jumpcloud.url(),
            key = self.sync.path("jumpcloud_key").display(),
        )
    }

    /// Requests to `path`, refused ones included.
    fn calls_to(&self, path: &str) -> usize {
        self.jumpcloud
            .calls()
            .iter()
            .filter(|c| c.path == path)
            .count()
    }

    fn edit(&self, change: impl FnOnce(&mut JumpCloudDirectory)) {
        let mut directory = self.jumpcloud.directory();
        change(&mut directory);
        self.jumpcloud.set_directory(directory);
    }
}

fn email(i: usize) -> String {
    format!("user{i}@example.com")
}

#[tokio::test]
async fn two_thousand_users_sync_exactly_once_and_a_rerun_writes_nothing() {
    let world = World::start(generate(2000)).await;
    let first = world.sync.run(&world.source()).await.expect("first run");
    assert_eq!((first.counts.created, first.directory_users), (2000, 2000));
    let held_now = world.sync.held();
    assert_eq!(held_now.len(), 2000);
    // Nested: sre is in eng, so sre's members are in eng too.
    assert_eq!(
        held_now[&email(0)],
        held(&["eng", "sales", "sre"], "invited")
    );
    assert_eq!(held_now[&email(1)], held(&["eng"], "invited"));
    assert_eq!(held_now[&email(2)], held(&[], "invited"));
    assert_eq!(held_now[&email(3)], held(&["eng", "sre"], "invited"));
    assert_eq!(
        world.sync.gateway.count("POST", "/api/users"),
        2000,
        "each user once"
    );
    // 100 a page, sorted by _id: 20 pages, the last one full and at the total.
    let user_pages: Vec<_> = world
        .jumpcloud
        .calls()
        .into_iter()
        .filter(|c| c.path == "/api/systemusers")
        .collect();
    assert_eq!(user_pages.len(), 20);
    assert!(user_pages
        .iter()
        .all(|c| c.status == 200 && c.query["sort"] == "_id" && c.query["limit"] == "100"));

    world.sync.gateway.clear_requests();
    let again = world.sync.run(&world.source()).await.expect("rerun");
    assert_eq!((again.counts.unchanged, again.counts.created), (2000, 0));
    assert_eq!(world.sync.writes(), 0, "a rerun writes nothing");
}

#[tokio::test]
async fn joiners_leavers_suspended_users_and_group_moves_converge() {
    let world = World::start(generate(40)).await;
    // Every 3rd request is throttled with a 429: the read backs off and goes on.
    world.jumpcloud.set_faults(JumpCloudFaults {
        throttle_every: Some(3),
        ..JumpCloudFaults::default()
    });
    world.sync.run(&world.source()).await.expect("first run");
    assert!(world.jumpcloud.calls().iter().any(|c| c.status == 429));

    world.edit(|d| {
        d.users.push(system_user(
            &object_id(40),
            "Joiner@Example.com",
            "Jo",
            "Iner",
        ));
        let mut staged = system_user(&object_id(41), "staged@example.com", "St", "Aged");
        staged["activated"] = json!(false);
        staged["state"] = json!("STAGED");
        d.users.push(staged);
        d.users.retain(|u| u["_id"] != object_id(5).as_str());
        let suspended = d
            .users
            .iter_mut()
            .find(|u| u["_id"] == object_id(6).as_str());
        let suspended = suspended.expect("user 6");
        suspended["suspended"] = json!(true);
        suspended["state"] = json!("SUSPENDED");
        // User 1 moves from eng to sales.
        d.groups[0].users.retain(|id| *id != object_id(1));
        d.groups[2].users.push(object_id(1));
    });
    let second = world.sync.run(&world.source()).await.expect("second run");
    let c = &second.counts;
    assert_eq!((c.created, c.deactivated, c.updated), (1, 2, 1), "{c:?}");
    assert_eq!(
        c.skipped_inactive, 2,
        "the staged user is not created; the suspended one is inactive"
    );
    let held_now = world.sync.held();
    assert_eq!(held_now["joiner@example.com"], held(&[], "invited"));
    assert_eq!(held_now[&email(5)].1, "inactive", "the leaver");
    assert_eq!(held_now[&email(6)].1, "inactive", "the suspended user");
    assert_eq!(held_now[&email(1)], held(&["sales"], "invited"));
    assert!(!held_now.contains_key("staged@example.com"));

    world.sync.gateway.clear_requests();
    world.jumpcloud.set_faults(JumpCloudFaults::default());
    world.sync.run(&world.source()).await.expect("third run");
    assert_eq!(world.sync.writes(), 0, "converged");
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let world = World::start(generate(500)).await;
    world.sync.run(&world.source()).await.expect("first run");
    world.sync.gateway.clear_requests();
    world.edit(|d| d.users.truncate(450));
    world.jumpcloud.set_faults(JumpCloudFaults {
        fail_users_from_skip: Some(300),
        ..JumpCloudFaults::default()
    });
    let aborted = world.sync.run(&world.source()).await.expect_err("cut off");
    let error = aborted.error.to_string();
    assert!(error.contains("the directory is unavailable"), "{error}");
    assert!(error.contains("skip=300"), "names the page: {error}");
    assert_eq!(aborted.summary.counts.deactivated, 0);
    assert_eq!(world.sync.writes(), 0, "nothing written");
    assert!(world
        .sync
        .held()
        .values()
        .all(|(_, status)| status == "invited"));
}

#[tokio::test]
async fn a_directory_that_shifts_while_it_is_read_deactivates_nobody() {
    let world = World::start(generate(300)).await;
    world.sync.run(&world.source()).await.expect("first run");
    world.sync.gateway.clear_requests();
    // User 0 is deleted after the first page: skip paging would now miss user 100,
    // who would look like a leaver.
    world.jumpcloud.set_faults(JumpCloudFaults {
        delete_first_after_skip: Some(0),
        ..JumpCloudFaults::default()
    });
    let aborted = world.sync.run(&world.source()).await.expect_err("shifted");
    let error = aborted.error.to_string();
    assert!(
        error.contains("changed while it was read (300 users, then 299)"),
        "{error}"
    );
    assert_eq!(world.sync.writes(), 0, "nothing written");
    let next = world.sync.run(&world.source()).await.expect("the next run");
    assert_eq!(next.counts.deactivated, 1, "only user 0, who really left");
    assert_eq!(world.sync.held()[&email(0)].1, "inactive");
}

#[tokio::test]
async fn check_config_connect_reads_one_user_and_the_key_never_shows() {
    let world = World::start(generate(30)).await;
    let checked = world
        .sync
        .idsync(&world.source(), &["check-config", "--connect"])
        .await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    let stderr = String::from_utf8_lossy(&checked.stderr);
    assert_eq!(checked.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("API key accepted; 30 system users"),
        "{stdout}"
    );
    let probes: Vec<_> = world.jumpcloud.calls();
    assert!(probes
        .iter()
        .any(|c| c.path == "/api/systemusers" && c.query["limit"] == "1"));
    assert_eq!(world.calls_to("/api/systemusers"), 1, "one user read");

    let synced = world.sync.idsync(&world.source(), &["--sync-now"]).await;
    assert_eq!(synced.status.code(), Some(0));
    let wrong_key = world
        .source()
        .replace("api_key_file", "api_key = \"wrong-key\"\n#");
    let refused = world.sync.idsync(&wrong_key, &["--sync-now"]).await;
    assert_eq!(
        refused.status.code(),
        Some(3),
        "a refused key aborts the run"
    );
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused_err.contains("refused our credentials"),
        "{refused_err}"
    );
    for output in [&checked, &synced, &refused] {
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(!text.contains(KEY) && !text.contains("wrong-key"), "{text}");
        }
    }
}
