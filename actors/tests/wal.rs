//! The WAL's public guarantees, in every storage mode: round trips, group commit, rolling,
//! cleaning, reopening, cancellation and closing.

// Helpers outside `#[test]` functions are test code too (clippy's `allow-unwrap-in-tests`
// only covers the test functions themselves).
#![allow(clippy::unwrap_used)]
#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Events, Mode, Store, payloads, read_all, tagged};
use futures::FutureExt;
use weir_actors::Event;
use weir_actors::wal::{
    Position, RecordHandle, Wal, WalConfig, WalError, format::FRAME_HEADER_LEN,
    format::SEGMENT_HEADER_LEN,
};

async fn open(store: &Store, config: WalConfig) -> Wal {
    let (wal, report) = Wal::open(store.storage(), config).await.unwrap();
    assert!(report.torn_tails.is_empty(), "{report:?}");
    wal
}

async fn append(wal: &Wal, payload: &[u8]) -> RecordHandle {
    wal.append(Bytes::copy_from_slice(payload)).await.unwrap()
}

fn rolls(events: &[Event]) -> Vec<(u64, u64, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WalSegmentRolled {
                sealed,
                segment,
                reason,
                ..
            } => Some((*sealed, *segment, reason.clone())),
            _ => None,
        })
        .collect()
}

in_every_mode!(async
    appended_records_read_back_by_handle_and_by_iteration,
    empty_payload_is_a_record_of_its_own,
    one_mebibyte_record_round_trips,
    record_over_max_record_bytes_is_refused_and_nothing_is_written,
    reopen_keeps_every_record_and_appends_to_a_new_segment,
    segments_roll_by_size_and_report_it,
    roll_interval_zero_rolls_by_age_before_every_group,
    explicit_roll_starts_a_new_segment,
    clean_deletes_exactly_the_sealed_segments_older_than_the_threshold,
    nothing_is_deleted_unless_clean_is_called,
    reading_a_cleaned_segment_handle_is_invalid_handle,
    segment_ids_are_not_reused_after_cleaning_and_reopening,
    append_after_close_is_refused_as_closed,
);

async fn appended_records_read_back_by_handle_and_by_iteration(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let sent: Vec<Vec<u8>> = (0..20).map(|i| tagged(&format!("r{i}"), i * 37)).collect();
    let mut handles = Vec::new();
    for (i, p) in sent.iter().enumerate() {
        let h = wal
            .append_at(1000 + i as u64, Bytes::copy_from_slice(p))
            .await
            .unwrap();
        assert_eq!(h.length as usize, p.len());
        handles.push(h);
    }
    // By handle.
    for (h, p) in handles.iter().zip(&sent) {
        assert_eq!(wal.read(*h).await.unwrap().as_ref(), p.as_slice(), "{h}");
    }
    // From the start: every record, in append order, with its handle and time.
    let all = read_all(&wal).await;
    assert_eq!(payloads(&all), sent);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.handle, handles[i]);
        assert_eq!(r.time_ms, 1000 + i as u64);
    }
    // From just after each record: exactly the records after it.
    for (k, h) in handles.iter().enumerate() {
        let rest = wal
            .iter_from(h.next_position())
            .collect_all()
            .await
            .unwrap();
        assert_eq!(payloads(&rest), sent[k + 1..].to_vec(), "after {h}");
        let from_here = wal.iter_from(h.position()).collect_all().await.unwrap();
        assert_eq!(payloads(&from_here), sent[k..].to_vec(), "from {h}");
    }
    // Handles tile the segment: each frame starts where the previous one ended.
    for w in handles.windows(2) {
        assert_eq!(w[1].position(), w[0].next_position());
    }
    assert_eq!(handles[0].offset, SEGMENT_HEADER_LEN as u64);
    wal.close().await.unwrap();
}

