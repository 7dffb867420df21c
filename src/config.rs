//! Configuration in two stages: the TOML file as written ([`RawConfig`], unknown keys
//! refused) and the checked [`Config`] the rest of idsync runs on.
//!
//! [`Config::parse`] does no network I/O; it reads only the config file, secret files
//! and CA files. Every error names the key and shows a valid example, and invalid
//! values are fatal: a daemon that "warns and uses a default" syncs the wrong thing.

use std::collections::BTreeMap;
use std::fmt;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

mod credentials;
mod ldap;
mod push;
mod source;

pub use credentials::{ApiKey, GrantConfig, GrantMethod, SigningKey, SourceAuth};
pub use ldap::{LdapBind, LdapConfig, LdapPreset, MemberAttribute, ENV_SOURCE_BIND_PASSWORD};
use push::RawPush;
pub use push::{PushConfig, TlsFiles, ENV_PUSH_BEARER_TOKEN};
use source::RawSource;
pub use source::{
    AttributeMap, AttributePath, ClientAuthMethod, ExportFile, FileConfig, FileFormat,
    GoogleConfig, GoogleGroupName, Incremental, KeycloakConfig, KeycloakGroupName, OidcConfig,
    ScimConfig, SourceConfig, SourceKind, SubjectAttribute,
};
pub use source::{
    Auth0Config, Auth0Groups, DirectoryLimits, EntraConfig, JumpCloudConfig, OktaConfig,
};

/// Environment variables that may carry secrets instead of the file.
pub const ENV_SOURCE_CLIENT_SECRET: &str = "IDSYNC_SOURCE_CLIENT_SECRET";
pub const ENV_SOURCE_BEARER_TOKEN: &str = "IDSYNC_SOURCE_BEARER_TOKEN";
pub const ENV_SOURCE_API_TOKEN: &str = "IDSYNC_SOURCE_API_TOKEN";
pub const ENV_SOURCE_API_KEY: &str = "IDSYNC_SOURCE_API_KEY";
pub const ENV_TARGET_API_KEY: &str = "IDSYNC_TARGET_API_KEY";

/// Why a configuration cannot be used. The caller prints it and exits 2 before
/// touching anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file itself could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown or mistyped key.
    #[error("{location}: {message}")]
    Syntax { location: String, message: String },
    /// A key has a value idsync cannot use.
    #[error("{key} {message}")]
    Invalid { key: &'static str, message: String },
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// A credential. It never prints: `Debug` and `Display` show `**redacted**`, so a
/// config or error that is logged cannot leak it. Its memory is zeroed on drop.
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let mut value = value.into();
        // Copied at its exact size, then the whole original buffer is wiped.
        let secret = Self(SecretString::from(value.as_str()));
        value.zeroize();
        secret
    }

    /// The only way to the value; grep for it to audit where secrets go.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**redacted**")
    }
}

// ---------------------------------------------------------------- raw (as written)

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    source: RawSource,
    target: RawTarget,
    #[serde(default)]
    sync: RawSync,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    groups: RawGroups,
    #[serde(default)]
    service: RawService,
    push: Option<RawPush>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    url: String,
    api_key: Option<Secret>,
    api_key_file: Option<PathBuf>,
    api_key_header: Option<String>,
    rate_limit_per_second: Option<i64>,
    burst: Option<i64>,
    max_in_flight: Option<i64>,
    max_attempts: Option<i64>,
    timeout_secs: Option<i64>,
    ca_file: Option<PathBuf>,
    max_retry_after_secs: Option<i64>,
    max_error_body_bytes: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSync {
    schedule: Option<String>,
    run_on_start: Option<bool>,
    update_existing: Option<bool>,
    deprovision: Option<String>,
    max_deactivations: Option<toml::Value>,
    full_read_every_secs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroups {
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    #[serde(default)]
    rename: BTreeMap<String, String>,
    prefix: Option<String>,
    admin_group: Option<String>,
    allow_admin_group: Option<bool>,
    delete_removed: Option<bool>,
    mirror: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    listen: Option<String>,
    ready_max_age_secs: Option<i64>,
    unready_after_failed_runs: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    path: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

// ---------------------------------------------------------------- checked

#[derive(Debug, Clone)]
pub struct Config {
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub sync: SyncConfig,
    pub cache: CacheConfig,
    pub groups: GroupPolicy,
    pub service: ServiceConfig,
}

#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// The gateway's API base, e.g. `https://use.hoop.dev/api` (no trailing slash).
    pub url: Url,
    pub api_key: Secret,
    pub api_key_header: ApiKeyHeader,
    pub rate_limit_per_second: NonZeroU32,
    pub burst: NonZeroU32,
    pub max_in_flight: NonZeroUsize,
    pub max_attempts: NonZeroU32,
    pub timeout: Duration,
    pub ca_pem: Option<Vec<u8>>,
    /// The longest `Retry-After` honoured; a longer one fails the request.
    pub max_retry_after: Duration,
    /// The most of an error answer's body read, for its message.
    pub max_error_body_bytes: usize,
}

/// How the gateway API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKeyHeader {
    /// `Authorization: Bearer <key>`: managed `hpk_` keys and admin access tokens.
    Authorization,
    /// `Api-Key: <key>`: the legacy org key (refused on multi-tenant gateways).
    ApiKey,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub schedule: cron::Schedule,
    pub run_on_start: bool,
    /// Send changed names and groups of managed users to the gateway.
    pub update_existing: bool,
    pub deprovision: Deprovision,
    pub max_deactivations: DeactivationLimit,
    /// With `source.incremental`, a full read at least this often.
    pub full_read_every: Duration,
}

