//! Durable files on a local filesystem: atomic write, durable directory creation, directory
//! fsync, data fsync, durable truncate and remove — each with the calling component's
//! failpoints. The WAL, the checkpoint store, the runtime's batch-directory sink and its
//! partitioned log all write through these functions; there is no second copy.
//!
//! # What "durable" means here
//!
//! A function's documentation says what a power cut can no longer undo once it returns `Ok`.
//! Data is durable after an fsync of the file; a *name* (a created, renamed or removed file or
//! directory) is durable after an fsync of the directory that holds it. The composite
//! operations do both:
//!
//! * [`write_atomic`]: temp file beside the target, write, fsync, rename, fsync of the
//!   directory. A reader sees the old content or the new, never a part; a crash leaves at
//!   most a temp file whose name starts with [`TEMP_PREFIX`] (removed by
//!   [`remove_temp_files`]), and a failed call removes its temp file itself. The temp file is
//!   always a new one (`O_EXCL`) and never reached through a symbolic link (`O_NOFOLLOW`).
//! * [`create_new`]: a new file with its first bytes, fsynced, its name fsynced.
//! * [`create_dir_all`]: every directory level it creates is fsynced into its parent.
//! * [`truncate`], [`remove_files`], [`remove_dirs`]: the new length or the removals durable.
//!
//! The building blocks ([`write_all_at`], [`sync_data`], [`write_file`], [`rename`],
//! [`sync_dir`]) are for writers with their own commit protocol (a WAL appending to an open
//! segment, a sink renaming a whole directory); their documentation says which fsync is still
//! the caller's.
//!
//! # Errors and failpoints
//!
//! Every function fails with an [`FsError`] that names the operation and the path; the engine
//! converts it into its [`StorageError`](crate::StorageError). Every function takes the
//! component's [`Failpoints`]: with the `failpoints` feature, a name configured through the
//! `fail` crate fails the operation exactly at its edge (see each field of [`Failpoints`] and
//! `docs/testing.md`); without the feature the checks compile away.
//!
//! All functions block on file I/O; async callers run them on a blocking thread.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::storage::failpoint::Failpoints;
use crate::storage::failpoint::{fired, fired_at};

/// Names starting with this prefix are temp files of [`write_atomic`] that never hold
/// committed data: [`remove_temp_files`] removes them.
pub const TEMP_PREFIX: &str = ".tmp-";

/// A failed file-system operation, with what was being done and to which path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// The operating system refused or failed the call.
    #[error("{op} `{}` failed: {source}", path.display())]
    Io {
        /// What was being done: `"write"`, `"fsync"`, `"rename"`, `"create directory"`, ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A failpoint fired (only with the `failpoints` feature, in tests).
    #[error("{op} `{}` failed: injected by failpoint `{failpoint}`", path.display())]
    Injected {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The failpoint's name.
        failpoint: &'static str,
    },
}

impl FsError {
    /// A closure that wraps an `io::Error` of operation `op` on `path`, for `map_err`:
    ///
    /// ```
    /// use weir_actors::durable::FsError;
    ///
    /// let path = std::path::Path::new("/no/such/file");
    /// let err = std::fs::read(path).map_err(FsError::io("read", path)).unwrap_err();
    /// assert_eq!(err.op(), "read");
    /// assert_eq!(err.to_string().split(':').next(), Some("read `/no/such/file` failed"));
    /// ```
    pub fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FsError + use<> {
        let path = path.to_path_buf();
        move |source| FsError::Io { op, path, source }
    }

