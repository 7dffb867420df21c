//! One run: pull the directory, and plan its users against the cache (and, on a
//! first run, the gateway's inventory) through the groups policy as they arrive →
//! apply → record each outcome as it arrives → summary. The only place that writes
//! to the cache.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

mod groups;
mod outcomes;
mod tally;

use outcomes::send_ahead;
use tally::{Actions, Run, Sent};

use crate::apply::{Action, Applier, Outcome};
use crate::cache::{Cache, CacheError, CacheOpening, Records, RunRecord, SubjectRecord};
use crate::config::{Config, GroupPolicy};
use crate::events;
use crate::model::{Counts, Subject};
use crate::plan::{Plan, Planner, Problem, Rules};
use crate::source::{self, Arrivals, Cursor, Directory, SourceError};
use crate::target::{HoopClient, Target, TargetError};

/// What a run did, for people (text) and machines (`--output json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: Counts,
    /// Wall time of the run, in milliseconds to the microsecond.
    pub duration_ms: f64,
    pub dry_run: bool,
    /// Entries in the directory (the sum of the first nine counts).
    pub directory_users: usize,
    /// Users that failed in the gateway, with the reason.
    pub failures: Vec<Report>,
    /// Users skipped as invalid, with the reason.
    pub skipped: Vec<Report>,
    /// Why deactivations were held back, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deactivation_guard: Option<String>,
    /// Dry run: every write a real run would make, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<PlannedAction>,
    /// Gateway groups created and deleted, for a source that lists its groups.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups_created: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups_deleted: Vec<String>,
    /// Groups that could not be created or deleted (tried again next run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub group_failures: Vec<Report>,
}

impl Summary {
    fn record_groups(&mut self, done: groups::GroupsDone) {
        for (group, reason) in done.failed {
            tracing::warn!(group = %events::printable(&group), %reason, "Could not bring a gateway group in line.");
            self.group_failures.push(Report {
                user: format!("group {group}"),
                reason,
            });
        }
        for group in &done.created {
            tracing::info!(group = %events::printable(group), "Created gateway group.");
        }
        for group in &done.deleted {
            tracing::info!(group = %events::printable(group), "Deleted gateway group.");
        }
        (self.groups_created, self.groups_deleted) = (done.created, done.deleted);
    }

