//! Graph's paging: a listing's page holds `value` and `@odata.nextLink`, the next
//! page's whole URL; a delta listing's last page holds `@odata.deltaLink` instead,
//! the position to ask for changes from next time.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::source::http::DirectoryHttp;
use crate::source::next_page::same_origin;
use crate::source::vendor_read::{fetch, undecodable, Listing};
use crate::source::SourceError;

#[derive(Deserialize)]
struct Page<T> {
    value: Vec<T>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// A listing, page by page.
pub struct Pages<'a> {
    http: &'a DirectoryHttp,
    next: Option<Url>,
    /// The last page's `@odata.deltaLink`, once the listing is over.
    pub delta_link: Option<Url>,
    pub requests: usize,
}

impl<'a> Pages<'a> {
    pub fn new(http: &'a DirectoryHttp, first: Url) -> Self {
        Self {
            http,
            next: Some(first),
            delta_link: None,
            requests: 0,
        }
    }

    /// The next page's objects, or `None` once the listing is over.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<Vec<T>>, SourceError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let (_, body) = fetch(self.http, &url).await?;
        self.requests += 1;
        let page: Page<T> = serde_json::from_slice(&body)
            .map_err(|err| undecodable(&url, "a Graph collection page", &err))?;
        self.next = page
            .next_link
            .map(|link| same_origin(&url, &link))
            .transpose()?;
        if let Some(link) = page.delta_link {
            self.delta_link = Some(same_origin(&url, &link)?);
        }
        Ok(Some(page.value))
    }
}

impl Listing for Pages<'_> {
    fn next_page<T: DeserializeOwned + Send>(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<T>>, SourceError>> + Send {
        self.next()
    }
}

/// Whether `err` is Graph refusing a delta link it no longer knows (410 Gone,
/// `syncStateNotFound`): the changes cannot be read, only the whole directory.
pub fn is_expired_delta(err: &SourceError) -> bool {
    matches!(err, SourceError::Rejected { status, .. } if *status == reqwest::StatusCode::GONE)
}
