//! A change read: the users whose `lastUpdated` moved since the last read, and
//! every user whose groups changed, each delivered whole.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::decode::OktaUser;
use super::paging::Pages;
use super::{inconsistent, since, to_users, OktaSource, OktaState, CHUNK};
use crate::model::Subject;
use crate::source::cursor::Position;
use crate::source::group_table::Memberships;
use crate::source::vendor_read::encode;
use crate::source::{Delivery, Read, Scope, SourceError};

/// Ids asked for in one `filter=id eq … or …` request.
const IDS_PER_REQUEST: usize = 20;

impl OktaSource {
    pub(super) async fn change_read(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        position: &Position,
        state: OktaState,
    ) -> Result<Read, SourceError> {
        let started = SystemTime::now();
        let groups = self.read_groups(Some(&state.groups), true).await?;
        let wanted = state.groups.affected(&groups.table);
        let (wanted, profiles) = self
            .changed_users(shutdown, &state.since, wanted, groups.profiles)
            .await?;
        let next = OktaState {
            since: since(groups.server_time.unwrap_or(started)),
            groups: groups.table,
        };
        let cursor = encode(&next);
        let delivered: HashSet<Subject> = wanted.iter().cloned().collect();
        let mut memberships = next
            .groups
            .memberships_of(&delivered)
            .map_err(|err| inconsistent(&self.groups_url(), err))?;
        let mut read = deliver(delivery, wanted, profiles, &mut memberships);
        read.cursor = Some(position.advanced(cursor).encode());
        Ok(read)
    }

    /// `wanted` (the users whose groups changed) and the users updated since
    /// `since`, with the profiles of all of them that Okta still has.
    async fn changed_users(
        &self,
        shutdown: &CancellationToken,
        since: &str,
        mut wanted: BTreeSet<Subject>,
        mut profiles: HashMap<String, OktaUser>,
    ) -> Result<(BTreeSet<Subject>, HashMap<String, OktaUser>), SourceError> {
        let filter = format!("lastUpdated gt \"{since}\"");
        let mut listing = Pages::new(&self.http, self.users_url(Some(&filter)));
        while let Some(page) = listing.next::<OktaUser>().await? {
            keep(page, &mut profiles, &mut wanted);
        }
        let missing: Vec<&Subject> = wanted
            .iter()
            .filter(|s| !profiles.contains_key(s.as_str()))
            .collect();
        let mut found = HashMap::new();
        for ids in missing.chunks(IDS_PER_REQUEST) {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            self.read_by_id(ids, &mut found).await?;
        }
        profiles.extend(found);
        Ok((wanted, profiles))
    }

    /// Users by id, whatever their status.
    async fn read_by_id(
        &self,
        ids: &[&Subject],
        found: &mut HashMap<String, OktaUser>,
    ) -> Result<(), SourceError> {
        let filter: Vec<String> = ids
            .iter()
            .map(|id| format!("id eq \"{}\"", id.as_str().replace('"', "\\\"")))
            .collect();
        let mut listing = Pages::new(&self.http, self.users_url(Some(&filter.join(" or "))));
        while let Some(page) = listing.next::<OktaUser>().await? {
            for user in page {
                if let Some(id) = user.id.clone() {
                    found.insert(id, user);
                }
            }
        }
        Ok(())
    }
}

/// Delivers each wanted user found, whole; the others are gone from Okta
/// altogether (deleted after deactivation) and count as removed.
fn deliver(
    delivery: &Delivery,
    wanted: BTreeSet<Subject>,
    mut profiles: HashMap<String, OktaUser>,
    memberships: &mut Memberships,
) -> Read {
    let mut read = Read::default();
    let mut removed = Vec::new();
    let mut found = Vec::new();
    for subject in wanted {
        match profiles.remove(subject.as_str()) {
            Some(user) => found.push(user),
            None => removed.push(subject),
        }
    }
    read.entries = found.len();
    let mut found = found.into_iter().peekable();
    while found.peek().is_some() {
        let chunk = found.by_ref().take(CHUNK).collect();
        delivery.deliver(to_users(chunk, memberships, &mut read));
    }
    tracing::info!(
        delivered = read.entries,
        removed = removed.len(),
        "Read the Okta users changed since the last read."
    );
    read.scope = Scope::Changes { removed };
    read
}

/// Keeps the users of a page and marks them to be delivered.
fn keep(
    page: Vec<OktaUser>,
    profiles: &mut HashMap<String, OktaUser>,
    wanted: &mut BTreeSet<Subject>,
) {
    for user in page {
        if let Some(id) = user.id.clone() {
            wanted.insert(Subject::new(id.as_str()));
            profiles.insert(id, user);
        }
    }
}
