//! PATCH (RFC 7644 §3.5.2) on a stored resource: `add`, `replace` and `remove`,
//! with or without a path, value paths such as `members[value eq "…"]` and
//! `emails[type eq "work"].value`, and the quirks of Entra ID (capitalised op
//! names, `replace` without a path holding dotted names, `remove` of members
//! listed in `value`). The result is checked again as a whole resource, so a
//! PATCH can store nothing a PUT could not.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{self, Condition, Filter, Op, Test};
use super::schema;
use super::store::Kind;

pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Replace,
    Remove,
}

/// Where an operation acts: an attribute (of the core schema or an extension),
/// optionally narrowed to the values a filter selects, optionally a sub-attribute.
#[derive(Debug)]
struct Target {
    extension: Option<&'static str>,
    attribute: String,
    multi_valued: bool,
    filter: Option<Filter>,
    sub: Option<String>,
}

/// Applies the PatchOp `body` to `resource`.
pub fn apply(kind: Kind, resource: &mut Value, body: Value) -> Result<(), ScimError> {
    let Value::Object(mut body) = body else {
        return Err(ScimError::syntax("the body must be a PatchOp object"));
    };
    let lists_patch = body
        .get("schemas")
        .and_then(Value::as_array)
        .is_some_and(|s| s.iter().any(|u| u.as_str() == Some(PATCH_SCHEMA)));
    if !lists_patch {
        return Err(ScimError::value(format!(
            "schemas must list {PATCH_SCHEMA}"
        )));
    }
    let operations = match filter::field(&Value::Object(std::mem::take(&mut body)), "Operations") {
        Some(Value::Array(ops)) if !ops.is_empty() => ops.clone(),
        _ => return Err(ScimError::value("Operations must be a non-empty array")),
    };
    for (index, operation) in operations.into_iter().enumerate() {
        operation_on(kind, resource, operation)
            .map_err(|err| prefixed(err, &format!("Operations[{index}]")))?;
    }
    Ok(())
}

fn prefixed(mut err: ScimError, at: &str) -> ScimError {
    err.detail = format!("{at}: {}", err.detail);
    err
}

fn operation_on(kind: Kind, resource: &mut Value, operation: Value) -> Result<(), ScimError> {
    let op = match filter::field(&operation, "op").and_then(Value::as_str) {
        Some(op) => match op.to_ascii_lowercase().as_str() {
            "add" => OpKind::Add,
            "replace" => OpKind::Replace,
            "remove" => OpKind::Remove,
            other => {
                return Err(ScimError::value(format!(
                    "op {other:?} is not add, replace or remove"
                )))
            }
        },
        None => return Err(ScimError::value("op is required")),
    };
    let value = filter::field(&operation, "value").cloned();
    match filter::field(&operation, "path") {
        // A whole extension: its attributes, or all of it for remove.
        Some(Value::String(path)) if schema::extension(kind, path).is_some() => {
            let urn = schema::extension(kind, path).unwrap_or_default();
            match (op, value) {
                (OpKind::Remove, _) => {
                    if let Value::Object(fields) = resource {
                        fields.remove(urn);
                    }
                    Ok(())
                }
                (_, Some(value)) => {
                    let fields = Map::from_iter([(urn.to_owned(), value)]);
                    without_path(kind, resource, op, fields)
                }
                (_, None) => Err(ScimError::value("value is required for add and replace")),
            }
        }
        Some(Value::String(path)) => {
            let target = parse_target(kind, path)?;
            act(resource, op, &target, value)
        }
        Some(_) => Err(ScimError::path("path must be a string")),
        None if op == OpKind::Remove => Err(ScimError::no_target("remove needs a path")),
        None => match value {
            Some(Value::Object(fields)) => without_path(kind, resource, op, fields),
            _ => Err(ScimError::value(
                "an operation without a path needs an object as value",
            )),
        },
    }
}

