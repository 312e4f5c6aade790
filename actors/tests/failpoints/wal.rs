//! WAL storage failures injected at every failpoint: a failed append is never acknowledged,
//! a failed write is undone, a failed fsync poisons the log, and nothing acknowledged is ever
//! lost across a reopen.

// Helpers outside `#[test]` functions are test code too (clippy's `allow-unwrap-in-tests`
// only covers the test functions themselves).
#![allow(clippy::unwrap_used)]
#[path = "../common/mod.rs"]
mod common;

use bytes::Bytes;
use common::{Events, Mode, Store, payloads, read_all};
use fail::FailScenario;
use weir_actors::StorageError;
use weir_actors::wal::{Wal, WalConfig, WalError};

async fn open(store: &Store) -> Wal {
    let (wal, report) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    assert!(report.torn_tails.is_empty(), "{report:?}");
    wal
}

/// Appends `n` records and returns their payloads.
async fn acked(wal: &Wal, tag: &str, n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..n {
        let p = format!("{tag} {i}").into_bytes();
        let h = wal.append(Bytes::from(p.clone())).await.unwrap();
        assert_eq!(wal.read(h).await.unwrap().as_ref(), p.as_slice());
        out.push(p);
    }
    out
}

fn assert_append_failed(err: &WalError, failpoint: &str) {
    match err {
        WalError::AppendFailed { cause, .. } => match cause.as_ref() {
            StorageError::Injected { failpoint: fp, .. } => assert_eq!(*fp, failpoint),
            other => panic!("expected failpoint {failpoint}, got {other:?}"),
        },
        other => panic!("expected AppendFailed from {failpoint}, got {other:?}"),
    }
}

/// Reopens the log and checks it holds exactly `expect`, with no torn tail reported.
async fn assert_reopens_with(store: &Store, expect: &[Vec<u8>]) {
    let events = Events::new();
    let (wal, report) = Wal::open(store.storage(), events.config()).await.unwrap();
    assert!(report.torn_tails.is_empty(), "{report:?}");
    assert!(events.take().is_empty());
    assert_eq!(payloads(&read_all(&wal).await), expect);
    let h = wal
        .append(Bytes::from_static(b"after reopen"))
        .await
        .unwrap();
    assert_eq!(wal.read(h).await.unwrap().as_ref(), b"after reopen");
    wal.close().await.unwrap();
}

