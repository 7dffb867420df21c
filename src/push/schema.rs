//! The schemas idsync serves (RFC 7643 §8.7.1: core User, Group and the enterprise
//! User extension, as `schemas.json` holds them) and what the endpoint needs to
//! know of them: attribute names (case-insensitive), multi-valuedness, mutability.
//! `schemas.json` is the RFC's schema representation as the PyPI package
//! scim2-server 0.8.3 ships it (`resources/default-schemas.json`, Apache-2.0).

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use super::store::Kind;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
pub const ENTERPRISE_USER: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// The schema Entra ID lists in every group it creates, though it defines no
/// attribute: accepted and not kept.
pub const ENTRA_GROUP: &str =
    "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group";

const SCHEMAS_JSON: &str = include_str!("schemas.json");

/// One attribute of a schema.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attribute {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub mutability: Option<String>,
    #[serde(default)]
    pub sub_attributes: Vec<Attribute>,
}

impl Attribute {
    pub fn is_read_only(&self) -> bool {
        self.mutability.as_deref() == Some("readOnly")
    }

    /// The sub-attribute called `name`, whatever its case.
    pub fn sub(&self, name: &str) -> Option<&Attribute> {
        self.sub_attributes
            .iter()
            .find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Deserialize)]
struct Schema {
    id: String,
    attributes: Vec<Attribute>,
}

/// The served schemas: the document as JSON, and parsed.
struct Served {
    document: Vec<Value>,
    schemas: Vec<Schema>,
}

fn served() -> &'static Served {
    static SERVED: OnceLock<Served> = OnceLock::new();
    SERVED.get_or_init(|| Served {
        // A constant of this crate, parsed by a test: it cannot fail at run time.
        document: serde_json::from_str(SCHEMAS_JSON).unwrap_or_default(),
        schemas: serde_json::from_str(SCHEMAS_JSON).unwrap_or_default(),
    })
}

/// The core schema URN of a kind.
pub fn core_schema(kind: Kind) -> &'static str {
    match kind {
        Kind::User => USER_SCHEMA,
        Kind::Group => GROUP_SCHEMA,
    }
}

/// The extension schemas a kind accepts.
pub fn extensions(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::User => &[ENTERPRISE_USER],
        Kind::Group => &[],
    }
}

/// The extension URN `name` names, whatever its case.
pub fn extension(kind: Kind, name: &str) -> Option<&'static str> {
    extensions(kind)
        .iter()
        .copied()
        .find(|urn| urn.eq_ignore_ascii_case(name))
}

/// `externalId`, which every resource has (RFC 7643 §3.1) though no schema lists it.
fn external_id() -> &'static Attribute {
    static EXTERNAL_ID: OnceLock<Attribute> = OnceLock::new();
    EXTERNAL_ID.get_or_init(|| Attribute {
        name: "externalId".into(),
        kind: "string".into(),
        multi_valued: false,
        mutability: Some("readWrite".into()),
        sub_attributes: Vec::new(),
    })
}

/// The attribute `name` of schema `urn`, whatever its case.
pub fn attribute(urn: &str, name: &str) -> Option<&'static Attribute> {
    if name.eq_ignore_ascii_case("externalId") && [USER_SCHEMA, GROUP_SCHEMA].contains(&urn) {
        return Some(external_id());
    }
    served()
        .schemas
        .iter()
        .find(|s| s.id == urn)?
        .attributes
        .iter()
        .find(|a| a.name.eq_ignore_ascii_case(name))
}

/// The schema documents, each with its `meta`, for `/Schemas`.
pub fn documents() -> Vec<Value> {
    served()
        .document
        .iter()
        .map(|schema| {
            let mut schema = schema.clone();
            let id = schema
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            schema["schemas"] = serde_json::json!(["urn:ietf:params:scim:schemas:core:2.0:Schema"]);
            schema["meta"] = serde_json::json!({
                "resourceType": "Schema",
                "location": format!("/scim/v2/Schemas/{id}"),
            });
            schema
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_schemas_parse_and_name_their_attributes() {
        assert_eq!(served().schemas.len(), 3);
        assert_eq!(documents().len(), 3);
        let user_name = attribute(USER_SCHEMA, "USERNAME").expect("userName");
        assert_eq!(user_name.name, "userName");
        let emails = attribute(USER_SCHEMA, "emails").expect("emails");
        assert!(emails.multi_valued && emails.sub("VALUE").is_some());
        assert!(attribute(USER_SCHEMA, "groups")
            .expect("groups")
            .is_read_only());
        assert!(
            attribute(GROUP_SCHEMA, "members")
                .expect("members")
                .multi_valued
        );
        assert!(attribute(ENTERPRISE_USER, "department").is_some());
        assert!(attribute(USER_SCHEMA, "isAdmin").is_none());
        assert_eq!(
            attribute(GROUP_SCHEMA, "externalid").expect("common").name,
            "externalId"
        );
    }
}
