//! The engine under failing checkpoints: a few failures in a row are tolerated and batches keep
//! completing; persistent failure makes the generator fail, the driver restart, and the root
//! finally give up with the cause.

use std::sync::Arc;
use std::time::Duration;

use weir_actors::pipeline::ReceiverFactory;
use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig, EngineError};
use weir_actors::{Event, Storage};

fn config(dir: &std::path::Path, prefix: &str) -> EngineConfig {
    let mut config = EngineConfig::new(Storage::local(dir));
    config.name_prefix = prefix.to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.block_interval = Duration::from_millis(10);
    config.checkpoint_policy.tolerable_failures = 2;
    config.driver_policy.intensity.max_restarts = 1;
    config.driver_policy.backoff.initial = Duration::from_millis(10);
    config
}

fn receiver() -> (NumberedReceiver, Arc<dyn ReceiverFactory>) {
    let numbers = NumberedReceiver::new(10, Duration::from_millis(5));
    let factory = numbers.factory();
    (numbers, factory)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_checkpoint_failures_do_not_stop_the_pipeline() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (numbers, factory) = receiver();
    let log = Arc::new(CommitLog::default());
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));
    let engine = Engine::start(
        config(dir.path(), "fp-tolerated/"),
        pipeline,
        vec![(0, factory)],
    )
    .await
    .unwrap();
    let mut events = engine.events();
    // Exactly two checkpoint writes fail (the tolerance), then writes succeed again.
    fail::cfg("checkpoint::write", "2*return->off").unwrap();
    let (mut failed, mut completed_after) = (0, 0);
    tokio::time::timeout(Duration::from_secs(60), async {
        while completed_after < 3 {
            match events.next().await.unwrap().event {
                Event::CheckpointFailed { .. } => failed += 1,
                Event::BatchCompleted { .. } if failed == 2 => completed_after += 1,
                Event::ActorFailed { actor, reason } => panic!("{actor} failed: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("batches kept completing");
    engine.stop(true).await.unwrap();
    assert!(verify(&numbers.acknowledged(), &log).is_exactly_once());
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_checkpoint_failure_is_given_up_on_with_its_cause() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (_, factory) = receiver();
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::default(), Duration::ZERO));
    let config = config(dir.path(), "fp-persistent/");
    let driver = config.names().driver();
    fail::cfg("checkpoint::write", "return").unwrap();
    let engine = Engine::start(config, pipeline, vec![(0, factory)])
        .await
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(60), engine.await_termination())
        .await
        .expect("the engine gave up in time");
    match outcome {
        Err(EngineError::GaveUp { actor, reason, .. }) => {
            assert_eq!(actor, driver);
            assert!(
                reason.contains("consecutive checkpoints failed"),
                "{reason}"
            );
        }
        other => panic!("expected GaveUp, got {other:?}"),
    }
    scenario.teardown();
}

/// A failed fsync poisons a WAL until it is reopened. The receiver WAL is the driver's and
/// shared by every stream: a poisoned one made every `store` fail, with nothing restarting,
/// until the driver happened to restart (found by the chaos harness's long run). Now the
/// driver fails, the root restarts it, the new driver reopens the WAL, and storing resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_receiver_wal_fsync_restarts_the_driver_and_storing_resumes() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (numbers, factory) = receiver();
    let log = Arc::new(CommitLog::default());
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));
    let mut config = config(dir.path(), "fp-wal-fsync/");
    config.driver_policy.intensity.max_restarts = 10;
    let driver = config.names().driver();
    let engine = Engine::start(config, pipeline, vec![(0, factory)])
        .await
        .unwrap();
    let mut events = engine.events();
    events
        .next_matching(
            Duration::from_secs(30),
            |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
        )
        .await
        .expect("a batch with records completes");
    // The receiver WAL's fsyncs fail (the block tracker's WAL is not touched), which poisons
    // it: the driver must fail, so that a new one reopens it.
    fail::cfg("wal::fsync", "return(receiver-wal)").unwrap();
    events
        .next_matching(Duration::from_secs(30), |e| {
            matches!(e, Event::ActorFailed { actor, reason }
                if *actor == driver && reason.contains("receiver WAL"))
        })
        .await
        .expect("the driver fails on the poisoned receiver WAL");
    fail::remove("wal::fsync");
    // A new driver stores and completes batches again.
    for _ in 0..3 {
        events
            .next_matching(
                Duration::from_secs(30),
                |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
            )
            .await
            .expect("batches with records complete after the restart");
    }
    engine.stop(true).await.unwrap();
    let verdict = verify(&numbers.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
    scenario.teardown();
}
