//! The cache holds e-mail addresses: its directory is the owner's alone (0700),
//! and so are the files idsync writes there (0600), whatever the umask. The
//! directory's mode protects sled's own files as well.

use std::fs::{File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIRECTORY: u32 = 0o700;
const FILE: u32 = 0o600;

/// Creates `path` (and missing parents) with mode 0700, or narrows an existing
/// cache directory to 0700. A directory idsync may not change the mode of (one
/// another user owns, such as a mounted volume) is used as it is, with a warning.
pub(super) fn directory(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIRECTORY)
        .create(path)?;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode != DIRECTORY {
        if let Err(err) = std::fs::set_permissions(path, Permissions::from_mode(DIRECTORY)) {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:04o}"),
                error = %err,
                "Cannot make the cache directory owner-only (0700); it holds e-mail addresses."
            );
        }
    }
    Ok(())
}

/// Creates (or truncates) a file only its owner may read and write.
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE)
        .open(path)?;
    // A file that existed keeps its mode through open(); this narrows it.
    file.set_permissions(Permissions::from_mode(FILE))?;
    Ok(file)
}

/// Narrows sled's files to 0600, as far as it can; the directory's mode is
/// what protects them.
pub(super) fn narrow_store_files(path: &Path) {
    for name in ["db", "conf"] {
        let _ = std::fs::set_permissions(path.join(name), Permissions::from_mode(FILE));
    }
}
