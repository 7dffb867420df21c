//! Every record's [`RecordSummary`] in one file beside the store, so that a run reads
//! them in one go instead of walking sled's tree, which costs most of a large
//! steady run's start (docs/performance.md).
//!
//! The file is a copy and never the truth. It names the store it was made from
//! and the store's generation, which a process raises, durably, before it first
//! changes a record; a file of another store, generation or format, or one that
//! fails its checksum, is ignored (and the tree walked instead, which writes it
//! anew).
//!
//! Layout, little-endian: magic, store id (u64), generation (u64), then one entry
//! per subject in the tree's key order (subject length u32, subject, state u8,
//! deactivated u8, fingerprint u64), then `u32::MAX`, the entry count (u64) and
//! a CRC-32 (u32) of everything before it. A reader checks the CRC over the whole
//! file before it decodes anything, and trusts no length it reads further than
//! the file's own size. Files of the first format (`idsyncS1`, the same layout
//! with an FNV-1a checksum) are ignored like those of another store.
//!
//! The codec is written by hand rather than derived: an entry is decoded into a
//! reused buffer and handed on as `&str`, with no allocation per record, and the
//! file is read at the start of every run (docs/performance.md compares codecs).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{RecordSummary, SubjectState};
use crate::model::Fingerprint;

pub(super) const FILE: &str = "summaries.bin";
const MAGIC: &[u8; 8] = b"idsyncS2";
const END: u32 = u32::MAX;
/// Bytes before the first entry: magic, store id, generation.
const HEADER: u64 = 8 + 8 + 8;
/// Bytes after the last entry: `END`, the count, the checksum.
const TRAILER: u64 = 4 + 8 + 4;
/// Bytes of an entry besides its subject: length, state, deactivated, fingerprint.
const ENTRY: u64 = 4 + 1 + 1 + 8;

/// Which store, and which of its states, a file copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub store: u64,
    pub generation: u64,
}

/// Calls `each` with every entry of the file in `dir` if it copies `version`.
/// Returns whether it did so completely; when it returns `false`, whatever
/// `each` was given must be thrown away. A file that fails its checksum gives
/// `each` nothing.
pub fn read(dir: &Path, version: Version, each: impl FnMut(&str, RecordSummary)) -> bool {
    let Ok(file) = File::open(dir.join(FILE)) else {
        return false;
    };
    read_file(&file, version, each).unwrap_or(false)
}

/// Which store and generation the file in `dir` names, if it is a file of this
/// format; its entries and checksum are not read.
pub fn header(dir: &Path) -> Option<Version> {
    let mut bytes = [0; HEADER as usize];
    File::open(dir.join(FILE))
        .ok()?
        .read_exact(&mut bytes)
        .ok()?;
    let (magic, rest) = bytes.split_first_chunk::<8>()?;
    let (store, generation) = rest.split_first_chunk::<8>()?;
    let generation = generation.first_chunk::<8>()?;
    (magic == MAGIC).then(|| Version {
        store: u64::from_le_bytes(*store),
        generation: u64::from_le_bytes(*generation),
    })
}

fn read_file(
    mut file: &File,
    version: Version,
    mut each: impl FnMut(&str, RecordSummary),
) -> io::Result<bool> {
    let size = file.metadata()?.len();
    if size < HEADER + TRAILER || !checksum_holds(file, size)? {
        return Ok(false);
    }
    // The file is never written in place (see `Writer`), so the bytes decoded
    // below are those whose checksum was just checked.
    file.seek(SeekFrom::Start(0))?;
    let mut input = Bounded {
        inner: BufReader::with_capacity(1 << 16, file),
        left: size - 4,
    };
    let magic: [u8; 8] = input.bytes()?;
    let found = Version {
        store: u64::from_le_bytes(input.bytes()?),
        generation: u64::from_le_bytes(input.bytes()?),
    };
    if magic != *MAGIC || found != version {
        return Ok(false);
    }
    let mut subject = Vec::new();
    let mut count = 0u64;
    loop {
        let len = u32::from_le_bytes(input.bytes()?);
        if len == END {
            break;
        }
        // A damaged or forged length asks for no more than the file holds.
        if u64::from(len) + (ENTRY - 4) + (TRAILER - 4) > input.left {
            return Ok(false);
        }
        subject.resize(len as usize, 0);
        input.read_exact(&mut subject)?;
        let [state, deactivated] = input.bytes()?;
        let fingerprint = Fingerprint(u64::from_le_bytes(input.bytes()?));
        let (Ok(subject), Some(state)) = (std::str::from_utf8(&subject), state_of(state)) else {
            return Ok(false);
        };
        let summary = RecordSummary {
            state,
            fingerprint,
            deactivated: deactivated != 0,
        };
        each(subject, summary);
        count += 1;
    }
    let listed = u64::from_le_bytes(input.bytes()?);
    Ok(listed == count && input.left == 0)
}

