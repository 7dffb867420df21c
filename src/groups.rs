//! The groups policy: which IdP groups reach the gateway and under which names.
//!
//! Group membership decides which connections a user may use and which reviews
//! they may approve; the gateway's admin group grants full control. So the
//! policy is applied before planning, and a group that would map to the admin
//! group is dropped unless the operator allowed it explicitly.
//!
//! `include`/`exclude` are wildcards ([`wildmatch`]): `*` is any run of characters,
//! `/` included, and `?` exactly one character (not one byte); every other
//! character, `[`, `{` and `\` included, stands for itself, case-sensitively.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use wildmatch::WildMatch;

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
    /// Maps one name; [`GroupPolicy::mapper`] compiles the patterns once for many.
    pub fn map(&self, idp_name: &str) -> Mapping {
        self.map_selected(&Selection::new(self), idp_name)
    }

    fn map_selected(&self, selection: &Selection, idp_name: &str) -> Mapping {
        if !selection.selects(idp_name) {
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
            selection: Selection::new(self),
            decided: FxHashMap::default(),
            dropped: BTreeMap::new(),
        }
    }
}

/// The policy applied to one read: each directory group is mapped once, however
/// many users and chunks it appears in.
pub struct GroupMapper<'p> {
    policy: &'p GroupPolicy,
    selection: Selection,
    /// Keyed by the shared name's address: every membership of one directory group
    /// holds the same `GroupName`, so this skips hashing the name each time. The
    /// name is kept, so that its address cannot be reused by another name.
    decided: FxHashMap<usize, (GroupName, Mapping)>,
    dropped: BTreeMap<String, usize>,
}

impl GroupMapper<'_> {
    /// Rewrites every user's groups to their gateway names.
    pub fn apply(&mut self, users: &mut [DirectoryUser]) {
        let (policy, selection) = (self.policy, &self.selection);
        // Renames can reorder names and merge two IdP groups into one gateway group.
        let renames = !policy.rename.is_empty();
        for user in users {
            user.groups.retain_mut(|group| {
                let address = group.address() as usize;
                let (_, mapping) = self.decided.entry(address).or_insert_with(|| {
                    let mapping = match policy.map_selected(selection, group.as_str()) {
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

/// A policy's `include` and `exclude` patterns, compiled. Not `globset`: its `?`
/// matches one byte, its `**/` spans directories and its `[`, `{` are special.
struct Selection {
    include: Vec<WildMatch>,
    exclude: Vec<WildMatch>,
}

impl Selection {
    fn new(policy: &GroupPolicy) -> Self {
        let compile = |patterns: &[String]| patterns.iter().map(|p| WildMatch::new(p)).collect();
        Self {
            include: compile(&policy.include),
            exclude: compile(&policy.exclude),
        }
    }

    /// Included (or no `include` given) and not excluded.
    fn selects(&self, idp_name: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(idp_name)))
            && !self.exclude.iter().any(|p| p.matches(idp_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Email, Subject};

    /// Whether `include = [pattern]` selects `name`, checked against `exclude` too.
    fn glob_match(pattern: &str, name: &str) -> bool {
        let include = GroupPolicy {
            include: vec![pattern.into()],
            ..GroupPolicy::default()
        };
        let exclude = GroupPolicy {
            exclude: vec![pattern.into()],
            ..GroupPolicy::default()
        };
        let included = include.map(name) != Mapping::NotSelected;
        let excluded = exclude.map(name) == Mapping::NotSelected;
        assert_eq!(included, excluded, "{pattern:?} on {name:?}");
        included
    }

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

    #[test]
    fn glob_stars_cross_slashes_and_are_never_recursive() {
        assert!(glob_match("*", "org/team/sub"));
        assert!(glob_match("org/*", "org/team/sub"));
        assert!(glob_match("a?b", "a/b"));
        // No `**` directory semantics: two stars are one.
        assert!(glob_match("**", "a/b"));
        assert!(!glob_match("**/x", "x"));
        assert!(glob_match("**/x", "a/x"));
        assert!(!glob_match("a/**/b", "a/b"));
        assert!(glob_match("a/**/b", "a//b"));
    }

    #[test]
    fn glob_question_mark_is_one_character_not_one_byte() {
        assert!(glob_match("t?am-*", "téam-ops"));
        assert!(glob_match("?", "é"));
        assert!(!glob_match("??", "é"));
        assert!(glob_match("?quipe", "équipe"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("", ""));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn glob_brackets_braces_and_backslashes_stand_for_themselves() {
        assert!(glob_match("[ab]", "[ab]"));
        assert!(!glob_match("[ab]", "a"));
        assert!(glob_match("{a,b}-*", "{a,b}-x"));
        assert!(!glob_match("{a,b}-*", "a-x"));
        assert!(glob_match("x\\*", "x\\yz"));
        assert!(!glob_match("x\\*", "x*"));
        assert!(glob_match("[*", "[!x]"));
    }

    #[test]
    fn glob_is_case_sensitive() {
        assert!(!glob_match("Team-*", "team-sre"));
        assert!(!glob_match("admins", "Admins"));
        assert!(glob_match("Team-?RE", "Team-SRE"));
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
