//! Groups and who is in them, from the groups' member values (DNs, or logins for
//! `memberUid`), nested groups flattened by
//! [`membership`](crate::source::membership).
//!
//! An incremental read learns which groups changed, each with its whole member
//! list, but not who left it; so the listing is kept between reads (in the
//! cursor), and a changed group's old and new members are compared. The
//! `memberOf` the server keeps on users cannot replace this: OpenLDAP's memberof
//! overlay does not mark the user entry changed (its entryCSN stays), so content
//! synchronisation never reports it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::entry::{dn_key, login_key, member_dn, Entry};
use crate::config::MemberAttribute;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize;

/// How a user is named in member values: its DN key, or its login.
pub type MemberKey = Subject;

/// Each member key's groups, nesting flattened, sorted.
pub type Memberships = HashMap<MemberKey, Vec<GroupName>>;

/// The groups as listed, by DN key.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupListing {
    groups: BTreeMap<String, ListedEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ListedEntry {
    /// The entryUUID, by which the server reports the group deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uuid: Option<String>,
    name: Option<String>,
    members: Members,
}

/// A group's member keys: DN keys (users and nested groups), or logins for
/// `memberUid`; sorted, one a line. Kept packed, as the cursor holds them, so
/// that a read which changes a few groups splits only those
/// (docs/performance.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct Members(String);

impl Members {
    /// `keys` are [`dn_key`]s or [`login_key`]s: none holds a line break.
    fn new(mut keys: Vec<String>) -> Self {
        keys.sort();
        keys.dedup();
        Self(keys.join("\n"))
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.split('\n').filter(|key| !key.is_empty())
    }

    /// Each key rewritten by `write`, into one new list.
    fn rewritten(&self, mut write: impl FnMut(&str, &mut String)) -> Self {
        let mut packed = String::with_capacity(self.0.len());
        for key in self.iter() {
            if !packed.is_empty() {
                packed.push('\n');
            }
            write(key, &mut packed);
        }
        Self(packed)
    }
}

/// What changed groups do to the listing.
#[derive(Debug, PartialEq, Eq)]
pub enum GroupChange {
    /// Only these members' groups changed.
    Members(HashSet<MemberKey>),
    /// A group was renamed or nested differently, or a nested group came or
    /// went: users' groups changed beyond the changed groups' members.
    Nesting,
}

