//! `kind = "entra"` (Microsoft Entra ID, read through Microsoft Graph) and its
//! `[source.entra]` table.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use url::Url;

use super::super::{
    http_url, invalid, no_plain_http, optional_secret, ConfigError, GrantConfig, GrantMethod,
    Secret, SigningKey, SourceAuth, ENV_SOURCE_CLIENT_SECRET,
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
    "source.entra",
];

/// Application permissions granted to the app registration, as a client
/// credentials token asks for them.
const SCOPE: &str = "https://graph.microsoft.com/.default";
const CERT_KEY: &str = "source.entra.client_certificate_file";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntra {
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    client_certificate_file: Option<PathBuf>,
    authority: Option<String>,
}

/// `kind = "entra"`: a Microsoft Entra ID tenant through Microsoft Graph.
#[derive(Debug, Clone)]
pub struct EntraConfig {
    /// `https://graph.microsoft.com/v1.0` unless a national cloud or a test says
    /// otherwise.
    pub url: Url,
    /// At most 999.
    pub page_size: NonZeroU32,
    pub limits: DirectoryLimits,
    pub auth: SourceAuth,
}

impl RawSource {
    pub(super) fn entra(
        &self,
        attributes: &AttributeMap,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<EntraConfig, ConfigError> {
        vendor::no_attributes("entra", attributes)?;
        let graph = "https://graph.microsoft.com/v1.0";
        let url = self.vendor_url(Some(graph), graph, "the Graph access token")?;
        let default = RawEntra::default();
        let entra = self.entra.as_ref().unwrap_or(&default);
        Ok(EntraConfig {
            auth: entra.auth(env)?,
            page_size: vendor::page_size_up_to(self, 999)?,
            limits: self.directory_limits(VENDOR_PAGE_BYTES)?,
            url,
        })
    }
}

impl RawEntra {
    fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<SourceAuth, ConfigError> {
        let tenant = vendor::required(
            "source.entra.tenant_id",
            self.tenant_id.as_deref(),
            "tenant_id = \"00000000-0000-0000-0000-000000000000\"",
        )?;
        if tenant.contains(['/', '?', '#']) {
            return Err(invalid(
                "source.entra.tenant_id",
                "must be the tenant's id or domain, such as tenant_id = \"00000000-0000-0000-0000-000000000000\"",
            ));
        }
        let client_id = vendor::required(
            "source.entra.client_id",
            self.client_id.as_deref(),
            "client_id = \"11111111-1111-1111-1111-111111111111\" (the app registration's Application ID)",
        )?;
        let secret = optional_secret(
            "source.entra.client_secret",
            self.client_secret.clone(),
            self.client_secret_file.as_deref(),
            ENV_SOURCE_CLIENT_SECRET,
            env,
        )?;
        let method = match (secret, &self.client_certificate_file) {
            (Some(_), Some(_)) => return Err(invalid(
                CERT_KEY,
                format!("cannot be combined with a client secret (source.entra.client_secret_file or {ENV_SOURCE_CLIENT_SECRET}): give one credential"),
            )),
            (None, None) => return Err(invalid(
                "source.entra",
                format!("needs credentials: client_secret_file = \"/run/secrets/entra_secret\" (or {ENV_SOURCE_CLIENT_SECRET}), or client_certificate_file = \"/run/secrets/idsync-entra.pem\""),
            )),
            (Some(secret), None) => GrantMethod::ClientSecret(secret),
            (None, Some(path)) => GrantMethod::ClientAssertion(certificate_key(path)?),
        };
        Ok(SourceAuth::Grant(GrantConfig {
            token_url: self.token_url(&tenant)?,
            client_id,
            method,
            params: vec![("scope", SCOPE.to_owned())],
        }))
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    fn token_url(&self, tenant: &str) -> Result<Url, ConfigError> {
        let example = "https://login.microsoftonline.com";
        let authority = self.authority.as_deref().unwrap_or(example);
        let mut url = http_url("source.entra.authority", authority, example)?;
        no_plain_http(
            "source.entra.authority",
            &url,
            "the client credential",
            example,
        )?;
        let path = format!(
            "{}/{tenant}/oauth2/v2.0/token",
            url.path().trim_end_matches('/')
        );
        url.set_path(&path);
        Ok(url)
    }
}

/// The private key of a PEM file holding it and its certificate, with the
/// certificate's SHA-1 thumbprint as `x5t`, which is how Entra ID finds the
/// certificate uploaded to the app registration.
fn certificate_key(path: &Path) -> Result<SigningKey, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        invalid(
            CERT_KEY,
            format!("file {} cannot be read: {err}", path.display()),
        )
    })?;
    let blocks = pem::parse_many(text.as_bytes()).map_err(|_| {
        invalid(
            CERT_KEY,
            "is not PEM: it must hold the certificate and its private key",
        )
    })?;
    let certificate = blocks.iter().find(|b| b.tag() == "CERTIFICATE");
    let key = blocks
        .iter()
        .find(|b| matches!(b.tag(), "PRIVATE KEY" | "RSA PRIVATE KEY"));
    let (Some(certificate), Some(key)) = (certificate, key) else {
        return Err(invalid(
            CERT_KEY,
            "must hold both a \"-----BEGIN CERTIFICATE-----\" block and its \"-----BEGIN PRIVATE KEY-----\"",
        ));
    };
    let thumbprint = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate.contents(),
    );
    let x5t = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(thumbprint.as_ref());
    let key = SigningKey::from_pem(CERT_KEY, &Secret::new(pem::encode(key)))?;
    Ok(key.with_x5t(x5t))
}
