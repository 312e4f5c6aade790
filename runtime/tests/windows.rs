//! Window operators against expected outputs for fixed inputs.
//!
//! The scenarios and their expected outputs are those of Spark's `WindowOperationsSuite`
//! (facts about DStream semantics: batch interval 1 s, window 2 s and slide 1 s unless said
//! otherwise, a window's batch only at its slide); the tests are ours. Each input `Vec` is one
//! batch; the clock runs `expected.len() × slide / interval` batches (missing input batches
//! are empty); outputs are compared per window, sorted.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir::dstream::{DStream, Data, QueueStream};
use weir::testing::{Collected, ManualClock};
use weir::{Error, Storage, StreamingConfig, StreamingContext};

const INTERVAL: u64 = 1000;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// How a run is interrupted.
#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// A driver restart after this many batches.
    RestartAfter(usize),
    /// A crash in the middle of the batch after this many batches (re-run after restart).
    CrashAfter(usize),
}

/// Runs `op` over a queue stream holding `input` (2 partitions, 2-way parallelism) for
/// `batches` batches, interrupted by `fault`; returns every output batch, sorted.
async fn run<T: Data, U: Data + Ord>(
    input: Vec<Vec<T>>,
    batches: usize,
    fault: Fault,
    op: impl Fn(&DStream<T>) -> DStream<U> + Send + Sync + 'static,
) -> Vec<Vec<U>> {
    let queue = QueueStream::new(true, 2);
    for batch in input {
        queue.push(batch);
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock = ManualClock::new(INTERVAL, 2, move |ctx| {
        o.collect(&op(&ctx.queue_stream(&q).uid("input")).uid("window"))
    })
    .unwrap();
    match fault {
        Fault::None => clock.run(batches).await.unwrap(),
        Fault::RestartAfter(k) => {
            clock.run(k).await.unwrap();
            clock.restart().unwrap();
            clock.run(batches - k).await.unwrap();
        }
        Fault::CrashAfter(k) => {
            clock.run(k).await.unwrap();
            clock.crash_mid_batch().unwrap();
            clock.run(batches - k).await.unwrap();
        }
    }
    out.all_sorted()
}

fn batches_for(expected: usize, slide: u64) -> usize {
    expected * (slide * 1000 / INTERVAL) as usize
}

fn pairs(batches: &[&[(&str, i64)]]) -> Vec<Vec<(String, i64)>> {
    batches
        .iter()
        .map(|b| b.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
        .collect()
}

fn ints(batches: &[&[i64]]) -> Vec<Vec<i64>> {
    batches.iter().map(|b| b.to_vec()).collect()
}

// ------------------------------------ window ------------------------------------ //

async fn check_window(input: &[&[i64]], expected: &[&[i64]], len: u64, slide: u64) {
    let out = run(
        ints(input),
        batches_for(expected.len(), slide),
        Fault::None,
        move |s| s.window(secs(len), secs(slide)),
    )
    .await;
    assert_eq!(out, ints(expected), "window({len} s, {slide} s)");
}

const SIX: &[&[i64]] = &[&[0], &[1], &[2], &[3], &[4], &[5]];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_basic() {
    check_window(
        SIX,
        &[&[0], &[0, 1], &[1, 2], &[2, 3], &[3, 4], &[4, 5]],
        2,
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_tumbling() {
    check_window(SIX, &[&[0, 1], &[2, 3], &[4, 5]], 2, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_larger_than_slide() {
    check_window(SIX, &[&[0, 1], &[0, 1, 2, 3], &[2, 3, 4, 5], &[4, 5]], 4, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_non_overlapping() {
    check_window(SIX, &[&[1, 2], &[4, 5]], 2, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_outputs_only_at_its_slide() {
    let queue = QueueStream::new(true, 1);
    for x in 0..6 {
        queue.push(vec![x]);
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock = ManualClock::new(INTERVAL, 1, move |ctx| {
        o.collect(&ctx.queue_stream(&q).window(secs(4), secs(2)))
    })
    .unwrap();
    clock.run(6).await.unwrap();
    let times: Vec<u64> = out.batches().keys().copied().collect();
    assert_eq!(times, vec![2000, 4000, 6000]);
    assert_eq!(out.sorted(4000), vec![0, 1, 2, 3]);
}

// ------------------------------ reduce_by_key_and_window ------------------------------ //

const LARGER_SLIDE_INPUT: &[&[(&str, i64)]] = &[
    &[("a", 1)],
    &[("a", 2)],
    &[("a", 3)],
    &[("a", 4)],
    &[("a", 5)],
    &[("a", 6)],
    &[],
    &[],
];
const LARGER_SLIDE_OUTPUT: &[&[(&str, i64)]] =
    &[&[("a", 3)], &[("a", 10)], &[("a", 18)], &[("a", 11)]];

const BIG_INPUT: &[&[(&str, i64)]] = &[
    &[("a", 1)],
    &[("a", 1), ("b", 1)],
    &[("a", 1), ("b", 1), ("c", 1)],
    &[("a", 1), ("b", 1)],
    &[("a", 1)],
    &[],
    &[("a", 1)],
    &[("a", 1), ("b", 1)],
    &[("a", 1), ("b", 1), ("c", 1)],
    &[("a", 1), ("b", 1)],
    &[("a", 1)],
    &[],
];

const BIG_REDUCE_OUTPUT: &[&[(&str, i64)]] = &[
    &[("a", 1)],
    &[("a", 2), ("b", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 1)],
    &[("a", 1)],
    &[("a", 1)],
    &[("a", 2), ("b", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 1)],
    &[("a", 1)],
];

/// Without a filter, keys whose window value fell to 0 stay.
const BIG_REDUCE_INV_OUTPUT: &[&[(&str, i64)]] = &[
    &[("a", 1)],
    &[("a", 2), ("b", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 1), ("c", 0)],
    &[("a", 1), ("b", 0), ("c", 0)],
    &[("a", 1), ("b", 0), ("c", 0)],
    &[("a", 2), ("b", 1), ("c", 0)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 2), ("c", 1)],
    &[("a", 2), ("b", 1), ("c", 0)],
    &[("a", 1), ("b", 0), ("c", 0)],
];

#[derive(Clone, Copy, Debug)]
enum Reduce {
    Naive,
    Inverse,
    Filtered,
}

fn reduce_op(
    how: Reduce,
    len: u64,
    slide: u64,
) -> impl Fn(&DStream<(String, i64)>) -> DStream<(String, i64)> + Send + Sync + 'static {
    move |s| match how {
        Reduce::Naive => s.reduce_by_key_and_window(|a, b| a + b, secs(len), secs(slide)),
        Reduce::Inverse => {
            s.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, secs(len), secs(slide))
        }
        Reduce::Filtered => s.reduce_by_key_and_window_inv_filtered(
            |a, b| a + b,
            |a, b| a - b,
            secs(len),
            secs(slide),
            |_, v| *v != 0,
        ),
    }
}

async fn check_reduce(
    how: Reduce,
    input: &[&[(&str, i64)]],
    expected: &[&[(&str, i64)]],
    len: u64,
    slide: u64,
) {
    let out = run(
        pairs(input),
        batches_for(expected.len(), slide),
        Fault::None,
        reduce_op(how, len, slide),
    )
    .await;
    assert_eq!(out, pairs(expected), "{how:?} ({len} s, {slide} s)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_by_key_and_window_small_cases() {
    for how in [Reduce::Naive, Reduce::Inverse] {
        // basic reduction
        check_reduce(how, &[&[("a", 1), ("a", 3)]], &[&[("a", 4)]], 2, 1).await;
        // key already in window and new value added into window
        check_reduce(
            how,
            &[&[("a", 1)], &[("a", 1)]],
            &[&[("a", 1)], &[("a", 2)]],
            2,
            1,
        )
        .await;
        // new key added into window
        check_reduce(
            how,
            &[&[("a", 1)], &[("a", 1), ("b", 1)]],
            &[&[("a", 1)], &[("a", 2), ("b", 1)]],
            2,
            1,
        )
        .await;
        // larger slide time
        check_reduce(how, LARGER_SLIDE_INPUT, LARGER_SLIDE_OUTPUT, 4, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_by_key_and_window_key_removed_from_window() {
    let input: &[&[(&str, i64)]] = &[&[("a", 1)], &[("a", 1)], &[], &[]];
    check_reduce(
        Reduce::Naive,
        input,
        &[&[("a", 1)], &[("a", 2)], &[("a", 1)], &[]],
        2,
        1,
    )
    .await;
    // With an inverse (and no filter) the key stays, at 0.
    check_reduce(
        Reduce::Inverse,
        input,
        &[&[("a", 1)], &[("a", 2)], &[("a", 1)], &[("a", 0)]],
        2,
        1,
    )
    .await;
    check_reduce(
        Reduce::Filtered,
        input,
        &[&[("a", 1)], &[("a", 2)], &[("a", 1)], &[]],
        2,
        1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_by_key_and_window_big() {
    check_reduce(Reduce::Naive, BIG_INPUT, BIG_REDUCE_OUTPUT, 2, 1).await;
    check_reduce(Reduce::Inverse, BIG_INPUT, BIG_REDUCE_INV_OUTPUT, 2, 1).await;
    // The filter drops the keys at 0: the same as without an inverse.
    check_reduce(Reduce::Filtered, BIG_INPUT, BIG_REDUCE_OUTPUT, 2, 1).await;
}

/// A fixed pseudo-random input: keys a–e, values 1–9, some batches empty.
fn scrambled(batches: usize) -> Vec<Vec<(String, i64)>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..batches)
        .map(|_| {
            let n = (next() % 6) as usize;
            (0..n)
                .map(|_| {
                    let key = ["a", "b", "c", "d", "e"][(next() % 5) as usize].to_owned();
                    (key, (next() % 9 + 1) as i64)
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inverse_and_naive_agree_for_every_shape() {
    let input = scrambled(24);
    for (len, slide) in [(2, 1), (3, 1), (4, 2), (6, 3), (3, 3), (2, 3)] {
        let naive = run(
            input.clone(),
            24,
            Fault::None,
            reduce_op(Reduce::Naive, len, slide),
        )
        .await;
        let filtered = run(
            input.clone(),
            24,
            Fault::None,
            reduce_op(Reduce::Filtered, len, slide),
        )
        .await;
        assert_eq!(filtered, naive, "window {len} s, slide {slide} s");
        assert_eq!(naive.len(), 24 / slide as usize);
        // Against a direct computation from the input.
        for (i, window) in naive.iter().enumerate() {
            let end = (i + 1) * slide as usize; // batches 1..=end, window of the last `len`
            let start = end.saturating_sub(len as usize);
            let mut sums = std::collections::BTreeMap::<String, i64>::new();
            for batch in &input[start..end] {
                for (k, v) in batch {
                    *sums.entry(k.clone()).or_default() += v;
                }
            }
            let direct: Vec<(String, i64)> = sums.into_iter().collect();
            assert_eq!(window, &direct, "window {len} s, slide {slide} s, #{i}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_key_and_window() {
    let out = run(pairs(BIG_INPUT), 12, Fault::None, |s| {
        s.group_by_key_and_window(secs(2), secs(1)).map(|(k, vs)| {
            let mut vs = vs.clone();
            vs.sort();
            (k.clone(), vs)
        })
    })
    .await;
    let expected: Vec<Vec<(String, Vec<i64>)>> = BIG_REDUCE_OUTPUT
        .iter()
        .map(|w| {
            w.iter()
                .map(|(k, n)| ((*k).to_owned(), vec![1; *n as usize]))
                .collect()
        })
        .collect();
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_by_window() {
    let input = ints(&[&[1], &[1], &[1, 2], &[0], &[], &[]]);
    let out = run(input, 6, Fault::None, |s| {
        s.count_by_window(secs(2), secs(1))
    })
    .await;
    assert_eq!(
        out,
        vec![vec![1], vec![2], vec![3], vec![3], vec![1], vec![0]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_by_value_and_window() {
    let input: Vec<Vec<String>> = [vec!["a"], vec!["b", "b"], vec!["a", "b"]]
        .iter()
        .map(|b| b.iter().map(|s| (*s).to_owned()).collect())
        .collect();
    let out = run(input, 3, Fault::None, |s| {
        s.count_by_value_and_window(secs(2), secs(1))
    })
    .await;
    let expected = pairs(&[&[("a", 1)], &[("a", 1), ("b", 2)], &[("a", 1), ("b", 3)]]);
    let expected: Vec<Vec<(String, u64)>> = expected
        .into_iter()
        .map(|w| w.into_iter().map(|(k, n)| (k, n as u64)).collect())
        .collect();
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_by_window_with_and_without_inverse() {
    let input = ints(&[&[1, 2], &[3], &[], &[4, 5, 6], &[], &[]]);
    let naive = run(input.clone(), 6, Fault::None, |s| {
        s.reduce_by_window(|a, b| a + b, secs(2), secs(1))
    })
    .await;
    assert_eq!(
        naive,
        vec![vec![3], vec![6], vec![3], vec![15], vec![15], vec![]]
    );
    let inverse = run(input, 6, Fault::None, |s| {
        s.reduce_by_window_inv(|a, b| a + b, |a, b| a - b, secs(2), secs(1))
    })
    .await;
    // The incremental form keeps a value once it had one: 0 for the empty window.
    assert_eq!(
        inverse,
        vec![vec![3], vec![6], vec![3], vec![15], vec![15], vec![0]]
    );
}

// ------------------------------------ restarts ------------------------------------ //

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_continue_exactly_after_a_restart_mid_window() {
    let input = scrambled(16);
    for (len, slide) in [(3, 1), (4, 2), (6, 3)] {
        for how in [Reduce::Naive, Reduce::Inverse, Reduce::Filtered] {
            let whole = run(input.clone(), 16, Fault::None, reduce_op(how, len, slide)).await;
            for k in [1, 2, 5, 7] {
                for fault in [Fault::RestartAfter(k), Fault::CrashAfter(k)] {
                    let interrupted =
                        run(input.clone(), 16, fault, reduce_op(how, len, slide)).await;
                    assert_eq!(
                        interrupted, whole,
                        "{how:?}, window {len} s, slide {slide} s, {fault:?}"
                    );
                }
            }
        }
        let whole = run(input.clone(), 16, Fault::None, move |s| {
            s.window(secs(len), secs(slide))
        })
        .await;
        for fault in [Fault::RestartAfter(5), Fault::CrashAfter(5)] {
            let interrupted = run(input.clone(), 16, fault, move |s| {
                s.window(secs(len), secs(slide))
            })
            .await;
            assert_eq!(
                interrupted, whole,
                "window {len} s, slide {slide} s, {fault:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_window_does_not_need_the_old_input() {
    // After the restart the queue no longer holds the batches before it (they were
    // committed), so the windows can only be right if the operator restored them.
    let queue = QueueStream::new(true, 1);
    for x in 1..=6 {
        queue.push(vec![x]);
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock = ManualClock::new(INTERVAL, 1, move |ctx| {
        let s = ctx.queue_stream(&q).uid("input");
        o.collect(&s.window(secs(3), secs(1)).uid("window"));
    })
    .unwrap();
    clock.run(3).await.unwrap();
    assert_eq!(queue.pending(), 3, "the first three batches are committed");
    clock.restart().unwrap();
    clock.run(3).await.unwrap();
    assert_eq!(out.sorted(4000), vec![2, 3, 4]);
    assert_eq!(out.sorted(5000), vec![3, 4, 5]);
    assert_eq!(out.sorted(6000), vec![4, 5, 6]);
}

/// Runs `op` for 12 batches, restarting after `restart_after` with new code that declares
/// more operators before the window (so every auto-generated id after them changes); only
/// the id set on the composite operator's result carries its state over.
async fn run_across_code_change<U: Data + Ord>(
    restart_after: Option<usize>,
    op: impl Fn(&DStream<(String, i64)>) -> DStream<U> + Send + Sync + 'static,
) -> Vec<Vec<U>> {
    let queue = QueueStream::new(true, 2);
    for batch in scrambled(12) {
        queue.push(batch);
    }
    let out = Collected::default();
    let op = Arc::new(op);
    let build = |extra: bool| {
        let (q, o, op) = (queue.clone(), out.clone(), Arc::clone(&op));
        move |ctx: &StreamingContext| {
            let input = ctx.queue_stream(&q).uid("input");
            if extra {
                let _ = input.map(|kv| kv.clone()).filter(|_| true);
            }
            o.collect(&op(&input).uid("windowed"));
        }
    };
    let mut clock = ManualClock::new(INTERVAL, 2, build(false)).unwrap();
    match restart_after {
        None => clock.run(12).await.unwrap(),
        Some(k) => {
            clock.run(k).await.unwrap();
            clock.restart_with(build(true)).unwrap();
            assert!(
                clock.context().restore_report().is_empty(),
                "{:?}",
                clock.context().restore_report()
            );
            clock.run(12 - k).await.unwrap();
        }
    }
    out.all_sorted()
}

fn grouped_sum(s: &DStream<(String, Vec<i64>)>) -> DStream<(String, i64)> {
    s.map_values(|vs| vs.iter().sum::<i64>())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_windows_keep_their_state_under_their_id_across_code_changes() {
    let naive =
        |s: &DStream<(String, i64)>| s.reduce_by_key_and_window(|a, b| a + b, secs(3), secs(1));
    assert_eq!(
        run_across_code_change(Some(5), naive).await,
        run_across_code_change(None, naive).await
    );
    // A stateless operator after the window: the window operator itself needs the id.
    let grouped = move |s: &DStream<(String, i64)>| {
        let window = s.group_by_key_and_window(secs(3), secs(1)).uid("grouped");
        grouped_sum(&window)
    };
    assert_eq!(
        run_across_code_change(Some(5), grouped).await,
        run_across_code_change(None, grouped).await
    );
    let summed = |s: &DStream<(String, i64)>| {
        s.map(|(_, v)| *v)
            .reduce_by_window(|a, b| a + b, secs(3), secs(1))
    };
    assert_eq!(
        run_across_code_change(Some(5), summed).await,
        run_across_code_change(None, summed).await
    );
    let counted = |s: &DStream<(String, i64)>| s.count_by_window(secs(3), secs(1));
    assert_eq!(
        run_across_code_change(Some(5), counted).await,
        run_across_code_change(None, counted).await
    );
}

// --------------------------------- bounded memory --------------------------------- //

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_batches_a_window_needs_are_remembered() {
    type Handles = Arc<Mutex<Vec<(&'static str, DStream<(String, i64)>)>>>;
    let queue = QueueStream::new(true, 2);
    for batch in scrambled(30) {
        queue.push(batch);
    }
    let handles: Handles = Arc::default();
    let (q, h) = (queue.clone(), Arc::clone(&handles));
    let mut clock = ManualClock::new(INTERVAL, 2, move |ctx| {
        let input = ctx.queue_stream(&q);
        let plain = input.window(secs(3), secs(1));
        let inverse =
            input.reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, secs(4), secs(2));
        plain.count().foreach_batch(|_| Ok(()));
        inverse.foreach_batch(|_| Ok(()));
        *h.lock().unwrap() = vec![("input", input), ("window", plain), ("inverse", inverse)];
    })
    .unwrap();
    for _ in 0..30 {
        clock.run(1).await.unwrap();
        let t = clock.next_batch_time() - INTERVAL;
        for (name, stream) in handles.lock().unwrap().iter() {
            let kept = stream.remembered_batches();
            match *name {
                // Nothing of a completed batch stays in the memo.
                "input" => assert!(kept.is_empty(), "{name} after {t}: {kept:?}"),
                // The next window (t − 2 s, t + 1 s] needs batches t − 1 s and t.
                "window" => {
                    let want: Vec<u64> = [t.checked_sub(1000), Some(t)]
                        .into_iter()
                        .flatten()
                        .filter(|&s| s > 0)
                        .collect();
                    assert_eq!(kept, want, "{name} after {t}");
                }
                // The incremental window also needs the batches that leave the next window:
                // (t + 1 s − 6 s, ...], so at most 5 batches.
                _ => {
                    assert!(kept.len() <= 5, "{name} after {t}: {kept:?}");
                    assert!(
                        kept.iter().all(|&s| s + 5000 > t),
                        "{name} after {t}: {kept:?}"
                    );
                    if t >= 5000 {
                        assert_eq!(kept.len(), 5, "{name} after {t}: {kept:?}");
                    }
                }
            }
        }
    }
}

// ----------------------------------- validation ----------------------------------- //

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durations_that_are_not_multiples_of_the_interval_fail_the_start() {
    let cases: Vec<(Duration, Duration, &str)> = vec![
        (Duration::from_millis(2500), secs(1), "length"),
        (secs(2), Duration::from_millis(1500), "slide"),
        (Duration::ZERO, secs(1), "length"),
        (secs(2), Duration::ZERO, "slide"),
    ];
    for (len, slide, what) in cases {
        let config = StreamingConfig::new(Storage::memory()).batch_interval(secs(1));
        let mut ctx = StreamingContext::new(config);
        let queue = QueueStream::<(String, i64)>::new(true, 1);
        ctx.queue_stream(&queue)
            .reduce_by_key_and_window_inv(|a, b| a + b, |a, b| a - b, len, slide)
            .print(1);
        match ctx.start().await {
            Err(Error::InvalidGraph(why)) => {
                assert!(why.contains(what), "{why}");
                assert!(why.contains("1000 ms"), "{why}");
                assert!(why.contains("reduce_by_key_and_window"), "{why}");
            }
            other => panic!("{len:?}/{slide:?}: expected an invalid graph, got {other:?}"),
        }
    }
    // Run anyway (the manual clock does not validate): the batch fails with the reason.
    let queue = QueueStream::<i64>::new(true, 1);
    queue.push(vec![1]);
    let q = queue.clone();
    let mut clock = ManualClock::new(INTERVAL, 1, move |ctx| {
        ctx.queue_stream(&q)
            .window(Duration::from_millis(1500), secs(1))
            .print(1);
    })
    .unwrap();
    let err = clock.run(1).await.unwrap_err().to_string();
    assert!(err.contains("window length"), "{err}");
}

// --------------------------------- the real engine --------------------------------- //

mod engine {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use weir::{StreamingConfig, StreamingContext};
    use weir_actors::Event;
    use weir_actors::EventSubscription;
    use weir_actors::pipeline::Receiver;
    use weir_actors::testing::NumberedReceiver;

    async fn next_matching(events: &mut EventSubscription, what: &str, f: impl Fn(&Event) -> bool) {
        events
            .next_matching(Duration::from_secs(60), f)
            .await
            .unwrap_or_else(|| panic!("timed out waiting for {what}"));
    }

    async fn completed_with_records(events: &mut EventSubscription, count: usize) {
        for _ in 0..count {
            next_matching(
                events,
                "a completed batch",
                |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
            )
            .await;
        }
    }

    type PerBatch<T> = Arc<Mutex<BTreeMap<u64, T>>>;

    /// Records the first output of each batch; a re-run must produce the same.
    fn first_wins<T: PartialEq>(map: &PerBatch<T>, conflicts: &Mutex<Vec<u64>>, t: u64, v: T) {
        let mut map = map.lock().unwrap();
        match map.get(&t) {
            Some(existing) if *existing != v => conflicts.lock().unwrap().push(t),
            Some(_) => {}
            None => {
                map.insert(t, v);
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn incremental_windows_stay_exact_while_the_driver_is_killed() {
        const LEN: u64 = 400;
        const SLIDE: u64 = 200;
        let dir = tempfile::tempdir().unwrap();
        let mut config =
            StreamingConfig::local(dir.path()).batch_interval(Duration::from_millis(100));
        config.engine.name_prefix = "rt-windows/".to_owned();
        config.engine.block_interval = Duration::from_millis(20);
        config.engine.receiver_restart_delay = Duration::from_millis(50);
        config.engine.driver_policy.intensity.max_restarts = 20;
        config.parallelism = 2;
        let names = config.engine.names();

        let generator = NumberedReceiver::new(10, Duration::from_millis(5));
        let committed: PerBatch<Vec<u64>> = Arc::default();
        let windows: PerBatch<BTreeMap<u64, i64>> = Arc::default();
        let conflicts: Arc<Mutex<Vec<u64>>> = Arc::default();
        let mut ctx = StreamingContext::new(config);
        let numbers = {
            let g = generator.clone();
            ctx.receiver_stream_decoded(
                move || Box::new(g.clone()) as Box<dyn Receiver>,
                |record| Ok(u64::from_le_bytes(record.as_ref().try_into()?)),
            )
            .uid("numbers")
        };
        let (c, x) = (Arc::clone(&committed), Arc::clone(&conflicts));
        numbers.foreach_batch(move |batch| {
            let mut ids: Vec<u64> = batch.iter().copied().collect();
            ids.sort_unstable();
            first_wins(&c, &x, batch.time_ms, ids);
            Ok(())
        });
        let (w, x) = (Arc::clone(&windows), Arc::clone(&conflicts));
        numbers
            .map(|n| (n % 3, 1i64))
            .reduce_by_key_and_window_inv_filtered(
                |a, b| a + b,
                |a, b| a - b,
                Duration::from_millis(LEN),
                Duration::from_millis(SLIDE),
                |_, n| *n != 0,
            )
            .uid("windowed")
            .foreach_batch(move |batch| {
                first_wins(&w, &x, batch.time_ms, batch.iter().copied().collect());
                Ok(())
            });
        ctx.start().await.unwrap();
        let mut events = ctx.events().unwrap();
        completed_with_records(&mut events, 5).await;
        for _ in 0..2 {
            next_matching(&mut events, "a batch start", |e| {
                matches!(e, Event::BatchStarted { .. })
            })
            .await;
            let victim = names.driver();
            ractor::registry::where_is(victim.clone())
                .unwrap_or_else(|| panic!("{victim} is not running"))
                .kill();
            next_matching(
                &mut events,
                "the kill's failure event",
                move |e| matches!(e, Event::ActorFailed { actor, .. } if *actor == victim),
            )
            .await;
            completed_with_records(&mut events, 5).await;
        }
        ctx.stop(true).await.unwrap();

        assert!(
            conflicts.lock().unwrap().is_empty(),
            "a re-run batch differed"
        );
        let committed = committed.lock().unwrap();
        let windows = windows.lock().unwrap();
        assert!(windows.len() >= 5, "too few windows: {}", windows.len());
        let first = *windows.keys().next().unwrap();
        let mut nonempty = 0;
        for (&t, counts) in windows.iter() {
            assert_eq!((t - first) % SLIDE, 0, "window at {t} is off the slide");
            let mut expected = BTreeMap::new();
            for ids in committed
                .range(t.saturating_sub(LEN) + 1..=t)
                .map(|(_, ids)| ids)
            {
                for id in ids {
                    *expected.entry(id % 3).or_insert(0i64) += 1;
                }
            }
            assert_eq!(*counts, expected, "window ending at {t}");
            nonempty += usize::from(!counts.is_empty());
        }
        assert!(nonempty >= 5, "too few non-empty windows: {nonempty}");
    }
}

/// A window's state takes a schema version too (set on the composite operator, it reaches the
/// inner window), but no migration: state of another version is refused naming the window, or
/// dropped when allowed; a migration hook given to a window's stream refuses the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windows_state_schema_change_is_refused_or_dropped() {
    let queue = QueueStream::new(true, 2);
    for batch in scrambled(4) {
        queue.push(batch);
    }
    let out: Collected<(String, i64)> = Collected::default();
    let build = |version: u32| {
        let (q, o) = (queue.clone(), out.clone());
        move |ctx: &StreamingContext| {
            let windowed = ctx
                .queue_stream(&q)
                .uid("input")
                .reduce_by_key_and_window(|a, b| a + b, secs(3), secs(1))
                .uid("windowed")
                .state_schema(version);
            o.collect(&windowed);
        }
    };
    let mut clock = ManualClock::new(INTERVAL, 2, build(1)).unwrap();
    clock.run(3).await.unwrap();
    let err = clock.restart_with(build(2)).unwrap_err().to_string();
    assert!(
        err.contains("operator \"windowed/window\" has state of schema version 1")
            && err.contains("declares version 2"),
        "{err}"
    );
    clock
        .restart_with_code_and_config(|c| c.allow_unmatched_state = true, build(2))
        .unwrap();
    let report = clock.context().restore_report().join("\n");
    assert!(
        report.contains("dropped the state of operator \"windowed/window\""),
        "{report}"
    );

    let mut ctx = StreamingContext::new(
        StreamingConfig::new(Storage::memory()).batch_interval(Duration::from_millis(INTERVAL)),
    );
    ctx.queue_stream(&queue)
        .reduce_by_key_and_window(|a, b| a + b, secs(3), secs(1))
        .uid("w")
        .migrate_state(|_, old| old.decode::<i64>())
        .foreach_batch(|_| Ok(()));
    let err = ctx.start().await.unwrap_err();
    assert!(
        matches!(&err, Error::InvalidGraph(m) if m.contains("migrate_state") && m.contains("\"w\"")),
        "{err}"
    );
}
