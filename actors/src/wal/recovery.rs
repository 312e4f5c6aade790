//! Opening a log: scan every segment, cut a torn tail, refuse real corruption.
//!
//! The rules, in the order they are applied to each segment (ascending id):
//!
//! 1. A segment whose bytes are all valid is kept.
//! 2. In the **newest** segment, damage after a valid header is a torn or corrupt tail: the
//!    segment is cut at the first invalid byte (durably) and the cut is reported. A crash during
//!    an append can only leave damage there, after the last acknowledged record.
//! 3. A newest segment no longer than a header, with an invalid header, is a segment whose
//!    creation was interrupted: it holds no record and is removed.
//! 4. Any other damage — in an older segment, or an invalid header in front of records — is
//!    [`WalError::Corrupt`] with the segment and offset; nothing is changed.
//!
//! In [`RecoveryMode::Strict`] rules 2 and 3 become errors too. Before any of them, a newest
//! segment id of `u64::MAX` (which leaves no id for the next segment; the writer never uses
//! it) is [`WalError::Corrupt`] too.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::{RecoveryMode, WalConfig};
use super::error::WalError;
use super::format::{self, SEGMENT_HEADER_LEN};
use super::segments::Segments;
use super::state::SegmentInfo;
use crate::observe::event::Event;

/// A tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// The segment that was cut.
    pub segment: u64,
    /// The first invalid byte; the segment now ends here (0: the segment was removed).
    pub offset: u64,
    /// How many bytes were discarded.
    pub discarded_bytes: u64,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// What [`super::Wal::open`] found and did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryReport {
    /// Segments kept.
    pub segments: usize,
    /// Valid records in them.
    pub records: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Tails cut off (at most one per open).
    pub torn_tails: Vec<TornTail>,
    /// The id the next new segment will get.
    pub next_segment: u64,
    /// How long recovery took.
    pub elapsed: Duration,
}

/// Why a log whose newest segment id is `u64::MAX` is refused.
pub(super) const NO_NEXT_SEGMENT_ID: &str = "the segment id is the largest possible, so no id is left for the next segment (weir never \
     writes this id; the file was made or renamed by something else)";

pub(super) async fn recover(
    segments: &Segments,
    log: &str,
    config: &WalConfig,
) -> Result<(BTreeMap<u64, SegmentInfo>, RecoveryReport), WalError> {
    let started = Instant::now();
    let ids = segments.list().await?;
    let newest = ids.last().copied();
    let next_segment = match newest {
        None => 1,
        Some(id) => id.checked_add(1).ok_or_else(|| {
            let reason = NO_NEXT_SEGMENT_ID.to_owned();
            tracing::error!(log, segment = id, %reason, "corrupt WAL segment");
            WalError::Corrupt {
                log: log.to_owned(),
                segment: id,
                offset: 0,
                reason,
            }
        })?,
    };
    let mut meta = BTreeMap::new();
    let mut torn_tails = Vec::new();
    for &id in &ids {
        let seg = segments.read_all(id).await?;
        let scan = format::scan(&seg.bytes, id, format::MAX_PAYLOAD_LEN, |_, _, _| {});
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
        if let Some((offset, reason)) = damage {
            let tail_tolerated = config.recovery_mode == RecoveryMode::TruncateTornTail
                && Some(id) == newest
                && (scan.header.is_some() || total <= SEGMENT_HEADER_LEN as u64);
            if !tail_tolerated {
                tracing::error!(log, segment = id, offset, %reason, "corrupt WAL segment");
                return Err(WalError::Corrupt {
                    log: log.to_owned(),
                    segment: id,
                    offset,
                    reason,
                });
            }
            let discarded_bytes = total - offset;
            segments.cut(id, offset).await?;
            tracing::warn!(
                log, segment = id, offset, discarded_bytes, %reason,
                "WAL torn tail cut off during recovery (unacknowledged or damaged bytes)"
            );
            config.events.emit(Event::WalTornTailCut {
                log: log.to_owned(),
                segment: id,
                offset,
                discarded_bytes,
                reason: reason.clone(),
            });
            torn_tails.push(TornTail {
                segment: id,
                offset,
                discarded_bytes,
                reason,
            });
            if offset == 0 {
                continue;
            }
        }
        meta.insert(
            id,
            SegmentInfo {
                id,
                bytes: scan.valid_len,
                records: scan.records,
                max_time_ms: scan.max_time_ms,
                sealed: true,
            },
        );
    }
    let report = RecoveryReport {
        segments: meta.len(),
        records: meta.values().map(|s: &SegmentInfo| s.records).sum(),
        bytes: meta.values().map(|s: &SegmentInfo| s.bytes).sum(),
        torn_tails,
        next_segment,
        elapsed: started.elapsed(),
    };
    tracing::info!(
        log,
        segments = report.segments,
        records = report.records,
        bytes = report.bytes,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "WAL recovered"
    );
    Ok((meta, report))
}
