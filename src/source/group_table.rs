//! The groups of a directory that lists groups with their members (Okta, Entra
//! ID): each group's name, direct members and nested groups, keyed by the
//! directory's group id, so that two groups sharing a name stay two groups.
//!
//! A change-reading source keeps the table in its cursor. The planner takes each
//! user a change read delivers as the whole truth and keeps every other user as it
//! was, so a change read must deliver, complete with all their groups, every user
//! whose groups changed — including users whose own entry did not change, and
//! users removed from a group, whom a re-read of the group no longer lists. The
//! table from the last read is what tells who those are ([`GroupTable::affected`])
//! and what each one's groups are now, without re-reading every group.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::membership::{self, ListedGroup, MembershipError};
use super::normalize;
use crate::model::{GroupName, Subject};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTable {
    groups: BTreeMap<String, TableGroup>,
}

/// One group as the last read saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableGroup {
    pub name: String,
    /// What the directory says moves when the group changes (Okta's
    /// `lastUpdated` and `lastMembershipUpdated`); empty where changes come as a
    /// delta instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Direct members that are users.
    pub members: BTreeSet<Subject>,
    /// Ids of the groups nested in this one.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub nested: BTreeSet<String>,
}

/// Each user's groups, sorted, nesting flattened.
pub type Memberships = HashMap<Subject, Vec<GroupName>>;

