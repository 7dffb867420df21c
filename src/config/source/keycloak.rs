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
use super::vendor::{DirectoryLimits, VENDOR_PAGE_BYTES};
use super::{ClientAuthMethod, OidcConfig, RawSource, SourceAuth};

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
    pub limits: DirectoryLimits,
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
            limits: self.directory_limits(VENDOR_PAGE_BYTES)?,
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

#[cfg(test)]
mod tests {
    use crate::config::{Config, KeycloakGroupName, SourceAuth, SourceKind};

    const TARGET: &str = "[target]\nurl = \"https://gw.example.com/api\"\napi_key = \"hpk_x\"\n";

    fn parse(source: &str) -> Result<Config, String> {
        let text = format!("[source]\nkind = \"keycloak\"\n{source}\n{TARGET}");
        Config::parse(&text, "test", &|_| None).map_err(|err| err.to_string())
    }

    #[test]
    fn a_realm_and_a_client_give_the_realms_issuer() {
        let config = parse(
            "url = \"https://sso.example.com/\"\n[source.keycloak]\nrealm = \"acme\"\nclient_id = \"idsync\"\nclient_secret = \"s\"\ngroup_name = \"path\"",
        )
        .expect("valid");
        let SourceKind::Keycloak(keycloak) = config.source.kind else {
            panic!("keycloak");
        };
        let SourceAuth::Oidc(oidc) = &keycloak.auth else {
            panic!("oidc");
        };
        assert_eq!(oidc.issuer, "https://sso.example.com/realms/acme");
        assert_eq!(keycloak.group_name, KeycloakGroupName::Path);
        assert!(!keycloak.inherit_parent_groups);
        assert_eq!(keycloak.page_size.get(), 100);
    }

    #[test]
    fn missing_and_foreign_keys_are_named() {
        let table =
            "[source.keycloak]\nrealm = \"acme\"\nclient_id = \"idsync\"\nclient_secret = \"s\"";
        for (source, error) in [
            ("", "source.url is missing"),
            ("url = \"https://sso.example.com\"", "source.keycloak is missing"),
            (
                "url = \"https://sso.example.com\"\n[source.keycloak]\nrealm = \"a/b\"\nclient_id = \"x\"",
                "source.keycloak.realm must be",
            ),
            (
                "url = \"https://sso.example.com\"\n[source.keycloak]\nrealm = \"acme\"\nclient_id = \"x\"",
                "source.keycloak.client_secret is missing",
            ),
            (
                &format!("url = \"https://sso.example.com\"\nparallel_pages = 2\n{table}"),
                "source.parallel_pages is not used by kind = \"keycloak\"",
            ),
            (
                &format!("url = \"https://sso.example.com\"\n{table}\ngroup_name = \"id\""),
                "source.keycloak.group_name must be \"name\" or \"path\"",
            ),
            (
                &format!("url = \"https://sso.example.com\"\n[source.attributes]\npicture = \"x\"\n{table}"),
                "source.attributes.picture is not supported by kind = \"keycloak\"",
            ),
        ] {
            let err = parse(source).expect_err(source);
            assert!(err.starts_with(error), "{source}: {err}");
        }
    }
}
