//! The engine under failing checkpoints: a few failures in a row are tolerated and batches keep
//! completing; persistent failure makes the generator fail, the driver restart, and the root
//! finally give up with the cause. A checkpoint write held on its blocking thread keeps a stop
//! from returning, and a restarted driver from starting, until it landed.

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
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

/// Holds every checkpoint write at its `checkpoint::write` failpoint — on the blocking thread
/// that runs it, after its temp file was created — until [`HeldWrites::release_after`] opens
/// the gate.
struct HeldWrites {
    gate: Arc<(Mutex<bool>, Condvar)>,
    reached: tokio::sync::mpsc::UnboundedReceiver<()>,
    released: Arc<AtomicBool>,
}

impl HeldWrites {
    fn install() -> Self {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (reached_tx, reached) = tokio::sync::mpsc::unbounded_channel();
        let held = Arc::clone(&gate);
        fail::cfg_callback("checkpoint::write", move || {
            let _ = reached_tx.send(());
            let (open, opened) = &*held;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
        })
        .unwrap();
        HeldWrites {
            gate,
            reached,
            released: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Waits until a checkpoint write is held.
    async fn reached(&mut self) {
        tokio::time::timeout(Duration::from_secs(30), self.reached.recv())
            .await
            .expect("a checkpoint write reached its failpoint")
            .unwrap();
    }

    /// Opens the gate from another thread after `hold` (how long the write hangs: the fault),
    /// noting first that it did.
    fn release_after(&self, hold: Duration) -> std::thread::JoinHandle<()> {
        let (gate, released) = (Arc::clone(&self.gate), Arc::clone(&self.released));
        std::thread::spawn(move || {
            std::thread::sleep(hold);
            released.store(true, Ordering::SeqCst);
            let (open, opened) = &*gate;
            *open.lock().unwrap() = true;
            opened.notify_all();
        })
    }

    fn was_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }
}

/// Every file under `dir` with its length and modification time.
fn files(dir: &Path) -> BTreeMap<PathBuf, (u64, std::time::SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                out.insert(entry.path(), (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

/// How long a held checkpoint write hangs before it is let go: long against an immediate stop
/// or a driver restart (milliseconds), short for CI.
const HOLD: Duration = Duration::from_millis(400);

/// A checkpoint write on a blocking thread cannot be aborted: the stopped job generator drops
/// its future, but the closure runs to its end. `stop` returned while it still ran, and
/// released the storage lock, so the file landed in a directory another process may already
/// own. Now the engine waits for it before it releases the directory and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_returns_only_after_a_held_checkpoint_write_landed() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (_, factory) = receiver();
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::default(), Duration::ZERO));
    let engine = Engine::start(
        config(dir.path(), "fp-stop-held/"),
        pipeline,
        vec![(0, factory)],
    )
    .await
    .unwrap();
    let mut held = HeldWrites::install();
    held.reached().await;
    let releaser = held.release_after(HOLD);
    tokio::time::timeout(Duration::from_secs(30), engine.stop(false))
        .await
        .expect("the stop returned once the write was let go")
        .unwrap();
    assert!(
        held.was_released(),
        "stop returned while a checkpoint write was still held on its blocking thread"
    );
    let at_return = files(dir.path());
    // The held write finished before the return: its temp file is renamed, nothing is left
    // half-written.
    let temps: Vec<_> = at_return
        .keys()
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".tmp-")
        })
        .collect();
    assert!(temps.is_empty(), "temp files at stop's return: {temps:?}");
    releaser.join().unwrap();
    // And nothing changes afterwards: the directory was handed back quiet.
    assert_eq!(files(dir.path()), at_return);
    scenario.teardown();
}

/// The same write, held while the job generator fails: the root restarts the driver, and the
/// new driver must not open the checkpoint store (which removes temp files and reserves the
/// next id — the very one still being written) before the dead generator's write landed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_driver_starts_only_after_its_predecessors_held_write_landed() {
    let scenario = fail::FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let (numbers, factory) = receiver();
    let log = Arc::new(CommitLog::default());
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));
    let mut config = config(dir.path(), "fp-restart-held/");
    config.driver_policy.intensity.max_restarts = 10;
    let names = config.names();
    let driver = names.driver();
    let engine = Engine::start(config, pipeline, vec![(0, factory)])
        .await
        .unwrap();
    let mut events = engine.events();
    let mut held = HeldWrites::install();
    held.reached().await;
    // The generator panics at its next message (its next tick, at most a batch away).
    weir_actors::faults::arm_panic(names.job_generator(), "injected: generator dies mid-write");
    events
        .next_matching(
            Duration::from_secs(30),
            |e| matches!(e, Event::ActorRestarted { actor, .. } if *actor == driver),
        )
        .await
        .expect("the root restarts the driver");
    let releaser = held.release_after(HOLD);
    events
        .next_matching(
            Duration::from_secs(30),
            |e| matches!(e, Event::ActorStarted { actor } if *actor == driver),
        )
        .await
        .expect("the driver starts again");
    assert!(
        held.was_released(),
        "the new driver started while its predecessor's checkpoint write was still held"
    );
    releaser.join().unwrap();
    events
        .next_matching(
            Duration::from_secs(30),
            |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
        )
        .await
        .expect("batches with records complete after the restart");
    engine.stop(true).await.unwrap();
    let verdict = verify(&numbers.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
    scenario.teardown();
}
