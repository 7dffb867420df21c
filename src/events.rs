//! Notable events, each logged in one place with structured fields first, so the
//! wording stays consistent and metrics can hook in beside the log line.

use std::time::Duration;

use crate::model::Email;
use crate::plan::{Plan, Problem};
use crate::sync::{Summary, SyncError};

pub fn directory_read(entries: usize, took: Duration) {
    tracing::info!(
        entries,
        took_ms = took.as_millis() as u64,
        "Read the directory."
    );
}

pub fn planned(plan: &Plan) {
    tracing::info!(
        create = plan.creates.len(),
        unchanged = plan.unchanged,
        skipped_inactive = plan.skipped_inactive,
        skipped_invalid = plan.invalid.len(),
        still_rejected = plan.still_rejected.len(),
        "Planned the run."
    );
}

pub fn user_created(email: &Email) {
    tracing::info!(%email, "Created user.");
}

pub fn user_existing(email: &Email) {
    tracing::info!(%email, "User already exists in the gateway; now managed.");
}

pub fn user_failed(email: &Email, reason: &str) {
    tracing::warn!(%email, reason, "Could not create user.");
}

pub fn user_skipped(problem: &Problem) {
    tracing::warn!(user = %problem.label, reason = %problem.reason, "Skipped user.");
}

pub fn run_finished(summary: &Summary) {
    let c = &summary.counts;
    tracing::info!(
        created = c.created,
        existing = c.existing,
        unchanged = c.unchanged,
        skipped_invalid = c.skipped_invalid,
        skipped_inactive = c.skipped_inactive,
        failed = c.failed,
        duration_ms = summary.duration_ms,
        dry_run = summary.dry_run,
        "Run finished."
    );
}

pub fn run_aborted(error: &SyncError, summary: &Summary) {
    let c = &summary.counts;
    tracing::error!(
        error = %error,
        created = c.created,
        existing = c.existing,
        failed = c.failed,
        interrupted = c.interrupted,
        duration_ms = summary.duration_ms,
        "Run aborted."
    );
}
