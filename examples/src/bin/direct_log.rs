//! The partitioned log with offsets: a producer appends records to a file-backed,
//! Kafka-like log while a direct stream reads it batch by batch, each batch an offset range
//! per partition; the offsets are committed back after each batch, and the output holds every
//! record of the log exactly once.
//!
//! Run it (log, checkpoints and output under `./weir-data/direct-log/`):
//! ```text
//! cargo run --release -p weir-examples --bin direct_log
//! cargo run --release -p weir-examples --bin direct_log -- --records 10000 --rate 2000 \
//!     --partitions 4 --max-per-partition 500 --batch-ms 500
//! ```
//!
//! The producer (a thread) appends `--records` records at `--rate` per second, spread over
//! the partitions; each append is durable when it returns. The application reads the log
//! with `StreamingContext::direct_stream`: no receiver and no WAL of its own — the log is the
//! replayable source, and each batch's offset ranges are planned into the checkpoint before
//! the batch runs, so a re-run after a crash reads exactly the same records. Each batch
//! prints its ranges, writes its records to `output/batch-<time>/part-*` atomically (a replay
//! is skipped), and after the batch completes the next offsets are committed back to the log
//! (`committed-<group>.offsets`), where other tools can see how far the application got.
//!
//! The program stops by itself when the producer is done and the committed offsets reach the
//! end of the log, then checks the output against the log: every record once, none missing.
//! Kill it with `kill -9` at any point and start it again: it continues from the checkpoint,
//! the producer appends the rest (`--records` counts the whole log), and the check still
//! passes. `--no-producer` only consumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use weir::dstream::{OffsetRange, StartingOffsets};
use weir::sources::partitioned_log::PartitionedLog;
use weir::{Event, Storage, StreamingContext};
use weir_examples::output::read_output;
use weir_examples::run::{BoxError, CommonArgs, Limits, Stopped, main_with, run_until_stopped};

/// A producer and a direct stream over the partitioned log, exactly once.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Where the log lives.
    #[arg(long, value_name = "DIR", default_value = "weir-data/direct-log/log")]
    log_dir: PathBuf,
    /// Where checkpoints live: a directory, or (built with weir's `s3` feature)
    /// `s3://BUCKET/PREFIX?endpoint=URL` with credentials from the AWS environment.
    #[arg(
        long,
        value_name = "DIR|S3-URL",
        default_value = "weir-data/direct-log/checkpoint"
    )]
    checkpoint_dir: String,
    /// Where the batch directories are written.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "weir-data/direct-log/output"
    )]
    output_dir: PathBuf,
    /// Partitions of the log (when it is created).
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// How many records the log should hold when the producer is done.
    #[arg(long, value_name = "N", default_value_t = 2000)]
    records: u64,
    /// Records the producer appends per second.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// At most this many records per partition per batch.
    #[arg(long, value_name = "N")]
    max_per_partition: Option<u64>,
    /// The batch interval in milliseconds (default: 500, or `batch_interval_ms` of --config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_ms: Option<u64>,
    /// Do not produce: only consume what is in the log.
    #[arg(long)]
    no_producer: bool,
    /// Stop gracefully after this many seconds (default: when everything is consumed).
    #[arg(long, value_name = "SECONDS")]
    duration_secs: Option<u64>,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with("direct_log", args.common.log_format, run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    let log = PartitionedLog::create(&args.log_dir, args.partitions)?.consumer_group("direct-log");
    println!(
        "direct_log: log {} with {} partitions, end offsets {:?}, committed {:?}",
        log.dir().display(),
        log.partition_count(),
        log.end_offsets()?,
        log.committed()?
    );
    let producing = Arc::new(AtomicBool::new(!args.no_producer));
    let stop_producer = Arc::new(AtomicBool::new(false));
    let producer = (!args.no_producer).then(|| {
        let (log, producing) = (log.clone(), Arc::clone(&producing));
        let stop = Arc::clone(&stop_producer);
        let (records, rate) = (args.records, args.rate);
        std::thread::spawn(move || {
            let result = produce(&log, records, rate, &stop);
            producing.store(false, Ordering::SeqCst);
            result
        })
    });

    let max_per_partition = args.max_per_partition;
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let mut overrides = args.common.overrides()?;
    if let Some(ms) = args.batch_ms {
        overrides.set("batch_interval_ms", &ms.to_string())?;
    }
    let storage = Storage::from_location(&args.checkpoint_dir)?;
    let ctx = StreamingContext::get_or_create_in(storage, |config| {
        let ctx = StreamingContext::new(
            args.common
                .restore(overrides.apply(config.batch_interval(Duration::from_millis(500))))?,
        );
        let records = ctx
            .direct_stream(
                Arc::new(log.clone()),
                StartingOffsets::Earliest,
                max_per_partition,
            )
            .uid("log");
        records.foreach_batch(|batch| {
            if !batch.is_empty() {
                println!(
                    "batch {}: {} records, ranges {}",
                    batch.time_ms,
                    batch.len(),
                    show_ranges(&batch.offset_ranges)
                );
            }
            Ok(())
        });
        records
            .map(|record: &Bytes| String::from_utf8_lossy(record).into_owned())
            .save_as_text_files(args.output_dir.join("batch"));
        Ok(ctx)
    })
    .await?;
    if let Some(info) = ctx.restored() {
        println!(
            "direct_log: continuing from checkpoint {} (batch {})",
            info.checkpoint.0, info.checkpoint_time_ms
        );
    }

    let limits = Limits {
        max_batches: None,
        duration: args.duration_secs.map(Duration::from_secs),
    };
    let mut last_committed = None;
    let stopped = run_until_stopped(ctx, limits, |event| {
        if !matches!(event, Event::BatchCompleted { .. }) {
            return false;
        }
        // Caught up: the producer is done and the committed offsets are the log's end.
        let (Ok(committed), Ok(end)) = (log.committed(), log.end_offsets()) else {
            return false;
        };
        if committed != last_committed {
            if let Some(offsets) = &committed {
                println!("  committed back to the log: next offsets {offsets:?}");
            }
            last_committed.clone_from(&committed);
        }
        !producing.load(Ordering::SeqCst) && committed.as_ref() == Some(&end)
    })
    .await?;
    if let Some(producer) = producer {
        stop_producer.store(true, Ordering::SeqCst);
        producer
            .join()
            .map_err(|_| "the producer thread panicked")??;
    }
    println!("direct_log: stopped ({stopped:?})");
    if stopped == Stopped::Asked {
        check(&log, &args.output_dir)?;
    }
    Ok(())
}

