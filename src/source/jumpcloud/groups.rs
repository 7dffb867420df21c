//! JumpCloud user groups and who is in them.

use std::collections::{HashMap, HashSet};

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::decode::{Member, UserGroup};
use super::JumpCloudSource;
use crate::model::{GroupName, Subject};
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize;
use crate::source::paged;
use crate::source::SourceError;

/// Each user's groups: every group whose `membership` lists the user.
pub(super) async fn memberships(
    source: &JumpCloudSource,
    shutdown: &CancellationToken,
) -> Result<HashMap<Subject, Vec<GroupName>>, SourceError> {
    let groups: Vec<UserGroup> = every_page(source, "/api/v2/usergroups", shutdown).await?;
    let mut ids = HashSet::new();
    let mut listed = Vec::with_capacity(groups.len());
    for group in groups {
        if !ids.insert(group.id.clone()) {
            let url = source.url("/api/v2/usergroups", source.page_size, 0);
            let reason = format!(
                "group {:?} is listed twice; the next run reads it again",
                group.id
            );
            return Err(paged::inconsistent(&url, reason));
        }
        let Some(name) = normalize::group_name_text(&group.name) else {
            continue;
        };
        let path = format!("/api/v2/usergroups/{}/membership", group.id);
        let members: Vec<Member> = every_page(source, &path, shutdown).await?;
        listed.push(ListedGroup {
            name: name.to_owned(),
            members: members
                .into_iter()
                .filter(|member| member.kind == "user")
                .map(|member| Subject::new(member.id))
                .collect(),
            groups: Vec::new(),
        });
    }
    membership::groups_of_members(listed).map_err(|err| {
        paged::inconsistent(&source.url("/api/v2/usergroups", source.page_size, 0), err)
    })
}

/// Every entry of a v2 listing, which is a bare JSON array: pages follow until
/// one comes back short.
async fn every_page<T: DeserializeOwned>(
    source: &JumpCloudSource,
    path: &str,
    shutdown: &CancellationToken,
) -> Result<Vec<T>, SourceError> {
    let mut all = Vec::new();
    loop {
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        let url = source.url(path, source.page_size, all.len());
        let page: Vec<T> = source.get(&url).await?;
        let listed = page.len();
        all.extend(page);
        if all.len() > source.limits.max_directory_users {
            let reason = "the listing goes on past source.max_directory_users";
            return Err(paged::inconsistent(&url, reason));
        }
        if listed < source.page_size {
            return Ok(all);
        }
    }
}
