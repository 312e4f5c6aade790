//! WAL append throughput and acknowledgement latency, against the raw `fsync` floor.
//!
//! For every record size (100 B, 4 KiB, 1 MiB) and number of concurrent writers (1, 4, 16) it
//! measures two things in the same run, on the same filesystem:
//!
//! * `weir`: W tokio tasks on a 2-worker multi-thread runtime each call [`Wal::append`] in a
//!   loop on one local-directory [`Wal`] (default [`WalConfig`]). The duration of every
//!   `append` call is recorded in an hdrhistogram: that is the acknowledgement latency.
//! * `raw`: the floor. The same frames (payload + 16-byte frame header each) written by one
//!   thread to one file with `std::fs`, W records per `write_all` and one `sync_data` per batch.
//!   W is the largest group weir can form in the steady state (each writer has at most one
//!   append in flight), so this is what one write + one fsync per group costs with no
//!   encoding, checksums, copies, channels or thread hand-offs (the frames are encoded once,
//!   before timing).
//!
//! One criterion iteration is one *round*: every writer appends one record (weir), or one batch
//! of W records is written and synced (raw). Criterion's throughput is payload bytes (decimal
//! MB/s). A second group, `wal_group_commit_delay`, runs 4 KiB x 16 writers with several
//! `group_commit_max_delay` settings to show the latency/throughput trade-off.
//!
//! The disk is shared with whatever else runs on the machine, and one burst of someone else's
//! fsyncs moves a sample by tens of percent. So each weir sample is *paired*: right after it,
//! untimed for criterion, the raw floor runs the same number of rounds, and the summary's
//! weir/raw ratio is the median over the samples of the two rates' ratio. (Criterion's own
//! `raw/W` lines are the same floor measured in their own time window.)
//!
//! At the end a Markdown table is printed (weir MB/s, paired raw MB/s, the ratio, records/s,
//! p50/p99/max acknowledgement latency, and the mean group size from [`Wal::stats`]), computed
//! from the measured samples only (warm-up excluded): throughputs are medians over the
//! samples, latency quantiles are over every append in them. `docs/benchmarks.md` is filled
//! from that table.
//!
//! Run it with
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -p weir-actors --bench wal_append
//! ```
//!
//! The log and the raw file live in a temporary directory under `$WEIR_BENCH_DIR` (default: the
//! system temp dir); put it on the filesystem you want to measure. A criterion filter
//! (`-- wal_append/4096`) runs a subset; the summary then has only those rows.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput};
use hdrhistogram::Histogram;
use tokio::runtime::Runtime;
use weir_actors::Storage;
use weir_actors::wal::{Wal, WalConfig, format};

/// What the bench runs. Change it here; nothing else is hard-coded.
struct Config {
    /// Payload sizes in bytes.
    sizes: Vec<usize>,
    /// Numbers of concurrent writers.
    writers: Vec<usize>,
    /// The group-commit trade-off cases, all run at `delay_size` x `delay_writers`.
    delay_cases: Vec<DelayCase>,
    delay_size: usize,
    delay_writers: usize,
    /// Criterion samples per benchmark (all of them go into the summary).
    sample_size: usize,
    warm_up: Duration,
    /// Measurement time for records up to 64 KiB, and for larger ones.
    measurement_small: Duration,
    measurement_large: Duration,
    /// Worker threads of the tokio runtime the writers and the WAL's writer task run on.
    worker_threads: usize,
    /// Where the temporary directories go.
    dir: PathBuf,
}

/// One `group_commit_max_delay` setting of the trade-off group.
struct DelayCase {
    label: &'static str,
    delay: Duration,
}

