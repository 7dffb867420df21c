//! The `idsync` command: parses the command line, wires the library together and
//! turns outcomes into exit codes (see the README).
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::unreachable)
)]

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use idsync::config::{Config, LocalConfig};
use idsync::events::printable;
use idsync::model::Counts;
use idsync::notify::Notifier;
use idsync::schedule::{ReloadRequest, Supervision};
use idsync::service::Health;
use idsync::sync::{RunMode, Summary, Syncer};

/// Exit codes, documented in the README.
mod exit {
    /// All done.
    pub const OK: u8 = 0;
    /// The run finished, but some users failed (or deactivations were held back).
    pub const USERS_FAILED: u8 = 1;
    /// Bad configuration or usage; nothing was done.
    pub const BAD_CONFIG: u8 = 2;
    /// The run was aborted (IdP, gateway credentials, cache).
    pub const ABORTED: u8 = 3;
}

#[derive(Parser, Debug)]
#[command(
    version = env!("IDSYNC_VERSION"),
    about = "Keeps hoop.dev gateway users in step with an identity provider's directory."
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "IDSYNC_CONFIG",
        default_value = "/etc/idsync/idsync.toml"
    )]
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
    /// With --sync-now: resend the users the gateway rejected before, even if their
    /// directory data did not change.
    #[arg(long, requires = "sync_now")]
    retry_rejected: bool,
    /// After SIGTERM/SIGINT, how long requests in flight may take before idsync exits anyway.
    #[arg(long, default_value_t = 30)]
    shutdown_grace_secs: u64,
    /// How to print results on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// How to write logs on stderr (filter them with RUST_LOG, e.g. RUST_LOG=idsync=debug).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the last runs recorded in the cache and when the next one is due.
    /// Reads no secret.
    Status,
    /// Look after the cache (cache.path).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Check the configuration; with --connect also reach the IdP and the gateway.
    CheckConfig {
        /// Get a token, read one directory user and call the gateway with the real credentials.
        #[arg(long)]
        connect: bool,
    },
    /// Print a shell completion script, e.g. `idsync completions bash > /etc/bash_completion.d/idsync`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `idsync man > /usr/local/share/man/man1/idsync.1`.
    Man,
}

#[derive(Subcommand, Debug)]
enum CacheAction {
    /// Move a damaged cache aside (to <cache.path>.damaged-<time>) and create a
    /// fresh one; the next run adopts the gateway's existing users. Stop idsync first.
    Reset,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
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
    idsync::memory::keep_large_blocks_out_of_the_heap();
    let cli = Cli::parse();
    if let Some(code) = without_configuration(&cli) {
        return code;
    }
    init_logging(cli.log_format);
    if let Some(code) = with_local_configuration(&cli) {
        return code;
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            fatal(format_args!("invalid configuration: {err}"));
            return ExitCode::from(exit::BAD_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            fatal(format_args!("cannot start the async runtime: {err}"));
            return ExitCode::from(exit::ABORTED);
        }
    };
    let code = runtime.block_on(async {
        match &cli.command {
            Some(Command::CheckConfig { connect }) => check_config(&cli, &config, *connect).await,
            None if cli.sync_now => sync_now(&cli, config).await,
            None => daemon_on_workers(cli, config).await,
            // Handled before the whole configuration is read.
            Some(
                Command::Completions { .. }
                | Command::Man
                | Command::Status
                | Command::Cache { .. },
            ) => exit::OK,
        }
    });
    ExitCode::from(code)
}

/// The commands that need no configuration and log nothing.
fn without_configuration(cli: &Cli) -> Option<ExitCode> {
    match &cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "idsync",
                &mut std::io::stdout(),
            );
            Some(ExitCode::from(exit::OK))
        }
        Some(Command::Man) => Some(print_man_page()),
        _ => None,
    }
}

/// The commands that read no secret and reach nothing: they need only the
/// local keys (`cache.path`), so they work beside a running daemon.
fn with_local_configuration(cli: &Cli) -> Option<ExitCode> {
    let command = match &cli.command {
        Some(Command::Status) => status as fn(&Cli, &LocalConfig) -> u8,
        Some(Command::Cache {
            action: CacheAction::Reset,
        }) => reset_cache,
        _ => return None,
    };
    Some(ExitCode::from(match LocalConfig::load(&cli.config) {
        Ok(config) => command(cli, &config),
        Err(err) => {
            fatal(format_args!("invalid configuration: {err}"));
            exit::BAD_CONFIG
        }
    }))
}

