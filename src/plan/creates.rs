//! The planned creates, packed. A first import plans a create for every directory
//! user and holds them all until the read is complete (two users sharing an
//! e-mail are both withheld, and the second may come last), so each is kept as a
//! few bytes rather than as a `CreateUser` of separately allocated strings: its
//! texts back to back with their lengths, its groups as numbers into one table.

use rustc_hash::{FxHashMap, FxHashSet};

use super::{CreateUser, Profile};
use crate::model::{Email, Fingerprint, GroupName, Subject};

/// Bytes are kept in parts of about this size, so that the list never grows by
/// copying itself into an allocation twice its size.
const PART_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct CreateList {
    /// Packed creates, whole in each part.
    parts: Vec<Vec<u8>>,
    /// Creates packed, withdrawn ones included.
    packed: usize,
    /// Positions of withdrawn creates, skipped when unpacking.
    withdrawn: FxHashSet<usize>,
    /// Each group once, numbered by `numbers`.
    groups: Vec<GroupName>,
    numbers: FxHashMap<GroupName, u32>,
    /// The create being packed.
    scratch: Vec<u8>,
}

/// Where the next create to unpack starts.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    part: usize,
    at: usize,
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
            Some(part) if part.capacity() - part.len() >= out.len() => part.extend_from_slice(&out),
            _ => {
                let mut part = Vec::with_capacity(PART_BYTES.max(out.len()));
                part.extend_from_slice(&out);
                self.parts.push(part);
            }
        }
        self.scratch = out;
        self.packed += 1;
        self.packed - 1
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
    /// `None` if it was withdrawn.
    fn next_from(&self, cursor: &mut Cursor, position: usize) -> Option<CreateUser> {
        if cursor.at == self.parts[cursor.part].len() {
            *cursor = Cursor {
                part: cursor.part + 1,
                at: 0,
            };
        }
        let create = self.unpack(&self.parts[cursor.part], &mut cursor.at);
        (!self.withdrawn.contains(&position)).then_some(create)
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
        while self.position < self.list.packed {
            self.position += 1;
            let create = self.list.next_from(&mut self.cursor, self.position - 1);
            if let Some(done) = self.cursor.part.checked_sub(1) {
                // Unpacked to its end: its memory goes back while the run sends.
                self.list.parts[done] = Vec::new();
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

    #[test]
    fn creates_span_many_parts() {
        let group = GroupName::new("g");
        let long_name = "n".repeat(1000);
        let creates: Vec<_> = (0..3000)
            .map(|n| create(&format!("s{n}"), &[&group], Some(&long_name)))
            .collect();
        let mut list = CreateList::default();
        for create in &creates {
            list.push(create.clone());
        }
        assert!(list.parts.len() > 2, "{} parts", list.parts.len());
        let mut sending = list.into_iter();
        let first_part: Vec<_> = sending.by_ref().take(1500).collect();
        let freed = sending.list.parts.iter().take_while(|p| p.capacity() == 0);
        assert!(freed.count() > 0, "the parts sent are freed");
        let unpacked: Vec<_> = first_part.into_iter().chain(sending).collect();
        assert_eq!(unpacked, creates);
    }
}
