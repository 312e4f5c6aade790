//! Word count, exactly once: text files (or a socket) in, one directory of counts per batch
//! out, surviving `kill -9` at any moment.
//!
//! Run the self-contained demo (a built-in generator drops text files into
//! `./weir-data/input/`; checkpoints in `./weir-data/checkpoint`, counts in
//! `./weir-data/output`):
//! ```text
//! cargo run --release -p weir-examples --bin word_count
//! ```
//! Or count your own files, or the lines of a TCP server (`nc -lk 9999`):
//! ```text
//! cargo run --release -p weir-examples --bin word_count -- --input-dir DIR \
//!     [--checkpoint-dir DIR] [--output-dir DIR] [--batch-ms 1000] [--running]
//! cargo run --release -p weir-examples --bin word_count -- --socket 127.0.0.1:9999
//! ```
//!
//! Each batch's lines are split into words (`Str::words`, what `str::split_whitespace` finds)
//! and counted per word by the ordinary DStream program — `flat_map` to words, `(word, 1)`,
//! `reduce_by_key` — which the engine runs without a copy or a pair per word (with
//! `--running`: running totals kept in checkpointed state by `update_state_by_key`, or with
//! `--running-with map-with-state` by `map_with_state`, whose checkpoints write only the
//! totals a batch changed).
//! `--program` selects variants for comparisons (docs/benchmarks.md). Every
//! batch with output is written to `OUTPUT/batch-<batch_time_ms>/` atomically — the
//! directory appears complete or not at all — as `part-*` files of sorted `word<TAB>count`
//! lines, and a batch re-run after a crash never writes a second copy.
//!
//! Files are read exactly once: the plan of a batch (which files, and how many bytes of each)
//! is in the checkpoint before the batch runs, and a re-run reads the same. So killing the process with `kill -9` and starting it again with
//! the same arguments continues where it was, and the summed output counts every input word
//! exactly once (`examples/tests/word_count_kill9.rs` proves it). Put files into the input
//! directory whole: write them elsewhere (or under a name starting with `.`) and rename.
//! Socket input has no replay: lines in flight when the process dies are lost.
//!
//! Watch it with `weir events --dir ./weir-data/checkpoint` (the event log), or with
//! `weir watch --addr ADDR --token-file ./weir-data/checkpoint/control-token` when started
//! with `--control-addr ADDR`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use weir::dstream::{State, StateSpec};
use weir::sources::file_stream::FileStreamOptions;
use weir::sources::socket::SocketTextReceiver;
use weir::{DStream, Event, Storage, Str, StreamingConfig, StreamingContext};
use weir_examples::generator::FileFeeder;
use weir_examples::run::{BoxError, CommonArgs, Limits, main_with, run_until_stopped};

/// How many new files one batch reads at most.
const MAX_FILES_PER_BATCH: usize = 1000;

/// The batch interval unless a flag, the environment or `--config` says otherwise.
const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(1000);

