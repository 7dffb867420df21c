//! The groups policy: which IdP groups reach the gateway and under which names.
//!
//! Group membership decides which connections a user may use and which reviews
//! they may approve; the gateway's admin group grants full control. So the
//! policy is applied before planning, and a group that would map to the admin
//! group is dropped unless the operator allowed it explicitly.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use crate::config::GroupPolicy;
use crate::model::{DirectoryUser, GroupName};

/// What the policy makes of one IdP group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// Synced under this gateway name.
    Synced(GroupName),
    /// Not selected by `include`/`exclude`.
    NotSelected,
    /// It would be the gateway's admin group, and that is not allowed.
    AdminDropped,
}

impl GroupPolicy {
    pub fn map(&self, idp_name: &str) -> Mapping {
        let selected = (self.include.is_empty()
            || self.include.iter().any(|p| glob_match(p, idp_name)))
            && !self.exclude.iter().any(|p| glob_match(p, idp_name));
        if !selected {
            return Mapping::NotSelected;
        }
        let renamed = self.rename.get(idp_name).map_or(idp_name, String::as_str);
        let name = format!("{}{renamed}", self.prefix);
        if name == self.admin_group && !self.allow_admin_group {
            return Mapping::AdminDropped;
        }
        Mapping::Synced(GroupName::new(&name))
    }

    /// Applies the policy to the users of one read, chunk by chunk.
    pub fn mapper(&self) -> GroupMapper<'_> {
        GroupMapper {
            policy: self,
            decided: FxHashMap::default(),
            dropped: BTreeMap::new(),
        }
    }
}

/// The policy applied to one read: each directory group is mapped once, however
/// many users and chunks it appears in.
pub struct GroupMapper<'p> {
    policy: &'p GroupPolicy,
    /// Keyed by the shared name's address: every membership of one directory group
    /// holds the same `GroupName`, so this skips hashing the name each time. The
    /// name is kept, so that its address cannot be reused by another name.
    decided: FxHashMap<usize, (GroupName, Mapping)>,
    dropped: BTreeMap<String, usize>,
}

impl GroupMapper<'_> {
    /// Rewrites every user's groups to their gateway names.
    pub fn apply(&mut self, users: &mut [DirectoryUser]) {
        let policy = self.policy;
        // Renames can reorder names and merge two IdP groups into one gateway group.
        let renames = !policy.rename.is_empty();
        for user in users {
            user.groups.retain_mut(|group| {
                let address = group.address() as usize;
                let (_, mapping) = self.decided.entry(address).or_insert_with(|| {
                    let mapping = match policy.map(group.as_str()) {
                        // Keep sharing the directory's name when it is unchanged.
                        Mapping::Synced(name) if name == *group => Mapping::Synced(group.clone()),
                        mapping => mapping,
                    };
                    (group.clone(), mapping)
                });
                match mapping {
                    Mapping::Synced(name) => {
                        if name.address() != group.address() {
                            *group = name.clone();
                        }
                        true
                    }
                    Mapping::NotSelected => false,
                    Mapping::AdminDropped => {
                        *self.dropped.entry(group.to_string()).or_default() += 1;
                        false
                    }
                }
            });
            if renames {
                user.groups.sort_unstable();
                user.groups.dedup();
            }
        }
    }

    /// The IdP groups dropped because they map to the admin group, with how many
    /// users were in each.
    pub fn dropped(self) -> BTreeMap<String, usize> {
        self.dropped
    }
}

/// Shell-style glob with `*` (any run of characters) and `?` (one character).
fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it currently swallows up to.
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((star, swallowed)) => {
                    p = star + 1;
                    t = swallowed + 1;
                    backtrack = Some((star, swallowed + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Email, Subject};

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("team-*", "team-payments"));
        assert!(!glob_match("team-*", "sre"));
        assert!(glob_match("*-admins", "db-admins"));
        assert!(glob_match("t?am-*x", "team-box"));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b*c", "aXbYbZ"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    fn policy() -> GroupPolicy {
        GroupPolicy {
            include: vec!["team-*".into(), "Database Admins".into(), "Admins".into()],
            exclude: vec!["team-archive*".into()],
            rename: BTreeMap::from([
                ("Database Admins".into(), "dba".into()),
                ("Admins".into(), "admin".into()),
            ]),
            prefix: String::new(),
            ..GroupPolicy::default()
        }
    }

    #[test]
    fn include_exclude_and_rename_apply_in_order() {
        let policy = policy();
        assert_eq!(
            policy.map("team-sre"),
            Mapping::Synced(GroupName::new("team-sre"))
        );
        assert_eq!(policy.map("team-archive-2019"), Mapping::NotSelected);
        assert_eq!(policy.map("marketing"), Mapping::NotSelected);
        assert_eq!(
            policy.map("Database Admins"),
            Mapping::Synced(GroupName::new("dba"))
        );
    }

    #[test]
    fn the_admin_group_is_dropped_unless_allowed() {
        let mut policy = policy();
        assert_eq!(policy.map("Admins"), Mapping::AdminDropped);
        policy.allow_admin_group = true;
        assert_eq!(
            policy.map("Admins"),
            Mapping::Synced(GroupName::new("admin"))
        );
    }

    #[test]
    fn a_prefix_cannot_be_used_to_reach_admin_either() {
        let policy = GroupPolicy {
            prefix: "ad".into(),
            ..GroupPolicy::default()
        };
        assert_eq!(policy.map("min"), Mapping::AdminDropped);
        assert_eq!(policy.map("sre"), Mapping::Synced(GroupName::new("adsre")));
        let named = GroupPolicy {
            admin_group: "superusers".into(),
            ..GroupPolicy::default()
        };
        assert_eq!(named.map("superusers"), Mapping::AdminDropped);
        assert_eq!(named.map("admin"), Mapping::Synced(GroupName::new("admin")));
    }

    #[test]
    fn apply_rewrites_users_and_counts_dropped_admin_memberships() {
        let mut users = vec![DirectoryUser {
            subject: Subject::new("s1"),
            active: true,
            email: Email::parse("a@x.com"),
            name: None,
            groups: ["Admins", "Database Admins", "marketing", "team-sre"]
                .iter()
                .map(|g| GroupName::new(g))
                .collect(),
            slack_id: None,
            picture: None,
        }];
        let policy = policy();
        let mut mapper = policy.mapper();
        // The same groups in a second chunk: mapped from the memo, counted again.
        let mut later = users.clone();
        mapper.apply(&mut users);
        mapper.apply(&mut later);
        for user in [&users[0], &later[0]] {
            let names: Vec<&str> = user.groups.iter().map(GroupName::as_str).collect();
            assert_eq!(names, ["dba", "team-sre"]);
        }
        assert_eq!(mapper.dropped(), BTreeMap::from([("Admins".to_owned(), 2)]));
    }
}