    /// Whether the run left work undone that an operator should look at.
    pub fn has_failures(&self) -> bool {
        self.counts.has_failures()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Report {
    pub user: String,
    pub reason: String,
}

impl From<Problem> for Report {
    fn from(problem: Problem) -> Self {
        Self {
            user: problem.label,
            reason: problem.reason,
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PlannedAction {
    /// `create`, `adopt`, `update`, `reactivate` or `deactivate`.
    pub action: &'static str,
    pub user: String,
    pub reason: String,
}

/// Why a run stopped before its end. All map to exit code 3.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The directory could not be read completely; nothing was changed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The gateway refused our API key; the run stopped starting new requests.
    #[error("the gateway refused our API key: {status} {message}")]
    TargetRefused { status: u16, message: String },
    /// The gateway answered a redirect, so `target.url` is not its API; the run
    /// stopped starting new requests, and recorded nobody as rejected.
    #[error("{0}")]
    TargetMisconfigured(String),
    /// The cache cannot be read or written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A shutdown stopped the run; what was done is recorded.
    #[error("stopped by shutdown; {interrupted} users were not done, the next run continues")]
    Interrupted { interrupted: usize },
    /// The planned creates could not be read back from disk; the creates after
    /// the failure were not sent.
    #[error("{0}; the creates after it were not sent, the next run plans them again")]
    PlannedCreatesLost(String),
}

/// A run that stopped early still reports what it did before stopping.
#[derive(Debug)]
pub struct Aborted {
    pub error: SyncError,
    pub summary: Summary,
}

/// Choices made on the command line rather than in the config.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunMode {
    /// Read everything, write nothing (neither the gateway nor the cache).
    pub dry_run: bool,
    /// Ignore `sync.max_deactivations` for this process.
    pub allow_mass_deactivation: bool,
    /// Resend users the gateway rejected before, even if their data did not change.
    pub retry_rejected: bool,
}

/// A read of at least this many entries gives the memory it freed back to the
/// system before the sends (docs/performance.md, run L6).
const RETURN_MEMORY_AFTER: usize = 10_000;

/// Everything a run needs, built once per process from the config.
pub struct Syncer {
    source: Box<dyn Directory>,
    applier: Applier,
    groups: GroupPolicy,
    rules: Rules,
    cache: Option<CacheOpening>,
    dry_run: bool,
}

/// Why a [`Syncer`] cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// The gateway client, as the config describes it.
fn gateway_client(config: &Config) -> Result<HoopClient, SetupError> {
    let builder = crate::http::client_builder(config.target.ca_pem.as_deref())
        .map_err(|err| TargetError::Client(crate::error_chain(&err)))?;
    Ok(HoopClient::new(&config.target, builder)?)
}

impl Syncer {
    /// Builds the clients and opens the cache. A dry run reads the gateway but writes
    /// nothing, and a cache that does not exist yet is not created.
    pub fn new(config: &Config, mode: RunMode) -> Result<Self, SetupError> {
        Self::with_source(config, mode, source::open(&config.source)?)
    }

    /// As [`Syncer::new`], reading `source` instead of the configured directory:
    /// for embedding idsync, and for tests of the seam.
    pub fn with_source(
        config: &Config,
        mode: RunMode,
        source: Box<dyn Directory>,
    ) -> Result<Self, SetupError> {
        let cache = if uses_cache(config, mode) {
            let cache = Cache::open_for(&config.cache.path, mode.dry_run)?;
            // This syncer makes run after run (`for_one_run` does not come
            // here). Runs that read only changes plan a few users each: reading
            // every record's summary from disk at each run would be most of
            // their cost.
            if source.reads_changes() && !mode.dry_run {
                cache.keep_summaries_in_memory();
                source.reads_again();
            }
            Some(CacheOpening::open(cache))
        } else {
            None
        };
        Self::with_cache(config, mode, cache, source)
    }

    /// As [`Syncer::new`], for a process that makes one run (`--sync-now`): the
    /// cache opens while the run starts reading the directory, and a cache that
    /// cannot be opened aborts the run before it plans anything.
    pub fn for_one_run(config: &Config, mode: RunMode) -> Result<Self, SetupError> {
        let cache =
            uses_cache(config, mode).then(|| CacheOpening::start(&config.cache.path, mode.dry_run));
        Self::with_cache(config, mode, cache, source::open(&config.source)?)
    }

    fn with_cache(
        config: &Config,
        mode: RunMode,
        cache: Option<CacheOpening>,
        source: Box<dyn Directory>,
    ) -> Result<Self, SetupError> {
        let client = gateway_client(config)?;
        let target = if mode.dry_run {
            Target::DryRun(client)
        } else {
            Target::Hoop(client)
        };
        let rules = Rules {
            update_existing: config.sync.update_existing,
            deprovision: config.sync.deprovision,
            max_deactivations: config.sync.max_deactivations,
            allow_mass_deactivation: mode.allow_mass_deactivation,
            admin_group: config.groups.admin_group.clone(),
            allow_admin_group: config.groups.allow_admin_group,
            retry_rejected: mode.retry_rejected,
            owns_slack_id: config.source.attributes.slack_id.is_some(),
            owns_picture: config.source.attributes.picture.is_some(),
        };
        Ok(Self {
            source,
            applier: Applier::new(target, &config.target, rules.clone()),
            groups: config.groups.clone(),
            rules,
            cache,
            dry_run: mode.dry_run,
        })
    }

    /// `check-config --connect`: reaches the IdP (token, one directory user) and the
    /// gateway (`/serverinfo`) with the real credentials, without opening the cache,
    /// so it works beside a running daemon. One result per part.
    pub async fn probe(
        config: &Config,
    ) -> Result<Vec<(&'static str, Result<String, String>)>, SetupError> {
        let (source, client) = (source::open(&config.source)?, gateway_client(config)?);
        let directory = source.probe().await.map_err(|err| err.to_string());
        let gateway = match client.server_info().await {
            crate::target::Answer::Done(info) => Ok(format!(
                "API key accepted at {} (gateway version {})",
                config.target.url,
                info.get("version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown")
            )),
            crate::target::Answer::Unauthorized { status, message } => Err(format!(
                "the gateway refused the API key: {status} {message}"
            )),
            other => Err(format!("the gateway did not answer as expected: {other}")),
        };
        Ok(vec![("directory", directory), ("gateway", gateway)])
    }

    /// One complete run. `shutdown` stops it between requests; what was done is kept.
    pub async fn run_once(&self, shutdown: &CancellationToken) -> Result<Summary, Aborted> {
        self.run(shutdown, false).await
    }

    /// As [`Syncer::run_once`], reading the whole directory even when the source
    /// reads changes: the reconcile that repairs drift.
    pub async fn reconcile(&self, shutdown: &CancellationToken) -> Result<Summary, Aborted> {
        self.run(shutdown, true).await
    }

    /// The source's change notifications, when it is told of changes (push).
    pub fn wakeups(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.source.wakeups()
    }

    async fn run(&self, shutdown: &CancellationToken, whole: bool) -> Result<Summary, Aborted> {
        let span = tracing::info_span!("run", dry_run = self.dry_run);
        let started_at = chrono::Utc::now();
        let started = Instant::now();
        let result = self
            .run_inner(shutdown, started, whole)
            .instrument(span)
            .await;
        if !self.dry_run {
            self.record_run(started_at, &result).await;
        }
        match &result {
            Ok(summary) => {
                events::run_finished(&summary.counts, summary.duration_ms, summary.dry_run)
            }
            Err(Aborted { error, summary }) => {
                events::run_aborted(error, &summary.counts, summary.duration_ms, summary.dry_run)
            }
        }
        result
    }

    async fn run_inner(
        &self,
        shutdown: &CancellationToken,
        started: Instant,
        whole: bool,
    ) -> Result<Summary, Aborted> {
        let mut run = Run {
            summary: Summary {
                dry_run: self.dry_run,
                ..Summary::default()
            },
            started,
            adoptions: Vec::new(),
        };
        // `stop` ends the sends; the read has a token of its own, which the
        // planner cancels when it fails.
        let stop = shutdown.child_token();
        let (plan, managed_before, ReadTail { cursor, groups }) =
            match self.read_and_plan(shutdown, &stop, &mut run, whole).await {
                Ok(planned) => planned,
                Err(err) => return Err(run.abort(err)),
            };
        let creates_read_back = plan.creates.read_back();
        let actions = run.take_plan(plan, self.dry_run);
        if let Err(err) = self.record(&run.adoptions).await {
            return Err(run.abort(err.into()));
        }
        let groups = self.create_groups(groups, &stop).await;
        let sent = match self.send_and_record(actions, &stop, &mut run).await {
            Ok(sent) => sent,
            Err(err) => return Err(run.abort(err.into())),
        };
        run.summary.counts.interrupted = sent.not_done;
        if !self.dry_run {
            let c = &run.summary.counts;
            events::managed_users(
                (managed_before + c.created + c.existing + c.reactivated)
                    .saturating_sub(c.deactivated),
            );
        }
        let lost = creates_read_back.error().map(|lost| lost.to_string());
        if let Some(error) = stopped_short(sent, lost) {
            return Err(run.abort(error));
        }
        if let Some(step) = groups {
            let done = self.delete_removed_groups(step, &stop).await;
            run.summary.record_groups(done);
        }
        if run.summary.has_failures() {
            // Kept as it was: the changes are read again, and the failed users retried.
            return Ok(run.finish());
        }
        if let Err(err) = self.save_cursor(cursor).await {
            return Err(run.abort(err.into()));
        }
        Ok(run.finish())
    }

    /// Keeps a change-reading source's next position, once the run did all it planned.
    async fn save_cursor(&self, cursor: NextCursor) -> Result<(), CacheError> {
        match &self.cache {
            Some(opening) if self.source.reads_changes() && !self.dry_run => {
                let cache = opening.get().await?;
                let (position, base) = (cursor.position.as_deref(), cursor.base.as_ref());
                cache
                    .save_cursor(&self.source.name(), position, base)
                    .await?;
                if let Some(cursor) = position {
                    self.source.cursor_kept(cursor);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The position a change-reading source's last successful run left; none
    /// for a `whole` read.
    async fn load_cursor(&self, whole: bool) -> Result<Option<Cursor>, CacheError> {
        match &self.cache {
            Some(opening) if self.source.reads_changes() && !whole => {
                opening.get().await?.cursor(&self.source.name())
            }
            _ => Ok(None),
        }
    }

    /// Reads the directory and plans its users as they arrive, while the cache
    /// loads; nothing is done with the plan unless the whole read succeeds.
    /// Returns the plan, how many users were managed before the run, and where
    /// a change-reading source's next read starts.
    async fn read_and_plan(
        &self,
        shutdown: &CancellationToken,
        stop: &CancellationToken,
        run: &mut Run,
        whole: bool,
    ) -> Result<(Plan, usize, ReadTail), SyncError> {
        let cursor = self.load_cursor(whole).await?;
        let reading = shutdown.child_token();
        let (delivery, arrivals) = source::delivery::channel(reading.clone());
        // A shutdown ends the read at once, even mid-request or in a retry wait:
        // dropping the read drops its requests, and its delivery ends the planning.
        let read = async {
            tokio::select! {
                read = self.source.read(&reading, delivery, cursor.as_ref()) => read,
                () = reading.cancelled() => Err(SourceError::Interrupted),
            }
        };
        let planning = self.plan_while_reading(arrivals, stop, &reading);
        let (read, planned) = tokio::join!(read, planning);
        let (planner, dropped) = planned?;
        let read = read?;
        if read.entries >= RETURN_MEMORY_AFTER {
            // What the read and the planning freed sits in the arenas of the
            // threads that did them; the sends and the cache's writes allocate
            // elsewhere, so without this it stays resident for the whole run.
            crate::memory::return_freed_memory();
        }
        run.summary.directory_users = read.entries;
        events::directory_read(read.entries, run.started.elapsed());
        for (group, members) in dropped {
            events::admin_group_dropped(&group, &self.groups.admin_group, members);
        }
        let managed_before = planner.managed();
        let (plan, leftover) = planner.finish(read.unusable, read.scope)?;
        // Freeing a large cache's records takes a while: not in the run's way.
        tokio::task::spawn_blocking(move || drop(leftover));
        events::planned(&plan.size());
        let tail = ReadTail {
            cursor: NextCursor {
                position: read.cursor,
                base: read.cursor_base,
            },
            groups: read.groups,
        };
        Ok((plan, managed_before, tail))
    }

    /// Sends the actions through the applier and records their outcomes in
    /// batches (see [`outcomes`]) while the next requests go out.
    async fn send_and_record(
        &self,
        actions: Actions<impl Iterator<Item = Action>>,
        stop: &CancellationToken,
        run: &mut Run,
    ) -> Result<Sent, CacheError> {
        let mut sent = Sent {
            not_done: actions.directory_actions,
            refused: None,
            misdirected: None,
        };
        let (send, batches) = send_ahead(self.applier.run_all(actions.all, stop));
        let record = async {
            // Owned here, so that a failed recording drops it and frees the sends.
            let mut batches = batches;
            while let Some(batch) = batches.next().await {
                let records: Vec<_> = batch
                    .into_iter()
                    .filter_map(|(action, outcome)| {
                        sent.count(&action, &outcome);
                        run.tally(&action, outcome)
                    })
                    .collect();
                if let Err(err) = self.record(&records).await {
                    stop.cancel();
                    return Err(err);
                }
            }
            Ok(())
        };
        let ((), recorded) = tokio::join!(send, record);
        recorded.map(|()| sent)
    }

    /// Plans the users `pull` hands out, once the cache's records (and, for an empty
    /// cache, the gateway's inventory) are in; returns the planner and the IdP groups
    /// dropped for mapping to the admin group, with their members. An error stops
    /// `reading`. The cache's loader is always waited for, so a failed run leaves
    /// the cache closed for a reload or the next run.
    async fn plan_while_reading(
        &self,
        mut arrivals: Arrivals,
        stop: &CancellationToken,
        reading: &CancellationToken,
    ) -> Result<(Planner<'_>, BTreeMap<String, usize>), SyncError> {
        let cached = match &self.cache {
            Some(opening) => match opening.get().await {
                Ok(cache) => cache.subjects_in_background(!self.dry_run).await,
                Err(err) => Err(err),
            },
            None => Ok(Records::default()),
        };
        let cached = cached.map_err(|err| {
            reading.cancel();
            SyncError::from(err)
        })?;
        // A first run against a populated gateway adopts its users instead of
        // meeting a 409 for each.
        let inventory = if cached.is_empty() {
            match self.applier.inventory(stop).await {
                Ok(users) => Some(users.into_iter().map(|u| (u.email.clone(), u)).collect()),
                Err(Outcome::Unauthorized { status, message }) => {
                    reading.cancel();
                    return Err(SyncError::TargetRefused { status, message });
                }
                Err(Outcome::Misdirected { reason }) => {
                    reading.cancel();
                    return Err(SyncError::TargetMisconfigured(reason));
                }
                Err(Outcome::Interrupted) => {
                    reading.cancel();
                    return Err(SourceError::Interrupted.into());
                }
                Err(outcome) => {
                    events::inventory_unavailable(&outcome);
                    None
                }
            }
        } else {
            None
        };
        let mut planner = Planner::new(cached, inventory, &self.rules);
        // A large plan's creates wait to be sent in the cache's directory.
        if let Some(opening) = &self.cache {
            planner.spill_creates_into(opening.path());
        }
        let mut groups = self.groups.mapper();
        while let Some(mut chunk) = arrivals.next().await {
            let planned = chunk.len();
            groups.apply(&mut chunk);
            planner.add(chunk).map_err(|err| {
                reading.cancel();
                SyncError::from(err)
            })?;
            arrivals.planned(planned);
        }
        Ok((planner, groups.dropped()))
    }

    /// Makes outcomes durable; a dry run records nothing.
    async fn record(&self, records: &[(Subject, Option<SubjectRecord>)]) -> Result<(), CacheError> {
        match &self.cache {
            Some(opening) if !self.dry_run && !records.is_empty() => {
                opening.get().await?.record(records).await
            }
            _ => Ok(()),
        }
    }

    async fn record_run(
        &self,
        started_at: chrono::DateTime<chrono::Utc>,
        result: &Result<Summary, Aborted>,
    ) {
        // Planning waited for the opening, so a cache that is not open failed to.
        let Some(cache) = self.cache.as_ref().and_then(CacheOpening::if_open) else {
            return;
        };
        let (outcome, summary, error) = match result {
            Ok(summary) if summary.has_failures() => ("failures", summary, None),
            Ok(summary) => ("ok", summary, None),
            Err(aborted) => ("aborted", &aborted.summary, Some(aborted.error.to_string())),
        };
        let run = RunRecord {
            started_at: started_at.to_rfc3339(),
            finished_at: chrono::Utc::now().to_rfc3339(),
            outcome: outcome.into(),
            counts: summary.counts.clone(),
            error,
        };
        if let Err(err) = cache.record_run(&run).await {
            tracing::error!(error = %err, "Could not record the run in the history.");
        }
    }
}

/// Why the sends stopped short of the plan, if they did: the run aborts with it.
fn stopped_short(sent: Sent, creates_lost: Option<String>) -> Option<SyncError> {
    if let Some((status, message)) = sent.refused {
        return Some(SyncError::TargetRefused { status, message });
    }
    if let Some(reason) = sent.misdirected {
        return Some(SyncError::TargetMisconfigured(reason));
    }
    if let Some(lost) = creates_lost {
        return Some(SyncError::PlannedCreatesLost(lost));
    }
    (sent.not_done > 0).then_some(SyncError::Interrupted {
        interrupted: sent.not_done,
    })
}

/// A dry run does not create a cache that does not exist yet.
fn uses_cache(config: &Config, mode: RunMode) -> bool {
    !mode.dry_run || config.cache.path.exists()
}

/// What a read says besides its users, kept for after the users are sent.
struct ReadTail {
    cursor: NextCursor,
    /// The directory's groups, when the source lists them.
    groups: Option<Vec<String>>,
}

/// Where a change-reading source's next read starts: [`Read::cursor`](source::Read::cursor) and
/// [`Read::cursor_base`](source::Read::cursor_base).
struct NextCursor {
    position: Option<String>,
    base: Option<Arc<str>>,
}
