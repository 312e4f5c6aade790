//! The exactly-once batch sink on object storage (S3, or any opendal operator): every batch
//! with output becomes the objects `<prefix><name>-<batch_time_ms>/part-NNNNN` and, last, the
//! commit marker `<prefix><name>-<batch_time_ms>/_COMMITTED` — the format of the
//! [batch-directory sink](super::batch_dir)'s marker, naming the batch and each part's length
//! and CRC32C.
//!
//! # How a batch is committed
//!
//! An object store has no rename, so the marker is the commit: the parts are written under
//! their final names (each `PutObject` is atomic), then the marker is written *only if no
//! object has its name* (`If-None-Match: *`). A batch is committed exactly when its marker
//! exists, decodes, names the batch, and every part it lists is there with its length and
//! CRC32C; readers take a batch only then ([`BatchObjectSink::committed`]) — parts without a
//! marker are an attempt in progress or one a crash cut short.
//!
//! A batch found committed is skipped (a replay after a crash, a retry after a failure). A
//! crashed attempt's parts are overwritten by the next attempt of the batch (which re-runs from
//! the same planned input: the same bytes) before it writes the marker. If the marker's name
//! is taken when this attempt writes it, the batch counts as committed only if that marker
//! matches the parts; anything else under the batch's name — a marker that is damaged,
//! another batch's, or does not match the parts — is [`SinkError::Foreign`], naming the object:
//! never taken for the commit, never replaced. Like the directory sink, one running
//! application writes under a prefix.
//!
//! What a crash leaves behind: part objects without a marker, overwritten when the batch is
//! run again.

use std::fmt::Display;
use std::path::PathBuf;

use opendal::{ErrorKind, Operator};
use weir_actors::{Storage, StorageError};

use super::batch_dir::marker::{Entry, MAX_MARKER_BYTES, Marker, part_name};
use super::batch_dir::{Commit, CommittedBatch, MARKER_FILE, PartFile, SinkError};

/// Writes batches as `<name>-<batch_time_ms>/part-NNNNN` objects committed by a marker; see
/// the [module documentation](self).
#[derive(Clone, Debug)]
pub struct BatchObjectSink {
    op: Operator,
    /// The storage's prefix followed by the name: batch `t` is under `<base>-<t>/`.
    base: String,
    /// `scheme://` + base, for messages.
    shown: String,
    sort_lines: bool,
}

fn storage_err(op: &'static str, path: &str) -> impl FnOnce(opendal::Error) -> SinkError {
    let path = path.to_owned();
    move |source| {
        SinkError::Storage(StorageError::Object {
            op,
            path,
            source: Box::new(source),
        })
    }
}

impl BatchObjectSink {
    /// A sink writing `<name>-<batch_time_ms>/` under `storage` (object storage). Sorts the
    /// lines of each part.
    ///
    /// # Errors
    ///
    /// [`SinkError::BadPrefix`] if `storage` is a local directory (use
    /// [`BatchDirSink`](super::batch_dir::BatchDirSink) there) or `name` is empty or holds a
    /// `/`.
    pub fn new(storage: &Storage, name: &str) -> Result<Self, SinkError> {
        let Storage::Object { op, prefix } = storage else {
            return Err(SinkError::BadPrefix(PathBuf::from(storage.describe())));
        };
        if name.is_empty() || name.contains('/') {
            return Err(SinkError::BadPrefix(PathBuf::from(name)));
        }
        let base = format!("{prefix}{name}");
        Ok(BatchObjectSink {
            op: op.clone(),
            shown: storage
                .join(name)
                .describe()
                .trim_end_matches('/')
                .to_owned(),
            base,
            sort_lines: true,
        })
    }

    /// Whether each part's lines are sorted (the default) or kept in partition order.
    #[must_use]
    pub fn sort_lines(mut self, sort: bool) -> Self {
        self.sort_lines = sort;
        self
    }

    /// The key prefix of batch `time_ms`'s objects (`…/<name>-<time_ms>/`).
    pub fn batch_prefix(&self, time_ms: u64) -> String {
        format!("{}-{time_ms}/", self.base)
    }

