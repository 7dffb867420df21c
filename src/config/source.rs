//! The `[source]` table: which directory to read, and what that kind needs.

mod google;
mod keycloak;

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

mod auth0;
mod entra;
mod jumpcloud;
mod okta;
mod vendor;

pub use auth0::{Auth0Config, Auth0Groups};
pub use entra::EntraConfig;
pub use jumpcloud::JumpCloudConfig;
pub use okta::OktaConfig;
pub use vendor::DirectoryLimits;
use vendor::VENDOR_KEYS;

use super::push::PushConfig;
pub use google::{GoogleConfig, GoogleGroupName};
pub use keycloak::{KeycloakConfig, KeycloakGroupName};

use super::{
    count, http_url, invalid, no_plain_http, optional_secret, positive, ConfigError, Secret,
    SourceAuth, ENV_SOURCE_BEARER_TOKEN, ENV_SOURCE_CLIENT_SECRET,
};

/// The `[source]` keys each kind reads; any other key given is refused.
const SCIM_KEYS: &[&str] = &[
    "source.url",
    "source.page_size",
    "source.subject_attribute",
    "source.bearer_token",
    "source.bearer_token_file",
    "source.oidc",
    "source.ca_file",
    "source.parallel_pages",
    "source.timeout_secs",
    "source.max_retry_after_secs",
    "source.max_directory_users",
    "source.max_page_bytes",
    "source.max_resource_bytes",
];
const GOOGLE_KEYS: &[&str] = &[
    "source.url",
    "source.page_size",
    "source.google",
    "source.ca_file",
    "source.timeout_secs",
    "source.max_retry_after_secs",
];
const KEYCLOAK_KEYS: &[&str] = &[
    "source.url",
    "source.page_size",
    "source.keycloak",
    "source.ca_file",
    "source.timeout_secs",
    "source.max_retry_after_secs",
];
/// `kind = "push"` reads nothing itself: what it needs is in `[push]`.
const PUSH_KEYS: &[&str] = &[];
const FILE_KEYS: &[&str] = &[
    "source.path",
    "source.format",
    "source.groups_path",
    "source.max_resource_bytes",
];

const JUMPCLOUD_KEYS: &[&str] = &concat_keys(&VENDOR_KEYS, "source.jumpcloud");
const AUTH0_KEYS: &[&str] = &concat_keys(&VENDOR_KEYS, "source.auth0");