impl Config {
    fn new() -> Self {
        Config {
            sizes: vec![100, 4 << 10, 1 << 20],
            writers: vec![1, 4, 16],
            delay_cases: vec![
                DelayCase {
                    label: "delay_0ms",
                    delay: Duration::ZERO,
                },
                DelayCase {
                    label: "delay_200us",
                    delay: Duration::from_micros(200),
                },
                DelayCase {
                    label: "delay_1ms",
                    delay: Duration::from_millis(1),
                },
                DelayCase {
                    label: "delay_5ms",
                    delay: Duration::from_millis(5),
                },
            ],
            delay_size: 4 << 10,
            delay_writers: 16,
            sample_size: 10,
            warm_up: Duration::from_secs(1),
            measurement_small: Duration::from_secs(4),
            measurement_large: Duration::from_secs(5),
            worker_threads: 2,
            dir: std::env::var_os("WEIR_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        }
    }

    fn measurement(&self, size: usize) -> Duration {
        if size > 64 << 10 {
            self.measurement_large
        } else {
            self.measurement_small
        }
    }
}

/// What one call of the timed routine observed.
struct Sample {
    /// Rounds: appends per writer (weir) or batches (raw).
    rounds: u64,
    elapsed: Duration,
    /// Per-append latency (weir) or per-batch write + sync time (raw), in nanoseconds.
    latency: Histogram<u64>,
    /// Group commits the WAL made during the call (weir only).
    group_commits: u64,
    /// The raw floor, run right after this weir sample for the same rounds (untimed).
    paired: Option<Box<Sample>>,
}

type Samples = Arc<Mutex<Vec<Sample>>>;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("histogram bounds are valid")
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The aggregate of the measured samples of one benchmark.
struct Measured {
    records: u64,
    /// Records per second of each sample, sorted.
    rates: Vec<f64>,
    size: usize,
    latency: Histogram<u64>,
    group_commits: u64,
}

impl Measured {
    /// Combines the last `n` samples: criterion calls the routine for warm-up first, then once
    /// per sample (flat sampling), so the last `n` calls are exactly the measured ones.
    fn of(samples: &Samples, n: usize, writers: usize, size: usize) -> Option<Measured> {
        let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
        let measured: Vec<&Sample> = samples[samples.len().saturating_sub(n)..].iter().collect();
        Self::from_samples(&measured, writers, size)
    }

    /// Like [`Measured::of`], for the raw floor runs paired with the last `n` weir samples.
    fn paired(samples: &Samples, n: usize, writers: usize, size: usize) -> Option<Measured> {
        let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
        let measured: Option<Vec<&Sample>> = samples[samples.len().saturating_sub(n)..]
            .iter()
            .map(|s| s.paired.as_deref())
            .collect();
        Self::from_samples(&measured?, writers, size)
    }

    fn from_samples(measured: &[&Sample], writers: usize, size: usize) -> Option<Measured> {
        if measured.is_empty() {
            return None;
        }
        let mut m = Measured {
            records: 0,
            rates: Vec::with_capacity(measured.len()),
            size,
            latency: histogram(),
            group_commits: 0,
        };
        for s in measured.iter() {
            let records = s.rounds * writers as u64;
            m.records += records;
            m.rates.push(records as f64 / s.elapsed.as_secs_f64());
            m.latency.add(&s.latency).expect("histograms share bounds");
            m.group_commits += s.group_commits;
        }
        m.rates.sort_by(f64::total_cmp);
        Some(m)
    }

    /// The median over the samples: a burst of I/O from another process on the same disk
    /// slows one or two samples, and moves a mean far more than the median.
    fn records_per_s(&self) -> f64 {
        median(&self.rates)
    }

    fn mb_per_s(&self) -> f64 {
        self.records_per_s() * self.size as f64 / 1e6
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1e6
    }
}

/// The median of `sorted`, which is not empty.
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The median over the last `n` weir samples of weir's rate divided by the rate of the raw
/// floor run right after it: each ratio compares two windows a few seconds apart, so load
/// that other processes put on the disk affects both sides alike.
fn paired_ratio(samples: &Samples, n: usize) -> Option<f64> {
    let samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
    let mut ratios: Vec<f64> = samples[samples.len().saturating_sub(n)..]
        .iter()
        .filter_map(|s| {
            let raw = s.paired.as_deref()?;
            let rate = |s: &Sample| s.rounds as f64 / s.elapsed.as_secs_f64();
            Some(rate(s) / rate(raw))
        })
        .collect();
    if ratios.is_empty() {
        return None;
    }
    ratios.sort_by(f64::total_cmp);
    Some(median(&ratios))
}

/// One line of the summary table.
struct Row {
    label: String,
    writers: usize,
    size: usize,
    weir: Measured,
    /// The raw floor, paired sample by sample with weir's.
    raw: Option<Measured>,
    ratio: Option<f64>,
}

impl Row {
    /// The row for a weir benchmark's samples, if it ran (a filter may have skipped it).
    fn of(
        cfg: &Config,
        label: &str,
        samples: &Samples,
        size: usize,
        writers: usize,
    ) -> Option<Row> {
        let n = cfg.sample_size;
        Some(Row {
            label: label.to_owned(),
            writers,
            size,
            weir: Measured::of(samples, n, writers, size)?,
            raw: Measured::paired(samples, n, writers, size),
            ratio: paired_ratio(samples, n),
        })
    }
}

/// Runs `rounds` appends in each of `writers` tasks and times them all.
async fn run_weir(wal: Wal, payload: Bytes, writers: usize, rounds: u64) -> Sample {
    // Drop the sealed segments of earlier samples (untimed), so disk use stays bounded.
    wal.clean(u64::MAX)
        .await
        .expect("cleaning the WAL succeeds");
    let before = wal.stats().group_commits;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let wal = wal.clone();
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latency = histogram();
                for _ in 0..rounds {
                    let t = Instant::now();
                    wal.append(payload.clone())
                        .await
                        .expect("appending to the WAL succeeds");
                    latency.saturating_record(nanos(t.elapsed()));
                }
                latency
            })
        })
        .collect();
    let mut histograms = Vec::with_capacity(writers);
    for task in tasks {
        histograms.push(task.await.expect("a writer task does not panic"));
    }
    let elapsed = start.elapsed();
    let mut latency = histogram();
    for h in &histograms {
        latency.add(h).expect("histograms share bounds");
    }
    Sample {
        rounds,
        elapsed,
        latency,
        group_commits: wal.stats().group_commits - before,
        paired: None,
    }
}

