//! The checkpoint store: writes, lists, reads and retires checkpoints and their state files.
//!
//! The store owns one [`Storage`] location: checkpoint files directly in it and state files in
//! its `state/` sub-directory (local) or under the `state/` prefix (object mode). It keeps the
//! invariant that a name of the form `checkpoint-{id:020}` only ever holds a complete
//! checkpoint, and that a state file referenced by a retained checkpoint is never deleted.
//! What a crash leaves behind is described in the [module docs](crate::checkpoint).

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};

use opendal::{Buffer, Operator};
use tokio::sync::Mutex;

use super::format::{
    CheckpointData, CheckpointId, FormatError, FrameHeader, HEADER_LEN, STATE_FILE_FRAME,
    StateData, StateFileName, StateFileRef, decode_state_file, encode_state_file_owned, header_for,
};
use super::resolve::{Decision, Observation, resolve};
use super::state_bytes::StateBytes;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::storage::durable::{self, FsError};
use crate::storage::failpoint::CHECKPOINT;
use crate::storage::local;
use crate::storage::location::{self, Storage, StorageError};
use crate::storage::object::{ObjectDir, WRITE_CHUNK};

/// The sub-directory (or prefix) that holds state files.
pub(crate) const STATE_DIR: &str = "state";

/// State files up to this size (payload) are read into memory on restore; larger ones are
/// read from their local file, or downloaded into a local temporary file, in pieces.
const IN_MEMORY_MAX: u64 = 4 << 20;

/// How many checkpoints a store keeps unless told otherwise.
pub const DEFAULT_RETAIN: usize = 10;

/// A state file to write with a checkpoint
/// ([`CheckpointStore::write_reserved_with_uploads`]): its reference is appended to the
/// [`StateData::Chain`] of the operator with the same id.
#[derive(Clone)]
pub struct StateUpload {
    /// The operator whose chain the file joins.
    pub operator_id: String,
    /// The file's bytes (its payload): in memory, or in a local file for a large state, which
    /// is then written in pieces.
    pub bytes: StateBytes,
}

impl std::fmt::Debug for StateUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateUpload")
            .field("operator_id", &self.operator_id)
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// How a [`CheckpointStore`] behaves.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    /// How many of the newest checkpoints to keep (at least 1; default
    /// [`DEFAULT_RETAIN`]). Older ones are deleted after each successful write.
    pub retain: usize,
    /// Where the store reports [`Event::CheckpointWritten`], [`Event::CheckpointSkipped`] and
    /// [`Event::CheckpointRestored`].
    pub events: EventSink,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            retain: DEFAULT_RETAIN,
            events: EventSink::discard(),
        }
    }
}

impl CheckpointConfig {
    /// Sets how many checkpoints to keep.
    pub fn with_retain(mut self, retain: usize) -> Self {
        self.retain = retain;
        self
    }

    /// Sets where events go.
    pub fn with_events(mut self, events: EventSink) -> Self {
        self.events = events;
        self
    }
}

/// A checkpoint present in the store, as listed by [`CheckpointStore::list`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Its id.
    pub id: CheckpointId,
    /// Its size in bytes.
    pub size: u64,
}

/// What [`CheckpointStore::read_latest`] restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The checkpoint that was read.
    pub id: CheckpointId,
    /// Its content.
    pub data: CheckpointData,
    /// Newer checkpoints that could not be used, newest first, with the reason for each.
    pub skipped: Vec<(CheckpointId, String)>,
}

/// Why a checkpoint operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The storage failed (the message names the operation and the path).
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The configuration asks to retain no checkpoint.
    #[error("a checkpoint store must retain at least 1 checkpoint, but `retain` is {retain}")]
    InvalidRetain {
        /// The configured value.
        retain: usize,
    },
    /// The requested checkpoint is not in the store.
    #[error("checkpoint {id} does not exist in `{store}`")]
    NotFound {
        /// Where the checkpoints live.
        store: String,
        /// The id asked for.
        id: CheckpointId,
    },
    /// The checkpoint's bytes are damaged (checksum, length, magic, sections).
    #[error("checkpoint {id} in `{store}` is corrupt: {reason}")]
    Corrupt {
        /// Where the checkpoints live.
        store: String,
        /// The checkpoint.
        id: CheckpointId,
        /// What is wrong with it.
        reason: FormatError,
    },
    /// The checkpoint's framing version is not one this build reads.
    #[error(
        "checkpoint {id} in `{store}` has format version {version}, but this build reads only \
         version {supported}"
    )]
    UnsupportedVersion {
        /// Where the checkpoints live.
        store: String,
        /// The checkpoint.
        id: CheckpointId,
        /// The version in its header.
        version: u16,
        /// The version this build reads.
        supported: u16,
    },
    /// The checkpoint has a critical section this build does not understand.
    #[error(
        "checkpoint {id} in `{store}` has critical section {tag:#06x}, which this build does \
         not understand; it was written by a newer weir"
    )]
    UnknownCriticalSection {
        /// Where the checkpoints live.
        store: String,
        /// The checkpoint.
        id: CheckpointId,
        /// The unknown critical tag.
        tag: u16,
    },
    /// Checkpoints are present but none of them can be restored.
    #[error(
        "no valid checkpoint in `{store}`: every checkpoint present is unusable ({})",
        describe_tried(.tried)
    )]
    NoValidCheckpoint {
        /// Where the checkpoints live.
        store: String,
        /// Every checkpoint tried, newest first, with why it was unusable.
        tried: Vec<(CheckpointId, String)>,
    },
    /// The id chosen for a new checkpoint was already taken (object mode): another writer is
    /// using the same store.
    #[error(
        "checkpoint {id} already exists in `{store}`; another writer seems to use the same store"
    )]
    AlreadyExists {
        /// Where the checkpoints live.
        store: String,
        /// The id that was taken.
        id: CheckpointId,
    },
    /// The largest id is `u64::MAX`, so no new id can be given.
    #[error(
        "no checkpoint id is left in `{store}`: the largest id present is {}",
        u64::MAX
    )]
    IdsExhausted {
        /// Where the checkpoints live.
        store: String,
    },
    /// The checkpoint could not be encoded.
    #[error("a checkpoint for `{store}` could not be encoded: {reason}")]
    Encode {
        /// Where the checkpoints live.
        store: String,
        /// What the encoder reported.
        reason: FormatError,
    },
    /// A referenced state file is not in the store.
    #[error("state file `{name}` does not exist in `{store}`")]
    StateFileNotFound {
        /// Where the checkpoints live.
        store: String,
        /// The state file's name.
        name: String,
    },
    /// A state file's bytes are damaged.
    #[error("state file `{name}` in `{store}` is corrupt: {reason}")]
    StateFileCorrupt {
        /// Where the checkpoints live.
        store: String,
        /// The state file's name.
        name: String,
        /// What is wrong with it.
        reason: FormatError,
    },
    /// A state file is intact but is not the one its reference describes.
    #[error(
        "state file `{name}` in `{store}` does not match its reference: expected {expected_len} \
         bytes with CRC32C {expected_crc32c:#010x}, found {found_len} bytes with CRC32C \
         {found_crc32c:#010x}"
    )]
    StateFileMismatch {
        /// Where the checkpoints live.
        store: String,
        /// The state file's name.
        name: String,
        /// The length in the reference.
        expected_len: u64,
        /// The length in the file.
        found_len: u64,
        /// The checksum in the reference.
        expected_crc32c: u32,
        /// The checksum of the bytes in the file.
        found_crc32c: u32,
    },
    /// A state file to upload names an operator whose state is not a chain.
    #[error(
        "a state file was to be written for operator {operator_id:?} in `{store}`, but its \
         state in the checkpoint is not a chain of state files"
    )]
    NoChainFor {
        /// Where the checkpoints live.
        store: String,
        /// The operator id of the upload.
        operator_id: String,
    },
    /// A reference names something that is not a state file name of this store.
    #[error("`{name}` is not a valid state file name for `{store}`")]
    InvalidStateFileName {
        /// Where the checkpoints live.
        store: String,
        /// The name in the reference.
        name: String,
    },
}

