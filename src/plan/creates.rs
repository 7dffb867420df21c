//! The planned creates, packed. A first import plans a create for every directory
//! user and holds them all until the read is complete (two users sharing an
//! e-mail are both withheld, and the second may come last), so each is kept as a
//! few bytes rather than as a `CreateUser` of separately allocated strings: its
//! texts back to back with their lengths, its groups as numbers into one table.
//! Given a directory, the list also moves its full parts out of memory into a
//! file there, and reads each back when its creates are sent, with a CRC-32 of
//! each part kept in memory to tell that it came back as it went. Creates that
//! cannot be read back end the list, and the list keeps why (see [`ReadBack`]).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{CreateUser, Profile};
use crate::events;
use crate::model::{Email, Fingerprint, GroupName, Subject};

/// Bytes are kept in parts of about this size, so that the list never grows by
/// copying itself into an allocation twice its size.
const PACKED_PART_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct CreateList {
    /// Packed creates, whole in each part.
    parts: Vec<PackedPart>,
    /// Creates packed, withdrawn ones included.
    packed: usize,
    /// Positions of withdrawn creates, skipped when unpacking.
    withdrawn: FxHashSet<usize>,
    /// Each group once, numbered by `numbers`.
    groups: Vec<GroupName>,
    numbers: FxHashMap<GroupName, u32>,
    /// The create being packed.
    scratch: Vec<u8>,
    spill: Spill,
    read_back: ReadBack,
}

#[derive(Debug)]
enum PackedPart {
    Held(Vec<u8>),
    /// Written to the spill file at `at`; `crc` is the CRC-32 of its bytes.
    Spilled {
        at: u64,
        len: usize,
        crc: u32,
    },
}

/// Where full parts go. The file is created at the first full part, so that a
/// run with few creates never touches the disk, and it is never named: it goes
/// away with the list, or with the process.
#[derive(Debug, Default)]
enum Spill {
    #[default]
    Nowhere,
    Into(PathBuf),
    File(SpillFile),
}

#[derive(Debug)]
struct SpillFile {
    file: File,
    len: u64,
    directory: PathBuf,
    /// Cleared when a write fails (disk full, say): the parts written before are
    /// still read back from the file, and the next ones stay in memory.
    writable: bool,
}

/// Why the creates of a list ended before its last: a part could not be read
/// back from the spill file, or came back other than it was written.
#[derive(Debug)]
pub struct SpillError {
    /// The spill file's directory; `None` for a part that never left memory.
    directory: Option<PathBuf>,
    error: io::Error,
    /// Creates not unpacked, withdrawn ones included.
    left: usize,
}

impl SpillError {
    /// Creates not unpacked, withdrawn ones included.
    pub fn left(&self) -> usize {
        self.left
    }
}

impl std::fmt::Display for SpillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.directory {
            Some(directory) => write!(
                f,
                "could not read back the planned creates from {}: {}",
                directory.display(),
                self.error
            ),
            None => write!(f, "could not unpack the planned creates: {}", self.error),
        }
    }
}

impl std::error::Error for SpillError {}

/// Where a list, and every iterator over it, keeps the error that ended its
/// creates early; a clone taken before the list is handed on still sees it.
#[derive(Debug, Clone, Default)]
pub struct ReadBack(Arc<OnceLock<SpillError>>);

impl ReadBack {
    /// Why the creates ended before the last, if they did (the first failure).
    pub fn error(&self) -> Option<&SpillError> {
        self.0.get()
    }
}

/// Where the next create to unpack starts.
#[derive(Debug, Default)]
struct Cursor {
    part: usize,
    at: usize,
    /// The part `part`, read back from the spill file.
    read_back: Option<Vec<u8>>,
    /// Reading back a part failed: there is nothing more to unpack.
    failed: bool,
}

