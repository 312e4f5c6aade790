//! The receiver WAL switched off (`EngineConfig::receiver_wal = false`, Spark's default):
//! blocks are acknowledged from memory, nothing is written to the receiver WAL, and a driver
//! that dies loses exactly the blocks it held in memory — the engine carries on instead of
//! failing on blocks it can no longer read.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use weir_actors::Event;
use weir_actors::EventSubscription;
use weir_actors::Storage;
use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::wal::{Wal, WalConfig};
use weir_actors::{Engine, EngineConfig};

/// Waits until `count` more batches with records have completed.
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

struct Run {
    engine: Engine,
    names: weir_actors::Names,
    events: EventSubscription,
    generator: NumberedReceiver,
    log: Arc<CommitLog>,
    dir: tempfile::TempDir,
}

async fn start(prefix: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    config.name_prefix = prefix.to_owned();
    config.receiver_wal = false;
    config.batch_interval = Duration::from_millis(100);
    config.block_interval = Duration::from_millis(20);
    config.executors = 2;
    let names = config.names();
    let log = Arc::new(CommitLog::default());
    // Pacing, not synchronisation: about 2 000 records a second.
    let generator = NumberedReceiver::new(10, Duration::from_millis(5));
    let factory = generator.factory();
    let engine = Engine::start(
        config,
        Arc::new(CommitLogPipeline::new(
            Arc::clone(&log),
            Duration::from_millis(30),
        )),
        vec![(0, factory)],
    )
    .await
    .unwrap();
    let events = engine.events();
    Run {
        engine,
        names,
        events,
        generator,
        log,
        dir,
    }
}

/// The records in the receiver WAL once the engine has stopped.
async fn receiver_wal_records(dir: &std::path::Path) -> u64 {
    let storage = Storage::local(dir).join("receiver-wal");
    let (wal, report) = Wal::open(storage, WalConfig::default()).await.unwrap();
    wal.close().await.unwrap();
    report.records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_receiver_wal_off_records_flow_exactly_once_and_nothing_is_logged() {
    let mut run = start("wal-off-plain/").await;
    completed_after(&mut run.events, 5).await;
    run.engine.stop(true).await.unwrap();

    let verdict = verify(&run.generator.acknowledged(), &run.log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
    assert!(
        verdict.acknowledged > 50,
        "too little data flowed: {verdict:?}"
    );
    assert_eq!(
        receiver_wal_records(run.dir.path()).await,
        0,
        "no block was written to the receiver WAL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_receiver_wal_off_a_dead_driver_loses_only_what_it_held_and_the_engine_goes_on() {
    let mut run = start("wal-off-kill/").await;
    let names = run.names.clone();
    completed_after(&mut run.events, 3).await;
    // Kill the driver in the middle of a batch: its blocks (this batch's and the unallocated
    // ones) exist in its memory only.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = run.events.next().await.unwrap();
            if matches!(r.event, Event::BatchStarted { .. }) {
                break;
            }
        }
    })
    .await
    .expect("a batch started");
    ractor::registry::where_is(names.driver())
        .expect("the driver is running")
        .kill();
    let driver = names.driver();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let r = run.events.next().await.unwrap();
            if matches!(&r.event, Event::ActorFailed { actor, .. } if *actor == driver) {
                break;
            }
        }
    })
    .await
    .expect("the driver's death was reported");
    // Everything the dead driver acknowledged (and perhaps a little the new one did).
    let held_at_kill: BTreeSet<u64> = run.generator.acknowledged();
    // The restarted driver re-runs the pending batch without its lost blocks, and carries on.
    completed_after(&mut run.events, 5).await;
    run.engine.stop(true).await.unwrap();

    let verdict = verify(&run.generator.acknowledged(), &run.log);
    assert!(
        !verdict.lost.is_empty(),
        "the blocks of the batch running at the kill existed in memory only: they are lost"
    );
    assert!(verdict.duplicated.is_empty(), "{verdict:?}");
    assert_eq!(verdict.conflicts, 0, "{verdict:?}");
    let lost_later: Vec<u64> = verdict
        .lost
        .iter()
        .filter(|id| !held_at_kill.contains(id))
        .copied()
        .collect();
    assert!(
        lost_later.is_empty(),
        "records acknowledged after the kill were lost: {lost_later:?}"
    );
    assert!(
        verdict.committed > held_at_kill.len(),
        "records stored after the restart were committed"
    );
}

/// The value of the gauge `name` in a Prometheus text exposition.
fn gauge(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} is not in the metrics:\n{text}"))
}

/// Input outruns processing with the receiver WAL off: the block store, which holds the only
/// copy of every block, stays within its budget (plus one forwarded batch of blocks) instead
/// of growing with the backlog — the receiver's `store` waits, and it reads nothing more —
/// and after a graceful stop every acknowledged record was committed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_receiver_wal_off_memory_stays_within_the_budget_when_input_outruns_processing() {
    const BUDGET: usize = 16 << 10;
    // One forwarded batch (STORE_BATCH_MAX = 64 calls) of the largest store (100 records of 8
    // bytes) may be admitted before it is counted.
    const SLACK: usize = 64 * 100 * 8;
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    config.name_prefix = "wal-off-bound".to_owned();
    config.receiver_wal = false;
    config.block_store_bytes = BUDGET;
    config.batch_interval = Duration::from_millis(100);
    config.block_interval = Duration::from_millis(20);
    config.executors = 1;
    let log = Arc::new(CommitLog::default());
    // Offered: about 800 KB/s (100 records of 8 bytes every millisecond or so); processed:
    // one batch per 300 ms of simulated work, three batch intervals. Unbounded, the store
    // would hold the whole backlog: megabytes within seconds.
    let generator = NumberedReceiver::new(100, Duration::from_millis(1));
    let engine = Engine::start(
        config,
        Arc::new(CommitLogPipeline::new(
            Arc::clone(&log),
            Duration::from_millis(300),
        )),
        vec![(0, generator.factory())],
    )
    .await
    .unwrap();
    let mut events = engine.events();
    let mut highest = 0.0f64;
    let mut completed = 0;
    tokio::time::timeout(Duration::from_secs(60), async {
        while completed < 12 {
            let r = events.next().await.expect("the event feed is open");
            if matches!(r.event, Event::BatchCompleted { records, .. } if records > 0) {
                completed += 1;
                highest = highest.max(gauge(&engine.metrics().encode(), "weir_block_store_bytes"));
            }
        }
    })
    .await
    .expect("batches kept completing");
    // Acknowledged but not yet committed: held in the store, so bounded by it too (read in
    // this order, the committed count can only be larger than when `acked` was taken).
    let acked = generator.acknowledged().len();
    let committed: usize = log.committed().values().map(Vec::len).sum();
    engine.stop(true).await.unwrap();
    assert!(
        highest <= (BUDGET + SLACK) as f64,
        "the block store held {highest} bytes, over its budget of {BUDGET} (+ {SLACK})"
    );
    assert!(
        highest > 0.0,
        "nothing was ever held in memory: the test did not load the store"
    );
    // Pushed back: what was accepted and not yet processed is what fits the store (8 bytes a
    // record), not what was offered.
    assert!(
        acked.saturating_sub(committed) * 8 <= BUDGET + SLACK,
        "{acked} records acknowledged, {committed} committed: the receiver was not held back"
    );
    let verdict = verify(&generator.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
}
