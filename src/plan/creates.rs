//! The planned creates, packed. A first import plans a create for every directory
//! user and holds them all until the read is complete (two users sharing an
//! e-mail are both withheld, and the second may come last), so each is kept as a
//! few bytes rather than as a `CreateUser` of separately allocated strings: its
//! texts back to back with their lengths, its groups as numbers into one table.
//! Given a directory, the list also moves its full parts out of memory into a
//! file there, and reads each back when its creates are sent.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{CreateUser, Profile};
use crate::events;
use crate::model::{Email, Fingerprint, GroupName, Subject};

/// Bytes are kept in parts of about this size, so that the list never grows by
/// copying itself into an allocation twice its size.
const PART_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct CreateList {
    /// Packed creates, whole in each part.
    parts: Vec<Part>,
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
}

#[derive(Debug)]
enum Part {
    Held(Vec<u8>),
    /// Written to the spill file at `at`.
    Spilled {
        at: u64,
        len: usize,
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
    File {
        file: File,
        len: u64,
        directory: PathBuf,
    },
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
            Some(Part::Held(part)) if part.capacity() - part.len() >= out.len() => {
                part.extend_from_slice(&out)
            }
            _ => {
                self.spill_last_part();
                let mut part = Vec::with_capacity(PART_BYTES.max(out.len()));
                part.extend_from_slice(&out);
                self.parts.push(Part::Held(part));
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
        let Some(Part::Held(bytes)) = self.parts.last() else {
            return;
        };
        if let Spill::Into(directory) = &mut self.spill {
            self.spill = match tempfile::tempfile_in(&*directory) {
                Ok(file) => Spill::File {
                    file,
                    len: 0,
                    directory: std::mem::take(directory),
                },
                Err(err) => {
                    events::creates_not_spilled(directory, &err);
                    Spill::Nowhere
                }
            };
        }
        let Spill::File {
            file,
            len,
            directory,
        } = &mut self.spill
        else {
            return;
        };
        match file.write_all_at(bytes, *len) {
            Ok(()) => {
                let spilled = Part::Spilled {
                    at: *len,
                    len: bytes.len(),
                };
                *len += bytes.len() as u64;
                *self.parts.last_mut().expect("a last part") = spilled;
            }
            Err(err) => {
                // Disk full, say: this part and the next stay in memory.
                events::creates_not_spilled(directory, &err);
                self.spill = Spill::Nowhere;
            }
        }
    }

    /// Takes the create at `position` out.
    pub fn withdraw(&mut self, position: usize) {
        debug_assert!(position < self.packed);
        self.withdrawn.insert(position);
    }

    /// The creates in the order they were pushed, each unpacked when it is taken.
    pub fn iter(&self) -> impl Iterator<Item = CreateUser> + '_ {
        let mut cursor = Cursor::default();
        (0..self.packed).filter_map(move |position| self.next_from(&mut cursor, position))
    }

    /// Unpacks the `position`th create, at `cursor`, and moves `cursor` past it;
    /// `None` if it was withdrawn, or if its part could not be read back.
    fn next_from(&self, cursor: &mut Cursor, position: usize) -> Option<CreateUser> {
        if cursor.failed {
            return None;
        }
        if cursor.at == self.part_len(cursor.part) {
            *cursor = Cursor {
                part: cursor.part + 1,
                ..Cursor::default()
            };
        }
        let bytes = match &self.parts[cursor.part] {
            Part::Held(bytes) => bytes,
            Part::Spilled { at, len } => match &mut cursor.read_back {
                Some(bytes) => bytes,
                unread => match self.read_back(*at, *len) {
                    Ok(bytes) => unread.insert(bytes),
                    Err(err) => {
                        events::spilled_creates_unreadable(&err, self.packed - position);
                        cursor.failed = true;
                        return None;
                    }
                },
            },
        };
        let create = self.unpack(bytes, &mut cursor.at);
        (!self.withdrawn.contains(&position)).then_some(create)
    }

    fn part_len(&self, part: usize) -> usize {
        match &self.parts[part] {
            Part::Held(bytes) => bytes.len(),
            Part::Spilled { len, .. } => *len,
        }
    }

    fn read_back(&self, at: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let Spill::File { file, .. } = &self.spill else {
            unreachable!("a part is spilled only into a file");
        };
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, at)?;
        Ok(bytes)
    }

    fn unpack(&self, bytes: &[u8], at: &mut usize) -> CreateUser {
        let subject = Subject::new(read_text(bytes, at));
        let email = Email::parse(read_text(bytes, at)).expect("packed from a parsed e-mail");
        let mut optional = || match read_number(bytes, at) {
            0 => None,
            _ => Some(read_text(bytes, at).to_owned()),
        };
        let (name, slack_id, picture) = (optional(), optional(), optional());
        let groups = (0..read_number(bytes, at))
            .map(|_| self.groups[read_number(bytes, at)].clone())
            .collect();
        let fingerprint = bytes[*at..*at + 8].try_into().expect("8 bytes");
        *at += 8;
        CreateUser {
            subject,
            profile: Profile {
                email,
                name,
                groups,
                slack_id,
                picture,
            },
            fingerprint: Fingerprint(u64::from_le_bytes(fingerprint)),
        }
    }
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

fn read_text<'b>(bytes: &'b [u8], at: &mut usize) -> &'b str {
    let len = read_number(bytes, at);
    let text = &bytes[*at..*at + len];
    *at += len;
    std::str::from_utf8(text).expect("packed from a str")
}

fn read_number(bytes: &[u8], at: &mut usize) -> usize {
    let mut value = 0;
    let mut shift = 0;
    loop {
        let byte = bytes[*at];
        *at += 1;
        value |= usize::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return value;
        }
        shift += 7;
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

impl Iterator for IntoCreates {
    type Item = CreateUser;

    fn next(&mut self) -> Option<CreateUser> {
        while self.position < self.list.packed && !self.cursor.failed {
            self.position += 1;
            let create = self.list.next_from(&mut self.cursor, self.position - 1);
            if let Some(Part::Held(done)) = self
                .cursor
                .part
                .checked_sub(1)
                .map(|done| &mut self.list.parts[done])
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
        let spilled = |part: &&Part| matches!(part, Part::Spilled { .. });
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
            Part::Held(bytes) => bytes.capacity() == 0,
            Part::Spilled { .. } => false,
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
        let Spill::File { len, .. } = &list.spill else {
            panic!("no spill file: {:?}", list.spill);
        };
        assert!(*len > 2 * PART_BYTES as u64 - 2000, "{len} bytes spilled");
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

    #[test]
    fn a_spill_file_that_cannot_be_read_back_ends_the_creates() {
        let directory = tempfile::tempdir().expect("tempdir");
        let creates = many_creates();
        let list = listed(&creates, Some(directory.path()));
        let Spill::File { file, .. } = &list.spill else {
            panic!("no spill file: {:?}", list.spill);
        };
        // The second part is lost; the first is still there.
        file.set_len(PART_BYTES as u64).expect("set_len");
        let read: Vec<_> = list.into_iter().collect();
        assert!(!read.is_empty() && read.len() < 2000, "{} read", read.len());
        assert_eq!(read[..], creates[..read.len()]);
    }
}
