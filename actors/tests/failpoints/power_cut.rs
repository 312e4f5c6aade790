//! Power cuts through the page-cache model of `weir_actors::power_cut`: the WAL and the
//! checkpoint store run a workload, the disk freezes at every operation in turn (with and
//! without unsynced writes torn onto it), the directory is rebuilt as the disk holds it, and
//! the component reopens it. What was acknowledged before the cut must be there, whole; what
//! was not may be there or not, but never damaged, duplicated or out of order.
//!
//! The proof that these tests test the fsyncs: the same checks, on a run whose file fsyncs (or
//! directory fsyncs) reach nothing, must fail — they do, below.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use weir_actors::Storage;
use weir_actors::checkpoint::{
    CheckpointConfig, CheckpointData, CheckpointId, CheckpointStore, OperatorState, StateData,
};
use weir_actors::power_cut::{Acks, PowerCut, assert_fsyncs_tested, at_every_cut};
use weir_actors::wal::{Position, Wal, WalConfig};

// ---- the WAL ----

fn wal_config() -> WalConfig {
    WalConfig {
        // A new segment every few groups: segment creation is in the cut points too.
        segment_max_bytes: 300,
        ..WalConfig::default()
    }
}

fn payload(group: usize, i: usize) -> Vec<u8> {
    let mut p = format!("group {group} record {i} ").into_bytes();
    p.resize(p.len() + (group * 7 + i * 13) % 40, b'.');
    p
}

/// Twelve groups of three concurrent appends (so they share fsyncs); each group acknowledged
/// when its three appends returned.
async fn wal_workload(dir: &Path, cut: &PowerCut) -> Acks<Vec<Vec<u8>>> {
    let (wal, _) = Wal::open(Storage::local(dir.join("wal")), wal_config())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for group in 0..12 {
        let payloads: Vec<Vec<u8>> = (0..3).map(|i| payload(group, i)).collect();
        let appends = payloads.iter().map(|p| wal.append(Bytes::from(p.clone())));
        for result in futures::future::join_all(appends).await {
            result.unwrap();
        }
        acks.push((cut.ops(), payloads));
    }
    wal.close().await.unwrap();
    acks
}