fn describe_tried(tried: &[(CheckpointId, String)]) -> String {
    tried
        .iter()
        .map(|(id, reason)| format!("checkpoint {id}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The two places a store writes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Area {
    Checkpoints,
    State,
}

/// The store's storage, resolved once at open.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per store, never moved in a hot path"
)]
enum Backend {
    Local {
        dir: PathBuf,
        state: PathBuf,
    },
    Object {
        op: Operator,
        dir: ObjectDir,
        state: ObjectDir,
    },
}

fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

impl Backend {
    fn new(storage: &Storage) -> Self {
        match storage {
            Storage::Local(dir) => Backend::Local {
                dir: dir.clone(),
                state: dir.join(STATE_DIR),
            },
            Storage::Object { op, prefix } => Backend::Object {
                op: op.clone(),
                dir: ObjectDir::new(op.clone(), prefix.clone()),
                state: ObjectDir::new(op.clone(), format!("{prefix}{STATE_DIR}/")),
            },
        }
    }

    fn object_dir<'a>(dir: &'a ObjectDir, state: &'a ObjectDir, area: Area) -> &'a ObjectDir {
        match area {
            Area::Checkpoints => dir,
            Area::State => state,
        }
    }

    fn local_dir(dir: &Path, state: &Path, area: Area) -> PathBuf {
        match area {
            Area::Checkpoints => dir.to_path_buf(),
            Area::State => state.to_path_buf(),
        }
    }

    /// Creates the directories and removes leftover temp files (local); returns how many.
    async fn prepare(&self) -> Result<usize, StorageError> {
        match self {
            Backend::Local { dir, state } => {
                let (dir, state) = (dir.clone(), state.clone());
                location::blocking(&dir.clone(), move || {
                    durable::create_dir_all(&state, CHECKPOINT)?;
                    Ok(durable::remove_temp_files(&dir, CHECKPOINT)?
                        + durable::remove_temp_files(&state, CHECKPOINT)?)
                })
                .await
            }
            // Object stores have no directories, and the store never writes temporary names.
            Backend::Object { .. } => Ok(0),
        }
    }

    async fn list(&self, area: Area) -> Result<Vec<String>, StorageError> {
        match self {
            Backend::Local { dir, state } => {
                let path = Self::local_dir(dir, state, area);
                location::blocking(&path.clone(), move || local::list_files(&path)).await
            }
            Backend::Object { dir, state, .. } => match area {
                Area::Checkpoints => dir.list().await,
                Area::State => state.list().await,
            },
        }
    }

