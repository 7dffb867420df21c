//! The full read: groups, inactive users, then every user. With incremental
//! reads on, the groups and the users come from content-synchronisation
//! refreshes without a cookie, whose final cookies (and the group listing) start
//! the next incremental read.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::connection::{code, failure, result_text, Connection};
use super::entry::Entry;
use super::groups::{GroupListing, Memberships};
use super::refresh::{Fallback, Refresh, RefreshEnd};
use super::search::Item;
use super::wire::Outcome;
use super::{LdapSource, Said, State};
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

impl LdapSource {
    pub(super) async fn full_read(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        incremental: bool,
    ) -> Result<Read, SourceError> {
        let started = SystemTime::now();
        let by_refresh = incremental
            && !self.said.size_limited.load(Ordering::Relaxed)
            && self.offers_content_sync(connection).await?;
        let (listing, groups_cookie) = self.read_groups(connection, shutdown, by_refresh).await?;
        let url = connection.url().to_owned();
        let memberships = listing
            .memberships()
            .map_err(|reason| failure(&url, reason))?;
        let inactive = self.inactive_subjects(connection, None).await?;
        let mut output = Output::new(delivery);
        let mut users_cookie = None;
        if groups_cookie.is_some() {
            users_cookie = self
                .refresh_users(connection, shutdown, &memberships, &inactive, &mut output)
                .await?;
        }
        if users_cookie.is_none() {
            self.paged_users(connection, shutdown, &memberships, &inactive, &mut output)
                .await?;
        }
        output.flush();
        let mut read = output.read;
        read.scope = Scope::Complete;
        if let (Some(users), Some(groups)) = (users_cookie, groups_cookie) {
            let state = State::new(&users, &groups, listing);
            self.keep_state(&mut read, state, |token| {
                Position::after_full_read(token, started)
            });
        }
        Ok(read)
    }

    /// Every user by a refresh without a cookie; the cookie it ends with, or
    /// `None` when the server cannot do it (then the caller reads by pages).
    async fn refresh_users(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        memberships: &Memberships,
        inactive: &HashSet<Subject>,
        output: &mut Output<'_>,
    ) -> Result<Option<Vec<u8>>, SourceError> {
        output.delivered = Some(HashSet::new());
        let config = &self.config;
        let attributes = self.users.attributes();
        let users = (config.user_base.as_str(), config.user_filter.as_str());
        let mut refresh = Refresh::start(connection, users, &attributes, None).await?;
        while let Some(entry) = refresh.next_changed(shutdown).await? {
            if let Some(user) = self.full_user(&entry, memberships, inactive, &mut output.read) {
                output.push(user);
            }
            output.pace().await;
        }
        let end = refresh.finish().await?;
        let cookie = self.cookie_or_fallback(end);
        if cookie.is_none() {
            output.read = Read::default();
        }
        Ok(cookie)
    }

    /// Whether the server lists content synchronisation among its controls (said
    /// once when not). Asking regardless is not safe: Samba's Active Directory
    /// answers a search with a control it does not know by an extended response,
    /// which ends the connection.
    async fn offers_content_sync(&self, connection: &mut Connection) -> Result<bool, SourceError> {
        if connection
            .supports_control(super::content_sync::SYNC_REQUEST_OID)
            .await?
        {
            return Ok(true);
        }
        self.cookie_or_fallback(RefreshEnd::Fallback(Fallback::Unsupported));
        Ok(false)
    }

    /// The cookie a refresh ended with, or `None` (said once) when it fell back.
    pub(super) fn cookie_or_fallback(&self, end: RefreshEnd) -> Option<Vec<u8>> {
        match end {
            RefreshEnd::Done { cookie, .. } => Some(cookie),
            RefreshEnd::Fallback(reason) => {
                let flag = if reason.is_limit() {
                    &self.said.size_limited
                } else {
                    &self.said.no_content_sync
                };
                if Said::first(flag) {
                    tracing::warn!(source = %self.name(), "reading by pages instead of content synchronisation: {reason}");
                }
                None
            }
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
        let attributes = self.users.attributes();
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
        Some(self.users.user(entry, subject, memberships, inactive))
    }

    /// The group listing, by a refresh (with the cookie it ends with) or by pages.
    async fn read_groups(
        &self,
        connection: &mut Connection,
        shutdown: &CancellationToken,
        by_refresh: bool,
    ) -> Result<(GroupListing, Option<Vec<u8>>), SourceError> {
        let config = &self.config;
        let attributes = self.group_attributes();
        let groups = (config.group_base.as_str(), config.group_filter.as_str());
        let url = connection.url().to_owned();
        let mut listing = GroupListing::new(&config.user_base);
        if by_refresh {
            let mut refresh = Refresh::start(connection, groups, &attributes, None).await?;
            for entry in refresh.all_changed(shutdown).await? {
                self.list(&mut listing, &entry, &url)?;
            }
            if let Some(cookie) = self.cookie_or_fallback(refresh.finish().await?) {
                return Ok((listing, Some(cookie)));
            }
            listing = GroupListing::new(&config.user_base);
        }
        let page = Some(config.page_size.get());
        let mut search = connection
            .search(groups.0, groups.1, &attributes, page, Vec::new())
            .await?;
        // Groups sent in ranges are read whole once the listing's search is over.
        let mut ranged = Vec::new();
        while let Some(item) = search.next().await? {
            match self.entry_of(item) {
                Some(entry) if entry.ranged_attribute().is_some() => ranged.push(entry),
                Some(entry) => self.list(&mut listing, &entry, &url)?,
                None => {}
            }
        }
        self.check_done(&url, groups.0, &search.finish().await)?;
        for entry in ranged {
            let entry = connection.read_ranges(entry).await?;
            self.list(&mut listing, &entry, &url)?;
        }
        tracing::debug!(source = %self.name(), groups = listing.len(), "groups read");
        Ok((listing, None))
    }

    fn list(
        &self,
        listing: &mut GroupListing,
        entry: &Entry,
        url: &str,
    ) -> Result<(), SourceError> {
        let config = &self.config;
        listing
            .add(
                entry,
                &config.group_name_attribute,
                &config.member_attribute,
            )
            .map_err(|reason| failure(url, reason))
    }

    pub(super) fn group_attributes(&self) -> Vec<&str> {
        let config = &self.config;
        vec![
            config.group_name_attribute.as_str(),
            config.member_attribute.name(),
            "entryUUID",
        ]
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
        result: &Outcome,
    ) -> Result<(), SourceError> {
        let why = match result.code {
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
