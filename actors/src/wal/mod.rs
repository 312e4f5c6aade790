//! The write-ahead log: records are durable before they are acknowledged.
//!
//! A [`Wal`] is an append-only sequence of records, each framed with its length and a CRC32C
//! (see the [format module](self::format)), kept in numbered segments that roll by size and by age. Receivers write
//! every block here, and the block tracker every metadata change, *before* anything is
//! acknowledged or made visible, so a crash of the process at any instant loses nothing that
//! was acknowledged.
//!
//! # Guarantees
//!
//! * [`Wal::append`] returns a [`RecordHandle`] only once the record is durable: on a local
//!   directory its bytes are `fdatasync`ed (and, for a new segment, the directory entry too); in
//!   object-store mode the object that holds it has been written.
//! * Appends from many tasks share one fsync (group commit, see [`WalConfig`]).
//! * [`Wal::open`] scans the segments in order. In the newest segment, the first invalid byte
//!   (a torn write, a flipped bit) ends the log: the tail from there is cut off, durably, and
//!   reported as [`crate::Event::WalTornTailCut`]. It is never returned as a record. In any older
//!   segment an invalid record is [`WalError::Corrupt`], never skipped.
//! * A record whose `append` did not return (the caller was cancelled, the process died) was
//!   never acknowledged. After a crash it may or may not be present, whole; its producer must
//!   treat it as not stored and may send it again.
//! * After a storage failure the log *poisons* itself when it cannot prove the segment's
//!   state ([`WalError::Poisoned`]); reopening runs recovery.
//!
//! # Layout
//!
//! Segments are one appended file each on a local directory, or one write-once object per
//! group commit on an object store (see `segments.rs`). Both layouts give a segment the same
//! logical bytes, so offsets and handles mean the same thing everywhere.

pub mod format;
mod inspect;
mod reader;
mod recovery;
mod segments;
mod writer;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{collections::BTreeMap, fmt};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::events::EventSink;
use crate::storage::{Storage, StorageError};

pub use inspect::{RecoveryAction, SegmentReport, WalInspection, inspect};
pub use reader::WalIter;
pub use recovery::{RecoveryReport, TornTail};

use segments::Segments;
use writer::Command;

/// Where one record is: its segment, the byte offset of its frame, and its payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordHandle {
    /// The segment id.
    pub segment: u64,
    /// The offset of the record's frame within the segment.
    pub offset: u64,
    /// The payload's length in bytes.
    pub length: u32,
}

impl RecordHandle {
    /// The position just after this record: where iteration continues.
    pub fn next_position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset + format::frame_len(self.length as usize) as u64,
        }
    }

    /// The position of this record.
    pub fn position(&self) -> Position {
        Position {
            segment: self.segment,
            offset: self.offset,
        }
    }
}

impl fmt::Display for RecordHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} offset {} ({} bytes)",
            self.segment, self.offset, self.length
        )
    }
}

/// A place in the log to iterate from: records at or after it are returned.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The segment id.
    pub segment: u64,
    /// The byte offset within the segment.
    pub offset: u64,
}

impl Position {
    /// The start of the log.
    pub const START: Position = Position {
        segment: 0,
        offset: 0,
    };
}

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it is.
    pub handle: RecordHandle,
    /// Its time (ms since the Unix epoch), given at append.
    pub time_ms: u64,
    /// Its bytes.
    pub payload: Bytes,
}

/// What recovery does with damage it finds in the newest segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Cut a torn or corrupt tail of the newest segment off and report it (the default). A
    /// crash during a write can only leave damage there, after the last acknowledged record.
    #[default]
    TruncateTornTail,
    /// Refuse to open a log with any damage, even a torn tail; nothing is changed on storage.
    Strict,
}

