//! JumpCloud's JSON, as far as idsync reads it: `/api/systemusers` pages (v1) and
//! the v2 user-group listings.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::normalize::{self, ListedEmail};

/// A page of `GET /api/systemusers`: `{"totalCount": N, "results": [...]}`.
#[derive(Debug, Deserialize)]
pub struct UserPage {
    #[serde(rename = "totalCount")]
    pub total_count: usize,
    pub results: Vec<SystemUser>,
}

/// The fields of a system user idsync uses; the rest is ignored.
#[derive(Debug, Default, Deserialize)]
pub struct SystemUser {
    #[serde(rename = "_id")]
    pub id: Option<String>,
    pub email: Option<String>,
    pub username: Option<String>,
    pub displayname: Option<String>,
    pub firstname: Option<String>,
    pub lastname: Option<String>,
    pub activated: Option<bool>,
    #[serde(default)]
    pub suspended: bool,
    pub state: Option<String>,
}

/// A v2 user group: `GET /api/v2/usergroups` lists them as a JSON array.
#[derive(Debug, Deserialize)]
pub struct UserGroup {
    pub id: String,
    pub name: String,
}

/// One entry of `GET /api/v2/usergroups/{id}/membership`: a user who is a member,
/// directly or through nested groups (the `paths` say how; idsync needs only who).
#[derive(Debug, Deserialize)]
pub struct Member {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl SystemUser {
    pub fn subject(&self) -> Option<Subject> {
        normalize::clean(self.id.as_deref()).map(Subject::new)
    }

    /// Suspended users, users not activated yet and users in any state but
    /// ACTIVATED (STAGED, SUSPENDED) may not sign in.
    pub fn is_active(&self) -> bool {
        let state_allows = self
            .state
            .as_deref()
            .is_none_or(|state| state.eq_ignore_ascii_case("ACTIVATED"));
        !self.suspended && self.activated.unwrap_or(true) && state_allows
    }

    /// The user without groups, or why it cannot be keyed.
    pub fn into_user(self) -> Result<DirectoryUser, UnusableEntry> {
        let Some(subject) = self.subject() else {
            return Err(UnusableEntry {
                label: self.label(),
                reason: "the system user has no _id".into(),
            });
        };
        let listed = self.email.as_deref().map(|value| ListedEmail {
            value,
            primary: true,
            work: true,
        });
        let email = normalize::choose_email(listed.into_iter(), self.username.as_deref());
        let name = normalize::choose_name(
            self.displayname.as_deref(),
            None,
            self.firstname.as_deref(),
            self.lastname.as_deref(),
        );
        Ok(DirectoryUser {
            subject,
            active: self.is_active(),
            email,
            name,
            groups: Vec::new(),
            slack_id: None,
            picture: None,
        })
    }

    fn label(&self) -> String {
        [&self.email, &self.username]
            .into_iter()
            .find_map(|v| normalize::clean(v.as_deref()))
            .unwrap_or("a system user")
            .to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(value: serde_json::Value) -> SystemUser {
        serde_json::from_value(value).expect("a system user")
    }

    #[test]
    fn a_system_user_becomes_a_directory_user() {
        let ann = user(
            json!({"_id": "5f1", "email": "Ann@X.com", "username": "ann",
            "firstname": "Ann", "lastname": "Lee", "activated": true, "suspended": false,
            "state": "ACTIVATED", "unknown": {"nested": 1}}),
        )
        .into_user()
        .expect("usable");
        assert_eq!(ann.subject.as_str(), "5f1");
        assert_eq!(ann.email.expect("e-mail").as_str(), "ann@x.com");
        assert_eq!(ann.name.as_deref(), Some("Ann Lee"));
        assert!(ann.active);
        let shown = user(
            json!({"_id": "5f2", "email": "b@x.com", "displayname": "Bee",
            "firstname": "B", "lastname": "C"}),
        )
        .into_user()
        .expect("usable");
        assert_eq!(shown.name.as_deref(), Some("Bee"));
    }

    #[test]
    fn suspended_unactivated_and_staged_users_are_inactive() {
        for (value, active) in [
            (json!({"activated": true, "state": "ACTIVATED"}), true),
            (json!({}), true),
            (json!({"suspended": true, "activated": true}), false),
            (json!({"activated": false}), false),
            (json!({"activated": true, "state": "STAGED"}), false),
            (json!({"activated": true, "state": "SUSPENDED"}), false),
        ] {
            assert_eq!(user(value.clone()).is_active(), active, "{value}");
        }
    }

    #[test]
    fn a_user_without_id_is_unusable_and_named_by_its_email() {
        let err = user(json!({"email": "x@y.com"})).into_user().unwrap_err();
        assert_eq!(err.label, "x@y.com");
        assert!(err.reason.contains("no _id"));
    }

    #[test]
    fn pages_and_memberships_decode() {
        let page: UserPage =
            serde_json::from_value(json!({"totalCount": 3, "results": [{"_id": "1"}]})).unwrap();
        assert_eq!((page.total_count, page.results.len()), (3, 1));
        let members: Vec<Member> = serde_json::from_value(json!([
            {"id": "u1", "type": "user", "paths": [[{"from": {"id": "g"}, "to": {"id": "u1"}}]]}
        ]))
        .unwrap();
        assert_eq!(
            (members[0].id.as_str(), members[0].kind.as_str()),
            ("u1", "user")
        );
    }
}
