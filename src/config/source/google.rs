//! `kind = "google"`: the Google Workspace Admin SDK Directory API, read as a
//! service account with domain-wide delegation.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::super::{credentials_path, http_url, invalid, no_plain_http, positive, ConfigError};
use super::vendor::{DirectoryLimits, VENDOR_PAGE_BYTES};
use super::RawSource;
use crate::config::{GrantConfig, GrantMethod, Secret, SigningKey, SourceAuth};

const KEY_FILE: &str = "source.google.credentials_file";
/// The read-only directory scopes the delegation grants (README: least privilege).
const GOOGLE_SCOPES: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly https://www.googleapis.com/auth/admin.directory.group.readonly";
/// Google's cap on `maxResults` for users; groups and members stop at 200.
const MAX_USERS_PAGE: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawGoogle {
    credentials_file: Option<PathBuf>,
    delegated_admin: Option<String>,
    customer: Option<String>,
    group_name: Option<String>,
}

/// `kind = "google"`.
#[derive(Debug, Clone)]
pub struct GoogleConfig {
    /// `https://admin.googleapis.com` (no trailing slash).
    pub url: Url,
    /// `maxResults` of a users page (1–500); groups and members pages take at
    /// most 200 of it.
    pub page_size: NonZeroU32,
    /// `my_customer`, or the customer id.
    pub customer: String,
    pub group_name: GoogleGroupName,
    /// The service account's JWT bearer grant, acting as the delegated admin.
    pub auth: SourceAuth,
    pub limits: DirectoryLimits,
}

/// Which of a Google group's fields becomes its name in the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoogleGroupName {
    /// The group's `name`, as admins see it.
    Name,
    /// The group's `email`, unique in the domain.
    Email,
}

/// The fields of a service-account key file idsync uses.
struct ServiceAccount {
    client_email: String,
    key: SigningKey,
    /// Where the assertion is exchanged for a token; also its `aud`.
    token_uri: Url,
}

/// A key file as Google writes it (`type`, `client_email`, … `token_uri`).
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    kind: Option<String>,
    client_email: Option<String>,
    private_key_id: Option<String>,
    private_key: Option<Secret>,
    token_uri: Option<String>,
}

impl RawSource {
    pub(super) fn google(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<GoogleConfig, ConfigError> {
        let example = "https://admin.googleapis.com";
        let url = self.url.as_deref().unwrap_or(example);
        let url = http_url("source.url", url, example)?;
        no_plain_http("source.url", &url, "the directory's access token", example)?;
        let page_size = positive("source.page_size", self.page_size.unwrap_or(500), "500")?;
        if page_size.get() > MAX_USERS_PAGE {
            return Err(invalid(
                "source.page_size",
                format!("must be at most {MAX_USERS_PAGE} for kind = \"google\" (Google's maxResults); got {page_size}"),
            ));
        }
        let Some(google) = &self.google else {
            return Err(invalid(
                "source.google",
                "is missing: kind = \"google\" needs credentials_file and delegated_admin, such as [source.google] credentials_file = \"/run/secrets/google-sa.json\"",
            ));
        };
        Ok(GoogleConfig {
            url,
            page_size,
            customer: google.customer()?,
            group_name: google.group_name()?,
            auth: google.auth(env)?,
            limits: self.directory_limits(VENDOR_PAGE_BYTES)?,
        })
    }
}

impl RawGoogle {
    fn delegated_admin(&self) -> Result<String, ConfigError> {
        match self.delegated_admin.as_deref().map(str::trim) {
            Some(admin) if admin.contains('@') => Ok(admin.to_owned()),
            Some(other) => Err(invalid(
                "source.google.delegated_admin",
                format!("must be an administrator's address, such as delegated_admin = \"it-admin@example.com\"; got {other:?}"),
            )),
            None => Err(invalid(
                "source.google.delegated_admin",
                "is missing: domain-wide delegation acts as an administrator, such as delegated_admin = \"it-admin@example.com\"",
            )),
        }
    }

    fn customer(&self) -> Result<String, ConfigError> {
        let customer = self.customer.as_deref().unwrap_or("my_customer").trim();
        let usable = !customer.is_empty()
            && customer
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !usable {
            return Err(invalid(
                "source.google.customer",
                format!("must be \"my_customer\" or a customer id such as \"C03az79cb\"; got {customer:?}"),
            ));
        }
        Ok(customer.to_owned())
    }

