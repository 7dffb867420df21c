//! The JumpCloud or Auth0 test fake as a process, for the demo (deploy/demo/run
//! jumpcloud|auth0) and the benchmark (tests/bench/vendors). It is the in-process fake
//! (same file, not a copy), seeded from a SCIM directory file such as
//! deploy/demo/directory.json or generated (`--users N`, as the tests generate it),
//! with a control port on which `POST /leave/{id}` removes a person (by the file's
//! id) as a leaver.
//!
//! Usage: vendor_standin --kind jumpcloud|auth0 --listen 127.0.0.1:PORT
//!                       --control 127.0.0.1:PORT (--directory FILE | --users N)
//!                       --secret SECRET [--rate-limit N]
//! The secret is JumpCloud's API key, or the Auth0 client secret (client id `idsync`);
//! `--rate-limit` is Auth0's requests a second (default 50). Prints
//! `listening on http://ADDR control=http://ADDR` on stdout when ready.

use std::process::ExitCode;
use std::sync::Arc;

use axum::extract::Path;
use axum::routing::post;
use serde_json::Value;
use tokio::net::TcpListener;

#[allow(dead_code)] // the test-control API is mostly unused here
#[path = "../support/fake_auth0.rs"]
mod fake_auth0;
#[allow(dead_code)]
#[path = "../support/fake_gateway.rs"]
mod fake_gateway;
#[allow(dead_code)]
#[path = "../support/fake_jumpcloud.rs"]
mod fake_jumpcloud;

use fake_auth0::{Auth0Directory, Auth0Group, Auth0Options, FakeAuth0};
use fake_jumpcloud::{system_user, FakeJumpCloud, JumpCloudDirectory, JumpCloudGroup};

const USAGE: &str = "usage: vendor_standin --kind jumpcloud|auth0 --listen 127.0.0.1:PORT \
                     --control 127.0.0.1:PORT (--directory FILE | --users N) --secret SECRET \
                     [--rate-limit N]";

struct Args {
    kind: String,
    listen: String,
    control: String,
    /// A SCIM directory file, or a number of users to generate.
    directory: Result<String, usize>,
    secret: String,
    rate_limit: u32,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut found = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        found.insert(flag, value);
    }
    let number = |flag: &str, text: String| {
        text.parse::<usize>()
            .map_err(|_| format!("{flag} must be a whole number, got {text:?}"))
    };
    let directory = match (found.remove("--directory"), found.remove("--users")) {
        (Some(file), None) => Ok(file),
        (None, Some(users)) => Err(number("--users", users)?),
        _ => return Err("give one of --directory or --users".into()),
    };
    let rate_limit = match found.remove("--rate-limit") {
        Some(text) => number("--rate-limit", text)?,
        None => 50,
    };
    let mut take = |flag: &str| {
        found
            .remove(flag)
            .ok_or_else(|| format!("{flag} is missing"))
    };
    Ok(Args {
        kind: take("--kind")?,
        listen: take("--listen")?,
        control: take("--control")?,
        directory,
        secret: take("--secret")?,
        rate_limit: u32::try_from(rate_limit).map_err(|_| "--rate-limit is too large")?,
    })
}

/// One person of the SCIM file: (file id, e-mail, display name, given, family, active).
struct Person {
    id: String,
    email: String,
    name: String,
    given: String,
    family: String,
    active: bool,
}

fn people(scim: &Value) -> Vec<Person> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let users = scim["users"].as_array().cloned().unwrap_or_default();
    users
        .iter()
        .map(|u| Person {
            id: text(&u["id"]),
            email: text(&u["emails"][0]["value"]),
            name: text(&u["displayName"]),
            given: text(&u["name"]["givenName"]),
            family: text(&u["name"]["familyName"]),
            active: u["active"].as_bool().unwrap_or(true),
        })
        .collect()
}

/// Each SCIM group as (id, name, member file ids).
fn groups(scim: &Value) -> Vec<(String, String, Vec<String>)> {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let listed = scim["groups"].as_array().cloned().unwrap_or_default();
    listed
        .iter()
        .map(|g| {
            let members = g["members"].as_array().cloned().unwrap_or_default();
            let ids = members.iter().map(|m| text(&m["value"])).collect();
            (text(&g["id"]), text(&g["displayName"]), ids)
        })
        .collect()
}

