//! The writer task: group commit, segment rolling, cleaning.
//!
//! One task per log owns the segment being appended to. Appends queue on a bounded channel;
//! the task takes the first one, then everything else already queued (up to
//! `group_commit_max_bytes`, waiting at most `group_commit_max_delay` for more), encodes all of
//! them into one buffer, writes it with one write and one fsync, and only then answers each
//! caller. While that fsync runs, new appends queue up and form the next group.
//!
//! # Failure handling
//!
//! A failed write is undone: locally the file is cut back to its last durable length, in
//! object mode the chunk object is deleted, and the callers get the error. If the undo itself
//! fails, or the failure was an fsync (after which the kernel may have dropped the dirty pages
//! and the file's content is unknown), the log is poisoned: it refuses appends until reopened,
//! and recovery then decides from what is really on storage.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout_at;

use super::config::WalConfig;
use super::error::WalError;
use super::format::{self, SEGMENT_HEADER_LEN};
use super::record::RecordHandle;
use super::segments::ActiveFile;
use super::state::{Inner, SegmentInfo};
use crate::clock::now_ms;
use crate::observe::event::Event;
use crate::storage::in_flight_io;
use crate::storage::location::StorageError;

/// A request to the writer task.
#[derive(Debug)]
pub(crate) enum Command {
    Append {
        time_ms: u64,
        payload: Bytes,
        reply: oneshot::Sender<Result<RecordHandle, WalError>>,
    },
    Clean {
        before: CleanBefore,
        reply: oneshot::Sender<Result<Vec<u64>, WalError>>,
    },
    Roll {
        reply: oneshot::Sender<Result<(), WalError>>,
    },
    Close {
        reply: oneshot::Sender<()>,
    },
}

/// Which sealed segments [`Command::Clean`] deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CleanBefore {
    /// Those whose records are all older than this time (ms).
    Time(u64),
    /// Those with an id below this one.
    Segment(u64),
}

struct Pending {
    time_ms: u64,
    payload: Bytes,
    reply: oneshot::Sender<Result<RecordHandle, WalError>>,
}

struct Active {
    id: u64,
    file: ActiveFile,
    /// Durable length: everything before it is acknowledged or header.
    len: u64,
    opened: Instant,
}

struct Writer {
    inner: Arc<Inner>,
    config: WalConfig,
    active: Option<Active>,
    next_id: u64,
    poisoned: Option<String>,
    /// The size of the last group: how many appenders are likely to append again right away.
    last_group: usize,
    /// Whether the writer has a thread of its own (it may then pause the thread).
    own_thread: bool,
}

/// Starts the writer task for `inner`; it ends when every sender is dropped or on `Close`.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    config: WalConfig,
    next_id: u64,
    rx: mpsc::Receiver<Command>,
) {
    let local_dir = inner.segments.local_dir().map(std::path::Path::to_path_buf);
    let writer = Writer {
        inner,
        config,
        active: None,
        next_id,
        poisoned: None,
        last_group: 0,
        own_thread: false,
    };
    let Some(dir) = local_dir else {
        tokio::spawn(serve(writer, rx));
        return;
    };
    // A local log's writer does its pwrite + fdatasync inline, on a thread of its own with a
    // single-threaded runtime: no hand-off to a blocking pool per group commit. That thread
    // cannot be stopped from outside, and serves what is queued even after the log's handles
    // are gone, so its whole life counts as storage work in flight: an engine that ends waits
    // for it before it releases the directory.
    let busy = in_flight_io::begin(&dir);
    let (handover, start) = std::sync::mpsc::channel::<(Writer, mpsc::Receiver<Command>)>();
    let thread = std::thread::Builder::new()
        .name("weir-wal-writer".to_owned())
        .spawn(move || {
            let _busy = busy;
            let Ok((mut writer, rx)) = start.recv() else {
                return;
            };
            writer.own_thread = true;
            match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(runtime) => runtime.block_on(serve(writer, rx)),
                Err(err) => tracing::error!(error = %err, "the WAL writer thread has no runtime"),
            }
        });
    match thread {
        Ok(_) => {
            // The thread only ends after receiving this, so the send cannot fail.
            let _ = handover.send((writer, rx));
        }
        Err(err) => {
            tracing::warn!(error = %err, "no thread for the WAL writer; it runs as a task");
            let busy = in_flight_io::begin(&dir);
            tokio::spawn(async move {
                let _busy = busy;
                serve(writer, rx).await;
            });
        }
    }
}

