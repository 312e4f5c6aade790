//! Exhaustive damage: every truncation and every bit flip of the newest segment, zeroed
//! tails, and damage that recovery must refuse (sealed segments, strict mode, headers, gaps).
//!
//! Also crafted numbers (issue 16, item 11): a segment id or a record handle near `u64::MAX` /
//! `u32::MAX` once made recovery, the writer or a read add past the integer's end — a panic in
//! a debug build, a wrapped id or offset in a release build. They are refused instead.

// Helpers outside `#[test]` functions are test code too (clippy's `allow-unwrap-in-tests`
// only covers the test functions themselves).
#![allow(clippy::unwrap_used)]
#[macro_use]
mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::{Events, Mode, Store, payloads, read_all};
use weir_actors::Event;
use weir_actors::wal::format::{FRAME_HEADER_LEN, SEGMENT_HEADER_LEN, encode_header};
use weir_actors::wal::{
    Position, RecordHandle, RecoveryAction, RecoveryMode, RecoveryReport, Wal, WalConfig, WalError,
    inspect,
};

const HEADER: u64 = SEGMENT_HEADER_LEN as u64;

/// The four small records of the segment that gets damaged.
const FOUR: [&[u8]; 4] = [b"alpha", b"", b"gamma-gamma", b"delta!!"];

/// One segment of a built log.
#[derive(Debug)]
struct Seg {
    id: u64,
    payloads: Vec<Vec<u8>>,
    /// `ends[0]` is the end of the header; `ends[k]` the end of the k-th frame.
    ends: Vec<u64>,
    bytes: Vec<u8>,
}

impl Seg {
    fn len(&self) -> u64 {
        *self.ends.last().unwrap()
    }
}

/// A log written by the WAL itself, one group commit per record, closed cleanly.
struct Built {
    segs: Vec<Seg>,
    snapshot: BTreeMap<String, Vec<u8>>,
}

impl Built {
    fn newest(&self) -> &Seg {
        self.segs.last().unwrap()
    }

    /// The payloads of every segment before the newest.
    fn sealed_payloads(&self) -> Vec<Vec<u8>> {
        let sealed = &self.segs[..self.segs.len() - 1];
        sealed.iter().flat_map(|s| s.payloads.clone()).collect()
    }
}

async fn build(store: &Store, segments: &[&[&[u8]]]) -> Built {
    let (wal, _) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    let mut segs = Vec::new();
    for (n, payloads) in segments.iter().enumerate() {
        let mut ends = vec![HEADER];
        let mut id = 0;
        for p in *payloads {
            let h = wal.append(Bytes::copy_from_slice(p)).await.unwrap();
            assert_eq!(h.offset, *ends.last().unwrap());
            id = h.segment;
            ends.push(h.next_position().offset);
        }
        assert_eq!(id, n as u64 + 1);
        wal.roll().await.unwrap();
        segs.push(Seg {
            id,
            payloads: payloads.iter().map(|p| p.to_vec()).collect(),
            ends,
            bytes: Vec::new(),
        });
    }
    wal.close().await.unwrap();
    for s in &mut segs {
        s.bytes = store.read_segment(s.id).await;
        assert_eq!(s.bytes.len() as u64, s.len());
    }
    Built {
        segs,
        snapshot: store.snapshot().await,
    }
}

fn torn_cuts(events: &[Event]) -> Vec<(u64, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::WalTornTailCut {
                segment,
                offset,
                discarded_bytes,
                ..
            } => Some((*segment, *offset, *discarded_bytes)),
            _ => None,
        })
        .collect()
}

fn reported(report: &RecoveryReport) -> Vec<(u64, u64, u64)> {
    report
        .torn_tails
        .iter()
        .map(|t| {
            assert!(!t.reason.is_empty());
            (t.segment, t.offset, t.discarded_bytes)
        })
        .collect()
}

async fn open_reporting(store: &Store, config: WalConfig) -> (Wal, Vec<(u64, u64, u64)>) {
    let events = Events::new();
    let (wal, report) = Wal::open(
        store.storage(),
        WalConfig {
            events: events.sink(),
            ..config
        },
    )
    .await
    .unwrap();
    let cuts = reported(&report);
    assert_eq!(
        torn_cuts(&events.take()),
        cuts,
        "events and report disagree"
    );
    assert_eq!(report.records as usize, read_all(&wal).await.len());
    (wal, cuts)
}

