//! Checkpoint writes that fail at each I/O edge.
//!
//! For every failpoint of the checkpoint store's write path, a write with the failpoint
//! active returns an error naming it, the previously written checkpoint is still what
//! `read_latest` returns (in the same store and after a reopen), and a write after the
//! failpoint is removed succeeds with a fresh id. Failpoints are process-global, so each
//! scenario holds a `fail::FailScenario` for its whole duration; scenarios serialize.

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use opendal::Operator;
use tempfile::TempDir;
use weir_actors::Storage;
use weir_actors::checkpoint::{CheckpointConfig, CheckpointData, CheckpointStore};

fn data(time: u64) -> CheckpointData {
    CheckpointData {
        checkpoint_time_ms: time,
        pending_batches: vec![time],
        ..CheckpointData::default()
    }
}

/// Names directly in `dir` (the local store's directory).
fn local_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

async fn failed_write_keeps_previous_checkpoint(storage: Storage, failpoint: &'static str) {
    let scenario = fail::FailScenario::setup();
    let store = CheckpointStore::open(storage.clone(), CheckpointConfig::default())
        .await
        .unwrap();
    let first = store.write(&data(1_000)).await.unwrap();

    fail::cfg(failpoint, "return").unwrap();
    let err = store.write(&data(2_000)).await.unwrap_err();
    assert!(err.to_string().contains(failpoint), "{failpoint}: {err}");
    let latest = store.read_latest().await.unwrap().unwrap();
    assert_eq!(latest.id, first, "{failpoint}");
    assert_eq!(latest.data, data(1_000));
    assert!(
        latest.skipped.is_empty(),
        "{failpoint}: {:?}",
        latest.skipped
    );
    fail::remove(failpoint);

    if let Some(dir) = storage.local_dir() {
        // Neither a temp file nor the failed checkpoint's name is left behind.
        assert_eq!(local_names(dir), vec![first.file_name()], "{failpoint}");
    }
    let listed: Vec<_> = store.list().await.unwrap().iter().map(|c| c.id).collect();
    assert_eq!(listed, vec![first], "{failpoint}");

    // A restarted store sees the same.
    let reopened = CheckpointStore::open(storage.clone(), CheckpointConfig::default())
        .await
        .unwrap();
    assert_eq!(reopened.read_latest().await.unwrap().unwrap().id, first);
    drop(reopened);

    // With the failpoint gone, writing works again, with a new id.
    let next = store.write(&data(3_000)).await.unwrap();
    assert!(next > first, "{failpoint}: {next} after {first}");
    let latest = store.read_latest().await.unwrap().unwrap();
    assert_eq!((latest.id, latest.data), (next, data(3_000)));
    scenario.teardown();
}

async fn local(failpoint: &'static str) {
    let dir = TempDir::new().unwrap();
    failed_write_keeps_previous_checkpoint(Storage::local(dir.path()).join("ckpt"), failpoint)
        .await;
}

async fn object_fs(failpoint: &'static str) {
    let (data, temp) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let builder = opendal::services::Fs::default()
        .root(data.path().to_str().unwrap())
        .atomic_write_dir(temp.path().to_str().unwrap());
    let storage = Storage::object(Operator::new(builder).unwrap()).join("ckpt");
    failed_write_keeps_previous_checkpoint(storage, failpoint).await;
}

#[tokio::test]
async fn local_write_failure_keeps_previous_checkpoint() {
    local("checkpoint::write").await;
}

#[tokio::test]
async fn local_torn_write_keeps_previous_checkpoint() {
    local("checkpoint::write::torn").await;
}

#[tokio::test]
async fn local_fsync_failure_keeps_previous_checkpoint() {
    local("checkpoint::fsync").await;
}

#[tokio::test]
async fn local_failure_before_rename_keeps_previous_checkpoint() {
    local("checkpoint::rename").await;
}

#[tokio::test]
async fn local_dir_fsync_failure_after_rename_keeps_previous_checkpoint() {
    local("checkpoint::dir_fsync").await;
}

#[tokio::test]
async fn memory_close_failure_keeps_previous_checkpoint() {
    failed_write_keeps_previous_checkpoint(Storage::memory().join("ckpt"), "checkpoint::close")
        .await;
}

#[tokio::test]
async fn object_fs_close_failure_keeps_previous_checkpoint() {
    object_fs("checkpoint::close").await;
}
