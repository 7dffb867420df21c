//! The realm's groups as a tree, their members, and each user's groups.
//!
//! The tree comes from `/groups`: whole, nested in `subGroups`, before Keycloak
//! 23; from 23 on, each level's children are paged at `/groups/{id}/children`
//! (`subGroupCount` says there are some). Members are listed per group, direct
//! members only; with `inherit_parent_groups` a subgroup's members count as
//! members of every group above it (the shared nesting code flattens them).

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};

use super::decode::{KcGroup, KcMember};
use super::paging::Offsets;
use super::KeycloakSource;
use crate::config::KeycloakGroupName;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize::group_name_text;
use crate::source::SourceError;

/// Member and children listings fetched at once.
pub(super) const LISTINGS_IN_FLIGHT: usize = 4;

/// A group of the tree, with the index of its parent.
struct Node {
    id: String,
    name: GroupName,
    parent: Option<usize>,
}

impl KeycloakSource {
    /// Each member's groups, by the configured name.
    pub(super) async fn memberships(
        &self,
    ) -> Result<HashMap<Subject, Vec<GroupName>>, SourceError> {
        let nodes = self.tree().await?;
        let nodes = &nodes;
        let listed: Vec<ListedGroup> = futures::stream::iter(0..nodes.len())
            .map(|index| self.listed(nodes, index))
            .buffered(LISTINGS_IN_FLIGHT)
            .try_collect()
            .await?;
        let names = nodes
            .iter()
            .map(|node| (node.id.clone(), node.name.clone()))
            .collect();
        membership::named_groups_of_members(listed, &names).map_err(|err| {
            SourceError::Inconsistent {
                url: self.url(&["groups"]).to_string(),
                reason: err.to_string(),
            }
        })
    }

    /// `nodes[index]` with its direct members, keyed by id.
    async fn listed(&self, nodes: &[Node], index: usize) -> Result<ListedGroup, SourceError> {
        let node = &nodes[index];
        Ok(ListedGroup {
            name: node.id.clone(),
            members: self.members(&node.id).await?,
            groups: self.nested(nodes, index),
        })
    }

    /// The ids of the groups whose members count as `nodes[index]`'s members.
    fn nested(&self, nodes: &[Node], index: usize) -> Vec<String> {
        if !self.inherit_parent_groups {
            return Vec::new();
        }
        let children = nodes.iter().filter(|node| node.parent == Some(index));
        children.map(|child| child.id.clone()).collect()
    }

    /// Every group of the realm, parents before their children. The tree is
    /// walked a level at a time, so the children of a level's groups can be
    /// asked for together.
    async fn tree(&self) -> Result<Vec<Node>, SourceError> {
        let top: Vec<KcGroup> = Offsets::new(&self.http, self.url(&["groups"]), self.page_size)
            .all()
            .await?;
        let mut nodes: Vec<Node> = Vec::new();
        let mut level: Vec<(KcGroup, Option<usize>)> = top.into_iter().map(|g| (g, None)).collect();
        while !level.is_empty() {
            let complete: Vec<(KcGroup, Option<usize>)> = futures::stream::iter(level)
                .map(|entry| self.with_children(entry))
                .buffered(LISTINGS_IN_FLIGHT)
                .try_collect()
                .await?;
            let mut next = Vec::new();
            for (group, parent) in complete {
                let index = nodes.len();
                let name = self.group_name(&group, parent.map(|p| &nodes[p].name));
                nodes.push(Node {
                    name,
                    id: group.id,
                    parent,
                });
                next.extend(
                    group
                        .sub_groups
                        .into_iter()
                        .map(|child| (child, Some(index))),
                );
            }
            level = next;
        }
        Ok(nodes)
    }

    /// The group with its children, asked for when the server pages them.
    async fn with_children(
        &self,
        (mut group, parent): (KcGroup, Option<usize>),
    ) -> Result<(KcGroup, Option<usize>), SourceError> {
        if group.children_paged() {
            let children = self.url(&["groups", &group.id, "children"]);
            group.sub_groups = Offsets::new(&self.http, children, self.page_size)
                .all()
                .await?;
        }
        Ok((group, parent))
    }

    /// The group's name in the gateway: its `name`, or its `path` (built from
    /// the parent's when the server sent none).
    fn group_name(&self, group: &KcGroup, parent: Option<&GroupName>) -> GroupName {
        match (self.group_name, &group.path) {
            (KeycloakGroupName::Name, _) => {
                GroupName::new(group_name_text(&group.name).unwrap_or(&group.id))
            }
            (KeycloakGroupName::Path, Some(path)) => GroupName::new(path),
            (KeycloakGroupName::Path, None) => match parent {
                Some(parent) => GroupName::new(&format!("{parent}/{}", group.name)),
                None => GroupName::new(&format!("/{}", group.name)),
            },
        }
    }

    /// The direct members of a group.
    async fn members(&self, group_id: &str) -> Result<Vec<Subject>, SourceError> {
        let mut url = self.url(&["groups", group_id, "members"]);
        url.query_pairs_mut()
            .append_pair("briefRepresentation", "true");
        let members: Vec<KcMember> = Offsets::new(&self.http, url, self.page_size).all().await?;
        Ok(members.into_iter().map(|m| Subject::new(m.id)).collect())
    }
}
