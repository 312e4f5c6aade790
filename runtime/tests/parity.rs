//! Spark Streaming API parity: the operators and sources added for it, against the expected
//! outputs of Spark's `BasicOperationsSuite` / `InputStreamsSuite` scenarios (inputs and
//! expected outputs restated here), and the third offset strategy of the Kafka integration
//! guide — offsets kept in the application's own store, written in the same transaction as
//! the results.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use weir::dstream::{QueueStream, StartingOffsets, transform_of};
use weir::testing::{Collected, ManualClock, MemoryLog};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// BasicOperationsSuite "transformWith": `s1.map(x => (x, 1)).transformWith(s2.map(x => (x,
/// "x")), join)`, batch by batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_with_joins_the_same_batch_of_two_streams() {
    let (q1, q2) = (QueueStream::new(true, 2), QueueStream::new(true, 1));
    for (a, b) in [
        (vec!["a", "b"], vec!["a", "b"]),
        (vec!["a", ""], vec!["b", ""]),
        (vec![""], vec![]),
        (vec![], vec![""]),
    ] {
        q1.push(strings(&a));
        q2.push(strings(&b));
    }
    let out: Collected<(String, (u32, String))> = Collected::default();
    let times: Arc<Mutex<Vec<u64>>> = Arc::default();
    let (a, b, o, t) = (q1.clone(), q2.clone(), out.clone(), Arc::clone(&times));
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let t1 = ctx.queue_stream(&a).map(|x: &String| (x.clone(), 1u32));
        let t2 = ctx
            .queue_stream(&b)
            .map(|x: &String| (x.clone(), "x".to_owned()));
        let t = Arc::clone(&t);
        let joined = t1.transform_with(&t2, move |time, left, right| {
            t.lock().unwrap().push(time);
            let mut out = Vec::new();
            for (k, v) in left.iter().flat_map(|p| p.iter()) {
                for (k2, w) in right.iter().flat_map(|p| p.iter()) {
                    if k == k2 {
                        out.push((k.clone(), (*v, w.clone())));
                    }
                }
            }
            Ok(out)
        });
        o.collect(&joined);
    })
    .unwrap();
    clock.run(4).await.unwrap();
    let x = |k: &str| (k.to_owned(), (1, "x".to_owned()));
    assert_eq!(out.sorted(1000), vec![x("a"), x("b")]);
    assert_eq!(out.sorted(2000), vec![x("")]);
    assert_eq!(out.sorted(3000), vec![]);
    assert_eq!(out.sorted(4000), vec![]);
    // The function ran once per batch (shared by the partitions), with the batch's time.
    assert_eq!(*times.lock().unwrap(), vec![1000, 2000, 3000, 4000]);
}

/// BasicOperationsSuite "StreamingContext.transform": the union of `s`, `s + 4` and `s + 8`
/// done in one transform over the three streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_transform_sees_every_stream_of_the_batch() {
    let queue = QueueStream::new(true, 2);
    for start in [1, 101, 201] {
        queue.push((start..start + 4).collect::<Vec<i32>>());
    }
    let (out, out_fn) = (Collected::default(), Collected::default());
    let (q, o, of) = (queue.clone(), out.clone(), out_fn.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let s = ctx.queue_stream(&q);
        let streams = [s.clone(), s.map(|x| x + 4), s.map(|x| x + 8)];
        let union = |_time: u64, batches: &[Vec<weir::dstream::Partition<i32>>]| {
            Ok(batches
                .iter()
                .flat_map(|b| b.iter().flat_map(|p| p.iter().copied()))
                .collect())
        };
        let transformed = ctx.transform(&streams, union);
        assert_eq!(
            transformed.partitions(),
            2,
            "as many partitions as the first stream"
        );
        o.collect(&transformed);
        of.collect(&transform_of(&streams, union));
    })
    .unwrap();
    clock.run(3).await.unwrap();
    for (time, start) in [(1000, 1), (2000, 101), (3000, 201)] {
        let expected: Vec<i32> = (start..start + 12).collect();
        assert_eq!(out.sorted(time), expected, "batch {time}");
        assert_eq!(out_fn.sorted(time), expected, "batch {time}");
    }
}

/// BasicOperationsSuite "StreamingContext.union".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_union_of_three_streams() {
    let queue = QueueStream::new(true, 1);
    for start in [1, 101, 201] {
        queue.push((start..start + 4).collect::<Vec<i32>>());
    }
    let out = Collected::default();
    let (q, o) = (queue.clone(), out.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let s = ctx.queue_stream(&q);
        o.collect(&ctx.union(&[s.clone(), s.map(|x| x + 4), s.map(|x| x + 8)]));
    })
    .unwrap();
    clock.run(3).await.unwrap();
    assert_eq!(out.sorted(1000), (1..13).collect::<Vec<_>>());
    assert_eq!(out.sorted(2000), (101..113).collect::<Vec<_>>());
    assert_eq!(out.sorted(3000), (201..213).collect::<Vec<_>>());
}

