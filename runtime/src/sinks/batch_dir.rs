//! The exactly-once batch-directory sink: every batch with output becomes one directory
//! `<prefix>-<batch_time_ms>/` of `part-NNNNN` text files (Spark's `saveAsTextFiles`), which
//! appears complete or not at all.
//!
//! # How a batch is committed
//!
//! 1. The part files are written into a hidden temporary directory beside the final one,
//!    `.<name>-<batch_time_ms>.tmp-<pid>-<random>` (`<name>` is the last component of the
//!    prefix), one `part-NNNNN` per partition of the stream (empty partitions give empty
//!    files), each fsynced.
//! 2. The temporary directory is fsynced, renamed to `<prefix>-<batch_time_ms>`, and the
//!    parent directory is fsynced. The rename is the commit: a reader never sees a partial
//!    batch directory.
//!
//! A batch whose final directory already exists is skipped: a batch replayed after a crash
//! or retried after a failure never writes a second copy and never changes a committed one
//! (when two attempts race, the second rename fails and its temporary directory is removed).
//! Because batches are re-run from the same planned input with deterministic transformations,
//! the skipped copy would have been identical anyway.
//!
//! A batch with no elements at all writes nothing (no directory), so idle intervals do not
//! litter the output with empty directories.
//!
//! Every step goes through the engine's durable-file module (`weir_actors::durable`), with
//! the sink's own failpoints (`sink::…`, listed in `docs/testing.md`).
//!
//! A crash between the part files and the rename leaves a temporary directory behind; it is
//! hidden (so readers listing the parent skip it) and removed by
//! [`BatchDirSink::remove_leftovers`], which
//! [`DStream::save_as_text_files`](crate::DStream::save_as_text_files) calls when the graph is
//! built, i.e. at every (re)start. Only one running application may write under a prefix.
//!
//! # Line order
//!
//! Each element is written as one line with its `Display` form. By default the lines of
//! every part file are sorted (byte order of the formatted line), so a part file's content
//! depends only on the batch's data: the word count's `word<TAB>count` lines come out sorted
//! by word. [`BatchDirSink::sort_lines`]`(false)` keeps partition order instead.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weir::sinks::batch_dir::{BatchDirSink, Commit};
//!
//! let out = tempfile::tempdir()?;
//! let sink = BatchDirSink::new(out.path().join("batch"));
//! let parts: Vec<Vec<String>> = vec![vec!["b\t2".into(), "a\t1".into()], vec![]];
//! let commit = sink.write_batch(1000, parts.iter().map(|p| p.as_slice()))?;
//! assert!(matches!(commit, Commit::Written { parts: 2, .. }));
//! let part0 = std::fs::read_to_string(out.path().join("batch-1000/part-00000"))?;
//! assert_eq!(part0, "a\t1\nb\t2\n");
//! // A replay of the same batch is skipped.
//! let again = sink.write_batch(1000, parts.iter().map(|p| p.as_slice()))?;
//! assert!(matches!(again, Commit::AlreadyCommitted(_)));
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use weir_actors::durable::{self, Failpoints, FsError};

/// The sink's failpoints (with the `failpoints` feature; see `docs/testing.md`).
const FAILPOINTS: Failpoints = Failpoints {
    write: Some("sink::write"),
    torn_write: Some("sink::write::torn"),
    disk_full: Some("sink::write::enospc"),
    fsync: Some("sink::fsync"),
    dir_fsync: Some("sink::dir_fsync"),
    rename: Some("sink::rename"),
    create_dir: Some("sink::create_dir"),
    remove: Some("sink::remove"),
    ..Failpoints::NONE
};

/// Why a batch could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The prefix has no last component to name the batch directories after.
    #[error(
        "the output prefix {} has no file name to name batch directories after (use e.g. out/batch)",
        .0.display()
    )]
    BadPrefix(PathBuf),
    /// A file system operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What [`BatchDirSink::write_batch`] or [`StagedBatch::commit`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Commit {
    /// The batch directory was written and committed.
    Written {
        /// The committed directory.
        dir: PathBuf,
        /// How many part files it holds.
        parts: usize,
    },
    /// The batch was committed before (a replay or a retry): nothing was written.
    AlreadyCommitted(PathBuf),
    /// The batch had no elements: nothing was written.
    Empty,
}

