//! Whole-object operations on an opendal operator (object-store mode).
//!
//! Only operations every object store offers are used: write a whole object (optionally only if
//! the name is free), read, read a range, list a prefix, delete. A completed write is durable;
//! an object write is atomic (readers see all of it or none of it) on S3, GCS, Azure and the
//! memory service, and on opendal's `fs` service when it is given an `atomic_write_dir`.
//!
//! A write-once object that is found already there with exactly the bytes being written counts
//! as written: that is what a retried request looks like when its first attempt landed and
//! only the answer was lost (see [`ObjectDir::write_once`]).

use opendal::{Buffer, Operator};

use super::failpoint::{Failpoints, fired};
use super::location::StorageError;

/// The part size of [`ObjectDir::write_once_pieces`]' multipart uploads (S3 takes parts of
/// 5 MiB to 5 GiB but for the last).
pub(crate) const WRITE_CHUNK: usize = 8 << 20;

/// A "directory" inside an operator: every name is placed under `prefix`.
#[derive(Clone, Debug)]
pub(crate) struct ObjectDir {
    op: Operator,
    prefix: String,
}

fn obj_err(op: &'static str, path: &str) -> impl FnOnce(opendal::Error) -> StorageError {
    let path = path.to_owned();
    move |source| StorageError::Object {
        op,
        path,
        source: Box::new(source),
    }
}

/// The `close` failpoint of an object write of `path`, if it fires.
fn injected_close(fps: Failpoints, path: &str) -> Result<(), StorageError> {
    match fired(fps.close) {
        Some(failpoint) => Err(StorageError::Injected {
            op: "write",
            path: path.to_owned(),
            failpoint,
        }),
        None => Ok(()),
    }
}

