//! `first`/`max` paging: Keycloak's lists are offsets into a sorted listing, and
//! a page shorter than `max` is the last one.

use serde::de::DeserializeOwned;
use url::Url;

use crate::source::http::DirectoryHttp;
use crate::source::SourceError;

/// The pages of one listing, asked for one after the other.
pub(super) struct Offsets<'h> {
    http: &'h DirectoryHttp,
    url: Url,
    max: u32,
    first: u64,
    done: bool,
}

impl<'h> Offsets<'h> {
    /// The listing at `url` (which may carry query parameters of its own), `max`
    /// entries a page.
    pub(super) fn new(http: &'h DirectoryHttp, url: Url, max: u32) -> Self {
        Self {
            http,
            url,
            max,
            first: 0,
            done: false,
        }
    }

    /// The next page, or `None` after the last.
    pub(super) async fn next<T: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Vec<T>>, SourceError> {
        if self.done {
            return Ok(None);
        }
        let mut url = self.url.clone();
        url.query_pairs_mut()
            .append_pair("first", &self.first.to_string())
            .append_pair("max", &self.max.to_string());
        let page: Vec<T> = self.http.get_json(&url).await?;
        if page.len() > self.max as usize {
            return Err(SourceError::Inconsistent {
                url: url.to_string(),
                reason: format!(
                    "a page of {} entries, more than max = {}",
                    page.len(),
                    self.max
                ),
            });
        }
        self.first += page.len() as u64;
        self.done = page.len() < self.max as usize;
        Ok(Some(page))
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