fn print_man_page() -> ExitCode {
    let mut page = Vec::new();
    let written = clap_mangen::Man::new(Cli::command())
        .render(&mut page)
        .and_then(|()| std::io::stdout().write_all(&page));
    match written {
        Ok(()) => ExitCode::from(exit::OK),
        Err(err) => {
            eprintln!("idsync: cannot write the manual page: {err}");
            ExitCode::from(exit::ABORTED)
        }
    }
}

async fn sync_now(cli: &Cli, config: Config) -> u8 {
    let mode = RunMode {
        dry_run: cli.dry_run,
        allow_mass_deactivation: cli.allow_mass_deactivation,
        retry_rejected: cli.retry_rejected,
    };
    let syncer = match Syncer::for_one_run(&config, mode) {
        Ok(syncer) => syncer,
        Err(err) => {
            fatal(format_args!("cannot start: {err}"));
            return exit::ABORTED;
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signals(
        shutdown.clone(),
        ReloadRequest::default(),
        cli.shutdown_grace_secs,
        Notifier::from_env(),
        exit::ABORTED,
    ));
    // The progress line rewrites itself in place: for people, not for JSON logs.
    let on_terminal = std::io::stderr().is_terminal() && !JSON_LOGS.load(Ordering::Relaxed);
    let progress = tokio::spawn(show_progress(on_terminal));
    let result = syncer.run_once(&shutdown).await;
    progress.abort();
    let code = match result {
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
            fatal(format_args!("run aborted: {error}"));
            exit::ABORTED
        }
    };
    // Every outcome and the run record are on disk already (each is flushed as it
    // is recorded), so skip closing the cache and freeing a large heap: at a
    // million users that teardown takes longer than some whole runs.
    let _ = std::io::stdout().flush();
    std::process::exit(code.into())
}

/// The daemon, as a task on the runtime's workers rather than the main thread's
/// future: the answers to a change run's requests then wake them on the worker
/// that read them, without waking the main thread for each. A one-shot run
/// stays on the main thread, where a full read's planning runs beside the task
/// decoding the pages instead of taking turns with it (docs/performance.md).
async fn daemon_on_workers(cli: Cli, config: Config) -> u8 {
    let daemon = tokio::spawn(async move { daemon(&cli, config).await });
    daemon.await.unwrap_or(exit::ABORTED)
}

