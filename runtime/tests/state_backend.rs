//! The state backends: the same stateful pipelines give the same results on each backend,
//! across restarts, with full or incremental checkpoints; the disk backend runs a growing state
//! under a memory limit that the memory backend's run of it exceeds, and checkpoints and
//! restores a state larger than its memory limit.
//!
//! `state_throughput` (ignored: a measurement, not a check) times a stateful run on a
//! backend, for comparing backends and builds: `cargo test --release --test state_backend
//! -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir::checkpoint::{CheckpointConfig, CheckpointData, CheckpointStore, StateData};
use weir::dstream::{DiskStateOptions, QueueStream, State, StateBackend, StateSpec};
use weir::testing::{Collected, ManualClock};
use weir::{Storage, StreamingConfig};

const INTERVAL: u64 = 1000;

/// The running count per key; returns the count so far.
fn running_count(_: &u64, value: Option<&u64>, state: &mut State<u64>) -> u64 {
    let sum = value.copied().unwrap_or(0) + state.get().copied().unwrap_or(0);
    state.update(sum);
    sum
}

/// Times `batches` batches of `map_with_state`, `update_state_by_key` and
/// `reduce_by_key_and_window_inv` over `keys` keys, `touched` of them per batch, on `backend`
/// (the manual clock snapshots every batch, as a checkpoint after every batch would).
async fn throughput(backend: StateBackend, keys: u64, touched: u64, batches: usize) -> Duration {
    let queue = QueueStream::new(true, 2);
    queue.push((0..keys).collect());
    for b in 0..batches as u64 {
        queue.push(
            (0..touched)
                .map(|i| (i * 7919 + b * 104_729) % keys)
                .collect(),
        );
    }
    let counts = Collected::default();
    let (q, c) = (queue.clone(), counts.clone());
    let mut clock = ManualClock::with_config(
        INTERVAL,
        2,
        |c| c.state_backend = backend,
        move |ctx| {
            let pairs = ctx.queue_stream(&q).map(|k: &u64| (*k, 1u64));
            let mapped = pairs
                .map_with_state(StateSpec::function(running_count))
                .uid("mapped");
            mapped.foreach_batch(|_| Ok(()));
            let totals = pairs
                .update_state_by_key(|vs: &[u64], s: Option<u64>| {
                    Some(s.unwrap_or(0) + vs.len() as u64)
                })
                .uid("totals");
            c.collect(&totals.count());
            let s = Duration::from_secs;
            pairs
                .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, s(3), s(1))
                .uid("window")
                .foreach_batch(|_| Ok(()));
        },
    )
    .unwrap();
    let started = Instant::now();
    clock.run(batches + 1).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(counts.batch((batches as u64 + 1) * INTERVAL), vec![keys]);
    elapsed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release -- --ignored --nocapture"]
async fn state_throughput() {
    let dir = tempfile::tempdir().unwrap();
    for backend in [
        StateBackend::Memory,
        StateBackend::Disk(DiskStateOptions::new(dir.path())),
    ] {
        let name = backend.name();
        let elapsed = throughput(backend, 200_000, 2_000, 20).await;
        println!("state_throughput: {name}: 200000 keys, 21 batches: {elapsed:?}");
    }
}

/// Which backend each segment of a run uses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Memory,
    Disk,
}

impl Backend {
    fn config(self, dir: &Path) -> StateBackend {
        match self {
            Backend::Memory => StateBackend::Memory,
            // A small cache: reads go to the file.
            Backend::Disk => StateBackend::Disk(DiskStateOptions::new(dir).cache_bytes(1 << 20)),
        }
    }
}

/// How a segment of a run ends.
#[derive(Clone, Copy, Debug)]
enum End {
    /// A driver restart after the segment's batches.
    Restart,
    /// A crash in the middle of the next batch (re-run after the restart).
    Crash,
}

/// Per batch, sorted: `map_with_state`'s output and state, `update_state_by_key`'s state, and
/// the filtered incremental window's.
type Outputs = Vec<(
    Vec<(String, i64)>,
    Vec<(String, i64)>,
    Vec<(String, i64)>,
    Vec<(String, i64)>,
)>;

