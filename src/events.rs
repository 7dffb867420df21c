//! Notable events. Each one logs (structured fields first) and bumps its metric in
//! one place, so logs and `/metrics` always agree. Metric labels are bounded: an
//! action, an outcome, a status class — never a user.

use std::borrow::Cow;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::model::{Counts, Email};

/// `text` from the directory or the gateway (an id, a name, an error message) made
/// safe to print as text: control characters, and the Unicode ones that reorder or
/// break lines, are escaped (`\n`, `\u{1b}`), so a value can neither forge a log
/// line nor drive the terminal. JSON output needs none of this: serde escapes it.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            c if unsafe_char(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", u32::from(c));
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

/// Counters for the `--sync-now` progress display.
pub mod progress {
    use super::*;

    pub static PULLED: AtomicU64 = AtomicU64::new(0);
    pub static PLANNED: AtomicU64 = AtomicU64::new(0);
    pub static DONE: AtomicU64 = AtomicU64::new(0);

    pub fn read() -> (u64, u64, u64) {
        (
            PULLED.load(Ordering::Relaxed),
            PLANNED.load(Ordering::Relaxed),
            DONE.load(Ordering::Relaxed),
        )
    }
}

pub fn users_pulled(count: usize) {
    progress::PULLED.fetch_add(count as u64, Ordering::Relaxed);
}

pub fn directory_read(entries: usize, took: Duration) {
    gauge!("idsync_directory_users").set(entries as f64);
    tracing::info!(
        entries,
        took_ms = took.as_millis() as u64,
        "Read the directory."
    );
}

pub fn admin_group_dropped(idp_group: &str, admin_group: &str, members: usize) {
    tracing::warn!(
        idp_group,
        admin_group,
        members,
        "This IdP group maps to the gateway's admin group and is not synced; set [groups] allow_admin_group = true to sync it."
    );
}

pub fn inventory_unavailable(outcome: &dyn std::fmt::Display) {
    tracing::warn!(
        outcome = %printable(&outcome.to_string()),
        "Could not list the gateway's users; existing users will be found one 409 at a time."
    );
}

pub fn creates_not_spilled(place: &std::path::Path, err: &std::io::Error) {
    tracing::warn!(
        place = %place.display(),
        error = %err,
        "Could not write the planned creates to disk; the rest are held in memory."
    );
}

pub fn spilled_creates_unreadable(err: &std::io::Error, left: usize) {
    tracing::error!(
        error = %err,
        left,
        "Could not read back the planned creates written to disk; the rest are not sent this run, and the next run plans them again."
    );
}

/// `guard` says in words what was held back and what to do.
pub fn deactivation_guard_tripped(planned: usize, allowed: usize, managed: usize, guard: &str) {
    counter!("idsync_deactivation_guard_trips_total").increment(1);
    tracing::error!(planned, allowed, managed, "{guard}");
}

/// The size of a run's plan, for [`planned`].
#[derive(Debug, Default)]
pub struct PlanSize {
    pub create: usize,
    pub update: usize,
    pub adopt: usize,
    pub deactivate: usize,
    pub unchanged: usize,
    pub skipped_inactive: usize,
    pub skipped_invalid: usize,
    pub still_rejected: usize,
}

pub fn planned(size: &PlanSize) {
    let actions = size.create + size.update + size.deactivate;
    progress::PLANNED.store(actions as u64, Ordering::Relaxed);
    tracing::info!(
        create = size.create,
        update = size.update,
        adopt = size.adopt,
        deactivate = size.deactivate,
        unchanged = size.unchanged,
        skipped_inactive = size.skipped_inactive,
        skipped_invalid = size.skipped_invalid,
        still_rejected = size.still_rejected,
        "Planned the run."
    );
}

fn user_counted(action: &'static str, outcome: &'static str) {
    counter!("idsync_users_total", "action" => action, "outcome" => outcome).increment(1);
}

