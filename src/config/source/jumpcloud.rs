//! `kind = "jumpcloud"` with its `[source.jumpcloud]` table.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::super::{
    invalid, optional_secret, ApiKey, ConfigError, Secret, SourceAuth, ENV_SOURCE_API_KEY,
};
use super::vendor::DirectoryLimits;
use super::RawSource;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawJumpCloud {
    api_key: Option<Secret>,
    api_key_file: Option<PathBuf>,
    org_id: Option<String>,
}

/// JumpCloud's directory: system users (v1) and user groups (v2).
#[derive(Debug, Clone)]
pub struct JumpCloudConfig {
    /// The console address, e.g. `https://console.jumpcloud.com` (no trailing slash).
    pub url: Url,
    pub page_size: NonZeroU32,
    /// `x-api-key`: a read-only administrator's API key.
    pub auth: SourceAuth,
    /// `x-org-id`, for administrators of several organizations.
    pub org_id: Option<String>,
    pub limits: DirectoryLimits,
}

const EXAMPLE: &str = "https://console.jumpcloud.com";

impl RawSource {
    pub(super) fn jumpcloud(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<JumpCloudConfig, ConfigError> {
        let empty = RawJumpCloud::default();
        let raw = self.jumpcloud.as_ref().unwrap_or(&empty);
        let url = self.vendor_url(Some(EXAMPLE), EXAMPLE, "the JumpCloud API key")?;
        let key = optional_secret(
            "source.jumpcloud.api_key",
            raw.api_key.clone(),
            raw.api_key_file.as_deref(),
            ENV_SOURCE_API_KEY,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "source.jumpcloud.api_key",
                format!("is missing: set api_key_file = \"/run/secrets/jumpcloud_key\" in [source.jumpcloud] or the environment variable {ENV_SOURCE_API_KEY}"),
            )
        })?;
        let org_id = raw
            .org_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty());
        if org_id.is_some_and(|id| !id.chars().all(|c| c.is_ascii_alphanumeric())) {
            return Err(invalid(
                "source.jumpcloud.org_id",
                "must be the organization's id from the console settings (letters and digits), such as org_id = \"5f0c1b2a3d4e5f6a7b8c9d0e\"",
            ));
        }
        Ok(JumpCloudConfig {
            url,
            page_size: self.vendor_page_size()?,
            auth: SourceAuth::ApiKey(ApiKey {
                header: "x-api-key",
                scheme: None,
                key,
            }),
            org_id: org_id.map(str::to_owned),
            limits: self.vendor_limits()?,
        })
    }
}
