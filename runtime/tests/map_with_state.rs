//! `map_with_state` against expected outputs for fixed inputs.
//!
//! The scenarios and their expected outputs are those of Spark's `MapWithStateSuite` (facts
//! about the operator's semantics: every input word `w` becomes `(w, 1)`, batch interval 1 s);
//! the tests are ours. Outputs and state snapshots are compared per batch, sorted. The last
//! test checks what incremental checkpoints of `map_with_state` write.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::time::Duration;

use weir::dstream::{QueueStream, State, StateSpec};
use weir::testing::{Collected, ManualClock};

const INTERVAL: u64 = 1000;

type Spec<S, T> = StateSpec<String, i64, S, T>;

/// How a run is interrupted.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// A driver restart after this many batches.
    RestartAfter(usize),
    /// A crash in the middle of the batch after this many batches (re-run after restart).
    CrashAfter(usize),
}

struct Run<S, T> {
    outputs: Vec<Vec<T>>,
    snapshots: Vec<Vec<(String, S)>>,
}

fn words(batches: &[&[&str]]) -> Vec<Vec<String>> {
    batches
        .iter()
        .map(|b| b.iter().map(|w| (*w).to_owned()).collect())
        .collect()
}

fn kv<S: Clone>(batches: &[&[(&str, S)]]) -> Vec<Vec<(String, S)>> {
    batches
        .iter()
        .map(|b| {
            b.iter()
                .map(|(k, s)| ((*k).to_owned(), s.clone()))
                .collect()
        })
        .collect()
}

fn sorted<T: Ord>(mut batches: Vec<Vec<T>>) -> Vec<Vec<T>> {
    for b in &mut batches {
        b.sort();
    }
    batches
}

/// Runs `spec()` over a queue stream of `input` mapped to `(word, 1)` for `batches` batches,
/// interrupted by `fault`: every batch's mapped output and state snapshot, sorted.
async fn run<S, T>(
    input: &[&[&str]],
    batches: usize,
    fault: Fault,
    spec: impl Fn() -> Spec<S, T> + Send + Sync + 'static,
) -> Result<Run<S, T>, weir::Error>
where
    S: Clone + Send + Sync + Ord + serde::Serialize + serde::de::DeserializeOwned + 'static,
    T: Clone + Send + Sync + Ord + 'static,
{
    let queue = QueueStream::new(true, 2);
    for batch in words(input) {
        queue.push(batch);
    }
    let (outputs, snapshots) = (Collected::default(), Collected::default());
    let (q, o, s) = (queue.clone(), outputs.clone(), snapshots.clone());
    let mut clock = ManualClock::new(INTERVAL, 2, move |ctx| {
        let stream = ctx
            .queue_stream(&q)
            .uid("input")
            .map(|w: &String| (w.clone(), 1i64))
            .map_with_state(spec())
            .uid("state");
        o.collect(&stream);
        s.collect(&stream.state_snapshots());
    })?;
    match fault {
        Fault::None => clock.run(batches).await?,
        Fault::RestartAfter(k) => {
            clock.run(k).await?;
            clock.restart()?;
            clock.run(batches - k).await?;
        }
        Fault::CrashAfter(k) => {
            clock.run(k).await?;
            clock.crash_mid_batch()?;
            clock.run(batches - k).await?;
        }
    }
    let every = |c: &Collected<_>| -> Vec<u64> { c.batches().keys().copied().collect() };
    let times: Vec<u64> = (1..=batches as u64).map(|k| k * INTERVAL).collect();
    assert_eq!(every(&snapshots), times, "a snapshot every batch");
    Ok(Run {
        outputs: times.iter().map(|&t| outputs.sorted(t)).collect(),
        snapshots: times.iter().map(|&t| snapshots.sorted(t)).collect(),
    })
}

const GROWING: &[&[&str]] = &[
    &[],
    &["a"],
    &["a", "b"],
    &["a", "b", "c"],
    &["a", "b"],
    &["a"],
    &[],
];

