//! The file stream: the text lines of the files that appear in a directory (Spark's
//! `textFileStream`), each file processed exactly once across restarts.
//!
//! It is a planned source, not a receiver: when a batch is generated, the driver lists the
//! directory and decides what the batch reads — of each file its name, modification time,
//! length, and the byte range the batch takes of it. That list is part of the checkpointed
//! plan, so a batch re-run after a crash reads the same ranges of the same files, and of each
//! file only the bytes it had when it was first planned (data appended later is not read, by
//! that batch or any other).
//!
//! # Which files
//!
//! Put files into the directory by writing them elsewhere (or under an ignored name) and
//! renaming them in; a file is taken as it is when a batch is planned. Only regular files
//! (symbolic links are followed) directly in the directory count; ignored are names that
//!
//! - start with `.` (hidden) or `_` (temporary, like Hadoop's `_temporary`),
//! - end with `.tmp`, `.temp`, `.partial`, `.part` or `~` (files being written),
//! - are not valid UTF-8 (they cannot be kept in a plan),
//! - or are rejected by a [`FileStreamOptions::filter`].
//!
//! Each batch takes the new files in order of (modification time, name), at most
//! [`max_files_per_batch`](FileStreamOptions::max_files_per_batch) of them; the rest wait for
//! later batches. The files of a batch are spread over the stream's partitions (file *i* of
//! the batch into partition *i* mod `parallelism`). By default the files already in the
//! directory when the first batch is planned are processed too (Spark ignores them; set
//! [`new_files_only`](FileStreamOptions::new_files_only) for its behaviour).
//!
//! # Batch size in bytes
//!
//! A batch reads at most [`max_bytes_per_batch`](FileStreamOptions::max_bytes_per_batch)
//! bytes of files (64 MiB by default), so a planned batch always fits in memory, however large
//! the files that arrive: the plan is checkpointed before the batch runs and a restart re-runs
//! the same plan, so a batch that cannot fit would fail again on every restart. A file larger
//! than what is left of the budget is split into byte ranges read by consecutive batches: the
//! batch takes `[from, until)` of it and the position remembers the rest, which the next batch
//! plans first (the rest of a file counts as one of its
//! [`max_files_per_batch`](FileStreamOptions::max_files_per_batch)). A line belongs to the
//! range in which it starts: a range that does not start the file skips the end of the line
//! before it, and a range reads past its end to finish its last line — never past the length
//! the file had when first planned, and keeping at most
//! [`max_line_len`](FileStreamOptions::max_line_len) bytes of it — so each line is read by
//! exactly one batch. A batch therefore holds at most the budget plus one line per range;
//! each batch takes at least one byte (a binary-records stream: one record), so a stream
//! always makes progress. The ranges of a batch go to the stream's partitions like its files
//! (range *i* of the batch into partition *i* mod `parallelism`).
//!
//! # What is remembered (bounded)
//!
//! The source remembers processed files by name, with a *watermark*: the newest modification
//! time among the files it processed, minus the [remember
//! window](FileStreamOptions::remember) (60 s by default, Spark's minimum remember duration).
//! Files older than the watermark are ignored, and only the names of processed files at or
//! above it are kept — in memory and in the checkpoint — so both stay bounded by the files
//! that arrive within one window. Consequences, as in Spark:
//!
//! - a file renamed in with a modification time older than the watermark is never read
//!   (renames keep the modification time: move in files written recently);
//! - a file modified after it was processed is ignored while its name is remembered, i.e.
//!   until the watermark passes its old modification time; after that a modification makes
//!   it a new file. Do not modify files in the directory.
//!
//! A modification time in the future (a writer with a skewed clock) counts as now for the
//! watermark, so such a file does not hide the files that arrive after it.
//!
//! # Bad input
//!
//! Files are streamed line by line (a 64 KiB read buffer); nothing here panics on what a file
//! holds. Every problem is counted in [`FileStreamStats`], exactly, and its message — naming
//! the file, the line and its byte offset (in a range that does not start the file, the line
//! is named by its byte offset only) — kept among its
//! [`recent_problems`](FileStreamStats::recent_problems). It is also logged as a `tracing`
//! warning, but of each kind at most once per
//! [`problem_log_interval`](FileStreamOptions::problem_log_interval) (10 s by default): that
//! warning is a sample, and says how many problems of its kind were counted and not logged
//! since the previous one — so a file of bad lines cannot flood the log. Lines are split at
//! `\n`, a `\r` before it is removed, and a last line without `\n` counts.
//!
//! - A line that is not valid UTF-8 is skipped ([`BadUtf8::Skip`], the default) or kept with
//!   each invalid sequence replaced by U+FFFD ([`BadUtf8::Replace`]). The other lines of the
//!   file are read as usual.
//! - A line longer than [`max_line_len`](FileStreamOptions::max_line_len) bytes (1 MiB by
//!   default) is skipped ([`LongLines::Skip`], the default) or cut to its first
//!   `max_line_len` bytes at a character boundary ([`LongLines::Truncate`]); memory stays
//!   bounded by that length however long the line is, because the rest of it is read and
//!   dropped.
//! - A planned file that is gone when the batch reads it is reported and read as empty
//!   ([`MissingFiles::Skip`], the default), or fails the batch with an error naming the file
//!   ([`MissingFiles::Fail`]; the batch then fails on every retry until the file is back). A
//!   file that is shorter than planned is read up to its end and reported; a file whose
//!   modification time changed since it was planned is reported and read up to its planned
//!   length. A file split over several batches is checked, and reported, by each of its
//!   ranges. Exactly-once therefore holds for files that stay unchanged in the directory at
//!   least until the batch that read their last range is complete: a re-run can only read
//!   again what is still there. Deleting processed files after that is safe.
//! - Any other I/O error (e.g. permission denied) fails the batch's job with the path and the
//!   cause; the engine retries it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use super::socket::LongLines;
use crate::dstream::memo::lock;
use crate::dstream::planned::{DEFAULT_MAX_BYTES_PER_BATCH, Planner, upgrade_state};
use crate::error::{ComputeError, ComputeResult};
use crate::sources::problems::{ProblemLog, suppressed_note};
use crate::text::Str;

