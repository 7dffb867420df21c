//! The real sync, in-process, against a fake IdP (OIDC discovery, token, SCIM
//! paging) and a stateful fake gateway that behaves as docs/gateway-api.md says.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use idsync::cache::CacheError;
use idsync::config::Config;
use idsync::sync::{Aborted, RunMode, SetupError, Summary, SyncError, Syncer};
use support::directory::{Directory, GenSpec};
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions, GatewayUser};
use support::fake_idp::{FakeIdp, IdpFaults, IdpOptions};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

struct Harness {
    idp: FakeIdp,
    gateway: FakeGateway,
    cache: TempDir,
    /// `[target]` settings that replace the defaults below, e.g. a slower rate.
    target_overrides: Vec<(&'static str, u32)>,
    parallel_pages: u32,
    /// Extra sections appended to the config, e.g. `[sync]` or `[groups]`.
    extra: String,
}

impl Harness {
    async fn start(directory: Directory) -> Self {
        Self {
            idp: FakeIdp::start(IdpOptions::default(), directory).await,
            gateway: FakeGateway::start(GatewayOptions::default()).await,
            cache: tempfile::tempdir().expect("tempdir"),
            target_overrides: Vec::new(),
            parallel_pages: 1,
            extra: String::new(),
        }
    }

    fn config(&self) -> Config {
        let source = format!("page_size = 100\nparallel_pages = {}", self.parallel_pages);
        let text = support::idsync_toml(
            &self.idp,
            &self.gateway,
            &self.cache_path(),
            &source,
            &self.target_settings(),
            &self.extra,
        );
        Config::parse(&text, "test", &|_| None).expect("test config")
    }

    /// Sets `faults` and expects the run to abort on an untrustworthy read, sending nothing.
    async fn assert_untrusted_read_aborts(&self, faults: IdpFaults) {
        self.idp.set_faults(faults);
        let aborted = self.run().await.expect_err("the read must abort");
        assert!(
            aborted.error.to_string().contains("cannot be trusted"),
            "{}",
            aborted.error
        );
        assert_eq!(self.posts(), 0);
    }

    fn target_settings(&self) -> String {
        let defaults = [
            ("rate_limit_per_second", 2000),
            ("burst", 50),
            ("max_in_flight", 8),
            ("max_attempts", 10),
            ("timeout_secs", 5),
        ];
        defaults
            .iter()
            .map(|(key, default)| {
                let value = self
                    .target_overrides
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or(*default, |(_, v)| *v);
                format!("{key} = {value}\n")
            })
            .collect()
    }

    /// Not created until the first real run.
    fn cache_path(&self) -> std::path::PathBuf {
        self.cache.path().join("cache")
    }

    async fn run(&self) -> Result<Summary, Aborted> {
        self.run_with(false).await
    }

    async fn run_with(&self, dry_run: bool) -> Result<Summary, Aborted> {
        self.run_mode(RunMode {
            dry_run,
            ..RunMode::default()
        })
        .await
    }

    /// A `--sync-now` run: the cache opens while the directory is read.
    async fn run_mode(&self, mode: RunMode) -> Result<Summary, Aborted> {
        let syncer = Syncer::for_one_run(&self.config(), mode).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    }

    fn posts(&self) -> usize {
        self.gateway
            .requests()
            .iter()
            .filter(|r| r.method == "POST" && r.path == "/api/users")
            .count()
    }

