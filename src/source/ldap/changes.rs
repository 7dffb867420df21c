//! The incremental read: the groups and the users added, changed or deleted
//! since the last read's cookies. A changed group comes whole; against the kept
//! listing it tells whose groups changed (those who joined or left it), and those
//! users are read again even when their own entries did not change. A group that
//! was renamed or nested differently makes it a full read, as does any refresh
//! the server cannot give (see [`Fallback`](super::refresh::Fallback)).

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use super::connection::{code, Connection};
use super::entry::{dn_key, Entry};
use super::full::Output;
use super::groups::{GroupChange, MemberKey, Memberships};
use super::refresh::{Refresh, RefreshEnd};
use super::{LdapSource, State};
use crate::config::MemberAttribute;
use crate::model::Subject;
use crate::source::cursor::Position;
use crate::source::Directory as _;
use crate::source::{Delivery, Read, Scope, SourceError};

/// What the two refreshes told.
struct Changes {
    users: Vec<Entry>,
    removed: Vec<Subject>,
    /// Members whose groups changed.
    affected: HashSet<MemberKey>,
    state: State,
}

impl LdapSource {
    pub(super) async fn read_changes(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        position: Position,
        base: Option<&str>,
    ) -> Result<Read, SourceError> {
        let kept = self.resident.take(&position.token);
        let Some(state) = kept.or_else(|| State::decode(&position.token, base)) else {
            tracing::info!(source = %self.name(), "reading the whole directory: the stored position is not one this version wrote");
            return self.full_read(connection, shutdown, delivery, true).await;
        };
        let Some(changes) = self.refresh_both(connection, shutdown, state).await? else {
            return self.full_read(connection, shutdown, delivery, true).await;
        };
        tracing::info!(
            source = %self.name(),
            changed = changes.users.len(),
            removed = changes.removed.len(),
            group_changes = changes.affected.len(),
            "read the changes since the last read"
        );
        let mut users = changes.users;
        let known: HashSet<MemberKey> = users
            .iter()
            .filter_map(|e| self.users.member_key(e))
            .collect();
        let others = changes.affected.iter().filter(|key| !known.contains(*key));
        users.extend(self.users_by_key(connection, others).await?);
        let keys: HashSet<MemberKey> = users
            .iter()
            .filter_map(|e| self.users.member_key(e))
            .collect();
        let memberships = changes.state.memberships_of(&keys);
        let mut read = self
            .deliver_changed(connection, delivery, &memberships, users)
            .await?;
        let removed: HashSet<Subject> = changes.removed.into_iter().collect();
        read.scope = Scope::Changes {
            removed: removed.into_iter().collect(),
        };
        self.keep_state(&mut read, changes.state, |token| position.advanced(token));
        Ok(read)
    }

    /// Refreshes the groups and the users from `state`, at once: the users on a
    /// second connection, as neither refresh depends on the other. `None` when
    /// the read must be a full read instead.
    async fn refresh_both(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        mut state: State,
    ) -> Result<Option<Changes>, SourceError> {
        let config = &self.config;
        let attributes = self.group_attributes();
        let groups = (config.group_base.as_str(), config.group_filter.as_str());
        let groups = Self::refresh(
            connection,
            shutdown,
            groups,
            &attributes,
            state.groups_cookie(),
        );
        let users = self.refresh_users_apart(shutdown, state.users_cookie());
        let ((changed_groups, groups_end), (changed_users, users_end)) =
            tokio::try_join!(groups, users)?;
        let Some((groups_cookie, deleted_groups)) = self.done_or_full(groups_end) else {
            return Ok(None);
        };
        let Some((users_cookie, removed)) = self.done_or_full(users_end) else {
            return Ok(None);
        };
        let member = &config.member_attribute;
        let affected = match state.apply(
            &changed_groups,
            &deleted_groups,
            &config.group_name_attribute,
            member,
        ) {
            GroupChange::Members(affected) => affected,
            GroupChange::Nesting => {
                tracing::info!(source = %self.name(), "reading the whole directory: a group was renamed, moved or nested differently");
                return Ok(None);
            }
        };
        let state = state.with_cookies(&users_cookie, &groups_cookie);
        Ok(Some(Changes {
            users: changed_users,
            removed,
            affected,
            state,
        }))
    }

