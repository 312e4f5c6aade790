//! What a log knows of itself, shared by its handles and its writer task: each segment's
//! durable length and contents ([`SegmentInfo`]), and its counters ([`WalStats`]).
//!
//! Invariant: a segment's `bytes` only ever names bytes that are durable; readers never look
//! past it.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

use super::segments::Segments;

/// What the log knows about one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// The segment id.
    pub id: u64,
    /// Its durable length in bytes, header included.
    pub bytes: u64,
    /// How many records it holds.
    pub records: u64,
    /// The newest record time in it (ms since the Unix epoch), if it has records.
    pub max_time_ms: Option<u64>,
    /// Whether it is sealed (no longer appended to).
    pub sealed: bool,
}

/// Counters of a log's work since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalStats {
    /// Appends the writer has taken from its queue.
    pub received: u64,
    /// Records acknowledged.
    pub appends: u64,
    /// Group commits that succeeded: each is one write and one fsync (one object in object mode).
    pub group_commits: u64,
    /// Bytes made durable by appends (frames only).
    pub bytes: u64,
    /// Segments created.
    pub segments_created: u64,
    /// Appends that failed (storage failures, and refusals of a poisoned log).
    pub failed_appends: u64,
}

/// State shared by the handles and the writer task.
#[derive(Debug)]
pub(super) struct Inner {
    pub(super) segments: Segments,
    pub(super) log: String,
    pub(super) max_record_bytes: u32,
    /// Every segment present, with its durable length. The writer updates it after each commit;
    /// readers never look past `bytes`.
    pub(super) meta: Mutex<BTreeMap<u64, SegmentInfo>>,
    pub(super) stats: Mutex<WalStats>,
}

impl Inner {
    pub(super) fn meta(&self) -> MutexGuard<'_, BTreeMap<u64, SegmentInfo>> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn stats(&self) -> MutexGuard<'_, WalStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
