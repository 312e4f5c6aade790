//! Checkpoints of large keyed state, incremental against full (issue 17, item 5).
//!
//! ```text
//! cargo run --release -p weir-examples --bin state_bench -- [KEYS] [BATCHES]
//! ```
//!
//! `map_with_state` (a running count) over `KEYS` keys (default 1,000,000), all of them in the
//! first batch, then 1 % of them (spread over the key space) in each of `BATCHES` more
//! (default 20), driven by [`ManualClock`] with a checkpoint written after every batch into a
//! checkpoint store in a temporary directory — as the engine writes them. For each of the four
//! runs (memory and disk backend, incremental and full checkpoints) it prints per batch the
//! bytes the checkpoint wrote (the checkpoint file plus its new state files) and the time of
//! the batch with its checkpoint, then the time to restore from the last checkpoint (read,
//! verify, rebuild the state) and the process's peak resident memory so far (VmHWM; the runs
//! go from the smallest expected peak to the largest, disk before memory). Each run stops by
//! itself and removes its directory (under the system's temporary directory); nothing listens
//! on the network.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::checkpoint::{CheckpointConfig, CheckpointStore};
use weir::dstream::{DiskStateOptions, QueueStream, State, StateBackend, StateSpec};
use weir::testing::ManualClock;
use weir::{Storage, StreamingConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The process's peak resident memory in KiB (Linux; 0 elsewhere).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Bytes in the store written since `seen` (the checkpoint files and state files not in it).
fn new_bytes(dir: &std::path::Path, seen: &mut BTreeSet<String>) -> Result<u64, BoxError> {
    let mut bytes = 0;
    for sub in [dir.to_path_buf(), dir.join("state")] {
        for entry in std::fs::read_dir(&sub)? {
            let entry = entry?;
            if !entry.file_type()?.is_file() {
                continue;
            }
            let name = format!("{}/{}", sub.display(), entry.file_name().to_string_lossy());
            if seen.insert(name) {
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok(bytes)
}

struct Run {
    bytes: Vec<u64>,
    times: Vec<Duration>,
    restore: Duration,
}

async fn run(
    backend: StateBackend,
    incremental: bool,
    keys: u64,
    batches: u64,
    dir: &std::path::Path,
) -> Result<Run, BoxError> {
    let queue = QueueStream::new(true, 2);
    queue.push((0..keys).collect());
    let changed = (keys / 100).max(1);
    for b in 1..=batches {
        queue.push(
            (0..changed)
                .map(|i| (i * 7_919 + b * 104_729) % keys)
                .collect(),
        );
    }
    let q = queue.clone();
    let mut clock = ManualClock::with_config(
        1000,
        4,
        move |c: &mut StreamingConfig| {
            c.state_backend = backend;
            c.incremental_checkpoints = incremental;
        },
        move |ctx| {
            ctx.queue_stream(&q)
                .uid("keys")
                .map(|k: &u64| (*k, 1u64))
                .map_with_state(StateSpec::function(
                    |_: &u64, one: Option<&u64>, n: &mut State<u64>| {
                        let c = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
                        n.update(c);
                        c
                    },
                ))
                .uid("counts")
                .foreach_batch(|_| Ok(()));
        },
    )?;
    let checkpoints = dir.join("checkpoints");
    let store = CheckpointStore::open(
        Storage::local(&checkpoints),
        CheckpointConfig::default().with_retain(2),
    )
    .await?;
    clock.checkpoint_to(Arc::new(store));
    let mut seen = BTreeSet::new();
    let (mut bytes, mut times) = (Vec::new(), Vec::new());
    for _ in 0..=batches {
        let started = Instant::now();
        clock.run(1).await?;
        times.push(started.elapsed());
        bytes.push(new_bytes(&checkpoints, &mut seen)?);
    }
    let started = Instant::now();
    clock.restart()?;
    let restore = started.elapsed();
    Ok(Run {
        bytes,
        times,
        restore,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1 << 20) as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), BoxError> {
    let mut args = std::env::args().skip(1);
    let keys: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let batches: u64 = args.next().map_or(Ok(20), |a| a.parse())?;
    println!(
        "state_bench: map_with_state, {keys} keys, 1 % of them changed in each of {batches} batches; a checkpoint after every batch\n"
    );
    println!(
        "| backend | checkpoints | first batch (all keys) | later batches, median bytes | median time | max time | restore | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, incremental) in [
        ("disk", true),
        ("disk", false),
        ("memory", true),
        ("memory", false),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "weir-state-bench-{}-{name}-{incremental}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let backend = match name {
            "disk" => StateBackend::Disk(DiskStateOptions::new(dir.join("state"))),
            _ => StateBackend::Memory,
        };
        let result = run(backend, incremental, keys, batches, &dir).await;
        std::fs::remove_dir_all(&dir)?;
        let r = result?;
        let mut later: Vec<u64> = r.bytes[1..].to_vec();
        later.sort_unstable();
        let mut later_times: Vec<Duration> = r.times[1..].to_vec();
        later_times.sort_unstable();
        println!(
            "| {name} | {} | {} in {:?} | {} | {:?} | {:?} | {:?} | {} MiB |",
            if incremental { "incremental" } else { "full" },
            mib(r.bytes[0]),
            r.times[0],
            mib(later[later.len() / 2]),
            later_times[later_times.len() / 2],
            later_times.last().copied().unwrap_or_default(),
            r.restore,
            peak_rss_kib() / 1024,
        );
        eprintln!(
            "{name} incremental={incremental}: bytes per batch {:?}",
            r.bytes
        );
    }
    Ok(())
}
