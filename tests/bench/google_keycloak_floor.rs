//! The floor that idsync's Google and Keycloak reads are compared with
//! (`tests/bench/google_keycloak`): a plain reqwest client gets a token and walks the
//! same pages idsync walks, in the same order and with the same concurrency —
//! the groups, each group's members four listings at a time (Keycloak: the
//! group tree a level at a time, four children listings at once, and the user
//! count before and after), then the users one page after the other. It reads
//! only what paging needs from each body (`serde_json::Value`): the next page
//! token, the group ids, the page's length.
//!
//! Usage: google_keycloak_floor google --url URL --key-file PATH [--page-size 500]
//!        google_keycloak_floor keycloak --url URL [--realm acme] [--client-secret kc-secret]
//!                     [--page-size 500]
//!
//! Prints one JSON object on stdout: wall time, requests, bytes.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde_json::{json, Value};

const IN_FLIGHT: usize = 4;
const USAGE: &str = "usage: google_keycloak_floor google|keycloak --url URL [--key-file PATH] \
                     [--realm acme] [--client-secret kc-secret] [--page-size 500]";

struct Walker {
    client: reqwest::Client,
    token: String,
    requests: AtomicUsize,
    bytes: AtomicUsize,
}

impl Walker {
    async fn get(&self, url: &str) -> Result<Value, String> {
        let response = (self.client.get(url).bearer_auth(&self.token).send().await)
            .map_err(|err| format!("GET {url}: {err}"))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: {}", response.status()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|err| format!("GET {url}: {err}"))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(body.len(), Ordering::Relaxed);
        serde_json::from_slice(&body).map_err(|err| format!("GET {url}: {err}"))
    }

    /// Google: every page of `url` by `pageToken`; the `field` entries.
    async fn tokens(&self, url: &str, field: &str) -> Result<Vec<Value>, String> {
        let (mut entries, mut next) = (Vec::new(), None::<String>);
        loop {
            let mut page = match &next {
                None => self.get(url).await?,
                Some(token) => self.get(&format!("{url}&pageToken={token}")).await?,
            };
            if let Value::Array(listed) = page[field].take() {
                entries.extend(listed);
            }
            next = page["nextPageToken"].as_str().map(str::to_owned);
            if next.is_none() {
                return Ok(entries);
            }
        }
    }

    /// Keycloak: every page of `url` by `first`/`max`.
    async fn offsets(&self, url: &str, max: usize) -> Result<Vec<Value>, String> {
        let mut entries = Vec::new();
        loop {
            let separator = if url.contains('?') { '&' } else { '?' };
            let page = self
                .get(&format!(
                    "{url}{separator}first={}&max={max}",
                    entries.len()
                ))
                .await?;
            let Value::Array(page) = page else {
                return Err(format!("{url}: not a list"));
            };
            let last = page.len() < max;
            entries.extend(page);
            if last {
                return Ok(entries);
            }
        }
    }
}

