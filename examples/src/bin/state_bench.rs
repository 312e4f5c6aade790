//! Checkpoints and memory of a growing keyed state, incremental against full, in memory and on
//! disk (issue 17, items 1 and 5).
//!
//! ```text
//! cargo run --release -p weir-examples --bin state_bench -- [KEYS] [BATCHES] [CACHE_MIB]
//! ```
//!
//! `map_with_state` (a running count) whose state grows to `KEYS` keys (default 10,000,000)
//! over `BATCHES` batches (default 20): each batch adds `KEYS / BATCHES` new keys and updates
//! 1 % of the keys already there (spread over them). The disk backend's cache is `CACHE_MIB`
//! MiB (default 64, the backend's default). Driven by [`ManualClock`], 4 partitions, with a
//! checkpoint written after every batch into a checkpoint store in a temporary directory
//! (retain 2) — as the engine writes them. Each of the four configurations (disk and memory
//! backend, incremental and full checkpoints) runs in a child process of its own (this program
//! re-run with `--child BACKEND CHECKPOINTS KEYS BATCHES CACHE_MIB`), so its resident memory
//! is its own. A batch's input is generated inside the batch (a `flat_map` of its number),
//! never queued.
//!
//! Per batch, a child prints the keys in the state, the bytes the checkpoint wrote (the
//! checkpoint file plus its new state files), the time of the batch with its checkpoint and
//! of the checkpoint alone (the operators' snapshots and the write), the
//! process's resident memory after it (`VmRSS`) and its peak so far (`VmHWM`), the heap's live
//! bytes after the batch and their peak during it (counted by this program's global
//! allocator), and the size of the disk backend's state file; at the end, the time to restore
//! from the last checkpoint (read, verify, rebuild the state) and the memory after it. The
//! parent prints its children's lines (stderr), one table per configuration and a summary.
//! Each run stops by itself and removes its directory (under the system's temporary
//! directory); nothing listens on the network.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use weir::checkpoint::{CheckpointConfig, CheckpointStore};
use weir::dstream::{DiskStateOptions, QueueStream, State, StateBackend, StateSpec};
use weir::testing::ManualClock;
use weir::{Storage, StreamingConfig};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The system allocator, counting the bytes live and their peak (since the last
/// [`reset_peak`]).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; only counters are updated beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Starts a new peak of the heap's live bytes.
fn reset_peak() {
    PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// A field of `/proc/self/status` in KiB (Linux; 0 elsewhere).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Bytes in the store written since `seen` (the checkpoint files and state files not in it).
fn new_bytes(dir: &std::path::Path, seen: &mut BTreeSet<String>) -> Result<u64, BoxError> {
    let mut bytes = 0;
    for sub in [dir.to_path_buf(), dir.join("state")] {
        if !sub.exists() {
            continue;
        }
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

/// Bytes of the files directly in `dir` (0 if it does not exist).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(std::fs::Metadata::is_file)
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The keys batch `b` (from 0) counts: `per_batch` new ones, then 1 % of the keys before it.
fn batch_keys(b: u64, per_batch: u64) -> impl Iterator<Item = u64> {
    let before = b * per_batch;
    let updated = before / 100;
    (before..before + per_batch)
        .chain((0..updated).map(move |i| (i * 7_919 + b * 104_729) % before))
}

/// One configuration's run, in this (child) process: prints a line per batch and one for the
/// restore.
async fn child(
    backend: &str,
    checkpoints: &str,
    keys: u64,
    batches: u64,
    cache_bytes: usize,
) -> Result<(), BoxError> {
    let dir = std::env::temp_dir().join(format!(
        "weir-state-bench-{}-{backend}-{checkpoints}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let result = child_in(
        &dir,
        backend,
        checkpoints == "incremental",
        keys,
        batches,
        cache_bytes,
    )
    .await;
    std::fs::remove_dir_all(&dir)?;
    result
}

async fn child_in(
    dir: &std::path::Path,
    backend: &str,
    incremental: bool,
    keys: u64,
    batches: u64,
    cache_bytes: usize,
) -> Result<(), BoxError> {
    let backend = match backend {
        "disk" => {
            StateBackend::Disk(DiskStateOptions::new(dir.join("state")).cache_bytes(cache_bytes))
        }
        _ => StateBackend::Memory,
    };
    let configure = move |c: &mut StreamingConfig| {
        c.state_backend = backend.clone();
        c.incremental_checkpoints = incremental;
    };
    let per_batch = keys / batches.max(1);
    let queue = QueueStream::new(true, 1);
    let q = queue.clone();
    let mut clock = ManualClock::with_config(1000, 4, configure.clone(), move |ctx| {
        ctx.queue_stream(&q)
            .uid("batches")
            .flat_map(move |b: &u64| batch_keys(*b, per_batch).map(|k| (k, 1u64)))
            .map_with_state(StateSpec::function(
                |_: &u64, one: Option<&u64>, n: &mut State<u64>| {
                    let c = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
                    n.update(c);
                    c
                },
            ))
            .uid("counts")
            .foreach_batch(|_| Ok(()));
    })?;
    let checkpoints = dir.join("checkpoints");
    let store = CheckpointStore::open(
        Storage::local(&checkpoints),
        CheckpointConfig::default().with_retain(2),
    )
    .await?;
    clock.checkpoint_to(Arc::new(store));
    let mut seen = BTreeSet::new();
    for b in 0..batches {
        queue.push(vec![b]);
        reset_peak();
        let started = Instant::now();
        let checkpointing = clock.checkpoint_time();
        clock.run(1).await?;
        let elapsed = started.elapsed();
        let checkpoint = clock.checkpoint_time().saturating_sub(checkpointing);
        let bytes = new_bytes(&checkpoints, &mut seen)?;
        println!(
            "batch {b} keys {} bytes {bytes} ms {} checkpoint_ms {} rss {} hwm {} heap {} \
             heap_peak {} file {}",
            (b + 1) * per_batch,
            elapsed.as_millis(),
            checkpoint.as_millis(),
            status_kib("VmRSS:"),
            status_kib("VmHWM:"),
            LIVE.load(Ordering::Relaxed),
            PEAK.load(Ordering::Relaxed),
            dir_bytes(&dir.join("state")),
        );
    }
    reset_peak();
    let started = Instant::now();
    // `restart` alone would rebuild with the default configuration (the memory backend).
    clock.restart_with_config(configure)?;
    let elapsed = started.elapsed();
    println!(
        "restore ms {} rss {} hwm {} heap {} heap_peak {}",
        elapsed.as_millis(),
        status_kib("VmRSS:"),
        status_kib("VmHWM:"),
        LIVE.load(Ordering::Relaxed),
        PEAK.load(Ordering::Relaxed),
    );
    Ok(())
}

/// A number in MiB from KiB.
fn kib_mib(kib: u64) -> u64 {
    kib / 1024
}

/// A number in MiB from bytes.
fn mib(bytes: u64) -> String {
    format!("{:.2}", bytes as f64 / (1 << 20) as f64)
}

/// The value after `name` on a line of the child's.
fn field(line: &str, name: &str) -> u64 {
    let mut words = line.split_whitespace();
    while let Some(word) = words.next() {
        if word == name {
            return words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        }
    }
    0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, backend, checkpoints, keys, batches, cache] = args.as_slice()
        && flag == "--child"
    {
        let cache = cache.parse::<usize>()? << 20;
        return child(backend, checkpoints, keys.parse()?, batches.parse()?, cache).await;
    }
    let keys: u64 = args.first().map_or(Ok(10_000_000), |a| a.parse())?;
    let batches: u64 = args.get(1).map_or(Ok(20), |a| a.parse())?.max(1);
    let cache_mib: usize = args.get(2).map_or(Ok(64), |a| a.parse())?;
    println!(
        "state_bench: map_with_state growing to {keys} keys over {batches} batches ({} new keys \
         a batch, and 1 % of the keys before it updated); a checkpoint after every batch; each \
         configuration in a process of its own\n",
        keys / batches
    );
    let mut summary = Vec::new();
    for (backend, checkpoints) in [
        ("disk", "incremental"),
        ("disk", "full"),
        ("memory", "incremental"),
        ("memory", "full"),
    ] {
        let output = Command::new(std::env::current_exe()?)
            .args([
                "--child",
                backend,
                checkpoints,
                &keys.to_string(),
                &batches.to_string(),
                &cache_mib.to_string(),
            ])
            .output()?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(format!(
                "{backend} {checkpoints}: {}\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            )
            .into());
        }
        eprintln!("{backend} {checkpoints}:\n{stdout}");
        println!("{backend} backend, {checkpoints} checkpoints:\n");
        println!(
            "| batch | keys | checkpoint MiB | batch + checkpoint ms | of which checkpoint ms | RSS MiB | peak RSS MiB | heap MiB | heap peak in batch MiB | state file MiB |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut restore = String::new();
        let mut last = String::new();
        for line in stdout.lines() {
            if line.starts_with("batch ") {
                println!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    field(line, "batch"),
                    field(line, "keys"),
                    mib(field(line, "bytes")),
                    field(line, "ms"),
                    field(line, "checkpoint_ms"),
                    kib_mib(field(line, "rss")),
                    kib_mib(field(line, "hwm")),
                    field(line, "heap") >> 20,
                    field(line, "heap_peak") >> 20,
                    field(line, "file") >> 20,
                );
                last = line.to_owned();
            } else if line.starts_with("restore ") {
                restore = line.to_owned();
            }
        }
        println!(
            "\nrestore: {} ms, RSS after {} MiB (peak {} MiB), heap {} MiB (peak during restore {} MiB)\n",
            field(&restore, "ms"),
            kib_mib(field(&restore, "rss")),
            kib_mib(field(&restore, "hwm")),
            field(&restore, "heap") >> 20,
            field(&restore, "heap_peak") >> 20,
        );
        summary.push(format!(
            "| {backend} | {checkpoints} | {} | {} | {} | {} | {} |",
            mib(field(&last, "bytes")),
            field(&last, "ms"),
            field(&restore, "ms"),
            kib_mib(field(&last, "rss")),
            kib_mib(field(&restore, "hwm")),
        ));
    }
    println!(
        "| backend | checkpoints | last checkpoint MiB | last batch ms | restore ms | RSS after last batch MiB | peak RSS MiB |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in summary {
        println!("{row}");
    }
    Ok(())
}