/// What happens to managed users who left the directory or became inactive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deprovision {
    /// Nothing: they stay as they are in the gateway.
    Off,
    /// `status: inactive` via PUT (never DELETE, which silently does nothing after
    /// a user's first login).
    Deactivate,
}

/// The most deactivations one run may make before it stops and asks an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeactivationLimit {
    Count(u32),
    /// Percent of the users idsync manages.
    Percent(u32),
}

impl DeactivationLimit {
    /// The limit as a number of users, given how many idsync manages.
    pub fn allowed(self, managed: usize) -> usize {
        match self {
            Self::Count(count) => count as usize,
            Self::Percent(percent) => managed * percent as usize / 100,
        }
    }
}

impl fmt::Display for DeactivationLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count(count) => write!(f, "{count}"),
            Self::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

/// Which directory groups reach the gateway, and under which names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPolicy {
    /// Globs (`*`, `?`) on the IdP's name; empty means every group.
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// IdP name → gateway name, applied before the prefix.
    pub rename: BTreeMap<String, String>,
    pub prefix: String,
    /// The gateway group that grants full control.
    pub admin_group: String,
    /// Whether an IdP group may map to `admin_group` at all.
    pub allow_admin_group: bool,
    /// Whether a gateway group idsync created is deleted once the directory no
    /// longer has it (with `mirror`).
    pub delete_removed: bool,
    /// Whether the directory's groups are created in the gateway as groups, members
    /// or not (sources that list their groups; on by default for push).
    pub mirror: bool,
}

impl Default for GroupPolicy {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
            rename: BTreeMap::new(),
            prefix: String::new(),
            admin_group: "admin".into(),
            allow_admin_group: false,
            delete_removed: false,
            mirror: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Where `/healthz`, `/readyz` and `/metrics` listen; none when unset.
    pub listen: Option<std::net::SocketAddr>,
    /// `/readyz` fails when the last successful run is older than this.
    pub ready_max_age: Duration,
    /// `/readyz` fails after this many failed runs in a row.
    pub unready_after_failed_runs: NonZeroU32,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub path: PathBuf,
}

/// What commands that touch neither the directory nor the gateway (`status`,
/// `cache reset`) need: the file checked as usual, but no secret read, so they
/// work outside the service that holds the credentials.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub schedule: cron::Schedule,
    pub cache: CacheConfig,
}

impl LocalConfig {
    /// Reads the file at `path` for its local keys; no secret is resolved.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_config(path)?;
        let raw: RawConfig = toml::from_str(&text)
            .map_err(|err| syntax_error(&text, &path.display().to_string(), &err))?;
        Ok(Self {
            schedule: raw.sync.validate()?.schedule,
            cache: raw.cache.validate(),
        })
    }
}

impl RawCache {
    fn validate(self) -> CacheConfig {
        CacheConfig {
            path: self
                .path
                .unwrap_or_else(|| PathBuf::from("/var/lib/idsync")),
        }
    }
}

fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Config {
    /// Reads and checks the file at `path`, taking secrets from the process environment.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_config(path)?;
        let config = Self::parse(&text, &path.display().to_string(), &|name| {
            std::env::var(name).ok()
        })?;
        warn_of_readable_secrets(path, &text);
        Ok(config)
    }

    /// What is valid but probably wrong; `check-config` shows these.
    pub fn warnings(&self) -> Vec<String> {
        let mut found = Vec::new();
        if !self.target.url.path().ends_with("/api") {
            found.push(format!(
                "target.url {} does not end in /api, where the gateway serves its API (such as https://use.hoop.dev/api)",
                self.target.url
            ));
        }
        if self.target.api_key_header == ApiKeyHeader::Authorization
            && !self.target.api_key.expose().starts_with("hpk_")
        {
            found.push(
                "target.api_key does not start with hpk_: with api_key_header = \"authorization\" the gateway expects an hpk_ API key (or an admin access token)".to_owned(),
            );
        }
        found
    }

    /// Checks `text`; `origin` names the file in errors and `env` looks up variables.
    pub fn parse(
        text: &str,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| syntax_error(text, origin, &err))?;
        raw.validate(env)
    }
}

/// Secrets written in the file itself, by key.
fn inline_secrets(text: &str) -> Vec<&'static str> {
    let Ok(value) = text.parse::<toml::Table>() else {
        return Vec::new();
    };
    let given = |path: &[&str]| {
        let mut at = Some(&value);
        for part in &path[..path.len() - 1] {
            at = at
                .and_then(|t| t.get(*part))
                .and_then(toml::Value::as_table);
        }
        at.is_some_and(|t| t.contains_key(path[path.len() - 1]))
    };
    [
        ("source.bearer_token", &["source", "bearer_token"][..]),
        (
            "source.oidc.client_secret",
            &["source", "oidc", "client_secret"],
        ),
        ("target.api_key", &["target", "api_key"]),
        (
            "source.jumpcloud.api_key",
            &["source", "jumpcloud", "api_key"],
        ),
        (
            "source.auth0.client_secret",
            &["source", "auth0", "client_secret"],
        ),
        (
            "source.ldap.bind_password",
            &["source", "ldap", "bind_password"],
        ),
    ]
    .into_iter()
    .filter(|(_, path)| given(path))
    .map(|(key, _)| key)
    .collect()
}

