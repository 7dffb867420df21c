//! How many users a run settled each way: reported by the run, kept in the
//! cache's run history, and logged.

use serde::{Deserialize, Serialize};

/// How many users each count holds. Every directory entry lands in exactly one of
/// the first nine; the deactivation counts are about managed users, who may have
/// left the directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counts {
    pub created: usize,
    /// Already in the gateway; now managed by idsync.
    pub existing: usize,
    pub updated: usize,
    pub reactivated: usize,
    pub unchanged: usize,
    pub skipped_invalid: usize,
    pub skipped_inactive: usize,
    pub failed: usize,
    /// Not done because a shutdown or an abort stopped the run.
    pub interrupted: usize,
    pub deactivated: usize,
    pub deactivation_failed: usize,
    /// Held back by the `max_deactivations` guard.
    pub deactivations_blocked: usize,
}

impl Counts {
    /// Whether the run left work undone that an operator should look at.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || self.deactivation_failed > 0 || self.deactivations_blocked > 0
    }
}
