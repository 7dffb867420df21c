//! Executes a plan's creates against the target: paced by a `governor` limiter (a
//! permit before every attempt, retries included), at most `max_in_flight` at once,
//! retried with backoff. Yields each user's outcome as soon as it is known; the
//! orchestrator records it.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::TargetConfig;
use crate::plan::CreateUser;
use crate::retry::Backoff;
use crate::target::{CreateAnswer, Target};

/// The final result of creating one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway created the user (201, or 409 after an attempt that may have
    /// gone through).
    Created,
    /// The gateway already had this e-mail (409 on a first attempt).
    Existing,
    /// The gateway refused the data (4xx); not resent until it changes.
    Rejected { status: u16, message: String },
    /// Transient failures on every attempt; the next run tries again.
    GaveUp { attempts: u32, reason: String },
    /// Our credentials were refused (401/403): the run must stop.
    Unauthorized { status: u16, message: String },
    /// Shutdown came before the user could be created; the next run tries again.
    Interrupted,
    /// Dry run: nothing was sent.
    WouldCreate,
}

pub struct Applier {
    target: Target,
    limiter: DefaultDirectRateLimiter,
    /// A `Retry-After` speaks for the whole gateway, not one user: no attempt of any
    /// user starts before it has passed.
    paused_until: Mutex<Option<Instant>>,
    backoff: Backoff,
    max_in_flight: usize,
}

impl Applier {
    pub fn new(target: Target, config: &TargetConfig) -> Self {
        Self::with_backoff(
            target,
            config,
            Backoff {
                max_attempts: config.max_attempts.get(),
                base: Duration::from_millis(250),
                cap: Duration::from_secs(30),
            },
        )
    }

    pub fn with_backoff(target: Target, config: &TargetConfig, backoff: Backoff) -> Self {
        let quota = Quota::per_second(config.rate_limit_per_second).allow_burst(config.burst);
        Self {
            target,
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            backoff,
            max_in_flight: config.max_in_flight.get(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Creates `users`, yielding `(user, outcome)` in completion order. Once `stop` is
    /// cancelled no new user is started; those in flight finish their current attempt.
    pub fn create_all<'a>(
        &'a self,
        users: Vec<CreateUser>,
        stop: &'a CancellationToken,
    ) -> impl Stream<Item = (CreateUser, Outcome)> + 'a {
        futures::stream::iter(users)
            .take_until(stop.cancelled())
            .map(move |user| async move {
                let outcome = self.create_one(&user, stop).await;
                (user, outcome)
            })
            .buffer_unordered(self.max_in_flight)
    }

    /// Waits until no `Retry-After` pause is running and the rate limiter grants a
    /// permit; `false` when `stop` came first.
    async fn await_turn(&self, stop: &CancellationToken) -> bool {
        loop {
            let paused_until = *self
                .paused_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(until) = paused_until.filter(|until| *until > Instant::now()) {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep_until(until) => continue,
                }
            }
            tokio::select! {
                biased;
                () = stop.cancelled() => return false,
                _ = self.limiter.until_ready() => {}
            }
            // A pause may have begun while we waited for the permit.
            let paused_until = *self
                .paused_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if paused_until.is_none_or(|until| until <= Instant::now()) {
                return true;
            }
        }
    }

    fn pause_all(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut paused_until = self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *paused_until = (*paused_until).max(Some(until));
    }