    /// The operation that failed: `"write"`, `"fsync"`, `"rename"`, ...
    pub fn op(&self) -> &'static str {
        match self {
            FsError::Io { op, .. } | FsError::Injected { op, .. } => op,
        }
    }

    /// The file or directory it concerned.
    pub fn path(&self) -> &Path {
        match self {
            FsError::Io { path, .. } | FsError::Injected { path, .. } => path,
        }
    }

    /// The operating system's error, if it was one (not a failpoint).
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            FsError::Io { source, .. } => Some(source),
            FsError::Injected { .. } => None,
        }
    }

    /// The failpoint that caused it, if one did.
    pub fn failpoint(&self) -> Option<&'static str> {
        match self {
            FsError::Injected { failpoint, .. } => Some(failpoint),
            FsError::Io { .. } => None,
        }
    }
}

fn injected(op: &'static str, path: &Path, failpoint: &'static str) -> FsError {
    FsError::Injected {
        op,
        path: path.to_path_buf(),
        failpoint,
    }
}

/// `Err` if failpoint `name` fires now, as a failure of `op` on `path`.
fn check(name: Option<&'static str>, op: &'static str, path: &Path) -> Result<(), FsError> {
    match fired(name) {
        Some(failpoint) => Err(injected(op, path, failpoint)),
        None => Ok(()),
    }
}

/// `Err` with the operating system's `ENOSPC` error if the disk-full failpoint fires.
fn disk_full(fps: Failpoints, op: &'static str, path: &Path) -> Result<(), FsError> {
    match fired(fps.disk_full) {
        // 28 is ENOSPC on Linux, whose error the kernel gives a write to a full filesystem.
        Some(_) => Err(FsError::io(op, path)(io::Error::from_raw_os_error(28))),
        None => Ok(()),
    }
}

/// Tells the power-cut model (test builds with the `failpoints` feature) what was done; nothing
/// at all otherwise.
macro_rules! record {
    ($($op:tt)*) => {{
        #[cfg(feature = "failpoints")]
        super::power_cut::record(super::power_cut::Op::$($op)*);
    }};
}

/// The directory that holds `path`: its parent, or `.` for a bare relative name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// fsyncs a directory with no failpoint: the fsyncs inside the composite operations whose
/// own failpoint fires before them.
fn sync_dir_plain(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(FsError::io("fsync directory", dir))?;
    record!(SyncedDir(dir));
    Ok(())
}

/// Makes the names in `dir` durable: files or directories created, renamed or removed in it.
///
/// Failpoint: `dir_fsync`.
pub fn sync_dir(dir: &Path, fps: Failpoints) -> Result<(), FsError> {
    check(fps.dir_fsync, "fsync directory", dir)?;
    sync_dir_plain(dir)
}

/// Creates `dir` and its missing parents; when it returns, every directory it created is
/// durable in its parent (a bare relative name in `.`). A directory that exists is left as it
/// is, also when another process creates it at the same time.
///
/// A crash part-way leaves a prefix of the levels created, which a second call completes.
///
/// Failpoint: `create_dir`, before each level is created.
pub fn create_dir_all(dir: &Path, fps: Failpoints) -> Result<(), FsError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent, fps)?;
    }
    check(fps.create_dir, "create directory", dir)?;
    match fs::create_dir(dir) {
        Ok(()) => record!(MadeDir(dir)),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(err) => return Err(FsError::io("create directory", dir)(err)),
    }
    sync_dir_plain(parent_dir(dir))
}

/// Creates the directory `dir` (its parent must exist), *not* durably: its name is durable
/// once the parent is fsynced ([`sync_dir`]) — for a directory that is filled, fsynced and
/// renamed into place, like the sink's batch in progress.
///
/// Failpoint: `create_dir`.
pub fn create_dir(dir: &Path, fps: Failpoints) -> Result<(), FsError> {
    check(fps.create_dir, "create directory", dir)?;
    fs::create_dir(dir).map_err(FsError::io("create directory", dir))?;
    record!(MadeDir(dir));
    Ok(())
}

