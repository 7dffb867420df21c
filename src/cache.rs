//! What idsync remembers between runs, in sled at `cache.path`.
//!
//! Trees: `subjects` (subject → what happened to it in the gateway), `runs` (a short
//! history of runs, keyed by start time), `meta` (schema version, the store's id and
//! generation). Outcomes are flushed to disk as soon as they are known, so a crash
//! or `kill -9` loses nothing that the gateway already holds. Beside the store, a
//! file copies every record's summary for the next run to read (`summaries`).

mod cursors;
mod damage;
mod groups;
mod private;
mod records;
mod resident;
mod summaries;

pub use damage::reset;

use records::{Entry, FullRecords};
pub use records::{RecordSummary, Records, Taken};
use resident::Resident;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use crate::model::{Counts, Email, Fingerprint, IdKeys, Subject};

/// 2 added the generation, which every writer must raise (see `summaries`); 1 has
/// the same records, and is upgraded on open, after which older builds refuse it.
const SCHEMA_VERSION: u32 = 2;
const UPGRADABLE_SCHEMA: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// A random id given to the store when it is created, named by the summaries file.
const STORE_ID_KEY: &[u8] = b"store_id";
/// Raised before the first change to the records after the summaries file was written.
const GENERATION_KEY: &[u8] = b"generation";
/// Changes to the records held (about 80 bytes each) to bring the summaries file
/// up to date at the end of a run; after a run that changes more (a first import)
/// the next run walks the tree instead.
/// Every cache holds this many; tests may give one a smaller number.
const MAX_HELD_CHANGES: usize = 10_000;
/// sled's page cache. Records are read once per run, in order, so a small cache
/// costs little time and keeps memory flat as the directory grows
/// (docs/performance.md).
const CACHE_CAPACITY_BYTES: u64 = 2 * 1024 * 1024;
/// How long to wait for a lock just released by this process: 10 × 50 ms.
const LOCK_ATTEMPTS: u32 = 10;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
/// Runs kept in the history.
const RUN_HISTORY: usize = 100;
/// Runs mirrored into [`STATUS_FILE`] for `idsync status`.
const STATUS_RUNS: usize = 20;
const STATUS_FILE: &str = "status.json";

/// The newest runs, newest first, as the last run wrote them; readable while
/// another process has the cache open. None before the first run.
pub fn read_status(cache_path: &Path) -> Result<Vec<RunRecord>, String> {
    let path = cache_path.join(STATUS_FILE);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(format!("cannot read {}: {err}", path.display())),
    };
    serde_json::from_slice(&text).map_err(|err| format!("{} is unreadable: {err}", path.display()))
}

/// Why the cache cannot be used. Every variant aborts the run (exit 3): without
/// the cache idsync cannot know whom it already created.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Another idsync (daemon or one-shot run) has the cache open.
    #[error("the cache at {} is in use by another idsync process; stop it or point cache.path elsewhere", path.display())]
    Locked { path: PathBuf },
    /// The store failed (permissions, disk full, corruption).
    #[error("the cache at {} failed: {source}", path.display())]
    Store { path: PathBuf, source: sled::Error },
    /// A record cannot be decoded, or the schema is newer than this build knows.
    #[error("the cache at {} is unreadable: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
}

/// What idsync knows about one subject in the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectRecord {
    pub email: Email,
    pub state: SubjectState,
    /// The directory data idsync last sent for this subject.
    pub fingerprint: Fingerprint,
    /// The gateway's message, for a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<str>>,
    /// idsync set the user `inactive` (it left the directory or became inactive).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deactivated: bool,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

impl SubjectRecord {
    /// A user idsync created or adopted: the only users it ever updates or deactivates.
    pub fn is_managed(&self) -> bool {
        self.state.is_managed()
    }

