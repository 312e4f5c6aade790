//! A built-in, file-backed partitioned log (Kafka-like, without a broker): exactly-once input
//! that survives crashes of the writers, of the streaming application and of the machine.
//!
//! # Layout and format
//!
//! ```text
//! <dir>/log.meta                       "weir-partitioned-log/1", the partition count
//! <dir>/partition-00000/writer.lock    the partition's writer lock (an advisory file lock)
//! <dir>/partition-00000/<base>.log     segments: <base> = offset of the first record, 20 digits
//! <dir>/committed-<group>.offsets      committed offsets of a consumer group
//! ```
//!
//! Each partition is an append-only sequence of segment files; a record's *offset* is its
//! index in its partition (0, 1, 2, ...). A segment is a sequence of frames
//! `[len: u32 LE][crc: u32 LE][payload]`, the CRC32C covering the length bytes and the
//! payload. When the last segment holds at least
//! [`segment_bytes`](PartitionedLog::segment_bytes) (64 MiB by default) the next append
//! starts a new one. There is no retention: segments are never deleted, so
//! [`earliest`](OffsetSource::earliest) is 0.
//!
//! # Writing
//!
//! [`PartitionedLog::append`] is safe from many threads and many processes at once: it takes
//! the partition's file lock, brings its view of the partition up to date, writes the frames
//! with one `write`, `fdatasync`s the segment (and fsyncs the directory when it created one),
//! and returns the offsets the records got. When `append` returns the records are durable.
//!
//! An append that fails leaves nothing behind: what its write or fsync put in the segment is
//! cut off (truncated back to the last acknowledged record, durably) before it returns, so a
//! producer that retries stores its records once, at the offsets they would have had. If the
//! cut fails too, the handle (and its clones) refuses further appends to that partition with
//! [`LogError::Poisoned`] until the log is opened again; the unacknowledged records may then
//! be there whole, as after a crash. A writer killed in the middle of an append cannot cut
//! anything: its records may be there whole, or torn (below). (No producer sequence numbers:
//! a record whose append never returned is "unknown", as in the engine's WAL.)
//!
//! # Torn tails, and damage
//!
//! A writer that dies in the middle of an append leaves a *torn tail*: an incomplete frame,
//! or one whose CRC does not match, at the end of the last segment, with nothing valid after
//! it. Whoever next holds the partition's lock — [`open`](PartitionedLog::open) /
//! [`create`](PartitionedLog::create), or the next append — cuts it off (truncate + fsync)
//! and reports it ([`PartitionedLog::torn_tails`] and a `tracing` warning). Records before it
//! are intact; the torn record was never acknowledged to its writer.
//!
//! Damage followed by a valid record is not a torn tail, wherever it is: cutting it would
//! drop acknowledged records and give their offsets to new ones, so a consumer that had read
//! past the cut would silently skip those. It is [`LogError::Corrupt`], naming the segment,
//! the byte of the damage and the byte of the valid record, and nothing is cut. Since a
//! damaged length hides where the next frame starts, the lock holder tries every byte
//! position after the damage (each in O(log length), see `partitioned_log/frame.rs`), reading
//! the rest of the segment into memory to do so. A damaged frame in any segment but the last
//! is corruption too.
//!
//! Known limits. A flipped bit in the *last* acknowledged record, with nothing after it,
//! cannot be told from a torn write: it is cut (and reported), and its offset is reused. A
//! power cut that kept a later page of an unacknowledged multi-page append but not an
//! earlier one, or a torn record whose payload itself holds a whole valid frame, is reported
//! as corruption: the log refuses to open until someone inspects the segment (and, deciding
//! the bytes from the damage on are unwanted, truncates it at the damage's byte). Readers
//! that do not hold the lock
//! stop at an incomplete or damaged frame (it may be an append in progress) without cutting
//! or judging it.
//!
//! # Reading: an [`OffsetSource`]
//!
//! `PartitionedLog` implements [`OffsetSource`], so
//! [`StreamingContext::direct_stream`](crate::StreamingContext::direct_stream) reads it with
//! exactly-once semantics: each batch's offset ranges are planned and kept in the checkpoint
//! (a re-run reads the same records), and after a batch's outputs completed the next offsets
//! are committed back to the log, atomically, into the consumer group's
//! `committed-<group>.offsets` (written to a temporary file, fsynced, renamed, directory
//! fsynced). The checkpoint stays the source of truth for the application; the committed
//! file tells other tools (or a new application) how far it got — see
//! [`PartitionedLog::committed`]. A batch is bounded in bytes too (a direct stream's
//! `max_bytes_per_batch`, 64 MiB by default): the log tells how many records fit
//! ([`PartitionedLog::byte_prefix`]) from its sparse index and frame headers, without reading
//! a payload, so a large backlog is read over several batches, each of which fits.
//!
//! Every durable step (directories, segment creation, appends, cutting torn tails, the atomic
//! `log.meta` and committed-offsets files) goes through the engine's durable-file module
//! (`weir_actors::durable`), with the log's own failpoints (`partitioned_log::…`, listed in
//! `docs/testing.md`). A crash during an atomic write can leave a hidden `.tmp-…` file beside
//! the log's files; it is never read.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use weir::dstream::StartingOffsets;
//! use weir::sources::partitioned_log::PartitionedLog;
//! use weir::testing::{Collected, ManualClock};
//!
//! let dir = tempfile::tempdir()?;
//! let log = PartitionedLog::create(dir.path(), 2)?;
//! assert_eq!(log.append(0, &["a", "b"])?, 0..2);
//! assert_eq!(log.append(1, &["c"])?, 0..1);
//!
//! let seen = Collected::default();
//! let (source, out) = (log.clone(), seen.clone());
//! let mut clock = ManualClock::new(1000, 2, move |ctx| {
//!     let records = ctx
//!         .direct_stream(Arc::new(source.clone()), StartingOffsets::Earliest, None)
//!         .uid("log")
//!         .map(|b| String::from_utf8_lossy(b).into_owned());
//!     out.collect(&records);
//! })?;
//! clock.run(1).await?;
//! assert_eq!(seen.sorted(1000), vec!["a", "b", "c"]);
//! assert_eq!(log.committed()?, Some(vec![2, 1])); // committed back after the output
//! # Ok(()) }
//! ```