    /// The checkpoints present with their sizes; ones that vanish meanwhile are left out.
    async fn list_checkpoints(&self) -> Result<Vec<CheckpointInfo>, StorageError> {
        let ids = ids_of(self.list(Area::Checkpoints).await?);
        match self {
            Backend::Local { dir, .. } => {
                let dir = dir.clone();
                location::blocking(&dir.clone(), move || {
                    let mut infos = Vec::with_capacity(ids.len());
                    for id in ids {
                        let path = dir.join(id.file_name());
                        match std::fs::metadata(&path) {
                            Ok(meta) => infos.push(CheckpointInfo {
                                id,
                                size: meta.len(),
                            }),
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                            Err(err) => return Err(FsError::io("stat", &path)(err).into()),
                        }
                    }
                    Ok(infos)
                })
                .await
            }
            Backend::Object { op, dir, .. } => {
                let mut infos = Vec::with_capacity(ids.len());
                for id in ids {
                    let path = dir.path(&id.file_name());
                    match op.stat(&path).await {
                        Ok(meta) => infos.push(CheckpointInfo {
                            id,
                            size: meta.content_length(),
                        }),
                        Err(err) if err.kind() == opendal::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(StorageError::Object {
                                op: "stat",
                                path,
                                source: Box::new(source),
                            });
                        }
                    }
                }
                Ok(infos)
            }
        }
    }

    /// Reads a whole file; `None` if it does not exist.
    async fn read(&self, area: Area, name: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let result = match self {
            Backend::Local { dir, state } => {
                let path = Self::local_dir(dir, state, area).join(name);
                location::blocking(&path.clone(), move || local::read_file(&path)).await
            }
            Backend::Object { dir, state, .. } => {
                let dir = Self::object_dir(dir, state, area);
                dir.read(name).await.map(|buf| buf.to_vec())
            }
        };
        match result {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Publishes `bytes` under `name` atomically: local temp + fsync + rename + directory
    /// fsync, or a write-once object.
    async fn publish(&self, area: Area, name: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        match self {
            Backend::Local { dir, state } => {
                let dir = Self::local_dir(dir, state, area);
                let name = name.to_owned();
                location::blocking(&dir.clone(), move || {
                    Ok(durable::write_atomic(&dir.join(name), &bytes, CHECKPOINT)?)
                })
                .await
            }
            Backend::Object { dir, state, .. } => {
                let dir = Self::object_dir(dir, state, area);
                dir.write_once(name, Buffer::from(bytes), CHECKPOINT).await
            }
        }
    }

    /// Publishes `header` then `body` under `name` as [`publish`](Self::publish) does, the
    /// body read in pieces (a large state file is never in memory whole).
    async fn publish_pieces(
        &self,
        area: Area,
        name: &str,
        header: [u8; HEADER_LEN],
        body: StateBytes,
    ) -> Result<(), StorageError> {
        match self {
            Backend::Local { dir, state } => {
                let dir = Self::local_dir(dir, state, area);
                let name = name.to_owned();
                location::blocking(&dir.clone(), move || {
                    Ok(durable::write_atomic_with(
                        &dir.join(name),
                        CHECKPOINT,
                        |out| {
                            out.write_all(&header)?;
                            body.for_each_piece(|piece| out.write_all(piece))
                        },
                    )?)
                })
                .await
            }
            Backend::Object { dir, state, .. } => {
                let dir = Self::object_dir(dir, state, area);
                let header_len = len_u64(HEADER_LEN);
                let total = header_len.saturating_add(body.len());
                let piece = |at: u64| {
                    let body = body.clone();
                    let name = name.to_owned();
                    async move {
                        if at < header_len {
                            let from = usize::try_from(at).unwrap_or(HEADER_LEN);
                            return Ok(Buffer::from(
                                header.get(from..).unwrap_or_default().to_vec(),
                            ));
                        }
                        let at = at - header_len;
                        let want = usize::try_from(body.len().saturating_sub(at))
                            .unwrap_or(WRITE_CHUNK)
                            .min(WRITE_CHUNK);
                        let path = name.clone();
                        tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0; want];
                            let n = body.read_at(at, &mut buf).map_err(|e| {
                                StorageError::from(FsError::io("read", Path::new(&path))(e))
                            })?;
                            buf.truncate(n);
                            Ok(Buffer::from(buf))
                        })
                        .await
                        .map_err(|join| StorageError::Task {
                            path: name.clone(),
                            reason: join.to_string(),
                        })?
                    }
                };
                dir.write_once_pieces(name, total, CHECKPOINT, piece).await
            }
        }
    }

    /// Deletes `names` (absent ones are fine); locally the removals are made durable.
    async fn remove(&self, area: Area, names: Vec<String>) -> Result<(), StorageError> {
        if names.is_empty() {
            return Ok(());
        }
        match self {
            Backend::Local { dir, state } => {
                let dir = Self::local_dir(dir, state, area);
                location::blocking(&dir.clone(), move || {
                    Ok(durable::remove_files(&dir, &names, CHECKPOINT)?)
                })
                .await
            }
            Backend::Object { dir, state, .. } => {
                let dir = Self::object_dir(dir, state, area);
                for name in &names {
                    dir.delete(name).await?;
                }
                Ok(())
            }
        }
    }
}

/// The checkpoint ids among `names`, ascending; other names are ignored.
fn ids_of(names: Vec<String>) -> Vec<CheckpointId> {
    let mut ids: Vec<CheckpointId> = names
        .iter()
        .filter_map(|name| CheckpointId::from_file_name(name))
        .collect();
    ids.sort_unstable();
    ids
}

/// What retention holds the lock for.
#[derive(Debug)]
struct Inner {
    /// The state files each checkpoint references, for the checkpoints read or written so far.
    refs: BTreeMap<CheckpointId, BTreeSet<String>>,
    /// Checkpoints retention never deletes, whatever their age (see [`CheckpointStore::pin`]).
    pinned: BTreeSet<CheckpointId>,
}

/// The ids given out, behind a short lock that is never held across an `.await`.
#[derive(Debug)]
struct Ids {
    /// The id the next reservation gets; `None` once `u64::MAX` was given.
    next: Option<u64>,
    /// Reserved ids whose write has not ended yet.
    in_flight: BTreeSet<u64>,
}

type SharedIds = Arc<std::sync::Mutex<Ids>>;

fn lock_ids(ids: &SharedIds) -> std::sync::MutexGuard<'_, Ids> {
    // The critical sections only insert, remove and increment: a panic cannot leave them
    // half-done, so a poisoned lock still holds consistent data.
    ids.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A checkpoint id taken by [`CheckpointStore::reserve`], to be written with
/// [`CheckpointStore::write_reserved`].
///
/// Ids are given in the order of reservation, and [`CheckpointStore::read_latest`] prefers the
/// largest valid id, so the order of reservations — not the order in which writes finish — is
/// the order of checkpoints: reserve in the order of the snapshots, and a slow older write that
/// lands after a newer one never becomes the latest. Dropping a reservation unwritten burns its
/// id.
#[derive(Debug)]
#[must_use = "a reservation is only useful to write a checkpoint with"]
pub struct Reservation {
    id: CheckpointId,
    ids: SharedIds,
}

impl Reservation {
    /// The id the checkpoint will have.
    pub fn id(&self) -> CheckpointId {
        self.id
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock_ids(&self.ids).in_flight.remove(&self.id.0);
    }
}

/// Durable checkpoints in one [`Storage`] location.
///
/// Ids are given in reservation order ([`CheckpointStore::reserve`]); several writes may be in
/// flight at once (each publishes its own name), while retention runs one at a time. Reads
/// may run concurrently with writes. One store (one process) writes to a location at a time;
/// see the [module docs](crate::checkpoint).
#[derive(Debug)]
pub struct CheckpointStore {
    storage: Storage,
    store: String,
    backend: Backend,
    retain: usize,
    events: EventSink,
    inner: Mutex<Inner>,
    ids: SharedIds,
    /// The next state-file sequence number.
    state_seq: AtomicU64,
}