/// `add`/`replace` without a path: each member of `value` is an attribute (or a
/// dotted path, as Entra sends), or an extension URN holding attributes.
fn without_path(
    kind: Kind,
    resource: &mut Value,
    op: OpKind,
    fields: Map<String, Value>,
) -> Result<(), ScimError> {
    for (key, value) in fields {
        if matches!(key.as_str(), "schemas" | "meta") {
            continue;
        }
        if key == "id" {
            if resource.get("id") != Some(&value) {
                return Err(ScimError::mutability("id cannot change"));
            }
            continue;
        }
        if let (Some(urn), Value::Object(inner)) = (schema::extension(kind, &key), &value) {
            for (name, value) in inner.iter().filter(|(name, _)| *name != "schemas") {
                let target = parse_target(kind, &format!("{urn}:{name}"))?;
                act(resource, op, &target, Some(value.clone()))?;
            }
            continue;
        }
        let target = parse_target(kind, &key)?;
        act(resource, op, &target, Some(value))?;
    }
    Ok(())
}

fn parse_target(kind: Kind, path: &str) -> Result<Target, ScimError> {
    let bad = |why: &str| ScimError::path(format!("path {path:?} {why}"));
    let (head, filter, tail) = match path.find('[') {
        Some(open) => {
            let close = path.rfind(']').ok_or_else(|| bad("has [ without ]"))?;
            let inner = filter::parse(&path[open + 1..close]).map_err(|e| bad(&e.detail))?;
            (&path[..open], Some(inner), &path[close + 1..])
        }
        None => (path, None, ""),
    };
    let mut parts = filter::split_path(head).map_err(|_| bad("is not an attribute path"))?;
    let mut extension = None;
    if let Some(urn) = parts.first().and_then(|p| schema::extension(kind, p)) {
        extension = Some(urn);
        parts.remove(0);
    } else if parts
        .first()
        .is_some_and(|p| p.eq_ignore_ascii_case(schema::core_schema(kind)))
    {
        parts.remove(0);
    }
    let sub_after_filter = tail.strip_prefix('.').filter(|s| !s.is_empty());
    if !tail.is_empty() && sub_after_filter.is_none() {
        return Err(bad("has text after ] that is not .subAttribute"));
    }
    let (name, sub) = match (parts.as_slice(), sub_after_filter) {
        ([name], sub) => (name.clone(), sub.map(str::to_owned)),
        ([name, sub], None) => (name.clone(), Some(sub.clone())),
        _ => return Err(bad("is not an attribute path")),
    };
    let urn = extension.unwrap_or_else(|| schema::core_schema(kind));
    let attribute =
        schema::attribute(urn, &name).ok_or_else(|| bad("names no attribute of this resource"))?;
    let sub = match sub {
        Some(sub) => Some(
            attribute
                .sub(&sub)
                .ok_or_else(|| bad("names no sub-attribute"))?
                .name
                .clone(),
        ),
        None => None,
    };
    if filter.is_some() && !attribute.multi_valued {
        return Err(bad("filters an attribute that is not multi-valued"));
    }
    Ok(Target {
        extension,
        attribute: attribute.name.clone(),
        multi_valued: attribute.multi_valued,
        filter,
        sub,
    })
}

/// The object holding the target's attribute: the resource, or its extension.
fn container<'r>(
    resource: &'r mut Value,
    target: &Target,
) -> Result<&'r mut Map<String, Value>, ScimError> {
    let root = resource
        .as_object_mut()
        .ok_or_else(|| ScimError::syntax("the stored resource is not an object"))?;
    let Some(urn) = target.extension else {
        return Ok(root);
    };
    let holder = root
        .entry(urn.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !holder.is_object() {
        *holder = Value::Object(Map::new());
    }
    holder
        .as_object_mut()
        .ok_or_else(|| ScimError::syntax("the extension is not an object"))
}

fn act(
    resource: &mut Value,
    op: OpKind,
    target: &Target,
    value: Option<Value>,
) -> Result<(), ScimError> {
    if op != OpKind::Remove && value.is_none() {
        return Err(ScimError::value("value is required for add and replace"));
    }
    let value = value.unwrap_or(Value::Null);
    let holder = container(resource, target)?;
    match (&target.filter, &target.sub) {
        (None, None) => on_attribute(holder, op, target, value),
        (None, Some(sub)) => on_sub(holder, op, &target.attribute, sub, value),
        (Some(filter), sub) => on_selected(holder, op, target, filter, sub.as_deref(), value),
    }
}