pub(crate) mod frame;
mod sizes;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir_actors::durable::{self, Failpoints, FsError};
use weir_actors::pipeline::UserError;

pub use self::frame::MAX_RECORD_BYTES;
use self::frame::{FRAME_HEADER, encode_frame, find_valid_frame, read_frame};
use crate::dstream::OffsetSource;
use crate::dstream::memo::lock;

/// The log's failpoints (with the `failpoints` feature; see `docs/testing.md`).
const FAILPOINTS: Failpoints = Failpoints {
    write: Some("partitioned_log::write"),
    torn_write: Some("partitioned_log::write::torn"),
    disk_full: Some("partitioned_log::write::enospc"),
    fsync: Some("partitioned_log::fsync"),
    dir_fsync: Some("partitioned_log::dir_fsync"),
    rename: Some("partitioned_log::rename"),
    create_dir: Some("partitioned_log::create_dir"),
    truncate: Some("partitioned_log::truncate"),
    ..Failpoints::NONE
};

const META_FILE: &str = "log.meta";
const META_HEADER: &str = "weir-partitioned-log/1";
const COMMITTED_HEADER: &str = "weir-committed-offsets/1";
/// One sparse index entry per this many records.
const INDEX_EVERY: u64 = 1024;

/// Why the log could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// A file system operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// The directory is not a partitioned log.
    #[error("{} is not a partitioned log (no valid {META_FILE}): {reason}", dir.display())]
    NotALog {
        /// The directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The log exists with another partition count.
    #[error("the log at {} has {found} partitions, not {asked}", dir.display())]
    PartitionCount {
        /// The directory.
        dir: PathBuf,
        /// Its partition count.
        found: u32,
        /// The count asked for.
        asked: u32,
    },
    /// There is no such partition.
    #[error("partition {partition} does not exist; the log has {partitions}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u32,
        /// How many there are.
        partitions: u32,
    },
    /// A record is larger than [`MAX_RECORD_BYTES`].
    #[error("a record of {len} bytes is larger than the maximum of {MAX_RECORD_BYTES}")]
    RecordTooLarge {
        /// Its length.
        len: usize,
    },
    /// Offsets were asked for that the partition does not hold.
    #[error("partition {partition} holds offsets {earliest}..{latest}; {asked:?} is out of range")]
    OutOfRange {
        /// The partition.
        partition: u32,
        /// The range asked for.
        asked: Range<u64>,
        /// Its first offset.
        earliest: u64,
        /// One past its last offset.
        latest: u64,
    },
    /// The log's files are damaged somewhere a crash cannot have torn them.
    #[error("the log is damaged: {0}")]
    Corrupt(String),
    /// An append failed and could not be undone: this handle refuses further appends to the
    /// partition until the log is opened again.
    #[error(
        "partition {partition} refuses appends until the log is opened again: a failed append \
         could not be undone ({reason})"
    )]
    Poisoned {
        /// The partition.
        partition: u32,
        /// Why the undo failed.
        reason: String,
    },
    /// Committed offsets for the wrong number of partitions.
    #[error("{given} committed offsets given for a log of {partitions} partitions")]
    CommitShape {
        /// How many offsets were given.
        given: usize,
        /// How many partitions the log has.
        partitions: u32,
    },
}