fn growing_states() -> Vec<Vec<(String, i64)>> {
    kv(&[
        &[],
        &[("a", 1)],
        &[("a", 2), ("b", 1)],
        &[("a", 3), ("b", 2), ("c", 1)],
        &[("a", 4), ("b", 3), ("c", 1)],
        &[("a", 5), ("b", 3), ("c", 1)],
        &[("a", 5), ("b", 3), ("c", 1)],
    ])
}

/// The running count; returns the count so far.
fn running_count(_: &String, value: Option<&i64>, state: &mut State<i64>) -> i64 {
    let sum = value.copied().unwrap_or(0) + state.get().copied().unwrap_or(0);
    state.update(sum);
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_operations_with_the_simple_api() {
    let run = run(GROWING, 7, Fault::None, || {
        StateSpec::function(running_count)
    })
    .await
    .unwrap();
    let expected: Vec<Vec<i64>> = vec![
        vec![],
        vec![1],
        vec![1, 2],
        vec![1, 2, 3],
        vec![3, 4],
        vec![5],
        vec![],
    ];
    assert_eq!(run.outputs, expected);
    assert_eq!(run.snapshots, growing_states());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_operations_with_the_batch_time_api() {
    let run = run(GROWING, 7, Fault::None, || {
        StateSpec::function_with_time(
            |_t, key: &String, value: Option<&i64>, state: &mut State<i64>| {
                let sum = value.copied().unwrap_or(0) + state.get().copied().unwrap_or(0);
                state.update(sum);
                Some(key.repeat(2))
            },
        )
    })
    .await
    .unwrap();
    let expected = words(&[
        &[],
        &["aa"],
        &["aa", "bb"],
        &["aa", "bb", "cc"],
        &["aa", "bb"],
        &["aa"],
        &[],
    ]);
    assert_eq!(run.outputs, expected);
    assert_eq!(run.snapshots, growing_states());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn states_as_mapped_data_only_for_keys_with_data() {
    let run = run(GROWING, 7, Fault::None, || {
        StateSpec::function_with_time(
            |_t, key: &String, value: Option<&i64>, state: &mut State<i64>| {
                let sum = value.copied().unwrap_or(0) + state.get().copied().unwrap_or(0);
                state.update(sum);
                Some((key.clone(), sum))
            },
        )
    })
    .await
    .unwrap();
    // Keys without data in a batch are not touched: c is in the state but not mapped at 5 s.
    let expected = kv(&[
        &[],
        &[("a", 1)],
        &[("a", 2), ("b", 1)],
        &[("a", 3), ("b", 2), ("c", 1)],
        &[("a", 4), ("b", 3)],
        &[("a", 5)],
        &[],
    ]);
    assert_eq!(run.outputs, expected);
    assert_eq!(run.snapshots, growing_states());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_states_with_nothing_returned() {
    let run = run(GROWING, 7, Fault::None, || {
        StateSpec::function_with_time(
            |_t, _: &String, value: Option<&i64>, state: &mut State<i64>| {
                let sum = value.copied().unwrap_or(0) + state.get().copied().unwrap_or(0);
                state.update(sum);
                None::<i64>
            },
        )
        .initial_state(kv(&[&[("a", 5), ("b", 10), ("c", -20), ("d", 0)]]).remove(0))
    })
    .await
    .unwrap();
    assert_eq!(run.outputs, vec![Vec::<i64>::new(); 7]);
    let expected = kv(&[
        &[("a", 5), ("b", 10), ("c", -20), ("d", 0)],
        &[("a", 6), ("b", 10), ("c", -20), ("d", 0)],
        &[("a", 7), ("b", 11), ("c", -20), ("d", 0)],
        &[("a", 8), ("b", 12), ("c", -19), ("d", 0)],
        &[("a", 9), ("b", 13), ("c", -19), ("d", 0)],
        &[("a", 10), ("b", 13), ("c", -19), ("d", 0)],
        &[("a", 10), ("b", 13), ("c", -19), ("d", 0)],
    ]);
    assert_eq!(run.snapshots, sorted(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_removing() {
    let input: &[&[&str]] = &[
        &[],
        &["a"],
        &["a", "b"],      // a is removed
        &["a", "b", "c"], // b is removed
        &["a", "b", "c"], // a and c are removed
        &["a", "b"],      // b is removed
        &["a"],           // a is removed
        &[],
    ];
    let run = run(input, 8, Fault::None, || {
        StateSpec::function_with_time(
            |_t, key: &String, value: Option<&i64>, state: &mut State<i64>| {
                if state.exists() {
                    state.remove();
                    Some(key.clone())
                } else {
                    state.update(value.copied().unwrap_or(0));
                    None
                }
            },
        )
        .num_partitions(1)
    })
    .await
    .unwrap();
    let expected = words(&[&[], &[], &["a"], &["b"], &["a", "c"], &["b"], &["a"], &[]]);
    assert_eq!(run.outputs, expected);
    let states = kv(&[
        &[],
        &[("a", 1)],
        &[("b", 1)],
        &[("a", 1), ("c", 1)],
        &[("b", 1)],
        &[("a", 1)],
        &[],
        &[],
    ]);
    assert_eq!(run.snapshots, states);
}

fn timing_out_input() -> Vec<&'static [&'static str]> {
    let mut input: Vec<&[&str]> = vec![
        &["a", "b", "c"],
        &["a", "b"],
        &["a"],
        &[],    // 4 s
        &[],    // 5 s: c times out (last updated at 1 s, more than 3 s ago)
        &["a"], // 6 s: b times out (last updated at 2 s); a does not
    ];
    input.extend(std::iter::repeat_n(&["a"][..], 20));
    input
}

fn timing_out_spec() -> Spec<i64, String> {
    StateSpec::function_with_time(
        |_t, key: &String, value: Option<&i64>, state: &mut State<i64>| {
            if value.is_some() {
                state.update(1);
            }
            state.is_timing_out().then(|| key.clone())
        },
    )
    .timeout(Duration::from_secs(3))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_timing_out() {
    let input = timing_out_input();
    let run = run(&input, 20, Fault::None, timing_out_spec).await.unwrap();
    // b and c are returned once each, when they time out.
    let mut all: Vec<String> = run.outputs.iter().flatten().cloned().collect();
    all.sort();
    assert_eq!(all, vec!["b".to_owned(), "c".to_owned()]);
    assert_eq!(run.outputs[4], vec!["c".to_owned()], "c at 5 s");
    assert_eq!(run.outputs[5], vec!["b".to_owned()], "b at 6 s");
    // States for a, b and c are all defined at some point; finally only a's.
    let abc = kv(&[&[("a", 1), ("b", 1), ("c", 1)]]).remove(0);
    assert!(run.snapshots.contains(&abc));
    assert_eq!(run.snapshots[4], kv(&[&[("a", 1), ("b", 1)]]).remove(0));
    assert_eq!(run.snapshots.last(), Some(&kv(&[&[("a", 1)]]).remove(0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initial_state_times_out_from_the_first_batch() {
    let run = run(
        &[&["a"], &["a"], &["a"], &["a"], &["a"]],
        5,
        Fault::None,
        || timing_out_spec().initial_state(vec![("z".to_owned(), 7)]),
    )
    .await
    .unwrap();
    // z counts as updated at 1 s: it times out at 5 s, the first batch more than 3 s later.
    assert_eq!(run.outputs[3], Vec::<String>::new());
    assert_eq!(run.outputs[4], vec!["z".to_owned()]);
    assert_eq!(run.snapshots[3], kv(&[&[("a", 1), ("z", 7)]]).remove(0));
    assert_eq!(run.snapshots[4], kv(&[&[("a", 1)]]).remove(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misusing_the_state_fails_the_batch_with_the_reason() {
    type Misuse = fn(&mut State<i64>);
    let cases: Vec<(Misuse, &str)> = vec![
        (|s| s.update(2), "timing out cannot be updated"),
        (|s| s.remove(), "timing out cannot be removed"),
    ];
    for (misuse, why) in cases {
        let err = run(&[&["a"]], 6, Fault::None, move || {
            StateSpec::function(move |_: &String, v: Option<&i64>, s: &mut State<i64>| {
                if v.is_some() {
                    s.update(1);
                } else {
                    misuse(s);
                }
                0i64
            })
            .timeout(Duration::from_secs(1))
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(err.contains(why), "{err:?}");
        assert!(err.contains("batch 3000"), "{err:?}");
    }
    let err = run(&[&["a"]], 1, Fault::None, || {
        StateSpec::function(|_: &String, _: Option<&i64>, s: &mut State<i64>| {
            s.update(1);
            s.remove();
            s.update(2);
            assert!(s.is_removed() && !s.is_updated() && !s.exists());
            0i64
        })
    })
    .await
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(
        err.contains("cannot be updated after it was removed"),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_failure_recovery() {
    for fault in [
        Fault::RestartAfter(3),
        Fault::CrashAfter(3),
        Fault::RestartAfter(1),
        Fault::CrashAfter(5),
    ] {
        let run = run(GROWING, 7, fault, || StateSpec::function(running_count))
            .await
            .unwrap();
        assert_eq!(run.snapshots, growing_states(), "{fault:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_continue_exactly_across_restarts() {
    let input = timing_out_input();
    let whole = run(&input, 12, Fault::None, timing_out_spec).await.unwrap();
    for k in [2, 4, 5, 8] {
        for fault in [Fault::RestartAfter(k), Fault::CrashAfter(k)] {
            let run = run(&input, 12, fault, timing_out_spec).await.unwrap();
            assert_eq!(run.outputs, whole.outputs, "{fault:?}");
            assert_eq!(run.snapshots, whole.snapshots, "{fault:?}");
        }
    }
    // The restored state keeps when each key was last updated: c still times out at 5 s.
    assert_eq!(whole.outputs[4], vec!["c".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_initial_state_is_not_applied_again_after_a_restart() {
    let spec = || StateSpec::function(running_count).initial_state(vec![("a".to_owned(), 100)]);
    let whole = run(GROWING, 7, Fault::None, spec).await.unwrap();
    let restarted = run(GROWING, 7, Fault::RestartAfter(4), spec).await.unwrap();
    assert_eq!(restarted.snapshots, whole.snapshots);
    assert_eq!(
        whole.snapshots[6],
        kv(&[&[("a", 105), ("b", 3), ("c", 1)]]).remove(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_of_a_checkpointed_batch_stays_in_memory() {
    use std::sync::{Arc, Mutex};
    let queue = QueueStream::new(true, 2);
    for batch in words(GROWING) {
        queue.push(batch);
    }
    let handle: Arc<Mutex<Option<weir::dstream::MapWithStateDStream<String, i64, i64>>>> =
        Arc::default();
    let (q, h) = (queue.clone(), Arc::clone(&handle));
    let mut clock = ManualClock::new(INTERVAL, 2, move |ctx| {
        let stream = ctx
            .queue_stream(&q)
            .map(|w: &String| (w.clone(), 1i64))
            .map_with_state(StateSpec::function(running_count));
        stream.foreach_batch(|_| Ok(()));
        stream.state_snapshots().foreach_batch(|_| Ok(()));
        *h.lock().unwrap() = Some(stream);
    })
    .unwrap();
    for _ in 0..GROWING.len() {
        clock.run(1).await.unwrap();
        let stream = handle.lock().unwrap().clone().unwrap();
        // The batch completed and was snapshotted: its state is the base, its output gone.
        assert_eq!(stream.remembered_batches(), Vec::<u64>::new());
        assert_eq!(
            stream.state_snapshots().remembered_batches(),
            Vec::<u64>::new()
        );
    }
}

/// With incremental checkpoints, a checkpoint after a batch that changed 1 % of the keys
/// writes a delta far smaller than the whole state (which the first checkpoint wrote as the
/// chain's base), on both backends; a restore from the chain gives the same counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_checkpoints_write_only_what_changed() {
    use std::sync::Arc;
    use weir::checkpoint::{CheckpointConfig, CheckpointStore, StateData};
    use weir::dstream::{DiskStateOptions, StateBackend};

    const KEYS: u64 = 20_000;
    const CHANGED: u64 = KEYS / 100;
    let dir = tempfile::tempdir().unwrap();
    for backend in [
        StateBackend::Memory,
        StateBackend::Disk(DiskStateOptions::new(dir.path())),
    ] {
        let queue = QueueStream::new(true, 2);
        queue.push((0..KEYS).collect());
        for b in 1..=6u64 {
            queue.push((0..CHANGED).map(|i| (i * 97 + b * 1_013) % KEYS).collect());
        }
        let totals = Collected::default();
        let b = backend.clone();
        let mut clock = ManualClock::with_config(
            INTERVAL,
            2,
            move |c| c.state_backend = b,
            counts_v1(&queue, &totals),
        )
        .unwrap();
        let store = CheckpointStore::open(
            weir::Storage::local(dir.path().join(backend.name())),
            CheckpointConfig::default(),
        )
        .await
        .unwrap();
        clock.checkpoint_to(Arc::new(store));
        let mut chains = Vec::new();
        for _ in 0..5 {
            clock.run(1).await.unwrap();
            let data = clock.last_checkpoint().unwrap();
            let counts = data
                .operator_state
                .iter()
                .find(|s| s.operator_id == "counts");
            match &counts.unwrap().data {
                StateData::Chain(files) => chains.push(files.clone()),
                other => panic!("{}: not a chain: {other:?}", backend.name()),
            }
        }
        let base = chains[0][0].len;
        let deltas: Vec<u64> = chains[4][1..].iter().map(|f| f.len).collect();
        println!(
            "{}: base {base} bytes, deltas {deltas:?} bytes",
            backend.name()
        );
        assert!(
            base > 100_000,
            "{}: the base holds every key: {base} bytes",
            backend.name()
        );
        for (i, chain) in chains.iter().enumerate() {
            assert_eq!(
                chain.len(),
                i + 1,
                "{}: one more delta per checkpoint",
                backend.name()
            );
            assert_eq!(chain[0], chains[0][0], "the base is shared");
        }
        for delta in &chains[4][1..] {
            assert!(
                delta.len * 20 < base,
                "{}: a delta of 1 % of the keys is {} bytes, the base {base}",
                backend.name(),
                delta.len
            );
        }
        // Restored from the base and its four deltas: the next batch counts on from them.
        clock.restart().unwrap();
        clock.run(1).await.unwrap();
        let expected = KEYS + 5 * CHANGED;
        assert_eq!(
            totals.batch(6 * INTERVAL),
            vec![((), expected)],
            "{}",
            backend.name()
        );
    }
}

/// Version 2 of the counting state of the schema tests: version 1 was a bare `u64` count.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Count {
    count: u64,
    /// The batch that last counted the key (0: migrated, not counted since).
    last: u64,
}

/// The migration hook a version-2 program of the schema tests gives.
#[derive(Clone)]
enum Migration {
    None,
    /// Counts its calls.
    Counted(std::sync::Arc<std::sync::atomic::AtomicU64>),
    /// Fails at its call number `.0` with "boom".
    FailsAt(u64, std::sync::Arc<std::sync::atomic::AtomicU64>),
}

/// Version 1: a count per key (`map_with_state`, uid `counts`), every batch's sum of counts
/// collected.
fn counts_v1(
    queue: &QueueStream<u64>,
    out: &Collected<((), u64)>,
) -> impl Fn(&weir::StreamingContext) + Send + Sync + 'static {
    let (q, out) = (queue.clone(), out.clone());
    move |ctx| {
        let counts = ctx
            .queue_stream(&q)
            .map(|k: &u64| (*k, 1u64))
            .map_with_state(StateSpec::function(
                |_: &u64, one: Option<&u64>, n: &mut State<u64>| {
                    let c = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
                    n.update(c);
                    c
                },
            ))
            .uid("counts");
        out.collect(
            &counts
                .state_snapshots()
                .map(|(_, c)| ((), *c))
                .reduce_by_key(|a, b| a + b),
        );
    }
}

/// Version 2: the state is a [`Count`] (schema version 2), migrated by `migration`; every
/// batch's sum of counts and number of keys counted since the migration collected.
fn counts_v2(
    queue: &QueueStream<u64>,
    out: &Collected<((), (u64, u64))>,
    migration: Migration,
) -> impl Fn(&weir::StreamingContext) + Send + Sync + 'static {
    use std::sync::atomic::Ordering;
    let (q, out) = (queue.clone(), out.clone());
    move |ctx| {
        let counts = ctx
            .queue_stream(&q)
            .map(|k: &u64| (*k, 1u64))
            .map_with_state(StateSpec::function_with_time(
                |time, _: &u64, one: Option<&u64>, n: &mut State<Count>| {
                    let mut c = n.get().cloned().unwrap_or(Count { count: 0, last: 0 });
                    c.count += one.copied().unwrap_or(0);
                    c.last = time;
                    n.update(c.clone());
                    Some(c.count)
                },
            ))
            .uid("counts")
            .state_schema(2);
        let counts = match migration.clone() {
            Migration::None => counts,
            Migration::Counted(calls) => counts.migrate_state(move |from, old| {
                calls.fetch_add(1, Ordering::SeqCst);
                match from {
                    1 => Ok(Count {
                        count: old.decode::<u64>()?,
                        last: 0,
                    }),
                    _ => Err(format!("no migration from version {from}")),
                }
            }),
            Migration::FailsAt(at, calls) => counts.migrate_state(move |_, old| {
                if calls.fetch_add(1, Ordering::SeqCst) + 1 == at {
                    return Err("boom".to_owned());
                }
                Ok(Count {
                    count: old.decode::<u64>()?,
                    last: 0,
                })
            }),
        };
        out.collect(
            &counts
                .state_snapshots()
                .map(|(_, c)| ((), (c.count, u64::from(c.last > 0))))
                .reduce_by_key(|a, b| (a.0 + b.0, a.1 + b.1)),
        );
    }
}

/// A state schema change with incremental checkpoints, on both backends: version 1 checkpoints
/// a chain (a base and three deltas, in state files); a version-2 program without a hook, or
/// with one that fails, is refused with one sentence; with a hook it migrates base and deltas
/// (every key's count carried over into the new type), counts on, and checkpoints a new base
/// at version 2, which a restart reads without migrating again; a version-1 program is then
/// refused (the checkpoint is newer), unless its state may be dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_schema_change_migrates_a_chain_on_both_backends() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use weir::StreamingConfig;
    use weir::checkpoint::{CheckpointConfig, CheckpointStore, StateData};
    use weir::dstream::{DiskStateOptions, StateBackend};

    const KEYS: u64 = 2_000;
    const CHANGED: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    for backend in [
        StateBackend::Memory,
        StateBackend::Disk(DiskStateOptions::new(dir.path())),
    ] {
        let name = backend.name();
        let config = |allow: bool| {
            let b = backend.clone();
            move |c: &mut StreamingConfig| {
                c.state_backend = b;
                c.state_inline_max_bytes = 0;
                c.allow_unmatched_state = allow;
            }
        };
        let queue = QueueStream::new(true, 2);
        queue.push((0..KEYS).collect());
        for b in 1..=4u64 {
            queue.push((0..CHANGED).map(|i| (i * 97 + b * 1_013) % KEYS).collect());
        }
        let (v1_out, v2_out) = (Collected::default(), Collected::default());
        let mut clock =
            ManualClock::with_config(INTERVAL, 2, config(false), counts_v1(&queue, &v1_out))
                .unwrap();
        let store = CheckpointStore::open(
            weir::Storage::local(dir.path().join(name)),
            CheckpointConfig::default(),
        )
        .await
        .unwrap();
        clock.checkpoint_to(Arc::new(store));
        clock.run(4).await.unwrap();
        assert_eq!(v1_out.batch(4 * INTERVAL), vec![((), KEYS + 3 * CHANGED)]);
        let counts = |clock: &ManualClock| {
            let data = clock.last_checkpoint().unwrap();
            let state = data
                .operator_state
                .iter()
                .find(|s| s.operator_id == "counts");
            let state = state.unwrap();
            match &state.data {
                StateData::Chain(files) => (state.schema_version, files.len()),
                other => panic!("{name}: not a chain: {other:?}"),
            }
        };
        assert_eq!(
            counts(&clock),
            (1, 4),
            "{name}: version 1, a base and 3 deltas"
        );

        // Version 2 without a hook: refused, naming the operator, both versions, the way out.
        let err = clock
            .restart_with_code_and_config(
                config(false),
                counts_v2(&queue, &v2_out, Migration::None),
            )
            .unwrap_err()
            .to_string();
        for part in [
            "\"counts\"",
            "schema version 1",
            "version 2",
            ".migrate_state(..)",
            "allow_non_restored_state",
        ] {
            assert!(err.contains(part), "{name}: {part:?} missing from {err}");
        }
        // A hook that fails: the operator, the keys migrated before, the hook's message.
        let calls = Arc::new(AtomicU64::new(0));
        let err = clock
            .restart_with_code_and_config(
                config(false),
                counts_v2(&queue, &v2_out, Migration::FailsAt(11, calls)),
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"counts\"") && err.contains("after 10 keys") && err.contains("boom"),
            "{name}: {err}"
        );

        // With the hook: base and deltas migrated; the counts go on from them.
        let calls = Arc::new(AtomicU64::new(0));
        let migrated = counts_v2(&queue, &v2_out, Migration::Counted(Arc::clone(&calls)));
        clock
            .restart_with_code_and_config(config(false), migrated)
            .unwrap();
        let report = clock.context().restore_report().join("\n");
        assert!(
            report.contains("migrated from schema version 1 to 2"),
            "{name}: {report}"
        );
        // Every key of the base, and every key of each of the 3 deltas.
        assert_eq!(calls.load(Ordering::SeqCst), KEYS + 3 * CHANGED, "{name}");
        clock.run(1).await.unwrap();
        assert_eq!(
            v2_out.batch(5 * INTERVAL),
            vec![((), (KEYS + 4 * CHANGED, CHANGED))],
            "{name}: counts carried over, and the keys of the new batch counted"
        );
        // The next checkpoint is a new base, at version 2 (the old files hold version 1).
        assert_eq!(counts(&clock), (2, 1), "{name}");
        let before = calls.load(Ordering::SeqCst);
        clock
            .restart_with_code_and_config(
                config(false),
                counts_v2(&queue, &v2_out, Migration::Counted(Arc::clone(&calls))),
            )
            .unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            before,
            "{name}: no second migration"
        );

        // Version 1 again: the checkpoint's state is newer; refused, or dropped if allowed.
        let err = clock
            .restart_with_code_and_config(config(false), counts_v1(&queue, &v1_out))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"counts\"")
                && err.contains("schema version 2")
                && err.contains("newer than this program's version 1"),
            "{name}: {err}"
        );
        clock
            .restart_with_code_and_config(config(true), counts_v1(&queue, &v1_out))
            .unwrap();
        let report = clock.context().restore_report().join("\n");
        assert!(
            report.contains("dropped the state of operator \"counts\""),
            "{name}: {report}"
        );
    }
}