/// Writes all of `buf` at `offset` of `file` (positional, so it is independent of any cursor
/// and of other writers' offsets). Nothing is durable yet: see [`sync_data`].
///
/// Failpoints: `write` (nothing written), `disk_full` (`ENOSPC`, nothing written),
/// `torn_write` (the first half written, then a failure).
pub fn write_all_at(
    file: &File,
    path: &Path,
    offset: u64,
    buf: &[u8],
    fps: Failpoints,
) -> Result<(), FsError> {
    check(fps.write, "write", path)?;
    disk_full(fps, "write", path)?;
    if let Some(failpoint) = fired(fps.torn_write) {
        let half = buf.len() / 2;
        file.write_all_at(&buf[..half], offset)
            .map_err(FsError::io("write", path))?;
        record!(Wrote {
            path,
            offset,
            bytes: &buf[..half]
        });
        return Err(injected("write", path, failpoint));
    }
    file.write_all_at(buf, offset)
        .map_err(FsError::io("write", path))?;
    record!(Wrote {
        path,
        offset,
        bytes: buf
    });
    Ok(())
}

/// fsyncs the data of `file` at `path` (and the metadata needed to read it back, such as a
/// new length): what was written is durable when it returns.
///
/// Failpoint: `fsync` (`return(TEXT)` fires only for paths that contain `TEXT`).
pub fn sync_data(file: &File, path: &Path, fps: Failpoints) -> Result<(), FsError> {
    if let Some(failpoint) = fired_at(fps.fsync, path) {
        return Err(injected("fsync", path, failpoint));
    }
    file.sync_data().map_err(FsError::io("fsync", path))?;
    record!(SyncedFile(path));
    Ok(())
}

/// Like [`sync_data`], also fsyncing all of the file's metadata.
fn sync_all(file: &File, path: &Path, fps: Failpoints) -> Result<(), FsError> {
    if let Some(failpoint) = fired_at(fps.fsync, path) {
        return Err(injected("fsync", path, failpoint));
    }
    file.sync_all().map_err(FsError::io("fsync", path))?;
    record!(SyncedFile(path));
    Ok(())
}

/// Creates `path` (or empties it if it exists), writes `bytes` and fsyncs the file. Its data
/// is durable when it returns; its name is durable once its directory is fsynced
/// ([`sync_dir`]) — for writers that publish many files with one directory fsync or rename.
///
/// Failpoints: those of [`write_all_at`], then `fsync`.
pub fn write_file(path: &Path, bytes: &[u8], fps: Failpoints) -> Result<(), FsError> {
    let file = File::create(path).map_err(FsError::io("create", path))?;
    record!(Created(path));
    write_all_at(&file, path, 0, bytes, fps)?;
    sync_all(&file, path, fps)
}

/// Like [`write_file`], with the content streamed by `fill` through a buffer of
/// [`STREAM_CHUNK`] bytes instead of held whole in memory: for large files built line by line
/// (the sink's part files).
///
/// Failpoints: those of [`write_all_at`] (checked at every chunk written), then `fsync`.
///
/// # Errors
///
/// Creating, writing or fsyncing failed, or `fill` returned an error (reported as a failed
/// write of `path`).
pub fn write_file_with(
    path: &Path,
    fps: Failpoints,
    fill: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let file = File::create(path).map_err(FsError::io("create", path))?;
    record!(Created(path));
    write_chunked(&file, path, fps, fill)?;
    sync_all(&file, path, fps)
}

/// Writes what `fill` produces into `file` (at `path`) from its start, through a
/// [`ChunkedWriter`]; the first failure as an [`FsError`].
fn write_chunked(
    file: &File,
    path: &Path,
    fps: Failpoints,
    fill: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let mut out = ChunkedWriter {
        file,
        path,
        fps,
        offset: 0,
        buf: Vec::with_capacity(STREAM_CHUNK),
        failed: None,
    };
    let filled = fill(&mut out).and_then(|()| io::Write::flush(&mut out));
    filled.map_err(|err| {
        out.failed
            .take()
            .unwrap_or_else(|| FsError::io("write", path)(err))
    })
}