/// Appends records `r-<n>` until the log holds `total`, round-robin over the partitions, in
/// groups of up to 50, at `rate` records per second, or until `stop`.
///
/// Record `n` goes to partition `n % P` at offset `n / P`, so what a partition holds depends
/// only on its own length: a producer killed half-way through a group (some partitions
/// appended, others not) resumes each partition at its own end, and writes no record twice
/// and skips none.
fn produce(log: &PartitionedLog, total: u64, rate: u64, stop: &AtomicBool) -> Result<(), BoxError> {
    let partitions = u64::from(log.partition_count());
    // The next record of each partition: partition p at offset o holds record o * P + p.
    let mut next: Vec<u64> = log
        .end_offsets()?
        .iter()
        .zip(0..)
        .map(|(end, p)| end * partitions + p)
        .collect();
    let start = Instant::now();
    let mut produced: u64 = 0;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // The next group: the lowest record numbers not yet written, up to 50.
        let mut group: Vec<u64> = next.iter().copied().filter(|n| *n < total).collect();
        if group.is_empty() {
            break;
        }
        group.sort_unstable();
        let low = group[0];
        let mut per_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for n in (low..total).take(50) {
            let partition = (n % partitions) as usize;
            if n < next[partition] {
                continue; // already in the log
            }
            per_partition
                .entry(partition as u32)
                .or_default()
                .push(format!("r-{n:08}"));
        }
        for (partition, records) in &per_partition {
            log.append(*partition, records)?;
            next[*partition as usize] += records.len() as u64 * partitions;
            produced += records.len() as u64;
        }
        // Keep to the rate: the n-th record of this run is due at n / rate seconds.
        let due = Duration::from_secs_f64(produced as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(())
}

fn show_ranges(ranges: &[OffsetRange]) -> String {
    ranges
        .iter()
        .filter(|r| r.count() > 0)
        .map(|r| format!("p{}:{}..{}", r.partition, r.from, r.until))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Every record of the log is in the output exactly once.
fn check(log: &PartitionedLog, output_dir: &Path) -> Result<(), BoxError> {
    let mut in_log: BTreeMap<String, u32> = BTreeMap::new();
    for (partition, end) in log.end_offsets()?.into_iter().enumerate() {
        for record in log.read_range(partition as u32, 0..end)? {
            *in_log
                .entry(String::from_utf8_lossy(&record).into_owned())
                .or_default() += 1;
        }
    }
    let mut in_output: BTreeMap<String, u32> = BTreeMap::new();
    let output = read_output(output_dir)?;
    for line in output.lines.values().flatten() {
        *in_output.entry(line.clone()).or_default() += 1;
    }
    let twice = in_output.values().filter(|n| **n > 1).count();
    let missing = in_log
        .keys()
        .filter(|r| !in_output.contains_key(*r))
        .count();
    let extra = in_output
        .keys()
        .filter(|r| !in_log.contains_key(*r))
        .count();
    println!(
        "direct_log: {} records in the log, {} in {} batch directories; {missing} missing, {twice} twice, {extra} not in the log",
        in_log.values().sum::<u32>(),
        in_output.values().sum::<u32>(),
        output.batches.len()
    );
    if missing + twice + extra > 0 || in_log != in_output {
        return Err(format!(
            "the output is not exactly the log: {missing} records missing, {twice} written twice, {extra} not in the log"
        )
        .into());
    }
    println!("direct_log: exactly once");
    Ok(())
}