/// A torn tail that was cut off a partition's last segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The partition.
    pub partition: u32,
    /// The segment file.
    pub segment: PathBuf,
    /// The length the segment was cut to (the end of its last whole record).
    pub cut_at: u64,
    /// How many bytes were cut off.
    pub bytes_cut: u64,
}

/// One segment as far as it was scanned.
#[derive(Debug)]
struct Segment {
    base: u64,
    path: PathBuf,
    /// Whole, valid records seen.
    records: u64,
    /// Bytes those records take (where scanning goes on).
    valid_len: u64,
    /// (offset, byte position) every [`INDEX_EVERY`] records, starting with (base, 0).
    index: Vec<(u64, u64)>,
}

impl Segment {
    fn end(&self) -> u64 {
        self.base + self.records
    }
}

/// What a scan of a segment's tail found after its valid records.
enum Tail {
    /// The file ends at the last whole record.
    Clean,
    /// An incomplete or damaged frame starts at the valid end; the file is this long.
    Torn { file_len: u64, reason: String },
}

#[derive(Debug, Default)]
struct PartitionView {
    segments: Vec<Segment>,
}

struct Inner {
    dir: PathBuf,
    partitions: u32,
    group: String,
    segment_bytes: u64,
    views: Vec<Mutex<PartitionView>>,
    torn: Mutex<Vec<TornTail>>,
    /// Partitions whose failed append could not be undone, with the reason.
    poisoned: Mutex<BTreeMap<u32, String>>,
}

/// A file-backed partitioned log; see the [module documentation](self). Clones share one
/// view of the files.
#[derive(Clone)]
pub struct PartitionedLog {
    inner: Arc<Inner>,
}

impl fmt::Debug for PartitionedLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedLog")
            .field("dir", &self.inner.dir)
            .field("partitions", &self.inner.partitions)
            .field("group", &self.inner.group)
            .finish_non_exhaustive()
    }
}

fn partition_dir(dir: &Path, partition: u32) -> PathBuf {
    dir.join(format!("partition-{partition:05}"))
}

fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Scans `segment` from its valid end, adding whole records.
fn scan(segment: &mut Segment) -> Result<Tail, LogError> {
    let mut file = match File::open(&segment.path) {
        Ok(file) => file,
        Err(e) => return Err(FsError::io("open", &segment.path)(e).into()),
    };
    let file_len = file
        .metadata()
        .map_err(FsError::io("stat", &segment.path))?
        .len();
    if file_len == segment.valid_len {
        return Ok(Tail::Clean);
    }
    if file_len < segment.valid_len {
        return Err(LogError::Corrupt(format!(
            "{} shrank to {file_len} bytes below its {} bytes of records",
            segment.path.display(),
            segment.valid_len
        )));
    }
    file.seek(SeekFrom::Start(segment.valid_len))
        .map_err(FsError::io("seek in", &segment.path))?;
    let mut reader = BufReader::with_capacity(256 * 1024, file.take(file_len - segment.valid_len));
    loop {
        match read_frame(&mut reader).map_err(FsError::io("read", &segment.path))? {
            Ok(None) => return Ok(Tail::Clean),
            Ok(Some(payload)) => {
                segment.records += 1;
                segment.valid_len += (FRAME_HEADER + payload.len()) as u64;
                if segment.records.is_multiple_of(INDEX_EVERY) {
                    segment
                        .index
                        .push((segment.base + segment.records, segment.valid_len));
                }
            }
            Err(reason) => return Ok(Tail::Torn { file_len, reason }),
        }
    }
}

