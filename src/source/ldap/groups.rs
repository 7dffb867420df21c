//! Groups and who is in them. A full read takes memberships from the groups'
//! member values (DNs, or logins for `memberUid`), nested groups flattened by
//! [`membership`](crate::source::membership). An incremental read cannot re-read
//! every group's members, so it takes a changed user's groups from its `memberOf`
//! (kept by the server) and the groups' own `memberOf` nesting, the
//! [`Hierarchy`]; the full read checks that both ways agree.

use std::collections::{HashMap, HashSet};
use std::hash::Hasher;

use super::entry::{dn_key, member_dn, Entry};
use crate::config::MemberAttribute;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize;

/// The groups as listed, before nesting is resolved.
#[derive(Default)]
pub struct GroupListing {
    /// By DN key: the group's name (if it has one) and its member values.
    groups: HashMap<String, ListedEntry>,
}

struct ListedEntry {
    name: Option<GroupName>,
    /// DN keys, or logins for `memberUid`.
    members: Vec<String>,
    /// DN keys of the groups its `memberOf` names.
    member_of: Vec<String>,
}

/// How a user is named in member values: its DN key, or its login.
pub type MemberKey = Subject;

/// Each member key's groups, nesting flattened, sorted.
pub type Memberships = HashMap<MemberKey, Vec<GroupName>>;

/// Group DN key → its name and the DN keys of the groups it is directly in.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Hierarchy {
    groups: HashMap<String, (Option<GroupName>, Vec<String>)>,
}

