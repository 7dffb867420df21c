//! Pacing by the budget a directory advertises in its answers (Okta's
//! `X-Rate-Limit-Remaining`/`-Reset`, Auth0's `X-RateLimit-…`): once it says none
//! remain, nothing is sent before the window resets, so a 429 never has to happen.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{HeaderMap, DATE};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// The names of the headers that carry the budget.
#[derive(Debug, Clone, Copy)]
pub struct RateBudget {
    /// Requests left in the current window.
    pub remaining: &'static str,
    /// When the window resets, in Unix seconds.
    pub reset: &'static str,
}

/// The window the last answers described.
#[derive(Debug, Clone, Copy)]
struct Window {
    remaining: u64,
    /// The reset as the directory gave it, to tell windows apart.
    reset_epoch: u64,
    reset_at: Instant,
}

/// One directory's budget, shared by every request to it.
pub(super) struct Budget {
    names: RateBudget,
    window: Mutex<Option<Window>>,
}

impl Budget {
    pub fn new(names: RateBudget) -> Self {
        Self {
            names,
            window: Mutex::new(None),
        }
    }

    /// Takes one request from the budget: at once while some remain, else after
    /// the reset, or `Err(wait)` when that is further away than `max_wait`.
    pub async fn take(&self, max_wait: Duration) -> Result<(), Duration> {
        loop {
            let mut window = self.window.lock().await;
            let Some(current) = window.as_mut() else {
                return Ok(());
            };
            let now = Instant::now();
            if now >= current.reset_at {
                // A new window: its size is learnt from the next answer.
                *window = None;
                return Ok(());
            }
            if current.remaining > 0 {
                current.remaining -= 1;
                return Ok(());
            }
            let wait = current.reset_at - now;
            if wait > max_wait {
                return Err(wait);
            }
            drop(window);
            tracing::info!(
                wait_ms = wait.as_millis() as u64,
                "The directory's rate limit is spent; waiting for its reset."
            );
            tokio::time::sleep(wait).await;
        }
    }

    /// Learns the budget from an answer's headers. Answers to requests sent
    /// together arrive in any order: within one window, the lowest count wins.
    pub async fn observe(&self, headers: &HeaderMap) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let (Some(remaining), Some(reset_epoch)) =
            (number(self.names.remaining), number(self.names.reset))
        else {
            return;
        };
        // The reset is the directory's clock: measure it from the answer's Date,
        // so that a skewed local clock neither waits too long nor too little.
        let server_now = headers
            .get(DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .unwrap_or_else(SystemTime::now);
        let server_secs = server_now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let reset_in = Duration::from_secs(reset_epoch.saturating_sub(server_secs));
        let mut window = self.window.lock().await;
        let remaining = match *window {
            Some(known) if known.reset_epoch == reset_epoch => known.remaining.min(remaining),
            _ => remaining,
        };
        *window = Some(Window {
            remaining,
            reset_epoch,
            reset_at: Instant::now() + reset_in,
        });
    }
}
