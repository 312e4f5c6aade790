//! Blocking helpers for a local directory, with the fsyncs opendal's `fs` service leaves out.
//!
//! Every function here is synchronous; callers run them through [`super::blocking`]. A function
//! that says "durable" has fsynced everything a power cut could otherwise undo: the file's data
//! and, when a name was created, removed or renamed, the directory that holds the name.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::failpoint::{Failpoints, disk_full, fired, fired_at};
use super::location::StorageError;

/// Names starting with this prefix are temporary files that never hold committed data.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StorageError {
    let path = path.to_path_buf();
    move |source| StorageError::Io { op, path, source }
}

fn injected(op: &'static str, path: &Path, failpoint: &'static str) -> StorageError {
    StorageError::Injected {
        op,
        path: path.display().to_string(),
        failpoint,
    }
}

/// The name of the lock file that a single writer holds in its directory.
pub(crate) const LOCK_NAME: &str = "LOCK";

/// Directories locked by this process, each with a channel whose closing announces the release.
static LOCKED: Mutex<BTreeMap<PathBuf, watch::Receiver<()>>> = Mutex::new(BTreeMap::new());

fn locked() -> MutexGuard<'static, BTreeMap<PathBuf, watch::Receiver<()>>> {
    LOCKED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An exclusive lock on a directory: `flock` on `dir/LOCK` against other processes, and a
/// registry entry against other writers in this process. Released on drop (or process death).
#[derive(Debug)]
pub(crate) struct DirLock {
    file: Option<File>,
    dir: PathBuf,
    released: Option<watch::Sender<()>>,
}

impl Drop for DirLock {
    fn drop(&mut self) {
        // Unlock first, then tell the waiters: a waiter that wakes can take the flock at once.
        drop(self.file.take());
        let mut registry = locked();
        if let Some(tx) = self.released.take() {
            if registry
                .get(&self.dir)
                .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
            {
                registry.remove(&self.dir);
            }
            drop(tx);
        }
    }
}

/// Takes the exclusive lock on `dir` (which must exist). If a writer in this process holds it,
/// waits up to `wait` for that writer to release it (a log dropped without `close` releases
/// it as soon as its writer task ends). If another process holds it, fails at once.
pub(crate) async fn lock_dir(dir: &Path, wait: Duration) -> Result<DirLock, StorageError> {
    let canonical = fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
    let path = canonical.join(LOCK_NAME);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let holder = locked().get(&canonical).cloned();
        let Some(mut holder) = holder else { break };
        let held = || StorageError::Io {
            op: "lock",
            path: path.clone(),
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "another writer in this process still has the directory open after {wait:?}"
                ),
            ),
        };
        // `changed` fails when the holder's sender is dropped: the release.
        if tokio::time::timeout_at(deadline, holder.changed())
            .await
            .is_err()
        {
            return Err(held());
        }
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(fs::TryLockError::WouldBlock) => {
            return Err(StorageError::Io {
                op: "lock",
                path,
                source: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "another process has this directory open as a writer",
                ),
            });
        }
        Err(fs::TryLockError::Error(err)) => return Err(io_err("lock", &path)(err)),
    }
    let (tx, rx) = watch::channel(());
    let mut registry = locked();
    if registry.contains_key(&canonical) {
        // Another task of this process took it between our check and our flock (flock is per
        // open file, so both could succeed): back off.
        return Err(StorageError::Io {
            op: "lock",
            path,
            source: io::Error::new(
                io::ErrorKind::WouldBlock,
                "another writer in this process opened the directory at the same time",
            ),
        });
    }
    registry.insert(canonical.clone(), rx);
    Ok(DirLock {
        file: Some(file),
        dir: canonical,
        released: Some(tx),
    })
}

/// Creates `dir` and its missing parents, and makes every new directory entry durable.
pub(crate) fn create_dir_all_durable(dir: &Path) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    // Find the nearest ancestor that exists; everything below it is new.
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(d) = cursor {
        if d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        cursor = d.parent();
    }
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    for d in missing.iter().rev() {
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir_plain(parent)?;
        }
    }
    Ok(())
}

