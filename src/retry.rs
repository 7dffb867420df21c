//! Retry policy as data: which answers are worth another attempt, and how long to
//! wait before it (exponential backoff with full jitter, never before `Retry-After`);
//! and [`with_retries`], the one loop that applies it, for the directory and the
//! gateway alike.

use std::future::Future;
use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;

/// The longest `Retry-After` a peer may ask for, and the config key that sets it.
/// A longer one fails the request at once: honouring it would stall the run (and
/// an absurd value such as `18446744073709551615` would overflow a clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitBound {
    pub max: Duration,
    pub key: &'static str,
}

/// What to do with an HTTP status from a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// 2xx.
    Success,
    /// 408, 429 and 5xx: the peer is busy or broken for a moment; try again.
    Transient,
    /// 401 and 403: our credentials are refused; more attempts will not help and
    /// every other request would fail the same way.
    Unauthorized,
    /// Any other 4xx: this request is wrong; sending it again changes nothing.
    Rejected,
}

pub fn classify(status: StatusCode) -> Class {
    match status.as_u16() {
        200..=299 => Class::Success,
        408 | 429 | 500..=599 => Class::Transient,
        401 | 403 => Class::Unauthorized,
        _ => Class::Rejected,
    }
}

/// How many attempts and how long to wait between them.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_attempts: u32,
    /// The ceiling of the first retry's random wait; it doubles with every retry.
    pub base: Duration,
    /// No wait exceeds this, except one demanded by `Retry-After`.
    pub cap: Duration,
}

impl Backoff {
    /// The wait before attempt `next_attempt` (2 for the first retry): uniform in
    /// `[0, min(cap, base * 2^(next_attempt-2))]` ("full jitter", so many clients that
    /// failed together do not retry together), but at least what `retry_after` demands
    /// (which [`retry_after`] has already held to its [`WaitBound`]).
    pub fn delay(&self, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let jittered = rand::rng().random_range(Duration::ZERO..=ceiling);
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3); `None` when
/// absent or unreadable. A wait longer than `bound` is an error that names `peer`,
/// the header's value and the bound's key, e.g. `the gateway asked to wait
/// Retry-After: 999999999 (over target.max_retry_after_secs = 300)`.
pub fn retry_after(
    headers: &HeaderMap,
    now: SystemTime,
    peer: &str,
    bound: WaitBound,
) -> Result<Option<Duration>, String> {
    let Some(value) = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        // More seconds than a u64 holds.
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Duration::MAX,
        Err(_) => match httpdate::parse_http_date(value) {
            Ok(date) => date.duration_since(now).unwrap_or(Duration::ZERO),
            Err(_) => return Ok(None),
        },
    };
    if wait > bound.max {
        return Err(format!(
            "{peer} asked to wait Retry-After: {value} (over {} = {})",
            bound.key,
            bound.max.as_secs()
        ));
    }
    Ok(Some(wait))
}

/// How one attempt of a request ended.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// An answer to keep, good or bad: the request is settled.
    Done(T),
    /// A failure that may heal (a transport error, 408, 429, 5xx): try again after
    /// the backoff, and not before `retry_after`.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// A failure that may heal, but not soon enough to wait for (a `Retry-After`
    /// over its bound): the request ends now, as if its attempts were spent.
    GiveUp { reason: String },
    /// A failure that no further attempt can mend.
    Fail(E),
}

/// Why [`with_retries`] ended without an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Exhausted<E> {
    /// Every attempt failed for a reason that may heal; `reason` is the last one.
    GaveUp { attempts: u32, reason: String },
    /// An attempt failed for good.
    Failed(E),
    /// `stop` was cancelled while waiting for the next attempt.
    Interrupted,
}

