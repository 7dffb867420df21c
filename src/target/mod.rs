//! Where users go: the hoop gateway, or — for `--dry-run` — a target that only says
//! what it would do. Chosen once, where clients are built, so no code path asks
//! "is this a dry run?" before sending.

pub mod hoop;

use std::time::Duration;

use crate::plan::CreateUser;

pub use hoop::HoopClient;

/// Why the gateway client cannot be built; the run cannot start (exit 2/3).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The key has characters an HTTP header cannot carry (a newline, say).
    #[error("target.api_key contains characters an HTTP header cannot carry (check the secret file for stray bytes)")]
    InvalidApiKey,
    /// TLS or HTTP client set-up failed (e.g. the CA bundle).
    #[error("cannot set up the gateway client: {0}")]
    Client(String),
}

/// The gateway's answer to one Create User attempt, already classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateAnswer {
    /// 201.
    Created,
    /// 409: a user with this e-mail exists.
    Conflict,
    /// Another 4xx: the gateway refuses this user's data; resending will not help.
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
    /// The dry-run target did nothing.
    DryRun,
}

pub enum Target {
    Hoop(HoopClient),
    DryRun,
    /// Answers from a script, for tests of the retry logic.
    #[cfg(test)]
    Scripted(scripted::Script),
}

impl Target {
    pub async fn create_user(&self, user: &CreateUser) -> CreateAnswer {
        match self {
            Self::Hoop(client) => client.create_user(user).await,
            Self::DryRun => {
                let groups: Vec<&str> = user.groups.iter().map(|g| g.as_str()).collect();
                tracing::info!(email = %user.email, ?groups, "Would create user.");
                CreateAnswer::DryRun
            }
            #[cfg(test)]
            Self::Scripted(script) => script.next(),
        }
    }
}

#[cfg(test)]
pub mod scripted {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::{CreateAnswer, Target};

    pub struct Script {
        answers: Mutex<VecDeque<CreateAnswer>>,
        attempts: Mutex<usize>,
    }

    impl Script {
        pub(super) fn next(&self) -> CreateAnswer {
            *self.attempts.lock().expect("lock") += 1;
            let next = self.answers.lock().expect("lock").pop_front();
            next.expect("the script ran out of answers")
        }
    }

    impl Target {
        pub fn scripted(answers: Vec<CreateAnswer>) -> Self {
            Self::Scripted(Script {
                answers: Mutex::new(answers.into()),
                attempts: Mutex::new(0),
            })
        }

        /// How many attempts reached the scripted target.
        pub fn attempts(&self) -> usize {
            match self {
                Self::Scripted(script) => *script.attempts.lock().expect("lock"),
                _ => 0,
            }
        }
    }
}
