//! End to end: kill each actor kind while records flow, then check exactly-once.
//!
//! A generator receiver stores numbered records and remembers every one it had acknowledged
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

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weir_actors::Event;
use weir_actors::Storage;
use weir_actors::checkpoint::OperatorState;
use weir_actors::engine::{Engine, EngineConfig, EngineError};
use weir_actors::event_bus::EventSubscription;
use weir_actors::pipeline::{
    BatchInput, BoxFuture, Job, Pipeline, Receiver, ReceiverContext, ReceiverFactory, UserError,
};

#[derive(Default)]
struct Sink {
    committed: Mutex<BTreeMap<u64, Vec<u64>>>,
    conflicts: AtomicU64,
}

struct TestPipeline {
    sink: Arc<Sink>,
}

impl Pipeline for TestPipeline {
    fn fingerprint(&self) -> u64 {
        1
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        let mut ids = Vec::new();
        for block in input.blocks.values().flatten() {
            for record in block.records.iter() {
                ids.push(u64::from_le_bytes(record.as_ref().try_into()?));
            }
        }
        let sink = Arc::clone(&self.sink);
        let batch = input.batch_time_ms;
        Ok(vec![Job {
            id: "count".to_owned(),
            run: Arc::new(move |_ctx| {
                let (sink, ids) = (Arc::clone(&sink), ids.clone());
                Box::pin(async move {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    // Simulated processing time, so that kills land while batches are running.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    let mut committed = sink.committed.lock().unwrap();
                    match committed.get(&batch) {
                        Some(existing) if *existing != ids => {
                            sink.conflicts.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(_) => {} // a replay of a committed batch: skipped
                        None => {
                            committed.insert(batch, ids);
                        }
                    }
                    Ok(())
                })
            }),
        }])
    }

    fn snapshot(&self) -> Result<Vec<OperatorState>, UserError> {
        Ok(Vec::new())
    }

    fn restore(&self, _: &[OperatorState]) -> Result<(), UserError> {
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Generator {
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
}

impl Receiver for Generator {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            while !ctx.is_stopping() {
                let ids: Vec<u64> = (0..10)
                    .map(|_| self.next.fetch_add(1, Ordering::SeqCst))
                    .collect();
                let records = ids
                    .iter()
                    .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()))
                    .collect();
                if ctx.store(records).await.is_ok() {
                    self.acked.lock().unwrap().extend(ids);
                }
                // Pacing, not synchronisation: about 2 000 records a second.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(())
        })
    }
}

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
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    config.name_prefix = "e2e/".to_owned();
    config.batch_interval = Duration::from_millis(100);
    config.block_interval = Duration::from_millis(20);
    config.receiver_restart_delay = Duration::from_millis(50);
    config.executors = 2;
    config.driver_policy.intensity.max_restarts = 20;
    let names = config.names();
    let sink = Arc::new(Sink::default());
    let generator = Generator::default();
    let factory: Arc<dyn ReceiverFactory> = {
        let g = generator.clone();
        Arc::new(move || Box::new(g.clone()) as Box<dyn Receiver>)
    };
    let engine = Engine::start(
        config,
        Arc::new(TestPipeline {
            sink: Arc::clone(&sink),
        }),
        vec![(0, factory)],
    )
    .await
    .unwrap();
    let mut events = engine.events();
    completed_after(&mut events, 3).await;

    let victims = [
        names.receiver(0),
        names.receiver_supervisor(0),
        names.receiver_tracker(),
        names.executor(0),
        names.job_scheduler(),
        names.received_block_tracker(),
        names.job_generator(),
        names.driver(),
    ];
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
    let acked = generator.acked.lock().unwrap().clone();
    let committed = sink.committed.lock().unwrap().clone();
    let mut seen = BTreeSet::new();
    for (batch, ids) in &committed {
        for id in ids {
            assert!(
                seen.insert(*id),
                "record {id} is in two batches (the second: {batch})"
            );
        }
    }
    let lost: Vec<_> = acked.difference(&seen).take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged records lost: {lost:?} (of {})",
        acked.len()
    );
    assert_eq!(
        sink.conflicts.load(Ordering::SeqCst),
        0,
        "a batch id was committed twice with different records"
    );
    assert!(acked.len() > 100, "too little data flowed: {}", acked.len());
}

struct FailingPipeline;

impl Pipeline for FailingPipeline {
    fn fingerprint(&self) -> u64 {
        2
    }

    fn jobs(&self, _: &BatchInput) -> Result<Vec<Job>, UserError> {
        Err("the pipeline cannot plan any batch".into())
    }

    fn snapshot(&self) -> Result<Vec<OperatorState>, UserError> {
        Ok(Vec::new())
    }

    fn restore(&self, _: &[OperatorState]) -> Result<(), UserError> {
        Ok(())
    }
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
    let engine = Engine::start(config, Arc::new(FailingPipeline), Vec::new())
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
