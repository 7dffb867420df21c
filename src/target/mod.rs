//! Where users go: the hoop gateway, or — for `--dry-run` — a target that reads the
//! real gateway but only says what it would write. Chosen once, where clients are
//! built, so no code path asks "is this a dry run?" before sending.

pub mod hoop;

use std::time::Duration;

use crate::model::{Email, GatewayUser, Profile};

pub use hoop::HoopClient;

/// Why the gateway client cannot be built; the run cannot start.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The key has characters an HTTP header cannot carry (a newline, say).
    #[error("target.api_key contains characters an HTTP header cannot carry (check the secret file for stray bytes)")]
    InvalidApiKey,
    /// TLS or HTTP client set-up failed (e.g. the CA bundle).
    #[error("cannot set up the gateway client: {0}")]
    Client(String),
}

/// The gateway's answer to one request, already classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// 2xx, with what it carried.
    Done(T),
    /// 409: a user with this e-mail exists.
    Conflict,
    /// 404: no such user.
    NotFound,
    /// Another 4xx: the gateway refuses this request; resending will not help.
    Rejected { status: u16, message: String },
    /// 401/403: our API key is refused; every other request would fail too.
    Unauthorized { status: u16, message: String },
    /// 408, 429, 5xx, a timeout or a connection error: worth another attempt.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
        /// Whether the gateway may have acted on the request (a 5xx, a timeout),
        /// so that a later 409 means our own earlier attempt created the user.
        maybe_applied: bool,
    },
    /// A transient failure whose `Retry-After` is over `target.max_retry_after_secs`:
    /// not worth waiting for, so the request ends now; the next run tries again.
    WaitTooLong { reason: String },
    /// A redirect (3xx): `target.url` points somewhere other than the API (a login
    /// page, another host); every other request would go astray too. `reason` names
    /// the request and the `Location`.
    Misdirected { reason: String },
    /// The dry-run target did not write.
    DryRun,
}

/// In words, for `check-config --connect` and the logs.
impl<T> std::fmt::Display for Answer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Done(_) => f.write_str("done"),
            Self::Conflict => f.write_str("409: a user with this e-mail exists"),
            Self::NotFound => f.write_str("404: no such user"),
            Self::Rejected { status, message } => write!(f, "refused with {status}: {message}"),
            Self::Unauthorized { status, message } => {
                write!(f, "our API key was refused: {status} {message}")
            }
            Self::Transient { reason, .. } => write!(f, "{reason} (a temporary failure)"),
            Self::WaitTooLong { reason } | Self::Misdirected { reason } => f.write_str(reason),
            Self::DryRun => f.write_str("not written (dry run)"),
        }
    }
}

pub enum Target {
    Hoop(HoopClient),
    /// Reads through the client, never writes.
    DryRun(HoopClient),
    /// Answers from a script, for tests of the retry logic.
    #[cfg(test)]
    Scripted(scripted::Script),
}

impl Target {
    /// Whether writes reach the gateway, and so must wait for the rate limiter:
    /// the dry-run target answers them without sending anything.
    pub fn sends_writes(&self) -> bool {
        !matches!(self, Self::DryRun(_))
    }

    pub async fn create_user(&self, profile: &Profile) -> Answer<()> {
        match self {
            Self::Hoop(client) => client.create_user(profile).await,
            Self::DryRun(_) => Answer::DryRun,
            #[cfg(test)]
            Self::Scripted(script) => script.next(),
        }
    }

    pub async fn put_user(&self, key: &Email, user: &GatewayUser) -> Answer<()> {
        match self {
            Self::Hoop(client) => client.put_user(key, user).await,
            Self::DryRun(_) => Answer::DryRun,
            #[cfg(test)]
            Self::Scripted(script) => script.next(),
        }
    }

    pub async fn get_user(&self, key: &Email) -> Answer<GatewayUser> {
        match self {
            Self::Hoop(client) | Self::DryRun(client) => client.get_user(key).await,
            #[cfg(test)]
            Self::Scripted(script) => script.user(),
        }
    }

    pub async fn create_group(&self, name: &str) -> Answer<()> {
        match self {
            Self::Hoop(client) => client.create_group(name).await,
            Self::DryRun(_) => Answer::DryRun,
            #[cfg(test)]
            Self::Scripted(script) => script.next(),
        }
    }

    pub async fn delete_group(&self, name: &str) -> Answer<()> {
        match self {
            Self::Hoop(client) => client.delete_group(name).await,
            Self::DryRun(_) => Answer::DryRun,
            #[cfg(test)]
            Self::Scripted(script) => script.next(),
        }
    }

    /// Every user of the gateway, in one request (the gateway does not paginate).
    pub async fn list_users(&self) -> Answer<Vec<GatewayUser>> {
        match self {
            Self::Hoop(client) | Self::DryRun(client) => client.list_users().await,
            #[cfg(test)]
            Self::Scripted(_) => Answer::Done(Vec::new()),
        }
    }
}

#[cfg(test)]
pub mod scripted {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::{Answer, Target};
    use crate::model::GatewayUser;

    pub struct Script {
        answers: Mutex<VecDeque<Answer<()>>>,
        attempts: Mutex<usize>,
        /// What every read of a user answers: that user, or 404.
        user: Option<GatewayUser>,
    }

    impl Script {
        pub(super) fn user(&self) -> Answer<GatewayUser> {
            self.user.clone().map_or(Answer::NotFound, Answer::Done)
        }

        pub(super) fn next(&self) -> Answer<()> {
            *self.attempts.lock().expect("lock") += 1;
            let next = self.answers.lock().expect("lock").pop_front();
            next.expect("the script ran out of answers")
        }
    }

    impl Target {
        pub fn scripted(answers: Vec<Answer<()>>) -> Self {
            Self::scripted_reading(answers, None)
        }

        /// Scripted writes; every read of a user answers `user` (or 404).
        pub fn scripted_reading(answers: Vec<Answer<()>>, user: Option<GatewayUser>) -> Self {
            Self::Scripted(Script {
                answers: Mutex::new(answers.into()),
                attempts: Mutex::new(0),
                user,
            })
        }

        /// How many write attempts reached the scripted target.
        pub fn attempts(&self) -> usize {
            match self {
                Self::Scripted(script) => *script.attempts.lock().expect("lock"),
                _ => 0,
            }
        }
    }
}
