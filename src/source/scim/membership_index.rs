//! Who is in which group, gathered while a directory's users and groups are read
//! side by side, and handed to the users once both listings are complete.
//!
//! Ids are compared by their [`IdDigest`] rather than by their text, so that
//! group members need no copy of their ids.

use std::collections::hash_map::Entry;

use rustc_hash::FxHashMap;

use crate::model::{GroupName, IdDigest};

/// The most users room is made for before they arrive.
pub const RESERVED_AHEAD: usize = 1 << 20;

/// Users and groups as their listings arrive, in any interleaving. Once the group
/// listing is complete ([`MembershipIndex::close_groups`]), every user's groups are known
/// as soon as the user is.
#[derive(Default)]
pub struct MembershipIndex {
    /// Every id seen, as a user or as a group member → its number.
    number_of: IdNumbers,
    /// By number: a user with this id was listed (usable or not).
    listed_user: Vec<bool>,
    /// By user position: the user's number.
    user_numbers: Vec<u32>,
    /// By group position.
    names: Vec<GroupName>,
    /// By group position: the members' numbers; emptied by `close_groups`.
    members: Vec<Vec<u32>>,
    /// SCIM group id → group position, for the groups users list themselves.
    by_group_id: FxHashMap<String, u32>,
    closed: Option<GroupsByMember>,
}

/// Every number's groups, once the group listing is complete.
struct GroupsByMember {
    /// Distinct group names in name order; a group's rank is its index here.
    names_by_rank: Vec<GroupName>,
    /// `ranks[starts[s]..starts[s + 1]]`: number s's ranks, sorted and possibly repeated.
    starts: Vec<u32>,
    ranks: Vec<u32>,
}

/// Ids numbered from 0 in the order they are first seen: the digests once, by
/// number, and an open-addressing table of numbers indexed by the digest's top
/// bits, which holds half the bytes of a hash map (docs/performance.md).
#[derive(Default)]
struct IdNumbers {
    /// By number: its id.
    ids: Vec<IdDigest>,
    /// Number + 1, or 0 where empty; a power of two long, at most 3/4 full.
    table: Vec<u32>,
}

impl IdNumbers {
    fn len(&self) -> usize {
        self.ids.len()
    }

    fn reserve(&mut self, additional: usize) {
        self.ids.reserve_exact(additional);
        self.fit(self.ids.len() + additional);
    }

