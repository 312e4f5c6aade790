//! The exactly-once batch-directory sink: every batch with output becomes one directory
//! `<prefix>-<batch_time_ms>/` of `part-NNNNN` text files (Spark's `saveAsTextFiles`) and a
//! commit marker, `_COMMITTED`, which appears complete or not at all.
//!
//! # How a batch is committed
//!
//! 1. The part files are written into a hidden temporary directory beside the final one,
//!    `.<name>-<batch_time_ms>.tmp-<pid>-<random>` (`<name>` is the last component of the
//!    prefix), one `part-NNNNN` per partition of the stream (empty partitions give empty
//!    files), each fsynced.
//! 2. The commit marker [`MARKER_FILE`] is written beside them and fsynced: the batch's time
//!    and, for each part file, its length and CRC32C, in a small versioned, checksummed
//!    format (`docs/architecture.md`, "Batch commit marker").
//! 3. The temporary directory is fsynced, renamed to `<prefix>-<batch_time_ms>`, and the
//!    parent directory is fsynced. The rename is the commit: a reader never sees a partial
//!    batch directory, and the marker is in it from the start.
//!
//! # What counts as committed
//!
//! Batch *t* is committed when `<prefix>-<t>` is a real directory (never a symbolic link:
//! nothing is followed), holds a regular-file marker that decodes, names batch *t*, and whose
//! parts match the directory: every part it lists is a regular file of that length and
//! CRC32C, and every `part-*` in the directory is listed (other files are not looked at). A
//! batch that is committed is skipped: a batch replayed after a crash or retried after a
//! failure never writes a second copy and never changes a committed one (when two attempts
//! race, the second finds the first's commit and removes its temporary directory). Because
//! batches are re-run from the same planned input with deterministic transformations, the
//! skipped copy would have been identical anyway.
//!
//! Anything else under a batch's name — an empty or foreign directory, a file, a symbolic
//! link, a directory whose marker is missing, damaged, another batch's, or does not match its
//! parts — is [`SinkError::Foreign`], naming the path: never taken for the commit (that was
//! silent loss: the batch's records went nowhere) and never replaced (it may be someone's
//! data). weir's own protocol cannot leave such an entry (a crash leaves only the hidden
//! temporary directory, the marker is durable before the rename), so there is no leftover of
//! weir's own to recognise and replace. A directory written by a weir from before commit
//! markers has none, and is refused the same way when its batch is run again (after an
//! upgrade, at most the restored checkpoint's pending batches are): move it away and the
//! batch is written again, with a marker. Batches that are not run again are never looked at.
//!
//! A batch with no elements at all writes nothing (no directory), so idle intervals do not
//! litter the output with empty directories.
//!
//! Every step goes through the engine's durable-file module (`weir_actors::durable`), with
//! the sink's own failpoints (`sink::…`, listed in `docs/testing.md`).
//!
//! A crash before the rename leaves a temporary directory behind; it is hidden (so readers
//! listing the parent skip it) and removed by [`BatchDirSink::remove_leftovers`], which
//! [`DStream::save_as_text_files`](crate::DStream::save_as_text_files) calls when the graph is
//! built, i.e. at every (re)start. Only one running application may write under a prefix:
//! between the check that a batch's name is free and the rename, a directory created there
//! by someone else, if empty, would be replaced by the rename (`rename(2)` replaces an empty
//! directory).
//!
//! # Readers
//!
//! A reader takes `<prefix>-<t>` as complete once it exists (the rename published it whole)
//! and reads its `part-*` files, skipping [`MARKER_FILE`];
//! [`BatchDirSink::committed`] also checks the parts against the marker.
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
//! // The marker lists both parts, with their lengths.
//! let committed = sink.committed(1000)?.expect("committed");
//! let lens: Vec<(&str, u64)> = committed.parts.iter().map(|p| (p.name.as_str(), p.len)).collect();
//! assert_eq!(lens, [("part-00000", 8), ("part-00001", 0)]);
//! # Ok(()) }
//! ```

