//! Where each source that reads changes keeps its position between runs (a
//! delta link, a sync cookie), in the store's `meta` tree under the source's
//! name, and apart from it the base the position stands on, if it has one (see
//! [`Cursor`]).
//!
//! A base lives in a file of its own beside the store, which `meta` names. In
//! the store, a base of megabytes is one of sled's blobs, which sled's flusher,
//! cleaning the segments that runs' writes left behind, writes again whole, on
//! the cores the runs use: every two minutes or so for a lab daemon making a
//! change run every 2 s, each old copy kept until sled's next snapshot
//! (docs/performance.md, run L10).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, MutexGuard, PoisonError};

use rustc_hash::{FxHashMap, FxHashSet};

use super::{private, Cache, CacheError};
use crate::model::Cursor;

const PREFIX: &str = "cursor:";
/// The name of the file holding the source's base.
const BASE_FILE_PREFIX: &str = "cursor-base-file:";
/// Where the version before kept the base itself: still read, and removed once
/// a new base is written.
const INLINE_BASE_PREFIX: &str = "cursor-base:";
/// How a base file's name begins; the rest is an id the store gave it.
const FILE_NAME_PREFIX: &str = "cursor-base.";

/// Each source's base as last read or written: a daemon reads a base of
/// megabytes from disk once, not at every run.
pub(super) type KnownBases = FxHashMap<String, Arc<str>>;

impl Cache {
    /// Where the last complete run of `source` left it, if anywhere. A position
    /// whose base file is gone is none: the next read is a full one.
    pub fn cursor(&self, source: &str) -> Result<Option<Cursor>, CacheError> {
        let Some(position) = self.meta_text::<String>(&format!("{PREFIX}{source}"), source)? else {
            return Ok(None);
        };
        let known = self.known_bases().get(source).cloned();
        let base = match known {
            Some(base) => Some(base),
            None => match self.stored_base(source)? {
                StoredBase::None => None,
                StoredBase::Found(base) => {
                    self.known_bases().insert(source.to_owned(), base.clone());
                    Some(base)
                }
                StoredBase::Lost => return Ok(None),
            },
        };
        Ok(Some(Cursor { position, base }))
    }

