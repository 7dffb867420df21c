//! End-to-end tests of the built `idsync` binary against real, independently written
//! peers (see `tests/peers/peers.py` and tests/peers/README.md):
//! oidc-provider (client credentials through real discovery), scim2-server (the
//! directory), and the gateway stand-in behind Prism's validating proxy, which refuses
//! with 422 every request that breaks hoop's published OpenAPI spec.
//!
//! The peers are installed into `.peers/` on first use; if they cannot be installed or
//! started, the tests fail — they never skip.

mod common_peers;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use common_peers::{run_idsync, write_directory, Peers, PeersOptions, Target};
use serde_json::Value;
use support::directory::{Directory, GenSpec};

const SECRET: &str = "e2e-client-secret";

/// The big directory of the contract tests: 2,000 users in 50 groups, with leavers,
/// users without e-mail, duplicate e-mails and mixed case.
fn big_directory() -> Directory {
    Directory::generate(GenSpec {
        users: 2_000,
        groups: 50,
        groups_per_user: 3,
        inactive_every: Some(17),
        no_email_every: Some(23),
        duplicate_email_pairs: 3,
        mixed_case: true,
        seed: 20_26,
    })
}

/// email → sorted groups of what the stand-in holds; panics if an e-mail is held twice.
fn held_by_standin(peers: &Peers) -> BTreeMap<String, Vec<String>> {
    let mut held = BTreeMap::new();
    for user in peers.standin_users() {
        let email = user["email"]
            .as_str()
            .expect("a gateway user has an email")
            .to_owned();
        let mut groups: Vec<String> = user["groups"]
            .as_array()
            .map(|g| {
                g.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        groups.sort();
        if let Some(previous) = held.insert(email.clone(), groups) {
            panic!("the stand-in holds {email} more than once (first with groups {previous:?})");
        }
    }
    held
}

fn assert_holds_exactly(peers: &Peers, expected: &BTreeMap<String, Vec<String>>) {
    let held = held_by_standin(peers);
    let missing: Vec<&String> = expected.keys().filter(|e| !held.contains_key(*e)).collect();
    let unexpected: Vec<&String> = held.keys().filter(|e| !expected.contains_key(*e)).collect();
    let wrong_groups: Vec<String> = expected
        .iter()
        .filter_map(|(email, groups)| {
            let got = held.get(email)?;
            (got != groups).then(|| format!("{email}: expected {groups:?}, holds {got:?}"))
        })
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && wrong_groups.is_empty(),
        "the stand-in holds {} users, {} expected\nmissing ({}): {:?}\nunexpected ({}): {:?}\nwrong groups ({}): {:?}",
        held.len(),
        expected.len(),
        missing.len(),
        missing.iter().take(10).collect::<Vec<_>>(),
        unexpected.len(),
        unexpected.iter().take(10).collect::<Vec<_>>(),
        wrong_groups.len(),
        wrong_groups.iter().take(10).collect::<Vec<_>>(),
    );
}

fn assert_no_prism_rejections(peers: &Peers) {
    let rejected = peers.prism_proxy_rejections();
    // Prism logs no reason; its answer to idsync (a problem+json body with `validation`,
    // and the `sl-violations` header) has it. A known cause of the 500s: a POST /users
    // without `status` or `groups` is echoed by the gateway with `"status": ""` /
    // `"groups": null`, which the spec's response schema forbids; sending
    // `"status": "invited"` (what the gateway stores for an empty one) and `"groups": []`
    // avoids it.
    assert!(
        rejected.is_empty(),
        "Prism's validating proxy refused {} requests (422: the request breaks hoop's spec; \
         500: the gateway's answer to it does), e.g.:\n{}\nsee {}",
        rejected.len(),
        rejected
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
        peers.state["logs"]["prism_proxy"]
    );
}

#[test]
fn token_from_oidc_provider_and_scim2_server_directory_creates_users() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("directory.json");
    write_directory(
        &dir_path,
        &[
            ("u1", "ada", Some("Ada.Lovelace@Example.com"), true),
            ("u2", "grace", Some("grace.hopper@example.com"), true),
            ("u3", "linus", Some("linus@example.com"), true),
            ("u4", "leaver", Some("leaver@example.com"), false),
            ("u5", "nomail", None, true),
        ],
        &[
            ("sre", &["u1", "u3"]),
            ("dba", &["u1", "u4"]),
            ("data", &["u2"]),
        ],
    );
    let peers = Peers::up(Some(&dir_path), SECRET, true);
    let config = peers.config(Target::PrismProxy).write(tmp.path(), "idsync");

    let run = run_idsync(&config, &["--sync-now", "--output", "json"]);

    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.count("created"), 3, "{run}");
    assert_eq!(run.count("failed"), 0, "{run}");
    assert_eq!(run.count("skipped_inactive"), 1, "{run}");
    assert_eq!(run.count("skipped_invalid"), 1, "{run}");
    assert!(
        peers.log("oidc").contains("token issued to idsync"),
        "idsync got no token from oidc-provider:\n{}",
        peers.log("oidc")
    );
    let expected: BTreeMap<String, Vec<String>> = [
        ("ada.lovelace@example.com", vec!["dba", "sre"]),
        ("grace.hopper@example.com", vec!["data"]),
        ("linus@example.com", vec!["sre"]),
    ]
    .into_iter()
    .map(|(e, g)| (e.to_owned(), g.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_holds_exactly(&peers, &expected);
    assert_no_prism_rejections(&peers);
}

#[test]
fn wrong_client_secret_aborts_with_exit_code_3() {
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("directory.json");
    write_directory(
        &dir_path,
        &[("u1", "ada", Some("ada@example.com"), true)],
        &[],
    );
    let mut opts = PeersOptions::new(SECRET);
    opts.directory = Some(dir_path);
    opts.prism_mock = true;
    let peers = Peers::up_with(&opts);
    let mut config = peers.config(Target::PrismMock);
    config.client_secret = "not-the-secret".to_owned();
    let config = config.write(tmp.path(), "idsync");

    let run = run_idsync(&config, &["--sync-now", "--output", "json"]);

    assert_eq!(run.code, 3, "{run}");
    let stderr = run.stderr.to_lowercase();
    assert!(
        stderr.contains("refused") || stderr.contains("invalid_client"),
        "stderr should say that the IdP refused the credentials\n{run}"
    );
    assert!(
        peers.log("oidc").contains("token refused: invalid_client"),
        "oidc-provider saw no refused token request:\n{}",
        peers.log("oidc")
    );
}

#[test]
fn contract_full_sync_of_2000_users_through_prism_validating_proxy() {
    let tmp = tempfile::tempdir().unwrap();
    let directory = big_directory();
    let dir_path = tmp.path().join("directory.json");
    directory.write_json(&dir_path).unwrap();
    let expected = directory.expected_created();
    assert!(
        expected.len() > 1_500,
        "the generated directory is too small: {}",
        expected.len()
    );
    let peers = Peers::up(Some(&dir_path), SECRET, true);
    let config = peers.config(Target::PrismProxy).write(tmp.path(), "idsync");

    let run = run_idsync(&config, &["--sync-now", "--output", "json"]);

    assert_eq!(run.code, 0, "{run}");
    assert_eq!(run.count("failed"), 0, "{run}");
    assert_eq!(run.count("created"), expected.len() as u64, "{run}");
    assert_no_prism_rejections(&peers);
    assert_holds_exactly(&peers, &expected);
}

#[test]
fn second_run_of_the_same_2000_user_directory_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let directory = big_directory();
    let dir_path = tmp.path().join("directory.json");
    directory.write_json(&dir_path).unwrap();
    let expected = directory.expected_created();
    let peers = Peers::up(Some(&dir_path), SECRET, true);
    let config = peers.config(Target::PrismProxy).write(tmp.path(), "idsync");

    let first = run_idsync(&config, &["--sync-now", "--output", "json"]);
    assert_eq!(first.code, 0, "first run: {first}");
    assert_eq!(
        first.count("created"),
        expected.len() as u64,
        "first run: {first}"
    );

    let second = run_idsync(&config, &["--sync-now", "--output", "json"]);

    assert_eq!(second.code, 0, "second run: {second}");
    assert_eq!(second.count("created"), 0, "second run: {second}");
    assert_eq!(second.count("failed"), 0, "second run: {second}");
    assert_holds_exactly(&peers, &expected);
    assert_no_prism_rejections(&peers);
}

