//! # idsync
//!
//! Keeps the users of a hoop.dev gateway in step with an identity provider's
//! directory: reads its users and groups (SCIM 2.0, or an export file), diffs them
//! against a local cache and creates, updates and deactivates users through the
//! gateway's API, paced and retried. `docs/architecture.md` draws the whole.
//!
//! # Layout
//! From the bottom up; a module uses only those above it in this list.
//! - [`config`]: TOML → checked [`config::Config`]; secrets as [`config::Secret`].
//! - [`model`]: typed identities, the gateway's user and profile, run counts.
//! - [`http`]: the one HTTP client builder; [`retry`]: the retry policy and loop.
//! - [`memory`]: glibc malloc tunings; [`notify`]: systemd's notify protocol.
//! - [`events`]: every notable event's log line and metric, in one place.
//! - [`groups`]: the groups policy (include/exclude, rename, prefix, admin guard).
//! - [`cache`]: sled store of per-subject outcomes, run history and source cursors.
//! - [`push`]: the SCIM 2.0 endpoint IdPs provision into, and its durable store.
//! - [`service`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`source`]: the [`source::Directory`] seam and one folder per kind of directory.
//! - [`target`]: the hoop gateway client, or the dry-run target.
//! - [`plan`]: the diff of directory and cache into actions.
//! - [`apply`]: executes actions through the rate limiter and retry policy.
//! - [`sync`]: one run, read → plan → apply → record → summary.
//! - [`schedule`]: the cron loop of the daemon.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::unreachable)
)]
#![deny(clippy::await_holding_lock)]

pub mod apply;
pub mod cache;
pub mod config;
pub mod events;
pub mod groups;
pub mod http;
pub mod memory;
pub mod model;
pub mod notify;
pub mod plan;
pub mod push;
pub mod retry;
pub mod schedule;
pub mod service;
pub mod source;
pub mod sync;
pub mod target;

/// An error and its causes on one line: HTTP clients put the useful part
/// ("connection refused", the status) in the source chain.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
