//! The SCIM 2.0 routes under `/scim/v2`: discovery, and `/Users` and `/Groups`
//! with list, create, get, replace, patch and delete. A write is answered only
//! once the store has flushed it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::{ScimError, SCIM_JSON};
use super::filter;
use super::patch;
use super::resource::{self, Checks};
use super::schema;
use super::store::{Kind, PushStore};
use super::telemetry;
use crate::config::GroupPolicy;

/// What every handler shares.
#[derive(Clone)]
pub struct Endpoint {
    pub store: Arc<PushStore>,
    pub groups: Arc<GroupPolicy>,
    pub max_body_bytes: usize,
}

const LIST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The most resources one list answer holds (`filter.maxResults`).
pub const MAX_RESULTS: usize = 1000;

pub fn scim(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, SCIM_JSON)],
        body.to_string(),
    )
        .into_response()
}

impl Endpoint {
    fn checks(&self) -> Checks<'_> {
        Checks {
            store: &self.store,
            groups: &self.groups,
        }
    }

    /// The body as JSON, within `push.max_body_bytes`.
    async fn json_body(&self, headers: &HeaderMap, body: Body) -> Result<Value, ScimError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > self.max_body_bytes) {
            return Err(ScimError::too_large(self.max_body_bytes));
        }
        let bytes = axum::body::to_bytes(body, self.max_body_bytes)
            .await
            .map_err(|_| ScimError::too_large(self.max_body_bytes))?;
        serde_json::from_slice(&bytes)
            .map_err(|err| ScimError::syntax(format!("the body is not valid JSON: {err}")))
    }

    /// How a resource is served: a user with the groups it is a member of.
    fn served(&self, kind: Kind, mut resource: Value) -> Result<Value, ScimError> {
        if kind == Kind::User {
            let id = resource
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let groups: Vec<Value> = self
                .store
                .groups_of(id)?
                .into_iter()
                .map(|(id, name)| json!({"value": id, "display": name, "$ref": format!("/scim/v2/Groups/{id}"), "type": "direct"}))
                .collect();
            if !groups.is_empty() {
                resource["groups"] = Value::Array(groups);
            }
        }
        Ok(resource)
    }

    /// Stores what `build` makes of resource `id`, flushes, and logs the change.
    async fn write(
        &self,
        operation: &'static str,
        kind: Kind,
        id: &str,
        build: impl FnOnce(Option<Value>, &Checks<'_>) -> Result<Option<Value>, ScimError>,
    ) -> Result<Option<Value>, ScimError> {
        let checks = self.checks();
        let stored = self
            .store
            .write(kind, id, |before| build(before, &checks))?;
        self.store.flush().await?;
        telemetry::change_stored(operation, id, &self.store);
        Ok(stored)
    }
}

pub async fn list(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    uri: Uri,
) -> Result<Response, ScimError> {
    listing(kind, &endpoint, &Query::parse(&uri)?)
}