/// Whether the file's last 4 bytes are the CRC-32 of the `size - 4` before them.
fn checksum_holds(file: &File, size: u64) -> io::Result<bool> {
    let mut hasher = crc32fast::Hasher::new();
    let mut input = file.take(size - 4);
    let mut buffer = vec![0; 1 << 16];
    let mut read = 0u64;
    loop {
        let got = input.read(&mut buffer)?;
        if got == 0 {
            break;
        }
        hasher.update(&buffer[..got]);
        read += got as u64;
    }
    let mut stored = [0; 4];
    input.into_inner().read_exact(&mut stored)?;
    Ok(read == size - 4 && hasher.finalize() == u32::from_le_bytes(stored))
}

/// A reader of the bytes before the checksum, which knows how many are left.
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Bounded<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.left = (self.left.checked_sub(buf.len() as u64))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "past the entries' end"))?;
        self.inner.read_exact(buf)
    }

    fn bytes<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut bytes = [0; N];
        self.read_exact(&mut bytes)?;
        Ok(bytes)
    }
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
        let file = super::private::create_file(&temporary)?;
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
    pub fn push(&mut self, subject: &str, summary: RecordSummary) -> io::Result<()> {
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
        let Checksummed {
            inner: mut file,
            hasher,
        } = self.output;
        file.write_all(&hasher.finalize().to_le_bytes())?;
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
    changes: impl IntoIterator<Item = (&'c str, Option<RecordSummary>)>,
) -> io::Result<bool> {
    let mut writer = Writer::create(dir, to)?;
    let mut changes = changes.into_iter().peekable();
    let mut written = Ok(());
    let mut merge = |subject: &str, summary: RecordSummary| {
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
        SubjectState::Adopted => 1,
        SubjectState::Rejected => 2,
    }
}

fn state_of(code: u8) -> Option<SubjectState> {
    Some(match code {
        0 => SubjectState::Created,
        1 => SubjectState::Adopted,
        2 => SubjectState::Rejected,
        _ => return None,
    })
}

/// A writer that keeps a CRC-32 of the bytes through it.
struct Checksummed<W> {
    inner: W,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Checksummed<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes)
    }
}