/// A vendor kind's keys: the shared ones and its own table.
const fn concat_keys(shared: &[&'static str; 8], table: &'static str) -> [&'static str; 9] {
    let mut keys = [table; 9];
    let mut i = 0;
    while i < shared.len() {
        keys[i] = shared[i];
        i += 1;
    }
    keys
}

/// The `[push]` table `kind = "push"` needs; it maps no attributes.
fn push_config(
    attributes: &AttributeMap,
    push: Option<PushConfig>,
) -> Result<PushConfig, ConfigError> {
    vendor::no_attributes("push", attributes)?;
    push.ok_or_else(|| {
        invalid(
            "push",
            "is missing: kind = \"push\" serves SCIM 2.0 and needs a [push] table, such as [push] listen = \"0.0.0.0:8443\" and bearer_token_file = \"/run/secrets/idsync_scim_token\"",
        )
    })
}

/// Every `source.kind`, as the error for an unknown one lists them.
const KINDS: &str = "\"scim\", \"file\", \"ldap\", \"okta\", \"entra\", \"google\", \"keycloak\", \"jumpcloud\", \"auth0\" or \"push\"";

/// The keys `kind` reads, or why there is no such kind.
fn keys_of(kind: &str) -> Result<&'static [&'static str], ConfigError> {
    match kind {
        "scim" => Ok(SCIM_KEYS),
        "file" => Ok(FILE_KEYS),
        "jumpcloud" => Ok(JUMPCLOUD_KEYS),
        "auth0" => Ok(AUTH0_KEYS),
        "ldap" => Ok(super::ldap::LDAP_KEYS),
        "push" => Ok(PUSH_KEYS),
        "google" => Ok(GOOGLE_KEYS),
        "keycloak" => Ok(KEYCLOAK_KEYS),
        "okta" => Ok(okta::KEYS),
        "entra" => Ok(entra::KEYS),
        other => Err(invalid(
            "source.kind",
            format!("must be one of {KINDS}, such as kind = \"scim\"; got {other:?}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    kind: String,
    url: Option<String>,
    path: Option<PathBuf>,
    format: Option<String>,
    groups_path: Option<PathBuf>,
    page_size: Option<i64>,
    subject_attribute: Option<String>,
    bearer_token: Option<Secret>,
    bearer_token_file: Option<PathBuf>,
    oidc: Option<RawOidc>,
    ca_file: Option<PathBuf>,
    parallel_pages: Option<i64>,
    timeout_secs: Option<i64>,
    max_retry_after_secs: Option<i64>,
    max_directory_users: Option<i64>,
    max_page_bytes: Option<i64>,
    max_resource_bytes: Option<i64>,
    incremental: Option<bool>,
    /// `[source.ldap]`, for `kind = "ldap"`.
    ldap: Option<super::ldap::RawLdap>,
    okta: Option<okta::RawOkta>,
    entra: Option<entra::RawEntra>,
    #[serde(default)]
    attributes: RawAttributes,
    google: Option<google::RawGoogle>,
    keycloak: Option<keycloak::RawKeycloak>,
    jumpcloud: Option<jumpcloud::RawJumpCloud>,
    auth0: Option<auth0::RawAuth0>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttributes {
    slack_id: Option<String>,
    picture: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    issuer: String,
    client_id: String,
    client_secret: Option<Secret>,
    client_secret_file: Option<PathBuf>,
    #[serde(default)]
    scopes: Vec<String>,
    auth_method: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// Where `slack_id` and `picture` come from, when mapped.
    pub attributes: AttributeMap,
    /// Whether a source that can read only what changed does so between full reads.
    pub incremental: Incremental,
}

/// `source.incremental`, with `sync.full_read_every_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incremental {
    /// Every read is a full read.
    Off,
    /// Changes only, with a full read at least this often (and whenever the
    /// directory refuses the position it is given).
    On { full_read_every: Duration },
}

/// The directory to read, with what only that kind of directory needs.
#[derive(Debug, Clone)]
// One per process, read once: boxing the larger kind would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum SourceKind {
    Scim(ScimConfig),
    File(FileConfig),
    Google(GoogleConfig),
    Keycloak(KeycloakConfig),
    JumpCloud(JumpCloudConfig),
    Auth0(Auth0Config),
    Ldap(super::ldap::LdapConfig),
    /// What identity providers push to idsync's SCIM endpoint (`[push]`).
    Push(PushConfig),
    Okta(OktaConfig),
    Entra(EntraConfig),
}

/// `kind = "file"`: an export of users (and optionally of groups) on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    pub users: ExportFile,
    pub groups: Option<ExportFile>,
    /// The longest line read; a longer one fails the read.
    pub max_resource_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportFile {
    pub path: PathBuf,
    pub format: FileFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    /// One JSON object a line.
    JsonLines,
    /// RFC 4180, with a header row naming the columns.
    Csv,
}

/// `kind = "scim"`: a SCIM 2.0 service provider.
#[derive(Debug, Clone)]
pub struct ScimConfig {
    /// SCIM base URL, e.g. `https://idp.example.com/scim/v2` (no trailing slash).
    pub url: Url,
    pub page_size: NonZeroU32,
    pub subject_attribute: SubjectAttribute,
    pub auth: SourceAuth,
    pub ca_pem: Option<Vec<u8>>,
    /// Pages fetched at once once `totalResults` is known.
    pub parallel_pages: NonZeroUsize,
    /// Timeout of one directory request (`source.timeout_secs`); a page of 1,000
    /// users is a few hundred KiB.
    pub timeout: Duration,
    /// The longest `Retry-After` honoured; a longer one aborts the read.
    pub max_retry_after: Duration,
    /// A listing announcing more (`totalResults`) aborts the read.
    pub max_directory_users: usize,
    /// The largest page body read; a larger one aborts the read.
    pub max_page_bytes: usize,
    /// The largest resource (a user's or a group's JSON) read; a larger one aborts
    /// the read.
    pub max_resource_bytes: usize,
}

/// Directory attributes mapped onto gateway fields idsync does not own by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeMap {
    pub slack_id: Option<AttributePath>,
    pub picture: Option<AttributePath>,
}

impl AttributeMap {
    pub fn is_empty(&self) -> bool {
        self.slack_id.is_none() && self.picture.is_none()
    }
}

/// A SCIM attribute path: `title`, `name.givenName`, `photos` (multi-valued: the
/// primary or first `value`), or an extension attribute such as
/// `urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttributePath {
    /// The extension schema URN holding the attribute, if any.
    pub schema: Option<String>,
    /// Attribute names from the top (or from the extension object) down.
    pub segments: Vec<String>,
}

impl AttributePath {
    pub(super) fn parse(key: &'static str, text: &str) -> Result<Self, ConfigError> {
        let bad = || {
            invalid(
                key,
                format!("must be a SCIM attribute path such as \"title\", \"photos\" or \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber\"; got {text:?}"),
            )
        };
        let text = text.trim();
        let (schema, path) = match text.rsplit_once(':') {
            Some((schema, path)) if schema.to_ascii_lowercase().starts_with("urn:") => {
                (Some(schema.to_owned()), path)
            }
            Some(_) => return Err(bad()),
            None => (None, text),
        };
        let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
        let is_name = |s: &String| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$')
        };
        if !segments.iter().all(is_name) {
            return Err(bad());
        }
        Ok(Self { schema, segments })
    }
}

