//! `kind = "auth0"` end to end: the stateful fake Auth0 tenant synced into the
//! fake gateway, by pages below 1,000 users and by an export job above.

mod support;

use serde_json::json;
use support::fake_auth0::{
    auth0_user, generate, Auth0Directory, Auth0Faults, Auth0Options, FakeAuth0,
};
use support::sync_world::{held, SyncWorld};

struct World {
    auth0: FakeAuth0,
    sync: SyncWorld,
}

impl World {
    async fn start(directory: Auth0Directory, rate_limit: u32) -> Self {
        Self::with_options(
            directory,
            Auth0Options {
                rate_limit,
                export_polls: 2,
                ..Auth0Options::default()
            },
        )
        .await
    }

    async fn with_options(directory: Auth0Directory, options: Auth0Options) -> Self {
        let auth0 = FakeAuth0::start(options, directory).await;
        let sync = SyncWorld::start().await;
        let secret = format!("{}\n", auth0.client_secret());
        std::fs::write(sync.path("auth0_secret"), secret).expect("secret file");
        Self { auth0, sync }
    }

    fn source(&self, groups_from: &str) -> String {
        format!(
            "[source]\nkind = \"auth0\"\nurl = \"{url}\"\npage_size = 100\n[source.auth0]\nclient_id = \"{id}\"\nclient_secret_file = \"{secret}\"\ngroups_from = \"{groups_from}\"\n",
            url = self.auth0.url(),
            id = self.auth0.client_id(),
            secret = self.sync.path("auth0_secret").display(),
        )
    }

    fn edit(&self, change: impl FnOnce(&mut Auth0Directory)) {
        let mut directory = self.auth0.directory();
        change(&mut directory);
        self.auth0.set_directory(directory);
    }
}

fn email(i: usize) -> String {
    format!("person{i}@example.com")
}

#[tokio::test]
async fn three_thousand_users_are_exported_and_synced_exactly_once() {
    // 20 requests a second and about 30 a run: the read must pace itself by the
    // rate headers, or the fake answers 429 and counts a violation.
    let world = World::start(generate(3000), 20).await;
    let first = world
        .sync
        .run(&world.source("roles"))
        .await
        .expect("first run");
    assert_eq!((first.counts.created, first.directory_users), (3000, 3000));
    let counts = world.auth0.counts();
    assert_eq!((counts.export_jobs, counts.downloads), (1, 1), "{counts:?}");
    assert_eq!(
        counts.user_pages, 1,
        "only the total was asked of /api/v2/users"
    );
    assert_eq!(counts.job_polls, 3, "pending, processing, completed");
    assert_eq!(
        counts.token_sent_to_download, 0,
        "the file location gets no token"
    );
    assert_eq!(counts.wrong_audience, 0);
    assert_eq!(
        counts.rate_violations, 0,
        "never sent past the advertised budget"
    );
    assert!(
        counts.api_requests > 20,
        "enough requests to need pacing: {counts:?}"
    );
    let held_now = world.sync.held();
    assert_eq!(held_now.len(), 3000);
    assert_eq!(
        held_now[&email(0)],
        held(&["dev", "ops", "viewer"], "invited")
    );
    assert_eq!(held_now[&email(1)], held(&[], "invited"));
    assert_eq!(held_now[&email(2992)], held(&["ops"], "invited"));
    assert_eq!(
        world.sync.gateway.count("POST", "/api/users"),
        3000,
        "each user once"
    );

    world.sync.gateway.clear_requests();
    let again = world.sync.run(&world.source("roles")).await.expect("rerun");
    assert_eq!((again.counts.unchanged, again.counts.created), (3000, 0));
    assert_eq!(world.sync.writes(), 0, "a rerun writes nothing");
    // Each run here builds its source anew; within a run the token is reused.
    assert_eq!(world.auth0.counts().token_requests, 2, "one token a run");
}