/// The name `path` replaces, for an atomic write.
fn file_name_of(path: &Path) -> Result<&OsStr, FsError> {
    path.file_name().ok_or_else(|| {
        FsError::io("write", path)(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name to replace",
        ))
    })
}

/// The buffer of [`write_file_with`]: 64 KiB.
pub const STREAM_CHUNK: usize = 64 << 10;

/// Buffers what it is given and writes it with [`write_all_at`], a chunk at a time; keeps the
/// first failure as an [`FsError`] (an `io::Write` can only return an `io::Error`).
struct ChunkedWriter<'a> {
    file: &'a File,
    path: &'a Path,
    fps: Failpoints,
    offset: u64,
    buf: Vec<u8>,
    failed: Option<FsError>,
}

impl io::Write for ChunkedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= STREAM_CHUNK {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        match write_all_at(self.file, self.path, self.offset, &self.buf, self.fps) {
            Ok(()) => {
                self.offset += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(err) => {
                let message = err.to_string();
                self.failed.get_or_insert(err);
                Err(io::Error::other(message))
            }
        }
    }
}

/// Creates `path`, which must not exist, writes `bytes` (none if empty), fsyncs the file and
/// then its directory, so that file and name are durable when it returns. Returns the file,
/// open for reading and writing.
///
/// A crash part-way leaves either no file or a file holding a prefix of `bytes`; readers of
/// such files (the WAL) validate what they read.
///
/// Failpoints: those of [`write_all_at`] (unless `bytes` is empty), `fsync`, `dir_fsync`.
///
/// # Errors
///
/// The name is taken (an [`io::ErrorKind::AlreadyExists`] error), or a step failed.
pub fn create_new(path: &Path, bytes: &[u8], fps: Failpoints) -> Result<File, FsError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(FsError::io("create", path))?;
    record!(Created(path));
    if !bytes.is_empty() {
        write_all_at(&file, path, 0, bytes, fps)?;
    }
    sync_data(&file, path, fps)?;
    sync_dir(parent_dir(path), fps)?;
    Ok(file)
}

/// Renames `from` to `to` (a file or a directory; in one file system the rename is atomic).
/// The new name is durable once the directory holding it is fsynced ([`sync_dir`]).
///
/// Failpoint: `rename` (nothing renamed).
pub fn rename(from: &Path, to: &Path, fps: Failpoints) -> Result<(), FsError> {
    check(fps.rename, "rename", to)?;
    fs::rename(from, to).map_err(FsError::io("rename", to))?;
    record!(Renamed { from, to });
    Ok(())
}

/// Atomically replaces `path` with `bytes`: a temp file beside it
/// (`.tmp-<name>-<pid>-<n>`, see [`TEMP_PREFIX`]) is written and fsynced, renamed onto `path`,
/// and the directory is fsynced. Content and name are durable when it returns.
///
/// The temp file is created new, with `O_CREAT | O_EXCL | O_NOFOLLOW`: a symbolic link
/// planted at its name is an error (never followed), and a regular file left there by a
/// crashed process with the same pid is stepped over to the next name.
///
/// No reader ever sees a partial file under `path`: before the rename it holds its previous
/// content (or does not exist), after it all of `bytes`. A failed call removes its temp file;
/// one that a crash leaves behind is removed by [`remove_temp_files`]. A failure of the last
/// step, the directory fsync, comes after the rename: `path` may then hold the new content,
/// which a power cut could still undo.
///
/// Failpoints: those of [`write_file`], then `rename`, then `dir_fsync`.
pub fn write_atomic(path: &Path, bytes: &[u8], fps: Failpoints) -> Result<(), FsError> {
    write_atomic_mode(path, bytes, fps, None)
}

/// [`write_atomic`] for a secret: the file is readable and writable by its owner only (mode
/// 0600), from its creation as a temp file on, so no other user can read it at any point.
///
/// Failpoints: those of [`write_atomic`].
pub fn write_atomic_private(path: &Path, bytes: &[u8], fps: Failpoints) -> Result<(), FsError> {
    write_atomic_mode(path, bytes, fps, Some(0o600))
}

