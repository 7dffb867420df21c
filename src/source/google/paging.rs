//! `pageToken` paging: every Admin SDK listing answers with a `nextPageToken`
//! until its last page.

use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::source::http::DirectoryHttp;
use crate::source::SourceError;

/// One page of a listing; the entries' field is named after the listing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page<T> {
    /// Absent on an empty listing.
    #[serde(
        default = "Vec::new",
        alias = "users",
        alias = "groups",
        alias = "members"
    )]
    entries: Vec<T>,
    next_page_token: Option<String>,
}

/// The pages of one listing, asked for one after the other.
pub(super) struct PageTokens<'h> {
    http: &'h DirectoryHttp,
    url: Url,
    /// `None` before the first page; `Some(None)` after the last.
    next: Option<Option<String>>,
}

impl<'h> PageTokens<'h> {
    pub(super) fn new(http: &'h DirectoryHttp, url: Url) -> Self {
        Self {
            http,
            url,
            next: None,
        }
    }

    /// The next page's entries, or `None` after the last page.
    pub(super) async fn next<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Vec<T>>, SourceError> {
        let mut url = self.url.clone();
        match &self.next {
            None => {}
            Some(None) => return Ok(None),
            Some(Some(token)) => {
                url.query_pairs_mut().append_pair("pageToken", token);
            }
        }
        let page: Page<T> = self.http.get_json(&url).await?;
        let next = page.next_page_token.filter(|token| !token.is_empty());
        if next.is_some() && next == self.next.clone().flatten() {
            return Err(SourceError::Inconsistent {
                url: url.to_string(),
                reason: "the page named itself as the next one".into(),
            });
        }
        self.next = Some(next);
        Ok(Some(page.entries))
    }

    /// Every entry of the listing.
    pub(super) async fn all<T: DeserializeOwned>(mut self) -> Result<Vec<T>, SourceError> {
        let mut entries = Vec::new();
        while let Some(page) = self.next().await? {
            entries.extend(page);
        }
        Ok(entries)
    }
}
