//! Storage that fails: errors at every edge for a while and then recovering, torn writes,
//! stalls, and a full disk. Each on a seeded schedule (replay with `WEIR_CHAOS_SEED`), each
//! checked against every invariant, with memory sampled while the storage is down.

use std::sync::Arc;
use std::time::Duration;

use weir_actors::Storage;
use weir_chaos_tests::{
    Fault, FaultClass, History, Numbered, NumberedConfig, RunConfig, Runner, Schedule,
    ScheduleConfig, StorageEdge, Summary, seed_from_env,
};

async fn run(name: &str, schedule: &Schedule) -> (Summary, History) {
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = Arc::new(Numbered::new(NumberedConfig::default()));
    let mut config = RunConfig::new(Storage::local(dir.path()), format!("{name}/"));
    config.verbose = true;
    let runner = Runner::new(workload, config);
    let outcome = runner.run(schedule).await;
    let summary = Summary::of(&outcome.history, Some(schedule.seed));
    println!("{name}:\n{summary}");
    assert!(
        outcome.report.is_ok(),
        "{name}, seed {}: {}",
        schedule.seed,
        outcome.report
    );
    assert!(outcome.engine.is_ok(), "{name}: {:?}", outcome.engine);
    assert_eq!(summary.skipped, 0, "{name}: faults not injected");
    assert!(summary.acknowledged > 0);
    (summary, outcome.history)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_failing_for_a_while_at_every_edge_then_recovering() {
    let seed = seed_from_env();
    let config = ScheduleConfig::kills(12, Duration::from_millis(200), Vec::new()).with_mix(vec![
        (FaultClass::StorageError, 3),
        (FaultClass::TornWrite, 2),
        (FaultClass::Stall, 2),
    ]);
    let mut schedule = Schedule::generate(seed, &config);
    // Every edge the engine heals from fails at least once, whatever the seed drew.
    let last = schedule.steps.last().map_or(Duration::ZERO, |s| s.at);
    for (i, edge) in StorageEdge::HEALING.into_iter().enumerate() {
        schedule.steps.push(weir_chaos_tests::schedule::Step {
            at: last + Duration::from_millis(200 * (i as u64 + 1)),
            fault: Fault::StorageError(edge, 2),
        });
    }
    let (summary, _) = run("storage-errors", &schedule).await;
    for edge in StorageEdge::HEALING {
        assert!(
            summary
                .other_faults
                .contains_key(&format!("storage error at {edge}")),
            "{edge} never failed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_acknowledgements_not_correctness_and_memory_stays_bounded() {
    let seed = seed_from_env();
    let config = ScheduleConfig::kills(3, Duration::from_millis(300), Vec::new())
        .with_mix(vec![(FaultClass::DiskFull, 1)]);
    let mut schedule = Schedule::generate(seed, &config);
    // One long outage: two seconds of a full disk.
    for step in &mut schedule.steps {
        if let Fault::DiskFull(d) = &mut step.fault {
            *d = (*d).max(Duration::from_millis(100));
        }
    }
    schedule.steps.push(weir_chaos_tests::schedule::Step {
        at: schedule.steps.last().map_or(Duration::ZERO, |s| s.at) + Duration::from_millis(300),
        fault: Fault::DiskFull(Duration::from_secs(2)),
    });
    let (summary, history) = run("disk-full", &schedule).await;
    assert_eq!(summary.other_faults["disk full"], 4);
    // The engine saw the operating system's error, not a generic one.
    let reasons: Vec<&str> = history.restarts.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("No space left on device")),
        "no failure named the full disk: {reasons:?}"
    );
    // Every outage ends with the pipeline completing batches again, within the bound the
    // invariants check; the last outage alone lasted 2 s.
    assert!(summary.recovery_max >= Duration::from_secs(2));
}