/// Where the first valid frame after the damaged one at `segment`'s valid end starts (an
/// absolute byte position), if any: the bytes from the damage to `file_len` are read and
/// every position is tried (see [`find_valid_frame`]). Only on damage, under the lock.
fn valid_frame_after(segment: &Segment, file_len: u64) -> Result<Option<u64>, LogError> {
    let mut file = File::open(&segment.path).map_err(FsError::io("open", &segment.path))?;
    file.seek(SeekFrom::Start(segment.valid_len))
        .map_err(FsError::io("seek in", &segment.path))?;
    let mut rest = Vec::new();
    file.take(file_len - segment.valid_len)
        .read_to_end(&mut rest)
        .map_err(FsError::io("read", &segment.path))?;
    Ok(find_valid_frame(&rest, 1).map(|at| segment.valid_len + at as u64))
}

impl PartitionedLog {
    /// Opens the log at `dir`, creating it with `partitions` partitions (at least 1) if it
    /// does not exist; torn tails are cut (see [`torn_tails`](Self::torn_tails)).
    ///
    /// # Errors
    ///
    /// The log exists with another partition count, its files are damaged, or I/O failed.
    pub fn create(dir: impl AsRef<Path>, partitions: u32) -> Result<Self, LogError> {
        let dir = dir.as_ref();
        let partitions = partitions.max(1);
        if !dir.join(META_FILE).exists() {
            durable::create_dir_all(dir, FAILPOINTS)?;
            for p in 0..partitions {
                durable::create_dir_all(&partition_dir(dir, p), FAILPOINTS)?;
            }
            durable::write_atomic(
                &dir.join(META_FILE),
                format!("{META_HEADER}\npartitions {partitions}\n").as_bytes(),
                FAILPOINTS,
            )?;
        }
        let log = Self::open(dir)?;
        if log.inner.partitions != partitions {
            return Err(LogError::PartitionCount {
                dir: dir.to_path_buf(),
                found: log.inner.partitions,
                asked: partitions,
            });
        }
        Ok(log)
    }

