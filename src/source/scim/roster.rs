//! Who is in which group, gathered while a directory's users and groups are read
//! side by side, and handed to the users once both listings are complete.
//!
//! Ids are compared by their [`IdDigest`] rather than by their text, so that
//! group members need no copy of their ids.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::model::{GroupName, IdDigest};

/// Users and groups as their listings arrive, in any interleaving. Once the group
/// listing is complete ([`Roster::close_groups`]), every user's groups are known
/// as soon as the user is.
#[derive(Default)]
pub struct Roster {
    /// Every id seen, as a user or as a group member → its slot.
    slot_of: IdSlots,
    /// By slot: a user with this id was listed (usable or not).
    listed_user: Vec<bool>,
    /// By user position: the user's slot.
    user_slots: Vec<u32>,
    /// By group position.
    names: Vec<GroupName>,
    /// By group position: the members' slots; emptied by `close_groups`.
    members: Vec<Vec<u32>>,
    /// SCIM group id → group position, for the groups users list themselves.
    by_group_id: FxHashMap<String, u32>,
    closed: Option<Closed>,
}

/// Every slot's groups, once the group listing is complete.
struct Closed {
    /// Distinct group names in name order; a group's rank is its index here.
    ranked: Vec<GroupName>,
    /// `flat[first[s]..first[s + 1]]`: slot s's ranks, sorted and possibly repeated.
    first: Vec<u32>,
    flat: Vec<u32>,
}

/// Ids numbered from 0 in the order they are first seen. A hash map of digest →
/// number takes 48 bytes per id at a million ids (24-byte buckets, half empty);
/// this takes 20 to 24: the digests once, by number, and an open-addressing table
/// of numbers indexed by the digest's top bits.
#[derive(Default)]
struct IdSlots {
    /// By slot: its id.
    ids: Vec<IdDigest>,
    /// Slot + 1, or 0 where empty; a power of two long, at most 3/4 full.
    table: Vec<u32>,
}

impl IdSlots {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn reserve(&mut self, additional: usize) {
        self.ids.reserve_exact(additional);
        self.fit(self.ids.len() + additional);
    }

    /// `id`'s slot, and whether it was first seen now.
    fn slot(&mut self, id: IdDigest) -> Result<(u32, bool), RosterError> {
        self.fit(self.ids.len() + 1);
        let at = self.find(id);
        match self.table[at] {
            0 => {
                let slot = u32::try_from(self.ids.len())
                    .ok()
                    .filter(|&slot| slot < u32::MAX)
                    .ok_or(RosterError::TooLarge)?;
                self.ids.push(id);
                self.table[at] = slot + 1;
                Ok((slot, true))
            }
            taken => Ok((taken - 1, false)),
        }
    }

