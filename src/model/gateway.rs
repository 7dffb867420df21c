//! What the gateway holds for a user, and what idsync sends it: shared by the
//! planner, which compares them, and the gateway client, which moves them.

use serde::{Deserialize, Serialize};

use super::{Email, GroupName};

/// What idsync sends for a user: the fields it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub email: Email,
    pub name: Option<String>,
    pub groups: Vec<GroupName>,
    /// `None` when not mapped, or when the directory has no value.
    pub slack_id: Option<String>,
    pub picture: Option<String>,
}

/// A user as the gateway's `GET /users` answers it. `id` is the subject: the e-mail
/// until the user's first login, then the IdP's `sub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GatewayUser {
    pub id: String,
    pub email: String,
    pub name: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub groups: Vec<String>,
    pub slack_id: String,
    pub picture: String,
    pub status: String,
}

/// The gateway writes `null` for an empty group list.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}