fn on_attribute(
    holder: &mut Map<String, Value>,
    op: OpKind,
    target: &Target,
    value: Value,
) -> Result<(), ScimError> {
    let name = &target.attribute;
    match op {
        OpKind::Remove if target.multi_valued && !value.is_null() => {
            // Entra: remove the listed values ({"value": id}) from members.
            let listed = as_list(value);
            if let Some(Value::Array(items)) = holder.get_mut(name) {
                items.retain(|item| !listed.iter().any(|l| same_value(item, l)));
            }
        }
        OpKind::Remove => {
            holder.remove(name);
        }
        OpKind::Add if target.multi_valued => {
            let items = holder
                .entry(name.clone())
                .or_insert_with(|| Value::Array(Vec::new()));
            if !items.is_array() {
                *items = Value::Array(Vec::new());
            }
            if let Value::Array(items) = items {
                for new in as_list(value) {
                    if !items.iter().any(|item| same_value(item, &new)) {
                        items.push(new);
                    }
                }
            }
        }
        OpKind::Add | OpKind::Replace => match (holder.get_mut(name), value) {
            (Some(Value::Object(old)), Value::Object(new)) if !target.multi_valued => {
                old.extend(new)
            }
            (_, value) => {
                holder.insert(name.clone(), value);
            }
        },
    }
    Ok(())
}

fn on_sub(
    holder: &mut Map<String, Value>,
    op: OpKind,
    name: &str,
    sub: &str,
    value: Value,
) -> Result<(), ScimError> {
    let slot = holder
        .entry(name.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    let objects: Vec<&mut Value> = match slot {
        Value::Array(items) => items.iter_mut().collect(),
        other => vec![other],
    };
    for object in objects {
        if let Value::Object(fields) = object {
            match op {
                OpKind::Remove => {
                    fields.remove(sub);
                }
                _ => {
                    fields.insert(sub.to_owned(), value.clone());
                }
            }
        }
    }
    Ok(())
}

fn on_selected(
    holder: &mut Map<String, Value>,
    op: OpKind,
    target: &Target,
    filter: &Filter,
    sub: Option<&str>,
    value: Value,
) -> Result<(), ScimError> {
    let items = holder
        .entry(target.attribute.clone())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !items.is_array() {
        *items = Value::Array(Vec::new());
    }
    let Value::Array(items) = items else {
        return Ok(());
    };
    let selected = items.iter().filter(|item| filter.matches(item)).count();
    match (op, sub) {
        (OpKind::Remove, None) => items.retain(|item| !filter.matches(item)),
        (OpKind::Remove, Some(sub)) => selected_objects(items, filter).for_each(|o| {
            o.remove(sub);
        }),
        (_, Some(sub)) if selected == 0 => items.push(new_value_for(filter, Some((sub, value)))?),
        (OpKind::Add, None) if selected == 0 => {
            items.push(merged(new_value_for(filter, None)?, value))
        }
        (_, None) if selected == 0 => {
            return Err(ScimError::no_target(format!(
                "no value of {} matches the filter",
                target.attribute
            )))
        }
        (_, Some(sub)) => selected_objects(items, filter).for_each(|o| {
            o.insert(sub.to_owned(), value.clone());
        }),
        (_, None) => {
            for item in items.iter_mut().filter(|item| filter.matches(item)) {
                *item = merged(std::mem::take(item), value.clone());
            }
        }
    }
    Ok(())
}

fn selected_objects<'i>(
    items: &'i mut [Value],
    filter: &'i Filter,
) -> impl Iterator<Item = &'i mut Map<String, Value>> {
    items
        .iter_mut()
        .filter(|item| filter.matches(item))
        .filter_map(Value::as_object_mut)
}

