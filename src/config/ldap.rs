//! `kind = "ldap"`: the `[source]` keys an LDAP directory reads, and its own
//! `[source.ldap]` table. A preset fills in what a kind of directory (OpenLDAP,
//! FreeIPA, Active Directory) names differently; every key can override it.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{ca_bundle, invalid, optional_secret, positive, ConfigError, Secret};

pub const ENV_SOURCE_BIND_PASSWORD: &str = "IDSYNC_SOURCE_BIND_PASSWORD";

/// The `[source]` keys `kind = "ldap"` reads.
pub(super) const LDAP_KEYS: &[&str] = &[
    "source.url",
    "source.page_size",
    "source.subject_attribute",
    "source.ca_file",
    "source.timeout_secs",
    "source.incremental",
    "source.ldap",
];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLdap {
    preset: Option<String>,
    start_tls: Option<bool>,
    bind_dn: Option<String>,
    bind_password: Option<Secret>,
    bind_password_file: Option<PathBuf>,
    user_base: Option<String>,
    user_filter: Option<String>,
    group_base: Option<String>,
    group_filter: Option<String>,
    email_attribute: Option<String>,
    name_attribute: Option<String>,
    group_name_attribute: Option<String>,
    member_attribute: Option<String>,
    inactive_filter: Option<String>,
}

/// The `[source]` keys besides `kind` that an LDAP source reads.
pub(super) struct LdapCommon<'a> {
    pub url: Option<&'a str>,
    pub page_size: Option<i64>,
    pub subject_attribute: Option<&'a str>,
    pub ca_file: Option<&'a std::path::Path>,
    pub timeout_secs: Option<i64>,
    pub incremental: bool,
}

/// `kind = "ldap"`.
#[derive(Debug, Clone)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://`, host and port only.
    pub url: Url,
    pub start_tls: bool,
    pub ca_pem: Option<Vec<u8>>,
    pub page_size: NonZeroU32,
    pub timeout: Duration,
    pub preset: LdapPreset,
    /// Anonymous when `None`.
    pub bind: Option<LdapBind>,
    pub subject_attribute: String,
    pub user_base: String,
    pub user_filter: String,
    pub group_base: String,
    pub group_filter: String,
    pub email_attribute: String,
    pub name_attribute: String,
    pub group_name_attribute: String,
    pub member_attribute: MemberAttribute,
    /// Users matching it (within `user_filter`) are inactive.
    pub inactive_filter: Option<String>,
}

#[derive(Debug, Clone)]
pub struct LdapBind {
    pub dn: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LdapPreset {
    OpenLdap,
    FreeIpa,
    /// Also: `objectGUID` is binary, and a user whose `userAccountControl` has the
    /// ACCOUNTDISABLE bit is inactive when no `inactive_filter` is given.
    ActiveDirectory,
}

/// How a group names its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberAttribute {
    /// By DN (`member`, `uniqueMember`): users and nested groups.
    Dn(String),
    /// By login (`memberUid` of posixGroup): users only, no nesting.
    Uid,
}

impl MemberAttribute {
    pub fn name(&self) -> &str {
        match self {
            Self::Dn(name) => name,
            Self::Uid => "memberUid",
        }
    }
}

/// What a preset fills in.
struct Defaults {
    subject_attribute: &'static str,
    user_filter: &'static str,
    group_filter: &'static str,
    inactive_filter: &'static str,
}

impl LdapPreset {
    fn parse(text: Option<&str>) -> Result<Self, ConfigError> {
        match text.unwrap_or("openldap") {
            "openldap" => Ok(Self::OpenLdap),
            "freeipa" => Ok(Self::FreeIpa),
            "active_directory" => Ok(Self::ActiveDirectory),
            other => Err(invalid(
                "source.ldap.preset",
                format!("must be \"openldap\", \"freeipa\" or \"active_directory\", such as preset = \"openldap\"; got {other:?}"),
            )),
        }
    }