impl ObjectDir {
    pub(crate) fn new(op: Operator, prefix: String) -> Self {
        ObjectDir { op, prefix }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The names (relative to the prefix) of the objects directly under the prefix, sorted.
    pub(crate) async fn list(&self) -> Result<Vec<String>, StorageError> {
        let dir = if self.prefix.is_empty() {
            "/"
        } else {
            self.prefix.as_str()
        };
        let entries = match self.op.list(dir).await {
            Ok(entries) => entries,
            Err(err) if err.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(obj_err("list", dir)(err)),
        };
        let mut names: Vec<String> = entries
            .into_iter()
            .filter(|e| e.metadata().is_file())
            .filter_map(|e| {
                let path = e.path();
                let rel = path.strip_prefix(&self.prefix).unwrap_or(path);
                (!rel.is_empty() && !rel.contains('/')).then(|| rel.to_owned())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    pub(crate) async fn read(&self, name: &str) -> Result<Buffer, StorageError> {
        let path = self.path(name);
        self.op.read(&path).await.map_err(obj_err("read", &path))
    }

    pub(crate) async fn read_range(
        &self,
        name: &str,
        offset: u64,
        len: u64,
    ) -> Result<Buffer, StorageError> {
        let path = self.path(name);
        self.op
            .read_with(&path)
            .range(offset..offset + len)
            .await
            .map_err(obj_err("read", &path))
    }

    /// Writes `name` only if no object has that name yet. Returns once the object is durable.
    pub(crate) async fn write_once(
        &self,
        name: &str,
        bytes: Buffer,
        fps: Failpoints,
    ) -> Result<(), StorageError> {
        let path = self.path(name);
        injected_close(fps, &path)?;
        match self
            .op
            .write_with(&path, bytes.clone())
            .if_not_exists(true)
            .await
        {
            Ok(_) => Ok(()),
            Err(err)
                if matches!(
                    err.kind(),
                    opendal::ErrorKind::ConditionNotMatch | opendal::ErrorKind::AlreadyExists
                ) =>
            {
                // A real conflict looks like this, and so does a retried write whose first
                // attempt landed but whose answer was lost (the retry finds the name taken
                // — by itself). The object's bytes tell them apart: the same bytes mean the
                // write happened, exactly once.
                match self.op.read(&path).await {
                    Ok(existing) if existing.to_bytes() == bytes.to_bytes() => {
                        tracing::debug!(path = %path,
                            "a write-once object is already there with the same bytes: \
                             an earlier attempt of this write landed");
                        Ok(())
                    }
                    _ => Err(obj_err("write", &path)(err)),
                }
            }
            Err(err) => Err(obj_err("write", &path)(err)),
        }
    }

    /// [`write_once`](Self::write_once) of an object of `len` bytes read in pieces: `piece(at)`
    /// gives the bytes from `at` on (at least one, at most what is left), so a large object
    /// is never in memory whole. Written as a multipart upload of [`WRITE_CHUNK`] parts, made
    /// visible at once by its completion, which carries the `If-None-Match: *` condition. A
    /// failed write is resolved as `write_once` resolves a conflict: if the object there holds
    /// exactly these bytes (compared piece by piece), an earlier attempt landed.
    pub(crate) async fn write_once_pieces<F, Fut>(
        &self,
        name: &str,
        len: u64,
        fps: Failpoints,
        mut piece: F,
    ) -> Result<(), StorageError>
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = Result<Buffer, StorageError>>,
    {
        let path = self.path(name);
        injected_close(fps, &path)?;
        let written = async {
            let mut writer = self
                .op
                .writer_with(&path)
                .if_not_exists(true)
                .chunk(WRITE_CHUNK)
                .await?;
            let mut at = 0;
            while at < len {
                let bytes = match piece(at).await {
                    Ok(bytes) if !bytes.is_empty() => bytes,
                    Ok(_) => {
                        return Ok(Err(StorageError::Task {
                            path: path.clone(),
                            reason: format!("the bytes to write ended at {at} of {len}"),
                        }));
                    }
                    Err(err) => return Ok(Err(err)),
                };
                at += bytes.len() as u64;
                if let Err(err) = writer.write(bytes).await {
                    let _ = writer.abort().await;
                    return Err(err);
                }
            }
            writer.close().await.map(|_| Ok(()))
        };
        match written.await {
            Ok(result) => result,
            // As in `write_once`, the same bytes there mean an earlier attempt landed: a
            // retried completion after a lost answer is refused (`If-None-Match`), or finds its
            // upload gone (S3 answers `NoSuchUpload` once an upload is complete). Anything
            // else, or other bytes there, is the error it is.
            Err(err) => {
                if self.holds_pieces(&path, len, piece).await {
                    tracing::debug!(path = %path, error = %err,
                        "a write-once object is already there with the same bytes: an \
                         earlier attempt of this write landed");
                    Ok(())
                } else {
                    Err(obj_err("write", &path)(err))
                }
            }
        }
    }

    /// Whether the object at `path` is `len` bytes equal to `piece`'s.
    async fn holds_pieces<F, Fut>(&self, path: &str, len: u64, mut piece: F) -> bool
    where
        F: FnMut(u64) -> Fut,
        Fut: std::future::Future<Output = Result<Buffer, StorageError>>,
    {
        match self.op.stat(path).await {
            Ok(meta) if meta.content_length() == len => {}
            _ => return false,
        }
        let mut at = 0;
        while at < len {
            let Ok(ours) = piece(at).await else {
                return false;
            };
            let n = ours.len() as u64;
            if n == 0 {
                return false;
            }
            match self.op.read_with(path).range(at..at + n).await {
                Ok(theirs) if theirs.to_bytes() == ours.to_bytes() => at += n,
                _ => return false,
            }
        }
        true
    }

    /// Writes `name`, replacing any object of that name in one atomic put.
    pub(crate) async fn overwrite(&self, name: &str, bytes: Buffer) -> Result<(), StorageError> {
        let path = self.path(name);
        self.op
            .write(&path, bytes)
            .await
            .map(|_| ())
            .map_err(obj_err("write", &path))
    }

    /// Deletes `name`; an absent object is not an error.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), StorageError> {
        let path = self.path(name);
        self.op
            .delete(&path)
            .await
            .map_err(obj_err("delete", &path))
    }
}