    /// Opens the existing log at `dir`; torn tails are cut (see
    /// [`torn_tails`](Self::torn_tails)).
    ///
    /// # Errors
    ///
    /// `dir` is not a log, its files are damaged, or I/O failed.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let not_a_log = |reason: String| LogError::NotALog {
            dir: dir.clone(),
            reason,
        };
        let meta_path = dir.join(META_FILE);
        let meta = fs::read_to_string(&meta_path).map_err(|e| not_a_log(e.to_string()))?;
        let mut lines = meta.lines();
        if lines.next() != Some(META_HEADER) {
            return Err(not_a_log(format!("it does not start with {META_HEADER}")));
        }
        let partitions = lines
            .next()
            .and_then(|l| l.strip_prefix("partitions "))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|n| *n > 0)
            .ok_or_else(|| not_a_log("no valid partition count".to_owned()))?;
        let log = PartitionedLog {
            inner: Arc::new(Inner {
                dir,
                partitions,
                group: "default".to_owned(),
                segment_bytes: 64 * 1024 * 1024,
                views: (0..partitions)
                    .map(|_| Mutex::new(PartitionView::default()))
                    .collect(),
                torn: Mutex::new(Vec::new()),
                poisoned: Mutex::new(BTreeMap::new()),
            }),
        };
        for p in 0..partitions {
            let _lock = log.writer_lock(p)?;
            log.refresh(p, true)?;
        }
        Ok(log)
    }

    /// The same log with committed offsets kept for consumer group `group` (default
    /// `"default"`; letters, digits, `-` and `_`, other characters are replaced by `_`).
    #[must_use]
    pub fn consumer_group(self, group: &str) -> Self {
        let group: String = group
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.with(|inner| inner.group = group)
    }

    /// The same log with new segments started once the last one holds `bytes` (at least
    /// 1; default 64 MiB).
    #[must_use]
    pub fn segment_bytes(self, bytes: u64) -> Self {
        self.with(|inner| inner.segment_bytes = bytes.max(1))
    }

    fn with(self, change: impl FnOnce(&mut Inner)) -> Self {
        let old = &self.inner;
        let mut inner = Inner {
            dir: old.dir.clone(),
            partitions: old.partitions,
            group: old.group.clone(),
            segment_bytes: old.segment_bytes,
            views: (0..old.partitions)
                .map(|_| Mutex::new(PartitionView::default()))
                .collect(),
            torn: Mutex::new(lock(&old.torn).clone()),
            poisoned: Mutex::new(lock(&old.poisoned).clone()),
        };
        change(&mut inner);
        PartitionedLog {
            inner: Arc::new(inner),
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many partitions it has.
    pub fn partition_count(&self) -> u32 {
        self.inner.partitions
    }

    /// The torn tails this handle cut off: at open, before an append, or undoing a failed
    /// append that had written bytes.
    pub fn torn_tails(&self) -> Vec<TornTail> {
        lock(&self.inner.torn).clone()
    }

    fn check_partition(&self, partition: u32) -> Result<(), LogError> {
        if partition < self.inner.partitions {
            Ok(())
        } else {
            Err(LogError::NoSuchPartition {
                partition,
                partitions: self.inner.partitions,
            })
        }
    }

    /// Checks that `range` of `partition` is in the log: below its end as this handle knows
    /// it, or as the files say after a refresh (another writer may have appended).
    fn check_in_log(&self, partition: u32, range: &Range<u64>) -> Result<(), LogError> {
        let known = {
            let view = lock(&self.inner.views[partition as usize]);
            view.segments.last().map_or(0, Segment::end)
        };
        let end = if range.end > known {
            self.refresh(partition, false)?
        } else {
            known
        };
        if range.end > end {
            return Err(LogError::OutOfRange {
                partition,
                asked: range.clone(),
                earliest: 0,
                latest: end,
            });
        }
        Ok(())
    }

    /// Takes the partition's writer lock (blocking until other writers release it).
    fn writer_lock(&self, partition: u32) -> Result<File, LogError> {
        let path = partition_dir(&self.inner.dir, partition).join("writer.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(FsError::io("open the lock file", &path))?;
        file.lock().map_err(FsError::io("lock", &path))?;
        Ok(file)
    }

    /// Brings the view of `partition` up to date with its files. With `writer` (the lock
    /// held), a torn tail of the last segment is cut off, and damage followed by a valid
    /// record is [`LogError::Corrupt`]; without, scanning stops at either.
    fn refresh(&self, partition: u32, writer: bool) -> Result<u64, LogError> {
        let mut view = lock(&self.inner.views[partition as usize]);
        let pdir = partition_dir(&self.inner.dir, partition);
        // New segments (bases beyond the known ones).
        let known_last = view.segments.last().map(|s| s.base);
        let mut found = BTreeMap::new();
        for entry in fs::read_dir(&pdir).map_err(FsError::io("list", &pdir))? {
            let entry = entry.map_err(FsError::io("list", &pdir))?;
            let name = entry.file_name();
            let Some(base) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .filter(|b| b.len() == 20)
                .and_then(|b| b.parse::<u64>().ok())
            else {
                continue;
            };
            if known_last.is_none_or(|last| base > last) {
                found.insert(base, entry.path());
            }
        }
        let mut fresh: Vec<Segment> = found
            .into_iter()
            .map(|(base, path)| Segment {
                base,
                path,
                records: 0,
                valid_len: 0,
                index: vec![(base, 0)],
            })
            .collect();
        // Scan the last known segment to its end, then the new ones in order.
        let old = view.segments.len();
        view.segments.append(&mut fresh);
        let total = view.segments.len();
        for i in old.saturating_sub(1)..total {
            let is_last = i + 1 == total;
            let tail = scan(&mut view.segments[i])?;
            if let Tail::Torn { file_len, reason } = tail {
                let segment = &view.segments[i];
                if !is_last {
                    return Err(LogError::Corrupt(format!(
                        "{} holds {reason} at byte {}, and later segments follow",
                        segment.path.display(),
                        segment.valid_len
                    )));
                }
                if writer {
                    // Anything valid after the damage makes it corruption, not a torn tail:
                    // cutting would give the records after it, and their offsets, away.
                    if let Some(at) = valid_frame_after(segment, file_len)? {
                        return Err(LogError::Corrupt(format!(
                            "{} holds {reason} at byte {}, followed by a valid record at byte \
                             {at}: damage, not a torn tail (nothing was cut)",
                            segment.path.display(),
                            segment.valid_len
                        )));
                    }
                    durable::truncate(&segment.path, segment.valid_len, FAILPOINTS)?;
                    let torn = TornTail {
                        partition,
                        segment: segment.path.clone(),
                        cut_at: segment.valid_len,
                        bytes_cut: file_len - segment.valid_len,
                    };
                    tracing::warn!(
                        "cut a torn tail off {}: {reason} at byte {}, {} bytes removed",
                        torn.segment.display(),
                        torn.cut_at,
                        torn.bytes_cut
                    );
                    lock(&self.inner.torn).push(torn);
                }
            }
            if i > 0 {
                let (prev, this) = (&view.segments[i - 1], &view.segments[i]);
                if prev.end() != this.base {
                    return Err(LogError::Corrupt(format!(
                        "{} ends at offset {} but the next segment {} starts at {}",
                        prev.path.display(),
                        prev.end(),
                        this.path.display(),
                        this.base
                    )));
                }
            }
        }
        Ok(view.segments.last().map_or(0, Segment::end))
    }

    /// Appends `records` to `partition`, durably; returns the offsets they got. Safe from
    /// many threads and processes at once (they take turns on the partition's file lock).
    ///
    /// # Errors
    ///
    /// No such partition, a record over [`MAX_RECORD_BYTES`], damaged files, or I/O failed.
    /// Then nothing was acknowledged, and nothing of the append stays: what a failed write or
    /// fsync left is cut off (truncated back to the last acknowledged record, durably) before
    /// this returns, so a retry stores the records once. If that cut fails, this handle
    /// refuses further appends to the partition ([`LogError::Poisoned`]) until the log is
    /// opened again; the records may then be there whole, as after a crash.
    pub fn append<R: AsRef<[u8]>>(
        &self,
        partition: u32,
        records: &[R],
    ) -> Result<Range<u64>, LogError> {
        self.check_partition(partition)?;
        if let Some(reason) = lock(&self.inner.poisoned).get(&partition) {
            return Err(LogError::Poisoned {
                partition,
                reason: reason.clone(),
            });
        }
        let mut buf = Vec::new();
        for record in records {
            let payload = record.as_ref();
            if payload.len() > MAX_RECORD_BYTES {
                return Err(LogError::RecordTooLarge { len: payload.len() });
            }
            encode_frame(&mut buf, payload);
        }
        let _lock = self.writer_lock(partition)?;
        let end = self.refresh(partition, true)?;
        if records.is_empty() {
            return Ok(end..end);
        }
        let mut view = lock(&self.inner.views[partition as usize]);
        let pdir = partition_dir(&self.inner.dir, partition);
        let needs_segment = view
            .segments
            .last()
            .is_none_or(|s| s.valid_len >= self.inner.segment_bytes);
        if needs_segment {
            let path = pdir.join(segment_name(end));
            // Empty, fsynced, and its name fsynced into the partition's directory.
            durable::create_new(&path, b"", FAILPOINTS)?;
            view.segments.push(Segment {
                base: end,
                path,
                records: 0,
                valid_len: 0,
                index: vec![(end, 0)],
            });
        }
        let Some(segment) = view.segments.last_mut() else {
            return Err(LogError::Corrupt(format!(
                "partition {partition} has no segment after creating one"
            )));
        };
        // Under the lock, after `refresh`, the file ends at `valid_len` (a torn tail was cut).
        let file = OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .map_err(FsError::io("open", &segment.path))?;
        let written =
            durable::write_all_at(&file, &segment.path, segment.valid_len, &buf, FAILPOINTS)
                .and_then(|()| durable::sync_data(&file, &segment.path, FAILPOINTS));
        if let Err(err) = written {
            drop(file);
            self.undo_append(partition, segment);
            return Err(err.into());
        }
        // Account for the records (as a scan would).
        let mut pos = segment.valid_len;
        for record in records {
            segment.records += 1;
            pos += (FRAME_HEADER + record.as_ref().len()) as u64;
            if segment.records.is_multiple_of(INDEX_EVERY) {
                segment.index.push((segment.base + segment.records, pos));
            }
        }
        segment.valid_len = pos;
        Ok(end..segment.end())
    }

    /// Cuts what a failed append may have left after `segment`'s last acknowledged record
    /// (the lock held), durably; reports a cut of written bytes as a torn tail. If the cut
    /// fails, poisons the partition for this handle.
    fn undo_append(&self, partition: u32, segment: &Segment) {
        let file_len = fs::metadata(&segment.path).map(|m| m.len()).ok();
        match durable::truncate(&segment.path, segment.valid_len, FAILPOINTS) {
            Ok(()) => {
                let Some(bytes_cut) = file_len
                    .map(|len| len.saturating_sub(segment.valid_len))
                    .filter(|cut| *cut > 0)
                else {
                    return;
                };
                let torn = TornTail {
                    partition,
                    segment: segment.path.clone(),
                    cut_at: segment.valid_len,
                    bytes_cut,
                };
                tracing::warn!(
                    "cut the {bytes_cut} bytes a failed append left in {} at byte {}",
                    torn.segment.display(),
                    torn.cut_at
                );
                lock(&self.inner.torn).push(torn);
            }
            Err(err) => {
                tracing::error!(
                    "partition {partition}: a failed append could not be undone ({err}); this \
                     handle refuses appends to it until the log is opened again"
                );
                lock(&self.inner.poisoned).insert(partition, err.to_string());
            }
        }
    }

    /// One past the last record of every partition, as the files are now.
    ///
    /// # Errors
    ///
    /// Damaged files or I/O failed.
    pub fn end_offsets(&self) -> Result<Vec<u64>, LogError> {
        (0..self.inner.partitions)
            .map(|p| self.refresh(p, false))
            .collect()
    }

    /// The records `range` of `partition`.
    ///
    /// # Errors
    ///
    /// No such partition, offsets the partition does not hold, damaged files, or I/O failed.
    pub fn read_range(&self, partition: u32, range: Range<u64>) -> Result<Vec<Bytes>, LogError> {
        self.check_partition(partition)?;
        if range.is_empty() {
            return Ok(Vec::new());
        }
        self.check_in_log(partition, &range)?;
        // Where to start in which segments (copied out, so reading holds no lock).
        let plan: Vec<(PathBuf, u64, u64, u64)> = {
            let view = lock(&self.inner.views[partition as usize]);
            view.segments
                .iter()
                .filter(|s| s.end() > range.start && s.base < range.end)
                .map(|s| {
                    let i = s
                        .index
                        .partition_point(|(o, _)| *o <= range.start.max(s.base));
                    let (offset, pos) = s.index[i.saturating_sub(1)];
                    (s.path.clone(), offset, pos, s.valid_len)
                })
                .collect()
        };
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut next = range.start;
        for (path, mut offset, pos, valid_len) in plan {
            let mut file = File::open(&path).map_err(FsError::io("open", &path))?;
            file.seek(SeekFrom::Start(pos))
                .map_err(FsError::io("seek in", &path))?;
            let mut reader = BufReader::with_capacity(256 * 1024, file.take(valid_len - pos));
            while next < range.end {
                match read_frame(&mut reader).map_err(FsError::io("read", &path))? {
                    Ok(Some(payload)) => {
                        if offset >= next {
                            out.push(Bytes::from(payload));
                            next += 1;
                        }
                        offset += 1;
                    }
                    Ok(None) => break,
                    Err(reason) => {
                        return Err(LogError::Corrupt(format!(
                            "{} holds {reason} before offset {next}, inside the part already \
                             read whole",
                            path.display()
                        )));
                    }
                }
            }
        }
        if next != range.end {
            return Err(LogError::Corrupt(format!(
                "partition {partition}: found offsets {}..{next} of {range:?}",
                range.start
            )));
        }
        Ok(out)
    }

    /// Of the records `range` of `partition`, the longest run from `range.start` whose
    /// payloads total at most `max_bytes`: one past its last record, and their bytes (what a
    /// direct stream asks to bound a batch in bytes, [`OffsetSource::byte_prefix`]). Told from
    /// the segments' sparse index and frame headers, without reading a payload: at most about
    /// two thousand headers per segment, whatever the range.
    ///
    /// # Errors
    ///
    /// As for [`read_range`](Self::read_range).
    pub fn byte_prefix(
        &self,
        partition: u32,
        range: Range<u64>,
        max_bytes: u64,
    ) -> Result<(u64, u64), LogError> {
        self.check_partition(partition)?;
        if range.is_empty() {
            return Ok((range.start, 0));
        }
        self.check_in_log(partition, &range)?;
        // The segments' spans, copied out, so that reading holds no lock.
        /// A segment's path, index, end offset and valid length.
        type Span = (PathBuf, Vec<(u64, u64)>, u64, u64);
        let spans: Vec<Span> = {
            let view = lock(&self.inner.views[partition as usize]);
            view.segments
                .iter()
                .filter(|s| s.end() > range.start && s.base < range.end)
                .map(|s| (s.path.clone(), s.index.clone(), s.end(), s.valid_len))
                .collect()
        };
        let (mut until, mut bytes) = (range.start, 0u64);
        for (path, index, segment_end, valid_len) in spans {
            if until >= range.end {
                break;
            }
            let file = File::open(&path).map_err(FsError::io("open", &path))?;
            let span = sizes::SegmentSpan {
                index: &index,
                end: segment_end,
                valid_len,
            };
            let walked = sizes::walk(span, until, range.end, max_bytes - bytes, |pos, buf| {
                file.read_exact_at(buf, pos)
            })
            .map_err(FsError::io("read", &path))?
            .map_err(|reason| LogError::Corrupt(format!("{}: {reason}", path.display())))?;
            until = walked.until;
            bytes += walked.bytes;
            if walked.full {
                break;
            }
        }
        Ok((until, bytes))
    }

    fn committed_path(&self) -> PathBuf {
        self.inner
            .dir
            .join(format!("committed-{}.offsets", self.inner.group))
    }

    /// The offsets this consumer group committed (`None`: never committed).
    ///
    /// # Errors
    ///
    /// The file is damaged or cannot be read.
    pub fn committed(&self) -> Result<Option<Vec<u64>>, LogError> {
        let path = self.committed_path();
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(FsError::io("read", &path)(e).into()),
        };
        let corrupt = |what: &str| LogError::Corrupt(format!("{} {what}", path.display()));
        let (body, crc_line) = text
            .trim_end_matches('\n')
            .rsplit_once('\n')
            .ok_or_else(|| corrupt("is truncated"))?;
        let crc = crc_line
            .strip_prefix("crc32c ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt("has no checksum line"))?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return Err(corrupt("does not match its checksum"));
        }
        let mut lines = body.lines();
        if lines.next() != Some(COMMITTED_HEADER) {
            return Err(corrupt(&format!("does not start with {COMMITTED_HEADER}")));
        }
        let offsets = lines
            .map(|l| l.parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(&format!("holds an invalid offset ({e})")))?;
        if offsets.len() != self.inner.partitions as usize {
            return Err(corrupt(&format!(
                "holds {} offsets for {} partitions",
                offsets.len(),
                self.inner.partitions
            )));
        }
        Ok(Some(offsets))
    }

    /// Records, atomically and durably, that this consumer group processed everything before
    /// `next` (one offset per partition).
    ///
    /// # Errors
    ///
    /// Not one offset per partition, or I/O failed (the previous commit stays).
    pub fn commit_offsets(&self, next: &[u64]) -> Result<(), LogError> {
        if next.len() != self.inner.partitions as usize {
            return Err(LogError::CommitShape {
                given: next.len(),
                partitions: self.inner.partitions,
            });
        }
        let mut body = COMMITTED_HEADER.to_owned();
        for offset in next {
            body.push('\n');
            body.push_str(&offset.to_string());
        }
        let text = format!("{body}\ncrc32c {:08x}\n", crc32c::crc32c(body.as_bytes()));
        durable::write_atomic(&self.committed_path(), text.as_bytes(), FAILPOINTS)?;
        Ok(())
    }
}

fn user(err: LogError) -> UserError {
    Box::new(err)
}

impl OffsetSource for PartitionedLog {
    fn name(&self) -> String {
        format!("partitioned-log:{}", self.inner.dir.display())
    }
    fn partitions(&self) -> usize {
        self.inner.partitions as usize
    }
    fn earliest(&self) -> Result<Vec<u64>, UserError> {
        Ok(vec![0; self.inner.partitions as usize])
    }
    fn latest(&self) -> Result<Vec<u64>, UserError> {
        self.end_offsets().map_err(user)
    }
    fn read(&self, partition: u32, range: Range<u64>) -> Result<Vec<Bytes>, UserError> {
        self.read_range(partition, range).map_err(user)
    }
    fn byte_prefix(
        &self,
        partition: u32,
        range: Range<u64>,
        max_bytes: u64,
    ) -> Result<(u64, u64), UserError> {
        PartitionedLog::byte_prefix(self, partition, range, max_bytes).map_err(user)
    }
    fn commit(&self, next: &[u64]) -> Result<(), UserError> {
        self.commit_offsets(next).map_err(user)
    }
}
