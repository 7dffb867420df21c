//! `kind = "jumpcloud"`: system users from `/api/systemusers` (v1, `limit`/`skip`,
//! sorted by `_id` so that users created during the read come last), and user
//! groups from `/api/v2/usergroups`, each with the users JumpCloud's
//! `membership` endpoint lists for it: every user member, through nested groups
//! too. JumpCloud resolves the nesting itself, so idsync asks for no group-of-group
//! edges and the groups a user is in are what JumpCloud's own graph says.

mod decode;
mod groups;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::http::DirectoryHttp;
use super::paged::{self, Memberships};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{DirectoryLimits, JumpCloudConfig};
use decode::UserPage;

pub struct JumpCloudSource {
    base: Url,
    page_size: usize,
    http: DirectoryHttp,
    limits: DirectoryLimits,
}

impl Directory for JumpCloudSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move { self.pull(shutdown, &delivery).await })
    }

    fn name(&self) -> String {
        format!("jumpcloud {}", self.base)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let page: UserPage = self.get(&self.users_url(1, 0)).await?;
            Ok(format!(
                "API key accepted; {} system users at {} (read {})",
                page.total_count,
                self.base,
                page.results.len()
            ))
        })
    }
}

impl JumpCloudSource {
    pub fn new(config: &JumpCloudConfig, client: reqwest::Client) -> Self {
        let tokens = Arc::new(TokenSource::new(&config.auth, client.clone()));
        let mut http = DirectoryHttp::new(
            client,
            tokens,
            "application/json",
            config.limits.max_retry_after,
        );
        if let Some(org_id) = &config.org_id {
            http = http.with_header("x-org-id", org_id.clone());
        }
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get() as usize,
            http,
            limits: config.limits.clone(),
        }
    }

    /// The groups first (they are few, and each user is complete once they are
    /// known), then the users a page at a time, straight to `delivery`.
    async fn pull(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
    ) -> Result<Read, SourceError> {
        let memberships = self.memberships(shutdown).await?;
        tracing::info!(
            users_in_groups = memberships.len(),
            "Read the JumpCloud user groups."
        );
        let fetch = |skip| async move {
            let url = self.users_url(self.page_size, skip);
            let page: UserPage = self.get(&url).await?;
            let entries = page
                .results
                .into_iter()
                .map(|user| user.into_user())
                .collect();
            Ok(paged::UserPage {
                url,
                total: page.total_count,
                entries,
            })
        };
        let max_users = self.limits.max_directory_users;
        let reading = (shutdown, delivery);
        paged::read_user_pages(self.page_size, max_users, &memberships, reading, fetch).await
    }

    /// Each user's groups, sorted.
    async fn memberships(&self, shutdown: &CancellationToken) -> Result<Memberships, SourceError> {
        groups::memberships(self, shutdown).await
    }

    /// `{base}{path}?limit=…&skip=…`.
    fn url(&self, path: &str, limit: usize, skip: usize) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!("{}{path}", self.base.path().trim_end_matches('/')));
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("skip", &skip.to_string());
        url
    }

    /// A page of system users, sorted by `_id` as JumpCloud advises for `skip`
    /// paging: ids grow with creation, so new users join the end.
    fn users_url(&self, limit: usize, skip: usize) -> Url {
        let mut url = self.url("/api/systemusers", limit, skip);
        url.query_pairs_mut().append_pair("sort", "_id");
        url
    }

    async fn get<T: DeserializeOwned>(&self, url: &Url) -> Result<T, SourceError> {
        let response = self.http.get(url).await?;
        paged::json_body(url, response, self.limits.max_page_bytes).await
    }
}