/// How a [`Wal`] writes, rolls and recovers. `WalConfig::default()` suits most uses.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// A segment is sealed and a new one started when the next write would make it larger than
    /// this (a single larger batch still goes into one segment). Default: 64 MiB.
    pub segment_max_bytes: u64,
    /// A segment older than this is sealed at the next append (Spark's
    /// `writeAheadLog.rollingIntervalSecs`). Default: 60 s.
    pub roll_interval: Duration,
    /// After the first append of a group arrives, wait at most this long for more appends to
    /// share its fsync. Appends that arrive while an fsync is running always share the next one,
    /// so `0` already batches under load. Default: 0.
    pub group_commit_max_delay: Duration,
    /// A group commit takes appends until it holds at least this many bytes. Default: 4 MiB.
    pub group_commit_max_bytes: usize,
    /// The largest payload `append` accepts. Default: 64 MiB. Minimum: 1 byte. Maximum:
    /// [`format::MAX_PAYLOAD_LEN`]. Only appends are checked: records written earlier under a
    /// larger limit still recover and read back.
    pub max_record_bytes: u32,
    /// How many appends may wait for the writer before `append` itself waits (backpressure).
    /// Default: 4096.
    pub queue_depth: usize,
    /// What recovery does with a damaged tail. Default: [`RecoveryMode::TruncateTornTail`].
    pub recovery_mode: RecoveryMode,
    /// How long [`Wal::open`] waits for another writer *of this process* to release a local
    /// log (one dropped without `close` releases it when its writer task ends, e.g. after an
    /// actor restart). A writer in another process is refused at once. Default: 10 s.
    pub lock_wait: Duration,
    /// Where segment rolls, cleanups and torn-tail cuts are reported.
    pub events: EventSink,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_max_bytes: 64 << 20,
            roll_interval: Duration::from_secs(60),
            group_commit_max_delay: Duration::ZERO,
            group_commit_max_bytes: 4 << 20,
            max_record_bytes: 64 << 20,
            queue_depth: 4096,
            recovery_mode: RecoveryMode::TruncateTornTail,
            lock_wait: Duration::from_secs(10),
            events: EventSink::discard(),
        }
    }
}

impl WalConfig {
    fn validate(&self) -> Result<(), WalError> {
        let bad = |reason: String| Err(WalError::Config { reason });
        if self.max_record_bytes == 0 || self.max_record_bytes > format::MAX_PAYLOAD_LEN {
            return bad(format!(
                "max_record_bytes must be between 1 and {}, not {}",
                format::MAX_PAYLOAD_LEN,
                self.max_record_bytes
            ));
        }
        if self.segment_max_bytes < (format::SEGMENT_HEADER_LEN + format::FRAME_HEADER_LEN) as u64 {
            return bad(format!(
                "segment_max_bytes must be at least {}, not {}",
                format::SEGMENT_HEADER_LEN + format::FRAME_HEADER_LEN,
                self.segment_max_bytes
            ));
        }
        if self.group_commit_max_bytes == 0 {
            return bad("group_commit_max_bytes must be at least 1".to_owned());
        }
        if self.queue_depth == 0 {
            return bad("queue_depth must be at least 1".to_owned());
        }
        Ok(())
    }
}

/// Everything that can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A group commit failed in storage; the appends in it were not acknowledged.
    #[error("appending to the WAL at `{log}` failed: {cause}")]
    AppendFailed {
        /// Where the log lives.
        log: String,
        /// The storage failure, shared by every append of the group.
        #[source]
        cause: Arc<StorageError>,
    },
    /// A record or header that should be valid is not.
    #[error("corrupt WAL segment {segment} of `{log}` at offset {offset}: {reason}")]
    Corrupt {
        /// Where the log lives.
        log: String,
        /// The damaged segment.
        segment: u64,
        /// The offset of the first invalid byte.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The payload is larger than [`WalConfig::max_record_bytes`].
    #[error("a WAL record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The handle does not point at a record of this log.
    #[error("no WAL record at {handle} in `{log}`: {reason}")]
    InvalidHandle {
        /// Where the log lives.
        log: String,
        /// The handle that was asked for.
        handle: RecordHandle,
        /// Why it is not valid.
        reason: String,
    },
    /// A storage failure left the log in a state it cannot vouch for; it accepts no appends.
    #[error(
        "the WAL at `{log}` stopped accepting appends after a storage failure ({cause}); \
         reopen it to recover"
    )]
    Poisoned {
        /// Where the log lives.
        log: String,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The log was closed.
    #[error("the WAL at `{log}` is closed")]
    Closed {
        /// Where the log lives.
        log: String,
    },
    /// A configuration value is out of range.
    #[error("invalid WAL configuration: {reason}")]
    Config {
        /// Which value, and why.
        reason: String,
    },
}

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
struct Inner {
    segments: Segments,
    log: String,
    max_record_bytes: u32,
    /// Every segment present, with its durable length. The writer updates it after each commit;
    /// readers never look past `bytes`.
    meta: Mutex<BTreeMap<u64, SegmentInfo>>,
    stats: Mutex<WalStats>,
}