impl CreateList {
    pub fn len(&self) -> usize {
        self.packed - self.withdrawn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Packs a create; returns its position.
    pub fn push(&mut self, create: CreateUser) -> usize {
        let CreateUser {
            subject,
            profile,
            fingerprint,
        } = create;
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        put_text(&mut out, subject.as_str());
        put_text(&mut out, profile.email.as_str());
        for field in [&profile.name, &profile.slack_id, &profile.picture] {
            put_number(&mut out, usize::from(field.is_some()));
            if let Some(text) = field {
                put_text(&mut out, text);
            }
        }
        put_number(&mut out, profile.groups.len());
        for group in &profile.groups {
            let next = self.groups.len() as u32;
            let number = *self.numbers.entry(group.clone()).or_insert(next);
            if number == next {
                self.groups.push(group.clone());
            }
            put_number(&mut out, number as usize);
        }
        out.extend_from_slice(&fingerprint.0.to_le_bytes());
        match self.parts.last_mut() {
            Some(PackedPart::Held(part)) if part.capacity() - part.len() >= out.len() => {
                part.extend_from_slice(&out)
            }
            _ => {
                self.spill_last_part();
                let mut part = Vec::with_capacity(PACKED_PART_BYTES.max(out.len()));
                part.extend_from_slice(&out);
                self.parts.push(PackedPart::Held(part));
            }
        }
        self.scratch = out;
        self.packed += 1;
        self.packed - 1
    }

    /// From now on, full parts go to a file in `directory` instead of staying in
    /// memory. Should the file not be writable, they stay in memory.
    pub fn spill_into(&mut self, directory: &Path) {
        self.spill = Spill::Into(directory.to_owned());
    }

    /// Moves the last part, which is full, to the spill file, if there is one.
    fn spill_last_part(&mut self) {
        let Some(last) = self.parts.last_mut() else {
            return;
        };
        let PackedPart::Held(bytes) = last else {
            return;
        };
        if let Spill::Into(directory) = &mut self.spill {
            self.spill = match tempfile::tempfile_in(&*directory) {
                Ok(file) => Spill::File(SpillFile {
                    file,
                    len: 0,
                    directory: std::mem::take(directory),
                    writable: true,
                }),
                Err(err) => {
                    events::creates_not_spilled(directory, &err);
                    Spill::Nowhere
                }
            };
        }
        let Spill::File(spill) = &mut self.spill else {
            return;
        };
        if !spill.writable {
            return;
        }
        match spill.file.write_all_at(bytes, spill.len) {
            Ok(()) => {
                let spilled = PackedPart::Spilled {
                    at: spill.len,
                    len: bytes.len(),
                    crc: crc32fast::hash(bytes),
                };
                spill.len += bytes.len() as u64;
                *last = spilled;
            }
            Err(err) => {
                // Disk full, say: this part and the next stay in memory, and the
                // file keeps those written before.
                events::creates_not_spilled(&spill.directory, &err);
                spill.writable = false;
            }
        }
    }

    /// Takes the create at `position` out.
    pub fn withdraw(&mut self, position: usize) {
        debug_assert!(position < self.packed);
        self.withdrawn.insert(position);
    }

    /// The creates in the order they were pushed, each unpacked when it is taken.
    /// They end early if a part cannot be read back: see [`CreateList::read_back`].
    pub fn iter(&self) -> impl Iterator<Item = CreateUser> + '_ {
        let mut cursor = Cursor::default();
        (0..self.packed).filter_map(move |position| self.next_from(&mut cursor, position))
    }

    /// Where this list and its iterators keep the error that ended its creates
    /// early, to be taken before the list is handed on: sending them consumes it.
    pub fn read_back(&self) -> ReadBack {
        self.read_back.clone()
    }

    /// Why this list's creates ended early, if they did.
    pub fn read_back_error(&self) -> Option<&SpillError> {
        self.read_back.error()
    }

