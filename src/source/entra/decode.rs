//! Microsoft Graph's user, group and directory-object JSON, parsed into the few
//! fields idsync uses.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::group_table::Memberships;
use crate::source::normalize::{self, ListedEmail};

/// The user properties asked for with `$select`.
pub const USER_FIELDS: &str = "id,displayName,mail,userPrincipalName,accountEnabled";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphUser {
    pub id: Option<String>,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub user_principal_name: Option<String>,
    pub account_enabled: Option<bool>,
}

/// An entry of a delta listing: an object that changed, or one that is gone.
#[derive(Debug, Clone, Deserialize)]
pub struct DeltaEntry {
    pub id: String,
    #[serde(rename = "@removed")]
    pub removed: Option<serde_json::Value>,
}

/// A group as `/groups` and `/groups/delta` list it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GraphGroup {
    pub id: String,
    pub display_name: Option<String>,
    #[serde(rename = "@removed")]
    pub removed: Option<serde_json::Value>,
    /// Members added (or, with `@removed`, taken out) since the delta link.
    #[serde(rename = "members@delta", default)]
    pub members_delta: Vec<Member>,
}

/// An entry of a group's `members`: a user, a nested group, or something else
/// (a device, a service principal, a contact), which idsync leaves alone.
#[derive(Debug, Clone, Deserialize)]
pub struct Member {
    pub id: String,
    #[serde(rename = "@odata.type", default)]
    pub kind: String,
    #[serde(rename = "@removed")]
    pub removed: Option<serde_json::Value>,
}

impl Member {
    pub fn is_user(&self) -> bool {
        self.kind == "#microsoft.graph.user"
    }

    pub fn is_group(&self) -> bool {
        self.kind == "#microsoft.graph.group"
    }
}

impl GraphUser {
    /// The directory user, with its groups from `memberships`.
    pub fn into_directory_user(
        self,
        memberships: &mut Memberships,
    ) -> Result<DirectoryUser, UnusableEntry> {
        let Some(id) = self.id.filter(|id| !id.trim().is_empty()) else {
            return Err(UnusableEntry {
                label: self.user_principal_name.unwrap_or_else(|| "a user".into()),
                reason: "has no id".into(),
            });
        };
        let subject = Subject::new(id);
        let listed = self.mail.iter().map(|value| ListedEmail {
            value,
            primary: true,
            work: false,
        });
        Ok(DirectoryUser {
            active: self.account_enabled != Some(false),
            email: normalize::choose_email(listed, login(self.user_principal_name.as_deref())),
            name: normalize::choose_name(self.display_name.as_deref(), None, None, None),
            // Each user is listed once: its groups are handed over, not copied.
            groups: memberships.remove(&subject).unwrap_or_default(),
            slack_id: None,
            picture: None,
            subject,
        })
    }
}

/// A guest's principal name (`ann_example.com#EXT#@tenant.onmicrosoft.com`) is
/// no address of theirs; any other may stand in for a missing `mail`.
fn login(user_principal_name: Option<&str>) -> Option<&str> {
    user_principal_name.filter(|upn| !upn.to_ascii_uppercase().contains("#EXT#"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::GroupName;

    fn user(json: &str) -> DirectoryUser {
        let mut memberships: Memberships =
            [(Subject::new("u1"), vec![GroupName::new("eng")])].into();
        serde_json::from_str::<GraphUser>(json)
            .unwrap()
            .into_directory_user(&mut memberships)
            .unwrap()
    }

    #[test]
    fn mail_is_the_address_and_the_object_id_the_subject() {
        let ann = user(
            r#"{"id":"u1","displayName":"Ann Lee","mail":"Ann@Contoso.com","userPrincipalName":"ann@contoso.onmicrosoft.com","accountEnabled":true}"#,
        );
        assert_eq!(ann.subject.as_str(), "u1");
        assert_eq!(ann.email.unwrap().as_str(), "ann@contoso.com");
        assert_eq!(ann.name.as_deref(), Some("Ann Lee"));
        assert_eq!(ann.groups, [GroupName::new("eng")]);
        assert!(ann.active);
    }

    #[test]
    fn without_mail_the_principal_name_serves_unless_it_is_a_guests() {
        let bob = user(
            r#"{"id":"u2","mail":null,"userPrincipalName":"bob@contoso.com","accountEnabled":false}"#,
        );
        assert_eq!(bob.email.unwrap().as_str(), "bob@contoso.com");
        assert!(!bob.active);
        let guest = user(
            r#"{"id":"u3","mail":null,"userPrincipalName":"cy_example.com#EXT#@contoso.onmicrosoft.com"}"#,
        );
        assert!(guest.email.is_err());
    }

    #[test]
    fn members_are_told_apart_by_their_type() {
        let group: GraphGroup = serde_json::from_str(
            r##"{"id":"g1","displayName":"eng","members@delta":[{"@odata.type":"#microsoft.graph.user","id":"u1"},{"@odata.type":"#microsoft.graph.group","id":"g2","@removed":{"reason":"deleted"}},{"@odata.type":"#microsoft.graph.device","id":"d1"}]}"##,
        )
        .unwrap();
        let kinds: Vec<(bool, bool, bool)> = group
            .members_delta
            .iter()
            .map(|m| (m.is_user(), m.is_group(), m.removed.is_some()))
            .collect();
        assert_eq!(
            kinds,
            [
                (true, false, false),
                (false, true, true),
                (false, false, false)
            ]
        );
    }
}