/// What to do with a line that is not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadUtf8 {
    /// Report it and drop the line (the default).
    #[default]
    Skip,
    /// Report it and keep the line, each invalid sequence replaced by U+FFFD.
    Replace,
}

/// What to do when a planned file is gone when its batch reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MissingFiles {
    /// Report it and read it as empty (the default).
    #[default]
    Skip,
    /// Fail the batch, naming the file.
    Fail,
}

/// How many messages [`FileStreamStats::recent_problems`] keeps.
const RECENT_PROBLEMS: usize = 100;

/// Counters of one file stream, shared by its clones. Read them with
/// [`snapshot`](Self::snapshot). A partition read again (a retried job, a re-run batch)
/// counts again.
#[derive(Debug, Default)]
pub struct FileStreamStats {
    files: AtomicU64,
    lines: AtomicU64,
    bytes: AtomicU64,
    bad_utf8_lines: AtomicU64,
    long_lines: AtomicU64,
    missing_files: AtomicU64,
    changed_files: AtomicU64,
    partial_records: AtomicU64,
    problems: Mutex<VecDeque<String>>,
}

/// The values of [`FileStreamStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FileStreamStatsSnapshot {
    /// Files read (including those read as empty because they vanished); a file split into
    /// byte ranges over several batches counts once per range.
    pub files: u64,
    /// Lines produced (including cut and replaced ones).
    pub lines: u64,
    /// Bytes read: of a text file, the bytes of the lines produced or skipped (a file split
    /// over batches counts each byte once); of binary records, the bytes of its ranges.
    pub bytes: u64,
    /// Lines that were not valid UTF-8 (skipped or replaced).
    pub bad_utf8_lines: u64,
    /// Lines over the maximum length (skipped or cut).
    pub long_lines: u64,
    /// Planned files that were gone when read.
    pub missing_files: u64,
    /// Planned files found shorter or modified when read.
    pub changed_files: u64,
    /// Files of a binary-records stream that ended with less than a whole record (the
    /// partial record is skipped).
    pub partial_records: u64,
}

impl FileStreamStats {
    /// The current values.
    pub fn snapshot(&self) -> FileStreamStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        FileStreamStatsSnapshot {
            files: get(&self.files),
            lines: get(&self.lines),
            bytes: get(&self.bytes),
            bad_utf8_lines: get(&self.bad_utf8_lines),
            long_lines: get(&self.long_lines),
            missing_files: get(&self.missing_files),
            changed_files: get(&self.changed_files),
            partial_records: get(&self.partial_records),
        }
    }

    /// The messages of the last (at most 100) problems, oldest first.
    pub fn recent_problems(&self) -> Vec<String> {
        lock(&self.problems).iter().cloned().collect()
    }

    /// Counts a problem of `kind` and keeps its message; `problems` decides whether it is also
    /// logged now (at most one warning per kind per interval).
    fn report(
        &self,
        problems: &ProblemLog,
        kind: &'static str,
        counter: &AtomicU64,
        message: String,
    ) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = problems.admit(kind) {
            tracing::warn!(kind, suppressed, "{message}{}", suppressed_note(suppressed));
        }
        let mut problems = lock(&self.problems);
        if problems.len() == RECENT_PROBLEMS {
            problems.pop_front();
        }
        problems.push_back(message);
    }
}

type Filter = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// How a file stream selects and reads files; see the [module documentation](self).
///
/// ```
/// use std::time::Duration;
/// use weir::sources::file_stream::{BadUtf8, FileStreamOptions, LongLines};
///
/// let options = FileStreamOptions::new()
///     .max_files_per_batch(100)
///     .max_bytes_per_batch(16 * 1024 * 1024)
///     .max_line_len(64 * 1024)
///     .long_lines(LongLines::Truncate)
///     .bad_utf8(BadUtf8::Replace)
///     .remember(Duration::from_secs(300))
///     .filter(|name| name.ends_with(".log"));
/// let stats = options.stats(); // counters of bad lines, missing files, ...
/// # let _ = stats;
/// ```
#[derive(Clone)]
pub struct FileStreamOptions {
    max_files_per_batch: Option<usize>,
    max_bytes_per_batch: u64,
    max_line_len: usize,
    long_lines: LongLines,
    bad_utf8: BadUtf8,
    missing_files: MissingFiles,
    remember: Duration,
    new_files_only: bool,
    filter: Option<Filter>,
    stats: Arc<FileStreamStats>,
    problems: Arc<ProblemLog>,
}

impl fmt::Debug for FileStreamOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStreamOptions")
            .field("max_files_per_batch", &self.max_files_per_batch)
            .field("max_bytes_per_batch", &self.max_bytes_per_batch)
            .field("max_line_len", &self.max_line_len)
            .field("long_lines", &self.long_lines)
            .field("bad_utf8", &self.bad_utf8)
            .field("missing_files", &self.missing_files)
            .field("remember", &self.remember)
            .field("new_files_only", &self.new_files_only)
            .field("filter", &self.filter.is_some())
            .field("problem_log_interval", &self.problems.interval())
            .finish_non_exhaustive()
    }
}

impl Default for FileStreamOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl FileStreamOptions {
    /// The defaults: every new file in the next batch, at most 64 MiB of them per batch
    /// (larger files split over batches), lines of at most 1 MiB (longer ones skipped),
    /// invalid UTF-8 lines skipped, missing files read as empty, a 60 s remember window, files
    /// already there at the first start processed, no filter, at most one warning per kind of
    /// problem every 10 s.
    pub fn new() -> Self {
        FileStreamOptions {
            max_files_per_batch: None,
            max_bytes_per_batch: DEFAULT_MAX_BYTES_PER_BATCH,
            max_line_len: 1024 * 1024,
            long_lines: LongLines::Skip,
            bad_utf8: BadUtf8::Skip,
            missing_files: MissingFiles::Skip,
            remember: Duration::from_secs(60),
            new_files_only: false,
            filter: None,
            stats: Arc::default(),
            problems: Arc::default(),
        }
    }

