//! The groups of Auth0 users: their roles or their organizations, as configured.
//! Members are read with checkpoint paging (`from`/`take`, then each answer's
//! `next`), which, unlike offset paging, reaches past the first 1,000.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::decode::{CheckpointPage, MemberRef, Named, RolePage};
use super::Auth0Source;
use crate::config::Auth0Groups;
use crate::model::Subject;
use crate::source::membership::{self, ListedGroup};
use crate::source::normalize;
use crate::source::paged::{self, Memberships};
use crate::source::SourceError;

pub(super) async fn memberships(
    source: &Auth0Source,
    shutdown: &CancellationToken,
) -> Result<Memberships, SourceError> {
    // The listing, and where each entry's members are: `/roles/{id}/users`,
    // `/organizations/{id}/members`.
    let (groups, listing, members_of) = match source.groups_from {
        Auth0Groups::Roles => (roles(source, shutdown).await?, "roles", "users"),
        Auth0Groups::Organizations => {
            let url = source.api("/organizations");
            let organizations = every_checkpoint(source, &url, shutdown).await?;
            (organizations, "organizations", "members")
        }
    };
    let mut listed = Vec::with_capacity(groups.len());
    for group in groups {
        let Some(name) = normalize::group_name_text(&group.name) else {
            tracing::warn!(id = %group.id, "An Auth0 {listing} entry has a blank name; it is no group.");
            continue;
        };
        let url = source.api(&format!("/{listing}/{}/{members_of}", group.id));
        let members: Vec<MemberRef> = every_checkpoint(source, &url, shutdown).await?;
        listed.push(ListedGroup {
            name: name.to_owned(),
            members: members
                .into_iter()
                .map(|m| Subject::new(m.user_id))
                .collect(),
            groups: Vec::new(),
        });
    }
    tracing::info!(
        groups = listed.len(),
        from = listing,
        "Read the Auth0 groups."
    );
    membership::groups_of_members(listed)
        .map_err(|err| paged::inconsistent(&source.api(&format!("/{listing}")), err))
}

/// Every role: `/api/v2/roles` pages by `page`/`per_page` with its total.
async fn roles(
    source: &Auth0Source,
    shutdown: &CancellationToken,
) -> Result<Vec<Named>, SourceError> {
    let mut roles: Vec<Named> = Vec::new();
    for page_number in 0.. {
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        let mut url = source.api("/roles");
        url.query_pairs_mut()
            .append_pair("page", &page_number.to_string())
            .append_pair("per_page", &source.page_size.to_string())
            .append_pair("include_totals", "true");
        let page: RolePage = source.get(&url).await?;
        let listed = page.roles.len();
        roles.extend(page.roles);
        if listed < source.page_size || roles.len() >= page.total {
            let ids: HashSet<&str> = roles.iter().map(|r| r.id.as_str()).collect();
            if ids.len() != roles.len() || roles.len() != page.total {
                let reason = format!("the roles changed while they were read ({} announced, {} listed); the next run reads them again", page.total, roles.len());
                return Err(paged::inconsistent(&url, reason));
            }
            break;
        }
    }
    Ok(roles)
}

/// Every entry of a checkpoint-paged listing: `take` a page, then `from` the
/// `next` it gave, until an answer gives none.
async fn every_checkpoint<T: DeserializeOwned>(
    source: &Auth0Source,
    listing: &Url,
    shutdown: &CancellationToken,
) -> Result<Vec<T>, SourceError> {
    let mut all = Vec::new();
    let mut from: Option<String> = None;
    let mut seen = HashSet::new();
    loop {
        if shutdown.is_cancelled() {
            return Err(SourceError::Interrupted);
        }
        let mut url = listing.clone();
        url.query_pairs_mut()
            .append_pair("take", &source.page_size.to_string());
        if let Some(from) = &from {
            url.query_pairs_mut().append_pair("from", from);
        }
        let page: CheckpointPage<T> = source.get(&url).await?;
        all.extend(page.items);
        if all.len() > source.limits.max_directory_users {
            let reason = "the listing goes on past source.max_directory_users";
            return Err(paged::inconsistent(&url, reason));
        }
        match page.next {
            None => return Ok(all),
            Some(next) if !seen.insert(next.clone()) => {
                let reason = format!("the checkpoint {next:?} came back again");
                return Err(paged::inconsistent(&url, reason));
            }
            Some(next) => from = Some(next),
        }
    }
}