/// A failure at `failpoint` is undone: the append fails, storage is as before, the next append
/// succeeds, and after a reopen the failed record is absent and every acknowledged one present.
async fn failed_append_is_undone(mode: Mode, failpoint: &str) {
    let store = Store::new(mode);
    let wal = open(&store).await;
    let mut expect = acked(&wal, "before", 3).await;
    let stored = store.snapshot().await;

    fail::cfg(failpoint, "return").unwrap();
    let err = wal.append(Bytes::from_static(b"doomed")).await.unwrap_err();
    assert_append_failed(&err, failpoint);
    // Concurrent appends in the failing group all fail, none is acknowledged.
    let group = (0..4).map(|i| wal.append(Bytes::from(format!("doomed {i}"))));
    for result in futures::future::join_all(group).await {
        assert_append_failed(&result.unwrap_err(), failpoint);
    }
    fail::remove(failpoint);
    assert_eq!(
        store.snapshot().await,
        stored,
        "{failpoint}: the failed write was not undone"
    );
    assert_eq!(wal.stats().failed_appends, 5);

    expect.extend(acked(&wal, "after", 2).await);
    assert_eq!(payloads(&read_all(&wal).await), expect);
    wal.close().await.unwrap();
    assert_reopens_with(&store, &expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_write_is_undone_and_the_next_append_succeeds() {
    let scenario = FailScenario::setup();
    failed_append_is_undone(Mode::Local, "wal::write").await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_write_is_undone_and_never_reported_as_a_torn_tail() {
    let scenario = FailScenario::setup();
    failed_append_is_undone(Mode::Local, "wal::write::torn").await;
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_object_close_fails_the_append_and_the_next_one_succeeds() {
    let scenario = FailScenario::setup();
    for mode in [Mode::Memory, Mode::ObjectFs] {
        failed_append_is_undone(mode, "wal::close").await;
    }
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_object_close_of_a_new_segment_leaves_no_segment_behind() {
    let scenario = FailScenario::setup();
    for mode in [Mode::Memory, Mode::ObjectFs] {
        let store = Store::new(mode);
        let wal = open(&store).await;
        let mut expect = acked(&wal, "before", 2).await;
        wal.roll().await.unwrap();
        fail::cfg("wal::close", "return").unwrap();
        let err = wal.append(Bytes::from_static(b"doomed")).await.unwrap_err();
        assert_append_failed(&err, "wal::close");
        fail::remove("wal::close");
        assert_eq!(store.segment_ids().await, vec![1], "{mode:?}");
        expect.extend(acked(&wal, "after", 2).await);
        wal.close().await.unwrap();
        assert_reopens_with(&store, &expect).await;
    }
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_fsync_poisons_the_log_and_reopen_recovers_every_acked_record() {
    let scenario = FailScenario::setup();
    let store = Store::new(Mode::Local);
    let wal = open(&store).await;
    let expect = acked(&wal, "before", 3).await;

    fail::cfg("wal::fsync", "return").unwrap();
    let err = wal.append(Bytes::from_static(b"doomed")).await.unwrap_err();
    assert_append_failed(&err, "wal::fsync");
    fail::remove("wal::fsync");
    // The kernel may have dropped the dirty pages: the log no longer vouches for its segment.
    for _ in 0..2 {
        let err = wal
            .append(Bytes::from_static(b"refused"))
            .await
            .unwrap_err();
        assert!(matches!(err, WalError::Poisoned { .. }), "{err:?}");
    }
    // What was acknowledged still reads.
    assert_eq!(payloads(&read_all(&wal).await), expect);
    wal.close().await.unwrap();

    // Recovery decides from storage: every acknowledged record, and the unacknowledged one at
    // most whole.
    let (wal, _report) = Wal::open(store.storage(), WalConfig::default())
        .await
        .unwrap();
    let got = payloads(&read_all(&wal).await);
    assert_eq!(got[..expect.len()], expect[..]);
    assert!(
        got[expect.len()..].iter().all(|p| p == b"doomed"),
        "{got:?}"
    );
    assert!(got.len() <= expect.len() + 1);
    let h = wal
        .append(Bytes::from_static(b"after reopen"))
        .await
        .unwrap();
    assert_eq!(wal.read(h).await.unwrap().as_ref(), b"after reopen");
    wal.close().await.unwrap();
    scenario.teardown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_directory_fsync_fails_the_append_that_creates_a_segment() {
    let scenario = FailScenario::setup();
    // The first segment of a fresh log, and a segment after a roll.
    for roll_first in [false, true] {
        let store = Store::new(Mode::Local);
        let wal = open(&store).await;
        let mut expect = Vec::new();
        if roll_first {
            expect = acked(&wal, "before", 2).await;
            wal.roll().await.unwrap();
        }
        let segments_before = store.segment_ids().await;

        fail::cfg("wal::dir_fsync", "return").unwrap();
        let err = wal.append(Bytes::from_static(b"doomed")).await.unwrap_err();
        assert_append_failed(&err, "wal::dir_fsync");
        fail::remove("wal::dir_fsync");
        // The half-created segment is gone, and the log is not poisoned.
        assert_eq!(store.segment_ids().await, segments_before);
        expect.extend(acked(&wal, "after", 2).await);
        assert_eq!(payloads(&read_all(&wal).await), expect);
        wal.close().await.unwrap();
        assert_reopens_with(&store, &expect).await;
    }
    scenario.teardown();
}
