//! One run: pull the directory → plan against the cache → apply → record each
//! outcome as it arrives → summary. The only place that writes to the cache.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::apply::{Applier, Outcome};
use crate::auth::TokenSource;
use crate::cache::{Cache, CacheError, RunRecord, SubjectRecord, SubjectState};
use crate::config::Config;
use crate::events;
use crate::plan::{self, CreateUser, Problem};
use crate::source::scim::ScimSource;
use crate::source::SourceError;
use crate::target::{HoopClient, Target, TargetError};

/// How many users each count holds. Every directory entry lands in exactly one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub created: usize,
    pub existing: usize,
    pub unchanged: usize,
    pub skipped_invalid: usize,
    pub skipped_inactive: usize,
    pub failed: usize,
    /// Not attempted because a shutdown or an abort stopped the run.
    pub interrupted: usize,
}

/// What a run did, for people (text) and machines (`--output json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub counts: Counts,
    pub duration_ms: u64,
    pub dry_run: bool,
    /// Entries in the directory (the sum of the counts).
    pub directory_users: usize,
    /// Users that failed in the gateway, with the reason.
    pub failures: Vec<Report>,
    /// Users skipped as invalid, with the reason.
    pub skipped: Vec<Report>,
    /// Dry run only: the users a real run would create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub would_create: Vec<String>,
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
    #[error("stopped by shutdown; {interrupted} users were not attempted, the next run continues")]
    Interrupted { interrupted: usize },
}

/// A run that stopped early still reports what it did before stopping.
#[derive(Debug)]
pub struct Aborted {
    pub error: SyncError,
    pub summary: Summary,
}

/// Everything a run needs, built once per process from the config.
pub struct Syncer {
    source: ScimSource,
    applier: Applier,
    cache: Option<Cache>,
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

impl Syncer {
    /// Builds the clients and opens the cache. A dry run sends nothing and writes
    /// nothing: its target only logs, and a cache that does not exist yet is not created.
    pub fn new(config: &Config, dry_run: bool) -> Result<Self, SetupError> {
        let source_http = http_builder(config.source.ca_pem.as_deref())
            .and_then(|b| b.timeout(SOURCE_TIMEOUT).build())
            .map_err(|err| SetupError::Source(crate::error_chain(&err)))?;
        let tokens = TokenSource::new(&config.source.auth, source_http.clone());
        let source = ScimSource::new(&config.source, source_http, tokens);
        let target = if dry_run {
            Target::DryRun
        } else {
            let builder = http_builder(config.target.ca_pem.as_deref())
                .map_err(|err| TargetError::Client(crate::error_chain(&err)))?;
            Target::Hoop(HoopClient::new(&config.target, builder)?)
        };
        let cache = if dry_run && !config.cache.path.exists() {
            None
        } else {
            Some(Cache::open(&config.cache.path)?)
        };
        Ok(Self {
            source,
            applier: Applier::new(target, &config.target),
            cache,
            dry_run,
        })
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
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
        let mut summary = Summary {
            dry_run: self.dry_run,
            ..Summary::default()
        };
        let abort = |error: SyncError, mut summary: Summary| {
            summary.duration_ms = elapsed_ms(started);
            Aborted { error, summary }
        };

        let directory = match self.source.pull(shutdown).await {
            Ok(directory) => directory,
            Err(err) => return Err(abort(err.into(), summary)),
        };
        summary.directory_users = directory.len();
        events::directory_read(directory.len(), started.elapsed());

        let cached = match &self.cache {
            Some(cache) => match cache.subjects() {
                Ok(cached) => cached,
                Err(err) => return Err(abort(err.into(), summary)),
            },
            None => HashMap::new(),
        };
        let plan = plan::plan(&directory, &cached);
        drop(directory);
        drop(cached);
        events::planned(&plan);

        summary.counts.unchanged = plan.unchanged;
        summary.counts.skipped_inactive = plan.skipped_inactive;
        summary.counts.skipped_invalid = plan.invalid.len();
        summary.counts.failed = plan.still_rejected.len();
        for problem in &plan.invalid {
            events::user_skipped(problem);
        }
        summary.skipped = plan.invalid.into_iter().map(Report::from).collect();
        summary.failures = plan.still_rejected.into_iter().map(Report::from).collect();

        let planned = plan.creates.len();
        let stop = shutdown.child_token();
        let mut refused: Option<(u16, String)> = None;
        let mut settled = 0usize;
        let outcomes = self
            .applier
            .create_all(plan.creates, &stop)
            .ready_chunks(256);
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some(batch) = outcomes.next().await {
            settled += batch.len();
            let mut records = Vec::with_capacity(batch.len());
            for (user, outcome) in batch {
                if let Some(record) = self.tally(&mut summary, &user, &outcome) {
                    records.push((user.subject.clone(), record));
                }
                if let Outcome::Unauthorized { status, message } = outcome {
                    refused.get_or_insert((status, message));
                }
            }
            if let (Some(cache), false) = (&self.cache, records.is_empty() || self.dry_run) {
                if let Err(err) = cache.record(&records).await {
                    stop.cancel();
                    return Err(abort(err.into(), summary));
                }
            }
        }
        summary.counts.interrupted += planned - settled;
        summary.duration_ms = elapsed_ms(started);

        if let Some((status, message)) = refused {
            return Err(abort(SyncError::TargetRefused { status, message }, summary));
        }
        if summary.counts.interrupted > 0 {
            let interrupted = summary.counts.interrupted;
            return Err(abort(SyncError::Interrupted { interrupted }, summary));
        }
        Ok(summary)
    }