const WORDS: &[&str] = &["a", "b", "c", "d", "e", "f", "g"];

/// Batch `b`'s words: a changing mix, some words absent for a while (timeouts, window exits).
fn words(b: u64) -> Vec<String> {
    (0..(b % 5 + 1) * 3)
        .map(|i| WORDS[((i * i + b * 3) % (2 + b % 6)) as usize].to_owned())
        .collect()
}

const BATCHES: u64 = 14;

/// Runs the stateful pipeline for [`BATCHES`] batches in segments `(batches, backend, end)`
/// (the last segment's end is ignored), with the state files under `dir`; checkpoints are
/// full snapshots, kept in memory.
async fn stateful(dir: &Path, segments: &[(u64, Backend, End)]) -> Outputs {
    stateful_in(dir, segments, None).await
}

/// The chains of the `map_with_state` operators `counts` (few keys, all changing) and `wide`
/// (many keys, few changing) seen after each segment.
#[derive(Debug, Default)]
struct Chains {
    counts: Vec<Vec<String>>,
    wide: Vec<Vec<String>>,
}

/// [`stateful`], with every checkpoint written into a checkpoint store under `dir`
/// incrementally if `chains` is given: every operator's state in state files (no inline
/// threshold), `map_with_state`'s as a base and deltas; restarts restore from the store.
async fn stateful_in(
    dir: &Path,
    segments: &[(u64, Backend, End)],
    mut chains: Option<&mut Chains>,
) -> Outputs {
    let incremental = chains.is_some();
    let configure = move |c: &mut StreamingConfig, backend: Backend, dir: &Path| {
        c.state_backend = backend.config(dir);
        c.incremental_checkpoints = incremental;
        c.state_inline_max_bytes = 0;
    };
    let queue = QueueStream::new(true, 2);
    for b in 0..BATCHES {
        queue.push(words(b));
    }
    let mapped = Collected::default();
    let (snapshots, totals, windows) = (
        Collected::default(),
        Collected::default(),
        Collected::default(),
    );
    let (q, m, s, t, w) = (
        queue.clone(),
        mapped.clone(),
        snapshots.clone(),
        totals.clone(),
        windows.clone(),
    );
    let build = move |ctx: &weir::StreamingContext| {
        let pairs = ctx
            .queue_stream(&q)
            .uid("input")
            .map(|w: &String| (w.clone(), 1i64));
        let spec = StateSpec::function(|_: &String, one: Option<&i64>, n: &mut State<i64>| {
            let count = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
            if !n.is_timing_out() {
                n.update(count);
            }
            count
        })
        .initial_state([("z".to_owned(), 100)])
        .timeout(Duration::from_millis(3 * INTERVAL));
        let counts = pairs.map_with_state(spec).uid("counts");
        // Many keys, few changed per batch, none timing out: its incremental checkpoints
        // are deltas over a base.
        let wide = StateSpec::function(|_: &String, one: Option<&i64>, n: &mut State<i64>| {
            let count = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
            n.update(count);
            count
        })
        .initial_state((0..300).map(|i| (format!("k{i:03}"), i)));
        let wide = pairs.map_with_state(wide).uid("wide");
        m.collect(
            &counts
                .map(|c: &i64| ("out".to_owned(), *c))
                .union(&wide.map(|c: &i64| ("wide".to_owned(), *c))),
        );
        s.collect(&counts.state_snapshots());
        // Every key's total, removed when it reaches a multiple of 4 (then starts again).
        let total = pairs
            .update_state_by_key(|vs: &[i64], s: Option<i64>| {
                let total = s.unwrap_or(0) + vs.iter().sum::<i64>();
                (total % 4 != 0).then_some(total)
            })
            .uid("totals");
        t.collect(&total);
        let s3 = Duration::from_millis(3 * INTERVAL);
        let window = pairs
            .reduce_by_key_and_window_inv_filtered(
                |a, b| a + b,
                |a, b| a - b,
                s3,
                Duration::from_millis(INTERVAL),
                |_, c| *c != 0,
            )
            .uid("window");
        w.collect(&window);
    };
    let (_, first, _) = segments[0];
    let dir_owned = dir.to_owned();
    let mut clock = ManualClock::with_config(
        INTERVAL,
        2,
        |c: &mut StreamingConfig| configure(c, first, &dir_owned),
        build,
    )
    .unwrap();
    let store = if incremental {
        let store = CheckpointStore::open(
            Storage::local(dir.join("checkpoints")),
            CheckpointConfig::default().with_retain(3),
        )
        .await
        .unwrap();
        Some(Arc::new(store))
    } else {
        None
    };
    if let Some(store) = &store {
        clock.checkpoint_to(Arc::clone(store));
    }
    for (i, &(batches, backend, end)) in segments.iter().enumerate() {
        clock.run(batches as usize).await.unwrap();
        if let (Some(store), Some(chains)) = (&store, chains.as_deref_mut()) {
            let last = clock.last_checkpoint().unwrap();
            chains.counts.push(chain_of(last, "counts"));
            chains.wide.push(chain_of(last, "wide"));
            assert_state_files_are_referenced(store, dir).await;
        }
        // One file per stateful operator while the disk backend runs, none otherwise.
        let files = state_files(dir).len();
        match backend {
            Backend::Disk => assert_eq!(files, 4, "segment {i}"),
            Backend::Memory => assert_eq!(files, 0, "segment {i}"),
        }
        let Some(&(_, next, _)) = segments.get(i + 1) else {
            break;
        };
        let config = |c: &mut StreamingConfig| configure(c, next, dir);
        match end {
            End::Restart => clock.restart_with_config(config).unwrap(),
            End::Crash => {
                // The crash restarts with the same configuration; then switch as asked.
                clock.crash_mid_batch().unwrap();
                clock.restart_with_config(config).unwrap();
            }
        }
    }
    let ran: u64 = segments.iter().map(|(b, _, _)| b).sum();
    assert_eq!(ran, BATCHES);
    (1..=BATCHES)
        .map(|b| {
            let t = b * INTERVAL;
            (
                mapped.sorted(t),
                snapshots.sorted(t),
                totals.sorted(t),
                windows.sorted(t),
            )
        })
        .collect()
}