/// The daemon: starts up, runs the schedule until shutdown, and says how it ended.
async fn daemon(cli: &Cli, config: Config) -> u8 {
    let shutdown = CancellationToken::new();
    let started = match start_daemon(cli, &config, &shutdown).await {
        Ok(started) => started,
        Err(code) => return code,
    };
    tracing::info!(cache = %config.cache.path.display(), "idsync daemon started.");
    let path = cli.config.clone();
    let load = move || Config::load(&path);
    let result = idsync::schedule::run_daemon(
        config,
        started.syncer,
        started.mode,
        load,
        started.reload,
        &started.supervision,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    match result {
        Ok(()) => {
            tracing::info!("idsync daemon stopped.");
            exit::OK
        }
        Err(err) => {
            fatal(format_args!("cannot run: {err}"));
            exit::ABORTED
        }
    }
}

/// What the daemon's schedule runs with.
struct Started {
    syncer: Syncer,
    mode: RunMode,
    reload: ReloadRequest,
    supervision: Supervision,
}

/// Binds the service listener, handles signals and opens the cache; once all of
/// that worked, tells systemd the daemon is ready and keeps its watchdog fed. On
/// failure, says why on stderr and returns the exit code.
async fn start_daemon(
    cli: &Cli,
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Started, u8> {
    let notifier = Notifier::from_env();
    let health = serve_health(config, shutdown).await?;
    let reload = ReloadRequest::default();
    tokio::spawn(on_signals(
        shutdown.clone(),
        reload.clone(),
        cli.shutdown_grace_secs,
        notifier.clone(),
        exit::OK,
    ));
    serve_push(config, health.as_ref(), shutdown).await?;
    let mode = RunMode::default();
    let syncer = Syncer::new(config, mode).map_err(|err| {
        fatal(format_args!("cannot start: {err}"));
        exit::ABORTED
    })?;
    // Start-up checks passed: valid config, listener bound, cache opened.
    notifier.ready();
    feed_watchdog(&notifier);
    Ok(Started {
        syncer,
        mode,
        reload,
        supervision: Supervision { health, notifier },
    })
}

/// With `service.listen`: serves `/healthz`, `/readyz` (503 from the moment
/// shutdown begins) and `/metrics`, and returns the health they report.
async fn serve_health(config: &Config, shutdown: &CancellationToken) -> Result<Option<Health>, u8> {
    let Some(listen) = config.service.listen else {
        return Ok(None);
    };
    let metrics = idsync::service::install_metrics().map_err(|err| {
        fatal(format_args!("cannot set up metrics: {err}"));
        exit::ABORTED
    })?;
    let state = Health::new(&config.service);
    if let Err(err) = idsync::service::serve(listen, state.clone(), metrics, shutdown.clone()).await
    {
        fatal(format_args!(
            "cannot listen on service.listen = {listen}: {err}"
        ));
        return Err(exit::ABORTED);
    }
    let (stopping, token) = (state.clone(), shutdown.clone());
    tokio::spawn(async move {
        token.cancelled().await;
        stopping.shutting_down();
    });
    Ok(Some(state))
}

/// With `[source] kind = "push"`: serves the SCIM endpoint on `push.listen`, on
/// the store the runs then read.
async fn serve_push(
    config: &Config,
    health: Option<&Health>,
    shutdown: &CancellationToken,
) -> Result<(), u8> {
    let idsync::config::SourceKind::Push(push) = &config.source.kind else {
        return Ok(());
    };
    let store = idsync::push::PushStore::open(&push.store_path).map_err(|err| {
        fatal(format_args!("cannot open the push store: {err}"));
        exit::ABORTED
    })?;
    if let Some(health) = health {
        let queue = store.clone();
        health.show_details("push_queue", std::sync::Arc::new(move || queue.figures()));
    }
    idsync::push::serve(push, store, config.groups.clone(), shutdown.clone())
        .await
        .map(drop)
        .map_err(|err| {
            fatal(format_args!(
                "cannot serve SCIM on push.listen = {}: {err}",
                push.listen
            ));
            exit::ABORTED
        })
}

/// When systemd asks for a watchdog, pets it from a task of its own, so a long
/// run never starves it.
fn feed_watchdog(notifier: &Notifier) {
    let Some(interval) = notifier.watchdog_interval() else {
        return;
    };
    let notifier = notifier.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        loop {
            ticks.tick().await;
            notifier.watchdog();
        }
    });
}

/// SIGTERM/SIGINT cancel `shutdown` (and exit with `code` anyway after the grace
/// period); SIGHUP asks for a config reload before the next run.
async fn on_signals(
    shutdown: CancellationToken,
    reload: ReloadRequest,
    grace_secs: u64,
    notifier: Notifier,
    code: u8,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::error!("Cannot listen for signals; stop idsync with SIGKILL.");
        return;
    };
    let name = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => {
                tracing::info!("SIGHUP: the config will be re-read before the next run.");
                reload.request();
            }
        }
    };
    tracing::info!(
        signal = name,
        grace_secs,
        "Shutting down: no new requests; letting those in flight finish."
    );
    notifier.stopping();
    shutdown.cancel();
    tokio::time::sleep(Duration::from_secs(grace_secs)).await;
    // Whatever was recorded is on disk; unrecorded requests are met again as 409s.
    tracing::warn!(
        grace_secs,
        "Requests still in flight after the grace period; exiting anyway."
    );
    std::process::exit(i32::from(code));
}

/// On a terminal, one line rewritten in place; otherwise a log line every 10 s.
async fn show_progress(terminal: bool) {
    let started = Instant::now();
    let period = if terminal {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(10)
    };
    let mut ticks = tokio::time::interval(period);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let (pulled, planned, done) = idsync::events::progress::read();
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        if terminal {
            eprint!("\r\x1b[2Kpulled {pulled} users · {done}/{planned} actions · {rate:.1}/s");
        } else {
            tracing::info!(
                pulled,
                done,
                planned,
                rate = format!("{rate:.1}/s"),
                "Progress."
            );
        }
    }
}