    pub fn summary(&self) -> RecordSummary {
        RecordSummary {
            state: self.state,
            fingerprint: self.fingerprint,
            deactivated: self.deactivated,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectState {
    /// idsync created the user.
    Created,
    /// The gateway already had a user with this e-mail, and idsync adopted it
    /// (stored as `existing`, the name of earlier versions).
    #[serde(rename = "existing")]
    Adopted,
    /// The gateway refused this data with a 4xx; not resent until it changes.
    Rejected,
}

impl SubjectState {
    fn is_managed(self) -> bool {
        matches!(self, Self::Created | Self::Adopted)
    }
}

/// One run in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// RFC 3339.
    pub started_at: String,
    pub finished_at: String,
    /// `ok`, `failures` (some users failed) or `aborted`.
    pub outcome: String,
    pub counts: Counts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The cache, open or opening on a blocking thread. A one-shot run starts reading
/// the directory while sled recovers the store, which grows with the store; the
/// daemon opens it before its
/// first run instead, so that a locked or broken cache stops it at start.
pub struct CacheOpening {
    path: PathBuf,
    opening: Mutex<Option<tokio::task::JoinHandle<Result<Cache, CacheError>>>>,
    cache: tokio::sync::OnceCell<Cache>,
}

impl CacheOpening {
    pub fn open(cache: Cache) -> Self {
        Self {
            path: cache.path.clone(),
            opening: Mutex::new(None),
            cache: tokio::sync::OnceCell::new_with(Some(cache)),
        }
    }

    /// Starts opening the cache at `path` on tokio's blocking pool (see
    /// [`Cache::open_for`]).
    pub fn start(path: &Path, dry_run: bool) -> Self {
        let task = {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || Cache::open_for(&path, dry_run))
        };
        Self {
            path: path.to_owned(),
            opening: Mutex::new(Some(task)),
            cache: tokio::sync::OnceCell::new(),
        }
    }

    /// The cache, once it is open. Why it failed to open goes to the first caller;
    /// later callers learn only that it did.
    pub async fn get(&self) -> Result<&Cache, CacheError> {
        self.cache
            .get_or_try_init(|| async {
                let opening = self
                    .opening
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let failed = |reason: String| CacheError::Unreadable {
                    path: self.path.clone(),
                    reason,
                };
                match opening {
                    Some(task) => task.await.unwrap_or_else(|err| {
                        Err(failed(format!("the opening task failed: {err}")))
                    }),
                    None => Err(failed("it failed to open earlier in this run".into())),
                }
            })
            .await
    }

    /// Where the cache is, open or not.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache if it has opened; `None` while it opens or after it failed to.
    pub fn if_open(&self) -> Option<&Cache> {
        self.cache.get()
    }
}

pub struct Cache {
    path: PathBuf,
    db: sled::Db,
    subjects: sled::Tree,
    runs: sled::Tree,
    meta: sled::Tree,
    /// `None` only for a store a dry run opened before any run gave it one.
    store_id: Option<u64>,
    summaries: Mutex<SummariesState>,
    known_bases: Mutex<cursors::KnownBases>,
    /// [`MAX_HELD_CHANGES`], but in tests.
    max_held_changes: usize,
}

/// What the summaries file copies, and the changes made since it was written.
struct SummariesState {
    /// The store's generation, as `meta` has it.
    generation: u64,
    /// What the file copies, as far as this process knows.
    file: Option<summaries::Version>,
    /// The generation was raised for changes the file does not have yet.
    raised: bool,
    /// Those changes, by subject (`None`: forgotten); `None` when there were too
    /// many to hold or a write failed, and only the tree knows.
    changes: Option<BTreeMap<Subject, Option<RecordSummary>>>,
    /// Set by [`Cache::keep_summaries_in_memory`].
    keep_in_memory: bool,
    /// With `keep_in_memory`: what the file copied when a run read it.
    resident: Option<Arc<Resident>>,
    /// With `resident`: the records as the next run will find them, merged
    /// after the last run, so that the next does not wait for the merge;
    /// dropped by any change held since.
    prepared: Option<Records>,
    /// Raised by every change held (or given up on), to tell whether records
    /// prepared are still current.
    changes_seen: u64,
}

impl Cache {
    /// Opens (creating if needed) the cache; fails at once if another process has it.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        Self::open_for(path, false)
    }

    /// As [`Cache::open`]; a dry run's open leaves the store as it found it (no
    /// schema upgrade, no id given).
    ///
    /// sled recovers a damaged `db` file (cut short, overwritten) to an empty store
    /// without a word; an empty store would make the run adopt everyone again and
    /// forget its leavers. So a store without idsync's marker (its schema version
    /// or id) in a directory that shows it was used before is refused as damaged,
    /// and a new store gets its marker, on disk, as soon as it is created.
    pub fn open_for(path: &Path, dry_run: bool) -> Result<Self, CacheError> {
        let used_before = damage::used_before(path);
        private::directory(path).map_err(|err| store_error(path, sled::Error::Io(err)))?;
        let db = damage::open_catching_panics(path, || open_store(path))?;
        private::narrow_store_files(path);
        let store_error = |source| store_error(path, source);
        let meta = db.open_tree("meta").map_err(store_error)?;
        let marked = meta.get(SCHEMA_KEY).map_err(store_error)?.is_some()
            || meta.get(STORE_ID_KEY).map_err(store_error)?.is_some();
        if !marked {
            let subjects = db.open_tree("subjects").map_err(store_error)?;
            if let Some(evidence) = used_before
                .or_else(|| (!subjects.is_empty()).then(|| "the store holds records".to_owned()))
            {
                let evidence = format!("{evidence}, but the store has no idsync marker");
                return Err(damage::damaged(path, &evidence));
            }
            // A new store: its marker goes to disk before anything else does.
            meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                .map_err(store_error)?;
            db.flush().map_err(store_error)?;
        }
        match meta.get(SCHEMA_KEY).map_err(store_error)? {
            Some(found) if found.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(found) if found.as_ref() != UPGRADABLE_SCHEMA.to_be_bytes() => {
                return Err(CacheError::Unreadable {
                    path: path.to_owned(),
                    reason: format!(
                        "schema version {found:?} is not {SCHEMA_VERSION}, the one this build knows"
                    ),
                })
            }
            _ if dry_run => {}
            _ => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(store_error)?;
            }
        }
        let read_u64 = |key: &[u8]| -> Result<Option<u64>, CacheError> {
            let value = meta.get(key).map_err(store_error)?;
            Ok(value.map(|v| v.as_ref().try_into().map(u64::from_be_bytes).unwrap_or(0)))
        };
        let store_id = match read_u64(STORE_ID_KEY)? {
            None if !dry_run => {
                let id = std::hash::BuildHasher::hash_one(
                    &std::collections::hash_map::RandomState::new(),
                    std::time::SystemTime::now(),
                );
                meta.insert(STORE_ID_KEY, &id.to_be_bytes())
                    .map_err(store_error)?;
                Some(id)
            }
            found => found,
        };
        let generation = read_u64(GENERATION_KEY)?.unwrap_or(0);
        let runs = db.open_tree("runs").map_err(store_error)?;
        let version = store_id.map(|store| summaries::Version { store, generation });
        damage::check_not_behind(path, &runs, version)?;
        let cache = Self {
            path: path.to_owned(),
            subjects: db.open_tree("subjects").map_err(store_error)?,
            runs,
            meta,
            store_id,
            summaries: Mutex::new(SummariesState {
                generation,
                file: None,
                raised: false,
                changes: Some(BTreeMap::new()),
                keep_in_memory: false,
                resident: None,
                prepared: None,
                changes_seen: 0,
            }),
            known_bases: Mutex::default(),
            max_held_changes: MAX_HELD_CHANGES,
            db,
        };
        Ok(cache)
    }

    /// Holds at most `changes` changes for the summaries file instead of
    /// [`MAX_HELD_CHANGES`], so that a test can make a run change more.
    #[cfg(test)]
    fn holding_at_most(mut self, changes: usize) -> Self {
        self.max_held_changes = changes;
        self
    }