    /// Batch `time_ms` as committed, its marker checked against its parts; `None` if it has
    /// no marker.
    ///
    /// # Errors
    ///
    /// [`SinkError::Foreign`]: a marker that is damaged, another batch's, or does not match
    /// the parts; [`SinkError::Storage`]: the store failed.
    pub async fn committed(&self, time_ms: u64) -> Result<Option<CommittedBatch>, SinkError> {
        let dir = self.batch_prefix(time_ms);
        let marker_path = format!("{dir}{MARKER_FILE}");
        let foreign = |reason: String| SinkError::Foreign {
            path: PathBuf::from(format!("{}-{time_ms}/{MARKER_FILE}", self.shown)),
            batch_time_ms: time_ms,
            reason,
        };
        let bytes = match self.op.read(&marker_path).await {
            Ok(bytes) => bytes.to_vec(),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(storage_err("read", &marker_path)(e)),
        };
        let marker = if bytes.len() as u64 > MAX_MARKER_BYTES {
            Err(format!("over {MAX_MARKER_BYTES} bytes long"))
        } else {
            Marker::decode(&bytes)
        }
        .map_err(|reason| foreign(format!("the commit marker is damaged: {reason}")))?;
        if marker.batch_time_ms != time_ms {
            return Err(foreign(format!(
                "the commit marker is batch {}'s",
                marker.batch_time_ms
            )));
        }
        let mut parts = Vec::with_capacity(marker.parts.len());
        for entry in &marker.parts {
            let name = part_name(entry.partition);
            let path = format!("{dir}{name}");
            let part = match self.op.read(&path).await {
                Ok(part) => part.to_vec(),
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    return Err(foreign(format!("its part {name} is missing")));
                }
                Err(e) => return Err(storage_err("read", &path)(e)),
            };
            if part.len() as u64 != entry.len || crc32c::crc32c(&part) != entry.crc32c {
                return Err(foreign(format!(
                    "its part {name} is not the one the marker lists ({} bytes, listed {})",
                    part.len(),
                    entry.len
                )));
            }
            parts.push(PartFile {
                name,
                len: entry.len,
                crc32c: entry.crc32c,
            });
        }
        Ok(Some(CommittedBatch {
            dir: PathBuf::from(format!("{}-{time_ms}", self.shown)),
            parts,
        }))
    }

    /// Writes and commits batch `time_ms`, one part per item of `partitions` — or nothing, if
    /// it was committed before or has no elements.
    ///
    /// # Errors
    ///
    /// A write failed (after the storage's retries): nothing is committed, and a retry writes
    /// the batch again. Something other than the batch's commit is under its name
    /// ([`SinkError::Foreign`]).
    pub async fn write_batch<T: Display>(
        &self,
        time_ms: u64,
        partitions: &[&[T]],
    ) -> Result<Commit, SinkError> {
        if partitions.iter().all(|p| p.is_empty()) {
            return Ok(Commit::Empty);
        }
        if let Some(done) = self.committed(time_ms).await? {
            return Ok(Commit::AlreadyCommitted(done.dir));
        }
        let dir = self.batch_prefix(time_ms);
        let mut entries = Vec::with_capacity(partitions.len());
        for (partition, lines) in partitions.iter().enumerate() {
            let bytes = self.part_bytes(lines);
            let partition = partition as u64;
            entries.push(Entry {
                partition,
                len: bytes.len() as u64,
                crc32c: crc32c::crc32c(&bytes),
            });
            let path = format!("{dir}{}", part_name(partition));
            self.op
                .write(&path, bytes)
                .await
                .map_err(storage_err("write", &path))?;
        }
        let marker = Marker {
            batch_time_ms: time_ms,
            parts: entries,
        }
        .encode();
        let marker_path = format!("{dir}{MARKER_FILE}");
        match self
            .op
            .write_with(&marker_path, marker)
            .if_not_exists(true)
            .await
        {
            Ok(_) => Ok(Commit::Written {
                dir: PathBuf::from(format!("{}-{time_ms}", self.shown)),
                parts: partitions.len(),
            }),
            // Taken: by this write's own earlier attempt (its answer lost), or by another
            // attempt of the batch. Committed only if that marker matches the parts.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConditionNotMatch | ErrorKind::AlreadyExists
                ) =>
            {
                match self.committed(time_ms).await? {
                    Some(done) => Ok(Commit::AlreadyCommitted(done.dir)),
                    None => Err(storage_err("write", &marker_path)(e)),
                }
            }
            Err(e) => Err(storage_err("write", &marker_path)(e)),
        }
    }

    /// A part's bytes: one line per element (`Display`), sorted unless told otherwise.
    fn part_bytes<T: Display>(&self, lines: &[T]) -> Vec<u8> {
        let mut text: Vec<String> = lines.iter().map(ToString::to_string).collect();
        if self.sort_lines {
            text.sort_unstable();
        }
        let mut out = Vec::with_capacity(text.iter().map(|l| l.len() + 1).sum());
        for line in text {
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (Storage, BatchObjectSink) {
        let storage = Storage::memory().join("out");
        let sink = BatchObjectSink::new(&storage, "batch").unwrap();
        (storage, sink)
    }

    fn op(storage: &Storage) -> Operator {
        match storage {
            Storage::Object { op, .. } => op.clone(),
            Storage::Local(_) => unreachable!("memory storage is object storage"),
        }
    }

    #[tokio::test]
    async fn a_batch_is_its_parts_and_then_its_marker_and_a_replay_is_skipped() {
        let (storage, sink) = sink();
        let parts: Vec<Vec<String>> = vec![vec!["b\t2".into(), "a\t1".into()], vec![]];
        let refs: Vec<&[String]> = parts.iter().map(Vec::as_slice).collect();
        let commit = sink.write_batch(1000, &refs).await.unwrap();
        assert!(
            matches!(commit, Commit::Written { parts: 2, .. }),
            "{commit:?}"
        );
        let op = op(&storage);
        assert_eq!(
            op.read("out/batch-1000/part-00000").await.unwrap().to_vec(),
            b"a\t1\nb\t2\n"
        );
        assert!(op.exists("out/batch-1000/_COMMITTED").await.unwrap());
        let again = sink.write_batch(1000, &refs).await.unwrap();
        assert!(matches!(again, Commit::AlreadyCommitted(_)), "{again:?}");
        let committed = sink.committed(1000).await.unwrap().unwrap();
        let lens: Vec<(&str, u64)> = committed
            .parts
            .iter()
            .map(|p| (p.name.as_str(), p.len))
            .collect();
        assert_eq!(lens, [("part-00000", 8), ("part-00001", 0)]);
        let none: Vec<&[String]> = vec![&[], &[]];
        assert_eq!(sink.write_batch(2000, &none).await.unwrap(), Commit::Empty);
        assert!(sink.committed(2000).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn parts_left_by_a_crash_are_not_a_commit_and_are_replaced_by_the_rerun() {
        let (storage, sink) = sink();
        let op = op(&storage);
        // What a crash between the parts and the marker leaves: a part, no marker.
        op.write("out/batch-1000/part-00000", b"half".to_vec())
            .await
            .unwrap();
        assert!(sink.committed(1000).await.unwrap().is_none());
        let lines = ["x".to_owned()];
        let commit = sink.write_batch(1000, &[&lines[..]]).await.unwrap();
        assert!(matches!(commit, Commit::Written { .. }));
        assert_eq!(
            op.read("out/batch-1000/part-00000").await.unwrap().to_vec(),
            b"x\n"
        );
    }

    #[tokio::test]
    async fn a_marker_that_does_not_match_is_foreign_and_untouched() {
        let (storage, sink) = sink();
        let op = op(&storage);
        let lines = ["x".to_owned()];
        sink.write_batch(1000, &[&lines[..]]).await.unwrap();
        // Someone changes a committed part: the marker no longer matches.
        op.write("out/batch-1000/part-00000", b"y\n".to_vec())
            .await
            .unwrap();
        let err = sink.write_batch(1000, &[&lines[..]]).await.unwrap_err();
        assert!(matches!(err, SinkError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("batch-1000/_COMMITTED"), "{err}");
        // A damaged marker, and another batch's marker.
        op.write("out/batch-2000/_COMMITTED", b"junk".to_vec())
            .await
            .unwrap();
        let err = sink.committed(2000).await.unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        let other = op.read("out/batch-1000/_COMMITTED").await.unwrap();
        op.write("out/batch-3000/_COMMITTED", other).await.unwrap();
        let err = sink.committed(3000).await.unwrap_err();
        assert!(err.to_string().contains("batch 1000's"), "{err}");
        // Nothing was replaced.
        assert_eq!(
            op.read("out/batch-1000/part-00000").await.unwrap().to_vec(),
            b"y\n"
        );
    }

    #[test]
    fn a_local_directory_or_a_bad_name_is_refused() {
        let local = Storage::local("/tmp/weir-out");
        assert!(matches!(
            BatchObjectSink::new(&local, "batch"),
            Err(SinkError::BadPrefix(_))
        ));
        let memory = Storage::memory();
        assert!(BatchObjectSink::new(&memory, "").is_err());
        assert!(BatchObjectSink::new(&memory, "a/b").is_err());
    }
}
