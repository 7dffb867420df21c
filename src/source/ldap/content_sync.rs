//! RFC 4533 content synchronisation, refreshOnly: the request control, and the
//! server's answers (the state of each entry, SyncInfo messages, the final cookie)
//! decoded without panicking on a broken one.

use ldap3::asn1::{parse_tag, StructureTag, TagClass, Types, PL};
use ldap3::controls::{RawControl, RefreshMode, SyncRequest};

use super::entry::uuid_text;

pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
const SYNC_DONE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.3";
const SYNC_INFO_OID: &[u8] = b"1.3.6.1.4.1.4203.1.9.1.4";

/// The request: a refresh from `cookie`, or of everything without one. Critical,
/// so a server without content synchronisation refuses it instead of answering a
/// plain search.
pub fn request(cookie: Option<Vec<u8>>) -> RawControl {
    let mut control = RawControl::from(SyncRequest {
        mode: RefreshMode::RefreshOnly,
        cookie,
        reload_hint: false,
    });
    control.crit = true;
    control
}

/// What the server says of one entry it sends.
#[derive(Debug, PartialEq, Eq)]
pub enum EntryState {
    /// Unchanged since the cookie: sent only in a present phase.
    Present,
    /// Added or modified: the entry comes with its attributes.
    Changed,
    Deleted {
        uuid: String,
    },
}

/// A SyncInfo message.
#[derive(Debug, PartialEq, Eq)]
pub enum Info {
    /// A new cookie, if any, with nothing else to learn.
    Cookie(Option<Vec<u8>>),
    /// Entries that left (`deletes`), or the only ones still there (`!deletes`).
    IdSet {
        cookie: Option<Vec<u8>>,
        deletes: bool,
        uuids: Vec<String>,
    },
    /// A phase of a refresh ended; `present` says it was a present phase.
    Phase {
        cookie: Option<Vec<u8>>,
        present: bool,
    },
}

/// The end of a refresh: its cookie, and whether the deletions were all sent
/// (`false`: a present phase, whose absent entries left).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Done {
    pub cookie: Option<Vec<u8>>,
    pub refresh_deletes: bool,
}

/// The entry's state from its SyncState control.
pub fn entry_state(controls: &[RawControl]) -> Result<EntryState, String> {
    let control = controls
        .iter()
        .find(|c| c.ctype == SYNC_STATE_OID)
        .ok_or("an entry came without its SyncState control")?;
    let broken = || "a SyncState control is broken".to_owned();
    let mut parts = sequence(control.val.as_deref().ok_or_else(broken)?)
        .ok_or_else(broken)?
        .into_iter();
    let state = parts.next().and_then(number).ok_or_else(broken)?;
    let uuid = parts.next().and_then(bytes).ok_or_else(broken)?;
    match state {
        0 => Ok(EntryState::Present),
        1 | 2 => Ok(EntryState::Changed),
        3 => Ok(EntryState::Deleted {
            uuid: uuid_text(&uuid).ok_or_else(broken)?,
        }),
        _ => Err(broken()),
    }
}

/// The SyncDone control of the search's result.
pub fn done(controls: &[RawControl]) -> Result<Done, String> {
    let broken = || "the SyncDone control is broken".to_owned();
    let Some(control) = controls.iter().find(|c| c.ctype == SYNC_DONE_OID) else {
        return Err("the refresh ended without a SyncDone control".into());
    };
    let Some(value) = control.val.as_deref() else {
        return Ok(Done::default());
    };
    let mut done = Done::default();
    for part in sequence(value).ok_or_else(broken)? {
        match universal(&part) {
            Some(Universal::OctetString) => done.cookie = bytes(part),
            Some(Universal::Boolean) => done.refresh_deletes = boolean(part).ok_or_else(broken)?,
            _ => return Err(broken()),
        }
    }
    Ok(done)
}

/// Decodes an IntermediateResponse carrying SyncInfo.
pub fn info(message: StructureTag) -> Result<Info, String> {
    let broken = || "a SyncInfo message is broken".to_owned();
    let PL::C(parts) = message.payload else {
        return Err(broken());
    };
    let mut name = None;
    let mut value = None;
    for part in parts {
        match part.id {
            0 => name = bytes(part),
            1 => value = bytes(part),
            _ => return Err(broken()),
        }
    }
    if name.as_deref() != Some(SYNC_INFO_OID) {
        return Err("an intermediate message that is not SyncInfo".into());
    }
    let tag = parse(value.as_deref().ok_or_else(broken)?).ok_or_else(broken)?;
    if tag.class != TagClass::Context {
        return Err(broken());
    }
    let id = tag.id;
    let fields = match tag.payload {
        PL::P(cookie) if id == 0 => return Ok(Info::Cookie(Some(cookie))),
        PL::C(fields) => fields,
        PL::P(_) => return Err(broken()),
    };
    info_fields(id, fields).ok_or_else(broken)
}

