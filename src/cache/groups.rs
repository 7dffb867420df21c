//! The gateway groups idsync created for a source, so that with
//! `groups.delete_removed` it deletes only those, never one made in the gateway.

use std::collections::BTreeSet;

use super::{Cache, CacheError};

const PREFIX: &str = "groups-created:";

impl Cache {
    /// The groups idsync created in the gateway for `source`.
    pub fn created_groups(&self, source: &str) -> Result<BTreeSet<String>, CacheError> {
        let found = self
            .meta
            .get(format!("{PREFIX}{source}"))
            .map_err(|e| self.store_error(e))?;
        match found {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|_| {
                self.unreadable(format!("the groups created for {source} are unreadable"))
            }),
            None => Ok(BTreeSet::new()),
        }
    }

    /// Keeps the groups idsync created for `source`, durably.
    pub async fn save_created_groups(
        &self,
        source: &str,
        groups: &BTreeSet<String>,
    ) -> Result<(), CacheError> {
        let bytes = serde_json::to_vec(groups).unwrap_or_default();
        self.meta
            .insert(format!("{PREFIX}{source}"), bytes)
            .map_err(|e| self.store_error(e))?;
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn created_groups_are_kept_per_source_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let groups: BTreeSet<String> = ["ops".to_owned(), "sre".to_owned()].into();
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert!(cache.created_groups("push a").unwrap().is_empty());
            cache.save_created_groups("push a", &groups).await.unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.created_groups("push a").unwrap(), groups);
        assert!(cache.created_groups("push b").unwrap().is_empty());
    }
}
