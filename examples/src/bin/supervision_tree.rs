//! The supervision tree at work: records flow, actors are killed, the tree heals itself.
//!
//! Execute with
//! ```text
//! cargo run --release -p weir-examples --bin supervision_tree [-- --seconds N] [-- --fail]
//! ```
//!
//! A generator receiver stores numbered records; a counting pipeline commits each batch's
//! count. Every second the program kills one actor of the tree (receiver, receiver supervisor,
//! executor, block tracker, job generator, driver, ...) and prints the supervision events as
//! they happen: the failure, the backoff, the restart, batches completing again. At the end it
//! stops gracefully and checks that every acknowledged record was counted exactly once.
//!
//! With `--fail` the pipeline fails every batch: the driver is restarted until the root's
//! restart intensity is spent, and the program exits non-zero with the engine's error, which
//! names the actor, how often it failed, and why. Data lives under `./weir-data/supervision/`.

use std::collections::BTreeSet;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weir_actors::checkpoint::OperatorState;
use weir_actors::engine::{Engine, EngineConfig};
use weir_actors::pipeline::{
    BatchInput, BoxFuture, Job, Pipeline, Receiver, ReceiverContext, ReceiverFactory, UserError,
};
use weir_actors::{Event, Storage};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Counting {
    fail: bool,
    counted: Arc<Mutex<BTreeSet<u64>>>,
    duplicates: Arc<AtomicU64>,
    committed_batches: Arc<Mutex<BTreeSet<u64>>>,
}

impl Pipeline for Counting {
    fn fingerprint(&self) -> u64 {
        1
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        if self.fail {
            return Err("this pipeline was started with --fail".into());
        }
        let mut ids = Vec::new();
        for block in input.blocks.values().flatten() {
            for record in block.records.iter() {
                ids.push(u64::from_le_bytes(record.as_ref().try_into()?));
            }
        }
        let (counted, duplicates, batches) = (
            Arc::clone(&self.counted),
            Arc::clone(&self.duplicates),
            Arc::clone(&self.committed_batches),
        );
        let batch = input.batch_time_ms;
        Ok(vec![Job {
            id: "count".to_owned(),
            run: Arc::new(move |_| {
                let (counted, duplicates, batches, ids) = (
                    Arc::clone(&counted),
                    Arc::clone(&duplicates),
                    Arc::clone(&batches),
                    ids.clone(),
                );
                Box::pin(async move {
                    // Exactly-once sink: a batch id already committed is skipped.
                    if !batches.lock().map_err(|_| "poisoned")?.insert(batch) {
                        return Ok(());
                    }
                    let mut counted = counted.lock().map_err(|_| "poisoned")?;
                    for id in ids {
                        if !counted.insert(id) {
                            duplicates.fetch_add(1, Ordering::SeqCst);
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
struct Numbers {
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
}

impl Receiver for Numbers {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            while !ctx.is_stopping() {
                let ids: Vec<u64> = (0..100)
                    .map(|_| self.next.fetch_add(1, Ordering::SeqCst))
                    .collect();
                let records = ids
                    .iter()
                    .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()))
                    .collect();
                if ctx.store(records).await.is_ok() {
                    self.acked.lock().map_err(|_| "poisoned")?.extend(ids);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(())
        })
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fail = args.iter().any(|a| a == "--fail");
    let seconds = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("supervision_tree: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(fail, seconds)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("supervision_tree: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(fail: bool, seconds: u64) -> Result<bool, BoxError> {
    let dir = std::path::PathBuf::from("weir-data/supervision");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut config = EngineConfig::new(Storage::local(&dir));
    config.batch_interval = Duration::from_millis(250);
    config.block_interval = Duration::from_millis(50);
    config.receiver_restart_delay = Duration::from_millis(500);
    config.driver_policy.intensity.max_restarts = if fail { 3 } else { 20 };
    let names = config.names();
    let numbers = Numbers::default();
    let pipeline = Counting {
        fail,
        counted: Arc::default(),
        duplicates: Arc::default(),
        committed_batches: Arc::default(),
    };
    let (counted, duplicates) = (
        Arc::clone(&pipeline.counted),
        Arc::clone(&pipeline.duplicates),
    );
    let factory: Arc<dyn ReceiverFactory> = {
        let n = numbers.clone();
        Arc::new(move || Box::new(n.clone()) as Box<dyn Receiver>)
    };
    let engine = Engine::start(config, Arc::new(pipeline), vec![(0, factory)]).await?;
    println!("weir supervision tree running; data in {}", dir.display());

    let mut events = engine.events();
    let printing = Arc::new(AtomicBool::new(true));
    let printer = {
        let printing = Arc::clone(&printing);
        tokio::spawn(async move {
            while let Some(record) = events.next().await {
                if !printing.load(Ordering::SeqCst) {
                    break;
                }
                let line = match &record.event {
                    Event::ActorFailed { actor, reason } => format!("  ✗ {actor} failed: {reason}"),
                    Event::ActorRestarted {
                        actor,
                        attempt,
                        delay_ms,
                    } => {
                        format!(
                            "  ↻ {actor} restarts in {delay_ms} ms (restart {attempt} in the window)"
                        )
                    }
                    Event::ActorStarted { actor } => format!("  ✓ {actor} started"),
                    Event::ActorGaveUp {
                        actor,
                        child,
                        reason,
                    } => {
                        format!("  ⚠ {actor} gave up on {child}: {reason}")
                    }
                    Event::BatchCompleted {
                        batch_time_ms,
                        records,
                        processing_ms,
                        ..
                    } => {
                        format!(
                            "    batch {batch_time_ms}: {records} records in {processing_ms} ms"
                        )
                    }
                    _ => continue,
                };
                println!("{line}");
            }
        })
    };

    if fail {
        let outcome = engine.await_termination().await;
        printing.store(false, Ordering::SeqCst);
        printer.abort();
        return match outcome {
            Err(err) => {
                eprintln!("supervision_tree: {err}");
                Ok(false)
            }
            Ok(()) => Ok(true),
        };
    }

    let victims = [
        names.receiver(0),
        names.executor(0),
        names.receiver_supervisor(0),
        names.received_block_tracker(),
        names.job_generator(),
        names.driver(),
    ];
    for victim in victims.iter().cycle().take(seconds as usize) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if let Some(cell) = ractor::registry::where_is(victim.clone()) {
            println!("killing {victim}");
            cell.kill();
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    printing.store(false, Ordering::SeqCst);
    engine.stop(true).await?;
    printer.abort();

    let acked = numbers.acked.lock().map_err(|_| "poisoned")?.clone();
    let counted = counted.lock().map_err(|_| "poisoned")?.clone();
    let lost = acked.difference(&counted).count();
    let dups = duplicates.load(Ordering::SeqCst);
    println!();
    println!(
        "{} records acknowledged, {} counted, {lost} lost, {dups} counted twice",
        acked.len(),
        counted.len()
    );
    Ok(lost == 0 && dups == 0)
}