/// `refreshDelete` [1], `refreshPresent` [2] or `syncIdSet` [3].
fn info_fields(id: u64, fields: Vec<StructureTag>) -> Option<Info> {
    let mut cookie = None;
    // refreshDone defaults to TRUE, refreshDeletes to FALSE.
    let mut flag = id != 3;
    let mut uuids = Vec::new();
    for field in fields {
        match universal(&field) {
            Some(Universal::OctetString) => cookie = bytes(field),
            Some(Universal::Boolean) => flag = boolean(field)?,
            Some(Universal::Set) => {
                let PL::C(set) = field.payload else {
                    return None;
                };
                for uuid in set {
                    uuids.push(uuid_text(&bytes(uuid)?)?);
                }
            }
            _ => return None,
        }
    }
    match id {
        1 => Some(Info::Phase {
            cookie,
            present: false,
        }),
        2 => Some(Info::Phase {
            cookie,
            present: true,
        }),
        3 => Some(Info::IdSet {
            cookie,
            deletes: flag,
            uuids,
        }),
        _ => None,
    }
}

fn parse(value: &[u8]) -> Option<StructureTag> {
    match parse_tag(value) {
        Ok((&[], tag)) => Some(tag),
        _ => None,
    }
}

fn sequence(value: &[u8]) -> Option<Vec<StructureTag>> {
    match parse(value)?.payload {
        PL::C(parts) => Some(parts),
        PL::P(_) => None,
    }
}

/// The universal types a sync message holds.
enum Universal {
    Boolean,
    OctetString,
    Set,
}

fn universal(tag: &StructureTag) -> Option<Universal> {
    if tag.class != TagClass::Universal {
        return None;
    }
    match tag.id {
        id if id == Types::Boolean as u64 => Some(Universal::Boolean),
        id if id == Types::OctetString as u64 => Some(Universal::OctetString),
        id if id == Types::Set as u64 => Some(Universal::Set),
        _ => None,
    }
}

fn bytes(tag: StructureTag) -> Option<Vec<u8>> {
    match tag.payload {
        PL::P(bytes) => Some(bytes),
        PL::C(_) => None,
    }
}

fn boolean(tag: StructureTag) -> Option<bool> {
    bytes(tag)?.first().map(|b| *b != 0)
}

fn number(tag: StructureTag) -> Option<u64> {
    let value = bytes(tag)?;
    (value.len() <= 8).then(|| value.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::{ASNTag, Boolean, Enumerated, OctetString, Sequence, Set, Tag};

    fn octets(bytes: &[u8]) -> Tag {
        Tag::OctetString(OctetString {
            inner: bytes.to_vec(),
            ..Default::default()
        })
    }

    fn encode(tag: Tag) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        ldap3::asn1::write::encode_into(&mut buf, tag.into_structure()).expect("encodes");
        buf.to_vec()
    }

    const UUID: [u8; 16] = [
        0xd9, 0xca, 0x05, 0xc6, 0x84, 0xba, 0x10, 0x41, 0x9e, 0x14, 0xcf, 0x60, 0xbe, 0x84, 0x61,
        0x62,
    ];

    #[test]
    fn entry_states_decode_and_a_deleted_entry_names_its_uuid() {
        let state = |n: i64| {
            let value = encode(Tag::Sequence(Sequence {
                inner: vec![
                    Tag::Enumerated(Enumerated {
                        inner: n,
                        ..Default::default()
                    }),
                    octets(&UUID),
                ],
                ..Default::default()
            }));
            entry_state(&[RawControl {
                ctype: SYNC_STATE_OID.into(),
                crit: false,
                val: Some(value),
            }])
        };
        assert_eq!(state(1), Ok(EntryState::Changed));
        assert_eq!(state(0), Ok(EntryState::Present));
        assert_eq!(
            state(3),
            Ok(EntryState::Deleted {
                uuid: "d9ca05c6-84ba-1041-9e14-cf60be846162".into()
            })
        );
        assert!(state(9).is_err());
        assert!(entry_state(&[]).is_err());
    }

    #[test]
    fn a_sync_id_set_lists_the_deleted_uuids() {
        let set = Tag::Sequence(Sequence {
            id: 3,
            class: TagClass::Context,
            inner: vec![
                octets(b"rid=000,csn=1"),
                Tag::Boolean(Boolean {
                    inner: true,
                    ..Default::default()
                }),
                Tag::Set(Set {
                    inner: vec![octets(&UUID)],
                    ..Default::default()
                }),
            ],
        });
        let message = Tag::Sequence(Sequence {
            id: 25,
            class: TagClass::Application,
            inner: vec![
                Tag::OctetString(OctetString {
                    id: 0,
                    class: TagClass::Context,
                    inner: SYNC_INFO_OID.to_vec(),
                }),
                Tag::OctetString(OctetString {
                    id: 1,
                    class: TagClass::Context,
                    inner: encode(set),
                }),
            ],
        });
        assert_eq!(
            info(message.into_structure()),
            Ok(Info::IdSet {
                cookie: Some(b"rid=000,csn=1".to_vec()),
                deletes: true,
                uuids: vec!["d9ca05c6-84ba-1041-9e14-cf60be846162".into()],
            })
        );
    }
}
