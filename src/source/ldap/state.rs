//! What an incremental read continues from: the server's cookies for the users
//! and the groups, and the group listing, to tell who left a group that changed.
//!
//! The listing is megabytes for a large directory, and most change reads change
//! none of its groups or a few. So it is kept apart from the position, as the
//! cursor's base ([`Cursor::base`](crate::source::Cursor::base)), written whole
//! by a full read and again only once the groups changed since outweigh it; the
//! position holds the cookies and those groups. A daemon keeps the state its last
//! read ended with ([`Resident`]), so that its next read decodes nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::entry::{dn_key, Entry};
use super::groups::{GroupChange, GroupListing, MemberIndex, MemberKey, Memberships};
use crate::config::MemberAttribute;
use crate::model::Subject;

#[derive(Debug, PartialEq, Eq)]
pub struct State {
    /// The cookies, in hex: a cookie is bytes.
    users: String,
    groups: String,
    listing: GroupListing,
    base: Base,
    /// The listing by member, for a state that serves run after run.
    index: Option<MemberIndex>,
}

/// How the listing stands to the base kept apart.
#[derive(Debug, Default, PartialEq, Eq)]
struct Base {
    /// `None`: no base is kept for this listing (after a full read, or a state
    /// of an earlier version); the next cursor gives one.
    id: Option<u64>,
    /// The base's length, against which the changes are weighed.
    len: usize,
    /// The groups (by DN key) changed or deleted since the base was written.
    changed: BTreeSet<String>,
}

const HEADER: &str = "ldap-state/3";
/// Versions before 2026-12-05 kept the listing in the position itself.
const INLINE_HEADER: &str = "ldap-state/2";
const BASE_HEADER: &str = "ldap-listing/1 ";

/// The base is written anew once the changes since it are this share of it.
const REWRITE_SHARE: usize = 4;

impl State {
    /// The state at the end of a full read.
    pub fn new(users: &[u8], groups: &[u8], listing: GroupListing) -> Self {
        Self {
            users: hex(users),
            groups: hex(groups),
            listing,
            base: Base::default(),
            index: None,
        }
    }

    pub fn users_cookie(&self) -> Option<Vec<u8>> {
        unhex(&self.users)
    }

    pub fn groups_cookie(&self) -> Option<Vec<u8>> {
        unhex(&self.groups)
    }

    /// The state after a change read that ended with these cookies.
    pub fn with_cookies(self, users: &[u8], groups: &[u8]) -> Self {
        Self {
            users: hex(users),
            groups: hex(groups),
            ..self
        }
    }

    /// Applies the groups a refresh reported changed (whole) and deleted (by
    /// entryUUID), remembering them for the position; see [`GroupListing::apply`].
    pub fn apply(
        &mut self,
        changed: &[Entry],
        deleted: &[Subject],
        name_attribute: &str,
        members: &MemberAttribute,
    ) -> GroupChange {
        let mut named: BTreeSet<String> = changed.iter().map(|entry| dn_key(&entry.dn)).collect();
        named.extend(self.listing.dns_of(deleted));
        let change = self
            .listing
            .apply(changed, deleted, name_attribute, members);
        if let Some(index) = &mut self.index {
            index.regroup(&self.listing, &named);
        }
        self.base.changed.extend(named);
        change
    }

    /// Indexes the listing by member: for a state that serves run after run
    /// (a daemon's), where building the index once (5 ms at 100,000 users)
    /// costs less than the reads it spares. A state decoded for one read
    /// reads the listing instead.
    fn index_members(&mut self) {
        if self.index.is_none() {
            self.index = Some(MemberIndex::of(&self.listing));
        }
    }

    /// The groups of `keys`, nesting flattened.
    pub fn memberships_of(&self, keys: &HashSet<MemberKey>) -> Memberships {
        match &self.index {
            Some(index) => self.listing.memberships_by(index, keys),
            None => self.listing.memberships_of(keys),
        }
    }

    /// The position's text, and the base when it is written anew: a header
    /// line, the two cookies on a line, the base's id, then the groups changed
    /// since the base (see [`GroupListing::write_changes`]). Lines, read
    /// without escapes (docs/performance.md).
    pub fn encode(&mut self) -> (String, Option<Arc<str>>) {
        let mut changes = String::new();
        self.listing.write_changes(&self.base.changed, &mut changes);
        let mut new_base = None;
        let id = match self.base.id {
            Some(id) if changes.len() * REWRITE_SHARE <= self.base.len => id,
            _ => {
                let id = rand::random();
                let mut text = format!("{BASE_HEADER}{id:016x}\n");
                self.listing.write(&mut text);
                self.base = Base {
                    id: Some(id),
                    len: text.len(),
                    changed: BTreeSet::new(),
                };
                changes.clear();
                self.listing.write_changes(&self.base.changed, &mut changes);
                new_base = Some(Arc::from(text));
                id
            }
        };
        let position = format!(
            "{HEADER}\n{} {}\nbase {id:016x}\n{changes}",
            self.users, self.groups
        );
        (position, new_base)
    }

