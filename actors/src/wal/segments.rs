//! Where segments live: one appended file per segment locally, or write-once chunk objects.
//!
//! Both layouts present a segment as one logical byte string (header, then frames), so the
//! recovery scan, handles and offsets are the same in both:
//!
//! * **Local** (`Storage::Local`): `<dir>/<id:020>.wal`. A group commit is one positional
//!   write at the end of the file followed by `fdatasync`. Creating a segment writes its header,
//!   fsyncs the file and then the directory, so the new name survives a power cut. The writer
//!   does these inline on its own thread, which counts as storage work in flight
//!   (`storage::in_flight_io`) for its whole life, so a stopping engine waits for it.
//! * **Object** (`Storage::Object`): `<prefix><id:020>-<start:020>.walc`, one object per group
//!   commit, written with `if_not_exists`; `start` is the chunk's byte offset in the logical
//!   segment, so chunks tile the segment. The first chunk holds only the header. A frame never
//!   spans two chunks. Nothing is appended or renamed.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use opendal::Buffer;

use crate::storage::durable;
use crate::storage::failpoint::WAL as FP;
use crate::storage::local;
use crate::storage::location::{Storage, StorageError, blocking};
use crate::storage::object::ObjectDir;

const LOCAL_SUFFIX: &str = ".wal";
const CHUNK_SUFFIX: &str = ".walc";

/// The local file name of segment `id`.
pub(crate) fn local_name(id: u64) -> String {
    format!("{id:020}{LOCAL_SUFFIX}")
}

/// Parses a local segment file name.
pub(crate) fn parse_local_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(LOCAL_SUFFIX)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// The object name of the chunk of segment `id` that starts at byte `start`.
pub(crate) fn chunk_name(id: u64, start: u64) -> String {
    format!("{id:020}-{start:020}{CHUNK_SUFFIX}")
}

/// Parses a chunk object name into (segment id, start offset).
pub(crate) fn parse_chunk_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(CHUNK_SUFFIX)?;
    let (id, start) = stem.split_once('-')?;
    let ok = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(id) || !ok(start) {
        return None;
    }
    Some((id.parse().ok()?, start.parse().ok()?))
}

/// A segment's logical bytes as read from storage.
#[derive(Debug)]
pub(crate) struct SegmentBytes {
    /// The contiguous bytes from offset 0.
    pub(crate) bytes: Bytes,
    /// Bytes stored beyond a gap in the chunk objects (object layout only): they cannot be part
    /// of the log, and their presence is damage at `bytes.len()`.
    pub(crate) beyond_gap: u64,
}

/// The segment being appended to.
#[derive(Debug)]
pub(crate) struct ActiveFile {
    /// The open file (local layout only).
    file: Option<Arc<File>>,
}

/// The segments of one log.
#[derive(Debug)]
pub(crate) enum Segments {
    /// One file per segment in a local directory (appends are written inline by the writer's
    /// own thread), and the open `LOCK` file whose exclusive
    /// lock keeps a second writer (in this or another process) out while the log is open.
    Local(
        PathBuf,
        #[allow(dead_code, reason = "held for its Drop")] Option<local::DirLock>,
    ),
    /// Chunk objects in an opendal operator, with an index of the chunks seen.
    Object {
        dir: ObjectDir,
        /// segment id → chunk start → chunk length.
        chunks: Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    },
}

impl Segments {
    /// The directory of a local log (whose writer needs a thread of its own).
    pub(crate) fn local_dir(&self) -> Option<&std::path::Path> {
        match self {
            Segments::Local(dir, _) => Some(dir),
            Segments::Object { .. } => None,
        }
    }

