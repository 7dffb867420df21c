//! What the JSON directory APIs (JumpCloud, Auth0) share: a page body read with a
//! bound, and the checks that an offset-paged listing was read whole.
//!
//! Offset paging (`skip`/`limit`, `page`/`per_page`) shifts when the directory
//! changes mid-read: a user can be read twice or, worse, never, and a user never
//! read looks like a leaver. So every page must announce the total the first one
//! did, no id may come twice, and the entries read must add up to that total;
//! otherwise the read is not trusted and the next run reads again.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use reqwest::Response;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{Delivery, Read, SourceError};
use crate::error_chain;
use crate::model::{DirectoryUser, GroupName, Subject, UnusableEntry};

/// Each user's groups, as a source gathers them before its users.
pub type Memberships = HashMap<Subject, Vec<GroupName>>;

/// A user as decoded, or why it could not be keyed.
pub type Entry = Result<DirectoryUser, UnusableEntry>;

/// One page of an offset-paged user listing: where it came from, the total it
/// announced, and its users decoded.
pub struct UserPage {
    pub url: Url,
    pub total: usize,
    pub entries: Vec<Entry>,
}

/// Reads an offset-paged user listing to its end, handing each page's users,
/// with their groups, to `delivery`. `fetch(read_so_far)` gets the page that
/// starts after the entries read so far; a page shorter than `page_size`, or one
/// that reaches the announced total, is the last.
pub async fn read_user_pages<F, Fut>(
    page_size: usize,
    max_users: usize,
    memberships: &Memberships,
    (shutdown, delivery): (&CancellationToken, &Delivery),
    mut fetch: F,
) -> Result<Read, SourceError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<UserPage, SourceError>>,
{
    let mut listing = OffsetListing::new(max_users);
    let mut read = Read::default();
    loop {
        delivery.room().await;
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        let page = fetch(listing.entries()).await?;
        let broken = |reason| inconsistent(&page.url, reason);
        listing.announced(page.total).map_err(broken)?;
        let listed = page.entries.len();
        let mut users = Vec::with_capacity(listed);
        for entry in page.entries {
            listing
                .listed(entry.as_ref().ok().map(|user| &user.subject))
                .map_err(broken)?;
            keep(entry, memberships, &mut users, &mut read.unusable);
        }
        delivery.deliver(users);
        if listed < page_size || listing.reached_total() {
            listing.complete().map_err(broken)?;
            read.entries = listing.entries();
            return Ok(read);
        }
    }
}

/// A decoded user, with its groups, into `users`; an unusable one into `unusable`.
pub fn keep(
    entry: Entry,
    memberships: &Memberships,
    users: &mut Vec<DirectoryUser>,
    unusable: &mut Vec<UnusableEntry>,
) {
    match entry {
        Ok(mut user) => {
            user.groups = memberships.get(&user.subject).cloned().unwrap_or_default();
            users.push(user);
        }
        Err(entry) => unusable.push(entry),
    }
}

/// The body of `response`, at most `max_bytes` of it, as JSON. A body cut off
/// in transit is not whole JSON, so it fails here too.
pub async fn json_body<T: DeserializeOwned>(
    url: &Url,
    response: Response,
    max_bytes: usize,
) -> Result<T, SourceError> {
    let (body, more) = crate::http::body_up_to(response, max_bytes).await;
    if more {
        return Err(inconsistent(
            url,
            format!("the answer is larger than source.max_page_bytes = {max_bytes}"),
        ));
    }
    serde_json::from_slice(&body)
        .map_err(|err| inconsistent(url, format!("not the JSON expected: {err}")))
}

pub fn unavailable(request: impl std::fmt::Display, err: &reqwest::Error) -> SourceError {
    SourceError::Unavailable {
        request: request.to_string(),
        reason: error_chain(err),
    }
}

pub fn inconsistent(url: &Url, reason: impl std::fmt::Display) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason: reason.to_string(),
    }
}

/// The running checks of one offset-paged listing.
#[derive(Debug, Default)]
pub struct OffsetListing {
    /// The total the first page announced.
    announced: Option<usize>,
    /// Entries listed, usable or not.
    entries: usize,
    subjects: HashSet<Subject>,
    /// The most entries the listing may hold (`source.max_directory_users`).
    max_entries: usize,
}

impl OffsetListing {
    pub fn new(max_entries: usize) -> Self {
        Self {
            max_entries,
            ..Self::default()
        }
    }

    /// A page announced `total` entries in all.
    pub fn announced(&mut self, total: usize) -> Result<(), String> {
        if total > self.max_entries {
            return Err(format!(
                "the directory announces {total} users, more than source.max_directory_users = {}",
                self.max_entries
            ));
        }
        match self.announced {
            None => self.announced = Some(total),
            Some(first) if first != total => {
                return Err(format!(
                    "the directory changed while it was read ({first} users, then {total}); the next run reads it again"
                ))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// One entry listed, with its subject when it has one.
    pub fn listed(&mut self, subject: Option<&Subject>) -> Result<(), String> {
        self.entries += 1;
        if self.entries > self.max_entries {
            return Err(format!(
                "the listing goes on past source.max_directory_users = {}",
                self.max_entries
            ));
        }
        match subject {
            Some(subject) if !self.subjects.insert(subject.clone()) => Err(format!(
                "user {:?} is listed twice: the directory changed while it was read; the next run reads it again",
                subject.as_str()
            )),
            _ => Ok(()),
        }
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Whether the pages so far reach the announced total.
    pub fn reached_total(&self) -> bool {
        self.announced.is_some_and(|total| self.entries >= total)
    }

    /// Checks, once the last page is read, that the listing held what it announced.
    pub fn complete(&self) -> Result<(), String> {
        match self.announced {
            Some(total) if total != self.entries => Err(format!(
                "the listing announced {total} users but held {}; the next run reads it again",
                self.entries
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_that_holds_what_it_announced_is_complete() {
        let mut listing = OffsetListing::new(10);
        listing.announced(2).unwrap();
        listing.listed(Some(&Subject::new("a"))).unwrap();
        assert!(!listing.reached_total());
        listing.announced(2).unwrap();
        listing.listed(None).unwrap();
        assert!(listing.reached_total());
        listing.complete().unwrap();
    }

    #[test]
    fn a_changed_total_a_twice_listed_id_or_a_short_listing_is_refused() {
        let mut listing = OffsetListing::new(10);
        listing.announced(3).unwrap();
        assert!(listing
            .announced(2)
            .unwrap_err()
            .contains("3 users, then 2"));
        listing.listed(Some(&Subject::new("a"))).unwrap();
        let twice = listing.listed(Some(&Subject::new("a"))).unwrap_err();
        assert!(twice.contains("\"a\" is listed twice"), "{twice}");
        let mut short = OffsetListing::new(10);
        short.announced(3).unwrap();
        short.listed(Some(&Subject::new("a"))).unwrap();
        assert!(short
            .complete()
            .unwrap_err()
            .contains("announced 3 users but held 1"));
    }

    #[test]
    fn a_listing_over_the_bound_is_refused() {
        let mut listing = OffsetListing::new(1);
        assert!(listing
            .announced(2)
            .unwrap_err()
            .contains("max_directory_users = 1"));
        let mut endless = OffsetListing::new(1);
        endless.listed(None).unwrap();
        assert!(endless.listed(None).is_err());
    }
}