    /// The state [`encode`](Self::encode) wrote, from the position and the base
    /// kept with it; `None` for anything else, or a base that is not the
    /// position's. A position of the version before keeps its listing itself.
    pub fn decode(position: &str, base: Option<&str>) -> Option<Self> {
        if let Some(rest) = position.strip_prefix(INLINE_HEADER) {
            let (users, groups, listing) = cookies(rest)?;
            let listing = GroupListing::read(listing)?;
            return Some(Self::decoded(users, groups, listing, Base::default()));
        }
        let (users, groups, rest) = cookies(position.strip_prefix(HEADER)?)?;
        let (id_line, changes) = rest.split_once('\n')?;
        let id = id_line.strip_prefix("base ")?;
        let base = base?;
        let (base_id, listing) = base.strip_prefix(BASE_HEADER)?.split_once('\n')?;
        if base_id != id {
            return None;
        }
        let mut listing = GroupListing::read(listing)?;
        let changed = listing.read_changes(changes)?;
        let base = Base {
            id: Some(u64::from_str_radix(id, 16).ok()?),
            len: base.len(),
            changed,
        };
        Some(Self::decoded(users, groups, listing, base))
    }

    fn decoded(users: &str, groups: &str, listing: GroupListing, base: Base) -> Self {
        Self {
            users: users.to_owned(),
            groups: groups.to_owned(),
            listing,
            base,
            index: None,
        }
    }
}

/// The line of cookies after a header line, checked, and what follows it.
fn cookies(text: &str) -> Option<(&str, &str, &str)> {
    let (cookies, rest) = text.strip_prefix('\n')?.split_once('\n')?;
    let (users, groups) = cookies.split_once(' ')?;
    unhex(users)?;
    unhex(groups)?;
    Some((users, groups, rest))
}

/// For a source that reads again ([`enable`](Self::enable)d): the state its
/// last read ended with, and the position it gave; the next read continues from
/// it if that position is the one it is given (the run kept it), and decodes the
/// cursor otherwise.
#[derive(Default)]
pub struct Resident {
    enabled: AtomicBool,
    kept: Mutex<Option<(String, State)>>,
}

impl Resident {
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// The state kept for `position`, taken out.
    pub fn take(&self, position: &str) -> Option<State> {
        match self.kept().take() {
            Some((at, state)) if at == position => Some(state),
            _ => None,
        }
    }

    /// Keeps `state`, indexed, if enabled.
    pub fn keep(&self, position: String, mut state: State) {
        if self.enabled.load(Ordering::Relaxed) {
            state.index_members();
            *self.kept() = Some((position, state));
        }
    }

    fn kept(&self) -> MutexGuard<'_, Option<(String, State)>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &[u8] = b"rid=000,csn=20261205054546.134084Z#000000#000#000000";

    fn group(dn: &str, name: &str, members: &[&str]) -> Entry {
        let uuid = format!("uuid-{name}");
        Entry::for_tests(
            dn,
            &[
                ("cn", &[name]),
                ("entryUUID", &[&uuid]),
                ("member", members),
            ],
        )
    }

    fn member() -> MemberAttribute {
        MemberAttribute::Dn("member".into())
    }

    /// A state after a full read of `groups` teams of ten people each.
    fn state(groups: usize) -> State {
        let mut listing = GroupListing::new("ou=people,dc=x");
        for g in 0..groups {
            let people: Vec<String> = (0..10)
                .map(|p| format!("uid=p{g}-{p},ou=people,dc=x"))
                .collect();
            let people: Vec<&str> = people.iter().map(String::as_str).collect();
            let entry = group(
                &format!("cn=t{g},ou=groups,dc=x"),
                &format!("t{g}"),
                &people,
            );
            listing.add(&entry, "cn", &member()).expect("added");
        }
        State::new(COOKIE, b"g", listing)
    }