    /// At most this many files per batch (at least 1), the oldest first.
    #[must_use]
    pub fn max_files_per_batch(mut self, files: usize) -> Self {
        self.max_files_per_batch = Some(files.max(1));
        self
    }

    /// At most this many bytes of files per batch (at least 1; default 64 MiB): a file larger
    /// than what is left is split into byte ranges over consecutive batches, each line read
    /// by the batch whose range it starts in. See the [module documentation](self#batch-size-in-bytes).
    #[must_use]
    pub fn max_bytes_per_batch(mut self, bytes: u64) -> Self {
        self.max_bytes_per_batch = bytes.max(1);
        self
    }

    /// The longest line kept whole, in bytes (at least 1).
    #[must_use]
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.max_line_len = bytes.max(1);
        self
    }

    /// What happens to longer lines.
    #[must_use]
    pub fn long_lines(mut self, policy: LongLines) -> Self {
        self.long_lines = policy;
        self
    }

    /// What happens to lines that are not valid UTF-8.
    #[must_use]
    pub fn bad_utf8(mut self, policy: BadUtf8) -> Self {
        self.bad_utf8 = policy;
        self
    }

    /// What happens when a planned file is gone when read.
    #[must_use]
    pub fn missing_files(mut self, policy: MissingFiles) -> Self {
        self.missing_files = policy;
        self
    }

    /// The remember window: files whose modification time is older than the newest processed
    /// file's by more than this are ignored and forgotten.
    #[must_use]
    pub fn remember(mut self, window: Duration) -> Self {
        self.remember = window;
        self
    }

    /// Whether the files in the directory when the first batch is planned are ignored
    /// (Spark's `newFilesOnly`; default false: they are processed).
    #[must_use]
    pub fn new_files_only(mut self, yes: bool) -> Self {
        self.new_files_only = yes;
        self
    }

    /// Only names for which `accept` returns true are read (besides the built-in rule).
    #[must_use]
    pub fn filter(mut self, accept: impl Fn(&str) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Arc::new(accept));
        self
    }

    /// Of each kind of problem (invalid UTF-8, a long line, a missing or changed file, a
    /// partial record) at most one `tracing` warning per `interval` (default 10 s; zero: every
    /// problem); the others are counted in the [stats](Self::stats) and told by the next
    /// warning of their kind. See the [module documentation](self#bad-input).
    #[must_use]
    pub fn problem_log_interval(mut self, interval: Duration) -> Self {
        self.problems = Arc::new(ProblemLog::new(interval));
        self
    }

    /// The stream's counters and recent problems (shared by clones of these options).
    pub fn stats(&self) -> Arc<FileStreamStats> {
        Arc::clone(&self.stats)
    }
}

/// Whether the built-in rule ignores a file name.
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with('.')
        || name.starts_with('_')
        || [".tmp", ".temp", ".partial", ".part", "~"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
}

/// One byte range of a file in a batch's plan: the batch reads the lines that start in
/// `[from, until)` (a binary-records stream: the records there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileRange {
    name: String,
    /// Modification time when first planned, ns since the Unix epoch.
    mtime_ns: u64,
    /// Length when first planned: nothing at or after it is read, by any range.
    len: u64,
    /// The first byte of the range.
    from: u64,
    /// One past its last byte (at most `len`).
    until: u64,
}

impl FileRange {
    fn size(&self) -> u64 {
        self.until.saturating_sub(self.from)
    }
}

/// Where the file stream is: what it processed, and the rest of a file it read in part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FileStreamPosition {
    /// Files modified before this (ns since the Unix epoch) are ignored.
    watermark_ns: u64,
    /// Processed files at or above the watermark: name → modification time when planned
    /// (a file split over batches from its first range on).
    seen: BTreeMap<String, u64>,
    /// What is left of a file a batch planned in part; the next batch plans it first.
    rest: Option<FileRange>,
}

/// A batch plan's entry before byte ranges (weir 0.1; kept to read its checkpoints): a whole
/// file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedFile {
    name: String,
    /// Modification time when planned, ns since the Unix epoch.
    mtime_ns: u64,
    /// Length when planned: the batch reads at most this many bytes.
    len: u64,
}

/// The position before byte ranges (weir 0.1; kept to read its checkpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    /// Files modified before this (ns since the Unix epoch) are ignored.
    watermark_ns: u64,
    /// Processed files at or above the watermark: name → modification time when planned.
    seen: BTreeMap<String, u64>,
}

