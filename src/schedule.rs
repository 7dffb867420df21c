//! The daemon loop: runs on the cron schedule (and optionally at start), never two
//! runs at once, until shutdown.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::SyncConfig;
use crate::sync::Syncer;

/// Runs until `shutdown` is cancelled. A run in progress when it is cancelled stops
/// starting requests, lets those in flight finish, and records what it did.
pub async fn run_daemon(syncer: &Syncer, config: &SyncConfig, shutdown: CancellationToken) {
    let mut run_now = config.run_on_start;
    loop {
        if !run_now {
            // Computed after each run, so a run that overlaps a fire time skips it
            // instead of starting a second run behind it.
            let Some(next) = config.schedule.upcoming(Utc).next() else {
                tracing::error!("The schedule has no future fire time; stopping.");
                return;
            };
            tracing::info!(next_run = %next.to_rfc3339(), "Waiting for the next scheduled run.");
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        run_now = false;
        // Outcomes and errors are logged by the run itself; the daemon carries on.
        let _ = syncer.run_once(&shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
    }
}
