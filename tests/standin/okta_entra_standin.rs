//! The fake Okta org or the fake Microsoft Graph as a separate process, for the
//! demo and the benchmark: the in-process test fakes (same files, not copies),
//! seeded with generated users and groups.
//!
//! Usage: okta_entra_standin okta|entra [--listen 127.0.0.1:0] [--users 2000]
//!                       [--groups 20] [--latency-ms 0] [--rate-limit N --window-secs S]
//!
//! Prints `listening on URL` once serving, then reads commands on stdin, one a line,
//! and answers each with one line: `change N` applies N changes (renames, moves
//! between groups, joiners, leavers, suspended or disabled users) and says `ok` (Okta:
//! `ok M`, M the groups whose members moved, which a change read re-reads whole);
//! `delete ID` deletes that user; `stats` prints the fake's counters as JSON.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../support/fake_entra.rs"]
mod fake_entra;
#[allow(dead_code)]
#[path = "../support/fake_gateway.rs"]
mod fake_gateway;
#[allow(dead_code)]
#[path = "../support/fake_okta.rs"]
mod fake_okta;
#[allow(dead_code)]
#[path = "../support/jwt.rs"]
mod jwt;

#[path = "../support/shared_state.rs"]
mod shared_state;

use fake_entra::{team_id, EntraOptions, EntraUser, FakeEntra};
use fake_okta::{FakeOkta, OktaOptions};

const USAGE: &str = "usage: okta_entra_standin okta|entra [--listen 127.0.0.1:0] [--users 2000] \
                     [--groups 20] [--latency-ms 0] [--rate-limit N --window-secs S]";

struct Args {
    vendor: String,
    listen: String,
    users: usize,
    groups: usize,
    latency: Duration,
    rate_limit: Option<(u64, u64)>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let vendor = args.next().ok_or("okta or entra first")?;
    let mut parsed = Args {
        vendor,
        listen: "127.0.0.1:0".into(),
        users: 2000,
        groups: 20,
        latency: Duration::ZERO,
        rate_limit: None,
    };
    let mut window_secs = 60;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} must be a whole number, got {v:?}"))
        };
        match flag.as_str() {
            "--listen" => parsed.listen = value,
            "--users" => parsed.users = number(&value)? as usize,
            "--groups" => parsed.groups = number(&value)?.max(3) as usize,
            "--latency-ms" => parsed.latency = Duration::from_millis(number(&value)?),
            "--rate-limit" => parsed.rate_limit = Some((number(&value)?, window_secs)),
            "--window-secs" => window_secs = number(&value)?.max(1),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    parsed.rate_limit = parsed.rate_limit.map(|(limit, _)| (limit, window_secs));
    Ok(parsed)
}

enum Fake {
    Okta(FakeOkta),
    Entra(FakeEntra),
}

impl Fake {
    fn url(&self) -> &str {
        match self {
            Fake::Okta(okta) => okta.url(),
            Fake::Entra(entra) => entra.url(),
        }
    }

    /// `n` changes: 40 % renames, 20 % moves between groups, 20 % joiners, 10 %
    /// leavers, 10 % suspended (Okta) or disabled (Entra) users.
    fn change(&self, n: usize, groups: usize, round: usize) {
        // Each round picks users no earlier round touched.
        let base = round * n * 8;
        for k in 0..n {
            let user = base + k * 7 + 11;
            let kind = k % 10;
            match self {
                Fake::Okta(okta) => okta_change(okta, kind, user, groups),
                Fake::Entra(entra) => entra_change(entra, kind, user, groups),
            }
        }
    }

    fn delete(&self, id: &str) {
        match self {
            Fake::Okta(okta) => okta.delete_user(id),
            Fake::Entra(entra) => entra.delete_user(id),
        }
    }

    fn stats(&self) -> String {
        match self {
            Fake::Okta(okta) => {
                let s = okta.stats();
                format!(
                    "{{\"requests\": {}, \"user_pages\": {}, \"throttled\": {}, \"over_budget\": {}, \"budget_spent\": {}}}",
                    s.api_requests, s.user_pages, s.throttled, s.over_budget, s.budget_spent
                )
            }
            Fake::Entra(entra) => {
                let s = entra.stats();
                format!(
                    "{{\"requests\": {}, \"user_pages\": {}, \"throttled\": {}, \"delta_requests\": {}, \"token_requests\": {}}}",
                    s.graph_requests, s.full_user_pages, s.throttled, s.delta_requests, s.token_requests
                )
            }
        }
    }
}