    /// Unpacks the `position`th create, at `cursor`, and moves `cursor` past it;
    /// `None` if it was withdrawn, or if it could not be read back or unpacked,
    /// which ends the creates and is kept in `read_back`.
    fn next_from(&self, cursor: &mut Cursor, position: usize) -> Option<CreateUser> {
        if cursor.failed {
            return None;
        }
        match self.unpack_next(cursor) {
            Ok(create) => (!self.withdrawn.contains(&position)).then_some(create),
            Err(error) => {
                let left = self.packed - position;
                events::spilled_creates_unreadable(&error, left);
                let directory = match &self.spill {
                    Spill::File(spill) => Some(spill.directory.clone()),
                    Spill::Nowhere | Spill::Into(_) => None,
                };
                // A second failure (of another iterator over the list) keeps the first.
                let _ = self.read_back.0.set(SpillError {
                    directory,
                    error,
                    left,
                });
                cursor.failed = true;
                None
            }
        }
    }

    fn unpack_next(&self, cursor: &mut Cursor) -> io::Result<CreateUser> {
        if cursor.at == self.part(cursor.part)?.1 {
            *cursor = Cursor {
                part: cursor.part + 1,
                ..Cursor::default()
            };
        }
        let bytes = match self.part(cursor.part)? {
            (PackedPart::Held(bytes), _) => bytes,
            (&PackedPart::Spilled { at, len, crc }, _) => match &mut cursor.read_back {
                Some(bytes) => bytes,
                unread => unread.insert(self.read_part(at, len, crc)?),
            },
        };
        self.unpack(bytes, &mut cursor.at)
    }

    /// The `index`th part and its length.
    fn part(&self, index: usize) -> io::Result<(&PackedPart, usize)> {
        match self.parts.get(index) {
            Some(part @ PackedPart::Held(bytes)) => Ok((part, bytes.len())),
            Some(part @ PackedPart::Spilled { len, .. }) => Ok((part, *len)),
            None => Err(damaged("the parts end before the creates")),
        }
    }

    /// A spilled part, checked against the CRC-32 it was written with.
    fn read_part(&self, at: u64, len: usize, crc: u32) -> io::Result<Vec<u8>> {
        let Spill::File(spill) = &self.spill else {
            // A part is spilled only into the file, which the list keeps to its end.
            return Err(io::Error::other("the spill file is gone"));
        };
        // `len` is the length written, kept in memory: not read from the disk.
        let mut bytes = vec![0; len];
        spill.file.read_exact_at(&mut bytes, at)?;
        if crc32fast::hash(&bytes) != crc {
            return Err(damaged("a part came back other than it was written"));
        }
        Ok(bytes)
    }

    fn unpack(&self, bytes: &[u8], at: &mut usize) -> io::Result<CreateUser> {
        let mut input = Unpacking { bytes, at };
        let subject = Subject::new(input.text()?);
        let email = Email::parse(input.text()?).map_err(|err| damaged(err.to_string()))?;
        let mut optional = || -> io::Result<Option<String>> {
            Ok(match input.number()? {
                0 => None,
                _ => Some(input.text()?.to_owned()),
            })
        };
        let (name, slack_id, picture) = (optional()?, optional()?, optional()?);
        let count = input.number()?;
        if count > input.left() {
            return Err(damaged("more groups than bytes"));
        }
        let groups = (0..count)
            .map(|_| {
                let number = input.number()?;
                let group = self
                    .groups
                    .get(number)
                    .ok_or_else(|| damaged("no such group"))?;
                Ok(group.clone())
            })
            .collect::<io::Result<_>>()?;
        let fingerprint = Fingerprint(u64::from_le_bytes(input.array()?));
        Ok(CreateUser {
            subject,
            profile: Profile {
                email,
                name,
                groups,
                slack_id,
                picture,
            },
            fingerprint,
        })
    }
}

fn damaged(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("a planned create does not unpack: {}", what.into()),
    )
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    put_number(out, text.len());
    out.extend_from_slice(text.as_bytes());
}

/// LEB128: most lengths and group numbers take one byte.
fn put_number(out: &mut Vec<u8>, mut value: usize) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads a packed create from `bytes` at `at`, moving `at` past what it read.
struct Unpacking<'b, 'a> {
    bytes: &'b [u8],
    at: &'a mut usize,
}