/// Exactly-once word count over a directory of text files or a socket.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Count the text files that appear in this directory (default: a built-in generator
    /// writing into ./weir-data/input).
    #[arg(long, value_name = "DIR", conflicts_with = "socket")]
    input_dir: Option<PathBuf>,
    /// Count the lines a TCP server at HOST:PORT sends (no replay after a crash).
    #[arg(long, value_name = "HOST:PORT")]
    socket: Option<String>,
    /// Where checkpoints, logs and the file manifest live: a directory, or (built with weir's
    /// `s3` feature) `s3://BUCKET/PREFIX?endpoint=URL` with credentials from the AWS
    /// environment (then there is no event log and no control token file).
    #[arg(
        long,
        value_name = "DIR|S3-URL",
        default_value = "weir-data/checkpoint"
    )]
    checkpoint_dir: String,
    /// Where the batch directories are written.
    #[arg(long, value_name = "DIR", default_value = "weir-data/output")]
    output_dir: PathBuf,
    /// The batch interval in milliseconds (default: 1000, or `batch_interval_ms` of --config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_ms: Option<u64>,
    /// Write running totals (kept in checkpointed state) instead of per-batch counts.
    #[arg(long)]
    running: bool,
    /// The stateful operator that keeps `--running`'s totals: `update-state-by-key` (its
    /// function sees every word every batch; the state is checkpointed whole) or
    /// `map-with-state` (only the words of a batch are touched, and with incremental
    /// checkpoints only their totals are written, as deltas of a chain).
    #[arg(
        long,
        value_enum,
        default_value = "update-state-by-key",
        requires = "running"
    )]
    running_with: RunningWith,
    /// Serve the control endpoint (`weir watch`) on ADDR.
    #[arg(long, value_name = "ADDR")]
    control_addr: Option<SocketAddr>,
    /// Allow a --control-addr that is not a loopback address; every client must then present
    /// the token in <checkpoint-dir>/control-token (`weir … --token-file`).
    #[arg(long, requires = "control_addr")]
    control_allow_remote: bool,
    /// Serve the metrics, the JSON API and the web dashboard over HTTP on ADDR (e.g.
    /// 127.0.0.1:4040).
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// Allow an --http-addr that is not a loopback address; every request must then carry the
    /// token in <checkpoint-dir>/control-token (`Authorization: Bearer <token>`).
    #[arg(long, requires = "http_addr")]
    http_allow_remote: bool,
    /// Stop gracefully after N batches have completed.
    #[arg(long, value_name = "N")]
    max_batches: Option<u64>,
    /// Stop gracefully after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration_secs: Option<u64>,
    /// Acknowledge received lines without writing them to the receiver WAL (Spark's default):
    /// faster, but a crash loses the lines the process held. Only for `--socket`.
    #[arg(long, requires = "socket")]
    no_receiver_wal: bool,
    /// How the words are counted: `textbook` (the default) is the ordinary DStream program;
    /// the others are for comparisons (docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = Program::Textbook)]
    program: Program,
    /// Do not print each batch's top words.
    #[arg(long)]
    quiet: bool,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with("word_count", args.common.log_format, run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let mut overrides = args.common.overrides()?;
    if let Some(ms) = args.batch_ms {
        overrides.set("batch_interval_ms", &ms.to_string())?;
    }
    if args.no_receiver_wal {
        overrides.set("receiver_wal", "false")?;
    }
    if let Some(addr) = args.control_addr {
        overrides.set("control_addr", &addr.to_string())?;
    }
    if args.control_allow_remote {
        overrides.set("control_allow_remote", "true")?;
    }
    if let Some(addr) = args.http_addr {
        overrides.set("http_addr", &addr.to_string())?;
    }
    if args.http_allow_remote {
        overrides.set("http_allow_remote", "true")?;
    }
    let configure =
        |config: StreamingConfig| overrides.apply(config.batch_interval(DEFAULT_BATCH_INTERVAL));
    let storage = Storage::from_location(&args.checkpoint_dir)?;
    let batch_ms = configure(StreamingConfig::new(storage.clone()))
        .engine
        .batch_interval
        .as_millis() as u64;
    let demo = args.input_dir.is_none() && args.socket.is_none();
    let input_dir = args
        .input_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("weir-data/input"));
    let feeder = demo.then(|| {
        FileFeeder::start(
            input_dir.clone(),
            Duration::from_millis(batch_ms.max(3) / 3),
            20,
            fastrand::u64(..),
        )
    });
    if args.socket.is_none() {
        std::fs::create_dir_all(&input_dir)?;
    }

    let ctx = StreamingContext::get_or_create_in(storage, |config| {
        let ctx = StreamingContext::new(configure(config));
        match &args.socket {
            None => {
                let lines = ctx
                    .text_file_stream_with(
                        &input_dir,
                        FileStreamOptions::new().max_files_per_batch(MAX_FILES_PER_BATCH),
                    )
                    .uid("input-files");
                count_and_save(&lines, &args);
            }
            // The lines as the receiver stored them (`Str`s sharing the received block):
            // no copy per line.
            Some(addr) => {
                let lines = ctx
                    .socket_text_stream_with(SocketTextReceiver::new(addr.clone()))
                    .uid("input-socket");
                count_and_save(&lines, &args);
            }
        }
        Ok(ctx)
    })
    .await?;

    match ctx.restored() {
        Some(info) => println!(
            "word_count: continuing from checkpoint {} (batch {}); {} batch(es) to re-run",
            info.checkpoint.0,
            info.checkpoint_time_ms,
            info.pending_batches.len()
        ),
        None => println!("word_count: starting fresh"),
    }
    match (&args.socket, demo) {
        (Some(addr), _) => println!("word_count: counting the lines sent by {addr}"),
        (None, true) => println!(
            "word_count: demo — a generator drops text files into {}",
            input_dir.display()
        ),
        (None, false) => println!(
            "word_count: counting the files that appear in {}",
            input_dir.display()
        ),
    }
    println!(
        "word_count: counts go to {}/batch-<time>/part-*; watch with `weir events --dir {}`{}",
        args.output_dir.display(),
        args.checkpoint_dir,
        ctx.config()
            .engine
            .control_addr
            .map(|a| format!(
                " or `weir watch --addr {a} --token-file {}/control-token`",
                args.checkpoint_dir
            ))
            .unwrap_or_default()
    );

    let limits = Limits {
        max_batches: args.max_batches,
        duration: args.duration_secs.map(Duration::from_secs),
    };
    let outcome = run_until_stopped(ctx, limits, |event| {
        if let Event::ActorFailed { actor, reason } = event {
            eprintln!("word_count: {actor} failed ({reason}); the supervision tree restarts it");
        }
        false
    })
    .await;
    if let Some(feeder) = feeder {
        println!("word_count: the generator wrote {} files", feeder.files());
        feeder.stop()?;
    }
    let stopped = outcome?;
    println!("word_count: stopped ({stopped:?}); every completed batch is checkpointed");
    Ok(())
}

/// The operators `--running-with` keeps the running totals with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum RunningWith {
    /// `update_state_by_key`.
    UpdateStateByKey,
    /// `map_with_state`, writing its state snapshots.
    MapWithState,
}