/// InputStreamsSuite "queue input stream": with `oneAtATime` each pushed batch is one
/// batch; without, everything queued is the next batch; a default batch fills empty ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stream_one_at_a_time_all_at_once_and_default() {
    let one = QueueStream::new(true, 1);
    let all = QueueStream::new(false, 1);
    let dflt = QueueStream::new(true, 1).with_default(vec![0]);
    for q in [&one, &all, &dflt] {
        for i in 1..=3 {
            q.push(vec![i]);
        }
    }
    let (o1, o2, o3) = (
        Collected::default(),
        Collected::default(),
        Collected::default(),
    );
    let (q1, q2, q3, c1, c2, c3) = (
        one.clone(),
        all.clone(),
        dflt.clone(),
        o1.clone(),
        o2.clone(),
        o3.clone(),
    );
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        c1.collect(&ctx.queue_stream(&q1));
        c2.collect(&ctx.queue_stream(&q2));
        c3.collect(&ctx.queue_stream(&q3));
    })
    .unwrap();
    clock.run(2).await.unwrap();
    for q in [&one, &all, &dflt] {
        q.push(vec![4]);
    }
    clock.run(3).await.unwrap();
    let batches = |c: &Collected<i32>| c.batches().into_values().collect::<Vec<_>>();
    assert_eq!(
        batches(&o1),
        vec![vec![1], vec![2], vec![3], vec![4], vec![]]
    );
    assert_eq!(
        batches(&o2),
        vec![vec![1, 2, 3], vec![], vec![4], vec![], vec![]]
    );
    assert_eq!(
        batches(&o3),
        vec![vec![1], vec![2], vec![3], vec![4], vec![0]]
    );
    assert_eq!(one.pending() + all.pending() + dflt.pending(), 0);
}

/// `saveAsTextFiles(prefix, suffix)`: one directory per batch, `prefix-TIME.suffix`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_as_text_files_with_a_suffix_names_prefix_time_suffix() {
    let out = tempfile::tempdir().unwrap();
    let queue = QueueStream::new(true, 2);
    queue.push(strings(&["b", "a", "c"]));
    let (q, prefix) = (queue.clone(), out.path().join("words"));
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        ctx.queue_stream(&q)
            .save_as_text_files_suffixed(&prefix, "txt");
    })
    .unwrap();
    clock.run(2).await.unwrap();
    let mut names: Vec<String> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["words-1000.txt"],
        "an empty batch writes nothing"
    );
    let dir = out.path().join("words-1000.txt");
    let mut lines: Vec<String> = ["part-00000", "part-00001"]
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(dir.join(p))
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(lines, strings(&["a", "b", "c"]));
}

/// The application's own store: results and offsets, changed together in one transaction.
#[derive(Default)]
struct Db {
    counts: BTreeMap<String, u64>,
    offsets: Vec<u64>,
    transactions: u64,
}

type Store = Arc<Mutex<Db>>;

