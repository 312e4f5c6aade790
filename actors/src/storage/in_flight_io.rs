//! Local storage work in flight in this process, so that whoever hands a directory on can wait
//! for the work that would otherwise outlive its owner: [`begin`] and [`settle`].
//!
//! A local directory's I/O runs on threads that cannot be stopped: a
//! [`blocking`](super::location::blocking) closure on tokio's blocking pool runs to its end even
//! after the future awaiting it was dropped (a stopped job generator drops its checkpoint
//! writes), and a local WAL's writer does its appends inline on a thread of its own. Such work
//! can land after the actor that started it has ended — after the engine released the storage
//! lock, or after a restarted driver reopened the checkpoint store and reserved the same id.
//!
//! **The invariant:** every such piece of work holds an [`IoGuard`] from before it is handed to
//! its thread until it returns, on that thread; the guard names the path the work touches. A
//! local WAL writer's thread holds one for its whole life (it serves what is queued even after
//! the log's handles are gone).
//! [`settle`] waits until every piece of work that was in flight under a directory when it was
//! called has returned. The registry is process-wide and keyed by path (made absolute), not by
//! storage handle, so that a successor that built its own [`Storage`](super::location::Storage)
//! for the same directory waits too. Work that starts after [`settle`] was called is not waited
//! for: the caller is the one that decides nothing new starts (the engine has ended, the
//! successor driver has not started anything yet), and a sibling engine of this process on the
//! same directory cannot keep it waiting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// How long the engine's end and a restarted driver wait for the work of their predecessor
/// before they go on anyway (with a warning naming the paths).
pub(crate) const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Work in flight: id → the path it touches.
static IN_FLIGHT: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
/// The next work's id.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
/// How many [`settle`] calls are waiting: a finishing piece of work notifies only then.
static WAITING: AtomicUsize = AtomicUsize::new(0);
/// Notified when a piece of work returns while someone waits.
static FINISHED: Notify = Notify::const_new();

fn in_flight() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    IN_FLIGHT.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The form paths are compared in: absolute, without touching the filesystem beyond the
/// current directory (a relative and an absolute spelling of one directory match).
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
    }
}

/// One piece of local storage work in flight; it counts until dropped. Move it into the
/// closure or hold it on the thread that does the work, so that it drops when the work
/// returns — not when whoever awaited the work gave up on it.
#[derive(Debug)]
#[must_use = "the work counts as in flight only while the guard lives"]
pub(crate) struct IoGuard {
    id: u64,
}

/// Registers work on `path` (a file or a directory) as in flight until the guard drops.
pub(crate) fn begin(path: &Path) -> IoGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    in_flight().insert(id, absolute(path));
    IoGuard { id }
}

impl Drop for IoGuard {
    fn drop(&mut self) {
        in_flight().remove(&self.id);
        if WAITING.load(Ordering::SeqCst) > 0 {
            FINISHED.notify_waiters();
        }
    }
}

/// Counts a waiter for as long as it lives.
struct Waiting;

impl Waiting {
    fn new() -> Self {
        WAITING.fetch_add(1, Ordering::SeqCst);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until every piece of work in flight under `dir` now has returned, at most `timeout`.
///
/// # Errors
///
/// The paths of the work still in flight when the time was up.
pub(crate) async fn wait_for(dir: &Path, timeout: Duration) -> Result<(), Vec<PathBuf>> {
    let dir = absolute(dir);
    let mut pending: Vec<u64> = in_flight()
        .iter()
        .filter(|(_, path)| path.starts_with(&dir))
        .map(|(id, _)| *id)
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let _waiting = Waiting::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Registered before the check, so that work finishing in between is not missed.
        let finished = FINISHED.notified();
        tokio::pin!(finished);
        finished.as_mut().enable();
        {
            let registry = in_flight();
            pending.retain(|id| registry.contains_key(id));
            if pending.is_empty() {
                return Ok(());
            }
        }
        if tokio::time::timeout_at(deadline, finished).await.is_err() {
            let registry = in_flight();
            let mut paths: Vec<PathBuf> = pending
                .iter()
                .filter_map(|id| registry.get(id).cloned())
                .collect();
            if paths.is_empty() {
                return Ok(());
            }
            paths.sort();
            paths.dedup();
            return Err(paths);
        }
    }
}

/// [`wait_for`] with [`SETTLE_TIMEOUT`], logging a warning that names the paths and `who`
/// waited if the work is still running then (the caller goes on regardless).
pub(crate) async fn settle(dir: &Path, who: &str) {
    if let Err(paths) = wait_for(dir, SETTLE_TIMEOUT).await {
        let paths: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        tracing::warn!(
            dir = %dir.display(),
            paths = %paths.join(", "),
            "{who}: storage work still running after {} s; going on without it",
            SETTLE_TIMEOUT.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waits_for_work_in_flight_under_the_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let held = begin(&dir.path().join("checkpoints/x"));
        let elsewhere = begin(other.path());
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let worker = std::thread::spawn(move || {
            release_rx.recv().unwrap();
            drop(held);
        });
        // Work under the directory counts, work elsewhere does not.
        assert_eq!(
            wait_for(dir.path(), Duration::ZERO).await,
            Err(vec![dir.path().join("checkpoints/x")])
        );
        assert!(
            wait_for(&other.path().join("sub"), Duration::ZERO)
                .await
                .is_ok()
        );
        // A waiter returns once the work has returned, on its own thread.
        let waiter = tokio::spawn({
            let dir = dir.path().to_path_buf();
            async move { wait_for(&dir, Duration::from_secs(30)).await }
        });
        release_tx.send(()).unwrap();
        waiter.await.unwrap().unwrap();
        worker.join().unwrap();
        drop(elsewhere);
        assert!(wait_for(other.path(), Duration::ZERO).await.is_ok());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_wal_writer_counts_for_its_whole_life() {
        use crate::storage::location::Storage;
        use crate::wal::{Wal, WalConfig};
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(Storage::local(dir.path()), WalConfig::default())
            .await
            .unwrap();
        wal.append(bytes::Bytes::from_static(b"x")).await.unwrap();
        // Idle between appends, its thread still counts: it may be handed an append any time.
        assert!(wait_for(dir.path(), Duration::ZERO).await.is_err());
        wal.close().await.unwrap();
        wait_for(dir.path(), Duration::from_secs(30)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_timeout_naming_the_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal/00000000000000000001.wal");
        let held = begin(&path);
        let started = tokio::time::Instant::now();
        let err = wait_for(dir.path(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(err, vec![path]);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Work that starts after the wait began is not waited for.
        let waiter = tokio::spawn({
            let dir = dir.path().to_path_buf();
            async move { wait_for(&dir, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        let late = begin(&dir.path().join("late"));
        drop(held);
        waiter.await.unwrap().unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        drop(late);
    }
}
