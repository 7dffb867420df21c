//! Retry policy as data: which answers are worth another attempt, and how long to
//! wait before it (exponential backoff with full jitter, never before `Retry-After`).

use std::time::{Duration, SystemTime};

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;

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
    /// failed together do not retry together), but at least what `retry_after` demands.
    pub fn delay(&self, next_attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exponent = next_attempt.saturating_sub(2).min(20);
        let ceiling = self.base.saturating_mul(1 << exponent).min(self.cap);
        let jittered = rand::rng().random_range(Duration::ZERO..=ceiling);
        jittered.max(retry_after.unwrap_or(Duration::ZERO))
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3); `None` when
/// absent or unreadable.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
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

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(42));
        headers.insert(RETRY_AFTER, HeaderValue::from_str(&later).expect("header"));
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(42)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers, now), None);
    }
}
