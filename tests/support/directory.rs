//! Deterministic SCIM 2.0 directories for the fakes, the expectations of tests, and
//! seeding a real scim2-server.
//!
//! The shape copies what real servers return (scim2-server in particular): memberships
//! live only in `Group.members`, never in `User.groups`, and e-mails may be mixed-case.
//! Expectations are computed from the JSON itself, not from generation metadata, so they
//! stay right after a test edits the directory between runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::fake_gateway::uuid_like;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const BULK_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:BulkRequest";

const DOMAIN: &str = "example.com";
const GIVEN: [&str; 16] = [
    "Jane", "John", "Amara", "Lukas", "Sofia", "Mateo", "Yuki", "Chen", "Priya", "Omar", "Ines",
    "Noah", "Freya", "Kwame", "Elif", "Diego",
];
const FAMILY: [&str; 16] = [
    "Doe",
    "Smith",
    "Okafor",
    "Schmidt",
    "Rossi",
    "Garcia",
    "Tanaka",
    "Wei",
    "Sharma",
    "Haddad",
    "Silva",
    "Murphy",
    "Larsen",
    "Mensah",
    "Yilmaz",
    "Fernandez",
];
const TITLES: [&str; 6] = [
    "Senior Software Engineer",
    "Site Reliability Engineer",
    "Database Administrator",
    "Engineering Manager",
    "Security Analyst",
    "Support Specialist",
];
const GROUP_NAMES: [&str; 16] = [
    "team-payments",
    "sre",
    "dba",
    "platform",
    "security",
    "data-eng",
    "support",
    "frontend",
    "backend",
    "mobile",
    "qa",
    "finance-ops",
    "hr-systems",
    "it-helpdesk",
    "growth",
    "infra",
];
/// 2024-01-01T00:00:00Z: fixed so `meta` timestamps are reproducible.
const EPOCH_SECS: i64 = 1_704_067_200;

/// What to generate. Every n-th rule counts users from 1 (`Some(3)` hits users 3, 6, …).
#[derive(Clone, Debug)]
pub struct GenSpec {
    pub users: usize,
    pub groups: usize,
    /// Capped at `groups`.
    pub groups_per_user: usize,
    /// Every n-th user has `active: false`.
    pub inactive_every: Option<usize>,
    /// Every n-th user has no `emails` and a login (not an address) as `userName`.
    pub no_email_every: Option<usize>,
    /// Pairs of active users with e-mail that share one address (in different case
    /// when `mixed_case`); idsync must create neither. Pairs are spread far apart so
    /// they land on different SCIM pages.
    pub duplicate_email_pairs: usize,
    /// E-mails like `Jane.Doe42@Example.COM` instead of lower case.
    pub mixed_case: bool,
    pub seed: u64,
}

impl Default for GenSpec {
    fn default() -> Self {
        Self {
            users: 10,
            groups: 3,
            groups_per_user: 1,
            inactive_every: None,
            no_email_every: None,
            duplicate_email_pairs: 0,
            mixed_case: false,
            seed: 1,
        }
    }
}

/// A SCIM directory as JSON resources, in the order a server pages them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Directory {
    pub users: Vec<Value>,
    pub groups: Vec<Value>,
}

impl Directory {
    /// The same spec always yields the same directory (ids included).
    pub fn generate(spec: GenSpec) -> Self {
        let mut rng = StdRng::seed_from_u64(spec.seed);
        let every = |rule: Option<usize>, i: usize| rule.is_some_and(|n| n > 0 && (i + 1) % n == 0);

        let mut users: Vec<Value> = (0..spec.users)
            .map(|i| {
                let email = (!every(spec.no_email_every, i))
                    .then(|| email_for(i, spec.mixed_case, &mut rng));
                user_json(i, email, !every(spec.inactive_every, i), &mut rng)
            })
            .collect();
        pair_up_emails(&mut users, spec.duplicate_email_pairs, spec.mixed_case);

        let per_user = spec.groups_per_user.min(spec.groups);
        let mut members: Vec<Vec<Value>> = vec![Vec::new(); spec.groups];
        for user in &users {
            for g in sample(&mut rng, spec.groups, per_user) {
                members[g].push(json!({ "value": user["id"], "display": user["displayName"] }));
            }
        }
        let groups = members
            .into_iter()
            .enumerate()
            .map(|(g, members)| {
                let name = match GROUP_NAMES.get(g) {
                    Some(name) => (*name).to_owned(),
                    None => format!("team-{g:03}"),
                };
                json!({
                    "schemas": [GROUP_SCHEMA],
                    "id": uuid_like(&mut rng),
                    "displayName": name,
                    "members": members,
                    "meta": meta("Group", g),
                })
            })
            .collect();
        Self { users, groups }
    }

