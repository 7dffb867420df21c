//! One run: pull the directory, and plan its users against the cache (and, on a
//! first run, the gateway's inventory) through the groups policy as they arrive →
//! apply → record each outcome as it arrives → summary. The only place that writes
//! to the cache.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{Action, Applier, Outcome};
use crate::auth::TokenSource;
use crate::cache::{
    Cache, CacheError, CacheOpening, Records, RunRecord, SubjectRecord, SubjectState,
};
use crate::config::{Config, GroupPolicy};
use crate::events;
use crate::model::{DirectoryUser, Email, Fingerprint, Subject};
use crate::plan::{ChangeKind, Plan, Planner, Problem, Rules, UpdateUser};
use crate::source::scim::ScimSource;
use crate::source::SourceError;
use crate::target::{HoopClient, Target, TargetError};

/// How many users each count holds. Every directory entry lands in exactly one of
/// the first nine; the deactivation counts are about managed users, who may have
/// left the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub created: usize,
    /// Already in the gateway; now managed by idsync.
    pub existing: usize,
    pub updated: usize,
    pub reactivated: usize,
    pub unchanged: usize,
    pub skipped_invalid: usize,
    pub skipped_inactive: usize,
    pub failed: usize,
    /// Not done because a shutdown or an abort stopped the run.
    pub interrupted: usize,
    pub deactivated: usize,
    pub deactivation_failed: usize,
    /// Held back by the `max_deactivations` guard.
    pub deactivations_blocked: usize,
}

/// What a run did, for people (text) and machines (`--output json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: Counts,
    pub duration_ms: u64,
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
}

impl Summary {
    /// Whether the run left work undone that an operator should look at.
    pub fn has_failures(&self) -> bool {
        let c = &self.counts;
        c.failed > 0 || c.deactivation_failed > 0 || c.deactivations_blocked > 0
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
}

/// Everything a run needs, built once per process from the config.
pub struct Syncer {
    source: ScimSource,
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
    #[error("cannot set up the directory client: {0}")]
    Source(String),
}

const USER_AGENT: &str = concat!("idsync/", env!("CARGO_PKG_VERSION"));
/// Timeout of one directory request; a page of 1,000 users is a few hundred KiB.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Outcomes recorded in one write to the cache (one flush).
const RECORD_BATCH: usize = 1024;
/// Outcomes sent and not yet recorded. Near the end of a first import of a million
/// users, sled's writes fall behind the gateway's pace, and an unbounded queue
/// would hold every outcome sent meanwhile.
const MAX_UNRECORDED_OUTCOMES: usize = 4 * RECORD_BATCH;

/// Users read but not planned yet. Planning starts once the cache is loaded, and
/// a fast directory must not pile up users in memory meanwhile.
#[derive(Default)]
struct Backlog {
    users: AtomicUsize,
    planned: tokio::sync::Notify,
}

impl Backlog {
    /// Users the read may run ahead of the planner (a page or two more at times).
    const ROOM: usize = 50_000;

    fn added(&self, users: usize) {
        self.users.fetch_add(users, Ordering::Relaxed);
    }

    fn planned(&self, users: usize) {
        self.users.fetch_sub(users, Ordering::Relaxed);
        self.planned.notify_waiters();
    }