    /// Counts one outcome and returns what the cache must remember of it.
    fn tally(
        &self,
        summary: &mut Summary,
        user: &CreateUser,
        outcome: &Outcome,
    ) -> Option<SubjectRecord> {
        let record = |state: SubjectState, detail: Option<String>| SubjectRecord {
            email: user.email.clone(),
            state,
            fingerprint: user.fingerprint,
            detail,
            updated_at: chrono::Utc::now().timestamp(),
        };
        let counts = &mut summary.counts;
        match outcome {
            Outcome::Created => {
                counts.created += 1;
                events::user_created(&user.email);
                Some(record(SubjectState::Created, None))
            }
            Outcome::WouldCreate => {
                counts.created += 1;
                summary.would_create.push(user.email.to_string());
                None
            }
            Outcome::Existing => {
                counts.existing += 1;
                events::user_existing(&user.email);
                Some(record(SubjectState::Existing, None))
            }
            Outcome::Rejected { status, message } => {
                counts.failed += 1;
                let reason = format!("the gateway rejected it: {status} {message}");
                events::user_failed(&user.email, &reason);
                summary.failures.push(Report {
                    user: user.email.to_string(),
                    reason,
                });
                Some(record(
                    SubjectState::Rejected,
                    Some(format!("{status}: {message}")),
                ))
            }
            Outcome::GaveUp { attempts, reason } => {
                counts.failed += 1;
                let reason = format!(
                    "still failing after {attempts} attempts ({reason}); the next run tries again"
                );
                events::user_failed(&user.email, &reason);
                summary.failures.push(Report {
                    user: user.email.to_string(),
                    reason,
                });
                None
            }
            Outcome::Unauthorized { .. } | Outcome::Interrupted => {
                counts.interrupted += 1;
                None
            }
        }
    }

    async fn record_run(
        &self,
        started_at: chrono::DateTime<chrono::Utc>,
        result: &Result<Summary, Aborted>,
    ) {
        let Some(cache) = &self.cache else { return };
        let (outcome, summary, error) = match result {
            Ok(summary) if summary.counts.failed > 0 => ("failures", summary, None),
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

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
