//! Auth0's JSON, as far as idsync reads it: users (from `/api/v2/users` pages and
//! from export files, which hold the same fields), and the role and organization
//! listings with their members.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::normalize::{self, ListedEmail};

/// The user fields idsync reads: asked for by name in `fields` and in the export job.
pub const USER_FIELDS: [&str; 6] = [
    "user_id",
    "email",
    "name",
    "given_name",
    "family_name",
    "blocked",
];

/// A page of `GET /api/v2/users?include_totals=true`.
#[derive(Debug, Deserialize)]
pub struct UserPage {
    pub total: usize,
    pub users: Vec<Auth0User>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Auth0User {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    #[serde(default)]
    pub blocked: bool,
}

/// `GET /api/v2/roles?include_totals=true` (offset paging).
#[derive(Debug, Deserialize)]
pub struct RolePage {
    pub total: usize,
    pub roles: Vec<Named>,
}

/// A role or an organization: its id, for its members, and its name.
#[derive(Debug, Deserialize)]
pub struct Named {
    pub id: String,
    pub name: String,
}

/// A page of a checkpoint-paged listing: `next` is there while more follow.
#[derive(Debug, Deserialize)]
pub struct CheckpointPage<T> {
    #[serde(alias = "users", alias = "members", alias = "organizations")]
    pub items: Vec<T>,
    pub next: Option<String>,
}

/// A member of a role or an organization.
#[derive(Debug, Deserialize)]
pub struct MemberRef {
    pub user_id: String,
}

impl Auth0User {
    /// The user without groups, or why it cannot be keyed. `blocked` users may
    /// not sign in.
    pub fn into_user(self) -> Result<DirectoryUser, UnusableEntry> {
        let Some(subject) = normalize::clean(self.user_id.as_deref()).map(Subject::new) else {
            return Err(UnusableEntry {
                label: normalize::clean(self.email.as_deref())
                    .unwrap_or("an Auth0 user")
                    .to_owned(),
                reason: "the user has no user_id".into(),
            });
        };
        let listed = self.email.as_deref().map(|value| ListedEmail {
            value,
            primary: true,
            work: true,
        });
        let email = normalize::choose_email(listed.into_iter(), None);
        let name = normalize::choose_name(
            self.name.as_deref(),
            None,
            self.given_name.as_deref(),
            self.family_name.as_deref(),
        );
        Ok(DirectoryUser {
            subject,
            active: !self.blocked,
            email,
            name,
            groups: Vec::new(),
            slack_id: None,
            picture: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(value: serde_json::Value) -> Result<DirectoryUser, UnusableEntry> {
        serde_json::from_value::<Auth0User>(value)
            .expect("an Auth0 user")
            .into_user()
    }

    #[test]
    fn an_auth0_user_becomes_a_directory_user() {
        let ann = user(
            json!({"user_id": "auth0|1", "email": "Ann@X.com", "name": "Ann Lee",
            "identities": [{"provider": "auth0"}]}),
        )
        .expect("usable");
        assert_eq!(ann.subject.as_str(), "auth0|1");
        assert_eq!(ann.email.expect("e-mail").as_str(), "ann@x.com");
        assert_eq!(ann.name.as_deref(), Some("Ann Lee"));
        assert!(ann.active);
        let parts = user(json!({"user_id": "a|2", "email": "b@x.com", "name": " ",
            "given_name": "Bo", "family_name": "Li", "blocked": true}))
        .expect("usable");
        assert_eq!(parts.name.as_deref(), Some("Bo Li"));
        assert!(!parts.active, "blocked");
    }

    #[test]
    fn a_user_without_user_id_is_unusable() {
        let err = user(json!({"email": "x@y.com"})).unwrap_err();
        assert_eq!(
            (err.label.as_str(), err.reason.as_str()),
            ("x@y.com", "the user has no user_id")
        );
    }

    #[test]
    fn checkpoint_pages_of_each_listing_decode() {
        let users: CheckpointPage<MemberRef> =
            serde_json::from_value(json!({"users": [{"user_id": "a"}], "next": "cp"})).unwrap();
        assert_eq!((users.items.len(), users.next.as_deref()), (1, Some("cp")));
        let members: CheckpointPage<MemberRef> =
            serde_json::from_value(json!({"members": [{"user_id": "a"}]})).unwrap();
        assert_eq!(members.next, None);
        let orgs: CheckpointPage<Named> = serde_json::from_value(
            json!({"organizations": [{"id": "org_1", "name": "acme", "display_name": "Acme"}]}),
        )
        .unwrap();
        assert_eq!(orgs.items[0].name, "acme");
    }
}
