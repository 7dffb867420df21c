//! `kind = "auth0"` with its `[source.auth0]` table.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::super::{
    invalid, optional_secret, seconds, ConfigError, GrantConfig, GrantMethod, Secret, SourceAuth,
    ENV_SOURCE_CLIENT_SECRET,
};
use super::vendor::DirectoryLimits;
use super::RawSource;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawAuth0 {
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    groups_from: Option<String>,
    export_timeout_secs: Option<i64>,
}

/// An Auth0 tenant's Management API, read by a machine-to-machine application.
#[derive(Debug, Clone)]
pub struct Auth0Config {
    /// The tenant's address, e.g. `https://acme.eu.auth0.com` (no trailing slash).
    pub url: Url,
    pub page_size: NonZeroU32,
    /// Client credentials at `{url}/oauth/token` for the audience `{url}/api/v2/`.
    pub auth: SourceAuth,
    pub groups_from: Auth0Groups,
    /// The longest wait for a user export job to complete.
    pub export_timeout: Duration,
    pub limits: DirectoryLimits,
}

/// What becomes the gateway groups: Auth0 has no groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth0Groups {
    Roles,
    Organizations,
}

const EXAMPLE: &str = "https://acme.eu.auth0.com";

impl RawSource {
    pub(super) fn auth0(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Auth0Config, ConfigError> {
        let empty = RawAuth0::default();
        let raw = self.auth0.as_ref().unwrap_or(&empty);
        let url = self.vendor_url(None, EXAMPLE, "source.auth0.client_secret")?;
        let groups_from = match raw.groups_from.as_deref().unwrap_or("roles") {
            "roles" => Auth0Groups::Roles,
            "organizations" => Auth0Groups::Organizations,
            other => {
                return Err(invalid(
                    "source.auth0.groups_from",
                    format!("must be \"roles\" or \"organizations\", such as groups_from = \"roles\"; got {other:?}"),
                ))
            }
        };
        Ok(Auth0Config {
            auth: raw.grant(&url, env)?,
            page_size: self.vendor_page_size()?,
            groups_from,
            export_timeout: seconds(
                "source.auth0.export_timeout_secs",
                raw.export_timeout_secs.unwrap_or(1800),
                "1800",
            )?,
            limits: self.vendor_limits()?,
            url,
        })
    }
}

impl RawAuth0 {
    /// The client-credentials grant for the Management API of the tenant at `url`.
    fn grant(
        &self,
        url: &Url,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceAuth, ConfigError> {
        let client_id = self
            .client_id
            .as_deref()
            .map(str::trim)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                invalid(
                    "source.auth0.client_id",
                    "is missing: give the client id of a machine-to-machine application in [source.auth0], such as client_id = \"AbC123...\"",
                )
            })?;
        let secret = optional_secret(
            "source.auth0.client_secret",
            self.client_secret.clone(),
            self.client_secret_file.as_deref(),
            ENV_SOURCE_CLIENT_SECRET,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "source.auth0.client_secret",
                format!("is missing: set client_secret_file = \"/run/secrets/auth0_secret\" in [source.auth0] or the environment variable {ENV_SOURCE_CLIENT_SECRET}"),
            )
        })?;
        let at = |path: &str| {
            let mut endpoint = url.clone();
            endpoint.set_path(&format!("{}{path}", url.path().trim_end_matches('/')));
            endpoint
        };
        Ok(SourceAuth::Grant(GrantConfig {
            token_url: at("/oauth/token"),
            client_id: client_id.to_owned(),
            method: GrantMethod::ClientSecret(secret),
            params: vec![("audience", at("/api/v2/").to_string())],
        }))
    }
}
