//! The receiver WAL is cleaned by position, so a wall clock that steps forward cannot delete a
//! block on its way to the tracker (issue 16, item 10).
//!
//! The bug this guards: the generator deleted the receiver WAL's sealed segments whose records
//! were all older than `min(oldest live block, now − 10 s)`; the 10 s margin was all that kept
//! a block appended but not yet reported to the tracker. Step the clock forward and the margin
//! is gone: the block's segment is deleted, and the block — acknowledged a moment later, once
//! the tracker has it — can never be read back.

use bytes::Bytes;
use ractor::Actor;

use crate::clock::{now_ms, step_this_thread};
use crate::ingest::blocks::{BlockInfo, encode_records};
use crate::ingest::in_flight::{InFlight, WalFloor, clean_receiver_wal};
use crate::ingest::received_block_tracker::{
    ReceivedBlockTracker, ReceivedBlockTrackerArgs, ReceivedBlockTrackerMsg,
};
use crate::wal::{RecordHandle, Wal, WalConfig};
use crate::{EventSink, Storage};

async fn append(wal: &Wal, record: &'static [u8]) -> RecordHandle {
    let payload = encode_records(&[Bytes::from_static(record)]).unwrap();
    wal.append(Bytes::from(payload)).await.unwrap()
}

fn info(handle: RecordHandle, stored_ms: u64) -> BlockInfo {
    BlockInfo {
        stream: 0,
        handle,
        records: 1,
        stored_ms,
    }
}

#[tokio::test]
async fn a_block_on_its_way_survives_a_clock_step_and_garbage_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let root = Storage::local(dir.path());
    let (wal, _) = Wal::open(root.join("receiver-wal"), WalConfig::default())
        .await
        .unwrap();
    let (tracker, _) = Actor::spawn(
        None,
        ReceivedBlockTracker,
        ReceivedBlockTrackerArgs {
            wal_storage: root.join("tracker-wal"),
            wal_config: WalConfig::default(),
            events: EventSink::discard(),
        },
    )
    .await
    .unwrap();
    let in_flight = InFlight::default();

    // A receiver supervisor appends a block and has not reported it yet.
    let on_its_way = in_flight.enter(wal.newest_segment());
    let early = append(&wal, b"on its way").await;
    // Another stream's block lands in a newer segment and is reported at once.
    wal.roll().await.unwrap();
    let later = append(&wal, b"reported").await;
    assert!(later.segment > early.segment);
    ractor::call!(
        tracker,
        ReceivedBlockTrackerMsg::AddBlocks,
        vec![info(later, now_ms())]
    )
    .unwrap()
    .unwrap();

    // The clock steps an hour forward; a checkpoint is durable; the generator cleans.
    step_this_thread(3_600_000);
    clean_receiver_wal(&wal, WalFloor::read(&wal, &in_flight), &tracker).await;
    assert_eq!(
        wal.read(early).await.unwrap(),
        Bytes::from(encode_records(&[Bytes::from_static(b"on its way")]).unwrap()),
        "the block on its way was cleaned with its segment"
    );

    // Given up on (never reported): garbage, and cleaned.
    drop(on_its_way);
    clean_receiver_wal(&wal, WalFloor::read(&wal, &in_flight), &tracker).await;
    assert!(
        wal.read(early).await.is_err(),
        "a segment holding nothing needed is deleted"
    );
    assert!(
        wal.read(later).await.is_ok(),
        "a live block's segment is kept"
    );
    step_this_thread(-3_600_000);
}