impl<'b> Unpacking<'b, '_> {
    fn left(&self) -> usize {
        self.bytes.len().saturating_sub(*self.at)
    }

    fn take(&mut self, len: usize) -> io::Result<&'b [u8]> {
        let end = (self.at.checked_add(len)).filter(|&end| end <= self.bytes.len());
        let taken = end.and_then(|end| self.bytes.get(*self.at..end));
        let taken = taken.ok_or_else(|| damaged("it ends early"))?;
        *self.at += len;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn text(&mut self) -> io::Result<&'b str> {
        let len = self.number()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| damaged("a text is not UTF-8"))
    }

    /// LEB128, as `put_number` wrote it.
    fn number(&mut self) -> io::Result<usize> {
        let mut value = 0usize;
        for shift in (0..usize::BITS).step_by(7) {
            let [byte] = self.array()?;
            let bits = usize::from(byte & 0x7f);
            if (bits << shift) >> shift != bits {
                break;
            }
            value |= bits << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err(damaged("a number too large"))
    }
}

/// Equal when they hold the same creates, however packed.
impl PartialEq for CreateList {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for CreateList {}

impl IntoIterator for CreateList {
    type Item = CreateUser;
    type IntoIter = IntoCreates;

    fn into_iter(self) -> IntoCreates {
        IntoCreates {
            list: self,
            cursor: Cursor::default(),
            position: 0,
        }
    }
}

/// The creates of a list it owns, each unpacked when it is taken and each part
/// freed once unpacked, so that the run sending them holds less and less.
pub struct IntoCreates {
    list: CreateList,
    cursor: Cursor,
    position: usize,
}

impl IntoCreates {
    /// Why the creates ended before the last, if they did.
    pub fn read_back_error(&self) -> Option<&SpillError> {
        self.list.read_back_error()
    }
}

impl Iterator for IntoCreates {
    type Item = CreateUser;

