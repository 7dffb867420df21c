//! A pushed resource checked against the served schemas and brought into the form
//! it is stored and served in: attribute names as the schema spells them, values
//! of the schema's types (Entra's `"active": "False"` becomes `false`), read-only
//! and write-only attributes dropped (a password is never stored), `id` and `meta`
//! set by idsync.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::schema::{self, Attribute};
use super::store::{Kind, PushStore};
use crate::config::GroupPolicy;
use crate::groups::Mapping;

/// What checking a resource needs besides the resource.
pub struct Checks<'a> {
    pub store: &'a PushStore,
    pub groups: &'a GroupPolicy,
}

/// `body` as the resource `id` is stored, or why it cannot be. `before` is the
/// stored resource it replaces, whose `meta.created` it keeps.
pub fn accept(
    kind: Kind,
    body: Value,
    id: &str,
    before: Option<&Value>,
    checks: &Checks<'_>,
) -> Result<Value, ScimError> {
    let Value::Object(body) = body else {
        return Err(ScimError::syntax("the body must be a JSON object"));
    };
    check_schemas(kind, body.get("schemas"))?;
    let mut stored = Map::new();
    for (key, value) in body {
        if let Some(urn) = schema::extension(kind, &key) {
            if let Some(value) = extension_value(urn, value)? {
                stored.insert(urn.to_owned(), value);
            }
            continue;
        }
        if matches!(key.as_str(), "schemas" | "id" | "meta") {
            continue;
        }
        let attribute = schema::attribute(schema::core_schema(kind), &key).ok_or_else(|| {
            ScimError::syntax(format!("unknown attribute {key:?} for a {kind:?}"))
        })?;
        if attribute.is_read_only() || attribute.name == "password" {
            continue;
        }
        if let Some(value) = conform(attribute, value, &attribute.name)? {
            stored.insert(attribute.name.clone(), value);
        }
    }
    match kind {
        Kind::User => check_user(&stored)?,
        Kind::Group => check_group(&mut stored, checks)?,
    }
    stored.insert("schemas".into(), schemas_of(kind, &stored));
    stored.insert("id".into(), id.into());
    stored.insert("meta".into(), meta(kind, id, before));
    Ok(Value::Object(stored))
}

/// `schemas` must list the kind's core schema, and nothing idsync does not serve.
fn check_schemas(kind: Kind, schemas: Option<&Value>) -> Result<(), ScimError> {
    let core = schema::core_schema(kind);
    let Some(Value::Array(listed)) = schemas else {
        return Err(ScimError::value(format!(
            "schemas is missing: it must be an array listing {core}"
        )));
    };
    let mut has_core = false;
    for urn in listed {
        let urn = urn
            .as_str()
            .ok_or_else(|| ScimError::value("schemas must hold strings"))?;
        if urn.eq_ignore_ascii_case(core) {
            has_core = true;
        } else if kind == Kind::Group && urn == schema::ENTRA_GROUP {
            continue;
        } else if schema::extension(kind, urn).is_none() {
            return Err(ScimError::value(format!(
                "schemas lists {urn:?}, which this endpoint does not serve for a {kind:?}"
            )));
        }
    }
    if has_core {
        Ok(())
    } else {
        Err(ScimError::value(format!("schemas must list {core}")))
    }
}

fn extension_value(urn: &str, value: Value) -> Result<Option<Value>, ScimError> {
    let Value::Object(fields) = value else {
        return Err(ScimError::syntax(format!("{urn} must be an object")));
    };
    let mut conformed = Map::new();
    for (key, value) in fields.into_iter().filter(|(key, _)| key != "schemas") {
        let attribute = schema::attribute(urn, &key)
            .ok_or_else(|| ScimError::syntax(format!("unknown attribute {urn}:{key}")))?;
        if let Some(value) = conform(attribute, value, &format!("{urn}:{}", attribute.name))? {
            conformed.insert(attribute.name.clone(), value);
        }
    }
    Ok((!conformed.is_empty()).then_some(Value::Object(conformed)))
}

