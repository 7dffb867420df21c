//! Where each source that reads changes keeps its position between runs (a
//! delta link, a sync cookie), in the store's `meta` tree under the source's
//! name, and apart from it the base the position stands on, if it has one (see
//! [`Cursor`]).

use std::sync::{Arc, MutexGuard, PoisonError};

use rustc_hash::FxHashMap;

use super::{Cache, CacheError};
use crate::model::Cursor;

const PREFIX: &str = "cursor:";
const BASE_PREFIX: &str = "cursor-base:";

/// Each source's base as last read or written: a daemon reads a base of
/// megabytes from the store once, not at every run.
pub(super) type KnownBases = FxHashMap<String, Arc<str>>;

impl Cache {
    /// Where the last complete run of `source` left it, if anywhere.
    pub fn cursor(&self, source: &str) -> Result<Option<Cursor>, CacheError> {
        let Some(position) = self.meta_text::<String>(&format!("{PREFIX}{source}"), source)? else {
            return Ok(None);
        };
        let known = self.known_bases().get(source).cloned();
        let base = match known {
            Some(base) => Some(base),
            None => {
                let base: Option<Arc<str>> =
                    self.meta_text(&format!("{BASE_PREFIX}{source}"), source)?;
                if let Some(base) = &base {
                    self.known_bases().insert(source.to_owned(), base.clone());
                }
                base
            }
        };
        Ok(Some(Cursor { position, base }))
    }

    /// Keeps `position` for `source`'s next read, and `new_base` in place of the
    /// base kept if one is given, in one write; `None` forgets both, so that the
    /// next read is a full one.
    ///
    /// Not flushed: a run saves its cursor after its outcomes were flushed, so a
    /// cursor lost to a crash only makes the next read read again what this one
    /// read, and find it done. sled flushes within half a second anyway, and a
    /// flush costs a change run about 1 ms of its 15 (docs/performance.md).
    pub fn save_cursor(
        &self,
        source: &str,
        position: Option<&str>,
        new_base: Option<&Arc<str>>,
    ) -> Result<(), CacheError> {
        let (key, base_key) = (
            format!("{PREFIX}{source}"),
            format!("{BASE_PREFIX}{source}"),
        );
        let mut batch = sled::Batch::default();
        match (position, new_base) {
            (None, _) => {
                batch.remove(key.as_bytes());
                batch.remove(base_key.as_bytes());
            }
            (Some(position), base) => {
                batch.insert(key.as_bytes(), position.as_bytes());
                if let Some(base) = base {
                    batch.insert(base_key.as_bytes(), base.as_bytes());
                }
            }
        }
        self.meta
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))?;
        match (position, new_base) {
            (None, _) => drop(self.known_bases().remove(source)),
            (Some(_), Some(base)) => {
                drop(self.known_bases().insert(source.to_owned(), base.clone()))
            }
            (Some(_), None) => {}
        }
        Ok(())
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

    /// A `meta` entry of `source`'s that must be text, copied once out of the
    /// store (a base is megabytes).
    fn meta_text<T: for<'a> From<&'a str>>(
        &self,
        key: &str,
        source: &str,
    ) -> Result<Option<T>, CacheError> {
        let found = self.meta.get(key).map_err(|e| self.store_error(e))?;
        found
            .map(|value| {
                std::str::from_utf8(&value)
                    .map(T::from)
                    .map_err(|_| self.unreadable(format!("the cursor of {source} is not text")))
            })
            .transpose()
    }

    fn known_bases(&self) -> MutexGuard<'_, KnownBases> {
        self.known_bases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
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
                .save_cursor("okta https://a", Some("delta-1"), None)
                .unwrap();
            cache
                .save_cursor("okta https://b", Some("other"), None)
                .unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(
            cache.cursor("okta https://a").unwrap(),
            Some(Cursor::at("delta-1"))
        );
        cache.save_cursor("okta https://a", None, None).unwrap();
        assert_eq!(cache.cursor("okta https://a").unwrap(), None);
        assert_eq!(
            cache.cursor("okta https://b").unwrap(),
            Some(Cursor::at("other"))
        );
    }

    #[tokio::test]
    async fn a_base_is_kept_until_a_new_one_is_given_and_forgotten_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let source = "ldap ldap://a";
        let base: Arc<str> = Arc::from("listing 1");
        let with = |position: &str, base: &Arc<str>| Cursor {
            position: position.to_owned(),
            base: Some(base.clone()),
        };
        {
            let cache = Cache::open(dir.path()).unwrap();
            cache.save_cursor(source, Some("p1"), Some(&base)).unwrap();
            cache.save_cursor(source, Some("p2"), None).unwrap();
            assert_eq!(cache.cursor(source).unwrap(), Some(with("p2", &base)));
        }
        // Read back from the store by the next process, then replaced.
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p2", &base)));
        let second: Arc<str> = Arc::from("listing 2");
        cache
            .save_cursor(source, Some("p3"), Some(&second))
            .unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p3", &second)));
        cache.save_cursor(source, None, None).unwrap();
        cache.save_cursor(source, Some("p4"), None).unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(Cursor::at("p4")));
    }
}
