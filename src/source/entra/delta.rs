//! A change read: `users/delta` and `groups/delta` from the links kept, then every
//! user who changed or whose groups changed, read by id and delivered whole.
//! Everything is read before anything is delivered, so a delta link Graph refuses
//! leaves nothing half-delivered before the full read that replaces it.

use std::collections::{BTreeSet, HashMap, HashSet};

use tokio_util::sync::CancellationToken;
use url::Url;

use super::decode::{DeltaEntry, GraphGroup, GraphUser, USER_FIELDS};
use super::paging::Pages;
use super::{add_member, subjects, to_users, EntraSource, EntraState};
use crate::model::Subject;
use crate::source::cursor::Position;
use crate::source::group_table::{GroupTable, TableGroup};
use crate::source::vendor_read::encode;
use crate::source::{Delivery, Read, Scope, SourceError};

/// Ids in one `$filter=id in (…)`: Graph allows 15 values for `in`.
const IDS_PER_REQUEST: usize = 15;

/// What `users/delta` said.
#[derive(Default)]
struct UserChanges {
    changed: BTreeSet<String>,
    removed: BTreeSet<String>,
}

impl EntraSource {
    pub(super) async fn change_read(
        &self,
        shutdown: &CancellationToken,
        delivery: &Delivery,
        position: &Position,
        state: EntraState,
    ) -> Result<Read, SourceError> {
        let (users, users_delta) = self.user_changes(&state.users_delta).await?;
        let mut table = state.groups;
        let (affected, groups_delta) = self
            .apply_group_changes(&state.groups_delta, &mut table)
            .await?;
        let mut wanted: BTreeSet<String> = affected
            .into_iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        wanted.extend(users.changed);
        let mut removed = users.removed;
        wanted.retain(|id| !removed.contains(id));
        let found = self.read_all_by_id(shutdown, &wanted).await?;
        // Listed as a member or as changed, but no longer a user: deleted.
        removed.extend(wanted.iter().filter(|id| !found.contains_key(*id)).cloned());
        let next = EntraState {
            users_delta: users_delta.to_string(),
            groups_delta: groups_delta.to_string(),
            groups: table,
        };
        let cursor = encode(&next);
        let delivered: HashSet<Subject> =
            found.keys().map(|id| Subject::new(id.as_str())).collect();
        let mut memberships = next
            .groups
            .memberships_of(&delivered)
            .map_err(|err| self.inconsistent_groups(err))?;
        let mut read = Read {
            entries: found.len(),
            ..Read::default()
        };
        delivery.deliver(to_users(
            found.into_values().collect(),
            &mut memberships,
            &mut read,
        ));
        tracing::info!(
            delivered = read.entries,
            removed = removed.len(),
            "Read the Entra ID users changed since the last read."
        );
        read.scope = Scope::Changes {
            removed: subjects(removed),
        };
        read.cursor = Some(position.advanced(cursor).encode());
        Ok(read)
    }

    /// The users changed or removed since `link`, and the link for next time.
    async fn user_changes(&self, link: &str) -> Result<(UserChanges, Url), SourceError> {
        let url = stored_link(link)?;
        let mut changes = UserChanges::default();
        let mut listing = Pages::new(&self.http, url);
        while let Some(page) = listing.next::<DeltaEntry>().await? {
            for entry in page {
                if entry.removed.is_some() {
                    changes.changed.remove(&entry.id);
                    changes.removed.insert(entry.id);
                } else {
                    changes.removed.remove(&entry.id);
                    changes.changed.insert(entry.id);
                }
            }
        }
        Ok((changes, self.end_of(listing, link)?))
    }

    /// Applies the group changes since `link` to `table`; returns the users whose
    /// groups they changed and the link for next time.
    async fn apply_group_changes(
        &self,
        link: &str,
        table: &mut GroupTable,
    ) -> Result<(BTreeSet<Subject>, Url), SourceError> {
        let mut listing = Pages::new(&self.http, stored_link(link)?);
        let mut entries = Vec::new();
        while let Some(page) = listing.next::<GraphGroup>().await? {
            entries.extend(page);
        }
        let touched: BTreeSet<String> = entries.iter().map(|g| g.id.clone()).collect();
        let affected = table.apply(&touched, |table| {
            for group in entries {
                apply_group(table, group);
            }
        });
        Ok((affected, self.end_of(listing, link)?))
    }