    /// For a daemon whose source reads only changes: the summaries stay in
    /// memory between runs, and the file is written when the cache closes
    /// (see [`resident`]).
    pub fn keep_summaries_in_memory(&self) {
        self.summaries_state().keep_in_memory = true;
    }

    /// Every subject idsync has a record of, read on a blocking thread so the run
    /// can read the directory meanwhile: from memory when they are kept there,
    /// else from the summaries file when it copies the store as it is, else by
    /// walking the tree, after which the file is written if `may_write` (not in a
    /// dry run).
    pub async fn subjects_in_background(&self, may_write: bool) -> Result<Records, CacheError> {
        if let Some(records) = self.resident_records().await? {
            return Ok(records);
        }
        let version = self.version();
        let (tree, path) = (self.subjects.clone(), self.path.clone());
        let task = tokio::task::spawn_blocking(move || {
            let keys = IdKeys::new();
            let mut entries = Vec::new();
            let entry = |subject: &str, summary| Entry {
                digest: keys.digest(subject),
                summary: Some(summary),
            };
            let copied = version.is_some_and(|version| {
                summaries::read(&path, version, |s, summary| {
                    entries.push(entry(s, summary));
                })
            });
            let written = if copied {
                true
            } else {
                // A file found wrong at its end: what it gave is thrown away.
                entries.clear();
                let writer = version
                    .filter(|_| may_write)
                    .map(|version| summaries::Writer::create(&path, version));
                walk_subjects(&tree, &path, writer, |s, summary| {
                    entries.push(entry(s, summary));
                })?
            };
            let full = FullRecords::Store { tree, path };
            Ok((Records::indexed(keys, entries, full), written))
        });
        let (records, written) = task.await.unwrap_or_else(|err| {
            Err(self.unreadable(format!("the loading task failed: {err}")))
        })?;
        if written {
            // The file copies the store as it is: the next change raises the generation.
            let mut state = self.summaries_state();
            state.file = version;
            state.raised = false;
            state.changes = Some(BTreeMap::new());
            state.resident = state
                .keep_in_memory
                .then(|| Arc::new(Resident::of(&records)));
            state.prepared = None;
        }
        Ok(records)
    }

    /// The records from memory, when they are kept there and every change since
    /// was held: as prepared after the last run, or merged now.
    async fn resident_records(&self) -> Result<Option<Records>, CacheError> {
        if let Some(prepared) = self.summaries_state().prepared.take() {
            return Ok(Some(prepared));
        }
        self.merge_resident().await
    }

    /// Merges the changes held into the records kept in memory, on a blocking
    /// thread; `None` when they are not kept, or a change was not held.
    async fn merge_resident(&self) -> Result<Option<Records>, CacheError> {
        let (resident, changes) = {
            let state = self.summaries_state();
            match (&state.resident, &state.changes) {
                (Some(resident), Some(changes)) => (resident.clone(), changes.clone()),
                _ => return Ok(None),
            }
        };
        let full = FullRecords::Store {
            tree: self.subjects.clone(),
            path: self.path.clone(),
        };
        let task = tokio::task::spawn_blocking(move || resident.with_changes(&changes, full));
        task.await
            .map(Some)
            .map_err(|err| self.unreadable(format!("the loading task failed: {err}")))
    }

    /// The store as the summaries file would copy it now.
    fn version(&self) -> Option<summaries::Version> {
        Some(summaries::Version {
            store: self.store_id?,
            generation: self.summaries_state().generation,
        })
    }

