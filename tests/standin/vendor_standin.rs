//! The JumpCloud or Auth0 test fake as a process, for the demo (deploy/demo/run
//! jumpcloud|auth0). It is the in-process fake (same file, not a copy), seeded from a
//! SCIM directory file such as deploy/demo/directory.json, with a control port on
//! which `POST /leave/{id}` removes a person (by the file's id) as a leaver.
//!
//! Usage: vendor_standin --kind jumpcloud|auth0 --listen 127.0.0.1:PORT
//!                       --control 127.0.0.1:PORT --directory FILE --secret SECRET
//! The secret is JumpCloud's API key, or the Auth0 client secret (client id `idsync`).

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
                     --control 127.0.0.1:PORT --directory FILE --secret SECRET";

struct Args {
    kind: String,
    listen: String,
    control: String,
    directory: String,
    secret: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut found = std::collections::HashMap::new();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        found.insert(flag, value);
    }
    let mut take = |flag: &str| {
        found
            .remove(flag)
            .ok_or_else(|| format!("{flag} is missing"))
    };
    Ok(Args {
        kind: take("--kind")?,
        listen: take("--listen")?,
        control: take("--control")?,
        directory: take("--directory")?,
        secret: take("--secret")?,
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

async fn start(args: &Args) -> Result<Standin, String> {
    let text = std::fs::read_to_string(&args.directory)
        .map_err(|err| format!("cannot read {}: {err}", args.directory))?;
    let scim: Value = serde_json::from_str(&text).map_err(|err| err.to_string())?;
    let listener = TcpListener::bind(&args.listen)
        .await
        .map_err(|err| format!("cannot listen on {}: {err}", args.listen))?;
    match args.kind.as_str() {
        "jumpcloud" => Ok(Standin::JumpCloud(FakeJumpCloud::start_on(
            listener,
            &args.secret,
            None,
            jumpcloud_directory(&scim),
        ))),
        "auth0" => {
            let options = Auth0Options {
                client_id: "idsync".into(),
                client_secret: args.secret.clone(),
                export_polls: 1,
                ..Auth0Options::default()
            };
            Ok(Standin::Auth0(FakeAuth0::start_on(
                listener,
                options,
                auth0_directory(&scim),
            )))
        }
        other => Err(format!("--kind must be jumpcloud or auth0, got {other:?}")),
    }
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
    let standin = match start(&args).await {
        Ok(standin) => Arc::new(standin),
        Err(err) => {
            eprintln!("vendor_standin: {err}");
            return ExitCode::from(2);
        }
    };
    let control = axum::Router::new().route(
        "/leave/{id}",
        post(move |Path(id): Path<String>| async move { standin.leave(&id) }),
    );
    let listener = match TcpListener::bind(&args.control).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("vendor_standin: cannot listen on {}: {err}", args.control);
            return ExitCode::from(2);
        }
    };
    println!("vendor_standin: {} on http://{}", args.kind, args.listen);
    match axum::serve(listener, control).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("vendor_standin: {err}");
            ExitCode::FAILURE
        }
    }
}
