//! `kind = "google"`: a Google Workspace customer's users and groups from the
//! Admin SDK Directory API, read as a service account with domain-wide
//! delegation (the JWT bearer grant, acting as `delegated_admin`).
//!
//! The groups are read first (the groups, then each group's direct members),
//! then the users page by page, each delivered with its groups. Throttling
//! (`403 userRateLimitExceeded` / `rateLimitExceeded`, 429) is retried with
//! backoff; any other 403 ends the read with the reason Google gave.

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
use crate::config::{GoogleConfig, GoogleGroupName};
use crate::model::{GroupName, Subject};
use paging::PageTokens;

pub struct GoogleSource {
    /// `{url}/admin/directory/v1`.
    root: Url,
    customer: String,
    page_size: u32,
    group_name: GoogleGroupName,
    http: DirectoryHttp,
}

impl GoogleSource {
    pub fn new(config: &GoogleConfig, client: reqwest::Client, tokens: TokenSource) -> Self {
        let http = DirectoryHttp::new(
            client,
            Arc::new(tokens),
            "application/json",
            config.limits.max_retry_after,
        )
        .with_throttle_check(decode::throttled);
        Self {
            root: below(&config.url, &["admin", "directory", "v1"]),
            customer: config.customer.clone(),
            page_size: config.page_size.get(),
            group_name: config.group_name,
            http,
        }
    }

    /// The Directory API's `segments`.
    fn directory(&self, segments: &[&str]) -> Url {
        below(&self.root, segments)
    }

    /// The users listing, `max_results` a page.
    fn users_url(&self, max_results: u32) -> Url {
        let mut url = self.directory(&["users"]);
        url.query_pairs_mut()
            .append_pair("customer", &self.customer)
            .append_pair("maxResults", &max_results.to_string())
            .append_pair("projection", "basic");
        url
    }

    /// Pages through the users, delivering each page with the users' groups.
    async fn read_users(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        memberships: &HashMap<Subject, Vec<GroupName>>,
    ) -> Result<Read, SourceError> {
        let mut pages = PageTokens::new(&self.http, self.users_url(self.page_size));
        let mut users = UserPages::new(delivery, memberships);
        while let Some(page) = pages.next::<decode::GUser>().await? {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            users
                .deliver(page, decode::user)
                .await
                .map_err(|twice| SourceError::Inconsistent {
                    url: self.directory(&["users"]).to_string(),
                    reason: format!("user {twice} was listed twice"),
                })?;
        }
        Ok(users.complete())
    }
}

impl Directory for GoogleSource {
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
            self.read_users(shutdown, &delivery, &memberships).await
        })
    }

    fn name(&self) -> String {
        format!("google {} customer {}", self.root, self.customer)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let mut first = PageTokens::new(&self.http, self.users_url(1));
            let page: Vec<decode::GUser> = first.next().await?.unwrap_or_default();
            let shown = match page.into_iter().next().map(decode::user) {
                Some(Ok(user)) => format!("read user {}", user.label()),
                Some(Err(unusable)) => format!("read an unusable user ({})", unusable.label),
                None => "the customer has no users".into(),
            };
            Ok(format!("token accepted; {shown} at {}", self.root))
        })
    }
}
