//! Push mode in-process: an IdP pushes users and groups to idsync's SCIM endpoint,
//! and the runs carry them to the stateful fake gateway through the same pipeline
//! as a pull run. Also what the endpoint refuses, and that a refused request
//! stores nothing.

mod support;

use std::net::SocketAddr;

use idsync::config::{Config, SourceKind};
use idsync::push::{Kind, PushStore};
use idsync::sync::{RunMode, Syncer};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::fake_gateway::{FakeGateway, Faults, GatewayOptions};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "push-token-0123456789abcdef";
const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
const PATCH: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The fake gateway, idsync's endpoint on a free port, and a syncer on its store.
struct Pushed {
    gateway: FakeGateway,
    config: Config,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _shutdown: tokio_util::sync::DropGuard,
}

impl Pushed {
    async fn start() -> Self {
        let gateway = FakeGateway::start(GatewayOptions::default()).await;
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[source]
kind = "push"
[push]
listen = "127.0.0.1:0"
bearer_token = "{TOKEN}"
max_body_bytes = 65536
[target]
url = "{url}"
api_key = "{key}"
rate_limit_per_second = 1000
burst = 50
max_attempts = 1
[cache]
path = "{cache}"
[sync]
update_existing = true
deprovision = "deactivate"
max_deactivations = 5
[groups]
delete_removed = true
"#,
            url = gateway.url(),
            key = gateway.admin_key(),
            cache = dir.path().join("cache").display(),
        );
        let config = Config::parse(&text, "test", &|_| None).unwrap();
        let SourceKind::Push(push) = &config.source.kind else {
            panic!("a push source")
        };
        let store = PushStore::open(&push.store_path).unwrap();
        let shutdown = CancellationToken::new();
        let addr: SocketAddr =
            idsync::push::serve(push, store, config.groups.clone(), shutdown.clone())
                .await
                .unwrap();
        Self {
            gateway,
            config,
            base: format!("http://{addr}/scim/v2"),
            http: reqwest::Client::new(),
            _dir: dir,
            _shutdown: shutdown.drop_guard(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (status, answer) = self.send(reqwest::Method::POST, path, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        answer
    }

    async fn patch(&self, path: &str, operations: Value) -> (StatusCode, Value) {
        let body = json!({"schemas": [PATCH], "Operations": operations});
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }

    /// One run, as the daemon makes it after a push (`whole`: as the schedule does).
    async fn sync(&self, whole: bool) -> idsync::sync::Summary {
        let syncer = Syncer::new(&self.config, RunMode::default()).unwrap();
        let shutdown = CancellationToken::new();
        let result = if whole {
            syncer.reconcile(&shutdown).await
        } else {
            syncer.run_once(&shutdown).await
        };
        result.unwrap_or_else(|aborted| panic!("aborted: {}", aborted.error))
    }

    fn store(&self) -> std::sync::Arc<PushStore> {
        let SourceKind::Push(push) = &self.config.source.kind else {
            panic!("a push source")
        };
        PushStore::open(&push.store_path).unwrap()
    }
}

fn user(name: &str) -> Value {
    json!({"schemas": [USER], "userName": name, "name": {"givenName": "A", "familyName": name},
        "emails": [{"value": name, "type": "work", "primary": true}], "active": true})
}

#[tokio::test]
async fn pushed_users_and_groups_reach_the_gateway_and_a_delete_deactivates() {
    let pushed = Pushed::start().await;
    let ada = pushed.post("/Users", user("Ada@Example.com")).await;
    let bob = pushed.post("/Users", user("bob@example.com")).await;
    let (ada_id, bob_id) = (ada["id"].as_str().unwrap(), bob["id"].as_str().unwrap());
    let ops = pushed
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "ops", "members": [{"value": ada_id}]}),
        )
        .await;
    let summary = pushed.sync(false).await;
    assert_eq!(summary.counts.created, 2, "{summary:?}");
    assert_eq!(
        pushed
            .gateway
            .user_by_email("ada@example.com")
            .unwrap()
            .groups,
        vec!["ops".to_owned()]
    );

    let ops_path = format!("/Groups/{}", ops["id"].as_str().unwrap());
    let (status, _) = pushed
        .patch(
            &ops_path,
            json!([{"op": "Add", "path": "members", "value": [{"value": bob_id}]},
            {"op": "remove", "path": format!("members[value eq \"{ada_id}\"]")}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = pushed
        .send(reqwest::Method::DELETE, &format!("/Users/{ada_id}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let summary = pushed.sync(false).await;
    assert_eq!(
        (summary.counts.updated, summary.counts.deactivated),
        (1, 1),
        "{summary:?}"
    );
    assert_eq!(
        pushed
            .gateway
            .user_by_email("ada@example.com")
            .unwrap()
            .status,
        "inactive"
    );
    assert_eq!(
        pushed
            .gateway
            .user_by_email("bob@example.com")
            .unwrap()
            .groups,
        vec!["ops".to_owned()]
    );
    let again = pushed.sync(true).await;
    assert_eq!(
        again.counts.unchanged, 1,
        "the reconcile finds nothing to do: {again:?}"
    );
}

#[tokio::test]
async fn a_pushed_group_is_created_empty_and_deleted_when_the_idp_deletes_it() {
    let pushed = Pushed::start().await;
    pushed
        .gateway
        .add_to_group("nobody@example.com", "made-in-gateway");
    let empty = pushed
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "db-readers"}),
        )
        .await;
    let summary = pushed.sync(false).await;
    assert_eq!(summary.groups_created, vec!["db-readers".to_owned()]);
    assert!(pushed.gateway.groups().contains(&"db-readers".to_owned()));
    let path = format!("/Groups/{}", empty["id"].as_str().unwrap());
    let (status, _) = pushed.send(reqwest::Method::DELETE, &path, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let summary = pushed.sync(true).await;
    assert_eq!(summary.groups_deleted, vec!["db-readers".to_owned()]);
    assert_eq!(
        pushed.gateway.groups(),
        vec!["made-in-gateway".to_owned()],
        "idsync deletes only what it created"
    );
}

#[tokio::test]
async fn a_failing_gateway_keeps_the_push_queued_until_a_run_succeeds() {
    let pushed = Pushed::start().await;
    pushed.gateway.set_faults(Faults {
        error_503_ratio: 1.0,
        ..Faults::default()
    });
    pushed.post("/Users", user("cy@example.com")).await;
    let failed = pushed.sync(false).await;
    assert_eq!(failed.counts.failed, 1, "{failed:?}");
    assert!(pushed.gateway.user_by_email("cy@example.com").is_none());
    pushed.gateway.set_faults(Faults::default());
    let retried = pushed.sync(false).await;
    assert_eq!(retried.counts.created, 1, "the queue was kept: {retried:?}");
    let idle = pushed.sync(false).await;
    assert_eq!(
        idle.directory_users, 0,
        "nothing is queued once done: {idle:?}"
    );
}

#[tokio::test]
async fn entra_deactivates_with_a_string_and_okta_looks_users_up_by_filter() {
    let pushed = Pushed::start().await;
    let dee = pushed.post("/Users", user("dee@example.com")).await;
    let path = format!("/Users/{}", dee["id"].as_str().unwrap());
    let (status, found) = pushed
        .send(
            reqwest::Method::GET,
            "/Users?filter=userName%20eq%20%22DEE@example.com%22&startIndex=1&count=100",
            None,
        )
        .await;
    assert_eq!(
        (status, found["totalResults"].as_u64()),
        (StatusCode::OK, Some(1))
    );
    pushed.sync(false).await;
    let (status, patched) = pushed
        .patch(
            &path,
            json!([{"op": "Replace", "path": "active", "value": "False"}]),
        )
        .await;
    assert_eq!(
        (status, &patched["active"]),
        (StatusCode::OK, &json!(false))
    );
    pushed.sync(false).await;
    assert_eq!(
        pushed
            .gateway
            .user_by_email("dee@example.com")
            .unwrap()
            .status,
        "inactive"
    );
    let (status, conflict) = pushed
        .send(
            reqwest::Method::POST,
            "/Users",
            Some(user("Dee@example.com")),
        )
        .await;
    assert_eq!(
        (status, &conflict["scimType"]),
        (StatusCode::CONFLICT, &json!("uniqueness"))
    );
}

#[tokio::test]
async fn hostile_requests_get_a_clear_4xx_and_store_nothing() {
    let pushed = Pushed::start().await;
    let url = format!("{}/Users", pushed.base);
    for token in [None, Some("wrong"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let mut request = pushed.http.post(&url).json(&user("eve@example.com"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(
            request.send().await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let huge = json!({"schemas": [USER], "userName": "x".repeat(10 * 1024 * 1024)});
    let (status, _) = pushed
        .send(reqwest::Method::POST, "/Users", Some(huge))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let nested = format!("{}1{}", "[".repeat(5000), "]".repeat(5000));
    let response = pushed
        .http
        .post(&url)
        .bearer_auth(TOKEN)
        .body(nested)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let cases = [
        (
            reqwest::Method::GET,
            "/Users?filter=userName%20eq%20%22a%22%20or%201%20eq%201",
            None,
            "\"or\"",
        ),
        (
            reqwest::Method::POST,
            "/Users",
            Some(json!({"schemas": [USER], "userName": "eve", "isAdmin": true})),
            "isAdmin",
        ),
        (
            reqwest::Method::POST,
            "/Groups",
            Some(json!({"schemas": [GROUP], "displayName": "admin"})),
            "admin group",
        ),
        (
            reqwest::Method::POST,
            "/Users",
            Some(json!({"schemas": ["urn:evil"], "userName": "eve"})),
            "urn:evil",
        ),
    ];
    for (method, path, body, needle) in cases {
        let (status, answer) = pushed.send(method, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {answer}");
        let detail = answer["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{detail}");
        assert!(answer["scimType"].is_string(), "{answer}");
    }
    let store = pushed.store();
    assert_eq!(
        store.all(Kind::User).count() + store.all(Kind::Group).count(),
        0
    );
    assert_eq!(store.head(), 0, "nothing was queued");
    let summary = pushed.sync(true).await;
    assert_eq!(summary.directory_users, 0);
    assert!(pushed.gateway.users().is_empty());
}

#[tokio::test]
async fn with_a_certificate_the_endpoint_speaks_only_tls() {
    let tls = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/push/tls");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[source]
kind = "push"
[push]
listen = "127.0.0.1:0"
bearer_token = "{TOKEN}"
tls_cert_file = "{cert}"
tls_key_file = "{key}"
[target]
url = "http://127.0.0.1:9/api"
api_key = "hpk_unused"
[cache]
path = "{cache}"
"#,
        cert = tls.join("tls.crt").display(),
        key = tls.join("tls.key").display(),
        cache = dir.path().display(),
    );
    let config = Config::parse(&text, "test", &|_| None).unwrap();
    let SourceKind::Push(push) = &config.source.kind else {
        panic!("a push source")
    };
    let store = PushStore::open(&push.store_path).unwrap();
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let addr = idsync::push::serve(push, store, config.groups.clone(), shutdown)
        .await
        .unwrap();
    let pem = std::fs::read(tls.join("ca.crt")).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{addr}/scim/v2/ServiceProviderConfig");
    let answer = client.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    let plain = reqwest::Client::new()
        .get(url.replace("https://", "http://"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP gets no answer: {plain:?}");
}

#[tokio::test]
async fn a_group_cannot_be_renamed_or_replaced_into_the_admin_group() {
    let pushed = Pushed::start().await;
    let eve = pushed.post("/Users", user("eve@example.com")).await;
    let members = json!([{"value": eve["id"]}]);
    let ops = pushed
        .post(
            "/Groups",
            json!({"schemas": [GROUP], "displayName": "ops", "members": members}),
        )
        .await;
    let path = format!("/Groups/{}", ops["id"].as_str().unwrap());
    let (status, _) = pushed
        .patch(
            &path,
            json!([{"op": "replace", "path": "displayName", "value": "admin"}]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let replaced = json!({"schemas": [GROUP], "displayName": "admin", "members": members});
    let (status, _) = pushed
        .send(reqwest::Method::PUT, &path, Some(replaced))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, stored) = pushed.send(reqwest::Method::GET, &path, None).await;
    assert_eq!(stored["displayName"], "ops");
    pushed.sync(true).await;
    let eve = pushed.gateway.user_by_email("eve@example.com").unwrap();
    assert_eq!(eve.groups, vec!["ops".to_owned()], "nothing escalated");
}
