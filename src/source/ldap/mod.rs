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
mod pool;
mod ranges;
mod refresh;
mod search;
mod state;
mod users;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use super::cursor::{self, NextRead, Position};
use super::{Cursor, Delivery, Directory, Read, SourceError};
use crate::config::{AttributeMap, Incremental, LdapConfig};
use connection::Connection;
use state::State;
use users::UserReader;

pub struct LdapSource {
    config: LdapConfig,
    users: UserReader,
    tls: Arc<rustls::ClientConfig>,
    incremental: Incremental,
    said: Said,
    resident: state::Resident,
    connections: pool::Pool,
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
            resident: state::Resident::default(),
            connections: pool::Pool::default(),
        })
    }

    async fn read_directory(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        cursor: Option<&Cursor>,
    ) -> Result<Read, SourceError> {
        let mut connection = self
            .connections
            .take(Connection::open(&self.config, &self.tls))
            .await?;
        let read = match self.incremental {
            Incremental::Off => {
                self.full_read(&mut connection, shutdown, delivery, false)
                    .await
            }
            Incremental::On { full_read_every } => {
                let position = cursor.map(|c| c.position.as_str());
                match cursor::next_read(position, full_read_every, SystemTime::now()) {
                    NextRead::Changes(position) => {
                        let base = cursor.and_then(|c| c.base.as_deref());
                        self.read_changes(&mut connection, shutdown, delivery, position, base)
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
        self.connections.settle(connection, read).await
    }

    /// Puts `state` in the read as the cursor the next read continues from,
    /// and keeps it for that read; `position` places its token.
    fn keep_state(
        &self,
        read: &mut Read,
        mut state: State,
        position: impl FnOnce(String) -> Position,
    ) {
        let (token, base) = state.encode();
        read.cursor = Some(position(token.clone()).encode());
        read.cursor_base = base;
        self.resident.keep(token, state);
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
        cursor: Option<&'a Cursor>,
    ) -> BoxFuture<'a, Result<Read, SourceError>> {
        Box::pin(async move { self.read_directory(shutdown, &delivery, cursor).await })
    }

    fn reads_changes(&self) -> bool {
        self.incremental != Incremental::Off
    }

    fn reads_again(&self) {
        self.resident.enable();
        self.connections.enable();
    }

    fn name(&self) -> String {
        format!("ldap {}", self.config.url.as_str().trim_end_matches('/'))
    }

    fn probe(&self) -> BoxFuture<'_, Result<String, SourceError>> {
        Box::pin(self.check())
    }
}
