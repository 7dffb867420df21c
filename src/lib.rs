//! # idsync
//!
//! Keeps the users of a hoop.dev gateway in step with an identity provider's
//! directory: reads users and groups over SCIM, diffs them against a local cache and
//! creates the missing users through the gateway's API, paced and retried.
//!
//! # Layout
//! - [`config`]: TOML → checked [`config::Config`]; secrets as [`config::Secret`].
//! - [`groups`]: the groups policy (include/exclude, rename, prefix, admin guard).
//! - [`model`]: typed identities ([`model::Subject`], [`model::Email`], [`model::GroupName`]).
//! - [`auth`]: the directory's bearer token (static, or OIDC client credentials).
//! - [`source`]: directory adapters ([`source::scim`]) yielding normalized users.
//! - [`cache`]: sled store of per-subject outcomes and the run history.
//! - [`plan`]: the pure diff of directory and cache into actions.
//! - [`target`]: the hoop gateway client, or the dry-run target.
//! - [`retry`]: which answers are retried, and the backoff between attempts.
//! - [`apply`]: executes actions through the rate limiter and retry policy.
//! - [`sync`]: one run, pull → plan → apply → record → summary.
//! - [`schedule`]: the cron loop of the daemon.
//! - [`service`]: `/healthz`, `/readyz`, `/metrics`; [`notify`]: systemd's notify protocol.
//! - [`events`]: every notable event's log line and metric, in one place.
//! - [`memory`]: glibc malloc tunings for the page-sized peaks of a read.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::unreachable)
)]
#![deny(clippy::await_holding_lock)]

pub mod apply;
pub mod auth;
pub mod cache;
pub mod config;
pub mod events;
pub mod groups;
pub mod http;
pub mod memory;
pub mod model;
pub mod notify;
pub mod plan;
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