fn ids(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

async fn google(walker: &Walker, url: &str, page: usize) -> Result<usize, String> {
    let root = format!("{url}/admin/directory/v1");
    let groups = walker
        .tokens(
            &format!(
                "{root}/groups?customer=my_customer&maxResults={}",
                page.min(200)
            ),
            "groups",
        )
        .await?;
    let listings = futures::stream::iter(ids(&groups)).map(|id| {
        let url = format!("{root}/groups/{id}/members?maxResults={}", page.min(200));
        async move { walker.tokens(&url, "members").await }
    });
    listings.buffered(IN_FLIGHT).try_collect::<Vec<_>>().await?;
    let users = walker
        .tokens(
            &format!("{root}/users?customer=my_customer&maxResults={page}&projection=basic"),
            "users",
        )
        .await?;
    Ok(users.len())
}

async fn keycloak(walker: &Walker, url: &str, realm: &str, page: usize) -> Result<usize, String> {
    let root = format!("{url}/admin/realms/{realm}");
    let mut level = walker.offsets(&format!("{root}/groups"), page).await?;
    let mut all = Vec::new();
    while !level.is_empty() {
        let parents: Vec<String> = level
            .iter()
            .filter(|g| g["subGroupCount"].as_u64().unwrap_or(0) > 0)
            .filter_map(|g| g["id"].as_str().map(str::to_owned))
            .collect();
        all.extend(ids(&level));
        let children = futures::stream::iter(parents).map(|id| {
            let url = format!("{root}/groups/{id}/children");
            async move { walker.offsets(&url, page).await }
        });
        let children: Vec<Vec<Value>> = children.buffered(IN_FLIGHT).try_collect().await?;
        level = children.into_iter().flatten().collect();
    }
    let listings = futures::stream::iter(all).map(|id| {
        let url = format!("{root}/groups/{id}/members?briefRepresentation=true");
        async move { walker.offsets(&url, page).await }
    });
    listings.buffered(IN_FLIGHT).try_collect::<Vec<_>>().await?;
    walker.get(&format!("{root}/users/count")).await?;
    let users = walker
        .offsets(&format!("{root}/users?briefRepresentation=false"), page)
        .await?;
    walker.get(&format!("{root}/users/count")).await?;
    Ok(users.len())
}

/// The service account's token: an RS256 assertion for the key file's token URI.
async fn google_token(client: &reqwest::Client, key_file: &str) -> Result<String, String> {
    let key: Value =
        serde_json::from_str(&std::fs::read_to_string(key_file).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    let (uri, pem) = (
        key["token_uri"].as_str().unwrap_or(""),
        key["private_key"].as_str().unwrap_or(""),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = json!({"iss": key["client_email"], "sub": "it-admin@example.com", "aud": uri, "iat": now, "exp": now + 300, "jti": now.to_string(),
        "scope": "https://www.googleapis.com/auth/admin.directory.user.readonly https://www.googleapis.com/auth/admin.directory.group.readonly"});
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = key["private_key_id"].as_str().map(str::to_owned);
    let signing =
        jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let assertion = jsonwebtoken::encode(&header, &claims, &signing).map_err(|e| e.to_string())?;
    let form = [
        ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
        ("assertion", &assertion),
    ];
    token(client.post(uri).form(&form)).await
}

async fn token(request: reqwest::RequestBuilder) -> Result<String, String> {
    let answer: Value = request
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    answer["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no token: {answer}"))
}

fn flag<'a>(args: &'a [String], name: &str, default: &'a str) -> &'a str {
    args.iter()
        .position(|a| a == name)
        .and_then(|at| args.get(at + 1))
        .map_or(default, String::as_str)
}

async fn run(args: &[String]) -> Result<Value, String> {
    let vendor = args.first().map(String::as_str).unwrap_or("");
    let url = flag(args, "--url", "");
    let page: usize = flag(args, "--page-size", "500")
        .parse()
        .map_err(|_| "--page-size")?;
    let realm = flag(args, "--realm", "acme");
    let client = reqwest::Client::new();
    let started = Instant::now();
    let token = match vendor {
        "google" => google_token(&client, flag(args, "--key-file", "")).await?,
        "keycloak" => {
            let form = [("grant_type", "client_credentials")];
            let request = client.post(format!(
                "{url}/realms/{realm}/protocol/openid-connect/token"
            ));
            token(
                request
                    .basic_auth("idsync", Some(flag(args, "--client-secret", "kc-secret")))
                    .form(&form),
            )
            .await?
        }
        other => return Err(format!("unknown vendor {other:?}")),
    };
    let walker = Walker {
        client,
        token,
        requests: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
    };
    let users = match vendor {
        "google" => google(&walker, url, page).await?,
        _ => keycloak(&walker, url, realm, page).await?,
    };
    Ok(json!({
        "vendor": vendor,
        "users": users,
        "requests": walker.requests.load(Ordering::Relaxed),
        "bytes": walker.bytes.load(Ordering::Relaxed),
        "wall_ms": started.elapsed().as_secs_f64() * 1e3,
    }))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("google_keycloak_floor: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("google_keycloak_floor: {err}\n{USAGE}");
            ExitCode::FAILURE
        }
    }
}