/// The ways `--program` counts words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Program {
    /// The textbook program: `flat_map` each line to its words, pair each with 1,
    /// `reduce_by_key`. The lines and words are `Str`s, views of the received bytes (no copy
    /// per word), and the engine combines the pairs per partition before the shuffle, inside
    /// the loop that splits the lines (no pair per word is kept).
    Textbook,
    /// Each partition's words counted by hand first, in a `HashMap<&str, u64>` of words
    /// borrowed from the lines, then merged across partitions by `reduce_by_key`. Slower than
    /// `textbook` since 2026-12-07 (on a 1 000-word vocabulary 24.8 M words per CPU-second
    /// against 32.8 M; docs/benchmarks.md); kept for comparisons.
    HandCombined,
    /// The textbook program as Spark's Java jobs write it: an owned `String` per word.
    OwnedWords,
}

/// Counts the words of `lines` and saves each batch's counts (printing its top words unless
/// `--quiet`).
fn count_and_save(lines: &DStream<Str>, args: &Args) {
    match (args.program, args.running) {
        (Program::Textbook, false) => save(&textbook(lines), args),
        (Program::HandCombined, false) => save(&hand_combined(lines), args),
        (Program::OwnedWords, false) => save(&owned_words(lines), args),
        (Program::Textbook, true) => save(&running(&textbook(lines), args.running_with), args),
        (Program::HandCombined, true) => {
            save(&running(&hand_combined(lines), args.running_with), args)
        }
        (Program::OwnedWords, true) => save(&running(&owned_words(lines), args.running_with), args),
    }
}

/// Saves each batch's counts, printing its top words unless `--quiet`.
fn save<K>(counts: &DStream<(K, u64)>, args: &Args)
where
    K: weir::dstream::Key + std::fmt::Display + Ord,
{
    if !args.quiet {
        print_top(counts, 5);
    }
    // Atomic `batch-<time>/part-*` directories, sorted lines, replays skipped.
    counts
        .map(|(word, count)| format!("{word}\t{count}"))
        .save_as_text_files(args.output_dir.join("batch"));
}

/// Words per batch: the textbook program (see [`Program::Textbook`]).
fn textbook(lines: &DStream<Str>) -> DStream<(Str, u64)> {
    lines
        .flat_map(|line: &Str| line.words())
        .map(|word: &Str| (word.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .uid("counts")
}

/// Words per batch, each partition's counted by hand first (see [`Program::HandCombined`]).
fn hand_combined(lines: &DStream<Str>) -> DStream<(Str, u64)> {
    lines
        .map_partitions(|lines: &[Str]| {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for line in lines {
                for word in line.split_whitespace() {
                    *counts.entry(word).or_insert(0) += 1;
                }
            }
            Ok(counts
                .into_iter()
                .map(|(word, count)| (Str::from(word), count))
                .collect())
        })
        .uid("words")
        .reduce_by_key(|a, b| a + b)
        .uid("counts")
}

/// Words per batch with an owned `String` per word (see [`Program::OwnedWords`]).
fn owned_words(lines: &DStream<Str>) -> DStream<(String, u64)> {
    lines
        .flat_map(|line: &Str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word: &String| (word.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .uid("counts")
}

/// Running totals of a batch's counts, kept in checkpointed state by `with`. The state's
/// words are `String`s of their own: a `Str` kept across batches would keep the bytes it views
/// alive.
fn running<K>(counts: &DStream<(K, u64)>, with: RunningWith) -> DStream<(String, u64)>
where
    K: weir::dstream::Key + std::fmt::Display,
{
    let words = counts.map(|(word, n): &(K, u64)| (word.to_string(), *n));
    match with {
        RunningWith::UpdateStateByKey => words
            .update_state_by_key(|new: &[u64], total: Option<u64>| {
                Some(total.unwrap_or(0) + new.iter().sum::<u64>())
            })
            .uid("running-totals"),
        RunningWith::MapWithState => words
            .map_with_state(StateSpec::function(
                |_: &String, n: Option<&u64>, total: &mut State<u64>| {
                    let sum = total.get().copied().unwrap_or(0) + n.copied().unwrap_or(0);
                    total.update(sum);
                },
            ))
            .uid("running-totals")
            .state_snapshots(),
    }
}

/// Prints each non-empty batch's `n` most frequent words (at least once: a re-run prints
/// again).
fn print_top<K>(counts: &DStream<(K, u64)>, n: usize)
where
    K: weir::dstream::Key + std::fmt::Display + Ord,
{
    counts.foreach_batch(move |batch| {
        if batch.is_empty() {
            return Ok(());
        }
        let mut all: Vec<&(K, u64)> = batch.iter().collect();
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let total: u64 = all.iter().map(|(_, c)| c).sum();
        let top: Vec<String> = all
            .iter()
            .take(n)
            .map(|(w, c)| format!("{w}={c}"))
            .collect();
        println!(
            "batch {}: {total} words, {} distinct; top: {}",
            batch.time_ms,
            all.len(),
            top.join(" ")
        );
        Ok(())
    });
}
