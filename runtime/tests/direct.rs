//! Direct (offset-based) sources: each batch reads a planned offset range per partition; a
//! batch re-run after a crash reads the same ranges, even if more records arrived meanwhile;
//! offsets are committed back after the batch completes.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir::dstream::{OffsetRange, StartingOffsets};
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