    /// Returns once the planner has caught up to within [`Backlog::ROOM`].
    async fn room(&self) {
        loop {
            // Created before the check, so no wake-up in between is missed.
            let planned = self.planned.notified();
            if self.users.load(Ordering::Relaxed) <= Self::ROOM {
                return;
            }
            planned.await;
        }
    }
}

fn http_builder(ca_pem: Option<&[u8]>) -> reqwest::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        // Tokens and API keys must not follow a redirect to another host.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = ca_pem {
        for cert in reqwest::Certificate::from_pem_bundle(pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// The directory source and the gateway client, as the config describes them.
fn clients(config: &Config) -> Result<(ScimSource, HoopClient), SetupError> {
    let source_http = http_builder(config.source.ca_pem.as_deref())
        .and_then(|b| b.timeout(SOURCE_TIMEOUT).build())
        .map_err(|err| SetupError::Source(crate::error_chain(&err)))?;
    let tokens = TokenSource::new(&config.source.auth, source_http.clone());
    let source = ScimSource::new(&config.source, source_http, tokens);
    let builder = http_builder(config.target.ca_pem.as_deref())
        .map_err(|err| TargetError::Client(crate::error_chain(&err)))?;
    Ok((source, HoopClient::new(&config.target, builder)?))
}

impl Syncer {
    /// Builds the clients and opens the cache. A dry run reads the gateway but writes
    /// nothing, and a cache that does not exist yet is not created.
    pub fn new(config: &Config, mode: RunMode) -> Result<Self, SetupError> {
        let cache = if uses_cache(config, mode) {
            let cache = Cache::open_for(&config.cache.path, mode.dry_run)?;
            Some(CacheOpening::open(cache))
        } else {
            None
        };
        Self::with_cache(config, mode, cache)
    }

    /// As [`Syncer::new`], for a process that makes one run (`--sync-now`): the
    /// cache opens while the run starts reading the directory, and a cache that
    /// cannot be opened aborts the run before it plans anything.
    pub fn for_one_run(config: &Config, mode: RunMode) -> Result<Self, SetupError> {
        let cache =
            uses_cache(config, mode).then(|| CacheOpening::start(&config.cache.path, mode.dry_run));
        Self::with_cache(config, mode, cache)
    }

    fn with_cache(
        config: &Config,
        mode: RunMode,
        cache: Option<CacheOpening>,
    ) -> Result<Self, SetupError> {
        let (source, client) = clients(config)?;
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
        let (source, client) = clients(config)?;
        let directory = source
            .probe()
            .await
            .map(|total| format!("token accepted; {total} users at {}", config.source.url))
            .map_err(|err| err.to_string());
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
            other => Err(format!("the gateway did not answer as expected: {other:?}")),
        };
        Ok(vec![("directory", directory), ("gateway", gateway)])
    }

    /// One complete run. `shutdown` stops it between requests; what was done is kept.
    pub async fn run_once(&self, shutdown: &CancellationToken) -> Result<Summary, Aborted> {
        let span = tracing::info_span!("run", dry_run = self.dry_run);
        let started_at = chrono::Utc::now();
        let started = Instant::now();
        let result = self.run_inner(shutdown, started).instrument(span).await;
        if !self.dry_run {
            self.record_run(started_at, &result).await;
        }
        match &result {
            Ok(summary) => events::run_finished(summary),
            Err(aborted) => events::run_aborted(&aborted.error, &aborted.summary),
        }
        result
    }

    async fn run_inner(
        &self,
        shutdown: &CancellationToken,
        started: Instant,
    ) -> Result<Summary, Aborted> {
        let mut run = Run {
            summary: Summary {
                dry_run: self.dry_run,
                ..Summary::default()
            },
            started,
            adoptions: Vec::new(),
        };

        // The cache loads while the directory downloads, and users are planned as
        // they arrive; nothing is done with the plan unless the whole read succeeds.
        let stop = shutdown.child_token();
        let reading = shutdown.child_token();
        let (users, arriving) = tokio::sync::mpsc::unbounded_channel();
        let backlog = &Backlog::default();
        let read = self.source.pull(
            &reading,
            // Owns the sender: the planner's loop ends when the read does.
            move |chunk| {
                backlog.added(chunk.len());
                // The planner only goes away after an error that also stopped `reading`.
                let _ = users.send(chunk);
            },
            || async {
                tokio::select! {
                    () = backlog.room() => {}
                    () = reading.cancelled() => {}
                }
            },
        );
        let planning = self.plan_while_reading(arriving, backlog, &stop, &reading);
        let (listing, planned) = tokio::join!(read, planning);
        let (planner, unusable, dropped) = match (listing, planned) {
            (_, Err(err)) => return Err(run.abort(err)),
            (Err(err), _) => return Err(run.abort(err.into())),
            (Ok(listing), Ok((planner, dropped))) => {
                run.summary.directory_users = listing.entries;
                events::directory_read(listing.entries, started.elapsed());
                (planner, listing.unusable, dropped)
            }
        };
        for (group, members) in dropped {
            events::admin_group_dropped(&group, &self.groups.admin_group, members);
        }
        let managed_before = planner.managed();
        let plan = match planner.finish(unusable) {
            Ok(plan) => plan,
            Err(err) => return Err(run.abort(err.into())),
        };
        events::planned(&plan);
        let creates_read_back = plan.creates.read_back();
        let actions = run.take_plan(plan, self.dry_run);
        if let Err(err) = self.record(&run.adoptions).await {
            return Err(run.abort(err.into()));
        }

        let mut directory_actions_left = actions.directory_actions;
        let mut refused: Option<(u16, String)> = None;
        let (send, batches) = send_ahead(self.applier.run_all(actions.all, &stop));
        let record = async {
            // Owned here, so that a failed recording drops it and frees the sends.
            let mut batches = batches;
            while let Some(batch) = batches.next().await {
                let mut records = Vec::with_capacity(batch.len());
                for (action, outcome) in batch {
                    if !is_deactivation(&action)
                        && !matches!(outcome, Outcome::Interrupted | Outcome::Unauthorized { .. })
                    {
                        directory_actions_left -= 1;
                    }
                    if let Outcome::Unauthorized { status, message } = &outcome {
                        refused.get_or_insert((*status, message.clone()));
                    }
                    if let Some(record) = run.tally(&action, outcome) {
                        records.push(record);
                    }
                }
                if let Err(err) = self.record(&records).await {
                    stop.cancel();
                    return Err(err);
                }
            }
            Ok(())
        };
        let ((), recorded) = tokio::join!(send, record);
        if let Err(err) = recorded {
            return Err(run.abort(err.into()));
        }
        run.summary.counts.interrupted = directory_actions_left;
        let c = &run.summary.counts;
        if !self.dry_run {
            events::managed_users(
                (managed_before + c.created + c.existing + c.reactivated)
                    .saturating_sub(c.deactivated),
            );
        }

        if let Some((status, message)) = refused {
            return Err(run.abort(SyncError::TargetRefused { status, message }));
        }
        if directory_actions_left > 0 {
            if let Some(lost) = creates_read_back.error() {
                return Err(run.abort(SyncError::PlannedCreatesLost(lost.to_string())));
            }
            return Err(run.abort(SyncError::Interrupted {
                interrupted: directory_actions_left,
            }));
        }
        run.summary.duration_ms = elapsed_ms(started);
        Ok(run.summary)
    }

    /// Plans the users `pull` hands out, once the cache's records (and, for an empty
    /// cache, the gateway's inventory) are in; returns the planner and the IdP groups
    /// dropped for mapping to the admin group, with their members. An error stops
    /// `reading`. The cache's loader is always waited for, so a failed run leaves
    /// the cache closed for a reload or the next run.
    async fn plan_while_reading(
        &self,
        mut arriving: tokio::sync::mpsc::UnboundedReceiver<Vec<DirectoryUser>>,
        backlog: &Backlog,
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
        while let Some(mut chunk) = arriving.recv().await {
            let planned = chunk.len();
            groups.apply(&mut chunk);
            planner.add(chunk).map_err(|err| {
                reading.cancel();
                SyncError::from(err)
            })?;
            backlog.planned(planned);
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

/// A dry run does not create a cache that does not exist yet.
fn uses_cache(config: &Config, mode: RunMode) -> bool {
    !mode.dry_run || config.cache.path.exists()
}

/// Drives `outcomes` ahead of their recording, which takes them in batches: while
/// one batch is flushed to disk, requests keep going out at the limiter's pace
/// instead of stalling and then bursting. Should the recording fall behind for
/// good, `outcomes` waits for it once [`MAX_UNRECORDED_OUTCOMES`] wait, rather than
/// pile them up in memory. Once the batches are dropped (the recording failed),
/// what `outcomes` still yields is dropped unrecorded.
fn send_ahead<T>(outcomes: impl Stream<Item = T>) -> (impl Future<Output = ()>, Batches<T>) {
    let (sent, settled) = tokio::sync::mpsc::channel(MAX_UNRECORDED_OUTCOMES);
    let send = async move {
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some(outcome) = outcomes.next().await {
            // Fails once the batches are dropped.
            let _ = sent.send(outcome).await;
        }
    };
    (send, Batches(settled))
}

/// The outcomes sent, for recording.
struct Batches<T>(tokio::sync::mpsc::Receiver<T>);

impl<T> Batches<T> {
    /// Up to [`RECORD_BATCH`] outcomes, as soon as there are any; `None` after the
    /// last.
    async fn next(&mut self) -> Option<Vec<T>> {
        let mut batch = Vec::with_capacity(RECORD_BATCH);
        (self.0.recv_many(&mut batch, RECORD_BATCH).await > 0).then_some(batch)
    }
}

fn is_deactivation(action: &Action) -> bool {
    matches!(action, Action::Change(change) if change.kind == ChangeKind::Deactivate)
}

/// What a run is to send: creates, updates, then deactivations.
struct Actions<A> {
    /// The creates and updates: the actions for users in the directory.
    directory_actions: usize,
    all: A,
}

/// The bookkeeping of one run in progress.
struct Run {
    summary: Summary,
    started: Instant,
    adoptions: Vec<(Subject, Option<SubjectRecord>)>,
}

impl Run {
    fn abort(mut self, error: SyncError) -> Aborted {
        self.summary.duration_ms = elapsed_ms(self.started);
        Aborted {
            error,
            summary: self.summary,
        }
    }

    /// Counts what the plan settles by itself and returns the gateway actions.
    fn take_plan(&mut self, plan: Plan, dry_run: bool) -> Actions<impl Iterator<Item = Action>> {
        let counts = &mut self.summary.counts;
        counts.unchanged = plan.unchanged;
        counts.skipped_inactive = plan.skipped_inactive;
        counts.skipped_invalid = plan.invalid.len();
        counts.failed = plan.still_rejected.len();
        counts.existing = plan.adoptions.len();
        for problem in &plan.invalid {
            events::user_skipped(problem);
        }
        self.summary.skipped = plan.invalid.into_iter().map(Report::from).collect();
        self.summary.failures = plan.still_rejected.into_iter().map(Report::from).collect();
        if let Some(guard) = &plan.deactivation_guard {
            events::deactivation_guard_tripped(guard);
            counts.deactivations_blocked = guard.planned;
            self.summary.deactivation_guard = Some(guard.to_string());
        }
        let now = chrono::Utc::now().timestamp();
        for adoption in plan.adoptions {
            events::user_adopted(&adoption.record.email);
            if dry_run {
                self.planned(
                    "adopt",
                    &adoption.record.email,
                    "already in the gateway; would be managed from now on",
                );
            }
            let record = SubjectRecord {
                updated_at: now,
                ..adoption.record
            };
            self.adoptions.push((adoption.subject, Some(record)));
        }
        let directory_actions = plan.creates.len() + plan.updates.len();
        // The creates are unpacked one by one as they are sent (see `CreateList`).
        let creates = plan.creates.into_iter().map(Action::Create);
        let changes = plan
            .updates
            .into_iter()
            .chain(plan.deactivations)
            .map(Action::Change);
        Actions {
            directory_actions,
            all: creates.chain(changes),
        }
    }

    fn planned(&mut self, action: &'static str, user: &Email, reason: &str) {
        self.summary.actions.push(PlannedAction {
            action,
            user: user.to_string(),
            reason: reason.into(),
        });
    }

    fn fail(&mut self, user: &Email, verb: &'static str, reason: String) {
        events::user_failed(user, verb, &reason);
        self.summary.failures.push(Report {
            user: user.to_string(),
            reason,
        });
    }

    /// Counts one outcome and returns what the cache must remember of it.
    fn tally(
        &mut self,
        action: &Action,
        outcome: Outcome,
    ) -> Option<(Subject, Option<SubjectRecord>)> {
        events::action_settled();
        let now = chrono::Utc::now().timestamp();
        match action {
            Action::Create(user) => {
                let email = &user.profile.email;
                let record =
                    |state: SubjectState, fingerprint: Fingerprint, detail: Option<String>| {
                        Some((
                            user.subject.clone(),
                            Some(SubjectRecord {
                                email: email.clone(),
                                state,
                                fingerprint,
                                detail: detail.map(String::into_boxed_str),
                                deactivated: false,
                                updated_at: now,
                            }),
                        ))
                    };
                match outcome {
                    Outcome::Created => {
                        self.summary.counts.created += 1;
                        events::user_created(email);
                        record(SubjectState::Created, user.fingerprint, None)
                    }
                    Outcome::WouldWrite => {
                        self.summary.counts.created += 1;
                        self.planned("create", email, "new in the directory");
                        None
                    }
                    Outcome::Existing => {
                        self.summary.counts.existing += 1;
                        events::user_adopted(email);
                        // Its data in the gateway was not compared: `update_existing`
                        // checks it at the next run.
                        record(SubjectState::Existing, Fingerprint::UNVERIFIED, None)
                    }
                    Outcome::Rejected { status, message } => {
                        self.summary.counts.failed += 1;
                        self.fail(
                            email,
                            "create",
                            format!("the gateway rejected it: {status} {message}"),
                        );
                        record(
                            SubjectState::Rejected,
                            user.fingerprint,
                            Some(format!("{status}: {message}")),
                        )
                    }
                    other => {
                        self.count_unfinished(email, &other, "create");
                        None
                    }
                }
            }
            Action::Change(change) => self.tally_change(change, outcome, now),
        }
    }

    fn tally_change(
        &mut self,
        change: &UpdateUser,
        outcome: Outcome,
        now: i64,
    ) -> Option<(Subject, Option<SubjectRecord>)> {
        let verb = match change.kind {
            ChangeKind::Update => "update",
            ChangeKind::Deactivate => "deactivate",
            ChangeKind::Reactivate => "reactivate",
        };
        let done = || {
            Some((
                change.subject.clone(),
                Some(SubjectRecord {
                    updated_at: now,
                    ..change.record.clone()
                }),
            ))
        };
        let counts = &mut self.summary.counts;
        match (change.kind, outcome) {
            (ChangeKind::Update, Outcome::Unchanged) => {
                counts.unchanged += 1;
                events::user_unchanged(verb);
                done()
            }
            (ChangeKind::Update, Outcome::Changed) => {
                counts.updated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            (ChangeKind::Reactivate, Outcome::Changed | Outcome::Unchanged) => {
                counts.reactivated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            // Already gone from the gateway: nobody left to switch off.
            (ChangeKind::Deactivate, Outcome::Changed | Outcome::Unchanged | Outcome::Missing) => {
                counts.deactivated += 1;
                events::user_changed(&change.key, verb, &change.reason);
                done()
            }
            (kind, Outcome::WouldWrite) => {
                match kind {
                    ChangeKind::Update => counts.updated += 1,
                    ChangeKind::Reactivate => counts.reactivated += 1,
                    ChangeKind::Deactivate => counts.deactivated += 1,
                }
                self.planned(verb, &change.key, &change.reason);
                None
            }
            (_, Outcome::Missing) => {
                counts.failed += 1;
                self.fail(
                    &change.key,
                    verb,
                    "is no longer in the gateway; idsync forgets it and creates it again at the next run".into(),
                );
                Some((change.subject.clone(), None))
            }
            (_, other) => {
                self.count_unfinished(&change.key, &other, verb);
                None
            }
        }
    }

    /// Failures and interruptions, common to every action.
    fn count_unfinished(&mut self, user: &Email, outcome: &Outcome, verb: &'static str) {
        let deactivating = verb == "deactivate";
        let reason = match outcome {
            Outcome::Rejected { status, message } => {
                format!("the gateway rejected the {verb}: {status} {message}")
            }
            Outcome::Missing => format!("the gateway answered 404 to the {verb}; check target.url"),
            Outcome::GaveUp { attempts, reason } => {
                format!("could not {verb} after {attempts} attempts ({reason}); the next run tries again")
            }
            // Counted as interrupted when the run ends.
            _ => return,
        };
        if deactivating {
            self.summary.counts.deactivation_failed += 1;
        } else {
            self.summary.counts.failed += 1;
        }
        self.fail(user, verb, reason);
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_read_waits_while_the_planner_is_behind() {
        let backlog = Backlog::default();
        backlog.added(Backlog::ROOM);
        tokio::time::timeout(Duration::from_millis(50), backlog.room())
            .await
            .expect("a full allowance still has room");
        backlog.added(1_000);
        let mut waiting = std::pin::pin!(backlog.room());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), waiting.as_mut())
                .await
                .is_err(),
            "over the allowance, the read waits"
        );
        backlog.planned(1_000);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("planning wakes the read");
    }

    /// The items a stream of `0..n` has given out so far.
    fn counted(n: usize) -> (Arc<AtomicUsize>, impl Stream<Item = usize>) {
        let given = Arc::new(AtomicUsize::new(0));
        let counter = given.clone();
        let stream = futures::stream::iter(0..n).inspect(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        (given, stream)
    }

    #[tokio::test]
    async fn outcomes_are_recorded_in_order_in_batches() {
        let (_, outcomes) = counted(3 * RECORD_BATCH + 5);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async {
            let mut recorded = Vec::new();
            while let Some(batch) = batches.next().await {
                assert!(!batch.is_empty() && batch.len() <= RECORD_BATCH);
                recorded.extend(batch);
            }
            recorded
        };
        let ((), recorded) = tokio::join!(send, record);
        assert_eq!(recorded, (0..3 * RECORD_BATCH + 5).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_slow_recording_holds_the_sends_back() {
        let (given, outcomes) = counted(100 * RECORD_BATCH);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async {
            let mut most_ahead = 0;
            tokio::time::sleep(Duration::from_millis(100)).await;
            while let Some(batch) = batches.next().await {
                most_ahead = most_ahead.max(given.load(Ordering::SeqCst) - batch[0]);
            }
            most_ahead
        };
        let ((), most_ahead) = tokio::join!(send, record);
        // The batch being recorded, those queued, and the one the stream holds.
        assert!(
            most_ahead <= RECORD_BATCH + MAX_UNRECORDED_OUTCOMES + 1,
            "{most_ahead} outcomes were sent ahead of the recording"
        );
    }

    #[tokio::test]
    async fn once_the_recording_fails_no_send_waits_for_room() {
        // Many more outcomes than room for them, still coming after the failure.
        let (given, outcomes) = counted(100 * RECORD_BATCH);
        let (send, mut batches) = send_ahead(outcomes);
        let record = async move {
            batches.next().await.expect("a first batch");
            // Fails: `batches` is dropped with this block.
        };
        let ((), ()) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(send, record)
        })
        .await
        .expect("the sends ran to their end");
        assert_eq!(given.load(Ordering::SeqCst), 100 * RECORD_BATCH);
    }
}