/// Writes `rounds` copies of `batch` (W frames) to a fresh file, one `sync_data` per copy.
fn run_raw(dir: &Path, batch: &[u8], rounds: u64) -> Sample {
    let path = dir.join("raw.log");
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .expect("creating the raw file succeeds");
    // Make the new name durable before timing, as weir's segment creation does.
    file.sync_all().expect("syncing the raw file succeeds");
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("syncing the bench directory succeeds");
    let mut latency = histogram();
    let start = Instant::now();
    for _ in 0..rounds {
        let t = Instant::now();
        file.write_all(batch)
            .expect("writing the raw file succeeds");
        file.sync_data().expect("syncing the raw file succeeds");
        latency.saturating_record(nanos(t.elapsed()));
    }
    let elapsed = start.elapsed();
    drop(file);
    fs::remove_file(&path).expect("removing the raw file succeeds");
    Sample {
        rounds,
        elapsed,
        latency,
        group_commits: rounds,
        paired: None,
    }
}

/// Benchmarks weir with `writers` tasks appending `size`-byte records under `config`.
fn bench_weir(
    group: &mut BenchmarkGroup<'_, WallTime>,
    cfg: &Config,
    id: BenchmarkId,
    size: usize,
    writers: usize,
    config: WalConfig,
) -> Samples {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .enable_all()
        .build()
        .expect("building the tokio runtime succeeds");
    let dir = tempfile::tempdir_in(&cfg.dir).expect("creating the bench directory succeeds");
    let (wal, _) = rt
        .block_on(Wal::open(Storage::local(dir.path().join("wal")), config))
        .expect("opening the WAL succeeds");
    let payload = Bytes::from(vec![0xA5; size]);
    let batch = frames(size, writers);
    let raw_dir = dir.path().to_path_buf();
    let samples: Samples = Arc::default();
    group.bench_function(id, |b| {
        b.to_async(&rt).iter_custom(|rounds| {
            let (wal, payload, samples) = (wal.clone(), payload.clone(), Arc::clone(&samples));
            let (batch, raw_dir) = (batch.clone(), raw_dir.clone());
            async move {
                let mut sample = run_weir(wal, payload, writers, rounds).await;
                let elapsed = sample.elapsed;
                // The paired floor: not part of the time criterion sees; the summary uses it.
                let raw = tokio::task::spawn_blocking(move || run_raw(&raw_dir, &batch, rounds))
                    .await
                    .expect("the paired raw run does not panic");
                sample.paired = Some(Box::new(raw));
                samples
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(sample);
                elapsed
            }
        });
    });
    rt.block_on(wal.close()).expect("closing the WAL succeeds");
    shutdown(rt);
    samples
}

