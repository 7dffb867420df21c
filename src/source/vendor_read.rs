//! What the vendor API sources (Okta, Entra ID) share around a read: whether it
//! reads everything or the changes, the state they keep in the cursor, a page of
//! users keyed, the users of a full read delivered, and a page's body.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::SystemTime;
use url::Url;

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::cursor::{self, FullReason, NextRead, Position};
use super::http::DirectoryHttp;
use super::{Cursor, Delivery, Read, Scope, SourceError};
use crate::config::Incremental;
use crate::model::{DirectoryUser, UnusableEntry};

/// Member listings read at once: one. With four, Okta's full read took 0.57 of the
/// floor's wall (docs/performance.md, run C), but the shared rate budget learns a
/// new window's size from that window's first answer, so requests sent together as
/// a window opens can overrun it (measured: 2 requests over a budget of 6 a window).
/// Never exceeding the advertised budget comes first.
pub const LISTINGS_IN_FLIGHT: usize = 1;

/// What this read should be.
pub enum Planned<S> {
    Full,
    /// The changes since `Position`, whose token decoded to the state `S`.
    Changes(Position, S),
}

/// Decides from the config and the stored cursor; says why a read is full when
/// it could have read changes.
pub fn plan<S: DeserializeOwned>(
    incremental: Incremental,
    cursor: Option<&Cursor>,
    kind: &str,
) -> Planned<S> {
    let Incremental::On { full_read_every } = incremental else {
        return Planned::Full;
    };
    let reason = match cursor::next_read(
        cursor.map(|c| c.position.as_str()),
        full_read_every,
        SystemTime::now(),
    ) {
        NextRead::Changes(position) => match serde_json::from_str::<S>(&position.token) {
            Ok(state) => return Planned::Changes(position, state),
            Err(_) => FullReason::Unreadable,
        },
        NextRead::Full(reason) => reason,
    };
    tracing::info!(%reason, kind, "Reading the whole directory.");
    Planned::Full
}

/// The cursor text for `state`.
pub fn encode<S: Serialize>(state: &S) -> String {
    // The states are strings, maps and sets of strings, which always serialize.
    serde_json::to_string(state).unwrap_or_default()
}

/// The users of a page keyed by `key`; the entries it cannot key go to `read`.
pub fn keyed<T>(
    page: Vec<T>,
    mut key: impl FnMut(T) -> Result<DirectoryUser, UnusableEntry>,
    read: &mut Read,
) -> Vec<DirectoryUser> {
    let mut users = Vec::with_capacity(page.len());
    for entry in page {
        match key(entry) {
            Ok(user) => users.push(user),
            Err(unusable) => read.unusable.push(unusable),
        }
    }
    users
}

/// A vendor's listing, read a page at a time (Okta's `Link` header, Graph's
/// `@odata.nextLink`).
pub trait Listing {
    /// The next page's objects, or `None` once the listing is over.
    fn next_page<T: DeserializeOwned + Send>(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<T>>, SourceError>> + Send;
}

/// A full read's users: every page of `users`, handed to the planner with their
/// groups (`to_users`) as it comes, at the pace the planner keeps. The read is
/// complete; `next` is the cursor the next read starts from, when reading changes.
pub async fn deliver_users<U: DeserializeOwned + Send>(
    users: &mut impl Listing,
    shutdown: &CancellationToken,
    delivery: &Delivery,
    mut to_users: impl FnMut(Vec<U>, &mut Read) -> Vec<DirectoryUser>,
    next: Option<String>,
) -> Result<Read, SourceError> {
    let mut read = Read::default();
    while let Some(page) = users.next_page::<U>().await? {
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        read.entries += page.len();
        delivery.deliver(to_users(page, &mut read));
        delivery.room().await;
    }
    read.scope = Scope::Complete;
    read.cursor = next;
    Ok(read)
}

/// A GET's headers and whole body.
pub async fn fetch(http: &DirectoryHttp, url: &Url) -> Result<(HeaderMap, Bytes), SourceError> {
    let response = http.get(url).await?;
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|err| SourceError::Unavailable {
            request: format!("GET {url}"),
            reason: crate::error_chain(&err),
        })?;
    Ok((headers, body))
}

/// A page body that is not what the listing promises.
pub fn undecodable(url: &Url, what: &str, err: &serde_json::Error) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason: format!("not {what}: {err}"),
    }
}
