//! Push mode: idsync serves SCIM 2.0 (RFC 7643/7644) under `/scim/v2`, so an
//! identity provider's provisioning engine (Okta, Entra ID, JumpCloud, OneLogin)
//! can push users and groups to it. What was pushed is kept in [`PushStore`]
//! and read by the runs as a directory (`source::pushed`), so the gateway is
//! written through the same planner, groups policy, rate limiter and retries as a
//! pull run.

mod error;
mod filter;
mod patch;
mod resource;
mod routes;
mod schema;
pub mod store;
mod telemetry;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::{GroupPolicy, PushConfig, Secret};
use error::ScimError;
use routes::Endpoint;
pub use store::{Kind, PushStore, StoreError};
pub use telemetry::queue_figures;

/// Binds `config.listen` now (so a taken port fails start-up) and serves the SCIM
/// endpoint until `shutdown`. Returns the bound address.
pub async fn serve(
    config: &PushConfig,
    store: Arc<PushStore>,
    groups: GroupPolicy,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    let local = listener.local_addr()?;
    let app = router(Endpoint {
        store,
        groups: Arc::new(groups),
        max_body_bytes: config.max_body_bytes,
    })
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(config.bearer_token.clone()),
        guard,
    ));
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(listen = %local, "Serving SCIM 2.0 for push provisioning at {scheme}://{local}/scim/v2.");
    match &config.tls {
        Some(files) => tls::serve(listener, files, app, shutdown)?,
        None => {
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await;
                if let Err(err) = served {
                    tracing::error!(error = %err, "The SCIM listener failed.");
                }
            });
        }
    }
    Ok(local)
}

fn router(endpoint: Endpoint) -> Router {
    use routes::*;
    let base = "/scim/v2";
    let mut app = Router::new()
        .route(
            &format!("{base}/ServiceProviderConfig"),
            get(service_provider_config),
        )
        .route(&format!("{base}/ResourceTypes"), get(list_resource_types))
        .route(&format!("{base}/ResourceTypes/{{id}}"), get(resource_type))
        .route(&format!("{base}/Schemas"), get(list_schemas))
        .route(&format!("{base}/Schemas/{{id}}"), get(schema_by_id))
        .route(
            &format!("{base}/.search"),
            axum::routing::post(|| async {
                ScimError::not_implemented(
                    "searching several resource types at once is not supported; POST /Users/.search or /Groups/.search",
                )
            }),
        );
    for (kind, path) in [(Kind::User, "Users"), (Kind::Group, "Groups")] {
        app = app
            .route(
                &format!("{base}/{path}"),
                get(move |s, u| list(kind, s, u)).post(move |s, h, b| create(kind, s, h, b)),
            )
            .route(
                &format!("{base}/{path}/.search"),
                axum::routing::post(move |s, h, b| search(kind, s, h, b)),
            )
            .route(
                &format!("{base}/{path}/{{id}}"),
                get(move |s, p, u| get_one(kind, s, p, u))
                    .put(move |s, p, h, b| replace(kind, s, p, h, b))
                    .patch(move |s, p, h, b| modify(kind, s, p, h, b))
                    .delete(move |s, p| remove(kind, s, p)),
            );
    }
    app.fallback(|| async {
        ScimError::not_found("no such SCIM endpoint; the base path is /scim/v2")
    })
    .method_not_allowed_fallback(|| async { ScimError::method_not_allowed() })
    .with_state(endpoint)
}

/// Every request needs the bearer token, compared in constant time; every answer
/// is counted by operation and status class.
async fn guard(State(token): State<Arc<Secret>>, request: Request, next: Next) -> Response {
    let operation = operation_of(request.method(), request.uri().path());
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let response = if presented.is_some_and(|p| token_matches(p, &token)) {
        next.run(request).await
    } else {
        telemetry::unauthorized();
        ScimError::unauthorized().into_response()
    };
    let status = response.status().as_u16();
    telemetry::answered(operation, status);
    response
}

fn token_matches(presented: &str, token: &Secret) -> bool {
    let (presented, expected) = (presented.as_bytes(), token.expose().as_bytes());
    // The length is no secret worth a branch-free compare; the bytes are.
    presented.len() == expected.len() && bool::from(presented.ct_eq(expected))
}

/// The operation a request is, for metrics: bounded, never an id.
fn operation_of(method: &Method, path: &str) -> &'static str {
    let rest = path.strip_prefix("/scim/v2/").unwrap_or("");
    let mut parts = rest.split('/');
    let (collection, next) = (parts.next().unwrap_or(""), parts.next());
    if next == Some(".search") {
        return "search";
    }
    let has_id = next.is_some();
    let kind = match collection {
        "Users" => Kind::User,
        "Groups" => Kind::Group,
        "ServiceProviderConfig" | "ResourceTypes" | "Schemas" => return "discovery",
        _ => return "other",
    };
    let action = match (method.as_str(), has_id) {
        ("GET", false) => {
            return if kind == Kind::User {
                "users.list"
            } else {
                "groups.list"
            }
        }
        ("GET", true) => {
            return if kind == Kind::User {
                "users.get"
            } else {
                "groups.get"
            }
        }
        ("POST", false) => "create",
        ("PUT", true) => "replace",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        _ => "",
    };
    routes::operation(kind, action)
}
