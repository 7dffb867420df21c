//! Tests of the JumpCloud and Auth0 fakes themselves: each documented behaviour the
//! source tests rely on (tests/peers/README.md lists the sources) is pinned here, so a
//! fake that drifts fails on its own instead of letting a source test pass for the
//! wrong reason.

mod support;

use std::io::Read as _;

use reqwest::{Client, StatusCode};
use serde_json::Value;
use support::fake_auth0::{generate as auth0_directory, Auth0Options, FakeAuth0};
use support::fake_jumpcloud::{generate as jumpcloud_directory, FakeJumpCloud, JumpCloudFaults};

async fn json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn token(auth0: &FakeAuth0, secret: &str, audience: &str) -> (StatusCode, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", auth0.client_id()),
        ("client_secret", secret),
        ("audience", audience),
    ];
    let url = format!("{}/oauth/token", auth0.url());
    json(
        Client::new()
            .post(url)
            .form(&form)
            .send()
            .await
            .expect("token"),
    )
    .await
}

async fn bearer(auth0: &FakeAuth0) -> String {
    let audience = format!("{}/api/v2/", auth0.url());
    let (_, answer) = token(auth0, auth0.client_secret(), &audience).await;
    answer["access_token"].as_str().expect("a token").to_owned()
}

async fn get(auth0: &FakeAuth0, token: &str, path: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", auth0.url());
    json(
        Client::new()
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .expect("get"),
    )
    .await
}

