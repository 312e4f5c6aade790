//! Shared helpers for the WAL suites: the three storage modes, raw access to segment bytes
//! for damage tests, an event collector, and small read-back helpers.
//!
//! The raw helpers know the two layouts documented at the top of `actors/src/wal/segments.rs`:
//! locally a segment is the file `<dir>/<id:020>.wal`; in object modes it is the chunk
//! objects `<id:020>-<start:020>.walc` that tile its logical bytes.

// Helpers outside `#[test]` functions are test code too (clippy's `allow-unwrap-in-tests`
// only covers the test functions themselves).
#![allow(clippy::unwrap_used)]
// Each test crate uses a different subset of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use opendal::Operator;
use tempfile::TempDir;
use weir_actors::wal::{Position, Record, Wal, WalConfig};
use weir_actors::{Event, EventSink, Storage};

/// How the log is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `Storage::local`: one appended file per segment, with real fsyncs.
    Local,
    /// `Storage::memory`: opendal's in-memory service (object layout).
    Memory,
    /// `Storage::object` over opendal's `fs` service with an atomic write dir (object layout).
    ObjectFs,
    /// `Storage::s3` on moto's S3-compatible server (object layout), a fresh bucket per store.
    #[cfg(feature = "s3")]
    S3,
}

/// Every mode, for loops.
#[cfg(not(feature = "s3"))]
pub const MODES: [Mode; 3] = [Mode::Local, Mode::Memory, Mode::ObjectFs];
/// Every mode, for loops.
#[cfg(feature = "s3")]
pub const MODES: [Mode; 4] = [Mode::Local, Mode::Memory, Mode::ObjectFs, Mode::S3];

/// A fresh, empty place to keep a log in one mode, plus raw access to what is stored there.
///
/// The in-memory store lives as long as this value (the operator is kept here), so a log can
/// be dropped and reopened on it, even on another tokio runtime.
pub struct Store {
    /// The mode.
    pub mode: Mode,
    storage: Storage,
    /// The local directory (local mode) or the fs service's root (object-over-fs mode).
    root: Option<PathBuf>,
    _dir: TempDir,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} store {:?}", self.mode, self.storage)
    }
}

/// The lock file a local log holds in its directory while it is open.
const LOCK_FILE: &str = "LOCK";

fn local_name(id: u64) -> String {
    format!("{id:020}.wal")
}

fn chunk_name(id: u64, start: u64) -> String {
    format!("{id:020}-{start:020}.walc")
}

fn parse_local_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".wal")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

fn parse_chunk_name(name: &str) -> Option<(u64, u64)> {
    let (id, start) = name.strip_suffix(".walc")?.split_once('-')?;
    (id.len() == 20 && start.len() == 20).then_some((id.parse().ok()?, start.parse().ok()?))
}

/// A fresh bucket on the test process's moto server.
#[cfg(feature = "s3")]
pub fn s3_storage() -> Storage {
    weir_actors::testing::MotoServer::shared()
        .and_then(|server| server.fresh())
        .unwrap_or_else(|e| panic!("moto's S3 server: {e}"))
}

impl Store {
    /// A fresh store in `mode`.
    pub fn new(mode: Mode) -> Store {
        let dir = tempfile::tempdir().unwrap();
        let (storage, root) = match mode {
            Mode::Local => {
                let root = dir.path().join("wal");
                (Storage::local(&root), Some(root))
            }
            Mode::Memory => (Storage::memory(), None),
            Mode::ObjectFs => {
                let root = dir.path().join("objects");
                let atomic = dir.path().join("atomic");
                std::fs::create_dir_all(&root).unwrap();
                let builder = opendal::services::Fs::default()
                    .root(root.to_str().unwrap())
                    .atomic_write_dir(atomic.to_str().unwrap());
                (Storage::object(Operator::new(builder).unwrap()), Some(root))
            }
            #[cfg(feature = "s3")]
            Mode::S3 => (s3_storage(), None),
        };
        Store {
            mode,
            storage,
            root,
            _dir: dir,
        }
    }

    /// The storage to open a log on.
    pub fn storage(&self) -> Storage {
        self.storage.clone()
    }

    /// Whether segments are chunk objects here.
    pub fn is_object(&self) -> bool {
        self.mode != Mode::Local
    }

    fn op(&self) -> &Operator {
        match &self.storage {
            Storage::Object { op, .. } => op,
            Storage::Local(_) => panic!("{:?} has no operator", self.mode),
        }
    }

    fn dir(&self) -> &Path {
        match &self.storage {
            Storage::Local(dir) => dir,
            Storage::Object { .. } => panic!("{:?} has no local directory", self.mode),
        }
    }