impl GroupTable {
    pub fn get(&self, id: &str) -> Option<&TableGroup> {
        self.groups.get(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut TableGroup> {
        self.groups.get_mut(id)
    }

    pub fn insert(&mut self, id: String, group: TableGroup) -> Option<TableGroup> {
        self.groups.insert(id, group)
    }

    pub fn remove(&mut self, id: &str) -> Option<TableGroup> {
        self.groups.remove(id)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    pub fn ids(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// Each member's groups by name, the table given up for them (it is the larger
    /// of the two at once). A group nesting one the table does not hold is an
    /// error: the read that built it missed part of the directory.
    pub fn into_memberships(self) -> Result<Memberships, MembershipError> {
        let names = self.names();
        let listed = self.groups.into_iter().map(|(id, group)| ListedGroup {
            name: id,
            members: group.members.into_iter().collect(),
            groups: group.nested.into_iter().collect(),
        });
        membership::named_groups_of_members(listed.collect(), &names)
    }

    /// The groups of `wanted` only (the users a change read delivers), by the
    /// same rules: the work follows the groups and those users, not everyone
    /// the table holds.
    pub fn memberships_of(
        &self,
        wanted: &HashSet<Subject>,
    ) -> Result<Memberships, MembershipError> {
        let listed = self.groups.iter().map(|(id, group)| ListedGroup {
            name: id.clone(),
            members: group
                .members
                .iter()
                .filter(|m| wanted.contains(*m))
                .cloned()
                .collect(),
            groups: group.nested.iter().cloned().collect(),
        });
        membership::named_groups_of_members(listed.collect(), &self.names())
    }

    /// One shared name per group id; a group with a blank name is left out, and
    /// counts for nesting only.
    fn names(&self) -> HashMap<String, GroupName> {
        self.groups
            .iter()
            .filter_map(|(id, group)| Some((id.clone(), normalize::group_name(&group.name)?)))
            .collect()
    }

    /// The users in group `id` or any group nested in it, at any depth.
    pub fn members_under(&self, id: &str) -> BTreeSet<Subject> {
        let mut members = BTreeSet::new();
        let mut seen = HashSet::new();
        let mut pending = vec![id];
        while let Some(id) = pending.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(group) = self.groups.get(id) {
                members.extend(group.members.iter().cloned());
                pending.extend(group.nested.iter().map(String::as_str));
            }
        }
        members
    }

    /// Applies `change`, which alters at most the groups `touched` names, and
    /// returns the users whose groups it changed, by the rules of
    /// [`affected`](Self::affected) — without a second table to compare with.
    pub fn apply(
        &mut self,
        touched: &BTreeSet<String>,
        change: impl FnOnce(&mut GroupTable),
    ) -> BTreeSet<Subject> {
        let before: Vec<(&String, Option<String>, BTreeSet<Subject>)> = touched
            .iter()
            .map(|id| {
                (
                    id,
                    self.groups.get(id).map(|g| g.name.clone()),
                    self.members_under(id),
                )
            })
            .collect();
        change(self);
        let mut affected = BTreeSet::new();
        for (id, name, was) in before {
            let is = self.members_under(id);
            match (name, self.groups.get(id)) {
                (Some(name), Some(now)) if name == now.name => {
                    affected.extend(was.symmetric_difference(&is).cloned());
                }
                _ => affected.extend(was.into_iter().chain(is)),
            }
        }
        affected
    }

    /// The users whose groups differ between `self` (the last read) and `now`:
    /// everyone under a group added, removed or renamed, and, under a group whose
    /// members or nested groups changed, those who are under it only before or
    /// only after. That is enough for the groups above it too: a user's place in an
    /// unchanged group changes only through a changed group below it.
    pub fn affected(&self, now: &GroupTable) -> BTreeSet<Subject> {
        let ids: BTreeSet<&String> = self.groups.keys().chain(now.groups.keys()).collect();
        let mut affected = BTreeSet::new();
        for id in ids {
            let (before, after) = match (self.groups.get(id), now.groups.get(id)) {
                (Some(before), Some(after)) => (before, after),
                _ => {
                    affected.extend(self.members_under(id));
                    affected.extend(now.members_under(id));
                    continue;
                }
            };
            if before.name != after.name {
                affected.extend(self.members_under(id));
                affected.extend(now.members_under(id));
            } else if before.members != after.members || before.nested != after.nested {
                let (was, is) = (self.members_under(id), now.members_under(id));
                affected.extend(was.symmetric_difference(&is).cloned());
            }
        }
        affected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, members: &[&str], nested: &[&str]) -> TableGroup {
        TableGroup {
            name: name.into(),
            version: String::new(),
            members: members.iter().map(|m| Subject::new(*m)).collect(),
            nested: nested.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn table(groups: &[(&str, TableGroup)]) -> GroupTable {
        let mut table = GroupTable::default();
        for (id, group) in groups {
            table.insert(id.to_string(), group.clone());
        }
        table
    }

    fn names(memberships: &Memberships, subject: &str) -> Vec<String> {
        memberships
            .get(&Subject::new(subject))
            .map(|g| g.iter().map(ToString::to_string).collect())
            .unwrap_or_default()
    }

    fn subjects(set: &BTreeSet<Subject>) -> Vec<&str> {
        set.iter().map(Subject::as_str).collect()
    }

    #[test]
    fn groups_are_keyed_by_id_and_named_by_name() {
        let table = table(&[
            ("g1", group("eng", &["ann"], &["g2"])),
            ("g2", group(" sre ", &["bob"], &[])),
            ("g3", group("eng", &["bob"], &[])),
            ("g4", group("  ", &["cy"], &[])),
            ("g5", group("all", &[], &["g4"])),
        ]);
        let memberships = table.into_memberships().unwrap();
        assert_eq!(names(&memberships, "ann"), ["eng"]);
        assert_eq!(names(&memberships, "bob"), ["eng", "sre"]);
        // A blank-named group gives no name but still nests.
        assert_eq!(names(&memberships, "cy"), ["all"]);
    }

    #[test]
    fn the_memberships_of_some_users_are_theirs_in_the_whole_table() {
        let table = table(&[
            ("all", group("all", &["boss"], &["eng"])),
            ("eng", group("eng", &["ann", "bob"], &["sre"])),
            ("sre", group("sre", &["bob", "cy"], &[])),
        ]);
        let wanted: HashSet<Subject> = [Subject::new("bob"), Subject::new("gone")].into();
        let some = table.memberships_of(&wanted).unwrap();
        let all = table.into_memberships().unwrap();
        assert_eq!(names(&some, "bob"), names(&all, "bob"));
        assert_eq!(names(&some, "bob"), ["all", "eng", "sre"]);
        // Others are left out, and one in no group has none.
        assert_eq!(some.len(), 1);
    }

    #[test]
    fn applying_a_change_finds_the_same_users_as_comparing_two_tables() {
        let before = table(&[
            ("all", group("all", &["boss"], &["eng"])),
            ("eng", group("eng", &["ann", "bob"], &[])),
            ("ops", group("ops", &["cy"], &[])),
        ]);
        let mut after = before.clone();
        let touched: BTreeSet<String> = ["eng", "ops", "new"].map(String::from).into();
        let affected = after.apply(&touched, |t| {
            t.get_mut("eng")
                .unwrap()
                .members
                .remove(&Subject::new("bob"));
            t.get_mut("ops").unwrap().name = "operations".into();
            t.insert("new".into(), group("new", &["dee"], &[]));
        });
        assert_eq!(affected, before.affected(&after));
        assert_eq!(subjects(&affected), ["bob", "cy", "dee"]);
    }

    #[test]
    fn a_nested_group_missing_from_the_table_is_an_error() {
        let table = table(&[("g1", group("eng", &[], &["gone"]))]);
        assert!(matches!(
            table.into_memberships(),
            Err(MembershipError::UnknownNested { .. })
        ));
    }

    #[test]
    fn affected_users_are_those_whose_groups_changed_at_any_depth() {
        let before = table(&[
            ("all", group("all", &["boss"], &["eng"])),
            ("eng", group("eng", &["ann", "bob"], &[])),
            ("ops", group("ops", &["cy"], &[])),
            ("old", group("old", &["dee"], &[])),
        ]);
        let mut after = before.clone();
        after.get_mut("eng").unwrap().members = [Subject::new("ann"), Subject::new("eve")].into();
        after.remove("old");
        // Ann stays in eng, and so in all: her groups do not change.
        assert_eq!(subjects(&before.affected(&after)), ["bob", "dee", "eve"]);

        let mut renamed = before.clone();
        renamed.get_mut("ops").unwrap().name = "operations".into();
        assert_eq!(subjects(&before.affected(&renamed)), ["cy"]);

        let mut renested = before.clone();
        renested.get_mut("all").unwrap().nested.clear();
        renested.get_mut("all").unwrap().nested.insert("ops".into());
        assert_eq!(subjects(&before.affected(&renested)), ["ann", "bob", "cy"]);
        assert!(before.affected(&before.clone()).is_empty());
    }
}