#[tokio::test]
async fn auth0_tokens_need_the_secret_and_the_management_api_audience() {
    let auth0 = FakeAuth0::start(Auth0Options::default(), auth0_directory(3)).await;
    let audience = format!("{}/api/v2/", auth0.url());
    assert_eq!(
        token(&auth0, "wrong", &audience).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _) = token(&auth0, auth0.client_secret(), "https://other/api/").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(auth0.counts().wrong_audience, 1);
    let (status, answer) = token(&auth0, auth0.client_secret(), &audience).await;
    assert_eq!(
        (status, answer["token_type"].as_str()),
        (StatusCode::OK, Some("Bearer"))
    );
    assert_eq!(
        get(&auth0, "not-issued", "/api/v2/users").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn auth0_pages_only_through_the_first_thousand_users() {
    let auth0 = FakeAuth0::start(Auth0Options::default(), auth0_directory(1500)).await;
    let token = bearer(&auth0).await;
    let last = "/api/v2/users?page=9&per_page=100&include_totals=true";
    let (status, page) = get(&auth0, &token, last).await;
    assert_eq!(
        (status, page["total"].as_u64()),
        (StatusCode::OK, Some(1500))
    );
    assert_eq!(page["users"].as_array().map(Vec::len), Some(100));
    let (status, refused) = get(&auth0, &token, "/api/v2/users?page=10&per_page=100").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(refused["message"]
        .as_str()
        .is_some_and(|m| m.contains("first 1000 records")));
    let too_big = get(&auth0, &token, "/api/v2/users?page=0&per_page=101").await;
    assert_eq!(too_big.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn auth0_checkpoint_paging_reaches_every_member_once() {
    let auth0 = FakeAuth0::start(Auth0Options::default(), auth0_directory(700)).await;
    let token = bearer(&auth0).await;
    let mut seen = Vec::new();
    let mut from = String::new();
    loop {
        let path = format!("/api/v2/roles/rol_dev/users?take=100{from}");
        let (status, page) = get(&auth0, &token, &path).await;
        assert_eq!(status, StatusCode::OK);
        seen.extend(page["users"].as_array().expect("users").iter().cloned());
        match page["next"].as_str() {
            Some(next) => from = format!("&from={next}"),
            None => break,
        }
    }
    let expected = auth0.directory().roles[0].members.clone();
    let ids: Vec<String> = seen
        .iter()
        .map(|u| u["user_id"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(ids, expected, "every member once, in order");
    assert_eq!(ids.len(), 234);
}

#[tokio::test]
async fn auth0_rate_headers_come_with_every_answer_and_a_spent_window_answers_429() {
    let options = Auth0Options {
        rate_limit: 3,
        ..Auth0Options::default()
    };
    let auth0 = FakeAuth0::start(options, auth0_directory(3)).await;
    let token = bearer(&auth0).await;
    let mut throttled = 0;
    for _ in 0..10 {
        let url = format!("{}/api/v2/roles", auth0.url());
        let response = Client::new()
            .get(url)
            .bearer_auth(&token)
            .send()
            .await
            .expect("get");
        for header in [
            "x-ratelimit-limit",
            "x-ratelimit-remaining",
            "x-ratelimit-reset",
        ] {
            assert!(response.headers().contains_key(header), "{header}");
        }
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            throttled += 1;
            assert_eq!(response.headers()["x-ratelimit-remaining"], "0");
        }
    }
    assert!(throttled > 0);
    assert_eq!(auth0.counts().rate_violations, throttled);
}

#[tokio::test]
async fn auth0_export_jobs_complete_after_polls_and_leave_a_gzip_ndjson_file() {
    let auth0 = FakeAuth0::start(Auth0Options::default(), auth0_directory(25)).await;
    let token = bearer(&auth0).await;
    let body =
        serde_json::json!({"format": "json", "fields": [{"name": "user_id"}, {"name": "email"}]});
    let url = format!("{}/api/v2/jobs/users-exports", auth0.url());
    let created = Client::new()
        .post(url)
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await;
    let (status, job) = json(created.expect("create")).await;
    assert_eq!(
        (status, job["status"].as_str()),
        (StatusCode::CREATED, Some("pending"))
    );
    let path = format!("/api/v2/jobs/{}", job["id"].as_str().expect("id"));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(get(&auth0, &token, &path).await.1);
    }
    let said: Vec<&str> = statuses
        .iter()
        .filter_map(|j| j["status"].as_str())
        .collect();
    assert_eq!(said, ["pending", "processing", "completed"]);
    let location = statuses[2]["location"].as_str().expect("location");
    let file = reqwest::get(location)
        .await
        .expect("download")
        .bytes()
        .await
        .expect("file");
    let mut text = String::new();
    flate2::read::GzDecoder::new(&file[..])
        .read_to_string(&mut text)
        .expect("gzip");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    assert_eq!(lines.len(), 25);
    assert_eq!(
        lines[0].as_object().map(|o| o.len()),
        Some(2),
        "only the fields asked for"
    );
    assert_eq!(auth0.counts().token_sent_to_download, 0);
}

#[tokio::test]
async fn jumpcloud_wants_its_key_and_org_pages_by_skip_and_resolves_nesting() {
    let jumpcloud = FakeJumpCloud::start("k", Some("org1"), jumpcloud_directory(250)).await;
    let get = |path: &str, key: &str, org: &str| {
        let request = Client::new()
            .get(format!("{}{path}", jumpcloud.url()))
            .header("x-api-key", key)
            .header("x-org-id", org);
        async move { json(request.send().await.expect("get")).await }
    };
    assert_eq!(
        get("/api/systemusers", "bad", "org1").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/systemusers", "k", "org2").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get("/api/systemusers?limit=101", "k", "org1").await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, page) = get("/api/systemusers?limit=100&skip=200&sort=_id", "k", "org1").await;
    assert_eq!(page["totalCount"], 250);
    assert_eq!(page["results"].as_array().map(Vec::len), Some(50));
    // eng nests sre: its membership holds both groups' users.
    let (_, eng) = get(
        "/api/v2/usergroups/g-eng/membership?limit=100&skip=0",
        "k",
        "org1",
    )
    .await;
    let ids: Vec<&str> = eng
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&support::fake_jumpcloud::object_id(0).as_str()),
        "sre's user 0"
    );
    assert!(
        ids.contains(&support::fake_jumpcloud::object_id(1).as_str()),
        "eng's user 1"
    );
    jumpcloud.set_faults(JumpCloudFaults {
        throttle_every: Some(1),
        ..JumpCloudFaults::default()
    });
    let throttled = Client::new()
        .get(format!("{}/api/v2/usergroups", jumpcloud.url()))
        .header("x-api-key", "k")
        .header("x-org-id", "org1")
        .send()
        .await
        .expect("get");
    assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(throttled.headers()["retry-after"], "1");
}