/// `idsync cache reset`: see [`idsync::cache::reset`].
fn reset_cache(_cli: &Cli, config: &LocalConfig) -> u8 {
    let path = &config.cache.path;
    match idsync::cache::reset(path) {
        Ok(Some(aside)) => {
            println!(
                "moved the cache {} aside to {}; created a fresh one. The next run adopts the gateway's existing users.",
                path.display(),
                aside.display()
            );
            exit::OK
        }
        Ok(None) => {
            println!(
                "there was no cache at {}; created a fresh one.",
                path.display()
            );
            exit::OK
        }
        Err(err) => {
            eprintln!("idsync: cannot reset the cache: {err}");
            exit::ABORTED
        }
    }
}

fn status(cli: &Cli, config: &LocalConfig) -> u8 {
    let runs = match idsync::cache::read_status(&config.cache.path) {
        Ok(runs) => runs,
        Err(err) => {
            fatal(format_args!("cannot read the run history: {err}"));
            return exit::ABORTED;
        }
    };
    let next = config.schedule.upcoming(chrono::Utc).next();
    if cli.output == Output::Json {
        let value = serde_json::json!({
            "cache": config.cache.path,
            "next_run": next.map(|n| n.to_rfc3339()),
            "runs": runs,
        });
        println!("{value}");
        return exit::OK;
    }
    println!("cache: {}", config.cache.path.display());
    if let Some(next) = next {
        println!(
            "next scheduled run: {} (if the daemon is running)",
            next.to_rfc3339()
        );
    }
    if runs.is_empty() {
        println!("no runs yet");
        return exit::OK;
    }
    println!(
        "{:<26} {:<9} {:>7} {:>8} {:>7} {:>11} {:>6}  error",
        "started", "outcome", "created", "existing", "updated", "deactivated", "failed"
    );
    for run in &runs {
        let c = &run.counts;
        println!(
            "{:<26} {:<9} {:>7} {:>8} {:>7} {:>11} {:>6}  {}",
            printable(run.started_at.get(..19).unwrap_or(&run.started_at)),
            printable(&run.outcome),
            c.created,
            c.existing,
            c.updated,
            c.deactivated,
            c.failed,
            printable(run.error.as_deref().unwrap_or(""))
        );
    }
    exit::OK
}

async fn check_config(cli: &Cli, config: &Config, connect: bool) -> u8 {
    let mut checks = vec![("config", Ok(format!("{} is valid", cli.config.display())))];
    let warnings = config.warnings();
    if connect {
        match Syncer::probe(config).await {
            Ok(found) => checks.extend(found),
            Err(err) => checks.push(("setup", Err(err.to_string()))),
        }
    }
    let all_ok = checks.iter().all(|(_, result)| result.is_ok());
    if cli.output == Output::Json {
        let mut value: serde_json::Map<String, serde_json::Value> = checks
            .iter()
            .map(|(part, result)| {
                let entry = match result {
                    Ok(detail) => serde_json::json!({"ok": true, "detail": detail}),
                    Err(error) => serde_json::json!({"ok": false, "error": error}),
                };
                ((*part).to_owned(), entry)
            })
            .collect();
        value.insert("warnings".into(), warnings.into());
        println!("{}", serde_json::Value::Object(value));
    } else {
        for (part, result) in &checks {
            match result {
                Ok(detail) => println!("ok      {part}: {}", printable(detail)),
                Err(error) => println!("FAILED  {part}: {}", printable(error)),
            }
        }
        for warning in &warnings {
            println!("WARNING {warning}");
        }
    }
    if all_ok {
        exit::OK
    } else {
        exit::ABORTED
    }
}

/// Set once `--log-format json` is known: then every line on stderr is JSON.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(colour_logs()).init(),
        LogFormat::Json => {
            JSON_LOGS.store(true, Ordering::Relaxed);
            builder.json().flatten_event(true).with_ansi(false).init()
        }
    }
}

/// Colour only for a person at a terminal: never into a file, a pipe or the
/// journal, and not when `NO_COLOR` is set (<https://no-color.org>).
fn colour_logs() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

