//! [`Storage`]: where durable bytes live (a local directory or an opendal operator under a
//! prefix), and [`StorageError`], what can go wrong there.
//!
//! A local directory's writes go through [`durable`](super::durable), whose
//! [`FsError`] converts into a [`StorageError`] with the same operation, path and message.

use std::fmt;
use std::path::{Path, PathBuf};

use opendal::Operator;

use super::durable::FsError;
use super::in_flight_io;

/// A place to keep durable data: a local directory or an opendal operator with a path prefix.
#[derive(Clone)]
pub enum Storage {
    /// A directory on the local filesystem, used with `std::fs` so that weir can fsync both
    /// files and directories.
    Local(PathBuf),
    /// An opendal operator and a path prefix inside it (empty, or ending in `/`).
    Object {
        /// The operator, e.g. for S3 or the in-memory service.
        op: Operator,
        /// The prefix every name is placed under.
        prefix: String,
    },
}

impl Storage {
    /// A local directory. It is created (with its parents) when a component opens it.
    pub fn local(dir: impl Into<PathBuf>) -> Self {
        Storage::Local(dir.into())
    }

    /// A fresh opendal in-memory store, for tests and demos. Its contents die with the process.
    pub fn memory() -> Self {
        let op = Operator::new(opendal::services::Memory::default()).unwrap_or_else(|err| {
            // The memory service has no configuration that can fail to build.
            unreachable!("opendal memory service failed to build: {err}")
        });
        Storage::object(op)
    }

    /// Any opendal operator, used in object-store mode (whole-object writes only).
    pub fn object(op: Operator) -> Self {
        Storage::Object {
            op,
            prefix: String::new(),
        }
    }

    /// The storage for the sub-directory `child` (e.g. `"wal"`, `"checkpoints"`).
    pub fn join(&self, child: &str) -> Self {
        let child = child.trim_matches('/');
        match self {
            Storage::Local(dir) => Storage::Local(dir.join(child)),
            Storage::Object { op, prefix } => Storage::Object {
                op: op.clone(),
                prefix: format!("{prefix}{child}/"),
            },
        }
    }

    /// The local directory, if this is local storage.
    pub fn local_dir(&self) -> Option<&Path> {
        match self {
            Storage::Local(dir) => Some(dir),
            Storage::Object { .. } => None,
        }
    }

    /// A short human-readable description: the directory, or `scheme://prefix`.
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(dir) => dir.display().to_string(),
            Storage::Object { op, prefix } => {
                let info = op.info();
                let scheme = info.scheme().to_string();
                // An S3 operator's name is its bucket: `s3://bucket/prefix`, as users write it.
                if scheme == "s3" && !info.name().is_empty() {
                    format!("s3://{}/{prefix}", info.name())
                } else {
                    format!("{scheme}://{prefix}")
                }
            }
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// An I/O failure of the underlying storage, with the operation and the path it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A local filesystem call failed.
    #[error("{op} `{}` failed: {source}", path.display())]
    Io {
        /// What weir was doing: `"write"`, `"fsync"`, `"rename"`, ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An opendal call failed.
    #[error("{op} `{path}` failed: {source}")]
    Object {
        /// What weir was doing: `"write"`, `"read"`, `"list"`, ...
        op: &'static str,
        /// The object path.
        path: String,
        /// opendal's error (boxed: it is large, and errors travel in every `Result`).
        #[source]
        source: Box<opendal::Error>,
    },
    /// A failpoint fired (only with the `failpoints` feature, in tests).
    #[error("{op} `{path}` failed: injected by failpoint `{failpoint}`")]
    Injected {
        /// What weir was doing.
        op: &'static str,
        /// The file or object.
        path: String,
        /// The failpoint's name.
        failpoint: &'static str,
    },
    /// A blocking storage task could not complete (the runtime is shutting down).
    #[error("storage task for `{path}` did not complete: {reason}")]
    Task {
        /// The file or object.
        path: String,
        /// Why the task ended.
        reason: String,
    },
}

impl StorageError {
    /// The operation that failed: `"write"`, `"fsync"`, `"rename"`, `"read"`, ...
    pub fn operation(&self) -> &'static str {
        match self {
            StorageError::Io { op, .. }
            | StorageError::Object { op, .. }
            | StorageError::Injected { op, .. } => op,
            StorageError::Task { .. } => "task",
        }
    }

    /// Whether the error means "the file or object does not exist".
    pub fn is_not_found(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            StorageError::Object { source, .. } => source.kind() == opendal::ErrorKind::NotFound,
            StorageError::Injected { .. } | StorageError::Task { .. } => false,
        }
    }

    /// Whether the error means "a write-once name is already taken".
    pub fn is_already_exists(&self) -> bool {
        match self {
            StorageError::Io { source, .. } => source.kind() == std::io::ErrorKind::AlreadyExists,
            StorageError::Object { source, .. } => {
                source.kind() == opendal::ErrorKind::ConditionNotMatch
                    || source.kind() == opendal::ErrorKind::AlreadyExists
            }
            StorageError::Injected { .. } | StorageError::Task { .. } => false,
        }
    }
}

impl From<FsError> for StorageError {
    fn from(err: FsError) -> Self {
        match err {
            FsError::Io { op, path, source } => StorageError::Io { op, path, source },
            FsError::Injected {
                op,
                path,
                failpoint,
            } => StorageError::Injected {
                op,
                path: path.display().to_string(),
                failpoint,
            },
        }
    }
}

/// Runs blocking filesystem work on `path` (a file, or the directory it works in) off the async
/// executor.
///
/// The work counts as in flight ([`in_flight_io`]) until the closure returns, on its thread:
/// dropping the returned future does not stop a closure that started, and whoever hands the
/// directory on waits for it ([`in_flight_io::settle`]).
pub(crate) async fn blocking<T, F>(path: &Path, f: F) -> Result<T, StorageError>
where
    F: FnOnce() -> Result<T, StorageError> + Send + 'static,
    T: Send + 'static,
{
    let guard = in_flight_io::begin(path);
    let work = move || {
        let _guard = guard;
        f()
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(StorageError::Task {
            path: path.display().to_string(),
            reason: join.to_string(),
        }),
    }
}