/// `value` in the attribute's type; `None` for null or an empty list (unassigned).
pub fn conform(attribute: &Attribute, value: Value, at: &str) -> Result<Option<Value>, ScimError> {
    if value.is_null() {
        return Ok(None);
    }
    if !attribute.multi_valued {
        return conform_one(attribute, value, at).map(Some);
    }
    let items = match value {
        Value::Array(items) => items,
        single => vec![single],
    };
    let mut conformed = Vec::with_capacity(items.len());
    for item in items {
        if !item.is_null() {
            conformed.push(conform_one(attribute, item, at)?);
        }
    }
    Ok((!conformed.is_empty()).then_some(Value::Array(conformed)))
}

fn conform_one(attribute: &Attribute, value: Value, at: &str) -> Result<Value, ScimError> {
    let wrong = |expected: &str| ScimError::value(format!("{at} must be {expected}"));
    match (attribute.kind.as_str(), value) {
        ("boolean", Value::Bool(flag)) => Ok(Value::Bool(flag)),
        // Entra ID sends booleans as the strings "True" and "False".
        ("boolean", Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(wrong("true or false")),
        },
        ("boolean", _) => Err(wrong("true or false")),
        ("integer" | "decimal", Value::Number(n)) => Ok(Value::Number(n)),
        ("integer" | "decimal", _) => Err(wrong("a number")),
        ("complex", Value::Object(fields)) => {
            let mut conformed = Map::new();
            for (key, value) in fields {
                let sub = attribute
                    .sub(&key)
                    .ok_or_else(|| ScimError::syntax(format!("unknown attribute {at}.{key}")))?;
                if let Some(value) = conform(sub, value, &format!("{at}.{}", sub.name))? {
                    conformed.insert(sub.name.clone(), value);
                }
            }
            Ok(Value::Object(conformed))
        }
        ("complex", _) => Err(wrong("an object")),
        (_, Value::String(text)) => Ok(Value::String(text)),
        (_, _) => Err(wrong("a string")),
    }
}

fn check_user(user: &Map<String, Value>) -> Result<(), ScimError> {
    match user.get("userName").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => Ok(()),
        _ => Err(ScimError::value(
            "userName is required and must not be empty",
        )),
    }
}

/// A group needs a name that is not the gateway's admin group (unless allowed),
/// and members that are pushed users.
fn check_group(group: &mut Map<String, Value>, checks: &Checks<'_>) -> Result<(), ScimError> {
    let name = match group.get("displayName").and_then(Value::as_str) {
        Some(name) if !name.trim().is_empty() => name.trim().to_owned(),
        _ => {
            return Err(ScimError::value(
                "displayName is required and must not be empty",
            ))
        }
    };
    if checks.groups.map(&name) == Mapping::AdminDropped {
        return Err(ScimError::value(format!(
            "displayName {name:?} maps to the gateway's admin group {:?}, which pushed groups may not grant (groups.allow_admin_group = false)",
            checks.groups.admin_group
        )));
    }
    let Some(Value::Array(members)) = group.get_mut("members") else {
        return Ok(());
    };
    let mut seen = std::collections::BTreeSet::new();
    members.retain(|m| seen.insert(m.get("value").map(Value::to_string)));
    for member in members.iter_mut() {
        let Some(id) = member
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Err(ScimError::value("members[].value is required"));
        };
        let Some(user) = checks.store.get(Kind::User, &id)? else {
            return Err(ScimError::value(format!(
                "members: no pushed user has id {id:?}"
            )));
        };
        // What the IdP sent is kept; what it left out is filled in.
        let filled = [
            ("type", Value::from("User")),
            ("$ref", format!("/scim/v2/Users/{id}").into()),
            ("display", user.get("userName").cloned().unwrap_or_default()),
        ];
        if let Value::Object(fields) = member {
            for (key, value) in filled {
                fields.entry(key).or_insert(value);
            }
        }
    }
    Ok(())
}