/// Logs a warning for each secret written in a config file that other users of
/// the machine may read.
fn warn_of_readable_secrets(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(mode) = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777) else {
        return;
    };
    if mode & 0o004 == 0 {
        return;
    }
    for key in inline_secrets(text) {
        tracing::warn!(
            key,
            file = %path.display(),
            mode = format!("{mode:04o}"),
            "{key} is written in {}, which every user of this machine may read (mode {mode:04o}); move it to {key}_file or its environment variable, or chmod o-r the file.",
            path.display()
        );
    }
}

/// One line: where (file and line) and what, without the multi-line TOML snippet.
fn syntax_error(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
    let location = match err.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("{origin} line {line}")
        }
        None => origin.to_owned(),
    };
    ConfigError::Syntax {
        location,
        message: err.message().trim().replace('\n', " "),
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let sync = self.sync.validate()?;
        let cache = self.cache.validate();
        let push = self
            .push
            .map(|push| push.validate(&cache.path, env))
            .transpose()?;
        let source = self.source.validate(sync.full_read_every, env, push)?;
        // Pushed groups exist to be named by access rules before anyone joins.
        let mirror_by_default = matches!(source.kind, SourceKind::Push(_));
        Ok(Config {
            source,
            target: self.target.validate(env)?,
            sync,
            cache,
            groups: self.groups.validate(mirror_by_default)?,
            service: self.service.validate()?,
        })
    }
}

impl RawTarget {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<TargetConfig, ConfigError> {
        let url = http_url("target.url", &self.url, "https://use.hoop.dev/api")?;
        let secret = match self.api_key_file {
            Some(_) => "target.api_key_file",
            None => "target.api_key",
        };
        no_plain_http("target.url", &url, secret, "https://use.hoop.dev/api")?;
        let api_key = optional_secret(
            "target.api_key",
            self.api_key,
            self.api_key_file.as_deref(),
            ENV_TARGET_API_KEY,
            env,
        )?
        .ok_or_else(|| {
            invalid(
                "target.api_key",
                format!("is missing: set api_key_file = \"/run/secrets/hoop_api_key\" or the environment variable {ENV_TARGET_API_KEY}"),
            )
        })?;
        let api_key_header = match self.api_key_header.as_deref().unwrap_or("authorization") {
            "authorization" => ApiKeyHeader::Authorization,
            "api-key" => ApiKeyHeader::ApiKey,
            other => {
                return Err(invalid(
                    "target.api_key_header",
                    format!("must be \"authorization\" or \"api-key\", such as api_key_header = \"authorization\"; got {other:?}"),
                ))
            }
        };
        let rate_limit_per_second = positive(
            "target.rate_limit_per_second",
            self.rate_limit_per_second.unwrap_or(10),
            "10",
        )?;
        let burst = positive("target.burst", self.burst.unwrap_or(10), "10")?;
        let max_in_flight = positive("target.max_in_flight", self.max_in_flight.unwrap_or(4), "4")?;
        let max_attempts = positive("target.max_attempts", self.max_attempts.unwrap_or(6), "6")?;
        let timeout_secs = positive("target.timeout_secs", self.timeout_secs.unwrap_or(30), "30")?;
        Ok(TargetConfig {
            url,
            api_key,
            api_key_header,
            rate_limit_per_second,
            burst,
            max_in_flight: NonZeroUsize::try_from(max_in_flight)
                .map_err(|_| invalid("target.max_in_flight", "is too large for this platform"))?,
            max_attempts,
            timeout: Duration::from_secs(u64::from(timeout_secs.get())),
            ca_pem: ca_bundle("target.ca_file", self.ca_file.as_deref())?,
            max_retry_after: seconds(
                "target.max_retry_after_secs",
                self.max_retry_after_secs.unwrap_or(300),
                "300",
            )?,
            max_error_body_bytes: count(
                "target.max_error_body_bytes",
                self.max_error_body_bytes.unwrap_or(64 * 1024),
                "65536",
            )?,
        })
    }
}

impl RawSync {
    fn validate(self) -> Result<SyncConfig, ConfigError> {
        let text = self.schedule.unwrap_or_else(|| "0 */15 * * * *".to_owned());
        let schedule = cron::Schedule::from_str(&text).map_err(|err| {
            // The cron crate echoes the expression with a caret under it: one line
            // keeps only what it says after the caret.
            let err = err.to_string();
            let lines: Vec<&str> = err.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            let after_caret = lines.iter().position(|l| l.chars().all(|c| c == '^')).map_or(0, |i| i + 1);
            let reason = lines.get(after_caret..).unwrap_or_default().join(" ");
            let reason = if reason.is_empty() { String::new() } else { format!(" ({reason})") };
            invalid(
                "sync.schedule",
                format!("must be a cron expression with seconds, such as schedule = \"0 */15 * * * *\"; got {text:?}{reason}"),
            )
        })?;
        let deprovision = match self.deprovision.as_deref().unwrap_or("off") {
            "off" => Deprovision::Off,
            "deactivate" => Deprovision::Deactivate,
            other => {
                return Err(invalid(
                    "sync.deprovision",
                    format!("must be \"off\" or \"deactivate\", such as deprovision = \"deactivate\"; got {other:?}"),
                ))
            }
        };
        let limit_error = |got: String| {
            invalid(
                "sync.max_deactivations",
                format!("must be a count such as max_deactivations = 25 or a percentage of managed users such as max_deactivations = \"10%\"; got {got}"),
            )
        };
        let max_deactivations = match self.max_deactivations {
            None => DeactivationLimit::Percent(10),
            Some(toml::Value::Integer(count)) => u32::try_from(count)
                .map(DeactivationLimit::Count)
                .map_err(|_| limit_error(count.to_string()))?,
            Some(toml::Value::String(text)) => text
                .trim()
                .strip_suffix('%')
                .and_then(|n| n.trim().parse::<u32>().ok())
                .filter(|n| *n <= 100)
                .map(DeactivationLimit::Percent)
                .ok_or_else(|| limit_error(format!("{text:?}")))?,
            Some(other) => return Err(limit_error(other.to_string())),
        };
        Ok(SyncConfig {
            schedule,
            run_on_start: self.run_on_start.unwrap_or(true),
            update_existing: self.update_existing.unwrap_or(false),
            deprovision,
            max_deactivations,
            full_read_every: seconds(
                "sync.full_read_every_secs",
                self.full_read_every_secs.unwrap_or(86_400),
                "86400",
            )?,
        })
    }
}

