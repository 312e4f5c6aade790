//! End to end: kill each actor kind while records flow, then check exactly-once.
//!
//! A `NumberedReceiver` (`weir_actors::testing`) stores numbered records and remembers every one it had acknowledged
//! (`store` returned `Ok`). The test pipeline's single job per batch commits the batch's record
//! numbers under its batch id; committing a batch id again (a replay) must carry the same
//! records and is then skipped, as the exactly-once sink contract says. While it runs, the test
//! kills one actor of each kind in the middle of a batch, waits for the tree to recover (a later batch completes), and at
//! the end stops gracefully and checks: every acknowledged record is in exactly one committed
//! batch, and no batch id was ever committed with different content.

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
use weir_actors::{Engine, EngineConfig, EngineError};

async fn completed_after(events: &mut EventSubscription, count: usize) {
    let mut seen = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while seen < count {
            let r = events.next().await.expect("the event feed is open");
            if matches!(r.event, Event::BatchCompleted { records, .. } if records > 0) {
                seen += 1;
            }
        }
    })
    .await
    .expect("batches kept completing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_each_actor_kind_loses_and_duplicates_nothing() {
    kill_while_records_flow("e2e/", 1, Victims::EveryKind).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkpoints_survive_kills_of_the_generator_and_the_driver() {
    kill_while_records_flow("e2e-concurrent/", 3, Victims::CheckpointWriters).await;
}

/// Which actors to kill.
enum Victims {
    EveryKind,
    /// The actors whose death abandons checkpoint writes in flight.
    CheckpointWriters,
}

async fn kill_while_records_flow(prefix: &str, max_concurrent: usize, which: Victims) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    config.name_prefix = prefix.to_owned();
    config.checkpoint_policy.max_concurrent = max_concurrent;
    config.batch_interval = Duration::from_millis(100);
    config.block_interval = Duration::from_millis(20);
    config.receiver_restart_delay = Duration::from_millis(50);
    config.executors = 2;
    config.driver_policy.intensity.max_restarts = 20;
    let names = config.names();
    let log = Arc::new(CommitLog::default());
    // Pacing, not synchronisation: about 2 000 records a second.
    let generator = NumberedReceiver::new(10, Duration::from_millis(5));
    let factory = generator.factory();
    let engine = Engine::start(
        config,
        // Simulated processing time, so that kills land while batches are running.
        Arc::new(CommitLogPipeline::new(
            Arc::clone(&log),
            Duration::from_millis(30),
        )),
        vec![(0, factory)],
    )
    .await
    .unwrap();
    let mut events = engine.events();
    completed_after(&mut events, 3).await;

    let victims = match which {
        Victims::EveryKind => vec![
            names.receiver(0),
            names.receiver_supervisor(0),
            names.receiver_tracker(),
            names.executor(0),
            names.job_scheduler(),
            names.received_block_tracker(),
            names.job_generator(),
            names.driver(),
        ],
        Victims::CheckpointWriters => {
            vec![names.job_generator(), names.driver(), names.job_generator()]
        }
    };
    for victim in victims {
        // Kill in the middle of a batch: right after one starts.
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let r = events.next().await.unwrap();
                if matches!(r.event, Event::BatchStarted { .. }) {
                    break;
                }
            }
        })
        .await
        .expect("a batch started");
        let cell = ractor::registry::where_is(victim.clone())
            .unwrap_or_else(|| panic!("{victim} is not running"));
        cell.kill();
        let name = victim.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let r = events.next().await.unwrap();
                if matches!(&r.event, Event::ActorFailed { actor, .. } if *actor == name) {
                    break;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no failure reported for {victim}"));
        completed_after(&mut events, 2).await;
    }

    engine.stop(true).await.unwrap();
    let verdict = verify(&generator.acknowledged(), &log);
    assert!(
        verdict.duplicated.is_empty(),
        "records in two batches: {:?}",
        verdict.duplicated
    );
    assert!(
        verdict.lost.is_empty(),
        "acknowledged records lost: {:?} (of {})",
        &verdict.lost[..verdict.lost.len().min(10)],
        verdict.acknowledged
    );
    assert_eq!(
        verdict.conflicts, 0,
        "a batch id was committed twice with different records"
    );
    assert!(
        verdict.acknowledged > 100,
        "too little data flowed: {}",
        verdict.acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_keeps_failing_is_given_up_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    config.name_prefix = "give-up/".to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.driver_policy.intensity.max_restarts = 2;
    config.driver_policy.backoff.initial = Duration::from_millis(10);
    let driver = config.names().driver();
    let engine = Engine::start(
        config,
        Arc::new(CommitLogPipeline::failing(
            "the pipeline cannot plan any batch",
        )),
        Vec::new(),
    )
    .await
    .unwrap();
    let mut events = engine.events();
    let outcome = tokio::time::timeout(Duration::from_secs(60), engine.await_termination())
        .await
        .expect("the engine gave up in time");
    match outcome {
        Err(EngineError::GaveUp {
            actor,
            restarts,
            reason,
            ..
        }) => {
            assert_eq!(actor, driver);
            assert_eq!(restarts, 3);
            assert!(reason.contains("cannot plan any batch"), "{reason}");
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    // The give-up was published too.
    let gave_up = std::iter::from_fn(|| events.try_next())
        .any(|r| matches!(r.event, Event::ActorGaveUp { ref child, .. } if *child == driver));
    assert!(gave_up, "no actor_gave_up event for the driver");
}
