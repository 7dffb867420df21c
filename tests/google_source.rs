//! `kind = "google"` end to end: an organisation in the stateful fake Google
//! Workspace synced into the fake gateway, every directory request through
//! `prism proxy --errors` on Google's own OpenAPI document — nested groups,
//! changes that converge, throttling survived, a refusal and a cut-off read that
//! deactivate nobody — the key file checked at config time, and
//! `check-config --connect` through the binary.

mod support;

use std::process::Command;

use idsync::config::Config;
use support::fake_google::{FakeGoogle, GoogleFaults, GoogleOptions, Throttle};
use support::fake_keycloak::Cut;
use support::org::{Org, OrgGroup};
use support::org_world::OrgWorld;
use support::prism::{vendor_spec, Prism};

/// The `[source]` tables for `google` read at `url`, with its key file written
/// into the world.
fn source(world: &OrgWorld, google: &FakeGoogle, url: &str) -> String {
    let key = world.path("google-sa.json");
    std::fs::write(&key, google.key_file()).expect("key file");
    format!(
        r#"[source]
kind = "google"
url = "{url}"
page_size = 500
[source.google]
credentials_file = "{key}"
delegated_admin = "{admin}"
customer = "my_customer"
"#,
        key = key.display(),
        admin = google.options().delegated_admin,
    )
}

fn by_name(_: &Org, group: &OrgGroup) -> String {
    group.name.clone()
}

async fn google(org: Org) -> FakeGoogle {
    FakeGoogle::start(GoogleOptions::default(), org).await
}

#[tokio::test]
async fn two_thousand_users_in_nested_groups_sync_once_within_googles_document() {
    let org = Org::generate(2_000, 40, 7);
    let google = google(org.clone()).await;
    let prism = Prism::proxy(&vendor_spec("google"), &google.url()).await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, prism.url());
    let first = world.run(&config).await;
    let first = first.unwrap_or_else(|err| panic!("{}: {:?}", err.error, google.token_refusals()));
    assert_eq!(first.counts.created, 2_000);
    assert_eq!(world.writes(), 2_000, "each user written once");
    world.assert_holds(&org, &org.expected_groups(true, by_name));
    assert_eq!(google.token_requests(), 1, "{:?}", google.token_refusals());

    let again = world.run(&config).await.expect("second run");
    assert_eq!(
        (again.counts.unchanged, world.writes()),
        (2_000, 2_000),
        "the rerun writes nothing"
    );
    assert!(
        prism.requests() >= 2 * (40 + 4),
        "every request went through Prism"
    );
    assert_eq!(prism.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn joiners_leavers_a_suspended_user_and_group_moves_converge() {
    let mut org = Org::generate(2_000, 40, 11);
    let google = google(org.clone()).await;
    let prism = Prism::proxy(&vendor_spec("google"), &google.url()).await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, prism.url());
    world.run(&config).await.expect("first run");

    let changes = org.change();
    google.set_org(org.clone());

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
    assert_eq!(prism.violations(), Vec::<String>::new());
}

#[tokio::test]
async fn rate_limit_answers_in_the_middle_of_the_read_are_retried() {
    let org = Org::generate(2_000, 40, 5);
    let google = google(org.clone()).await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, &google.url());
    for throttles in [
        vec![Throttle::UserRateLimit, Throttle::RateLimit],
        vec![Throttle::TooManyRequests, Throttle::UserRateLimit],
    ] {
        google.set_faults(GoogleFaults {
            throttle_from_request: Some(20),
            throttles: throttles.clone(),
            ..GoogleFaults::default()
        });
        let before = google.throttled();
        world
            .run(&config)
            .await
            .expect("the read survives the throttling");
        assert_eq!(google.throttled() - before, 2, "{throttles:?}");
        world.assert_holds(&org, &org.expected_groups(true, by_name));
    }
}

#[tokio::test]
async fn a_refusal_ends_the_read_with_googles_reason() {
    let org = Org::generate(50, 4, 2);
    let google = google(org).await;
    google.set_faults(GoogleFaults {
        forbidden: true,
        ..GoogleFaults::default()
    });
    let world = OrgWorld::start().await;
    let err = world
        .run(&source(&world, &google, &google.url()))
        .await
        .expect_err("refused");
    let said = err.error.to_string();
    assert!(
        said.contains("answered 403")
            && said.contains("Not Authorized to access this resource/api"),
        "{said}"
    );
    assert_eq!(google.requests().len(), 1, "a refusal is not retried");
    assert_eq!(world.writes(), 0);
}