impl RawGroups {
    fn validate(self, mirror_by_default: bool) -> Result<GroupPolicy, ConfigError> {
        let defaults = GroupPolicy::default();
        let admin_group = self.admin_group.unwrap_or(defaults.admin_group);
        if admin_group.trim().is_empty() {
            return Err(invalid(
                "groups.admin_group",
                "must name the gateway's admin group, such as admin_group = \"admin\"",
            ));
        }
        if let Some((from, _)) = self.rename.iter().find(|(_, to)| to.trim().is_empty()) {
            return Err(invalid(
                "groups.rename",
                format!("maps {from:?} to an empty name; give a gateway group name such as {{ \"Database Admins\" = \"dba\" }}"),
            ));
        }
        Ok(GroupPolicy {
            include: self.include.unwrap_or_default(),
            exclude: self.exclude.unwrap_or_default(),
            rename: self.rename,
            prefix: self.prefix.unwrap_or_default(),
            admin_group,
            allow_admin_group: self.allow_admin_group.unwrap_or(false),
            delete_removed: self.delete_removed.unwrap_or(false),
            mirror: self.mirror.unwrap_or(mirror_by_default),
        })
    }
}

impl RawService {
    fn validate(self) -> Result<ServiceConfig, ConfigError> {
        let listen = self
            .listen
            .map(|text| {
                text.trim().parse().map_err(|_| {
                    invalid(
                        "service.listen",
                        format!("must be an address and port such as listen = \"127.0.0.1:9464\"; got {text:?}"),
                    )
                })
            })
            .transpose()?;
        let max_age = positive(
            "service.ready_max_age_secs",
            self.ready_max_age_secs.unwrap_or(3600),
            "3600",
        )?;
        Ok(ServiceConfig {
            listen,
            ready_max_age: Duration::from_secs(u64::from(max_age.get())),
            unready_after_failed_runs: positive(
                "service.unready_after_failed_runs",
                self.unready_after_failed_runs.unwrap_or(3),
                "3",
            )?,
        })
    }
}

/// An absolute http(s) URL without query or fragment; the trailing slash is dropped
/// so paths can be appended uniformly.
fn http_url(key: &'static str, value: &str, example: &str) -> Result<Url, ConfigError> {
    let bad = || {
        invalid(
            key,
            format!("must be an http(s) URL such as {example}; got {value:?}"),
        )
    };
    let mut url = Url::parse(value.trim()).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(bad());
    }
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(&path);
    Ok(url)
}

/// Refuses a URL that would carry `secret` over plain http to a host that is
/// not this machine; http to loopback stays allowed (tests, sidecars).
fn no_plain_http(
    key: &'static str,
    url: &Url,
    secret: &str,
    example: &str,
) -> Result<(), ConfigError> {
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if url.scheme() == "http" && !loopback {
        return Err(invalid(
            key,
            format!("would send {secret} over plain http to {}, which is not this machine; use https such as {example} (http is allowed only to loopback)", url.host_str().unwrap_or("")),
        ));
    }
    Ok(())
}

fn positive(key: &'static str, value: i64, example: &str) -> Result<NonZeroU32, ConfigError> {
    u32::try_from(value)
        .ok()
        .and_then(NonZeroU32::new)
        .ok_or_else(|| {
            invalid(
                key,
                format!(
                    "must be a whole number from 1 to {}, such as {} = {example}; got {value}",
                    u32::MAX,
                    key.rsplit('.').next().unwrap_or(key)
                ),
            )
        })
}

/// A positive number of things (users, bytes), as [`positive`] checks it.
fn count(key: &'static str, value: i64, example: &str) -> Result<usize, ConfigError> {
    let value = positive(key, value, example)?;
    usize::try_from(value.get()).map_err(|_| invalid(key, "is too large for this platform"))
}

/// A positive number of seconds, as [`positive`] checks it.
fn seconds(key: &'static str, value: i64, example: &str) -> Result<Duration, ConfigError> {
    positive(key, value, example).map(|secs| Duration::from_secs(u64::from(secs.get())))
}