/// The reopened log holds every group acknowledged by operation `k`, whole; any other record
/// found is one that was appended, once, and a group is there only if every earlier group is.
async fn wal_check(dir: &Path, acks: &Acks<Vec<Vec<u8>>>, k: u64) -> Result<(), String> {
    let (wal, _) = Wal::open(Storage::local(dir.join("wal")), wal_config())
        .await
        .map_err(|e| format!("the log does not reopen: {e}"))?;
    let records = wal
        .iter_from(Position::START)
        .collect_all()
        .await
        .map_err(|e| format!("the log does not read back: {e}"))?;
    let found: Vec<Vec<u8>> = records.iter().map(|r| r.payload.to_vec()).collect();
    let unique: BTreeSet<&Vec<u8>> = found.iter().collect();
    if unique.len() != found.len() {
        return Err(format!("a record came back twice: {found:?}"));
    }
    let mut one_missing = false;
    for (group, (acked_at, payloads)) in acks.iter().enumerate() {
        let present = payloads.iter().filter(|p| unique.contains(p)).count();
        if *acked_at <= k && present != payloads.len() {
            return Err(format!(
                "group {group}, acknowledged after operation {acked_at}, has {present} of 3 records"
            ));
        }
        if present > 0 && one_missing {
            return Err(format!(
                "group {group} is there but a record before it is not"
            ));
        }
        one_missing |= present < payloads.len();
    }
    let known: BTreeSet<&Vec<u8>> = acks.iter().flat_map(|(_, p)| p).collect();
    if let Some(stranger) = found.iter().find(|p| !known.contains(p)) {
        return Err(format!("a record nobody appended: {stranger:?}"));
    }
    // And the log goes on.
    let handle = wal
        .append(Bytes::from_static(b"after the cut"))
        .await
        .map_err(|e| format!("no append after the cut: {e}"))?;
    let back = wal.read(handle).await.map_err(|e| e.to_string())?;
    if back.as_ref() != b"after the cut" {
        return Err("the append after the cut reads back differently".to_owned());
    }
    wal.close().await.map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_wal_keeps_every_acknowledged_record_at_every_power_cut() {
    at_every_cut(wal_workload, wal_check).await;
}

#[tokio::test]
async fn the_wal_power_cut_test_fails_without_fsyncs() {
    assert_fsyncs_tested(wal_workload, wal_check).await;
}

// ---- the checkpoint store ----

/// Checkpoint `i`'s content: its time, and a state file written before it.
fn checkpoint(i: u64, state: StateData) -> CheckpointData {
    CheckpointData {
        checkpoint_time_ms: 1_000 * i,
        pending_batches: vec![1_000 * i],
        operator_state: vec![OperatorState {
            schema_version: 1,
            operator_id: "counts".to_owned(),
            type_name: "u64".to_owned(),
            data: state,
        }],
        ..CheckpointData::default()
    }
}

fn state_bytes(i: u64) -> Vec<u8> {
    format!("state of checkpoint {i}")
        .repeat(usize::try_from(i).unwrap() + 1)
        .into_bytes()
}

/// Eight checkpoints, three retained, each with a state file written first.
async fn checkpoint_workload(dir: &Path, cut: &PowerCut) -> Acks<(CheckpointId, u64)> {
    let store = CheckpointStore::open(
        Storage::local(dir.join("checkpoints")),
        CheckpointConfig::default().with_retain(3),
    )
    .await
    .unwrap();
    let mut acks = Vec::new();
    for i in 1..=8 {
        let file = store
            .write_state_file("counts", &state_bytes(i))
            .await
            .unwrap();
        let id = store
            .write(&checkpoint(i, StateData::File(file)))
            .await
            .unwrap();
        acks.push((cut.ops(), (id, i)));
    }
    acks
}

/// The reopened store's newest checkpoint is at least the last one acknowledged by operation
/// `k`, reads back as written, and its state file too.
async fn checkpoint_check(
    dir: &Path,
    acks: &Acks<(CheckpointId, u64)>,
    k: u64,
) -> Result<(), String> {
    let store = CheckpointStore::open(
        Storage::local(dir.join("checkpoints")),
        CheckpointConfig::default().with_retain(3),
    )
    .await
    .map_err(|e| format!("the store does not reopen: {e}"))?;
    let latest = store
        .read_latest()
        .await
        .map_err(|e| format!("no checkpoint reads back: {e}"))?;
    let durable = acks
        .iter()
        .filter(|(at, _)| *at <= k)
        .map(|(_, ack)| *ack)
        .next_back();
    let Some(latest) = latest else {
        return match durable {
            Some((id, _)) => Err(format!(
                "checkpoint {id:?} was acknowledged and none is left"
            )),
            None => Ok(()),
        };
    };
    if let Some((id, _)) = durable
        && latest.id < id
    {
        return Err(format!(
            "checkpoint {id:?} was acknowledged and the newest left is {:?} (skipped: {:?})",
            latest.id, latest.skipped
        ));
    }
    let Some(&(_, i)) = acks
        .iter()
        .map(|(_, ack)| ack)
        .find(|(id, _)| *id == latest.id)
    else {
        return Err(format!("checkpoint {:?} was never written", latest.id));
    };
    let StateData::File(file) = &latest.data.operator_state[0].data else {
        return Err("the state is not in a file".to_owned());
    };
    if latest.data != checkpoint(i, StateData::File(file.clone())) {
        return Err(format!(
            "checkpoint {i} reads back differently: {:?}",
            latest.data
        ));
    }
    let state = store
        .read_state_file(file)
        .await
        .map_err(|e| format!("checkpoint {i}'s state file: {e}"))?;
    if state != state_bytes(i) {
        return Err(format!(
            "checkpoint {i}'s state file reads back differently"
        ));
    }
    // And the store goes on, with an id above every one left.
    let next = store
        .write(&checkpoint(99, StateData::Inline(Vec::new())))
        .await
        .map_err(|e| format!("no checkpoint after the cut: {e}"))?;
    if next <= latest.id {
        return Err(format!("the next checkpoint reuses id {next:?}"));
    }
    Ok(())
}

#[tokio::test]
async fn the_checkpoint_store_keeps_the_acknowledged_checkpoint_at_every_power_cut() {
    at_every_cut(checkpoint_workload, checkpoint_check).await;
}

#[tokio::test]
async fn the_checkpoint_power_cut_test_fails_without_fsyncs() {
    assert_fsyncs_tested(checkpoint_workload, checkpoint_check).await;
}
