//! Small durability helpers shared by the file sources and sinks: fsync a file's data and a
//! directory's entries, replace a file atomically.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An I/O error with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
#[error("could not {op} {}: {source}", path.display())]
pub struct FsError {
    /// What was being done (`create`, `fsync`, `rename`, ...).
    pub op: &'static str,
    /// The path it was done to.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Makes a closure that wraps an `io::Error` into an [`FsError`].
pub(crate) fn fs_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FsError {
    let path = path.to_path_buf();
    move |source| FsError { op, path, source }
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fs_err("fsync the directory", dir))
}

/// Creates `dir` and its missing parents; the entry of every directory created is made
/// durable in its parent.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), FsError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_durable(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(fs_err("create the directory", dir)(e)),
    }
    match dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => sync_dir(parent),
        None => sync_dir(Path::new(".")),
    }
}

/// Replaces `path` with `bytes` atomically: written to a temporary file beside it, fsynced,
/// renamed over it, and the directory fsynced. A crash leaves the old or the new content.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{name}.{}-{}.tmp",
        std::process::id(),
        fastrand::u64(..)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(fs_err("create", &temp))?;
        file.write_all(bytes).map_err(fs_err("write", &temp))?;
        file.sync_all().map_err(fs_err("fsync", &temp))?;
        fs::rename(&temp, path).map_err(fs_err("rename into place", path))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
