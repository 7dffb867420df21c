//! The daemon loop: runs on the cron schedule (and optionally at start), never two
//! runs at once, re-reads the config after SIGHUP, and reports its state to
//! `/readyz` and systemd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::events;
use crate::notify::Notifier;
use crate::service::Health;
use crate::sync::{Aborted, RunMode, SetupError, Summary, Syncer};

/// Who watches the daemon: `/readyz` (when listening) and systemd.
pub struct Supervision {
    pub health: Option<Health>,
    pub notifier: Notifier,
}

/// Set by SIGHUP; the loop takes it before the next run.
#[derive(Clone, Default)]
pub struct ReloadRequest(Arc<AtomicBool>);

impl ReloadRequest {
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::SeqCst)
    }
}

/// Runs until `shutdown` is cancelled. A run in progress when it is cancelled stops
/// starting requests, lets those in flight finish, and records what it did.
/// Fails only when, after a reload, no syncer can be built at all.
pub async fn run_daemon(
    mut config: Config,
    mut syncer: Syncer,
    mode: RunMode,
    load: impl Fn() -> Result<Config, ConfigError>,
    reload: ReloadRequest,
    supervision: &Supervision,
    shutdown: CancellationToken,
) -> Result<(), SetupError> {
    let mut run_now = config.sync.run_on_start;
    let mut last = "no run yet".to_owned();
    loop {
        if !run_now {
            // Computed after each run, so a run that overlaps a fire time skips it
            // instead of starting a second run behind it.
            let Some(next) = config.sync.schedule.upcoming(Utc).next() else {
                tracing::error!("The schedule has no future fire time; stopping.");
                return Ok(());
            };
            events::next_run(next.timestamp());
            supervision.notifier.status(&format!(
                "next sync {}; last: {last}",
                next.format("%Y-%m-%d %H:%M:%S UTC")
            ));
            tracing::info!(next_run = %next.to_rfc3339(), "Waiting for the next scheduled run.");
            if !sleep_until(next, &shutdown).await {
                return Ok(());
            }
        }
        run_now = false;
        if reload.take() {
            (config, syncer) = reloaded(config, syncer, mode, &load)?;
        }
        supervision.notifier.status("syncing");
        let result = syncer.run_once(&shutdown).await;
        last = describe(&result);
        if let Some(health) = &supervision.health {
            match &result {
                Ok(_) => health.run_succeeded(SystemTime::now()),
                Err(aborted) => health.run_failed(aborted.error.to_string()),
            }
        }
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Sleeps until `at`; `false` when shutdown came first.
async fn sleep_until(at: DateTime<Utc>, shutdown: &CancellationToken) -> bool {
    let wait = (at - Utc::now()).to_std().unwrap_or_default();
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

/// The new config and syncer, or the old ones when the new config is invalid.
/// The old syncer is dropped before the new one opens the same cache (sled allows
/// one opener).
fn reloaded(
    config: Config,
    syncer: Syncer,
    mode: RunMode,
    load: &impl Fn() -> Result<Config, ConfigError>,
) -> Result<(Config, Syncer), SetupError> {
    let new_config = match load() {
        Ok(new_config) => new_config,
        Err(err) => {
            tracing::error!(error = %err, "The reloaded config is invalid; keeping the running one.");
            return Ok((config, syncer));
        }
    };
    drop(syncer);
    match Syncer::new(&new_config, mode) {
        Ok(syncer) => {
            tracing::info!("Reloaded the config; it applies from this run on.");
            Ok((new_config, syncer))
        }
        Err(err) => {
            tracing::error!(error = %err, "Cannot run with the reloaded config; keeping the running one.");
            let syncer = Syncer::new(&config, mode)?;
            Ok((config, syncer))
        }
    }
}

/// The last run in a few words, for systemd's STATUS line.
fn describe(result: &Result<Summary, Aborted>) -> String {
    match result {
        Ok(summary) => {
            let c = &summary.counts;
            format!(
                "{} created, {} updated, {} deactivated, {} failed",
                c.created, c.updated, c.deactivated, c.failed
            )
        }
        Err(aborted) => format!("aborted ({})", aborted.error),
    }
}