    fn defaults(self) -> Defaults {
        match self {
            Self::OpenLdap => Defaults {
                subject_attribute: "entryUUID",
                user_filter: "(objectClass=inetOrgPerson)",
                group_filter: "(objectClass=groupOfNames)",
                inactive_filter: "",
            },
            Self::FreeIpa => Defaults {
                subject_attribute: "ipaUniqueID",
                user_filter: "(objectClass=inetOrgPerson)",
                group_filter: "(objectClass=groupOfNames)",
                inactive_filter: "(nsAccountLock=TRUE)",
            },
            Self::ActiveDirectory => Defaults {
                subject_attribute: "objectGUID",
                user_filter: "(&(objectCategory=person)(objectClass=user))",
                group_filter: "(objectClass=group)",
                inactive_filter: "",
            },
        }
    }
}

impl RawLdap {
    pub(super) fn validate(
        self,
        common: &LdapCommon<'_>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LdapConfig, ConfigError> {
        let preset = LdapPreset::parse(self.preset.as_deref())?;
        let defaults = preset.defaults();
        let url = ldap_url(common.url)?;
        let start_tls = self.start_tls.unwrap_or(false);
        if start_tls && url.scheme() == "ldaps" {
            return Err(invalid(
                "source.ldap.start_tls",
                "is for ldap:// URLs; an ldaps:// URL is TLS from the start, so remove start_tls",
            ));
        }
        let subject_attribute = subject_attribute(common, preset, &defaults)?;
        let timeout = positive(
            "source.timeout_secs",
            common.timeout_secs.unwrap_or(60),
            "60",
        )?;
        let [email_attribute, name_attribute, group_name_attribute] = self.attribute_names()?;
        let inactive_filter = Some(filter(
            "source.ldap.inactive_filter",
            self.inactive_filter,
            defaults.inactive_filter,
        )?);
        Ok(LdapConfig {
            start_tls,
            ca_pem: ca_bundle("source.ca_file", common.ca_file)?,
            page_size: positive("source.page_size", common.page_size.unwrap_or(500), "500")?,
            timeout: Duration::from_secs(u64::from(timeout.get())),
            preset,
            bind: bind(
                self.bind_dn,
                self.bind_password,
                self.bind_password_file,
                env,
            )?,
            subject_attribute,
            user_base: base("source.ldap.user_base", self.user_base)?,
            user_filter: filter(
                "source.ldap.user_filter",
                self.user_filter,
                defaults.user_filter,
            )?,
            group_base: base("source.ldap.group_base", self.group_base)?,
            group_filter: filter(
                "source.ldap.group_filter",
                self.group_filter,
                defaults.group_filter,
            )?,
            email_attribute,
            name_attribute,
            group_name_attribute,
            member_attribute: member_attribute(self.member_attribute.as_deref())?,
            inactive_filter: inactive_filter.filter(|f| !f.is_empty()),
            url,
        })
    }

    /// `email_attribute`, `name_attribute`, `group_name_attribute`.
    fn attribute_names(&self) -> Result<[String; 3], ConfigError> {
        Ok([
            attribute(
                "source.ldap.email_attribute",
                self.email_attribute.as_deref(),
                "mail",
            )?,
            attribute(
                "source.ldap.name_attribute",
                self.name_attribute.as_deref(),
                "displayName",
            )?,
            attribute(
                "source.ldap.group_name_attribute",
                self.group_name_attribute.as_deref(),
                "cn",
            )?,
        ])
    }
}

/// The subject attribute; incremental reads need entryUUID, except from Active
/// Directory, which offers no content synchronisation: every read is a full read.
fn subject_attribute(
    common: &LdapCommon<'_>,
    preset: LdapPreset,
    defaults: &Defaults,
) -> Result<String, ConfigError> {
    let subject = attribute(
        "source.subject_attribute",
        common.subject_attribute,
        defaults.subject_attribute,
    )?;
    let by_uuid = subject.eq_ignore_ascii_case("entryUUID");
    if common.incremental && !by_uuid && preset != LdapPreset::ActiveDirectory {
        return Err(invalid(
            "source.incremental",
            format!("needs subject_attribute = \"entryUUID\": the server reports deleted entries by their entryUUID, and subject_attribute is {subject:?}"),
        ));
    }
    Ok(subject)
}