/// A new value the filter would select: `emails[type eq "work"].value` on a user
/// without a work address adds `{"type": "work", "value": …}`.
fn new_value_for(filter: &Filter, sub: Option<(&str, Value)>) -> Result<Value, ScimError> {
    let mut object = Map::new();
    for condition in &filter.0 {
        match condition {
            Condition {
                path,
                test: Test::Compare(Op::Eq, value),
            } if path.len() == 1 => {
                object.insert(path[0].clone(), value.clone());
            }
            _ => {
                return Err(ScimError::no_target(
                    "the filter matches no value, and only eq filters say what to add",
                ))
            }
        }
    }
    if let Some((sub, value)) = sub {
        object.insert(sub.to_owned(), value);
    }
    Ok(Value::Object(object))
}

fn merged(base: Value, value: Value) -> Value {
    match (base, value) {
        (Value::Object(mut base), Value::Object(new)) => {
            base.extend(new);
            Value::Object(base)
        }
        (_, value) => value,
    }
}

fn as_list(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        single => vec![single],
    }
}

/// Two values of a multi-valued attribute are the same when equal, or when both
/// are objects with the same `value`.
fn same_value(a: &Value, b: &Value) -> bool {
    match (filter::field(a, "value"), filter::field(b, "value")) {
        (Some(x), Some(y)) => filter::equal(x, y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(kind: Kind, mut resource: Value, ops: Value) -> Result<Value, ScimError> {
        apply(
            kind,
            &mut resource,
            json!({"schemas": [PATCH_SCHEMA], "Operations": ops}),
        )?;
        Ok(resource)
    }

    #[test]
    fn entra_quirks_apply() {
        let user = json!({"id": "u", "userName": "a", "active": true, "name": {"givenName": "A"}});
        let user = patched(Kind::User, user, json!([
            {"op": "Replace", "path": "active", "value": "False"},
            {"op": "Replace", "value": {"name.familyName": "Lovelace", "displayName": "Ada"}},
            {"op": "Add", "path": "emails[type eq \"work\"].value", "value": "ada@example.com"},
            {"op": "Add", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "R&D"},
        ])).unwrap();
        assert_eq!(
            user["active"], "False",
            "coerced when the resource is checked"
        );
        assert_eq!(
            user["name"],
            json!({"givenName": "A", "familyName": "Lovelace"})
        );
        assert_eq!(user["displayName"], "Ada");
        assert_eq!(
            user["emails"],
            json!([{"type": "work", "value": "ada@example.com"}])
        );
        assert_eq!(user[schema::ENTERPRISE_USER]["department"], "R&D");
    }

    #[test]
    fn members_are_added_and_removed_by_value_path_or_by_value() {
        let group = json!({"id": "g", "displayName": "ops", "members": [{"value": "u1"}]});
        let group = patched(
            Kind::Group,
            group,
            json!([
                {"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u1"}]},
                {"op": "remove", "path": "members[value eq \"u1\"]"},
                {"op": "Add", "path": "members", "value": [{"value": "u3"}]},
                {"op": "Remove", "path": "members", "value": [{"value": "u3"}]},
                {"op": "replace", "value": {"id": "g", "displayName": "sre"}},
            ]),
        )
        .unwrap();
        assert_eq!(group["members"], json!([{"value": "u2"}]));
        assert_eq!(group["displayName"], "sre");
    }

    #[test]
    fn bad_operations_are_refused_by_name() {
        let user = json!({"id": "u", "userName": "a"});
        for (ops, needle) in [
            (
                json!([{"op": "move", "path": "userName"}]),
                "Operations[0]: op \"move\"",
            ),
            (json!([{"op": "remove"}]), "remove needs a path"),
            (
                json!([{"op": "replace", "path": "isAdmin", "value": true}]),
                "names no attribute",
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq \"x\""}]),
                "without ]",
            ),
            (
                json!([{"op": "replace", "value": {"id": "other"}}]),
                "id cannot change",
            ),
            (
                json!([{"op": "replace", "path": "emails[type eq \"home\"]", "value": {}}]),
                "matches the filter",
            ),
        ] {
            let err = patched(Kind::User, user.clone(), ops).unwrap_err();
            assert!(err.detail.contains(needle), "{}", err.detail);
        }
        let mut user = user;
        let err = apply(Kind::User, &mut user, json!({"Operations": []})).unwrap_err();
        assert!(err.detail.contains(PATCH_SCHEMA));
    }
}
