//! Read-only inspection of a log: what is there, and what recovery would do with it.
//!
//! [`inspect`] reads every segment and applies the rules of recovery (see `recovery.rs`)
//! without changing anything: no torn tail is cut, no directory is created, no lock is taken,
//! so it is safe on the log of a running process (whose newest segment may then show a
//! record being written as a torn tail).

use serde::{Deserialize, Serialize};

use super::error::WalError;
use super::format::{self, SEGMENT_HEADER_LEN};
use super::segments::Segments;
use crate::storage::location::Storage;

/// One segment as found on storage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentReport {
    /// The segment id.
    pub id: u64,
    /// Its size on storage in bytes.
    pub bytes: u64,
    /// The valid bytes from its start (header and whole records).
    pub valid_bytes: u64,
    /// Valid records.
    pub records: u64,
    /// When it was created (ms since the Unix epoch), if its header is valid.
    pub created_ms: Option<u64>,
    /// The oldest and newest record time, if it has records.
    pub time_range_ms: Option<(u64, u64)>,
    /// The first invalid byte and what is wrong there.
    pub damage: Option<(u64, String)>,
}

/// What [`super::Wal::open`] would do with the damage found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryAction {
    /// Nothing: every byte is valid.
    Nothing,
    /// Cut the newest segment at `offset`, discarding a torn or corrupt tail.
    CutTornTail {
        /// The newest segment.
        segment: u64,
        /// Its first invalid byte; it would end here.
        offset: u64,
        /// The bytes that would be discarded.
        discarded_bytes: u64,
        /// What is wrong at `offset`.
        reason: String,
    },
    /// Remove the newest segment, whose creation was interrupted (no record in it).
    RemoveUnfinishedSegment {
        /// The segment.
        segment: u64,
        /// What is wrong with its header.
        reason: String,
    },
    /// Refuse to open: a sealed segment, or a header in front of records, is damaged.
    RefuseCorrupt {
        /// The damaged segment.
        segment: u64,
        /// The first invalid byte.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
}

/// What [`inspect`] found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalInspection {
    /// Where the log lives.
    pub log: String,
    /// Every segment, ascending.
    pub segments: Vec<SegmentReport>,
    /// Valid records in all segments.
    pub records: u64,
    /// What recovery (in the default mode, [`super::RecoveryMode::TruncateTornTail`]) would do.
    pub recovery: RecoveryAction,
}

/// Reads the log at `storage` without changing it and reports its segments, their records,
/// any damage, and what recovery would do.
///
/// # Errors
///
/// A storage error (a missing local directory is one: there is no log there).
pub async fn inspect(storage: &Storage) -> Result<WalInspection, WalError> {
    let segments = Segments::open_read_only(storage);
    let log = storage.describe();
    let ids = segments.list().await?;
    let newest = ids.last().copied();
    let mut reports = Vec::with_capacity(ids.len());
    let mut recovery = RecoveryAction::Nothing;
    for &id in &ids {
        let seg = segments.read_all(id).await?;
        let mut min_time: Option<u64> = None;
        let scan = format::scan(&seg.bytes, id, format::MAX_PAYLOAD_LEN, |_, frame, _| {
            min_time = Some(min_time.map_or(frame.time_ms, |t| t.min(frame.time_ms)));
        });
        let total = seg.bytes.len() as u64 + seg.beyond_gap;
        let damage = scan.damage.clone().or_else(|| {
            (seg.beyond_gap > 0).then(|| {
                (
                    seg.bytes.len() as u64,
                    "a chunk object is missing, so the chunks after it are not part of the log"
                        .to_owned(),
                )
            })
        });
        if let Some((offset, reason)) = &damage
            && recovery == RecoveryAction::Nothing
        {
            let is_newest = Some(id) == newest;
            recovery = if is_newest && scan.header.is_some() {
                RecoveryAction::CutTornTail {
                    segment: id,
                    offset: *offset,
                    discarded_bytes: total - offset,
                    reason: reason.clone(),
                }
            } else if is_newest && total <= SEGMENT_HEADER_LEN as u64 {
                RecoveryAction::RemoveUnfinishedSegment {
                    segment: id,
                    reason: reason.clone(),
                }
            } else {
                RecoveryAction::RefuseCorrupt {
                    segment: id,
                    offset: *offset,
                    reason: reason.clone(),
                }
            };
        }
        reports.push(SegmentReport {
            id,
            bytes: total,
            valid_bytes: scan.valid_len,
            records: scan.records,
            created_ms: scan.header.map(|h| h.created_ms),
            time_range_ms: min_time.zip(scan.max_time_ms),
            damage,
        });
    }
    Ok(WalInspection {
        log,
        records: reports.iter().map(|s| s.records).sum(),
        segments: reports,
        recovery,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Wal, WalConfig};
    use bytes::Bytes;

    #[tokio::test]
    async fn a_torn_tail_is_reported_and_left_on_disk_and_recovery_then_does_what_was_said() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path());
        let (wal, _) = Wal::open(storage.clone(), WalConfig::default())
            .await
            .expect("open");
        for i in 0..3u8 {
            wal.append(Bytes::from(vec![i; 10])).await.expect("append");
        }
        wal.close().await.expect("close");
        let clean = inspect(&storage).await.expect("inspect");
        assert_eq!(clean.records, 3);
        assert_eq!(clean.recovery, RecoveryAction::Nothing);

        let segment = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "wal"))
            .expect("a segment");
        let mut bytes = std::fs::read(&segment).expect("read");
        let valid = bytes.len() as u64;
        bytes.extend_from_slice(&[0xab; 7]);
        std::fs::write(&segment, &bytes).expect("tear");

        let torn = inspect(&storage).await.expect("inspect");
        assert_eq!(torn.records, 3);
        match &torn.recovery {
            RecoveryAction::CutTornTail {
                offset,
                discarded_bytes,
                ..
            } => assert_eq!((*offset, *discarded_bytes), (valid, 7)),
            other => panic!("expected a cut, got {other:?}"),
        }
        assert_eq!(
            std::fs::metadata(&segment).expect("stat").len(),
            valid + 7,
            "inspection changes nothing"
        );
        let (_, report) = Wal::open(storage, WalConfig::default())
            .await
            .expect("open");
        assert_eq!(report.torn_tails.len(), 1);
        assert_eq!(report.torn_tails[0].offset, valid);
        assert_eq!(report.torn_tails[0].discarded_bytes, 7);
    }

    #[tokio::test]
    async fn damage_in_a_sealed_segment_is_a_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path());
        let (wal, _) = Wal::open(storage.clone(), WalConfig::default())
            .await
            .expect("open");
        wal.append(Bytes::from_static(b"one"))
            .await
            .expect("append");
        wal.roll().await.expect("roll");
        wal.append(Bytes::from_static(b"two"))
            .await
            .expect("append");
        wal.close().await.expect("close");
        let first = inspect(&storage).await.expect("inspect").segments[0].id;
        let path = dir.path().join(format!("{first:020}.wal"));
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).expect("flip");
        let found = inspect(&storage).await.expect("inspect");
        assert!(
            matches!(found.recovery, RecoveryAction::RefuseCorrupt { segment, .. } if segment == first),
            "{:?}",
            found.recovery
        );
        assert!(Wal::open(storage, WalConfig::default()).await.is_err());
    }
}