/// Asserts `open` fails with `Corrupt` at `segment`/`offset` and leaves storage untouched.
async fn assert_corrupt(store: &Store, config: WalConfig, segment: u64, offset: u64, what: &str) {
    let before = store.snapshot().await;
    let events = Events::new();
    let err = Wal::open(
        store.storage(),
        WalConfig {
            events: events.sink(),
            ..config
        },
    )
    .await
    .unwrap_err();
    match &err {
        WalError::Corrupt {
            segment: s,
            offset: o,
            ..
        } => assert_eq!((*s, *o), (segment, offset), "{what}: {err}"),
        other => {
            panic!("{what}: expected Corrupt at segment {segment} offset {offset}, got {other:?}")
        }
    }
    assert!(torn_cuts(&events.take()).is_empty(), "{what}");
    assert_eq!(
        store.snapshot().await,
        before,
        "{what}: a refused open changed storage"
    );
}

/// After damage has been handled: a second open reports nothing new and a new append works.
async fn assert_settled(store: &Store, expect: &[Vec<u8>]) {
    let (wal, cuts) = open_reporting(store, WalConfig::default()).await;
    assert!(cuts.is_empty(), "second open cut again: {cuts:?}");
    assert_eq!(payloads(&read_all(&wal).await), expect);
    let h = wal.append(Bytes::from_static(b"fresh")).await.unwrap();
    assert_eq!(wal.read(h).await.unwrap().as_ref(), b"fresh");
    let mut with_fresh = expect.to_vec();
    with_fresh.push(b"fresh".to_vec());
    assert_eq!(payloads(&read_all(&wal).await), with_fresh);
    wal.close().await.unwrap();
}

in_every_mode!(async
    every_truncation_of_the_only_segment_keeps_exactly_the_whole_frames_before_it,
    every_truncation_of_the_newest_segment_keeps_the_sealed_segment_intact,
    every_bit_flip_in_the_last_frame_loses_only_the_last_record,
    zeroed_tail_after_the_last_record_is_cut,
    damage_in_a_sealed_segment_is_corrupt_at_its_offset_and_changes_nothing,
    strict_mode_refuses_a_torn_tail_and_changes_nothing,
    invalid_header_in_front_of_records_is_corrupt_not_dropped,
    a_segment_id_of_u64_max_is_refused_not_wrapped,
    the_last_segment_id_is_never_used_so_the_log_always_reopens,
    handles_near_the_integer_limits_are_invalid_not_wrapped,
);

async fn every_truncation_of_the_only_segment_keeps_exactly_the_whole_frames_before_it(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&FOUR]).await;
    every_truncation(&store, &built).await;
}

async fn every_truncation_of_the_newest_segment_keeps_the_sealed_segment_intact(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&[b"sealed one", b"sealed two"], &FOUR]).await;
    every_truncation(&store, &built).await;
}

async fn every_truncation(store: &Store, built: &Built) {
    let newest = built.newest();
    for t in 0..=newest.len() {
        store.restore(&built.snapshot).await;
        store
            .replace_segment(newest.id, &newest.bytes[..t as usize])
            .await;

        let (wal, cuts) = open_reporting(store, WalConfig::default()).await;
        let kept = newest.ends[1..].iter().filter(|end| **end <= t).count();
        let mut expect = built.sealed_payloads();
        expect.extend_from_slice(&newest.payloads[..kept]);
        let records = read_all(&wal).await;
        assert_eq!(payloads(&records), expect, "cut at {t}");
        for r in records.iter().filter(|r| r.handle.segment == newest.id) {
            assert_eq!(wal.read(r.handle).await.unwrap(), r.payload);
        }

        let whole = newest.ends.contains(&t);
        let cut_at = if t < HEADER { 0 } else { newest.ends[kept] };
        if whole {
            assert!(
                cuts.is_empty(),
                "cut at frame boundary {t} reported {cuts:?}"
            );
        } else {
            assert_eq!(cuts, vec![(newest.id, cut_at, t - cut_at)], "cut at {t}");
        }
        let stored = store.segment_ids().await;
        if t < HEADER {
            assert!(
                !stored.contains(&newest.id),
                "cut at {t}: segment not removed"
            );
            assert!(wal.segments().iter().all(|s| s.id != newest.id));
        } else {
            assert_eq!(
                store.read_segment(newest.id).await,
                newest.bytes[..cut_at as usize],
                "cut at {t}: stored bytes"
            );
        }
        // Sealed segments are untouched.
        for s in &built.segs[..built.segs.len() - 1] {
            assert_eq!(store.read_segment(s.id).await, s.bytes);
        }
        wal.close().await.unwrap();
        assert_settled(store, &expect).await;
    }
}