/// The state of a file or binary-records stream that weir 0.1 checkpointed, read as today's:
/// each planned file is one range covering all of it (which is what that plan read, and what
/// its re-run reads), and no file is read in part.
fn upgrade_whole_files<P>(type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>>
where
    P: Planner<Plan = Vec<FileRange>, Position = FileStreamPosition>,
{
    if type_name != std::any::type_name::<(Vec<PlannedFile>, FilePosition)>() {
        return None;
    }
    let plan = |files: Vec<PlannedFile>| -> Vec<FileRange> {
        files
            .into_iter()
            .map(|f| FileRange {
                name: f.name,
                mtime_ns: f.mtime_ns,
                len: f.len,
                from: 0,
                until: f.len,
            })
            .collect()
    };
    let position = |p: FilePosition| FileStreamPosition {
        watermark_ns: p.watermark_ns,
        seen: p.seen,
        rest: None,
    };
    Some(upgrade_state::<P, _, _>(bytes, plan, position))
}

pub(crate) struct FileStream {
    pub(crate) dir: PathBuf,
    pub(crate) partitions: usize,
    pub(crate) options: FileStreamOptions,
}

fn mtime_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl FileStream {
    /// The eligible files in the directory now, by (modification time, name), each as one
    /// range covering all of it.
    fn list(&self) -> ComputeResult<Vec<FileRange>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                tracing::warn!(dir = %self.dir.display(), "the input directory does not exist (yet); no files");
                return Ok(Vec::new());
            }
            Err(e) => {
                return Err(ComputeError::new(format!(
                    "could not list the input directory {}: {e}",
                    self.dir.display()
                )));
            }
        };
        let mut files = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| {
                ComputeError::new(format!(
                    "could not list the input directory {}: {e}",
                    self.dir.display()
                ))
            })?;
            let Ok(name) = entry.file_name().into_string() else {
                tracing::debug!(dir = %self.dir.display(), name = ?entry.file_name(), "ignoring a file whose name is not UTF-8");
                continue;
            };
            if is_ignored_name(&name) || self.options.filter.as_ref().is_some_and(|f| !f(&name)) {
                continue;
            }
            // Follows symbolic links; a file renamed away meanwhile is simply not there.
            let meta = match fs::metadata(entry.path()) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not stat a file; it is not planned now");
                    continue;
                }
            };
            if !meta.is_file() {
                continue;
            }
            files.push(FileRange {
                name,
                mtime_ns: mtime_ns(&meta),
                len: meta.len(),
                from: 0,
                until: meta.len(),
            });
        }
        files.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        Ok(files)
    }

    fn remember_ns(&self) -> u64 {
        u64::try_from(self.options.remember.as_nanos()).unwrap_or(u64::MAX)
    }

    /// `from` with `files` processed: the watermark advanced, names below it forgotten.
    fn advance(&self, from: &FileStreamPosition, files: &[FileRange]) -> FileStreamPosition {
        let mut next = from.clone();
        for file in files {
            next.seen.insert(file.name.clone(), file.mtime_ns);
        }
        if let Some(newest) = files.iter().map(|f| f.mtime_ns).max() {
            // A modification time in the future (a skewed clock) must not hide the files
            // that arrive until then: the watermark stays at most one window before now.
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
            let candidate = newest.min(now).saturating_sub(self.remember_ns());
            next.watermark_ns = next.watermark_ns.max(candidate);
        }
        let watermark = next.watermark_ns;
        next.seen.retain(|_, mtime| *mtime >= watermark);
        next
    }

    /// The next batch's ranges from `from`: the rest of a file read in part first, then the
    /// new files, within the byte budget and the file count; a file larger than what is left
    /// of the budget is cut at a multiple of `unit` bytes from its range's start (at least one
    /// unit per batch), its rest kept in the position.
    fn plan_ranges(
        &self,
        from: &FileStreamPosition,
        unit: u64,
    ) -> ComputeResult<(Vec<FileRange>, FileStreamPosition)> {
        let unit = unit.max(1);
        let max_files = self.options.max_files_per_batch.unwrap_or(usize::MAX);
        let continued = from.rest.clone();
        // The rest is listed apart: its name is already among the processed ones.
        let new_files = self
            .list()?
            .into_iter()
            .filter(|f| f.mtime_ns >= from.watermark_ns && !from.seen.contains_key(&f.name));
        let mut plan: Vec<FileRange> = Vec::new();
        let mut started: Vec<FileRange> = Vec::new(); // new files taken, whole or in part
        let mut rest = None;
        let mut left = self.options.max_bytes_per_batch;
        for (is_new, candidate) in continued
            .into_iter()
            .map(|r| (false, r))
            .chain(new_files.map(|f| (true, f)))
        {
            if plan.len() >= max_files {
                break;
            }
            let size = candidate.size();
            let mut take = if size <= left {
                size
            } else {
                left - left % unit
            };
            if take == 0 && size > 0 {
                if !plan.is_empty() {
                    break; // the budget is spent: the file waits for the next batch
                }
                take = unit.min(size); // at least one unit per batch, so the stream moves on
            }
            left = left.saturating_sub(take);
            if is_new {
                started.push(candidate.clone());
            }
            if take < size {
                let cut = candidate.from + take;
                rest = Some(FileRange {
                    from: cut,
                    ..candidate.clone()
                });
                plan.push(FileRange {
                    until: cut,
                    ..candidate
                });
                break;
            }
            plan.push(candidate);
        }
        let mut next = self.advance(from, &started);
        next.rest = rest;
        Ok((plan, next))
    }

    /// Reads the lines that start in a planned range into `out`.
    fn read_range(&self, range: &FileRange, out: &mut Vec<Str>) -> ComputeResult<()> {
        let path = self.dir.join(&range.name);
        // From the byte before the range: whether a line starts at `from` depends on it.
        let start = range.from.saturating_sub(1);
        let Some(handle) = self.open_planned(range, &path, start)? else {
            return Ok(());
        };
        let reader = BufReader::with_capacity(64 * 1024, handle.take(range.len - start));
        let mut lines = LineReader {
            path: &path,
            options: &self.options,
            out,
        };
        lines
            .read_range(reader, range.from, range.until)
            .map_err(|e| ComputeError::new(format!("could not read {}: {e}", path.display())))
    }

    /// Opens a planned file at byte `at`, applying the missing-file policy (`None`: read it
    /// as empty) and reporting a file changed since it was planned.
    fn open_planned(&self, file: &FileRange, path: &Path, at: u64) -> ComputeResult<Option<File>> {
        let stats = &self.options.stats;
        let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m)));
        let (mut handle, meta) = match opened {
            Ok(opened) => opened,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return match self.options.missing_files {
                    MissingFiles::Skip => {
                        stats.files.fetch_add(1, Ordering::Relaxed);
                        stats.report(
                            &self.options.problems,
                            "missing_file",
                            &stats.missing_files,
                            format!(
                                "{} was planned for a batch but is gone; it is read as empty",
                                path.display()
                            ),
                        );
                        Ok(None)
                    }
                    MissingFiles::Fail => {
                        stats.missing_files.fetch_add(1, Ordering::Relaxed);
                        Err(ComputeError::new(format!(
                            "{} was planned for this batch but is gone; put it back to let the \
                             batch complete",
                            path.display()
                        )))
                    }
                };
            }
            Err(e) => {
                return Err(ComputeError::new(format!(
                    "could not open {}: {e}",
                    path.display()
                )));
            }
        };
        if meta.len() < file.len {
            stats.report(
                &self.options.problems,
                "changed_file",
                &stats.changed_files,
                format!(
                    "{} is shorter than when it was planned ({} bytes, then {}); reading what is \
                     there",
                    path.display(),
                    meta.len(),
                    file.len
                ),
            );
        } else if mtime_ns(&meta) != file.mtime_ns {
            stats.report(
                &self.options.problems,
                "changed_file",
                &stats.changed_files,
                format!(
                    "{} was modified after it was planned; reading its first {} bytes as planned",
                    path.display(),
                    file.len
                ),
            );
        }
        stats.files.fetch_add(1, Ordering::Relaxed);
        handle
            .seek(SeekFrom::Start(at))
            .map_err(|e| ComputeError::new(format!("could not read {}: {e}", path.display())))?;
        Ok(Some(handle))
    }

    /// Reads a planned range's bytes as records of `record_len` bytes (a range starts at a
    /// record boundary, and only a file's last range can end with a partial record).
    fn read_records(
        &self,
        range: &FileRange,
        record_len: usize,
        out: &mut Vec<bytes::Bytes>,
    ) -> ComputeResult<()> {
        let path = self.dir.join(&range.name);
        let Some(handle) = self.open_planned(range, &path, range.from)? else {
            return Ok(());
        };
        let stats = &self.options.stats;
        let mut reader = BufReader::with_capacity(64 * 1024, handle.take(range.size()));
        let mut record = vec![0u8; record_len];
        loop {
            let mut filled = 0;
            while filled < record_len {
                match reader.read(&mut record[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        return Err(ComputeError::new(format!(
                            "could not read {}: {e}",
                            path.display()
                        )));
                    }
                }
            }
            stats.bytes.fetch_add(filled as u64, Ordering::Relaxed);
            if filled == record_len {
                stats.lines.fetch_add(1, Ordering::Relaxed);
                out.push(bytes::Bytes::copy_from_slice(&record));
                continue;
            }
            if filled > 0 {
                stats.report(
                    &self.options.problems,
                    "partial_record",
                    &stats.partial_records,
                    format!(
                        "{} ends with {filled} bytes, less than a record of {record_len}; they \
                         are skipped",
                        path.display()
                    ),
                );
            }
            return Ok(());
        }
    }
}