/// Why idsync stops, on stderr: a plain `idsync: …` line, or with
/// `--log-format json` an error log line like every other.
fn fatal(message: std::fmt::Arguments<'_>) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::error!("{message}");
    } else {
        eprintln!("idsync: {message}");
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
        Output::Text => write_text_summary(&mut out, summary, error),
    };
    // stdout closed (e.g. piped into `head`): the exit code still tells the outcome.
    let _ = written;
}

/// The summary for people; directory and gateway text is escaped. An aborted
/// run says so, and why, first.
fn write_text_summary(
    out: &mut impl Write,
    summary: &Summary,
    error: Option<&str>,
) -> std::io::Result<()> {
    if let Some(error) = error {
        writeln!(out, "ABORTED: {}", printable(error))?;
    }
    writeln!(
        out,
        "{} — {} directory users in {:.1} s",
        counts_text(&summary.counts, summary.dry_run),
        summary.directory_users,
        summary.duration_ms / 1000.0,
    )?;
    for action in &summary.actions {
        writeln!(
            out,
            "  would {:<10} {}: {}",
            action.action,
            printable(&action.user),
            printable(&action.reason)
        )?;
    }
    let reports = [("skipped", &summary.skipped), ("failed", &summary.failures)];
    for (what, reports) in reports {
        for report in reports {
            let (user, reason) = (printable(&report.user), printable(&report.reason));
            writeln!(out, "  {what:<8} {user}: {reason}")?;
        }
    }
    if let Some(guard) = &summary.deactivation_guard {
        writeln!(out, "  held back: {}", printable(guard))?;
    }
    Ok(())
}

/// The run's counts: the usual ones always, the others only when not zero.
fn counts_text(c: &Counts, dry_run: bool) -> String {
    let would = if dry_run { "would be " } else { "" };
    let mut parts = vec![
        format!("{would}created {}", c.created),
        format!("existing {}", c.existing),
        format!("unchanged {}", c.unchanged),
        format!("skipped invalid {}", c.skipped_invalid),
        format!("skipped inactive {}", c.skipped_inactive),
        format!("failed {}", c.failed),
    ];
    let optional = [
        ("updated", c.updated),
        ("reactivated", c.reactivated),
        ("deactivated", c.deactivated),
        ("deactivation failed", c.deactivation_failed),
        ("deactivations held back", c.deactivations_blocked),
        ("interrupted", c.interrupted),
    ];
    parts.extend(
        optional
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(label, n)| format!("{label} {n}")),
    );
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_summary_shows_rare_counts_only_when_not_zero() {
        let summary = Summary {
            counts: idsync::model::Counts {
                created: 2,
                existing: 1,
                failed: 1,
                deactivated: 3,
                ..Default::default()
            },
            duration_ms: 1500.0,
            dry_run: true,
            directory_users: 7,
            ..Summary::default()
        };
        let mut out = Vec::new();
        write_text_summary(&mut out, &summary, None).expect("written to memory");
        assert_eq!(
            String::from_utf8(out).expect("UTF-8"),
            "would be created 2, existing 1, unchanged 0, skipped invalid 0, \
             skipped inactive 0, failed 1, deactivated 3 — 7 directory users in 1.5 s\n"
        );
    }

    fn summary_text(summary: &Summary, error: Option<&str>) -> String {
        let mut out = Vec::new();
        write_text_summary(&mut out, summary, error).expect("written to memory");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn an_aborted_run_says_so_and_why_on_its_first_line() {
        let text = summary_text(
            &Summary::default(),
            Some("the directory is unavailable: GET https://idp/Users: answered 503"),
        );
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "ABORTED: the directory is unavailable: GET https://idp/Users: answered 503"
        );
    }

    #[test]
    fn directory_text_in_the_summary_is_escaped() {
        let summary = Summary {
            skipped: vec![idsync::sync::Report {
                user: "subject u\n1 (Eve\nINFO forged line\x1b[2J)".into(),
                reason: "bad\re-mail".into(),
            }],
            ..Summary::default()
        };
        let text = summary_text(&summary, Some("gateway said \x1b[2Jno"));
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
        assert_eq!(text.lines().count(), 3, "{text:?}");
        assert!(
            text.contains("subject u\\n1 (Eve\\nINFO forged line\\u{1b}[2J): bad\\re-mail"),
            "{text:?}"
        );
        assert!(
            text.starts_with("ABORTED: gateway said \\u{1b}[2Jno\n"),
            "{text:?}"
        );
    }
}