/// Writes batches as atomic `<prefix>-<batch_time_ms>/part-NNNNN` directories; see the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct BatchDirSink {
    prefix: PathBuf,
    suffix: Option<String>,
    sort_lines: bool,
}

impl BatchDirSink {
    /// A sink writing `<prefix>-<batch_time_ms>/` directories (the prefix's parent is created
    /// when the first batch is written). Sorts the lines of each part file.
    pub fn new(prefix: impl AsRef<Path>) -> Self {
        BatchDirSink {
            prefix: prefix.as_ref().to_path_buf(),
            suffix: None,
            sort_lines: true,
        }
    }

    /// Names each batch directory `<prefix>-<batch_time_ms>.<suffix>` (Spark's
    /// `saveAsTextFiles(prefix, suffix)`); an empty suffix means none.
    #[must_use]
    pub fn suffix(mut self, suffix: impl Into<String>) -> Self {
        let suffix = suffix.into();
        self.suffix = (!suffix.is_empty()).then_some(suffix);
        self
    }

    /// Whether the lines of each part file are sorted (default: true); with false they keep
    /// the partition's order.
    #[must_use]
    pub fn sort_lines(mut self, sort: bool) -> Self {
        self.sort_lines = sort;
        self
    }

    /// The prefix.
    pub fn prefix(&self) -> &Path {
        &self.prefix
    }

