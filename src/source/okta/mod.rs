//! `kind = "okta"`: the Okta Management API. Users from `/api/v1/users`, groups
//! of the configured types from `/api/v1/groups` with their members, paged by
//! `Link: rel="next"` cursors and paced by Okta's advertised rate budget.
//!
//! With `source.incremental`, a read between full reads asks only for the users
//! whose `lastUpdated` moved and re-reads only the groups whose `lastUpdated` or
//! `lastMembershipUpdated` moved; the group table in the cursor says whose groups
//! that changed (see [`group_table`](crate::source::group_table)).

mod changes;
mod decode;
mod groups;
mod paging;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::cursor::Position;
use super::group_table::{GroupTable, Memberships};
use super::http::{DirectoryHttp, RateBudget};
use super::vendor_read::{self, Planned};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{Incremental, OktaConfig};
use crate::model::DirectoryUser;
use decode::OktaUser;
use paging::Pages;

/// Users handed to the planner at a time in a change read.
const CHUNK: usize = 1000;

/// A change read asks again for what changed this long before the last read
/// began: the `Date` header has whole seconds, and re-reading a user is harmless.
const OVERLAP: Duration = Duration::from_secs(60);

pub struct OktaSource {
    base: Url,
    page_size: u32,
    group_types: Vec<String>,
    incremental: Incremental,
    http: DirectoryHttp,
}

/// What the cursor keeps between reads.
#[derive(Debug, Serialize, Deserialize)]
struct OktaState {
    /// Users updated after this (RFC 3339) are read by the next change read.
    since: String,
    groups: GroupTable,
}

impl OktaSource {
    pub fn new(config: &OktaConfig, incremental: Incremental, http: reqwest::Client) -> Self {
        let tokens = Arc::new(TokenSource::new(&config.auth, http.clone()));
        let http = DirectoryHttp::new(
            http,
            tokens,
            "application/json",
            config.limits.max_retry_after,
        )
        .with_rate_budget(RateBudget {
            remaining: "x-rate-limit-remaining",
            reset: "x-rate-limit-reset",
        });
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get(),
            group_types: config.group_types.clone(),
            incremental,
            http,
        }
    }

    /// `path` (no leading slash) under the org's URL.
    fn endpoint(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let joined = format!("{}/{path}", self.base.path().trim_end_matches('/'));
        url.set_path(&joined);
        url.set_query(None);
        url
    }

    fn users_url(&self, filter: Option<&str>) -> Url {
        let mut url = self.endpoint("api/v1/users");
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string());
        if let Some(filter) = filter {
            url.query_pairs_mut().append_pair("filter", filter);
        }
        url
    }

    fn groups_url(&self) -> Url {
        let types: Vec<String> = self
            .group_types
            .iter()
            .map(|t| format!("type eq \"{t}\""))
            .collect();
        let mut url = self.endpoint("api/v1/groups");
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string())
            .append_pair("filter", &types.join(" or "));
        url
    }

    fn members_url(&self, group: &str) -> Url {
        let mut url = self.endpoint(&format!("api/v1/groups/{group}/users"));
        url.query_pairs_mut()
            .append_pair("limit", &self.page_size.to_string());
        url
    }

    /// The whole directory: groups first, for the memberships, then the users,
    /// delivered page by page.
    async fn full_read(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
    ) -> Result<Read, SourceError> {
        let started = SystemTime::now();
        let groups = self.read_groups(None, false).await?;
        let state = OktaState {
            since: since(groups.server_time.unwrap_or(started)),
            groups: groups.table,
        };
        // Kept as text from here: the table itself goes into the memberships.
        let cursor = match self.incremental {
            Incremental::On { .. } => Some(vendor_read::encode(&state)),
            Incremental::Off => None,
        };
        let mut memberships = self.memberships(state.groups)?;
        let next = cursor.map(|text| Position::after_full_read(text, started).encode());
        let mut users = Pages::new(&self.http, self.users_url(None));
        let with_groups =
            |page: Vec<OktaUser>, read: &mut Read| to_users(page, &mut memberships, read);
        vendor_read::deliver_users(&mut users, shutdown, delivery, with_groups, next).await
    }

    fn memberships(&self, table: GroupTable) -> Result<Memberships, SourceError> {
        let memberships = table
            .into_memberships()
            .map_err(|err| inconsistent(&self.groups_url(), err));
        crate::memory::return_freed_memory();
        memberships
    }
}

/// The users of a page, keyed and with their groups; unusable ones go to `read`.
fn to_users(
    page: Vec<OktaUser>,
    memberships: &mut Memberships,
    read: &mut Read,
) -> Vec<DirectoryUser> {
    vendor_read::keyed(page, |user| user.into_directory_user(memberships), read)
}

fn inconsistent(url: &Url, err: impl std::fmt::Display) -> SourceError {
    SourceError::Inconsistent {
        url: url.to_string(),
        reason: err.to_string(),
    }
}

/// Okta's filter timestamp for "changed since `time`, with some overlap".
fn since(time: SystemTime) -> String {
    let time: chrono::DateTime<chrono::Utc> = (time - OVERLAP).into();
    time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Directory for OktaSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move {
            match vendor_read::plan::<OktaState>(self.incremental, cursor, "okta") {
                Planned::Changes(position, state) => {
                    self.change_read(shutdown, &delivery, &position, state)
                        .await
                }
                Planned::Full => self.full_read(shutdown, &delivery).await,
            }
        })
    }

    fn reads_changes(&self) -> bool {
        matches!(self.incremental, Incremental::On { .. })
    }

    fn name(&self) -> String {
        format!("okta {}", self.base)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut url = self.endpoint("api/v1/users");
            url.query_pairs_mut().append_pair("limit", "1");
            let mut listing = Pages::new(&self.http, url);
            let first = listing.next::<OktaUser>().await?.unwrap_or_default();
            Ok(match first.first().and_then(|u| u.id.as_deref()) {
                Some(id) => format!("credentials accepted; read user {id} at {}", self.base),
                None => format!("credentials accepted; no users at {}", self.base),
            })
        })
    }
}
