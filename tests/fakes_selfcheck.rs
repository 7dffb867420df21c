//! Tests of the test fakes themselves: every behaviour idsync's tests rely on is pinned
//! here, so a fake that drifts from `docs/gateway-api.md` fails loudly on its own
//! rather than making an idsync test pass for the wrong reason.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use support::directory::{id_map_from_bulk_response, Directory, GenSpec};
use support::fake_gateway::{
    parse_mail_address, FakeGateway, Faults, GatewayOptions, GatewayUser, LoginOutcome,
    RETRY_AFTER_GRACE,
};
use support::fake_idp::{FakeIdp, IdpFaults, IdpOptions};
use support::prism::{vendor_spec, Prism};

const STANDARD_KEY: &str = "hpk_fake_standard_key";

async fn gateway(faults: Faults) -> FakeGateway {
    FakeGateway::start(GatewayOptions {
        standard_key: Some(STANDARD_KEY.to_owned()),
        faults,
        ..GatewayOptions::default()
    })
    .await
}

/// A request as admin; returns status and JSON body (Null when empty or not JSON).
async fn call(
    gw: &FakeGateway,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    send(gw, method, path, Some(gw.admin_key()), body).await
}

async fn send(
    gw: &FakeGateway,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = Client::new().request(method, format!("{}{path}", gw.url()));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request to the fake gateway");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn gateway_auth_401_and_403() {
    let gw = gateway(Faults::default()).await;
    let body = json!({"email": "a@example.com"});
    assert_eq!(
        send(&gw, "GET", "/users", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, err) = send(&gw, "GET", "/users", Some("nope"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(err["message"].is_string());
    assert_eq!(
        send(&gw, "GET", "/serverinfo", Some(STANDARD_KEY), None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, err) = send(
        &gw,
        "POST",
        "/users",
        Some(STANDARD_KEY),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, err),
        (StatusCode::FORBIDDEN, json!({"message": "access denied"}))
    );

    // The legacy header is accepted too.
    let resp = Client::new()
        .post(format!("{}/users", gw.url()))
        .header("Api-Key", gw.admin_key())
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(gw.count("POST", "/api/users"), 2);
}

#[tokio::test]
async fn gateway_create_validation() {
    let gw = gateway(Faults::default()).await;
    let bad_json = Client::new()
        .post(format!("{}/users", gw.url()))
        .bearer_auth(gw.admin_key())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        call(&gw, "POST", "/users", Some(json!({"name": "x"})))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        call(&gw, "POST", "/users", Some(json!({"email": ""})))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (status, err) = call(
        &gw,
        "POST",
        "/users",
        Some(json!({"email": "not-an-address"})),
    )
    .await;
    assert_eq!(
        (status, err),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "invalid email"})
        )
    );

    // Go's parser takes the display-name form, and the gateway stores it verbatim.
    let (status, _) = call(
        &gw,
        "POST",
        "/users",
        Some(json!({"email": "Jo <jo@example.com>"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Database errors: 500 and nothing stored.
    let bogus = json!({"email": "s@example.com", "status": "enabled"});
    assert_eq!(
        call(&gw, "POST", "/users", Some(bogus)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let long = json!({"email": "n@example.com", "name": "x".repeat(256)});
    assert_eq!(
        call(&gw, "POST", "/users", Some(long)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let users = gw.users();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].email, "Jo <jo@example.com>");
    assert_eq!(users[0].status, "invited", "empty status means invited");
}

#[test]
fn mail_parser_approximates_go() {
    for ok in [
        "a@b",
        "Jane.Doe@Example.COM",
        "<a@b.c>",
        "Jane Doe <jane@x.io>",
        "\"q s\"@x.io",
        "ü@x.de",
    ] {
        assert!(parse_mail_address(ok).is_some(), "{ok} should parse");
    }
    for bad in [
        "", "a", "@b", "a@", "a@@b", "a b@c", ".a@b", "a..b@c", "a@b.", "a@b <c",
    ] {
        assert!(parse_mail_address(bad).is_none(), "{bad} should not parse");
    }
}

#[tokio::test]
async fn gateway_409_is_case_sensitive_and_201_id_is_not_the_subject() {
    let gw = gateway(Faults::default()).await;
    let (status, created) = call(&gw, "POST", "/users", Some(json!({"email": "John@X.com"}))).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_ne!(created["id"], "John@X.com");
    assert_eq!(
        created["groups"],
        Value::Null,
        "the echo keeps an omitted field null"
    );

    let (status, err) = call(&gw, "POST", "/users", Some(json!({"email": "John@X.com"}))).await;
    assert_eq!(
        (status, err),
        (
            StatusCode::CONFLICT,
            json!({"message": "user already exists with email John@X.com"})
        )
    );
    let (status, _) = call(
        &gw,
        "POST",
        "/users",
        Some(json!({"email": "john@x.com", "groups": ["sre"]})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a different case is a different user"
    );

    let (_, list) = call(&gw, "GET", "/users", None).await;
    let emails: Vec<&str> = list
        .as_array()
        .expect("array")
        .iter()
        .map(|u| u["email"].as_str().expect("email"))
        .collect();
    assert_eq!(
        emails,
        ["john@x.com", "John@X.com"],
        "ordered by email desc"
    );
    let (status, one) = call(&gw, "GET", "/users/John@X.com", None).await;
    assert_eq!(
        (status, &one["id"], &one["role"]),
        (StatusCode::OK, &json!("John@X.com"), &json!("standard"))
    );
    assert_eq!(
        call(&gw, "GET", "/users/JOHN@X.COM", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, groups) = call(&gw, "GET", "/users/groups", None).await;
    assert_eq!(groups, json!(["sre"]));
}

#[tokio::test]
async fn gateway_group_failure_stores_the_user_and_retry_gets_409() {
    let gw = gateway(Faults::default()).await;
    let body = json!({"email": "g@example.com", "groups": ["ok", "x".repeat(181)]});
    assert_eq!(
        call(&gw, "POST", "/users", Some(body.clone())).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let stored = gw
        .user_by_email("g@example.com")
        .expect("the user row was written");
    assert!(stored.groups.is_empty(), "the group step is all-or-nothing");
    assert_eq!(
        call(&gw, "POST", "/users", Some(body)).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(call(&gw, "GET", "/users/groups", None).await.1, Value::Null);
}

#[tokio::test]
async fn gateway_put_is_a_full_replace() {
    let gw = gateway(Faults::default()).await;
    let full = json!({"email": "p@example.com", "name": "P", "groups": ["admin", "sre"], "slack_id": "U1"});
    call(&gw, "POST", "/users", Some(full)).await;
    assert_eq!(gw.users()[0].role(), "admin");
    assert_eq!(
        call(&gw, "PUT", "/users/nobody@example.com", Some(json!({})))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(
            &gw,
            "PUT",
            "/users/p@example.com",
            Some(json!({"name": "Q"}))
        )
        .await
        .0,
        StatusCode::BAD_REQUEST
    );
    let no_status = json!({"email": "p@example.com"});
    assert_eq!(
        call(&gw, "PUT", "/users/p@example.com", Some(no_status))
            .await
            .0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let (status, user) = call(
        &gw,
        "PUT",
        "/users/p@example.com",
        Some(json!({"email": "p@example.com", "status": "inactive"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["groups"], json!([]), "omitted groups are cleared");
    assert_eq!(
        (&user["name"], &user["slack_id"], &user["status"]),
        (&json!(""), &json!(""), &json!("inactive"))
    );
}

#[tokio::test]
async fn gateway_delete_matches_the_subject_only() {
    let gw = gateway(Faults::default()).await;
    call(
        &gw,
        "POST",
        "/users",
        Some(json!({"email": "d@example.com"})),
    )
    .await;
    call(
        &gw,
        "POST",
        "/users",
        Some(json!({"email": "e@example.com"})),
    )
    .await;
    assert_eq!(
        gw.simulate_login("D@Example.com", "sub-d"),
        LoginOutcome::Matched
    );
    let d = gw.user_by_email("d@example.com").expect("d");
    assert_eq!((d.subject.as_str(), d.status.as_str()), ("sub-d", "active"));

    assert_eq!(
        call(&gw, "DELETE", "/users/d@example.com", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        gw.users().len(),
        2,
        "deleting by e-mail after login deletes nothing"
    );
    assert_eq!(
        call(&gw, "DELETE", "/users/sub-d", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&gw, "DELETE", "/users/e@example.com", None).await.0,
        StatusCode::NO_CONTENT
    );
    assert!(
        gw.users().is_empty(),
        "before login the subject is the e-mail"
    );
    assert_eq!(
        call(&gw, "DELETE", "/users/sub-d", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn gateway_login_does_not_match_a_mixed_case_address() {
    let gw = gateway(Faults::default()).await;
    gw.seed_user(GatewayUser::invited("Mixed@Example.com"));
    gw.seed_user(GatewayUser {
        status: "inactive".into(),
        ..GatewayUser::invited("off@example.com")
    });
    assert_eq!(
        gw.simulate_login("Mixed@Example.com", "sub-m"),
        LoginOutcome::CreatedNew
    );
    assert_eq!(
        gw.simulate_login("off@example.com", "sub-o"),
        LoginOutcome::Refused
    );
    assert_eq!(gw.users().len(), 3);
}

#[tokio::test]
async fn gateway_faults_are_seeded_and_retry_after_is_policed() {
    let faults = Faults {
        seed: 7,
        error_503_ratio: 0.5,
        retry_after_on_503: Some(0),
        ..Faults::default()
    };
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let gw = gateway(faults.clone()).await;
        let mut statuses = Vec::new();
        for i in 0..20 {
            statuses.push(
                call(
                    &gw,
                    "POST",
                    "/users",
                    Some(json!({"email": format!("u{i}@x.io")})),
                )
                .await
                .0,
            );
        }
        assert_eq!(
            gw.users().len(),
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CREATED)
                .count()
        );
        outcomes.push(statuses);
    }
    assert_eq!(outcomes[0], outcomes[1], "same seed, same faults");
    assert!(
        outcomes[0].contains(&StatusCode::SERVICE_UNAVAILABLE)
            && outcomes[0].contains(&StatusCode::CREATED)
    );

    let gw = gateway(Faults {
        burst_429: Some((2, 1, 30)),
        ..Faults::default()
    })
    .await;
    for i in 0..2 {
        call(
            &gw,
            "POST",
            "/users",
            Some(json!({"email": format!("b{i}@x.io")})),
        )
        .await;
    }
    let resp = Client::new()
        .post(format!("{}/users", gw.url()))
        .bearer_auth(gw.admin_key())
        .json(&json!({"email": "b2@x.io"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "30");
    assert_eq!(gw.retry_after_violations(), 0);
    // Past the grace for requests already in flight, but well inside the 30 s.
    tokio::time::sleep(RETRY_AFTER_GRACE * 2).await;
    call(&gw, "GET", "/users", None).await;
    assert_eq!(
        gw.retry_after_violations(),
        1,
        "an immediate request ignores Retry-After"
    );

    // A client hammering through a burst is caught even though each retry lands
    // within the grace of the previous 429: the window keeps its first start.
    let hammered = gateway(Faults {
        burst_429: Some((0, 10, 30)),
        ..Faults::default()
    })
    .await;
    for _ in 0..4 {
        let (status, _) = call(
            &hammered,
            "POST",
            "/users",
            Some(json!({"email": "h@x.io"})),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        tokio::time::sleep(RETRY_AFTER_GRACE * 3 / 5).await;
    }
    assert!(hammered.retry_after_violations() >= 2);

    gw.set_faults(Faults {
        fail_after_create_ratio: 1.0,
        ..Faults::default()
    });
    let body = json!({"email": "half@x.io"});
    assert_eq!(
        call(&gw, "POST", "/users", Some(body.clone())).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(gw.user_by_email("half@x.io").is_some());
    assert_eq!(
        call(&gw, "POST", "/users", Some(body.clone())).await.0,
        StatusCode::CONFLICT
    );
    let last = gw.requests().pop().expect("recorded");
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.status),
        ("POST", "/api/users", 409)
    );
    assert_eq!(last.body, Some(body));
}

#[tokio::test]
async fn gateway_stall_trips_client_timeouts_and_concurrency_is_measured() {
    let gw = gateway(Faults {
        stall: Some((2, Duration::from_secs(5))),
        latency: Duration::from_millis(100),
        ..Faults::default()
    })
    .await;
    let client = Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .expect("client");
    let post = |email: &str| {
        client
            .post(format!("{}/users", gw.url()))
            .bearer_auth(gw.admin_key())
            .json(&json!({ "email": email }))
            .send()
    };
    assert!(post("s1@x.io").await.is_ok());
    assert!(post("s2@x.io").await.expect_err("stalled").is_timeout());
    assert!(
        gw.user_by_email("s2@x.io").is_some(),
        "the work was done before the stall"
    );

    let reads = (0..4).map(|_| {
        client
            .get(format!("{}/serverinfo", gw.url()))
            .bearer_auth(gw.admin_key())
            .send()
    });
    for resp in futures::future::join_all(reads).await {
        assert_eq!(resp.expect("serverinfo").status(), StatusCode::OK);
    }
    assert!(
        gw.max_concurrent() >= 2,
        "latency makes concurrent reads overlap"
    );
}

fn small_spec() -> GenSpec {
    GenSpec {
        users: 25,
        groups: 4,
        groups_per_user: 2,
        inactive_every: Some(5),
        no_email_every: Some(7),
        duplicate_email_pairs: 2,
        mixed_case: true,
        seed: 42,
    }
}

#[test]
fn directory_is_deterministic_and_expectations_follow_the_rules() {
    let dir = Directory::generate(small_spec());
    assert_eq!(dir, Directory::generate(small_spec()));
    assert_ne!(
        dir,
        Directory::generate(GenSpec {
            seed: 43,
            ..small_spec()
        })
    );
    assert!(
        dir.users.iter().all(|u| u.get("groups").is_none()),
        "memberships live in Groups only"
    );

    let expected = dir.expected_created();
    // 25 users: 5 inactive (5,10,..25), 3 without e-mail (7,14,21), 2 pairs share one.
    assert_eq!(expected.len(), 25 - 5 - 3 - 4);
    assert!(expected.keys().all(|e| *e == e.to_lowercase()));
    assert!(dir
        .users
        .iter()
        .filter_map(Directory::email_of)
        .any(|e| e != e.to_lowercase()));
    assert!(expected
        .values()
        .all(|g| g.len() == 2 && g.windows(2).all(|w| w[0] < w[1])));
    let no_email = &dir.users[6];
    assert!(Directory::email_of(no_email).is_none());
    assert!(!no_email["userName"]
        .as_str()
        .expect("userName")
        .contains('@'));

    let chunks = dir.users_bulk_chunks(10);
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[2]["Operations"].as_array().expect("ops").len(), 5);
    assert!(chunks[0]["Operations"][0]["data"].get("id").is_none());

    // Pretend the server assigned "srv-<bulkId>".
    let response = json!({"Operations": dir.users.iter().map(|u| json!({
        "bulkId": u["id"], "location": format!("http://h/v2/Users/srv-{}", u["id"].as_str().expect("id"))
    })).collect::<Vec<_>>()});
    let id_map = id_map_from_bulk_response(&response);
    let groups = dir.groups_bulk_chunks(1000, &id_map);
    let member = &groups[0]["Operations"][0]["data"]["members"][0]["value"];
    assert!(member.as_str().expect("member").starts_with("srv-"));

    let file = tempfile::NamedTempFile::new().expect("temp file");
    dir.write_json(file.path()).expect("write");
    let back: Value =
        serde_json::from_slice(&std::fs::read(file.path()).expect("read")).expect("json");
    assert_eq!(back["users"].as_array().map(Vec::len), Some(25));
}

fn idp_options() -> IdpOptions {
    IdpOptions {
        max_page_size: 10,
        ..IdpOptions::default()
    }
}

/// Walks `/Users` the way a careful client does: advance by what was received, stop
/// at `totalResults` or at an empty page.
async fn walk_users(idp: &FakeIdp, token: &str, count: usize) -> (Vec<String>, Vec<StatusCode>) {
    let (mut ids, mut statuses, mut start) = (Vec::new(), Vec::new(), 1);
    loop {
        let resp = Client::new()
            .get(format!(
                "{}/Users?startIndex={start}&count={count}",
                idp.scim_url()
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("scim request");
        statuses.push(resp.status());
        if resp.status() != StatusCode::OK {
            return (ids, statuses);
        }
        let page: Value = resp.json().await.expect("json");
        let resources = page["Resources"].as_array().expect("Resources");
        assert_eq!(page["itemsPerPage"], resources.len());
        assert_eq!(page["startIndex"], start);
        ids.extend(
            resources
                .iter()
                .map(|u| u["id"].as_str().expect("id").to_owned()),
        );
        start += resources.len();
        if resources.is_empty() || start > page["totalResults"].as_u64().expect("total") as usize {
            return (ids, statuses);
        }
    }
}

#[tokio::test]
async fn idp_discovery_works_with_the_openidconnect_crate() {
    use openidconnect::core::{CoreClient, CoreProviderMetadata};
    use openidconnect::{AuthType, ClientId, ClientSecret, IssuerUrl, OAuth2TokenResponse};

    let idp = FakeIdp::start(
        IdpOptions {
            token_ttl_secs: 90,
            ..idp_options()
        },
        Directory::default(),
    )
    .await;
    let http = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let issuer = IssuerUrl::new(idp.issuer()).expect("issuer url");
    let meta = CoreProviderMetadata::discover_async(issuer, &http)
        .await
        .expect("discovery");
    for auth in [AuthType::BasicAuth, AuthType::RequestBody] {
        let client = CoreClient::from_provider_metadata(
            meta.clone(),
            ClientId::new(idp.client_id().to_owned()),
            Some(ClientSecret::new(idp.client_secret().to_owned())),
        )
        .set_auth_type(auth);
        let token = client
            .exchange_client_credentials()
            .expect("token endpoint known")
            .request_async(&http)
            .await
            .expect("client credentials token");
        assert_eq!(token.expires_in(), Some(Duration::from_secs(90)));
    }
    assert_eq!(idp.token_requests(), 2);
}

#[tokio::test]
async fn idp_refuses_a_bad_secret() {
    let idp = FakeIdp::start(idp_options(), Directory::default()).await;
    let token = |secret: &str| {
        Client::new()
            .post(idp.token_url())
            .basic_auth(idp.client_id(), Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    let resp = token("wrong").await.expect("token request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.expect("json"),
        json!({"error": "invalid_client"})
    );
    let ok: Value = token(idp.client_secret())
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    assert_eq!(ok["token_type"], "Bearer");
    assert_eq!(idp.token_requests(), 2);
}

#[tokio::test]
async fn idp_pages_users_and_groups_and_checks_tokens() {
    let dir = Directory::generate(small_spec());
    let idp = FakeIdp::start(idp_options(), dir.clone()).await;
    let all: Vec<String> = dir
        .users
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect();

    let resp = Client::new()
        .get(format!("{}/Users", idp.scim_url()))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let token = idp.issue_token();
    let (ids, _) = walk_users(&idp, &token, 50).await;
    assert_eq!(
        ids, all,
        "count is capped at max_page_size and paging is complete"
    );
    assert_eq!(idp.scim_calls()[1].count, 10);

    let groups: Value = Client::new()
        .get(format!("{}/Groups?startIndex=3&count=5", idp.scim_url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("groups")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (
            groups["totalResults"].as_u64(),
            groups["itemsPerPage"].as_u64()
        ),
        (Some(4), Some(2))
    );

    idp.expire_tokens_now();
    assert_eq!(
        walk_users(&idp, &token, 10).await.1,
        [StatusCode::UNAUTHORIZED]
    );
}

#[tokio::test]
async fn idp_scripted_paging_faults() {
    let dir = Directory::generate(small_spec());
    let idp = FakeIdp::start(idp_options(), dir).await;
    let token = idp.issue_token();

    idp.set_faults(IdpFaults {
        fail_users_at_start_index: Some(11),
        fail_users_times: Some(1),
        ..IdpFaults::default()
    });
    let (ids, statuses) = walk_users(&idp, &token, 10).await;
    assert_eq!(
        (ids.len(), statuses.last()),
        (10, Some(&StatusCode::INTERNAL_SERVER_ERROR))
    );
    assert_eq!(
        walk_users(&idp, &token, 10).await.0.len(),
        25,
        "the failure budget is spent"
    );

    idp.set_faults(IdpFaults {
        truncate_users_at: Some(15),
        ..IdpFaults::default()
    });
    let (ids, _) = walk_users(&idp, &token, 10).await;
    assert_eq!(ids.len(), 15, "an empty page arrives before totalResults");

    idp.set_faults(IdpFaults {
        duplicate_page: Some(11),
        ..IdpFaults::default()
    });
    let (ids, _) = walk_users(&idp, &token, 10).await;
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &ids {
        *seen.entry(id).or_default() += 1;
    }
    assert_eq!(
        (ids.len(), seen.len()),
        (35, 25),
        "page 1 is served twice, nothing is lost"
    );
}

/// The shared Prism proxy for vendor documents: a request within Google's document
/// passes to the fake, one outside it (`maxResults` over 500) is refused and counted.
#[tokio::test]
async fn prism_proxy_checks_requests_against_a_vendor_document() {
    let fake = axum::Router::new().route(
        "/admin/directory/v1/users",
        axum::routing::get(|| async {
            axum::Json(json!({"kind": "admin#directory#users", "users": []}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, fake).await });
    let prism = Prism::proxy(&vendor_spec("google"), &upstream).await;
    let users = |max: u32| {
        format!(
            "{}/admin/directory/v1/users?customer=my_customer&maxResults={max}",
            prism.url()
        )
    };
    let client = Client::new();
    let get = |url: String| client.get(url).bearer_auth("t").send();
    assert_eq!(
        get(users(500)).await.expect("sent").status(),
        StatusCode::OK
    );
    assert!(prism.violations().is_empty(), "{}", prism.log_text());
    let refused = get(users(501)).await.expect("sent").status();
    assert_eq!(refused, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(prism.violations().len(), 1, "{}", prism.log_text());
}

/// The fakes' assertion check accepts what idsync signs and nothing else.
#[test]
fn jwt_assertions_are_verified_by_signature_and_claims() {
    use idsync::config::{Secret, SigningKey};
    use support::jwt::{verify_assertion, Expected, TEST_PRIVATE_KEY, TEST_PUBLIC_KEY};

    let key = SigningKey::from_pem("test", &Secret::new(TEST_PRIVATE_KEY)).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = |aud: &str, exp: u64| json!({"iss": "c", "sub": "c", "aud": aud, "iat": now, "exp": exp, "jti": "j1"});
    let expect = Expected {
        issuer: "c",
        subject: "c",
        audience: "http://127.0.0.1/token",
    };
    let good = key
        .sign(&claims(expect.audience, now + 300))
        .expect("signed");
    verify_assertion(&good, TEST_PUBLIC_KEY, &expect).expect("valid");
    let other_audience = key
        .sign(&claims("http://elsewhere/token", now + 300))
        .expect("signed");
    let expired = key
        .sign(&claims(expect.audience, now - 600))
        .expect("signed");
    let mut tampered = good.clone();
    tampered.insert(good.len() - 2, 'A');
    for bad in [other_audience, expired, tampered] {
        assert!(verify_assertion(&bad, TEST_PUBLIC_KEY, &expect).is_err());
    }
}
