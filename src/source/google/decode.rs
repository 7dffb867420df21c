//! The Admin SDK's resources, decoded into the few fields idsync reads; a user
//! normalized the way every source does it; and Google's throttling answers.

use serde::Deserialize;

use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::normalize::{self, ListedEmail};

/// A `User` resource (`projection=basic`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GUser {
    pub(super) id: Option<String>,
    pub(super) primary_email: Option<String>,
    #[serde(default)]
    pub(super) name: GName,
    #[serde(default)]
    pub(super) suspended: bool,
    #[serde(default)]
    pub(super) archived: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GName {
    pub(super) full_name: Option<String>,
    pub(super) given_name: Option<String>,
    pub(super) family_name: Option<String>,
}

/// A `Group` resource.
#[derive(Debug, Deserialize)]
pub(super) struct GGroup {
    pub(super) id: String,
    pub(super) email: Option<String>,
    pub(super) name: Option<String>,
}

/// A `Member` resource: a user, a group nested in the group, or the whole
/// customer.
#[derive(Debug, Deserialize)]
pub(super) struct GMember {
    pub(super) id: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: Option<String>,
}

/// The user, normalized; its groups are added by the caller. Suspended and
/// archived users are inactive.
pub(super) fn user(user: GUser) -> Result<DirectoryUser, UnusableEntry> {
    let Some(id) = normalize::clean(user.id.as_deref()) else {
        return Err(UnusableEntry {
            label: user.primary_email.unwrap_or_else(|| "a user".into()),
            reason: "has no id".into(),
        });
    };
    let primary = user.primary_email.as_deref().map(|value| ListedEmail {
        value,
        primary: true,
        work: false,
    });
    let name = &user.name;
    Ok(DirectoryUser {
        subject: Subject::new(id),
        active: !(user.suspended || user.archived),
        email: normalize::choose_email(primary.into_iter(), None),
        name: normalize::choose_name(
            name.full_name.as_deref(),
            None,
            name.given_name.as_deref(),
            name.family_name.as_deref(),
        ),
        groups: Vec::new(),
        slack_id: None,
        picture: None,
    })
}

/// Google's error body, as far as throttling shows in it.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    errors: Vec<ErrorReason>,
}

#[derive(Deserialize)]
struct ErrorReason {
    reason: Option<String>,
}

/// Whether a 403's body says the request was throttled (`userRateLimitExceeded`,
/// `rateLimitExceeded`), which backing off cures, rather than refused.
pub(super) fn throttled(body: &[u8]) -> bool {
    serde_json::from_slice::<ErrorBody>(body).is_ok_and(|body| {
        body.error.errors.iter().any(|e| {
            matches!(
                e.reason.as_deref(),
                Some("userRateLimitExceeded" | "rateLimitExceeded")
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(json: &str) -> Result<DirectoryUser, UnusableEntry> {
        user(serde_json::from_str(json).expect("a User resource"))
    }

    #[test]
    fn a_user_gives_subject_primary_email_full_name_and_state() {
        let ada = decoded(
            r#"{"kind":"admin#directory#user","id":"1147","primaryEmail":"Ada@Example.com",
                "name":{"givenName":"Ada","familyName":"Lovelace","fullName":"Ada Lovelace"},
                "isAdmin":false,"suspended":false,"archived":false,
                "emails":[{"address":"ada@example.com","primary":true}]}"#,
        )
        .expect("usable");
        assert_eq!(ada.subject.as_str(), "1147");
        assert_eq!(ada.email.expect("email").as_str(), "ada@example.com");
        assert_eq!(ada.name.as_deref(), Some("Ada Lovelace"));
        assert!(ada.active);
    }

    #[test]
    fn suspended_and_archived_users_are_inactive() {
        for flag in ["suspended", "archived"] {
            let user = decoded(&format!(
                r#"{{"id":"1","primaryEmail":"a@example.com","name":{{"givenName":"A"}},"{flag}":true}}"#
            ))
            .expect("usable");
            assert!(!user.active, "{flag}");
            assert_eq!(user.name.as_deref(), Some("A"));
        }
    }

    #[test]
    fn a_user_without_id_is_unusable() {
        let err = decoded(r#"{"primaryEmail":"b@example.com"}"#).expect_err("no id");
        assert_eq!(err.label, "b@example.com");
    }

    #[test]
    fn only_rate_limit_reasons_are_throttling() {
        let body = |reason: &str| {
            format!(
                r#"{{"error":{{"code":403,"message":"m","errors":[{{"message":"m","domain":"usageLimits","reason":"{reason}"}}]}}}}"#
            )
        };
        assert!(throttled(body("userRateLimitExceeded").as_bytes()));
        assert!(throttled(body("rateLimitExceeded").as_bytes()));
        assert!(!throttled(body("forbidden").as_bytes()));
        assert!(!throttled(b"<html>403</html>"));
    }
}
