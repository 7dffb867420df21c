//! The shared [`SyncWorld`](super::sync_world::SyncWorld) with the checks the
//! vendor source tests make against a fake's [`Org`]: what the gateway holds
//! against what the organisation says.

use std::collections::BTreeMap;
use std::ops::Deref;

use super::org::Org;
use super::sync_world::SyncWorld;

/// The shared [`SyncWorld`], with the checks against an [`Org`].
pub struct OrgWorld(SyncWorld);

impl Deref for OrgWorld {
    type Target = SyncWorld;

    fn deref(&self) -> &SyncWorld {
        &self.0
    }
}

impl OrgWorld {
    pub async fn start() -> Self {
        Self(SyncWorld::start().await)
    }

    /// Every active user of `org` is held, invited, with exactly its `expected`
    /// groups; every other held user is inactive.
    pub fn assert_holds(&self, org: &Org, expected: &BTreeMap<String, Vec<String>>) {
        let held = self.held();
        for user in org.users.iter().filter(|u| u.active) {
            let (groups, status) = held
                .get(&user.email)
                .unwrap_or_else(|| panic!("{} is held", user.email));
            assert_eq!(
                (groups, status.as_str()),
                (&expected[&user.email], "invited"),
                "{}",
                user.email
            );
        }
        let active: Vec<&str> = org
            .users
            .iter()
            .filter(|u| u.active)
            .map(|u| u.email.as_str())
            .collect();
        for (email, (_, status)) in &held {
            if !active.contains(&email.as_str()) {
                assert_eq!(status, "inactive", "{email} left or was disabled");
            }
        }
    }
}