async fn every_bit_flip_in_the_last_frame_loses_only_the_last_record(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&FOUR]).await;
    let seg = built.newest();
    let (start, end) = (seg.ends[3], seg.ends[4]);
    assert_eq!(end - start, (FRAME_HEADER_LEN + FOUR[3].len()) as u64);
    for bit in 0..(end - start) * 8 {
        store.restore(&built.snapshot).await;
        let mut bytes = seg.bytes.clone();
        bytes[(start + bit / 8) as usize] ^= 1 << (bit % 8);
        store.replace_segment(seg.id, &bytes).await;

        let (wal, cuts) = open_reporting(&store, WalConfig::default()).await;
        assert_eq!(
            payloads(&read_all(&wal).await),
            seg.payloads[..3].to_vec(),
            "bit {bit} of the last frame"
        );
        assert_eq!(cuts, vec![(seg.id, start, end - start)], "bit {bit}");
        wal.close().await.unwrap();
    }
    // The last of them, settled.
    assert_settled(&store, &seg.payloads[..3]).await;
}

async fn zeroed_tail_after_the_last_record_is_cut(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&FOUR]).await;
    let seg = built.newest();
    store.append_raw(&[0; 4096]).await;
    let (wal, cuts) = open_reporting(&store, WalConfig::default()).await;
    assert_eq!(payloads(&read_all(&wal).await), seg.payloads);
    assert_eq!(cuts, vec![(seg.id, seg.len(), 4096)]);
    assert_eq!(store.read_segment(seg.id).await, seg.bytes);
    wal.close().await.unwrap();
    assert_settled(&store, &seg.payloads).await;
}

async fn damage_in_a_sealed_segment_is_corrupt_at_its_offset_and_changes_nothing(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&FOUR, &[b"newest"]]).await;
    let sealed = &built.segs[0];
    let strict = WalConfig {
        recovery_mode: RecoveryMode::Strict,
        ..WalConfig::default()
    };
    let damages: Vec<(&str, Vec<u8>, u64)> = vec![
        (
            "flipped payload byte of record 3",
            {
                let mut b = sealed.bytes.clone();
                b[sealed.ends[2] as usize + FRAME_HEADER_LEN] ^= 0x40;
                b
            },
            sealed.ends[2],
        ),
        (
            "flipped length of record 2",
            {
                let mut b = sealed.bytes.clone();
                b[sealed.ends[1] as usize] ^= 0x01;
                b
            },
            sealed.ends[1],
        ),
        (
            "cut inside record 4",
            sealed.bytes[..sealed.ends[3] as usize + 3].to_vec(),
            sealed.ends[3],
        ),
        (
            "zeroes after the last record",
            {
                let mut b = sealed.bytes.clone();
                b.extend_from_slice(&[0; 512]);
                b
            },
            sealed.len(),
        ),
        (
            "flipped header byte",
            {
                let mut b = sealed.bytes.clone();
                b[12] ^= 0x80;
                b
            },
            0,
        ),
        ("cut inside the header", sealed.bytes[..10].to_vec(), 0),
        ("empty", Vec::new(), 0),
    ];
    for (what, bytes, offset) in damages {
        store.restore(&built.snapshot).await;
        store.replace_segment(sealed.id, &bytes).await;
        for config in [WalConfig::default(), strict.clone()] {
            assert_corrupt(&store, config, sealed.id, offset, what).await;
        }
    }
    // With the damage repaired, the log opens whole.
    store.restore(&built.snapshot).await;
    let (wal, cuts) = open_reporting(&store, WalConfig::default()).await;
    assert!(cuts.is_empty());
    let mut all = sealed.payloads.clone();
    all.push(b"newest".to_vec());
    assert_eq!(payloads(&read_all(&wal).await), all);
}