    /// Opens the layout for `storage`, creating a local directory durably and locking it
    /// (waiting up to `lock_wait` for a writer of this process to release it).
    pub(crate) async fn open(storage: &Storage, lock_wait: Duration) -> Result<Self, StorageError> {
        match storage {
            Storage::Local(dir) => {
                let d = dir.clone();
                blocking(dir, move || Ok(durable::create_dir_all(&d, FP)?)).await?;
                let lock = local::lock_dir(dir, lock_wait).await?;
                Ok(Segments::Local(dir.clone(), Some(lock)))
            }
            Storage::Object { op, prefix } => Ok(Segments::Object {
                dir: ObjectDir::new(op.clone(), prefix.clone()),
                chunks: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// Opens the layout for reading only: nothing is created and no lock is taken, so a live
    /// writer is not disturbed (for inspection tools).
    pub(crate) fn open_read_only(storage: &Storage) -> Self {
        match storage {
            Storage::Local(dir) => Segments::Local(dir.clone(), None),
            Storage::Object { op, prefix } => Segments::Object {
                dir: ObjectDir::new(op.clone(), prefix.clone()),
                chunks: Mutex::new(BTreeMap::new()),
            },
        }
    }

    fn chunk_index(
        chunks: &Mutex<BTreeMap<u64, BTreeMap<u64, u64>>>,
    ) -> std::sync::MutexGuard<'_, BTreeMap<u64, BTreeMap<u64, u64>>> {
        chunks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The ids of the segments present, ascending. In the object layout this also (re)builds
    /// the chunk index.
    pub(crate) async fn list(&self) -> Result<Vec<u64>, StorageError> {
        match self {
            Segments::Local(dir, _) => {
                let d = dir.clone();
                let names = blocking(dir, move || local::list_files(&d)).await?;
                let mut ids: Vec<u64> = names.iter().filter_map(|n| parse_local_name(n)).collect();
                ids.sort_unstable();
                Ok(ids)
            }
            Segments::Object { dir, chunks } => {
                let mut index: BTreeMap<u64, BTreeMap<u64, u64>> = BTreeMap::new();
                for name in dir.list().await? {
                    if let Some((id, start)) = parse_chunk_name(&name) {
                        // The length is filled in when the segment is read.
                        index.entry(id).or_default().insert(start, 0);
                    }
                }
                let ids = index.keys().copied().collect();
                *Self::chunk_index(chunks) = index;
                Ok(ids)
            }
        }
    }

    /// Creates segment `id` holding `header`, durably.
    ///
    /// For a local log this blocks the calling thread on file I/O: only the writer calls it,
    /// and for local logs the writer runs on a thread of its own. The same holds for
    /// [`Segments::append`] and [`Segments::cut_back`].
    pub(crate) async fn create(&self, id: u64, header: &[u8]) -> Result<ActiveFile, StorageError> {
        match self {
            Segments::Local(dir, _) => {
                // Inline: only the writer calls this, on its own thread (see writer.rs).
                let file = durable::create_new(&dir.join(local_name(id)), header, FP)?;
                Ok(ActiveFile {
                    file: Some(Arc::new(file)),
                })
            }
            Segments::Object { dir, chunks } => {
                let name = chunk_name(id, 0);
                dir.write_once(&name, Buffer::from(header.to_vec()), FP)
                    .await?;
                Self::chunk_index(chunks)
                    .entry(id)
                    .or_default()
                    .insert(0, header.len() as u64);
                Ok(ActiveFile { file: None })
            }
        }
    }

    /// Writes `data` at `offset` of the active segment `id` and makes it durable.
    pub(crate) async fn append(
        &self,
        id: u64,
        active: &ActiveFile,
        offset: u64,
        data: Bytes,
    ) -> Result<(), StorageError> {
        match (self, &active.file) {
            (Segments::Local(dir, _), Some(file)) => {
                // Inline: only the writer calls this, on its own thread (see writer.rs). A
                // hand-off to the blocking pool per group cost ~45 µs, a fifth of an fsync.
                let path = dir.join(local_name(id));
                durable::write_all_at(file, &path, offset, &data, FP)?;
                Ok(durable::sync_data(file, &path, FP)?)
            }
            (Segments::Object { dir, chunks }, _) => {
                let len = data.len() as u64;
                dir.write_once(&chunk_name(id, offset), Buffer::from(data), FP)
                    .await?;
                Self::chunk_index(chunks)
                    .entry(id)
                    .or_default()
                    .insert(offset, len);
                Ok(())
            }
            (Segments::Local(dir, _), None) => Err(StorageError::Task {
                path: dir.join(local_name(id)).display().to_string(),
                reason: "segment is not open for appending".to_owned(),
            }),
        }
    }

    /// Reads all of segment `id`'s bytes.
    pub(crate) async fn read_all(&self, id: u64) -> Result<SegmentBytes, StorageError> {
        match self {
            Segments::Local(dir, _) => {
                let path = dir.join(local_name(id));
                let bytes = blocking(dir, move || local::read_file(&path)).await?;
                Ok(SegmentBytes {
                    bytes: Bytes::from(bytes),
                    beyond_gap: 0,
                })
            }
            Segments::Object { dir, chunks } => {
                let starts: Vec<u64> = Self::chunk_index(chunks)
                    .get(&id)
                    .map(|c| c.keys().copied().collect())
                    .unwrap_or_default();
                let mut bytes = Vec::new();
                let mut beyond_gap = 0;
                let mut lens = BTreeMap::new();
                for start in starts {
                    let chunk = dir.read(&chunk_name(id, start)).await?.to_bytes();
                    lens.insert(start, chunk.len() as u64);
                    if start == bytes.len() as u64 && beyond_gap == 0 {
                        bytes.extend_from_slice(&chunk);
                    } else {
                        beyond_gap += chunk.len() as u64;
                    }
                }
                Self::chunk_index(chunks).insert(id, lens);
                Ok(SegmentBytes {
                    bytes: Bytes::from(bytes),
                    beyond_gap,
                })
            }
        }
    }

    /// Reads bytes `start..end` of segment `id`.
    pub(crate) async fn read_span(
        &self,
        id: u64,
        start: u64,
        end: u64,
    ) -> Result<Bytes, StorageError> {
        match self {
            Segments::Local(dir, _) => {
                let path = dir.join(local_name(id));
                let len = (end - start) as usize;
                let bytes = blocking(dir, move || local::read_range(&path, start, len)).await?;
                Ok(Bytes::from(bytes))
            }
            Segments::Object { dir, chunks } => {
                let overlapping: Vec<(u64, u64)> = Self::chunk_index(chunks)
                    .get(&id)
                    .map(|c| {
                        c.iter()
                            .filter(|(s, l)| **s < end && **s + **l > start)
                            .map(|(s, l)| (*s, *l))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut out = Vec::with_capacity((end - start) as usize);
                for (chunk_start, chunk_len) in overlapping {
                    let from = start.max(chunk_start);
                    let to = end.min(chunk_start + chunk_len);
                    if from != start + out.len() as u64 {
                        break;
                    }
                    let part = dir
                        .read_range(&chunk_name(id, chunk_start), from - chunk_start, to - from)
                        .await?;
                    out.extend_from_slice(&part.to_bytes());
                }
                if out.len() as u64 != end - start {
                    return Err(StorageError::Task {
                        path: dir.path(&chunk_name(id, start)),
                        reason: format!(
                            "the chunks of segment {id} do not hold bytes {start}..{end}"
                        ),
                    });
                }
                Ok(Bytes::from(out))
            }
        }
    }

    /// Cuts segment `id` to its first `len` bytes, durably; `len == 0` removes it.
    ///
    /// In the object layout, chunks wholly beyond `len` are deleted newest first, then the chunk
    /// that straddles `len` is replaced by its prefix in one atomic put. A crash part-way leaves a
    /// prefix of the original chunks, which the next recovery cuts the same way.
    pub(crate) async fn cut(&self, id: u64, len: u64) -> Result<(), StorageError> {
        match self {
            Segments::Local(dir, _) => {
                let d = dir.clone();
                blocking(dir, move || {
                    if len == 0 {
                        Ok(durable::remove_files(&d, &[local_name(id)], FP)?)
                    } else {
                        Ok(durable::truncate(&d.join(local_name(id)), len, FP)?)
                    }
                })
                .await
            }
            Segments::Object { dir, chunks } => {
                let index: Vec<(u64, u64)> = Self::chunk_index(chunks)
                    .get(&id)
                    .map(|c| c.iter().map(|(s, l)| (*s, *l)).collect())
                    .unwrap_or_default();
                for &(start, chunk_len) in index.iter().rev() {
                    if start >= len {
                        dir.delete(&chunk_name(id, start)).await?;
                        if let Some(c) = Self::chunk_index(chunks).get_mut(&id) {
                            c.remove(&start);
                        }
                    } else if start + chunk_len > len {
                        let name = chunk_name(id, start);
                        let keep = dir.read_range(&name, 0, len - start).await?;
                        dir.overwrite(&name, keep).await?;
                        if let Some(c) = Self::chunk_index(chunks).get_mut(&id) {
                            c.insert(start, len - start);
                        }
                    }
                }
                if len == 0 {
                    Self::chunk_index(chunks).remove(&id);
                }
                Ok(())
            }
        }
    }

    /// Undoes a failed append that started at `start` of the active segment `id`: locally the
    /// file is cut back to `start`; in object mode the chunk that may have been written is
    /// deleted (an object write is all or nothing, and its name is reused by the next append).
    pub(crate) async fn cut_back(&self, id: u64, start: u64) -> Result<(), StorageError> {
        match self {
            Segments::Local(dir, _) => {
                // Inline: only the writer calls this, on its own thread (see writer.rs).
                Ok(durable::truncate(&dir.join(local_name(id)), start, FP)?)
            }
            Segments::Object { dir, chunks } => {
                dir.delete(&chunk_name(id, start)).await?;
                if let Some(c) = Self::chunk_index(chunks).get_mut(&id) {
                    c.remove(&start);
                }
                Ok(())
            }
        }
    }

    /// Deletes whole segments, durably.
    pub(crate) async fn delete(&self, ids: &[u64]) -> Result<(), StorageError> {
        match self {
            Segments::Local(dir, _) => {
                let d = dir.clone();
                let names: Vec<String> = ids.iter().map(|id| local_name(*id)).collect();
                blocking(dir, move || Ok(durable::remove_files(&d, &names, FP)?)).await
            }
            Segments::Object { .. } => {
                for &id in ids {
                    self.cut(id, 0).await?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        for id in [0, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(parse_local_name(&local_name(id)), Some(id));
            assert_eq!(
                parse_chunk_name(&chunk_name(id, id / 2)),
                Some((id, id / 2))
            );
        }
        assert!(local_name(9) < local_name(10));
        assert!(chunk_name(1, 99) < chunk_name(1, 100));
        assert_eq!(parse_local_name("00000000000000000001.wal.tmp"), None);
        assert_eq!(parse_local_name("1.wal"), None);
        assert_eq!(parse_chunk_name("00000000000000000001-x.walc"), None);
    }
}

#[cfg(test)]
mod lock_tests {
    use crate::Storage;
    use crate::wal::{Wal, WalConfig, WalError};

    #[tokio::test]
    async fn a_second_writer_on_a_local_log_is_refused_until_the_first_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::local(dir.path());
        let (first, _) = Wal::open(storage.clone(), WalConfig::default())
            .await
            .unwrap();
        let no_wait = WalConfig {
            lock_wait: std::time::Duration::ZERO,
            ..WalConfig::default()
        };
        let err = Wal::open(storage.clone(), no_wait).await.unwrap_err();
        assert!(
            matches!(&err, WalError::Storage(e) if e.operation() == "lock"),
            "unexpected error: {err}"
        );
        assert!(err.to_string().contains("another writer"), "{err}");
        first.close().await.unwrap();
        let (second, _) = Wal::open(storage, WalConfig::default()).await.unwrap();
        second.close().await.unwrap();
    }
}