    #[test]
    fn a_full_read_gives_a_base_and_the_position_stands_on_it() {
        let mut state = state(3);
        let (position, base) = state.encode();
        let base = base.expect("a full read writes the base");
        assert!(base.ends_with("\n~uid=p2-9\n"), "{base}");
        assert!(position.ends_with("\n0 changed\n0 deleted\n"), "{position}");
        let decoded = State::decode(&position, Some(&base)).expect("decodes");
        assert_eq!(decoded.users_cookie().as_deref(), Some(COOKIE));
        assert_eq!(decoded, state);
        // Without its base, with another's, or cut short: not a state.
        assert_eq!(State::decode(&position, None), None);
        let (_, other) = self::state(3).encode();
        assert_eq!(State::decode(&position, other.as_deref()), None);
        assert_eq!(
            State::decode(&position, Some(&base[..base.len() - 4])),
            None
        );
        assert_eq!(
            State::decode(&position[..position.len() - 3], Some(&base)),
            None
        );
        assert_eq!(State::decode("https://x", Some(&base)), None);
        // A bad cookie; the JSON of the versions before the lines.
        let bad_cookie = position.replacen(" 67\n", " 6g\n", 1);
        assert_eq!(State::decode(&bad_cookie, Some(&base)), None);
        let json = r#"{"users":"","groups":"","suffix":"","listing":{"groups":{}}}"#;
        assert_eq!(State::decode(json, Some(&base)), None);
    }

    #[test]
    fn groups_changed_since_the_base_travel_in_the_position_until_they_outweigh_it() {
        let mut state = state(20);
        let (_, base) = state.encode();
        let base = base.expect("a base");
        // One team changes, another is deleted: the base stays.
        let changed = group("cn=t1,ou=groups,dc=x", "t1", &["uid=new,ou=people,dc=x"]);
        let deleted = [Subject::new("uuid-t2")];
        let change = state.apply(&[changed], &deleted, "cn", &member());
        assert!(matches!(change, GroupChange::Members(_)));
        let (position, new_base) = state.with_cookies(COOKIE, b"g2").encode_kept();
        assert_eq!(new_base, None);
        assert!(position.contains("\n1 changed\n"), "{position}");
        assert!(
            position.ends_with("\n1 deleted\n\"cn=t2,ou=groups,dc=x\"\n"),
            "{position}"
        );
        let decoded = State::decode(&position, Some(&base)).expect("decodes");
        assert_eq!(decoded.listing.len(), 19);
        assert_eq!(decoded.groups_cookie().as_deref(), Some(&b"g2"[..]));

        // A quarter of the teams grown threefold outweigh the base: a new one.
        let mut state = decoded;
        let people: Vec<String> = (0..30)
            .map(|p| format!("uid=n{p},ou=people,dc=x"))
            .collect();
        let people: Vec<&str> = people.iter().map(String::as_str).collect();
        let many: Vec<Entry> = (3..8)
            .map(|g| {
                group(
                    &format!("cn=t{g},ou=groups,dc=x"),
                    &format!("t{g}"),
                    &people,
                )
            })
            .collect();
        state.apply(&many, &[], "cn", &member());
        let (position, new_base) = state.encode();
        let new_base = new_base.expect("the base is written anew");
        assert!(position.ends_with("\n0 changed\n0 deleted\n"), "{position}");
        assert_eq!(State::decode(&position, Some(&new_base)), Some(state));
    }

    #[test]
    fn a_state_of_the_version_before_keeps_its_listing_and_gets_a_base() {
        let state = state(2);
        let mut inline = format!("{INLINE_HEADER}\n{} {}\n", hex(COOKIE), hex(b"g"));
        state.listing.write(&mut inline);
        let mut decoded = State::decode(&inline, None).expect("decodes");
        assert_eq!(decoded.listing, state.listing);
        let (position, base) = decoded.encode();
        let base = base.expect("given a base");
        assert_eq!(State::decode(&position, Some(&base)), Some(decoded));
    }

    #[test]
    fn a_daemon_continues_from_the_state_it_kept_only_for_the_position_it_gave() {
        let resident = Resident::default();
        resident.keep("p1".into(), state(1));
        assert_eq!(resident.take("p1"), None, "kept only once enabled");
        resident.enable();
        resident.keep("p1".into(), state(1));
        assert_eq!(resident.take("p0"), None);
        // Taken out, even by a position that did not match.
        assert_eq!(resident.take("p1"), None);
        resident.keep("p1".into(), state(1));
        let mut indexed = state(1);
        indexed.index_members();
        assert_eq!(resident.take("p1"), Some(indexed));
    }

    impl State {
        /// `encode` of a state that the test keeps using.
        fn encode_kept(mut self) -> (String, Option<Arc<str>>) {
            self.encode()
        }
    }
}