async fn strict_mode_refuses_a_torn_tail_and_changes_nothing(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&[b"sealed"], &FOUR]).await;
    let seg = built.newest();
    let strict = WalConfig {
        recovery_mode: RecoveryMode::Strict,
        ..WalConfig::default()
    };
    // A torn frame after the last record.
    let mut torn = Vec::new();
    weir_actors::wal::format::encode_frame(&mut torn, 9, b"half of me is missing");
    store.append_raw(&torn[..torn.len() / 2]).await;
    assert_corrupt(
        &store,
        strict.clone(),
        seg.id,
        seg.len(),
        "strict, torn frame",
    )
    .await;
    // A segment whose creation was interrupted (a torn header).
    store.restore(&built.snapshot).await;
    store.replace_segment(seg.id, &seg.bytes[..7]).await;
    assert_corrupt(&store, strict.clone(), seg.id, 0, "strict, torn header").await;
    // A flipped bit in the last record.
    store.restore(&built.snapshot).await;
    let mut flipped = seg.bytes.clone();
    *flipped.last_mut().unwrap() ^= 0x02;
    store.replace_segment(seg.id, &flipped).await;
    assert_corrupt(
        &store,
        strict.clone(),
        seg.id,
        seg.ends[3],
        "strict, flipped bit",
    )
    .await;
    // The default mode cuts that same tail.
    let (wal, cuts) = open_reporting(&store, WalConfig::default()).await;
    assert_eq!(cuts, vec![(seg.id, seg.ends[3], seg.len() - seg.ends[3])]);
    wal.close().await.unwrap();
    // An undamaged log opens in strict mode.
    store.restore(&built.snapshot).await;
    let (wal, cuts) = open_reporting(&store, strict).await;
    assert!(cuts.is_empty());
    let mut all = vec![b"sealed".to_vec()];
    all.extend(seg.payloads.clone());
    assert_eq!(payloads(&read_all(&wal).await), all);
}

async fn invalid_header_in_front_of_records_is_corrupt_not_dropped(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&[b"sealed"], &FOUR]).await;
    let seg = built.newest();
    for byte in [0, 8, 12, 20, 28, 31] {
        store.restore(&built.snapshot).await;
        let mut bytes = seg.bytes.clone();
        bytes[byte] ^= 0x10;
        store.replace_segment(seg.id, &bytes).await;
        assert_corrupt(
            &store,
            WalConfig::default(),
            seg.id,
            0,
            &format!("header byte {byte}"),
        )
        .await;
    }
    // A valid header of another segment in front of the records.
    store.restore(&built.snapshot).await;
    let mut bytes = seg.bytes.clone();
    bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&built.segs[0].bytes[..SEGMENT_HEADER_LEN]);
    store.replace_segment(seg.id, &bytes).await;
    assert_corrupt(
        &store,
        WalConfig::default(),
        seg.id,
        0,
        "header of segment 1",
    )
    .await;
}

