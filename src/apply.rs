//! Executes a plan's actions against the target: paced by a `governor` limiter (a
//! permit before every attempt, retries included), at most `max_in_flight` at once,
//! retried with backoff. Yields each action's outcome as soon as it is known; the
//! orchestrator records it.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures::{Stream, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::TargetConfig;
use crate::events;
use crate::model::GatewayUser;
use crate::plan::{merged, ChangeKind, CreateUser, Rules, UpdateUser};
use crate::retry::{self, Attempt, Backoff, Exhausted};
use crate::target::{Answer, Target};

/// One thing to do in the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create(CreateUser),
    Change(UpdateUser),
}

/// The final result of one action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The gateway created the user (201, or 409 after an attempt that may have
    /// gone through).
    Created,
    /// The gateway already had this e-mail (409 on a first attempt): idsync adopts
    /// the user.
    Adopted,
    /// The user was read and written back with the change.
    Changed,
    /// The user was read and already as wanted; nothing was written.
    Unchanged,
    /// The gateway has no such user (any more).
    Missing,
    /// The gateway refused the request (4xx); resending will not help.
    Rejected { status: u16, message: String },
    /// Transient failures on every attempt; the next run tries again.
    GaveUp { attempts: u32, reason: String },
    /// Our credentials were refused (401/403): the run must stop.
    Unauthorized { status: u16, message: String },
    /// The gateway answered a redirect: `target.url` is wrong, and the run must stop.
    Misdirected { reason: String },
    /// Shutdown came before the action was done; the next run tries again.
    Interrupted,
    /// Dry run: the write was not sent.
    WouldWrite,
}

/// How a request ended after retries: the gateway's answer, or why there is none.
type Settled<T> = Result<Answer<T>, Exhausted<Stopped>>;

/// Shutdown came while an attempt waited for its turn.
#[derive(Debug)]
struct Stopped;

pub struct Applier {
    target: Target,
    rules: Rules,
    limiter: DefaultDirectRateLimiter,
    /// A `Retry-After` speaks for the whole gateway, not one user: no attempt of any
    /// user starts before it has passed.
    paused_until: Mutex<Option<Instant>>,
    backoff: Backoff,
    max_in_flight: usize,
}

