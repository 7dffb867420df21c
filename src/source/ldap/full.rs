//! The full read: groups, inactive users, then every user. With incremental
//! reads on, the users come from a content-synchronisation refresh without a
//! cookie, whose final cookie starts the next incremental read.

use std::collections::HashSet;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::connection::{code, failure, result_text, Connection, Item};
use super::entry::Entry;
use super::groups::{GroupListing, Hierarchy, Memberships};
use super::refresh::{Refresh, RefreshEnd};
use super::{LdapSource, Said};
use crate::model::{DirectoryUser, Subject};
use crate::source::cursor::Position;
use crate::source::Directory as _;
use crate::source::{Delivery, Read, Scope, SourceError};

/// Users handed to the planner at a time.
const CHUNK: usize = 1000;

/// Users on their way to the planner, and what the read found.
pub struct Output<'a> {
    delivery: &'a Delivery,
    chunk: Vec<DirectoryUser>,
    /// Subjects delivered by a refresh the server cut short, which the paged read
    /// that replaces it must not deliver again.
    delivered: Option<HashSet<Subject>>,
    pub read: Read,
}

impl<'a> Output<'a> {
    pub fn new(delivery: &'a Delivery) -> Self {
        Self {
            delivery,
            chunk: Vec::with_capacity(CHUNK),
            delivered: None,
            read: Read::default(),
        }
    }

    pub fn push(&mut self, user: DirectoryUser) {
        if let Some(delivered) = &mut self.delivered {
            if !delivered.insert(user.subject.clone()) {
                return;
            }
        }
        self.chunk.push(user);
    }

    /// Hands over a full chunk, then waits until the planner has room.
    pub async fn pace(&mut self) {
        if self.chunk.len() >= CHUNK {
            self.flush();
            self.delivery.room().await;
        }
    }

    pub fn flush(&mut self) {
        self.delivery.deliver(std::mem::take(&mut self.chunk));
    }
}

/// What the groups say, for a full read.
struct Groups {
    memberships: Memberships,
    /// The nesting by the groups' `memberOf`, when the member values agree with it.
    hierarchy: Option<Hierarchy>,
}

