//! The two floors measured in the same run as the systems: a hand-written single-threaded
//! word count over the feeder's bytes (the compute floor) and raw sequential write +
//! `sync_data` bandwidth at the WAL's group sizes (the WAL floor).

use std::collections::HashMap;
use std::fs::{self, File};
use std::hint::black_box;
use std::io::{self, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::feeder::Pool;

/// The compute floor: words/s and MB/s of `split_whitespace` + `HashMap` (foldhash) counting
/// over the
/// pool's text (as one buffer, repeated for at least `secs`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ComputeFloor {
    /// Words counted per second.
    pub(crate) words_per_s: f64,
    /// Input MB (10^6 bytes) per second.
    pub(crate) mb_per_s: f64,
}

/// Measures the [`ComputeFloor`].
pub(crate) fn compute(pool: &Pool, secs: f64) -> ComputeFloor {
    let text: String = pool
        .chunks
        .iter()
        .map(|c| String::from_utf8_lossy(&c.bytes).into_owned())
        .collect();
    let window = Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut words, mut bytes) = (0u64, 0u64);
    while start.elapsed() < window {
        // weir's hash (foldhash, fixed seed), so the floor differs from weir's program only
        // in what weir adds, not in the hash function.
        let mut counts: HashMap<&str, u64, foldhash::fast::FixedState> = HashMap::default();
        for line in text.lines() {
            for w in line.split_whitespace() {
                *counts.entry(w).or_insert(0) += 1;
            }
        }
        words += counts.values().sum::<u64>();
        bytes += text.len() as u64;
        black_box(&counts);
    }
    let elapsed = start.elapsed().as_secs_f64();
    ComputeFloor {
        words_per_s: words as f64 / elapsed,
        mb_per_s: bytes as f64 / elapsed / 1e6,
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
