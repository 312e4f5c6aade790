//! The file stream: the text lines of the files that appear in a directory (Spark's
//! `textFileStream`), each file processed exactly once across restarts.
//!
//! It is a planned source, not a receiver: when a batch is generated, the driver lists the
//! directory and decides which files the batch reads — name, modification time and length
//! of each. That list is part of the checkpointed plan, so a batch re-run after a crash reads
//! the same files, and of each only the bytes it had when it was planned (data appended
//! later is not read, by that batch or any other).
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
//! the file, the line and its byte offset — kept among its
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
//!   length. Exactly-once therefore holds for files that stay unchanged in the directory at
//!   least until the batch that read them is complete: a re-run can only read again what is
//!   still there. Deleting processed files after that is safe.
//! - Any other I/O error (e.g. permission denied) fails the batch's job with the path and the
//!   cause; the engine retries it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use super::socket::LongLines;
use crate::dstream::memo::lock;
use crate::dstream::planned::Planner;
use crate::error::{ComputeError, ComputeResult};
use crate::sources::problems::{ProblemLog, suppressed_note};

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
    /// Files read (including those read as empty because they vanished).
    pub files: u64,
    /// Lines produced (including cut and replaced ones).
    pub lines: u64,
    /// Bytes read.
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
    /// The defaults: every new file in the next batch, lines of at most 1 MiB (longer ones
    /// skipped), invalid UTF-8 lines skipped, missing files read as empty, a 60 s remember
    /// window, files already there at the first start processed, no filter, at most one
    /// warning per kind of problem every 10 s.
    pub fn new() -> Self {
        FileStreamOptions {
            max_files_per_batch: None,
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

/// One file of a batch's plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlannedFile {
    name: String,
    /// Modification time when planned, ns since the Unix epoch.
    mtime_ns: u64,
    /// Length when planned: the batch reads at most this many bytes.
    len: u64,
}

/// Where the file stream is: what it processed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    /// Files modified before this (ns since the Unix epoch) are ignored.
    watermark_ns: u64,
    /// Processed files at or above the watermark: name → modification time when planned.
    seen: BTreeMap<String, u64>,
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
    /// The eligible files in the directory now, by (modification time, name).
    fn list(&self) -> ComputeResult<Vec<PlannedFile>> {
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
            files.push(PlannedFile {
                name,
                mtime_ns: mtime_ns(&meta),
                len: meta.len(),
            });
        }
        files.sort_by(|a, b| (a.mtime_ns, &a.name).cmp(&(b.mtime_ns, &b.name)));
        Ok(files)
    }

    fn remember_ns(&self) -> u64 {
        u64::try_from(self.options.remember.as_nanos()).unwrap_or(u64::MAX)
    }

    /// `from` with `files` processed: the watermark advanced, names below it forgotten.
    fn advance(&self, from: &FilePosition, files: &[PlannedFile]) -> FilePosition {
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

    /// Reads one planned file into `out`.
    fn read_file(&self, file: &PlannedFile, out: &mut Vec<String>) -> ComputeResult<()> {
        let path = self.dir.join(&file.name);
        let Some(handle) = self.open_planned(file, &path)? else {
            return Ok(());
        };
        let reader = BufReader::with_capacity(64 * 1024, handle.take(file.len));
        let mut lines = LineReader {
            path: &path,
            options: &self.options,
            out,
        };
        lines
            .read_all(reader)
            .map_err(|e| ComputeError::new(format!("could not read {}: {e}", path.display())))
    }

    /// Opens a planned file, applying the missing-file policy (`None`: read it as empty) and
    /// reporting a file changed since it was planned.
    fn open_planned(&self, file: &PlannedFile, path: &Path) -> ComputeResult<Option<File>> {
        let stats = &self.options.stats;
        let opened = File::open(path).and_then(|f| f.metadata().map(|m| (f, m)));
        let (handle, meta) = match opened {
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
        Ok(Some(handle))
    }

    /// Reads a planned file's bytes as records of `record_len` bytes.
    fn read_records(
        &self,
        file: &PlannedFile,
        record_len: usize,
        out: &mut Vec<bytes::Bytes>,
    ) -> ComputeResult<()> {
        let path = self.dir.join(&file.name);
        let Some(handle) = self.open_planned(file, &path)? else {
            return Ok(());
        };
        let stats = &self.options.stats;
        let mut reader = BufReader::with_capacity(64 * 1024, handle.take(file.len));
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
    pub(crate) out: &'a mut Vec<String>,
}

impl LineReader<'_> {
    pub(crate) fn read_all(&mut self, mut reader: impl BufRead) -> io::Result<()> {
        let max = self.options.max_line_len;
        let mut line: Vec<u8> = Vec::new();
        let mut too_long = false;
        let mut number: u64 = 1;
        let mut start: u64 = 0; // byte offset of the line
        let mut offset: u64 = 0;
        loop {
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
                number += 1;
                start = offset;
            }
        }
        self.options
            .stats
            .bytes
            .fetch_add(offset, Ordering::Relaxed);
        Ok(())
    }

    /// Handles one line: `bytes` are its first (at most `max_line_len` + 1) bytes, `len` its
    /// full length without the `\n`.
    fn finish(&mut self, bytes: &mut Vec<u8>, too_long: bool, number: u64, start: u64, len: u64) {
        let stats = &self.options.stats;
        let max = self.options.max_line_len;
        let path = self.path.display();
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
                    "line {number} of {path} (at byte {start}) is {len} bytes long, over the \
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
        let text = match String::from_utf8(std::mem::take(bytes)) {
            Ok(text) => text,
            Err(e) => {
                let error = e.utf8_error();
                let bad_at = start + error.valid_up_to() as u64;
                match self.options.bad_utf8 {
                    BadUtf8::Skip => {
                        stats.report(
                            &self.options.problems,
                            "bad_utf8",
                            &stats.bad_utf8_lines,
                            format!(
                                "line {number} of {path} (at byte {start}) is not valid UTF-8 \
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
                                "line {number} of {path} (at byte {start}) is not valid UTF-8 \
                                 (invalid byte at {bad_at}); invalid sequences are replaced"
                            ),
                        );
                        String::from_utf8_lossy(e.as_bytes()).into_owned()
                    }
                }
            }
        };
        stats.lines.fetch_add(1, Ordering::Relaxed);
        self.out.push(text);
    }
}

