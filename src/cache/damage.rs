//! A damaged cache is refused, never silently replaced, and `idsync cache reset`
//! moves it aside for a fresh one.
//!
//! sled 0.34 opens a `db` file that was cut short or overwritten as an empty store,
//! without an error. An empty store looks like a first run: every user would be
//! adopted again and the managed users who left would never be deactivated. So
//! [`super::Cache::open_for`] compares what the directory shows (a `db` file with
//! content, `status.json`, `summaries.bin`) with what the opened store holds (the
//! marker every store gets at creation: its schema version or its id).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{store_error, summaries, Cache, CacheError, STATUS_FILE};

/// What an operator does about a damaged cache; the README says the same.
pub const RECOVERY: &str = "restore the cache directory from a backup, or move it aside with `idsync cache reset --config <config file>`: the next run then adopts the gateway's existing users (see the README, Operating it)";

/// What in the directory shows that a store was kept there before, if anything.
pub(super) fn used_before(path: &Path) -> Option<String> {
    let mut found = Vec::new();
    let db = std::fs::metadata(path.join("db")).map_or(0, |m| m.len());
    if db > 0 {
        found.push(format!("a {db}-byte db file"));
    }
    for name in [STATUS_FILE, summaries::FILE] {
        if path.join(name).exists() {
            found.push(name.to_owned());
        }
    }
    (!found.is_empty()).then(|| format!("the directory holds {}", found.join(" and ")))
}

/// The error for a store that was damaged or reset; `evidence` says how it shows.
pub(super) fn damaged(path: &Path, evidence: &str) -> CacheError {
    CacheError::Unreadable {
        path: path.to_owned(),
        reason: format!(
            "its database is damaged or was reset ({evidence}; sled opens a damaged db file as an empty store, or as far as it can read it). Nothing was changed: {RECOVERY}"
        ),
    }
}

/// A marked store can still have lost its newest writes (a `db` file cut short
/// keeps the beginning of sled's log). What idsync wrote beside the store only
/// after the store had it on disk tells: the runs in `status.json`, and the
/// generation `summaries.bin` copies.
pub(super) fn check_not_behind(
    path: &Path,
    runs: &sled::Tree,
    version: Option<summaries::Version>,
) -> Result<(), CacheError> {
    if let Ok(listed) = super::read_status(path) {
        let kept = runs.len();
        if kept < listed.len() {
            return Err(damaged(
                path,
                &format!(
                    "{STATUS_FILE} lists {} runs but the store holds {kept}",
                    listed.len()
                ),
            ));
        }
    }
    if let (Some(store), Some(file)) = (version, summaries::header(path)) {
        if file.store == store.store && file.generation > store.generation {
            return Err(damaged(
                path,
                &format!(
                    "{} copies generation {} of this store, which is back at {}",
                    summaries::FILE,
                    file.generation,
                    store.generation
                ),
            ));
        }
    }
    Ok(())
}

/// Runs sled's open, turning a panic in it (some damage makes sled panic) into
/// [`CacheError::Unreadable`].
pub(super) fn open_catching_panics(
    path: &Path,
    open: impl FnOnce() -> Result<sled::Db, CacheError>,
) -> Result<sled::Db, CacheError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(open)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_owned());
        Err(CacheError::Unreadable {
            path: path.to_owned(),
            reason: format!("its database could not be opened (sled: {what}); {RECOVERY}"),
        })
    })
}

/// `idsync cache reset`: moves the cache directory aside, to
/// `<path>.damaged-<UTC timestamp>`, and creates a fresh cache at `path` (after
/// following symlinks). Refused
/// while another process has the cache open. Returns where the old one went, if
/// there was one.
pub fn reset(path: &Path) -> Result<Option<PathBuf>, CacheError> {
    // The directory itself moves, not a symlink to it (systemd's `DynamicUser=`
    // links /var/lib/idsync to /var/lib/private/idsync).
    let path = &path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let io_error = |err| store_error(path, sled::Error::Io(err));
    let moved = if path.exists() {
        // Held until the directory has moved, so no idsync can open it meanwhile.
        let _lock = lock_db_file(path)?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".damaged-{stamp}"));
        let aside = PathBuf::from(aside);
        if aside.exists() {
            return Err(io_error(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists already; try again in a second", aside.display()),
            )));
        }
        std::fs::rename(path, &aside).map_err(io_error)?;
        Some(aside)
    } else {
        None
    };
    drop(Cache::open(path)?);
    Ok(moved)
}

/// Takes the lock sled takes on the `db` file (an exclusive `flock`), if there is
/// one; fails with [`CacheError::Locked`] while an idsync process holds it.
fn lock_db_file(path: &Path) -> Result<Option<std::fs::File>, CacheError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path.join("db"))
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(store_error(path, sled::Error::Io(err))),
    };
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        Ok(Some(file))
    } else {
        Err(CacheError::Locked {
            path: path.to_owned(),
        })
    }
}