/// Runs `attempt` until it settles, fails for good, or `backoff.max_attempts` have
/// failed; between attempts waits [`Backoff::delay`] (cut short by `stop`), after
/// telling `retrying` the failure, the wait and the number of the attempt to come.
/// An attempt in progress is never cut short: whatever must wait before an attempt
/// (a rate limiter's permit) is the attempt's own business.
pub async fn with_retries<T, E, F, Fut>(
    backoff: &Backoff,
    stop: &CancellationToken,
    mut attempt: F,
    mut retrying: impl FnMut(&str, Duration, u32),
) -> Result<T, Exhausted<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut attempts = 1;
    loop {
        let (reason, retry_after) = match attempt().await {
            Attempt::Done(answer) => return Ok(answer),
            Attempt::Fail(err) => return Err(Exhausted::Failed(err)),
            Attempt::GiveUp { reason } => return Err(Exhausted::GaveUp { attempts, reason }),
            Attempt::Retry {
                reason,
                retry_after,
            } => (reason, retry_after),
        };
        if attempts >= backoff.max_attempts {
            return Err(Exhausted::GaveUp { attempts, reason });
        }
        attempts += 1;
        let wait = backoff.delay(attempts, retry_after);
        retrying(&reason, wait, attempts);
        tokio::select! {
            biased;
            () = stop.cancelled() => return Err(Exhausted::Interrupted),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn classify_retries_only_what_can_heal() {
        let cases = [
            (200, Class::Success),
            (201, Class::Success),
            (400, Class::Rejected),
            (404, Class::Rejected),
            (409, Class::Rejected),
            (422, Class::Rejected),
            (401, Class::Unauthorized),
            (403, Class::Unauthorized),
            (408, Class::Transient),
            (429, Class::Transient),
            (500, Class::Transient),
            (502, Class::Transient),
            (503, Class::Transient),
            (504, Class::Transient),
        ];
        for (code, class) in cases {
            let status = StatusCode::from_u16(code).expect("status");
            assert_eq!(classify(status), class, "status {code}");
        }
    }

    #[test]
    fn backoff_stays_within_the_doubling_ceiling_and_the_cap() {
        let backoff = Backoff {
            max_attempts: 10,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for _ in 0..200 {
            assert!(backoff.delay(2, None) <= Duration::from_millis(100));
            assert!(backoff.delay(4, None) <= Duration::from_millis(400));
            assert!(backoff.delay(30, None) <= Duration::from_secs(2));
        }
        // Full jitter really spreads the waits instead of always waiting the ceiling.
        let waits: Vec<_> = (0..50).map(|_| backoff.delay(6, None)).collect();
        assert!(waits.iter().any(|w| *w < Duration::from_millis(800)));
    }

    #[test]
    fn backoff_never_undercuts_retry_after() {
        let backoff = Backoff {
            max_attempts: 3,
            base: Duration::from_millis(10),
            cap: Duration::from_millis(50),
        };
        for _ in 0..100 {
            assert!(backoff.delay(2, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
        }
    }

    const BOUND: WaitBound = WaitBound {
        max: Duration::from_secs(300),
        key: "target.max_retry_after_secs",
    };

    fn header(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let read = |headers: &HeaderMap| retry_after(headers, now, "the gateway", BOUND);
        assert_eq!(read(&HeaderMap::new()), Ok(None));
        assert_eq!(read(&header("7")), Ok(Some(Duration::from_secs(7))));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(read(&header(&later)), Ok(Some(Duration::from_secs(42))));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        assert_eq!(read(&header(&past)), Ok(Some(Duration::ZERO)));
        assert_eq!(read(&header("soon")), Ok(None));
        assert_eq!(read(&header("300")), Ok(Some(Duration::from_secs(300))));
    }

    #[test]
    fn a_retry_after_over_the_bound_is_an_error_naming_the_header_and_the_key() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let year_2100 = "Fri, 01 Jan 2100 00:00:00 GMT";
        for value in [
            "301",
            "999999999",
            "1000000000000",
            "18446744073709551615",
            "99999999999999999999999999",
            year_2100,
        ] {
            let read = retry_after(&header(value), now, "the gateway", BOUND);
            let said = format!(
                "the gateway asked to wait Retry-After: {value} (over target.max_retry_after_secs = 300)"
            );
            assert_eq!(read, Err(said));
        }
    }

    type Script = Vec<Attempt<&'static str, &'static str>>;

    /// What [`with_retries`] made of a script: its result, the attempts made, the
    /// attempt numbers announced to `retrying`, and the (paused) time it took.
    struct Run {
        result: Result<&'static str, Exhausted<&'static str>>,
        attempts: usize,
        announced: Vec<u32>,
        elapsed: Duration,
    }

    async fn retried(script: Script, stop: &CancellationToken) -> Run {
        let backoff = Backoff {
            max_attempts: 3,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        };
        let mut script = script.into_iter();
        let mut attempts = 0;
        let mut announced = Vec::new();
        let started = tokio::time::Instant::now();
        let result = with_retries(
            &backoff,
            stop,
            || {
                attempts += 1;
                let next = script.next().expect("the script is long enough");
                async move { next }
            },
            |_, _, attempt| announced.push(attempt),
        )
        .await;
        Run {
            result,
            attempts,
            announced,
            elapsed: started.elapsed(),
        }
    }

    fn again(
        reason: &'static str,
        retry_after: Option<Duration>,
    ) -> Attempt<&'static str, &'static str> {
        Attempt::Retry {
            reason: reason.into(),
            retry_after,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_retries_until_an_attempt_settles() {
        let script = vec![
            again("503", None),
            again("timeout", None),
            Attempt::Done("ok"),
        ];
        let run = retried(script, &CancellationToken::new()).await;
        assert_eq!(run.result, Ok("ok"));
        assert_eq!((run.attempts, run.announced), (3, vec![2, 3]));
        assert!(
            run.elapsed <= Duration::from_millis(300),
            "{:?}",
            run.elapsed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_gives_up_after_max_attempts_with_the_last_reason() {
        let script = vec![again("a", None), again("b", None), again("c", None)];
        let run = retried(script, &CancellationToken::new()).await;
        let gave_up = Exhausted::GaveUp {
            attempts: 3,
            reason: "c".into(),
        };
        assert_eq!((run.result, run.attempts), (Err(gave_up), 3));
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_never_retries_a_failure() {
        let script = vec![Attempt::Fail("refused"), Attempt::Done("ok")];
        let run = retried(script, &CancellationToken::new()).await;
        assert_eq!(run.result, Err(Exhausted::Failed("refused")));
        assert_eq!((run.attempts, run.elapsed), (1, Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_gives_up_at_once_when_told_to() {
        let script = vec![
            again("503", None),
            Attempt::GiveUp {
                reason: "too long".into(),
            },
            Attempt::Done("ok"),
        ];
        let run = retried(script, &CancellationToken::new()).await;
        let gave_up = Exhausted::GaveUp {
            attempts: 2,
            reason: "too long".into(),
        };
        assert_eq!((run.result, run.attempts), (Err(gave_up), 2));
        assert!(
            run.elapsed <= Duration::from_millis(100),
            "{:?}",
            run.elapsed
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_honours_retry_after() {
        let script = vec![
            again("429", Some(Duration::from_secs(7))),
            Attempt::Done("ok"),
        ];
        let run = retried(script, &CancellationToken::new()).await;
        assert_eq!(run.result, Ok("ok"));
        assert!(run.elapsed >= Duration::from_secs(7), "{:?}", run.elapsed);
    }

    #[tokio::test(start_paused = true)]
    async fn with_retries_stops_waiting_at_shutdown() {
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            stopper.cancel();
        });
        let script = vec![
            again("503", Some(Duration::from_secs(60))),
            Attempt::Done("ok"),
        ];
        let run = retried(script, &stop).await;
        assert_eq!(run.result, Err(Exhausted::Interrupted));
        assert_eq!((run.attempts, run.elapsed), (1, Duration::from_secs(1)));
    }
}
