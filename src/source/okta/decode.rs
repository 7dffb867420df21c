//! Okta's user and group objects (Management API `/api/v1/users`, `/groups`),
//! parsed into the few fields idsync uses.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::group_table::Memberships;
use crate::source::normalize::{self, ListedEmail};

/// A user as `/api/v1/users` and `/api/v1/groups/{id}/users` list it.
#[derive(Debug, Clone, Deserialize)]
pub struct OktaUser {
    pub id: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub profile: Profile,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    pub email: Option<String>,
    pub login: Option<String>,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
}

/// A group as `/api/v1/groups` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OktaGroup {
    pub id: String,
    #[serde(default)]
    pub last_updated: Option<String>,
    #[serde(default)]
    pub last_membership_updated: Option<String>,
    #[serde(default)]
    pub profile: GroupProfile,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GroupProfile {
    pub name: Option<String>,
}

impl OktaGroup {
    /// What moves when the group is renamed or its members change.
    pub fn version(&self) -> String {
        format!(
            "{}|{}",
            self.last_updated.as_deref().unwrap_or(""),
            self.last_membership_updated.as_deref().unwrap_or("")
        )
    }
}

/// Okta's lifecycle: suspended and deactivated users may not sign in; staged,
/// provisioned, locked-out and password-expired ones are still people who work here.
pub fn is_active(status: Option<&str>) -> bool {
    !matches!(status, Some("SUSPENDED" | "DEPROVISIONED"))
}

impl OktaUser {
    /// The directory user, with its groups from `memberships`; an entry without
    /// an id cannot be keyed and is reported.
    pub fn into_directory_user(
        self,
        memberships: &mut Memberships,
    ) -> Result<DirectoryUser, UnusableEntry> {
        let profile = self.profile;
        let Some(id) = self.id.filter(|id| !id.trim().is_empty()) else {
            let label = profile
                .login
                .or(profile.email)
                .unwrap_or_else(|| "a user".into());
            return Err(UnusableEntry {
                label,
                reason: "has no id".into(),
            });
        };
        let subject = Subject::new(id);
        let listed = profile.email.iter().map(|value| ListedEmail {
            value,
            primary: true,
            work: false,
        });
        Ok(DirectoryUser {
            active: is_active(self.status.as_deref()),
            email: normalize::choose_email(listed, profile.login.as_deref()),
            name: normalize::choose_name(
                profile.display_name.as_deref(),
                None,
                profile.first_name.as_deref(),
                profile.last_name.as_deref(),
            ),
            // Each user is listed once: its groups are handed over, not copied.
            groups: memberships.remove(&subject).unwrap_or_default(),
            slack_id: None,
            picture: None,
            subject,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupName;

    fn user(json: &str) -> OktaUser {
        serde_json::from_str(json).expect("user json")
    }

    #[test]
    fn a_user_is_keyed_by_id_with_profile_email_and_display_name() {
        let mut memberships: Memberships =
            [(Subject::new("00u1"), vec![GroupName::new("eng")])].into();
        let ann = user(
            r#"{"id":"00u1","status":"ACTIVE","profile":{"email":"Ann@Example.com","login":"ann","displayName":"Ann L","firstName":"Ann","lastName":"Lee","mobilePhone":null}}"#,
        )
        .into_directory_user(&mut memberships)
        .unwrap();
        assert_eq!(ann.subject.as_str(), "00u1");
        assert_eq!(ann.email.as_ref().unwrap().as_str(), "ann@example.com");
        assert_eq!(ann.name.as_deref(), Some("Ann L"));
        assert_eq!(ann.groups, [GroupName::new("eng")]);
        assert!(ann.active);
    }

    #[test]
    fn the_name_falls_back_to_first_and_last_and_the_email_to_the_login() {
        let bob = user(
            r#"{"id":"00u2","status":"PROVISIONED","profile":{"email":null,"login":"bob@example.com","displayName":null,"firstName":"Bob","lastName":"Stone"}}"#,
        )
        .into_directory_user(&mut Memberships::new())
        .unwrap();
        assert_eq!(bob.email.unwrap().as_str(), "bob@example.com");
        assert_eq!(bob.name.as_deref(), Some("Bob Stone"));
        assert!(bob.active && bob.groups.is_empty());
    }

    #[test]
    fn suspended_and_deprovisioned_users_are_inactive() {
        for (status, active) in [
            ("ACTIVE", true),
            ("STAGED", true),
            ("LOCKED_OUT", true),
            ("PASSWORD_EXPIRED", true),
            ("RECOVERY", true),
            ("SUSPENDED", false),
            ("DEPROVISIONED", false),
        ] {
            assert_eq!(is_active(Some(status)), active, "{status}");
        }
    }

    #[test]
    fn a_user_without_an_id_is_reported_by_login() {
        let err = user(r#"{"profile":{"login":"ghost@example.com"}}"#)
            .into_directory_user(&mut Memberships::new())
            .unwrap_err();
        assert_eq!(err.label, "ghost@example.com");
    }

    #[test]
    fn a_group_version_moves_with_its_name_or_members() {
        let group: OktaGroup = serde_json::from_str(
            r#"{"id":"00g1","type":"OKTA_GROUP","lastUpdated":"2026-01-01T00:00:00.000Z","lastMembershipUpdated":"2026-02-01T00:00:00.000Z","profile":{"name":"eng","description":null}}"#,
        )
        .unwrap();
        assert_eq!(
            group.version(),
            "2026-01-01T00:00:00.000Z|2026-02-01T00:00:00.000Z"
        );
        assert_eq!(group.profile.name.as_deref(), Some("eng"));
    }
}