    fn group_name(&self) -> Result<GoogleGroupName, ConfigError> {
        match self.group_name.as_deref().unwrap_or("name") {
            "name" => Ok(GoogleGroupName::Name),
            "email" => Ok(GoogleGroupName::Email),
            other => Err(invalid(
                "source.google.group_name",
                format!(
                    "must be \"name\" or \"email\", such as group_name = \"name\"; got {other:?}"
                ),
            )),
        }
    }

    /// The JWT bearer grant of the key file's service account, acting as
    /// `delegated_admin` with the read-only directory scopes.
    fn auth(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<SourceAuth, ConfigError> {
        let account = self.service_account(env)?;
        Ok(SourceAuth::Grant(GrantConfig {
            token_url: account.token_uri,
            client_id: account.client_email.clone(),
            method: GrantMethod::JwtBearer {
                key: account.key,
                issuer: account.client_email,
                subject: self.delegated_admin()?,
                scope: GOOGLE_SCOPES.to_owned(),
            },
            params: Vec::new(),
        }))
    }

    fn service_account(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServiceAccount, ConfigError> {
        let Some(path) = &self.credentials_file else {
            return Err(invalid(
                KEY_FILE,
                "is missing: give the service account's JSON key, such as credentials_file = \"/run/secrets/google-sa.json\"",
            ));
        };
        let path = credentials_path(KEY_FILE, path, "(none)", env)?;
        service_account_key(&path)
    }
}

/// Reads and checks a service-account key file.
fn service_account_key(path: &Path) -> Result<ServiceAccount, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|err| {
        invalid(
            KEY_FILE,
            format!(
                "file {shown} cannot be read ({err}); point it at the service account's JSON key"
            ),
        )
    })?;
    // The parser's message could quote the key: say only where it broke.
    let key: KeyFile = serde_json::from_str(&text).map_err(|err| {
        invalid(
            KEY_FILE,
            format!(
                "file {shown} is not a JSON key file (line {}, column {})",
                err.line(),
                err.column()
            ),
        )
    })?;
    let not_a_key = |what: &str| {
        invalid(
            KEY_FILE,
            format!("file {shown} is not a service-account key: {what}; create a JSON key for the service account in the Google Cloud console"),
        )
    };
    if key.kind.as_deref() != Some("service_account") {
        return Err(not_a_key("its \"type\" is not \"service_account\""));
    }
    let field = |value: Option<String>, name: &str| {
        value
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| not_a_key(&format!("it has no \"{name}\"")))
    };
    let client_email = field(key.client_email, "client_email")?;
    let private_key_id = field(key.private_key_id, "private_key_id")?;
    let token_uri = field(key.token_uri, "token_uri")?;
    let private_key = key
        .private_key
        .ok_or_else(|| not_a_key("it has no \"private_key\""))?;
    let key = SigningKey::from_pem(KEY_FILE, &private_key)?.with_key_id(private_key_id);
    let token_uri = Url::parse(&token_uri)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https"))
        .ok_or_else(|| not_a_key("its \"token_uri\" is not an http(s) URL"))?;
    no_plain_http(
        KEY_FILE,
        &token_uri,
        "the signed assertion",
        "https://oauth2.googleapis.com/token",
    )?;
    Ok(ServiceAccount {
        client_email,
        key,
        token_uri,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error_of(source: &str) -> String {
        let text = format!(
            "[source]\nkind = \"google\"\n{source}\n[target]\nurl = \"https://gw.example.com/api\"\napi_key = \"hpk_x\"\n"
        );
        Config::parse(&text, "test", &|_| None)
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn page_size_delegated_admin_and_customer_are_checked_before_the_key_file() {
        let table = "[source.google]\ncredentials_file = \"/nonexistent/sa.json\"";
        for (source, error) in [
            ("page_size = 501", "source.page_size must be at most 500"),
            ("", "source.google is missing"),
            (
                &format!("{table}\ndelegated_admin = \"it-admin@example.com\""),
                "source.google.credentials_file file /nonexistent/sa.json cannot be read",
            ),
            (
                &format!("{table}\ncustomer = \"my customer\""),
                "source.google.customer must be",
            ),
            (
                &format!("{table}\ngroup_name = \"id\""),
                "source.google.group_name must be",
            ),
            (
                "[source.google]\ndelegated_admin = \"it-admin@example.com\"",
                "source.google.credentials_file is missing",
            ),
        ] {
            let err = error_of(source);
            assert!(err.starts_with(error), "{source}: {err}");
        }
    }
}
