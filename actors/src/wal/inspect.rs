//! Read-only inspection of a log: what is there, and what recovery would do with it.
//!
//! [`inspect`] reads every segment and applies the rules of recovery (see `recovery.rs`)
//! without changing anything: no torn tail is cut, no directory is created, no lock is taken,
//! so it is safe on the log of a running process (whose newest segment may then show a
//! record being written as a torn tail).
//!
//! Recovery stops reading a segment at its first invalid byte. Inspection goes on: it searches
//! every later byte offset for a valid frame ([`AfterDamage`]), because valid records behind
//! the damage mean it is not (only) a write cut short by a crash — those records would be lost
//! by a cut, or are unreadable in a refused log, and may have been acknowledged.

use serde::{Deserialize, Serialize};

use super::error::WalError;
use super::format::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::recovery::NO_NEXT_SEGMENT_ID;
use super::segments::Segments;
use crate::storage::location::Storage;

/// How many bytes the search behind a segment's damage may checksum before it stops (what it
/// did not search is reported as [`AfterDamage::unsearched_bytes`]). Candidates are cheap to
/// reject unless their length fits in what is left, so this bounds the time a crafted or
/// random tail can take: about a second.
const SEARCH_BUDGET: u64 = 1 << 30;

/// What lies behind the first damage of a segment, found by trying every later byte offset as
/// the start of a frame (a frame is valid only if its CRC32C matches, so a false find is
/// about as likely as a random 32-bit match).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AfterDamage {
    /// Valid records found behind the damage: recovery would lose them with a cut, or cannot
    /// read them in a log it refuses.
    pub records: u64,
    /// The offset of the first of them.
    pub first_offset: Option<u64>,
    /// Bytes behind the damage that were not searched (beyond a missing chunk object, or past
    /// the search's work limit): records may be there unseen.
    pub unsearched_bytes: u64,
}

impl AfterDamage {
    /// Whether the search proved that nothing valid follows the damage.
    pub fn nothing_valid(&self) -> bool {
        self.records == 0 && self.unsearched_bytes == 0
    }
}

/// Searches `bytes[from..]` for valid frames, following each one found to the next.
pub(crate) fn search_after_damage(bytes: &[u8], from: usize) -> AfterDamage {
    let mut found = AfterDamage::default();
    let mut budget = SEARCH_BUDGET;
    let mut at = from;
    while bytes.len().saturating_sub(at) >= FRAME_HEADER_LEN {
        let rest = &bytes[at..];
        // A frame's first bytes are never all zero (the CRC32C of a zero length and time is
        // not zero), so a run of zeros is skipped to 15 bytes before its end.
        if rest[..FRAME_HEADER_LEN].iter().all(|&b| b == 0) {
            let zeros = rest.iter().position(|&b| b != 0).unwrap_or(rest.len());
            at += (zeros + 1).saturating_sub(FRAME_HEADER_LEN).max(1);
            continue;
        }
        let len = u64::from(u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]));
        let cost = FRAME_HEADER_LEN as u64 + len;
        if cost > rest.len() as u64 {
            at += 1;
            continue;
        }
        if cost > budget {
            found.unsearched_bytes = rest.len() as u64;
            break;
        }
        budget -= cost;
        match format::decode_frame(rest, format::MAX_PAYLOAD_LEN) {
            Ok(frame) => {
                found.records += 1;
                found.first_offset.get_or_insert(at as u64);
                at += format::frame_len(frame.len as usize);
            }
            Err(_) => at += 1,
        }
    }
    found
}

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
    /// With damage: what lies behind it.
    pub after_damage: Option<AfterDamage>,
}

