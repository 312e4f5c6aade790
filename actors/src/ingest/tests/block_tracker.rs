//! The received-block tracker actor on a real local WAL: its rules (idempotent adds and
//! re-allocations, refused old times), the WAL-before-visible rule when an append fails, and
//! exact rebuilds by replay — after a kill, and after cleanup has deleted old segments.
//!
//! Each test runs on a current-thread runtime and spawns its actors unnamed (the ractor
//! registry is process-global, and tests run in parallel).

// Helpers outside `#[test]` functions are test code too.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::ingest::blocks::{BlockInfo, StreamId};
use crate::ingest::received_block_tracker::{
    BatchAllocation, BlockTrackerState, CleanupReport, ReceivedBlockTracker,
    ReceivedBlockTrackerArgs, ReceivedBlockTrackerMsg as Msg, TrackerError,
};
use crate::wal::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::wal::{RecordHandle, WalConfig, WalError};
use crate::{EventSink, Storage};
use ractor::{Actor, ActorRef, call};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

fn block(stream: StreamId, id: u64) -> BlockInfo {
    BlockInfo {
        stream,
        handle: RecordHandle {
            segment: 1,
            offset: 64 + id * 100,
            length: 90,
        },
        records: 10 + id,
        stored_ms: 1_000 + id,
    }
}

/// A WAL configuration whose segments hold about `segment_bytes` each.
fn config(segment_bytes: u64) -> WalConfig {
    WalConfig {
        segment_max_bytes: segment_bytes,
        ..WalConfig::default()
    }
}

/// The smallest segments there are: every append after a segment's first starts a new one.
fn tiny_segments() -> WalConfig {
    config((SEGMENT_HEADER_LEN + FRAME_HEADER_LEN) as u64)
}

struct Tracker {
    actor: ActorRef<Msg>,
    join: JoinHandle<()>,
}

impl Tracker {
    async fn spawn(dir: &Path, wal_config: WalConfig) -> Tracker {
        let args = ReceivedBlockTrackerArgs {
            wal_storage: Storage::local(dir),
            wal_config,
            events: EventSink::discard(),
        };
        let (actor, join) = Actor::spawn(None, ReceivedBlockTracker, args)
            .await
            .unwrap();
        Tracker { actor, join }
    }

    async fn add(&self, blocks: &[BlockInfo]) -> Result<(), TrackerError> {
        call!(self.actor, Msg::AddBlocks, blocks.to_vec()).unwrap()
    }

    async fn allocate(&self, t: u64) -> Result<BatchAllocation, TrackerError> {
        call!(self.actor, Msg::AllocateBatch, t).unwrap()
    }

    async fn cleanup(&self, before: u64) -> CleanupReport {
        call!(self.actor, Msg::CleanupBefore, before)
            .unwrap()
            .unwrap()
    }

    async fn get(&self, t: u64) -> Option<BatchAllocation> {
        call!(self.actor, Msg::GetAllocation, t).unwrap()
    }

    async fn state(&self) -> BlockTrackerState {
        call!(self.actor, Msg::Inspect).unwrap()
    }

    async fn kill(self) {
        self.actor.kill_and_wait(Some(WAIT)).await.unwrap();
        self.join.await.unwrap();
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "current_thread")]
async fn duplicate_add_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    let (a, b, c) = (block(0, 1), block(0, 2), block(1, 3));
    tracker.add(&[a, b]).await.unwrap();
    tracker.add(&[b, a, c, c]).await.unwrap();
    let backlog = call!(tracker.actor, Msg::Unallocated).unwrap();
    assert_eq!(backlog[&0].blocks, 2);
    assert_eq!(backlog[&0].records, a.records + b.records);
    assert_eq!(backlog[&1].blocks, 1);

    let allocation = tracker.allocate(10).await.unwrap();
    assert_eq!(allocation.blocks[&0], vec![a, b]);
    assert_eq!(allocation.blocks[&1], vec![c]);
    // A retry of a block that is already allocated adds nothing either.
    tracker.add(&[a]).await.unwrap();
    assert!(call!(tracker.actor, Msg::Unallocated).unwrap().is_empty());

    // The log holds each block once: a replay agrees.
    let before = tracker.state().await;
    tracker.kill().await;
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    assert_eq!(tracker.state().await, before);
    tracker.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn reallocating_the_same_time_returns_the_same_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    tracker.add(&[block(0, 1), block(2, 2)]).await.unwrap();
    let first = tracker.allocate(100).await.unwrap();
    assert_eq!(first.block_count(), 2);
    tracker.add(&[block(0, 3)]).await.unwrap();
    assert_eq!(tracker.allocate(100).await.unwrap(), first);
    // The block added since stays for the next batch.
    assert_eq!(
        call!(tracker.actor, Msg::Unallocated).unwrap()[&0].blocks,
        1
    );
    assert_eq!(
        tracker.allocate(200).await.unwrap().blocks[&0],
        vec![block(0, 3)]
    );
    // An empty batch is an allocation too, and is returned again.
    assert_eq!(
        tracker.allocate(300).await.unwrap(),
        BatchAllocation::default()
    );
    assert_eq!(
        tracker.allocate(300).await.unwrap(),
        BatchAllocation::default()
    );
    tracker.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn allocating_an_older_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    tracker.add(&[block(0, 1)]).await.unwrap();
    tracker.allocate(200).await.unwrap();
    tracker.add(&[block(0, 2)]).await.unwrap();
    let before = tracker.state().await;
    let err = tracker.allocate(100).await.unwrap_err();
    assert!(
        matches!(
            err,
            TrackerError::BatchTooOld {
                batch_time_ms: 100,
                last_allocated_ms: 200
            }
        ),
        "{err}"
    );
    assert_eq!(tracker.state().await, before);
    // A cleaned batch cannot be allocated again either, even after a restart.
    tracker.cleanup(201).await;
    assert_eq!(tracker.get(200).await, None);
    tracker.kill().await;
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    assert!(matches!(
        tracker.allocate(200).await,
        Err(TrackerError::BatchTooOld { .. })
    ));
    assert_eq!(
        tracker.allocate(201).await.unwrap().blocks[&0],
        vec![block(0, 2)]
    );
    tracker.kill().await;
}

