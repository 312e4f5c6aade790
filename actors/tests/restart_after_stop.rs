//! A graceful stop's last batch is generated at the next batch boundary, which is still in the
//! future when the engine stops. An engine started again over the same storage before that
//! boundary must not generate that batch time a second time: the block tracker has already
//! allocated and cleaned it, and would refuse it — the driver failed once on every such quick
//! restart (found by the examples' restart tests).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use weir_actors::Event;
use weir_actors::EventSubscription;
use weir_actors::Storage;
use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig};

fn config(dir: &std::path::Path) -> EngineConfig {
    let mut config = EngineConfig::new(Storage::local(dir));
    config.name_prefix = "restart-after-stop/".to_owned();
    // Long enough that the restart below happens before the drain batch's boundary passes.
    config.batch_interval = Duration::from_secs(3);
    config.block_interval = Duration::from_millis(20);
    config
}

/// Waits for a completed batch with records, failing on any actor failure.
async fn a_batch_completes_without_failures(events: &mut EventSubscription) -> u64 {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = events.next().await.expect("the event feed is open");
            match r.event {
                Event::ActorFailed { actor, reason } => panic!("{actor} failed: {reason}"),
                Event::BatchCompleted {
                    batch_time_ms,
                    records,
                    ..
                } if records > 0 => return batch_time_ms,
                _ => {}
            }
        }
    })
    .await
    .expect("a batch completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_restart_after_a_graceful_stop_does_not_regenerate_the_last_batch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(CommitLog::default());
    let generator = NumberedReceiver::new(10, Duration::from_millis(5));
    let factory = generator.factory();
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));

    let engine = Engine::start(
        config(dir.path()),
        Arc::clone(&pipeline) as _,
        vec![(0, Arc::clone(&factory))],
    )
    .await
    .unwrap();
    // Right after a boundary's batch, the next boundary — where the drain batch goes — is
    // almost a whole interval ahead.
    let mut events = engine.events();
    a_batch_completes_without_failures(&mut events).await;
    engine.stop(true).await.unwrap();
    let drained_through = log.committed().keys().next_back().copied();
    assert!(
        drained_through.is_some(),
        "the drain batch committed what was received"
    );

    let engine = Engine::start(config(dir.path()), pipeline, vec![(0, factory)])
        .await
        .unwrap();
    let mut events = engine.events();
    let first = a_batch_completes_without_failures(&mut events).await;
    assert!(
        Some(first) > drained_through,
        "batch {first} after the restart is not after the drained batch {drained_through:?}"
    );
    engine.stop(true).await.unwrap();
    let verdict = verify(&generator.acknowledged(), &log);
    assert!(verdict.lost.is_empty(), "lost: {:?}", verdict.lost);
    assert!(
        verdict.duplicated.is_empty(),
        "duplicated: {:?}",
        verdict.duplicated
    );
}