/// A secret from `env_var`, else given in the file: inline or as `<key>_file`, not
/// both. The environment wins over the file, so a hand-run with the variable set
/// needs no access to the secret files a service uses (e.g. `$CREDENTIALS_DIRECTORY`).
fn optional_secret(
    key: &'static str,
    inline: Option<Secret>,
    file: Option<&Path>,
    env_var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    if inline.is_some() && file.is_some() {
        return Err(invalid(
            key,
            format!("is given more than one way: use only one of {key} or {key}_file (the environment variable {env_var} overrides both), such as {key}_file = \"/run/secrets/...\""),
        ));
    }
    let from_env = env(env_var).map(Secret::new);
    let secret = match (inline, file, from_env) {
        (_, _, Some(secret)) | (Some(secret), _, None) => secret,
        (None, Some(path), None) => {
            let path = &credentials_path(key, path, env_var, env)?;
            let text = std::fs::read_to_string(path).map_err(|err| {
                invalid(
                    key,
                    format!("file {} cannot be read ({err}); point {key}_file at a readable file such as \"/run/secrets/...\"", path.display()),
                )
            })?;
            // Secret files usually end with a newline that is not part of the secret.
            Secret::new(text.trim_end_matches(['\r', '\n']))
        }
        (None, None, None) => return Ok(None),
    };
    if secret.expose().trim().is_empty() {
        return Err(invalid(key, "is empty; give the real credential"));
    }
    Ok(Some(secret))
}