impl CheckpointStore {
    /// Opens (creating it if needed) the store at `storage`.
    ///
    /// Locally the directory and its `state/` sub-directory are created durably and temporary
    /// files left by a crash are removed. The next id is one more than the largest id present,
    /// valid or not.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::InvalidRetain`] if `config.retain` is 0, or a storage error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future may leave the directories created and some temp files
    /// removed, which is what a later `open` does anyway.
    pub async fn open(
        storage: Storage,
        config: CheckpointConfig,
    ) -> Result<CheckpointStore, CheckpointError> {
        if config.retain == 0 {
            return Err(CheckpointError::InvalidRetain {
                retain: config.retain,
            });
        }
        let store = storage.describe();
        let backend = Backend::new(&storage);
        let removed = backend.prepare().await?;
        if removed > 0 {
            tracing::info!(store = %store, removed, "removed temporary files left by a crash");
        }
        let next_id = match ids_of(backend.list(Area::Checkpoints).await?).last() {
            Some(max) => max.0.checked_add(1),
            None => Some(1),
        };
        let state_seq = backend
            .list(Area::State)
            .await?
            .iter()
            .filter_map(|name| StateFileName::parse(name))
            .map(|name| name.seq.saturating_add(1))
            .max()
            .unwrap_or(0);
        tracing::debug!(store = %store, ?next_id, state_seq, "opened checkpoint store");
        Ok(CheckpointStore {
            store,
            backend,
            retain: config.retain,
            events: config.events,
            inner: Mutex::new(Inner {
                refs: BTreeMap::new(),
                pinned: BTreeSet::new(),
            }),
            ids: Arc::new(std::sync::Mutex::new(Ids {
                next: next_id,
                in_flight: BTreeSet::new(),
            })),
            state_seq: AtomicU64::new(state_seq),
            storage,
        })
    }

    /// Where the store lives.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// How many checkpoints the store keeps.
    pub fn retain(&self) -> usize {
        self.retain
    }

    /// Writes `data` as a new checkpoint and returns its id, then deletes checkpoints beyond
    /// the newest [`retain`](CheckpointConfig::retain) and state files no retained checkpoint
    /// references. The same as [`reserve`](Self::reserve) then
    /// [`write_reserved`](Self::write_reserved).
    ///
    /// # Errors
    ///
    /// As [`write_reserved`](Self::write_reserved), and [`CheckpointError::IdsExhausted`].
    ///
    /// # Cancel safety
    ///
    /// As [`write_reserved`](Self::write_reserved).
    pub async fn write(&self, data: &CheckpointData) -> Result<CheckpointId, CheckpointError> {
        let reservation = self.reserve()?;
        self.write_reserved(reservation, data).await
    }

    /// Takes the id of the next checkpoint, without writing anything (and without waiting).
    ///
    /// A writer that runs several writes at once reserves, in the order of its snapshots, one
    /// id per snapshot, then writes each with [`write_reserved`](Self::write_reserved): the
    /// checkpoint ids, and so what [`read_latest`](Self::read_latest) restores, follow the
    /// snapshots whatever order the writes finish in.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::IdsExhausted`] once the id `u64::MAX` was given.
    pub fn reserve(&self) -> Result<Reservation, CheckpointError> {
        let mut ids = lock_ids(&self.ids);
        let Some(raw) = ids.next else {
            return Err(CheckpointError::IdsExhausted {
                store: self.store.clone(),
            });
        };
        ids.next = raw.checked_add(1);
        ids.in_flight.insert(raw);
        Ok(Reservation {
            id: CheckpointId(raw),
            ids: Arc::clone(&self.ids),
        })
    }

    /// Writes `data` as the checkpoint `reservation` names and returns its id, then deletes
    /// checkpoints beyond the newest [`retain`](CheckpointConfig::retain) and state files no
    /// retained checkpoint references.
    ///
    /// The checkpoint appears under its final name complete or not at all. Writes of
    /// different reservations may run at once; retention runs after the checkpoint is
    /// durable, one retention at a time, and keeps the `retain` largest ids — so a write that
    /// finishes after a newer one is the one deleted, never the newer one. A state file is
    /// kept while a reservation older than it is in flight. If this returns an error, the
    /// store has removed whatever the attempt may have left under that name, and the id is
    /// not used again by this store. A retention failure is logged and retried after the
    /// next write, not returned.
    ///
    /// # Errors
    ///
    /// A storage error; [`CheckpointError::AlreadyExists`] if another writer took the id
    /// (object mode); [`CheckpointError::Encode`]. A reservation from another store is
    /// written under its id all the same: do not mix stores.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the sense that a dropped call may still publish the checkpoint (a
    /// local write runs to completion on a blocking thread) without telling the caller. The
    /// store stays consistent: the id is never reused, and retention catches up at the next
    /// write.
    pub async fn write_reserved(
        &self,
        reservation: Reservation,
        data: &CheckpointData,
    ) -> Result<CheckpointId, CheckpointError> {
        let id = reservation.id;
        let started = std::time::Instant::now();
        let bytes = data.encode().map_err(|reason| CheckpointError::Encode {
            store: self.store.clone(),
            reason,
        })?;
        let refs: BTreeSet<String> = data.state_files().map(|r| r.name.clone()).collect();
        let size = len_u64(bytes.len());

        let name = id.file_name();
        if let Err(err) = self.backend.publish(Area::Checkpoints, &name, bytes).await {
            return Err(self.unpublish(id, name, err).await);
        }
        tracing::info!(store = %self.store, id = id.0, bytes = size, "checkpoint written");
        self.events.emit(Event::CheckpointWritten {
            store: self.store.clone(),
            id: id.0,
            bytes: size,
            duration_ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
        });
        // Published: it no longer needs the in-flight protection of its state files (it
        // protects them itself while retained).
        drop(reservation);

        let mut inner = self.inner.lock().await;
        inner.refs.insert(id, refs);
        if let Err(err) = self.apply_retention(&mut inner).await {
            tracing::warn!(
                store = %self.store,
                error = %err,
                "retention after checkpoint {id} failed; it is retried after the next write"
            );
        }
        Ok(id)
    }

