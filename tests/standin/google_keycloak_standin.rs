//! The Google Workspace and Keycloak fakes as a process, for the demo
//! (`deploy/demo/run google|keycloak`) and the benchmark (`tests/bench/google_keycloak`).
//! They are the in-process test fakes (same files, not copies), serving a
//! generated organisation (`tests/support/org.rs`).
//!
//! Usage: google_keycloak_standin google|keycloak --listen 127.0.0.1:PORT [--users N]
//!            [--groups N] [--seed N] [--delay-ms N] [--tree paged|nested]
//!            [--key-file PATH] [--control 127.0.0.1:PORT]
//!
//! `--key-file` (google) writes a service-account key file for the fake's token
//! endpoint. `--control` serves `POST /leave?email=ADDRESS`, which removes a user
//! from the organisation (the demo's leaver).

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../support/directory.rs"]
mod directory;
#[allow(dead_code)]
#[path = "../support/fake_gateway.rs"]
mod fake_gateway;
#[allow(dead_code)]
#[path = "../support/fake_google.rs"]
mod fake_google;
#[allow(dead_code)]
#[path = "../support/fake_idp.rs"]
mod fake_idp;
#[allow(dead_code)]
#[path = "../support/fake_keycloak.rs"]
mod fake_keycloak;
#[allow(dead_code)]
#[path = "../support/jwt.rs"]
mod jwt;
#[allow(dead_code)]
#[path = "../support/org.rs"]
mod org;

#[path = "../support/shared_state.rs"]
mod shared_state;

use axum::extract::Query;
use fake_google::{FakeGoogle, GoogleOptions};
use fake_keycloak::{FakeKeycloak, KeycloakOptions, TreeStyle};
use org::Org;

const USAGE: &str =
    "usage: google_keycloak_standin google|keycloak --listen 127.0.0.1:PORT [--users N] \
                     [--groups N] [--seed N] [--delay-ms N] [--tree paged|nested] \
                     [--key-file PATH] [--control 127.0.0.1:PORT]";

struct Args {
    vendor: String,
    listen: String,
    users: usize,
    groups: usize,
    seed: u64,
    delay: Duration,
    tree: TreeStyle,
    key_file: Option<String>,
    control: Option<String>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let vendor = args.next().ok_or("google or keycloak first")?;
    let mut parsed = Args {
        vendor,
        listen: String::new(),
        users: 34,
        groups: 8,
        seed: 1,
        delay: Duration::ZERO,
        tree: TreeStyle::Paged,
        key_file: None,
        control: None,
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} must be a whole number, got {value:?}"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen = value.clone(),
            "--users" => parsed.users = number()? as usize,
            "--groups" => parsed.groups = number()? as usize,
            "--seed" => parsed.seed = number()?,
            "--delay-ms" => parsed.delay = Duration::from_millis(number()?),
            "--tree" if value == "paged" => parsed.tree = TreeStyle::Paged,
            "--tree" if value == "nested" => parsed.tree = TreeStyle::Nested,
            "--key-file" => parsed.key_file = Some(value),
            "--control" => parsed.control = Some(value),
            _ => return Err(format!("unknown argument {flag} {value}")),
        }
    }
    if parsed.listen.is_empty() {
        return Err("--listen is required".into());
    }
    Ok(parsed)
}

/// The running fake, whichever vendor.
enum Fake {
    Google(FakeGoogle),
    Keycloak(FakeKeycloak),
}

impl Fake {
    fn leave(&self, email: &str) -> bool {
        let mut org = match self {
            Self::Google(fake) => fake.org(),
            Self::Keycloak(fake) => fake.org(),
        };
        if !org.users.iter().any(|u| u.email == email) {
            return false;
        }
        org.leave(email);
        match self {
            Self::Google(fake) => fake.set_org(org),
            Self::Keycloak(fake) => fake.set_org(org),
        }
        true
    }
}

async fn start(args: &Args) -> Result<(Fake, String), String> {
    let org = Org::generate(args.users, args.groups, args.seed);
    match args.vendor.as_str() {
        "google" => {
            let opts = GoogleOptions {
                delay: args.delay,
                ..GoogleOptions::default()
            };
            let fake = FakeGoogle::serve(opts, org, &args.listen).await;
            if let Some(path) = &args.key_file {
                std::fs::write(path, fake.key_file()).map_err(|err| format!("{path}: {err}"))?;
            }
            let url = fake.url();
            Ok((Fake::Google(fake), url))
        }
        "keycloak" => {
            let opts = KeycloakOptions {
                delay: args.delay,
                tree: args.tree,
                ..KeycloakOptions::default()
            };
            let fake = FakeKeycloak::serve(opts, org, &args.listen).await;
            let url = fake.url();
            Ok((Fake::Keycloak(fake), url))
        }
        other => Err(format!("unknown vendor {other:?}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("google_keycloak_standin: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let (fake, url) = match start(&args).await {
        Ok(started) => started,
        Err(err) => {
            eprintln!("google_keycloak_standin: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts wait for this line, so it must be flushed before serving.
    println!("listening on {url}");
    let _ = std::io::stdout().flush();
    let fake = Arc::new(fake);
    match &args.control {
        Some(address) => serve_control(fake, address).await,
        None => std::future::pending().await,
    }
}

/// `POST /leave?email=…` on `address`, until the process is stopped.
async fn serve_control(fake: Arc<Fake>, address: &str) -> ExitCode {
    let leave = move |Query(query): Query<HashMap<String, String>>| {
        let fake = fake.clone();
        async move {
            let email = query.get("email").cloned().unwrap_or_default();
            if fake.leave(&email) {
                (axum::http::StatusCode::OK, format!("{email} left\n"))
            } else {
                (
                    axum::http::StatusCode::NOT_FOUND,
                    format!("{email} is not a user\n"),
                )
            }
        }
    };
    let app = axum::Router::new().route("/leave", axum::routing::post(leave));
    match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => {
            let _ = axum::serve(listener, app).await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("google_keycloak_standin: cannot listen on {address}: {err}");
            ExitCode::FAILURE
        }
    }
}