    /// The user's primary e-mail as the directory holds it (first one if none is
    /// marked primary).
    pub fn email_of(user: &Value) -> Option<&str> {
        let emails = user.get("emails")?.as_array()?;
        emails
            .iter()
            .find(|e| e["primary"] == true)
            .or_else(|| emails.first())?
            .get("value")?
            .as_str()
    }

    /// User id → the sorted names of the groups that list it as a member.
    fn group_names_by_member(&self) -> HashMap<&str, BTreeSet<&str>> {
        let mut names: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        for group in &self.groups {
            let Some(name) = group["displayName"].as_str() else {
                continue;
            };
            let members = group["members"].as_array().into_iter().flatten();
            for member in members.filter_map(|m| m["value"].as_str()) {
                names.entry(member).or_default().insert(name);
            }
        }
        names
    }

    /// Lower-cased e-mail → sorted group names, for the users idsync should create:
    /// not `active: false`, with a primary e-mail, and no other user in the directory
    /// (whatever its state) with the same e-mail ignoring case and surrounding space.
    pub fn expected_created(&self) -> BTreeMap<String, Vec<String>> {
        let normal = |u: &Value| Self::email_of(u).map(|e| e.trim().to_lowercase());
        let mut seen: HashMap<String, usize> = HashMap::new();
        for email in self.users.iter().filter_map(normal) {
            *seen.entry(email).or_default() += 1;
        }
        let groups = self.group_names_by_member();
        self.users
            .iter()
            .filter(|u| u["active"] != false)
            .filter_map(|u| {
                let email = normal(u)?;
                let id = u["id"].as_str()?;
                let names = groups.get(id).into_iter().flatten();
                (seen[&email] == 1).then(|| (email, names.map(|&n| n.to_owned()).collect()))
            })
            .collect()
    }

    /// SCIM `/Bulk` bodies that POST every user, at most `max_ops` operations each.
    /// `bulkId` is the generated id; the server assigns its own (map them back with
    /// [`id_map_from_bulk_response`]).
    pub fn users_bulk_chunks(&self, max_ops: usize) -> Vec<Value> {
        let ops: Vec<Value> = self.users.iter().map(|u| bulk_post("/Users", u)).collect();
        bulk_chunks(ops, max_ops)
    }

    /// The groups with member ids replaced through `id_map` (generated id → the id a
    /// real server assigned). Panics on an unmapped member: the seeding went wrong.
    pub fn groups_with_member_ids(&self, id_map: &HashMap<String, String>) -> Vec<Value> {
        self.groups
            .iter()
            .map(|g| {
                let mut g = g.clone();
                for m in g["members"].as_array_mut().into_iter().flatten() {
                    let old = m["value"].as_str().unwrap_or_default();
                    let new = id_map
                        .get(old)
                        .unwrap_or_else(|| panic!("no server id for member {old}"));
                    m["value"] = json!(new);
                }
                g
            })
            .collect()
    }

    /// SCIM `/Bulk` bodies that POST every group, members rewritten through `id_map`.
    pub fn groups_bulk_chunks(
        &self,
        max_ops: usize,
        id_map: &HashMap<String, String>,
    ) -> Vec<Value> {
        let ops: Vec<Value> = self
            .groups_with_member_ids(id_map)
            .iter()
            .map(|g| bulk_post("/Groups", g))
            .collect();
        bulk_chunks(ops, max_ops)
    }

    /// Writes `{"users": [...], "groups": [...]}` for the end-to-end seeding script.
    pub fn write_json(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(&json!({
            "users": self.users,
            "groups": self.groups,
        }))?;
        std::fs::write(path, text)
    }
}

/// `bulkId` → server id from a SCIM `BulkResponse` (last segment of each `location`).
pub fn id_map_from_bulk_response(response: &Value) -> HashMap<String, String> {
    response["Operations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|op| {
            let bulk_id = op["bulkId"].as_str()?;
            let location = op["location"].as_str()?;
            let id = location.trim_end_matches('/').rsplit('/').next()?;
            Some((bulk_id.to_owned(), id.to_owned()))
        })
        .collect()
}

