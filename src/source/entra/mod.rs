//! `kind = "entra"`: Microsoft Entra ID through Microsoft Graph. Users from
//! `/users`, groups from `/groups` with their direct members (users and nested
//! groups), paged by `@odata.nextLink`; the token comes from the tenant's token
//! endpoint (client credentials, by secret or by certificate).
//!
//! Nested groups are flattened by the shared membership code from each group's
//! direct members rather than by `transitiveMembers`: the direct structure is what
//! `groups/delta` reports changes to, so the change read needs it anyway, and a
//! transitive listing would list every nested member again for each ancestor.
//!
//! With `source.incremental`, reads between full reads follow `users/delta` and
//! `groups/delta` from the links kept in the cursor, with the group table (see
//! [`group_table`](crate::source::group_table)).

mod decode;
mod delta;
mod paging;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::cursor::Position;
use super::group_table::{GroupTable, Memberships, TableGroup};
use super::http::DirectoryHttp;
use super::membership::MembershipError;
use super::vendor_read::{self, Planned};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{EntraConfig, Incremental};
use crate::model::{DirectoryUser, Subject};
use decode::{GraphGroup, GraphUser, Member, USER_FIELDS};
use paging::Pages;

pub struct EntraSource {
    base: Url,
    page_size: u32,
    incremental: Incremental,
    http: DirectoryHttp,
}

/// What the cursor keeps between reads.
#[derive(Debug, Serialize, Deserialize)]
struct EntraState {
    users_delta: String,
    groups_delta: String,
    groups: GroupTable,
}

impl EntraSource {
    pub fn new(config: &EntraConfig, incremental: Incremental, http: reqwest::Client) -> Self {
        let tokens = Arc::new(TokenSource::new(&config.auth, http.clone()));
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get(),
            incremental,
            http: DirectoryHttp::new(
                http,
                tokens,
                "application/json",
                config.limits.max_retry_after,
            ),
        }
    }

    /// `path` under the Graph base address, with `query`.
    fn endpoint(&self, path: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/{path}",
            self.base.path().trim_end_matches('/')
        ));
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    fn users_url(&self) -> Url {
        let top = self.page_size.to_string();
        self.endpoint("users", &[("$select", USER_FIELDS), ("$top", &top)])
    }

    /// The delta listings from now on, without their contents (`$deltatoken=latest`).
    fn latest_delta(&self, collection: &str, select: &str) -> Url {
        let path = format!("{collection}/microsoft.graph.delta()");
        self.endpoint(&path, &[("$select", select), ("$deltatoken", "latest")])
    }

    /// The whole directory: the groups with their direct members first, for the
    /// memberships, then the users, delivered page by page. With incremental reads
    /// on, the delta links are taken before anything is read, so that a change made
    /// while reading is read again next time rather than missed.
    async fn full_read(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
    ) -> Result<Read, SourceError> {
        let started = SystemTime::now();
        let links = match self.incremental {
            Incremental::On { .. } => Some((
                self.delta_link(self.latest_delta("users", USER_FIELDS))
                    .await?,
                self.delta_link(self.latest_delta("groups", "displayName,members"))
                    .await?,
            )),
            Incremental::Off => None,
        };
        let table = self.read_groups(shutdown).await?;
        // Kept as text from here: the table itself goes into the memberships.
        let (cursor, table) = match links {
            Some((users_delta, groups_delta)) => {
                let state = EntraState {
                    users_delta: users_delta.to_string(),
                    groups_delta: groups_delta.to_string(),
                    groups: table,
                };
                (Some(vendor_read::encode(&state)), state.groups)
            }
            None => (None, table),
        };
        let mut memberships = self.memberships(table)?;
        let next = cursor.map(|text| Position::after_full_read(text, started).encode());
        let mut users = Pages::new(&self.http, self.users_url());
        let with_groups =
            |page: Vec<GraphUser>, read: &mut Read| to_users(page, &mut memberships, read);
        vendor_read::deliver_users(&mut users, shutdown, delivery, with_groups, next).await
    }

    /// Follows a delta listing to its end and returns its delta link.
    async fn delta_link(&self, url: Url) -> Result<Url, SourceError> {
        let mut listing = Pages::new(&self.http, url.clone());
        while listing.next::<serde::de::IgnoredAny>().await?.is_some() {}
        listing.delta_link.ok_or_else(|| SourceError::Inconsistent {
            url: url.to_string(),
            reason: "the delta listing ended without an @odata.deltaLink".into(),
        })
    }

    /// Every group, with its direct members, one group at a time: Graph throttles
    /// per app, and a `Retry-After` holds back only the request it answered, so
    /// others in flight would run into the same throttle.
    async fn read_groups(&self, shutdown: &CancellationToken) -> Result<GroupTable, SourceError> {
        let top = self.page_size.to_string();
        let groups_url = self.endpoint("groups", &[("$select", "id,displayName"), ("$top", &top)]);
        let mut listing = Pages::new(&self.http, groups_url.clone());
        let mut listed = Vec::new();
        while let Some(page) = listing.next::<GraphGroup>().await? {
            listed.extend(page);
        }
        let mut table = GroupTable::default();
        for group in listed {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            let mut members = self.read_members(&group.id).await?;
            members.name = group.display_name.unwrap_or_default();
            if table.insert(group.id.clone(), members).is_some() {
                return Err(SourceError::Inconsistent {
                    url: groups_url.to_string(),
                    reason: format!("group {} is listed twice", group.id),
                });
            }
        }
        Ok(table)
    }

    async fn read_members(&self, id: &str) -> Result<TableGroup, SourceError> {
        let top = self.page_size.to_string();
        let url = self.endpoint(
            &format!("groups/{id}/members"),
            &[("$select", "id"), ("$top", &top)],
        );
        let mut group = TableGroup::default();
        let mut listing = Pages::new(&self.http, url);
        while let Some(page) = listing.next::<Member>().await? {
            for member in page {
                add_member(&mut group, member);
            }
        }
        Ok(group)
    }

    fn memberships(&self, table: GroupTable) -> Result<Memberships, SourceError> {
        let memberships = table.into_memberships();
        crate::memory::return_freed_memory();
        memberships.map_err(|err| self.inconsistent_groups(err))
    }

    /// The group table holds a group nesting one it does not hold.
    fn inconsistent_groups(&self, err: MembershipError) -> SourceError {
        SourceError::Inconsistent {
            url: self.endpoint("groups", &[]).to_string(),
            reason: err.to_string(),
        }
    }
}