    fn summaries_state(&self) -> MutexGuard<'_, SummariesState> {
        self.summaries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Raises the store's generation, durably, before the first change that the
    /// summaries file does not have: a crash then leaves a file that is ignored.
    async fn raise_generation(&self) -> Result<(), CacheError> {
        let generation = {
            let state = self.summaries_state();
            if state.raised {
                return Ok(());
            }
            state.generation + 1
        };
        self.meta
            .insert(GENERATION_KEY, &generation.to_be_bytes())
            .map_err(|e| self.store_error(e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        let mut state = self.summaries_state();
        state.generation = generation;
        state.raised = true;
        Ok(())
    }

    /// Keeps changes for the summaries file; once too many, or once a write
    /// failed, only the tree knows them.
    fn hold_changes(&self, outcomes: &[(Subject, Option<SubjectRecord>)], written: bool) {
        let mut state = self.summaries_state();
        match &mut state.changes {
            Some(changes) if written && changes.len() + outcomes.len() <= self.max_held_changes => {
                for (subject, record) in outcomes {
                    changes.insert(subject.clone(), record.as_ref().map(SubjectRecord::summary));
                }
            }
            _ => state.changes = None,
        }
        state.prepared = None;
        state.changes_seen += 1;
    }

    /// Brings the summaries file up to date with this run's changes, merged into
    /// the file the run started from. After more changes than are held (a first
    /// import), or without such a file, it is left for the next run, which walks the
    /// tree: walking it right after a first import's writes would hold most of
    /// sled's memory at once. A failure only costs the next run that walk. A
    /// cache that keeps the summaries in memory does this once, when it closes.
    async fn update_summaries(&self) {
        if self.summaries_state().keep_in_memory {
            return self.prepare_next_records().await;
        }
        let Some(rewrite) = self.take_summaries_rewrite() else {
            return;
        };
        let task = tokio::task::spawn_blocking(move || rewrite.run());
        let rewritten = task.await.map_err(|err| err.to_string()).and_then(|r| r);
        self.summaries_rewritten(rewritten);
    }

    /// Merges the records the next run will read now, between runs. A failure
    /// leaves the merge to that run.
    async fn prepare_next_records(&self) {
        let seen = self.summaries_state().changes_seen;
        if let Ok(Some(records)) = self.merge_resident().await {
            let mut state = self.summaries_state();
            if state.changes_seen == seen {
                state.prepared = Some(records);
            }
        }
    }

    /// What bringing the summaries file up to date takes, if it can be; the
    /// changes held are handed over, and the file is no longer taken to copy
    /// the store until [`summaries_rewritten`](Self::summaries_rewritten).
    fn take_summaries_rewrite(&self) -> Option<SummariesRewrite> {
        let (from, changes) = {
            let mut state = self.summaries_state();
            if !state.raised {
                return None;
            }
            state.resident = None;
            let changes = state.changes.replace(BTreeMap::new());
            (state.file.take(), changes)
        };
        Some(SummariesRewrite {
            path: self.path.clone(),
            from: from?,
            to: self.version()?,
            changes: changes?,
        })
    }

    fn summaries_rewritten(&self, rewritten: Result<Option<summaries::Version>, String>) {
        match rewritten {
            Ok(Some(to)) => {
                let mut state = self.summaries_state();
                state.raised = false;
                state.file = Some(to);
            }
            Ok(None) => {}
            Err(err) => tracing::warn!(
                error = %err,
                "Could not update the records' summaries file; the next run reads the store instead."
            ),
        }
    }

    /// Stores outcomes (`None` forgets the subject) and returns once they are on disk.
    pub async fn record(
        &self,
        outcomes: &[(Subject, Option<SubjectRecord>)],
    ) -> Result<(), CacheError> {
        let mut writes = Vec::with_capacity(outcomes.len());
        for (subject, record) in outcomes {
            let value = (record.as_ref().map(serde_json::to_vec).transpose())
                .map_err(|err| self.unreadable(format!("cannot encode a record: {err}")))?;
            writes.push((subject.as_str().as_bytes().to_vec(), value));
        }
        // sled works synchronously, and now and then at length (page splits, log
        // segments): on the blocking pool, so the requests the run is sending from
        // this task keep their pace meanwhile. One write at a time, not one
        // `apply_batch`: no record depends on another, and batches let sled's memory
        // grow at the end of a large first import (docs/performance.md).
        self.raise_generation().await?;
        let subjects = self.subjects.clone();
        let written = tokio::task::spawn_blocking(move || {
            writes.into_iter().try_for_each(|(key, value)| match value {
                Some(value) => subjects.insert(key, value).map(drop),
                None => subjects.remove(key).map(drop),
            })
        })
        .await
        .map_err(|err| self.unreadable(format!("the writing task failed: {err}")))
        .and_then(|written| written.map_err(|e| self.store_error(e)));
        self.hold_changes(outcomes, written.is_ok());
        written?;
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }

    /// Appends a run to the history, keeping the newest `RUN_HISTORY`.
    pub async fn record_run(&self, run: &RunRecord) -> Result<(), CacheError> {
        let key = self
            .runs
            .last()
            .map_err(|e| self.store_error(e))?
            .map_or(0, |(key, _)| sequence_of(&key) + 1);
        let value = serde_json::to_vec(run)
            .map_err(|err| self.unreadable(format!("cannot encode a run: {err}")))?;
        self.runs
            .insert(key.to_be_bytes(), value)
            .map_err(|e| self.store_error(e))?;
        while self.runs.len() > RUN_HISTORY {
            self.runs.pop_min().map_err(|e| self.store_error(e))?;
        }
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        self.update_summaries().await;
        self.write_status_file()
    }

    /// Mirrors the newest runs into a plain JSON file beside the store, so that
    /// `idsync status` can read them while the daemon holds the store's lock.
    fn write_status_file(&self) -> Result<(), CacheError> {
        let runs = self.recent_runs(STATUS_RUNS)?;
        let text = serde_json::to_vec_pretty(&runs)
            .map_err(|err| self.unreadable(format!("cannot encode runs: {err}")))?;
        let path = self.path.join(STATUS_FILE);
        let temporary = path.with_extension("json.tmp");
        private::create_file(&temporary)
            .and_then(|mut file| std::io::Write::write_all(&mut file, &text))
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|err| self.store_error(sled::Error::Io(err)))
    }

    /// The newest runs, newest first.
    pub fn recent_runs(&self, limit: usize) -> Result<Vec<RunRecord>, CacheError> {
        self.runs
            .iter()
            .rev()
            .take(limit)
            .map(|entry| {
                let (_, value) = entry.map_err(|e| self.store_error(e))?;
                serde_json::from_slice(&value)
                    .map_err(|err| self.unreadable(format!("run record: {err}")))
            })
            .collect()
    }

    fn store_error(&self, source: sled::Error) -> CacheError {
        store_error(&self.path, source)
    }

    fn unreadable(&self, reason: String) -> CacheError {
        CacheError::Unreadable {
            path: self.path.clone(),
            reason,
        }
    }
}

/// The summaries file `from`, with `changes` merged in, written as the file `to`.
struct SummariesRewrite {
    path: PathBuf,
    from: summaries::Version,
    to: summaries::Version,
    changes: BTreeMap<Subject, Option<RecordSummary>>,
}

impl SummariesRewrite {
    /// `to` once written; `None` when the file found is not `from`.
    fn run(self) -> Result<Option<summaries::Version>, String> {
        let changes = (self.changes.iter()).map(|(s, summary)| (s.as_str(), *summary));
        match summaries::rewrite(&self.path, self.from, self.to, changes) {
            Ok(rewritten) => Ok(rewritten.then_some(self.to)),
            Err(err) => Err(err.to_string()),
        }
    }
}

impl Drop for Cache {
    /// A cache that kept the summaries in memory writes their file now, so that
    /// the next process reads it instead of walking the tree.
    fn drop(&mut self) {
        if self.summaries_state().keep_in_memory {
            if let Some(rewrite) = self.take_summaries_rewrite() {
                self.summaries_rewritten(rewrite.run());
            }
        }
    }
}

/// Gives `each` every record's summary from the tree, and writes them to the
/// summaries file when a writer is given. Returns whether the file was written;
/// a file that cannot be written is reported, and the walk goes on without it.
fn walk_subjects(
    tree: &sled::Tree,
    path: &Path,
    writer: Option<std::io::Result<summaries::Writer>>,
    mut each: impl FnMut(&str, RecordSummary),
) -> Result<bool, CacheError> {
    let cannot_write = |err: std::io::Error| {
        tracing::warn!(error = %err, "Could not write the records' summaries file.");
    };
    let mut writer = writer.and_then(|w| w.map_err(cannot_write).ok());
    for item in tree.iter() {
        let (key, value) = item.map_err(|source| store_error(path, source))?;
        // sled 0.34 queues page accesses in 256 shards and evicts from a shard only
        // once 64 accesses are queued there; a scan reads each page once, so it
        // would keep every page it read, whatever `cache_capacity` says. Looking the
        // key up again counts another access to its
        // page and lets the eviction keep up.
        tree.get(&key).map_err(|source| store_error(path, source))?;
        let subject = String::from_utf8_lossy(&key);
        // Only the summary's fields are decoded; the others are skipped unread.
        let summary: RecordSummary = decode_record(path, &subject, &value)?;
        if let Some(file) = &mut writer {
            if let Err(err) = file.push(&subject, summary) {
                cannot_write(err);
                writer = None;
            }
        }
        each(&subject, summary);
    }
    Ok(match writer.map(summaries::Writer::commit) {
        Some(Ok(())) => true,
        Some(Err(err)) => {
            cannot_write(err);
            false
        }
        None => false,
    })
}

/// A subject's stored record, whole or only its [`RecordSummary`].
fn decode_record<T: serde::de::DeserializeOwned>(
    path: &Path,
    subject: &str,
    value: &[u8],
) -> Result<T, CacheError> {
    serde_json::from_slice(value).map_err(|err| CacheError::Unreadable {
        path: path.to_owned(),
        reason: format!("record of subject {subject}: {err}"),
    })
}

/// Opens sled's database at `path`; a lock held by another process is
/// [`CacheError::Locked`]. sled's background threads release the file lock a
/// moment after the cache closes, so a reopen by this same process (a reload)
/// retries briefly.
fn open_store(path: &Path) -> Result<sled::Db, CacheError> {
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_CAPACITY_BYTES);
    match open_sled(&config) {
        Err(sled::Error::Io(io)) if is_lock_error(&io) => Err(CacheError::Locked {
            path: path.to_owned(),
        }),
        Err(err @ sled::Error::Corruption { .. }) => {
            Err(damage::damaged(path, &format!("sled reports: {err}")))
        }
        opened => opened.map_err(|source| store_error(path, source)),
    }
}