/// Which SCIM attribute is the user's immutable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectAttribute {
    Id,
    ExternalId,
}

#[derive(Debug, Clone)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub auth_method: ClientAuthMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
}

impl RawSource {
    pub(super) fn validate(
        self,
        full_read_every: Duration,
        env: &dyn Fn(&str) -> Option<String>,
        push: Option<PushConfig>,
    ) -> Result<SourceConfig, ConfigError> {
        if push.is_some() && self.kind != "push" {
            return Err(invalid(
                "push",
                "is used only with [source] kind = \"push\"; remove the [push] table or set kind = \"push\"",
            ));
        }
        let attributes = self.attributes.validate()?;
        self.refuse_unused(keys_of(&self.kind)?)?;
        let incremental = match self.incremental {
            Some(true) => Incremental::On { full_read_every },
            Some(false) | None => Incremental::Off,
        };
        let kind = match self.kind.as_str() {
            "file" => SourceKind::File(self.file(&attributes)?),
            "google" | "keycloak" | "jumpcloud" | "auth0" => {
                vendor::no_attributes(&self.kind, &attributes)?;
                match self.kind.as_str() {
                    "google" => SourceKind::Google(self.google(env)?),
                    "keycloak" => SourceKind::Keycloak(self.keycloak(env)?),
                    "jumpcloud" => SourceKind::JumpCloud(self.jumpcloud(env)?),
                    _ => SourceKind::Auth0(self.auth0(env)?),
                }
            }
            "ldap" => SourceKind::Ldap(self.ldap(env)?),
            "push" => SourceKind::Push(push_config(&attributes, push)?),
            "okta" => SourceKind::Okta(self.okta(&attributes, env)?),
            "entra" => SourceKind::Entra(self.entra(&attributes, env)?),
            _ => SourceKind::Scim(self.scim(env)?),
        };
        Ok(SourceConfig {
            kind,
            attributes,
            incremental,
        })
    }

