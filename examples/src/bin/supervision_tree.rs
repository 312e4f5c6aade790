//! The supervision tree at work: records flow, actors are killed, the tree heals itself.
//!
//! Execute with
//! ```text
//! cargo run --release -p weir-examples --bin supervision_tree [-- --seconds N] [-- --fail]
//!     [-- --control-addr 127.0.0.1:7070]
//! ```
//!
//! A numbered-records receiver stores records; a pipeline commits each batch's record numbers
//! under its batch id (`weir_actors::testing`). Every second the program kills one actor of the tree (receiver, receiver supervisor,
//! executor, block tracker, job generator, driver, ...) and prints the supervision events as
//! they happen: the failure, the backoff, the restart, batches completing again. At the end it
//! stops gracefully and checks that every acknowledged record was counted exactly once.
//!
//! With `--fail` the pipeline fails every batch: the driver is restarted until the root's
//! restart intensity is spent, and the program exits non-zero with the engine's error, which
//! names the actor, how often it failed, and why. Data lives under `./weir-data/supervision/`.
//!
//! With `--control-addr ADDR` the engine serves its control endpoint there, so that
//! `weir watch --addr ADDR --token-file weir-data/supervision/control-token` shows the tree
//! healing (see `docs/operations.md`).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use weir::StreamingConfig;
use weir::config_file::ConfigOverrides;
use weir_actors::pipeline::{Receiver, ReceiverFactory};
use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig};
use weir_actors::{Event, Storage};
use weir_examples::run::CommonArgs;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The supervision tree at work: actors are killed, the tree heals itself.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Kill one actor a second for this many seconds.
    #[arg(long, value_name = "N", default_value_t = 8)]
    seconds: u64,
    /// Make the pipeline fail every batch, to see the engine give up.
    #[arg(long)]
    fail: bool,
    /// Serve the control endpoint (`weir watch`) on ADDR, such as 127.0.0.1:7070.
    #[arg(long, value_name = "ADDR")]
    control_addr: Option<std::net::SocketAddr>,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = weir::logging::init(args.common.log_format);
    let (fail, seconds) = (args.fail, args.seconds);
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let overrides = args.common.overrides().and_then(|mut overrides| {
        if let Some(addr) = args.control_addr {
            overrides.set("control_addr", &addr.to_string())?;
        }
        Ok(overrides)
    });
    let overrides = match overrides {
        Ok(overrides) => overrides,
        Err(err) => {
            eprintln!("supervision_tree: {err}");
            return ExitCode::FAILURE;
        }
    };
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
    match runtime.block_on(run(fail, seconds, &overrides)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("supervision_tree: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(fail: bool, seconds: u64, overrides: &ConfigOverrides) -> Result<bool, BoxError> {
    let dir = std::path::PathBuf::from("weir-data/supervision");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    let mut config = EngineConfig::new(Storage::local(&dir));
    config.batch_interval = Duration::from_millis(250);
    config.block_interval = Duration::from_millis(50);
    config.receiver_restart_delay = Duration::from_millis(500);
    config.driver_policy.intensity.max_restarts = if fail { 3 } else { 20 };
    // The file's and the environment's engine settings over the example's; the streaming
    // settings (parallelism, rates) do not apply to an engine without a streaming context.
    let config = overrides
        .apply(StreamingConfig {
            engine: config,
            ..StreamingConfig::new(Storage::local(&dir))
        })
        .engine;
    let names = config.names();
    let numbers = NumberedReceiver::new(100, Duration::from_millis(10));
    let log = Arc::new(CommitLog::default());
    let pipeline = if fail {
        CommitLogPipeline::failing("this pipeline was started with --fail")
    } else {
        CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO)
    };
    let factory: Arc<dyn ReceiverFactory> = {
        let n = numbers.clone();
        Arc::new(move || Box::new(n.clone()) as Box<dyn Receiver>)
    };
    let engine = Engine::start(config, Arc::new(pipeline), vec![(0, factory)]).await?;
    println!("weir supervision tree running; data in {}", dir.display());
    if let Some(addr) = engine.control_addr() {
        println!(
            "control endpoint on {addr}: weir watch --addr {addr} --token-file {}",
            dir.join("control-token").display()
        );
    }

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

    let verdict = verify(&numbers.acknowledged(), &log);
    println!();
    println!(
        "{} records acknowledged, {} committed, {} lost, {} committed twice, {} conflicting batch commits",
        verdict.acknowledged,
        verdict.committed,
        verdict.lost.len(),
        verdict.duplicated.len(),
        verdict.conflicts
    );
    Ok(verdict.is_exactly_once())
}
