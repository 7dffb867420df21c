//! Who is in which group, gathered while a directory's users and groups are read
//! side by side, and handed to the users once both listings are complete.
//!
//! Ids are compared by a keyed 128-bit digest rather than by their text, so that
//! group members need no copy of their ids. The key is random for every read, so
//! no directory content can be crafted to make two ids collide; by chance they
//! collide with a probability of about n²/2¹²⁹ (10⁻²⁶ for a million ids).

use std::collections::hash_map::{Entry, RandomState};
use std::hash::BuildHasher;

use rustc_hash::FxHashMap;

use crate::model::{DirectoryUser, GroupName};

/// Digests directory ids for one read; cheap to clone into page decoders.
#[derive(Clone)]
pub struct IdKeys(RandomState, RandomState);

impl IdKeys {
    pub fn new() -> Self {
        Self(RandomState::new(), RandomState::new())
    }

    pub fn digest(&self, id: &str) -> IdDigest {
        IdDigest(self.0.hash_one(id), self.1.hash_one(id))
    }
}

/// See [`IdKeys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdDigest(u64, u64);

/// Users and groups as their listings arrive, in any interleaving.
#[derive(Default)]
pub struct Roster {
    /// Every id seen, as a user or as a group member → its slot.
    slot_of: FxHashMap<IdDigest, u32>,
    /// By slot: a user with this id was listed (usable or not).
    listed_user: Vec<bool>,
    /// By user position: the user's slot.
    user_slots: Vec<u32>,
    /// By group position.
    names: Vec<GroupName>,
    /// By group position: the members' slots.
    members: Vec<Vec<u32>>,
    /// SCIM group id → group position, for the groups users list themselves.
    by_group_id: FxHashMap<String, u32>,
    /// (user position, group position) that users list themselves.
    listed: Vec<(u32, u32)>,
}

/// Why an entry cannot join the roster; the read cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum RosterError {
    UserTwice,
    GroupTwice,
    /// More than about four billion users, groups or ids.
    TooLarge,
}

impl Roster {
    /// Sizes the id map once the user listing's total is known.
    pub fn expect_users(&mut self, total: usize) {
        self.slot_of
            .reserve(total.saturating_sub(self.slot_of.len()));
        self.user_slots.reserve_exact(total);
    }

    fn slot(&mut self, id: IdDigest) -> Result<u32, RosterError> {
        let next = u32::try_from(self.listed_user.len()).map_err(|_| RosterError::TooLarge)?;
        Ok(match self.slot_of.entry(id) {
            Entry::Occupied(slot) => *slot.get(),
            Entry::Vacant(slot) => {
                self.listed_user.push(false);
                *slot.insert(next)
            }
        })
    }

    /// A listed user; `position` is its place in the directory's users, `None` for
    /// an entry that could not be keyed (it still counts for duplicates).
    pub fn add_user(&mut self, id: IdDigest, position: Option<usize>) -> Result<(), RosterError> {
        let slot = self.slot(id)?;
        if std::mem::replace(&mut self.listed_user[slot as usize], true) {
            return Err(RosterError::UserTwice);
        }
        if let Some(position) = position {
            debug_assert_eq!(position, self.user_slots.len(), "users arrive in order");
            self.user_slots.push(slot);
        }
        Ok(())
    }

    /// A group with a name; members that are not users of the listing (nested
    /// groups, entries that could not be keyed) carry no membership.
    pub fn add_group(
        &mut self,
        id: &str,
        name: GroupName,
        members: &[IdDigest],
    ) -> Result<(), RosterError> {
        let position = u32::try_from(self.names.len()).map_err(|_| RosterError::TooLarge)?;
        match self.by_group_id.entry(id.to_owned()) {
            Entry::Occupied(_) => return Err(RosterError::GroupTwice),
            Entry::Vacant(slot) => slot.insert(position),
        };
        let slots = members
            .iter()
            .map(|&member| self.slot(member))
            .collect::<Result<_, _>>()?;
        self.names.push(name);
        self.members.push(slots);
        Ok(())
    }

    /// A group a user lists itself (`User.groups`), once both listings are read:
    /// known by id from the group listing, else by the `display` the user gives.
    pub fn add_listed(&mut self, user: usize, group_id: &str, display: Option<&str>) {
        let position = match (self.by_group_id.get(group_id), display) {
            (Some(&position), _) => position,
            (None, Some(display)) => {
                self.names.push(GroupName::new(display));
                self.members.push(Vec::new());
                self.names.len() as u32 - 1
            }
            (None, None) => return,
        };
        self.listed.push((user as u32, position));
    }

