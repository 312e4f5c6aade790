//! Stateless and stateful operators against expected outputs for fixed inputs.
//!
//! The scenarios are those of Spark's `BasicOperationsSuite` (their inputs and expected
//! outputs are facts about DStream semantics); the tests are ours. Each input `Vec` is one
//! batch; batches run on a manual clock; outputs are compared per batch, sorted (partitioning
//! decides the order within a batch).

#![allow(clippy::unwrap_used, reason = "tests")]

use weir::dstream::{DStream, Data, QueueStream};
use weir::testing::{Collected, ManualClock};

/// Runs `op` over one queue stream holding `input` (one `Vec` per batch) on 2 partitions,
/// returning each batch's sorted output.
async fn run1<T: Data, U: Data + Ord>(
    input: Vec<Vec<T>>,
    op: impl Fn(&DStream<T>) -> DStream<U> + Send + Sync + 'static,
) -> Vec<Vec<U>> {
    let batches = input.len();
    let queue = QueueStream::new(true, 2);
    for batch in input {
        queue.push(batch);
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock =
        ManualClock::new(1000, 2, move |ctx| o.collect(&op(&ctx.queue_stream(&q)))).unwrap();
    clock.run(batches).await.unwrap();
    out.all_sorted()
}

/// Like [`run1`] with two input streams.
async fn run2<T: Data, W: Data, U: Data + Ord>(
    left: Vec<Vec<T>>,
    right: Vec<Vec<W>>,
    op: impl Fn(&DStream<T>, &DStream<W>) -> DStream<U> + Send + Sync + 'static,
) -> Vec<Vec<U>> {
    let batches = left.len().max(right.len());
    let (ql, qr) = (QueueStream::new(true, 2), QueueStream::new(true, 2));
    for batch in left {
        ql.push(batch);
    }
    for batch in right {
        qr.push(batch);
    }
    let out = Collected::default();
    let o = out.clone();
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        o.collect(&op(&ctx.queue_stream(&ql), &ctx.queue_stream(&qr)))
    })
    .unwrap();
    clock.run(batches).await.unwrap();
    out.all_sorted()
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn strs(batches: &[&[&str]]) -> Vec<Vec<String>> {
    batches
        .iter()
        .map(|b| b.iter().map(|x| s(x)).collect())
        .collect()
}

fn ranges() -> Vec<Vec<i64>> {
    vec![(1..=4).collect(), (5..=8).collect(), (9..=12).collect()]
}

