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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rustc_hash::{FxHashMap, FxHashSet};

mod index;

use super::entry::{dn_key, login_key, member_dn, Entry};
use crate::config::MemberAttribute;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize;

pub use index::MemberIndex;

/// How a user is named in member values: its DN key, or its login.
pub type MemberKey = Subject;

/// Each member key's groups, nesting flattened, sorted.
pub type Memberships = HashMap<MemberKey, Vec<GroupName>>;

/// The groups as listed, by DN key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    form: KeyForm,
    groups: BTreeMap<String, ListedEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ListedEntry {
    /// The entryUUID, by which the server reports the group deleted.
    uuid: Option<String>,
    name: Option<String>,
    members: Members,
}

/// A group's member keys (DN keys of users and nested groups, or logins for
/// `memberUid`), one a line in [`KeyForm`]. Kept as the cursor holds them, so
/// that reading and writing the cursor copies text rather than splitting and
/// joining every key (docs/performance.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Members(String);

impl Members {
    /// `keys` are [`dn_key`]s or [`login_key`]s: none holds a line break.
    fn new(mut keys: Vec<String>, form: &KeyForm) -> Self {
        keys.sort();
        keys.dedup();
        let mut packed = String::new();
        for key in &keys {
            if !packed.is_empty() {
                packed.push('\n');
            }
            form.pack(key, &mut packed);
        }
        Self(packed)
    }

    /// The keys as kept.
    fn packed(&self) -> impl Iterator<Item = &str> {
        self.0.split('\n').filter(|key| !key.is_empty())
    }

    /// Whether `packed` is one of the keys, found as a whole line.
    fn contains(&self, packed: &str) -> bool {
        let text = self.0.as_bytes();
        memchr::memmem::find_iter(text, packed.as_bytes()).any(|at| {
            let end = at + packed.len();
            (at == 0 || text[at - 1] == b'\n') && (end == text.len() || text[end] == b'\n')
        })
    }
}

/// How the listing keeps a member key: one under the user base (most are) as
/// `~` and the part before the base, any other as `=` and the whole key.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyForm {
    /// `,` and the user base's DN key.
    suffix: String,
}

impl KeyForm {
    fn new(user_base: &str) -> Self {
        Self {
            suffix: format!(",{}", dn_key(user_base)),
        }
    }

    fn pack(&self, key: &str, packed: &mut String) {
        match key.strip_suffix(&self.suffix) {
            Some(relative) => {
                packed.push('~');
                packed.push_str(relative);
            }
            None => {
                packed.push('=');
                packed.push_str(key);
            }
        }
    }

    fn packed(&self, key: &str) -> String {
        let mut packed = String::with_capacity(key.len() + 1);
        self.pack(key, &mut packed);
        packed
    }

    fn is_packed(key: &str) -> bool {
        key.starts_with(['~', '='])
    }

