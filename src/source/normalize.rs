//! The normalization rules every source follows, so that the same person gets
//! the same e-mail and name whichever directory describes them. E-mail syntax and
//! lower-casing are [`Email::parse`]'s; the gateway's length limits are checked by
//! the planner, which reports the user.

use crate::model::{Email, EmailError, GroupName};

/// One address a directory lists for a user.
#[derive(Debug, Clone, Copy)]
pub struct ListedEmail<'a> {
    pub value: &'a str,
    pub primary: bool,
    /// Typed `work`.
    pub work: bool,
}

/// The primary address, else the first `work` one, else the first, else `login`
/// when it is an address. Blank values do not count.
pub fn choose_email<'a>(
    listed: impl Iterator<Item = ListedEmail<'a>> + Clone,
    login: Option<&str>,
) -> Result<Email, EmailError> {
    let usable = || listed.clone().filter(|e| clean(Some(e.value)).is_some());
    let chosen = usable()
        .find(|e| e.primary)
        .or_else(|| usable().find(|e| e.work))
        .or_else(|| usable().next());
    match chosen {
        Some(email) => Email::parse(email.value),
        None => match clean(login) {
            Some(login) => Email::parse(login).map_err(|_| EmailError::Missing {
                login: Some(login.to_owned()),
            }),
            None => Err(EmailError::Missing { login: None }),
        },
    }
}

/// The display name, else the formatted name, else given and family name.
pub fn choose_name(
    display: Option<&str>,
    formatted: Option<&str>,
    given: Option<&str>,
    family: Option<&str>,
) -> Option<String> {
    clean(display)
        .or_else(|| clean(formatted))
        .map(str::to_owned)
        .or_else(|| {
            let parts: Vec<&str> = [clean(given), clean(family)]
                .into_iter()
                .flatten()
                .collect();
            (!parts.is_empty()).then(|| parts.join(" "))
        })
}

/// A group's name, whichever source and field it comes from (a SCIM group's
/// `displayName`, the `display` of a SCIM user's `groups`, a file's `groups`
/// column or a groups file's `name`): trimmed, so that `" admin "` is `admin` to
/// the groups policy and the admin guard alike; `None` when blank.
pub fn group_name_text(text: &str) -> Option<&str> {
    clean(Some(text))
}

/// [`group_name_text`], as a [`GroupName`].
pub fn group_name(text: &str) -> Option<GroupName> {
    group_name_text(text).map(GroupName::new)
}

/// Trimmed, and `None` when nothing is left.
pub fn clean(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_trimmed_and_blank_ones_dropped() {
        for (raw, expected) in [
            (" admin ", Some("admin")),
            ("\tadmin\n", Some("admin")),
            ("\u{a0}sre\u{2003}", Some("sre")),
            ("data team", Some("data team")),
            ("   ", None),
            ("", None),
        ] {
            assert_eq!(group_name_text(raw), expected, "{raw:?}");
            assert_eq!(
                group_name(raw).map(|g| g.to_string()).as_deref(),
                expected,
                "{raw:?}"
            );
        }
    }

    fn listed(value: &str, primary: bool, work: bool) -> ListedEmail<'_> {
        ListedEmail {
            value,
            primary,
            work,
        }
    }

    #[test]
    fn the_primary_address_wins_then_work_then_the_first() {
        let home = listed("home@x.com", false, false);
        let work = listed("Work@X.com", false, true);
        let primary = listed("main@x.com", true, false);
        assert_eq!(
            choose_email([home, work, primary].into_iter(), None)
                .unwrap()
                .as_str(),
            "main@x.com"
        );
        assert_eq!(
            choose_email([home, work].into_iter(), None)
                .unwrap()
                .as_str(),
            "work@x.com"
        );
        assert_eq!(
            choose_email([home].into_iter(), None).unwrap().as_str(),
            "home@x.com"
        );
    }

    #[test]
    fn blank_addresses_do_not_count_and_the_login_is_the_last_resort() {
        let blank = listed("  ", true, true);
        assert_eq!(
            choose_email([blank].into_iter(), Some("ann@x.com"))
                .unwrap()
                .as_str(),
            "ann@x.com"
        );
        assert_eq!(
            choose_email([blank].into_iter(), Some("ann")),
            Err(EmailError::Missing {
                login: Some("ann".into())
            })
        );
        assert_eq!(
            choose_email([].into_iter(), None),
            Err(EmailError::Missing { login: None })
        );
    }

    #[test]
    fn a_listed_address_that_is_not_bare_is_reported_not_replaced_by_the_login() {
        let bad = listed("Ann <ann@x.com>", true, false);
        assert!(matches!(
            choose_email([bad].into_iter(), Some("ann@x.com")),
            Err(EmailError::NotBare(_))
        ));
    }

    #[test]
    fn names_fall_back_from_display_to_formatted_to_given_and_family() {
        assert_eq!(
            choose_name(Some(" Ann "), Some("A B"), None, None).as_deref(),
            Some("Ann")
        );
        assert_eq!(
            choose_name(Some(""), Some("A B"), None, None).as_deref(),
            Some("A B")
        );
        assert_eq!(
            choose_name(None, None, Some("Ann"), Some("Lee")).as_deref(),
            Some("Ann Lee")
        );
        assert_eq!(
            choose_name(None, None, None, Some("Lee")).as_deref(),
            Some("Lee")
        );
        assert_eq!(choose_name(None, Some(" "), None, None), None);
    }
}
