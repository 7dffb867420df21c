//! One content-synchronisation refresh (RFC 4533, refreshOnly) of the users or
//! the groups: the entries added or changed since the cookie (all of them without one), the
//! subjects deleted, and the cookie to continue from, or why the server cannot
//! answer that way and the read must fall back to a paged full read.

use std::fmt;

use tokio_util::sync::CancellationToken;

use super::connection::{code, failure, result_text, Connection};
use super::content_sync::{self, EntryState, Info};
use super::entry::Entry;
use super::search::{Item, Search};
use crate::model::Subject;
use crate::source::SourceError;

pub struct Refresh<'a> {
    search: Search<'a>,
    url: String,
    /// The cookie asked from: kept when the server sends no new one.
    from_cookie: Option<Vec<u8>>,
    removed: Vec<Subject>,
    fallback: Option<Fallback>,
}

/// Why a refresh cannot stand for the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The server does not offer content synchronisation.
    Unsupported,
    /// A size or administrative limit cut the refresh short.
    Limit,
    /// The server refused the cookie (e-syncRefreshRequired).
    CookieRefused,
    /// The server sent a present phase (no session log covers the cookie), so the
    /// deletions are unknown.
    NoDeletions,
}

impl Fallback {
    pub fn is_limit(self) -> bool {
        self == Self::Limit
    }
}

impl fmt::Display for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unsupported => "the server does not offer content synchronisation (RFC 4533)",
            Self::Limit => "the server's size limit cut the refresh short; give the bind account no size limit (limits dn.exact=\"…\" size=unlimited)",
            Self::CookieRefused => "the server refused the cookie of the last read",
            Self::NoDeletions => "the server could not list the deletions since the last read (is syncprov-sessionlog set?)",
        })
    }
}

pub enum RefreshEnd {
    Done {
        cookie: Vec<u8>,
        removed: Vec<Subject>,
    },
    Fallback(Fallback),
}

impl<'a> Refresh<'a> {
    /// Starts a refresh of the entries under `base` matching `filter`.
    pub async fn start(
        connection: &'a mut Connection,
        (base, filter): (&str, &str),
        attributes: &[&str],
        cookie: Option<Vec<u8>>,
    ) -> Result<Self, SourceError> {
        let url = connection.url().to_owned();
        let from_cookie = cookie.clone();
        let control = vec![content_sync::request(cookie)];
        let search = connection
            .search(base, filter, attributes, None, control)
            .await?;
        Ok(Self {
            search,
            url,
            from_cookie,
            removed: Vec::new(),
            fallback: None,
        })
    }

    /// Every entry added or changed, until the refresh ends.
    pub async fn all_changed(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Entry>, SourceError> {
        let mut changed = Vec::new();
        while let Some(entry) = self.next_changed(shutdown).await? {
            changed.push(entry);
        }
        Ok(changed)
    }

    /// The next entry added or changed, until the refresh ends.
    pub async fn next_changed(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<Option<Entry>, SourceError> {
        while let Some(item) = self.search.next().await? {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            match item {
                Item::Entry(entry, controls) => {
                    match content_sync::entry_state(&controls).map_err(|r| failure(&self.url, r))? {
                        EntryState::Changed => return Ok(Some(entry)),
                        EntryState::Deleted { uuid } => self.removed.push(Subject::new(uuid)),
                        EntryState::Present => self.fallback = Some(Fallback::NoDeletions),
                    }
                }
                Item::Intermediate(message) => {
                    let info = content_sync::info(message).map_err(|r| failure(&self.url, r))?;
                    self.take_info(info);
                }
                Item::Referral(urls) => {
                    tracing::warn!(referral = %urls.join(" "), "the directory referred to another server; referrals are not followed");
                }
            }
        }
        Ok(None)
    }

    fn take_info(&mut self, info: Info) {
        match info {
            Info::IdSet {
                deletes: true,
                uuids,
                ..
            } => self.removed.extend(uuids.into_iter().map(Subject::new)),
            Info::IdSet { deletes: false, .. } | Info::Phase { present: true, .. } => {
                self.fallback = Some(Fallback::NoDeletions);
            }
            Info::Cookie(_) | Info::Phase { present: false, .. } => {}
        }
    }

    /// How the refresh ended. A broken connection is an error; a refresh the
    /// server cannot give is a fallback.
    pub async fn finish(self) -> Result<RefreshEnd, SourceError> {
        let result = self.search.finish().await;
        let fallback = match result.code {
            code::SUCCESS => self.fallback,
            code::SIZE_LIMIT | code::ADMIN_LIMIT => Some(Fallback::Limit),
            code::UNAVAILABLE_CRITICAL_EXTENSION => Some(Fallback::Unsupported),
            code::SYNC_REFRESH_REQUIRED => Some(Fallback::CookieRefused),
            _ => {
                let reason = format!(
                    "the content synchronisation refresh failed: {}",
                    result_text(&result)
                );
                return Err(failure(&self.url, reason));
            }
        };
        if let Some(fallback) = fallback {
            return Ok(RefreshEnd::Fallback(fallback));
        }
        let done = content_sync::done(&result.controls).map_err(|r| failure(&self.url, r))?;
        if self.from_cookie.is_some() && !done.refresh_deletes {
            return Ok(RefreshEnd::Fallback(Fallback::NoDeletions));
        }
        let cookie = done
            .cookie
            .or(self.from_cookie)
            .ok_or_else(|| failure(&self.url, "the refresh ended without a cookie".into()))?;
        Ok(RefreshEnd::Done {
            cookie,
            removed: self.removed,
        })
    }
}