/// Benchmarks the raw floor on its own: W frames of `size` bytes per write + `sync_data`.
fn bench_raw(group: &mut BenchmarkGroup<'_, WallTime>, cfg: &Config, size: usize, writers: usize) {
    let dir = tempfile::tempdir_in(&cfg.dir).expect("creating the bench directory succeeds");
    let batch = frames(size, writers);
    group.bench_function(BenchmarkId::new("raw", writers), |b| {
        b.iter_custom(|rounds| run_raw(dir.path(), &batch, rounds).elapsed);
    });
}

/// `writers` frames of a `size`-byte payload: one raw batch, encoded as weir encodes records.
fn frames(size: usize, writers: usize) -> Bytes {
    let payload = vec![0xA5; size];
    let mut batch = Vec::with_capacity(writers * format::frame_len(size));
    for _ in 0..writers {
        format::encode_frame(&mut batch, 1_700_000_000_000, &payload);
    }
    Bytes::from(batch)
}

fn shutdown(rt: Runtime) {
    rt.shutdown_timeout(Duration::from_secs(10));
}

fn configure(group: &mut BenchmarkGroup<'_, WallTime>, cfg: &Config, size: usize, writers: usize) {
    group
        .sample_size(cfg.sample_size)
        .warm_up_time(cfg.warm_up)
        .measurement_time(cfg.measurement(size))
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::BytesDecimal((size * writers) as u64));
}

fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{} MiB", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{} KiB", s >> 10),
        s => format!("{s} B"),
    }
}

fn print_summary(cfg: &Config, rows: &[Row]) {
    println!();
    println!(
        "## WAL append summary (median of the measured samples; latency over all their \
         appends; dir {}; {} tokio workers)",
        cfg.dir.display(),
        cfg.worker_threads
    );
    println!();
    println!(
        "| case | writers | record | weir MB/s | raw MB/s | weir/raw | weir records/s | \
         ack p50 ms | ack p99 ms | ack max ms | mean group | raw sync p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let w = &row.weir;
        let mean_group = if w.group_commits == 0 {
            0.0
        } else {
            w.records as f64 / w.group_commits as f64
        };
        let (raw_mb, raw_sync) = match &row.raw {
            Some(r) => (
                format!("{:.2}", r.mb_per_s()),
                format!("{:.3}", r.quantile_ms(0.5)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let ratio = row
            .ratio
            .map_or_else(|| "-".to_owned(), |r| format!("{:.0}%", 100.0 * r));
        println!(
            "| {} | {} | {} | {:.2} | {raw_mb} | {ratio} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | \
             {raw_sync} |",
            row.label,
            row.writers,
            size_label(row.size),
            w.mb_per_s(),
            w.records_per_s(),
            w.quantile_ms(0.5),
            w.quantile_ms(0.99),
            w.latency.max() as f64 / 1e6,
            mean_group,
        );
    }
}

fn main() {
    let cfg = Config::new();
    let mut c = Criterion::default().without_plots().configure_from_args();
    let mut rows = Vec::new();

    for &size in &cfg.sizes {
        let mut group = c.benchmark_group(format!("wal_append/{size}"));
        for &writers in &cfg.writers {
            configure(&mut group, &cfg, size, writers);
            let weir = bench_weir(
                &mut group,
                &cfg,
                BenchmarkId::new("weir", writers),
                size,
                writers,
                WalConfig::default(),
            );
            bench_raw(&mut group, &cfg, size, writers);
            rows.extend(Row::of(&cfg, "default", &weir, size, writers));
        }
        group.finish();
    }

    let (size, writers) = (cfg.delay_size, cfg.delay_writers);
    let mut group = c.benchmark_group(format!("wal_group_commit_delay/{size}x{writers}"));
    configure(&mut group, &cfg, size, writers);
    for case in &cfg.delay_cases {
        let config = WalConfig {
            group_commit_max_delay: case.delay,
            ..WalConfig::default()
        };
        let weir = bench_weir(
            &mut group,
            &cfg,
            BenchmarkId::from_parameter(case.label),
            size,
            writers,
            config,
        );
        rows.extend(Row::of(&cfg, case.label, &weir, size, writers));
    }
    group.finish();

    c.final_summary();
    print_summary(&cfg, &rows);
}