fn ldap_url(text: Option<&str>) -> Result<Url, ConfigError> {
    let example = "such as url = \"ldaps://ldap.example.com\"";
    let Some(text) = text else {
        return Err(invalid(
            "source.url",
            format!("is missing: kind = \"ldap\" reads a directory server, {example}"),
        ));
    };
    let url = Url::parse(text.trim())
        .map_err(|err| invalid("source.url", format!("is not a URL ({err}); {example}")))?;
    let plain = url.path().is_empty() || url.path() == "/";
    if !matches!(url.scheme(), "ldap" | "ldaps") || url.host_str().is_none() || !plain {
        return Err(invalid(
            "source.url",
            format!("must be an ldap:// or ldaps:// URL with a host and no path, {example}; got {text:?}"),
        ));
    }
    Ok(url)
}

fn bind(
    dn: Option<String>,
    password: Option<Secret>,
    password_file: Option<PathBuf>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<LdapBind>, ConfigError> {
    let key = "source.ldap.bind_password";
    let password = optional_secret(
        key,
        password,
        password_file.as_deref(),
        ENV_SOURCE_BIND_PASSWORD,
        env,
    )?;
    match (dn.filter(|dn| !dn.trim().is_empty()), password) {
        (Some(dn), Some(password)) => Ok(Some(LdapBind { dn, password })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            key,
            format!("is missing: bind_dn needs a password, such as bind_password_file = \"/run/secrets/ldap_bind_password\" or the environment variable {ENV_SOURCE_BIND_PASSWORD}"),
        )),
        (None, Some(_)) => Err(invalid(
            "source.ldap.bind_dn",
            "is missing: a bind password needs the DN it belongs to, such as bind_dn = \"cn=idsync,ou=services,dc=example,dc=com\"",
        )),
    }
}

fn base(key: &'static str, text: Option<String>) -> Result<String, ConfigError> {
    match text
        .map(|t| t.trim().to_owned())
        .filter(|t| t.contains('='))
    {
        Some(base) => Ok(base),
        None => Err(invalid(
            key,
            "must be the DN to search under, such as \"ou=people,dc=example,dc=com\"",
        )),
    }
}

/// A filter as written, checked for balanced parentheses (the server checks the rest).
fn filter(key: &'static str, text: Option<String>, default: &str) -> Result<String, ConfigError> {
    let text = text.map_or_else(|| default.to_owned(), |t| t.trim().to_owned());
    let mut depth = 0i32;
    for c in text.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        if depth < 0 {
            break;
        }
    }
    let balanced =
        depth == 0 && (text.is_empty() || (text.starts_with('(') && text.ends_with(')')));
    if !balanced {
        return Err(invalid(
            key,
            format!("must be an LDAP filter in parentheses, such as \"(objectClass=inetOrgPerson)\"; got {text:?}"),
        ));
    }
    Ok(text)
}

fn attribute(key: &'static str, text: Option<&str>, default: &str) -> Result<String, ConfigError> {
    let text = text.map_or(default, str::trim);
    let valid = text.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
    if !valid {
        return Err(invalid(
            key,
            format!("must be an attribute name, such as \"{default}\"; got {text:?}"),
        ));
    }
    Ok(text.to_owned())
}

