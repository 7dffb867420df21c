//! Executes a plan's actions against the target: paced by a `governor` limiter (a
//! permit before every attempt, retries included; the dry run's unsent writes take
//! none), at most `max_in_flight` at once, retried with backoff. Yields each
//! action's outcome as soon as it is known; the orchestrator records it.

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
    /// idsync did not write: the gateway shows the user in its admin group, which
    /// the IdP does not own (`groups.allow_admin_group`). Admins made in the
    /// gateway are never updated or deactivated by idsync.
    Refused { reason: String },
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

/// In words, for the logs and reports.
impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::Adopted => f.write_str("already in the gateway; now managed"),
            Self::Changed => f.write_str("changed"),
            Self::Unchanged => f.write_str("already as wanted"),
            Self::Missing => f.write_str("no such user in the gateway"),
            Self::Rejected { status, message } => {
                write!(f, "the gateway refused it: {status} {message}")
            }
            Self::Refused { reason } => write!(f, "not written: {reason}"),
            Self::Misdirected { reason } => f.write_str(reason),
            Self::GaveUp { attempts, reason } => {
                write!(f, "gave up after {attempts} attempts: {reason}")
            }
            Self::Unauthorized { status, message } => {
                write!(f, "the gateway refused our API key: {status} {message}")
            }
            Self::Interrupted => f.write_str("stopped by shutdown"),
            Self::WouldWrite => f.write_str("not written (dry run)"),
        }
    }
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
        // A shutdown ends the listing at once, even mid-request.
        let listing = tokio::select! {
            listing = self.with_retries(stop, || self.target.list_users()) => listing,
            () = stop.cancelled() => return Err(Outcome::Interrupted),
        };
        match listing {
            (Ok(Answer::Done(users)), _) => Ok(users),
            (settled, _) => Err(outcome_of(settled)),
        }
    }

    /// Creates an empty group: [`Outcome::Created`], or [`Outcome::Adopted`] when
    /// the gateway had it already (409 to a first attempt: not idsync's group).
    pub async fn create_group(&self, name: &str, stop: &CancellationToken) -> Outcome {
        match self
            .write_with_retries(stop, || self.target.create_group(name))
            .await
        {
            (Ok(Answer::Done(())), _) | (Ok(Answer::Conflict), true) => Outcome::Created,
            (Ok(Answer::Conflict), false) => Outcome::Adopted,
            (settled, _) => outcome_of(settled),
        }
    }

    /// Deletes a group; one that is gone already (404) counts as deleted. Never
    /// the admin group (the gateway would refuse it with 422 anyway).
    pub async fn delete_group(&self, name: &str, stop: &CancellationToken) -> Outcome {
        if name == self.rules.admin_group {
            return Outcome::Refused {
                reason: self.admin_reason(),
            };
        }
        match self
            .write_with_retries(stop, || self.target.delete_group(name))
            .await
        {
            (Ok(Answer::Done(()) | Answer::NotFound), _) => Outcome::Changed,
            (settled, _) => outcome_of(settled),
        }
    }

    async fn create(&self, user: &CreateUser, stop: &CancellationToken) -> Outcome {
        match self
            .write_with_retries(stop, || self.target.create_user(&user.profile))
            .await
        {
            (Ok(Answer::Done(())), _) => Outcome::Created,
            // The gateway is not atomic: a 5xx can come after the user row was
            // written, and then our retry meets our own user.
            (Ok(Answer::Conflict), true) => Outcome::Created,
            (Ok(Answer::Conflict), false) => self.adopt_unless_admin(user, stop).await,
            (settled, _) => outcome_of(settled),
        }
    }

    /// The gateway had this e-mail already (409 on a first attempt): adopted,
    /// unless the gateway shows the user in its admin group. Such a user is
    /// recorded as rejected, so it is reported and not resent while its directory
    /// data stays the same. Should the read fail, the user is adopted: every later
    /// write reads the user first and refuses an admin then (see `change`).
    async fn adopt_unless_admin(&self, user: &CreateUser, stop: &CancellationToken) -> Outcome {
        match self
            .with_retries(stop, || self.target.get_user(&user.profile.email))
            .await
        {
            (Ok(Answer::Done(current)), _) if self.is_gateway_admin(&current) => {
                Outcome::Rejected {
                    status: 409,
                    message: self.admin_reason(),
                }
            }
            _ => Outcome::Adopted,
        }
    }

    /// In the admin group, which the IdP does not own.
    fn is_gateway_admin(&self, user: &GatewayUser) -> bool {
        !self.rules.allow_admin_group && user.groups.contains(&self.rules.admin_group)
    }

    fn admin_reason(&self) -> String {
        crate::plan::gateway_admin_reason(&self.rules.admin_group)
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
        if self.is_gateway_admin(&current) {
            return Outcome::Refused {
                reason: self.admin_reason(),
            };
        }
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
            .write_with_retries(stop, || self.target.put_user(&change.key, &wanted))
            .await
        {
            (Ok(Answer::Done(())), _) => Outcome::Changed,
            (settled, _) => outcome_of(settled),
        }
    }

    /// A write: as [`with_retries`](Self::with_retries) when the target sends it;
    /// a target that sends no writes (the dry run) answers at once, without taking
    /// a permit from the rate limiter for a request that is never made.
    async fn write_with_retries<F, Fut>(
        &self,
        stop: &CancellationToken,
        mut request: F,
    ) -> (Settled<()>, bool)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Answer<()>>,
    {
        if self.target.sends_writes() {
            self.with_retries(stop, request).await
        } else {
            (Ok(request().await), false)
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

    fn gateway_admin() -> GatewayUser {
        GatewayUser {
            id: "ann@x.com".into(),
            email: "ann@x.com".into(),
            groups: vec!["admin".into(), "sre".into()],
            status: "active".into(),
            ..GatewayUser::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_with_an_admin_made_in_the_gateway_is_not_adopted() {
        let target = Target::scripted_reading(vec![Answer::Conflict], Some(gateway_admin()));
        let applier = Applier::new(target, &config(), Rules::default());
        let outcome = applier.create(&user(), &CancellationToken::new()).await;
        assert!(
            matches!(&outcome, Outcome::Rejected { status: 409, message } if message.contains("admin group \"admin\"")),
            "{outcome:?}"
        );
        let owning = Rules {
            allow_admin_group: true,
            ..Rules::default()
        };
        let target = Target::scripted_reading(vec![Answer::Conflict], Some(gateway_admin()));
        let applier = Applier::new(target, &config(), owning);
        let outcome = applier.create(&user(), &CancellationToken::new()).await;
        assert_eq!(outcome, Outcome::Adopted, "the IdP owns the admin group");
    }

    #[tokio::test(start_paused = true)]
    async fn an_admin_made_in_the_gateway_is_never_written() {
        let user = user();
        for kind in [
            ChangeKind::Update,
            ChangeKind::Deactivate,
            ChangeKind::Reactivate,
        ] {
            let target = Target::scripted_reading(vec![Answer::Done(())], Some(gateway_admin()));
            let applier = Applier::new(target, &config(), Rules::default());
            let change = UpdateUser {
                subject: user.subject.clone(),
                key: user.profile.email.clone(),
                kind,
                profile: Some(user.profile.clone()),
                record: crate::cache::SubjectRecord {
                    email: user.profile.email.clone(),
                    state: crate::cache::SubjectState::Adopted,
                    fingerprint: Fingerprint(1),
                    detail: None,
                    deactivated: false,
                    updated_at: 0,
                },
                reason: "test".into(),
            };
            let outcome = applier.change(&change, &CancellationToken::new()).await;
            assert!(
                matches!(outcome, Outcome::Refused { .. }),
                "{kind:?}: {outcome:?}"
            );
            assert_eq!(applier.target().attempts(), 0, "{kind:?}: nothing written");
        }
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

    /// The dry run sends no writes, so it does not wait for the write rate limiter:
    /// 30 would-be creates at 1 request a second (burst 1) once took 29 s.
    #[tokio::test]
    async fn a_dry_run_does_not_wait_for_the_rate_limit_on_writes_it_does_not_send() {
        let mut slow = config();
        slow.rate_limit_per_second = std::num::NonZeroU32::MIN;
        slow.burst = std::num::NonZeroU32::MIN;
        let client =
            crate::target::HoopClient::new(&slow, reqwest::Client::builder()).expect("client");
        let applier = Applier::new(Target::DryRun(client), &slow, Rules::default());
        let stop = CancellationToken::new();
        let started = std::time::Instant::now();
        let actions = vec![Action::Create(user()); 30];
        let done = tokio::time::timeout(
            Duration::from_secs(5),
            applier.run_all(actions, &stop).collect::<Vec<_>>(),
        )
        .await
        .expect("the dry run is not paced by the write rate limit");
        assert_eq!(done.len(), 30);
        assert!(
            done.iter().all(|(_, o)| *o == Outcome::WouldWrite),
            "{done:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn outcomes_and_answers_read_as_words_not_rust_structures() {
        let gave_up = Outcome::GaveUp {
            attempts: 6,
            reason: "503 Service Unavailable".into(),
        };
        assert_eq!(
            gave_up.to_string(),
            "gave up after 6 attempts: 503 Service Unavailable"
        );
        let answer: Answer<()> = transient(None, false);
        assert_eq!(
            answer.to_string(),
            "503 Service Unavailable: busy (a temporary failure)"
        );
        for text in [gave_up.to_string(), answer.to_string()] {
            assert!(
                !text.contains('{') && !text.contains("maybe_applied"),
                "{text}"
            );
        }
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