    fn parts_of_prefix(&self) -> Result<(PathBuf, String), SinkError> {
        let name = self
            .prefix
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| SinkError::BadPrefix(self.prefix.clone()))?;
        let parent = match self.prefix.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok((parent, name.to_owned()))
    }

    /// The directory batch `time_ms` is committed as.
    pub fn batch_dir(&self, time_ms: u64) -> PathBuf {
        let mut name = self.prefix.clone().into_os_string();
        name.push(format!("-{time_ms}"));
        if let Some(suffix) = &self.suffix {
            name.push(format!(".{suffix}"));
        }
        PathBuf::from(name)
    }

    /// Whether batch `time_ms` is committed.
    pub fn is_committed(&self, time_ms: u64) -> bool {
        self.batch_dir(time_ms).is_dir()
    }

    /// Removes the temporary directories that writers of this prefix left behind when they
    /// crashed before committing; returns how many it removed. Call it only while no batch
    /// is being written under this prefix (the streaming graph calls it when it is built).
    ///
    /// # Errors
    ///
    /// The parent directory cannot be listed or a leftover cannot be removed. A parent that
    /// does not exist has no leftovers.
    pub fn remove_leftovers(&self) -> Result<usize, SinkError> {
        let (parent, name) = self.parts_of_prefix()?;
        let entries = match fs::read_dir(&parent) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(FsError::io("list", &parent)(e).into()),
        };
        let start = format!(".{name}-");
        let mut leftovers = Vec::new();
        for entry in entries {
            let entry = entry.map_err(FsError::io("list", &parent))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let is_leftover = file_name.strip_prefix(&start).is_some_and(|rest| {
                rest.split_once(".tmp-")
                    .is_some_and(|(ms, _)| !ms.is_empty() && ms.bytes().all(|b| b.is_ascii_digit()))
            });
            if is_leftover {
                leftovers.push(file_name.to_owned());
            }
        }
        durable::remove_dirs(&parent, &leftovers, FAILPOINTS)?;
        for leftover in &leftovers {
            let dir = parent.join(leftover);
            tracing::info!(dir = %dir.display(), "removed an uncommitted batch directory left by a crash");
        }
        Ok(leftovers.len())
    }

    /// Starts writing batch `time_ms`: `None` if it is already committed.
    ///
    /// # Errors
    ///
    /// The prefix is unusable, or the temporary directory cannot be created.
    pub fn begin(&self, time_ms: u64) -> Result<Option<StagedBatch>, SinkError> {
        let (parent, name) = self.parts_of_prefix()?;
        let final_dir = self.batch_dir(time_ms);
        if final_dir.is_dir() {
            return Ok(None);
        }
        durable::create_dir_all(&parent, FAILPOINTS)?;
        let temp = parent.join(format!(
            ".{name}-{time_ms}.tmp-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        // Not made durable by itself: the commit fsyncs it, renames it and fsyncs the parent.
        fs::create_dir(&temp).map_err(FsError::io("create directory", &temp))?;
        Ok(Some(StagedBatch {
            temp,
            final_dir,
            parent,
            parts: 0,
            sort_lines: self.sort_lines,
            done: false,
        }))
    }

    /// Writes and commits batch `time_ms`, one part file per item of `partitions` — or
    /// nothing, if it was committed before or has no elements.
    ///
    /// # Errors
    ///
    /// Writing, fsyncing or renaming failed; nothing is committed then (the temporary
    /// directory is removed), and a retry writes the batch again.
    pub fn write_batch<'a, T: Display + 'a>(
        &self,
        time_ms: u64,
        partitions: impl IntoIterator<Item = &'a [T]>,
    ) -> Result<Commit, SinkError> {
        let partitions: Vec<&[T]> = partitions.into_iter().collect();
        if partitions.iter().all(|p| p.is_empty()) {
            return Ok(Commit::Empty);
        }
        let Some(mut staged) = self.begin(time_ms)? else {
            return Ok(Commit::AlreadyCommitted(self.batch_dir(time_ms)));
        };
        for (p, lines) in partitions.iter().enumerate() {
            staged.write_part(p, lines)?;
        }
        staged.commit()
    }
}

/// A batch being written: part files go into its hidden temporary directory until
/// [`commit`](Self::commit). Dropped without a commit, it removes that directory.
#[derive(Debug)]
pub struct StagedBatch {
    temp: PathBuf,
    final_dir: PathBuf,
    parent: PathBuf,
    parts: usize,
    sort_lines: bool,
    done: bool,
}

impl StagedBatch {
    /// The temporary directory.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    /// Writes `part-<partition>` (five digits) with one line per element, and fsyncs it.
    ///
    /// # Errors
    ///
    /// Creating, writing or fsyncing the file failed.
    pub fn write_part<T: Display>(
        &mut self,
        partition: usize,
        lines: &[T],
    ) -> Result<(), SinkError> {
        let path = self.temp.join(format!("part-{partition:05}"));
        let sort_lines = self.sort_lines;
        // Streamed, not built whole in memory; the name becomes durable with the temporary
        // directory's fsync in `commit`.
        durable::write_file_with(&path, FAILPOINTS, |out| {
            if sort_lines {
                let mut text: Vec<String> = lines.iter().map(ToString::to_string).collect();
                text.sort_unstable();
                for line in &text {
                    writeln!(out, "{line}")?;
                }
            } else {
                for line in lines {
                    writeln!(out, "{line}")?;
                }
            }
            Ok(())
        })?;
        self.parts += 1;
        Ok(())
    }

    /// Commits: fsyncs the temporary directory, renames it to the batch directory and
    /// fsyncs the parent. If another attempt committed the batch meanwhile, this one's files
    /// are removed and the batch is reported as already committed.
    ///
    /// # Errors
    ///
    /// An fsync or the rename failed; the temporary directory is removed.
    pub fn commit(mut self) -> Result<Commit, SinkError> {
        durable::sync_dir(&self.temp, FAILPOINTS)?;
        if self.final_dir.is_dir() {
            return Ok(Commit::AlreadyCommitted(self.final_dir.clone()));
        }
        if let Err(e) = durable::rename(&self.temp, &self.final_dir, FAILPOINTS) {
            if self.final_dir.is_dir() {
                return Ok(Commit::AlreadyCommitted(self.final_dir.clone()));
            }
            return Err(e.into());
        }
        self.done = true;
        durable::sync_dir(&self.parent, FAILPOINTS)?;
        Ok(Commit::Written {
            dir: self.final_dir.clone(),
            parts: self.parts,
        })
    }

    /// Leaves the temporary directory as it is, as a crash before the commit would (for
    /// crash tests; [`BatchDirSink::remove_leftovers`] cleans it up).
    pub fn abandon(mut self) {
        self.done = true;
    }
}

impl Drop for StagedBatch {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}
