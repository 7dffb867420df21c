//! Okta's groups of the configured types, each with its members. Okta groups do
//! not nest: a member is a user.

use std::collections::HashMap;

use super::decode::{OktaGroup, OktaUser};
use super::paging::Pages;
use super::OktaSource;
use crate::model::Subject;
use crate::source::group_table::{GroupTable, TableGroup};
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

impl OktaSource {
    /// Lists the groups; a group `previous` holds at the same version keeps its
    /// members from there, any other is read whole. `keep_profiles` keeps the
    /// members read, for a change read that must deliver them.
    pub(super) async fn read_groups(
        &self,
        previous: Option<&GroupTable>,
        keep_profiles: bool,
    ) -> Result<GroupRead, SourceError> {
        let mut read = GroupRead::default();
        let mut listing = Pages::new(&self.http, self.groups_url());
        while let Some(page) = listing.next::<OktaGroup>().await? {
            for group in page {
                let version = group.version();
                let unchanged = previous
                    .and_then(|table| table.get(&group.id))
                    .filter(|known| known.version == version);
                let members = match unchanged {
                    Some(known) => known.members.clone(),
                    None => {
                        self.read_members(&group.id, keep_profiles, &mut read)
                            .await?
                    }
                };
                let listed = TableGroup {
                    name: group.profile.name.unwrap_or_default(),
                    version,
                    members,
                    nested: Default::default(),
                };
                if read.table.insert(group.id.clone(), listed).is_some() {
                    return Err(SourceError::Inconsistent {
                        url: self.groups_url().to_string(),
                        reason: format!("group {} is listed twice", group.id),
                    });
                }
            }
        }
        read.requests += listing.requests;
        read.server_time = listing.server_time;
        Ok(read)
    }

    /// Every member of group `id`.
    async fn read_members(
        &self,
        id: &str,
        keep_profiles: bool,
        read: &mut GroupRead,
    ) -> Result<std::collections::BTreeSet<Subject>, SourceError> {
        let mut members = std::collections::BTreeSet::new();
        let mut listing = Pages::new(&self.http, self.members_url(id));
        while let Some(page) = listing.next::<OktaUser>().await? {
            for user in page {
                let Some(user_id) = user.id.clone() else {
                    continue;
                };
                members.insert(Subject::new(user_id.as_str()));
                if keep_profiles {
                    read.profiles.insert(user_id, user);
                }
            }
        }
        read.requests += listing.requests;
        Ok(members)
    }
}
