//! What the daemon tells its supervisors: `/healthz`, `/readyz` and `/metrics` on
//! the optional `[service] listen` address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;

/// Run durations worth telling apart: a steady run takes seconds, a first import
/// of a large directory hours.
const RUN_DURATION_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

/// Installs the process-wide metrics recorder; `/metrics` renders from the handle.
pub fn install_metrics() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("idsync_run_duration_seconds".into()),
            RUN_DURATION_BUCKETS,
        )
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|err| err.to_string())
}

/// The daemon's health as `/readyz` judges it; updated by the schedule loop.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Mutex<HealthState>>,
    max_age: Duration,
    unready_after_failures: u32,
}

/// Figures `/readyz` shows besides readiness (push mode: the queue).
pub type Details = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Default)]
struct HealthState {
    last_success: Option<SystemTime>,
    consecutive_failures: u32,
    last_error: Option<String>,
    shutting_down: bool,
    details: Option<(&'static str, Details)>,
}

impl Health {
    pub fn new(config: &ServiceConfig) -> Self {
        Self {
            inner: Arc::default(),
            max_age: config.ready_max_age,
            unready_after_failures: config.unready_after_failed_runs.get(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn run_succeeded(&self, at: SystemTime) {
        let mut state = self.state();
        state.last_success = Some(at);
        state.consecutive_failures = 0;
        state.last_error = None;
    }

    pub fn run_failed(&self, error: String) {
        let mut state = self.state();
        state.consecutive_failures += 1;
        state.last_error = Some(error);
    }

    pub fn shutting_down(&self) {
        self.state().shutting_down = true;
    }

    /// Shows `details()` under `name` in every `/readyz` answer.
    pub fn show_details(&self, name: &'static str, details: Details) {
        self.state().details = Some((name, details));
    }

    fn details(&self) -> Option<(&'static str, Details)> {
        self.state().details.clone()
    }

    /// `Ok` when ready, else the one-line reason.
    pub fn readiness(&self, now: SystemTime) -> Result<(), String> {
        let state = self.state();
        if state.shutting_down {
            return Err("shutting down".into());
        }
        if state.consecutive_failures >= self.unready_after_failures {
            return Err(format!(
                "the last {} runs failed; last error: {}",
                state.consecutive_failures,
                state.last_error.as_deref().unwrap_or("unknown")
            ));
        }
        let Some(last) = state.last_success else {
            return Err("no sync run has succeeded yet".into());
        };
        let age = now.duration_since(last).unwrap_or_default();
        if age > self.max_age {
            return Err(format!(
                "the last successful run was {} s ago, more than service.ready_max_age_secs = {}",
                age.as_secs(),
                self.max_age.as_secs()
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct AppState {
    health: Health,
    metrics: PrometheusHandle,
}

/// Binds `listen` now (so a taken port fails start-up) and serves until `shutdown`.
pub async fn serve(
    listen: SocketAddr,
    health: Health,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(render_metrics))
        .with_state(AppState { health, metrics });
    tracing::info!(%listen, "Serving /healthz, /readyz and /metrics.");
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "The service listener failed.");
        }
    }))
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let (status, mut body) = match state.health.readiness(SystemTime::now()) {
        Ok(()) => (StatusCode::OK, json!({"ready": true})),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"ready": false, "reason": reason}),
        ),
    };
    if let Some((name, details)) = state.health.details() {
        body[name] = details();
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
}

async fn render_metrics(State(state): State<AppState>) -> impl IntoResponse {
    state.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn health() -> Health {
        Health::new(&ServiceConfig {
            listen: None,
            ready_max_age: Duration::from_secs(600),
            unready_after_failed_runs: NonZeroU32::new(2).expect("2"),
        })
    }

    #[test]
    fn ready_only_after_a_recent_success() {
        let health = health();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            health.readiness(t0).unwrap_err(),
            "no sync run has succeeded yet"
        );
        health.run_succeeded(t0);
        assert!(health.readiness(t0 + Duration::from_secs(60)).is_ok());
        let stale = health.readiness(t0 + Duration::from_secs(601)).unwrap_err();
        assert!(stale.contains("ready_max_age_secs = 600"), "{stale}");
    }

    #[test]
    fn repeated_failures_and_shutdown_make_it_unready() {
        let health = health();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        health.run_succeeded(t0);
        health.run_failed("the IdP is down".into());
        assert!(health.readiness(t0).is_ok(), "one failure is tolerated");
        health.run_failed("the IdP is down".into());
        assert!(health
            .readiness(t0)
            .unwrap_err()
            .contains("the last 2 runs failed; last error: the IdP is down"));
        health.run_succeeded(t0);
        assert!(health.readiness(t0).is_ok());
        health.shutting_down();
        assert_eq!(health.readiness(t0).unwrap_err(), "shutting down");
    }
}