    /// The whole key of a packed one; `None` if it is not packed.
    fn unpack<'a>(&self, packed: &'a str) -> Option<Cow<'a, str>> {
        match packed.split_at_checked(1)? {
            ("=", key) => Some(Cow::Borrowed(key)),
            ("~", relative) => Some(Cow::Owned(format!("{relative}{}", self.suffix))),
            _ => None,
        }
    }

    fn key(&self, packed: &str) -> MemberKey {
        // Every key kept was packed by `pack`, or checked by `GroupListing::read`.
        Subject::new(self.unpack(packed).unwrap_or_default())
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
    /// An empty listing of a directory whose users are under `user_base`.
    pub fn new(user_base: &str) -> Self {
        Self {
            form: KeyForm::new(user_base),
            groups: BTreeMap::new(),
        }
    }

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
        let listed = listed_entry(entry, name_attribute, members, &self.form);
        if self.groups.insert(dn_key(&entry.dn), listed).is_some() {
            return Err(format!("group {} is listed twice", entry.dn));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Appends the listing in the cursor's text form: a line with the user
    /// base's suffix, a line with the number of groups, then the groups (see
    /// [`write_group`]).
    pub fn write(&self, text: &mut String) {
        text.push_str(&format!(
            "{}\n{} groups\n",
            self.form.suffix,
            self.groups.len()
        ));
        for (dn, group) in &self.groups {
            write_group(dn, group, text);
        }
    }

    /// The listing [`write`](Self::write) wrote, as the whole of `text`; `None`
    /// if it is not such a listing.
    pub fn read(text: &str) -> Option<Self> {
        let (suffix, rest) = text.split_once('\n')?;
        let form = KeyForm {
            suffix: suffix.to_owned(),
        };
        let (count, mut rest) = counted(rest, "groups")?;
        let mut listing = Self {
            form,
            groups: BTreeMap::new(),
        };
        for _ in 0..count {
            let (dn, group, after) = read_group(rest)?;
            rest = after;
            if listing.groups.insert(dn, group).is_some() {
                return None;
            }
        }
        rest.is_empty().then_some(listing)
    }

    /// Appends what the groups named by `dns` are now, as the listing has
    /// them: a line with the number of those listed, each as [`write`](Self::write)
    /// writes it, then a line with the number of the others, each a line of
    /// JSON: the DN keys of groups deleted.
    pub fn write_changes(&self, dns: &BTreeSet<String>, text: &mut String) {
        let (listed, deleted): (Vec<&String>, Vec<&String>) = dns
            .iter()
            .partition(|dn| self.groups.contains_key(dn.as_str()));
        text.push_str(&format!("{} changed\n", listed.len()));
        for dn in listed {
            write_group(dn, &self.groups[dn.as_str()], text);
        }
        text.push_str(&format!("{} deleted\n", deleted.len()));
        for dn in deleted {
            // A string always serializes.
            text.push_str(&serde_json::to_string(dn).unwrap_or_default());
            text.push('\n');
        }
    }

    /// Applies what [`write_changes`](Self::write_changes) wrote, as the whole
    /// of `text`; returns the DN keys it named, or `None` if it is not that.
    pub fn read_changes(&mut self, text: &str) -> Option<BTreeSet<String>> {
        let mut named = BTreeSet::new();
        let (count, mut rest) = counted(text, "changed")?;
        for _ in 0..count {
            let (dn, group, after) = read_group(rest)?;
            rest = after;
            named.insert(dn.clone());
            self.groups.insert(dn, group);
        }
        let (count, mut rest) = counted(rest, "deleted")?;
        for _ in 0..count {
            let (line, after) = rest.split_once('\n')?;
            rest = after;
            let dn: String = serde_json::from_str(line).ok()?;
            self.groups.remove(&dn);
            named.insert(dn);
        }
        rest.is_empty().then_some(named)
    }

    /// The DN keys of the groups with these entryUUIDs.
    pub fn dns_of(&self, uuids: &[Subject]) -> Vec<String> {
        let found = self.dns_by_uuid(uuids.iter().map(Subject::as_str));
        found.into_values().collect()
    }

    /// The DN keys of the groups with these entryUUIDs, by entryUUID. A group
    /// refresh reports every entry changed out of its scope as deleted (the
    /// users renamed, for one), so most are no group's.
    fn dns_by_uuid<'u>(&self, uuids: impl IntoIterator<Item = &'u str>) -> HashMap<String, String> {
        let wanted: FxHashSet<&str> = uuids.into_iter().collect();
        if wanted.is_empty() {
            return HashMap::new();
        }
        (self.groups.iter())
            .filter_map(|(dn, group)| {
                let uuid = group.uuid.as_deref().filter(|u| wanted.contains(u))?;
                Some((uuid.to_owned(), dn.clone()))
            })
            .collect()
    }

    /// Each member's groups by name. Groups in a cycle are an error.
    pub fn memberships(&self) -> Result<Memberships, String> {
        let mut listed = Vec::with_capacity(self.groups.len());
        for (dn, group) in &self.groups {
            let (nested, members): (Vec<MemberKey>, Vec<MemberKey>) = group
                .members
                .packed()
                .map(|packed| self.form.key(packed))
                .partition(|key| self.groups.contains_key(key.as_str()));
            listed.push(ListedGroup {
                name: dn.clone(),
                members,
                groups: nested.iter().map(|key| key.as_str().to_owned()).collect(),
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
        if keys.is_empty() {
            return Memberships::new();
        }
        // What a kept member is to this lookup, by its packed key: one lookup
        // a member, in a map of the few keys asked for and the groups.
        enum Role<'a> {
            Wanted(&'a MemberKey),
            Group(&'a str),
        }
        let mut roles: FxHashMap<String, Role> = FxHashMap::default();
        for key in keys {
            roles.insert(self.form.packed(key.as_str()), Role::Wanted(key));
        }
        for dn in self.groups.keys() {
            roles.insert(self.form.packed(dn), Role::Group(dn));
        }
        let mut parents: HashMap<&str, Vec<&str>> = HashMap::new();
        let mut direct: HashMap<&MemberKey, Vec<&str>> = HashMap::new();
        for (dn, group) in &self.groups {
            for member in group.members.packed() {
                match roles.get(member) {
                    Some(Role::Group(nested)) => parents.entry(nested).or_default().push(dn),
                    Some(Role::Wanted(key)) => direct.entry(key).or_default().push(dn),
                    None => {}
                }
            }
        }
        let mut memberships = HashMap::with_capacity(direct.len());
        for (member, groups) in direct {
            let parents_of = |dn: &str| parents.get(dn).into_iter().flatten().copied();
            memberships.insert(member.clone(), self.names_up_from(groups, parents_of));
        }
        memberships
    }

    /// As [`memberships_of`](Self::memberships_of), looked up in `index`, an
    /// index of this listing.
    pub fn memberships_by(&self, index: &MemberIndex, keys: &HashSet<MemberKey>) -> Memberships {
        let mut memberships = HashMap::with_capacity(keys.len());
        for key in keys {
            let packed = self.form.packed(key.as_str());
            let direct = index.groups_of(self, &packed);
            if direct.is_empty() {
                continue;
            }
            let parents_of = |dn: &str| index.groups_of(self, &self.form.packed(dn));
            memberships.insert(key.clone(), self.names_up_from(direct, parents_of));
        }
        memberships
    }

    /// The names of the groups `direct` and of every group above them, which
    /// `parents_of` gives a group's; sorted, each once.
    fn names_up_from<'a, P: IntoIterator<Item = &'a str>>(
        &'a self,
        direct: Vec<&'a str>,
        parents_of: impl Fn(&str) -> P,
    ) -> Vec<GroupName> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut pending = direct;
        while let Some(dn) = pending.pop() {
            if seen.insert(dn) {
                pending.extend(parents_of(dn));
            }
        }
        let mut names: Vec<GroupName> = seen
            .into_iter()
            .filter_map(|dn| self.groups.get(dn)?.name.as_deref().map(GroupName::new))
            .collect();
        names.sort();
        names.dedup();
        names
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
                members.extend(old.members.packed().map(|m| self.form.key(m)));
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
        if changed.is_empty() && deleted.is_empty() {
            return GroupChange::Members(HashSet::new());
        }
        let mut nesting = false;
        let new: Vec<(String, ListedEntry)> = changed
            .iter()
            .map(|e| {
                let listed = listed_entry(e, name_attribute, members, &self.form);
                (dn_key(&e.dn), listed)
            })
            .collect();
        let changed_uuids = new.iter().filter_map(|(_, group)| group.uuid.as_deref());
        let by_uuid = self.dns_by_uuid(deleted.iter().map(Subject::as_str).chain(changed_uuids));
        let mut affected = self.remove(deleted, &by_uuid);
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
            let before: HashSet<&str> = before.packed().collect();
            let after: HashSet<&str> = group.members.packed().collect();
            let moved = before.symmetric_difference(&after);
            affected.extend(moved.map(|m| self.form.key(m)));
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

/// The first `count` lines of `text`, and what follows them.
fn lines(text: &str, count: usize) -> Option<(&str, &str)> {
    if count == 0 {
        return Some(("", text));
    }
    let end = memchr::memchr_iter(b'\n', text.as_bytes()).nth(count - 1)?;
    Some((&text[..end], &text[end + 1..]))
}

/// A group as the cursor keeps it: a line of JSON, `[dn key, entryUUID, name,
/// member count]`, then its members one a line.
fn write_group(dn: &str, group: &ListedEntry, text: &mut String) {
    let count = group.members.packed().count();
    // Strings, optional strings and a number always serialize.
    let head = serde_json::to_string(&(dn, &group.uuid, &group.name, count));
    text.push_str(&head.unwrap_or_default());
    text.push('\n');
    if count > 0 {
        text.push_str(&group.members.0);
        text.push('\n');
    }
}

/// The group [`write_group`] wrote at the start of `text`, and what follows it.
fn read_group(text: &str) -> Option<(String, ListedEntry, &str)> {
    let (head, after) = text.split_once('\n')?;
    let (dn, uuid, name, count): (String, Option<String>, Option<String>, usize) =
        serde_json::from_str(head).ok()?;
    let (members, after) = lines(after, count)?;
    if count > 0 && !members.split('\n').all(KeyForm::is_packed) {
        return None;
    }
    let group = ListedEntry {
        uuid,
        name,
        members: Members(members.to_owned()),
    };
    Some((dn, group, after))
}

/// The number on a line `{number} {what}` at the start of `text`, and what follows.
fn counted<'a>(text: &'a str, what: &str) -> Option<(usize, &'a str)> {
    let (line, rest) = text.split_once('\n')?;
    let count = line.strip_suffix(what)?.strip_suffix(' ')?.parse().ok()?;
    Some((count, rest))
}

fn listed_entry(
    entry: &Entry,
    name_attribute: &str,
    members: &MemberAttribute,
    form: &KeyForm,
) -> ListedEntry {
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
        members: Members::new(keys, form),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(groups: &[(&str, &str, &[&str])]) -> GroupListing {
        let mut listing = GroupListing::new("ou=p");
        for (dn, name, members) in groups {
            let keys = members.iter().map(|m| dn_key(m)).collect();
            let members = Members::new(keys, &listing.form);
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
    fn a_member_is_found_only_as_a_whole_key() {
        let form = KeyForm::new("ou=p");
        let keys = ["uid=ab,ou=p", "uid=b,ou=p", "cn=x,ou=g"].map(dn_key);
        let members = Members::new(keys.to_vec(), &form);
        for key in keys {
            assert!(members.contains(&form.packed(&key)), "{key}");
        }
        for absent in ["uid=a,ou=p", "uid=abc,ou=p", "uid=,ou=p", "cn=x,ou=g2"] {
            assert!(!members.contains(&form.packed(&dn_key(absent))), "{absent}");
        }
        assert!(!Members::default().contains(&form.packed("uid=b,ou=p")));
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

    #[test]
    fn the_index_finds_the_memberships_the_listing_has_and_follows_its_changes() {
        let member = MemberAttribute::Dn("member".into());
        let mut groups = listing(&[
            (
                "cn=eng,ou=g",
                "engineering",
                &["cn=sre,ou=g", "uid=cto,ou=p"],
            ),
            ("cn=sre,ou=g", "sre", &["uid=ann,ou=p", "uid=bob,ou=p"]),
            ("cn=db,ou=g", "db", &["uid=bob,ou=p"]),
        ]);
        let keys: HashSet<Subject> = [
            "uid=ann,ou=p",
            "uid=bob,ou=p",
            "uid=cto,ou=p",
            "uid=nobody,ou=p",
        ]
        .into_iter()
        .map(Subject::new)
        .collect();
        let mut index = MemberIndex::of(&groups);
        let by_index = groups.memberships_by(&index, &keys);
        assert_eq!(by_index, groups.memberships_of(&keys));
        assert_eq!(
            names(&by_index[&Subject::new("uid=bob,ou=p")]),
            ["db", "engineering", "sre"]
        );
        assert!(!by_index.contains_key(&Subject::new("uid=nobody,ou=p")));

        // Ann leaves sre for db, and a new group lists nobody: the index follows.
        let changed = [
            entry("cn=sre,ou=g", "sre", &["uid=bob,ou=p"]),
            entry("cn=db,ou=g", "db", &["uid=bob,ou=p", "uid=ann,ou=p"]),
            entry("cn=new,ou=g", "new", &["uid=nobody,ou=p"]),
        ];
        groups.apply(&changed, &[], "cn", &member);
        let named: BTreeSet<String> = ["cn=sre,ou=g", "cn=db,ou=g", "cn=new,ou=g"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        index.regroup(&groups, &named);
        let by_index = groups.memberships_by(&index, &keys);
        assert_eq!(by_index, groups.memberships_of(&keys));
        assert_eq!(names(&by_index[&Subject::new("uid=ann,ou=p")]), ["db"]);
        assert_eq!(names(&by_index[&Subject::new("uid=nobody,ou=p")]), ["new"]);
    }

    #[test]
    fn the_listing_is_read_back_as_written_whatever_its_keys_look_like() {
        let listing = listing(&[
            (
                "cn=odd,ou=g",
                "odd \"quoted\"",
                &["uid=ann,ou=p", "~uid=tilde", "=uid=equals", "cn=sre,ou=g"],
            ),
            ("cn=sre,ou=g", "sre", &["uid=ann,ou=p"]),
            ("cn=empty,ou=g", "empty", &[]),
        ]);
        let mut text = String::new();
        listing.write(&mut text);
        assert!(text.contains("\n~uid=ann\n"), "{text}");
        let read = GroupListing::read(&text).expect("read back");
        assert_eq!(read, listing);
        let memberships = read.memberships().expect("no cycle");
        assert_eq!(
            names(&memberships[&Subject::new("~uid=tilde")]),
            ["odd \"quoted\""]
        );
        assert_eq!(
            names(&memberships[&Subject::new("uid=ann,ou=p")]),
            ["odd \"quoted\"", "sre"]
        );
        // A member line in neither form, a group missing, text after the end.
        assert_eq!(
            GroupListing::read(&text.replace("\n~uid=ann\n", "\nuid=ann\n")),
            None
        );
        assert_eq!(
            GroupListing::read(&text.replace("3 groups", "4 groups")),
            None
        );
        assert_eq!(GroupListing::read(&format!("{text}x\n")), None);
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

        // A refresh of the groups reports the users changed meanwhile as deleted.
        let gone = [
            Subject::new("uuid-of-a-user"),
            Subject::new("uuid-cn=db,ou=g"),
        ];
        let deleted = groups.apply(&[], &gone, "cn", &member);
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