/// Resolves a leading `$CREDENTIALS_DIRECTORY/`, where systemd's `LoadCredential=`
/// puts secrets, so one config file serves under systemd and elsewhere.
fn credentials_path(
    key: &'static str,
    path: &Path,
    env_var: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<PathBuf, ConfigError> {
    const VAR: &str = "$CREDENTIALS_DIRECTORY/";
    let Some(rest) = path.to_str().and_then(|p| p.strip_prefix(VAR)) else {
        return Ok(path.to_owned());
    };
    let dir = env("CREDENTIALS_DIRECTORY").ok_or_else(|| {
        invalid(
            key,
            format!(
                "file {} needs $CREDENTIALS_DIRECTORY, which is set only under systemd with LoadCredential=; outside systemd set the environment variable {env_var} (it overrides {key}_file) or give an absolute path",
                path.display()
            ),
        )
    })?;
    Ok(Path::new(&dir).join(rest))
}

/// Reads a PEM bundle and checks now that it holds certificates, so a typo in a CA
/// path fails at start-up instead of at the first TLS handshake.
fn ca_bundle(key: &'static str, path: Option<&Path>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let pem = std::fs::read(path).map_err(|err| {
        invalid(
            key,
            format!("file {} cannot be read ({err}); give a PEM file such as ca_file = \"/etc/ssl/private-ca.pem\"", path.display()),
        )
    })?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(Some(pem)),
        _ => Err(invalid(
            key,
            format!("file {} holds no PEM certificate; give a PEM file such as ca_file = \"/etc/ssl/private-ca.pem\"", path.display()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [source]
        kind = "scim"
        url = "https://idp.example.com/scim/v2/"
        bearer_token = "scim-token"
        [target]
        url = "https://use.hoop.dev/api"
        api_key = "hpk_secret"
    "#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, "test.toml", &no_env)
    }

    fn error_of(text: &str) -> String {
        parse(text)
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let config = parse(MINIMAL).expect("valid");
        let SourceKind::Scim(scim) = &config.source.kind else {
            panic!("a SCIM source")
        };
        assert_eq!(scim.url.as_str(), "https://idp.example.com/scim/v2");
        assert_eq!(scim.page_size.get(), 100);
        assert_eq!(scim.subject_attribute, SubjectAttribute::Id);
        assert_eq!(config.target.rate_limit_per_second.get(), 10);
        assert_eq!(config.target.max_in_flight.get(), 4);
        assert_eq!(config.target.max_attempts.get(), 6);
        assert_eq!(config.target.timeout, Duration::from_secs(30));
        assert_eq!(config.target.api_key_header, ApiKeyHeader::Authorization);
        assert!(config.sync.run_on_start);
        assert_eq!(config.cache.path, PathBuf::from("/var/lib/idsync"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = error_of(&MINIMAL.replace("api_key = ", "api_kee = \"x\"\napi_key = "));
        assert!(err.contains("test.toml line 8"), "{err}");
        assert!(err.contains("unknown field `api_kee`"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn bad_url_names_the_key_and_an_example() {
        let err = error_of(&MINIMAL.replace("https://use.hoop.dev/api", "use.hoop.dev"));
        assert_eq!(
            err,
            "target.url must be an http(s) URL such as https://use.hoop.dev/api; got \"use.hoop.dev\""
        );
    }

    #[test]
    fn bad_cron_expression_is_refused() {
        let err = error_of(&format!(
            "{MINIMAL}\n[sync]\nschedule = \"every 5 minutes\"\n"
        ));
        assert!(
            err.starts_with("sync.schedule must be a cron expression"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err:?}");
        assert!(err.ends_with("'every' specified.)"), "{err}");
    }

    #[test]
    fn zero_or_negative_numbers_are_refused() {
        for (key, line) in [
            ("target.rate_limit_per_second", "rate_limit_per_second = 0"),
            ("target.max_in_flight", "max_in_flight = -1"),
            ("target.max_attempts", "max_attempts = 0"),
        ] {
            let err = error_of(&MINIMAL.replace("api_key = ", &format!("{line}\napi_key = ")));
            assert!(err.starts_with(key), "{err}");
        }
    }

    /// The bounds on hostile answers: positive, with safe defaults.
    #[test]
    fn bounds_are_positive_numbers_with_safe_defaults() {
        let config = parse(MINIMAL).expect("valid");
        let SourceKind::Scim(scim) = &config.source.kind else {
            panic!("a SCIM source")
        };
        assert_eq!(config.target.max_retry_after, Duration::from_secs(300));
        assert_eq!(scim.max_retry_after, Duration::from_secs(300));
        assert_eq!(scim.max_directory_users, 5_000_000);
        assert_eq!(scim.max_page_bytes, 256 << 20);
        assert_eq!(scim.max_resource_bytes, 64 << 20);
        for (table, line, key) in [
            (
                "[source]",
                "max_directory_users = 0",
                "source.max_directory_users",
            ),
            ("[source]", "max_page_bytes = -1", "source.max_page_bytes"),
            (
                "[source]",
                "max_resource_bytes = 0",
                "source.max_resource_bytes",
            ),
            (
                "[target]",
                "max_retry_after_secs = 0",
                "target.max_retry_after_secs",
            ),
            (
                "[source]",
                "max_retry_after_secs = -5",
                "source.max_retry_after_secs",
            ),
        ] {
            let err = error_of(&MINIMAL.replace(table, &format!("{table}\n{line}")));
            assert!(
                err.starts_with(&format!("{key} must be a whole number")),
                "{err}"
            );
        }
    }

    #[test]
    fn secret_given_two_ways_is_refused() {
        let err = error_of(&MINIMAL.replace(
            "api_key = \"hpk_secret\"",
            "api_key = \"a\"\napi_key_file = \"/nonexistent\"",
        ));
        assert!(
            err.starts_with("target.api_key is given more than one way"),
            "{err}"
        );
        assert!(err.contains(ENV_TARGET_API_KEY), "{err}");
    }

    /// Before: "is given more than one way" for a `*_file` plus its variable.
    /// After: the variable wins, and the file is not even read (here it needs a
    /// `$CREDENTIALS_DIRECTORY` that is not set, as outside systemd).
    #[test]
    fn an_environment_secret_overrides_the_file_key_for_every_secret() {
        let oidc = MINIMAL.replace(
            "bearer_token = \"scim-token\"",
            "[source.oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"idsync\"\nclient_secret_file = \"$CREDENTIALS_DIRECTORY/idp\"",
        );
        for (text, var) in [
            (
                MINIMAL.replace(
                    "bearer_token = \"scim-token\"",
                    "bearer_token_file = \"$CREDENTIALS_DIRECTORY/scim\"",
                ),
                ENV_SOURCE_BEARER_TOKEN,
            ),
            (oidc, ENV_SOURCE_CLIENT_SECRET),
            (
                MINIMAL.replace(
                    "api_key = \"hpk_secret\"",
                    "api_key_file = \"$CREDENTIALS_DIRECTORY/hoop\"",
                ),
                ENV_TARGET_API_KEY,
            ),
        ] {
            let err = error_of(&text);
            assert!(err.contains(var), "the error names {var}: {err}");
            let env = |name: &str| (name == var).then(|| "from-env".to_owned());
            let config = Config::parse(&text, "t", &env)
                .unwrap_or_else(|err| panic!("{var} should override the file: {err}"));
            let secret = match (var, &config.source.kind) {
                (ENV_TARGET_API_KEY, _) => config.target.api_key.clone(),
                (_, SourceKind::Scim(scim)) => match &scim.auth {
                    SourceAuth::Bearer(token) => token.clone(),
                    SourceAuth::Oidc(oidc) => oidc.client_secret.clone(),
                    other => panic!("not a SCIM credential: {other:?}"),
                },
                _ => panic!("a SCIM source"),
            };
            assert_eq!(secret.expose(), "from-env", "{var}");
        }
        let env = |name: &str| (name == ENV_TARGET_API_KEY).then(|| "from-env".to_owned());
        let config = Config::parse(MINIMAL, "t", &env).expect("overrides an inline key too");
        assert_eq!(config.target.api_key.expose(), "from-env");
    }

    #[test]
    fn missing_secret_names_the_key() {
        let err = error_of(&MINIMAL.replace("api_key = \"hpk_secret\"", ""));
        assert!(err.starts_with("target.api_key is missing"), "{err}");
        let err = error_of(&MINIMAL.replace("bearer_token = \"scim-token\"", ""));
        assert!(err.starts_with("source needs credentials"), "{err}");
    }

    /// Before, the source's "needs credentials" named no variable.
    #[test]
    fn a_missing_secret_names_its_environment_variable() {
        let oidc = "[source.oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"idsync\"\n";
        for (text, var) in [
            (
                MINIMAL.replace("bearer_token = \"scim-token\"", ""),
                ENV_SOURCE_BEARER_TOKEN,
            ),
            (
                MINIMAL.replace("bearer_token = \"scim-token\"", oidc),
                ENV_SOURCE_CLIENT_SECRET,
            ),
            (
                MINIMAL.replace("api_key = \"hpk_secret\"", ""),
                ENV_TARGET_API_KEY,
            ),
        ] {
            let err = error_of(&text);
            assert!(err.contains(var), "{err}");
        }
    }

    /// Before: all three parsed, and the secret went out in clear text.
    #[test]
    fn secrets_over_plain_http_to_another_host_are_refused() {
        let oidc = "[source.oidc]\nissuer = \"http://idp.example.com\"\nclient_id = \"i\"\nclient_secret = \"s\"\n";
        for (text, key, secret) in [
            (
                MINIMAL.replace("https://use.hoop.dev/api", "http://use.hoop.dev/api"),
                "target.url",
                "target.api_key",
            ),
            (
                MINIMAL.replace(
                    "https://idp.example.com/scim",
                    "http://idp.example.com/scim",
                ),
                "source.url",
                "source.bearer_token",
            ),
            (
                MINIMAL.replace("bearer_token = \"scim-token\"", oidc),
                "source.oidc.issuer",
                "source.oidc.client_secret",
            ),
        ] {
            let err = error_of(&text);
            assert!(err.starts_with(key), "{err}");
            assert!(err.contains(secret) && err.contains("plain http"), "{err}");
        }
        for host in ["127.0.0.1:8080", "localhost", "[::1]:9000"] {
            let text = MINIMAL
                .replace("https://use.hoop.dev", &format!("http://{host}"))
                .replace("https://idp.example.com", &format!("http://{host}"));
            parse(&text).unwrap_or_else(|err| panic!("loopback {host}: {err}"));
        }
    }

    #[test]
    fn incremental_is_off_unless_asked_and_refused_by_kinds_that_cannot() {
        let config = parse(MINIMAL).expect("valid");
        assert_eq!(config.source.incremental, Incremental::Off);
        assert_eq!(config.sync.full_read_every, Duration::from_secs(86_400));
        let err =
            error_of(&MINIMAL.replace("bearer_token =", "incremental = true\nbearer_token ="));
        assert!(
            err.starts_with("source.incremental is not used by kind = \"scim\""),
            "{err}"
        );
        let err = error_of(&format!("{MINIMAL}\n[sync]\nfull_read_every_secs = 0"));
        assert!(
            err.starts_with("sync.full_read_every_secs must be a whole number"),
            "{err}"
        );
    }

    #[test]
    fn source_timeout_secs_defaults_to_60_and_is_checked() {
        let SourceKind::Scim(scim) = parse(MINIMAL).expect("valid").source.kind else {
            panic!("a SCIM source")
        };
        assert_eq!(scim.timeout, Duration::from_secs(60));
        let with =
            |line: &str| MINIMAL.replace("bearer_token =", &format!("{line}\nbearer_token ="));
        let SourceKind::Scim(scim) = parse(&with("timeout_secs = 5")).expect("valid").source.kind
        else {
            panic!("a SCIM source")
        };
        assert_eq!(scim.timeout, Duration::from_secs(5));
        for bad in ["timeout_secs = 0", "timeout_secs = -1"] {
            let err = error_of(&with(bad));
            assert!(
                err.starts_with("source.timeout_secs must be a whole number"),
                "{err}"
            );
        }
        let err = error_of(&file_source("path = \"/x/u.csv\"\ntimeout_secs = 5"));
        assert!(err.starts_with("source.timeout_secs is not used"), "{err}");
    }

    /// Before: no warning for either.
    #[test]
    fn check_config_warns_of_a_url_without_api_and_a_key_without_hpk() {
        assert!(parse(MINIMAL).expect("valid").warnings().is_empty());
        let text = MINIMAL
            .replace("https://use.hoop.dev/api", "https://use.hoop.dev")
            .replace("hpk_secret", "xyz_secret");
        let warnings = parse(&text).expect("valid").warnings();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings[0].starts_with("target.url https://use.hoop.dev/ does not end in /api"),
            "{warnings:?}"
        );
        assert!(
            warnings[1].starts_with("target.api_key does not start with hpk_"),
            "{warnings:?}"
        );
        assert!(!warnings[1].contains("xyz_secret"), "the key never shows");
        let legacy = text.replace("[target]", "[target]\napi_key_header = \"api-key\"");
        assert_eq!(parse(&legacy).expect("valid").warnings().len(), 1);
    }

    #[test]
    fn inline_secrets_are_found_by_key() {
        assert_eq!(
            inline_secrets(MINIMAL),
            vec!["source.bearer_token", "target.api_key"]
        );
        let files = MINIMAL
            .replace(
                "bearer_token = \"scim-token\"",
                "bearer_token_file = \"/x\"",
            )
            .replace("api_key = \"hpk_secret\"", "api_key_file = \"/y\"");
        assert!(inline_secrets(&files).is_empty());
    }

    #[test]
    fn unreadable_secret_file_is_refused() {
        let err = error_of(&MINIMAL.replace(
            "api_key = \"hpk_secret\"",
            "api_key_file = \"/nonexistent/hoop_api_key\"",
        ));
        assert!(
            err.contains("/nonexistent/hoop_api_key cannot be read"),
            "{err}"
        );
    }

    #[test]
    fn secret_file_loses_its_trailing_newline_and_env_works() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("key");
        std::fs::write(&file, "hpk_from_file\n").expect("write");
        let text = MINIMAL.replace(
            "api_key = \"hpk_secret\"",
            &format!("api_key_file = {:?}", file.display().to_string()),
        );
        let config = parse(&text).expect("valid");
        assert_eq!(config.target.api_key.expose(), "hpk_from_file");

        let env = |name: &str| (name == ENV_TARGET_API_KEY).then(|| "hpk_env".to_owned());
        let text = MINIMAL.replace("api_key = \"hpk_secret\"", "");
        let config = Config::parse(&text, "t", &env).expect("valid");
        assert_eq!(config.target.api_key.expose(), "hpk_env");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let config = parse(MINIMAL).expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hpk_secret") && !shown.contains("scim-token"));
        assert!(shown.contains("**redacted**"));
    }

    #[test]
    fn secrets_compare_by_value_and_never_display() {
        let secret = Secret::new(String::from("hpk_secret"));
        assert_eq!(secret.expose(), "hpk_secret");
        assert_eq!(secret.clone(), Secret::new("hpk_secret"));
        assert_ne!(secret, Secret::new("hpk_other"));
        assert_eq!(format!("{secret} {secret:?}"), "**redacted** **redacted**");
    }

    #[test]
    fn oidc_and_static_token_are_exclusive() {
        let text = MINIMAL.replace(
            "[target]",
            "[source.oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"idsync\"\nclient_secret = \"s\"\n[target]",
        );
        assert!(error_of(&text).starts_with("source.oidc cannot be combined"));
        let config = parse(&text.replace("bearer_token = \"scim-token\"", "")).expect("valid");
        let SourceKind::Scim(ScimConfig {
            auth: SourceAuth::Oidc(oidc),
            ..
        }) = config.source.kind
        else {
            panic!("oidc expected")
        };
        assert_eq!(oidc.auth_method, ClientAuthMethod::ClientSecretBasic);
        assert_eq!(oidc.issuer, "https://idp.example.com");
    }

    #[test]
    fn unreadable_ca_file_is_refused() {
        let err =
            error_of(&MINIMAL.replace("[target]", "ca_file = \"/nonexistent.pem\"\n[target]"));
        assert!(
            err.starts_with("source.ca_file file /nonexistent.pem cannot be read"),
            "{err}"
        );
    }

    fn file_source(source_lines: &str) -> String {
        format!("[source]\nkind = \"file\"\n{source_lines}\n[target]\nurl = \"https://use.hoop.dev/api\"\napi_key = \"k\"\n")
    }

    #[test]
    fn a_file_source_takes_its_format_from_the_extension_or_the_key() {
        let config = parse(&file_source(
            "path = \"/x/users.ndjson\"\ngroups_path = \"/x/g.csv\"",
        ))
        .expect("valid");
        let SourceKind::File(file) = config.source.kind else {
            panic!("a file source")
        };
        assert_eq!(file.users.format, FileFormat::JsonLines);
        assert_eq!(file.groups.map(|g| g.format), Some(FileFormat::Csv));
        let config =
            parse(&file_source("path = \"/x/export.txt\"\nformat = \"csv\"")).expect("valid");
        let SourceKind::File(file) = config.source.kind else {
            panic!("a file source")
        };
        assert_eq!(file.users.format, FileFormat::Csv);
    }

    #[test]
    fn a_file_source_refuses_missing_unknown_and_foreign_keys() {
        for (lines, error) in [
            ("", "source.path is missing"),
            (
                "path = \"/x/export.txt\"",
                "source.format is needed: /x/export.txt does not end",
            ),
            (
                "path = \"/x/u.csv\"\nformat = \"xml\"",
                "source.format must be \"jsonl\" or \"csv\"",
            ),
            (
                "path = \"/x/u.csv\"\nurl = \"https://idp.example.com\"",
                "source.url is not used by kind = \"file\"",
            ),
            (
                "path = \"/x/u.csv\"\nbearer_token = \"t\"",
                "source.bearer_token is not used",
            ),
            (
                "path = \"/x/u.csv\"\n[source.attributes]\nslack_id = \"urn:x:User:slack\"",
                "source.attributes.slack_id must name a column",
            ),
        ] {
            let err = error_of(&file_source(lines));
            assert!(err.starts_with(error), "{lines:?}: {err}");
        }
        let err =
            error_of(&MINIMAL.replace("kind = \"scim\"", "kind = \"scim\"\npath = \"/x.csv\""));
        assert!(
            err.starts_with("source.path is not used by kind = \"scim\""),
            "{err}"
        );
        let err = error_of(&MINIMAL.replace("kind = \"scim\"", "kind = \"nis\""));
        assert!(
            err.starts_with("source.kind must be one of \"scim\", \"file\""),
            "{err}"
        );
    }

    /// Every shipped config parses, its secret files replaced by inline values since
    /// they exist only on a real host.
    #[test]
    fn every_file_in_config_dir_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).expect("config dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|ext| ext == "toml") {
                let text = inline_secret_files(&std::fs::read_to_string(&path).expect("read"));
                parse(&text)
                    .unwrap_or_else(|err| panic!("{} does not parse: {err}", path.display()));
                seen += 1;
            }
        }
        assert!(seen >= 1, "no config files found in {}", dir.display());
    }

    /// `api_key_file = "..."` becomes `api_key = "test-secret"`; CA files are dropped.
    fn inline_secret_files(text: &str) -> String {
        text.lines()
            .filter(|line| !line.trim_start().starts_with("ca_file"))
            .map(|line| {
                let key = ["api_key", "client_secret", "bearer_token", "bind_password"]
                    .into_iter()
                    .find(|key| line.trim_start().starts_with(&format!("{key}_file")));
                match key {
                    Some(key) => format!("{key} = \"test-secret\""),
                    None => line.to_owned(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