/// Cuts a stream into lines, applying the bad-input policies.
pub(crate) struct LineReader<'a> {
    pub(crate) path: &'a Path,
    pub(crate) options: &'a FileStreamOptions,
    pub(crate) out: &'a mut Vec<Str>,
}

impl LineReader<'_> {
    /// Reads the lines that start in `[from, until)`: `reader` is positioned at byte
    /// `from - 1` (at 0 when `from` is 0) and ends where the file's planned length does, so
    /// the range's last line is read to its end, past `until` if need be.
    pub(crate) fn read_range(
        &mut self,
        mut reader: impl BufRead,
        from: u64,
        until: u64,
    ) -> io::Result<()> {
        let max = self.options.max_line_len;
        let mut offset = from.saturating_sub(1); // where the reader is, in the file
        if from > 0 {
            // A line starts at `from` if the byte before it ends one; otherwise the range's
            // first line starts after the first `\n` in `[from, until - 1)`, and if there is
            // none, no line starts in the range.
            let mut left = until.saturating_sub(from);
            loop {
                if left == 0 {
                    return Ok(());
                }
                let buf = match reader.fill_buf() {
                    Ok(buf) => buf,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if buf.is_empty() {
                    return Ok(());
                }
                let window = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
                let (used, found) = match buf[..window].iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (window, false),
                };
                reader.consume(used);
                offset += used as u64;
                left -= used as u64;
                if found {
                    break;
                }
            }
        }
        let first = offset; // where the range's first line starts
        let mut line: Vec<u8> = Vec::new();
        let mut too_long = false;
        // Line numbers are known only in a range that starts the file.
        let mut number: Option<u64> = (from == 0).then_some(1);
        let mut start: u64 = offset; // byte offset of the line
        while start < until {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                if !line.is_empty() || too_long {
                    self.finish(&mut line, too_long, number, start, offset - start);
                }
                break;
            }
            let (chunk, used, ends) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..i], i + 1, true),
                None => (buf, buf.len(), false),
            };
            if !too_long {
                let len = line.len() + chunk.len();
                // One byte more than fits may be the `\r` of a `\r\n` ending.
                let fits = chunk.is_empty()
                    || len <= max
                    || (len == max + 1 && chunk.last() == Some(&b'\r'));
                if fits {
                    line.extend_from_slice(chunk);
                } else {
                    let room = max.saturating_sub(line.len()).min(chunk.len());
                    line.extend_from_slice(&chunk[..room]);
                    too_long = true;
                }
            }
            offset += used as u64;
            reader.consume(used);
            if ends {
                self.finish(&mut line, too_long, number, start, offset - start - 1);
                line.clear();
                too_long = false;
                number = number.map(|n| n + 1);
                start = offset;
            }
        }
        // The bytes of the lines this range owns: over all the ranges of a file, its length.
        self.options
            .stats
            .bytes
            .fetch_add(offset - first, Ordering::Relaxed);
        Ok(())
    }

    /// Handles one line: `bytes` are its first (at most `max_line_len` + 1) bytes, `len` its
    /// full length without the `\n`.
    /// `number` is the line's number in the file, if known.
    fn finish(
        &mut self,
        bytes: &mut Vec<u8>,
        too_long: bool,
        number: Option<u64>,
        start: u64,
        len: u64,
    ) {
        let stats = &self.options.stats;
        let max = self.options.max_line_len;
        let path = self.path.display();
        let which = match number {
            Some(n) => format!("line {n}"),
            None => "a line".to_owned(),
        };
        if too_long {
            let what = match self.options.long_lines {
                LongLines::Truncate => "cut to its first bytes",
                _ => "skipped",
            };
            stats.report(
                &self.options.problems,
                "long_line",
                &stats.long_lines,
                format!(
                    "{which} of {path} (at byte {start}) is {len} bytes long, over the \
                     maximum of {max}; it is {what}"
                ),
            );
            if self.options.long_lines != LongLines::Truncate {
                return;
            }
            bytes.truncate(max);
            // Cut at a character boundary: drop an incomplete sequence at the end.
            if let Err(e) = std::str::from_utf8(bytes)
                && e.error_len().is_none()
            {
                bytes.truncate(e.valid_up_to());
            }
        } else if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        // Copied out at its exact length (a line buffer grown byte by byte has spare capacity,
        // and `Bytes` over such a buffer needs a header allocation of its own: a 48-byte line
        // cost ~160 bytes held); the caller reuses `bytes` for the next line.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => Str::from(text),
            Err(error) => {
                let bad_at = start + error.valid_up_to() as u64;
                match self.options.bad_utf8 {
                    BadUtf8::Skip => {
                        stats.report(
                            &self.options.problems,
                            "bad_utf8",
                            &stats.bad_utf8_lines,
                            format!(
                                "{which} of {path} (at byte {start}) is not valid UTF-8 \
                                 (invalid byte at {bad_at}); it is skipped"
                            ),
                        );
                        return;
                    }
                    BadUtf8::Replace => {
                        stats.report(
                            &self.options.problems,
                            "bad_utf8",
                            &stats.bad_utf8_lines,
                            format!(
                                "{which} of {path} (at byte {start}) is not valid UTF-8 \
                                 (invalid byte at {bad_at}); invalid sequences are replaced"
                            ),
                        );
                        Str::from(String::from_utf8_lossy(bytes).into_owned())
                    }
                }
            }
        };
        stats.lines.fetch_add(1, Ordering::Relaxed);
        self.out.push(text);
    }
}

