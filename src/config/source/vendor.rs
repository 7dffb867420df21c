//! What every vendor directory API source reads from `[source]` besides its own
//! table: the address, the page size, and the HTTP client's settings.

use std::num::NonZeroU32;
use std::time::Duration;

use url::Url;

use super::super::{ca_bundle, http_url, invalid, positive, seconds, ConfigError};
use super::{AttributeMap, RawSource};

#[derive(Debug, Clone)]
pub struct VendorHttp {
    /// The API's base address (no trailing slash).
    pub url: Url,
    pub page_size: NonZeroU32,
    pub ca_pem: Option<Vec<u8>>,
    /// Timeout of one request (`source.timeout_secs`).
    pub timeout: Duration,
    /// The longest `Retry-After` or rate-limit reset waited for; a longer one
    /// aborts the read.
    pub max_retry_after: Duration,
}

/// How one vendor's `[source]` keys are checked.
pub(super) struct Limits {
    pub kind: &'static str,
    /// The address when none is given; `None` makes `source.url` required.
    pub default_url: Option<&'static str>,
    pub example_url: &'static str,
    pub default_page_size: i64,
    pub max_page_size: u32,
}

impl RawSource {
    pub(super) fn vendor_http(&self, limits: &Limits) -> Result<VendorHttp, ConfigError> {
        let kind = limits.kind;
        let example = limits.example_url;
        let url = match (self.url.as_deref(), limits.default_url) {
            (Some(url), _) | (None, Some(url)) => http_url("source.url", url, example)?,
            (None, None) => {
                return Err(invalid(
                    "source.url",
                    format!("is missing: kind = \"{kind}\" reads the API at an address such as url = \"{example}\""),
                ))
            }
        };
        super::super::no_plain_http("source.url", &url, "the directory's credential", example)?;
        let page_size = positive(
            "source.page_size",
            self.page_size.unwrap_or(limits.default_page_size),
            &limits.default_page_size.to_string(),
        )?;
        if page_size.get() > limits.max_page_size {
            return Err(invalid(
                "source.page_size",
                format!(
                    "must be at most {} for kind = \"{kind}\"; got {page_size}",
                    limits.max_page_size
                ),
            ));
        }
        let timeout_secs = positive("source.timeout_secs", self.timeout_secs.unwrap_or(60), "60")?;
        Ok(VendorHttp {
            url,
            page_size,
            ca_pem: ca_bundle("source.ca_file", self.ca_file.as_deref())?,
            timeout: Duration::from_secs(u64::from(timeout_secs.get())),
            max_retry_after: seconds(
                "source.max_retry_after_secs",
                self.max_retry_after_secs.unwrap_or(300),
                "300",
            )?,
        })
    }
}

/// Vendor sources map no attributes (yet): a mapping given would be ignored.
pub(super) fn no_attributes(kind: &str, attributes: &AttributeMap) -> Result<(), ConfigError> {
    if attributes.is_empty() {
        return Ok(());
    }
    Err(invalid(
        "source.attributes",
        format!("is not used by kind = \"{kind}\"; remove it"),
    ))
}

/// A required, non-blank text key.
pub(super) fn required(
    key: &'static str,
    value: Option<&str>,
    example: &str,
) -> Result<String, ConfigError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        Some(value) => Ok(value.to_owned()),
        None => Err(invalid(key, format!("is missing, such as {example}"))),
    }
}