    fn end_of(&self, listing: Pages<'_>, link: &str) -> Result<Url, SourceError> {
        listing.delta_link.ok_or_else(|| SourceError::Inconsistent {
            url: link.to_owned(),
            reason: "the delta listing ended without an @odata.deltaLink".into(),
        })
    }

    /// The users of `ids` Graph still has.
    async fn read_all_by_id(
        &self,
        shutdown: &CancellationToken,
        ids: &BTreeSet<String>,
    ) -> Result<HashMap<String, GraphUser>, SourceError> {
        let mut found = HashMap::new();
        let ids: Vec<&String> = ids.iter().collect();
        for chunk in ids.chunks(IDS_PER_REQUEST) {
            if shutdown.is_cancelled() {
                return Err(SourceError::Interrupted);
            }
            self.read_by_id(chunk, &mut found).await?;
        }
        Ok(found)
    }

    /// Users by object id; ids Graph no longer has are simply not found.
    async fn read_by_id(
        &self,
        ids: &[&String],
        found: &mut HashMap<String, GraphUser>,
    ) -> Result<(), SourceError> {
        let quoted: Vec<String> = ids
            .iter()
            .map(|id| format!("'{}'", id.replace('\'', "''")))
            .collect();
        let filter = format!("id in ({})", quoted.join(","));
        let url = self.endpoint("users", &[("$filter", &filter), ("$select", USER_FIELDS)]);
        let mut listing = Pages::new(&self.http, url);
        while let Some(page) = listing.next::<GraphUser>().await? {
            for user in page {
                if let Some(id) = user.id.clone() {
                    found.insert(id, user);
                }
            }
        }
        Ok(())
    }
}

/// One entry of `groups/delta`: a group gone, or a group (new, renamed, or with
/// members added or taken out). A group may come in several entries.
fn apply_group(table: &mut GroupTable, group: GraphGroup) {
    if group.removed.is_some() {
        table.remove(&group.id);
        return;
    }
    if table.get(&group.id).is_none() {
        table.insert(group.id.clone(), TableGroup::default());
    }
    if let Some(entry) = table.get_mut(&group.id) {
        if let Some(name) = group.display_name {
            entry.name = name;
        }
        for member in group.members_delta {
            add_member(entry, member);
        }
    }
}

fn stored_link(link: &str) -> Result<Url, SourceError> {
    link.parse().map_err(|err| SourceError::Inconsistent {
        url: link.to_owned(),
        reason: format!("the stored delta link is not a URL: {err}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(json: &str) -> GraphGroup {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn group_entries_add_rename_and_remove() {
        let mut table = GroupTable::default();
        apply_group(
            &mut table,
            group(
                r##"{"id":"g1","displayName":"eng","members@delta":[{"@odata.type":"#microsoft.graph.user","id":"u1"},{"@odata.type":"#microsoft.graph.user","id":"u2"}]}"##,
            ),
        );
        apply_group(
            &mut table,
            group(
                r##"{"id":"g1","members@delta":[{"@odata.type":"#microsoft.graph.user","id":"u2","@removed":{"reason":"deleted"}},{"@odata.type":"#microsoft.graph.group","id":"g2"}]}"##,
            ),
        );
        apply_group(&mut table, group(r#"{"id":"g2","displayName":"sre"}"#));
        let g1 = table.get("g1").unwrap();
        assert_eq!(g1.name, "eng");
        assert_eq!(g1.members, [Subject::new("u1")].into());
        assert_eq!(g1.nested, ["g2".to_owned()].into());
        apply_group(
            &mut table,
            group(r#"{"id":"g2","@removed":{"reason":"deleted"}}"#),
        );
        assert!(table.get("g2").is_none());
    }
}