/// The WAL directory is replaced by a plain file, so creating the next segment fails even for
/// root (permission bits would not stop root).
#[tokio::test(flavor = "current_thread")]
async fn a_failed_wal_append_leaves_the_state_unchanged() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("wal");
    let moved = root.path().join("wal-moved");
    let tracker = Tracker::spawn(&dir, tiny_segments()).await;
    tracker.add(&[block(0, 1)]).await.unwrap();
    tracker.allocate(10).await.unwrap();
    tracker.add(&[block(0, 2)]).await.unwrap();
    let before = tracker.state().await;

    std::fs::rename(&dir, &moved).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let err = tracker.add(&[block(0, 3)]).await.unwrap_err();
    assert!(matches!(err, TrackerError::Wal(_)), "{err}");
    assert_eq!(tracker.state().await, before);

    // The log poisoned itself (it could not remove the segment it failed to create); the next
    // append says so, and the tracker answers, then fails so that a supervisor reopens the log.
    let err = tracker.allocate(20).await.unwrap_err();
    assert!(
        matches!(err, TrackerError::Wal(WalError::Poisoned { .. })),
        "{err}"
    );
    tokio::time::timeout(WAIT, tracker.join)
        .await
        .unwrap()
        .unwrap();

    std::fs::remove_file(&dir).unwrap();
    std::fs::rename(&moved, &dir).unwrap();
    let tracker = Tracker::spawn(&dir, tiny_segments()).await;
    assert_eq!(tracker.state().await, before);
    tracker.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn replay_after_kill_rebuilds_allocations_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), config(300)).await;
    let mut id = 0;
    for batch in 1..=6u64 {
        for stream in 0..3 {
            let blocks: Vec<_> = (0..batch % 3 + stream as u64)
                .map(|_| {
                    id += 1;
                    block(stream, id)
                })
                .collect();
            tracker.add(&blocks).await.unwrap();
        }
        tracker.allocate(batch * 1_000).await.unwrap();
    }
    tracker
        .add(&[block(2, 1_000), block(0, 1_001)])
        .await
        .unwrap();
    let before = tracker.state().await;
    assert_eq!(before.allocations().len(), 6);
    tracker.kill().await;

    let tracker = Tracker::spawn(dir.path(), config(300)).await;
    assert_eq!(tracker.state().await, before);
    for (t, allocation) in before.allocations() {
        assert_eq!(tracker.allocate(*t).await.unwrap(), *allocation);
    }
    let next = tracker.allocate(7_000).await.unwrap();
    assert_eq!(next.blocks[&2], vec![block(2, 1_000)]);
    assert_eq!(next.blocks[&0], vec![block(0, 1_001)]);
    tracker.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn cleanup_deletes_old_wal_segments_yet_replay_still_rebuilds_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), config(160)).await;
    // Blocks stored long ago that stay unallocated: a clean by record time must not lose them.
    let early = [block(5, 900), block(6, 901)];
    let mut id = 0;
    for batch in 1..=10u64 {
        let blocks: Vec<_> = (0..3)
            .map(|s| {
                id += 1;
                block(s, id)
            })
            .collect();
        tracker.add(&blocks).await.unwrap();
        tracker.allocate(batch * 1_000).await.unwrap();
    }
    tracker.add(&early).await.unwrap();
    let segments_before = segment_files(dir.path());
    assert!(segments_before.len() > 3, "{segments_before:?}");

    let report = tracker.cleanup(8_000).await;
    assert_eq!(
        report.dropped_batches,
        (1..=7).map(|b| b * 1_000).collect::<Vec<_>>()
    );
    assert_eq!(report.compaction_error, None);
    assert_eq!(report.deleted_segments.len(), segments_before.len());
    // Only the snapshot's segment is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
    let live = tracker.state().await;
    assert_eq!(live.allocations().len(), 3);
    assert_eq!(live.backlog().len(), 2);

    tracker.kill().await;
    let tracker = Tracker::spawn(dir.path(), config(160)).await;
    assert_eq!(tracker.state().await, live);
    assert!(tracker.allocate(7_000).await.is_err());
    let next = tracker.allocate(11_000).await.unwrap();
    assert_eq!(next.iter().copied().collect::<Vec<_>>(), early.to_vec());

    // A cleanup that drops everything keeps the last allocated time.
    tracker.cleanup(u64::MAX).await;
    tracker.kill().await;
    let tracker = Tracker::spawn(dir.path(), config(160)).await;
    assert!(tracker.state().await.allocations().is_empty());
    assert!(matches!(
        tracker.allocate(11_000).await,
        Err(TrackerError::BatchTooOld { .. })
    ));
    tracker.kill().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_graceful_stop_releases_the_log_for_an_immediate_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Tracker::spawn(dir.path(), WalConfig::default()).await;
    tracker.add(&[block(0, 1)]).await.unwrap();
    tracker.allocate(10).await.unwrap();
    let before = tracker.state().await;
    tracker.actor.stop_and_wait(None, Some(WAIT)).await.unwrap();
    tracker.join.await.unwrap();
    let config = WalConfig {
        lock_wait: Duration::ZERO,
        ..WalConfig::default()
    };
    let tracker = Tracker::spawn(dir.path(), config).await;
    assert_eq!(tracker.state().await, before);
    tracker.kill().await;
}
