//! `kind = "ldap"`: an LDAP directory (OpenLDAP, FreeIPA, Active Directory).
//!
//! A full read lists the groups, then the inactive users' subjects, then the users
//! a page at a time (RFC 2696), handing each page to the planner. With
//! `source.incremental`, users are read by RFC 4533 content synchronisation
//! (refreshOnly) instead, users and groups alike, and the next read asks only for
//! what changed since the cookies the last one ended with; see [`changes`].

mod ber;
mod changes;
mod connection;
mod content_sync;
mod entry;
mod full;
mod groups;
mod ranges;
mod refresh;
mod search;
mod users;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::cursor::{self, NextRead};
use super::{Delivery, Directory, Read, SourceError};
use crate::config::{AttributeMap, Incremental, LdapConfig};
use connection::Connection;
use groups::GroupListing;
use users::UserReader;

pub struct LdapSource {
    config: LdapConfig,
    users: UserReader,
    tls: Arc<rustls::ClientConfig>,
    incremental: Incremental,
    said: Said,
}

/// Fallbacks logged once per process, not at every run.
#[derive(Default)]
struct Said {
    no_content_sync: AtomicBool,
    size_limited: AtomicBool,
}

impl Said {
    /// True the first time only.
    fn first(flag: &AtomicBool) -> bool {
        !flag.swap(true, Ordering::Relaxed)
    }
}

impl LdapSource {
    pub fn new(
        config: &LdapConfig,
        attributes: &AttributeMap,
        incremental: Incremental,
    ) -> Result<Self, SourceError> {
        Ok(Self {
            users: UserReader::new(config, attributes),
            tls: connection::tls_config(config.ca_pem.as_deref())?,
            config: config.clone(),
            incremental,
            said: Said::default(),
        })
    }

    async fn read_directory(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        cursor: Option<&str>,
    ) -> Result<Read, SourceError> {
        let mut connection = Connection::open(&self.config, &self.tls).await?;
        let read = match self.incremental {
            Incremental::Off => {
                self.full_read(&mut connection, shutdown, delivery, false)
                    .await
            }
            Incremental::On { full_read_every } => {
                match cursor::next_read(cursor, full_read_every, SystemTime::now()) {
                    NextRead::Changes(position) => {
                        self.read_changes(&mut connection, shutdown, delivery, position)
                            .await
                    }
                    NextRead::Full(reason) => {
                        tracing::info!(source = %self.name(), "reading the whole directory: {reason}");
                        self.full_read(&mut connection, shutdown, delivery, true)
                            .await
                    }
                }
            }
        };
        connection.close().await;
        read
    }

    /// Binds, and reads one entry of each base.
    async fn check(&self) -> Result<String, SourceError> {
        let mut connection = Connection::open(&self.config, &self.tls).await?;
        let config = &self.config;
        let bound = match &config.bind {
            Some(bind) => format!("bound as {}", bind.dn),
            None => "bound anonymously".to_owned(),
        };
        let mut found = vec![bound];
        for (base, filter) in [
            (&config.user_base, &config.user_filter),
            (&config.group_base, &config.group_filter),
        ] {
            let entries = connection.probe(base, filter).await?;
            found.push(format!(
                "{base}: {}",
                if entries > 0 {
                    "readable"
                } else {
                    "no matching entry"
                }
            ));
        }
        if self.incremental != Incremental::Off {
            let sync = connection
                .supports_control(content_sync::SYNC_REQUEST_OID)
                .await?;
            found.push(format!(
                "content synchronisation (RFC 4533) {}",
                if sync {
                    "offered"
                } else {
                    "not offered: every read will be a full read"
                }
            ));
        }
        connection.close().await;
        Ok(found.join("; "))
    }
}

impl Directory for LdapSource {
    fn read<'a>(
        &'a self,
        shutdown: &'a CancellationToken,
        delivery: Delivery,
        cursor: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move { self.read_directory(shutdown, &delivery, cursor).await })
    }

    fn reads_changes(&self) -> bool {
        self.incremental != Incremental::Off
    }

    fn name(&self) -> String {
        format!("ldap {}", self.config.url.as_str().trim_end_matches('/'))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(self.check())
    }
}

/// What an incremental read continues from, kept in the cursor: the server's
/// cookies for the users and the groups (hex: a cookie is bytes), and the group
/// listing, to tell who left a group that changed.
#[derive(Debug, PartialEq, Eq)]
struct State {
    users: String,
    groups: String,
    listing: GroupListing,
}

/// The first line of a [`State`]'s text.
const STATE_HEADER: &str = "ldap-state/2";

impl State {
    fn new(users: &[u8], groups: &[u8], listing: GroupListing) -> Self {
        Self {
            users: hex(users),
            groups: hex(groups),
            listing,
        }
    }

    /// A header line, the two cookies on a line, then the listing (see
    /// [`GroupListing::write`]): lines, read without escapes, because the
    /// listing is megabytes for a large directory and is read and written at
    /// every run (docs/performance.md).
    fn encode(&self) -> String {
        let mut text = format!("{STATE_HEADER}\n{} {}\n", self.users, self.groups);
        self.listing.write(&mut text);
        text
    }

    /// The state [`encode`](Self::encode) wrote; `None` for anything else,
    /// including the JSON of versions before it.
    fn decode(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(STATE_HEADER)?.strip_prefix('\n')?;
        let (cookies, listing) = rest.split_once('\n')?;
        let (users, groups) = cookies.split_once(' ')?;
        unhex(users)?;
        unhex(groups)?;
        Some(Self {
            users: users.to_owned(),
            groups: groups.to_owned(),
            listing: GroupListing::read(listing)?,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_keeps_both_cookies_and_the_listing() {
        let cookie = b"rid=000,csn=20261205054546.134084Z#000000#000#000000";
        let mut listing = GroupListing::new("ou=People, dc=x");
        let group = entry::Entry::for_tests(
            "cn=sre,ou=groups,dc=x",
            &[
                ("cn", &["sre"]),
                (
                    "member",
                    &["uid=ann,ou=people,dc=x", "cn=db,ou=groups,dc=x"],
                ),
            ],
        );
        let member = crate::config::MemberAttribute::Dn("member".into());
        listing.add(&group, "cn", &member).expect("added");
        let state = State::new(cookie, b"g", listing);
        // Members under the user base are kept without it; members, one a line.
        let text = state.encode();
        assert!(
            text.ends_with("\n=cn=db,ou=groups,dc=x\n~uid=ann\n"),
            "{text}"
        );
        let decoded = State::decode(&text).expect("decodes");
        assert_eq!(unhex(&decoded.users).as_deref(), Some(&cookie[..]));
        assert_eq!(decoded, state);
        // A listing cut short (in a group, or after one), a bad cookie, the
        // JSON of earlier versions.
        assert_eq!(State::decode(&text[..text.len() - 10]), None);
        assert_eq!(
            State::decode(&text.replacen("1 groups", "2 groups", 1)),
            None
        );
        assert_eq!(State::decode(&text.replacen(" 67\n", " 6g\n", 1)), None);
        assert_eq!(
            State::decode(r#"{"users":"","groups":"","suffix":"","listing":{"groups":{}}}"#),
            None
        );
        assert_eq!(State::decode("https://x"), None);
    }
}