impl Planner for FileStream {
    type Item = Str;
    type Plan = Vec<FileRange>;
    type Position = FileStreamPosition;

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn initial(&self) -> ComputeResult<FileStreamPosition> {
        if !self.options.new_files_only {
            return Ok(FileStreamPosition::default());
        }
        let existing = self.list()?;
        Ok(self.advance(&FileStreamPosition::default(), &existing))
    }

    fn plan(
        &self,
        from: &FileStreamPosition,
        _time: u64,
    ) -> ComputeResult<(Vec<FileRange>, FileStreamPosition)> {
        self.plan_ranges(from, 1)
    }

    fn read(&self, plan: &Vec<FileRange>, part: usize) -> ComputeResult<Vec<Str>> {
        let mine = || plan.iter().skip(part).step_by(self.partitions.max(1));
        // Sized once from the lines' average length so far (48 bytes before any line was
        // read; taken as 16 at least, so that a file of short lines never makes the next
        // file's batch reserve more than twice its bytes), with 1/16 to spare: a vector doubling its way to a 64 MiB range's million
        // lines holds its old and new buffers at once, 1.5 times its size, at the batch's
        // peak of memory.
        let stats = &self.options.stats;
        let (bytes, lines) = (
            stats.bytes.load(Ordering::Relaxed),
            stats.lines.load(Ordering::Relaxed),
        );
        let average = bytes.checked_div(lines).map_or(48, |a| a.max(16));
        let planned: u64 = mine().map(|r| r.until - r.from).sum();
        let estimate = planned / average + planned / average / 16;
        let mut out = Vec::with_capacity(usize::try_from(estimate).unwrap_or(0).min(1 << 24));
        for range in mine() {
            self.read_range(range, &mut out)?;
        }
        Ok(out)
    }

    fn upgrade(&self, type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>> {
        upgrade_whole_files::<Self>(type_name, bytes)
    }
}

/// The file stream read as fixed-length binary records (Spark's `binaryRecordsStream`): the
/// same files, plans and exactly-once rules as the text stream; each planned range's bytes are
/// cut into records of `record_len` bytes (in the range's partition: "lines" in the stats
/// count records). A file larger than the byte budget is split at record boundaries. A file
/// whose length is not a multiple of `record_len` has its last, partial record skipped and
/// reported (`FileStreamStats::partial_records`).
pub(crate) struct BinaryRecords {
    pub(crate) files: FileStream,
    pub(crate) record_len: usize,
}

impl Planner for BinaryRecords {
    type Item = bytes::Bytes;
    type Plan = Vec<FileRange>;
    type Position = FileStreamPosition;

    fn partitions(&self) -> usize {
        self.files.partitions()
    }

    fn initial(&self) -> ComputeResult<FileStreamPosition> {
        self.files.initial()
    }

    fn plan(
        &self,
        from: &FileStreamPosition,
        _time: u64,
    ) -> ComputeResult<(Vec<FileRange>, FileStreamPosition)> {
        self.files.plan_ranges(from, self.record_len.max(1) as u64)
    }

    fn read(&self, plan: &Vec<FileRange>, part: usize) -> ComputeResult<Vec<bytes::Bytes>> {
        let mut out = Vec::new();
        let step = self.files.partitions.max(1);
        for range in plan.iter().skip(part).step_by(step) {
            self.files
                .read_records(range, self.record_len.max(1), &mut out)?;
        }
        Ok(out)
    }

    fn upgrade(&self, type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>> {
        upgrade_whole_files::<Self>(type_name, bytes)
    }
}

impl fmt::Debug for FileStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileStream")
            .field("dir", &self.dir)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use crate::sources::problems::capture::Warnings;

    fn lines(input: &[u8], options: &FileStreamOptions) -> Vec<Str> {
        let mut out = Vec::new();
        LineReader {
            path: Path::new("test"),
            options,
            out: &mut out,
        }
        .read_range(BufReader::with_capacity(4, input), 0, input.len() as u64)
        .unwrap();
        out
    }

    #[test]
    fn lines_are_split_at_newlines_without_carriage_returns() {
        let o = FileStreamOptions::new();
        assert_eq!(lines(b"a\r\nbb\n\nccc", &o), vec!["a", "bb", "", "ccc"]);
        assert_eq!(lines(b"", &o), Vec::<Str>::new());
        assert_eq!(o.stats().snapshot().bytes, 10);
    }

