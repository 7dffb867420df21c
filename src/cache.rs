//! What idsync remembers between runs, in sled at `cache.path`.
//!
//! Trees: `subjects` (subject → what happened to it in the gateway), `runs` (a short
//! history of runs, keyed by start time), `meta` (schema version). Outcomes are
//! flushed to disk as soon as they are known, so a crash or `kill -9` loses nothing
//! that the gateway already holds.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{Email, Fingerprint, Subject};
use crate::sync::Counts;

const SCHEMA_VERSION: u32 = 1;
const SCHEMA_KEY: &[u8] = b"schema_version";
/// sled's page cache. Records are read once per run, in order, so a small cache
/// costs little time and keeps memory flat as the directory grows.
const CACHE_CAPACITY_BYTES: u64 = 8 * 1024 * 1024;
/// How long to wait for a lock just released by this process: 10 × 50 ms.
const LOCK_ATTEMPTS: u32 = 10;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
/// Runs kept in the history.
const RUN_HISTORY: usize = 100;
/// Runs mirrored into [`STATUS_FILE`] for `idsync status`.
const STATUS_RUNS: usize = 20;
const STATUS_FILE: &str = "status.json";

/// The newest runs, newest first, as the last run wrote them; readable while
/// another process has the cache open.
pub fn read_status(cache_path: &Path) -> Result<Vec<RunRecord>, String> {
    let path = cache_path.join(STATUS_FILE);
    let text =
        std::fs::read(&path).map_err(|err| format!("cannot read {}: {err}", path.display()))?;
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

/// Every subject's record, as the planner reads them: one list ordered by a hash
/// of the subject, with an index of where each range of hashes starts. A million
/// records take less than half the memory of a hash map, which would also hold
/// its old table beside the new while it grows; a lookup still reads one or two
/// entries. A record taken out leaves a hole. Keys come from the IdP (a party
/// idsync trusts), so the fast non-cryptographic hash is safe here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Records {
    entries: Vec<Entry>,
    /// `entries[starts[b]..starts[b + 1]]` are those whose hash has the top bits `b`.
    starts: Vec<usize>,
    len: usize,
}

/// What [`Records::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    Absent,
    Record(SubjectRecord),
    /// The record was taken out before.
    Before,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    hash: u64,
    subject: Subject,
    record: Option<SubjectRecord>,
}

fn hash_of(subject: &Subject) -> u64 {
    use std::hash::BuildHasher;
    rustc_hash::FxBuildHasher.hash_one(subject)
}

impl Records {
    /// Orders and indexes `entries`, which hold each subject once.
    fn indexed(mut entries: Vec<Entry>) -> Self {
        entries.sort_unstable_by_key(|entry| entry.hash);
        let buckets = entries.len().next_power_of_two();
        let mut starts = Vec::with_capacity(buckets + 1);
        let mut at = 0;
        for bucket in 0..buckets {
            while at < entries.len() && Self::bucket(entries[at].hash, buckets) < bucket {
                at += 1;
            }
            starts.push(at);
        }
        starts.push(entries.len());
        Self {
            len: entries.iter().filter(|e| e.record.is_some()).count(),
            entries,
            starts,
        }
    }

    fn bucket(hash: u64, buckets: usize) -> usize {
        // The top bits; `buckets` is a power of two.
        hash.checked_shr(64 - buckets.trailing_zeros()).unwrap_or(0) as usize
    }

    fn position(&self, subject: &Subject) -> Option<usize> {
        let buckets = self.starts.len().checked_sub(1)?;
        let hash = hash_of(subject);
        let bucket = Self::bucket(hash, buckets);
        (self.starts[bucket]..self.starts[bucket + 1])
            .find(|&at| self.entries[at].hash == hash && self.entries[at].subject == *subject)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, subject: &Subject) -> Option<&SubjectRecord> {
        self.entries[self.position(subject)?].record.as_ref()
    }

    pub fn contains_key(&self, subject: &Subject) -> bool {
        self.get(subject).is_some()
    }

    /// Takes a subject's record out, telling a subject never recorded from one
    /// whose record was taken before.
    pub fn take(&mut self, subject: &Subject) -> Taken {
        let Some(at) = self.position(subject) else {
            return Taken::Absent;
        };
        match self.entries[at].record.take() {
            Some(record) => {
                self.len -= 1;
                Taken::Record(record)
            }
            None => Taken::Before,
        }
    }

