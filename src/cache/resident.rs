//! The summaries kept in memory between the runs of a daemon whose source reads
//! only changes: such a run plans a few users, and reading the summaries file
//! and writing it anew would be most of its cost (docs/performance.md). A run
//! merges the changes held since the file was read into the entries read then;
//! the file itself is brought up to date once, when the cache closes.

use std::collections::BTreeMap;

use super::records::{Entry, FullRecords, Records};
use super::RecordSummary;
use crate::model::{IdDigest, IdKeys, Subject};

/// The summaries file's entries as a run read them, ordered by digest.
pub(super) struct Resident {
    keys: IdKeys,
    entries: Vec<Entry>,
}

impl Resident {
    /// A copy of `records` as they were read, before the planner took any.
    pub(super) fn of(records: &Records) -> Self {
        Self {
            keys: records.keys.clone(),
            entries: records.entries.clone(),
        }
    }

    /// The records as they are after `changes` (by subject; `None`: forgotten).
    pub(super) fn with_changes(
        &self,
        changes: &BTreeMap<Subject, Option<RecordSummary>>,
        full: FullRecords,
    ) -> Records {
        let mut changed: Vec<(IdDigest, Option<RecordSummary>)> = changes
            .iter()
            .map(|(subject, summary)| (self.keys.digest(subject.as_str()), *summary))
            .collect();
        changed.sort_unstable_by_key(|(digest, _)| *digest);
        let mut entries = Vec::with_capacity(self.entries.len() + changed.len());
        let mut read = self.entries.iter().peekable();
        for (digest, summary) in changed {
            entries.extend(std::iter::from_fn(|| {
                read.next_if(|entry| entry.digest < digest).cloned()
            }));
            // Replaced, or forgotten.
            read.next_if(|entry| entry.digest == digest);
            if summary.is_some() {
                entries.push(Entry { digest, summary });
            }
        }
        entries.extend(read.cloned());
        Records::indexed(self.keys.clone(), entries, full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::SubjectState;
    use crate::model::Fingerprint;

    fn summary(fingerprint: u64) -> RecordSummary {
        RecordSummary {
            state: SubjectState::Created,
            fingerprint: Fingerprint(fingerprint),
            deactivated: false,
        }
    }

    #[test]
    fn changes_replace_add_and_forget_entries_of_the_copy_read() {
        let keys = IdKeys::new();
        let entries = (0..50)
            .map(|n| Entry {
                digest: keys.digest(&format!("s{n}")),
                summary: Some(summary(n)),
            })
            .collect();
        let read = Records::indexed(keys, entries, FullRecords::default());
        let resident = Resident::of(&read);
        let mut changes = BTreeMap::new();
        changes.insert(Subject::new("s3"), Some(summary(1003)));
        changes.insert(Subject::new("s7"), None);
        changes.insert(Subject::new("new"), Some(summary(2000)));
        let records = resident.with_changes(&changes, FullRecords::default());
        assert_eq!(records.len(), 50);
        assert_eq!(records.summary(&Subject::new("s3")), Some(summary(1003)));
        assert_eq!(records.summary(&Subject::new("s7")), None);
        assert_eq!(records.summary(&Subject::new("new")), Some(summary(2000)));
        for n in (0..50).filter(|n| ![3, 7].contains(n)) {
            assert_eq!(
                records.summary(&Subject::new(format!("s{n}"))),
                Some(summary(n))
            );
        }
        // The copy itself is as it was read.
        let unchanged = resident.with_changes(&BTreeMap::new(), FullRecords::default());
        assert_eq!(unchanged.summary(&Subject::new("s7")), Some(summary(7)));
    }
}