    async fn create_one(&self, user: &CreateUser, stop: &CancellationToken) -> Outcome {
        let mut maybe_applied_before = false;
        let mut attempt = 1;
        loop {
            if !self.await_turn(stop).await {
                return Outcome::Interrupted;
            }
            let (reason, retry_after) = match self.target.create_user(user).await {
                CreateAnswer::Created => return Outcome::Created,
                CreateAnswer::DryRun => return Outcome::WouldCreate,
                // The gateway is not atomic: a 5xx can come after the user row was
                // written, and then our retry meets our own user.
                CreateAnswer::Conflict if maybe_applied_before => return Outcome::Created,
                CreateAnswer::Conflict => return Outcome::Existing,
                CreateAnswer::Rejected { status, message } => {
                    return Outcome::Rejected { status, message }
                }
                CreateAnswer::Unauthorized { status, message } => {
                    // Every further request would be refused the same way.
                    stop.cancel();
                    return Outcome::Unauthorized { status, message };
                }
                CreateAnswer::Transient {
                    reason,
                    retry_after,
                    maybe_applied,
                } => {
                    maybe_applied_before |= maybe_applied;
                    if let Some(wait) = retry_after {
                        self.pause_all(wait);
                    }
                    (reason, retry_after)
                }
            };
            if attempt >= self.backoff.max_attempts {
                return Outcome::GaveUp {
                    attempts: attempt,
                    reason,
                };
            }
            attempt += 1;
            let wait = self.backoff.delay(attempt, retry_after);
            tracing::debug!(email = %user.email, %reason, wait_ms = wait.as_millis() as u64, "Create failed for now; retrying.");
            tokio::select! {
                biased;
                () = stop.cancelled() => return Outcome::Interrupted,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::{Email, Fingerprint, Subject};

    fn config() -> TargetConfig {
        let text = r#"
            [source]
            kind = "scim"
            url = "https://idp.example.com/scim/v2"
            bearer_token = "t"
            [target]
            url = "https://use.hoop.dev/api"
            api_key = "k"
            rate_limit_per_second = 1000
            burst = 1000
            max_attempts = 4
        "#;
        Config::parse(text, "test", &|_| None)
            .expect("config")
            .target
    }

    fn user() -> CreateUser {
        CreateUser {
            subject: Subject::new("s1"),
            email: Email::parse("ann@x.com").expect("email"),
            name: None,
            groups: Vec::new(),
            fingerprint: Fingerprint(1),
        }
    }

    fn transient(retry_after: Option<u64>, maybe_applied: bool) -> CreateAnswer {
        CreateAnswer::Transient {
            reason: "503 Service Unavailable: busy".into(),
            retry_after: retry_after.map(Duration::from_secs),
            maybe_applied,
        }
    }

    /// Runs one create against scripted answers; returns the outcome, the number of
    /// attempts made and the (paused-clock) time it took.
    async fn run(script: Vec<CreateAnswer>) -> (Outcome, usize, Duration) {
        let target = Target::scripted(script);
        let applier = Applier::new(target, &config());
        let stop = CancellationToken::new();
        let started = Instant::now();
        let outcome = applier.create_one(&user(), &stop).await;
        (outcome, applier.target().attempts(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn created_on_the_first_attempt() {
        assert_eq!(run(vec![CreateAnswer::Created]).await.0, Outcome::Created);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_created() {
        let (outcome, attempts, _) = run(vec![
            transient(None, false),
            transient(None, false),
            CreateAnswer::Created,
        ])
        .await;
        assert_eq!((outcome, attempts), (Outcome::Created, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn conflict_after_a_server_error_means_we_created_it() {
        let (outcome, attempts, _) = run(vec![transient(None, true), CreateAnswer::Conflict]).await;
        assert_eq!((outcome, attempts), (Outcome::Created, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn conflict_after_a_rate_limit_means_it_existed() {
        let (outcome, _, _) = run(vec![transient(None, false), CreateAnswer::Conflict]).await;
        assert_eq!(outcome, Outcome::Existing);
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_and_refusals_are_never_retried() {
        let rejected = CreateAnswer::Rejected {
            status: 422,
            message: "invalid email".into(),
        };
        let (outcome, attempts, _) = run(vec![rejected, CreateAnswer::Created]).await;
        assert_eq!(attempts, 1);
        assert_eq!(
            outcome,
            Outcome::Rejected {
                status: 422,
                message: "invalid email".into()
            }
        );
        let refused = CreateAnswer::Unauthorized {
            status: 403,
            message: "access denied".into(),
        };
        let (outcome, attempts, _) = run(vec![refused, CreateAnswer::Created]).await;
        assert_eq!(attempts, 1);
        assert!(matches!(outcome, Outcome::Unauthorized { status: 403, .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts() {
        let (outcome, attempts, _) = run(vec![transient(None, false); 10]).await;
        assert_eq!(attempts, 4);
        assert!(
            matches!(outcome, Outcome::GaveUp { attempts: 4, .. }),
            "{outcome:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let (outcome, _, elapsed) = run(vec![
            transient(Some(7), false),
            transient(Some(5), false),
            CreateAnswer::Created,
        ])
        .await;
        assert_eq!(outcome, Outcome::Created);
        assert!(
            elapsed >= Duration::from_secs(12),
            "waited only {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_backoff_wait() {
        let applier = Applier::new(
            Target::scripted(vec![transient(Some(600), false)]),
            &config(),
        );
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        assert_eq!(
            applier.create_one(&user(), &stop).await,
            Outcome::Interrupted
        );
        assert!(started.elapsed() < Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn no_new_user_starts_after_stop() {
        let applier = Applier::new(Target::scripted(vec![CreateAnswer::Created; 5]), &config());
        let stop = CancellationToken::new();
        stop.cancel();
        let done: Vec<_> = applier
            .create_all(vec![user(), user()], &stop)
            .collect()
            .await;
        assert!(done.is_empty());
        assert_eq!(applier.target().attempts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_user_not_just_the_one_refused() {
        let applier = Applier::new(Target::scripted(vec![CreateAnswer::Created]), &config());
        applier.pause_all(Duration::from_secs(9));
        let started = Instant::now();
        assert_eq!(
            applier.create_one(&user(), &CancellationToken::new()).await,
            Outcome::Created
        );
        assert!(started.elapsed() >= Duration::from_secs(9));
    }
}
