//! Files written by weir 0.1 (format version 1) still open and read back exactly: the receiver
//! and tracker WALs' segment layout in `tests/fixtures/wal-v1/` (two segments, five records, an
//! empty one and binary ones among them). The checkpoint of the same release is checked in
//! `checkpoint.rs` (`tests/fixtures/checkpoint-v1.bin`). A change to the on-disk formats that
//! breaks either fails here; a deliberate one adds a version (see `docs/architecture.md`,
//! "Version changes") and keeps these files readable.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_actors::Storage;
use weir_actors::wal::{Position, RecordHandle, Wal, WalConfig, inspect};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wal-v1")
}

/// What weir 0.1 appended: (segment, offset, time, payload). Never change these: the fixture
/// is the record of what that release wrote.
const RECORDS: [(u64, u64, u64, &[u8]); 5] = [
    (1, 32, 1_700_000_000_000, b"alpha"),
    (1, 53, 1_700_000_000_001, b""),
    (1, 69, 1_700_000_000_002, b"gamma-gamma"),
    (2, 32, 1_700_000_001_000, b"delta"),
    (2, 53, 1_700_000_001_001, &[0, 1, 2, 255]),
];

/// A copy of the fixture: opening a log may cut a torn tail or start a segment.
fn copy_of_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

#[tokio::test]
async fn a_wal_written_by_weir_0_1_opens_and_reads_back_every_record() {
    let dir = copy_of_fixture();
    let report = inspect(&Storage::local(dir.path())).await.unwrap();
    assert!(
        report.segments.iter().all(|s| s.damage.is_none()),
        "{report:?}"
    );
    assert_eq!(report.records, RECORDS.len() as u64);
    let (wal, recovery) = Wal::open(Storage::local(dir.path()), WalConfig::default())
        .await
        .unwrap();
    assert!(recovery.torn_tails.is_empty(), "{recovery:?}");
    let mut iter = wal.iter_from(Position::START);
    for (segment, offset, time_ms, payload) in RECORDS {
        let record = iter.next().await.unwrap().unwrap();
        let handle = RecordHandle {
            segment,
            offset,
            length: payload.len() as u32,
        };
        assert_eq!(record.handle, handle);
        assert_eq!(record.time_ms, time_ms);
        assert_eq!(record.payload, Bytes::from_static(payload));
        assert_eq!(wal.read(handle).await.unwrap(), Bytes::from_static(payload));
    }
    assert!(
        iter.next().await.is_none(),
        "no record more than weir 0.1 wrote"
    );
    // And the log goes on: a new record after the old ones.
    let new = wal.append(Bytes::from_static(b"after")).await.unwrap();
    assert!(
        new.segment > 2,
        "a reopened log starts a new segment: {new:?}"
    );
    wal.close().await.unwrap();
}
