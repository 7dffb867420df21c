//! Every record's [`Summary`] in one file beside the store, so that a run reads
//! them in one go instead of walking sled's tree: at a million records the walk
//! takes seconds of CPU, most of a steady run's start.
//!
//! The file is a copy and never the truth. It names the store it was made from
//! and the store's generation, which a process raises, durably, before it first
//! changes a record; a file of another store or generation, or one that fails
//! its checksum, is ignored (and the tree walked instead).
//!
//! Layout, little-endian: magic, store id (u64), generation (u64), then one entry
//! per subject in the tree's key order (subject length u32, subject, state u8,
//! deactivated u8, fingerprint u64), then `u32::MAX`, the entry count (u64) and
//! an FNV-1a checksum (u64) of everything before it.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{SubjectState, Summary};
use crate::model::Fingerprint;

const FILE: &str = "summaries.bin";
const MAGIC: &[u8; 8] = b"idsyncS1";
const END: u32 = u32::MAX;

/// Which store, and which of its states, a file copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub store: u64,
    pub generation: u64,
}

/// Calls `each` with every entry of the file in `dir` if it copies `version`.
/// Returns whether it did so completely; when it returns `false`, whatever
/// `each` was given must be thrown away (the checksum is checked at the end).
pub fn read(dir: &Path, version: Version, mut each: impl FnMut(&str, Summary)) -> bool {
    let Ok(file) = File::open(dir.join(FILE)) else {
        return false;
    };
    let mut input = Checksummed::new(BufReader::with_capacity(1 << 16, file));
    let mut read_all = || -> io::Result<bool> {
        let mut magic = [0; 8];
        input.read_exact(&mut magic)?;
        let found = Version {
            store: input.u64()?,
            generation: input.u64()?,
        };
        if magic != *MAGIC || found != version {
            return Ok(false);
        }
        let mut subject = Vec::new();
        let mut count = 0u64;
        loop {
            let len = input.u32()?;
            if len == END {
                break;
            }
            subject.resize(len as usize, 0);
            input.read_exact(&mut subject)?;
            let (state, deactivated) = (input.u8()?, input.u8()?);
            let fingerprint = Fingerprint(input.u64()?);
            let (Ok(subject), Some(state)) = (std::str::from_utf8(&subject), state_of(state))
            else {
                return Ok(false);
            };
            let summary = Summary {
                state,
                fingerprint,
                deactivated: deactivated != 0,
            };
            each(subject, summary);
            count += 1;
        }
        let listed = input.u64()?;
        let expected = input.hash;
        let mut checksum = [0; 8];
        input.inner.read_exact(&mut checksum)?;
        let at_end = input.inner.read(&mut [0])? == 0;
        Ok(listed == count && u64::from_le_bytes(checksum) == expected && at_end)
    };
    read_all().unwrap_or(false)
}

/// Writes a new file beside the old one and puts it in its place once complete,
/// so that a crash leaves the old file or the new one, never half of one.
pub struct Writer {
    output: Checksummed<BufWriter<File>>,
    temporary: PathBuf,
    path: PathBuf,
    count: u64,
}

impl Writer {
    pub fn create(dir: &Path, version: Version) -> io::Result<Self> {
        let path = dir.join(FILE);
        let temporary = path.with_extension("bin.tmp");
        let file = File::create(&temporary)?;
        let mut output = Checksummed::new(BufWriter::with_capacity(1 << 16, file));
        output.write_all(MAGIC)?;
        output.write_all(&version.store.to_le_bytes())?;
        output.write_all(&version.generation.to_le_bytes())?;
        Ok(Self {
            output,
            temporary,
            path,
            count: 0,
        })
    }

    /// Entries go in the tree's order of subjects.
    pub fn push(&mut self, subject: &str, summary: Summary) -> io::Result<()> {
        let len = u32::try_from(subject.len())
            .ok()
            .filter(|&len| len != END)
            .ok_or_else(|| io::Error::other("a subject of 4 GiB"))?;
        self.output.write_all(&len.to_le_bytes())?;
        self.output.write_all(subject.as_bytes())?;
        self.output
            .write_all(&[state_code(summary.state), u8::from(summary.deactivated)])?;
        self.output
            .write_all(&summary.fingerprint.0.to_le_bytes())?;
        self.count += 1;
        Ok(())
    }

    pub fn commit(mut self) -> io::Result<()> {
        self.output.write_all(&END.to_le_bytes())?;
        self.output.write_all(&self.count.to_le_bytes())?;
        let checksum = self.output.hash;
        let mut file = self.output.inner;
        file.write_all(&checksum.to_le_bytes())?;
        let file = file.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        std::fs::rename(&self.temporary, &self.path)
    }