/// A file as the first format had it: `idsyncS1`, an FNV-1a checksum.
#[cfg(test)]
pub(super) fn first_format_file(version: Version, entries: &[(&str, RecordSummary)]) -> Vec<u8> {
    let mut bytes = b"idsyncS1".to_vec();
    bytes.extend(version.store.to_le_bytes());
    bytes.extend(version.generation.to_le_bytes());
    for (subject, summary) in entries {
        bytes.extend((subject.len() as u32).to_le_bytes());
        bytes.extend(subject.as_bytes());
        bytes.extend([state_code(summary.state), u8::from(summary.deactivated)]);
        bytes.extend(summary.fingerprint.0.to_le_bytes());
    }
    bytes.extend(END.to_le_bytes());
    bytes.extend((entries.len() as u64).to_le_bytes());
    let checksum = {
        use std::hash::Hasher;
        let mut hasher = fnv::FnvHasher::default();
        hasher.write(&bytes);
        hasher.finish()
    };
    bytes.extend(checksum.to_le_bytes());
    bytes
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

    fn summary(fingerprint: u64, state: SubjectState) -> RecordSummary {
        RecordSummary {
            state,
            fingerprint: Fingerprint(fingerprint),
            deactivated: fingerprint % 2 == 0,
        }
    }

    fn write(dir: &Path, version: Version, entries: &[(&str, RecordSummary)]) {
        let mut writer = Writer::create(dir, version).expect("create");
        for (subject, summary) in entries {
            writer.push(subject, *summary).expect("push");
        }
        writer.commit().expect("commit");
    }

    fn read_all(dir: &Path, version: Version) -> Option<Vec<(String, RecordSummary)>> {
        let mut entries = Vec::new();
        read(dir, version, |subject, summary| {
            entries.push((subject.to_owned(), summary))
        })
        .then_some(entries)
    }

    fn owned(entries: &[(&str, RecordSummary)]) -> Vec<(String, RecordSummary)> {
        entries.iter().map(|(s, v)| (s.to_string(), *v)).collect()
    }

    #[test]
    fn a_file_is_read_back_only_for_the_version_it_copies() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_all(dir.path(), V1), None, "no file yet");
        let entries = [
            ("a", summary(1, SubjectState::Created)),
            ("b\u{e9}", summary(2, SubjectState::Adopted)),
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

    /// Entries `read` gives for the file in `dir`, whether or not it then
    /// refuses the file.
    fn entries_given(dir: &Path, version: Version) -> usize {
        let mut given = 0;
        read(dir, version, |_, _| given += 1);
        given
    }

    #[test]
    fn a_damaged_file_is_refused_before_anything_is_decoded() {
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
            // A flipped bit in the last fingerprint, the file cut short, a byte too many.
            {
                let mut bytes = whole.clone();
                bytes[whole.len() - TRAILER as usize - 1] ^= 1;
                bytes
            },
            whole[..whole.len() - 1].to_vec(),
            [whole.as_slice(), &[0]].concat(),
            whole[..HEADER as usize].to_vec(),
            Vec::new(),
        ];
        for bytes in damaged {
            std::fs::write(&path, &bytes).expect("write");
            assert_eq!(read_all(dir.path(), V1), None, "{} bytes", bytes.len());
            assert_eq!(entries_given(dir.path(), V1), 0, "{} bytes", bytes.len());
        }
    }

    /// A file whose first entry claims a subject of 4 GiB: damaged (the checksum
    /// no longer holds), or forged (it was made to hold).
    #[test]
    fn a_length_read_from_a_file_is_bounded_by_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), V1, &[("a", summary(1, SubjectState::Created))]);
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = HEADER as usize;
        bytes[at..at + 4].copy_from_slice(&(END - 1).to_le_bytes());
        let body = bytes.len() - 4;
        let damaged = bytes.clone();
        let checksum = crc32fast::hash(&bytes[..body]);
        bytes[body..].copy_from_slice(&checksum.to_le_bytes());
        for bytes in [damaged, bytes] {
            std::fs::write(&path, &bytes).expect("write");
            largest_allocation::reset();
            assert_eq!(read_all(dir.path(), V1), None);
            let largest = largest_allocation::get();
            assert!(largest <= 1 << 16, "allocated {largest} bytes at once");
        }
    }

    #[test]
    fn a_file_of_the_first_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), V1, &[("a", summary(1, SubjectState::Created))]);
        let path = dir.path().join(FILE);
        let first_format = first_format_file(V1, &[("a", summary(1, SubjectState::Created))]);
        std::fs::write(&path, first_format).expect("write");
        assert_eq!(read_all(dir.path(), V1), None);
    }

    #[test]
    fn a_rewrite_merges_changes_in_subject_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let created = summary(1, SubjectState::Created);
        let changed = summary(9, SubjectState::Adopted);
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

    /// The largest allocation each thread asked for since it last reset it.
    mod largest_allocation {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LARGEST: Cell<usize> = const { Cell::new(0) };
        }

        struct Tracking;

        #[global_allocator]
        static TRACKING: Tracking = Tracking;

        fn note(size: usize) {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }

        // SAFETY: every call is passed on to the system allocator as it came.
        unsafe impl GlobalAlloc for Tracking {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                unsafe { System.alloc(layout) }
            }

            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                note(layout.size());
                unsafe { System.alloc_zeroed(layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                note(new_size);
                unsafe { System.realloc(ptr, layout, new_size) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                unsafe { System.dealloc(ptr, layout) }
            }
        }

        pub fn reset() {
            LARGEST.with(|largest| largest.set(0));
        }

        pub fn get() -> usize {
            LARGEST.with(Cell::get)
        }
    }
}