    /// Keeps `position` for `source`'s next read, and `new_base` in place of the
    /// base kept if one is given; `None` forgets both, so that the next read is
    /// a full one.
    ///
    /// A position alone is not flushed: a run saves its cursor after its
    /// outcomes were flushed, so a cursor lost to a crash only makes the next
    /// read read again what this one read, and find it done. sled flushes
    /// within half a second anyway, and a flush costs a change run about 1 ms
    /// (docs/performance.md). A new base is written to its file and synced
    /// first, and the store flushed before the old file is removed, so that the
    /// store never names a file that is not whole.
    pub async fn save_cursor(
        &self,
        source: &str,
        position: Option<&str>,
        new_base: Option<&Arc<str>>,
    ) -> Result<(), CacheError> {
        let keys = Keys::of(source);
        let mut batch = sled::Batch::default();
        let Some(position) = position else {
            for key in [&keys.position, &keys.base_file, &keys.inline_base] {
                batch.remove(key.as_bytes());
            }
            self.apply(batch)?;
            self.known_bases().remove(source);
            return self.remove_unnamed_base_files().await;
        };
        batch.insert(keys.position.as_bytes(), position.as_bytes());
        let Some(base) = new_base else {
            return self.apply(batch);
        };
        let name = self.write_base_file(base.clone()).await?;
        batch.insert(keys.base_file.as_bytes(), name.as_bytes());
        batch.remove(keys.inline_base.as_bytes());
        self.apply(batch)?;
        self.known_bases().insert(source.to_owned(), base.clone());
        self.db
            .flush_async()
            .await
            .map_err(|e| self.store_error(e))?;
        self.remove_unnamed_base_files().await
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

    /// `source`'s base as the store has it: in its file, or (written by the
    /// version before) in the store itself.
    fn stored_base(&self, source: &str) -> Result<StoredBase, CacheError> {
        let keys = Keys::of(source);
        let Some(name) = self.meta_text::<String>(&keys.base_file, source)? else {
            let inline: Option<Arc<str>> = self.meta_text(&keys.inline_base, source)?;
            return Ok(inline.map_or(StoredBase::None, StoredBase::Found));
        };
        let path = self.path.join(&name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(StoredBase::Found(Arc::from(text))),
            Err(err) => {
                tracing::warn!(
                    source,
                    path = %path.display(),
                    error = %err,
                    "Cannot read the base of the source's cursor; this run reads the whole directory."
                );
                Ok(StoredBase::Lost)
            }
        }
    }

    /// Writes `base` to a new file, synced, and returns its name.
    async fn write_base_file(&self, base: Arc<str>) -> Result<String, CacheError> {
        let id = self.db.generate_id().map_err(|e| self.store_error(e))?;
        let name = format!("{FILE_NAME_PREFIX}{id:016x}");
        let path = self.path.join(&name);
        let written = on_blocking_pool(move || {
            let mut file = private::create_file(&path)?;
            file.write_all(base.as_bytes())?;
            file.sync_all()
        })
        .await;
        written.map_err(|err| self.store_error(sled::Error::Io(err)))?;
        Ok(name)
    }

    /// Removes the base files no source's entry names: those replaced or
    /// forgotten, and any a crash left before the store named it. One that
    /// cannot be removed only takes room: a warning, and the next save tries again.
    async fn remove_unnamed_base_files(&self) -> Result<(), CacheError> {
        let mut named = FxHashSet::default();
        for entry in self.meta.scan_prefix(BASE_FILE_PREFIX) {
            let (_, name) = entry.map_err(|e| self.store_error(e))?;
            named.insert(String::from_utf8_lossy(&name).into_owned());
        }
        let dir = self.path.clone();
        let removed = on_blocking_pool(move || remove_base_files_except(&dir, &named)).await;
        if let Err(err) = removed {
            tracing::warn!(
                path = %self.path.display(),
                error = %err,
                "Cannot remove a cursor base file no longer used."
            );
        }
        Ok(())
    }

    fn apply(&self, batch: sled::Batch) -> Result<(), CacheError> {
        self.meta
            .apply_batch(batch)
            .map_err(|e| self.store_error(e))
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

/// `source`'s entries in `meta`.
struct Keys {
    position: String,
    base_file: String,
    inline_base: String,
}

impl Keys {
    fn of(source: &str) -> Self {
        Self {
            position: format!("{PREFIX}{source}"),
            base_file: format!("{BASE_FILE_PREFIX}{source}"),
            inline_base: format!("{INLINE_BASE_PREFIX}{source}"),
        }
    }
}

enum StoredBase {
    None,
    Found(Arc<str>),
    /// The store names a file that cannot be read.
    Lost,
}

/// File work, off the runtime's workers; a panic there is an I/O error here.
async fn on_blocking_pool<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|panicked| Err(std::io::Error::other(panicked.to_string())))
}

fn remove_base_files_except(dir: &Path, named: &FxHashSet<String>) -> std::io::Result<()> {
    let unnamed = std::fs::read_dir(dir)?.filter_map(|entry| {
        let name = entry.ok()?.file_name().into_string().ok()?;
        let unnamed = name.starts_with(FILE_NAME_PREFIX) && !named.contains(&name);
        unnamed.then(|| dir.join(name))
    });
    for path in unnamed.collect::<Vec<PathBuf>>() {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(position: &str, base: &Arc<str>) -> Cursor {
        Cursor {
            position: position.to_owned(),
            base: Some(base.clone()),
        }
    }

    fn base_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(FILE_NAME_PREFIX))
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_cursor_is_kept_per_source_across_reopening_and_can_be_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("okta https://a", "okta https://b");
        {
            let cache = Cache::open(dir.path()).unwrap();
            assert_eq!(cache.cursor(a).unwrap(), None);
            cache.save_cursor(a, Some("delta-1"), None).await.unwrap();
            cache.save_cursor(b, Some("other"), None).await.unwrap();
        }
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.cursor(a).unwrap(), Some(Cursor::at("delta-1")));
        cache.save_cursor(a, None, None).await.unwrap();
        assert_eq!(cache.cursor(a).unwrap(), None);
        assert_eq!(cache.cursor(b).unwrap(), Some(Cursor::at("other")));
    }

    #[tokio::test]
    async fn a_base_is_kept_until_a_new_one_is_given_and_forgotten_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        let source = "ldap ldap://a";
        let base: Arc<str> = Arc::from("listing 1");
        {
            let cache = Cache::open(dir.path()).unwrap();
            cache
                .save_cursor(source, Some("p1"), Some(&base))
                .await
                .unwrap();
            cache.save_cursor(source, Some("p2"), None).await.unwrap();
            assert_eq!(cache.cursor(source).unwrap(), Some(with("p2", &base)));
        }
        // Read back from its file by the next process, then replaced.
        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p2", &base)));
        let second: Arc<str> = Arc::from("listing 2");
        cache
            .save_cursor(source, Some("p3"), Some(&second))
            .await
            .unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p3", &second)));
        cache.save_cursor(source, None, None).await.unwrap();
        cache.save_cursor(source, Some("p4"), None).await.unwrap();
        assert_eq!(cache.cursor(source).unwrap(), Some(Cursor::at("p4")));
    }

    #[tokio::test]
    async fn a_base_lives_in_one_file_which_a_new_base_or_forgetting_removes() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = ("ldap ldap://a", "ldap ldap://b");
        let cache = Cache::open(dir.path()).unwrap();
        let listing: Arc<str> = Arc::from("x".repeat(100_000));
        cache
            .save_cursor(a, Some("p1"), Some(&listing))
            .await
            .unwrap();
        cache
            .save_cursor(b, Some("q1"), Some(&listing))
            .await
            .unwrap();
        let first = base_files(dir.path());
        assert_eq!(first.len(), 2);
        let in_store: usize = cache.meta.iter().map(|e| e.unwrap().1.len()).sum();
        assert!(in_store < 1_000, "the store holds {in_store} bytes");

        cache
            .save_cursor(a, Some("p2"), Some(&listing))
            .await
            .unwrap();
        let second = base_files(dir.path());
        assert_eq!(second.len(), 2);
        assert_ne!(first, second, "a's file is a new one");
        cache.save_cursor(b, None, None).await.unwrap();
        assert_eq!(base_files(dir.path()).len(), 1);
        assert_eq!(cache.cursor(a).unwrap(), Some(with("p2", &listing)));
    }

    #[tokio::test]
    async fn a_position_whose_base_file_is_gone_is_no_cursor_and_files_left_over_go() {
        let dir = tempfile::tempdir().unwrap();
        let source = "ldap ldap://a";
        let base: Arc<str> = Arc::from("listing");
        {
            let cache = Cache::open(dir.path()).unwrap();
            cache
                .save_cursor(source, Some("p1"), Some(&base))
                .await
                .unwrap();
        }
        for name in base_files(dir.path()) {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        // As a crash between writing a file and naming it would leave one.
        let left_over = dir
            .path()
            .join(format!("{FILE_NAME_PREFIX}00000000000000ff"));
        std::fs::write(&left_over, "old listing").unwrap();

        let cache = Cache::open(dir.path()).unwrap();
        assert_eq!(cache.cursor(source).unwrap(), None);
        cache
            .save_cursor(source, Some("p2"), Some(&base))
            .await
            .unwrap();
        assert!(!left_over.exists());
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p2", &base)));
    }

    #[tokio::test]
    async fn a_base_the_version_before_kept_in_the_store_is_read_and_then_moved_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let source = "ldap ldap://a";
        let cache = Cache::open(dir.path()).unwrap();
        let keys = Keys::of(source);
        cache.meta.insert(keys.position.as_bytes(), "p1").unwrap();
        cache
            .meta
            .insert(keys.inline_base.as_bytes(), "old")
            .unwrap();
        let old: Arc<str> = Arc::from("old");
        assert_eq!(cache.cursor(source).unwrap(), Some(with("p1", &old)));

        let new: Arc<str> = Arc::from("new");
        cache
            .save_cursor(source, Some("p2"), Some(&new))
            .await
            .unwrap();
        assert_eq!(cache.meta.get(keys.inline_base.as_bytes()).unwrap(), None);
        assert_eq!(base_files(dir.path()).len(), 1);
    }
}