/// Numbers the temp files of [`write_atomic`] within this process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many temp names [`write_atomic`] tries when a name is taken by a regular file (one a
/// crashed process with the same pid left behind) before it gives up.
const TEMP_ATTEMPTS: usize = 16;

/// The temp name number `n` of an atomic write of `name` into `dir`.
fn temp_path(dir: &Path, name: &OsStr, n: u64) -> PathBuf {
    dir.join(format!(
        "{TEMP_PREFIX}{}-{}-{n}",
        name.to_string_lossy(),
        std::process::id(),
    ))
}

/// The temp names the next `count` atomic writes of `path` would try (for tests that plant
/// something in their way).
#[cfg(test)]
pub(crate) fn upcoming_temp_paths(path: &Path, count: u64) -> Vec<PathBuf> {
    let next = TEMP_COUNTER.load(Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default();
    (next..next + count)
        .map(|n| temp_path(parent_dir(path), name, n))
        .collect()
}

fn write_atomic_mode(
    path: &Path,
    bytes: &[u8],
    fps: Failpoints,
    mode: Option<u32>,
) -> Result<(), FsError> {
    let name = file_name_of(path)?;
    let dir = parent_dir(path);
    let (file, temp) = create_temp(dir, name, mode)?;
    let result = write_all_at(&file, &temp, 0, bytes, fps)
        .and_then(|()| sync_all(&file, &temp, fps))
        .and_then(|()| rename(&temp, path, fps));
    finish_atomic(dir, &temp, file, result, fps)
}

/// [`write_atomic`], with the content streamed by `fill` through a buffer of [`STREAM_CHUNK`]
/// bytes (as [`write_file_with`]) instead of held whole in memory: for large state files.
///
/// Failpoints: those of [`write_file_with`], then `rename`, then `dir_fsync`.
///
/// # Errors
///
/// As [`write_atomic`], or `fill` returned an error (reported as a failed write of the temp
/// file).
pub fn write_atomic_with(
    path: &Path,
    fps: Failpoints,
    fill: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
) -> Result<(), FsError> {
    let name = file_name_of(path)?;
    let dir = parent_dir(path);
    let (file, temp) = create_temp(dir, name, None)?;
    let result = write_chunked(&file, &temp, fps, fill)
        .and_then(|()| sync_all(&file, &temp, fps))
        .and_then(|()| rename(&temp, path, fps));
    finish_atomic(dir, &temp, file, result, fps)
}

/// The end of an atomic write whose temp file `temp` in `dir` was written and renamed with
/// `result`: on success the directory is fsynced, on failure the temp file removed.
fn finish_atomic(
    dir: &Path,
    temp: &Path,
    file: File,
    result: Result<(), FsError>,
    fps: Failpoints,
) -> Result<(), FsError> {
    drop(file);
    if result.is_err() {
        // Best effort: a leftover temp file is harmless, and removed at the next cleanup.
        if fs::remove_file(temp).is_ok() {
            record!(Removed(temp));
        }
        return result;
    }
    sync_dir(dir, fps)
}

/// Creates a new temp file for an atomic write of `name` into `dir`, with `mode` (Unix
/// permission bits) if given, and returns it with its path.
///
/// The file is opened with `O_CREAT | O_EXCL | O_NOFOLLOW`: it is always a new file, never one
/// that exists under the name and never the target of a symbolic link, so a neighbour with
/// write access to `dir` cannot have the bytes written elsewhere (a link to another file) or
/// read by someone else (a file it opened beforehand). A symbolic link at the name is an
/// error; a regular file there (a crash leftover of a process with the same pid) is stepped
/// over, to the next name, at most [`TEMP_ATTEMPTS`] times. The mode is set at creation and
/// again on the open file (the umask may have narrowed it), before any byte is written.
fn create_temp(dir: &Path, name: &OsStr, mode: Option<u32>) -> Result<(File, PathBuf), FsError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut taken = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = temp_path(dir, name, TEMP_COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut options = OpenOptions::new();
        options
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW);
        if let Some(mode) = mode {
            options.mode(mode);
        }
        match options.open(&temp) {
            Ok(file) => {
                record!(Created(&temp));
                if let Some(mode) = mode {
                    file.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(FsError::io("set permissions of", &temp))?;
                }
                return Ok((file, temp));
            }
            Err(err)
                if err.kind() == io::ErrorKind::AlreadyExists
                    || err.raw_os_error() == Some(libc::ELOOP) =>
            {
                let link = fs::symlink_metadata(&temp).is_ok_and(|m| m.file_type().is_symlink());
                if link {
                    return Err(FsError::io("create", &temp)(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a symbolic link is in the place of the temp file; it is never followed",
                    )));
                }
                taken = Some(FsError::io("create", &temp)(err));
            }
            Err(err) => return Err(FsError::io("create", &temp)(err)),
        }
    }
    Err(taken.unwrap_or_else(|| {
        FsError::io("create", dir)(io::Error::other("no temp file name was tried"))
    }))
}