impl LdapSource {
    pub(super) async fn full_read(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        incremental: bool,
    ) -> Result<Read, SourceError> {
        let started = SystemTime::now();
        let groups = self.read_groups(connection, incremental).await?;
        let inactive = self.inactive_subjects(connection, None).await?;
        let mut output = Output::new(delivery);
        let mut hierarchy = groups.hierarchy.as_ref();
        let mut cookie = None;
        if incremental
            && !self
                .said
                .size_limited
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            cookie = self
                .refresh_all(
                    connection,
                    shutdown,
                    &groups,
                    &inactive,
                    &mut output,
                    &mut hierarchy,
                )
                .await?;
        }
        if cookie.is_none() {
            self.paged_users(
                connection,
                shutdown,
                &groups.memberships,
                &inactive,
                &mut output,
            )
            .await?;
        }
        output.flush();
        let mut read = output.read;
        read.scope = Scope::Complete;
        read.cursor = match (hierarchy, cookie) {
            (Some(hierarchy), Some(cookie)) => {
                let token = super::token(&hierarchy.digest(), &cookie);
                Some(Position::after_full_read(token, started).encode())
            }
            _ => None,
        };
        Ok(read)
    }

    /// Every user by a refresh without a cookie; the cookie it ends with, or
    /// `None` when the server cannot do it (then the caller reads by pages).
    /// Clears `hierarchy` when a user's `memberOf` disagrees with the groups.
    async fn refresh_all<'h>(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        groups: &Groups,
        inactive: &HashSet<Subject>,
        output: &mut Output<'_>,
        hierarchy: &mut Option<&'h Hierarchy>,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        output.delivered = Some(HashSet::new());
        let attributes = self.users.attributes(true);
        let mut refresh = Refresh::start(connection, &self.config, &attributes, None).await?;
        while let Some(entry) = refresh.next_changed(shutdown).await? {
            if let Some(user) =
                self.full_user(&entry, &groups.memberships, inactive, &mut output.read)
            {
                if hierarchy.is_some_and(|h| h.names_of(entry.texts("memberOf")) != user.groups) {
                    self.member_of_differs(&entry);
                    *hierarchy = None;
                }
                output.push(user);
            }
            output.pace().await;
        }
        match refresh.finish().await? {
            RefreshEnd::Done { cookie, .. } => Ok(Some(cookie)),
            RefreshEnd::Fallback(reason) => {
                let flag = if reason.is_limit() {
                    &self.said.size_limited
                } else {
                    &self.said.no_content_sync
                };
                if Said::first(flag) {
                    tracing::warn!(source = %self.name(), "reading by pages instead of content synchronisation: {reason}");
                }
                output.read = Read::default();
                Ok(None)
            }
        }
    }

    fn member_of_differs(&self, entry: &Entry) {
        if Said::first(&self.said.member_of_differs) {
            tracing::warn!(
                source = %self.name(),
                user = %entry.dn,
                "the user's memberOf does not match the groups' member values (is the memberof overlay on?): every read will be a full read"
            );
        }
    }

    async fn paged_users(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        memberships: &Memberships,
        inactive: &HashSet<Subject>,
        output: &mut Output<'_>,
    ) -> Result<(), SourceError> {
        let config = &self.config;
        let attributes = self.users.attributes(false);
        let page = Some(config.page_size.get());
        let url = connection.url().to_owned();
        let mut search = connection
            .search(
                &config.user_base,
                &config.user_filter,
                &attributes,
                page,
                Vec::new(),
            )
            .await?;
        while let Some(item) = search.next().await? {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            if let Some(entry) = self.entry_of(item) {
                if let Some(user) = self.full_user(&entry, memberships, inactive, &mut output.read)
                {
                    output.push(user);
                }
                output.pace().await;
            }
        }
        self.check_done(&url, &config.user_base, &search.finish().await)
    }

    /// A user of a full read, or `None` when it is unusable (then it is recorded).
    fn full_user(
        &self,
        entry: &Entry,
        memberships: &Memberships,
        inactive: &HashSet<Subject>,
        read: &mut Read,
    ) -> Option<DirectoryUser> {
        read.entries += 1;
        let subject = match self.users.subject(entry) {
            Ok(subject) => subject,
            Err(unusable) => {
                read.unusable.push(unusable);
                return None;
            }
        };
        let groups = self
            .users
            .member_key(entry)
            .and_then(|key| memberships.get(&key).cloned())
            .unwrap_or_default();
        let inactive = inactive.contains(&subject);
        Some(self.users.user(entry, subject, groups, inactive))
    }

    /// The group listing with its members (and `memberOf`, to check it).
    async fn read_groups(
        &self,
        connection: &mut Connection,
        incremental: bool,
    ) -> Result<Groups, SourceError> {
        let config = &self.config;
        let mut attributes = vec![
            config.group_name_attribute.as_str(),
            config.member_attribute.name(),
        ];
        if incremental {
            attributes.push("memberOf");
        }
        let url = connection.url().to_owned();
        let mut listing = GroupListing::default();
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
        while let Some(item) = search.next().await? {
            if let Some(entry) = self.entry_of(item) {
                let added = listing.add(
                    &entry,
                    &config.group_name_attribute,
                    &config.member_attribute,
                );
                added.map_err(|reason| failure(&url, reason))?;
            }
        }
        self.check_done(&url, &config.group_base, &search.finish().await)?;
        tracing::debug!(source = %self.name(), groups = listing.len(), "groups read");
        let hierarchy = incremental.then(|| listing.hierarchies()).and_then(|(by_members, by_member_of)| {
            let agree = by_members.same_as(&by_member_of);
            if !agree && Said::first(&self.said.member_of_differs) {
                tracing::warn!(source = %self.name(), "the groups' memberOf does not match their member values (is the memberof overlay on?): every read will be a full read");
            }
            agree.then_some(by_member_of)
        });
        let memberships = listing
            .memberships()
            .map_err(|reason| failure(&url, reason))?;
        Ok(Groups {
            memberships,
            hierarchy,
        })
    }

    /// Subjects of the users matching `inactive_filter`, of those in `only` if given.
    pub(super) async fn inactive_subjects(
        &self,
        connection: &mut Connection,
        only: Option<&[Subject]>,
    ) -> Result<HashSet<Subject>, SourceError> {
        let config = &self.config;
        let mut inactive = HashSet::new();
        let Some(filter) = &config.inactive_filter else {
            return Ok(inactive);
        };
        let url = connection.url().to_owned();
        let subject = self.users.subject_attribute().to_owned();
        let batches: Vec<String> = match only {
            None => vec![String::new()],
            Some(subjects) => subjects
                .chunks(100)
                .map(|batch| {
                    let any: String = batch
                        .iter()
                        .map(|s| format!("({subject}={})", ldap3::ldap_escape(s.as_str())))
                        .collect();
                    format!("(|{any})")
                })
                .collect(),
        };
        for restriction in batches {
            let filter = format!("(&{}{filter}{restriction})", config.user_filter);
            let page = Some(config.page_size.get());
            let mut search = connection
                .search(
                    &config.user_base,
                    &filter,
                    &[subject.as_str()],
                    page,
                    Vec::new(),
                )
                .await?;
            while let Some(item) = search.next().await? {
                if let Some(entry) = self.entry_of(item) {
                    inactive.extend(self.users.subject(&entry).ok());
                }
            }
            self.check_done(&url, &config.user_base, &search.finish().await)?;
        }
        Ok(inactive)
    }

    /// The entry of a search item; a referral is reported, not followed.
    pub(super) fn entry_of(&self, item: Item) -> Option<Entry> {
        match item {
            Item::Entry(entry, _) => Some(entry),
            Item::Referral(urls) => {
                tracing::warn!(source = %self.name(), referral = %urls.join(" "), "the directory referred to another server; referrals are not followed");
                None
            }
            Item::Intermediate(_) => None,
        }
    }

    /// A search that ended any other way than complete aborts the read.
    pub(super) fn check_done(
        &self,
        url: &str,
        base: &str,
        result: &ldap3::LdapResult,
    ) -> Result<(), SourceError> {
        let why = match result.rc {
            code::SUCCESS => return Ok(()),
            code::SIZE_LIMIT | code::ADMIN_LIMIT => {
                "the server's size limit cut the search short (does it refuse paged results?)"
            }
            code::TIME_LIMIT => "the server's time limit cut the search short",
            code::REFERRAL => {
                "the server referred the search to another server; referrals are not followed"
            }
            _ => "the search failed",
        };
        Err(failure(
            url,
            format!("search of {base}: {why}: {}", result_text(result)),
        ))
    }
}