/// `POST /Users/.search`: a list whose parameters come as a SearchRequest body.
pub async fn search(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let body = endpoint.json_body(&headers, body).await?;
    let Value::Object(fields) = body else {
        return Err(ScimError::syntax("the body must be a SearchRequest object"));
    };
    let mut pairs = Vec::new();
    for (key, value) in fields {
        let text = match value {
            Value::String(text) => text,
            Value::Array(items) => items
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if key != "schemas" {
            pairs.push((key, text));
        }
    }
    listing(kind, &endpoint, &Query::from_pairs(pairs)?)
}

fn listing(kind: Kind, endpoint: &Endpoint, query: &Query) -> Result<Response, ScimError> {
    let mut matching = candidates(&endpoint.store, kind, query.filter.as_ref())?;
    if let Some(filter) = &query.filter {
        matching.retain(|r| filter.matches(r));
    }
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(query.start_index - 1)
        .take(query.count)
        .map(|r| endpoint.served(kind, r).map(|r| query.project(r)))
        .collect::<Result<_, _>>()?;
    let body = json!({
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": query.start_index,
        "itemsPerPage": page.len(),
        "Resources": page,
    });
    Ok(scim(StatusCode::OK, &body))
}

/// The resources a filter may match: one, by index, for `unique eq "…"` and
/// `id eq "…"`; else all of the kind.
fn candidates(
    store: &PushStore,
    kind: Kind,
    filter: Option<&filter::Filter>,
) -> Result<Vec<Value>, ScimError> {
    let by_id = |id: Option<String>| -> Result<Vec<Value>, ScimError> {
        Ok(match id {
            Some(id) => store.get(kind, &id)?.into_iter().collect(),
            None => Vec::new(),
        })
    };
    if let Some(filter) = filter {
        if let Some(name) = filter.single_eq(kind.unique_attribute()) {
            return by_id(store.id_by_name(kind, name)?);
        }
        if let Some(id) = filter.single_eq("id") {
            return by_id(Some(id.to_owned()));
        }
    }
    store
        .all(kind)
        .map(|r| r.map_err(ScimError::from))
        .collect()
}

pub async fn get_one(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Response, ScimError> {
    let query = Query::parse(&uri)?;
    let resource = endpoint
        .store
        .get(kind, &id)?
        .ok_or_else(|| not_found(kind, &id))?;
    let served = endpoint.served(kind, resource)?;
    Ok(scim(StatusCode::OK, &query.project(served)))
}

pub async fn create(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let body = endpoint.json_body(&headers, body).await?;
    let id = new_id();
    let stored = endpoint
        .write(operation(kind, "create"), kind, &id, |_, checks| {
            resource::accept(kind, body, &id, None, checks).map(Some)
        })
        .await?
        .unwrap_or_default();
    let location = stored
        .pointer("/meta/location")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut response = scim(StatusCode::CREATED, &endpoint.served(kind, stored)?);
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

pub async fn replace(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let body = endpoint.json_body(&headers, body).await?;
    let stored = endpoint
        .write(operation(kind, "replace"), kind, &id, |before, checks| {
            let before = before.ok_or_else(|| not_found(kind, &id))?;
            resource::accept(kind, body, &id, Some(&before), checks).map(Some)
        })
        .await?
        .unwrap_or_default();
    Ok(scim(StatusCode::OK, &endpoint.served(kind, stored)?))
}

pub async fn modify(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ScimError> {
    let body = endpoint.json_body(&headers, body).await?;
    let stored = endpoint
        .write(operation(kind, "patch"), kind, &id, |before, checks| {
            let before = before.ok_or_else(|| not_found(kind, &id))?;
            let mut patched = before.clone();
            patch::apply(kind, &mut patched, body)?;
            resource::accept(kind, patched, &id, Some(&before), checks).map(Some)
        })
        .await?
        .unwrap_or_default();
    Ok(scim(StatusCode::OK, &endpoint.served(kind, stored)?))
}

pub async fn remove(
    kind: Kind,
    State(endpoint): State<Endpoint>,
    Path(id): Path<String>,
) -> Result<Response, ScimError> {
    endpoint
        .write(
            operation(kind, "delete"),
            kind,
            &id,
            |before, _| match before {
                Some(_) => Ok(None),
                None => Err(not_found(kind, &id)),
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The operation's name in logs and metrics: bounded, never an id.
pub fn operation(kind: Kind, action: &str) -> &'static str {
    match (kind, action) {
        (Kind::User, "create") => "users.create",
        (Kind::User, "replace") => "users.replace",
        (Kind::User, "patch") => "users.patch",
        (Kind::User, "delete") => "users.delete",
        (Kind::Group, "create") => "groups.create",
        (Kind::Group, "replace") => "groups.replace",
        (Kind::Group, "patch") => "groups.patch",
        (Kind::Group, "delete") => "groups.delete",
        _ => "other",
    }
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!(
        "no {kind:?} has id {:?}",
        crate::events::printable(id)
    ))
}

/// A fresh resource id: 128 random bits in the UUID layout.
fn new_id() -> String {
    let bits: u128 = rand::random();
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// A list's query parameters (RFC 7644 §3.4.2).
struct Query {
    filter: Option<filter::Filter>,
    start_index: usize,
    count: usize,
    attributes: Vec<String>,
    excluded: Vec<String>,
}

impl Query {
    fn parse(uri: &Uri) -> Result<Self, ScimError> {
        let pairs = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes());
        Self::from_pairs(pairs.map(|(k, v)| (k.into_owned(), v.into_owned())))
    }

    fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, ScimError> {
        let mut query = Self {
            filter: None,
            start_index: 1,
            count: 100,
            attributes: Vec::new(),
            excluded: Vec::new(),
        };
        for (key, value) in pairs {
            let number = || {
                value.trim().parse::<i64>().map_err(|_| {
                    ScimError::value(format!("{key} must be a whole number; got {value:?}"))
                })
            };
            match key.as_str() {
                "filter" => query.filter = Some(filter::parse(&value)?),
                "startIndex" => query.start_index = usize::try_from(number()?.max(1)).unwrap_or(1),
                "count" => {
                    query.count = usize::try_from(number()?.max(0))
                        .unwrap_or(0)
                        .min(MAX_RESULTS)
                }
                "attributes" => query.attributes = names(&value),
                "excludedAttributes" => query.excluded = names(&value),
                "sortBy" | "sortOrder" => {}
                other => {
                    return Err(ScimError::value(format!(
                        "query parameter {:?} is not supported",
                        crate::events::printable(other)
                    )))
                }
            }
        }
        Ok(query)
    }

    /// `attributes` keeps only those (and `id`, `schemas`, `meta`);
    /// `excludedAttributes` drops those.
    fn project(&self, resource: Value) -> Value {
        let Value::Object(mut fields) = resource else {
            return resource;
        };
        let named = |list: &[String], key: &str| list.iter().any(|n| n.eq_ignore_ascii_case(key));
        if !self.attributes.is_empty() {
            fields.retain(|k, _| {
                matches!(k.as_str(), "id" | "schemas" | "meta") || named(&self.attributes, k)
            });
        }
        fields.retain(|k, _| !named(&self.excluded, k) || matches!(k.as_str(), "id" | "schemas"));
        Value::Object(fields)
    }
}

/// Top-level names of an `attributes` list (`name.givenName` keeps `name`).
fn names(list: &str) -> Vec<String> {
    list.split(',')
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .map(|n| {
            let n = n
                .rsplit_once(':')
                .filter(|_| n.starts_with("urn:"))
                .map_or(n, |(_, a)| a);
            n.split('.').next().unwrap_or(n).to_owned()
        })
        .collect()
}

pub async fn service_provider_config() -> Response {
    scim(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://github.com/idsync/idsync#push-mode",
            "patch": {"supported": true},
            "bulk": {"supported": false, "maxOperations": 0, "maxPayloadSize": 0},
            "filter": {"supported": true, "maxResults": MAX_RESULTS},
            "changePassword": {"supported": false},
            "sort": {"supported": false},
            "etag": {"supported": false},
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "Bearer token",
                "description": "The token in push.bearer_token, as Authorization: Bearer <token>",
                "primary": true,
            }],
            "meta": {"resourceType": "ServiceProviderConfig", "location": "/scim/v2/ServiceProviderConfig"},
        }),
    )
}

fn resource_types() -> Vec<Value> {
    [("User", "Users", schema::USER_SCHEMA, "User Account"), ("Group", "Groups", schema::GROUP_SCHEMA, "Group")]
        .into_iter()
        .map(|(id, endpoint, urn, description)| {
            let mut resource_type = json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"],
                "id": id,
                "name": id,
                "endpoint": format!("/{endpoint}"),
                "description": description,
                "schema": urn,
                "meta": {"resourceType": "ResourceType", "location": format!("/scim/v2/ResourceTypes/{id}")},
            });
            if id == "User" {
                resource_type["schemaExtensions"] = json!([{"schema": schema::ENTERPRISE_USER, "required": false}]);
            }
            resource_type
        })
        .collect()
}

fn listed(resources: Vec<Value>) -> Response {
    scim(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": resources.len(),
            "startIndex": 1,
            "itemsPerPage": resources.len(),
            "Resources": resources,
        }),
    )
}

pub async fn list_resource_types() -> Response {
    listed(resource_types())
}

pub async fn list_schemas() -> Response {
    listed(schema::documents())
}

pub async fn resource_type(Path(id): Path<String>) -> Result<Response, ScimError> {
    one_of(resource_types(), &id, "resource type")
}

pub async fn schema_by_id(Path(id): Path<String>) -> Result<Response, ScimError> {
    one_of(schema::documents(), &id, "schema")
}

fn one_of(documents: Vec<Value>, id: &str, what: &str) -> Result<Response, ScimError> {
    documents
        .into_iter()
        .find(|d| d.get("id").and_then(Value::as_str) == Some(id))
        .map(|d| scim(StatusCode::OK, &d))
        .ok_or_else(|| {
            ScimError::not_found(format!(
                "no {what} has id {:?}",
                crate::events::printable(id)
            ))
        })
}
