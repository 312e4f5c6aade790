//! Each actor kind killed repeatedly while records flow, on a seeded schedule; then every
//! invariant of `weir_chaos_tests::invariants` is checked over the recorded history.
//!
//! Replay a run with `WEIR_CHAOS_SEED=<seed>` (the seed is printed).

use std::sync::Arc;
use std::time::Duration;

use weir_actors::Storage;
use weir_chaos_tests::{
    ActorKind, Fault, Numbered, NumberedConfig, RunConfig, Runner, Schedule, Summary, seed_from_env,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_actor_kind_killed_repeatedly_under_load_loses_and_duplicates_nothing() {
    let seed = seed_from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = Arc::new(Numbered::new(NumberedConfig {
        streams: 2,
        ..NumberedConfig::default()
    }));
    let mut config = RunConfig::new(Storage::local(dir.path()), "kills/");
    config.verbose = true;
    let runner = Runner::new(workload, config);
    let actors = ActorKind::all(&[0, 1], 2);
    const ROUNDS: usize = 3;
    let schedule = Schedule::each_kind(
        seed,
        &actors,
        ROUNDS,
        Duration::ZERO,
        Duration::from_millis(150),
    );
    let outcome = runner.run(&schedule).await;
    let summary = Summary::of(&outcome.history, Some(seed));
    println!("{summary}");
    assert!(outcome.report.is_ok(), "seed {seed}: {}", outcome.report);
    assert!(outcome.engine.is_ok(), "seed {seed}: {:?}", outcome.engine);
    assert_eq!(
        summary.skipped, 0,
        "seed {seed}: some kills were not injected"
    );
    for kind in &actors {
        assert!(
            summary.kills[kind.label()] >= ROUNDS as u64,
            "{kind} killed {} times",
            summary.kills[kind.label()]
        );
    }
    assert!(
        summary.acknowledged > 1000,
        "too little data flowed: {}",
        summary.acknowledged
    );
    assert!(summary.actor_failures >= (ROUNDS * actors.len()) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_actor_kind_panicking_inside_a_handler_loses_and_duplicates_nothing() {
    let seed = seed_from_env();
    let dir = tempfile::tempdir().expect("tempdir");
    let workload = Arc::new(Numbered::new(NumberedConfig::default()));
    let mut config = RunConfig::new(Storage::local(dir.path()), "panics/");
    config.verbose = true;
    let runner = Runner::new(workload, config);
    // The actors that handle messages while batches run (an armed panic fires at the next
    // message): the driver, the receiver tracker and the receiver do not, and are killed above.
    let actors: Vec<ActorKind> = ActorKind::all(&[0], 2)
        .into_iter()
        .filter(|a| a.handles_messages_steadily())
        .collect();
    const ROUNDS: usize = 2;
    let mut schedule = Schedule::each_kind(
        seed,
        &actors,
        ROUNDS,
        Duration::ZERO,
        Duration::from_millis(150),
    );
    for step in &mut schedule.steps {
        if let Fault::Kill(a) = step.fault {
            step.fault = Fault::Panic(a);
        }
    }
    let outcome = runner.run(&schedule).await;
    let summary = Summary::of(&outcome.history, Some(seed));
    println!("{summary}");
    assert!(outcome.report.is_ok(), "seed {seed}: {}", outcome.report);
    assert!(outcome.engine.is_ok(), "seed {seed}: {:?}", outcome.engine);
    assert_eq!(summary.skipped, 0, "seed {seed}: some panics never fired");
    for kind in &actors {
        let key = format!("panic in {}", kind.label());
        assert!(
            summary.other_faults.get(&key).copied().unwrap_or(0) >= ROUNDS as u64,
            "{key}: {:?}",
            summary.other_faults
        );
    }
    let panicked = outcome
        .history
        .restarts
        .iter()
        .filter(|r| r.reason.contains("injected by the chaos harness"))
        .count();
    assert!(
        panicked >= ROUNDS * actors.len(),
        "{panicked} failures carried the injected panic"
    );
}