/// The names of the state files of `operator`'s chain in `data` (empty if not a chain).
fn chain_of(data: &CheckpointData, operator: &str) -> Vec<String> {
    data.operator_state
        .iter()
        .filter(|s| s.operator_id == operator)
        .flat_map(|s| match &s.data {
            StateData::Chain(files) => files.iter().map(|f| f.name.clone()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The store's `state/` directory holds exactly the files its retained checkpoints reference.
async fn assert_state_files_are_referenced(store: &CheckpointStore, dir: &Path) {
    let mut referenced = std::collections::BTreeSet::new();
    for info in store.list().await.unwrap() {
        let data = store.read(info.id).await.unwrap();
        referenced.extend(data.state_files().map(|f| f.name.clone()));
    }
    let present: std::collections::BTreeSet<String> =
        std::fs::read_dir(dir.join("checkpoints/state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert_eq!(present, referenced, "state files vs. retained references");
    assert!(!present.is_empty());
}

fn state_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("weir-state-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_backend_computes_what_the_memory_backend_does() {
    let dir = tempfile::tempdir().unwrap();
    let expected = stateful(dir.path(), &[(BATCHES, Backend::Memory, End::Restart)]).await;
    // Something happens: keys come, time out, are removed, leave the window.
    assert!(expected.iter().any(|(m, ..)| m.len() > 3));
    assert!(expected.windows(2).any(|w| w[1].2.len() < w[0].2.len()));
    let disk = stateful(dir.path(), &[(BATCHES, Backend::Disk, End::Restart)]).await;
    assert_eq!(disk, expected);
    assert_eq!(
        state_files(dir.path()),
        Vec::<String>::new(),
        "deleted on drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_backend_continues_exactly_across_restarts_and_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let expected = stateful(dir.path(), &[(BATCHES, Backend::Memory, End::Restart)]).await;
    let disk = Backend::Disk;
    let interrupted = stateful(
        dir.path(),
        &[
            (4, disk, End::Restart),
            (3, disk, End::Crash),
            (5, disk, End::Crash),
            (2, disk, End::Restart),
        ],
    )
    .await;
    assert_eq!(interrupted, expected);
    assert_eq!(state_files(dir.path()), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_of_one_backend_restores_with_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let expected = stateful(dir.path(), &[(BATCHES, Backend::Memory, End::Restart)]).await;
    let switched = stateful(
        dir.path(),
        &[
            (3, Backend::Memory, End::Restart),
            (4, Backend::Disk, End::Crash),
            (3, Backend::Memory, End::Crash),
            (4, Backend::Disk, End::Restart),
        ],
    )
    .await;
    assert_eq!(switched, expected);
}

/// Incremental checkpoints (every state in files, `map_with_state` as a base and deltas)
/// give the results of full checkpoints, on both backends, restored from several points of
/// a chain — after deltas, and after a new base — across restarts and crashes; the store
/// keeps exactly the state files its retained checkpoints reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_checkpoints_restore_exactly_on_both_backends() {
    let dir = tempfile::tempdir().unwrap();
    let expected = stateful(dir.path(), &[(BATCHES, Backend::Memory, End::Restart)]).await;
    let (memory, disk) = (Backend::Memory, Backend::Disk);
    for segments in [
        [
            (4, memory, End::Restart),
            (3, memory, End::Crash),
            (5, memory, End::Crash),
            (2, memory, End::Restart),
        ],
        [
            (3, disk, End::Crash),
            (4, disk, End::Restart),
            (5, disk, End::Crash),
            (2, disk, End::Restart),
        ],
        [
            (2, memory, End::Crash),
            (5, disk, End::Restart),
            (4, memory, End::Crash),
            (3, disk, End::Restart),
        ],
    ] {
        let run = tempfile::tempdir().unwrap();
        let mut chains = Chains::default();
        let incremental = stateful_in(run.path(), &segments, Some(&mut chains)).await;
        assert_eq!(incremental, expected, "{segments:?}");
        // Restored from chains with deltas (`wide`), and from new bases (`counts`, whose
        // deltas soon outgrow its small base).
        assert!(
            chains.wide.iter().filter(|c| c.len() >= 2).count() >= 2,
            "deltas were written: {:?}",
            chains.wide
        );
        let bases: std::collections::BTreeSet<&String> =
            chains.counts.iter().filter_map(|c| c.first()).collect();
        assert!(
            bases.len() >= 2,
            "a new base was written: {:?}",
            chains.counts
        );
    }
}

/// The disk backend restores a chain (a base and deltas) in one merge by key, which needs the
/// base in the B-tree's key order; a base written with another partition count is not, and
/// the restore falls back to loading it and writing the deltas into it. Both restores give
/// every key its count: restarted with the same 2 partitions (merged), then with 3 (the chain
/// goes on over the base written with 2: loaded, then the deltas written), from chains with
/// deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_restores_exactly_with_the_same_or_another_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let configure = move |c: &mut StreamingConfig| {
        c.state_backend = Backend::Disk.config(&state_dir);
        c.incremental_checkpoints = true;
        c.state_inline_max_bytes = 0;
    };
    const KEYS: u64 = 3_000;
    // Batch 0 counts every key once; each later batch 40 of them.
    let keys = |b: u64| -> Vec<u64> {
        if b == 0 {
            (0..KEYS).collect()
        } else {
            (0..40).map(|i| (i * 71 + b * 13) % KEYS).collect()
        }
    };
    let queue = QueueStream::new(true, 1);
    for b in 0..12 {
        queue.push(vec![b]);
    }
    let snapshots = Collected::default();
    let (q, s) = (queue.clone(), snapshots.clone());
    let build = move |ctx: &weir::StreamingContext| {
        let counts = ctx
            .queue_stream(&q)
            .uid("input")
            .flat_map(move |b: &u64| keys(*b).into_iter().map(|k| (k, 1u64)))
            .map_with_state(StateSpec::function(running_count))
            .uid("counts");
        s.collect(&counts.state_snapshots());
    };
    let mut clock = ManualClock::with_config(INTERVAL, 2, configure.clone(), build).unwrap();
    let store = CheckpointStore::open(
        Storage::local(dir.path().join("checkpoints")),
        CheckpointConfig::default().with_retain(3),
    )
    .await
    .unwrap();
    clock.checkpoint_to(Arc::new(store));
    for (batches, partitions) in [(4, 2), (4, 3), (4, 0)] {
        clock.run(batches).await.unwrap();
        if partitions == 0 {
            break;
        }
        let chain = chain_of(clock.last_checkpoint().unwrap(), "counts");
        assert!(chain.len() >= 2, "a base and deltas: {chain:?}");
        let configure = configure.clone();
        clock
            .restart_with_config(move |c: &mut StreamingConfig| {
                configure(c);
                c.parallelism = partitions;
            })
            .unwrap();
    }
    let mut expected = vec![0u64; KEYS as usize];
    for b in 0..12 {
        for k in keys(b) {
            expected[k as usize] += 1;
        }
        let want: Vec<(u64, u64)> = expected
            .iter()
            .enumerate()
            .map(|(k, n)| (k as u64, *n))
            .collect();
        assert_eq!(snapshots.sorted((b + 1) * INTERVAL), want, "batch {b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_state_directory_fails_the_batch_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocked = dir.path().join("not-a-dir");
    std::fs::write(&blocked, b"x").unwrap();
    let queue = QueueStream::new(true, 1);
    queue.push(vec![("a".to_owned(), 1i64)]);
    let q = queue.clone();
    let result = ManualClock::with_config(
        INTERVAL,
        1,
        |c| c.state_backend = StateBackend::Disk(DiskStateOptions::new(&blocked)),
        move |ctx| {
            ctx.queue_stream(&q)
                .update_state_by_key(|vs: &[i64], s: Option<i64>| {
                    Some(s.unwrap_or(0) + vs.iter().sum::<i64>())
                })
                .foreach_batch(|_| Ok(()));
        },
    );
    let error = match result {
        Ok(mut clock) => clock.run(1).await.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(error.contains("state directory"), "{error}");
    assert!(error.contains("not-a-dir"), "{error}");
}
/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap();
    kb * 1024
}

/// New keys per batch of the memory-limit runs.
const LIMIT_KEYS: u64 = 20_000;
/// Batches of the memory-limit runs: the state grows to `LIMIT_KEYS × LIMIT_BATCHES` keys.
const LIMIT_BATCHES: u64 = 14;
/// Keys `0..LIMIT_HOT` are counted again in every batch after the first.
const LIMIT_HOT: u64 = 500;
/// Buckets of each key's histogram.
const LIMIT_BUCKETS: usize = 64;
/// The memory-limit runs' `RLIMIT_DATA` (their heap and every private writable mapping). The
/// state is 280 000 keys × 64 `u64`s: 137 MiB as values, 17 MiB encoded (a byte a bucket).
/// Measured without a limit at 200 000 keys (debug build, 2026-12-07, before new bases were
/// encoded into a file): the memory backend's run reached 416 MiB of data (the state in
/// memory, a copy of each partition a batch changes, the checkpoints' encodings), the disk
/// backend's 150 MiB (the changes of the batches not folded yet, the cache, and then a
/// checkpoint's encoding of the whole state when it wrote a new base). At 200 000 keys the
/// memory backend's run once fitted under the limit (a loaded machine, checkpoints skipped):
/// the state grows further since.
const LIMIT_DATA: u64 = 256 << 20;
/// The disk backend's cache in the memory-limit runs (the state file is larger).
const LIMIT_CACHE: usize = 4 << 20;

/// Counts `k` in the bucket of batch `b` of its histogram: the key, the histogram's total,
/// and whether the histogram was the one expected before (only buckets up to `b` counted).
fn histogram(k: &u64, b: Option<&u64>, state: &mut State<Vec<u64>>) -> (u64, u64, bool) {
    let b = b.copied().unwrap_or(0);
    let mut buckets = state
        .get()
        .cloned()
        .unwrap_or_else(|| vec![0; LIMIT_BUCKETS]);
    let bucket = usize::try_from(b).unwrap() % LIMIT_BUCKETS;
    let fits = buckets.len() == LIMIT_BUCKETS && buckets[bucket] == 0;
    buckets[bucket] += 1;
    let total = buckets.iter().sum();
    state.update(buckets);
    (*k, total, fits)
}

/// The total [`histogram`] returns for key `k` in batch `b` (from 0).
fn expected_total(b: u64, k: u64) -> u64 {
    if k < LIMIT_HOT { b + 1 } else { 1 }
}

/// The child process of [`the_disk_backend_runs_under_a_memory_limit_the_memory_backend_exceeds`]:
/// limits its own `RLIMIT_DATA` to [`LIMIT_DATA`], then grows a `map_with_state` of
/// histograms on the real engine with the backend named by `WEIR_LIMIT_BACKEND` (a checkpoint
/// before every batch, as the engine takes them), checking every total of every batch;
/// prints the records seen, the wrong ones, and its peak resident memory. Does nothing when
/// run on its own.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by the_disk_backend_runs_under_a_memory_limit_the_memory_backend_exceeds in a child process"]
async fn limited_state_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok(backend) = std::env::var("WEIR_LIMIT_BACKEND") else {
        return;
    };
    let (_, hard) = getrlimit(Resource::RLIMIT_DATA).unwrap();
    setrlimit(Resource::RLIMIT_DATA, LIMIT_DATA.min(hard), hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = StreamingConfig::local(dir.path().join("checkpoints"))
        .batch_interval(Duration::from_millis(20));
    config.engine.executors = 2;
    config.parallelism = 2;
    config.state_backend = match backend.as_str() {
        "disk" => StateBackend::Disk(
            DiskStateOptions::new(dir.path().join("state")).cache_bytes(LIMIT_CACHE),
        ),
        _ => StateBackend::Memory,
    };
    let mut ctx = weir::StreamingContext::new(config);
    let queue = QueueStream::new(true, 1);
    for b in 0..LIMIT_BATCHES {
        queue.push(vec![b]);
    }
    let (sender, mut batches) = tokio::sync::mpsc::unbounded_channel();
    ctx.queue_stream(&queue)
        .flat_map(|b: &u64| {
            let (b, hot) = (*b, if *b == 0 { 0 } else { LIMIT_HOT });
            (b * LIMIT_KEYS..(b + 1) * LIMIT_KEYS)
                .chain(0..hot)
                .map(move |k| (k, b))
        })
        .map_with_state(StateSpec::function(histogram))
        .uid("limited")
        .foreach_batch(move |records| {
            let _ = sender.send(records.iter().copied().collect::<Vec<_>>());
            Ok(())
        });
    ctx.start().await.unwrap();
    let (mut seen, mut wrong) = (0u64, 0u64);
    for b in 0..LIMIT_BATCHES {
        let records = tokio::time::timeout(Duration::from_secs(120), batches.recv())
            .await
            .unwrap()
            .unwrap();
        seen += records.len() as u64;
        wrong += records
            .iter()
            .filter(|(k, total, fits)| !fits || *total != expected_total(b, *k))
            .count() as u64;
    }
    println!("seen={seen} wrong={wrong} peak_rss_bytes={}", peak_rss());
    ctx.stop(false).await.unwrap();
}

/// Runs [`limited_state_child`] with `backend` in a child process under [`LIMIT_DATA`]: whether
/// it succeeded, and what it printed.
fn limited_state(backend: &str) -> (bool, String) {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["limited_state_child", "--exact", "--ignored", "--nocapture"])
        .env("WEIR_LIMIT_BACKEND", backend)
        // glibc's per-thread arenas keep what other threads freed; under a data limit, two
        // arenas (docs/operations.md, "Memory").
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap();
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}

/// The value after `name=` in `printed`.
fn printed_value(printed: &str, name: &str) -> u64 {
    printed
        .split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {name} in {printed}"))
        .parse()
        .unwrap()
}

/// Issue 17, item 1: under a memory limit (`RLIMIT_DATA`, [`LIMIT_DATA`]) that the memory
/// backend's run of a growing state exceeds (it dies), the disk backend's run of the same
/// state stays under it and computes every histogram of every batch exactly. A state larger
/// than the limit itself: [`a_state_larger_than_the_memory_limit_checkpoints_and_restores`].
#[cfg(unix)]
#[test]
fn the_disk_backend_runs_under_a_memory_limit_the_memory_backend_exceeds() {
    let values = LIMIT_KEYS * LIMIT_BATCHES * (LIMIT_BUCKETS * 8) as u64;
    let (ok, printed) = limited_state("disk");
    assert!(ok, "the disk run failed under its limit: {printed}");
    let expected = LIMIT_KEYS * LIMIT_BATCHES + LIMIT_HOT * (LIMIT_BATCHES - 1);
    assert_eq!(printed_value(&printed, "seen"), expected, "{printed}");
    assert_eq!(printed_value(&printed, "wrong"), 0, "{printed}");
    let peak = printed_value(&printed, "peak_rss_bytes");
    println!(
        "disk: {} MiB of state values, peak resident memory {} MiB under a limit of {} MiB",
        values >> 20,
        peak >> 20,
        LIMIT_DATA >> 20
    );
    let (ok, printed) = limited_state("memory");
    assert!(!ok, "the memory run fit under the limit: {printed}");
    assert!(
        printed.contains("memory allocation of"),
        "the memory run died of something else than its limit: {printed}"
    );
}

/// New keys per batch of the large-base run, and each key's state in bytes: 8 MiB of state a
/// batch (what a batch holds — its changes, their copy for the next delta, the delta's
/// encoding — stays well under the limit).
const BIG_KEYS: u64 = 2_048;
const BIG_VALUE: usize = 4_096;
/// Batches that add keys: the state grows to 160 MiB.
const BIG_BATCHES: u64 = 20;
/// The large-base run's `RLIMIT_DATA`: less than the state's encoding. A checkpoint that
/// encoded the state into memory to write a new base, or a restore that read its base file
/// into memory, could not run under it.
const BIG_LIMIT_DATA: u64 = 120 << 20;

/// Key `k`'s state in the large-base run (text: encoded and decoded in one piece, fast in a
/// debug build).
fn big_value(k: u64) -> String {
    (0..BIG_VALUE as u64)
        .map(|i| char::from(b'a' + (k.wrapping_mul(31).wrapping_add(i) % 26) as u8))
        .collect()
}

/// The child process of [`a_state_larger_than_the_memory_limit_checkpoints_and_restores`]:
/// under [`BIG_LIMIT_DATA`], grows a `map_with_state` on the disk backend to
/// `BIG_KEYS × BIG_BATCHES` keys of [`BIG_VALUE`] bytes (the pipeline with the `ManualClock`,
/// every batch checkpointed incrementally into a local store: bases and deltas), restarts from
/// the last checkpoint (the chain read back, its base in pieces), then reads every 61st key
/// back in two more batches; prints the keys checked, the wrong ones, the state's size and the
/// peak resident memory. Does nothing when run on its own.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_state_larger_than_the_memory_limit_checkpoints_and_restores in a child process"]
async fn large_base_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if std::env::var("WEIR_LARGE_BASE").is_err() {
        return;
    }
    let (_, hard) = getrlimit(Resource::RLIMIT_DATA).unwrap();
    setrlimit(Resource::RLIMIT_DATA, BIG_LIMIT_DATA.min(hard), hard).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let configure = move |c: &mut StreamingConfig| {
        c.state_backend =
            StateBackend::Disk(DiskStateOptions::new(&state_dir).cache_bytes(LIMIT_CACHE));
        c.incremental_checkpoints = true;
    };
    let queue = QueueStream::new(true, 1);
    for b in 0..BIG_BATCHES + 2 {
        queue.push(vec![b]);
    }
    let checked = Collected::default();
    let (q, c) = (queue.clone(), checked.clone());
    let build = move |ctx: &weir::StreamingContext| {
        let read = ctx
            .queue_stream(&q)
            .uid("input")
            .flat_map(|b: &u64| {
                let b = *b;
                let keys: Vec<u64> = if b < BIG_BATCHES {
                    (b * BIG_KEYS..(b + 1) * BIG_KEYS).collect()
                } else {
                    // Every 61st key, half of them in each of the two reading batches.
                    (0..BIG_BATCHES * BIG_KEYS)
                        .step_by(61)
                        .filter(|k| k % 2 == b % 2)
                        .collect()
                };
                keys.into_iter().map(move |k| (k, b))
            })
            .map_with_state(StateSpec::function(
                |k: &u64, b: Option<&u64>, state: &mut State<String>| {
                    let adding = b.is_some_and(|b| *b < BIG_BATCHES);
                    let right = match state.get() {
                        Some(value) => !adding && *value == big_value(*k),
                        None => adding,
                    };
                    if adding {
                        state.update(big_value(*k));
                    }
                    (
                        "checked".to_owned(),
                        i64::from(!adding) * if right { 1 } else { -1 },
                    )
                },
            ))
            .uid("big");
        c.collect(&read);
    };
    let mut clock = ManualClock::with_config(INTERVAL, 2, configure.clone(), build).unwrap();
    let store = CheckpointStore::open(
        Storage::local(dir.path().join("checkpoints")),
        CheckpointConfig::default().with_retain(2),
    )
    .await
    .unwrap();
    clock.checkpoint_to(Arc::new(store));
    clock.run(BIG_BATCHES as usize).await.unwrap();
    let state_bytes: u64 = ["checkpoints/state"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(dir.path().join(sub)).unwrap())
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap_or(0);
    clock.restart_with_config(configure).unwrap();
    clock.run(2).await.unwrap();
    let (mut right, mut wrong) = (0, 0);
    for b in BIG_BATCHES + 1..=BIG_BATCHES + 2 {
        for (_, v) in checked.sorted(b * INTERVAL) {
            if v == 1 { right += 1 } else { wrong += 1 }
        }
    }
    println!(
        "checked={right} wrong={wrong} largest_state_file={state_bytes} peak_rss_bytes={}",
        peak_rss()
    );
}

/// Issue 17, item 1: with the disk backend, a state larger than the process may hold in
/// memory is checkpointed and restored. The child ([`large_base_child`]) runs under a data
/// limit ([`BIG_LIMIT_DATA`], 120 MiB) smaller than its state (160 MiB as values, and about
/// as much encoded): its checkpoints write new bases of the whole state (encoded into a
/// temporary file from a snapshot of the B-tree, uploaded in pieces) and the restart reads
/// the base back in pieces; every key read after the restart has its state.
#[cfg(unix)]
#[test]
fn a_state_larger_than_the_memory_limit_checkpoints_and_restores() {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["large_base_child", "--exact", "--ignored", "--nocapture"])
        .env("WEIR_LARGE_BASE", "1")
        .env("MALLOC_ARENA_MAX", "2")
        .output()
        .unwrap();
    let printed = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the child failed: {printed}");
    let expected = (0..BIG_BATCHES * BIG_KEYS).step_by(61).count() as u64;
    assert_eq!(printed_value(&printed, "checked"), expected, "{printed}");
    assert_eq!(printed_value(&printed, "wrong"), 0, "{printed}");
    let largest = printed_value(&printed, "largest_state_file");
    assert!(
        largest > BIG_LIMIT_DATA,
        "a base larger than the limit was written: {largest} bytes; {printed}"
    );
    println!(
        "largest state file {} MiB, peak resident memory {} MiB under a data limit of {} MiB",
        largest >> 20,
        printed_value(&printed, "peak_rss_bytes") >> 20,
        BIG_LIMIT_DATA >> 20
    );
}
