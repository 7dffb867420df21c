//! The records as the planner reads them: a compact index of every subject's
//! summary, and the whole records in the store (or, in tests, in memory).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{decode_record, store_error, CacheError, SubjectRecord, SubjectState};
use crate::model::{Fingerprint, HashBuckets, IdDigest, IdKeys, Subject};

/// Every subject's record, as the planner reads them. Only what decides whether
/// a user needs work is held: a subject's digest and its [`RecordSummary`], 32 bytes
/// whatever the record. The rest (the e-mail, the gateway's message) is read from
/// the store for the few subjects that need work. The entries are one list ordered
/// by digest, with an index of where each range of digests starts; a lookup reads
/// one or two entries. A record taken out leaves a hole, so that a subject listed
/// twice is told from one never recorded.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub(super) keys: IdKeys,
    pub(super) entries: Vec<Entry>,
    /// Where the entries of each range of digests start.
    pub(super) buckets: HashBuckets,
    /// Records not taken.
    pub(super) len: usize,
    /// Records kept active when indexed: counted then, off a change run's way
    /// for a daemon, whose next records are indexed after each run.
    pub(super) kept_active: usize,
    pub(super) full: FullRecords,
}

/// Where the whole records are.
#[derive(Debug, Clone)]
pub(super) enum FullRecords {
    Store {
        tree: sled::Tree,
        path: PathBuf,
    },
    /// Records given in memory (tests and empty caches).
    Memory(HashMap<Subject, SubjectRecord>),
}

impl Default for FullRecords {
    fn default() -> Self {
        Self::Memory(HashMap::new())
    }
}

/// What the planner needs of a record to know whether its user needs work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RecordSummary {
    pub state: SubjectState,
    pub fingerprint: Fingerprint,
    #[serde(default)]
    pub deactivated: bool,
}

impl RecordSummary {
    /// See [`SubjectRecord::is_managed`].
    pub fn is_managed(&self) -> bool {
        self.state.is_managed()
    }

    /// Managed and not deactivated: a user idsync keeps active.
    pub fn is_kept_active(&self) -> bool {
        self.is_managed() && !self.deactivated
    }
}

/// What [`Records::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    Absent,
    Record(RecordSummary),
    /// The record was taken out before.
    AlreadyTaken,
}

/// 32 bytes: `None` (taken) fits in a niche of [`SubjectState`].
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) digest: IdDigest,
    pub(super) summary: Option<RecordSummary>,
}

const _: () = assert!(std::mem::size_of::<Entry>() == 32);

impl Records {
    /// Orders and indexes `entries`, which hold each subject once. Positions are
    /// `u32`: 2^32 entries of 32 bytes would take 128 GiB.
    pub(super) fn indexed(keys: IdKeys, mut entries: Vec<Entry>, full: FullRecords) -> Self {
        entries.sort_unstable_by_key(|entry| entry.digest);
        let buckets = HashBuckets::of_sorted(entries.len(), |at| entries[at].digest.spread_word());
        let summaries = entries.iter().filter_map(|entry| entry.summary.as_ref());
        let (len, kept_active) = summaries.fold((0, 0), |(len, kept), summary| {
            (len + 1, kept + usize::from(summary.is_kept_active()))
        });
        Self {
            keys,
            len,
            kept_active,
            entries,
            buckets,
            full,
        }
    }

    /// Where `subject`'s entry is, if it has one.
    pub(super) fn position(&self, subject: &Subject) -> Option<usize> {
        let digest = self.keys.digest(subject.as_str());
        (self.buckets.candidates(digest.spread_word()))
            .find(|&at| self.entries[at].digest == digest)
    }

    /// Records not taken.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A subject's summary, unless it is not recorded or was taken.
    pub fn summary(&self, subject: &Subject) -> Option<RecordSummary> {
        self.entries[self.position(subject)?].summary
    }