#[tokio::test]
async fn a_read_cut_off_part_way_deactivates_nobody() {
    let mut org = Org::generate(2_000, 40, 9);
    let google = google(org.clone()).await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, &google.url());
    world.run(&config).await.expect("first run");
    let leaver = org.users[0].email.clone();
    org.leave(&leaver);
    google.set_org(org);
    for cut in [Cut::Failing, Cut::Truncated] {
        google.set_faults(GoogleFaults {
            cut_users_from: Some((1_000, cut)),
            ..GoogleFaults::default()
        });
        world
            .assert_cut_off_run_writes_nothing(&config, &format!("{cut:?}"))
            .await;
    }
}

#[tokio::test]
async fn a_key_file_that_is_not_a_service_account_key_stops_idsync_at_config_time() {
    let google = google(Org::default()).await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, &google.url());
    let key = world.path("google-sa.json");
    let service_account: serde_json::Value =
        serde_json::from_str(&google.key_file()).expect("key json");
    let mut no_key = service_account.clone();
    no_key["private_key"] = "not a key".into();
    let mut user_credentials = service_account.clone();
    user_credentials["type"] = "authorized_user".into();
    for (text, said) in [
        (
            "{\"type\": \"service_account\",".to_owned(),
            "is not a JSON key file",
        ),
        (user_credentials.to_string(), "is not a service-account key"),
        (no_key.to_string(), "must hold an RSA private key"),
    ] {
        std::fs::write(&key, &text).expect("key file");
        let err =
            Config::parse(&world.config_text(&config), "test", &|_| None).expect_err("refused");
        let err = err.to_string();
        assert!(
            err.starts_with("source.google.credentials_file ") && err.contains(said),
            "{err}"
        );
        let key_line = support::jwt::TEST_PRIVATE_KEY
            .lines()
            .nth(1)
            .expect("a key line");
        assert!(!err.contains(key_line), "the key never shows: {err}");
    }
    std::fs::remove_file(&key).expect("remove");
    let err = Config::parse(&world.config_text(&config), "test", &|_| None).expect_err("missing");
    assert!(err.to_string().contains("cannot be read"), "{err}");
}

#[tokio::test]
async fn a_delegation_for_another_admin_is_refused_by_the_token_endpoint() {
    let google = FakeGoogle::start(
        GoogleOptions {
            delegated_admin: "someone-else@example.com".into(),
            ..GoogleOptions::default()
        },
        Org::generate(5, 1, 1),
    )
    .await;
    let world = OrgWorld::start().await;
    let config = source(&world, &google, &google.url()).replace("someone-else@", "it-admin@");
    let err = world.run(&config).await.expect_err("no token");
    assert!(
        err.error.to_string().contains("invalid_grant"),
        "{}",
        err.error
    );
    assert!(
        google.token_refusals()[0].contains("InvalidSubject"),
        "{:?}",
        google.token_refusals()
    );
}

#[tokio::test]
async fn check_config_connect_gets_a_token_and_reads_one_user_without_showing_keys() {
    let org = Org::generate(3, 2, 1);
    let google = google(org.clone()).await;
    let world = OrgWorld::start().await;
    let path = world.path("idsync.toml");
    let config = world.config_text(&source(&world, &google, &google.url()));
    std::fs::write(&path, config).expect("config");
    let binary = env!("CARGO_BIN_EXE_idsync");
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
    let first = &org.users[0].email;
    assert!(
        stdout.contains(&format!("token accepted; read user {first}")),
        "{stdout}"
    );
    assert_eq!(
        google.requests(),
        ["/users?customer=my_customer&maxResults=1&projection=basic"]
    );
    let key_line = support::jwt::TEST_PRIVATE_KEY
        .lines()
        .nth(1)
        .expect("a key line");
    for secret in [key_line, "ya29.", "eyJ"] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} never shows"
        );
    }
}
