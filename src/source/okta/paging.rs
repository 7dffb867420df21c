//! Okta's cursor paging: each page's `Link: <…>; rel="next"` header is the next
//! page's whole URL; the last page has none.

use std::time::SystemTime;

use reqwest::header::{HeaderMap, DATE, LINK};
use std::future::Future;

use serde::de::DeserializeOwned;
use url::Url;

use crate::source::http::DirectoryHttp;
use crate::source::next_page::same_origin;
use crate::source::vendor_read::{fetch, undecodable, Listing};
use crate::source::SourceError;

/// A listing, page by page.
pub struct Pages<'a> {
    http: &'a DirectoryHttp,
    next: Option<Url>,
    /// The server's clock at the first answer (its `Date` header).
    pub server_time: Option<SystemTime>,
    /// Requests sent for this listing.
    pub requests: usize,
}

impl<'a> Pages<'a> {
    pub fn new(http: &'a DirectoryHttp, first: Url) -> Self {
        Self {
            http,
            next: Some(first),
            server_time: None,
            requests: 0,
        }
    }

    /// The next page's objects, or `None` once the listing is over.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<Vec<T>>, SourceError> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let (headers, body) = fetch(self.http, &url).await?;
        self.requests += 1;
        self.server_time = self.server_time.or_else(|| server_time(&headers));
        let next = next_link(&headers)
            .map(|link| same_origin(&url, &link))
            .transpose()?;
        let page = serde_json::from_slice(&body)
            .map_err(|err| undecodable(&url, "a JSON array of Okta objects", &err))?;
        self.next = next;
        Ok(Some(page))
    }
}

impl Listing for Pages<'_> {
    fn next_page<T: DeserializeOwned + Send>(
        &mut self,
    ) -> impl Future<Output = Result<Option<Vec<T>>, SourceError>> + Send {
        self.next()
    }
}

/// The `rel="next"` target among the `Link` headers, if any.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|link| {
            let (target, params) = link.trim().split_once(';')?;
            let is_next = params
                .split(';')
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            is_next.then(|| target.to_owned())
        })
}

fn server_time(headers: &HeaderMap) -> Option<SystemTime> {
    let date = headers.get(DATE)?.to_str().ok()?;
    httpdate::parse_http_date(date).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(links: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for link in links {
            headers.append(LINK, link.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_next_link_is_found_among_several() {
        let self_link = "<https://acme.okta.com/api/v1/users?limit=200>; rel=\"self\"";
        let next = "<https://acme.okta.com/api/v1/users?after=00u2&limit=200>; rel=\"next\"";
        assert_eq!(
            next_link(&headers(&[self_link, next])).as_deref(),
            Some("https://acme.okta.com/api/v1/users?after=00u2&limit=200")
        );
        let joined = format!("{self_link}, {next}");
        assert!(next_link(&headers(&[&joined])).is_some());
        assert_eq!(next_link(&headers(&[self_link])), None);
    }
}