impl Inner {
    fn meta(&self) -> MutexGuard<'_, BTreeMap<u64, SegmentInfo>> {
        self.meta.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stats(&self) -> MutexGuard<'_, WalStats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle to an open write-ahead log. Cheap to clone; all clones share one writer.
///
/// The log stays open while any clone is alive; [`Wal::close`] waits for queued appends.
#[derive(Clone, Debug)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
    inner: Arc<Inner>,
}

/// Milliseconds since the Unix epoch, by the system clock (0 if the clock is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Wal {
    /// Opens (or creates) the log in `storage`, running recovery first.
    ///
    /// Must be called inside a tokio runtime: the log's writer runs as a task on it.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] if a sealed segment is damaged (or any segment, in
    /// [`RecoveryMode::Strict`]); [`WalError::Storage`] if the storage fails;
    /// [`WalError::Config`] for out-of-range settings.
    pub async fn open(
        storage: Storage,
        config: WalConfig,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        config.validate()?;
        let segments = Segments::open(&storage, config.lock_wait).await?;
        let log = storage.describe();
        let (meta, report) = recovery::recover(&segments, &log, &config).await?;
        let next_id = report.next_segment;
        let inner = Arc::new(Inner {
            segments,
            log,
            max_record_bytes: config.max_record_bytes,
            meta: Mutex::new(meta),
            stats: Mutex::new(WalStats::default()),
        });
        let (tx, rx) = mpsc::channel(config.queue_depth);
        writer::spawn(Arc::clone(&inner), config, next_id, rx);
        Ok((Wal { tx, inner }, report))
    }

    /// Appends `payload` stamped with the current time; returns once it is durable.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes never tears the log: the record is handed to the
    /// writer whole and is either written whole or not at all. It was not acknowledged, and may
    /// or may not be in the log after a crash.
    pub async fn append(&self, payload: Bytes) -> Result<RecordHandle, WalError> {
        self.append_at(now_ms(), payload).await
    }

    /// Appends `payload` with the record time `time_ms` (ms since the Unix epoch), which
    /// [`Wal::clean`] compares against; returns once it is durable.
    ///
    /// # Cancel safety
    ///
    /// As for [`Wal::append`].
    pub async fn append_at(&self, time_ms: u64, payload: Bytes) -> Result<RecordHandle, WalError> {
        if payload.len() > self.inner.max_record_bytes as usize {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: self.inner.max_record_bytes,
            });
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append {
            time_ms,
            payload,
            reply,
        })
        .await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Reads the record at `handle`, verifying its checksum.
    pub async fn read(&self, handle: RecordHandle) -> Result<Bytes, WalError> {
        reader::read(&self.inner, handle)
            .await
            .map(|record| record.payload)
    }

    /// Iterates over the records at or after `from`, in log order, up to the end of the log as
    /// it is when each segment is reached. Holds at most one segment in memory.
    pub fn iter_from(&self, from: Position) -> WalIter {
        WalIter::new(Arc::clone(&self.inner), from)
    }

    /// Deletes the sealed segments whose records are all older than `before_ms`; the segment
    /// being appended to, and the newest segment even when sealed (its id keeps segment ids
    /// from being reused after a reopen), are never deleted. Returns the deleted segment ids.
    ///
    /// Call it only once nothing needs those records any more (after the checkpoint that covers
    /// them is durable). Nothing is ever deleted unless this is called.
    pub async fn clean(&self, before_ms: u64) -> Result<Vec<u64>, WalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Clean { before_ms, reply }).await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// Seals the current segment, so the next append starts a new one.
    pub async fn roll(&self) -> Result<(), WalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Roll { reply }).await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// The segments present, ascending by id.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.inner.meta().values().copied().collect()
    }

    /// Counters of the work done since the log was opened.
    pub fn stats(&self) -> WalStats {
        *self.inner.stats()
    }

    /// Where the log lives, for messages.
    pub fn location(&self) -> &str {
        &self.inner.log
    }

    /// Waits until every append queued before this call is durable or failed, then stops the
    /// writer. Other clones get [`WalError::Closed`] afterwards. When it returns and no other
    /// clone is alive, the log is fully released (a local log's directory lock included), so it
    /// can be opened again at once.
    pub async fn close(self) -> Result<(), WalError> {
        let closed = self.closed();
        let (reply, rx) = oneshot::channel();
        self.send(Command::Close { reply }).await?;
        drop(self);
        rx.await.map_err(|_| closed)
    }

    async fn send(&self, cmd: Command) -> Result<(), WalError> {
        self.tx.send(cmd).await.map_err(|_| self.closed())
    }

    fn closed(&self) -> WalError {
        WalError::Closed {
            log: self.inner.log.clone(),
        }
    }
}
