//! Who is in which group, for sources that list groups with their members: each
//! group's members are its direct members and those of the groups nested in it,
//! at any depth. A cycle of nested groups is an error: the export that holds one
//! cannot say what either group means.
//!
//! (The SCIM source resolves memberships as its pages stream in, by digest, in
//! `source/scim/roster.rs`; SCIM groups do not nest.)

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{GroupName, Subject};

/// A group as a directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub name: String,
    /// Subjects of its direct members.
    pub members: Vec<Subject>,
    /// Names of the groups nested in it, whose members are its members too.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("group {0:?} is listed twice")]
    Duplicate(String),
    #[error("group {group:?} nests group {nested:?}, which is not listed")]
    UnknownNested { group: String, nested: String },
    #[error("groups nest in a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
}

/// Each subject's groups, sorted, with nesting flattened: a member of a group is
/// a member of every group that nests it, at any depth. Members are moved, not
/// copied, and no group's flattened member list is ever built: a subject's
/// groups are its direct groups and the groups above them, computed once per
/// group (docs/performance.md).
pub fn groups_of_members(
    groups: Vec<ListedGroup>,
) -> Result<HashMap<Subject, Vec<GroupName>>, MembershipError> {
    let mut by_name = BTreeMap::new();
    for group in groups {
        if by_name.contains_key(&group.name) {
            return Err(MembershipError::Duplicate(group.name));
        }
        by_name.insert(group.name.clone(), group);
    }
    let mut checked = BTreeSet::new();
    for name in by_name.keys() {
        check_nesting(name, &by_name, &mut checked, &mut Vec::new())?;
    }
    let above = groups_above(&by_name);
    let mut memberships: HashMap<Subject, Vec<GroupName>> = HashMap::new();
    for (name, group) in by_name {
        let names = &above[&name];
        for member in group.members {
            memberships
                .entry(member)
                .or_default()
                .extend(names.iter().cloned());
        }
    }
    for groups in memberships.values_mut() {
        groups.sort();
        groups.dedup();
    }
    Ok(memberships)
}

/// Refuses a nested group that is not listed, and a cycle of nested groups.
/// `path` holds the groups being checked above this one, to name the cycle.
fn check_nesting<'a>(
    name: &'a str,
    groups: &'a BTreeMap<String, ListedGroup>,
    checked: &mut BTreeSet<&'a str>,
    path: &mut Vec<&'a str>,
) -> Result<(), MembershipError> {
    if checked.contains(name) {
        return Ok(());
    }
    if let Some(start) = path.iter().position(|above| *above == name) {
        let mut cycle: Vec<String> = path[start..].iter().map(|n| (*n).to_owned()).collect();
        cycle.push(name.to_owned());
        return Err(MembershipError::Cycle(cycle));
    }
    path.push(name);
    for nested in &groups[name].groups {
        if !groups.contains_key(nested) {
            return Err(MembershipError::UnknownNested {
                group: name.to_owned(),
                nested: nested.clone(),
            });
        }
        check_nesting(nested, groups, checked, path)?;
    }
    path.pop();
    checked.insert(name);
    Ok(())
}

/// For each group, its own name and the names of every group that nests it, at
/// any depth. The nesting is known to hold no cycle.
fn groups_above(groups: &BTreeMap<String, ListedGroup>) -> HashMap<String, Vec<GroupName>> {
    let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
    for (name, group) in groups {
        for nested in &group.groups {
            parents
                .entry(nested.as_str())
                .or_default()
                .push(name.as_str());
        }
    }
    let names: HashMap<&str, GroupName> = groups
        .keys()
        .map(|name| (name.as_str(), GroupName::new(name)))
        .collect();
    let mut above: HashMap<String, Vec<GroupName>> = HashMap::new();
    for name in groups.keys() {
        let mut found = BTreeSet::from([name.as_str()]);
        let mut pending = vec![name.as_str()];
        while let Some(group) = pending.pop() {
            for parent in parents.get(group).into_iter().flatten() {
                if found.insert(parent) {
                    pending.push(parent);
                }
            }
        }
        let listed = found
            .into_iter()
            .map(|group| names[group].clone())
            .collect();
        above.insert(name.clone(), listed);
    }
    above
}