    /// After a failed write: removes anything left under the final name, and builds the error.
    async fn unpublish(
        &self,
        id: CheckpointId,
        name: String,
        err: StorageError,
    ) -> CheckpointError {
        if err.is_already_exists() {
            // Someone else's checkpoint: leave it alone.
            return CheckpointError::AlreadyExists {
                store: self.store.clone(),
                id,
            };
        }
        // A local write can fail after the rename (the directory fsync); an object write can
        // fail after the object landed. Either way the caller is told "not written", so make
        // it true.
        if let Err(cleanup) = self.backend.remove(Area::Checkpoints, vec![name]).await {
            tracing::error!(
                store = %self.store,
                id = id.0,
                error = %cleanup,
                "checkpoint {id} failed to write and could not be removed; \
                 it may be visible although its write reported an error"
            );
        }
        tracing::warn!(store = %self.store, id = id.0, error = %err, "checkpoint write failed");
        CheckpointError::Storage(err)
    }

    /// Deletes checkpoints beyond `retain`, then state files that are unreferenced and older
    /// than the oldest retained checkpoint.
    async fn apply_retention(&self, inner: &mut Inner) -> Result<(), CheckpointError> {
        let present = ids_of(self.backend.list(Area::Checkpoints).await?);
        // The newest `retain`, and every pinned one (pinned ones do not count against
        // `retain`).
        let unpinned: Vec<CheckpointId> = present
            .iter()
            .copied()
            .filter(|id| !inner.pinned.contains(id))
            .collect();
        let excess = unpinned.len().saturating_sub(self.retain);
        let doomed: Vec<CheckpointId> = unpinned[..excess].to_vec();
        let retained: Vec<CheckpointId> = present
            .into_iter()
            .filter(|id| doomed.binary_search(id).is_err())
            .collect();
        if !doomed.is_empty() {
            let names = doomed.iter().map(|id| id.file_name()).collect();
            self.backend.remove(Area::Checkpoints, names).await?;
            tracing::debug!(store = %self.store, ?doomed, "deleted old checkpoints");
        }
        inner
            .refs
            .retain(|id, _| retained.binary_search(id).is_ok());
        // Pinned checkpoints keep what they reference, but do not hold back the collection
        // of files older than the oldest checkpoint kept by `retain`.
        let Some(&oldest) = retained
            .iter()
            .find(|id| !inner.pinned.contains(id))
            .or(retained.first())
        else {
            return Ok(());
        };

        // A state file whose embedded id is >= the oldest retained checkpoint, or >= the
        // oldest reservation still being written, may belong to a checkpoint still being
        // prepared; only older ones are candidates.
        let floor = lock_ids(&self.ids)
            .in_flight
            .first()
            .map_or(oldest, |&writing| oldest.min(CheckpointId(writing)));
        let candidates: Vec<String> = self
            .backend
            .list(Area::State)
            .await?
            .into_iter()
            .filter(|name| {
                StateFileName::parse(name).is_some_and(|parsed| parsed.next_checkpoint < floor)
            })
            .collect();
        if candidates.is_empty() {
            return Ok(());
        }
        let mut referenced = BTreeSet::new();
        for &id in &retained {
            if let Entry::Vacant(slot) = inner.refs.entry(id) {
                // Any failure here (even corruption) keeps every candidate: a checkpoint that
                // cannot be read cannot tell us what it references.
                let data = self.load(id).await?;
                slot.insert(data.state_files().map(|r| r.name.clone()).collect());
            }
            if let Some(refs) = inner.refs.get(&id) {
                referenced.extend(refs.iter().cloned());
            }
        }
        let garbage: Vec<String> = candidates
            .into_iter()
            .filter(|name| !referenced.contains(name))
            .collect();
        if !garbage.is_empty() {
            tracing::debug!(store = %self.store, ?garbage, "deleting unreferenced state files");
            self.backend.remove(Area::State, garbage).await?;
        }
        Ok(())
    }

    /// The typed error for a checkpoint that does not decode.
    fn invalid(&self, id: CheckpointId, reason: FormatError) -> CheckpointError {
        let store = self.store.clone();
        match reason {
            FormatError::UnsupportedVersion { version, supported } => {
                CheckpointError::UnsupportedVersion {
                    store,
                    id,
                    version,
                    supported,
                }
            }
            FormatError::UnknownCriticalSection { tag } => {
                CheckpointError::UnknownCriticalSection { store, id, tag }
            }
            reason => CheckpointError::Corrupt { store, id, reason },
        }
    }

    async fn load(&self, id: CheckpointId) -> Result<CheckpointData, CheckpointError> {
        let Some(bytes) = self
            .backend
            .read(Area::Checkpoints, &id.file_name())
            .await?
        else {
            return Err(CheckpointError::NotFound {
                store: self.store.clone(),
                id,
            });
        };
        CheckpointData::decode(&bytes).map_err(|reason| self.invalid(id, reason))
    }

