//! Direct (offset-based) sources: each batch reads a planned offset range per partition; a
//! batch re-run after a crash reads the same ranges, even if more records arrived meanwhile;
//! offsets are committed back after the batch completes.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir::dstream::{DirectStreamOptions, OffsetRange, StartingOffsets};
use weir::testing::{Collected, ManualClock, MemoryLog};

/// Offset ranges each batch's output saw.
type Seen = Vec<(u64, Vec<OffsetRange>)>;

fn text(b: &Bytes) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_rerun_after_a_crash_reads_the_same_ranges() {
    let log = MemoryLog::new("log", 2);
    log.append(0, &["a", "b"]);
    log.append(1, &["c"]);
    let out = Collected::default();
    let ranges: Arc<Mutex<Seen>> = Arc::default();
    let (l, o, r) = (Arc::clone(&log), out.clone(), Arc::clone(&ranges));
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let records = ctx
            .direct_stream(l.clone(), StartingOffsets::Earliest, Some(10))
            .uid("log")
            .map(text);
        o.collect(&records);
        let r = Arc::clone(&r);
        records.foreach_batch(move |batch| {
            r.lock()
                .unwrap()
                .push((batch.time_ms, batch.offset_ranges.clone()));
            Ok(())
        });
    })
    .unwrap();

    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(1000), vec!["a", "b", "c"]);
    assert_eq!(log.committed().last().unwrap(), &vec![2, 1]);

    log.append(0, &["d"]);
    clock.crash_mid_batch().unwrap(); // batch 2000 planned [2..3) and [1..1), then lost
    log.append(1, &["e", "f"]); // arrives while the driver is down
    clock.run(1).await.unwrap(); // batch 2000 again: the same ranges, not the new records
    assert_eq!(out.sorted(2000), vec!["d"]);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(3000), vec!["e", "f"]);

    let seen = ranges.lock().unwrap().clone();
    let of = |t: u64| -> Vec<(u32, u64, u64)> {
        seen.iter()
            .filter(|(time, _)| *time == t)
            .flat_map(|(_, rs)| rs.iter().map(|r| (r.partition, r.from, r.until)))
            .collect()
    };
    assert_eq!(of(2000), vec![(0, 2, 3), (1, 1, 1)]);
    assert_eq!(of(3000), vec![(0, 3, 3), (1, 1, 3)]);
    assert_eq!(log.committed().last().unwrap(), &vec![3, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_caps_each_partition_per_batch() {
    let log = MemoryLog::new("log", 1);
    log.append(0, &["1", "2", "3", "4", "5"]);
    let out = Collected::default();
    let (l, o) = (Arc::clone(&log), out.clone());
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        o.collect(
            &ctx.direct_stream(l.clone(), StartingOffsets::Earliest, Some(2))
                .map(text),
        );
    })
    .unwrap();
    clock.run(4).await.unwrap();
    assert_eq!(
        out.all_sorted(),
        vec![vec!["1", "2"], vec!["3", "4"], vec!["5"], vec![]]
    );
}

/// Issue 16, item 6: a direct stream had no byte bound, so a backlog became one batch however
/// large. A batch now holds at most `max_bytes_per_batch` of records, shared among the
/// partitions; a record over its share is still taken alone, and every record is read once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_bounds_each_batch_and_every_record_is_read_once() {
    let log = MemoryLog::new("log", 2);
    let records = |p: usize| -> Vec<String> { (0..12).map(|i| format!("p{p}-r{i:05}")).collect() };
    for p in 0..2 {
        let rs = records(p);
        log.append(p, &rs.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let huge = "h".repeat(100);
    log.append(1, &[huge.as_str()]);
    let out = Collected::default();
    let (l, o) = (Arc::clone(&log), out.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let options = DirectStreamOptions::new().max_bytes_per_batch(35);
        o.collect(
            &ctx.direct_stream_with(l.clone(), StartingOffsets::Earliest, options)
                .map(text),
        );
    })
    .unwrap();
    clock.run(12).await.unwrap();
    let batches = out.all_sorted();
    let mut all: Vec<String> = batches.iter().flatten().cloned().collect();
    for batch in &batches {
        let bytes: usize = batch.iter().map(String::len).sum();
        assert!(
            bytes <= 35 || batch.contains(&huge),
            "a batch of {bytes} bytes: {batch:?}"
        );
    }
    // Records of 9 bytes: 35 bytes shared by two partitions take one record of one and two
    // of the other; the 100-byte record goes alone in its partition.
    assert_eq!(batches[0].len(), 3, "{batches:?}");
    assert!(batches.iter().any(|b| b.contains(&huge) && b.len() <= 2));
    all.sort();
    let mut expected: Vec<String> = records(0).into_iter().chain(records(1)).collect();
    expected.push(huge);
    expected.sort();
    assert_eq!(all, expected, "every record exactly once");
    assert_eq!(log.committed().last().unwrap(), &vec![12, 13]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_starts_after_what_is_there() {
    let log = MemoryLog::new("log", 1);
    log.append(0, &["old"]);
    let out = Collected::default();
    let (l, o) = (Arc::clone(&log), out.clone());
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        o.collect(
            &ctx.direct_stream(l.clone(), StartingOffsets::Latest, None)
                .map(text),
        );
    })
    .unwrap();
    clock.run(1).await.unwrap();
    log.append(0, &["new"]);
    clock.run(1).await.unwrap();
    assert_eq!(
        out.all_sorted(),
        vec![Vec::<String>::new(), vec!["new".to_owned()]]
    );
}
