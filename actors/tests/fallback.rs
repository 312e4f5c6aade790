//! A damaged newest checkpoint of a stopped job: the next start falls back to the one before
//! and continues exactly once — every acknowledged record in exactly one committed batch, no
//! batch committed twice with different records, no restart loop (issue 16, item 9).
//!
//! The bug this guards: once the newest checkpoint was durable the block tracker dropped the
//! allocations of every batch before it, so the previous checkpoint's pending batch could not
//! be allocated again; the driver failed at it, was restarted, failed again, until the root gave
//! up. Now nothing any retained checkpoint needs is cleaned.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig, Event, EventSubscription, Storage, read_event_log};

const PATIENCE: Duration = Duration::from_secs(60);

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(Storage::local(dir));
    config.name_prefix = "fallback/".to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.block_interval = Duration::from_millis(10);
    config
}

async fn batches_with_records(events: &mut EventSubscription, count: usize) {
    for _ in 0..count {
        events
            .next_matching(PATIENCE, |e| match e {
                Event::ActorFailed { actor, reason } => panic!("{actor} failed: {reason}"),
                Event::BatchCompleted { records, .. } => *records > 0,
                _ => false,
            })
            .await
            .expect("a batch with records completes");
    }
}

/// The checkpoint files, oldest first.
fn checkpoint_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("checkpoint-"))
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_newest_checkpoint_falls_back_to_the_previous_one_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(CommitLog::default());
    let receiver = NumberedReceiver::new(5, Duration::from_millis(5));
    let factory = receiver.factory();
    let pipeline = || Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));

    let engine = Engine::start(
        config(dir.path()),
        pipeline(),
        vec![(0, Arc::clone(&factory))],
    )
    .await
    .unwrap();
    batches_with_records(&mut engine.events(), 4).await;
    engine.stop(true).await.unwrap();

    // Damage the newest checkpoint: one flipped byte in its payload.
    let files = checkpoint_files(dir.path());
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(newest, bytes).unwrap();
    let previous_id: u64 = files[files.len() - 2]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_start_matches("checkpoint-")
        .parse()
        .unwrap();

    let engine = Engine::start(config(dir.path()), pipeline(), vec![(0, factory)])
        .await
        .unwrap();
    batches_with_records(&mut engine.events(), 3).await;
    engine.stop(true).await.unwrap();

    let (records, _) = read_event_log(&dir.path().join("events")).unwrap();
    let restored: Vec<u64> = records
        .iter()
        .filter_map(|r| match r.event {
            Event::CheckpointRestored { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(
        restored,
        [previous_id],
        "the second run restored the checkpoint before the damaged one, once"
    );
    assert!(
        records
            .iter()
            .any(|r| matches!(r.event, Event::CheckpointSkipped { .. })),
        "the damaged checkpoint was reported"
    );
    let verdict = verify(&receiver.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
}