    /// Gives every user its groups, sorted by name and free of duplicates; each
    /// user's list is allocated once.
    pub fn hand_out(self, users: &mut [DirectoryUser]) {
        // Rank the groups by name once (equal names share a rank), so that each
        // user's groups sort as small integers.
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        let mut rank = vec![0u32; self.names.len()];
        let mut ranked: Vec<GroupName> = Vec::new();
        for &group in &order {
            let name = &self.names[group as usize];
            if ranked.last() != Some(name) {
                ranked.push(name.clone());
            }
            rank[group as usize] = ranked.len() as u32 - 1;
        }
        // Only slots of listed users matter; count their memberships per slot.
        let memberships = self
            .members
            .iter()
            .enumerate()
            .flat_map(|(group, slots)| slots.iter().map(move |&slot| (slot, group as u32)))
            .chain(
                self.listed
                    .iter()
                    .map(|&(user, group)| (self.user_slots[user as usize], group)),
            )
            .filter(|&(slot, _)| self.listed_user[slot as usize]);
        // Counting sort by slot: `first[s]..first[s + 1]` are slot s's ranks in `flat`.
        let mut first = vec![0u32; self.listed_user.len() + 1];
        for (slot, _) in memberships.clone() {
            first[slot as usize + 1] += 1;
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        let mut flat = vec![0u32; first[self.listed_user.len()] as usize];
        let mut next = first.clone();
        for (slot, group) in memberships {
            flat[next[slot as usize] as usize] = rank[group as usize];
            next[slot as usize] += 1;
        }
        drop(next);
        for (user, &slot) in users.iter_mut().zip(&self.user_slots) {
            let ranks = &mut flat[first[slot as usize] as usize..first[slot as usize + 1] as usize];
            ranks.sort_unstable();
            let mut groups = Vec::with_capacity(ranks.len());
            let mut previous = None;
            for &rank in ranks.iter() {
                if previous != Some(rank) {
                    groups.push(ranked[rank as usize].clone());
                    previous = Some(rank);
                }
            }
            user.groups = groups;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Email, Subject};

    fn plain(subject: &str) -> DirectoryUser {
        DirectoryUser {
            subject: Subject::new(subject),
            active: true,
            email: Email::parse("a@x.com"),
            name: None,
            groups: Vec::new(),
            slack_id: None,
            picture: None,
        }
    }

    fn names(user: &DirectoryUser) -> Vec<String> {
        user.groups.iter().map(|g| g.to_string()).collect()
    }

    #[test]
    fn memberships_are_handed_out_sorted_by_name_and_free_of_duplicates() {
        let keys = IdKeys::new();
        let id = |text: &str| keys.digest(text);
        let mut roster = Roster::default();
        // Groups may arrive before, between and after the users they name.
        roster
            .add_group("g1", GroupName::new("sre"), &[id("u0"), id("u2")])
            .expect("new group");
        roster.add_user(id("u0"), Some(0)).expect("new user");
        roster
            .add_group("g2", GroupName::new("dba"), &[id("u0"), id("nested")])
            .expect("new group");
        roster.add_user(id("broken"), None).expect("new user");
        roster.add_user(id("u1"), Some(1)).expect("new user");
        roster.add_user(id("u2"), Some(2)).expect("new user");
        // Another group with the same name: one membership, not two.
        roster
            .add_group("g3", GroupName::new("sre"), &[id("u0"), id("broken")])
            .expect("new group");
        assert_eq!(
            roster.add_group("g1", GroupName::new("x"), &[]),
            Err(RosterError::GroupTwice)
        );
        assert_eq!(roster.add_user(id("u1"), None), Err(RosterError::UserTwice));
        // Listed by the user: by id, by display, and neither (ignored).
        roster.add_listed(1, "g2", None);
        roster.add_listed(1, "elsewhere", Some("audit"));
        roster.add_listed(2, "unknown", None);
        let mut users = vec![plain("u0"), plain("u1"), plain("u2")];
        roster.hand_out(&mut users);
        assert_eq!(names(&users[0]), ["dba", "sre"]);
        assert_eq!(names(&users[1]), ["audit", "dba"]);
        assert_eq!(names(&users[2]), ["sre"]);
    }

    #[test]
    fn digests_depend_on_the_text_and_on_the_read() {
        let keys = IdKeys::new();
        assert_eq!(keys.digest("abc"), keys.clone().digest("abc"));
        assert_ne!(keys.digest("abc"), keys.digest("abd"));
        assert_ne!(keys.digest("abc"), IdKeys::new().digest("abc"));
    }
}
