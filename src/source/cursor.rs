//! The position of a source that reads only what changed: the directory's own
//! token (a syncrepl cookie, a delta link, a timestamp) and when the last full read
//! began, so the source itself can tell when a full read is due again.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;

/// What [`Read::cursor`](super::Read::cursor) holds for a change-reading source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    /// The directory's token for "everything up to here".
    pub token: String,
    /// When the full read this position descends from began, in Unix seconds.
    pub full_read_at: u64,
}

/// What the next read should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextRead {
    /// Read everything, for the reason given (worth a log line).
    Full(FullReason),
    /// Read what changed since this position.
    Changes(Position),
}

/// Why a change-reading source reads everything this time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullReason {
    /// No run has completed since incremental reads were turned on.
    NoPosition,
    /// The stored position was written by another version or kind of source.
    Unreadable,
    /// The last full read is older than `sync.full_read_every_secs`.
    Due { last_full_read_secs_ago: u64 },
}

impl Position {
    /// The position at the end of a full read that began at `started`.
    pub fn after_full_read(token: String, started: SystemTime) -> Self {
        Self {
            token,
            full_read_at: unix_secs(started),
        }
    }

    /// The position after reading changes from `self`: a new token, the same
    /// full read behind it.
    pub fn advanced(&self, token: String) -> Self {
        Self {
            token,
            full_read_at: self.full_read_at,
        }
    }

    /// The text kept in the cursor store: a header line, then the token as it
    /// is. Not JSON: a token of megabytes (an LDAP group listing) would be
    /// escaped and unescaped at every run.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(self.token.len() + 40);
        text.push_str(HEADER);
        text.push_str(&self.full_read_at.to_string());
        text.push('\n');
        text.push_str(&self.token);
        text
    }

    /// The position [`encode`](Self::encode) wrote, or the JSON that versions
    /// before 2026-12-05 wrote.
    fn decode(text: &str) -> Option<Self> {
        let Some(rest) = text.strip_prefix(HEADER) else {
            return serde_json::from_str(text).ok();
        };
        let (full_read_at, token) = rest.split_once('\n')?;
        Some(Self {
            token: token.to_owned(),
            full_read_at: full_read_at.parse().ok()?,
        })
    }
}

/// The first line of an encoded position, before the full read's time.
const HEADER: &str = "idsync-position/2 full-read-at=";

/// Decides, from the stored cursor, whether this read may read only changes.
pub fn next_read(cursor: Option<&str>, full_read_every: Duration, now: SystemTime) -> NextRead {
    let Some(text) = cursor else {
        return NextRead::Full(FullReason::NoPosition);
    };
    let Some(position) = Position::decode(text) else {
        return NextRead::Full(FullReason::Unreadable);
    };
    let age = unix_secs(now).saturating_sub(position.full_read_at);
    if age >= full_read_every.as_secs() {
        return NextRead::Full(FullReason::Due {
            last_full_read_secs_ago: age,
        });
    }
    NextRead::Changes(position)
}

fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl fmt::Display for FullReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPosition => write!(f, "no earlier read to continue from"),
            Self::Unreadable => write!(f, "the stored position is not one this source wrote"),
            Self::Due {
                last_full_read_secs_ago,
            } => write!(
                f,
                "the last full read was {last_full_read_secs_ago} s ago (sync.full_read_every_secs)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_position_is_continued_until_a_full_read_is_due() {
        let started = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let first = Position::after_full_read("cookie-1".into(), started);
        let later = first.advanced("cookie-2".into());
        assert_eq!(later.full_read_at, 1_000_000);

        let stored = later.encode();
        let hour_later = started + Duration::from_secs(3_600);
        assert_eq!(
            next_read(Some(&stored), DAY, hour_later),
            NextRead::Changes(later)
        );
        let day_later = started + DAY;
        assert_eq!(
            next_read(Some(&stored), DAY, day_later),
            NextRead::Full(FullReason::Due {
                last_full_read_secs_ago: 86_400
            })
        );
    }

    #[test]
    fn a_position_keeps_its_token_as_it_is_and_reads_the_older_json() {
        let position = Position {
            token: "line one\n{\"quoted\": \\x}\n".into(),
            full_read_at: 1_000_000,
        };
        let text = position.encode();
        assert!(text.ends_with(&position.token), "{text}");
        assert_eq!(Position::decode(&text), Some(position.clone()));
        let older = r#"{"token":"line one\n{\"quoted\": \\x}\n","full_read_at":1000000}"#;
        assert_eq!(Position::decode(older), Some(position));
        assert_eq!(
            Position::decode("idsync-position/2 full-read-at=soon\ntoken"),
            None
        );
    }

    #[test]
    fn no_or_foreign_position_means_a_full_read() {
        let now = SystemTime::now();
        assert_eq!(
            next_read(None, DAY, now),
            NextRead::Full(FullReason::NoPosition)
        );
        assert_eq!(
            next_read(Some("https://idp/delta?token=x"), DAY, now),
            NextRead::Full(FullReason::Unreadable)
        );
    }
}