    /// The checkpoints present (valid or not), oldest first, with their sizes.
    ///
    /// # Errors
    ///
    /// A storage error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        Ok(self.backend.list_checkpoints().await?)
    }

    /// Reads the newest valid checkpoint.
    ///
    /// A newer checkpoint that is corrupt, truncated, from a newer format version or has an
    /// unknown critical section is skipped: each skip is logged (`warn`), reported as
    /// [`Event::CheckpointSkipped`] and listed in [`Restored::skipped`]. A storage error is
    /// not a reason to fall back; it is returned.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NoValidCheckpoint`] if checkpoints are present but none is valid; a
    /// storage error. No checkpoint at all is `Ok(None)`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (events already emitted stay emitted).
    pub async fn read_latest(&self) -> Result<Option<Restored>, CheckpointError> {
        let listed = ids_of(self.backend.list(Area::Checkpoints).await?);
        let mut observed = BTreeMap::new();
        loop {
            match resolve(&listed, &mut observed) {
                Decision::Read(id) => {
                    let observation = match self
                        .backend
                        .read(Area::Checkpoints, &id.file_name())
                        .await?
                    {
                        None => Observation::Vanished,
                        Some(bytes) => match CheckpointData::decode(&bytes) {
                            Ok(data) => Observation::Valid(data),
                            Err(reason) => Observation::Invalid(reason.to_string()),
                        },
                    };
                    observed.insert(id, observation);
                }
                Decision::Use { id, data, skipped } => {
                    for (skipped_id, reason) in &skipped {
                        tracing::warn!(
                            store = %self.store,
                            id = skipped_id.0,
                            reason = %reason,
                            "skipping checkpoint {skipped_id}, which cannot be used; \
                             falling back to an older one"
                        );
                        self.events.emit(Event::CheckpointSkipped {
                            store: self.store.clone(),
                            id: skipped_id.0,
                            reason: reason.clone(),
                        });
                    }
                    self.restored(id);
                    return Ok(Some(Restored { id, data, skipped }));
                }
                Decision::Empty => return Ok(None),
                Decision::NoneValid { tried } => {
                    return Err(CheckpointError::NoValidCheckpoint {
                        store: self.store.clone(),
                        tried,
                    });
                }
            }
        }
    }

    /// Reads the checkpoint `id` (to restore from a chosen checkpoint).
    ///
    /// # Errors
    ///
    /// [`CheckpointError::NotFound`], [`CheckpointError::Corrupt`],
    /// [`CheckpointError::UnsupportedVersion`], [`CheckpointError::UnknownCriticalSection`] or
    /// a storage error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read(&self, id: CheckpointId) -> Result<CheckpointData, CheckpointError> {
        let data = self.load(id).await?;
        self.restored(id);
        Ok(data)
    }

    /// Reads the checkpoint `id` without reporting it as restored (to copy it: a savepoint).
    ///
    /// # Errors
    ///
    /// As [`read`](Self::read).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn peek(&self, id: CheckpointId) -> Result<CheckpointData, CheckpointError> {
        self.load(id).await
    }

    /// Copies the state file `file` refers to from the store `from` into this one, under the
    /// same name (so a copied checkpoint's references hold in both), checked against the
    /// reference on the way and published atomically, like every state file. A file of that
    /// name already here that matches the reference is kept as it is; one that does not is
    /// never replaced (a checkpoint of this store may reference it): that is an error.
    ///
    /// # Errors
    ///
    /// As [`read_state_file`](Self::read_state_file) on `from`; a storage error here;
    /// [`CheckpointError::StateFileMismatch`] or [`CheckpointError::StateFileCorrupt`] when
    /// this store holds another file of that name.
    ///
    /// # Cancel safety
    ///
    /// A dropped call may still publish the file; unreferenced, it is garbage-collected later.
    pub async fn copy_state_file_from(
        &self,
        from: &CheckpointStore,
        file: &StateFileRef,
    ) -> Result<(), CheckpointError> {
        match self.read_state_file_bytes(file, None).await {
            Ok(_) => return Ok(()),
            Err(CheckpointError::StateFileNotFound { .. }) => {}
            Err(err) => return Err(err),
        }
        let bytes = from.read_state_file_bytes(file, None).await?;
        if let Some(parsed) = StateFileName::parse(&file.name) {
            // Names this store gives later never repeat the copied one's.
            self.state_seq
                .fetch_max(parsed.seq.saturating_add(1), Ordering::SeqCst);
        }
        match self.publish_state(&file.name, bytes).await {
            Ok(_) => Ok(()),
            // Object mode: the name was taken meanwhile; fine only if it holds these bytes.
            Err(CheckpointError::Storage(err)) if err.is_already_exists() => {
                self.read_state_file_bytes(file, None).await.map(drop)
            }
            Err(err) => Err(err),
        }
    }

    /// Writes `data`, a checkpoint of the store `from`, into this store as its newest
    /// checkpoint, with copies of every state file it references; returns the id and the
    /// checkpoint as written (its state file references renamed to the copies).
    ///
    /// The copies are named after this store's reserved id, as its own state files are, so
    /// retention protects them while the write is in flight, collects them if it never lands
    /// (a crash mid-copy), and deletes them once no retained checkpoint references them —
    /// whatever ids `from` had given. The bytes are verified against the references as they
    /// are read.
    ///
    /// # Errors
    ///
    /// As [`read_state_file`](Self::read_state_file) on `from`, and as
    /// [`write_reserved`](Self::write_reserved).
    ///
    /// # Cancel safety
    ///
    /// As [`write_reserved`](Self::write_reserved); copies written before the drop are
    /// unreferenced and collected later.
    pub async fn import(
        &self,
        from: &CheckpointStore,
        data: &CheckpointData,
    ) -> Result<(CheckpointId, CheckpointData), CheckpointError> {
        let reservation = self.reserve()?;
        let mut copies: BTreeMap<String, StateFileRef> = BTreeMap::new();
        for file in data.state_files() {
            if copies.contains_key(&file.name) {
                continue;
            }
            let bytes = from.read_state_file_bytes(file, None).await?;
            // `read_state_file_bytes` refused names that do not parse.
            let slug = StateFileName::parse(&file.name).map_or(String::new(), |name| name.slug);
            let copy = self
                .write_state_file_named(reservation.id, &slug, bytes)
                .await?;
            copies.insert(file.name.clone(), copy);
        }
        let mut data = data.clone();
        let renamed = |file: &mut StateFileRef| {
            if let Some(copy) = copies.get(&file.name) {
                *file = copy.clone();
            }
        };
        for op in &mut data.operator_state {
            match &mut op.data {
                StateData::Inline(_) => {}
                StateData::File(file) => renamed(file),
                StateData::Chain(files) => files.iter_mut().for_each(renamed),
            }
        }
        let id = self.write_reserved(reservation, &data).await?;
        Ok((id, data))
    }

    fn restored(&self, id: CheckpointId) {
        tracing::info!(store = %self.store, id = id.0, "checkpoint read for restore");
        self.events.emit(Event::CheckpointRestored {
            store: self.store.clone(),
            id: id.0,
        });
    }

    /// Pins checkpoint `id`: retention never deletes it, nor the state files it references,
    /// until [`unpin`](Self::unpin). Pinned checkpoints do not count against
    /// [`retain`](CheckpointConfig::retain). The hook for savepoints (kept in memory only: a
    /// new store has nothing pinned).
    pub async fn pin(&self, id: CheckpointId) {
        self.inner.lock().await.pinned.insert(id);
    }

    /// Lets retention treat checkpoint `id` as any other again.
    pub async fn unpin(&self, id: CheckpointId) {
        self.inner.lock().await.pinned.remove(&id);
    }

    /// Writes the state files `uploads` asks for, puts their references into `data`, then
    /// writes `data` as the checkpoint `reservation` names (as
    /// [`write_reserved`](Self::write_reserved)); returns the id and the checkpoint as written.
    ///
    /// Each upload's file is appended to the [`StateData::Chain`] of the operator state with
    /// the same id (which must exist and be a chain). The files embed the reservation's id, so
    /// retention keeps them while the write is in flight; if the write fails they are
    /// unreferenced, and deleted by retention once older than the oldest retained checkpoint
    /// (as are files of a write interrupted by a crash).
    ///
    /// # Errors
    ///
    /// As [`write_reserved`](Self::write_reserved); [`CheckpointError::NoChainFor`] if an
    /// upload names an operator without a chain.
    ///
    /// # Cancel safety
    ///
    /// As [`write_reserved`](Self::write_reserved); files written before the drop are
    /// unreferenced and collected later.
    pub async fn write_reserved_with_uploads(
        &self,
        reservation: Reservation,
        mut data: CheckpointData,
        uploads: Vec<StateUpload>,
    ) -> Result<(CheckpointId, CheckpointData), CheckpointError> {
        for upload in uploads {
            let Some(chain) = data.operator_state.iter_mut().find_map(|op| {
                match (&mut op.data, op.operator_id == upload.operator_id) {
                    (StateData::Chain(files), true) => Some(files),
                    _ => None,
                }
            }) else {
                return Err(CheckpointError::NoChainFor {
                    store: self.store.clone(),
                    operator_id: upload.operator_id,
                });
            };
            let file = self
                .write_state_file_named(reservation.id, &upload.operator_id, upload.bytes)
                .await?;
            chain.push(file);
        }
        let id = self.write_reserved(reservation, &data).await?;
        Ok((id, data))
    }

    /// Reads every state file `data` references, verified as by
    /// [`read_state_file_bytes`](Self::read_state_file_bytes) with `spill`: what a restore of
    /// `data` needs, and nothing else. By name.
    ///
    /// # Errors
    ///
    /// As [`read_state_file_bytes`](Self::read_state_file_bytes).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (a temporary file it made is deleted when dropped).
    pub async fn read_state_files(
        &self,
        data: &CheckpointData,
        spill: Option<&Path>,
    ) -> Result<BTreeMap<String, StateBytes>, CheckpointError> {
        let mut files = BTreeMap::new();
        for file in data.state_files() {
            if !files.contains_key(&file.name) {
                let bytes = self.read_state_file_bytes(file, spill).await?;
                files.insert(file.name.clone(), bytes);
            }
        }
        Ok(files)
    }

    /// Writes `bytes`, the state of `operator_id`, as a new state file and returns the
    /// reference to put in the next checkpoint's [`StateData::File`](super::StateData::File).
    ///
    /// The file is published atomically, like a checkpoint. Its name embeds the id the next
    /// checkpoint will get, so retention never deletes it while that checkpoint is being
    /// prepared: an unreferenced state file is deleted only once its embedded id is older
    /// than the oldest retained checkpoint. Reference it from one of the next
    /// [`retain`](CheckpointConfig::retain) checkpoints.
    ///
    /// # Errors
    ///
    /// A storage error.
    ///
    /// # Cancel safety
    ///
    /// A dropped call may still publish the file; unreferenced, it is garbage-collected later.
    pub async fn write_state_file(
        &self,
        operator_id: &str,
        bytes: &[u8],
    ) -> Result<StateFileRef, CheckpointError> {
        let next = CheckpointId(lock_ids(&self.ids).next.unwrap_or(u64::MAX));
        self.write_state_file_named(next, operator_id, StateBytes::from(bytes.to_vec()))
            .await
    }

    /// Writes a state file whose name embeds `id`: framed in the bytes' own allocation if they
    /// are in memory, else written in pieces from their file.
    async fn write_state_file_named(
        &self,
        id: CheckpointId,
        operator_id: &str,
        bytes: StateBytes,
    ) -> Result<StateFileRef, CheckpointError> {
        let seq = self.state_seq.fetch_add(1, Ordering::SeqCst);
        let name = StateFileName::new(id, seq, operator_id).build();
        let len = bytes.len();
        let crc32c = self.publish_state(&name, bytes).await?;
        tracing::debug!(store = %self.store, name = %name, bytes = len, "state file written");
        Ok(StateFileRef { name, len, crc32c })
    }

    /// Publishes `bytes` as the state file `name`: framed in their own allocation if they are
    /// in memory, else written in pieces from their file. Returns their CRC32C.
    async fn publish_state(&self, name: &str, bytes: StateBytes) -> Result<u32, CheckpointError> {
        match bytes.into_vec() {
            Ok(bytes) => {
                let crc32c = crc32c::crc32c(&bytes);
                self.backend
                    .publish(Area::State, name, encode_state_file_owned(bytes, crc32c))
                    .await?;
                Ok(crc32c)
            }
            Err(bytes) => {
                let path = PathBuf::from(name);
                let body = bytes.clone();
                let crc32c = location::blocking(&path.clone(), move || {
                    body.crc32c()
                        .map_err(|e| FsError::io("read", &path)(e).into())
                })
                .await?;
                let header = header_for(STATE_FILE_FRAME, bytes.len(), crc32c);
                self.backend
                    .publish_pieces(Area::State, name, header, bytes)
                    .await?;
                Ok(crc32c)
            }
        }
    }

    /// The state file `file` refers to, verified as by [`read_state_file`](Self::read_state_file),
    /// without holding a large one in memory: a file larger than a few MiB is read from its
    /// local file (local storage), or downloaded in pieces into an anonymous temporary file in
    /// `spill` (object storage; into memory if `spill` is `None`). Its checksum is verified
    /// before this returns, so a restore never reads a damaged state file.
    ///
    /// # Errors
    ///
    /// As [`read_state_file`](Self::read_state_file); a storage error if the temporary file
    /// cannot be written.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads (a temporary file is deleted when dropped).
    pub async fn read_state_file_bytes(
        &self,
        file: &StateFileRef,
        spill: Option<&Path>,
    ) -> Result<StateBytes, CheckpointError> {
        let name = &file.name;
        if StateFileName::parse(name).is_none() {
            return Err(CheckpointError::InvalidStateFileName {
                store: self.store.clone(),
                name: name.clone(),
            });
        }
        let large = match &self.backend {
            Backend::Local { state, .. } => {
                let path = state.join(name);
                location::blocking(&path.clone(), move || open_large(&path)).await?
            }
            Backend::Object { state, op, .. } => match spill {
                Some(spill) => self.download_large(op, state, name, spill).await?,
                None => None,
            },
        };
        let Some((body, header)) = large else {
            return self.read_state_file(file).await.map(StateBytes::from);
        };
        let header = FrameHeader::check(STATE_FILE_FRAME, &header, body.len())
            .map_err(|reason| self.corrupt(name, reason))?;
        // A download's CRC was computed on the way (no second read); a local file is read once.
        let path = PathBuf::from(name);
        let checked = body.clone();
        let found_crc32c = location::blocking(&path.clone(), move || {
            checked
                .crc32c()
                .map_err(|e| FsError::io("read", &path)(e).into())
        })
        .await?;
        header
            .check_crc(found_crc32c)
            .map_err(|reason| self.corrupt(name, reason))?;
        self.check_reference(file, body.len(), found_crc32c)?;
        Ok(body)
    }

    /// Downloads `name` into a temporary file in `spill` in pieces if it is large: its payload
    /// and its header; `None` if it is small (read it whole).
    async fn download_large(
        &self,
        op: &Operator,
        state: &ObjectDir,
        name: &str,
        spill: &Path,
    ) -> Result<Option<(StateBytes, Vec<u8>)>, CheckpointError> {
        let path = state.path(name);
        let size = match op.stat(&path).await {
            Ok(meta) => meta.content_length(),
            Err(err) if err.kind() == opendal::ErrorKind::NotFound => {
                return Err(CheckpointError::StateFileNotFound {
                    store: self.store.clone(),
                    name: name.to_owned(),
                });
            }
            Err(source) => {
                return Err(StorageError::Object {
                    op: "stat",
                    path,
                    source: Box::new(source),
                }
                .into());
            }
        };
        if size <= len_u64(HEADER_LEN).saturating_add(IN_MEMORY_MAX) {
            return Ok(None);
        }
        let dir = spill.to_path_buf();
        let temp = location::blocking(&dir.clone(), move || {
            StateBytes::temp_file_in(&dir)
                .map_err(|e| FsError::io("create a temporary file in", &dir)(e).into())
        })
        .await?;
        let temp = Arc::new(temp);
        // The header as it comes, and the payload's CRC32C as it is written.
        let (mut header, mut crc) = (Vec::with_capacity(HEADER_LEN), 0);
        let mut at = 0;
        while at < size {
            let want = (size - at).min(len_u64(WRITE_CHUNK));
            let piece = state.read_range(name, at, want).await?.to_vec();
            if piece.is_empty() {
                return Err(self.corrupt(
                    name,
                    FormatError::Truncated {
                        declared: size,
                        actual: at,
                    },
                ));
            }
            let in_header = (HEADER_LEN - header.len()).min(piece.len());
            header.extend_from_slice(&piece[..in_header]);
            crc = crc32c::crc32c_append(crc, &piece[in_header..]);
            let (file, spill) = (Arc::clone(&temp), spill.to_path_buf());
            let written = len_u64(piece.len());
            location::blocking(&spill.clone(), move || {
                use std::os::unix::fs::FileExt;
                file.write_all_at(&piece, at)
                    .map_err(|e| FsError::io("write a temporary file in", &spill)(e).into())
            })
            .await?;
            at += written;
        }
        let header_len = len_u64(header.len());
        let payload = StateBytes::from_shared_file(temp, header_len, size - header_len, Some(crc));
        Ok(Some((payload, header)))
    }

    fn corrupt(&self, name: &str, reason: FormatError) -> CheckpointError {
        CheckpointError::StateFileCorrupt {
            store: self.store.clone(),
            name: name.to_owned(),
            reason,
        }
    }

    /// Checks a state file's payload length and CRC32C against its reference.
    fn check_reference(
        &self,
        file: &StateFileRef,
        found_len: u64,
        found_crc32c: u32,
    ) -> Result<(), CheckpointError> {
        if found_len != file.len || found_crc32c != file.crc32c {
            return Err(CheckpointError::StateFileMismatch {
                store: self.store.clone(),
                name: file.name.clone(),
                expected_len: file.len,
                found_len,
                expected_crc32c: file.crc32c,
                found_crc32c,
            });
        }
        Ok(())
    }

    /// Reads the state file `file` refers to, checking its frame, then its length and CRC32C
    /// against the reference.
    ///
    /// # Errors
    ///
    /// [`CheckpointError::StateFileNotFound`], [`CheckpointError::StateFileCorrupt`],
    /// [`CheckpointError::StateFileMismatch`], [`CheckpointError::InvalidStateFileName`] or a
    /// storage error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn read_state_file(&self, file: &StateFileRef) -> Result<Vec<u8>, CheckpointError> {
        let name = &file.name;
        if StateFileName::parse(name).is_none() {
            return Err(CheckpointError::InvalidStateFileName {
                store: self.store.clone(),
                name: name.clone(),
            });
        }
        let Some(mut bytes) = self.backend.read(Area::State, name).await? else {
            return Err(CheckpointError::StateFileNotFound {
                store: self.store.clone(),
                name: name.clone(),
            });
        };
        let payload = decode_state_file(&bytes).map_err(|reason| self.corrupt(name, reason))?;
        let (found_len, found_crc32c) = (len_u64(payload.len()), crc32c::crc32c(payload));
        self.check_reference(file, found_len, found_crc32c)?;
        let header = bytes.len() - payload.len();
        bytes.drain(..header);
        Ok(bytes)
    }
}

/// The local state file at `path` opened for reading in pieces if it is large: its payload
/// (a range of the open file) and its header; `None` if it is small (read it whole) or absent
/// (the whole read reports that).
fn open_large(path: &Path) -> Result<Option<(StateBytes, Vec<u8>)>, StorageError> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(FsError::io("open", path)(err).into()),
    };
    let size = file.metadata().map_err(FsError::io("stat", path))?.len();
    if size <= len_u64(HEADER_LEN).saturating_add(IN_MEMORY_MAX) {
        return Ok(None);
    }
    // Larger than the header: read it whole.
    let mut header = vec![0; HEADER_LEN];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0)
        .map_err(FsError::io("read", path))?;
    let header_len = len_u64(HEADER_LEN);
    Ok(Some((
        StateBytes::from_file(file, header_len, size - header_len),
        header,
    )))
}
