//! The operator surface of the binary that needs no configuration: shell
//! completions, the manual page and `--version`.

use std::process::{Command, Output};

fn idsync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_idsync"))
        .args(args)
        // Neither reads a configuration file: a path that does not exist proves it.
        .env("IDSYNC_CONFIG", "/nonexistent/idsync.toml")
        .output()
        .expect("run idsync")
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout.clone()).expect("utf-8")
}

#[test]
fn completions_for_bash_name_the_commands_and_flags() {
    let script = stdout(&idsync(&["completions", "bash"]));
    assert!(!script.is_empty());
    for word in [
        "idsync",
        "--sync-now",
        "--retry-rejected",
        "check-config",
        "status",
    ] {
        assert!(script.contains(word), "{word} missing from:\n{script}");
    }
    for shell in ["zsh", "fish"] {
        assert!(
            !stdout(&idsync(&["completions", shell])).is_empty(),
            "{shell}"
        );
    }
    assert_eq!(idsync(&["completions", "cmd.exe"]).status.code(), Some(2));
}

#[test]
fn the_man_page_is_roff() {
    let page = stdout(&idsync(&["man"]));
    assert!(page.contains(".TH idsync 1"), "{page}");
    assert!(page.contains("sync\\-now"), "{page}");
}

#[test]
fn version_names_the_commit_or_says_unknown() {
    let version = stdout(&idsync(&["--version"]));
    let version = version.trim();
    let expected = format!("idsync {} (commit ", env!("CARGO_PKG_VERSION"));
    assert!(version.starts_with(&expected), "{version}");
    let commit = version[expected.len()..].trim_end_matches(')');
    let head = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // Built from this checkout: its commit (or an older one, if the build is
        // stale by a commit made since; then it is still a hash).
        Some(_) => assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{version}"
        ),
        None => assert_eq!(commit, "unknown", "{version}"),
    }
}