fn okta_change(okta: &FakeOkta, kind: usize, user: usize, groups: usize) {
    let id = format!("00u{user:07}");
    let group = |g: usize| format!("00g{:07}", g % groups);
    match kind {
        0..=3 => okta.update_user(&id, |u| u.display = Some(format!("Renamed {user}"))),
        4 | 5 => {
            okta.set_member(&group(user), &id, false);
            okta.set_member(&group(user + 1), &id, true);
        }
        6 | 7 => {
            let joiner = okta.add_user(&format!("joiner{user}@example.com"), "Joi", "Ner");
            okta.set_member(&group(user), &joiner, true);
        }
        8 => okta.delete_user(&id),
        _ => okta.update_user(&id, |u| u.status = "SUSPENDED".into()),
    }
}

fn entra_change(entra: &FakeEntra, kind: usize, user: usize, groups: usize) {
    let id = format!("00000000-0000-4000-8000-{user:012}");
    match kind {
        0..=3 => entra.update_user(&id, |u| u.display = format!("Renamed {user}")),
        4 | 5 => {
            entra.set_member(&team_id(user % groups), &id, true, false);
            entra.set_member(&team_id((user + 1) % groups), &id, true, true);
        }
        6 | 7 => {
            let joiner = EntraUser {
                id: format!("bbbbbbbb-0000-4000-8000-{user:012}"),
                display: format!("Joiner {user}"),
                mail: Some(format!("joiner{user}@contoso.com")),
                upn: format!("joiner{user}@contoso.com"),
                enabled: true,
            };
            entra.add_user(joiner.clone());
            entra.set_member(&team_id(user % groups), &joiner.id, true, true);
        }
        8 => entra.delete_user(&id),
        _ => entra.update_user(&id, |u| u.enabled = false),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("okta_entra_standin: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "okta_entra_standin: cannot listen on {}: {err}",
                args.listen
            );
            return ExitCode::FAILURE;
        }
    };
    let fake = match args.vendor.as_str() {
        "okta" => {
            let mut opts = OktaOptions {
                latency: args.latency,
                ..OktaOptions::default()
            };
            if let Some((limit, window)) = args.rate_limit {
                (opts.rate_limit, opts.window_secs) = (limit, window);
            }
            let okta = FakeOkta::start_on(listener, opts);
            okta.seed(args.users, args.groups);
            Fake::Okta(okta)
        }
        "entra" => {
            let entra = FakeEntra::start_on(
                listener,
                EntraOptions {
                    latency: args.latency,
                },
            );
            entra.seed(args.users, args.groups);
            Fake::Entra(entra)
        }
        other => {
            eprintln!("okta_entra_standin: unknown vendor {other:?}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("listening on {}", fake.url());
    let _ = std::io::stdout().flush();
    serve_commands(&fake, args.groups).await;
    ExitCode::SUCCESS
}

/// Answers stdin's commands until it closes.
async fn serve_commands(fake: &Fake, groups: usize) {
    let (lines, mut incoming) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut round = 0;
    while let Some(line) = incoming.recv().await {
        let answer = match line.split_whitespace().collect::<Vec<_>>()[..] {
            ["change", n] => match n.parse() {
                Ok(n) => {
                    round += 1;
                    let since = std::time::SystemTime::now();
                    fake.change(n, groups, round);
                    match &fake {
                        Fake::Okta(okta) => format!("ok {}", okta.groups_moved_since(since)),
                        Fake::Entra(_) => "ok".to_owned(),
                    }
                }
                Err(_) => format!("error: {n:?} is not a number"),
            },
            ["stats"] => fake.stats(),
            ["delete", id] => {
                fake.delete(id);
                "ok".to_owned()
            }
            _ => format!("error: unknown command {line:?}"),
        };
        println!("{answer}");
        let _ = std::io::stdout().flush();
    }
    // Stdin closed: keep serving until killed, so a demo may leave it running.
    std::future::pending::<()>().await;
}