/// Opens a sled store, waiting a little for its lock: a store just closed in this
/// process lets go of the lock only once sled's background flusher has stopped.
pub fn open_sled(config: &sled::Config) -> Result<sled::Db, sled::Error> {
    let mut attempts = LOCK_ATTEMPTS;
    loop {
        match config.open() {
            Err(sled::Error::Io(io)) if attempts > 1 && is_lock_error(&io) => {
                attempts -= 1;
                std::thread::sleep(LOCK_RETRY);
            }
            opened => return opened,
        }
    }
}

fn is_lock_error(io: &std::io::Error) -> bool {
    io.to_string().contains("could not acquire lock")
}

fn store_error(path: &Path, source: sled::Error) -> CacheError {
    CacheError::Store {
        path: path.to_owned(),
        source,
    }
}

fn sequence_of(key: &[u8]) -> u64 {
    key.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(email: &str, state: SubjectState) -> SubjectRecord {
        SubjectRecord {
            email: Email::parse(email).expect("email"),
            state,
            fingerprint: Fingerprint(7),
            detail: None,
            deactivated: false,
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn outcomes_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let cache = Cache::open(dir.path()).expect("open");
            cache
                .record(&[(
                    Subject::new("s1"),
                    Some(record("a@x.com", SubjectState::Created)),
                )])
                .await
                .expect("record");
        }
        let cache = Cache::open(dir.path()).expect("reopen");
        let subjects = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(
            subjects.record(&Subject::new("s1")).expect("record"),
            record("a@x.com", SubjectState::Created)
        );
    }

    /// The same records, held in memory and read from a store; the store (and
    /// its directory) must outlive the records, as in a run.
    async fn both_ways(
        given: Vec<(Subject, SubjectRecord)>,
    ) -> ([Records; 2], (Cache, tempfile::TempDir)) {
        let in_memory: Records = given.iter().cloned().collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        let given: Vec<_> = given.into_iter().map(|(s, r)| (s, Some(r))).collect();
        cache.record(&given).await.expect("record");
        let stored = cache.subjects_in_background(true).await.expect("subjects");
        ([in_memory, stored], (cache, dir))
    }

    #[tokio::test]
    async fn records_are_found_taken_and_left_by_subject() {
        let subjects: Vec<Subject> = (0..1_000).map(|i| Subject::new(format!("s{i}"))).collect();
        let given: Vec<_> = subjects
            .iter()
            .map(|s| (s.clone(), record("a@x.com", SubjectState::Created)))
            .chain([(
                subjects[7].clone(),
                record("b@x.com", SubjectState::Adopted),
            )])
            .collect();
        let (both, _store) = both_ways(given).await;
        for mut records in both {
            assert_eq!(records.len(), 1_000, "a subject given twice is one record");
            assert_eq!(
                records.summary(&subjects[7]),
                Some(record("b@x.com", SubjectState::Adopted).summary())
            );
            assert_eq!(
                records.record(&subjects[7]).expect("record").email.as_str(),
                "b@x.com"
            );
            assert!(records.summary(&Subject::new("unknown")).is_none());
            assert!(records.record(&Subject::new("unknown")).is_err());
            for subject in subjects.iter().step_by(2) {
                assert!(
                    matches!(records.take(subject), Taken::Record(_)),
                    "{subject}"
                );
                assert_eq!(records.take(subject), Taken::AlreadyTaken);
            }
            assert_eq!(records.take(&Subject::new("unknown")), Taken::Absent);
            assert_eq!(records.len(), 500);
            assert!(
                records.summary(&subjects[0]).is_none() && records.summary(&subjects[1]).is_some()
            );
            assert_eq!(records.count(|s| s.state == SubjectState::Adopted), 1);
            let mut left: Vec<String> = records
                .remaining(|s| s.state == SubjectState::Created)
                .expect("remaining")
                .into_iter()
                .map(|(s, _)| s.to_string())
                .collect();
            left.sort();
            let mut expected: Vec<String> = subjects
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 1 && *i != 7)
                .map(|(_, s)| s.to_string())
                .collect();
            expected.sort();
            assert_eq!(left, expected);
        }
        assert!(Records::default().summary(&subjects[0]).is_none());
    }

    #[test]
    fn states_are_stored_under_the_names_earlier_versions_wrote() {
        let stored = serde_json::to_string(&SubjectState::Adopted).unwrap();
        assert_eq!(stored, "\"existing\"");
        let read: SubjectState = serde_json::from_str("\"existing\"").unwrap();
        assert_eq!(read, SubjectState::Adopted);
    }

    #[test]
    fn a_second_opener_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _first = Cache::open(dir.path()).expect("open");
        let err = Cache::open(dir.path())
            .err()
            .expect("second open must fail");
        assert!(matches!(err, CacheError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("in use by another idsync process"));
    }

    #[tokio::test]
    async fn a_cache_opening_in_the_background_tells_why_it_failed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Cache::open(dir.path()).expect("open");
        let opening = CacheOpening::start(dir.path(), false);
        let err = opening.get().await.err().expect("locked by the first");
        assert!(matches!(err, CacheError::Locked { .. }), "{err}");
        assert!(opening.if_open().is_none());
        let again = opening.get().await.err().expect("still not open");
        assert!(
            again.to_string().contains("failed to open earlier"),
            "{again}"
        );

        drop(first);
        let opening = CacheOpening::start(dir.path(), false);
        opening.get().await.expect("opens once free");
        assert!(opening.if_open().is_some());
    }

    /// The summaries as the file has them, if it copies the store as it is.
    fn summaries_file(cache: &Cache) -> Option<BTreeMap<String, RecordSummary>> {
        let mut found = BTreeMap::new();
        let version = cache.version().expect("a store with an id");
        summaries::read(&cache.path, version, |subject, summary| {
            found.insert(subject.to_owned(), summary);
        })
        .then_some(found)
    }

    async fn end_run(cache: &Cache) {
        let run = RunRecord {
            started_at: String::new(),
            finished_at: String::new(),
            outcome: "ok".into(),
            counts: Counts::default(),
            error: None,
        };
        cache.record_run(&run).await.expect("record run");
    }

    #[tokio::test]
    async fn the_summaries_file_follows_each_run_and_a_crash_leaves_it_unused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = record("a@x.com", SubjectState::Created);
        let subject = |n: usize| Subject::new(format!("s{n}"));
        let summaries = |subjects: &[usize]| -> BTreeMap<String, RecordSummary> {
            subjects
                .iter()
                .map(|&n| (subject(n).as_str().to_owned(), created.summary()))
                .collect()
        };

        let cache = Cache::open(dir.path()).expect("open").holding_at_most(3);
        cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(
            summaries_file(&cache),
            Some(BTreeMap::new()),
            "written by the walk"
        );
        cache
            .record(&[(subject(1), Some(created.clone()))])
            .await
            .expect("record");
        assert_eq!(summaries_file(&cache), None, "raised before the change");
        end_run(&cache).await;
        assert_eq!(
            summaries_file(&cache),
            Some(summaries(&[1])),
            "updated from the changes"
        );
        // A run reads the file, not the tree, while the file copies the store.
        let version = cache.version().expect("an id");
        let mut doctored = summaries::Writer::create(&cache.path, version).expect("create");
        let marked = RecordSummary {
            fingerprint: Fingerprint(99),
            ..created.summary()
        };
        doctored.push(subject(1).as_str(), marked).expect("push");
        doctored.commit().expect("commit");
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(
            records.summary(&subject(1)),
            Some(marked),
            "read from the file"
        );
        drop(records);

        // A run that dies between a change and its end leaves a file that is ignored.
        cache
            .record(&[(subject(2), Some(created.clone()))])
            .await
            .expect("record");
        drop(cache);
        let cache = Cache::open(dir.path()).expect("reopen").holding_at_most(3);
        assert_eq!(summaries_file(&cache), None);
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(
            records.summary(&subject(2)),
            Some(created.summary()),
            "read from the tree"
        );
        drop(records);
        assert_eq!(
            summaries_file(&cache),
            Some(summaries(&[1, 2])),
            "and written again"
        );

        // Forgotten and added subjects; then more changes than are held.
        let changes = [(subject(1), None), (subject(3), Some(created.clone()))];
        cache.record(&changes).await.expect("record");
        end_run(&cache).await;
        assert_eq!(summaries_file(&cache), Some(summaries(&[2, 3])));
        let many: Vec<_> = (4..10)
            .map(|n| (subject(n), Some(created.clone())))
            .collect();
        cache.record(&many).await.expect("record");
        end_run(&cache).await;
        assert_eq!(summaries_file(&cache), None, "left for the next run");
        drop(cache);
        let cache = Cache::open(dir.path()).expect("reopen");
        let records = cache.subjects_in_background(false).await.expect("subjects");
        assert_eq!(records.len(), 8);
        assert_eq!(records.summary(&subject(9)), Some(created.summary()));
        assert_eq!(summaries_file(&cache), None, "a dry run writes no file");
        drop(records);
        cache.subjects_in_background(true).await.expect("subjects");
        let all = summaries(&[2, 3, 4, 5, 6, 7, 8, 9]);
        assert_eq!(summaries_file(&cache), Some(all), "written by the walk");
    }

    #[tokio::test]
    async fn summaries_kept_in_memory_follow_each_run_and_reach_the_file_at_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = record("a@x.com", SubjectState::Created);
        let subject = |n: usize| Subject::new(format!("s{n}"));
        let cache = Cache::open(dir.path()).expect("open").holding_at_most(3);
        cache.keep_summaries_in_memory();
        cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(summaries_file(&cache), Some(BTreeMap::new()));

        cache
            .record(&[(subject(1), Some(created.clone()))])
            .await
            .expect("record");
        end_run(&cache).await;
        assert_eq!(summaries_file(&cache), None, "the file waits for the close");
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(records.summary(&subject(1)), Some(created.summary()));
        assert_eq!(summaries_file(&cache), None, "from memory, not by a walk");
        drop(records);

        let changes = [(subject(1), None), (subject(2), Some(created.clone()))];
        cache.record(&changes).await.expect("record");
        end_run(&cache).await;
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!((records.len(), records.summary(&subject(1))), (1, None));
        assert_eq!(records.summary(&subject(2)), Some(created.summary()));
        drop(records);
        end_run(&cache).await;
        assert!(
            cache.summaries_state().prepared.is_some(),
            "merged after the run"
        );
        let renamed = SubjectRecord {
            fingerprint: Fingerprint(8),
            ..created.clone()
        };
        cache
            .record(&[(subject(2), Some(renamed.clone()))])
            .await
            .expect("record");
        let records = cache.subjects_in_background(true).await.expect("subjects");
        let summary = records.summary(&subject(2));
        assert_eq!(summary, Some(renamed.summary()), "a change since the merge");
        drop(records);

        // More changes than are held: the next run walks the tree.
        let many: Vec<_> = (3..5)
            .map(|n| (subject(n), Some(created.clone())))
            .collect();
        cache.record(&many).await.expect("record");
        end_run(&cache).await;
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(records.len(), 3);
        let walked = summaries_file(&cache).expect("written by the walk");
        assert_eq!(walked.len(), 3);
        drop(records);

        cache
            .record(&[(subject(5), Some(created.clone()))])
            .await
            .expect("record");
        end_run(&cache).await;
        drop(cache);
        let cache = Cache::open(dir.path()).expect("reopen");
        let file = summaries_file(&cache).expect("written when the cache closed");
        let subjects: Vec<&str> = file.keys().map(String::as_str).collect();
        assert_eq!(subjects, ["s2", "s3", "s4", "s5"]);
    }

    /// The number of changes every cache holds, [`MAX_HELD_CHANGES`], in two
    /// runs: one that changes that many records, and one that changes one more.
    #[tokio::test]
    async fn a_run_changing_as_many_records_as_are_held_updates_the_summaries_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        assert_eq!(cache.max_held_changes, MAX_HELD_CHANGES);
        cache.subjects_in_background(true).await.expect("subjects");
        let changes = |count: usize, fingerprint: u64| -> Vec<_> {
            let record = SubjectRecord {
                fingerprint: Fingerprint(fingerprint),
                ..record("a@x.com", SubjectState::Created)
            };
            (0..count)
                .map(|n| (Subject::new(format!("s{n:05}")), Some(record.clone())))
                .collect()
        };
        let held = changes(MAX_HELD_CHANGES, 1);
        let (first, rest) = held.split_at(MAX_HELD_CHANGES / 2);
        cache.record(first).await.expect("record");
        cache.record(rest).await.expect("record");
        end_run(&cache).await;
        let file = summaries_file(&cache).expect("updated from the changes");
        assert_eq!(file.len(), MAX_HELD_CHANGES);

        cache
            .record(&changes(MAX_HELD_CHANGES + 1, 2))
            .await
            .expect("record");
        end_run(&cache).await;
        assert_eq!(summaries_file(&cache), None, "left for the next run");
    }

    #[tokio::test]
    async fn a_summaries_file_of_the_first_format_is_ignored_and_written_anew() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = record("a@x.com", SubjectState::Created);
        let cache = Cache::open(dir.path()).expect("open");
        cache.subjects_in_background(true).await.expect("subjects");
        cache
            .record(&[(Subject::new("s1"), Some(created.clone()))])
            .await
            .expect("record");
        end_run(&cache).await;
        let expected = BTreeMap::from([("s1".to_owned(), created.summary())]);
        assert_eq!(summaries_file(&cache), Some(expected.clone()));
        // What an older build left: it copies the store as it is, but for a mark.
        let marked = RecordSummary {
            fingerprint: Fingerprint(99),
            ..created.summary()
        };
        let version = cache.version().expect("an id");
        let old = summaries::first_format_file(version, &[("s1", marked)]);
        std::fs::write(dir.path().join("summaries.bin"), old).expect("write");
        let records = cache.subjects_in_background(true).await.expect("subjects");
        assert_eq!(
            records.summary(&Subject::new("s1")),
            Some(created.summary()),
            "read from the tree"
        );
        drop(records);
        assert_eq!(summaries_file(&cache), Some(expected), "written anew");
    }

    #[test]
    fn a_first_schema_cache_is_upgraded_unless_by_a_dry_run_and_an_unknown_one_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let set_schema = |version: u32| {
            let db = open_store(dir.path()).expect("sled");
            let meta = db.open_tree("meta").expect("meta");
            meta.insert(SCHEMA_KEY, &version.to_be_bytes())
                .expect("insert");
            db.flush().expect("flush");
        };
        let meta_key = |key: &[u8]| {
            let db = open_store(dir.path()).expect("sled");
            let found = db.open_tree("meta").expect("meta").get(key).expect("get");
            found.map(|value| value.to_vec())
        };
        set_schema(1);
        drop(Cache::open_for(dir.path(), true).expect("a dry run reads it"));
        assert_eq!(
            meta_key(SCHEMA_KEY),
            Some(1u32.to_be_bytes().to_vec()),
            "as it was"
        );
        assert_eq!(meta_key(STORE_ID_KEY), None);
        drop(Cache::open(dir.path()).expect("upgraded"));
        assert_eq!(
            meta_key(SCHEMA_KEY),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec())
        );
        assert!(meta_key(STORE_ID_KEY).is_some());
        set_schema(SCHEMA_VERSION + 1);
        let err = Cache::open(dir.path()).err().expect("refused");
        assert!(
            err.to_string()
                .contains("is not 2, the one this build knows"),
            "{err}"
        );
    }

    /// A cache that recorded a user and a run, closed.
    async fn used_cache() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        cache.subjects_in_background(true).await.expect("subjects");
        let created = record("a@x.com", SubjectState::Created);
        cache
            .record(&[(Subject::new("s1"), Some(created))])
            .await
            .expect("record");
        end_run(&cache).await;
        dir
    }

    /// sled opens a cut-short or overwritten `db` as an empty store; before the
    /// marker check both opened without an error, with no records.
    #[tokio::test]
    async fn a_damaged_db_file_is_refused_with_the_path_and_the_recovery() {
        for damage in ["truncated", "half", "random bytes"] {
            let dir = used_cache().await;
            let db = dir.path().join("db");
            let size = std::fs::metadata(&db).expect("db").len();
            match damage {
                "truncated" => std::fs::write(&db, b"").expect("truncate"),
                "half" => std::fs::OpenOptions::new()
                    .write(true)
                    .open(&db)
                    .and_then(|file| file.set_len(size / 2))
                    .expect("cut"),
                _ => {
                    let mut x = 0x9e37_79b9_7f4a_7c15_u64;
                    let noise: Vec<u8> = (0..size)
                        .map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            x.to_le_bytes()[0]
                        })
                        .collect();
                    std::fs::write(&db, noise).expect("overwrite");
                }
            }
            for dry_run in [false, true, false] {
                let err = Cache::open_for(dir.path(), dry_run)
                    .err()
                    .unwrap_or_else(|| panic!("{damage}: a damaged cache opened"));
                assert!(matches!(err, CacheError::Unreadable { .. }), "{err}");
                let text = err.to_string();
                assert!(
                    text.contains(&dir.path().display().to_string()),
                    "{damage}: {text}"
                );
                assert!(text.contains("damaged or was reset"), "{damage}: {text}");
                assert!(text.contains("idsync cache reset"), "{damage}: {text}");
            }
        }
    }

    #[tokio::test]
    async fn a_new_store_is_marked_at_once_and_an_empty_one_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(Cache::open_for(dir.path(), true).expect("a dry run's new store"));
        drop(Cache::open(dir.path()).expect("then a real run's"));
        drop(Cache::open(dir.path()).expect("and again"));
        let dir = used_cache().await;
        std::fs::remove_file(dir.path().join(STATUS_FILE)).expect("no status");
        std::fs::remove_file(dir.path().join(summaries::FILE)).expect("no summaries");
        drop(Cache::open(dir.path()).expect("a cache with its marker"));
    }

    #[tokio::test]
    async fn reset_moves_the_cache_aside_and_creates_a_fresh_one() {
        let parent = tempfile::tempdir().expect("tempdir");
        let path = parent.path().join("cache");
        assert_eq!(reset(&path).expect("nothing to move"), None);
        let cache = Cache::open(&path).expect("open");
        let err = reset(&path).expect_err("refused while open");
        assert!(matches!(err, CacheError::Locked { .. }), "{err}");
        end_run(&cache).await;
        drop(cache);
        std::fs::write(path.join("db"), b"").expect("truncate");
        assert!(Cache::open(&path).is_err());
        let aside = reset(&path).expect("reset").expect("moved");
        assert!(aside.join(STATUS_FILE).exists(), "moved as it was");
        let name = aside.file_name().expect("name").to_string_lossy();
        assert!(name.starts_with("cache.damaged-"), "{name}");
        let cache = Cache::open(&path).expect("a fresh cache");
        assert!(cache.recent_runs(10).expect("runs").is_empty());
    }

    /// Before: under umask 022 the directory was 0755 and its files 0644.
    #[tokio::test]
    async fn the_cache_is_owner_only_whatever_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
                .permissions()
                .mode()
                & 0o777
        };
        let parent = tempfile::tempdir().expect("tempdir");
        // umask is process-wide: a parent that lets everyone in stands for a loose one.
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let path = parent.path().join("cache");
        let cache = Cache::open(&path).expect("open");
        cache.subjects_in_background(true).await.expect("subjects");
        end_run(&cache).await;
        assert_eq!(mode(&path), 0o700, "the directory");
        for file in [STATUS_FILE, summaries::FILE, "db", "conf"] {
            assert_eq!(mode(&path.join(file)), 0o600, "{file}");
        }
        drop(cache);
        // An existing directory is narrowed, and files written before are too.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let status = path.join(STATUS_FILE);
        std::fs::set_permissions(&status, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let cache = Cache::open(&path).expect("reopen");
        end_run(&cache).await;
        assert_eq!(mode(&path), 0o700);
        assert_eq!(mode(&status), 0o600);
    }

    #[tokio::test]
    async fn run_history_is_bounded_and_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open");
        for i in 0..(RUN_HISTORY + 5) {
            let run = RunRecord {
                started_at: format!("run {i}"),
                finished_at: String::new(),
                outcome: "ok".into(),
                counts: Counts::default(),
                error: None,
            };
            cache.record_run(&run).await.expect("record run");
        }
        let runs = cache.recent_runs(usize::MAX).expect("runs");
        assert_eq!(runs.len(), RUN_HISTORY);
        assert_eq!(runs[0].started_at, format!("run {}", RUN_HISTORY + 4));
        let mirrored = read_status(dir.path()).expect("status file");
        assert_eq!(mirrored.len(), STATUS_RUNS);
        assert_eq!(mirrored[0], runs[0]);
    }
}