    fn next(&mut self) -> Option<CreateUser> {
        while self.position < self.list.packed && !self.cursor.failed {
            self.position += 1;
            let create = self.list.next_from(&mut self.cursor, self.position - 1);
            if let Some(PackedPart::Held(done)) =
                (self.cursor.part.checked_sub(1)).and_then(|done| self.list.parts.get_mut(done))
            {
                // Unpacked to its end: its memory goes back while the run sends.
                *done = Vec::new();
            }
            if create.is_some() {
                return create;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(subject: &str, groups: &[&GroupName], name: Option<&str>) -> CreateUser {
        CreateUser {
            subject: Subject::new(subject),
            profile: Profile {
                email: Email::parse(&format!("{subject}@example.com")).expect("email"),
                name: name.map(str::to_owned),
                groups: groups.iter().map(|&g| g.clone()).collect(),
                slack_id: name.map(|_| "U0123".into()),
                picture: None,
            },
            fingerprint: Fingerprint(u64::MAX - subject.len() as u64),
        }
    }

    #[test]
    fn creates_come_back_as_pushed_less_the_withdrawn() {
        let (sre, dev) = (GroupName::new("sre"), GroupName::new("dev"));
        let long_name = "n".repeat(300);
        let creates = [
            create("a", &[&sre, &dev], Some("Ann")),
            create("b", &[], None),
            create("c", &[&dev], Some(&long_name)),
            create("d", &[&dev, &sre], Some("")),
        ];
        let mut list = CreateList::default();
        for (position, create) in creates.iter().enumerate() {
            assert_eq!(list.push(create.clone()), position);
        }
        assert_eq!(list.iter().collect::<Vec<_>>(), creates);
        list.withdraw(1);
        assert_eq!(list.len(), 3);
        let expected = [&creates[0], &creates[2], &creates[3]].map(Clone::clone);
        assert_eq!(list.into_iter().collect::<Vec<_>>(), expected);
    }

    /// 3,000 creates of about 1 KB: three parts.
    fn many_creates() -> Vec<CreateUser> {
        let group = GroupName::new("g");
        let long_name = "n".repeat(1000);
        (0..3000)
            .map(|n| create(&format!("s{n}"), &[&group], Some(&long_name)))
            .collect()
    }

    fn listed(creates: &[CreateUser], spill: Option<&Path>) -> CreateList {
        let mut list = CreateList::default();
        if let Some(directory) = spill {
            list.spill_into(directory);
        }
        for create in creates {
            list.push(create.clone());
        }
        assert!(list.parts.len() > 2, "{} parts", list.parts.len());
        list
    }

    fn spilled(list: &CreateList) -> usize {
        let spilled = |part: &&PackedPart| matches!(part, PackedPart::Spilled { .. });
        list.parts.iter().filter(spilled).count()
    }

    #[test]
    fn creates_span_many_parts() {
        let creates = many_creates();
        let list = listed(&creates, None);
        assert_eq!(spilled(&list), 0);
        let mut sending = list.into_iter();
        let first_part: Vec<_> = sending.by_ref().take(1500).collect();
        let freed = sending.list.parts.iter().take_while(|part| match part {
            PackedPart::Held(bytes) => bytes.capacity() == 0,
            PackedPart::Spilled { .. } => false,
        });
        assert!(freed.count() > 0, "the parts sent are freed");
        let unpacked: Vec<_> = first_part.into_iter().chain(sending).collect();
        assert_eq!(unpacked, creates);
    }

    #[test]
    fn full_parts_wait_on_disk() {
        let directory = tempfile::tempdir().expect("tempdir");
        let creates = many_creates();
        let mut list = listed(&creates, Some(directory.path()));
        list.withdraw(7);
        // All but the part being filled.
        assert_eq!(spilled(&list), list.parts.len() - 1);
        let Spill::File(SpillFile { len, .. }) = &list.spill else {
            panic!("no spill file: {:?}", list.spill);
        };
        assert!(
            *len > 2 * PACKED_PART_BYTES as u64 - 2000,
            "{len} bytes spilled"
        );
        let mut expected = creates.clone();
        expected.remove(7);
        assert_eq!(list.iter().collect::<Vec<_>>(), expected);
        assert_eq!(list.into_iter().collect::<Vec<_>>(), expected);
        let entries = std::fs::read_dir(directory.path())
            .expect("read_dir")
            .count();
        assert_eq!(entries, 0, "the spill file has no name");
    }

    #[test]
    fn without_a_writable_directory_the_creates_stay_in_memory() {
        let directory = tempfile::tempdir().expect("tempdir");
        let missing = directory.path().join("missing");
        let creates = many_creates();
        let list = listed(&creates, Some(&missing));
        assert_eq!(spilled(&list), 0);
        assert!(matches!(list.spill, Spill::Nowhere));
        assert_eq!(list.into_iter().collect::<Vec<_>>(), creates);
    }

    fn spill_file(list: &CreateList) -> &File {
        let Spill::File(SpillFile { file, .. }) = &list.spill else {
            panic!("no spill file: {:?}", list.spill);
        };
        file
    }

    /// Creates `read` unpacked before their end: as many of `creates` as that, in order.
    fn a_first_part(read: &[CreateUser], creates: &[CreateUser]) {
        assert!(!read.is_empty() && read.len() < 2000, "{} read", read.len());
        assert_eq!(read[..], creates[..read.len()]);
    }

    #[test]
    fn a_spill_file_that_cannot_be_read_back_ends_the_creates_and_keeps_why() {
        let directory = tempfile::tempdir().expect("tempdir");
        let creates = many_creates();
        let list = listed(&creates, Some(directory.path()));
        // The second part is lost; the first is still there.
        spill_file(&list)
            .set_len(PACKED_PART_BYTES as u64)
            .expect("set_len");

        assert!(list.read_back_error().is_none());
        let read: Vec<_> = list.iter().collect();
        a_first_part(&read, &creates);
        let error = list.read_back_error().expect("kept by the list");
        let expected = format!(
            "could not read back the planned creates from {}: ",
            directory.path().display()
        );
        assert!(error.to_string().starts_with(&expected), "{error}");
        assert_eq!(error.left(), creates.len() - read.len());

        let read_back = list.read_back();
        let mut sending = list.into_iter();
        let sent: Vec<_> = sending.by_ref().collect();
        assert_eq!(sent, read);
        assert!(sending.read_back_error().is_some());
        assert!(
            read_back.error().is_some(),
            "seen once the list is handed on"
        );
    }

    /// Bytes that came back other than they were written: unpacking them ends
    /// the creates with an error, never with a panic or a made-up create.
    #[test]
    fn damaged_spilled_creates_end_the_creates_with_an_error() {
        let directory = tempfile::tempdir().expect("tempdir");
        let creates = many_creates();
        let damages: [fn(&mut Vec<u8>); 4] = [
            |bytes| bytes.fill(0xff),
            |bytes| bytes.fill(0),
            |bytes| bytes[1] = 200,
            // A flipped bit in a long name: it would unpack, but wrongly.
            |bytes| bytes[100] ^= 1,
        ];
        for damage in damages {
            let list = listed(&creates, Some(directory.path()));
            let PackedPart::Spilled { at, len, .. } = list.parts[1] else {
                panic!("the second part is not spilled");
            };
            let mut bytes = vec![0; len];
            let file = spill_file(&list);
            file.read_exact_at(&mut bytes, at).expect("read");
            damage(&mut bytes);
            file.write_all_at(&bytes, at).expect("write");

            let read_back = list.read_back();
            let read: Vec<_> = list.into_iter().collect();
            a_first_part(&read, &creates);
            let error = read_back.error().expect("kept");
            assert!(
                error.to_string().contains("other than it was written"),
                "{error}"
            );
        }
    }

    /// Unpacking bytes that are not a create, as a damaged part not caught by
    /// its CRC would give them.
    #[test]
    fn bytes_that_are_not_a_create_do_not_unpack() {
        let list = listed(&many_creates(), None);
        let mut packed = Vec::new();
        put_text(&mut packed, "s1");
        put_text(&mut packed, "s1@example.com");
        let whole = [packed.as_slice(), &[0, 0, 0, 1, 0], &[7; 8]].concat();
        let mut at = 0;
        let create = list.unpack(&whole, &mut at).expect("a create");
        assert_eq!((create.profile.groups.len(), at), (1, whole.len()));
        let not_creates = [
            whole[..whole.len() - 1].to_vec(),
            [&packed[..], &[0, 0, 0, 1, 99], &[7; 8]].concat(),
            [&packed[..], &[0, 0, 0, 0xff, 0x7f]].concat(),
            [&[0x80; 12][..], &whole].concat(),
            [&[3, b'a', 0xff, b'b'][..], &whole].concat(),
            [&[1, b's', 0, 0, 0, 0, 0][..], &[7; 8]].concat(),
        ];
        for bytes in not_creates {
            let mut at = 0;
            assert!(list.unpack(&bytes, &mut at).is_err(), "{bytes:?}");
        }
    }

    /// A write to the spill file that fails (disk full, say) after a part went
    /// there: that part is still read back, the next ones stay in memory.
    #[test]
    fn a_failed_spill_write_keeps_the_parts_already_spilled() {
        let directory = tempfile::tempdir().expect("tempdir");
        let creates = many_creates();
        let mut list = CreateList::default();
        list.spill_into(directory.path());
        for create in &creates {
            list.push(create.clone());
            if spilled(&list) == 1 {
                if let Spill::File(spill) = &mut list.spill {
                    // The same file, opened again for reading only.
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&spill.file);
                    spill.file = File::open(format!("/proc/self/fd/{fd}")).expect("reopen");
                }
            }
        }
        assert_eq!(spilled(&list), 1);
        assert!(list.parts.len() > 2, "{} parts", list.parts.len());
        assert!(matches!(&list.spill, Spill::File(spill) if !spill.writable));
        let read_back = list.read_back();
        assert_eq!(list.into_iter().collect::<Vec<_>>(), creates);
        assert!(read_back.error().is_none());
    }
}