fn sorted<T: Ord>(mut batches: Vec<Vec<T>>) -> Vec<Vec<T>> {
    for b in &mut batches {
        b.sort();
    }
    batches
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map() {
    let out = run1(ranges(), |d| d.map(|x| x.to_string())).await;
    let expected = sorted(
        ranges()
            .iter()
            .map(|b| b.iter().map(|x| x.to_string()).collect())
            .collect(),
    );
    assert_eq!(out, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flat_map() {
    let out = run1(ranges(), |d| d.flat_map(|x| [*x, x * 2])).await;
    let expected: Vec<Vec<i64>> = ranges()
        .iter()
        .map(|b| b.iter().flat_map(|x| [*x, x * 2]).collect())
        .collect();
    assert_eq!(out, sorted(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter() {
    let out = run1(ranges(), |d| d.filter(|x| x % 2 == 0)).await;
    assert_eq!(out, vec![vec![2, 4], vec![6, 8], vec![10, 12]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glom_sees_the_partitions() {
    let out = run1(ranges(), |d| d.glom()).await;
    assert_eq!(
        out,
        vec![
            vec![vec![1, 2], vec![3, 4]],
            vec![vec![5, 6], vec![7, 8]],
            vec![vec![9, 10], vec![11, 12]],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_partitions() {
    let out = run1(ranges(), |d| {
        d.map_partitions(|p| Ok(vec![p.iter().sum::<i64>()]))
    })
    .await;
    assert_eq!(out, vec![vec![3, 7], vec![11, 15], vec![19, 23]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repartition_keeps_every_element_and_spreads_them() {
    let input: Vec<Vec<i64>> = vec![(1..=10).collect(), (11..=20).collect()];
    let out = run1(input.clone(), |d| d.repartition(5).glom()).await;
    for (batch, parts) in out.iter().enumerate() {
        assert_eq!(parts.len(), 5);
        assert!(parts.iter().all(|p| p.len() == 2), "{parts:?}");
        let mut all: Vec<i64> = parts.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, input[batch]);
    }
    let fewer = run1(input.clone(), |d| d.repartition(1).glom()).await;
    assert_eq!(
        fewer.iter().map(|b| b.len()).collect::<Vec<_>>(),
        vec![1, 1]
    );
}

fn words() -> Vec<Vec<String>> {
    strs(&[&["a", "a", "b"], &["", ""], &[]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_by_key() {
    let out = run1(words(), |d| d.map(|w| (w.clone(), 1)).group_by_key()).await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), vec![1, 1]), (s("b"), vec![1])],
            vec![(s(""), vec![1, 1])],
            vec![],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce_by_key() {
    let out = run1(words(), |d| {
        d.map(|w| (w.clone(), 1)).reduce_by_key(|a, b| a + b)
    })
    .await;
    assert_eq!(
        out,
        vec![vec![(s("a"), 2), (s("b"), 1)], vec![(s(""), 2)], vec![]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduce() {
    let out = run1(ranges(), |d| d.reduce(|a, b| a + b)).await;
    assert_eq!(out, vec![vec![10], vec![26], vec![42]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count() {
    let input: Vec<Vec<i64>> = vec![vec![], vec![1], vec![1, 2], vec![1, 2, 3], vec![1, 2, 3, 4]];
    let out = run1(input, |d| d.count()).await;
    assert_eq!(out, vec![vec![0], vec![1], vec![2], vec![3], vec![4]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_by_value() {
    let input = vec![vec![1], vec![1, 1, 1], vec![1, 2], vec![1, 1, 2, 2]];
    let out = run1(input, |d| d.count_by_value()).await;
    assert_eq!(
        out,
        vec![
            vec![(1, 1)],
            vec![(1, 3)],
            vec![(1, 1), (2, 1)],
            vec![(1, 2), (2, 2)],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_values_and_flat_map_values() {
    let out = run1(words(), |d| {
        d.map(|w| (w.clone(), 1))
            .reduce_by_key(|a, b| a + b)
            .map_values(|x| x + 10)
    })
    .await;
    assert_eq!(
        out,
        vec![vec![(s("a"), 12), (s("b"), 11)], vec![(s(""), 12)], vec![]]
    );
    let out = run1(words(), |d| {
        d.map(|w| (w.clone(), 1))
            .reduce_by_key(|a, b| a + b)
            .flat_map_values(|x| [*x, x + 10])
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), 2), (s("a"), 12), (s("b"), 1), (s("b"), 11)],
            vec![(s(""), 2), (s(""), 12)],
            vec![],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn union() {
    let input: Vec<Vec<i64>> = vec![
        (1..=4).collect(),
        (101..=104).collect(),
        (201..=204).collect(),
    ];
    let out = run1(input.clone(), |d| d.union(d)).await;
    let expected: Vec<Vec<i64>> = input
        .iter()
        .map(|b| b.iter().chain(b).copied().collect())
        .collect();
    assert_eq!(out, sorted(expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform() {
    let out = run1(ranges(), |d| {
        d.transform(|time, parts| {
            Ok(parts
                .iter()
                .flat_map(|p| p.iter())
                .map(|x| x * 10 + (time / 1000) as i64)
                .collect())
        })
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![11, 21, 31, 41],
            vec![52, 62, 72, 82],
            vec![93, 103, 113, 123]
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cogroup() {
    let left = strs(&[&["a", "a", "b"], &["a", ""], &[""], &[]]);
    let right = strs(&[&["a", "a", "b"], &["b", ""], &[], &[]]);
    let out = run2(left, right, |l, r| {
        l.map(|w| (w.clone(), 1))
            .cogroup(&r.map(|w| (w.clone(), s("x"))))
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![
                (s("a"), (vec![1, 1], vec![s("x"), s("x")])),
                (s("b"), (vec![1], vec![s("x")])),
            ],
            vec![
                (s(""), (vec![1], vec![s("x")])),
                (s("a"), (vec![1], vec![])),
                (s("b"), (vec![], vec![s("x")])),
            ],
            vec![(s(""), (vec![1], vec![]))],
            vec![],
        ]
    );
}

fn join_inputs() -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    (
        strs(&[&["a", "b"], &["a", ""], &[""], &[]]),
        strs(&[&["a", "b"], &["b", ""], &[], &[""]]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join() {
    let (left, right) = join_inputs();
    let out = run2(left, right, |l, r| {
        l.map(|w| (w.clone(), 1))
            .join(&r.map(|w| (w.clone(), s("x"))))
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), (1, s("x"))), (s("b"), (1, s("x")))],
            vec![(s(""), (1, s("x")))],
            vec![],
            vec![],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn left_outer_join() {
    let (left, right) = join_inputs();
    let out = run2(left, right, |l, r| {
        l.map(|w| (w.clone(), 1))
            .left_outer_join(&r.map(|w| (w.clone(), s("x"))))
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), (1, Some(s("x")))), (s("b"), (1, Some(s("x"))))],
            vec![(s(""), (1, Some(s("x")))), (s("a"), (1, None))],
            vec![(s(""), (1, None))],
            vec![],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_outer_join() {
    let (left, right) = join_inputs();
    let out = run2(left, right, |l, r| {
        l.map(|w| (w.clone(), 1))
            .right_outer_join(&r.map(|w| (w.clone(), s("x"))))
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), (Some(1), s("x"))), (s("b"), (Some(1), s("x")))],
            vec![(s(""), (Some(1), s("x"))), (s("b"), (None, s("x")))],
            vec![],
            vec![(s(""), (None, s("x")))],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_outer_join() {
    let (left, right) = join_inputs();
    let out = run2(left, right, |l, r| {
        l.map(|w| (w.clone(), 1))
            .full_outer_join(&r.map(|w| (w.clone(), s("x"))))
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![
                (s("a"), (Some(1), Some(s("x")))),
                (s("b"), (Some(1), Some(s("x"))))
            ],
            vec![
                (s(""), (Some(1), Some(s("x")))),
                (s("a"), (Some(1), None)),
                (s("b"), (None, Some(s("x")))),
            ],
            vec![(s(""), (Some(1), None))],
            vec![(s(""), (None, Some(s("x"))))],
        ]
    );
}

fn running_sum(values: &[i64], state: Option<i64>) -> Option<i64> {
    Some(values.iter().sum::<i64>() + state.unwrap_or(0))
}

fn state_input() -> Vec<Vec<String>> {
    strs(&[
        &["a"],
        &["a", "b"],
        &["a", "b", "c"],
        &["a", "b"],
        &["a"],
        &[],
    ])
}

fn state_expected() -> Vec<Vec<(String, i64)>> {
    vec![
        vec![(s("a"), 1)],
        vec![(s("a"), 2), (s("b"), 1)],
        vec![(s("a"), 3), (s("b"), 2), (s("c"), 1)],
        vec![(s("a"), 4), (s("b"), 3), (s("c"), 1)],
        vec![(s("a"), 5), (s("b"), 3), (s("c"), 1)],
        vec![(s("a"), 5), (s("b"), 3), (s("c"), 1)],
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_state_by_key() {
    let out = run1(state_input(), |d| {
        d.map(|w| (w.clone(), 1i64))
            .update_state_by_key(running_sum)
    })
    .await;
    assert_eq!(out, state_expected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_state_by_key_removes_keys_that_return_none() {
    // A key's state lives while it keeps receiving values.
    let out = run1(state_input(), |d| {
        d.map(|w| (w.clone(), 1i64))
            .update_state_by_key(|values: &[i64], state: Option<i64>| {
                (!values.is_empty()).then(|| values.len() as i64 + state.unwrap_or(0))
            })
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), 1)],
            vec![(s("a"), 2), (s("b"), 1)],
            vec![(s("a"), 3), (s("b"), 2), (s("c"), 1)],
            vec![(s("a"), 4), (s("b"), 3)],
            vec![(s("a"), 5)],
            vec![],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_restart_from_the_checkpoint() {
    let queue = QueueStream::new(true, 2);
    for batch in state_input() {
        queue.push(batch);
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let counts = ctx
            .queue_stream(&q)
            .uid("words")
            .map(|w| (w.clone(), 1i64))
            .update_state_by_key(running_sum)
            .uid("running-counts");
        o.collect(&counts);
    })
    .unwrap();
    clock.run(3).await.unwrap();
    clock.restart().unwrap(); // fresh graph: memory gone, state and queue position restored
    clock.run(3).await.unwrap();
    assert_eq!(out.all_sorted(), state_expected());
}

fn counting_graph(
    queue: &QueueStream<String>,
    out: &Collected<(String, i64)>,
    state_id: &'static str,
) -> impl Fn(&weir::StreamingContext) + Send + Sync + 'static {
    let (q, o) = (queue.clone(), out.clone());
    move |ctx| {
        let counts = ctx
            .queue_stream(&q)
            .uid("words")
            .map(|w| (w.clone(), 1i64))
            .update_state_by_key(running_sum)
            .uid(state_id);
        o.collect(&counts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_of_a_removed_operator_refuses_the_restore_unless_allowed() {
    let queue = QueueStream::new(true, 2);
    for batch in state_input() {
        queue.push(batch);
    }
    let out = Collected::default();
    let mut clock = ManualClock::new(1000, 2, counting_graph(&queue, &out, "counts")).unwrap();
    clock.run(2).await.unwrap();
    // The new code renamed the operator: its old state matches nothing.
    let err = clock
        .restart_with(counting_graph(&queue, &out, "counts-v2"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"counts\"") && err.contains("allow_unmatched_state"),
        "{err}"
    );
    clock
        .restart_with_config(|c| c.allow_unmatched_state = true)
        .unwrap();
    let report = clock.context().restore_report().join("\n");
    assert!(
        report.contains("dropped the state of removed operators: \"counts\""),
        "{report}"
    );
    assert!(
        report.contains("\"counts-v2\"") && report.contains("starts empty"),
        "{report}"
    );
    clock.run(1).await.unwrap();
    // Started empty: batch 3 counts only itself.
    assert_eq!(
        out.sorted(3000),
        vec![(s("a"), 1), (s("b"), 1), (s("c"), 1)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_type_refuses_the_restore_naming_the_operator() {
    let queue = QueueStream::new(true, 2);
    for batch in state_input() {
        queue.push(batch);
    }
    let out = Collected::default();
    let mut clock = ManualClock::new(1000, 2, counting_graph(&queue, &out, "counts")).unwrap();
    clock.run(2).await.unwrap();
    let q = queue.clone();
    let err = clock
        .restart_with(move |ctx| {
            ctx.queue_stream(&q)
                .uid("words")
                .map(|w| (w.clone(), 1i64))
                .update_state_by_key(|v: &[i64], s: Option<String>| {
                    Some(format!("{}{}", s.unwrap_or_default(), v.len()))
                })
                .uid("counts")
                .print(1);
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"counts\"") && err.contains("new id"),
        "{err}"
    );
}

/// Two parties meeting: each [`arrive`](Rendezvous::arrive) waits (at most 10 s) for the
/// other and says whether it came.
#[derive(Default)]
struct Rendezvous {
    arrived: std::sync::Mutex<usize>,
    met: std::sync::Condvar,
}

impl Rendezvous {
    fn arrive(&self) -> bool {
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        self.met.notify_all();
        let (arrived, _) = self
            .met
            .wait_timeout_while(arrived, std::time::Duration::from_secs(10), |n| *n < 2)
            .unwrap();
        *arrived >= 2
    }
}

/// The two reducers of a shuffle compute the two map partitions at the same time: each map
/// partition waits for the other before it returns, which only completes if they run in
/// parallel (when both reducers pulled map partition 0 first, the second waited for the first
/// and the map side ran one partition at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reducers_compute_the_map_side_in_parallel() {
    let input: Vec<Vec<String>> = strs(&[&["a", "b", "c", "d", "a", "b"]]);
    let meet = std::sync::Arc::new(Rendezvous::default());
    let together = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (m, t) = (meet.clone(), together.clone());
    let out = run1(input, move |d| {
        let (m, t) = (m.clone(), t.clone());
        d.map_partitions(move |words: &[String]| {
            let met = m.arrive();
            t.lock().unwrap().push(met);
            Ok(words.iter().map(|w| (w.clone(), 1)).collect())
        })
        .reduce_by_key(|a, b| a + b)
    })
    .await;
    assert_eq!(
        out,
        vec![vec![(s("a"), 2), (s("b"), 2), (s("c"), 1), (s("d"), 1)]]
    );
    assert_eq!(*together.lock().unwrap(), vec![true, true]);
}

/// Counts calls of the closures it wraps.
#[derive(Clone, Default)]
struct Calls(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Calls {
    fn hit(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A chain of maps, filters and flat_maps into a shuffle runs as one loop (nothing between
/// them is kept), and still calls each function exactly once per element: the map side of the
/// shuffle visits the chain once per partition and batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_into_a_shuffle_calls_each_function_once_per_element() {
    let input = strs(&[&["a b", "b c c", "", "d"], &["e e e", "a"]]);
    let (lines, kept, words) = (Calls::default(), Calls::default(), Calls::default());
    let (l, k, w) = (lines.clone(), kept.clone(), words.clone());
    let out = run1(input, move |d| {
        let (l, k, w) = (l.clone(), k.clone(), w.clone());
        d.map(move |line: &String| {
            l.hit();
            weir::Str::from(line.as_str())
        })
        .filter(move |line: &weir::Str| {
            k.hit();
            !line.is_empty()
        })
        .flat_map(|line: &weir::Str| line.words())
        .map(move |word: &weir::Str| {
            w.hit();
            (word.to_string(), 1u64)
        })
        .reduce_by_key(|a, b| a + b)
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), 1), (s("b"), 2), (s("c"), 2), (s("d"), 1)],
            vec![(s("a"), 1), (s("e"), 3)],
        ]
    );
    assert_eq!(lines.get(), 6, "one call per line");
    assert_eq!(kept.get(), 6, "one call per line");
    assert_eq!(words.get(), 10, "one call per word");
}

/// A stream read by two operators is computed once per batch and shared by both (memoised),
/// not once per reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_with_two_readers_is_computed_once() {
    let input = strs(&[&["a", "b", "a"], &["c"]]);
    let calls = Calls::default();
    let c = calls.clone();
    let out = run1(input, move |d| {
        let c = c.clone();
        let pairs = d.map(move |w: &String| {
            c.hit();
            (w.clone(), 1u64)
        });
        let counts = pairs.reduce_by_key(|a, b| a + b);
        let all = pairs.count().map(|n: &u64| (s("all"), *n));
        counts.union(&all)
    })
    .await;
    assert_eq!(
        out,
        vec![
            vec![(s("a"), 2), (s("all"), 3), (s("b"), 1)],
            vec![(s("all"), 1), (s("c"), 1)],
        ]
    );
    assert_eq!(calls.get(), 4, "one call per element, not one per reader");
}
