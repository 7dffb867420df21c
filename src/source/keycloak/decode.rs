//! Keycloak's representations, decoded into the few fields idsync reads, and a
//! user normalized the way every source does it.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::normalize::{self, ListedEmail};

/// A `UserRepresentation` (the full one: `briefRepresentation=false`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KcUser {
    pub(super) id: Option<String>,
    pub(super) username: Option<String>,
    pub(super) email: Option<String>,
    pub(super) first_name: Option<String>,
    pub(super) last_name: Option<String>,
    /// Keycloak always sends it; a user without it is taken as enabled, as the
    /// admin console shows it.
    pub(super) enabled: Option<bool>,
}

/// A member in a group's member listing: only its id matters.
#[derive(Debug, Deserialize)]
pub(super) struct KcMember {
    pub(super) id: String,
}

/// A `GroupRepresentation`. Before Keycloak 23 `/groups` nests the whole tree in
/// `subGroups`; from 23 on it sends `subGroupCount` and the children are paged
/// at `/groups/{id}/children`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct KcGroup {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) path: Option<String>,
    #[serde(default)]
    pub(super) sub_groups: Vec<KcGroup>,
    pub(super) sub_group_count: Option<u64>,
}

impl KcGroup {
    /// Whether the children must be asked for: the server counted more than it
    /// sent.
    pub(super) fn children_paged(&self) -> bool {
        self.sub_group_count
            .is_some_and(|count| count > self.sub_groups.len() as u64)
    }
}

/// The user, normalized; its groups are added by the caller.
pub(super) fn user(user: KcUser) -> Result<DirectoryUser, UnusableEntry> {
    let Some(id) = normalize::clean(user.id.as_deref()) else {
        return Err(UnusableEntry {
            label: user.username.unwrap_or_else(|| "a user".into()),
            reason: "has no id".into(),
        });
    };
    let listed = user.email.as_deref().map(|value| ListedEmail {
        value,
        primary: true,
        work: false,
    });
    Ok(DirectoryUser {
        subject: Subject::new(id),
        active: user.enabled.unwrap_or(true),
        email: normalize::choose_email(listed.into_iter(), user.username.as_deref()),
        name: normalize::choose_name(
            None,
            None,
            user.first_name.as_deref(),
            user.last_name.as_deref(),
        ),
        groups: Vec::new(),
        slack_id: None,
        picture: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(json: &str) -> Result<DirectoryUser, UnusableEntry> {
        user(serde_json::from_str(json).expect("a UserRepresentation"))
    }

    #[test]
    fn a_full_representation_gives_subject_email_name_and_state() {
        let ann = decoded(
            r#"{"id":"4f1c","username":"ann","email":"Ann@Example.com","firstName":"Ann",
                "lastName":"Lee","enabled":true,"emailVerified":true,"attributes":{"x":["y"]},
                "createdTimestamp":1700000000000,"totp":false}"#,
        )
        .expect("usable");
        assert_eq!(ann.subject.as_str(), "4f1c");
        assert_eq!(ann.email.expect("email").as_str(), "ann@example.com");
        assert_eq!(ann.name.as_deref(), Some("Ann Lee"));
        assert!(ann.active);
    }

    #[test]
    fn a_disabled_user_is_inactive_and_a_login_address_stands_in_for_email() {
        let bob =
            decoded(r#"{"id":"b","username":"bob@example.com","enabled":false}"#).expect("usable");
        assert!(!bob.active);
        assert_eq!(bob.email.expect("email").as_str(), "bob@example.com");
        assert_eq!(bob.name, None);
        let cy = decoded(r#"{"id":"c","username":"cy","enabled":true}"#).expect("usable");
        assert!(
            cy.email.is_err(),
            "no address at all is reported by the planner"
        );
    }

    #[test]
    fn a_user_without_id_is_unusable_and_named_by_its_username() {
        let err = decoded(r#"{"username":"dee","enabled":true}"#).expect_err("no id");
        assert_eq!(
            (err.label.as_str(), err.reason.as_str()),
            ("dee", "has no id")
        );
    }

    #[test]
    fn groups_say_when_their_children_are_paged() {
        let old: KcGroup = serde_json::from_str(
            r#"{"id":"1","name":"eng","path":"/eng","subGroups":[{"id":"2","name":"sre","path":"/eng/sre","subGroups":[]}]}"#,
        )
        .expect("group");
        assert!(!old.children_paged());
        assert_eq!(old.sub_groups[0].path.as_deref(), Some("/eng/sre"));
        let new: KcGroup = serde_json::from_str(
            r#"{"id":"1","name":"eng","path":"/eng","subGroupCount":3,"subGroups":[]}"#,
        )
        .expect("group");
        assert!(new.children_paged());
    }
}
