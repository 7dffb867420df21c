//! `kind = "keycloak"`: a realm's users and groups from Keycloak's admin REST API
//! (`/admin/realms/{realm}`), read by a confidential client's service account
//! with the OIDC client-credentials grant.
//!
//! The groups are read first (the tree, then each group's members), then the
//! users page by page, each delivered with its groups. Users are paged by offset
//! (`first`/`max`), which skips an entry when one is deleted mid-walk: the user
//! count is taken before and after, and a read in which it changed, or that met
//! a user twice, is not trusted.

mod decode;
mod groups;
mod paging;

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::http::{below, DirectoryHttp};
use super::user_pages::UserPages;
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{KeycloakConfig, KeycloakGroupName};
use crate::model::{GroupName, Subject};
use paging::Offsets;

pub struct KeycloakSource {
    /// `{url}/admin/realms/{realm}`.
    root: Url,
    page_size: u32,
    group_name: KeycloakGroupName,
    inherit_parent_groups: bool,
    http: DirectoryHttp,
}

impl KeycloakSource {
    pub fn new(config: &KeycloakConfig, client: reqwest::Client, tokens: TokenSource) -> Self {
        Self {
            root: below(&config.url, &["admin", "realms", &config.realm]),
            page_size: config.page_size.get(),
            group_name: config.group_name,
            inherit_parent_groups: config.inherit_parent_groups,
            http: DirectoryHttp::new(
                client,
                Arc::new(tokens),
                "application/json",
                config.limits.max_retry_after,
            ),
        }
    }

    /// The admin API's `segments` under the realm.
    fn url(&self, segments: &[&str]) -> Url {
        below(&self.root, segments)
    }

    async fn count_users(&self) -> Result<u64, SourceError> {
        self.http.get_json(&self.url(&["users", "count"])).await
    }

    /// Pages through the users, delivering each page with the users' groups.
    async fn read_users(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        memberships: &HashMap<Subject, Vec<GroupName>>,
    ) -> Result<Read, SourceError> {
        let mut listing = self.url(&["users"]);
        listing
            .query_pairs_mut()
            .append_pair("briefRepresentation", "false");
        let mut pages = Offsets::new(&self.http, listing, self.page_size);
        let mut users = UserPages::new(delivery, memberships);
        while let Some(page) = pages.next::<decode::KcUser>().await? {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            users
                .deliver(page, decode::user)
                .await
                .map_err(|twice| self.moved(format!("user {twice} was listed twice")))?;
        }
        Ok(users.complete())
    }

    /// The users listing shifted while it was paged.
    fn moved(&self, what: String) -> SourceError {
        SourceError::Inconsistent {
            url: self.url(&["users"]).to_string(),
            reason: format!(
                "{what}: users were added or removed during the read; the next run reads again"
            ),
        }
    }
}

impl Directory for KeycloakSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move {
            let memberships = self.memberships().await?;
            // The member listings' pages and the nesting are freed now.
            crate::memory::return_freed_memory();
            let before = self.count_users().await?;
            let read = self.read_users(shutdown, &delivery, &memberships).await?;
            let after = self.count_users().await?;
            if before != after {
                return Err(self.moved(format!(
                    "the realm counted {before} users before the read and {after} after"
                )));
            }
            Ok(read)
        })
    }

    fn name(&self) -> String {
        format!("keycloak {}", self.root)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut one = self.url(&["users"]);
            one.query_pairs_mut()
                .append_pair("first", "0")
                .append_pair("max", "1")
                .append_pair("briefRepresentation", "false");
            let users: Vec<decode::KcUser> = self.http.get_json(&one).await?;
            let total = self.count_users().await?;
            let shown = match users.into_iter().next().map(decode::user) {
                Some(Ok(user)) => format!("; read user {}", user.label()),
                Some(Err(unusable)) => format!("; read an unusable user ({})", unusable.label),
                None => String::new(),
            };
            Ok(format!(
                "token accepted; {total} users in {}{shown}",
                self.root
            ))
        })
    }
}
