//! A deterministic organisation — users, and groups nested in a tree with their
//! direct members — that the vendor fakes (`fake_google`, `fake_keycloak`) serve
//! in their own formats, and the groups each user should end up with.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fake_gateway::uuid_like;

pub const DOMAIN: &str = "example.com";
const GIVEN: [&str; 8] = [
    "Jane", "Amara", "Lukas", "Sofia", "Yuki", "Priya", "Omar", "Élodie",
];
const FAMILY: [&str; 8] = [
    "Doe", "Okafor", "Schmidt", "Rossi", "Tanaka", "Sharma", "Haddad", "Müller",
];
const TEAMS: [&str; 8] = [
    "engineering",
    "platform",
    "sre",
    "security",
    "data",
    "support",
    "finance",
    "sales",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgUser {
    pub id: String,
    pub username: String,
    pub email: String,
    pub given: String,
    pub family: String,
    /// False: suspended (Google) or disabled (Keycloak).
    pub active: bool,
}

impl OrgUser {
    pub fn full_name(&self) -> String {
        format!("{} {}", self.given, self.family)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrgGroup {
    pub id: String,
    /// Unique in the organisation.
    pub name: String,
    /// The group this one is nested in (Keycloak: a subgroup; Google: a member
    /// of type GROUP of the parent).
    pub parent: Option<String>,
    /// Ids of its direct members.
    pub members: BTreeSet<String>,
}

impl OrgGroup {
    pub fn email(&self) -> String {
        format!("{}@{DOMAIN}", self.name)
    }
}

/// The e-mails [`Org::change`] touched.
pub struct Changes {
    pub joiner: String,
    pub leaver: String,
    pub disabled: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Org {
    pub users: Vec<OrgUser>,
    pub groups: Vec<OrgGroup>,
}

impl Org {
    /// `users` users in `groups` groups (a fifth of them at the top, the rest
    /// nested under an earlier one); each user a direct member of one or two,
    /// drawn with a skew so a few groups are large. Same seed, same organisation.
    pub fn generate(users: usize, groups: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let top = (groups / 5).max(1);
        let mut org = Org::default();
        for g in 0..groups {
            let parent = (g >= top).then(|| org.groups[rng.random_range(0..g)].id.clone());
            org.groups.push(OrgGroup {
                id: uuid_like(&mut rng),
                name: format!("{}-{g}", TEAMS[g % TEAMS.len()]),
                parent,
                members: BTreeSet::new(),
            });
        }
        for i in 0..users {
            let user = org.new_user(i, &mut rng);
            for _ in 0..(1 + i % 2).min(groups) {
                let u: f64 = rng.random();
                let g = ((groups as f64) * u * u) as usize;
                org.groups[g].members.insert(user.id.clone());
            }
            org.users.push(user);
        }
        org
    }

    fn new_user(&self, i: usize, rng: &mut StdRng) -> OrgUser {
        let given = GIVEN[i % GIVEN.len()];
        let family = FAMILY[(i / GIVEN.len()) % FAMILY.len()];
        let username = format!("{}.{}{i}", ascii(given), ascii(family));
        OrgUser {
            id: uuid_like(rng),
            email: format!("{username}@{DOMAIN}"),
            username,
            given: given.to_owned(),
            family: family.to_owned(),
            active: true,
        }
    }

    /// Adds a user named after `i` in `group`; returns its e-mail.
    pub fn join(&mut self, i: usize, group: &str) -> String {
        let user = self.new_user(i, &mut StdRng::seed_from_u64(i as u64 ^ 0x5eed));
        self.group_mut(group).members.insert(user.id.clone());
        let email = user.email.clone();
        self.users.push(user);
        email
    }

    /// Removes the user and its memberships.
    pub fn leave(&mut self, email: &str) {
        let id = self.user(email).id.clone();
        self.users.retain(|u| u.email != email);
        for group in &mut self.groups {
            group.members.remove(&id);
        }
    }

    pub fn set_active(&mut self, email: &str, active: bool) {
        let at = self
            .users
            .iter()
            .position(|u| u.email == email)
            .expect("user");
        self.users[at].active = active;
    }

    /// Moves the user's direct membership from group `from` to group `to`.
    pub fn move_user(&mut self, email: &str, from: &str, to: &str) {
        let id = self.user(email).id.clone();
        assert!(
            self.group_mut(from).members.remove(&id),
            "{email} in {from}"
        );
        self.group_mut(to).members.insert(id);
    }

    /// Nests group `name` under `parent` (or at the top).
    pub fn move_group(&mut self, name: &str, parent: Option<&str>) {
        let parent = parent.map(|p| self.group(p).id.clone());
        self.group_mut(name).parent = parent;
    }

    /// A day of changes: a joiner, a leaver, a suspended (disabled) user, a user
    /// moved to another group and a nested group moved to the top.
    pub fn change(&mut self) -> Changes {
        let (leaver, disabled, mover) = (
            self.users[5].email.clone(),
            self.users[6].email.clone(),
            self.users[7].clone(),
        );
        let from = (self.groups.iter())
            .find(|g| g.members.contains(&mover.id))
            .expect("the mover's group")
            .name
            .clone();
        let to = (self.groups.iter().find(|g| g.name != from))
            .expect("another group")
            .name
            .clone();
        let nested = (self.groups.iter().find(|g| g.parent.is_some()))
            .expect("a nested group")
            .name
            .clone();
        let joiner = self.join(9_001, &to);
        self.leave(&leaver);
        self.set_active(&disabled, false);
        self.move_user(&mover.email, &from, &to);
        self.move_group(&nested, None);
        Changes {
            joiner,
            leaver,
            disabled,
        }
    }

    pub fn user(&self, email: &str) -> &OrgUser {
        self.users.iter().find(|u| u.email == email).expect("user")
    }

    pub fn group(&self, name: &str) -> &OrgGroup {
        self.groups.iter().find(|g| g.name == name).expect("group")
    }

    fn group_mut(&mut self, name: &str) -> &mut OrgGroup {
        self.groups
            .iter_mut()
            .find(|g| g.name == name)
            .expect("group")
    }

    pub fn group_by_id(&self, id: &str) -> Option<&OrgGroup> {
        self.groups.iter().find(|g| g.id == id)
    }

    pub fn children<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a OrgGroup> + 'a {
        self.groups
            .iter()
            .filter(move |g| g.parent.as_deref() == Some(id))
    }

    /// `/top/…/name`, as Keycloak writes a group's path.
    pub fn path(&self, group: &OrgGroup) -> String {
        match group.parent.as_deref().and_then(|p| self.group_by_id(p)) {
            Some(parent) => format!("{}/{}", self.path(parent), group.name),
            None => format!("/{}", group.name),
        }
    }

    /// e-mail → the names (`name_of`) of the user's groups, sorted: its direct
    /// groups, and with `nested` every group above them.
    pub fn expected_groups(
        &self,
        nested: bool,
        name_of: impl Fn(&Org, &OrgGroup) -> String,
    ) -> BTreeMap<String, Vec<String>> {
        let mut direct: BTreeMap<&str, Vec<&OrgGroup>> = BTreeMap::new();
        for group in &self.groups {
            for member in &group.members {
                direct.entry(member.as_str()).or_default().push(group);
            }
        }
        self.users
            .iter()
            .map(|user| {
                let mut names = BTreeSet::new();
                for mut group in direct.get(user.id.as_str()).into_iter().flatten().copied() {
                    names.insert(name_of(self, group));
                    while let Some(parent) = group.parent.as_deref().filter(|_| nested) {
                        group = self.group_by_id(parent).expect("parent");
                        names.insert(name_of(self, group));
                    }
                }
                (user.email.clone(), names.into_iter().collect())
            })
            .collect()
    }
}

/// `Élodie` → `elodie`, for usernames.
fn ascii(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            'É' | 'é' => 'e',
            'ü' => 'u',
            other => other.to_ascii_lowercase(),
        })
        .collect()
}
