//! A checkpoint chosen to restore from (`EngineConfig::restore_from`) is restored once, at the
//! first start: a driver restarted after a failure resumes from the latest checkpoint, which
//! is the chosen state or what the run checkpointed after it.
//!
//! The bug this guards: the chosen id was read again at every in-process driver restart, so a
//! driver killed after an hour of work rewound to the chosen checkpoint (and re-ran that hour),
//! or failed for good once retention had removed it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use weir_actors::checkpoint::{CheckpointConfig, CheckpointId, CheckpointStore};
use weir_actors::pipeline::ReceiverFactory;
use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig, EventSubscription, Storage, read_event_log};
use weir_actors::{Event, EventSink};

const PATIENCE: Duration = Duration::from_secs(60);

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(Storage::local(dir));
    config.name_prefix = "restore-from/".to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.block_interval = Duration::from_millis(10);
    config
}

/// The receivers of an engine: each stream with its receiver's factory.
type Receivers = Vec<(u32, Arc<dyn ReceiverFactory>)>;

/// An engine's parts over `receiver` (clones share what it acknowledged) and `log` (what was
/// committed, across runs).
fn engine_parts(
    receiver: &NumberedReceiver,
    log: &Arc<CommitLog>,
) -> (Arc<CommitLogPipeline>, Receivers) {
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(log), Duration::ZERO));
    (pipeline, vec![(0, receiver.factory())])
}

/// The next checkpoint restored, and the next batch with records completed after it.
async fn restored_then_a_batch(events: &mut EventSubscription) -> u64 {
    let restored = events
        .next_matching(PATIENCE, |e| matches!(e, Event::CheckpointRestored { .. }))
        .await
        .expect("a checkpoint is restored");
    let Event::CheckpointRestored { id, .. } = restored.event else {
        unreachable!()
    };

    events
        .next_matching(
            PATIENCE,
            |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
        )
        .await
        .expect("a batch completes");
    id
}

async fn latest_id(dir: &std::path::Path) -> CheckpointId {
    let store = CheckpointStore::open(
        Storage::local(dir).join("checkpoints"),
        CheckpointConfig {
            retain: 100,
            events: EventSink::discard(),
        },
    )
    .await
    .unwrap();
    store.list().await.unwrap().last().unwrap().id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_restarted_after_a_failure_does_not_rewind_to_the_chosen_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = NumberedReceiver::new(5, Duration::from_millis(5));
    let log = Arc::new(CommitLog::default());
    // A first run leaves a history of checkpoints.
    let (pipeline, receivers) = engine_parts(&receiver, &log);
    let engine = Engine::start(config(dir.path()), pipeline, receivers)
        .await
        .unwrap();
    let mut events = engine.events();
    for _ in 0..4 {
        events
            .next_matching(
                PATIENCE,
                |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
            )
            .await
            .expect("a batch completes");
    }
    engine.stop(true).await.unwrap();
    // An older checkpoint than the newest: its batches are re-run (the block tracker keeps
    // what every retained checkpoint needs).
    let newest = latest_id(dir.path()).await;
    assert!(newest.0 >= 4, "a history of checkpoints: {newest:?}");
    let chosen = CheckpointId(newest.0 - 2);

    // Started from a chosen, older checkpoint.
    let mut config = config(dir.path());
    config.restore_from = Some(chosen);
    let (pipeline, receivers) = engine_parts(&receiver, &log);
    let engine = Engine::start(config, pipeline, receivers).await.unwrap();
    let mut events = engine.events();

    // The run makes progress past the chosen checkpoint (a few batches, each checkpointed),
    // then the driver fails; the root restarts it.
    for _ in 0..3 {
        events
            .next_matching(
                PATIENCE,
                |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
            )
            .await
            .expect("a batch completes");
    }
    ractor::registry::where_is("restore-from/driver")
        .expect("the driver runs")
        .kill();
    let again = restored_then_a_batch(&mut events).await;
    assert!(
        again > newest.0,
        "the restarted driver restored checkpoint {again}: it rewound to the chosen {chosen:?} \
         (or the older run's {newest:?}) instead of the newest, which is at least {}",
        newest.0 + 1
    );
    engine.stop(true).await.unwrap();

    // The whole story, from the event log (the first restore happened before `events()`
    // could subscribe): the chosen checkpoint at the start, a newer one at the restart.
    let (records, _) = read_event_log(&dir.path().join("events")).unwrap();
    let restored: Vec<u64> = records
        .iter()
        .filter_map(|r| match r.event {
            Event::CheckpointRestored { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(restored, [chosen.0, again], "{restored:?}");
    // The batches after the chosen checkpoint ran again with the same input: every record
    // acknowledged is in exactly one batch, and no batch was committed with other records.
    let verdict = verify(&receiver.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
}