    #[test]
    fn long_lines_are_skipped_or_cut_at_a_character_boundary() {
        let o = FileStreamOptions::new().max_line_len(5);
        assert_eq!(
            lines(b"12345\n123456\nok\n12345\r\n1234\r5\n", &o),
            vec!["12345", "ok", "12345"]
        );
        assert_eq!(o.stats().snapshot().long_lines, 2);
        // Read 4 bytes at a time: "1234" "5\r\n" / "1234" "\r\n" split differently.
        let o = FileStreamOptions::new().max_line_len(4);
        assert_eq!(lines(b"123\r\n1234\r\n", &o), vec!["123", "1234"]);
        let o = FileStreamOptions::new()
            .max_line_len(5)
            .long_lines(LongLines::Truncate);
        // "ab" + "é" (2 bytes) + "é": the cut at 5 bytes falls inside the second "é".
        assert_eq!(lines("abééé\nx".as_bytes(), &o), vec!["abé", "x"]);
    }

    #[test]
    fn invalid_utf8_is_skipped_or_replaced() {
        let o = FileStreamOptions::new();
        assert_eq!(lines(b"a\n\xff\xfeb\nc", &o), vec!["a", "c"]);
        let problems = o.stats().recent_problems();
        assert!(
            problems[0].contains("line 2 of test (at byte 2) is not valid UTF-8"),
            "{problems:?}"
        );
        let o = FileStreamOptions::new().bad_utf8(BadUtf8::Replace);
        assert_eq!(lines(b"x\xffy\n", &o), vec!["x\u{fffd}y"]);
        assert_eq!(o.stats().snapshot().bad_utf8_lines, 1);
    }

    /// Issue 16, item 7: every bad line was a warning, so 10 MB of bad lines made about a
    /// gigabyte of log.
    #[test]
    fn a_flood_of_bad_lines_is_counted_exactly_and_logged_a_few_times() {
        let warnings = Warnings::install();
        let o = FileStreamOptions::new().max_line_len(8);
        let mut input = Vec::new();
        for i in 0..10_000 {
            input.extend_from_slice(b"bad \xff\n");
            input.extend_from_slice(b"far too long a line\n");
            input.extend_from_slice(format!("ok {i}\n").as_bytes());
        }
        assert_eq!(lines(&input, &o).len(), 10_000);
        let s = o.stats().snapshot();
        assert_eq!(
            (s.bad_utf8_lines, s.long_lines, s.lines),
            (10_000, 10_000, 10_000)
        );
        let logged = warnings.lines();
        assert!(
            logged.len() <= 2,
            "{} warnings for 20 000 bad lines, the first: {:?}",
            logged.len(),
            logged.first()
        );
        assert!(
            logged.iter().any(|l| l.contains("not valid UTF-8")),
            "{logged:?}"
        );
        assert!(
            logged.iter().any(|l| l.contains("over the maximum")),
            "{logged:?}"
        );
    }

    #[test]
    fn what_is_remembered_is_bounded_by_the_window() {
        let stream = FileStream {
            dir: PathBuf::from("unused"),
            partitions: 1,
            options: FileStreamOptions::new().remember(Duration::from_secs(10)),
        };
        let mut position = FileStreamPosition::default();
        let sec = 1_000_000_000;
        // A file per second for 1000 s: only the last 10 s of names are kept.
        for t in 0..1000u64 {
            let file = FileRange {
                name: format!("f{t}"),
                mtime_ns: t * sec,
                len: 1,
                from: 0,
                until: 1,
            };
            position = stream.advance(&position, &[file]);
        }
        assert_eq!(position.watermark_ns, 989 * sec);
        assert_eq!(position.seen.len(), 11);
        assert!(position.seen.contains_key("f989") && !position.seen.contains_key("f988"));
        let encoded = postcard::to_allocvec(&position).unwrap();
        assert!(encoded.len() < 200, "{} bytes", encoded.len());
    }

    #[test]
    fn the_name_rule() {
        for ignored in [
            ".hidden",
            "_temporary",
            "a.tmp",
            "b.partial",
            "c.part",
            "d~",
            "e.temp",
        ] {
            assert!(is_ignored_name(ignored), "{ignored}");
        }
        for taken in ["data.txt", "part-00000", "log", "x.tmp.txt"] {
            assert!(!is_ignored_name(taken), "{taken}");
        }
    }

    /// A stream over `dir` with `options`, one partition.
    fn stream(dir: &Path, options: FileStreamOptions) -> FileStream {
        FileStream {
            dir: dir.to_path_buf(),
            partitions: 1,
            options,
        }
    }

    /// Plans batches from the start until one is empty, the position going through its
    /// checkpoint encoding between batches (as a restart would read it); returns each plan.
    fn drain(
        plan: impl Fn(&FileStreamPosition) -> (Vec<FileRange>, FileStreamPosition),
    ) -> Vec<Vec<FileRange>> {
        let mut position = FileStreamPosition::default();
        let mut plans = Vec::new();
        loop {
            let (batch, next) = plan(&position);
            if batch.is_empty() {
                assert_eq!(next.rest, None);
                return plans;
            }
            assert!(plans.len() < 100_000, "no progress");
            plans.push(batch);
            position = postcard::from_bytes(&postcard::to_allocvec(&next).unwrap()).unwrap();
        }
    }