    /// The optional keys given, by their full names.
    fn given(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("source.url", self.url.is_some()),
            ("source.path", self.path.is_some()),
            ("source.format", self.format.is_some()),
            ("source.groups_path", self.groups_path.is_some()),
            ("source.page_size", self.page_size.is_some()),
            ("source.subject_attribute", self.subject_attribute.is_some()),
            ("source.bearer_token", self.bearer_token.is_some()),
            ("source.bearer_token_file", self.bearer_token_file.is_some()),
            ("source.oidc", self.oidc.is_some()),
            ("source.ca_file", self.ca_file.is_some()),
            ("source.parallel_pages", self.parallel_pages.is_some()),
            ("source.timeout_secs", self.timeout_secs.is_some()),
            (
                "source.max_retry_after_secs",
                self.max_retry_after_secs.is_some(),
            ),
            (
                "source.max_directory_users",
                self.max_directory_users.is_some(),
            ),
            ("source.max_page_bytes", self.max_page_bytes.is_some()),
            (
                "source.max_resource_bytes",
                self.max_resource_bytes.is_some(),
            ),
            ("source.incremental", self.incremental.is_some()),
            ("source.google", self.google.is_some()),
            ("source.keycloak", self.keycloak.is_some()),
            ("source.jumpcloud", self.jumpcloud.is_some()),
            ("source.auth0", self.auth0.is_some()),
            ("source.ldap", self.ldap.is_some()),
            ("source.okta", self.okta.is_some()),
            ("source.entra", self.entra.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
    }

    /// Keys of one kind given to another are refused, not ignored: the operator
    /// meant something by them.
    fn refuse_unused(&self, uses: &[&str]) -> Result<(), ConfigError> {
        match self.given().find(|key| !uses.contains(key)) {
            Some(key) => Err(invalid(
                key,
                format!("is not used by kind = {:?}; remove it", self.kind),
            )),
            None => Ok(()),
        }
    }

    fn file(&self, attributes: &AttributeMap) -> Result<FileConfig, ConfigError> {
        for (key, path) in [
            ("source.attributes.slack_id", &attributes.slack_id),
            ("source.attributes.picture", &attributes.picture),
        ] {
            if path
                .as_ref()
                .is_some_and(|p| p.schema.is_some() || p.segments.len() != 1)
            {
                return Err(invalid(
                    key,
                    "must name a column (a JSON key) of the export for kind = \"file\", such as slack_id = \"slack_id\"",
                ));
            }
        }
        let Some(path) = &self.path else {
            return Err(invalid(
                "source.path",
                "is missing: kind = \"file\" reads the users from a file, such as path = \"/var/lib/idsync/users.jsonl\"",
            ));
        };
        let format = file_format("source.format", self.format.as_deref(), path)?;
        let groups = match &self.groups_path {
            Some(path) => Some(ExportFile {
                format: file_format("source.format", self.format.as_deref(), path)?,
                path: path.clone(),
            }),
            None => None,
        };
        Ok(FileConfig {
            users: ExportFile {
                path: path.clone(),
                format,
            },
            groups,
            max_resource_bytes: self.max_resource_bytes()?,
        })
    }

    /// `source.max_resource_bytes`, for either kind.
    fn max_resource_bytes(&self) -> Result<usize, ConfigError> {
        let bytes = self.max_resource_bytes.unwrap_or(64 * 1024 * 1024);
        count("source.max_resource_bytes", bytes, "67108864")
    }

    fn ldap(
        self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<super::ldap::LdapConfig, ConfigError> {
        let common = super::ldap::LdapCommon {
            url: self.url.as_deref(),
            page_size: self.page_size,
            subject_attribute: self.subject_attribute.as_deref(),
            ca_file: self.ca_file.as_deref(),
            timeout_secs: self.timeout_secs,
            incremental: self.incremental == Some(true),
        };
        self.ldap.unwrap_or_default().validate(&common, env)
    }

    fn scim(self, env: &dyn Fn(&str) -> Option<String>) -> Result<ScimConfig, ConfigError> {
        let example = "https://idp.example.com/scim/v2";
        let Some(url) = &self.url else {
            return Err(invalid(
                "source.url",
                format!("is missing: kind = \"scim\" reads a SCIM base URL, such as url = \"{example}\""),
            ));
        };
        let url = http_url("source.url", url, example)?;
        let secret = match (&self.oidc, &self.bearer_token_file) {
            (Some(_), _) => "the directory's access token",
            (None, Some(_)) => "source.bearer_token_file",
            (None, None) => "source.bearer_token",
        };
        no_plain_http("source.url", &url, secret, example)?;
        let limits = self.directory_limits(256 * 1024 * 1024)?;
        let page_size = positive("source.page_size", self.page_size.unwrap_or(100), "100")?;
        let subject_attribute = match self.subject_attribute.as_deref().unwrap_or("id") {
            "id" => SubjectAttribute::Id,
            "externalId" => SubjectAttribute::ExternalId,
            other => {
                return Err(invalid(
                    "source.subject_attribute",
                    format!("must be \"id\" or \"externalId\", such as subject_attribute = \"id\"; got {other:?}"),
                ))
            }
        };
        let auth = scim_auth(
            self.bearer_token,
            self.bearer_token_file.as_deref(),
            self.oidc,
            env,
        )?;
        Ok(ScimConfig {
            url,
            page_size,
            subject_attribute,
            auth,
            parallel_pages: NonZeroUsize::try_from(positive(
                "source.parallel_pages",
                self.parallel_pages.unwrap_or(1),
                "4",
            )?)
            .map_err(|_| invalid("source.parallel_pages", "is too large for this platform"))?,
            ca_pem: limits.ca_pem,
            timeout: limits.timeout,
            max_retry_after: limits.max_retry_after,
            max_directory_users: limits.max_directory_users,
            max_page_bytes: limits.max_page_bytes,
            max_resource_bytes: limits.max_resource_bytes,
        })
    }
}

/// A static bearer token or an OIDC client: exactly one.
fn scim_auth(
    bearer_token: Option<Secret>,
    bearer_token_file: Option<&Path>,
    oidc: Option<RawOidc>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SourceAuth, ConfigError> {
    let bearer = optional_secret(
        "source.bearer_token",
        bearer_token,
        bearer_token_file,
        ENV_SOURCE_BEARER_TOKEN,
        env,
    )?;
    match (bearer, oidc) {
        (Some(_), Some(_)) => Err(invalid(
            "source.oidc",
            "cannot be combined with a static bearer token: give either [source.oidc] or bearer_token_file = \"/run/secrets/scim_token\"",
        )),
        (None, None) => Err(invalid(
            "source",
            format!("needs credentials: a [source.oidc] table (issuer, client_id, client_secret_file), or bearer_token_file = \"/run/secrets/scim_token\" or the environment variable {ENV_SOURCE_BEARER_TOKEN}"),
        )),
        (Some(token), None) => Ok(SourceAuth::Bearer(token)),
        (None, Some(oidc)) => Ok(SourceAuth::Oidc(oidc.validate(env)?)),
    }
}

/// The format given, else the one the file's extension names.
fn file_format(
    key: &'static str,
    given: Option<&str>,
    path: &Path,
) -> Result<FileFormat, ConfigError> {
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match given.unwrap_or(extension) {
        "jsonl" | "ndjson" => Ok(FileFormat::JsonLines),
        "csv" => Ok(FileFormat::Csv),
        other if given.is_some() => Err(invalid(
            key,
            format!("must be \"jsonl\" or \"csv\", such as format = \"jsonl\"; got {other:?}"),
        )),
        _ => Err(invalid(
            key,
            format!(
                "is needed: {} does not end in .jsonl, .ndjson or .csv; set format = \"jsonl\" or \"csv\"",
                path.display()
            ),
        )),
    }
}

impl RawAttributes {
    fn validate(&self) -> Result<AttributeMap, ConfigError> {
        let parse = |key, path: &Option<String>| {
            path.as_deref()
                .map(|p| AttributePath::parse(key, p))
                .transpose()
        };
        Ok(AttributeMap {
            slack_id: parse("source.attributes.slack_id", &self.slack_id)?,
            picture: parse("source.attributes.picture", &self.picture)?,
        })
    }
}

impl RawOidc {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<OidcConfig, ConfigError> {
        let issuer = http_url(
            "source.oidc.issuer",
            &self.issuer,
            "https://idp.example.com",
        )?;
        no_plain_http(
            "source.oidc.issuer",
            &issuer,
            "source.oidc.client_secret",
            "https://idp.example.com",
        )?;
        if self.client_id.trim().is_empty() {
            return Err(invalid(
                "source.oidc.client_id",
                "must not be empty, such as client_id = \"idsync\"",
            ));
        }
        let client_secret = optional_secret(
            "source.oidc.client_secret",
            self.client_secret,
            self.client_secret_file.as_deref(),
            ENV_SOURCE_CLIENT_SECRET,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "source.oidc.client_secret",
                format!("is missing: set client_secret_file = \"/run/secrets/idp_client_secret\" or the environment variable {ENV_SOURCE_CLIENT_SECRET}"),
            )
        })?;
        let auth_method = match self.auth_method.as_deref().unwrap_or("client_secret_basic") {
            "client_secret_basic" => ClientAuthMethod::ClientSecretBasic,
            "client_secret_post" => ClientAuthMethod::ClientSecretPost,
            other => {
                return Err(invalid(
                    "source.oidc.auth_method",
                    format!("must be \"client_secret_basic\" or \"client_secret_post\", such as auth_method = \"client_secret_basic\"; got {other:?}"),
                ))
            }
        };
        Ok(OidcConfig {
            // Kept as written: discovery compares it with the provider's `issuer` exactly.
            issuer: issuer.as_str().trim_end_matches('/').to_owned(),
            client_id: self.client_id,
            client_secret,
            scopes: self.scopes,
            auth_method,
        })
    }
}