impl GroupListing {
    pub fn add(
        &mut self,
        entry: &Entry,
        name_attribute: &str,
        members: &MemberAttribute,
    ) -> Result<(), String> {
        if let Some(ranged) = entry.ranged_attribute() {
            return Err(format!(
                "group {} lists its values in ranges ({ranged}); ranged retrieval is not supported, so its members cannot be read completely",
                entry.dn
            ));
        }
        let name = entry.text(name_attribute).and_then(normalize::group_name);
        let values = entry.texts(members.name());
        let members = match members {
            MemberAttribute::Dn(_) => values.map(|v| dn_key(member_dn(v))).collect(),
            MemberAttribute::Uid => values.map(|v| v.trim().to_owned()).collect(),
        };
        let member_of = entry.texts("memberOf").map(dn_key).collect();
        let listed = ListedEntry {
            name,
            members,
            member_of,
        };
        if self.groups.insert(dn_key(&entry.dn), listed).is_some() {
            return Err(format!("group {} is listed twice", entry.dn));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// The nesting as the member values tell it, and as the groups' `memberOf` does.
    pub fn hierarchies(&self) -> (Hierarchy, Hierarchy) {
        let mut by_members = Hierarchy::default();
        let mut by_member_of = Hierarchy::default();
        for (dn, group) in &self.groups {
            by_members
                .groups
                .insert(dn.clone(), (group.name.clone(), Vec::new()));
            let parents = group
                .member_of
                .iter()
                .filter(|p| self.groups.contains_key(*p))
                .cloned();
            by_member_of
                .groups
                .insert(dn.clone(), (group.name.clone(), parents.collect()));
        }
        for (dn, group) in &self.groups {
            for member in group
                .members
                .iter()
                .filter(|m| self.groups.contains_key(*m))
            {
                if let Some((_, parents)) = by_members.groups.get_mut(member) {
                    parents.push(dn.clone());
                }
            }
        }
        (by_members, by_member_of)
    }

    /// Each member's groups by name. Groups in a cycle are an error.
    pub fn memberships(self) -> Result<Memberships, String> {
        let mut names: HashMap<String, Option<GroupName>> = HashMap::new();
        let mut listed = Vec::with_capacity(self.groups.len());
        let groups: HashSet<&String> = self.groups.keys().collect();
        for (dn, group) in &self.groups {
            let (nested, members): (Vec<&String>, Vec<&String>) =
                group.members.iter().partition(|m| groups.contains(m));
            listed.push(ListedGroup {
                name: dn.clone(),
                members: members
                    .into_iter()
                    .map(|m| Subject::new(m.as_str()))
                    .collect(),
                groups: nested.into_iter().cloned().collect(),
            });
            names.insert(dn.clone(), group.name.clone());
        }
        drop(groups);
        let by_dn = membership::groups_of_members(listed).map_err(|err| err.to_string())?;
        let mut named = HashMap::with_capacity(by_dn.len());
        for (member, dns) in by_dn {
            let mut groups: Vec<GroupName> = dns
                .iter()
                .filter_map(|dn| names.get(dn.as_str()).cloned().flatten())
                .collect();
            groups.sort();
            groups.dedup();
            named.insert(member, groups);
        }
        Ok(named)
    }
}

impl Hierarchy {
    /// The group listing of an incremental read: names and `memberOf` only.
    pub fn from_entries(entries: &[Entry], name_attribute: &str) -> Self {
        let known: HashSet<String> = entries.iter().map(|e| dn_key(&e.dn)).collect();
        let groups = entries
            .iter()
            .map(|entry| {
                let name = entry.text(name_attribute).and_then(normalize::group_name);
                let parents = entry
                    .texts("memberOf")
                    .map(dn_key)
                    .filter(|p| known.contains(p));
                (dn_key(&entry.dn), (name, parents.collect()))
            })
            .collect();
        Self { groups }
    }

    /// The names of the groups `direct` (DN keys, e.g. a user's `memberOf`) and
    /// of every group they are nested in, sorted.
    pub fn names_of<'a>(&self, direct: impl Iterator<Item = &'a str>) -> Vec<GroupName> {
        let mut seen = HashSet::new();
        let mut pending: Vec<String> = direct.map(dn_key).collect();
        let mut names = Vec::new();
        while let Some(dn) = pending.pop() {
            let Some((name, parents)) = self.groups.get(&dn) else {
                continue;
            };
            if !seen.insert(dn) {
                continue;
            }
            names.extend(name.clone());
            pending.extend(parents.iter().cloned());
        }
        names.sort();
        names.dedup();
        names
    }

    /// A digest of every group's name and parents: when it differs from the last
    /// read's, users' groups may have changed without their entries changing.
    pub fn digest(&self) -> String {
        let mut lines: Vec<String> = self
            .groups
            .iter()
            .map(|(dn, (name, parents))| {
                let mut parents = parents.clone();
                parents.sort();
                let name = name.as_ref().map_or("", GroupName::as_str);
                format!("{dn}\u{0}{name}\u{0}{}", parents.join("\u{0}"))
            })
            .collect();
        lines.sort();
        let mut hasher = fnv::FnvHasher::default();
        for line in &lines {
            hasher.write(line.as_bytes());
            hasher.write_u8(0xff);
        }
        format!("{:016x}{:08x}", hasher.finish(), lines.len())
    }

    /// Whether both hierarchies nest the same groups the same way.
    pub fn same_as(&self, other: &Self) -> bool {
        self.digest() == other.digest()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(groups: &[(&str, &str, &[&str], &[&str])]) -> GroupListing {
        let mut listing = GroupListing::default();
        for (dn, name, members, member_of) in groups {
            listing.groups.insert(
                dn_key(dn),
                ListedEntry {
                    name: normalize::group_name(name),
                    members: members.iter().map(|m| dn_key(m)).collect(),
                    member_of: member_of.iter().map(|m| dn_key(m)).collect(),
                },
            );
        }
        listing
    }

    fn names(groups: &[GroupName]) -> Vec<&str> {
        groups.iter().map(GroupName::as_str).collect()
    }

    #[test]
    fn member_values_and_member_of_give_the_same_groups() {
        let listing = listing(&[
            (
                "cn=eng,ou=g",
                "engineering",
                &["cn=SRE,ou=g", "uid=cto,ou=p"],
                &[],
            ),
            ("cn=sre,ou=g", "sre", &["uid=ann,ou=p"], &["cn=eng,ou=g"]),
            (
                "cn=ops,ou=g",
                "sre",
                &["uid=ann,ou=p"],
                &["cn=outside,ou=x"],
            ),
        ]);
        let (by_members, by_member_of) = listing.hierarchies();
        assert!(by_members.same_as(&by_member_of));
        let ann_by_member_of =
            by_member_of.names_of(["cn=sre,ou=g", "cn=ops,ou=g", "cn=outside,ou=x"].into_iter());
        let memberships = listing.memberships().expect("no cycle");
        let ann = &memberships[&Subject::new("uid=ann,ou=p")];
        assert_eq!(
            names(ann),
            ["engineering", "sre"],
            "two groups named sre count once"
        );
        assert_eq!(names(&ann_by_member_of), names(ann));
        assert_eq!(
            names(&memberships[&Subject::new("uid=cto,ou=p")]),
            ["engineering"]
        );
    }

    #[test]
    fn a_rename_or_a_move_changes_the_digest_and_a_cycle_is_an_error() {
        let before = listing(&[("cn=a", "a", &["cn=b"], &[]), ("cn=b", "b", &[], &[])])
            .hierarchies()
            .0;
        let renamed = listing(&[("cn=a", "a2", &["cn=b"], &[]), ("cn=b", "b", &[], &[])])
            .hierarchies()
            .0;
        let moved = listing(&[("cn=a", "a", &[], &[]), ("cn=b", "b", &[], &[])])
            .hierarchies()
            .0;
        assert_ne!(before.digest(), renamed.digest());
        assert_ne!(before.digest(), moved.digest());
        let cycle = listing(&[("cn=a", "a", &["cn=b"], &[]), ("cn=b", "b", &["cn=a"], &[])]);
        assert!(cycle.memberships().unwrap_err().contains("cycle"));
    }
}
