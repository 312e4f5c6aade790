//! The log itself: the cloneable [`Wal`] handle, and what it knows of its segments.
//!
//! Every handle shares one writer task (see `writer.rs`); `append` hands the whole record to
//! it before waiting, so a cancelled caller never tears a record.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use tokio::sync::{mpsc, oneshot};

use super::config::WalConfig;
use super::error::WalError;
use super::reader;
use super::reader::WalIter;
use super::record::{Position, RecordHandle};
use super::recovery::{self, RecoveryReport};
use super::segments::Segments;
use super::state::{Inner, SegmentInfo, WalStats};
use super::writer::{self, CleanBefore, Command};
use crate::clock::now_ms;
use crate::storage::location::Storage;

/// A handle to an open write-ahead log. Cheap to clone; all clones share one writer.
///
/// The log stays open while any clone is alive; [`Wal::close`] waits for queued appends.
#[derive(Clone, Debug)]
pub struct Wal {
    tx: mpsc::Sender<Command>,
    inner: Arc<Inner>,
}

impl Wal {
    /// Opens (or creates) the log in `storage`, running recovery first.
    ///
    /// Must be called inside a tokio runtime: the log's writer runs as a task on it.
    ///
    /// # Errors
    ///
    /// [`WalError::Corrupt`] if a sealed segment is damaged (or any segment, in
    /// [`RecoveryMode::Strict`](super::RecoveryMode::Strict)); [`WalError::Storage`] if the storage fails;
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
        self.clean_by(CleanBefore::Time(before_ms)).await
    }

    /// Deletes the sealed segments whose id is below `first_kept`, with the same exceptions
    /// as [`clean`](Self::clean) (the segment being appended to and the newest one are never
    /// deleted). Returns the deleted segment ids.
    ///
    /// Cleaning by position, unlike by time, does not depend on the clock: a record whose
    /// segment is at or after `first_kept` is kept whatever time it was written at.
    pub async fn clean_before_segment(&self, first_kept: u64) -> Result<Vec<u64>, WalError> {
        self.clean_by(CleanBefore::Segment(first_kept)).await
    }

    async fn clean_by(&self, before: CleanBefore) -> Result<Vec<u64>, WalError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Clean { before, reply }).await?;
        rx.await.map_err(|_| self.closed())?
    }

    /// The id of the newest segment present (`0` while the log has none): every append from
    /// now on goes to it or to a later one.
    pub fn newest_segment(&self) -> u64 {
        self.inner.meta().keys().next_back().copied().unwrap_or(0)
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
