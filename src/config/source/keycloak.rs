//! `kind = "keycloak"`: a Keycloak realm's admin REST API, read by a confidential
//! client's service account through the OIDC client-credentials grant.

use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;
use url::Url;

use super::super::{
    http_url, invalid, no_plain_http, optional_secret, positive, ConfigError, Secret,
    ENV_SOURCE_CLIENT_SECRET,
};
use super::{ClientAuthMethod, OidcConfig, RawSource, SourceAuth, WebOptions};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawKeycloak {
    realm: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    group_name: Option<String>,
    inherit_parent_groups: Option<bool>,
}

/// `kind = "keycloak"`.
#[derive(Debug, Clone)]
pub struct KeycloakConfig {
    /// The server root, e.g. `https://sso.example.com` (no trailing slash).
    pub url: Url,
    pub realm: String,
    /// `max` of a users or members page.
    pub page_size: NonZeroU32,
    pub group_name: KeycloakGroupName,
    /// Whether a member of a subgroup counts as a member of its ancestors.
    pub inherit_parent_groups: bool,
    /// OIDC client credentials at `{url}/realms/{realm}`.
    pub auth: SourceAuth,
    pub web: WebOptions,
}

/// Which of a Keycloak group's fields becomes its name in the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeycloakGroupName {
    /// The group's own `name` (`platform`).
    Name,
    /// Its `path` from the top (`/engineering/platform`), unique in the realm.
    Path,
}

impl RawSource {
    pub(super) fn keycloak(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<KeycloakConfig, ConfigError> {
        let example = "https://sso.example.com";
        let Some(url) = &self.url else {
            return Err(invalid(
                "source.url",
                format!("is missing: kind = \"keycloak\" reads the server root, such as url = \"{example}\""),
            ));
        };
        let url = http_url("source.url", url, example)?;
        no_plain_http("source.url", &url, "the client secret and token", example)?;
        let Some(keycloak) = &self.keycloak else {
            return Err(invalid(
                "source.keycloak",
                "is missing: kind = \"keycloak\" needs realm and client_id, such as [source.keycloak] realm = \"acme\"",
            ));
        };
        let realm = keycloak.realm()?;
        let issuer = format!("{}/realms/{}", url.as_str().trim_end_matches('/'), realm);
        Ok(KeycloakConfig {
            page_size: positive("source.page_size", self.page_size.unwrap_or(100), "100")?,
            group_name: keycloak.group_name()?,
            inherit_parent_groups: keycloak.inherit_parent_groups.unwrap_or(false),
            auth: SourceAuth::Oidc(keycloak.oidc(issuer, env)?),
            web: self.web_options()?,
            realm,
            url,
        })
    }
}

impl RawKeycloak {
    fn realm(&self) -> Result<String, ConfigError> {
        let realm = self.realm.as_deref().map(str::trim).unwrap_or("");
        if realm.is_empty() || realm.contains(['/', '?', '#', '%']) {
            return Err(invalid(
                "source.keycloak.realm",
                format!("must be the realm's name, such as realm = \"acme\"; got {realm:?}"),
            ));
        }
        Ok(realm.to_owned())
    }

    fn group_name(&self) -> Result<KeycloakGroupName, ConfigError> {
        match self.group_name.as_deref().unwrap_or("name") {
            "name" => Ok(KeycloakGroupName::Name),
            "path" => Ok(KeycloakGroupName::Path),
            other => Err(invalid(
                "source.keycloak.group_name",
                format!(
                    "must be \"name\" or \"path\", such as group_name = \"name\"; got {other:?}"
                ),
            )),
        }
    }

    fn oidc(
        &self,
        issuer: String,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<OidcConfig, ConfigError> {
        let client_id = self.client_id.as_deref().map(str::trim).unwrap_or("");
        if client_id.is_empty() {
            return Err(invalid(
                "source.keycloak.client_id",
                "is missing: give the confidential client whose service account reads the realm, such as client_id = \"idsync\"",
            ));
        }
        let client_secret = optional_secret(
            "source.keycloak.client_secret",
            self.client_secret.clone(),
            self.client_secret_file.as_deref(),
            ENV_SOURCE_CLIENT_SECRET,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "source.keycloak.client_secret",
                format!("is missing: set client_secret_file = \"/run/secrets/keycloak_secret\" or the environment variable {ENV_SOURCE_CLIENT_SECRET}"),
            )
        })?;
        Ok(OidcConfig {
            issuer,
            client_id: client_id.to_owned(),
            client_secret,
            scopes: Vec::new(),
            auth_method: ClientAuthMethod::ClientSecretBasic,
        })
    }
}
