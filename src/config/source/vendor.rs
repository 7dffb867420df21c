//! What the vendor directory APIs (`kind = "jumpcloud"`, `"auth0"`) read from
//! `[source]` besides their own table: the address, the page size and the limits
//! of the HTTP read.

use std::num::NonZeroU32;
use std::time::Duration;

use url::Url;

use super::super::{ca_bundle, count, http_url, invalid, no_plain_http, positive, seconds};
use super::{AttributeMap, ConfigError, RawSource};

/// The bounds of one vendor directory read.
#[derive(Debug, Clone)]
pub struct DirectoryLimits {
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of one request (`source.timeout_secs`).
    pub timeout: Duration,
    /// The longest `Retry-After` or rate-limit reset honoured; a longer one aborts the read.
    pub max_retry_after: Duration,
    /// A directory announcing or listing more users aborts the read.
    pub max_directory_users: usize,
    /// The largest page body read.
    pub max_page_bytes: usize,
    /// The longest line of an export file.
    pub max_resource_bytes: usize,
}

/// The `[source]` keys every vendor kind reads (its own table comes on top).
pub(super) const VENDOR_KEYS: [&str; 8] = [
    "source.url",
    "source.page_size",
    "source.ca_file",
    "source.timeout_secs",
    "source.max_retry_after_secs",
    "source.max_directory_users",
    "source.max_page_bytes",
    "source.max_resource_bytes",
];

impl RawSource {
    /// `source.url`, or `default` when there is one; over https unless to loopback.
    pub(super) fn vendor_url(
        &self,
        default: Option<&str>,
        example: &str,
        secret: &str,
    ) -> Result<Url, ConfigError> {
        let Some(text) = self.url.as_deref().or(default) else {
            return Err(invalid(
                "source.url",
                format!("is missing: kind = {:?} reads the API at an address such as url = \"{example}\"", self.kind),
            ));
        };
        let url = http_url("source.url", text, example)?;
        no_plain_http("source.url", &url, secret, example)?;
        Ok(url)
    }

    /// `source.page_size`: the vendor APIs serve at most 100 a page.
    pub(super) fn vendor_page_size(&self) -> Result<NonZeroU32, ConfigError> {
        let size = positive("source.page_size", self.page_size.unwrap_or(100), "100")?;
        if size.get() > 100 {
            return Err(invalid(
                "source.page_size",
                format!("must be at most 100 for kind = {:?}, the most its API serves a page, such as page_size = 100; got {size}", self.kind),
            ));
        }
        Ok(size)
    }

    pub(super) fn vendor_limits(&self) -> Result<DirectoryLimits, ConfigError> {
        let timeout = positive("source.timeout_secs", self.timeout_secs.unwrap_or(60), "60")?;
        Ok(DirectoryLimits {
            ca_pem: ca_bundle("source.ca_file", self.ca_file.as_deref())?,
            timeout: Duration::from_secs(u64::from(timeout.get())),
            max_retry_after: seconds(
                "source.max_retry_after_secs",
                self.max_retry_after_secs.unwrap_or(300),
                "300",
            )?,
            max_directory_users: count(
                "source.max_directory_users",
                self.max_directory_users.unwrap_or(5_000_000),
                "5000000",
            )?,
            max_page_bytes: count(
                "source.max_page_bytes",
                self.max_page_bytes.unwrap_or(64 * 1024 * 1024),
                "67108864",
            )?,
            max_resource_bytes: self.max_resource_bytes()?,
        })
    }
}

/// `source.attributes` maps SCIM and file attributes; the vendor kinds read a fixed
/// set of fields and refuse a mapping rather than ignore it.
pub(super) fn no_attributes(kind: &str, attributes: &AttributeMap) -> Result<(), ConfigError> {
    let key = match (&attributes.slack_id, &attributes.picture) {
        (Some(_), _) => "source.attributes.slack_id",
        (None, Some(_)) => "source.attributes.picture",
        (None, None) => return Ok(()),
    };
    Err(invalid(
        key,
        format!("is not supported by kind = {kind:?}; remove it"),
    ))
}