    /// E-mail → sorted groups, as the gateway holds them; panics on a duplicate e-mail.
    fn gateway_users(&self) -> BTreeMap<String, Vec<String>> {
        self.gateway.groups_by_email()
    }
}

fn big_directory() -> Directory {
    Directory::generate(GenSpec {
        users: 2000,
        groups: 50,
        groups_per_user: 3,
        inactive_every: Some(37),
        no_email_every: Some(101),
        duplicate_email_pairs: 3,
        mixed_case: true,
        seed: 7,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_users_are_created_exactly_once_then_nothing_is_sent() {
    let directory = big_directory();
    let expected = directory.expected_created();
    let h = Harness::start(directory).await;

    let first = h.run().await.expect("first run");
    assert_eq!(
        h.gateway_users(),
        expected,
        "the gateway holds exactly the expected users and groups"
    );
    assert!(
        h.gateway_users().keys().all(|e| *e == e.to_lowercase()),
        "e-mails are lower-cased"
    );
    assert_eq!(first.counts.created, expected.len());
    assert_eq!(h.posts(), expected.len(), "one POST per created user");
    assert_eq!(
        first.counts.skipped_invalid,
        6 + 2000 / 101,
        "3 shared pairs and the users without e-mail"
    );
    assert_eq!(first.counts.skipped_inactive, 2000 / 37);
    let c = &first.counts;
    assert_eq!(
        c.created + c.existing + c.unchanged + c.skipped_invalid + c.skipped_inactive + c.failed,
        2000,
        "every directory user lands in exactly one count"
    );
    assert!(
        h.gateway.max_concurrent() <= 8,
        "max_in_flight is respected"
    );

    h.gateway.clear_requests();
    let second = h.run().await.expect("second run");
    assert_eq!(h.posts(), 0, "a steady directory costs zero writes");
    assert_eq!(
        (second.counts.created, second.counts.unchanged),
        (0, expected.len())
    );
    assert_eq!(h.gateway_users(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_non_atomic_creates_still_converge_to_exactly_once() {
    let directory = Directory::generate(GenSpec {
        users: 1000,
        groups: 20,
        groups_per_user: 2,
        mixed_case: true,
        seed: 11,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let h = Harness::start(directory).await;
    h.gateway.set_faults(Faults {
        seed: 3,
        error_503_ratio: 0.3,
        fail_after_create_ratio: 0.05,
        ..Faults::default()
    });

    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.failed, 0, "{:?}", summary.failures);
    assert_eq!(
        summary.counts.created,
        expected.len(),
        "a 409 after our own 500 counts as created"
    );
    assert_eq!(h.gateway_users(), expected);
    let refused = h
        .gateway
        .requests()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(refused > 200, "the faults really happened ({refused} 503s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_bursts_are_waited_out_by_every_worker() {
    let directory = Directory::generate(GenSpec {
        users: 300,
        groups: 5,
        seed: 5,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let h = Harness::start(directory).await;
    h.gateway.set_faults(Faults {
        seed: 9,
        burst_429: Some((60, 3, 1)),
        ..Faults::default()
    });

    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.created, expected.len());
    assert_eq!(h.gateway_users(), expected);
    let limited = h
        .gateway
        .requests()
        .iter()
        .filter(|r| r.status == 429)
        .count();
    assert!(limited >= 12, "the bursts really happened ({limited} 429s)");
    assert_eq!(
        h.gateway.retry_after_violations(),
        0,
        "no request came before a Retry-After deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_part_way_converges_without_duplicates() {
    let directory = Directory::generate(GenSpec {
        users: 400,
        groups: 8,
        groups_per_user: 2,
        seed: 21,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let mut h = Harness::start(directory).await;
    h.target_overrides = vec![("rate_limit_per_second", 200), ("burst", 1)];
    h.gateway.set_faults(Faults {
        latency: Duration::from_millis(10),
        ..Faults::default()
    });

    let config = h.config();
    let task = tokio::spawn(async move {
        let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
        syncer.run_once(&CancellationToken::new()).await
    });
    while h.posts() < 100 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.abort();
    assert!(task.await.is_err(), "the run was killed, not finished");
    let created_before = h.gateway.users().len();
    assert!(
        created_before < expected.len(),
        "killed part-way ({created_before} created)"
    );

    h.gateway.set_faults(Faults::default());
    let summary = retry_while_cache_locked(&h).await;
    assert_eq!(h.gateway_users(), expected, "converged, each user once");
    // Users created before the kill are either remembered (unchanged) or, when the kill
    // came between the POST and the cache write, met again as existing (409).
    assert_eq!(
        summary.counts.created + summary.counts.existing + summary.counts.unchanged,
        expected.len()
    );
    assert!(
        summary.counts.existing <= 8,
        "at most the in-flight requests were unrecorded"
    );
}

/// sled releases its file lock shortly after the killed task's handle is dropped:
/// a cache still locked is tried again, any other failure fails the test at once.
async fn retry_while_cache_locked(h: &Harness) -> Summary {
    for _ in 0..50 {
        match Syncer::new(&h.config(), RunMode::default()) {
            Ok(syncer) => {
                return syncer
                    .run_once(&CancellationToken::new())
                    .await
                    .expect("rerun")
            }
            Err(SetupError::Cache(CacheError::Locked { .. })) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(err) => panic!("the rerun could not be set up, and not for a lock: {err}"),
        }
    }
    panic!("the cache stayed locked after the killed run");
}

#[tokio::test]
#[should_panic(expected = "the rerun could not be set up, and not for a lock")]
async fn a_rerun_on_a_broken_cache_is_not_retried_as_if_locked() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    std::fs::write(h.cache_path(), "not a database").expect("write");
    retry_while_cache_locked(&h).await;
}

#[tokio::test]
async fn invalid_users_are_reported_and_the_rest_synced() {
    let mut directory = Directory::generate(GenSpec {
        users: 6,
        groups: 2,
        seed: 2,
        ..GenSpec::default()
    });
    directory.users[0]["emails"][0]["value"] = "Jane Roe <jane@example.com>".into();
    directory.users[1]["emails"] = serde_json::json!([]);
    directory.users[1]["userName"] = "jdoe".into();
    directory.users[2]["displayName"] = "x".repeat(300).into();
    let bad: Vec<String> = (0..3)
        .map(|i| directory.users[i]["id"].as_str().expect("id").to_owned())
        .collect();
    let h = Harness::start(directory).await;

    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.created, 3);
    assert_eq!(summary.counts.skipped_invalid, 3);
    assert_eq!(h.gateway.users().len(), 3);
    let reasons: Vec<&str> = summary.skipped.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not a bare e-mail address")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("no e-mail address")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("255 characters")),
        "{reasons:?}"
    );
    let labels: Vec<&str> = summary.skipped.iter().map(|r| r.user.as_str()).collect();
    let named = format!("subject {} (", bad[1]);
    assert!(labels.iter().any(|l| l.starts_with(&named)), "{labels:?}");
}

#[tokio::test]
async fn over_long_group_names_are_reported_not_sent() {
    let mut directory = Directory::generate(GenSpec {
        users: 3,
        groups: 1,
        seed: 4,
        ..GenSpec::default()
    });
    directory.groups[0]["displayName"] = "g".repeat(181).into();
    let h = Harness::start(directory).await;
    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.skipped_invalid, 3);
    assert!(
        summary.skipped[0].reason.contains("180 characters"),
        "{:?}",
        summary.skipped
    );
    assert_eq!(
        h.posts(),
        0,
        "the gateway would have answered 500 after creating the user"
    );
}

#[tokio::test]
async fn an_idp_failure_mid_paging_aborts_and_changes_nothing() {
    let directory = Directory::generate(GenSpec {
        users: 450,
        groups: 4,
        seed: 8,
        ..GenSpec::default()
    });
    let h = Harness::start(directory).await;
    h.idp.set_faults(IdpFaults {
        fail_users_at_start_index: Some(201),
        ..IdpFaults::default()
    });
    let aborted = h.run().await.expect_err("the run must abort");
    assert!(
        matches!(aborted.error, SyncError::Source(_)),
        "{}",
        aborted.error
    );
    assert!(
        aborted.error.to_string().contains("unavailable"),
        "{}",
        aborted.error
    );
    assert_eq!(h.posts(), 0, "nothing was sent");
    assert!(h.gateway.users().is_empty());

    h.assert_untrusted_read_aborts(IdpFaults {
        truncate_users_at: Some(250),
        ..IdpFaults::default()
    })
    .await;

    h.assert_untrusted_read_aborts(IdpFaults {
        duplicate_page: Some(301),
        ..IdpFaults::default()
    })
    .await;

    // The groups are read beside the users: their failure aborts the read as well.
    h.idp.set_faults(IdpFaults {
        fail_groups_at_start_index: Some(1),
        ..IdpFaults::default()
    });
    let aborted = h.run().await.expect_err("the run must abort");
    assert!(
        aborted.error.to_string().contains("/Groups"),
        "{}",
        aborted.error
    );
    assert_eq!(h.posts(), 0, "nothing was sent");

    // The IdP recovers: the next run syncs everyone.
    h.idp.set_faults(IdpFaults::default());
    let summary = h.run().await.expect("recovered run");
    assert_eq!(summary.counts.created, 450);
}

#[tokio::test]
async fn a_transient_idp_error_is_retried() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    h.idp.set_faults(IdpFaults {
        fail_users_at_start_index: Some(1),
        fail_users_times: Some(1),
        ..IdpFaults::default()
    });
    let summary = h.run().await.expect("one 500 is retried");
    assert_eq!(summary.counts.created, 10);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    let syncer = Syncer::new(&h.config(), RunMode::default()).expect("syncer");
    syncer
        .run_once(&CancellationToken::new())
        .await
        .expect("first run");
    assert_eq!(
        h.idp.token_requests(),
        1,
        "the token is cached within its lifetime"
    );
    h.idp.expire_tokens_now();
    syncer
        .run_once(&CancellationToken::new())
        .await
        .expect("second run");
    assert_eq!(
        h.idp.token_requests(),
        2,
        "a 401 from the directory fetched one new token"
    );
}

#[tokio::test]
async fn a_wrong_client_secret_is_reported_as_refused() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    let mut config = h.config();
    let idsync::config::SourceKind::Scim(idsync::config::ScimConfig {
        auth: idsync::config::SourceAuth::Oidc(oidc),
        ..
    }) = &mut config.source.kind
    else {
        panic!("the harness reads SCIM with an OIDC client")
    };
    oidc.client_secret = idsync::config::Secret::new("wrong");
    let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
    let aborted = syncer
        .run_once(&CancellationToken::new())
        .await
        .expect_err("refused");
    let message = aborted.error.to_string();
    assert!(
        message.contains("the IdP refused the client credentials"),
        "{message}"
    );
    assert!(
        !message.contains("idsync-secret") && !message.contains("wrong"),
        "no secret in errors: {message}"
    );
    assert_eq!(h.posts(), 0);
}

#[tokio::test]
async fn a_refused_api_key_aborts_the_run() {
    let mut h = Harness::start(Directory::generate(GenSpec::default())).await;
    h.gateway = FakeGateway::start(GatewayOptions {
        standard_key: Some("hpk_not_admin".into()),
        ..GatewayOptions::default()
    })
    .await;
    let text_key = h.gateway.admin_key().to_owned();
    let mut config = h.config();
    config.target.api_key = idsync::config::Secret::new("hpk_not_admin");
    let syncer = Syncer::new(&config, RunMode::default()).expect("syncer");
    let aborted = syncer
        .run_once(&CancellationToken::new())
        .await
        .expect_err("refused");
    assert!(
        matches!(aborted.error, SyncError::TargetRefused { status: 403, .. }),
        "{}",
        aborted.error
    );
    assert!(
        h.posts() <= 8,
        "no new requests after the first refusal ({} sent)",
        h.posts()
    );
    assert!(h.gateway.users().is_empty());
    drop(syncer);
    // With the right key the same cache syncs everyone: nothing was recorded as done.
    config.target.api_key = idsync::config::Secret::new(text_key);
    let summary = Syncer::new(&config, RunMode::default())
        .expect("syncer")
        .run_once(&CancellationToken::new())
        .await
        .expect("run");
    assert_eq!(summary.counts.created, 10);
}

#[tokio::test]
async fn existing_gateway_users_are_recorded_not_duplicated() {
    let directory = Directory::generate(GenSpec::default());
    let expected = directory.expected_created();
    let h = Harness::start(directory).await;
    let taken = expected.keys().next().expect("a user").clone();
    h.gateway.seed_user(GatewayUser::invited(&taken));

    let summary = h.run().await.expect("run");
    assert_eq!((summary.counts.created, summary.counts.existing), (9, 1));
    assert_eq!(h.gateway.users().len(), 10);
    assert_eq!(
        h.posts(),
        9,
        "the existing user was adopted from the inventory, not met with a 409"
    );
    h.gateway.clear_requests();
    let again = h.run().await.expect("second run");
    assert_eq!(
        (again.counts.unchanged, h.posts()),
        (10, 0),
        "the existing user is remembered"
    );
}

#[tokio::test]
async fn dry_run_changes_neither_gateway_nor_cache() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    let summary = h.run_with(true).await.expect("dry run");
    assert_eq!(summary.counts.created, 10);
    assert_eq!(summary.actions.len(), 10);
    assert!(summary.actions.iter().all(|a| a.action == "create"));
    assert!(
        h.gateway.requests().iter().all(|r| r.method == "GET"),
        "the gateway was only read"
    );
    assert!(!h.cache_path().exists(), "no cache was created");
    let real = h.run().await.expect("real run");
    assert_eq!(real.counts.created, 10, "the dry run recorded nothing");
}

#[tokio::test]
async fn a_one_shot_run_on_a_locked_cache_aborts_before_the_gateway_hears_of_it() {
    let h = Harness::start(Directory::generate(GenSpec::default())).await;
    let daemon = Syncer::new(&h.config(), RunMode::default()).expect("the first opener");
    let aborted = h.run().await.expect_err("the cache is locked");
    assert!(
        matches!(aborted.error, SyncError::Cache(_))
            && aborted
                .error
                .to_string()
                .contains("in use by another idsync process"),
        "{}",
        aborted.error
    );
    assert_eq!(aborted.summary.counts, Default::default());
    assert!(
        h.gateway.requests().is_empty(),
        "{:?}",
        h.gateway.requests()
    );
    drop(daemon);
}

#[tokio::test]
async fn parallel_pages_read_exactly_the_same_directory() {
    let directory = Directory::generate(GenSpec {
        users: 950,
        groups: 12,
        groups_per_user: 3,
        mixed_case: true,
        seed: 31,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let mut h = Harness::start(directory).await;
    h.parallel_pages = 4;
    h.assert_untrusted_read_aborts(IdpFaults {
        truncate_users_at: Some(640),
        ..IdpFaults::default()
    })
    .await;

    h.idp.set_faults(IdpFaults::default());
    let summary = h.run().await.expect("run");
    assert_eq!(summary.counts.created, expected.len());
    assert_eq!(h.gateway_users(), expected);
}

/// A first import whose planned creates outgrow one part (1 MB of packed creates,
/// about 10,000 users) keeps the full parts in an unnamed file in the cache
/// directory while they are sent, and closes it when the run ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_first_import_waits_on_disk_in_the_cache_directory() {
    let directory = Directory::generate(GenSpec {
        users: 16_000,
        groups: 40,
        groups_per_user: 3,
        seed: 43,
        ..GenSpec::default()
    });
    let expected = directory.expected_created();
    let mut h = Harness::start(directory).await;
    h.parallel_pages = 4;
    h.target_overrides = vec![("rate_limit_per_second", 100_000), ("burst", 1000)];
    let cache = h.cache_path();
    let stop = CancellationToken::new();
    let watching = tokio::spawn(largest_unnamed_file(cache.clone(), stop.clone()));

    let summary = h.run().await.expect("run");
    stop.cancel();
    let largest = watching.await.expect("watcher");
    assert_eq!(summary.counts.created, expected.len());
    assert_eq!(h.gateway_users(), expected);
    assert!(
        largest >= 1_000_000,
        "an unnamed file of at least one part in {}: {largest} bytes",
        cache.display()
    );
    assert_eq!(
        unnamed_files_in(&cache),
        Vec::<u64>::new(),
        "closed after the run"
    );
}

/// Planned creates that cannot be read back from their file in the cache
/// directory abort the run with that reason, not as a shutdown; the next run
/// creates the rest, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_creates_lost_on_disk_abort_the_run_saying_so() {
    let mut directory = Directory::generate(GenSpec {
        users: 1500,
        groups: 4,
        seed: 47,
        ..GenSpec::default()
    });
    // Pictures of about 2,000 characters: a part of 1 MB holds about 500 creates.
    for (i, user) in directory.users.iter_mut().enumerate() {
        let picture = format!("https://avatars.example.com/u/{i}.png?{}", "p".repeat(1950));
        user["photos"][0]["value"] = serde_json::Value::String(picture);
    }
    let expected = directory.expected_created();
    let mut h = Harness::start(directory).await;
    h.extra = "[source.attributes]\npicture = \"photos\"\n".into();
    h.target_overrides = vec![("rate_limit_per_second", 500), ("burst", 10)];
    let cache = h.cache_path();
    // The first create has gone out once the first part is read back: the file
    // then loses the others.
    let truncating = async {
        while h.posts() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        truncate_unnamed_files_in(&cache)
    };
    let (run, truncated) = tokio::join!(h.run(), truncating);
    assert_eq!(truncated, 1, "one spill file");
    let aborted = run.expect_err("the run must abort");
    let expected_error = format!(
        "could not read back the planned creates from {}: ",
        cache.display()
    );
    assert!(
        matches!(aborted.error, SyncError::PlannedCreatesLost(_))
            && aborted.error.to_string().starts_with(&expected_error),
        "{}",
        aborted.error
    );
    let counts = &aborted.summary.counts;
    assert!(counts.created > 0 && counts.interrupted > 0, "{counts:?}");
    assert_eq!(counts.created + counts.interrupted, expected.len());

    let summary = h.run().await.expect("the next run");
    assert_eq!(h.gateway_users(), expected, "each user once");
    assert_eq!(
        (summary.counts.created, summary.counts.unchanged),
        (counts.interrupted, counts.created)
    );
}

/// Cuts to nothing every deleted file in `directory` that this process holds
/// open; returns how many.
fn truncate_unnamed_files_in(directory: &std::path::Path) -> usize {
    let descriptors = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    let mut truncated = 0;
    for fd in descriptors.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if target.starts_with(&*directory.to_string_lossy()) && target.ends_with(" (deleted)") {
            let file = std::fs::OpenOptions::new().write(true).open(fd.path());
            file.and_then(|file| file.set_len(0)).expect("truncate");
            truncated += 1;
        }
    }
    truncated
}

/// The largest size seen of a deleted file in `directory` that this process holds
/// open, polling until `stop`.
async fn largest_unnamed_file(directory: std::path::PathBuf, stop: CancellationToken) -> u64 {
    let mut largest = 0;
    while !stop.is_cancelled() {
        largest = unnamed_files_in(&directory)
            .into_iter()
            .fold(largest, u64::max);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    largest
}

/// The sizes of the files in `directory` that this process holds open but that
/// have no name there (`O_TMPFILE`, or created and removed).
fn unnamed_files_in(directory: &std::path::Path) -> Vec<u64> {
    let Ok(descriptors) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    descriptors
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            let unnamed = target.starts_with(directory.to_str()?) && target.ends_with(" (deleted)");
            // The metadata of a /proc fd link is that of the open file, named or not.
            unnamed.then(|| std::fs::metadata(fd.path()).ok().map(|m| m.len()))?
        })
        .collect()
}