fn member_attribute(text: Option<&str>) -> Result<MemberAttribute, ConfigError> {
    match text.unwrap_or("member") {
        "member" => Ok(MemberAttribute::Dn("member".into())),
        "uniqueMember" => Ok(MemberAttribute::Dn("uniqueMember".into())),
        "memberUid" => Ok(MemberAttribute::Uid),
        other => Err(invalid(
            "source.ldap.member_attribute",
            format!("must be \"member\", \"uniqueMember\" or \"memberUid\"; got {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, SourceKind};

    const LDAP: &str = r#"
[source]
kind = "ldap"
url = "ldaps://ldap.example.com"
[source.ldap]
bind_dn = "cn=idsync,dc=example,dc=com"
bind_password = "pw"
user_base = "ou=people,dc=example,dc=com"
group_base = "ou=groups,dc=example,dc=com"
[target]
url = "https://gw.example.com/api"
api_key = "k"
"#;

    fn parse(text: &str) -> Result<LdapConfig, String> {
        let config = Config::parse(text, "t", &|_| None).map_err(|e| e.to_string())?;
        match config.source.kind {
            SourceKind::Ldap(ldap) => Ok(ldap),
            other => Err(format!("not ldap: {other:?}")),
        }
    }

    fn with(table: &str, line: &str) -> String {
        LDAP.replace(&format!("[{table}]\n"), &format!("[{table}]\n{line}\n"))
    }

    #[test]
    fn presets_fill_in_what_each_directory_names_differently() {
        let openldap = parse(LDAP).expect("valid");
        assert_eq!(openldap.subject_attribute, "entryUUID");
        assert_eq!(openldap.user_filter, "(objectClass=inetOrgPerson)");
        assert_eq!(
            (openldap.page_size.get(), openldap.inactive_filter),
            (500, None)
        );
        let ad = parse(&with("source.ldap", "preset = \"active_directory\"")).expect("valid");
        assert_eq!(ad.subject_attribute, "objectGUID");
        let ad_incremental = with("source.ldap", "preset = \"active_directory\"")
            .replace("[source]\n", "[source]\nincremental = true\n");
        assert!(
            parse(&ad_incremental).is_ok(),
            "AD: every read is a full read"
        );
        assert_eq!(ad.group_filter, "(objectClass=group)");
        let ipa = parse(&with(
            "source.ldap",
            "preset = \"freeipa\"\nmember_attribute = \"memberUid\"",
        ))
        .expect("valid");
        assert_eq!(ipa.inactive_filter.as_deref(), Some("(nsAccountLock=TRUE)"));
        assert_eq!(ipa.member_attribute, MemberAttribute::Uid);
        let bind = openldap.bind.expect("bind");
        assert!(
            !format!("{bind:?}").contains("pw"),
            "the password never prints"
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (table, line, key) in [
            ("source", "page_size = 0", "source.page_size"),
            ("source.ldap", "preset = \"novell\"", "source.ldap.preset"),
            ("source.ldap", "start_tls = true", "source.ldap.start_tls"),
            (
                "source.ldap",
                "user_filter = \"objectClass=person\"",
                "source.ldap.user_filter",
            ),
            (
                "source.ldap",
                "member_attribute = \"members\"",
                "source.ldap.member_attribute",
            ),
            (
                "source.ldap",
                "email_attribute = \"e mail\"",
                "source.ldap.email_attribute",
            ),
            ("source.ldap", "colour = \"blue\"", "unknown field `colour`"),
            ("source", "bearer_token = \"t\"", "source.bearer_token"),
            (
                "source",
                "incremental = true\nsubject_attribute = \"uid\"",
                "source.incremental",
            ),
        ] {
            let err = parse(&with(table, line)).expect_err(line);
            assert!(err.contains(key), "{line}: {err}");
        }
        let http = parse(&LDAP.replace("ldaps://ldap.example.com", "https://ldap.example.com"));
        assert!(http
            .expect_err("https")
            .starts_with("source.url must be an ldap://"));
        let no_password = parse(&LDAP.replace("bind_password = \"pw\"\n", ""));
        assert!(no_password
            .expect_err("no password")
            .starts_with("source.ldap.bind_password is missing"));
        let no_base = parse(&LDAP.replace("user_base = \"ou=people,dc=example,dc=com\"\n", ""));
        assert!(no_base
            .expect_err("no base")
            .starts_with("source.ldap.user_base"));
    }

    #[test]
    fn the_bind_password_comes_from_the_environment_first() {
        let text = LDAP.replace("bind_password = \"pw\"\n", "");
        let env = |name: &str| (name == ENV_SOURCE_BIND_PASSWORD).then(|| "from-env".to_owned());
        let config = Config::parse(&text, "t", &env).expect("valid");
        let SourceKind::Ldap(ldap) = config.source.kind else {
            panic!("ldap")
        };
        assert_eq!(ldap.bind.expect("bind").password.expose(), "from-env");
    }
}
