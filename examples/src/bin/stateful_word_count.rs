//! Running word totals kept in checkpointed state: every batch prints the words counted most
//! so far, and a restart continues from the totals of the last checkpoint.
//!
//! Run it over a built-in text server (it listens on `127.0.0.1` and sends generated lines;
//! state in `./weir-data/stateful`):
//! ```text
//! cargo run --release -p weir-examples --bin stateful_word_count
//! ```
//! or over the lines of your own TCP server (`nc -lk 9999`, then type):
//! ```text
//! cargo run --release -p weir-examples --bin stateful_word_count -- --socket 127.0.0.1:9999
//! ```
//!
//! The lines arrive through `socket_text_stream` (a receiver that stores them in WAL-backed
//! blocks), are split with `str::split_whitespace`, and `update_state_by_key` adds each
//! batch's counts to each word's total. The state is in every checkpoint, under the operator
//! id `totals`; stop the program (Ctrl-C) and start it again with the same `--checkpoint-dir`
//! and the totals go on from where they were. What the socket had sent but was not yet stored
//! when the process died is lost: a plain TCP sender gets no acknowledgement to replay from.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use weir::{Event, Str, StreamingContext};
use weir_examples::run::{BoxError, CommonArgs, Limits, main_with, run_until_stopped};
use weir_examples::text_server::TextServer;

/// Running word totals in checkpointed state, over a socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Read the lines a TCP server at HOST:PORT sends (default: a built-in text server on
    /// 127.0.0.1).
    #[arg(long, value_name = "HOST:PORT")]
    socket: Option<String>,
    /// Where checkpoints and logs live.
    #[arg(long, value_name = "DIR", default_value = "weir-data/stateful")]
    checkpoint_dir: PathBuf,
    /// The batch interval in milliseconds (default: 1000, or `batch_interval_ms` of --config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_ms: Option<u64>,
    /// How many of the top words to print per batch.
    #[arg(long, value_name = "N", default_value_t = 5)]
    top: usize,
    /// Stop gracefully after N batches have completed.
    #[arg(long, value_name = "N")]
    max_batches: Option<u64>,
    /// Stop gracefully after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration_secs: Option<u64>,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with("stateful_word_count", args.common.log_format, run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let server = match &args.socket {
        Some(_) => None,
        None => Some(TextServer::start(5, Duration::from_millis(50), fastrand::u64(..)).await?),
    };
    let addr = match (&args.socket, &server) {
        (Some(addr), _) => addr.clone(),
        (None, Some(server)) => server.addr().to_string(),
        (None, None) => return Err("no input: neither --socket nor the built-in server".into()),
    };

    let top = args.top;
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let mut overrides = args.common.overrides()?;
    if let Some(ms) = args.batch_ms {
        overrides.set("batch_interval_ms", &ms.to_string())?;
    }
    let common = args.common.clone();
    let ctx = StreamingContext::get_or_create(&args.checkpoint_dir, |config| {
        let ctx = StreamingContext::new(
            common.restore(overrides.apply(config.batch_interval(Duration::from_millis(1000))))?,
        );
        ctx.socket_text_stream(addr.clone())
            .uid("lines")
            .flat_map(|line: &Str| line.words())
            .map(|word: &Str| (word.clone(), 1u64))
            .reduce_by_key(|a, b| a + b)
            // The state outlives the batch: its keys get buffers of their own (a `Str` would
            // keep the received block it views alive). One copy per distinct word and batch.
            .map(|(word, n): &(Str, u64)| (word.to_string(), *n))
            .update_state_by_key(|new: &[u64], total: Option<u64>| {
                Some(total.unwrap_or(0) + new.iter().sum::<u64>())
            })
            .uid("totals")
            .foreach_batch(move |batch| {
                // Every word's total after this batch; print the top ones.
                let mut all: Vec<&(String, u64)> = batch.iter().collect();
                if all.is_empty() {
                    return Ok(());
                }
                all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                let words: u64 = all.iter().map(|(_, n)| n).sum();
                let line: Vec<String> = all
                    .iter()
                    .take(top)
                    .map(|(w, n)| format!("{w}={n}"))
                    .collect();
                println!(
                    "batch {}: {words} words so far, {} distinct; top: {}",
                    batch.time_ms,
                    all.len(),
                    line.join(" ")
                );
                Ok(())
            });
        Ok(ctx)
    })
    .await?;
    match ctx.restored() {
        Some(info) => println!(
            "stateful_word_count: restoring the totals of checkpoint {} (batch {})",
            info.checkpoint.0, info.checkpoint_time_ms
        ),
        None => println!("stateful_word_count: no checkpoint yet; totals start at zero"),
    }
    println!(
        "stateful_word_count: reading lines from {addr}; checkpoints in {}",
        args.checkpoint_dir.display()
    );
    let limits = Limits {
        max_batches: args.max_batches,
        duration: args.duration_secs.map(Duration::from_secs),
    };
    let stopped = run_until_stopped(ctx, limits, |event| {
        if let Event::ReceiverError { error, .. } = event {
            eprintln!("stateful_word_count: the socket receiver reported: {error}");
        }
        false
    })
    .await?;
    drop(server);
    println!("stateful_word_count: stopped ({stopped:?}); the totals are checkpointed");
    Ok(())
}