    /// The users' refresh, on a connection of its own.
    async fn refresh_users_apart(
        &self,
        shutdown: &CancellationToken,
        cookie: Option<Vec<u8>>,
    ) -> Result<(Vec<Entry>, RefreshEnd), SourceError> {
        let config = &self.config;
        let attributes = self.users.attributes();
        let users = (config.user_base.as_str(), config.user_filter.as_str());
        let mut connection = self
            .connections
            .take(Connection::open(config, &self.tls))
            .await?;
        let refreshed = Self::refresh(&mut connection, shutdown, users, &attributes, cookie).await;
        self.connections.settle(connection, refreshed).await
    }

    /// One refresh to its end: the entries added or changed, and how it ended.
    async fn refresh(
        connection: &mut Connection,
        shutdown: &CancellationToken,
        search: (&str, &str),
        attributes: &[&str],
        cookie: Option<Vec<u8>>,
    ) -> Result<(Vec<Entry>, RefreshEnd), SourceError> {
        let mut refresh = Refresh::start(connection, search, attributes, cookie).await?;
        let changed = refresh.all_changed(shutdown).await?;
        Ok((changed, refresh.finish().await?))
    }

    fn done_or_full(&self, end: RefreshEnd) -> Option<(Vec<u8>, Vec<Subject>)> {
        match end {
            RefreshEnd::Done { cookie, removed } => Some((cookie, removed)),
            RefreshEnd::Fallback(reason) => {
                tracing::warn!(source = %self.name(), "reading the whole directory: {reason}");
                None
            }
        }
    }

    /// The current entries of users named by member values (gone ones are skipped).
    async fn users_by_key(
        &self,
        connection: &mut Connection,
        keys: impl Iterator<Item = &MemberKey>,
    ) -> Result<Vec<Entry>, SourceError> {
        let config = &self.config;
        let attributes = self.users.attributes();
        let base_key = dn_key(&config.user_base);
        let url = connection.url().to_owned();
        let mut found = Vec::new();
        for key in keys {
            let (base, filter) = match &config.member_attribute {
                MemberAttribute::Uid => {
                    let filter = format!(
                        "(&{}(uid={}))",
                        config.user_filter,
                        ldap3::ldap_escape(key.as_str())
                    );
                    (config.user_base.clone(), filter)
                }
                MemberAttribute::Dn(_) if !key.as_str().ends_with(&base_key) => continue,
                MemberAttribute::Dn(_) => (key.to_string(), config.user_filter.clone()),
            };
            let mut search = connection
                .search(&base, &filter, &attributes, None, Vec::new())
                .await?;
            while let Some(item) = search.next().await? {
                found.extend(self.entry_of(item));
            }
            let result = search.finish().await;
            if result.code != code::NO_SUCH_OBJECT {
                self.check_done(&url, &base, &result)?;
            }
        }
        Ok(found)
    }

    async fn deliver_changed(
        &self,
        connection: &mut Connection,
        delivery: &Delivery,
        memberships: &Memberships,
        changed: Vec<Entry>,
    ) -> Result<Read, SourceError> {
        let mut output = Output::new(delivery);
        let mut subjects = Vec::with_capacity(changed.len());
        for entry in &changed {
            match self.users.subject(entry) {
                Ok(subject) => subjects.push(Some(subject)),
                Err(unusable) => {
                    output.read.unusable.push(unusable);
                    subjects.push(None);
                }
            }
        }
        let known: Vec<Subject> = subjects.iter().flatten().cloned().collect();
        let inactive = self.inactive_subjects(connection, Some(&known)).await?;
        output.read.entries = changed.len();
        for (entry, subject) in changed.iter().zip(subjects) {
            let Some(subject) = subject else { continue };
            output.push(self.users.user(entry, subject, memberships, &inactive));
            output.pace().await;
        }
        output.flush();
        Ok(output.read)
    }
}