/// Puts a listed member into its group, or takes it out when it is `@removed`.
fn add_member(group: &mut TableGroup, member: Member) {
    let removed = member.removed.is_some();
    if member.is_user() {
        let subject = Subject::new(member.id);
        if removed {
            group.members.remove(&subject);
        } else {
            group.members.insert(subject);
        }
    } else if member.is_group() {
        if removed {
            group.nested.remove(&member.id);
        } else {
            group.nested.insert(member.id);
        }
    }
}

/// The users of a page, keyed and with their groups; unusable ones go to `read`.
fn to_users(
    page: Vec<GraphUser>,
    memberships: &mut Memberships,
    read: &mut Read,
) -> Vec<DirectoryUser> {
    vendor_read::keyed(page, |user| user.into_directory_user(memberships), read)
}

impl Directory for EntraSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move {
            if let Planned::Changes(position, state) =
                vendor_read::plan::<EntraState>(self.incremental, cursor, "entra")
            {
                match self
                    .change_read(shutdown, &delivery, &position, state)
                    .await
                {
                    Err(err) if paging::is_expired_delta(&err) => {
                        tracing::info!(%err, "Graph no longer knows the delta link; reading the whole directory.");
                    }
                    done => return done,
                }
            }
            self.full_read(shutdown, &delivery).await
        })
    }

    fn reads_changes(&self) -> bool {
        matches!(self.incremental, Incremental::On { .. })
    }

    fn name(&self) -> String {
        format!("entra {}", self.base)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let url = self.endpoint("users", &[("$select", USER_FIELDS), ("$top", "1")]);
            let mut listing = Pages::new(&self.http, url);
            let first = listing.next::<GraphUser>().await?.unwrap_or_default();
            Ok(match first.first().and_then(|u| u.id.as_deref()) {
                Some(id) => format!("token accepted; read user {id} at {}", self.base),
                None => format!("token accepted; no users at {}", self.base),
            })
        })
    }
}

/// Subjects, for the removed list.
fn subjects(ids: BTreeSet<String>) -> Vec<Subject> {
    ids.into_iter().map(Subject::new).collect()
}
