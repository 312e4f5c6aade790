//! The engine's reads of a local directory and its single-writer lock.
//!
//! Every function here is synchronous; callers run them through
//! [`blocking`](super::location::blocking). What a local directory needs to make writes
//! durable — file and directory fsyncs, atomic replacement, durable removal — is in
//! [`durable`](super::durable), which the runtime's file sinks and sources share. The lock is
//! a `flock` on `dir/LOCK` (released by the kernel when the process dies, so a crash leaves no
//! stale lock behind) plus a registry entry against a second writer in this process.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::durable::FsError;
use super::location::StorageError;

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
    let canonical = fs::canonicalize(dir).map_err(FsError::io("resolve", dir))?;
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
        .map_err(FsError::io("open lock file", &path))?;
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
        Err(fs::TryLockError::Error(err)) => return Err(FsError::io("lock", &path)(err).into()),
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

/// The names of the regular files in `dir`; an absent directory has none.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>, StorageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(FsError::io("list", dir)(err).into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(FsError::io("list", dir))?;
        let is_file = entry
            .file_type()
            .map_err(FsError::io("list", dir))?
            .is_file();
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Reads the whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, StorageError> {
    Ok(fs::read(path).map_err(FsError::io("read", path))?)
}

/// Reads `len` bytes at `offset`; fails if the file is shorter.
pub(crate) fn read_range(path: &Path, offset: u64, len: usize) -> Result<Vec<u8>, StorageError> {
    let file = File::open(path).map_err(FsError::io("open", path))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)
        .map_err(FsError::io("read", path))?;
    Ok(buf)
}