    /// `id`'s number, and whether it was first seen now.
    fn number(&mut self, id: IdDigest) -> Result<(u32, bool), MembershipIndexError> {
        self.fit(self.ids.len() + 1);
        let at = self.find(id);
        match self.table[at] {
            0 => {
                let number = u32::try_from(self.ids.len())
                    .ok()
                    .filter(|&number| number < u32::MAX)
                    .ok_or(MembershipIndexError::TooLarge)?;
                self.ids.push(id);
                self.table[at] = number + 1;
                Ok((number, true))
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
        for (number, &id) in self.ids.iter().enumerate() {
            let at = self.find(id);
            self.table[at] = number as u32 + 1;
        }
    }
}

/// Why an entry cannot join the roster; the read cannot be trusted.
#[derive(Debug, PartialEq, Eq)]
pub enum MembershipIndexError {
    UserTwice,
    GroupTwice,
    /// More than about four billion users, groups or ids.
    TooLarge,
}

impl MembershipIndex {
    /// Sizes the id map once the user listing's total is known: for the whole
    /// listing, or [`RESERVED_AHEAD`] users when it announces more (what a
    /// directory announces is not what it delivers), beyond which they grow as
    /// users arrive.
    pub fn expect_users(&mut self, total: usize) {
        let total = total.min(RESERVED_AHEAD);
        self.number_of
            .reserve(total.saturating_sub(self.number_of.len()));
        self.user_numbers.reserve_exact(total);
    }

    fn number(&mut self, id: IdDigest) -> Result<u32, MembershipIndexError> {
        let (number, new) = self.number_of.number(id)?;
        if new {
            self.listed_user.push(false);
        }
        Ok(number)
    }

    /// A listed user, the next in the directory's users; `usable` is false for an
    /// entry that could not be keyed (it still counts for duplicates). Returns the
    /// user's groups when the group listing is complete already.
    pub fn add_user(
        &mut self,
        id: IdDigest,
        usable: bool,
    ) -> Result<Option<Vec<GroupName>>, MembershipIndexError> {
        let number = self.number(id)?;
        if std::mem::replace(&mut self.listed_user[number as usize], true) {
            return Err(MembershipIndexError::UserTwice);
        }
        if !usable {
            return Ok(None);
        }
        self.user_numbers.push(number);
        Ok(self.closed.as_ref().map(|closed| closed.groups_of(number)))
    }

    /// A group with a name; members that are not users of the listing (nested
    /// groups, entries that could not be keyed) carry no membership.
    pub fn add_group(
        &mut self,
        id: &str,
        name: GroupName,
        members: &[IdDigest],
    ) -> Result<(), MembershipIndexError> {
        debug_assert!(self.closed.is_none(), "the group listing is complete");
        let position =
            u32::try_from(self.names.len()).map_err(|_| MembershipIndexError::TooLarge)?;
        match self.by_group_id.entry(id.to_owned()) {
            Entry::Occupied(_) => return Err(MembershipIndexError::GroupTwice),
            Entry::Vacant(number) => number.insert(position),
        };
        let numbers = members
            .iter()
            .map(|&member| self.number(member))
            .collect::<Result<_, _>>()?;
        self.names.push(name);
        self.members.push(numbers);
        Ok(())
    }

    /// Marks the group listing complete; returns the groups of every user added
    /// so far, in order. Each list is sorted by name, free of duplicates, and
    /// allocated once.
    /// Every group's name, once the listing is closed.
    pub fn group_names(&self) -> Vec<String> {
        self.closed.as_ref().map_or_else(Vec::new, |closed| {
            closed
                .names_by_rank
                .iter()
                .map(ToString::to_string)
                .collect()
        })
    }

    pub fn close_groups(&mut self) -> Vec<Vec<GroupName>> {
        // Rank the groups by name once (equal names share a rank), so that each
        // user's groups sort as small integers.
        let mut order: Vec<u32> = (0..self.names.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| self.names[a as usize].cmp(&self.names[b as usize]));
        let mut rank = vec![0u32; self.names.len()];
        let mut names_by_rank: Vec<GroupName> = Vec::new();
        for &group in &order {
            let name = &self.names[group as usize];
            if names_by_rank.last() != Some(name) {
                names_by_rank.push(name.clone());
            }
            rank[group as usize] = names_by_rank.len() as u32 - 1;
        }
        // Counting sort by number.
        let members = std::mem::take(&mut self.members);
        let memberships = members
            .iter()
            .zip(&rank)
            .flat_map(|(numbers, &rank)| numbers.iter().map(move |&number| (number, rank)));
        let numbers = self.listed_user.len();
        let mut starts = vec![0u32; numbers + 1];
        for (number, _) in memberships.clone() {
            starts[number as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut ranks = vec![0u32; starts[numbers] as usize];
        // `starts[number]` serves as the number's cursor, and ends as where the next
        // number's ranks start; moved back by one place, it is `starts` again, with
        // no second table of cursors.
        for (number, rank) in memberships {
            ranks[starts[number as usize] as usize] = rank;
            starts[number as usize] += 1;
        }
        starts.rotate_right(1);
        starts[0] = 0;
        for number in 0..numbers {
            ranks[starts[number] as usize..starts[number + 1] as usize].sort_unstable();
        }
        let closed = GroupsByMember {
            names_by_rank,
            starts,
            ranks,
        };
        let so_far = self
            .user_numbers
            .iter()
            .map(|&number| closed.groups_of(number))
            .collect();
        self.closed = Some(closed);
        so_far
    }

    /// The name of a group a user lists itself (`User.groups`): known by id from
    /// the group listing, else the `display` the user gives.
    pub fn listed_group(&self, group_id: &str, display: Option<&str>) -> Option<GroupName> {
        match self.by_group_id.get(group_id) {
            Some(&position) => Some(self.names[position as usize].clone()),
            // A group the listing did not have: its name as the user lists it,
            // trimmed like every group name.
            None => display.and_then(crate::source::normalize::group_name),
        }
    }
}

impl GroupsByMember {
    fn groups_of(&self, number: u32) -> Vec<GroupName> {
        let number = number as usize;
        // Numbers first seen after the group listing closed belong to no group.
        let Some(&end) = self.starts.get(number + 1) else {
            return Vec::new();
        };
        let ranks = &self.ranks[self.starts[number] as usize..end as usize];
        let mut groups = Vec::with_capacity(ranks.len());
        let mut previous = None;
        for &rank in ranks {
            if previous != Some(rank) {
                groups.push(self.names_by_rank[rank as usize].clone());
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
        let mut numbers = IdNumbers::default();
        numbers.reserve(10);
        let ids: Vec<IdDigest> = (0..10_000)
            .map(|i| keys.digest(&format!("id{i}")))
            .collect();
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(numbers.number(id), Ok((i as u32, true)));
        }
        for (i, &id) in ids.iter().enumerate().rev() {
            assert_eq!(numbers.number(id), Ok((i as u32, false)));
        }
        assert_eq!(numbers.len(), 10_000);
        assert!(numbers.table.len() * 3 >= numbers.len() * 4);
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
        let mut roster = MembershipIndex::default();
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
            Err(MembershipIndexError::GroupTwice)
        );
        assert!(roster.group_names().is_empty(), "known once closed");
        let so_far = roster.close_groups();
        assert_eq!(names(&so_far), [vec!["dba", "sre"]]);
        assert_eq!(roster.group_names(), ["dba", "sre"], "for groups.mirror");
        let later = |roster: &mut MembershipIndex, user: &str| {
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
            Err(MembershipIndexError::UserTwice)
        );
        // Groups users list themselves: by id, else by display.
        assert_eq!(roster.listed_group("g2", None), Some(GroupName::new("dba")));
        assert_eq!(
            roster.listed_group("elsewhere", Some("audit")),
            Some(GroupName::new("audit"))
        );
        assert_eq!(roster.listed_group("unknown", None), None);
        assert_eq!(
            roster.listed_group("elsewhere", Some(" admin ")),
            Some(GroupName::new("admin")),
            "trimmed like every group name"
        );
        assert_eq!(roster.listed_group("elsewhere", Some("  ")), None);
    }
}
