//! The incremental read: the users added, changed or deleted since the last
//! read's cookie. A changed user's groups come from its `memberOf` and the
//! groups' nesting, read anew each time (names and `memberOf` only: small). When
//! that nesting differs from the last read's, users' groups may have changed
//! without their entries changing, and the read becomes a full read; so does any
//! refresh the server cannot give (see [`Fallback`](super::refresh::Fallback)).

use std::collections::HashSet;

use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::entry::Entry;
use super::full::Output;
use super::groups::Hierarchy;
use super::refresh::{Refresh, RefreshEnd};
use super::{LdapSource, Said};
use crate::model::Subject;
use crate::source::cursor::Position;
use crate::source::Directory as _;
use crate::source::{Delivery, Read, Scope, SourceError};

impl LdapSource {
    pub(super) async fn read_changes(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        position: Position,
    ) -> Result<Read, SourceError> {
        let Some((digest, cookie)) = super::parse_token(&position.token) else {
            return self.full_read(connection, shutdown, delivery, true).await;
        };
        let hierarchy = self.read_hierarchy(connection).await?;
        let new_digest = hierarchy.digest();
        if new_digest != digest {
            tracing::info!(source = %self.name(), "reading the whole directory: groups were added, removed, renamed or nested differently since the last read");
            return self.full_read(connection, shutdown, delivery, true).await;
        }
        let attributes = self.users.attributes(true);
        let mut refresh =
            Refresh::start(connection, &self.config, &attributes, Some(cookie)).await?;
        let mut changed = Vec::new();
        while let Some(entry) = refresh.next_changed(shutdown).await? {
            changed.push(entry);
        }
        let (cookie, removed) = match refresh.finish().await? {
            RefreshEnd::Done { cookie, removed } => (cookie, removed),
            RefreshEnd::Fallback(reason) => {
                let flag = if reason.is_limit() {
                    &self.said.size_limited
                } else {
                    &self.said.no_content_sync
                };
                if Said::first(flag) || !reason.is_limit() {
                    tracing::warn!(source = %self.name(), "reading the whole directory: {reason}");
                }
                return self.full_read(connection, shutdown, delivery, true).await;
            }
        };
        tracing::info!(source = %self.name(), changed = changed.len(), removed = removed.len(), "read the changes since the last read");
        let mut read = self
            .deliver_changed(connection, delivery, &hierarchy, changed)
            .await?;
        let removed = removed
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        read.scope = Scope::Changes { removed };
        read.cursor = Some(
            position
                .advanced(super::token(&new_digest, &cookie))
                .encode(),
        );
        Ok(read)
    }

    /// The groups' names and nesting, by their `memberOf`.
    async fn read_hierarchy(&self, connection: &mut Connection) -> Result<Hierarchy, SourceError> {
        let config = &self.config;
        let attributes = [config.group_name_attribute.as_str(), "memberOf"];
        let url = connection.url().to_owned();
        let page = Some(config.page_size.get());
        let mut search = connection
            .search(
                &config.group_base,
                &config.group_filter,
                &attributes,
                page,
                Vec::new(),
            )
            .await?;
        let mut groups = Vec::new();
        while let Some(item) = search.next().await? {
            groups.extend(self.entry_of(item));
        }
        self.check_done(&url, &config.group_base, &search.finish().await)?;
        Ok(Hierarchy::from_entries(
            &groups,
            &config.group_name_attribute,
        ))
    }

    async fn deliver_changed(
        &self,
        connection: &mut Connection,
        delivery: &Delivery,
        hierarchy: &Hierarchy,
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
            let groups = hierarchy.names_of(entry.texts("memberOf"));
            let inactive = inactive.contains(&subject);
            output.push(self.users.user(entry, subject, groups, inactive));
            output.pace().await;
        }
        output.flush();
        Ok(output.read)
    }
}
