//! The directory as its two listings arrive: users wait for the group listing to
//! be complete, then leave with their groups.

use super::*;

/// What the two listings of one read share.
pub(super) struct Listings {
    pub(super) keys: IdKeys,
    /// `parallel_pages` permits, one held by each page downloading.
    pub(super) downloads: Arc<Semaphore>,
    pub(super) assembly: Mutex<Assembly>,
    /// Set once the group listing is complete and closed.
    pub(super) groups_complete: tokio::sync::watch::Sender<bool>,
}

impl Listings {
    pub(super) fn assembled(&self) -> std::sync::MutexGuard<'_, Assembly> {
        self.assembly.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The directory as its two listings arrive. Users wait for the group listing to
/// be complete, then leave with their groups.
#[derive(Default)]
pub(super) struct Assembly {
    pub(super) memberships: MembershipIndex,
    pub(super) listing: Read,
    /// Users read before the group listing was complete, with the memberships
    /// they list themselves (`User.groups`).
    pub(super) waiting: Vec<(DirectoryUser, Vec<ScimRef>)>,
    /// Complete users not handed out yet.
    pub(super) ready: Vec<DirectoryUser>,
    /// The users listing's `totalResults`, once its first page is in.
    pub(super) users_total: usize,
}

impl Assembly {
    /// More users wait for the group listing than may be read ahead of it.
    pub(super) fn too_many_waiting(&self) -> bool {
        self.waiting.len() > max_waiting(self.users_total)
    }

    /// Adds a page of users; returns the users that are complete now.
    pub(super) fn add_users(
        &mut self,
        page: Vec<PulledUser>,
        total: usize,
    ) -> Result<Vec<DirectoryUser>, String> {
        events::users_pulled(page.len());
        if self.listing.entries == 0 {
            self.memberships.expect_users(total);
            self.users_total = total;
        }
        // Sized once for a full list: grown by doubling, it could take twice that.
        // Never more than a bounded amount ahead of the users delivered, whatever
        // `totalResults` announces.
        let most_waiting = (max_waiting(total) + page.len())
            .min(total)
            .min(self.listing.entries + page.len() + RESERVED_AHEAD);
        for pulled in page {
            self.listing.entries += 1;
            let groups = self
                .memberships
                .add_user(pulled.id, pulled.user.is_ok())
                .map_err(|err| membership_error(err, &pulled.scim_id))?;
            match (pulled.user, groups) {
                (Ok(mut user), Some(groups)) => {
                    user.groups = groups;
                    let user = with_listed_groups(&self.memberships, user, pulled.listed_groups);
                    self.ready.push(user);
                }
                (Ok(user), None) => {
                    if self.waiting.capacity() == 0 {
                        self.waiting.reserve_exact(most_waiting);
                    }
                    self.waiting.push((user, pulled.listed_groups));
                }
                (Err(unusable), _) => self.listing.unusable.push(unusable),
            }
        }
        Ok(std::mem::take(&mut self.ready))
    }

    pub(super) fn add_group(&mut self, group: PulledGroup) -> Result<(), String> {
        let Some(name) = group.name else {
            tracing::warn!(group_id = %group.id, "Ignoring a group without displayName.");
            return Ok(());
        };
        self.memberships
            .add_group(&group.id, GroupName::new(&name), &group.members)
            .map_err(|err| membership_error(err, &group.id))
    }

    /// The group listing is complete: the users read so far get their groups.
    pub(super) fn close_groups(&mut self) {
        let so_far = self.memberships.close_groups();
        let memberships = &self.memberships;
        // Collected in the waiting list's own buffer: it can hold tens of MB.
        let waited: Vec<DirectoryUser> = std::mem::take(&mut self.waiting)
            .into_iter()
            .zip(so_far)
            .map(|((mut user, listed), groups)| {
                user.groups = groups;
                with_listed_groups(memberships, user, listed)
            })
            .collect();
        if self.ready.is_empty() {
            self.ready = waited;
        } else {
            self.ready.extend(waited);
        }
    }
}

/// Adds the groups a user lists itself, once the group listing is complete.
pub(super) fn with_listed_groups(
    memberships: &MembershipIndex,
    mut user: DirectoryUser,
    listed: Vec<ScimRef>,
) -> DirectoryUser {
    let before = user.groups.len();
    user.groups.extend(listed.into_iter().filter_map(|group| {
        memberships.listed_group(group.value.as_deref()?, group.display.as_deref())
    }));
    if user.groups.len() > before {
        user.groups.sort_unstable();
        user.groups.dedup();
    }
    user
}