pub(crate) mod marker;

use std::collections::BTreeMap;
use std::fmt::Display;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use weir_actors::durable::{self, Failpoints, FsError};

pub use self::marker::MARKER_FILE;
use self::marker::{Entry, MAX_MARKER_BYTES, Marker, part_name};

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
    /// Something other than this batch's commit is under the batch directory's name: not a
    /// directory, a symbolic link, or a directory without a valid commit marker matching its
    /// parts (someone else's, damaged, or written by a weir from before commit markers). It
    /// is neither taken for the commit nor replaced; see the [module documentation](self).
    #[error(
        "{} is in the way of batch {batch_time_ms}: {reason}. It is neither taken for the \
         batch's commit nor replaced; move it away and the batch is written again",
        path.display()
    )]
    Foreign {
        /// The entry under the batch directory's name.
        path: PathBuf,
        /// The batch.
        batch_time_ms: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A file system operation failed.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// An object store operation failed (the [object sink](super::batch_objects)).
    #[error(transparent)]
    Storage(#[from] weir_actors::StorageError),
}

/// A committed batch directory, its marker checked against its part files.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedBatch {
    /// The directory.
    pub dir: PathBuf,
    /// Its part files, in partition order.
    pub parts: Vec<PartFile>,
}

/// One part file of a committed batch, as its commit marker lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartFile {
    /// Its name in the batch directory (`part-NNNNN`).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
    /// The CRC32C of its bytes.
    pub crc32c: u32,
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

    /// Whether batch `time_ms` is committed: [`committed`](Self::committed) found it
    /// (false for an entry in the way and when the check failed).
    pub fn is_committed(&self, time_ms: u64) -> bool {
        matches!(self.committed(time_ms), Ok(Some(_)))
    }

    /// Batch `time_ms`'s committed directory with its parts, `None` if nothing is under its
    /// name. Reads every part file to check its CRC32C.
    ///
    /// # Errors
    ///
    /// [`SinkError::Foreign`]: something other than the batch's commit is under its name
    /// (see the [module documentation](self)); [`SinkError::Fs`]: reading failed.
    pub fn committed(&self, time_ms: u64) -> Result<Option<CommittedBatch>, SinkError> {
        check_commit(&self.batch_dir(time_ms), time_ms)
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
    /// The prefix is unusable, something other than the batch's commit is under its name
    /// ([`SinkError::Foreign`]), or the temporary directory cannot be created.
    pub fn begin(&self, time_ms: u64) -> Result<Option<StagedBatch>, SinkError> {
        let (parent, name) = self.parts_of_prefix()?;
        let final_dir = self.batch_dir(time_ms);
        if check_commit(&final_dir, time_ms)?.is_some() {
            return Ok(None);
        }
        durable::create_dir_all(&parent, FAILPOINTS)?;
        let temp = parent.join(format!(
            ".{name}-{time_ms}.tmp-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        // Not made durable by itself: the commit fsyncs it, renames it and fsyncs the parent.
        durable::create_dir(&temp, Failpoints::NONE)?;
        Ok(Some(StagedBatch {
            temp,
            final_dir,
            parent,
            time_ms,
            parts: BTreeMap::new(),
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
    /// directory is removed), and a retry writes the batch again. Something other than the
    /// batch's commit is under its name ([`SinkError::Foreign`]): nothing is written.
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
    time_ms: u64,
    /// Each part written: partition → (length, CRC32C), for the marker.
    parts: BTreeMap<u64, (u64, u32)>,
    sort_lines: bool,
    done: bool,
}

impl StagedBatch {
    /// The temporary directory.
    pub fn temp_dir(&self) -> &Path {
        &self.temp
    }

    /// Writes `part-<partition>` (at least five digits) with one line per element, and fsyncs
    /// it. Writing a partition again replaces its file.
    ///
    /// # Errors
    ///
    /// Creating, writing or fsyncing the file failed.
    pub fn write_part<T: Display>(
        &mut self,
        partition: usize,
        lines: &[T],
    ) -> Result<(), SinkError> {
        let partition = partition as u64;
        let path = self.temp.join(part_name(partition));
        let sort_lines = self.sort_lines;
        let (mut len, mut crc) = (0u64, crc32c::crc32c(b""));
        // Streamed, not built whole in memory; the name becomes durable with the temporary
        // directory's fsync in `commit`. Length and CRC32C are taken of the bytes as they go.
        durable::write_file_with(&path, FAILPOINTS, |file| {
            let out = &mut Tally {
                out: file,
                len: &mut len,
                crc: &mut crc,
            };
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
        self.parts.insert(partition, (len, crc));
        Ok(())
    }

    /// Commits: writes and fsyncs the commit marker, fsyncs the temporary directory, renames
    /// it to the batch directory and fsyncs the parent. If another attempt committed the
    /// batch meanwhile, this one's files are removed and the batch is reported as already
    /// committed.
    ///
    /// # Errors
    ///
    /// Writing the marker, an fsync or the rename failed, or something other than the
    /// batch's commit is under its name ([`SinkError::Foreign`]); the temporary directory is
    /// removed.
    pub fn commit(mut self) -> Result<Commit, SinkError> {
        let marker = Marker {
            batch_time_ms: self.time_ms,
            parts: self
                .parts
                .iter()
                .map(|(&partition, &(len, crc32c))| Entry {
                    partition,
                    len,
                    crc32c,
                })
                .collect(),
        };
        // Data durable now, its name with the directory's fsync that follows.
        durable::write_file(&self.temp.join(MARKER_FILE), &marker.encode(), FAILPOINTS)?;
        durable::sync_dir(&self.temp, FAILPOINTS)?;
        if check_commit(&self.final_dir, self.time_ms)?.is_some() {
            return Ok(Commit::AlreadyCommitted(self.final_dir.clone()));
        }
        if let Err(e) = durable::rename(&self.temp, &self.final_dir, FAILPOINTS) {
            // Lost a race? Then the winner's commit is there (or a foreign entry, reported).
            if check_commit(&self.final_dir, self.time_ms)?.is_some() {
                return Ok(Commit::AlreadyCommitted(self.final_dir.clone()));
            }
            return Err(e.into());
        }
        self.done = true;
        durable::sync_dir(&self.parent, FAILPOINTS)?;
        Ok(Commit::Written {
            dir: self.final_dir.clone(),
            parts: self.parts.len(),
        })
    }

    /// Leaves the temporary directory as it is, as a crash before the commit would (for
    /// crash tests; [`BatchDirSink::remove_leftovers`] cleans it up).
    pub fn abandon(mut self) {
        self.done = true;
    }
}

/// Counts and checksums the bytes written through it (for the marker).
struct Tally<'a> {
    out: &'a mut dyn io::Write,
    len: &'a mut u64,
    crc: &'a mut u32,
}

impl io::Write for Tally<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.out.write(bytes)?;
        *self.len += n as u64;
        *self.crc = crc32c::crc32c_append(*self.crc, &bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Is batch `time_ms` committed as `dir`? `None`: nothing there. See "What counts as
/// committed" in the module documentation. Follows no symbolic link.
fn check_commit(dir: &Path, time_ms: u64) -> Result<Option<CommittedBatch>, SinkError> {
    let foreign = |reason: String| SinkError::Foreign {
        path: dir.to_path_buf(),
        batch_time_ms: time_ms,
        reason,
    };
    let meta = match fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FsError::io("inspect", dir)(e).into()),
    };
    if meta.file_type().is_symlink() {
        return Err(foreign(
            "it is a symbolic link, which the sink never follows".to_owned(),
        ));
    }
    if !meta.is_dir() {
        return Err(foreign("it is not a directory".to_owned()));
    }
    let marker_path = dir.join(MARKER_FILE);
    let Some(mut file) = open_regular(&marker_path).map_err(|e| match e {
        Opened::NotRegular(what) => foreign(format!("its commit marker {MARKER_FILE} is {what}")),
        Opened::Fs(e) => e.into(),
    })?
    else {
        return Err(foreign(format!(
            "it holds no commit marker {MARKER_FILE}, so nothing says its parts are complete \
             (a weir from before commit markers wrote none)"
        )));
    };
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_MARKER_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(FsError::io("read", &marker_path))?;
    let marker = if bytes.len() as u64 > MAX_MARKER_BYTES {
        Err(format!("over {MAX_MARKER_BYTES} bytes long"))
    } else {
        Marker::decode(&bytes)
    }
    .map_err(|reason| {
        foreign(format!(
            "its commit marker {MARKER_FILE} is damaged: {reason}"
        ))
    })?;
    if marker.batch_time_ms != time_ms {
        return Err(foreign(format!(
            "its commit marker is batch {}'s",
            marker.batch_time_ms
        )));
    }
    // Every `part-*` present is listed…
    let listed: BTreeMap<String, Entry> = marker
        .parts
        .iter()
        .map(|part| (part_name(part.partition), *part))
        .collect();
    for entry in fs::read_dir(dir).map_err(FsError::io("list", dir))? {
        let name = entry.map_err(FsError::io("list", dir))?.file_name();
        if name.as_encoded_bytes().starts_with(b"part-")
            && name.to_str().is_none_or(|n| !listed.contains_key(n))
        {
            return Err(foreign(format!(
                "it holds {}, which its commit marker does not list",
                name.to_string_lossy()
            )));
        }
    }
    // …and each listed part is there, whole.
    let mut parts = Vec::with_capacity(listed.len());
    for part in &marker.parts {
        let name = part_name(part.partition);
        let path = dir.join(&name);
        let file = open_regular(&path).map_err(|e| match e {
            Opened::NotRegular(what) => foreign(format!("its {name} is {what}")),
            Opened::Fs(e) => e.into(),
        })?;
        let Some(file) = file else {
            return Err(foreign(format!(
                "its commit marker lists {name}, which is missing"
            )));
        };
        let (len, crc32c) = len_and_crc(file).map_err(FsError::io("read", &path))?;
        if (len, crc32c) != (part.len, part.crc32c) {
            return Err(foreign(format!(
                "its {name} has {len} bytes with CRC32C {crc32c:#010x}, its commit marker \
                 says {} bytes with CRC32C {:#010x}",
                part.len, part.crc32c
            )));
        }
        parts.push(PartFile { name, len, crc32c });
    }
    Ok(Some(CommittedBatch {
        dir: dir.to_path_buf(),
        parts,
    }))
}

/// Why [`open_regular`] did not open a file.
enum Opened {
    /// Not a regular file: what it is instead.
    NotRegular(&'static str),
    Fs(FsError),
}

/// Opens `path` for reading if it is a regular file (`None` if nothing is there), without
/// following a symbolic link: the file opened is checked to be the one inspected.
fn open_regular(path: &Path) -> Result<Option<File>, Opened> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Opened::Fs(FsError::io("inspect", path)(e))),
    };
    if meta.file_type().is_symlink() {
        return Err(Opened::NotRegular("a symbolic link"));
    }
    if !meta.is_file() {
        return Err(Opened::NotRegular("not a regular file"));
    }
    let file = File::open(path).map_err(|e| Opened::Fs(FsError::io("open", path)(e)))?;
    let opened = file
        .metadata()
        .map_err(|e| Opened::Fs(FsError::io("inspect", path)(e)))?;
    if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
        return Err(Opened::NotRegular("replaced while it was being opened"));
    }
    Ok(Some(file))
}

/// The length and CRC32C of what `file` holds from where it is.
fn len_and_crc(mut file: File) -> io::Result<(u64, u32)> {
    let mut buf = vec![0u8; 64 << 10];
    let (mut len, mut crc) = (0u64, crc32c::crc32c(b""));
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((len, crc)),
            Ok(n) => {
                len += n as u64;
                crc = crc32c::crc32c_append(crc, &buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

impl Drop for StagedBatch {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_dir_all(&self.temp);
        }
    }
}