    /// Issue 16, item 6: a file was one batch however large. Now a file larger than the byte
    /// budget is read by consecutive batches, each taking a byte range, and every line —
    /// long, cut, invalid, `\r\n`-ended, the last without `\n` — is read by exactly one batch,
    /// as reading the file whole reads it.
    #[test]
    fn a_file_split_into_byte_ranges_yields_each_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut text = Vec::new();
        for i in 0..40 {
            text.extend_from_slice(format!("l{i}\n").as_bytes());
            if i % 7 == 0 {
                text.extend_from_slice(b"a line far over the maximum\r\n\n");
            }
            if i % 11 == 0 {
                text.extend_from_slice(b"\xff\xfe\r\nab\r\n");
            }
        }
        text.extend_from_slice(b"the end");
        fs::write(dir.path().join("big.txt"), &text).unwrap();
        let len = text.len() as u64;
        for (long, utf8) in [
            (LongLines::Skip, BadUtf8::Skip),
            (LongLines::Truncate, BadUtf8::Replace),
        ] {
            let options = || {
                FileStreamOptions::new()
                    .max_line_len(6)
                    .long_lines(long)
                    .bad_utf8(utf8)
            };
            let whole_options = options().max_bytes_per_batch(u64::MAX);
            let whole = stream(dir.path(), whole_options.clone());
            let plans = drain(|p| whole.plan(p, 0).unwrap());
            assert_eq!(plans.len(), 1);
            let expected = whole.read(&plans[0], 0).unwrap();
            let expected_stats = whole_options.stats().snapshot();
            assert_eq!(expected_stats.bytes, len);
            for budget in [1, 2, 3, 5, 6, 7, 13, 64, len - 1, len] {
                let split_options = options().max_bytes_per_batch(budget);
                let split = stream(dir.path(), split_options.clone());
                let plans = drain(|p| split.plan(p, 0).unwrap());
                assert_eq!(plans.len() as u64, len.div_ceil(budget), "budget {budget}");
                let mut got = Vec::new();
                let mut next_byte = 0;
                for plan in &plans {
                    assert_eq!(plan.len(), 1);
                    let range = &plan[0];
                    assert_eq!((range.from, range.len), (next_byte, len));
                    assert!(range.size() <= budget && range.size() > 0);
                    next_byte = range.until;
                    got.extend(split.read(plan, 0).unwrap());
                }
                assert_eq!(next_byte, len);
                assert_eq!(got, expected, "budget {budget}, {long:?}, {utf8:?}");
                let stats = split_options.stats().snapshot();
                assert_eq!(
                    (
                        stats.lines,
                        stats.bad_utf8_lines,
                        stats.long_lines,
                        stats.bytes
                    ),
                    (
                        expected_stats.lines,
                        expected_stats.bad_utf8_lines,
                        expected_stats.long_lines,
                        len
                    ),
                    "budget {budget}"
                );
            }
        }
    }

    /// Small files share a batch up to the budget; a file over what is left starts in the
    /// batch and its rest comes first in the next (counting as one of its files), and a
    /// re-run of a plan reads the same lines.
    #[test]
    fn small_files_fill_a_batch_and_the_rest_of_a_large_one_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, lines: usize, mtime_s: u64| {
            let path = dir.path().join(name);
            let text: String = (0..lines).map(|i| format!("{name}-{i:04}\n")).collect();
            fs::write(&path, text).unwrap();
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + mtime_s);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        // Lines of 7 bytes ("a-0000\n").
        write("a", 2, 0); // 14 bytes
        write("b", 2, 1); // 14 bytes
        write("c", 10, 2); // 70 bytes
        write("d", 1, 3); // 7 bytes
        let fs = stream(
            dir.path(),
            FileStreamOptions::new()
                .max_bytes_per_batch(35)
                .max_files_per_batch(2)
                .remember(Duration::MAX),
        );
        let plans = drain(|p| fs.plan(p, 0).unwrap());
        let shape: Vec<Vec<(&str, u64, u64)>> = plans
            .iter()
            .map(|plan| {
                plan.iter()
                    .map(|r| (r.name.as_str(), r.from, r.until))
                    .collect()
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                vec![("a", 0, 14), ("b", 0, 14)], // two files at most
                vec![("c", 0, 35)],
                vec![("c", 35, 70)],
                vec![("d", 0, 7)],
            ]
        );
        let read: Vec<Vec<Str>> = plans.iter().map(|p| fs.read(p, 0).unwrap()).collect();
        assert_eq!(
            read[1],
            (0..5).map(|i| format!("c-{i:04}")).collect::<Vec<_>>()
        );
        assert_eq!(
            read[2],
            (5..10).map(|i| format!("c-{i:04}")).collect::<Vec<_>>()
        );
        assert_eq!(
            fs.read(&plans[2], 0).unwrap(),
            read[2],
            "a re-run reads the same"
        );
        // Without the file count, `d` shares the batch that finishes `c`... after `c`'s rest.
        let fs = stream(
            dir.path(),
            FileStreamOptions::new()
                .max_bytes_per_batch(40)
                .remember(Duration::MAX),
        );
        let shape: Vec<Vec<(String, u64, u64)>> = drain(|p| fs.plan(p, 0).unwrap())
            .iter()
            .map(|plan| {
                plan.iter()
                    .map(|r| (r.name.clone(), r.from, r.until))
                    .collect()
            })
            .collect();
        let owned = |v: &[(&str, u64, u64)]| -> Vec<(String, u64, u64)> {
            v.iter()
                .map(|(n, a, b)| ((*n).to_owned(), *a, *b))
                .collect()
        };
        assert_eq!(
            shape,
            vec![
                owned(&[("a", 0, 14), ("b", 0, 14), ("c", 0, 12)]),
                owned(&[("c", 12, 52)]),
                owned(&[("c", 52, 70), ("d", 0, 7)]),
            ]
        );
    }

    /// A binary-records stream splits a file at record boundaries; a budget below one record
    /// still takes one record per batch; the partial record at the end is reported once.
    #[test]
    fn binary_records_are_split_at_record_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..32u8).collect(); // 10 records of 3 bytes, then 2 bytes
        fs::write(dir.path().join("records.bin"), &bytes).unwrap();
        let expected: Vec<bytes::Bytes> = bytes
            .chunks_exact(3)
            .map(bytes::Bytes::copy_from_slice)
            .collect();
        for budget in [1, 2, 3, 4, 8, 9, 31, 32, 1000] {
            let options = FileStreamOptions::new().max_bytes_per_batch(budget);
            let records = BinaryRecords {
                files: stream(dir.path(), options.clone()),
                record_len: 3,
            };
            let plans = drain(|p| records.plan(p, 0).unwrap());
            let mut got = Vec::new();
            for plan in &plans {
                let range = &plan[0];
                assert_eq!(range.from % 3, 0, "budget {budget}");
                assert!(range.until == 32 || range.until % 3 == 0, "budget {budget}");
                assert!(range.size() <= budget.max(3), "budget {budget}");
                got.extend(records.read(plan, 0).unwrap());
            }
            assert_eq!(got, expected, "budget {budget}");
            let stats = options.stats().snapshot();
            assert_eq!(
                (stats.lines, stats.partial_records),
                (10, 1),
                "budget {budget}"
            );
        }
    }
}