    /// Records kept active (managed and not deactivated) when these were
    /// indexed, before any was taken.
    pub fn kept_active(&self) -> usize {
        self.kept_active
    }

    /// Records not taken that `keep` keeps.
    pub fn count(&self, keep: impl Fn(&RecordSummary) -> bool) -> usize {
        self.entries
            .iter()
            .filter(|entry| entry.summary.as_ref().is_some_and(&keep))
            .count()
    }

    /// Takes a subject's record out, telling a subject never recorded from one
    /// whose record was taken before.
    pub fn take(&mut self, subject: &Subject) -> Taken {
        let Some(at) = self.position(subject) else {
            return Taken::Absent;
        };
        match self.entries[at].summary.take() {
            Some(summary) => {
                self.len -= 1;
                Taken::Record(summary)
            }
            None => Taken::AlreadyTaken,
        }
    }

    /// The whole record of a recorded subject, taken or not.
    pub fn record(&self, subject: &Subject) -> Result<SubjectRecord, CacheError> {
        let found = match &self.full {
            FullRecords::Memory(records) => records.get(subject).cloned(),
            FullRecords::Store { tree, path } => tree
                .get(subject.as_str().as_bytes())
                .map_err(|source| store_error(path, source))?
                .map(|value| decode_record(path, subject.as_str(), &value))
                .transpose()?,
        };
        found.ok_or_else(|| CacheError::Unreadable {
            path: self.path().to_owned(),
            reason: format!("the record of subject {subject} vanished while the run read it"),
        })
    }

    /// The whole records not taken that `keep` keeps. With the records in the
    /// store, finding their subjects reads the store again, so this does so only if
    /// there are any.
    pub fn remaining(
        self,
        keep: impl Fn(&RecordSummary) -> bool,
    ) -> Result<Vec<(Subject, SubjectRecord)>, CacheError> {
        let wanted = self.count(&keep);
        if wanted == 0 {
            return Ok(Vec::new());
        }
        let mut found = Vec::with_capacity(wanted);
        match &self.full {
            FullRecords::Memory(records) => {
                for (subject, record) in records {
                    if matches!(self.summary(subject), Some(summary) if keep(&summary)) {
                        found.push((subject.clone(), record.clone()));
                    }
                }
            }
            FullRecords::Store { tree, path } => {
                for item in tree.iter() {
                    let (key, value) = item.map_err(|source| store_error(path, source))?;
                    let subject = Subject::new(String::from_utf8_lossy(&key));
                    if matches!(self.summary(&subject), Some(summary) if keep(&summary)) {
                        let record = decode_record(path, subject.as_str(), &value)?;
                        found.push((subject, record));
                        if found.len() == wanted {
                            break;
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// Adds or replaces a record held in memory; this re-indexes the whole list.
    #[cfg(test)]
    pub fn insert(&mut self, subject: Subject, record: SubjectRecord) {
        let mut records = match std::mem::take(&mut self.full) {
            FullRecords::Memory(records) => records,
            FullRecords::Store { .. } => panic!("records read from the store are not added to"),
        };
        records.insert(subject, record);
        *self = records.into_iter().collect();
    }

    pub(super) fn path(&self) -> &Path {
        match &self.full {
            FullRecords::Store { path, .. } => path,
            FullRecords::Memory(_) => Path::new("(memory)"),
        }
    }
}

#[cfg(test)]
impl FromIterator<(Subject, SubjectRecord)> for Records {
    /// Records held in memory; a subject given twice keeps its last record.
    fn from_iter<I: IntoIterator<Item = (Subject, SubjectRecord)>>(records: I) -> Self {
        let records: HashMap<Subject, SubjectRecord> = records.into_iter().collect();
        let keys = IdKeys::new();
        let entries = records
            .iter()
            .map(|(subject, record)| Entry {
                digest: keys.digest(subject.as_str()),
                summary: Some(record.summary()),
            })
            .collect();
        Self::indexed(keys, entries, FullRecords::Memory(records))
    }
}
