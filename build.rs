//! Puts the git commit into `idsync --version`: `0.1.0 (commit 1a2b3c4)`, or
//! `(commit unknown)` when the source is not a git checkout (a tarball, a
//! container build) or git is missing. Never fails the build.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&["rev-parse", "--short", "HEAD"]);
    if commit.is_some() {
        // Run again when HEAD moves: a commit, a checkout, a branch update.
        let mut watched = Vec::new();
        if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
            watched.push(Path::new(&dir).join("HEAD"));
        }
        if let (Some(common), Some(branch)) = (
            git(&["rev-parse", "--git-common-dir"]),
            git(&["symbolic-ref", "-q", "HEAD"]),
        ) {
            watched.push(Path::new(&common).join(branch));
            watched.push(Path::new(&common).join("packed-refs"));
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    let commit = commit.as_deref().unwrap_or("unknown");
    println!("cargo:rustc-env=IDSYNC_VERSION={version} (commit {commit})");
}