/// [`groups_of_members`] for directories that key their groups by an id and show
/// them by a name that need not be unique (Google, Keycloak, Okta, Entra ID, LDAP):
/// `groups` are listed by id, and each subject's groups come out as `names[id]`,
/// sorted; a group without a name there counts for nesting only.
pub fn named_groups_of_members(
    groups: Vec<ListedGroup>,
    names: &HashMap<String, GroupName>,
) -> Result<HashMap<Subject, Vec<GroupName>>, MembershipError> {
    let mut memberships = groups_of_members(groups)?;
    for groups in memberships.values_mut() {
        groups.retain_mut(|group| match names.get(group.as_str()) {
            Some(name) => {
                *group = name.clone();
                true
            }
            None => false,
        });
        groups.sort();
        groups.dedup();
    }
    Ok(memberships)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(name: &str, members: &[&str], groups: &[&str]) -> ListedGroup {
        ListedGroup {
            name: name.into(),
            members: members.iter().map(|m| Subject::new(*m)).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn names(memberships: &HashMap<Subject, Vec<GroupName>>, subject: &str) -> Vec<String> {
        memberships
            .get(&Subject::new(subject))
            .map(|groups| groups.iter().map(|g| g.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn members_of_nested_groups_are_members_of_every_group_above() {
        let memberships = groups_of_members(vec![
            group("engineering", &["cto"], &["platform"]),
            group("platform", &["ann"], &["sre"]),
            group("sre", &["bob"], &[]),
            group("sales", &["cid"], &[]),
        ])
        .unwrap();
        assert_eq!(
            names(&memberships, "bob"),
            ["engineering", "platform", "sre"]
        );
        assert_eq!(names(&memberships, "ann"), ["engineering", "platform"]);
        assert_eq!(names(&memberships, "cto"), ["engineering"]);
        assert_eq!(names(&memberships, "cid"), ["sales"]);
    }

    #[test]
    fn a_group_reached_twice_counts_once() {
        let memberships = groups_of_members(vec![
            group("all", &["ann"], &["a", "b"]),
            group("a", &["ann"], &["c"]),
            group("b", &[], &["c"]),
            group("c", &["ann"], &[]),
        ])
        .unwrap();
        assert_eq!(names(&memberships, "ann"), ["a", "all", "b", "c"]);
    }

    #[test]
    fn a_cycle_is_an_error_that_names_it() {
        let err = groups_of_members(vec![
            group("a", &[], &["b"]),
            group("b", &[], &["c"]),
            group("c", &["ann"], &["a"]),
        ])
        .unwrap_err();
        assert_eq!(
            err,
            MembershipError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(err.to_string(), "groups nest in a cycle: a → b → c → a");
        let err = groups_of_members(vec![group("self", &[], &["self"])]).unwrap_err();
        assert!(matches!(err, MembershipError::Cycle(_)));
    }

    #[test]
    fn groups_keyed_by_id_come_out_by_name_once_each() {
        let shown = [("g1", "ops"), ("g2", "ops"), ("g3", "eng")]
            .into_iter()
            .map(|(id, name)| (id.to_owned(), GroupName::new(name)))
            .collect();
        let memberships = named_groups_of_members(
            vec![
                group("g3", &[], &["g1"]),
                group("g1", &["ann"], &[]),
                group("g2", &["ann"], &[]),
            ],
            &shown,
        )
        .unwrap();
        assert_eq!(names(&memberships, "ann"), ["eng", "ops"]);
        // A group with no name nests, but is no one's group itself.
        let memberships = named_groups_of_members(
            vec![group("g3", &["bob"], &["g4"]), group("g4", &["cy"], &[])],
            &shown,
        )
        .unwrap();
        assert_eq!(names(&memberships, "cy"), ["eng"]);
        assert_eq!(names(&memberships, "bob"), ["eng"]);
    }

    #[test]
    fn unknown_nested_groups_and_twice_listed_groups_are_errors() {
        let err = groups_of_members(vec![group("a", &[], &["ghost"])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "group \"a\" nests group \"ghost\", which is not listed"
        );
        let err = groups_of_members(vec![group("a", &[], &[]), group("a", &[], &[])]).unwrap_err();
        assert_eq!(err, MembershipError::Duplicate("a".into()));
    }
}