async fn empty_payload_is_a_record_of_its_own(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let a = append(&wal, b"").await;
    let b = append(&wal, b"x").await;
    let c = append(&wal, b"").await;
    assert_eq!(a.length, 0);
    assert_eq!(b.offset, a.offset + FRAME_HEADER_LEN as u64);
    assert!(wal.read(a).await.unwrap().is_empty());
    assert!(wal.read(c).await.unwrap().is_empty());
    let expect = vec![b"".to_vec(), b"x".to_vec(), b"".to_vec()];
    assert_eq!(payloads(&read_all(&wal).await), expect);
    wal.close().await.unwrap();
    let wal = open(&store, WalConfig::default()).await;
    assert_eq!(payloads(&read_all(&wal).await), expect);
}

async fn one_mebibyte_record_round_trips(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let big: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let before = append(&wal, b"before").await;
    let h = append(&wal, &big).await;
    let after = append(&wal, b"after").await;
    assert_eq!(h.length, 1 << 20);
    assert_eq!(wal.read(h).await.unwrap().as_ref(), big.as_slice());
    assert_eq!(wal.read(before).await.unwrap().as_ref(), b"before");
    assert_eq!(wal.read(after).await.unwrap().as_ref(), b"after");
    wal.close().await.unwrap();
    let wal = open(&store, WalConfig::default()).await;
    let all = read_all(&wal).await;
    assert_eq!(
        payloads(&all),
        vec![b"before".to_vec(), big.clone(), b"after".to_vec()]
    );
    assert_eq!(wal.read(h).await.unwrap().as_ref(), big.as_slice());
}