    /// Leaves the file as it was.
    fn abandon(self) {
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// Writes a file copying `to`: the entries of the one copying `from` with
/// `changes` made to them. `changes` holds each changed subject once, in the
/// tree's order, with `None` for one forgotten. Returns `false`, writing
/// nothing, when there is no file copying `from`.
pub fn rewrite<'c>(
    dir: &Path,
    from: Version,
    to: Version,
    changes: impl IntoIterator<Item = (&'c str, Option<Summary>)>,
) -> io::Result<bool> {
    let mut writer = Writer::create(dir, to)?;
    let mut changes = changes.into_iter().peekable();
    let mut written = Ok(());
    let mut merge = |subject: &str, summary: Summary| {
        let mut kept = Some(summary);
        while let Some((changed, change)) = changes.next_if(|(changed, _)| *changed <= subject) {
            if changed == subject {
                kept = None;
            }
            if let (Some(change), Ok(())) = (change, &written) {
                written = writer.push(changed, change);
            }
        }
        if let (Some(summary), Ok(())) = (kept, &written) {
            written = writer.push(subject, summary);
        }
    };
    if !read(dir, from, &mut merge) {
        writer.abandon();
        return Ok(false);
    }
    if let Err(err) = written {
        writer.abandon();
        return Err(err);
    }
    for (changed, change) in changes {
        if let Some(change) = change {
            writer.push(changed, change)?;
        }
    }
    writer.commit()?;
    Ok(true)
}

fn state_code(state: SubjectState) -> u8 {
    match state {
        SubjectState::Created => 0,
        SubjectState::Existing => 1,
        SubjectState::Rejected => 2,
    }
}

fn state_of(code: u8) -> Option<SubjectState> {
    Some(match code {
        0 => SubjectState::Created,
        1 => SubjectState::Existing,
        2 => SubjectState::Rejected,
        _ => return None,
    })
}

/// A reader or writer that keeps an FNV-1a hash of the bytes through it.
struct Checksummed<T> {
    inner: T,
    hash: u64,
}

impl<T> Checksummed<T> {
    fn new(inner: T) -> Self {
        Self {
            inner,
            hash: Fingerprint::OFFSET,
        }
    }

    fn add(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.hash = (self.hash ^ u64::from(byte)).wrapping_mul(Fingerprint::PRIME);
        }
    }
}

impl<R: Read> Checksummed<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.add(buf);
        Ok(())
    }

    fn u8(&mut self) -> io::Result<u8> {
        let mut bytes = [0; 1];
        self.read_exact(&mut bytes)?;
        Ok(bytes[0])
    }

    fn u32(&mut self) -> io::Result<u32> {
        let mut bytes = [0; 4];
        self.read_exact(&mut bytes)?;
        Ok(u32::from_le_bytes(bytes))
    }

    fn u64(&mut self) -> io::Result<u64> {
        let mut bytes = [0; 8];
        self.read_exact(&mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }
}

impl<W: Write> Checksummed<W> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.add(bytes);
        self.inner.write_all(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: Version = Version {
        store: 7,
        generation: 1,
    };
    const V2: Version = Version {
        store: 7,
        generation: 2,
    };

    fn summary(fingerprint: u64, state: SubjectState) -> Summary {
        Summary {
            state,
            fingerprint: Fingerprint(fingerprint),
            deactivated: fingerprint % 2 == 0,
        }
    }

    fn write(dir: &Path, version: Version, entries: &[(&str, Summary)]) {
        let mut writer = Writer::create(dir, version).expect("create");
        for (subject, summary) in entries {
            writer.push(subject, *summary).expect("push");
        }
        writer.commit().expect("commit");
    }

    fn read_all(dir: &Path, version: Version) -> Option<Vec<(String, Summary)>> {
        let mut entries = Vec::new();
        read(dir, version, |subject, summary| {
            entries.push((subject.to_owned(), summary))
        })
        .then_some(entries)
    }

    fn owned(entries: &[(&str, Summary)]) -> Vec<(String, Summary)> {
        entries.iter().map(|(s, v)| (s.to_string(), *v)).collect()
    }

    #[test]
    fn a_file_is_read_back_only_for_the_version_it_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_all(dir.path(), V1), None, "no file yet");
        let entries = [
            ("a", summary(1, SubjectState::Created)),
            ("b\u{e9}", summary(2, SubjectState::Existing)),
            ("c", summary(3, SubjectState::Rejected)),
        ];
        write(dir.path(), V1, &entries);
        assert_eq!(read_all(dir.path(), V1), Some(owned(&entries)));
        assert_eq!(read_all(dir.path(), V2), None, "another generation");
        let other_store = Version { store: 8, ..V1 };
        assert_eq!(read_all(dir.path(), other_store), None, "another store");
        write(dir.path(), V2, &[]);
        assert_eq!(read_all(dir.path(), V2), Some(Vec::new()));
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            V1,
            &[
                ("a", summary(1, SubjectState::Created)),
                ("b", summary(2, SubjectState::Created)),
            ],
        );
        let path = dir.path().join(FILE);
        let whole = std::fs::read(&path).expect("read");
        let damaged = [
            // A flipped bit in a fingerprint, the file cut short, a byte too many.
            {
                let mut bytes = whole.clone();
                bytes[8 + 16 + 4 + 1 + 2] ^= 1;
                bytes
            },
            whole[..whole.len() - 1].to_vec(),
            [whole.as_slice(), &[0]].concat(),
        ];
        for bytes in damaged {
            std::fs::write(&path, bytes).expect("write");
            assert_eq!(read_all(dir.path(), V1), None);
        }
    }

    #[test]
    fn a_rewrite_merges_changes_in_subject_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = summary(1, SubjectState::Created);
        let changed = summary(9, SubjectState::Existing);
        write(
            dir.path(),
            V1,
            &[("b", created), ("d", created), ("f", created)],
        );
        let changes = [
            ("a", Some(changed)),
            ("b", None),
            ("c", Some(changed)),
            ("d", Some(changed)),
            ("g", Some(changed)),
            ("h", None),
        ];
        assert!(rewrite(dir.path(), V1, V2, changes).expect("rewrite"));
        let expected = [
            ("a", changed),
            ("c", changed),
            ("d", changed),
            ("f", created),
            ("g", changed),
        ];
        assert_eq!(read_all(dir.path(), V2), Some(owned(&expected)));
        assert!(
            !rewrite(dir.path(), V1, V2, []).expect("rewrite"),
            "no file copies the older generation any more"
        );
        assert!(!dir.path().join("summaries.bin.tmp").exists());
        assert_eq!(
            read_all(dir.path(), V2),
            Some(owned(&expected)),
            "left as it was"
        );
    }
}
