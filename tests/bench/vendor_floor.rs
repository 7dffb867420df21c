//! The floor idsync's Okta and Entra ID full reads are compared with
//! (`tests/bench/okta_entra`): a plain reqwest client walking the same pages in the
//! same order, one at a time — the group listing, each group's members, then the
//! users — following Okta's `Link: rel="next"` or Graph's `@odata.nextLink`. It
//! reads only what a pager must: the group ids and the next links.
//!
//! Usage: vendor_floor okta|entra --url URL [--page-size N]
//!
//! Prints one JSON object on stdout: wall seconds, requests, bytes.

use std::process::ExitCode;
use std::time::Instant;

use serde_json::Value;

const USAGE: &str = "usage: vendor_floor okta|entra --url URL [--page-size N]";
const OKTA_TOKEN: &str = "00okta-test-api-token";
const ENTRA: (&str, &str, &str) = (
    "11111111-2222-3333-4444-555555555555",
    "66666666-7777-8888-9999-000000000000",
    "entra-test-secret",
);

struct Walk {
    client: reqwest::Client,
    auth: String,
    requests: usize,
    bytes: usize,
}

impl Walk {
    /// One page: its next link (from the header or the body) and its body.
    async fn page(&mut self, url: &str) -> Result<(Option<String>, Value), String> {
        let response = self
            .client
            .get(url)
            .header("authorization", &self.auth)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| format!("GET {url}: {e}"))?;
        let link = response
            .headers()
            .get_all("link")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.contains("rel=\"next\""))
            .and_then(|v| Some(v.split_once('<')?.1.split_once('>')?.0.to_owned()));
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        self.requests += 1;
        self.bytes += body.len();
        let body: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        let next = link.or_else(|| body["@odata.nextLink"].as_str().map(str::to_owned));
        Ok((next, body))
    }

    /// Every page from `first`; the group ids listed, when `ids` asks for them.
    async fn all(&mut self, first: String, ids: bool) -> Result<Vec<String>, String> {
        let mut found = Vec::new();
        let mut next = Some(first);
        while let Some(url) = next {
            let (link, body) = self.page(&url).await?;
            if ids {
                let items = body.get("value").unwrap_or(&body);
                let listed = items.as_array().into_iter().flatten();
                found.extend(listed.filter_map(|g| g["id"].as_str().map(str::to_owned)));
            }
            next = link;
        }
        Ok(found)
    }
}

async fn entra_token(client: &reqwest::Client, url: &str) -> Result<String, String> {
    let (tenant, client_id, secret) = ENTRA;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", "https://graph.microsoft.com/.default"),
    ];
    let body: Value = client
        .post(format!("{url}/{tenant}/oauth2/v2.0/token"))
        .form(&form)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "Bearer {}",
        body["access_token"].as_str().unwrap_or("")
    ))
}

async fn walk(vendor: &str, url: &str, size: usize) -> Result<Walk, String> {
    let client = reqwest::Client::new();
    let auth = match vendor {
        "okta" => format!("SSWS {OKTA_TOKEN}"),
        _ => entra_token(&client, url).await?,
    };
    let mut walk = Walk {
        client,
        auth,
        requests: 0,
        bytes: 0,
    };
    let (groups, members, users) = match vendor {
        "okta" => (
            format!("{url}/api/v1/groups?limit={size}&filter=type+eq+%22OKTA_GROUP%22+or+type+eq+%22APP_GROUP%22"),
            format!("{url}/api/v1/groups/{{id}}/users?limit={size}"),
            format!("{url}/api/v1/users?limit={size}"),
        ),
        _ => (
            format!("{url}/groups?$select=id,displayName&$top={size}"),
            format!("{url}/groups/{{id}}/members?$select=id&$top={size}"),
            format!("{url}/users?$select=id,displayName,mail,userPrincipalName,accountEnabled&$top={size}"),
        ),
    };
    for id in walk.all(groups, true).await? {
        walk.all(members.replace("{id}", &id), false).await?;
    }
    walk.all(users, false).await?;
    Ok(walk)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (vendor, url, size) = match &args[..] {
        [vendor, flag, url] if flag == "--url" => (vendor, url, None),
        [vendor, flag, url, size_flag, size] if flag == "--url" && size_flag == "--page-size" => {
            (vendor, url, size.parse().ok())
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let size = size.unwrap_or(if vendor == "okta" { 200 } else { 999 });
    let started = Instant::now();
    match walk(vendor, url.trim_end_matches('/'), size).await {
        Ok(walk) => {
            let wall = started.elapsed().as_secs_f64();
            println!(
                "{{\"wall_s\": {wall:.3}, \"requests\": {}, \"bytes\": {}}}",
                walk.requests, walk.bytes
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("vendor_floor: {err}");
            ExitCode::FAILURE
        }
    }
}
