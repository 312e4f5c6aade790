//! Embedding weir in a service: the service owns its tokio runtime and its own endpoint,
//! runs a streaming context inside, watches the engine's events and reacts to them.
//!
//! Run it (state under `./weir-data/embedding/`):
//! ```text
//! cargo run --release -p weir-examples --bin embedding
//! cargo run --release -p weir-examples --bin embedding -- --stats-addr 127.0.0.1:7070 --chaos-after 3
//! nc 127.0.0.1 7070        # one line of live stats per connection
//! ```
//!
//! What it shows, in the order a service does it:
//!
//! 1. Build: `StreamingContext::get_or_create` (restores from the checkpoint when there is
//!    one), a socket source (a built-in text server on 127.0.0.1), a word count, and an output
//!    that publishes each batch's result into the service's shared state — idempotently, keyed
//!    by the batch time, because an output may run more than once for a batch.
//! 2. Start: `ctx.start()`, then `ctx.events()` — a bounded subscription that never slows
//!    the engine down (a subscriber that falls behind gets a `lagged` marker).
//! 3. React: log each batch's delays and warn when batches start later than one interval
//!    (falling behind); alert on `actor_failed`, `actor_restarted`, `actor_gave_up` and
//!    `checkpoint_failed`. `--chaos-after N` kills an executor after N batches to show the
//!    tree healing; `--fail` makes the output fail so the engine gives up.
//! 4. Serve: a stats endpoint (plain TCP on 127.0.0.1) answering each connection with one line
//!    of the service's view: batches, words, top word, restarts, the worst scheduling delay.
//! 5. Stop: Ctrl-C (or SIGTERM, or `--max-batches`) stops gracefully — receivers stop,
//!    what was received is processed and checkpointed — and `ctx.stop(true)` returns.
//!    If the engine gave up, `stop` returns `weir::EngineError::GaveUp` (which actor, how
//!    often, why); the service prints it and exits with status 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Parser;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use weir::{Event, Str, StreamingContext};
use weir_examples::run::{BoxError, CommonArgs, main_with};
use weir_examples::text_server::TextServer;

/// A service embedding weir: a word count inside, a stats endpoint outside.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the stats endpoint listens (port 0: any free port, printed at start).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    stats_addr: std::net::SocketAddr,
    /// Where checkpoints and logs live.
    #[arg(long, value_name = "DIR", default_value = "weir-data/embedding")]
    checkpoint_dir: PathBuf,
    /// The batch interval in milliseconds (default: 500, or `batch_interval_ms` of --config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_ms: Option<u64>,
    /// Kill an executor after N completed batches (once), to see the alerts and the healing.
    #[arg(long, value_name = "N")]
    chaos_after: Option<u64>,
    /// Make the output fail every batch: the engine restarts the driver until it gives up.
    #[arg(long)]
    fail: bool,
    /// Stop gracefully after N batches have completed.
    #[arg(long, value_name = "N")]
    max_batches: Option<u64>,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

/// What the service knows, shared by the output, the event loop and the stats endpoint.
#[derive(Debug, Default)]
struct Stats {
    /// The newest batch the output published (outputs may run twice: keyed by time).
    last_batch_ms: u64,
    batches_with_words: u64,
    words: u64,
    top_word: String,
    batches_completed: u64,
    restarts: u64,
    max_scheduling_delay_ms: u64,
}

impl Stats {
    fn line(&self) -> String {
        format!(
            "batches_completed={} batches_with_words={} words={} top_word={} restarts={} max_scheduling_delay_ms={}\n",
            self.batches_completed,
            self.batches_with_words,
            self.words,
            if self.top_word.is_empty() {
                "-"
            } else {
                &self.top_word
            },
            self.restarts,
            self.max_scheduling_delay_ms
        )
    }
}

type Shared = Arc<Mutex<Stats>>;