/// An action reached its end, whatever the outcome.
pub fn action_settled() {
    progress::DONE.fetch_add(1, Ordering::Relaxed);
}

pub fn user_created(email: &Email) {
    user_counted("create", "done");
    tracing::info!(%email, "Created user.");
}

pub fn user_adopted(email: &Email) {
    user_counted("adopt", "done");
    tracing::info!(%email, "User already exists in the gateway; now managed.");
}

/// A dry run found the user in the gateway: a real run would adopt it.
pub fn user_would_adopt(email: &Email) {
    tracing::info!(%email, "User already exists in the gateway; would adopt it (dry run).");
}

pub fn user_changed(email: &Email, action: &'static str, reason: &str) {
    user_counted(action, "done");
    tracing::info!(%email, action, reason, "Changed user.");
}

pub fn user_unchanged(action: &'static str) {
    user_counted(action, "unchanged");
}

pub fn user_failed(email: &Email, action: &'static str, reason: &str) {
    user_counted(action, "failed");
    tracing::warn!(%email, action, reason, "Could not change user.");
}

pub fn user_skipped(user: &str, reason: &str) {
    user_counted("skip", "invalid");
    tracing::warn!(user, reason, "Skipped user.");
}

/// One answer from the gateway (or none: `None` for a transport error).
pub fn target_answered(status: Option<u16>) {
    let class = match status {
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(500..=599) => "5xx",
        _ => "error",
    };
    counter!("idsync_target_requests_total", "status_class" => class).increment(1);
    if status == Some(429) {
        counter!("idsync_target_rate_limited_total").increment(1);
    }
}

pub fn retrying(reason: &str, wait: Duration, attempt: u32) {
    counter!("idsync_target_retries_total").increment(1);
    tracing::debug!(
        reason,
        wait_ms = wait.as_millis() as u64,
        attempt,
        "Gateway request failed for now; retrying."
    );
}

pub fn managed_users(count: usize) {
    gauge!("idsync_managed_users").set(count as f64);
}

pub fn next_run(unix_seconds: i64) {
    gauge!("idsync_next_run_timestamp_seconds").set(unix_seconds as f64);
}

pub fn run_finished(counts: &Counts, duration_ms: f64, dry_run: bool) {
    let c = counts;
    let outcome = if c.has_failures() { "failures" } else { "ok" };
    if !dry_run {
        counter!("idsync_runs_total", "outcome" => outcome).increment(1);
        histogram!("idsync_run_duration_seconds").record(duration_ms / 1000.0);
        gauge!("idsync_last_success_timestamp_seconds").set(chrono::Utc::now().timestamp() as f64);
    }
    tracing::info!(
        created = c.created,
        existing = c.existing,
        updated = c.updated,
        reactivated = c.reactivated,
        deactivated = c.deactivated,
        unchanged = c.unchanged,
        skipped_invalid = c.skipped_invalid,
        skipped_inactive = c.skipped_inactive,
        failed = c.failed,
        duration_ms,
        dry_run,
        "Run finished."
    );
}

pub fn run_aborted(
    error: &dyn std::fmt::Display,
    counts: &Counts,
    duration_ms: f64,
    dry_run: bool,
) {
    let c = counts;
    if !dry_run {
        counter!("idsync_runs_total", "outcome" => "aborted").increment(1);
        histogram!("idsync_run_duration_seconds").record(duration_ms / 1000.0);
    }
    tracing::error!(
        error = %printable(&error.to_string()),
        created = c.created,
        existing = c.existing,
        failed = c.failed,
        interrupted = c.interrupted,
        duration_ms,
        "Run aborted."
    );
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn printable_escapes_what_could_forge_a_line_or_drive_the_terminal() {
        assert_eq!(printable("Eve Adams"), "Eve Adams");
        assert!(matches!(printable("Zoë"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(
            printable("Eve\nINFO forged\x1b[2J\r\t\u{202e}x"),
            "Eve\\nINFO forged\\u{1b}[2J\\r\\t\\u{202e}x"
        );
    }
}