    /// Adds or replaces a record; this re-indexes the whole list, so it is for
    /// small lists (tests).
    pub fn insert(&mut self, subject: Subject, record: SubjectRecord) -> Option<SubjectRecord> {
        if let Some(at) = self.position(&subject) {
            let before = self.entries[at].record.replace(record);
            self.len += usize::from(before.is_none());
            return before;
        }
        let mut entries = std::mem::take(&mut self.entries);
        entries.push(Entry {
            hash: hash_of(&subject),
            subject,
            record: Some(record),
        });
        *self = Self::indexed(entries);
        None
    }

    pub fn values(&self) -> impl Iterator<Item = &SubjectRecord> {
        self.entries
            .iter()
            .filter_map(|entry| entry.record.as_ref())
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut SubjectRecord> {
        self.entries
            .iter_mut()
            .filter_map(|entry| entry.record.as_mut())
    }
}

impl IntoIterator for Records {
    type Item = (Subject, SubjectRecord);
    type IntoIter = Box<dyn Iterator<Item = (Subject, SubjectRecord)>>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(
            self.entries
                .into_iter()
                .filter_map(|entry| Some((entry.subject, entry.record?))),
        )
    }
}

impl Extend<(Subject, SubjectRecord)> for Records {
    fn extend<I: IntoIterator<Item = (Subject, SubjectRecord)>>(&mut self, records: I) {
        for (subject, record) in records {
            self.insert(subject, record);
        }
    }
}

