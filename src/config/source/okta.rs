//! `kind = "okta"` and its `[source.okta]` table.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::super::{
    invalid, optional_secret, ApiKey, ConfigError, GrantConfig, GrantMethod, Secret, SigningKey,
    SourceAuth, ENV_SOURCE_API_TOKEN,
};
use super::vendor::{self, DirectoryLimits, VENDOR_PAGE_BYTES};
use super::{AttributeMap, RawSource};

pub(super) const KEYS: &[&str] = &[
    "source.url",
    "source.page_size",
    "source.ca_file",
    "source.timeout_secs",
    "source.max_retry_after_secs",
    "source.incremental",
    "source.okta",
];

/// The scopes of an OAuth 2.0 service app: reading users and groups, nothing more.
const SCOPES: &str = "okta.users.read okta.groups.read";
const GROUP_TYPES: [&str; 3] = ["OKTA_GROUP", "APP_GROUP", "BUILT_IN"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOkta {
    api_token: Option<Secret>,
    api_token_file: Option<PathBuf>,
    client_id: Option<String>,
    private_key_file: Option<PathBuf>,
    key_id: Option<String>,
    group_types: Option<Vec<String>>,
}

/// `kind = "okta"`: an Okta org's Management API.
#[derive(Debug, Clone)]
pub struct OktaConfig {
    /// `https://acme.okta.com`.
    pub url: Url,
    /// At most 200.
    pub page_size: NonZeroU32,
    pub limits: DirectoryLimits,
    pub auth: SourceAuth,
    /// The group types read (`OKTA_GROUP`, `APP_GROUP`, `BUILT_IN`).
    pub group_types: Vec<String>,
}

impl RawSource {
    pub(super) fn okta(
        &self,
        attributes: &AttributeMap,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OktaConfig, ConfigError> {
        vendor::no_attributes("okta", attributes)?;
        let url = self.vendor_url(None, "https://acme.okta.com", "the Okta credential")?;
        let default = RawOkta::default();
        let okta = self.okta.as_ref().unwrap_or(&default);
        Ok(OktaConfig {
            auth: okta.auth(&url, env)?,
            group_types: okta.group_types()?,
            page_size: vendor::page_size_up_to(self, 200)?,
            limits: self.directory_limits(VENDOR_PAGE_BYTES)?,
            url,
        })
    }
}

impl RawOkta {
    /// An API token or a service app's key: exactly one.
    fn auth(
        &self,
        url: &Url,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceAuth, ConfigError> {
        let token = optional_secret(
            "source.okta.api_token",
            self.api_token.clone(),
            self.api_token_file.as_deref(),
            ENV_SOURCE_API_TOKEN,
            env,
        )?;
        let app = self.client_id.is_some() || self.private_key_file.is_some();
        match (token, app) {
            (Some(_), true) => Err(invalid(
                "source.okta.client_id",
                format!("cannot be combined with an API token (source.okta.api_token_file or {ENV_SOURCE_API_TOKEN}): give one credential"),
            )),
            (None, false) => Err(invalid(
                "source.okta",
                format!("needs credentials: api_token_file = \"/run/secrets/okta_token\" (or {ENV_SOURCE_API_TOKEN}), or a service app's client_id and private_key_file"),
            )),
            (Some(key), false) => Ok(SourceAuth::ApiKey(ApiKey {
                header: "authorization",
                scheme: Some("SSWS"),
                key,
            })),
            (None, true) => self.service_app(url),
        }
    }

    /// An OAuth 2.0 service app signing its token requests (`private_key_jwt`).
    fn service_app(&self, url: &Url) -> Result<SourceAuth, ConfigError> {
        let client_id = vendor::required(
            "source.okta.client_id",
            self.client_id.as_deref(),
            "client_id = \"0oa1b2c3d4\"",
        )?;
        let Some(path) = &self.private_key_file else {
            return Err(invalid(
                "source.okta.private_key_file",
                "is missing: the service app signs its token requests with its private key, such as private_key_file = \"/run/secrets/okta_key.pem\"",
            ));
        };
        let mut key = SigningKey::from_pem_file("source.okta.private_key_file", path)?;
        if let Some(kid) = &self.key_id {
            key = key.with_key_id(kid.clone());
        }
        let mut token_url = url.clone();
        token_url.set_path(&format!(
            "{}/oauth2/v1/token",
            url.path().trim_end_matches('/')
        ));
        Ok(SourceAuth::Grant(GrantConfig {
            token_url,
            client_id,
            method: GrantMethod::ClientAssertion(key),
            params: vec![("scope", SCOPES.to_owned())],
        }))
    }

    fn group_types(&self) -> Result<Vec<String>, ConfigError> {
        let Some(types) = &self.group_types else {
            return Ok(vec!["OKTA_GROUP".into(), "APP_GROUP".into()]);
        };
        if types.is_empty() {
            return Err(invalid(
                "source.okta.group_types",
                "is empty; list the group types to read, such as group_types = [\"OKTA_GROUP\", \"APP_GROUP\"]",
            ));
        }
        match types.iter().find(|t| !GROUP_TYPES.contains(&t.as_str())) {
            Some(other) => Err(invalid(
                "source.okta.group_types",
                format!("may list \"OKTA_GROUP\", \"APP_GROUP\" and \"BUILT_IN\"; got {other:?}"),
            )),
            None => Ok(types.clone()),
        }
    }
}
