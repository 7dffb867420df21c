//! The commands that need no secrets and reach nothing (`status`, `cache reset`),
//! and what a damaged cache does to a run, through the binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use idsync::cache::{Cache, RunRecord};
use idsync::model::Counts;

/// A cache at `path` that recorded one run, closed.
async fn used_cache(path: &Path) {
    let cache = Cache::open(path).expect("open");
    let run = RunRecord {
        started_at: "2026-01-01T00:00:00Z".into(),
        finished_at: "2026-01-01T00:00:01Z".into(),
        outcome: "ok".into(),
        counts: Counts::default(),
        error: None,
    };
    cache.record_run(&run).await.expect("record run");
}

fn idsync(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idsync"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("IDSYNC_TARGET_API_KEY")
        .env_remove("IDSYNC_SOURCE_CLIENT_SECRET")
        .env_remove("IDSYNC_SOURCE_BEARER_TOKEN")
        .output()
        .expect("run idsync")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file source and a gateway nobody listens on: the run gets only as far as
/// the cache.
fn write_config(dir: &Path, cache: &Path) -> PathBuf {
    let users = dir.join("users.jsonl");
    std::fs::write(&users, "{\"id\": \"e1\", \"email\": \"a@example.com\"}\n").expect("users");
    let config = dir.join("idsync.toml");
    let text = format!(
        "[source]\nkind = \"file\"\npath = {users:?}\n[target]\nurl = \"http://127.0.0.1:9/api\"\napi_key = \"hpk_test\"\n[cache]\npath = {cache:?}\n"
    );
    std::fs::write(&config, text).expect("config");
    config
}

/// Before: the run treated the truncated store as empty and went on to adopt
/// (here: failing only on the unreachable gateway). After: exit 3 naming the
/// cache and the recovery, and `cache reset` moves it aside.
#[tokio::test]
async fn a_damaged_cache_aborts_the_run_and_cache_reset_moves_it_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    used_cache(&cache).await;
    std::fs::write(cache.join("db"), b"").expect("truncate db");
    let config = write_config(dir.path(), &cache);

    let run = idsync(&config, &["--sync-now"]);
    let stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&cache.display().to_string()), "{stderr}");
    assert!(stderr.contains("damaged or was reset"), "{stderr}");
    assert!(stderr.contains("idsync cache reset"), "{stderr}");

    let reset = idsync(&config, &["cache", "reset"]);
    let stdout = text(&reset.stdout);
    assert_eq!(reset.status.code(), Some(0), "{}", text(&reset.stderr));
    let aside: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("cache.damaged-"))
        })
        .collect();
    assert_eq!(aside.len(), 1, "{stdout}");
    assert!(stdout.contains(&aside[0].display().to_string()), "{stdout}");
    assert!(aside[0].join("status.json").exists(), "moved as it was");
    drop(Cache::open(&cache).expect("a fresh cache opens"));
}

/// Before: exit 2, "target.api_key file $CREDENTIALS_DIRECTORY/hoop_api_key
/// needs $CREDENTIALS_DIRECTORY". After: the runs, exit 0.
#[tokio::test]
async fn status_works_with_the_shipped_systemd_config_outside_systemd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = dir.path().join("cache");
    used_cache(&cache).await;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/idsync.toml");
    let shipped = std::fs::read_to_string(shipped).expect("systemd/idsync.toml");
    assert!(shipped.contains("$CREDENTIALS_DIRECTORY"));
    let config = dir.path().join("idsync.toml");
    let moved = shipped.replace("\"/var/lib/idsync\"", &format!("{cache:?}"));
    std::fs::write(&config, moved).expect("config");

    let status = idsync(&config, &["status", "--output", "json"]);
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(value["runs"][0]["outcome"], "ok", "{value}");
}

/// Before: check-config said only "ok" for both.
#[test]
fn an_inline_secret_in_a_world_readable_config_is_warned_of() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &dir.path().join("cache"));
    let mode = |mode| {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).expect("chmod")
    };
    mode(0o644);
    let check = idsync(&config, &["check-config"]);
    let stderr = text(&check.stderr);
    assert_eq!(check.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("target.api_key is written in") && stderr.contains("mode 0644"),
        "{stderr}"
    );
    assert!(!stderr.contains("hpk_test"), "{stderr}");
    mode(0o600);
    let check = idsync(&config, &["check-config"]);
    assert!(
        !text(&check.stderr).contains("target.api_key"),
        "{}",
        text(&check.stderr)
    );
}

#[test]
fn check_config_shows_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(dir.path(), &dir.path().join("cache"));
    let text_of = std::fs::read_to_string(&config).expect("read");
    let changed = text_of
        .replace("127.0.0.1:9/api", "127.0.0.1:9")
        .replace("hpk_test", "abc");
    std::fs::write(&config, changed).expect("write");
    let check = idsync(&config, &["check-config"]);
    let stdout = text(&check.stdout);
    assert_eq!(check.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("WARNING target.url"), "{stdout}");
    assert!(
        stdout.contains("WARNING target.api_key does not start with hpk_"),
        "{stdout}"
    );
}
