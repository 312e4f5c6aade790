//! The driver killed at the four moments where a crash is most delicate, each held there first
//! (a failpoint callback holds the storage thread; the workload's hold points hold the
//! receiver or the sink), then killed, then let go:
//!
//! * during a checkpoint write (the held write is torn when released, as a crash leaves it);
//! * during a WAL append (torn likewise);
//! * between the WAL append and the ack (the block is durable and tracked, the source was
//!   never acknowledged);
//! * between the output commit and the checkpoint (the batch is re-run after the restart and
//!   the sink must skip it).
//!
//! Every invariant is checked after each.

use std::sync::Arc;
use std::time::Duration;

use weir_actors::Storage;
use weir_chaos_tests::{HoldPoint, Numbered, NumberedConfig, RunConfig, Runner, Summary};

async fn kill_the_driver_at(point: HoldPoint, times: usize) -> Summary {
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = Arc::new(Numbered::new(NumberedConfig::default()));
    let mut config = RunConfig::new(Storage::local(dir.path()), format!("held-{point:?}/"));
    config.verbose = true;
    let runner = Runner::new(Arc::clone(&workload), config);
    let points = vec![point; times];
    let outcome = runner
        .kill_driver_at(&points, Duration::from_millis(200))
        .await;
    let summary = Summary::of(&outcome.history, None);
    println!("{point}:\n{summary}");
    assert!(outcome.report.is_ok(), "{point}: {}", outcome.report);
    assert!(outcome.engine.is_ok(), "{point}: {:?}", outcome.engine);
    assert_eq!(
        summary.kills.get("driver").copied().unwrap_or(0),
        times as u64,
        "{point}: not every kill landed at the hold point ({} skipped)",
        summary.skipped
    );
    assert!(summary.acknowledged > 0);
    summary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_killed_during_a_checkpoint_write() {
    kill_the_driver_at(HoldPoint::CheckpointWrite, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_killed_during_a_wal_append() {
    kill_the_driver_at(HoldPoint::WalAppend, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_killed_between_the_wal_append_and_the_ack() {
    let summary = kill_the_driver_at(HoldPoint::BeforeAck, 3).await;
    // The held blocks were durable but never acknowledged: committed exceeds acknowledged.
    assert!(
        summary.committed > summary.acknowledged,
        "held blocks were expected to be committed without an ack: {} committed, {} acknowledged",
        summary.committed,
        summary.acknowledged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_killed_between_the_output_commit_and_the_checkpoint() {
    let summary = kill_the_driver_at(HoldPoint::AfterCommit, 3).await;
    // Each committed-but-not-checkpointed batch is re-run after the restart, and skipped.
    assert!(
        summary.replays >= 3,
        "expected the re-run of each held batch to be skipped by the sink, saw {}",
        summary.replays
    );
}