/// Object layouts only: a chunk object missing from the middle of a segment.
async fn missing_middle_chunk(mode: Mode) {
    let store = Store::new(mode);
    let built = build(&store, &[&FOUR, &FOUR]).await;
    let (sealed, newest) = (&built.segs[0], built.newest());
    // One chunk for the header, then one per group commit.
    let starts: Vec<u64> = store.chunks(newest.id).await.iter().map(|c| c.0).collect();
    let expect_starts: Vec<u64> = [0]
        .into_iter()
        .chain(newest.ends[..4].iter().copied())
        .collect();
    assert_eq!(starts, expect_starts);

    // Newest segment: the tail from the gap is cut, chunks beyond it included.
    store.delete_chunk(newest.id, newest.ends[1]).await;
    let (wal, cuts) = open_reporting(&store, WalConfig::default()).await;
    let mut expect = sealed.payloads.clone();
    expect.push(newest.payloads[0].clone());
    assert_eq!(payloads(&read_all(&wal).await), expect);
    assert_eq!(
        cuts,
        vec![(newest.id, newest.ends[1], newest.len() - newest.ends[2])]
    );
    let left: Vec<u64> = store.chunks(newest.id).await.iter().map(|c| c.0).collect();
    assert_eq!(left, vec![0, HEADER]);
    wal.close().await.unwrap();
    assert_settled(&store, &expect).await;

    // Sealed segment: refused, nothing changed.
    store.restore(&built.snapshot).await;
    store.delete_chunk(sealed.id, sealed.ends[2]).await;
    assert_corrupt(
        &store,
        WalConfig::default(),
        sealed.id,
        sealed.ends[2],
        "sealed gap",
    )
    .await;
    // A missing first chunk (the header) in front of records is refused too.
    store.restore(&built.snapshot).await;
    store.delete_chunk(newest.id, 0).await;
    assert_corrupt(
        &store,
        WalConfig::default(),
        newest.id,
        0,
        "missing header chunk",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_middle_chunk_cuts_the_newest_segment_and_is_corrupt_in_a_sealed_one_memory() {
    missing_middle_chunk(Mode::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_middle_chunk_cuts_the_newest_segment_and_is_corrupt_in_a_sealed_one_object_fs() {
    missing_middle_chunk(Mode::ObjectFs).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_middle_chunk_cuts_the_newest_segment_and_is_corrupt_in_a_sealed_one_s3() {
    missing_middle_chunk(Mode::S3).await;
}

// ================================= crafted numbers ================================= //

/// A segment named (and headed) `u64::MAX` leaves no id for the next segment: recovery refuses
/// the log before changing anything, and inspection says it would.
async fn a_segment_id_of_u64_max_is_refused_not_wrapped(mode: Mode) {
    let store = empty_log(mode).await;
    store
        .replace_segment(u64::MAX, &encode_header(u64::MAX, 1))
        .await;
    assert_corrupt(
        &store,
        WalConfig::default(),
        u64::MAX,
        0,
        "segment u64::MAX",
    )
    .await;
    let found = inspect(&store.storage()).await.unwrap();
    assert!(
        matches!(found.recovery, RecoveryAction::RefuseCorrupt { segment, offset: 0, .. } if segment == u64::MAX),
        "{:?}",
        found.recovery
    );
}

/// A store holding an empty log (its directory created), for crafted segments to be put in.
async fn empty_log(mode: Mode) -> Store {
    let store = Store::new(mode);
    let (wal, _) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    wal.close().await.unwrap();
    store
}

/// After a segment `u64::MAX - 1` the writer does not create segment `u64::MAX` (which would
/// leave no id after it): the append fails with a sentence, and the log still reopens.
async fn the_last_segment_id_is_never_used_so_the_log_always_reopens(mode: Mode) {
    let store = empty_log(mode).await;
    let last = u64::MAX - 1;
    store.replace_segment(last, &encode_header(last, 1)).await;
    let (wal, report) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    assert_eq!(report.next_segment, u64::MAX);
    let err = wal.append(Bytes::from_static(b"x")).await.unwrap_err();
    assert!(
        err.to_string().contains("no segment id is left"),
        "unexpected error: {err}"
    );
    drop(wal);
    assert_eq!(store.segment_ids().await, vec![last]);
    let (wal, _) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    assert!(read_all(&wal).await.is_empty());
    wal.close().await.unwrap();
}

/// A handle read from a crafted checkpoint or block record whose offset plus length passes the
/// end of `u64` is `InvalidHandle`, and its next position stops at the end instead of wrapping.
async fn handles_near_the_integer_limits_are_invalid_not_wrapped(mode: Mode) {
    let store = Store::new(mode);
    let (wal, _) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    let h = wal.append(Bytes::from_static(b"record")).await.unwrap();
    for (offset, length) in [
        (u64::MAX, 0),
        (u64::MAX - 8, 100),
        (u64::MAX - FRAME_HEADER_LEN as u64, u32::MAX),
        (HEADER, u32::MAX),
        (h.offset, u32::MAX),
    ] {
        let crafted = RecordHandle {
            segment: h.segment,
            offset,
            length,
        };
        let err = wal.read(crafted).await.unwrap_err();
        assert!(
            matches!(&err, WalError::InvalidHandle { handle, .. } if *handle == crafted),
            "{crafted}: {err}"
        );
        let next = crafted.next_position();
        assert_eq!(next.segment, h.segment);
        assert!(next.offset >= offset, "{crafted}: wrapped to {next:?}");
    }
    let end = RecordHandle {
        segment: h.segment,
        offset: u64::MAX - 8,
        length: 100,
    };
    assert_eq!(
        end.next_position(),
        Position {
            segment: h.segment,
            offset: u64::MAX
        }
    );
    assert_eq!(wal.read(h).await.unwrap().as_ref(), b"record");
    wal.close().await.unwrap();
}
