//! The floor of an incremental run's writes, for `tests/bench/ldap.py`: how long
//! the gateway stand-in (`bench_gateway`) takes to answer N updates made the way
//! hoop's API needs them, a GET of the user and then a PUT of it whole, with K
//! in flight, by a plain reqwest client that keeps its connections between rounds
//! (as the daemon's client does between runs). `--pause-ms` waits before each
//! round, as the daemon waits for its next tick: after an idle pause the first
//! requests meet cold caches and sleeping threads on both sides.
//!
//! Usage: update_floor --gateway http://127.0.0.1:PORT/api [--users 100]
//!        [--in-flight 16] [--rounds 5] [--pause-ms 0]
//!
//! Prints a line per round, `round R updates N in_flight K ms X.XXX`, after one
//! round that opens the connections and is not counted.

use std::process::ExitCode;
use std::time::Instant;

use futures::{stream, StreamExt, TryStreamExt};

const USAGE: &str =
    "usage: update_floor --gateway URL [--users 100] [--in-flight 16] [--rounds 5] [--pause-ms 0]";

struct Args {
    gateway: String,
    users: usize,
    in_flight: usize,
    rounds: usize,
    pause: std::time::Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        gateway: String::new(),
        users: 100,
        in_flight: 16,
        rounds: 5,
        pause: std::time::Duration::ZERO,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let value = given.next().ok_or(USAGE)?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| format!("{flag}: {value}"))
        };
        match flag.as_str() {
            "--gateway" => args.gateway = value.trim_end_matches('/').to_owned(),
            "--users" => args.users = number()?,
            "--in-flight" => args.in_flight = number()?.max(1),
            "--rounds" => args.rounds = number()?,
            "--pause-ms" => args.pause = std::time::Duration::from_millis(number()? as u64),
            _ => return Err(USAGE.into()),
        }
    }
    if args.gateway.is_empty() {
        return Err(USAGE.into());
    }
    Ok(args)
}

/// One update: the user as the gateway has it, then the user whole, renamed.
async fn update(client: &reqwest::Client, gateway: &str, n: usize) -> reqwest::Result<()> {
    let email = format!("u{n:07}@example.com");
    let url = format!("{gateway}/users/{email}");
    let current: serde_json::Value = client
        .get(&url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut user = current;
    user["name"] = serde_json::Value::from(format!("Renamed {n}"));
    client
        .put(&url)
        .json(&user)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

async fn round(client: &reqwest::Client, args: &Args) -> reqwest::Result<()> {
    stream::iter(0..args.users)
        .map(|n| update(client, &args.gateway, n))
        .buffer_unordered(args.in_flight)
        .try_collect()
        .await
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("a client");
    for at in 0..=args.rounds {
        tokio::time::sleep(args.pause).await;
        let started = Instant::now();
        if let Err(err) = round(&client, &args).await {
            eprintln!("update_floor: {err}");
            return ExitCode::FAILURE;
        }
        if at > 0 {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let (users, in_flight) = (args.users, args.in_flight);
            println!("round {at} updates {users} in_flight {in_flight} ms {ms:.3}");
        }
    }
    ExitCode::SUCCESS
}