/// What [`super::Wal::open`] would do with the damage found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RecoveryAction {
    /// Nothing: every byte is valid.
    Nothing,
    /// Cut the newest segment at `offset`, discarding a torn or corrupt tail. The segment's
    /// [`SegmentReport::after_damage`] says whether valid records are among what is discarded.
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
    /// Refuse to open: a sealed segment, or a header in front of records, is damaged — or the
    /// newest segment's id is `u64::MAX`, which leaves no id for the next one (offset 0).
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
    // Recovery checks this before anything else.
    let mut recovery = match newest {
        Some(id) if id.checked_add(1).is_none() => RecoveryAction::RefuseCorrupt {
            segment: id,
            offset: 0,
            reason: NO_NEXT_SEGMENT_ID.to_owned(),
        },
        _ => RecoveryAction::Nothing,
    };
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
        let after_damage = damage.as_ref().map(|(offset, _)| {
            let from = usize::try_from(*offset).map_or(usize::MAX, |o| o.saturating_add(1));
            let mut after = search_after_damage(&seg.bytes, from);
            after.unsearched_bytes += seg.beyond_gap;
            after
        });
        reports.push(SegmentReport {
            id,
            bytes: total,
            valid_bytes: scan.valid_len,
            records: scan.records,
            created_ms: scan.header.map(|h| h.created_ms),
            time_range_ms: min_time.zip(scan.max_time_ms),
            damage,
            after_damage,
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

    /// A segment of `n` records of 10 bytes, its frame offsets, and its bytes.
    fn segment(n: u8) -> (Vec<usize>, Vec<u8>) {
        let mut bytes = format::encode_header(1, 0).to_vec();
        let mut offsets = Vec::new();
        for i in 0..n {
            offsets.push(bytes.len());
            format::encode_frame(&mut bytes, u64::from(i), &[i; 10]);
        }
        (offsets, bytes)
    }

    #[test]
    fn the_search_behind_damage_finds_every_valid_frame_and_only_those() {
        let (offsets, clean) = segment(4);
        // A flipped payload byte: the three frames behind it.
        let mut bytes = clean.clone();
        bytes[offsets[0] + FRAME_HEADER_LEN] ^= 1;
        let found = search_after_damage(&bytes, offsets[0] + 1);
        assert_eq!(
            found,
            AfterDamage {
                records: 3,
                first_offset: Some(offsets[1] as u64),
                unsearched_bytes: 0
            }
        );
        // A flipped length bit: its frame claims more than there is, the rest are found.
        let mut bytes = clean.clone();
        bytes[offsets[1] + 2] ^= 0x10;
        let found = search_after_damage(&bytes, offsets[1] + 1);
        assert_eq!(
            (found.records, found.first_offset),
            (2, Some(offsets[2] as u64))
        );
        // Zeros, garbage and a cut frame behind the damage: nothing valid.
        let mut bytes = clean[..offsets[2]].to_vec();
        bytes.extend_from_slice(&[0; 4096]);
        bytes.extend_from_slice(&[0x5a; 100]);
        bytes.extend_from_slice(&clean[offsets[2]..offsets[3] - 1]);
        let found = search_after_damage(&bytes, offsets[2] + 1);
        assert!(found.nothing_valid(), "{found:?}");
        // Zeros then a valid frame right behind them: the zero skip does not jump over it.
        for zeros in [15, 16, 17, 31, 4096] {
            let mut bytes = clean[..offsets[2]].to_vec();
            bytes.extend_from_slice(&vec![0; zeros]);
            let at = bytes.len();
            bytes.extend_from_slice(&clean[offsets[3]..]);
            let found = search_after_damage(&bytes, offsets[2] + 1);
            assert_eq!(
                (found.records, found.first_offset),
                (1, Some(at as u64)),
                "{zeros} zeros"
            );
        }
        // Nothing to search from past the end.
        assert!(search_after_damage(&clean, usize::MAX).nothing_valid());
    }

    #[tokio::test]
    async fn damage_followed_by_valid_records_is_reported_with_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = Storage::local(dir.path());
        let (wal, _) = Wal::open(storage.clone(), WalConfig::default())
            .await
            .expect("open");
        let mut handles = Vec::new();
        for i in 0..3u8 {
            handles.push(wal.append(Bytes::from(vec![i; 10])).await.expect("append"));
        }
        wal.close().await.expect("close");
        let path = dir.path().join(format!("{:020}.wal", handles[0].segment));
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[handles[0].offset as usize + FRAME_HEADER_LEN] ^= 0xff;
        std::fs::write(&path, &bytes).expect("flip");
        let found = inspect(&storage).await.expect("inspect");
        assert!(
            matches!(found.recovery, RecoveryAction::CutTornTail { offset, .. } if offset == handles[0].offset),
            "{:?}",
            found.recovery
        );
        assert_eq!(
            found.segments[0].after_damage,
            Some(AfterDamage {
                records: 2,
                first_offset: Some(handles[1].offset),
                unsearched_bytes: 0
            })
        );
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
