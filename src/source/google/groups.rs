//! The customer's groups, their members, and each user's groups.
//!
//! Members are listed direct only, and nested groups (members of type `GROUP`)
//! are flattened by the shared nesting code, not by `includeDerivedMembership`:
//! a derived listing repeats every member of a nested group at each group above
//! it, so a directory-wide group nesting the departments would transfer the
//! whole directory again; direct listings transfer each membership once, and
//! a cycle is reported the way every source reports it.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};

use super::decode::{GGroup, GMember};
use super::paging::PageTokens;
use super::GoogleSource;
use crate::config::GoogleGroupName;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize::group_name_text;
use crate::source::SourceError;

/// Member listings fetched at once.
pub(super) const MEMBER_LISTINGS_IN_FLIGHT: usize = 4;
/// Google's cap on `maxResults` for groups and members.
const MAX_GROUPS_PAGE: u32 = 200;

/// A group's direct members: users, and the ids of groups nested in it.
struct Members {
    users: Vec<Subject>,
    groups: Vec<String>,
}

impl GoogleSource {
    /// Each member's groups, by the configured name.
    pub(super) async fn memberships(
        &self,
    ) -> Result<HashMap<Subject, Vec<GroupName>>, SourceError> {
        let groups = self.groups().await?;
        let known: HashSet<&str> = groups.iter().map(|g| g.id.as_str()).collect();
        let known = &known;
        let listed: Vec<ListedGroup> = futures::stream::iter(0..groups.len())
            .map(|index| self.listed(&groups[index], known))
            .buffered(MEMBER_LISTINGS_IN_FLIGHT)
            .try_collect()
            .await?;
        let names = groups
            .iter()
            .map(|group| (group.id.clone(), self.group_name(group)))
            .collect();
        membership::named_groups_of_members(listed, &names).map_err(|err| {
            SourceError::Inconsistent {
                url: self.directory(&["groups"]).to_string(),
                reason: err.to_string(),
            }
        })
    }

    /// Every group of the customer.
    async fn groups(&self) -> Result<Vec<GGroup>, SourceError> {
        let mut url = self.directory(&["groups"]);
        url.query_pairs_mut()
            .append_pair("customer", &self.customer)
            .append_pair(
                "maxResults",
                &self.page_size.min(MAX_GROUPS_PAGE).to_string(),
            );
        PageTokens::new(&self.http, url).all().await
    }

    /// `group` with its direct members, keyed by id. Groups nested from outside
    /// the customer are not listed, and bring no users of it: they are left out.
    async fn listed(
        &self,
        group: &GGroup,
        known: &HashSet<&str>,
    ) -> Result<ListedGroup, SourceError> {
        let mut members = self.members(&group.id).await?;
        members.groups.retain(|id| {
            let inside = known.contains(id.as_str());
            if !inside {
                tracing::warn!(group = %group.id, nested = %id, "Ignoring a nested group from outside the customer.");
            }
            inside
        });
        Ok(ListedGroup {
            name: group.id.clone(),
            members: members.users,
            groups: members.groups,
        })
    }

    async fn members(&self, group_id: &str) -> Result<Members, SourceError> {
        let mut url = self.directory(&["groups", group_id, "members"]);
        url.query_pairs_mut().append_pair(
            "maxResults",
            &self.page_size.min(MAX_GROUPS_PAGE).to_string(),
        );
        let listed: Vec<GMember> = PageTokens::new(&self.http, url).all().await?;
        let mut members = Members {
            users: Vec::new(),
            groups: Vec::new(),
        };
        for member in listed {
            match (member.kind.as_deref(), member.id) {
                (Some("USER"), Some(id)) => members.users.push(Subject::new(id)),
                (Some("GROUP"), Some(id)) => members.groups.push(id),
                (kind, _) => {
                    tracing::warn!(group = %group_id, kind = kind.unwrap_or("none"), "Ignoring a group member that is neither a user nor a group.");
                }
            }
        }
        Ok(members)
    }

    fn group_name(&self, group: &GGroup) -> GroupName {
        let chosen = match self.group_name {
            GoogleGroupName::Name => group.name.as_deref(),
            GoogleGroupName::Email => group.email.as_deref(),
        };
        let fallback = group.email.as_deref().unwrap_or(&group.id);
        GroupName::new(chosen.and_then(group_name_text).unwrap_or(fallback))
    }
}
