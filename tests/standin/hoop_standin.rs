//! A stand-in for the hoop gateway as a separate process, for the demo and the
//! end-to-end tests that run the built idsync binary. It is the in-process test fake
//! (same file, not a copy), so both tiers see identical gateway behaviour; `curl
//! -H 'Api-Key: KEY' http://…/api/users` shows what it holds.
//!
//! Usage: hoop_standin --listen 127.0.0.1:PORT --api-key KEY [--standard-key KEY]
//!                     [--latency-ms N] [--quiet]

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

#[allow(dead_code)] // the test-control API is unused here
#[path = "../support/fake_gateway.rs"]
mod fake_gateway;

use fake_gateway::{Faults, GatewayOptions};

const USAGE: &str = "usage: hoop_standin --listen 127.0.0.1:PORT --api-key KEY \
                     [--standard-key KEY] [--latency-ms N] [--quiet]";

struct Args {
    listen: String,
    opts: GatewayOptions,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut listen = None;
    let mut opts = GatewayOptions {
        log_requests: true,
        ..GatewayOptions::default()
    };
    let mut admin_key = None;
    while let Some(flag) = args.next() {
        if flag == "--quiet" {
            opts.log_requests = false;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--api-key" => admin_key = Some(value),
            "--standard-key" => opts.standard_key = Some(value),
            "--latency-ms" => {
                let ms = value
                    .parse()
                    .map_err(|_| format!("--latency-ms must be a whole number, got {value:?}"))?;
                opts.faults = Faults {
                    latency: Duration::from_millis(ms),
                    ..Faults::default()
                };
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    opts.admin_key = admin_key.ok_or("--api-key is required")?;
    let listen = listen.ok_or("--listen is required")?;
    Ok(Args { listen, opts })
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("hoop_standin: {err}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("hoop_standin: cannot listen on {}: {err}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .expect("local_addr of a bound listener");
    // Scripts wait for this line, so it must be flushed before serving.
    println!("listening on http://{addr}/api");
    let _ = std::io::stdout().flush();
    match fake_gateway::serve(listener, args.opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hoop_standin: {err}");
            ExitCode::FAILURE
        }
    }
}