    /// Every stored file or object (name → bytes); what "nothing changed" is compared on.
    /// A local log's `LOCK` file (empty, held only while a log is open) is left out.
    pub async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        if self.is_object() {
            for entry in self.op().list("/").await.unwrap() {
                if entry.metadata().is_file() {
                    let bytes = self.op().read(entry.path()).await.unwrap().to_vec();
                    out.insert(entry.path().to_owned(), bytes);
                }
            }
        } else if self.dir().exists() {
            for entry in std::fs::read_dir(self.dir()).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                if name != LOCK_FILE {
                    out.insert(name, std::fs::read(entry.path()).unwrap());
                }
            }
        }
        out
    }

    /// Makes the stored files or objects exactly `snapshot` (deleting everything else).
    pub async fn restore(&self, snapshot: &BTreeMap<String, Vec<u8>>) {
        let now = self.snapshot().await;
        for name in now.keys().filter(|n| !snapshot.contains_key(*n)) {
            self.remove(name).await;
        }
        for (name, bytes) in snapshot {
            if now.get(name) != Some(bytes) {
                self.put(name, bytes).await;
            }
        }
    }

    async fn put(&self, name: &str, bytes: &[u8]) {
        if self.is_object() {
            self.op().write(name, bytes.to_vec()).await.unwrap();
        } else {
            std::fs::write(self.dir().join(name), bytes).unwrap();
        }
    }

    async fn remove(&self, name: &str) {
        if self.is_object() {
            self.op().delete(name).await.unwrap();
        } else {
            std::fs::remove_file(self.dir().join(name)).unwrap();
        }
    }

    /// The ids of the segments stored, ascending.
    pub async fn segment_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .snapshot()
            .await
            .keys()
            .filter_map(|name| {
                if self.is_object() {
                    parse_chunk_name(name).map(|(id, _)| id)
                } else {
                    parse_local_name(name)
                }
            })
            .collect();
        ids.dedup();
        ids
    }

    /// The newest stored segment.
    pub async fn newest_segment(&self) -> u64 {
        *self.segment_ids().await.last().expect("no segment stored")
    }

    /// The chunks of segment `id` as (start, bytes), ascending (object modes only).
    pub async fn chunks(&self, id: u64) -> Vec<(u64, Vec<u8>)> {
        assert!(self.is_object(), "{:?} has no chunks", self.mode);
        self.snapshot()
            .await
            .into_iter()
            .filter_map(|(name, bytes)| match parse_chunk_name(&name) {
                Some((seg, start)) if seg == id => Some((start, bytes)),
                _ => None,
            })
            .collect()
    }

    /// Segment `id`'s logical bytes (the chunks must tile it without a gap).
    pub async fn read_segment(&self, id: u64) -> Vec<u8> {
        if !self.is_object() {
            return std::fs::read(self.dir().join(local_name(id))).unwrap();
        }
        let mut out = Vec::new();
        for (start, bytes) in self.chunks(id).await {
            assert_eq!(start, out.len() as u64, "gap in the chunks of segment {id}");
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// Replaces segment `id`'s logical bytes with `bytes` (in object modes: all its chunks
    /// are deleted and one chunk at start 0 is written).
    pub async fn replace_segment(&self, id: u64, bytes: &[u8]) {
        if self.is_object() {
            for (start, _) in self.chunks(id).await {
                self.remove(&chunk_name(id, start)).await;
            }
            self.put(&chunk_name(id, 0), bytes).await;
        } else {
            self.put(&local_name(id), bytes).await;
        }
    }

    /// Appends raw `bytes` at the end of the newest segment, as a group commit torn by a crash
    /// would leave them (in object modes: a new chunk at the segment's logical length).
    pub async fn append_raw(&self, bytes: &[u8]) {
        let id = self.newest_segment().await;
        if self.is_object() {
            let len = self.read_segment(id).await.len() as u64;
            if !bytes.is_empty() {
                self.put(&chunk_name(id, len), bytes).await;
            }
        } else {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir().join(local_name(id)))
                .unwrap();
            file.write_all(bytes).unwrap();
        }
    }

    /// Deletes the chunk of segment `id` that starts at `start` (object modes only).
    pub async fn delete_chunk(&self, id: u64, start: u64) {
        assert!(self.is_object(), "{:?} has no chunks", self.mode);
        self.remove(&chunk_name(id, start)).await;
    }

    /// Where the store keeps its bytes, for messages.
    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }
}

/// Collects every event a log emits.
#[derive(Clone, Debug, Default)]
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// A new, empty collector.
    pub fn new() -> Events {
        Events::default()
    }

    /// A sink that records into this collector.
    pub fn sink(&self) -> EventSink {
        let events = Arc::clone(&self.0);
        EventSink::new(move |e| events.lock().unwrap().push(e))
    }

    /// Takes the events recorded so far.
    pub fn take(&self) -> Vec<Event> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// A config that reports into this collector.
    pub fn config(&self) -> WalConfig {
        WalConfig {
            events: self.sink(),
            ..WalConfig::default()
        }
    }
}

/// Every record of the log, from the start.
pub async fn read_all(wal: &Wal) -> Vec<Record> {
    wal.iter_from(Position::START).collect_all().await.unwrap()
}

/// The payloads of `records`, as owned byte vectors.
pub fn payloads(records: &[Record]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.payload.to_vec()).collect()
}

/// A payload that names its origin, so any record found can be traced to one submission.
pub fn tagged(tag: &str, len: usize) -> Vec<u8> {
    let mut p = tag.as_bytes().to_vec();
    p.resize(p.len().max(len), b'.');
    p
}

/// Generates, for each property function `prop(Mode)` named, a module of the same name with
/// one test per storage mode: `prop::local`, `prop::memory`, `prop::object_fs`.
///
/// `async` properties run on a two-worker multi-thread runtime; `sync` ones build their own.
#[allow(unused_macros)]
macro_rules! in_every_mode {
    (async $($prop:ident),* $(,)?) => { $(
        mod $prop {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$prop(super::common::Mode::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$prop(super::common::Mode::Memory).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn object_fs() {
                super::$prop(super::common::Mode::ObjectFs).await
            }
        }
    )* };
    (sync $($prop:ident),* $(,)?) => { $(
        mod $prop {
            #[test]
            fn local() {
                super::$prop(super::common::Mode::Local)
            }
            #[test]
            fn memory() {
                super::$prop(super::common::Mode::Memory)
            }
            #[test]
            fn object_fs() {
                super::$prop(super::common::Mode::ObjectFs)
            }
        }
    )* };
}