fn email_for(i: usize, mixed_case: bool, rng: &mut StdRng) -> String {
    let (given, family) = person(i);
    let local = format!("{given}.{family}{i}");
    if !mixed_case {
        return format!("{local}@{DOMAIN}").to_lowercase();
    }
    match rng.random_range(0..4) {
        0 => format!("{local}@Example.COM"),
        1 => format!("{}@{DOMAIN}", local.to_uppercase()),
        2 => format!("{}@EXAMPLE.com", local.to_lowercase()),
        _ => format!("{local}@{DOMAIN}"),
    }
}

fn person(i: usize) -> (&'static str, &'static str) {
    (
        GIVEN[i % GIVEN.len()],
        FAMILY[(i / GIVEN.len()) % FAMILY.len()],
    )
}

fn user_json(i: usize, email: Option<String>, active: bool, rng: &mut StdRng) -> Value {
    let (given, family) = person(i);
    let display = format!("{given} {family}");
    let id = uuid_like(rng);
    let emails = match &email {
        Some(e) => json!([{ "value": e, "type": "work", "primary": true }]),
        None => json!([]),
    };
    json!({
        "schemas": [USER_SCHEMA],
        "id": id,
        "externalId": format!("emp-{i:06}"),
        // A directory login for users without an address: must not be mistaken for one.
        "userName": email.clone().unwrap_or_else(|| format!("svc-login-{i:06}")),
        "displayName": display,
        "name": { "givenName": given, "familyName": family, "formatted": display },
        "title": TITLES[i % TITLES.len()],
        "emails": emails,
        "phoneNumbers": [{ "value": format!("+1-555-{:04}", i % 10_000), "type": "work" }],
        "photos": [{
            "value": format!("https://avatars.{DOMAIN}/u/{id}.png?size=256&v={}", rng.random_range(1..100)),
            "type": "photo",
        }],
        "locale": "en-US",
        "timezone": "Europe/Berlin",
        "active": active,
        "meta": meta("User", i),
    })
}

/// Gives the second user of each pair the first one's address; the second keeps its
/// own `userName`, as real servers require unique user names.
fn pair_up_emails(users: &mut [Value], pairs: usize, mixed_case: bool) {
    let eligible: Vec<usize> = users
        .iter()
        .enumerate()
        .filter(|(_, u)| u["active"] == true && Directory::email_of(u).is_some())
        .map(|(i, _)| i)
        .collect();
    assert!(
        2 * pairs <= eligible.len(),
        "{pairs} duplicate pairs need {} active users with e-mail, have {}",
        2 * pairs,
        eligible.len()
    );
    for j in 0..pairs {
        let (a, b) = (eligible[j], eligible[eligible.len() - 1 - j]);
        let shared = Directory::email_of(&users[a])
            .unwrap_or_default()
            .to_owned();
        let copy = if mixed_case {
            swap_case(&shared)
        } else {
            shared
        };
        users[b]["emails"][0]["value"] = json!(copy);
    }
}

fn swap_case(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect()
}

fn meta(resource_type: &str, i: usize) -> Value {
    let at = |offset: i64| {
        chrono::DateTime::from_timestamp(EPOCH_SECS + offset, 0)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
    };
    let i = i as i64;
    json!({
        "resourceType": resource_type,
        "created": at(i * 60),
        "lastModified": at(i * 60 + 3_600),
    })
}

/// A bulk POST of `resource` without the server-assigned `id` and `meta`.
fn bulk_post(path: &str, resource: &Value) -> Value {
    let mut data = resource.clone();
    if let Some(obj) = data.as_object_mut() {
        obj.remove("id");
        obj.remove("meta");
    }
    json!({
        "method": "POST",
        "path": path,
        "bulkId": resource["id"],
        "data": data,
    })
}

fn bulk_chunks(ops: Vec<Value>, max_ops: usize) -> Vec<Value> {
    assert!(max_ops > 0, "max_ops must be at least 1");
    ops.chunks(max_ops)
        .map(|chunk| json!({ "schemas": [BULK_REQUEST_SCHEMA], "Operations": chunk }))
        .collect()
}