/// Runs the writer until its log closes. `run` consumes the writer, so by the time `Close` is
/// answered the writer's share of the log (segment handles, the directory lock) is released.
async fn serve(writer: Writer, rx: mpsc::Receiver<Command>) {
    if let Some(reply) = writer.run(rx).await {
        let _ = reply.send(());
    }
}

/// How long group formation waits for the appenders answered by the previous commit to append
/// again, when fewer than that many are queued. Bounded, so a producer that stopped costs at
/// most this much latency once.
const REGATHER_WINDOW: std::time::Duration = std::time::Duration::from_micros(100);

impl Writer {
    /// Lets other threads (or tasks) run for a moment while a group forms.
    async fn pause(&self) {
        if self.own_thread {
            std::thread::yield_now();
        } else {
            tokio::task::yield_now().await;
        }
    }

    /// Serves commands until every sender is gone (returns `None`) or `Close` arrives (returns
    /// its reply port, to be answered once the writer is dropped).
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) -> Option<oneshot::Sender<()>> {
        let mut group: Vec<Pending> = Vec::new();
        while let Some(cmd) = rx.recv().await {
            let mut deferred = None;
            match cmd {
                Command::Append {
                    time_ms,
                    payload,
                    reply,
                } => {
                    let mut bytes = format::frame_len(payload.len());
                    self.inner.stats().received += 1;
                    group.push(Pending {
                        time_ms,
                        payload,
                        reply,
                    });
                    let deadline = tokio::time::Instant::now() + self.config.group_commit_max_delay;
                    let gather_started = Instant::now();
                    while bytes < self.config.group_commit_max_bytes {
                        let next = match rx.try_recv() {
                            Ok(cmd) => Some(cmd),
                            Err(mpsc::error::TryRecvError::Disconnected) => None,
                            Err(mpsc::error::TryRecvError::Empty)
                                if group.len() < self.last_group
                                    && gather_started.elapsed() < REGATHER_WINDOW =>
                            {
                                // The appenders answered by the last commit are on their way
                                // back; without this pause the next group would close with
                                // only the first of them, and groups would lock into
                                // alternating sizes of 1 and W-1 (two fsyncs per round).
                                self.pause().await;
                                continue;
                            }
                            Err(mpsc::error::TryRecvError::Empty)
                                if self.config.group_commit_max_delay.is_zero() =>
                            {
                                None
                            }
                            Err(mpsc::error::TryRecvError::Empty) => {
                                timeout_at(deadline, rx.recv()).await.ok().flatten()
                            }
                        };
                        match next {
                            Some(Command::Append {
                                time_ms,
                                payload,
                                reply,
                            }) => {
                                bytes += format::frame_len(payload.len());
                                self.inner.stats().received += 1;
                                group.push(Pending {
                                    time_ms,
                                    payload,
                                    reply,
                                });
                            }
                            Some(other) => {
                                deferred = Some(other);
                                break;
                            }
                            None => break,
                        }
                    }
                    self.last_group = group.len();
                    self.commit(&mut group).await;
                }
                other => deferred = Some(other),
            }
            if let Some(cmd) = deferred
                && let std::ops::ControlFlow::Break(reply) = self.control(cmd).await
            {
                return Some(reply);
            }
        }
        None
    }

    async fn control(&mut self, cmd: Command) -> std::ops::ControlFlow<oneshot::Sender<()>> {
        match cmd {
            Command::Append { .. } => {}
            Command::Clean { before, reply } => {
                let _ = reply.send(self.clean(before).await);
            }
            Command::Roll { reply } => {
                self.seal("request");
                let _ = reply.send(Ok(()));
            }
            Command::Close { reply } => return std::ops::ControlFlow::Break(reply),
        }
        std::ops::ControlFlow::Continue(())
    }

    fn poisoned_error(&self, cause: &str) -> WalError {
        WalError::Poisoned {
            log: self.inner.log.clone(),
            cause: cause.to_owned(),
        }
    }

    /// Writes one group durably and answers every caller in it.
    async fn commit(&mut self, group: &mut Vec<Pending>) {
        if let Some(cause) = &self.poisoned {
            self.inner.stats().failed_appends += group.len() as u64;
            let cause = cause.clone();
            for p in group.drain(..) {
                let _ = p.reply.send(Err(self.poisoned_error(&cause)));
            }
            return;
        }
        let group_bytes: u64 = group
            .iter()
            .map(|p| format::frame_len(p.payload.len()) as u64)
            .sum();
        if let Err(err) = self.prepare_segment(group_bytes).await {
            self.fail_group(group, err);
            return;
        }
        let Some(active) = self.active.as_ref() else {
            return;
        };
        let (id, start) = (active.id, active.len);

        // One buffer per group, handed to storage without another copy: each payload is copied
        // exactly once, into the frame that is written.
        let mut buf = Vec::with_capacity(group_bytes as usize);
        let mut handles = Vec::with_capacity(group.len());
        let mut max_time = None::<u64>;
        for p in group.iter() {
            let offset = start + buf.len() as u64;
            format::encode_frame(&mut buf, p.time_ms, &p.payload);
            handles.push(RecordHandle {
                segment: id,
                offset,
                length: p.payload.len() as u32,
            });
            max_time = Some(max_time.map_or(p.time_ms, |t| t.max(p.time_ms)));
        }
        let data = Bytes::from(buf);
        let written = data.len() as u64;
        let began = Instant::now();
        let result = self
            .inner
            .segments
            .append(id, &active.file, start, data)
            .await;
        let took = began.elapsed();
        match result {
            Ok(()) => {
                if let Some(active) = self.active.as_mut() {
                    active.len += written;
                }
                if let Some(info) = self.inner.meta().get_mut(&id) {
                    info.bytes = start + written;
                    info.records += handles.len() as u64;
                    info.max_time_ms = info.max_time_ms.max(max_time);
                }
                {
                    let mut stats = self.inner.stats();
                    stats.appends += handles.len() as u64;
                    stats.group_commits += 1;
                    stats.bytes += written;
                }
                if let Some(metrics) = self.config.events.metrics() {
                    let segments = self.inner.meta().len();
                    metrics.wal_group_committed(
                        &self.inner.log,
                        handles.len() as u64,
                        written,
                        took,
                        segments,
                    );
                }
                for (p, handle) in group.drain(..).zip(handles) {
                    let _ = p.reply.send(Ok(handle));
                }
            }
            Err(err) if err.is_already_exists() => {
                // The chunk name is taken by another writer: never delete what it wrote.
                self.poisoned = Some(format!("{err} (another writer is using this log)"));
                self.fail_group(group, Arc::new(err));
            }
            Err(err) => {
                let fsync_failed = err.operation() == "fsync";
                match self.inner.segments.cut_back(id, start).await {
                    Ok(()) if !fsync_failed => {
                        tracing::warn!(log = %self.inner.log, segment = id, error = %err,
                            "WAL write failed and was undone; the appends were not acknowledged");
                    }
                    undo => {
                        let mut cause = err.to_string();
                        if let Err(undo) = undo {
                            cause = format!("{cause}; undoing the write failed: {undo}");
                        }
                        tracing::error!(log = %self.inner.log, segment = id, error = %cause,
                            "WAL storage failure; the log accepts no appends until reopened");
                        self.poisoned = Some(cause);
                    }
                }
                self.fail_group(group, Arc::new(err));
            }
        }
    }

    /// Answers every append of `group` with the storage failure `cause`.
    fn fail_group(&self, group: &mut Vec<Pending>, cause: Arc<StorageError>) {
        self.inner.stats().failed_appends += group.len() as u64;
        for p in group.drain(..) {
            let _ = p.reply.send(Err(WalError::AppendFailed {
                log: self.inner.log.clone(),
                cause: Arc::clone(&cause),
            }));
        }
    }

    /// Makes sure a segment with room for `group_bytes` is open, rolling or creating as needed.
    async fn prepare_segment(&mut self, group_bytes: u64) -> Result<(), Arc<StorageError>> {
        if let Some(active) = &self.active {
            let has_records = active.len > SEGMENT_HEADER_LEN as u64;
            if has_records && active.len + group_bytes > self.config.segment_max_bytes {
                self.seal("size");
            } else if active.opened.elapsed() >= self.config.roll_interval {
                self.seal("age");
            }
        }
        if self.active.is_some() {
            return Ok(());
        }
        let id = self.next_id;
        // The last id is never used: a log whose newest segment had it could not number the
        // next one, and recovery refuses such a log.
        let Some(after) = id.checked_add(1) else {
            return Err(Arc::new(StorageError::Task {
                path: self.inner.log.clone(),
                reason: format!(
                    "no segment id is left after segment {}; move the log's segments away to \
                     start a new log",
                    id - 1
                ),
            }));
        };
        let header = format::encode_header(id, now_ms());
        match self.inner.segments.create(id, &header).await {
            Ok(file) => {
                self.next_id = after;
                self.inner.stats().segments_created += 1;
                self.active = Some(Active {
                    id,
                    file,
                    len: header.len() as u64,
                    opened: Instant::now(),
                });
                self.inner.meta().insert(
                    id,
                    SegmentInfo {
                        id,
                        bytes: header.len() as u64,
                        records: 0,
                        max_time_ms: None,
                        sealed: false,
                    },
                );
                Ok(())
            }
            Err(err) if err.is_already_exists() => {
                // Someone else created this segment: never touch it. This log's view of the
                // directory is stale, so it stops until reopened.
                self.poisoned = Some(format!("{err} (another writer is using this log)"));
                Err(Arc::new(err))
            }
            Err(err) => {
                // Remove whatever part of the new segment exists, so that it cannot later be
                // mistaken for a sealed segment with a damaged header.
                if let Err(undo) = self.inner.segments.cut(id, 0).await {
                    let cause = format!("{err}; removing the partial segment failed: {undo}");
                    self.poisoned = Some(cause);
                }
                Err(Arc::new(err))
            }
        }
    }

    /// Seals the active segment (if any); the next append opens a new one.
    fn seal(&mut self, reason: &str) {
        let Some(active) = self.active.take() else {
            return;
        };
        if let Some(info) = self.inner.meta().get_mut(&active.id) {
            info.sealed = true;
        }
        tracing::debug!(log = %self.inner.log, segment = active.id, reason, "WAL segment sealed");
        self.config.events.emit(Event::WalSegmentRolled {
            log: self.inner.log.clone(),
            sealed: active.id,
            segment: self.next_id,
            reason: reason.to_owned(),
        });
    }

    async fn clean(&mut self, before: CleanBefore) -> Result<Vec<u64>, WalError> {
        let active = self.active.as_ref().map(|a| a.id);
        // The newest segment is kept even when sealed (after a reopen or a roll): recovery
        // numbers the next segment after the newest one present, so deleting it would let a
        // new segment reuse its id, and a handle into a cleaned record would then read another
        // record instead of failing with `InvalidHandle`.
        let newest = self.inner.meta().keys().next_back().copied();
        let doomed: Vec<u64> = self
            .inner
            .meta()
            .values()
            .filter(|s| Some(s.id) != active && Some(s.id) != newest)
            .filter(|s| match before {
                CleanBefore::Time(before_ms) => s.max_time_ms.is_none_or(|t| t < before_ms),
                CleanBefore::Segment(first_kept) => s.id < first_kept,
            })
            .map(|s| s.id)
            .collect();
        if doomed.is_empty() {
            return Ok(doomed);
        }
        // Forget them first: a reader that races the deletion gets a clear "cleaned" error.
        let removed: BTreeMap<u64, SegmentInfo> = {
            let mut meta = self.inner.meta();
            doomed
                .iter()
                .filter_map(|id| meta.remove(id).map(|s| (*id, s)))
                .collect()
        };
        if let Err(err) = self.inner.segments.delete(&doomed).await {
            // Put back what may still exist; a later clean retries.
            self.inner.meta().extend(removed);
            return Err(err.into());
        }
        // What the event reports: every record cleaned is older than this.
        let before_ms = match before {
            CleanBefore::Time(before_ms) => before_ms,
            CleanBefore::Segment(_) => removed
                .values()
                .filter_map(|s| s.max_time_ms)
                .max()
                .map_or(0, |t| t.saturating_add(1)),
        };
        tracing::info!(log = %self.inner.log, segments = ?doomed, ?before, "WAL segments cleaned");
        self.config.events.emit(Event::WalSegmentsCleaned {
            log: self.inner.log.clone(),
            segments: doomed.clone(),
            before_ms,
        });
        Ok(doomed)
    }
}