fn sync_dir_plain(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Makes the names in `dir` (created, renamed or removed files) durable.
pub(crate) fn fsync_dir(dir: &Path, fps: Failpoints) -> Result<(), StorageError> {
    if fired(fps.dir_fsync) {
        return Err(injected("fsync directory", dir, fps.dir_fsync));
    }
    sync_dir_plain(dir)
}

/// Writes all of `buf` at `offset` of `file` (positional, so it is independent of any cursor).
pub(crate) fn write_all_at(
    file: &File,
    path: &Path,
    offset: u64,
    buf: &[u8],
    fps: Failpoints,
) -> Result<(), StorageError> {
    if fired(fps.write) {
        return Err(injected("write", path, fps.write));
    }
    disk_full(fps, "write", path)?;
    if fired(fps.torn_write) {
        let half = buf.len() / 2;
        file.write_all_at(&buf[..half], offset)
            .map_err(io_err("write", path))?;
        return Err(injected("write", path, fps.torn_write));
    }
    file.write_all_at(buf, offset)
        .map_err(io_err("write", path))
}

/// fsyncs the data of `file` (not its metadata unless needed to read the data back).
pub(crate) fn sync_data(file: &File, path: &Path, fps: Failpoints) -> Result<(), StorageError> {
    if fired_at(fps.fsync, path) {
        return Err(injected("fsync", path, fps.fsync));
    }
    file.sync_data().map_err(io_err("fsync", path))
}

/// Creates `dir/name` (it must not exist), writes `bytes`, and makes file and name durable.
///
/// A crash part-way leaves either no file or a file holding a prefix of `bytes`; readers of
/// such files (the WAL) validate what they read.
pub(crate) fn create_new_durable(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    fps: Failpoints,
) -> Result<File, StorageError> {
    let path = dir.join(name);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    write_all_at(&file, &path, 0, bytes, fps)?;
    sync_data(&file, &path, fps)?;
    fsync_dir(dir, fps)?;
    Ok(file)
}

/// Atomically publishes `bytes` as `dir/name`: temp file, fsync, rename, fsync of `dir`.
///
/// No reader ever sees a partial file under `name`: before the rename it does not exist (or
/// holds its previous content), after it holds all of `bytes`. The temp file, if a crash leaves
/// one, starts with [`TEMP_PREFIX`] and is removed by [`remove_temp_files`].
pub(crate) fn write_atomic(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    fps: Failpoints,
) -> Result<(), StorageError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{name}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = File::create(&temp).map_err(io_err("create", &temp))?;
        if fired(fps.write) {
            return Err(injected("write", &temp, fps.write));
        }
        disk_full(fps, "write", &temp)?;
        if fired(fps.torn_write) {
            file.write_all(&bytes[..bytes.len() / 2])
                .map_err(io_err("write", &temp))?;
            return Err(injected("write", &temp, fps.torn_write));
        }
        file.write_all(bytes).map_err(io_err("write", &temp))?;
        if fired(fps.fsync) {
            return Err(injected("fsync", &temp, fps.fsync));
        }
        file.sync_all().map_err(io_err("fsync", &temp))?;
        drop(file);
        let target = dir.join(name);
        if let Some(failpoint) = fps.rename
            && fired(failpoint)
        {
            return Err(injected("rename", &target, failpoint));
        }
        fs::rename(&temp, &target).map_err(io_err("rename", &target))
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is harmless and removed at the next open.
        let _ = fs::remove_file(&temp);
        return result;
    }
    fsync_dir(dir, fps)
}

/// Cuts `path` to `len` bytes and makes the new length durable.
pub(crate) fn truncate_durable(path: &Path, len: u64) -> Result<(), StorageError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.set_len(len).map_err(io_err("truncate", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// The names of the regular files in `dir`; an absent directory has none.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(io_err("list", dir)(err)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let is_file = entry.file_type().map_err(io_err("list", dir))?.is_file();
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads the whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    fs::read(path).map_err(io_err("read", path))
}

/// Reads `len` bytes at `offset`; fails if the file is shorter.
pub(crate) fn read_range(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(io_err("read", path))?;
    Ok(buf)
}

/// Removes the files `names` from `dir`, then makes the removals durable.
/// Files that are already gone are not an error.
pub(crate) fn remove_files_durable(dir: &Path, names: &[String]) -> Result<(), StorageError> {
    for name in names {
        let path: PathBuf = dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err("remove", &path)(err)),
        }
    }
    if names.is_empty() {
        Ok(())
    } else {
        sync_dir_plain(dir)
    }
}

/// Removes the temporary files a crash may have left in `dir`; returns how many.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize, StorageError> {
    let temps: Vec<String> = list_files(dir)?
        .into_iter()
        .filter(|name| name.starts_with(TEMP_PREFIX))
        .collect();
    remove_files_durable(dir, &temps)?;
    Ok(temps.len())
}