fn lock(stats: &Shared) -> std::sync::MutexGuard<'_, Stats> {
    stats.lock().unwrap_or_else(PoisonError::into_inner)
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with("embedding", args.common.log_format, run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let stats: Shared = Arc::default();

    // The service's own endpoint.
    let listener = TcpListener::bind(args.stats_addr).await?;
    println!("embedding: stats on {}", listener.local_addr()?);
    let endpoint = {
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let line = lock(&stats).line();
                let _ = socket.write_all(line.as_bytes()).await;
            }
        })
    };

    // 1. Build.
    let text = TextServer::start(5, Duration::from_millis(50), fastrand::u64(..)).await?;
    let (published, fail) = (Arc::clone(&stats), args.fail);
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let mut overrides = args.common.overrides()?;
    if let Some(ms) = args.batch_ms {
        overrides.set("batch_interval_ms", &ms.to_string())?;
    }
    if fail {
        // Give up soon.
        overrides.set("driver_policy_max_restarts", "2")?;
    }
    let mut ctx = StreamingContext::get_or_create(&args.checkpoint_dir, |config| {
        let config = overrides.apply(config.batch_interval(Duration::from_millis(500)));
        let ctx = StreamingContext::new(config);
        ctx.socket_text_stream(text.addr().to_string())
            .uid("lines")
            .flat_map(|line: &Str| line.words())
            .map(|word: &Str| (word.clone(), 1u64))
            .reduce_by_key(|a, b| a + b)
            .uid("counts")
            .foreach_batch(move |batch| {
                if fail {
                    return Err("this service was started with --fail".into());
                }
                if batch.is_empty() {
                    return Ok(());
                }
                let mut stats = lock(&published);
                if batch.time_ms <= stats.last_batch_ms {
                    return Ok(()); // published before: a re-run
                }
                stats.last_batch_ms = batch.time_ms;
                stats.batches_with_words += 1;
                stats.words += batch.iter().map(|(_, n)| n).sum::<u64>();
                if let Some((word, _)) = batch
                    .iter()
                    .max_by_key(|(w, n)| (*n, std::cmp::Reverse(w.clone())))
                {
                    stats.top_word = word.to_string();
                }
                Ok(())
            });
        Ok(ctx)
    })
    .await?;
    let names = ctx.config().engine.names();
    let interval_ms = ctx.config().engine.batch_interval.as_millis() as u64;

    // 2. Start and subscribe.
    ctx.start().await?;
    let mut events = ctx.events()?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("embedding: running; Ctrl-C stops gracefully");

    // 3. React to the engine's events.
    let mut chaos_done = false;
    let graceful = loop {
        let record = tokio::select! {
            _ = interrupt.recv() => break true,
            _ = terminate.recv() => break true,
            record = events.next() => record,
        };
        let Some(record) = record else { break false };
        match &record.event {
            Event::BatchCompleted {
                batch_time_ms,
                scheduling_delay_ms,
                processing_ms,
                records,
            } => {
                let completed = {
                    let mut s = lock(&stats);
                    s.batches_completed += 1;
                    s.max_scheduling_delay_ms = s.max_scheduling_delay_ms.max(*scheduling_delay_ms);
                    s.batches_completed
                };
                if *scheduling_delay_ms > interval_ms {
                    println!(
                        "warning: batch {batch_time_ms} started {scheduling_delay_ms} ms late (more than one interval): falling behind"
                    );
                } else {
                    println!(
                        "batch {batch_time_ms}: {records} lines, scheduled after {scheduling_delay_ms} ms, processed in {processing_ms} ms"
                    );
                }
                if args.chaos_after.is_some_and(|n| completed >= n) && !chaos_done {
                    chaos_done = true;
                    let victim = names.executor(0);
                    if let Some(actor) = ractor::registry::where_is(victim.clone()) {
                        println!("chaos: killing {victim}");
                        actor.kill();
                    }
                }
                if args.max_batches.is_some_and(|n| completed >= n) {
                    break true;
                }
            }
            Event::ActorFailed { actor, reason } => {
                println!("alert: {actor} failed: {reason}");
            }
            Event::ActorRestarted {
                actor, delay_ms, ..
            } => {
                lock(&stats).restarts += 1;
                println!("alert: {actor} restarts in {delay_ms} ms");
            }
            Event::ActorGaveUp {
                actor,
                child,
                reason,
            } => {
                println!("alert: {actor} gave up on {child}: {reason}");
                if *actor == names.root() {
                    break false; // the engine is done: stop() returns its error
                }
            }
            Event::CheckpointFailed { reason, .. } => {
                println!("alert: a checkpoint failed: {reason}");
            }
            Event::Lagged { missed } => {
                println!("warning: this service missed {missed} events (it fell behind)");
            }
            _ => {}
        }
    };

    // 5. Stop.
    let result = ctx.stop(graceful).await;
    endpoint.abort();
    drop(text);
    result?;
    println!(
        "embedding: stopped; final stats: {}",
        lock(&stats).line().trim_end()
    );
    Ok(())
}