impl GroupListing {
    pub fn add(
        &mut self,
        entry: &Entry,
        name_attribute: &str,
        members: &MemberAttribute,
    ) -> Result<(), String> {
        if let Some(ranged) = entry.ranged_attribute() {
            // Only a full read by pages reads ranges ([`super::ranges`]); Active
            // Directory offers no content synchronisation to send them otherwise.
            return Err(format!(
                "group {} lists its values in ranges ({ranged}), which only a full read by pages reads whole",
                entry.dn
            ));
        }
        let listed = listed_entry(entry, name_attribute, members);
        if self.groups.insert(dn_key(&entry.dn), listed).is_some() {
            return Err(format!("group {} is listed twice", entry.dn));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// The listing with `suffix` (the user base) cut from the member keys that end
    /// with it, marked by a leading `~`: the cursor holds it, and most members are
    /// users under the user base.
    pub fn compacted(&self, suffix: &str) -> Self {
        let mut compact = self.clone();
        for group in compact.groups.values_mut() {
            group.members = group
                .members
                .rewritten(|key, packed| match key.strip_suffix(suffix) {
                    Some(relative) => {
                        packed.push('~');
                        packed.push_str(relative);
                    }
                    None => packed.push_str(key),
                });
        }
        compact
    }

    /// The listing [`compacted`](Self::compacted) left, whole again.
    pub fn expanded(mut self, suffix: &str) -> Self {
        for group in self.groups.values_mut() {
            group.members = group.members.rewritten(|key, packed| {
                packed.push_str(key.strip_prefix('~').unwrap_or(key));
                if key.starts_with('~') {
                    packed.push_str(suffix);
                }
            });
        }
        self
    }

    /// Each member's groups by name. Groups in a cycle are an error.
    pub fn memberships(&self) -> Result<Memberships, String> {
        let mut listed = Vec::with_capacity(self.groups.len());
        for (dn, group) in &self.groups {
            let (nested, members): (Vec<&str>, Vec<&str>) = group
                .members
                .iter()
                .partition(|m| self.groups.contains_key(*m));
            listed.push(ListedGroup {
                name: dn.clone(),
                members: members.into_iter().map(Subject::new).collect(),
                groups: nested.into_iter().map(str::to_owned).collect(),
            });
        }
        let names: HashMap<String, GroupName> = self
            .groups
            .iter()
            .filter_map(|(dn, g)| Some((dn.clone(), GroupName::new(g.name.as_deref()?))))
            .collect();
        membership::named_groups_of_members(listed, &names).map_err(|err| err.to_string())
    }

    /// The groups of `keys` only, nesting flattened: cheaper than
    /// [`memberships`](Self::memberships) when few users changed. The listing's
    /// nesting was checked for cycles by the full read it descends from (a change
    /// of nesting makes a full read), and a cycle would only end the walk early.
    pub fn memberships_of(&self, keys: &HashSet<MemberKey>) -> Memberships {
        let wanted: HashSet<&str> = keys.iter().map(Subject::as_str).collect();
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut direct: HashMap<&str, Vec<&str>> = HashMap::new();
        for (dn, group) in &self.groups {
            for member in group.members.iter() {
                if self.groups.contains_key(member) {
                    parents.entry(member).or_default().push(dn);
                } else if wanted.contains(member) {
                    direct.entry(member).or_default().push(dn);
                }
            }
        }
        let mut memberships = HashMap::with_capacity(direct.len());
        for (member, groups) in direct {
            let mut seen: HashSet<&str> = HashSet::new();
            let mut pending = groups;
            while let Some(dn) = pending.pop() {
                if seen.insert(dn) {
                    pending.extend(parents.get(dn).into_iter().flatten());
                }
            }
            let mut names: Vec<GroupName> = seen
                .into_iter()
                .filter_map(|dn| self.groups.get(dn)?.name.as_deref().map(GroupName::new))
                .collect();
            names.sort();
            names.dedup();
            memberships.insert(Subject::new(member), names);
        }
        memberships
    }

    /// Removes the groups deleted (by entryUUID); returns their members.
    fn remove(
        &mut self,
        deleted: &[Subject],
        by_uuid: &HashMap<String, String>,
    ) -> HashSet<MemberKey> {
        let mut members = HashSet::new();
        for uuid in deleted {
            if let Some(old) = by_uuid
                .get(uuid.as_str())
                .and_then(|dn| self.groups.remove(dn))
            {
                members.extend(old.members.iter().map(Subject::new));
            }
        }
        members
    }

    /// Applies the groups a refresh reported changed (whole) and deleted (by
    /// entryUUID); says whose groups that changed.
    pub fn apply(
        &mut self,
        changed: &[Entry],
        deleted: &[Subject],
        name_attribute: &str,
        members: &MemberAttribute,
    ) -> GroupChange {
        let mut nesting = false;
        let by_uuid: HashMap<String, String> = self
            .groups
            .iter()
            .filter_map(|(dn, g)| Some((g.uuid.clone()?, dn.clone())))
            .collect();
        let mut affected = self.remove(deleted, &by_uuid);
        let new: Vec<(String, ListedEntry)> = changed
            .iter()
            .map(|e| (dn_key(&e.dn), listed_entry(e, name_attribute, members)))
            .collect();
        for (dn, group) in new {
            let old = match &group.uuid {
                Some(uuid) => by_uuid.get(uuid).cloned(),
                None => Some(dn.clone()),
            };
            let old = old.and_then(|old_dn| self.groups.remove(&old_dn).map(|g| (old_dn, g)));
            let before = match old {
                Some((old_dn, old)) => {
                    nesting |= old_dn != dn || old.name != group.name;
                    old.members
                }
                None => Members::default(),
            };
            let before: HashSet<&str> = before.iter().collect();
            let after: HashSet<&str> = group.members.iter().collect();
            affected.extend(
                before
                    .symmetric_difference(&after)
                    .map(|m| Subject::new(*m)),
            );
            self.groups.insert(dn, group);
        }
        // A group among the members that came or went is nesting that changed.
        if nesting
            || affected
                .iter()
                .any(|m| self.groups.contains_key(m.as_str()))
        {
            return GroupChange::Nesting;
        }
        GroupChange::Members(affected)
    }
}

fn listed_entry(entry: &Entry, name_attribute: &str, members: &MemberAttribute) -> ListedEntry {
    let values = entry.texts(members.name());
    let keys: Vec<String> = match members {
        MemberAttribute::Dn(_) => values.map(|v| dn_key(member_dn(v))).collect(),
        MemberAttribute::Uid => values.map(login_key).collect(),
    };
    ListedEntry {
        uuid: entry.text("entryUUID").map(str::to_owned),
        name: entry
            .text(name_attribute)
            .and_then(normalize::group_name_text)
            .map(str::to_owned),
        members: Members::new(keys),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(groups: &[(&str, &str, &[&str])]) -> GroupListing {
        let mut listing = GroupListing::default();
        for (dn, name, members) in groups {
            let members = Members::new(members.iter().map(|m| dn_key(m)).collect());
            listing.groups.insert(
                dn_key(dn),
                ListedEntry {
                    uuid: Some(format!("uuid-{dn}")),
                    name: Some((*name).to_owned()),
                    members,
                },
            );
        }
        listing
    }

    fn names(groups: &[GroupName]) -> Vec<&str> {
        groups.iter().map(GroupName::as_str).collect()
    }

    #[test]
    fn nested_groups_are_flattened_and_same_named_groups_count_once() {
        let listing = listing(&[
            (
                "cn=eng,ou=g",
                "engineering",
                &["cn=SRE,ou=g", "uid=cto,ou=p"],
            ),
            ("cn=sre,ou=g", "sre", &["uid=ann,ou=p"]),
            ("cn=ops,ou=g", "sre", &["uid=ann,ou=p"]),
        ]);
        let memberships = listing.memberships().expect("no cycle");
        assert_eq!(
            names(&memberships[&Subject::new("uid=ann,ou=p")]),
            ["engineering", "sre"]
        );
        assert_eq!(
            names(&memberships[&Subject::new("uid=cto,ou=p")]),
            ["engineering"]
        );
        let ann: HashSet<Subject> = [Subject::new("uid=ann,ou=p")].into_iter().collect();
        assert_eq!(
            listing.memberships_of(&ann)[&Subject::new("uid=ann,ou=p")],
            memberships[&Subject::new("uid=ann,ou=p")]
        );
        let cycle = self::listing(&[("cn=a", "a", &["cn=b"]), ("cn=b", "b", &["cn=a"])]);
        assert!(cycle.memberships().unwrap_err().contains("cycle"));
    }

    fn entry(dn: &str, name: &str, members: &[&str]) -> Entry {
        Entry::for_tests(
            dn,
            &[
                ("cn", &[name]),
                ("entryUUID", &[&format!("uuid-{dn}")]),
                ("member", members),
            ],
        )
    }

    #[test]
    fn a_changed_group_affects_its_joiners_and_leavers_and_a_rename_the_nesting() {
        let member = MemberAttribute::Dn("member".into());
        let mut groups = listing(&[
            ("cn=sre,ou=g", "sre", &["uid=ann,ou=p", "uid=bob,ou=p"]),
            ("cn=db,ou=g", "db", &["uid=cy,ou=p"]),
        ]);
        let change = groups.apply(
            &[entry(
                "cn=sre,ou=g",
                "sre",
                &["uid=bob,ou=p", "uid=dee,ou=p"],
            )],
            &[],
            "cn",
            &member,
        );
        let expected: HashSet<Subject> = ["uid=ann,ou=p", "uid=dee,ou=p"]
            .into_iter()
            .map(Subject::new)
            .collect();
        assert_eq!(change, GroupChange::Members(expected));
        assert_eq!(
            groups
                .memberships()
                .expect("ok")
                .get(&Subject::new("uid=ann,ou=p")),
            None
        );

        let deleted = groups.apply(&[], &[Subject::new("uuid-cn=db,ou=g")], "cn", &member);
        assert_eq!(
            deleted,
            GroupChange::Members([Subject::new("uid=cy,ou=p")].into_iter().collect())
        );
        let renamed = groups.apply(
            &[entry("cn=sre,ou=g", "site-reliability", &["uid=bob,ou=p"])],
            &[],
            "cn",
            &member,
        );
        assert_eq!(renamed, GroupChange::Nesting);
        let nested = groups.apply(
            &[entry("cn=all,ou=g", "all", &["cn=sre,ou=g"])],
            &[],
            "cn",
            &member,
        );
        assert_eq!(nested, GroupChange::Nesting);
    }
}
