//! What the vendor directory APIs (`kind = "jumpcloud"`, `"auth0"`) read from
//! `[source]` besides their own table: the address, the page size and the limits
//! of the HTTP read.

use std::num::NonZeroU32;
use std::time::Duration;

use url::Url;

use super::super::{ca_bundle, count, http_url, invalid, no_plain_http, positive, seconds};
use super::{AttributeMap, ConfigError, RawSource};

/// The bounds of one directory read over HTTP.
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

/// A vendor API's page of at most 100 users is far below this; a larger body is
/// not a page.
pub(super) const VENDOR_PAGE_BYTES: usize = 64 * 1024 * 1024;

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

    /// The bounds of an HTTP directory read; a page body may be
    /// `default_page_bytes` unless `source.max_page_bytes` says otherwise.
    pub(super) fn directory_limits(
        &self,
        default_page_bytes: usize,
    ) -> Result<DirectoryLimits, ConfigError> {
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
                self.max_page_bytes.unwrap_or(default_page_bytes as i64),
                &default_page_bytes.to_string(),
            )?,
            max_resource_bytes: self.max_resource_bytes()?,
        })
    }
}

/// `source.page_size` for a vendor whose API serves up to `max` a page.
pub(super) fn page_size_up_to(raw: &RawSource, max: u32) -> Result<NonZeroU32, ConfigError> {
    let size = positive(
        "source.page_size",
        raw.page_size.unwrap_or(i64::from(max)),
        &max.to_string(),
    )?;
    if size.get() > max {
        return Err(invalid(
            "source.page_size",
            format!(
                "must be at most {max} for kind = {:?}, the most its API serves a page; got {size}",
                raw.kind
            ),
        ));
    }
    Ok(size)
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

#[cfg(test)]
mod tests {
    use crate::config::{
        Auth0Groups, Config, GrantMethod, SourceAuth, SourceKind, ENV_SOURCE_API_KEY,
    };

    const TARGET: &str = "[target]\nurl = \"https://gw.example.com/api\"\napi_key = \"hpk_x\"\n";

    fn parse(source: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let text = format!("[source]\n{source}\n{TARGET}");
        let env = |name: &str| {
            env.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        };
        Config::parse(&text, "t", &env).map_err(|err| err.to_string())
    }

    #[test]
    fn a_jumpcloud_source_sends_its_key_and_org_in_its_headers() {
        let config = parse(
            "kind = \"jumpcloud\"\n[source.jumpcloud]\napi_key = \"k1\"\norg_id = \"5f00aa\"",
            &[],
        )
        .expect("valid");
        let SourceKind::JumpCloud(jumpcloud) = config.source.kind else {
            panic!("a JumpCloud source")
        };
        assert_eq!(jumpcloud.url.as_str(), "https://console.jumpcloud.com/");
        assert_eq!(jumpcloud.org_id.as_deref(), Some("5f00aa"));
        let SourceAuth::ApiKey(key) = jumpcloud.auth else {
            panic!("an API key")
        };
        assert_eq!(
            (key.header, key.scheme, key.key.expose()),
            ("x-api-key", None, "k1")
        );
        let from_env = parse("kind = \"jumpcloud\"", &[(ENV_SOURCE_API_KEY, "k2")]).expect("env");
        let SourceKind::JumpCloud(jumpcloud) = from_env.source.kind else {
            panic!("a JumpCloud source")
        };
        assert!(matches!(jumpcloud.auth, SourceAuth::ApiKey(key) if key.key.expose() == "k2"));
    }

    #[test]
    fn an_auth0_source_asks_its_tenant_for_a_management_api_token() {
        let config = parse(
            "kind = \"auth0\"\nurl = \"https://acme.eu.auth0.com/\"\n[source.auth0]\nclient_id = \"c1\"\nclient_secret = \"s1\"\ngroups_from = \"organizations\"",
            &[],
        )
        .expect("valid");
        let SourceKind::Auth0(auth0) = config.source.kind else {
            panic!("an Auth0 source")
        };
        assert_eq!(auth0.groups_from, Auth0Groups::Organizations);
        let SourceAuth::Grant(grant) = auth0.auth else {
            panic!("a grant")
        };
        assert_eq!(
            grant.token_url.as_str(),
            "https://acme.eu.auth0.com/oauth/token"
        );
        assert_eq!(grant.client_id, "c1");
        assert!(matches!(grant.method, GrantMethod::ClientSecret(s) if s.expose() == "s1"));
        assert_eq!(
            grant.params,
            [("audience", "https://acme.eu.auth0.com/api/v2/".to_owned())]
        );
    }

    #[test]
    fn bad_vendor_settings_name_their_key() {
        for (source, error) in [
            ("kind = \"jumpcloud\"", "source.jumpcloud.api_key is missing"),
            (
                "kind = \"jumpcloud\"\npage_size = 500\n[source.jumpcloud]\napi_key = \"k\"",
                "source.page_size must be at most 100",
            ),
            (
                "kind = \"jumpcloud\"\n[source.jumpcloud]\napi_key = \"k\"\norg_id = \"a b\"",
                "source.jumpcloud.org_id must be",
            ),
            (
                "kind = \"jumpcloud\"\nurl = \"http://jc.example.com\"\n[source.jumpcloud]\napi_key = \"k\"",
                "source.url would send the JumpCloud API key over plain http",
            ),
            (
                "kind = \"auth0\"\n[source.jumpcloud]\napi_key = \"k\"",
                "source.jumpcloud is not used by kind = \"auth0\"",
            ),
            ("kind = \"auth0\"", "source.url is missing"),
            (
                "kind = \"auth0\"\nurl = \"https://a.auth0.com\"\n[source.auth0]\nclient_secret = \"s\"",
                "source.auth0.client_id is missing",
            ),
            (
                "kind = \"auth0\"\nurl = \"https://a.auth0.com\"\n[source.auth0]\nclient_id = \"c\"",
                "source.auth0.client_secret is missing",
            ),
            (
                "kind = \"auth0\"\nurl = \"https://a.auth0.com\"\n[source.auth0]\nclient_id = \"c\"\nclient_secret = \"s\"\ngroups_from = \"teams\"",
                "source.auth0.groups_from must be \"roles\" or \"organizations\"",
            ),
            (
                "kind = \"auth0\"\nurl = \"https://a.auth0.com\"\nbearer_token = \"t\"\n[source.auth0]\nclient_id = \"c\"\nclient_secret = \"s\"",
                "source.bearer_token is not used by kind = \"auth0\"",
            ),
            (
                "kind = \"jumpcloud\"\n[source.jumpcloud]\napi_key = \"k\"\n[source.attributes]\nslack_id = \"slack\"",
                "source.attributes.slack_id is not supported by kind = \"jumpcloud\"",
            ),
        ] {
            let err = parse(source, &[]).expect_err(source);
            assert!(err.starts_with(error), "{source:?}: {err}");
            assert!(!err.contains("\"s\"") && !err.contains("\"k\""), "no secret: {err}");
        }
    }
}
