//! Groups as gateway objects, with `groups.mirror` (always on for push) and a
//! source that lists its groups: every directory group the groups policy maps is
//! created in the gateway, members or not; with `groups.delete_removed`, a group
//! idsync created that the directory no longer has is deleted — never the admin
//! group, never one made in the gateway. Deleted after the users are sent, so a
//! deleted group's members were moved first.

use std::collections::BTreeSet;

use tokio_util::sync::CancellationToken;

use super::Syncer;
use crate::apply::Outcome;
use crate::cache::CacheError;
use crate::groups::Mapping;

/// What happened to the gateway's groups in one run.
#[derive(Debug, Default)]
pub struct GroupsDone {
    pub created: Vec<String>,
    pub deleted: Vec<String>,
    /// Group and why it could not be created or deleted; tried again next run.
    pub failed: Vec<(String, String)>,
}

/// The groups part of a run, between its two steps.
pub(super) struct GroupsStep {
    wanted: BTreeSet<String>,
    created: BTreeSet<String>,
    done: GroupsDone,
}

impl Syncer {
    /// Before the users are sent: creates the directory's groups that idsync has
    /// not created yet, so they are idsync's (a user's create would make them on
    /// the fly, and then nobody could tell them from groups made in the gateway).
    /// A group the gateway had already costs one 409 a run. `None` without
    /// `groups.mirror`, or when the read listed no groups (a source that does not
    /// list them, or a change read).
    pub(super) async fn create_groups(
        &self,
        listed: Option<Vec<String>>,
        stop: &CancellationToken,
    ) -> Option<GroupsStep> {
        if !self.groups.mirror {
            return None;
        }
        let Some(listed) = listed else {
            tracing::info!(
                "The directory listed no groups in this read; groups.mirror creates none this run."
            );
            return None;
        };
        let wanted: BTreeSet<String> = listed
            .iter()
            .filter_map(|name| match self.groups.map(name) {
                Mapping::Synced(name) => Some(name.to_string()),
                Mapping::NotSelected | Mapping::AdminDropped => None,
            })
            .collect();
        let mut step = GroupsStep {
            created: self.created_groups().unwrap_or_default(),
            wanted,
            done: GroupsDone::default(),
        };
        // No listing first: the gateway answers `null` for no groups, which its
        // published spec does not allow, and a 409 says as much as a listing.
        let unknown: Vec<String> = step.wanted.difference(&step.created).cloned().collect();
        for name in unknown {
            match self.applier.create_group(&name, stop).await {
                Outcome::Created => {
                    step.created.insert(name.clone());
                    step.done.created.push(name);
                }
                // The gateway's own group: used, never deleted.
                Outcome::Adopted => {}
                outcome => step.done.failed.push((name, outcome.to_string())),
            }
        }
        Some(step)
    }

    /// After the users were sent (so a deleted group's members were moved
    /// first): with `groups.delete_removed`, deletes the groups idsync created
    /// that the directory no longer has; records what idsync created.
    pub(super) async fn delete_removed_groups(
        &self,
        mut step: GroupsStep,
        stop: &CancellationToken,
    ) -> GroupsDone {
        if self.groups.delete_removed {
            let gone: Vec<String> = step.created.difference(&step.wanted).cloned().collect();
            for name in gone {
                match self.applier.delete_group(&name, stop).await {
                    Outcome::Changed => {
                        step.created.remove(&name);
                        step.done.deleted.push(name);
                    }
                    outcome => step.done.failed.push((name, outcome.to_string())),
                }
            }
        }
        if let Err(err) = self.save_created_groups(&step.created).await {
            step.done
                .failed
                .push(("(recording)".into(), err.to_string()));
        }
        step.done
    }

    fn created_groups(&self) -> Result<BTreeSet<String>, CacheError> {
        match self.cache.as_ref().and_then(|c| c.if_open()) {
            Some(cache) => cache.created_groups(&self.source.name()),
            None => Ok(BTreeSet::new()),
        }
    }

    async fn save_created_groups(&self, created: &BTreeSet<String>) -> Result<(), CacheError> {
        match self.cache.as_ref().and_then(|c| c.if_open()) {
            Some(cache) if !self.dry_run => {
                cache
                    .save_created_groups(&self.source.name(), created)
                    .await
            }
            _ => Ok(()),
        }
    }
}
