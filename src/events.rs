//! Notable events, each logged in one place with structured fields first, so the
//! wording stays consistent and metrics can hook in beside the log line.

use std::time::Duration;

use crate::apply::Outcome;
use crate::model::Email;
use crate::plan::{GuardTripped, Plan, Problem};
use crate::sync::{Summary, SyncError};

pub fn directory_read(entries: usize, took: Duration) {
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

pub fn inventory_unavailable(outcome: &Outcome) {
    tracing::warn!(
        ?outcome,
        "Could not list the gateway's users; existing users will be found one 409 at a time."
    );
}

pub fn deactivation_guard_tripped(guard: &GuardTripped) {
    tracing::error!(
        planned = guard.planned,
        allowed = guard.allowed,
        managed = guard.managed,
        "{guard}"
    );
}

pub fn planned(plan: &Plan) {
    tracing::info!(
        create = plan.creates.len(),
        update = plan.updates.len(),
        adopt = plan.adoptions.len(),
        deactivate = plan.deactivations.len(),
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

pub fn user_adopted(email: &Email) {
    tracing::info!(%email, "User already exists in the gateway; now managed.");
}

pub fn user_changed(email: &Email, action: &str, reason: &str) {
    tracing::info!(%email, action, reason, "Changed user.");
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
        updated = c.updated,
        reactivated = c.reactivated,
        deactivated = c.deactivated,
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
