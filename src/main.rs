//! The `idsync` command: parses the command line, wires the library together and
//! turns outcomes into exit codes (see the README).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tokio_util::sync::CancellationToken;

use idsync::config::Config;
use idsync::sync::{RunMode, Summary, Syncer};

/// Exit codes, documented in the README.
mod exit {
    /// All done.
    pub const OK: u8 = 0;
    /// The run finished, but some users failed.
    pub const USERS_FAILED: u8 = 1;
    /// Bad configuration or usage; nothing was done.
    pub const BAD_CONFIG: u8 = 2;
    /// The run was aborted (IdP, gateway credentials, cache).
    pub const ABORTED: u8 = 3;
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Keeps hoop.dev gateway users in step with an identity provider's directory."
)]
struct Cli {
    /// Configuration file.
    #[arg(long, env = "IDSYNC_CONFIG", default_value = "/etc/idsync/idsync.toml")]
    config: PathBuf,
    /// Run one sync now and exit, instead of running as a daemon on the schedule.
    #[arg(long)]
    sync_now: bool,
    /// With --sync-now: show what would be done; change neither the gateway nor the cache.
    #[arg(long, requires = "sync_now")]
    dry_run: bool,
    /// With --sync-now: make the deactivations this run plans even beyond
    /// sync.max_deactivations (after checking the directory really lost those users).
    #[arg(long, requires = "sync_now")]
    allow_mass_deactivation: bool,
    /// How to print the run summary on stdout.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// How to write logs on stderr (filter them with RUST_LOG, e.g. RUST_LOG=idsync=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("idsync: invalid configuration: {err}");
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("idsync: cannot start the async runtime: {err}");
            return ExitCode::from(exit::ABORTED);
        }
    };
    ExitCode::from(runtime.block_on(run(cli, config)))
}

async fn run(cli: Cli, config: Config) -> u8 {
    let mode = RunMode {
        dry_run: cli.dry_run,
        allow_mass_deactivation: cli.allow_mass_deactivation,
    };
    let syncer = match Syncer::new(&config, mode) {
        Ok(syncer) => syncer,
        Err(err) => {
            eprintln!("idsync: cannot start: {err}");
            return exit::ABORTED;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));

    if !cli.sync_now {
        tracing::info!(cache = %config.cache.path.display(), "idsync daemon started.");
        idsync::schedule::run_daemon(&syncer, &config.sync, shutdown).await;
        tracing::info!("idsync daemon stopped.");
        return exit::OK;
    }
    match syncer.run_once(&shutdown).await {
        Ok(summary) => {
            print_summary(&summary, cli.output, None);
            if summary.has_failures() {
                exit::USERS_FAILED
            } else {
                exit::OK
            }
        }
        Err(aborted) => {
            let error = aborted.error.to_string();
            print_summary(&aborted.summary, cli.output, Some(&error));
            eprintln!("idsync: run aborted: {error}");
            exit::ABORTED
        }
    }
}

/// SIGTERM or SIGINT cancel `shutdown` once; the run winds down from there.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot listen for SIGTERM/SIGINT; stop idsync with SIGKILL.");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "Shutting down: no new requests; letting those in flight finish."
    );
    shutdown.cancel();
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn print_summary(summary: &Summary, output: Output, error: Option<&str>) {
    let mut out = std::io::stdout().lock();
    let written = match output {
        Output::Json => {
            let mut value = serde_json::to_value(summary).unwrap_or_default();
            if let (Some(error), Some(object)) = (error, value.as_object_mut()) {
                object.insert("error".into(), error.into());
            }
            writeln!(out, "{value}")
        }
        Output::Text => write_text_summary(&mut out, summary),
    };
    // stdout closed (e.g. piped into `head`): the exit code still tells the outcome.
    let _ = written;
}

fn write_text_summary(out: &mut impl Write, summary: &Summary) -> std::io::Result<()> {
    let c = &summary.counts;
    let would = if summary.dry_run { "would be " } else { "" };
    let mut parts = vec![
        format!("{would}created {}", c.created),
        format!("existing {}", c.existing),
    ];
    let optional = [
        ("updated", c.updated),
        ("reactivated", c.reactivated),
        ("deactivated", c.deactivated),
        ("deactivation failed", c.deactivation_failed),
        ("deactivations held back", c.deactivations_blocked),
        ("interrupted", c.interrupted),
    ];
    parts.push(format!("unchanged {}", c.unchanged));
    parts.push(format!("skipped invalid {}", c.skipped_invalid));
    parts.push(format!("skipped inactive {}", c.skipped_inactive));
    parts.push(format!("failed {}", c.failed));
    parts.extend(
        optional
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| format!("{label} {n}")),
    );
    writeln!(
        out,
        "{} — {} directory users in {:.1} s",
        parts.join(", "),
        summary.directory_users,
        summary.duration_ms as f64 / 1000.0,
    )?;
    for action in &summary.actions {
        writeln!(
            out,
            "  would {:<10} {}: {}",
            action.action, action.user, action.reason
        )?;
    }
    for report in &summary.skipped {
        writeln!(out, "  skipped  {}: {}", report.user, report.reason)?;
    }
    for report in &summary.failures {
        writeln!(out, "  failed   {}: {}", report.user, report.reason)?;
    }
    if let Some(guard) = &summary.deactivation_guard {
        writeln!(out, "  held back: {guard}")?;
    }
    Ok(())
}