#[test]
fn a_peer_that_cannot_start_fails_loudly() {
    // A "stand-in" that exits at once: peers.py must report it, with its log, and fail.
    let mut opts = PeersOptions::new(SECRET);
    opts.standin = Some(Path::new("/bin/false").to_path_buf());
    let report = match Peers::try_up(&opts) {
        Ok(_) => panic!("peers.py up succeeded although the stand-in cannot start"),
        Err(report) => report,
    };
    assert!(report.contains("standin exited"), "{report}");

    // A directory that scim2-server cannot be seeded with fails too.
    let tmp = tempfile::tempdir().unwrap();
    let dir_path = tmp.path().join("directory.json");
    write_directory(
        &dir_path,
        &[("u1", "ada", Some("ada@example.com"), true)],
        &[("sre", &["nobody"])],
    );
    let mut opts = PeersOptions::new(SECRET);
    opts.directory = Some(dir_path);
    let report = match Peers::try_up(&opts) {
        Ok(_) => panic!("peers.py up succeeded although the directory cannot be seeded"),
        Err(report) => report,
    };
    assert!(report.contains("nobody"), "{report}");
}

#[test]
#[should_panic(expected = "the test peers did not start")]
fn peers_up_panics_when_a_peer_cannot_start() {
    let mut opts = PeersOptions::new(SECRET);
    opts.standin = Some(Path::new("/bin/false").to_path_buf());
    let _peers = Peers::up_with(&opts);
}
