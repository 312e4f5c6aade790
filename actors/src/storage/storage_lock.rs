//! One process at a time on a storage directory: [`StorageLock`].
//!
//! Everything an engine keeps — checkpoints, both WALs, the event log, the control token — lives
//! under one directory, and starting a second process on it (the same command run twice by a
//! clumsy operator, a supervisor that started a new one before the old one died) must not touch
//! any of it: opening the checkpoint store removes temp files that may be the live process's
//! write in progress, the token would be replaced, the event log interleaved. So the first thing
//! an engine (and the runtime's `get_or_create`, before it reads a checkpoint) does is take an
//! exclusive `flock` on `<dir>/LOCK`, and write its pid there; a second process fails at once,
//! touching nothing, with one sentence naming the holder's pid.
//!
//! Within one process the lock is shared: the runtime takes it before it reads the checkpoint
//! and the engine it starts takes it again; both hold the same lock, released when the last
//! holder drops it. (Two engines of one process on one directory are not prevented — the
//! receiver WAL's own lock serialises them.)
//!
//! Object stores have nothing to lock; there [`StorageLock::acquire`] returns `None` and two
//! writers are detected later, when a write-once name is already taken.
//!
//! # What a crash leaves behind
//!
//! The `LOCK` file, with a dead process's pid in it: harmless, since the kernel released the
//! `flock` with the process; the next process takes the lock and writes its own pid.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::storage::durable::{self, Failpoints, FsError};
use crate::storage::location::Storage;

/// The lock file's name, in the storage directory.
pub(crate) const STORAGE_LOCK_FILE: &str = "LOCK";

/// Why a storage directory could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageLockError {
    /// Another process holds the directory.
    #[error(
        "`{}` is in use by another weir process{}; stop it first, or give this one another directory",
        .dir.display(),
        .pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The holder's process id, as it wrote it in the lock file (if readable).
        pid: Option<u32>,
    },
    /// Creating the directory or opening the lock file failed.
    #[error(transparent)]
    Io(#[from] FsError),
}

/// A process's exclusive claim on a local storage directory: an exclusive `flock` on
/// `<dir>/LOCK`, which holds the owner's pid, so that a second process on the same directory
/// fails at once — before it touches anything — with one sentence naming the holder.
///
/// Within a process the lock is shared ([`acquire`](Self::acquire) again returns the same
/// lock). Cheap to clone; released when the last clone in this process is dropped, or by the
/// kernel when the process dies (so a crash leaves no stale lock). Object stores have nothing
/// to lock.
#[derive(Clone, Debug)]
pub struct StorageLock {
    held: Arc<Held>,
}

#[derive(Debug)]
struct Held {
    dir: PathBuf,
    _file: File,
}

/// The directories this process holds, so that a second taker in the process shares the lock.
static HELD: Mutex<BTreeMap<PathBuf, Weak<Held>>> = Mutex::new(BTreeMap::new());

fn held() -> MutexGuard<'static, BTreeMap<PathBuf, Weak<Held>>> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner)
}

impl StorageLock {
    /// Takes the lock on `storage`'s directory (created if missing), or shares it if this
    /// process holds it already; `None` for storage that is not a local directory.
    ///
    /// # Errors
    ///
    /// [`StorageLockError::InUse`] if another process holds it (naming its pid when the lock
    /// file says it), [`StorageLockError::Io`] if the directory or the lock file cannot be
    /// created or opened.
    pub fn acquire(storage: &Storage) -> Result<Option<StorageLock>, StorageLockError> {
        match storage.local_dir() {
            Some(dir) => Self::acquire_dir(dir).map(Some),
            None => Ok(None),
        }
    }

    /// [`acquire`](Self::acquire) for a local directory.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](Self::acquire).
    pub fn acquire_dir(dir: &Path) -> Result<StorageLock, StorageLockError> {
        durable::create_dir_all(dir, Failpoints::NONE)?;
        let canonical = std::fs::canonicalize(dir).map_err(FsError::io("resolve", dir))?;
        let mut registry = held();
        if let Some(held) = registry.get(&canonical).and_then(Weak::upgrade) {
            return Ok(StorageLock { held });
        }
        let path = canonical.join(STORAGE_LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(FsError::io("open lock file", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageLockError::InUse {
                    dir: canonical,
                    pid: holder_pid(&file),
                });
            }
            Err(std::fs::TryLockError::Error(err)) => {
                return Err(FsError::io("lock", &path)(err).into());
            }
        }
        // Who holds it, for the message a second process prints. Not fsynced: after a crash
        // the lock is free whatever the file says.
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.write_all_at(pid.as_bytes(), 0))
            .map_err(FsError::io("write lock file", &path))?;
        let held = Arc::new(Held {
            dir: canonical.clone(),
            _file: file,
        });
        registry.retain(|_, weak| weak.strong_count() > 0);
        registry.insert(canonical, Arc::downgrade(&held));
        Ok(StorageLock { held })
    }

    /// The directory this lock holds.
    pub fn dir(&self) -> &Path {
        &self.held.dir
    }
}

/// The pid the holder wrote in the lock file, if it reads as one.
fn holder_pid(mut file: &File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_shares_its_lock_and_the_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let first = StorageLock::acquire_dir(dir.path()).unwrap();
        let second = StorageLock::acquire_dir(dir.path()).unwrap();
        assert!(Arc::ptr_eq(&first.held, &second.held));
        let text = std::fs::read_to_string(dir.path().join(STORAGE_LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop((first, second));
        // Released: taken again afresh.
        let again = StorageLock::acquire_dir(dir.path()).unwrap();
        assert_eq!(again.dir(), std::fs::canonicalize(dir.path()).unwrap());
    }

    #[test]
    fn another_open_file_description_is_refused_with_the_holders_pid() {
        // flock is per open file description: a lock taken through another one behaves as
        // another process's would.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORAGE_LOCK_FILE);
        std::fs::write(&path, "4242\n").unwrap();
        let other = File::open(&path).unwrap();
        other.lock().unwrap();
        let err = StorageLock::acquire_dir(dir.path()).unwrap_err();
        match &err {
            StorageLockError::InUse { pid, .. } => assert_eq!(*pid, Some(4242)),
            other => panic!("{other:?}"),
        }
        assert!(
            err.to_string()
                .contains("is in use by another weir process (pid 4242)"),
            "{err}"
        );
        drop(other);
        StorageLock::acquire_dir(dir.path()).unwrap();
    }

    #[test]
    fn object_storage_has_nothing_to_lock() {
        assert!(StorageLock::acquire(&Storage::memory()).unwrap().is_none());
    }
}
