//! Where each source that reads changes keeps its position between runs (a
//! delta link, a sync cookie), in the store's `meta` tree under the source's name.

use super::{Cache, CacheError};

const PREFIX: &str = "cursor:";

impl Cache {
    /// The position the last complete run of `source` left, if any.
    pub fn cursor(&self, source: &str) -> Result<Option<String>, CacheError> {
        let found = self
            .meta
            .get(format!("{PREFIX}{source}"))
            .map_err(|e| self.store_error(e))?;
        found
            .map(|value| {
                String::from_utf8(value.to_vec())
                    .map_err(|_| self.unreadable(format!("the cursor of {source} is not text")))
            })
            .transpose()
    }

    /// Keeps `cursor` for `source`'s next read; `None` forgets it, so that the
    /// next read is a full one.
    pub async fn save_cursor(&self, source: &str, cursor: Option<&str>) -> Result<(), CacheError> {
        let key = format!("{PREFIX}{source}");
        self.write_meta(key, cursor.map(str::as_bytes)).await
    }

    /// Sets (or, with `None`, removes) one `meta` entry, durably.
    pub(super) async fn write_meta(
        &self,
        key: String,
        value: Option<&[u8]>,
    ) -> Result<(), CacheError> {
        let written = match value {
            Some(value) => self.meta.insert(key, value),
            None => self.meta.remove(key),
        };
        written.map_err(|e| self.store_error(e))?;
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
    async fn a_cursor_is_kept_per_source_across_reopening_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert_eq!(cache.cursor("okta https://a").unwrap(), None);
            cache
                .save_cursor("okta https://a", Some("delta-1"))
                .await
                .unwrap();
            cache
                .save_cursor("okta https://b", Some("other"))
                .await
                .unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(
            cache.cursor("okta https://a").unwrap().as_deref(),
            Some("delta-1")
        );
        cache.save_cursor("okta https://a", None).await.unwrap();
        assert_eq!(cache.cursor("okta https://a").unwrap(), None);
        assert_eq!(
            cache.cursor("okta https://b").unwrap().as_deref(),
            Some("other")
        );
    }
}
