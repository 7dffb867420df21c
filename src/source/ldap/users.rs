//! A user entry as a [`DirectoryUser`], by the attributes the config names.

use super::entry::{account_disabled, dn_key, guid_text, login_key, Entry};
use std::collections::HashSet;

use super::groups::{MemberKey, Memberships};
use crate::config::{AttributeMap, LdapConfig, LdapPreset, MemberAttribute};
use crate::model::{DirectoryUser, Subject, UnusableEntry};
use crate::source::normalize::{self, ListedEmail};

/// Reads users the way one source's config says.
#[derive(Debug, Clone)]
pub struct UserReader {
    subject: String,
    email: String,
    name: String,
    /// The login, used as the address when no e-mail is listed and it is one.
    login: &'static str,
    slack_id: Option<String>,
    picture: Option<String>,
    /// Active Directory without an `inactive_filter`: the ACCOUNTDISABLE bit.
    disabled_bit: bool,
    /// Member values name users by login (`memberUid`), not by DN.
    members_by_login: bool,
}

impl UserReader {
    pub fn new(config: &LdapConfig, attributes: &AttributeMap) -> Self {
        let ad = config.preset == LdapPreset::ActiveDirectory;
        let column = |path: &Option<crate::config::AttributePath>| {
            path.as_ref().and_then(|p| p.segments.first().cloned())
        };
        Self {
            subject: config.subject_attribute.clone(),
            email: config.email_attribute.clone(),
            name: config.name_attribute.clone(),
            login: if ad { "userPrincipalName" } else { "uid" },
            slack_id: column(&attributes.slack_id),
            picture: column(&attributes.picture),
            disabled_bit: ad && config.inactive_filter.is_none(),
            members_by_login: config.member_attribute == MemberAttribute::Uid,
        }
    }

    /// The attributes a user search asks for.
    pub fn attributes(&self) -> Vec<&str> {
        let mut names = vec![
            self.subject.as_str(),
            &self.email,
            &self.name,
            "cn",
            "givenName",
            "sn",
            self.login,
        ];
        names.extend(self.slack_id.as_deref());
        names.extend(self.picture.as_deref());
        if self.disabled_bit {
            names.push("userAccountControl");
        }
        names
    }

    pub fn subject_attribute(&self) -> &str {
        &self.subject
    }

    /// The entry's subject: text as it is, a binary `objectGUID` as GUID text.
    pub fn subject(&self, entry: &Entry) -> Result<Subject, UnusableEntry> {
        let value = entry.values(&self.subject).next();
        let text = value.and_then(|v| match std::str::from_utf8(v) {
            Ok(text) if !self.subject.eq_ignore_ascii_case("objectGUID") => {
                normalize::clean(Some(text)).map(str::to_owned)
            }
            _ => guid_text(v),
        });
        text.map(Subject::new).ok_or_else(|| UnusableEntry {
            label: entry.dn.clone(),
            reason: format!("has no usable {}", self.subject),
        })
    }

    /// How group member values name this user.
    pub fn member_key(&self, entry: &Entry) -> Option<MemberKey> {
        if self.members_by_login {
            entry.text("uid").map(|uid| Subject::new(login_key(uid)))
        } else {
            Some(Subject::new(dn_key(&entry.dn)))
        }
    }

    /// The user, with its groups from `memberships`; inactive when `inactive`
    /// (the users matching the inactive filter) holds it.
    pub fn user(
        &self,
        entry: &Entry,
        subject: Subject,
        memberships: &Memberships,
        inactive: &HashSet<Subject>,
    ) -> DirectoryUser {
        let groups = self
            .member_key(entry)
            .and_then(|key| memberships.get(&key).cloned())
            .unwrap_or_default();
        let inactive = inactive.contains(&subject);
        let disabled = self.disabled_bit
            && entry
                .text("userAccountControl")
                .is_some_and(account_disabled);
        let listed = entry.texts(&self.email).map(|value| ListedEmail {
            value,
            primary: false,
            work: false,
        });
        let text = |name: &Option<String>| {
            name.as_deref()
                .and_then(|n| normalize::clean(entry.text(n)))
                .map(str::to_owned)
        };
        DirectoryUser {
            subject,
            active: !inactive && !disabled,
            email: normalize::choose_email(listed, entry.text(self.login)),
            name: normalize::choose_name(
                entry.text(&self.name),
                entry.text("cn"),
                entry.text("givenName"),
                entry.text("sn"),
            ),
            groups,
            slack_id: text(&self.slack_id),
            picture: text(&self.picture),
        }
    }
}
