//! `kind = "auth0"`: an Auth0 tenant's users through the Management API, with a
//! token from the client-credentials grant for the audience `{url}/api/v2/`.
//!
//! `/api/v2/users` pages through at most the first 1,000 users of a listing, so
//! the read asks for the total first (`include_totals`): below 1,000 it pages
//! (`page`/`per_page`), otherwise it runs a user export job and reads the gzip
//! NDJSON file the job leaves. Groups are the users' roles or organizations, read
//! with checkpoint paging (`from`/`take`), which has no such cap. Requests are
//! paced by the `x-ratelimit-remaining`/`-reset` headers of the answers.

mod decode;
mod export;
mod groups;
mod ndjson;

use std::sync::Arc;

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::auth::TokenSource;
use super::http::{DirectoryHttp, RateBudget};
use super::paged::{self, Memberships};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{Auth0Config, Auth0Groups, DirectoryLimits};
use decode::{UserPage, USER_FIELDS};

/// The most users `/api/v2/users` pages through; a larger tenant is exported.
const MAX_PAGED_USERS: usize = 1000;

/// Users handed to the planner at a time on the export path.
const CHUNK: usize = 1000;

pub struct Auth0Source {
    base: Url,
    page_size: usize,
    http: DirectoryHttp,
    /// Without the credential: the export file is fetched from where the job
    /// left it, which needs no token and must not be handed one.
    download: reqwest::Client,
    groups_from: Auth0Groups,
    export_timeout: std::time::Duration,
    limits: DirectoryLimits,
}

impl Directory for Auth0Source {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        _cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move { self.pull(shutdown, &delivery).await })
    }

    fn name(&self) -> String {
        format!("auth0 {}", self.base)
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(async move {
            let page: UserPage = self.get(&self.users_url(0, 1)).await?;
            Ok(format!(
                "client credentials accepted; {} users at {} (read {})",
                page.total,
                self.base,
                page.users.len()
            ))
        })
    }
}

impl Auth0Source {
    pub fn new(config: &Auth0Config, client: reqwest::Client) -> Self {
        let tokens = Arc::new(TokenSource::new(&config.auth, client.clone()));
        let http = DirectoryHttp::new(
            client.clone(),
            tokens,
            "application/json",
            config.limits.max_retry_after,
        )
        .with_rate_budget(RateBudget {
            remaining: "x-ratelimit-remaining",
            reset: "x-ratelimit-reset",
        });
        Self {
            base: config.url.clone(),
            page_size: config.page_size.get() as usize,
            http,
            download: client,
            groups_from: config.groups_from,
            export_timeout: config.export_timeout,
            limits: config.limits.clone(),
        }
    }

    /// The groups first, then the users by the path their number allows.
    async fn pull(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
    ) -> Result<Read, SourceError> {
        let memberships = groups::memberships(self, shutdown).await?;
        let counted: UserPage = self.get(&self.users_url(0, 1)).await?;
        // A total of 1,000 may be Auth0's cap rather than the count: export then too.
        if counted.total < MAX_PAGED_USERS {
            tracing::info!(
                users = counted.total,
                "Reading the Auth0 users page by page: fewer than 1,000, all of which /api/v2/users pages through."
            );
            self.page_through(shutdown, delivery, &memberships).await
        } else {
            tracing::info!(
                users = counted.total,
                "Reading the Auth0 users by a user export job: /api/v2/users pages through only the first 1,000."
            );
            export::read(self, shutdown, delivery, &memberships).await
        }
    }

    /// `/api/v2/users`, page by page, each page checked against the total.
    async fn page_through(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        memberships: &Memberships,
    ) -> Result<Read, SourceError> {
        let fetch = |read_so_far| async move {
            let url = self.users_url(read_so_far / self.page_size, self.page_size);
            let page: UserPage = self.get(&url).await?;
            let entries = page
                .users
                .into_iter()
                .map(|user| user.into_user())
                .collect();
            Ok(paged::UserPage {
                url,
                total: page.total,
                entries,
            })
        };
        let max_users = self.limits.max_directory_users;
        let reading = (shutdown, delivery);
        paged::read_user_pages(self.page_size, max_users, memberships, reading, fetch).await
    }

    /// A page of `/api/v2/users` with its total and only the fields idsync reads.
    fn users_url(&self, page: usize, per_page: usize) -> Url {
        let mut url = self.api("/users");
        url.query_pairs_mut()
            .append_pair("page", &page.to_string())
            .append_pair("per_page", &per_page.to_string())
            .append_pair("include_totals", "true")
            .append_pair("fields", &USER_FIELDS.join(","))
            .append_pair("include_fields", "true");
        url
    }

    /// `{base}/api/v2{path}`.
    fn api(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "{}/api/v2{path}",
            self.base.path().trim_end_matches('/')
        ));
        url
    }

    async fn get<T: DeserializeOwned>(&self, url: &Url) -> Result<T, SourceError> {
        let response = self.http.get(url).await?;
        paged::json_body(url, response, self.limits.max_page_bytes).await
    }
}
