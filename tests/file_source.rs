//! `kind = "file"` end to end: an export on disk synced into the stateful fake
//! gateway, in-process and through the binary, including exports that are cut off.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, Summary, Syncer};
use support::fake_gateway::{FakeGateway, GatewayOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const USERS: &str = r#"{"id": "u1", "email": "Ann@Example.com", "name": "Ann Lee", "slack": "U1"}
{"id": "u2", "email": "bob@example.com", "given_name": "Bob", "family_name": "Stone"}
{"id": "u3", "email": "cy@example.com", "name": "Cy", "groups": ["oncall"]}
{"id": "u4", "email": "dee@example.com", "name": "Dee", "active": false}
{"id": "u5", "email": "Eve <eve@example.com>", "name": "Eve"}
"#;

const GROUPS: &str = "name,members,groups\nengineering,,sre\nsre,u1;u2,\ndba,u3,\n";

struct World {
    gateway: FakeGateway,
    dir: TempDir,
}

impl World {
    async fn start() -> Self {
        let world = Self {
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        world.write_users(USERS);
        std::fs::write(world.path("groups.csv"), GROUPS).expect("groups");
        std::fs::write(world.path("idsync.toml"), world.config_text()).expect("config");
        world
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_users(&self, text: &str) {
        std::fs::write(self.path("users.jsonl"), text).expect("users");
    }

    fn config_text(&self) -> String {
        format!(
            r#"
[source]
kind = "file"
path = "{users}"
groups_path = "{groups}"
[source.attributes]
slack_id = "slack"
[target]
url = "{url}"
api_key = "{key}"
rate_limit_per_second = 1000
burst = 50
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 5
"#,
            users = self.path("users.jsonl").display(),
            groups = self.path("groups.csv").display(),
            url = self.gateway.url(),
            key = self.gateway.admin_key(),
            cache = self.path("cache").display(),
        )
    }

    async fn run(&self) -> Result<Summary, Aborted> {
        self.run_with("").await
    }

    /// A run with `sections` (whole tables such as `[groups]`) added to the config.
    async fn run_with(&self, sections: &str) -> Result<Summary, Aborted> {
        let text = format!("{}\n{sections}", self.config_text());
        let config = Config::parse(&text, "test", &|_| None).expect("config");
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    /// e-mail → (sorted groups, status).
    fn held(&self) -> Vec<(String, Vec<String>, String)> {
        let mut held: Vec<_> = self
            .gateway
            .users()
            .into_iter()
            .map(|user| {
                let mut groups = user.groups.clone();
                groups.sort();
                (user.email, groups, user.status)
            })
            .collect();
        held.sort();
        held
    }

    fn writes(&self) -> usize {
        let requests = self.gateway.requests();
        requests.iter().filter(|r| r.method != "GET").count()
    }
}

fn user(email: &str, groups: &[&str], status: &str) -> (String, Vec<String>, String) {
    let groups = groups.iter().map(|g| g.to_string()).collect();
    (email.to_owned(), groups, status.to_owned())
}

#[tokio::test]
async fn an_export_is_synced_and_a_leaver_is_deactivated() {
    let world = World::start().await;
    let first = world.run().await.expect("first run");
    let c = &first.counts;
    assert_eq!(
        (c.created, c.skipped_inactive, c.skipped_invalid),
        (3, 1, 1)
    );
    assert_eq!(first.skipped[0].user, "subject u5 (Eve)");
    assert_eq!(
        world.held(),
        [
            user("ann@example.com", &["engineering", "sre"], "invited"),
            user("bob@example.com", &["engineering", "sre"], "invited"),
            user("cy@example.com", &["dba", "oncall"], "invited"),
        ]
    );
    let ann = world.gateway.user_by_email("ann@example.com").expect("ann");
    assert_eq!(
        (ann.name.as_str(), ann.slack_id.as_str()),
        ("Ann Lee", "U1")
    );

    let again = world.run().await.expect("second run");
    assert_eq!((again.counts.unchanged, again.counts.created), (3, 0));

    // Bob leaves the export.
    let without_bob: String = USERS
        .lines()
        .filter(|l| !l.contains("u2"))
        .map(|l| format!("{l}\n"))
        .collect();
    world.write_users(&without_bob);
    let third = world.run().await.expect("third run");
    assert_eq!(third.counts.deactivated, 1);
    let bob = world.gateway.user_by_email("bob@example.com").expect("bob");
    assert_eq!(bob.status, "inactive");
}

#[tokio::test]
async fn a_cut_off_export_deactivates_nobody_and_aborts() {
    let world = World::start().await;
    world.run().await.expect("first run");
    world.gateway.clear_requests();
    // Cut mid-line, after the first user: a truncated copy of the export.
    world.write_users(&USERS[..USERS.find('\n').expect("a line") + 20]);
    let aborted = world.run().await.expect_err("a cut-off export");
    assert!(
        aborted
            .error
            .to_string()
            .contains("does not end with a line break"),
        "{}",
        aborted.error
    );
    assert_eq!(aborted.summary.counts.deactivated, 0);
    assert_eq!(world.writes(), 0, "nothing was written to the gateway");
    assert!(world
        .held()
        .iter()
        .all(|(_, _, status)| status == "invited"));
}

fn idsync(config: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(config)
        .args(["--sync-now", "--output", "json"])
        .output()
        .expect("idsync runs")
}

#[tokio::test]
async fn the_binary_syncs_an_export_and_exits_3_on_a_cut_off_one() {
    let world = World::start().await;
    let config = world.path("idsync.toml");
    let done = tokio::task::spawn_blocking(move || idsync(&config))
        .await
        .expect("task");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(
        done.status.code(),
        Some(0),
        "a skipped user is reported, not a failure: {stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&done.stdout).expect("JSON summary");
    assert_eq!(summary["created"], 3);
    assert_eq!(
        (
            summary["directory_users"].as_u64(),
            summary["skipped_invalid"].as_u64()
        ),
        (Some(5), Some(1))
    );

    world.gateway.clear_requests();
    world.write_users(&USERS[..USERS.len() - 3]);
    let config = world.path("idsync.toml");
    let cut = tokio::task::spawn_blocking(move || idsync(&config))
        .await
        .expect("task");
    let stderr = String::from_utf8_lossy(&cut.stderr);
    assert_eq!(cut.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("users.jsonl"),
        "the error names the file: {stderr}"
    );
    assert_eq!(world.writes(), 0);
}

/// `groups.mirror`: the export's groups become gateway groups, an empty one too,
/// and with `delete_removed` one the export drops leaves the gateway again; a
/// group made in the gateway is never touched.
#[tokio::test]
async fn mirrored_groups_are_created_even_when_empty_and_deleted_when_dropped() {
    let world = World::start().await;
    world.gateway.seed_group("made-in-the-gateway");
    let with_platform = format!("{GROUPS}platform,,\n");
    std::fs::write(world.path("groups.csv"), &with_platform).expect("groups");
    let mirror = "[groups]\nmirror = true\ndelete_removed = true\n";
    let first = world.run_with(mirror).await.expect("first run");
    assert_eq!(
        first.groups_created,
        ["dba", "engineering", "oncall", "platform", "sre"]
    );
    assert!(world.gateway.groups().contains(&"platform".to_owned()));

    std::fs::write(world.path("groups.csv"), GROUPS).expect("groups");
    let second = world.run_with(mirror).await.expect("second run");
    assert!(second.groups_created.is_empty());
    assert_eq!(second.groups_deleted, ["platform"]);
    let left = world.gateway.groups();
    assert!(!left.contains(&"platform".to_owned()), "{left:?}");
    assert!(left.contains(&"made-in-the-gateway".to_owned()), "{left:?}");
}

/// Without `groups.mirror` a pull run creates groups only through its users.
#[tokio::test]
async fn without_mirror_an_empty_group_is_not_created() {
    let world = World::start().await;
    std::fs::write(world.path("groups.csv"), format!("{GROUPS}platform,,\n")).expect("groups");
    let run = world.run().await.expect("run");
    assert!(run.groups_created.is_empty());
    assert!(!world.gateway.groups().contains(&"platform".to_owned()));
}
