//! The daemon loop: runs on the cron schedule (and optionally at start), and, for
//! a source told of changes (push), soon after each change; never two runs at
//! once; re-reads the config after SIGHUP, and reports its state to `/readyz`
//! and systemd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
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
    let mut retry = Backoff::default();
    loop {
        let mut wake = Wake::Schedule;
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
            wake = wait_for_work(next, syncer.wakeups(), retry.due(), &shutdown).await;
            if wake == Wake::Shutdown {
                return Ok(());
            }
        }
        run_now = false;
        if reload.take() {
            (config, syncer) = reloaded(config, syncer, mode, &load)?;
        }
        supervision.notifier.status("syncing");
        let result = run_for(&syncer, wake, &shutdown).await;
        last = describe(&result);
        let failed = !matches!(&result, Ok(summary) if !summary.has_failures());
        retry.after_run(failed && syncer.wakeups().is_some());
        report(supervision, &result);
        if shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// One run. A source told of changes reads only them when woken by one; the
/// schedule's run reads it whole, repairing drift.
async fn run_for(
    syncer: &Syncer,
    wake: Wake,
    shutdown: &CancellationToken,
) -> Result<Summary, Aborted> {
    match (wake, syncer.wakeups().is_some()) {
        (Wake::Schedule, true) => syncer.reconcile(shutdown).await,
        _ => syncer.run_once(shutdown).await,
    }
}

/// Tells `/readyz` how the run went.
fn report(supervision: &Supervision, result: &Result<Summary, Aborted>) {
    if let Some(health) = &supervision.health {
        match result {
            Ok(_) => health.run_succeeded(SystemTime::now()),
            Err(aborted) => health.run_failed(aborted.error.to_string()),
        }
    }
}

/// What ended the wait for the next run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wake {
    /// The cron schedule fired.
    Schedule,
    /// The source was told of a change, or a failed change run is due again.
    Changed,
    Shutdown,
}

/// How long changes wait to be batched into one run after the first arrives.
const CHANGE_BATCH: Duration = Duration::from_millis(100);

/// Waits for the schedule's next fire time, a change the source was told of
/// (then a little longer, so a burst of pushes makes one run), a retry that is
/// due, or shutdown.
async fn wait_for_work(
    next: DateTime<Utc>,
    changes: Option<Arc<Notify>>,
    retry_at: Option<tokio::time::Instant>,
    shutdown: &CancellationToken,
) -> Wake {
    let changed = async {
        match changes {
            Some(changes) => changes.notified().await,
            None => std::future::pending().await,
        }
    };
    let retry = async {
        match retry_at {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        scheduled = sleep_until(next, shutdown) => {
            if scheduled { Wake::Schedule } else { Wake::Shutdown }
        }
        () = changed => {
            tokio::time::sleep(CHANGE_BATCH).await;
            Wake::Changed
        }
        () = retry => Wake::Changed,
    }
}

/// When a change run that failed is tried again: after 5 s, doubling up to 5 min,
/// so a gateway that is down is not hammered and a push never waits for the
/// schedule.
#[derive(Default)]
struct Backoff {
    wait: Option<Duration>,
    due: Option<tokio::time::Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(5);
    const LONGEST: Duration = Duration::from_secs(300);

    fn after_run(&mut self, failed: bool) {
        if !failed {
            *self = Self::default();
            return;
        }
        let wait = self
            .wait
            .map_or(Self::FIRST, |w| (w * 2).min(Self::LONGEST));
        self.wait = Some(wait);
        self.due = Some(tokio::time::Instant::now() + wait);
    }

    fn due(&self) -> Option<tokio::time::Instant> {
        self.due
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_failed_change_run_is_retried_after_a_doubling_wait_and_a_success_resets_it() {
        let mut backoff = Backoff::default();
        assert_eq!(backoff.due(), None);
        let mut waits = Vec::new();
        for _ in 0..8 {
            backoff.after_run(true);
            let due = backoff.due().expect("a retry is due");
            waits.push((due - tokio::time::Instant::now()).as_secs());
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        backoff.after_run(false);
        assert_eq!(backoff.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_wakes_the_loop_after_a_short_batching_wait() {
        let changes = Arc::new(Notify::new());
        changes.notify_one();
        let never = Utc::now() + chrono::Duration::days(365);
        let started = tokio::time::Instant::now();
        let wake = wait_for_work(never, Some(changes), None, &CancellationToken::new()).await;
        assert_eq!(wake, Wake::Changed);
        assert_eq!(started.elapsed(), CHANGE_BATCH);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        assert_eq!(
            wait_for_work(never, None, None, &shutdown).await,
            Wake::Shutdown
        );
    }
}