async fn record_over_max_record_bytes_is_refused_and_nothing_is_written(mode: Mode) {
    let store = Store::new(mode);
    let config = WalConfig {
        max_record_bytes: 1024,
        ..WalConfig::default()
    };
    let wal = open(&store, config.clone()).await;
    // Before any segment exists: nothing is created.
    let err = wal.append(Bytes::from(vec![7; 1025])).await.unwrap_err();
    assert!(
        matches!(
            err,
            WalError::RecordTooLarge {
                len: 1025,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert!(store.snapshot().await.is_empty());
    assert!(wal.segments().is_empty());

    let fits = append(&wal, &[1; 1024]).await;
    let stored = store.snapshot().await;
    let stats = wal.stats();
    let err = wal.append(Bytes::from(vec![7; 4096])).await.unwrap_err();
    assert!(
        matches!(
            err,
            WalError::RecordTooLarge {
                len: 4096,
                max: 1024
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        store.snapshot().await,
        stored,
        "a refused record changed storage"
    );
    assert_eq!(wal.stats(), stats);
    assert_eq!(wal.read(fits).await.unwrap().len(), 1024);
    wal.close().await.unwrap();
    let wal = open(&store, config).await;
    assert_eq!(payloads(&read_all(&wal).await), vec![vec![1; 1024]]);
}

async fn reopen_keeps_every_record_and_appends_to_a_new_segment(mode: Mode) {
    let store = Store::new(mode);
    let mut expect: Vec<Vec<u8>> = Vec::new();
    let mut all_handles: Vec<(RecordHandle, Vec<u8>)> = Vec::new();
    for round in 0..3u64 {
        // Round 2 follows a drop without close.
        let (wal, report) = Wal::open(store.storage(), WalConfig::default())
            .await
            .unwrap();
        assert!(report.torn_tails.is_empty());
        assert_eq!(report.records, expect.len() as u64);
        assert_eq!(report.segments as u64, round);
        assert_eq!(report.next_segment, round + 1);
        // Everything from earlier lifetimes is there, and every old handle still reads.
        assert_eq!(payloads(&read_all(&wal).await), expect);
        for (h, p) in &all_handles {
            assert_eq!(wal.read(*h).await.unwrap().as_ref(), &p[..]);
        }
        for i in 0..5 {
            let p = tagged(&format!("round {round} record {i}"), 10);
            let h = append(&wal, &p).await;
            assert_eq!(
                h.segment,
                round + 1,
                "appends after a reopen go to a new segment"
            );
            expect.push(p.clone());
            all_handles.push((h, p));
        }
        // Old segments are sealed; only the new one takes appends.
        let segs = wal.segments();
        assert_eq!(segs.len() as u64, round + 1);
        assert!(segs[..segs.len() - 1].iter().all(|s| s.sealed));
        assert!(!segs.last().unwrap().sealed);
        if round % 2 == 0 {
            wal.close().await.unwrap();
        } else {
            // Dropped without close: the acknowledged appends are durable all the same.
            drop(wal);
        }
    }
    let wal = open(&store, WalConfig::default()).await;
    assert_eq!(payloads(&read_all(&wal).await), expect);
    assert_eq!(store.segment_ids().await, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_group_commits_and_all_read_back() {
    for mode in common::MODES {
        let store = Store::new(mode);
        let config = WalConfig {
            group_commit_max_delay: Duration::from_millis(3),
            ..WalConfig::default()
        };
        let wal = open(&store, config.clone()).await;
        let mut tasks = Vec::new();
        for task in 0..16 {
            let wal = wal.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..50 {
                    let p = tagged(&format!("task {task} append {i}"), (task * 7 + i) % 64);
                    let h = wal.append(Bytes::from(p.clone())).await.unwrap();
                    acked.push((h, p));
                }
                acked
            }));
        }
        let mut by_handle: BTreeMap<RecordHandle, Vec<u8>> = BTreeMap::new();
        for t in tasks {
            let acked = t.await.unwrap();
            // One task's appends are sequential, so their handles increase.
            assert!(acked.windows(2).all(|w| w[0].0 < w[1].0), "{mode:?}");
            for (h, p) in acked {
                assert!(
                    by_handle.insert(h, p).is_none(),
                    "{mode:?}: handle {h} given twice"
                );
            }
        }
        assert_eq!(by_handle.len(), 800);
        for (h, p) in &by_handle {
            assert_eq!(
                wal.read(*h).await.unwrap().as_ref(),
                p.as_slice(),
                "{mode:?} {h}"
            );
        }
        let all = read_all(&wal).await;
        let logged: Vec<(RecordHandle, Vec<u8>)> =
            all.iter().map(|r| (r.handle, r.payload.to_vec())).collect();
        assert_eq!(
            logged,
            by_handle.into_iter().collect::<Vec<_>>(),
            "{mode:?}"
        );
        let stats = wal.stats();
        assert_eq!(stats.appends, 800);
        assert!(
            stats.group_commits < stats.appends,
            "{mode:?}: no group commit was shared: {stats:?}"
        );
        wal.close().await.unwrap();
    }
}

/// An append that arrives within `group_commit_max_delay` of the first one of a group shares its
/// commit, even when the writer is idle when the first arrives; `group_commit_max_bytes` ends
/// the wait early.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_within_group_commit_max_delay_share_one_commit() {
    for mode in common::MODES {
        let store = Store::new(mode);
        let config = WalConfig {
            // Long enough that scheduling noise never splits the group; the group is full (and
            // commits at once) when both frames (21 and 22 bytes) are in, not before.
            group_commit_max_delay: Duration::from_secs(30),
            group_commit_max_bytes: FRAME_HEADER_LEN + 7,
            ..WalConfig::default()
        };
        let wal = open(&store, config).await;
        let first = tokio::spawn({
            let wal = wal.clone();
            async move { wal.append(Bytes::from_static(b"first")).await.unwrap() }
        });
        // Wait until the writer has taken the first append (it now waits for more, up to
        // `group_commit_max_delay`), then send the second.
        while wal.stats().received < 1 {
            tokio::task::yield_now().await;
        }
        let second = append(&wal, b"second").await;
        let first = first.await.unwrap();
        let (a, b) = (first.min(second), first.max(second));
        assert_eq!(b.position(), a.next_position(), "{mode:?}");
        let stats = wal.stats();
        assert_eq!(
            (stats.appends, stats.group_commits),
            (2, 1),
            "{mode:?}: {stats:?}"
        );
        wal.close().await.unwrap();
    }
}

/// Reopening with a smaller `max_record_bytes` must not destroy acknowledged records that are
/// longer: they are valid frames, not a torn tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_with_a_smaller_max_record_bytes_keeps_acknowledged_records() {
    for mode in common::MODES {
        let store = Store::new(mode);
        let wal = open(&store, WalConfig::default()).await;
        let sent = vec![vec![1; 10], vec![2; 2000], vec![3; 10]];
        for p in &sent {
            append(&wal, p).await;
        }
        wal.close().await.unwrap();
        let smaller = WalConfig {
            max_record_bytes: 1000,
            ..WalConfig::default()
        };
        let (wal, report) = Wal::open(store.storage(), smaller).await.unwrap();
        assert!(
            report.torn_tails.is_empty(),
            "{mode:?}: {:?}",
            report.torn_tails
        );
        assert_eq!(payloads(&read_all(&wal).await), sent, "{mode:?}");
    }
}

async fn segments_roll_by_size_and_report_it(mode: Mode) {
    let store = Store::new(mode);
    let events = Events::new();
    let frame = (FRAME_HEADER_LEN + 100) as u64;
    let config = WalConfig {
        segment_max_bytes: SEGMENT_HEADER_LEN as u64 + 3 * frame,
        ..events.config()
    };
    let wal = open(&store, config.clone()).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let p = tagged(&format!("{i}"), 100);
        let h = append(&wal, &p).await;
        assert_eq!(h.segment, i / 3 + 1, "record {i}");
        sent.push(p);
    }
    let segs = wal.segments();
    assert_eq!(
        segs.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    for s in &segs {
        assert!(s.bytes <= config.segment_max_bytes, "{s:?}");
    }
    assert_eq!(
        segs.iter().map(|s| s.records).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert_eq!(
        rolls(&events.take()),
        vec![
            (1, 2, "size".to_owned()),
            (2, 3, "size".to_owned()),
            (3, 4, "size".to_owned())
        ]
    );
    assert_eq!(payloads(&read_all(&wal).await), sent);
    // One record larger than a segment still fits in one (new) segment.
    let big = vec![9; 1000];
    let h = append(&wal, &big).await;
    assert_eq!(h.segment, 5);
    assert_eq!(wal.read(h).await.unwrap().as_ref(), big.as_slice());
    wal.close().await.unwrap();
    let wal = open(&store, config).await;
    sent.push(big);
    assert_eq!(payloads(&read_all(&wal).await), sent);
}

async fn roll_interval_zero_rolls_by_age_before_every_group(mode: Mode) {
    let store = Store::new(mode);
    let events = Events::new();
    let config = WalConfig {
        roll_interval: Duration::ZERO,
        ..events.config()
    };
    let wal = open(&store, config).await;
    let mut sent = Vec::new();
    for i in 0..5u64 {
        let p = tagged(&format!("{i}"), 3);
        let h = append(&wal, &p).await;
        assert_eq!(h.segment, i + 1);
        sent.push(p);
    }
    assert_eq!(
        rolls(&events.take()),
        (1..5)
            .map(|i| (i, i + 1, "age".to_owned()))
            .collect::<Vec<_>>()
    );
    assert_eq!(payloads(&read_all(&wal).await), sent);
    assert_eq!(store.segment_ids().await, vec![1, 2, 3, 4, 5]);
}

async fn explicit_roll_starts_a_new_segment(mode: Mode) {
    let store = Store::new(mode);
    let events = Events::new();
    let wal = open(&store, events.config()).await;
    // Rolling with no segment does nothing.
    wal.roll().await.unwrap();
    assert!(events.take().is_empty());
    let a = append(&wal, b"a").await;
    wal.roll().await.unwrap();
    wal.roll().await.unwrap();
    let b = append(&wal, b"b").await;
    assert_eq!((a.segment, b.segment), (1, 2));
    assert_eq!(rolls(&events.take()).len(), 1);
    assert!(wal.segments()[0].sealed);
    assert_eq!(
        payloads(&read_all(&wal).await),
        vec![b"a".to_vec(), b"b".to_vec()]
    );
}

/// Segments 1..=4 with records at the given times; segment 4 is active.
async fn timed_log(wal: &Wal) -> Vec<Vec<(RecordHandle, u64)>> {
    let times: [&[u64]; 4] = [&[100, 110], &[200, 150], &[300], &[50, 60]];
    let mut out = Vec::new();
    for (s, ts) in times.iter().enumerate() {
        let mut seg = Vec::new();
        for t in *ts {
            let h = wal
                .append_at(*t, Bytes::from(format!("t={t}")))
                .await
                .unwrap();
            assert_eq!(h.segment, s as u64 + 1);
            seg.push((h, *t));
        }
        if s < 3 {
            wal.roll().await.unwrap();
        }
        out.push(seg);
    }
    out
}

fn cleaned(events: &[Event]) -> Vec<(Vec<u64>, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WalSegmentsCleaned {
                segments,
                before_ms,
                ..
            } => Some((segments.clone(), *before_ms)),
            _ => None,
        })
        .collect()
}

async fn clean_deletes_exactly_the_sealed_segments_older_than_the_threshold(mode: Mode) {
    let store = Store::new(mode);
    let events = Events::new();
    let wal = open(&store, events.config()).await;
    let segs = timed_log(&wal).await;
    events.take();

    // No segment has all its records before 100.
    assert_eq!(wal.clean(100).await.unwrap(), Vec::<u64>::new());
    assert!(cleaned(&events.take()).is_empty());
    // Segment 1's newest record is 110: `before` is exclusive.
    assert_eq!(wal.clean(110).await.unwrap(), Vec::<u64>::new());
    assert_eq!(wal.clean(111).await.unwrap(), vec![1]);
    assert_eq!(cleaned(&events.take()), vec![(vec![1], 111)]);
    assert_eq!(store.segment_ids().await, vec![2, 3, 4]);
    // Segment 2's records are 200 and 150: its newest one decides. Segment 4 (active) holds
    // only older records but is never deleted.
    assert_eq!(wal.clean(200).await.unwrap(), Vec::<u64>::new());
    assert_eq!(wal.clean(301).await.unwrap(), vec![2, 3]);
    assert_eq!(cleaned(&events.take()), vec![(vec![2, 3], 301)]);
    assert_eq!(store.segment_ids().await, vec![4]);
    assert_eq!(wal.clean(u64::MAX).await.unwrap(), Vec::<u64>::new());
    assert_eq!(store.segment_ids().await, vec![4]);
    assert_eq!(
        wal.segments().iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![4]
    );
    let left = read_all(&wal).await;
    assert_eq!(
        left.iter().map(|r| r.time_ms).collect::<Vec<_>>(),
        vec![50, 60]
    );
    // The active segment still takes appends after the cleans.
    let h = wal
        .append_at(70, Bytes::from_static(b"t=70"))
        .await
        .unwrap();
    assert_eq!(h.segment, 4);
    wal.close().await.unwrap();

    // The deletion survives a reopen.
    let wal = open(&store, events.config()).await;
    assert_eq!(
        read_all(&wal)
            .await
            .iter()
            .map(|r| r.time_ms)
            .collect::<Vec<_>>(),
        vec![50, 60, 70]
    );
    for (h, _) in segs[..3].iter().flatten() {
        assert!(matches!(
            wal.read(*h).await,
            Err(WalError::InvalidHandle { .. })
        ));
    }
    assert_eq!(store.segment_ids().await, vec![4]);
}

async fn nothing_is_deleted_unless_clean_is_called(mode: Mode) {
    let store = Store::new(mode);
    let mut sent = Vec::new();
    for life in 0..4u64 {
        let wal = open(
            &store,
            WalConfig {
                roll_interval: Duration::ZERO,
                segment_max_bytes: 64,
                ..WalConfig::default()
            },
        )
        .await;
        for i in 0..3 {
            // Ancient record times: any clean would remove them.
            let p = tagged(&format!("{life}/{i}"), 20);
            wal.append_at(1, Bytes::from(p.clone())).await.unwrap();
            sent.push(p);
        }
        wal.roll().await.unwrap();
        wal.close().await.unwrap();
    }
    let wal = open(&store, WalConfig::default()).await;
    assert_eq!(payloads(&read_all(&wal).await), sent);
    assert_eq!(store.segment_ids().await, (1..=12).collect::<Vec<_>>());
}

async fn reading_a_cleaned_segment_handle_is_invalid_handle(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let segs = timed_log(&wal).await;
    assert_eq!(wal.clean(1000).await.unwrap(), vec![1, 2, 3]);
    for (h, _) in segs[..3].iter().flatten() {
        let err = wal.read(*h).await.unwrap_err();
        assert!(
            matches!(err, WalError::InvalidHandle { handle, .. } if handle == *h),
            "{err:?}"
        );
    }
    for (h, t) in &segs[3] {
        assert_eq!(
            wal.read(*h).await.unwrap().as_ref(),
            format!("t={t}").as_bytes()
        );
    }
    // Iterating from a cleaned position continues with what is left.
    let rest = wal
        .iter_from(segs[0][0].0.position())
        .collect_all()
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert_eq!(rest[0].handle, segs[3][0].0);
}

/// A handle into a cleaned record must never come to name another record after a reopen (the
/// reader would get the wrong bytes instead of `InvalidHandle`): segment ids are never reused.
async fn segment_ids_are_not_reused_after_cleaning_and_reopening(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let mut old = Vec::new();
    for (i, p) in [b"old1", b"old2"].iter().enumerate() {
        old.push((wal.append_at(1, Bytes::from_static(*p)).await.unwrap(), *p));
        if i == 0 {
            wal.roll().await.unwrap();
        }
    }
    wal.roll().await.unwrap();
    // Sealed and old: as much as `clean` may ever delete.
    let deleted = wal.clean(u64::MAX).await.unwrap();
    assert!(deleted.contains(&1), "{deleted:?}");
    wal.close().await.unwrap();
    // After a reopen no segment is active: clean again.
    let wal = open(&store, WalConfig::default()).await;
    wal.clean(u64::MAX).await.unwrap();
    wal.close().await.unwrap();

    let wal = open(&store, WalConfig::default()).await;
    for p in [b"new1", b"new2"] {
        let new = wal.append_at(2, Bytes::from_static(p)).await.unwrap();
        wal.roll().await.unwrap();
        assert!(
            old.iter().all(|(h, _)| new.segment > h.segment),
            "segment id {} was reused",
            new.segment
        );
    }
    for (h, p) in &old {
        match wal.read(*h).await {
            Ok(bytes) => assert_eq!(
                bytes.as_ref(),
                &p[..],
                "old handle {h} reads another record"
            ),
            Err(WalError::InvalidHandle { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(matches!(
        wal.read(old[0].0).await,
        Err(WalError::InvalidHandle { .. })
    ));
}

async fn append_after_close_is_refused_as_closed(mode: Mode) {
    let store = Store::new(mode);
    let wal = open(&store, WalConfig::default()).await;
    let other = wal.clone();
    let h = append(&wal, b"kept").await;
    wal.close().await.unwrap();
    let err = other.append(Bytes::from_static(b"late")).await.unwrap_err();
    assert!(matches!(err, WalError::Closed { .. }), "{err:?}");
    let err = other.roll().await.unwrap_err();
    assert!(matches!(err, WalError::Closed { .. }), "{err:?}");
    drop(other);
    let wal = open(&store, WalConfig::default()).await;
    assert_eq!(payloads(&read_all(&wal).await), vec![b"kept".to_vec()]);
    assert_eq!(wal.read(h).await.unwrap().as_ref(), b"kept");
}

/// An acknowledged append: where it went and what it was.
type Acked = (RecordHandle, Vec<u8>);

in_every_mode!(sync cancelled_appends_never_tear_the_log_and_lose_no_acknowledged_record);

/// Appends from tasks aborted mid-way and from futures dropped after one poll, then the
/// process "dies" (the runtime is dropped with the log still open) and the log is reopened.
fn cancelled_appends_never_tear_the_log_and_lose_no_acknowledged_record(mode: Mode) {
    let store = Store::new(mode);
    for round in 0..3 {
        let submitted: Arc<Mutex<HashSet<Vec<u8>>>> = Arc::default();
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let before = {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let before = rt.block_on(async {
                let (wal, report) = Wal::open(store.storage(), WalConfig::default())
                    .await
                    .unwrap();
                assert!(report.torn_tails.is_empty(), "{report:?}");
                let before = payloads(&read_all(&wal).await);
                let mut tasks = Vec::new();
                for task in 0..12 {
                    let wal = wal.clone();
                    let submitted = Arc::clone(&submitted);
                    let acked = Arc::clone(&acked);
                    tasks.push(tokio::spawn(async move {
                        for i in 0.. {
                            let p = tagged(&format!("round {round} task {task} #{i}"), 40 + i % 50);
                            submitted.lock().unwrap().insert(p.clone());
                            if i % 3 == 2 {
                                // Polled once, then dropped.
                                if let Some(Ok(h)) =
                                    wal.append(Bytes::from(p.clone())).now_or_never()
                                {
                                    acked.lock().unwrap().push((h, p));
                                }
                                tokio::task::yield_now().await;
                            } else {
                                let h = wal.append(Bytes::from(p.clone())).await.unwrap();
                                acked.lock().unwrap().push((h, p));
                            }
                        }
                    }));
                }
                // Let some appends complete, then abort half of the tasks mid-flight.
                let acked_count = || acked.lock().unwrap().len();
                while acked_count() < 40 {
                    tokio::task::yield_now().await;
                }
                for t in tasks.iter().step_by(2) {
                    t.abort();
                }
                // The other half keeps appending for a while after the first half is gone.
                let target = acked_count() + 20;
                while acked_count() < target {
                    tokio::task::yield_now().await;
                }
                for t in tasks.iter().skip(1).step_by(2) {
                    t.abort();
                }
                // The log itself is dropped without close, with appends still queued.
                drop(wal);
                before
            });
            // The "process" dies: the writer and any in-flight storage call stop here.
            drop(rt);
            before
        };

        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (wal, _report) = Wal::open(store.storage(), WalConfig::default())
                .await
                .unwrap();
            let all = read_all(&wal).await;
            let (old, new) = all.split_at(before.len());
            assert_eq!(payloads(old), before, "{mode:?}: an earlier record changed");
            // Whatever else is there is whole: one of the submitted payloads, at most once.
            let submitted = submitted.lock().unwrap().clone();
            let mut seen = BTreeSet::new();
            for r in new {
                assert!(
                    submitted.contains(r.payload.as_ref()),
                    "{mode:?}: {:?}",
                    r.payload
                );
                assert!(seen.insert(r.payload.to_vec()), "{mode:?}: record twice");
                assert_eq!(wal.read(r.handle).await.unwrap(), r.payload);
            }
            // Every acknowledged record is there, at its handle, in handle order.
            let mut acked = acked.lock().unwrap().clone();
            acked.sort();
            assert!(acked.len() >= 40);
            let at: BTreeMap<RecordHandle, Vec<u8>> =
                new.iter().map(|r| (r.handle, r.payload.to_vec())).collect();
            for (h, p) in &acked {
                assert_eq!(at.get(h), Some(p), "{mode:?}: acknowledged record {h} lost");
            }
            let order: Vec<RecordHandle> = new.iter().map(|r| r.handle).collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]));
            // And the log still takes appends.
            let h = wal.append(Bytes::from_static(b"after")).await.unwrap();
            assert_eq!(wal.read(h).await.unwrap().as_ref(), b"after");
            let end = wal.iter_from(Position::START).collect_all().await.unwrap();
            assert_eq!(end.last().unwrap().payload.as_ref(), b"after");
            wal.close().await.unwrap();
        });
    }
}