impl Planner for FileStream {
    type Item = String;
    type Plan = Vec<PlannedFile>;
    type Position = FilePosition;

    fn partitions(&self) -> usize {
        self.partitions
    }

    fn initial(&self) -> ComputeResult<FilePosition> {
        if !self.options.new_files_only {
            return Ok(FilePosition::default());
        }
        let existing = self.list()?;
        Ok(self.advance(&FilePosition::default(), &existing))
    }

    fn plan(
        &self,
        from: &FilePosition,
        _time: u64,
    ) -> ComputeResult<(Vec<PlannedFile>, FilePosition)> {
        let mut files: Vec<PlannedFile> = self
            .list()?
            .into_iter()
            .filter(|f| f.mtime_ns >= from.watermark_ns && !from.seen.contains_key(&f.name))
            .collect();
        if let Some(max) = self.options.max_files_per_batch {
            files.truncate(max);
        }
        let next = self.advance(from, &files);
        Ok((files, next))
    }

    fn read(&self, plan: &Vec<PlannedFile>, part: usize) -> ComputeResult<Vec<String>> {
        let mut out = Vec::new();
        for file in plan.iter().skip(part).step_by(self.partitions.max(1)) {
            self.read_file(file, &mut out)?;
        }
        Ok(out)
    }
}

/// The file stream read as fixed-length binary records (Spark's `binaryRecordsStream`): the
/// same files, plans and exactly-once rules as the text stream; each planned file's bytes are
/// cut into records of `record_len` bytes (in the file's partition: "lines" in the stats count
/// records). A file whose length is not a multiple of `record_len` has its last, partial
/// record skipped and reported (`FileStreamStats::partial_records`).
pub(crate) struct BinaryRecords {
    pub(crate) files: FileStream,
    pub(crate) record_len: usize,
}

impl Planner for BinaryRecords {
    type Item = bytes::Bytes;
    type Plan = Vec<PlannedFile>;
    type Position = FilePosition;

    fn partitions(&self) -> usize {
        self.files.partitions()
    }

    fn initial(&self) -> ComputeResult<FilePosition> {
        self.files.initial()
    }

    fn plan(
        &self,
        from: &FilePosition,
        time: u64,
    ) -> ComputeResult<(Vec<PlannedFile>, FilePosition)> {
        self.files.plan(from, time)
    }

    fn read(&self, plan: &Vec<PlannedFile>, part: usize) -> ComputeResult<Vec<bytes::Bytes>> {
        let mut out = Vec::new();
        let step = self.files.partitions.max(1);
        for file in plan.iter().skip(part).step_by(step) {
            self.files
                .read_records(file, self.record_len.max(1), &mut out)?;
        }
        Ok(out)
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

    fn lines(input: &[u8], options: &FileStreamOptions) -> Vec<String> {
        let mut out = Vec::new();
        LineReader {
            path: Path::new("test"),
            options,
            out: &mut out,
        }
        .read_all(BufReader::with_capacity(4, input))
        .unwrap();
        out
    }

    #[test]
    fn lines_are_split_at_newlines_without_carriage_returns() {
        let o = FileStreamOptions::new();
        assert_eq!(lines(b"a\r\nbb\n\nccc", &o), vec!["a", "bb", "", "ccc"]);
        assert_eq!(lines(b"", &o), Vec::<String>::new());
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
        let mut position = FilePosition::default();
        let sec = 1_000_000_000;
        // A file per second for 1000 s: only the last 10 s of names are kept.
        for t in 0..1000u64 {
            let file = PlannedFile {
                name: format!("f{t}"),
                mtime_ns: t * sec,
                len: 1,
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
}
