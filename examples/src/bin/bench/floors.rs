//! The two floors measured in the same run as the systems: a hand-written single-threaded
//! word count over the feeder's bytes (the compute floor) and raw sequential write +
//! `sync_data` bandwidth at the WAL's group sizes (the WAL floor).
//!
//! The compute floor does the work weir's program does on the same input: it counts the text
//! the feeder sends — the pool's chunks, in order, repeated — laid out in one buffer several
//! times larger than the last-level cache and read once, so the text comes from memory as a
//! received batch's blocks do (weir receives fresh copies of the bytes, counted up to a batch
//! interval later). Counting the pool itself again and again (the floor before 2026-12-07,
//! kept beside it as `cached_words_per_s`) keeps its text in the cache: for a vocabulary of
//! 100 000 words, 1.5 MB counted up to 4.7 times faster per word than the same text fresh.

use std::collections::HashMap;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::feeder::Pool;

/// The compute floor: words/s and MB/s of `split_whitespace` + `HashMap` (foldhash, weir's
/// hash and seed) counting, on one thread, the feeder's text. Per second of the thread's CPU
/// time (wall time where Linux's schedstat is missing): what one core does, which other
/// processes on a shared machine do not lower (they stretch the wall time of a
/// single-threaded loop, not its CPU time).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ComputeFloor {
    /// Words counted per second over text read from memory (the floor weir is measured
    /// against).
    pub(crate) words_per_s: f64,
    /// Input MB (10^6 bytes) per second, likewise.
    pub(crate) mb_per_s: f64,
    /// Words counted per second over the pool counted again and again (its text, and the
    /// table, in the cache): the floor before 2026-12-07, for comparison.
    pub(crate) cached_words_per_s: f64,
    /// The buffer counted for [`words_per_s`](Self::words_per_s), in bytes.
    pub(crate) buffer_bytes: usize,
}

/// The last-level cache's size, from sysfs (32 MiB if it cannot be read).
fn last_level_cache_bytes() -> usize {
    let mut largest = 0;
    for index in 0..8 {
        let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{index}");
        let Ok(size) = fs::read_to_string(format!("{dir}/size")) else {
            continue;
        };
        let size = size.trim();
        let (digits, unit) = size.split_at(size.trim_end_matches(['K', 'M', 'G']).len());
        let Ok(n) = digits.parse::<usize>() else {
            continue;
        };
        let bytes = n
            << match unit {
                "K" => 10,
                "M" => 20,
                "G" => 30,
                _ => 0,
            };
        largest = largest.max(bytes);
    }
    if largest == 0 { 32 << 20 } else { largest }
}

/// The CPU time the calling thread has run so far, from `/proc/thread-self/schedstat` (its
/// first field, in nanoseconds); `None` where that cannot be read.
fn thread_cpu() -> Option<Duration> {
    let stat = fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Seconds of this thread's CPU time since `cpu0` (taken by [`thread_cpu`]), or of wall time
/// since `wall0` if the CPU time cannot be read.
fn spent(cpu0: Option<Duration>, wall0: Instant) -> f64 {
    match (cpu0, thread_cpu()) {
        (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
        _ => wall0.elapsed().as_secs_f64(),
    }
}

/// One thread's word count over `text`, into a table of borrowed words hashed by foldhash
/// with a fixed seed (weir's hash), stopping at the first line past `deadline`: the words and
/// bytes counted.
fn count(text: &str, deadline: Instant) -> (u64, u64) {
    let mut counts: HashMap<&str, u64, foldhash::fast::FixedState> = HashMap::default();
    let mut bytes = 0u64;
    for (i, line) in text.lines().enumerate() {
        if i % 1024 == 0 && Instant::now() >= deadline {
            break;
        }
        for w in line.split_whitespace() {
            *counts.entry(w).or_insert(0) += 1;
        }
        bytes += line.len() as u64 + 1;
    }
    black_box(&counts);
    (counts.values().sum(), bytes)
}

/// Measures the [`ComputeFloor`]: at most about `secs` for each of the two numbers.
pub(crate) fn compute(pool: &Pool, secs: f64) -> ComputeFloor {
    let pool_text: String = pool
        .chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    let window = Duration::from_secs_f64(secs);

    // The feeder's text as it sends it (the pool repeated), in a buffer of at least four
    // times the last-level cache (and 128 MiB), counted once from its start: the start was
    // written first, so by the time it is read it has left the cache.
    let target = (4 * last_level_cache_bytes()).max(128 << 20);
    let mut fresh = String::with_capacity(target + pool_text.len());
    while fresh.len() < target {
        fresh.push_str(&pool_text);
    }
    let (start, cpu) = (Instant::now(), thread_cpu());
    let (words, bytes) = count(&fresh, start + window);
    let elapsed = spent(cpu, start);
    let buffer_bytes = fresh.len();
    drop(fresh);

    // The pool again and again (the cache-resident floor).
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut cached_words = 0u64;
    while start.elapsed() < window {
        cached_words += count(&pool_text, start + window * 2).0;
    }
    let cached_elapsed = spent(cpu, start);
    ComputeFloor {
        words_per_s: words as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
        cached_words_per_s: cached_words as f64 / cached_elapsed,
        buffer_bytes,
    }
}

/// Raw sequential `write_all` + `sync_data` of `group_bytes` at a time into one file under
/// `dir`, for about `secs`: MB/s (10^6 bytes) and the median sync in ms.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WalFloor {
    /// Bytes per write + sync.
    pub(crate) group_bytes: usize,
    /// MB (10^6 bytes) per second.
    pub(crate) mb_per_s: f64,
    /// Median time of one write + sync.
    pub(crate) p50_ms: f64,
}

/// Measures the [`WalFloor`] at each of `group_sizes`.
pub(crate) fn wal(dir: &Path, group_sizes: &[usize], secs: f64) -> io::Result<Vec<WalFloor>> {
    fs::create_dir_all(dir)?;
    let path = dir.join("raw-wal-floor.bin");
    let mut out = Vec::new();
    for &group_bytes in group_sizes {
        let buf = vec![0x5au8; group_bytes];
        let mut file = File::create(&path)?;
        let window = Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut written = 0u64;
        let mut times = Vec::new();
        // Bounded in bytes too: at most 1 GiB per size.
        while start.elapsed() < window && written < (1 << 30) {
            let t = Instant::now();
            file.write_all(&buf)?;
            file.sync_data()?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            written += group_bytes as u64;
        }
        let elapsed = start.elapsed().as_secs_f64();
        times.sort_by(f64::total_cmp);
        out.push(WalFloor {
            group_bytes,
            mb_per_s: written as f64 / elapsed / 1e6,
            p50_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
        });
        drop(file);
        fs::remove_file(&path)?;
    }
    Ok(out)
}