impl Applier {
    pub fn new(target: Target, config: &TargetConfig, rules: Rules) -> Self {
        let quota = Quota::per_second(config.rate_limit_per_second).allow_burst(config.burst);
        Self {
            target,
            rules,
            limiter: RateLimiter::direct(quota),
            paused_until: Mutex::new(None),
            backoff: Backoff {
                max_attempts: config.max_attempts.get(),
                base: Duration::from_millis(250),
                cap: Duration::from_secs(30),
            },
            max_in_flight: config.max_in_flight.get(),
        }
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Runs `actions`, yielding `(action, outcome)` in completion order. Once `stop` is
    /// cancelled no new action starts; those in flight finish their current attempt.
    pub fn run_all<'a>(
        &'a self,
        actions: impl IntoIterator<Item = Action> + 'a,
        stop: &'a CancellationToken,
    ) -> impl Stream<Item = (Action, Outcome)> + 'a {
        futures::stream::iter(actions)
            .take_until(stop.cancelled())
            .map(move |action| async move {
                let outcome = match &action {
                    Action::Create(user) => self.create(user, stop).await,
                    Action::Change(change) => self.change(change, stop).await,
                };
                (action, outcome)
            })
            .buffer_unordered(self.max_in_flight)
    }

    /// Every user of the gateway (one request, retried like the others).
    pub async fn inventory(&self, stop: &CancellationToken) -> Result<Vec<GatewayUser>, Outcome> {
        match self.with_retries(stop, || self.target.list_users()).await {
            (Ok(Answer::Done(users)), _) => Ok(users),
            (settled, _) => Err(outcome_of(settled)),
        }
    }

    async fn create(&self, user: &CreateUser, stop: &CancellationToken) -> Outcome {
        match self
            .with_retries(stop, || self.target.create_user(&user.profile))
            .await
        {
            (Ok(Answer::Done(())), _) => Outcome::Created,
            // The gateway is not atomic: a 5xx can come after the user row was
            // written, and then our retry meets our own user.
            (Ok(Answer::Conflict), true) => Outcome::Created,
            (Ok(Answer::Conflict), false) => Outcome::Adopted,
            (settled, _) => outcome_of(settled),
        }
    }

    /// Reads the user, merges the change, and writes it back only if it differs:
    /// PUT is a full replace, so it must carry everything the gateway holds.
    async fn change(&self, change: &UpdateUser, stop: &CancellationToken) -> Outcome {
        let current = match self
            .with_retries(stop, || self.target.get_user(&change.key))
            .await
        {
            (Ok(Answer::Done(current)), _) => current,
            (settled, _) => return outcome_of(settled),
        };
        let status = match change.kind {
            ChangeKind::Update => None,
            ChangeKind::Deactivate => Some("inactive"),
            // Before the first login the subject is still the e-mail: the user was
            // only ever invited.
            ChangeKind::Reactivate if current.id == current.email => Some("invited"),
            ChangeKind::Reactivate => Some("active"),
        };
        let wanted = merged(&current, change.profile.as_ref(), status, &self.rules);
        if wanted == merged(&current, None, None, &self.rules) {
            return Outcome::Unchanged;
        }
        match self
            .with_retries(stop, || self.target.put_user(&change.key, &wanted))
            .await
        {
            (Ok(Answer::Done(())), _) => Outcome::Changed,
            (settled, _) => outcome_of(settled),
        }
    }

    /// Sends `request` until it gets an answer worth keeping: waits its turn before
    /// every attempt, retries transient failures with backoff. Also says whether an
    /// earlier attempt may have been applied by the gateway.
    async fn with_retries<T, F, Fut>(
        &self,
        stop: &CancellationToken,
        mut request: F,
    ) -> (Settled<T>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Answer<T>>,
    {
        // Attempts run one at a time; atomic only to be shared with their futures.
        let maybe_applied = AtomicBool::new(false);
        let attempt = || {
            // A request sends nothing until it is awaited, after the turn.
            let request = request();
            let maybe_applied = &maybe_applied;
            async move {
                if !self.await_turn(stop).await {
                    return Attempt::Fail(Stopped);
                }
                self.judge(request.await, stop, maybe_applied)
            }
        };
        let settled = retry::with_retries(&self.backoff, stop, attempt, events::retrying).await;
        (settled, maybe_applied.into_inner())
    }

    /// What an answer means for the request: retried when transient (and then
    /// every user waits for its `Retry-After`), settled otherwise.
    fn judge<T>(
        &self,
        answer: Answer<T>,
        stop: &CancellationToken,
        maybe_applied: &AtomicBool,
    ) -> Attempt<Answer<T>, Stopped> {
        match answer {
            Answer::Transient {
                reason,
                retry_after,
                maybe_applied: applied,
            } => {
                if let Some(wait) = retry_after {
                    self.pause_all(wait);
                }
                maybe_applied.fetch_or(applied, Ordering::Relaxed);
                Attempt::Retry {
                    reason,
                    retry_after,
                }
            }
            Answer::WaitTooLong { reason } => Attempt::GiveUp { reason },
            stopping @ (Answer::Unauthorized { .. } | Answer::Misdirected { .. }) => {
                // Every further request would be refused, or go astray, the same way.
                stop.cancel();
                Attempt::Done(stopping)
            }
            answer => Attempt::Done(answer),
        }
    }

    /// Waits until no `Retry-After` pause is running and the rate limiter grants a
    /// permit; `false` when `stop` came first.
    async fn await_turn(&self, stop: &CancellationToken) -> bool {
        loop {
            if let Some(until) = self.paused_until() {
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
            if self.paused_until().is_none() {
                return true;
            }
        }
    }

    fn paused_until(&self) -> Option<Instant> {
        let paused_until = *self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        paused_until.filter(|until| *until > Instant::now())
    }

    fn pause_all(&self, wait: Duration) {
        // The client held `wait` to `target.max_retry_after_secs`.
        let Some(until) = Instant::now().checked_add(wait) else {
            return;
        };
        let mut paused_until = self
            .paused_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *paused_until = (*paused_until).max(Some(until));
    }
}

/// The outcome of an answer that is not the action's own success.
fn outcome_of<T>(settled: Settled<T>) -> Outcome {
    match settled {
        Err(Exhausted::Interrupted | Exhausted::Failed(Stopped)) => Outcome::Interrupted,
        Err(Exhausted::GaveUp { attempts, reason }) => Outcome::GaveUp { attempts, reason },
        Ok(answer) => match answer {
            Answer::Done(_) | Answer::DryRun => Outcome::WouldWrite,
            Answer::NotFound => Outcome::Missing,
            Answer::Conflict => Outcome::Rejected {
                status: 409,
                message: "conflict".into(),
            },
            Answer::Rejected { status, message } => Outcome::Rejected { status, message },
            Answer::Unauthorized { status, message } => Outcome::Unauthorized { status, message },
            Answer::Misdirected { reason } => Outcome::Misdirected { reason },
            // `with_retries` never settles on a transient answer.
            Answer::Transient { reason, .. } | Answer::WaitTooLong { reason } => Outcome::GaveUp {
                attempts: 0,
                reason,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::Profile;
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

    fn applier(script: Vec<Answer<()>>) -> Applier {
        Applier::new(Target::scripted(script), &config(), Rules::default())
    }

    fn user() -> CreateUser {
        CreateUser {
            subject: Subject::new("s1"),
            profile: Profile {
                email: Email::parse("ann@x.com").expect("email"),
                name: None,
                groups: Vec::new(),
                slack_id: None,
                picture: None,
            },
            fingerprint: Fingerprint(1),
        }
    }

    fn transient(retry_after: Option<u64>, maybe_applied: bool) -> Answer<()> {
        Answer::Transient {
            reason: "503 Service Unavailable: busy".into(),
            retry_after: retry_after.map(Duration::from_secs),
            maybe_applied,
        }
    }

    /// Runs one create against scripted answers; returns the outcome, the number of
    /// attempts made and the (paused-clock) time it took.
    async fn run(script: Vec<Answer<()>>) -> (Outcome, usize, Duration) {
        let applier = applier(script);
        let started = Instant::now();
        let outcome = applier.create(&user(), &CancellationToken::new()).await;
        (outcome, applier.target().attempts(), started.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn created_on_the_first_attempt() {
        assert_eq!(run(vec![Answer::Done(())]).await.0, Outcome::Created);
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_until_created() {
        let (outcome, attempts, _) = run(vec![
            transient(None, false),
            transient(None, false),
            Answer::Done(()),
        ])
        .await;
        assert_eq!((outcome, attempts), (Outcome::Created, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn conflict_after_a_server_error_means_we_created_it() {
        let (outcome, attempts, _) = run(vec![transient(None, true), Answer::Conflict]).await;
        assert_eq!((outcome, attempts), (Outcome::Created, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn conflict_after_a_rate_limit_means_it_existed() {
        let (outcome, _, _) = run(vec![transient(None, false), Answer::Conflict]).await;
        assert_eq!(outcome, Outcome::Adopted);
    }

    #[tokio::test(start_paused = true)]
    async fn rejections_and_refusals_are_never_retried() {
        let rejected = Answer::Rejected {
            status: 422,
            message: "invalid email".into(),
        };
        let (outcome, attempts, _) = run(vec![rejected, Answer::Done(())]).await;
        assert_eq!(attempts, 1);
        assert_eq!(
            outcome,
            Outcome::Rejected {
                status: 422,
                message: "invalid email".into()
            }
        );
        let refused = Answer::Unauthorized {
            status: 403,
            message: "access denied".into(),
        };
        let (outcome, attempts, _) = run(vec![refused, Answer::Done(())]).await;
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
            Answer::Done(()),
        ])
        .await;
        assert_eq!(outcome, Outcome::Created);
        assert!(
            elapsed >= Duration::from_secs(12),
            "waited only {elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_too_long_ends_the_request_without_a_retry() {
        let too_long = Answer::WaitTooLong {
            reason: "429: busy; the gateway asked to wait Retry-After: 999999999".into(),
        };
        let (outcome, attempts, elapsed) = run(vec![too_long, Answer::Done(())]).await;
        assert_eq!((attempts, elapsed), (1, Duration::ZERO));
        assert!(
            matches!(&outcome, Outcome::GaveUp { attempts: 1, reason } if reason.contains("Retry-After: 999999999")),
            "{outcome:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_every_user_not_just_the_one_refused() {
        let applier = applier(vec![Answer::Done(())]);
        applier.pause_all(Duration::from_secs(9));
        let started = Instant::now();
        assert_eq!(
            applier.create(&user(), &CancellationToken::new()).await,
            Outcome::Created
        );
        assert!(started.elapsed() >= Duration::from_secs(9));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_interrupts_a_backoff_wait() {
        let applier = applier(vec![transient(Some(600), false)]);
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        let started = Instant::now();
        assert_eq!(applier.create(&user(), &stop).await, Outcome::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(600));
    }

    #[tokio::test(start_paused = true)]
    async fn no_new_action_starts_after_stop() {
        let applier = applier(vec![Answer::Done(()); 5]);
        let stop = CancellationToken::new();
        stop.cancel();
        let actions = vec![Action::Create(user()), Action::Create(user())];
        let done: Vec<_> = applier.run_all(actions, &stop).collect().await;
        assert!(done.is_empty());
        assert_eq!(applier.target().attempts(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_stops_everyone_else() {
        let refused = Answer::Unauthorized {
            status: 401,
            message: "invalid key".into(),
        };
        let applier = applier(vec![refused]);
        let stop = CancellationToken::new();
        let actions = vec![Action::Create(user()); 5];
        let done: Vec<_> = applier.run_all(actions, &stop).collect().await;
        assert!(stop.is_cancelled());
        assert_eq!(
            applier.target().attempts(),
            1,
            "no request after the refusal"
        );
        let interrupted = done
            .iter()
            .filter(|(_, o)| *o == Outcome::Interrupted)
            .count();
        assert_eq!(interrupted, done.len() - 1, "{done:?}");
    }
}