    /// Where `id` is in the table, or the empty place where it belongs.
    fn find(&self, id: IdDigest) -> usize {
        let mask = self.table.len() - 1;
        let mut at = id.top_bits(self.table.len().trailing_zeros());
        loop {
            match self.table[at] {
                0 => return at,
                taken if self.ids[(taken - 1) as usize] == id => return at,
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Grows the table, if needed, to hold `ids` ids.
    fn fit(&mut self, ids: usize) {
        if ids * 4 <= self.table.len() * 3 {
            return;
        }
        let size = (ids * 4 / 3 + 1).next_power_of_two().max(16);
        self.table = vec![0; size];
        for (slot, &id) in self.ids.iter().enumerate() {
            let at = self.find(id);
            self.table[at] = slot as u32 + 1;
        }
    }
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
        let (slot, new) = self.slot_of.slot(id)?;
        if new {
            self.listed_user.push(false);
        }
        Ok(slot)
    }

    /// A listed user, the next in the directory's users; `usable` is false for an
    /// entry that could not be keyed (it still counts for duplicates). Returns the
    /// user's groups when the group listing is complete already.
    pub fn add_user(
        &mut self,
        id: IdDigest,
        usable: bool,
    ) -> Result<Option<Vec<GroupName>>, RosterError> {
        let slot = self.slot(id)?;
        if std::mem::replace(&mut self.listed_user[slot as usize], true) {
            return Err(RosterError::UserTwice);
        }
        if !usable {
            return Ok(None);
        }
        self.user_slots.push(slot);
        Ok(self.closed.as_ref().map(|closed| closed.groups_of(slot)))
    }

    /// A group with a name; members that are not users of the listing (nested
    /// groups, entries that could not be keyed) carry no membership.
    pub fn add_group(
        &mut self,
        id: &str,
        name: GroupName,
        members: &[IdDigest],
    ) -> Result<(), RosterError> {
        debug_assert!(self.closed.is_none(), "the group listing is complete");
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

    /// Marks the group listing complete; returns the groups of every user added
    /// so far, in order. Each list is sorted by name, free of duplicates, and
    /// allocated once.
    pub fn close_groups(&mut self) -> Vec<Vec<GroupName>> {
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
        // Counting sort by slot.
        let members = std::mem::take(&mut self.members);
        let memberships = members
            .iter()
            .zip(&rank)
            .flat_map(|(slots, &rank)| slots.iter().map(move |&slot| (slot, rank)));
        let slots = self.listed_user.len();
        let mut first = vec![0u32; slots + 1];
        for (slot, _) in memberships.clone() {
            first[slot as usize + 1] += 1;
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        let mut flat = vec![0u32; first[slots] as usize];
        // `first[slot]` serves as the slot's cursor, and ends as where the next
        // slot's ranks start; moved back by one place, it is `first` again. (A
        // copy of it as the cursors would be 4 bytes a slot more: 4 MB at 1M users.)
        for (slot, rank) in memberships {
            flat[first[slot as usize] as usize] = rank;
            first[slot as usize] += 1;
        }
        first.rotate_right(1);
        first[0] = 0;
        for slot in 0..slots {
            flat[first[slot] as usize..first[slot + 1] as usize].sort_unstable();
        }
        let closed = Closed {
            ranked,
            first,
            flat,
        };
        let so_far = self
            .user_slots
            .iter()
            .map(|&slot| closed.groups_of(slot))
            .collect();
        self.closed = Some(closed);
        so_far
    }

    /// The name of a group a user lists itself (`User.groups`): known by id from
    /// the group listing, else the `display` the user gives.
    pub fn listed_group(&self, group_id: &str, display: Option<&str>) -> Option<GroupName> {
        match self.by_group_id.get(group_id) {
            Some(&position) => Some(self.names[position as usize].clone()),
            None => display.map(GroupName::new),
        }
    }
}

impl Closed {
    fn groups_of(&self, slot: u32) -> Vec<GroupName> {
        let slot = slot as usize;
        // Slots first seen after the group listing closed belong to no group.
        let Some(&end) = self.first.get(slot + 1) else {
            return Vec::new();
        };
        let ranks = &self.flat[self.first[slot] as usize..end as usize];
        let mut groups = Vec::with_capacity(ranks.len());
        let mut previous = None;
        for &rank in ranks {
            if previous != Some(rank) {
                groups.push(self.ranked[rank as usize].clone());
                previous = Some(rank);
            }
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::IdKeys;

    #[test]
    fn ids_keep_their_slots_as_the_table_grows() {
        let keys = IdKeys::new();
        let mut slots = IdSlots::default();
        slots.reserve(10);
        let ids: Vec<IdDigest> = (0..10_000)
            .map(|i| keys.digest(&format!("id{i}")))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(slots.slot(id), Ok((i as u32, true)));
        }
        for (i, &id) in ids.iter().enumerate().rev() {
            assert_eq!(slots.slot(id), Ok((i as u32, false)));
        }
        assert_eq!(slots.len(), 10_000);
        assert!(slots.table.len() * 3 >= slots.len() * 4);
    }

    fn names(lists: &[Vec<GroupName>]) -> Vec<Vec<String>> {
        lists
            .iter()
            .map(|groups| groups.iter().map(|g| g.to_string()).collect())
            .collect()
    }

    #[test]
    fn groups_are_sorted_by_name_free_of_duplicates_and_known_once_listed() {
        let keys = IdKeys::new();
        let id = |text: &str| keys.digest(text);
        let mut roster = Roster::default();
        // Users may arrive before the group listing is complete, and after.
        assert_eq!(roster.add_user(id("u0"), true), Ok(None));
        roster
            .add_group("g1", GroupName::new("sre"), &[id("u0"), id("u2")])
            .expect("new group");
        roster
            .add_group("g2", GroupName::new("dba"), &[id("u0"), id("nested")])
            .expect("new group");
        assert_eq!(roster.add_user(id("broken"), false), Ok(None));
        // Another group with the same name: one membership, not two.
        roster
            .add_group("g3", GroupName::new("sre"), &[id("u0"), id("broken")])
            .expect("new group");
        assert_eq!(
            roster.add_group("g1", GroupName::new("x"), &[]),
            Err(RosterError::GroupTwice)
        );
        let so_far = roster.close_groups();
        assert_eq!(names(&so_far), [vec!["dba", "sre"]]);
        let later = |roster: &mut Roster, user: &str| {
            let groups = roster.add_user(id(user), true).expect("new user");
            names(&[groups.expect("the groups are complete")])
        };
        assert_eq!(later(&mut roster, "u1"), [Vec::<String>::new()]);
        assert_eq!(later(&mut roster, "u2"), [vec!["sre"]]);
        assert_eq!(
            later(&mut roster, "new-after-closing"),
            [Vec::<String>::new()]
        );
        assert_eq!(
            roster.add_user(id("u1"), false),
            Err(RosterError::UserTwice)
        );
        // Groups users list themselves: by id, else by display.
        assert_eq!(roster.listed_group("g2", None), Some(GroupName::new("dba")));
        assert_eq!(
            roster.listed_group("elsewhere", Some("audit")),
            Some(GroupName::new("audit"))
        );
        assert_eq!(roster.listed_group("unknown", None), None);
    }
}
