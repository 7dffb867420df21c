//! The floors that idsync's directory read is compared with (`tests/bench/run`).
//!
//! Download floor: a plain reqwest client GETs every page of `/Users` and then of
//! `/Groups` (`startIndex`/`count` as idsync asks for them), keeping the bytes and
//! parsing nothing; `--parallel K` keeps K pages of one resource in flight. The only
//! look inside a body is a byte search for `"totalResults":` in the first page of
//! each resource, which any pager needs.
//!
//! Parse floor: afterwards, on the main thread and with nothing else running in this
//! process, every downloaded page is parsed into a generic `serde_json::Value` and
//! dropped. Its CPU time is this thread's time on a CPU from
//! `/proc/thread-self/schedstat` (nanoseconds, user and system together) — a real
//! CPU clock, not wall time, so a busy neighbour does not inflate it.
//!
//! Usage: bench_floor --url http://ADDR/scim/v2 [--page-size 1000] [--parallel 1]
//!                    [--parse-reps 0] [--token bench]
//!
//! Prints one JSON object on stdout.

use std::process::ExitCode;
use std::time::Instant;

use axum::body::Bytes;
use futures::{StreamExt, TryStreamExt};

const USAGE: &str = "usage: bench_floor --url http://ADDR/scim/v2 [--page-size 1000] \
                     [--parallel 1] [--parse-reps 0] [--token bench]";

struct Args {
    url: String,
    page_size: usize,
    parallel: usize,
    parse_reps: usize,
    token: String,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args {
        url: String::new(),
        page_size: 1000,
        parallel: 1,
        parse_reps: 0,
        token: "bench".to_owned(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag} must be a whole number, got {v:?}"))
        };
        match flag.as_str() {
            "--url" => parsed.url = value.trim_end_matches('/').to_owned(),
            "--page-size" => parsed.page_size = number(&value)?.max(1),
            "--parallel" => parsed.parallel = number(&value)?.max(1),
            "--parse-reps" => parsed.parse_reps = number(&value)?,
            "--token" => parsed.token = value,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if parsed.url.is_empty() {
        return Err("--url is required".into());
    }
    Ok(parsed)
}

/// This thread's CPU time in nanoseconds (Linux `schedstat`: time spent on a CPU).
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn total_results(page: &[u8]) -> Option<usize> {
    const KEY: &[u8] = b"\"totalResults\":";
    let at = page.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = page[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn fetch(
    client: &reqwest::Client,
    args: &Args,
    resource: &str,
    start: usize,
) -> Result<Bytes, String> {
    let url = format!(
        "{}/{resource}?startIndex={start}&count={}",
        args.url, args.page_size
    );
    let response = client
        .get(&url)
        .header("accept", "application/scim+json, application/json")
        .header("authorization", format!("Bearer {}", args.token))
        .send()
        .await
        .map_err(|err| format!("GET {url}: {err}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    response
        .bytes()
        .await
        .map_err(|err| format!("GET {url}: {err}"))
}

async fn download(
    client: &reqwest::Client,
    args: &Args,
    resource: &str,
) -> Result<(usize, Vec<Bytes>), String> {
    let first = fetch(client, args, resource, 1).await?;
    let total = total_results(&first).ok_or_else(|| format!("{resource}: no totalResults"))?;
    let starts: Vec<usize> = (1 + args.page_size..=total)
        .step_by(args.page_size)
        .collect();
    let mut pages = vec![first];
    if args.parallel == 1 {
        for start in starts {
            pages.push(fetch(client, args, resource, start).await?);
        }
    } else {
        let rest: Vec<Bytes> = futures::stream::iter(starts)
            .map(|start| fetch(client, args, resource, start))
            .buffered(args.parallel)
            .try_collect()
            .await?;
        pages.extend(rest);
    }
    Ok((total, pages))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn run(args: &Args) -> Result<serde_json::Value, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("tokio runtime: {err}"))?;
    let client = reqwest::Client::builder()
        .build()
        .map_err(|err| format!("HTTP client: {err}"))?;
    let started = Instant::now();
    let ((users, user_pages), (groups, group_pages)) = runtime.block_on(async {
        let users = download(&client, args, "Users").await?;
        let groups = download(&client, args, "Groups").await?;
        Ok::<_, String>((users, groups))
    })?;
    let download_wall = started.elapsed();
    drop(client);
    drop(runtime);

    let pages: Vec<Bytes> = user_pages.into_iter().chain(group_pages).collect();
    let bytes: usize = pages.iter().map(Bytes::len).sum();
    let mut reps = Vec::new();
    let (mut cpu, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..args.parse_reps {
        let cpu_before = thread_cpu_ns();
        let started = Instant::now();
        for page in &pages {
            let value: serde_json::Value =
                serde_json::from_slice(page).map_err(|err| format!("not JSON: {err}"))?;
            std::hint::black_box(&value);
            drop(value);
        }
        let wall_ms = started.elapsed().as_secs_f64() * 1e3;
        let cpu_ms = match (cpu_before, thread_cpu_ns()) {
            (Some(before), Some(after)) => (after - before) as f64 / 1e6,
            _ => wall_ms,
        };
        reps.push(serde_json::json!({"cpu_ms": cpu_ms, "wall_ms": wall_ms}));
        cpu.push(cpu_ms);
        wall.push(wall_ms);
    }
    let parse = (!reps.is_empty()).then(|| {
        serde_json::json!({
            "clock": if thread_cpu_ns().is_some() { "/proc/thread-self/schedstat" } else { "wall" },
            "reps": reps,
            "cpu_ms_median": median(&mut cpu),
            "wall_ms_median": median(&mut wall),
        })
    });
    Ok(serde_json::json!({
        "url": args.url,
        "page_size": args.page_size,
        "parallel": args.parallel,
        "users": users,
        "groups": groups,
        "pages": pages.len(),
        "bytes": bytes,
        "download_wall_ms": download_wall.as_secs_f64() * 1e3,
        "parse": parse,
    }))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("bench_floor: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bench_floor: {err}");
            ExitCode::from(1)
        }
    }
}