#[tokio::test]
async fn joiners_leavers_blocked_users_and_organization_moves_converge_by_pages() {
    let world = World::start(generate(300), 50).await;
    let first = world
        .sync
        .run(&world.source("organizations"))
        .await
        .expect("first run");
    assert_eq!(first.counts.created, 300);
    let counts = world.auth0.counts();
    assert_eq!(
        (counts.export_jobs, counts.user_pages),
        (0, 4),
        "the total, then 3 pages"
    );
    assert_eq!(
        world.sync.held()[&email(10)],
        held(&["acme", "globex"], "invited")
    );

    world.edit(|d| {
        d.users.push(auth0_user(300));
        d.users.retain(|u| u["user_id"] != "auth0|000005");
        let blocked = d.users.iter_mut().find(|u| u["user_id"] == "auth0|000007");
        blocked.expect("person 7")["blocked"] = json!(true);
        // Person 10 leaves globex; person 11 joins acme.
        d.organizations[1].members.retain(|id| id != "auth0|000010");
        d.organizations[0].members.push("auth0|000011".into());
    });
    let second = world
        .sync
        .run(&world.source("organizations"))
        .await
        .expect("second run");
    let c = &second.counts;
    assert_eq!((c.created, c.deactivated, c.updated), (1, 2, 2), "{c:?}");
    let held_now = world.sync.held();
    assert_eq!(held_now[&email(300)], held(&[], "invited"));
    assert_eq!(held_now[&email(5)].1, "inactive", "the leaver");
    assert_eq!(held_now[&email(7)].1, "inactive", "the blocked user");
    assert_eq!(held_now[&email(10)], held(&["acme"], "invited"));
    assert_eq!(held_now[&email(11)], held(&["acme"], "invited"));

    world.sync.gateway.clear_requests();
    world
        .sync
        .run(&world.source("organizations"))
        .await
        .expect("third run");
    assert_eq!(world.sync.writes(), 0, "converged");
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody_on_either_path() {
    for (users, faults, said) in [
        (
            300,
            Auth0Faults {
                fail_users_from_page: Some(1),
                ..Auth0Faults::default()
            },
            "answered 500",
        ),
        (
            1200,
            Auth0Faults {
                truncate_exports: true,
                ..Auth0Faults::default()
            },
            "cut off or damaged",
        ),
        (
            1200,
            Auth0Faults {
                fail_exports: true,
                ..Auth0Faults::default()
            },
            "the user export job ended \"failed\"",
        ),
    ] {
        let world = World::start(generate(users), 50).await;
        world
            .sync
            .run(&world.source("roles"))
            .await
            .expect("first run");
        world.sync.gateway.clear_requests();
        world.edit(|d| d.users.truncate(users - 50));
        world.auth0.set_faults(faults);
        let aborted = world
            .sync
            .run(&world.source("roles"))
            .await
            .expect_err("cut off");
        let error = aborted.error.to_string();
        assert!(error.contains(said), "{error}");
        assert_eq!(aborted.summary.counts.deactivated, 0);
        assert_eq!(world.sync.writes(), 0, "nothing written: {error}");
    }
}

#[tokio::test]
async fn an_export_job_that_does_not_finish_in_time_aborts_the_run() {
    let slow = Auth0Options {
        export_polls: 1000,
        ..Auth0Options::default()
    };
    let world = World::with_options(generate(1000), slow).await;
    let source = format!("{}export_timeout_secs = 3\n", world.source("roles"));
    let started = std::time::Instant::now();
    let aborted = world.sync.run(&source).await.expect_err("too slow");
    let error = aborted.error.to_string();
    assert!(
        error.contains("did not complete within source.auth0.export_timeout_secs = 3"),
        "{error}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "bounded"
    );
    assert_eq!(world.sync.writes(), 0);
}

#[tokio::test]
async fn check_config_connect_reads_one_user_and_the_secret_never_shows() {
    let world = World::start(generate(30), 50).await;
    let source = world.source("roles");
    let checked = world
        .sync
        .idsync(&source, &["check-config", "--connect"])
        .await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("client credentials accepted; 30 users"),
        "{stdout}"
    );
    let counts = world.auth0.counts();
    assert_eq!((counts.token_requests, counts.user_pages), (1, 1));

    let synced = world.sync.idsync(&source, &["--sync-now"]).await;
    assert_eq!(synced.status.code(), Some(0));
    let wrong = source.replace("client_secret_file", "client_secret = \"wrong-secret\"\n#");
    let refused = world.sync.idsync(&wrong, &["--sync-now"]).await;
    assert_eq!(
        refused.status.code(),
        Some(3),
        "a refused client aborts the run"
    );
    let refused_err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        refused_err.contains("refused the client credentials"),
        "{refused_err}"
    );
    for output in [&checked, &synced, &refused] {
        for stream in [&output.stdout, &output.stderr] {
            let text = String::from_utf8_lossy(stream);
            assert!(
                !text.contains(world.auth0.client_secret()) && !text.contains("wrong-secret"),
                "{text}"
            );
            assert!(
                !text.contains("eyJ.fake."),
                "no access token in the logs: {text}"
            );
        }
    }
}