/// Cuts `path` to `len` bytes; the new length is durable when it returns.
///
/// Failpoint: `truncate` (nothing cut).
pub fn truncate(path: &Path, len: u64, fps: Failpoints) -> Result<(), FsError> {
    check(fps.truncate, "truncate", path)?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(FsError::io("open", path))?;
    file.set_len(len).map_err(FsError::io("truncate", path))?;
    file.sync_all().map_err(FsError::io("fsync", path))?;
    record!(SyncedFile(path));
    Ok(())
}

/// Removes the files `names` from `dir`; the removals are durable when it returns. Names that
/// are already gone are not an error.
///
/// Failpoint: `remove` (nothing removed).
pub fn remove_files(dir: &Path, names: &[String], fps: Failpoints) -> Result<(), FsError> {
    remove(dir, names, fps, |path| fs::remove_file(path))
}

/// Removes the directories `names` from `dir`, each with everything in it; the removals are
/// durable when it returns. Names that are already gone are not an error.
///
/// Failpoint: `remove` (nothing removed).
pub fn remove_dirs(dir: &Path, names: &[String], fps: Failpoints) -> Result<(), FsError> {
    remove(dir, names, fps, |path| fs::remove_dir_all(path))
}

fn remove(
    dir: &Path,
    names: &[String],
    fps: Failpoints,
    remove_one: fn(&Path) -> io::Result<()>,
) -> Result<(), FsError> {
    if names.is_empty() {
        return Ok(());
    }
    check(fps.remove, "remove", dir)?;
    for name in names {
        let path = dir.join(name);
        match remove_one(&path) {
            Ok(()) => record!(Removed(&path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(FsError::io("remove", &path)(err)),
        }
    }
    sync_dir_plain(dir)
}

/// Removes the temp files of [`write_atomic`] that a crash left in `dir` (regular files whose
/// name starts with [`TEMP_PREFIX`]); returns how many. An absent directory has none.
///
/// Call it only while no [`write_atomic`] into `dir` is under way: it would remove that
/// write's temp file, and the write would fail.
///
/// Failpoint: `remove` (nothing removed).
pub fn remove_temp_files(dir: &Path, fps: Failpoints) -> Result<usize, FsError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(FsError::io("list", dir)(err)),
    };
    let mut temps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(FsError::io("list", dir))?;
        let is_file = entry
            .file_type()
            .map_err(FsError::io("list", dir))?
            .is_file();
        if let (true, Some(name)) = (is_file, entry.file_name().to_str())
            && name.starts_with(TEMP_PREFIX)
        {
            temps.push(name.to_owned());
        }
    }
    temps.sort();
    remove_files(dir, &temps, fps)?;
    Ok(temps.len())
}

#[cfg(test)]
mod tests;