fn jumpcloud_directory(scim: &Value) -> JumpCloudDirectory {
    let object_id = |id: &str| format!("5f{:0>22}", id.trim_start_matches('u'));
    let users = people(scim)
        .iter()
        .map(|p| {
            let mut user = system_user(&object_id(&p.id), &p.email, &p.given, &p.family);
            user["displayname"] = p.name.clone().into();
            user["suspended"] = (!p.active).into();
            user
        })
        .collect();
    let groups = groups(scim)
        .into_iter()
        .map(|(id, name, members)| JumpCloudGroup {
            id,
            name,
            users: members.iter().map(|m| object_id(m)).collect(),
            groups: Vec::new(),
        })
        .collect();
    JumpCloudDirectory { users, groups }
}

fn auth0_directory(scim: &Value) -> Auth0Directory {
    let users = people(scim)
        .iter()
        .map(|p| {
            serde_json::json!({
                "user_id": format!("auth0|{}", p.id), "email": p.email, "name": p.name,
                "given_name": p.given, "family_name": p.family, "blocked": !p.active,
            })
        })
        .collect();
    let roles = groups(scim)
        .into_iter()
        .map(|(id, name, members)| Auth0Group {
            id: format!("rol_{id}"),
            name,
            members: members.iter().map(|m| format!("auth0|{m}")).collect(),
        })
        .collect();
    Auth0Directory {
        users,
        roles,
        organizations: Vec::new(),
    }
}

/// The running fake, and how to remove a person from it.
enum Standin {
    JumpCloud(FakeJumpCloud),
    Auth0(FakeAuth0),
}

impl Standin {
    fn leave(&self, id: &str) {
        match self {
            Self::JumpCloud(fake) => {
                let mut directory = fake.directory();
                let object_id = format!("5f{:0>22}", id.trim_start_matches('u'));
                directory.users.retain(|u| u["_id"] != object_id.as_str());
                for group in &mut directory.groups {
                    group.users.retain(|u| *u != object_id);
                }
                fake.set_directory(directory);
            }
            Self::Auth0(fake) => {
                let mut directory = fake.directory();
                let user_id = format!("auth0|{id}");
                directory.users.retain(|u| u["user_id"] != user_id.as_str());
                for role in &mut directory.roles {
                    role.members.retain(|m| *m != user_id);
                }
                fake.set_directory(directory);
            }
        }
    }
}

async fn start(args: &Args, listener: TcpListener) -> Result<Standin, String> {
    let scim = match &args.directory {
        Ok(file) => {
            let text = std::fs::read_to_string(file)
                .map_err(|err| format!("cannot read {file}: {err}"))?;
            Some(serde_json::from_str::<Value>(&text).map_err(|err| err.to_string())?)
        }
        Err(_) => None,
    };
    let generated = args.directory.as_ref().err().copied().unwrap_or(0);
    match args.kind.as_str() {
        "jumpcloud" => {
            let directory = scim
                .as_ref()
                .map_or_else(|| fake_jumpcloud::generate(generated), jumpcloud_directory);
            let fake = FakeJumpCloud::start_on(listener, &args.secret, None, directory);
            Ok(Standin::JumpCloud(fake))
        }
        "auth0" => {
            let options = Auth0Options {
                client_id: "idsync".into(),
                client_secret: args.secret.clone(),
                rate_limit: args.rate_limit,
                export_polls: 1,
            };
            let directory = scim
                .as_ref()
                .map_or_else(|| fake_auth0::generate(generated), auth0_directory);
            Ok(Standin::Auth0(FakeAuth0::start_on(
                listener, options, directory,
            )))
        }
        other => Err(format!("--kind must be jumpcloud or auth0, got {other:?}")),
    }
}

async fn bind(address: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|err| format!("cannot listen on {address}: {err}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("vendor_standin: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (listener, control) = match (bind(&args.listen).await, bind(&args.control).await) {
        (Ok(listener), Ok(control)) => (listener, control),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("vendor_standin: {err}");
            return ExitCode::from(2);
        }
    };
    let (Ok(address), Ok(control_address)) = (listener.local_addr(), control.local_addr()) else {
        eprintln!("vendor_standin: no local address");
        return ExitCode::FAILURE;
    };
    let standin = match start(&args, listener).await {
        Ok(standin) => Arc::new(standin),
        Err(err) => {
            eprintln!("vendor_standin: {err}");
            return ExitCode::from(2);
        }
    };
    let routes = axum::Router::new().route(
        "/leave/{id}",
        post(move |Path(id): Path<String>| async move { standin.leave(&id) }),
    );
    println!("listening on http://{address} control=http://{control_address}");
    let _ = std::io::Write::flush(&mut std::io::stdout());
    match axum::serve(control, routes).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vendor_standin: {err}");
            ExitCode::FAILURE
        }
    }
}