fn schemas_of(kind: Kind, stored: &Map<String, Value>) -> Value {
    let mut schemas = vec![Value::from(schema::core_schema(kind))];
    for urn in schema::extensions(kind) {
        if stored.contains_key(*urn) {
            schemas.push((*urn).into());
        }
    }
    Value::Array(schemas)
}

fn meta(kind: Kind, id: &str, before: Option<&Value>) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let created = before
        .and_then(|b| b.pointer("/meta/created"))
        .cloned()
        .unwrap_or_else(|| now.clone().into());
    let (resource_type, endpoint) = match kind {
        Kind::User => ("User", "Users"),
        Kind::Group => ("Group", "Groups"),
    };
    serde_json::json!({
        "resourceType": resource_type,
        "created": created,
        "lastModified": now,
        "location": format!("/scim/v2/{endpoint}/{id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn checks_with(store: &PushStore, f: impl FnOnce(&Checks<'_>)) {
        let groups = GroupPolicy::default();
        f(&Checks {
            store,
            groups: &groups,
        });
    }

    fn store() -> (tempfile::TempDir, std::sync::Arc<PushStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = PushStore::open(&dir.path().join("push")).unwrap();
        (dir, store)
    }

    #[test]
    fn a_user_is_stored_in_schema_spelling_without_password_and_with_entra_booleans() {
        let (_dir, store) = store();
        checks_with(&store, |checks| {
            let body = json!({
                "schemas": [schema::USER_SCHEMA],
                "USERNAME": "ada@example.com",
                "active": "False",
                "password": "hunter2",
                "emails": [{"Value": "ada@example.com", "primary": "true"}],
                "meta": {"resourceType": "User"},
                "id": "chosen-by-client",
            });
            let user = accept(Kind::User, body, "id-1", None, checks).unwrap();
            assert_eq!(user["userName"], "ada@example.com");
            assert_eq!(user["active"], false);
            assert_eq!(user["emails"][0]["primary"], true);
            assert_eq!(user["id"], "id-1");
            assert!(user.get("password").is_none());
            assert_eq!(user["meta"]["resourceType"], "User");
        });
    }

    #[test]
    fn unknown_attributes_schemas_and_types_are_refused_by_name() {
        let (_dir, store) = store();
        checks_with(&store, |checks| {
            for (body, needle) in [
                (
                    json!({"schemas": [schema::USER_SCHEMA], "userName": "a", "isAdmin": true}),
                    "isAdmin",
                ),
                (json!({"schemas": ["urn:x"], "userName": "a"}), "urn:x"),
                (json!({"userName": "a"}), "schemas"),
                (json!({"schemas": [schema::USER_SCHEMA]}), "userName"),
                (
                    json!({"schemas": [schema::USER_SCHEMA], "userName": "a", "active": "maybe"}),
                    "active",
                ),
                (
                    json!({"schemas": [schema::USER_SCHEMA], "userName": "a", "name": {"x": 1}}),
                    "name.x",
                ),
                (json!([1]), "object"),
            ] {
                let err = accept(Kind::User, body, "id", None, checks).unwrap_err();
                assert_eq!(err.status, 400);
                assert!(err.detail.contains(needle), "{} lacks {needle}", err.detail);
            }
        });
    }

    #[test]
    fn a_group_named_like_the_admin_group_or_with_unknown_members_is_refused() {
        let (_dir, store) = store();
        checks_with(&store, |checks| {
            let admin = json!({"schemas": [schema::GROUP_SCHEMA], "displayName": " admin "});
            let err = accept(Kind::Group, admin, "g", None, checks).unwrap_err();
            assert!(err.detail.contains("admin group"), "{}", err.detail);
            let ghost = json!({"schemas": [schema::GROUP_SCHEMA], "displayName": "ops",
                "members": [{"value": "nobody"}]});
            let err = accept(Kind::Group, ghost, "g", None, checks).unwrap_err();
            assert!(err.detail.contains("nobody"), "{}", err.detail);
        });
    }
}