impl FromIterator<(Subject, SubjectRecord)> for Records {
    /// A subject given twice keeps its last record.
    fn from_iter<I: IntoIterator<Item = (Subject, SubjectRecord)>>(records: I) -> Self {
        let mut by_subject: Vec<(Subject, SubjectRecord)> = records.into_iter().collect();
        by_subject.reverse();
        by_subject.sort_by(|a, b| a.0.cmp(&b.0));
        by_subject.dedup_by(|later, earlier| later.0 == earlier.0);
        Self::indexed(
            by_subject
                .into_iter()
                .map(|(subject, record)| Entry {
                    hash: hash_of(&subject),
                    subject,
                    record: Some(record),
                })
                .collect(),
        )
    }
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
        matches!(self.state, SubjectState::Created | SubjectState::Existing)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectState {
    /// idsync created the user.
    Created,
    /// The gateway already had a user with this e-mail.
    Existing,
    /// The gateway refused this data with a 4xx; not resent until it changes.
    Rejected,
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

pub struct Cache {
    path: PathBuf,
    db: sled::Db,
    subjects: sled::Tree,
    runs: sled::Tree,
}

impl Cache {
    /// Opens (creating if needed) the cache; fails at once if another process has it.
    pub fn open(path: &Path) -> Result<Self, CacheError> {
        let store_error = |source: sled::Error| {
            let locked = matches!(&source, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
            if locked {
                CacheError::Locked {
                    path: path.to_owned(),
                }
            } else {
                CacheError::Store {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY_BYTES);
        // sled's background threads release the file lock a moment after the cache
        // closes, so a reopen by this same process (a reload) retries briefly.
        let mut attempts = LOCK_ATTEMPTS;
        let db = loop {
            match config.open().map_err(store_error) {
                Err(CacheError::Locked { .. }) if attempts > 1 => {
                    attempts -= 1;
                    std::thread::sleep(LOCK_RETRY);
                }
                opened => break opened?,
            }
        };
        let meta = db.open_tree("meta").map_err(store_error)?;
        let cache = Self {
            path: path.to_owned(),
            subjects: db.open_tree("subjects").map_err(store_error)?,
            runs: db.open_tree("runs").map_err(store_error)?,
            db,
        };
        match meta.get(SCHEMA_KEY).map_err(|e| cache.store_error(e))? {
            None => {
                meta.insert(SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|e| cache.store_error(e))?;
            }
            Some(found) if found.as_ref() == SCHEMA_VERSION.to_be_bytes() => {}
            Some(found) => {
                return Err(cache.unreadable(format!(
                    "schema version {found:?} is not {SCHEMA_VERSION}, the one this build knows"
                )))
            }
        }
        Ok(cache)
    }

    /// Every subject idsync has a record of, read on a blocking thread so the run
    /// can read the directory meanwhile.
    pub fn subjects_in_background(
        &self,
    ) -> impl std::future::Future<Output = Result<Records, CacheError>> {
        let (tree, path) = (self.subjects.clone(), self.path.clone());
        let task = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_subjects(&tree, &path))
        };
        async move {
            task.await.unwrap_or_else(|err| {
                Err(CacheError::Unreadable {
                    path,
                    reason: format!("the loading task failed: {err}"),
                })
            })
        }
    }

    /// Stores outcomes (`None` forgets the subject) and returns once they are on disk.
    pub async fn record(
        &self,
        outcomes: &[(Subject, Option<SubjectRecord>)],
    ) -> Result<(), CacheError> {
        let mut batch = sled::Batch::default();
        for (subject, record) in outcomes {
            match record {
                Some(record) => {
                    let value = serde_json::to_vec(record)
                        .map_err(|err| self.unreadable(format!("cannot encode a record: {err}")))?;
                    batch.insert(subject.as_str().as_bytes(), value);
                }
                None => batch.remove(subject.as_str().as_bytes()),
            }
        }
        // sled works synchronously, and now and then at length (page splits, log
        // segments): on the blocking pool, so the requests the run is sending from
        // this task keep their pace meanwhile.
        let subjects = self.subjects.clone();
        tokio::task::spawn_blocking(move || subjects.apply_batch(batch))
            .await
            .map_err(|err| self.unreadable(format!("the writing task failed: {err}")))?
            .map_err(|e| self.store_error(e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }

    /// Appends a run to the history, keeping the newest [`RUN_HISTORY`].
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
        std::fs::write(&temporary, text)
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
        CacheError::Store {
            path: self.path.clone(),
            source,
        }
    }

    fn unreadable(&self, reason: String) -> CacheError {
        CacheError::Unreadable {
            path: self.path.clone(),
            reason,
        }
    }
}

fn read_subjects(tree: &sled::Tree, path: &Path) -> Result<Records, CacheError> {
    let unreadable = |reason: String| CacheError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    // No `tree.len()` to size the list: sled counts by walking the whole tree.
    let mut entries = Vec::new();
    for entry in tree.iter() {
        let (key, value) = entry.map_err(|source| CacheError::Store {
            path: path.to_owned(),
            source,
        })?;
        let subject = Subject::new(String::from_utf8_lossy(&key).into_owned());
        let record = serde_json::from_slice(&value)
            .map_err(|err| unreadable(format!("record of subject {subject}: {err}")))?;
        entries.push(Entry {
            hash: hash_of(&subject),
            subject,
            record: Some(record),
        });
    }
    Ok(Records::indexed(entries))
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
        let subjects = cache.subjects_in_background().await.expect("subjects");
        assert_eq!(
            subjects.get(&Subject::new("s1")),
            Some(&record("a@x.com", SubjectState::Created))
        );
    }

    #[test]
    fn records_are_found_taken_and_left_by_subject() {
        let subjects: Vec<Subject> = (0..1_000).map(|i| Subject::new(format!("s{i}"))).collect();
        let mut records: Records = subjects
            .iter()
            .map(|s| (s.clone(), record("a@x.com", SubjectState::Created)))
            .chain([(
                subjects[7].clone(),
                record("b@x.com", SubjectState::Existing),
            )])
            .collect();
        assert_eq!(records.len(), 1_000, "a subject given twice is one record");
        assert_eq!(
            records.get(&subjects[7]).map(|r| r.state),
            Some(SubjectState::Existing)
        );
        assert!(records.get(&Subject::new("unknown")).is_none());
        for subject in subjects.iter().step_by(2) {
            assert!(
                matches!(records.take(subject), Taken::Record(_)),
                "{subject}"
            );
            assert_eq!(records.take(subject), Taken::Before);
        }
        assert_eq!(records.take(&Subject::new("unknown")), Taken::Absent);
        assert_eq!(records.len(), 500);
        assert!(!records.contains_key(&subjects[0]) && records.contains_key(&subjects[1]));
        records.insert(
            subjects[0].clone(),
            record("c@x.com", SubjectState::Rejected),
        );
        let mut left: Vec<String> = records.into_iter().map(|(s, _)| s.to_string()).collect();
        left.sort();
        let mut expected: Vec<String> = subjects
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 1 || *i == 0)
            .map(|(_, s)| s.to_string())
            .collect();
        expected.sort();
        assert_eq!(left, expected);
        assert!(Records::default().get(&subjects[0]).is_none());
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