/// An application counting words into `db`, starting from the offsets in `db`.
fn app(log: &Arc<MemoryLog>, db: &Store) -> ManualClock {
    let from = db.lock().unwrap().offsets.clone();
    let (l, d) = (Arc::clone(log), Arc::clone(db));
    ManualClock::new(1000, 2, move |ctx| {
        let d = Arc::clone(&d);
        ctx.direct_stream(l.clone(), StartingOffsets::Given(from.clone()), Some(2))
            .uid("words")
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .foreach_batch(move |batch| {
                // One transaction: check that this batch starts where the stored offsets
                // end, then write the results and the new offsets together.
                let mut db = d.lock().unwrap();
                for range in &batch.offset_ranges {
                    let stored = db.offsets[range.partition as usize];
                    if stored != range.from {
                        return Err(format!(
                            "partition {} starts at {} but the store is at {stored}",
                            range.partition, range.from
                        )
                        .into());
                    }
                }
                for word in batch.iter() {
                    *db.counts.entry(word.clone()).or_default() += 1;
                }
                for range in &batch.offset_ranges {
                    db.offsets[range.partition as usize] = range.until;
                }
                db.transactions += 1;
                Ok(())
            });
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_in_the_applications_own_store_give_exactly_once_results() {
    let log = MemoryLog::new("log", 2);
    log.append(0, &["a", "b", "a"]);
    log.append(1, &["b", "c"]);
    let db: Store = Arc::new(Mutex::new(Db {
        offsets: vec![0, 0],
        ..Db::default()
    }));

    // First run: two batches of at most 2 records per partition.
    let mut first = app(&log, &db);
    first.run(2).await.unwrap();
    assert_eq!(db.lock().unwrap().offsets, vec![3, 2]);
    log.append(0, &["c"]);
    log.append(1, &["a", "a", "d"]);
    first.run(1).await.unwrap(); // [3, 4) and [2, 4)
    assert_eq!(db.lock().unwrap().offsets, vec![4, 4]);
    // The process dies (no checkpoint is kept): a new one starts from the store's offsets.
    drop(first);

    let mut second = app(&log, &db);
    second.run(2).await.unwrap();
    let expected: BTreeMap<String, u64> = [("a", 4), ("b", 2), ("c", 2), ("d", 1)]
        .into_iter()
        .map(|(w, n)| (w.to_owned(), n))
        .collect();
    {
        let db_now = db.lock().unwrap();
        assert_eq!(db_now.offsets, vec![4, 5]);
        assert_eq!(db_now.counts, expected, "every record counted exactly once");
    }

    // A run from stale offsets (not the store's) is refused by the transaction's check:
    // nothing is counted twice.
    let before = db.lock().unwrap().transactions;
    let mut stale = {
        let (l, d) = (Arc::clone(&log), Arc::clone(&db));
        let saved = db.lock().unwrap().offsets.clone();
        db.lock().unwrap().offsets = vec![0, 0];
        let clock = app(&l, &d);
        d.lock().unwrap().offsets = saved;
        clock
    };
    let err = stale.run(1).await.unwrap_err().to_string();
    assert!(err.contains("starts at 0 but the store is at 4"), "{err}");
    let db_now = db.lock().unwrap();
    assert_eq!(db_now.transactions, before);
    assert_eq!(db_now.counts, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_offsets_of_the_wrong_length_fail_the_batch() {
    let log = MemoryLog::new("log", 2);
    log.append(0, &["a"]);
    let l = Arc::clone(&log);
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        ctx.direct_stream(l.clone(), StartingOffsets::Given(vec![0, 0, 0]), None)
            .foreach_batch(|_| Ok(()));
    })
    .unwrap();
    let err = clock.run(1).await.unwrap_err().to_string();
    assert!(
        err.contains("3 starting offsets were given for 2 partitions"),
        "{err}"
    );
}

/// A checkpoint takes precedence over given offsets: a restart continues where the
/// checkpoint says, not at the given offsets again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_restore_continues_from_the_checkpoint_not_the_given_offsets() {
    let log = MemoryLog::new("log", 1);
    log.append(0, &["a", "b", "c"]);
    let out = Collected::default();
    let (l, o) = (Arc::clone(&log), out.clone());
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        o.collect(
            &ctx.direct_stream(l.clone(), StartingOffsets::Given(vec![1]), Some(1))
                .uid("log")
                .map(|b| String::from_utf8_lossy(b).into_owned()),
        );
    })
    .unwrap();
    clock.run(1).await.unwrap();
    clock.restart().unwrap();
    clock.run(2).await.unwrap();
    assert_eq!(
        out.batches().into_values().collect::<Vec<_>>(),
        vec![strings(&["b"]), strings(&["c"]), vec![]]
    );
}

/// `binaryRecordsStream(dir, recordLength)`: each new file's bytes as fixed-length records,
/// each file read once, also when a batch is re-run after a crash; a partial last record is
/// skipped and reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_records_stream_cuts_each_new_file_into_fixed_length_records() {
    use weir::sources::file_stream::FileStreamOptions;
    let input = tempfile::tempdir().unwrap();
    std::fs::write(input.path().join("a.bin"), b"abcdefgh").unwrap();
    let options = FileStreamOptions::new();
    let stats = options.stats();
    let out: Collected<String> = Collected::default();
    let (dir, o) = (input.path().to_path_buf(), out.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let records = ctx
            .binary_records_stream(&dir, 4, options.clone())
            .uid("records")
            .map(|r| String::from_utf8_lossy(r).into_owned());
        o.collect(&records);
    })
    .unwrap();
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(1000), strings(&["abcd", "efgh"]));

    std::fs::write(input.path().join("b.bin"), b"ijklmn").unwrap();
    clock.crash_mid_batch().unwrap(); // batch 2000 planned b.bin, then lost
    std::fs::write(input.path().join("c.bin"), b"opqr").unwrap();
    clock.run(2).await.unwrap();
    assert_eq!(
        out.sorted(2000),
        strings(&["ijkl"]),
        "the re-run reads its plan"
    );
    assert_eq!(out.sorted(3000), strings(&["opqr"]));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.partial_records, 1);
    assert!(
        stats
            .recent_problems()
            .iter()
            .any(|p| p.contains("b.bin ends with 2 bytes, less than a record of 4")),
        "{:?}",
        stats.recent_problems()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_records_of_zero_bytes_refuse_the_start() {
    let mut ctx = weir::StreamingContext::new(weir::StreamingConfig::new(weir::Storage::memory()));
    ctx.binary_records_stream(
        "/nonexistent",
        0,
        weir::sources::file_stream::FileStreamOptions::new(),
    )
    .foreach_batch(|_| Ok(()));
    let err = ctx.start().await.unwrap_err().to_string();
    assert!(
        err.contains("the record length must be at least 1 byte"),
        "{err}"
    );
}
