//! Okta's groups of the configured types, each with its members. Okta groups do
//! not nest: a member is a user.

use std::collections::{BTreeSet, HashMap};

use futures::StreamExt;

use super::decode::{OktaGroup, OktaUser};
use super::paging::Pages;
use super::OktaSource;
use crate::model::Subject;
use crate::source::group_table::{GroupTable, TableGroup};
use crate::source::vendor_read::LISTINGS_IN_FLIGHT;
use crate::source::SourceError;

/// What reading the groups found besides the table.
#[derive(Default)]
pub struct GroupRead {
    pub table: GroupTable,
    /// Members of the groups re-read, by id, as the member listings gave them
    /// (whole user objects), when asked to keep them.
    pub profiles: HashMap<String, OktaUser>,
    pub requests: usize,
    /// The server's clock when the listing began.
    pub server_time: Option<std::time::SystemTime>,
}

/// One group's members as read.
#[derive(Default)]
struct Members {
    ids: BTreeSet<Subject>,
    profiles: Vec<OktaUser>,
    requests: usize,
}

impl OktaSource {
    /// Lists the groups; a group `previous` holds at the same version keeps its
    /// members from there, any other is read whole, [`LISTINGS_IN_FLIGHT`] at a
    /// time. `keep_profiles` keeps the members read, for a change read that must
    /// deliver them.
    pub(super) async fn read_groups(
        &self,
        previous: Option<&GroupTable>,
        keep_profiles: bool,
    ) -> Result<GroupRead, SourceError> {
        let mut read = GroupRead::default();
        let mut listing = Pages::new(&self.http, self.groups_url());
        let mut listed = Vec::new();
        while let Some(page) = listing.next::<OktaGroup>().await? {
            listed.extend(page);
        }
        (read.requests, read.server_time) = (listing.requests, listing.server_time);
        let reads = listed.into_iter().map(|group| async move {
            let version = group.version();
            let known = previous
                .and_then(|table| table.get(&group.id))
                .filter(|known| known.version == version);
            let members = match known {
                Some(known) => Members {
                    ids: known.members.clone(),
                    ..Members::default()
                },
                None => self.read_members(&group.id, keep_profiles).await?,
            };
            Ok::<_, SourceError>((group, version, members))
        });
        let mut reads = futures::stream::iter(reads).buffered(LISTINGS_IN_FLIGHT);
        while let Some(done) = reads.next().await {
            let (group, version, members) = done?;
            read.requests += members.requests;
            let profiles = members.profiles.into_iter();
            read.profiles
                .extend(profiles.filter_map(|user| Some((user.id.clone()?, user))));
            let group_id = group.id;
            let entry = TableGroup {
                name: group.profile.name.unwrap_or_default(),
                version,
                members: members.ids,
                nested: BTreeSet::new(),
            };
            if read.table.insert(group_id.clone(), entry).is_some() {
                return Err(SourceError::Inconsistent {
                    url: self.groups_url().to_string(),
                    reason: format!("group {group_id} is listed twice"),
                });
            }
        }
        Ok(read)
    }

    /// Every member of group `id`.
    async fn read_members(&self, id: &str, keep_profiles: bool) -> Result<Members, SourceError> {
        let mut members = Members::default();
        let mut listing = Pages::new(&self.http, self.members_url(id));
        while let Some(page) = listing.next::<OktaUser>().await? {
            for user in page {
                let Some(user_id) = user.id.as_deref() else {
                    continue;
                };
                members.ids.insert(Subject::new(user_id));
                if keep_profiles {
                    members.profiles.push(user);
                }
            }
        }
        members.requests = listing.requests;
        Ok(members)
    }
}
