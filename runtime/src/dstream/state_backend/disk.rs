//! The disk backend: one operator's state as of its last checkpoint in an embedded on-disk
//! B-tree ([redb]), and the changes of each later batch in memory, as layers over it.
//!
//! A version of a partition is the layers of the batches since the base, newest first, over
//! the base on disk: a key's state is the first layer's that has the key (a `None` there: the
//! key was removed), or the base's. A batch that replaces a whole partition
//! (`update_state_by_key`, which updates every key every batch) makes a layer that hides
//! everything below it. When batch `t` completes (one batch in flight) or a checkpoint is taken
//! as of `t`, the layers of `t`'s versions are written into the B-tree ("folded", sorted by key
//! in chunks, in transactions of at most `FOLD_CHUNK` changes), and `t` becomes the base: memory
//! holds only the layers of the batches not folded yet, and the B-tree's page cache, whose size
//! is set.
//!
//! Keys in the B-tree are the partition (4 bytes, big-endian) then the key's `postcard`
//! bytes; values are the state's `postcard` bytes — the bytes of the checkpoint encoding, so
//! encoding a checkpoint and loading one copy bytes without decoding states.
//!
//! Invariant: a version reads the same state for as long as it is read. Layers are never
//! changed; the B-tree changes only by a fold through a batch `t`, after which only versions
//! of batches at or after `t` are read, and for those the fold wrote exactly the layers they
//! read first (a key not in their layers was not changed since the old base, and the fold did
//! not change it either) — also while a fold is half-done, as those layers are read first.
//! Readers read committed snapshots of the B-tree (redb's MVCC).
//!
//! The file is a working copy, not a checkpoint: written without `fsync` (but one
//! commit in 16, so that the B-tree reuses the pages it frees), rebuilt from the checkpoint at every
//! start, and deleted when the operator is dropped.
//!
//! [redb]: https://docs.rs/redb

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use redb::{TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_actors::checkpoint::{StateBytes, StateWriter};

use super::config::DiskStateOptions;
use super::part::{Decoded, Entries, Next, ReadEntries, StatePart, decoding, encoding};
use crate::dstream::memo::lock;
use crate::dstream::{Data, Key, StableMap, partition_of};
use crate::error::{ComputeError, ComputeResult};

/// The B-tree's table, open in a read transaction.
pub(crate) type DiskTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

const TABLE: TableDefinition<'static, &[u8], &[u8]> = TableDefinition::new("state");

/// Every how many commits one is written durably (so that the B-tree reuses the pages it
/// freed: it does only after a durable commit).
const DURABLE_EVERY: u64 = 16;

/// The most changes one transaction of a fold writes.
const FOLD_CHUNK: usize = 1024;

/// The most changes sorted at once before they are written (in transactions of
/// [`FOLD_CHUNK`]): sorted, neighbouring changes share the B-tree's pages — at 2 M keys, a
/// restore's deltas were written 3 times faster than in the order they come in.
const SORT_CHUNK: usize = 64 * 1024;

/// The most bytes of changes sorted at once (large states fill fewer than [`SORT_CHUNK`]).
const SORT_CHUNK_BYTES: usize = 8 << 20;

/// No fold yet (since the last load).
const NOT_FOLDED: u64 = u64::MAX;

/// Numbers the state files of this process.
static FILES: AtomicU64 = AtomicU64::new(0);

fn store_error(e: impl std::fmt::Display) -> ComputeError {
    ComputeError::new(format!("the disk state store: {e}"))
}

/// Hands the memory the process freed back to the system: glibc keeps freed chunks in the
/// arena of the thread that allocated them, and gives back only the top of each heap by
/// itself; `malloc_trim(0)` releases every whole free page of every arena. A no-op elsewhere.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer; it walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One operator's state file.
pub(crate) struct DiskStore {
    options: DiskStateOptions,
    partitions: usize,
    path: PathBuf,
    /// Opened at first use.
    db: Mutex<Option<Arc<Database>>>,
    /// The batch the B-tree is as of ([`NOT_FOLDED`]: the state loaded, no batch folded since).
    folded: AtomicU64,
    /// Commits so far (see [`DURABLE_EVERY`]).
    folds: AtomicU64,
}

impl std::fmt::Debug for DiskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskStore")
            .field("path", &self.path)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        let opened = lock(&self.db).take();
        if opened.is_some() {
            drop(opened);
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!("removing the state file {}: {e}", self.path.display());
            }
        }
    }
}

/// The first bytes of partition `part`'s keys: big-endian, so that a partition's keys are one
/// range of the B-tree, in partition order.
#[allow(
    clippy::big_endian_bytes,
    reason = "the byte order is the key order of the B-tree"
)]
fn prefix(part: usize) -> [u8; 4] {
    u32::try_from(part).unwrap_or(u32::MAX).to_be_bytes()
}

impl DiskStore {
    pub(crate) fn new(options: DiskStateOptions, partitions: usize) -> Self {
        let n = FILES.fetch_add(1, Ordering::Relaxed);
        let path = options
            .dir
            .join(format!("weir-state-{}-{n}.redb", std::process::id()));
        DiskStore {
            options,
            partitions: partitions.max(1),
            path,
            db: Mutex::new(None),
            folded: AtomicU64::new(NOT_FOLDED),
            folds: AtomicU64::new(0),
        }
    }

    fn db(&self) -> ComputeResult<Arc<Database>> {
        let mut db = lock(&self.db);
        if let Some(db) = db.as_ref() {
            return Ok(Arc::clone(db));
        }
        std::fs::create_dir_all(&self.options.dir).map_err(|e| {
            store_error(format!(
                "creating the state directory {}: {e}",
                self.options.dir.display()
            ))
        })?;
        let opened = Database::builder()
            .set_cache_size(self.options.cache_bytes)
            .create(&self.path)
            .map_err(|e| store_error(format!("creating {}: {e}", self.path.display())))?;
        let opened = Arc::new(opened);
        *db = Some(Arc::clone(&opened));
        Ok(opened)
    }

    fn write(&self, durable: bool) -> ComputeResult<WriteTransaction> {
        let mut txn = self.db()?.begin_write().map_err(store_error)?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(store_error)?;
        Ok(txn)
    }

    /// The layers of a version still to read: those after the last fold.
    fn unfolded(&self, time: u64) -> bool {
        let folded = self.folded.load(Ordering::Acquire);
        folded == NOT_FOLDED || time > folded
    }

    fn base<K, S>(self: &Arc<Self>) -> Vec<StatePart<K, S>> {
        (0..self.partitions)
            .map(|part| {
                StatePart::Disk(Arc::new(DiskPart {
                    store: Arc::clone(self),
                    part,
                    layers: Vec::new(),
                }))
            })
            .collect()
    }

    /// Replaces everything with `entries`.
    pub(crate) fn seed<K, S>(
        self: &Arc<Self>,
        entries: impl IntoIterator<Item = (K, S)>,
    ) -> ComputeResult<Vec<StatePart<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        let txn = self.write(false)?;
        txn.delete_table(TABLE).map_err(store_error)?;
        {
            let mut table = txn.open_table(TABLE).map_err(store_error)?;
            for (k, s) in entries {
                let mut key = prefix(partition_of(&k, self.partitions)).to_vec();
                key = postcard::to_extend(&k, key).map_err(encoding)?;
                let state = postcard::to_allocvec(&s).map_err(encoding)?;
                table
                    .insert(key.as_slice(), state.as_slice())
                    .map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)?;
        self.folded.store(NOT_FOLDED, Ordering::Release);
        Ok(self.base())
    }

    /// Replaces everything with the checkpoint encoding `bytes`, entry by entry.
    pub(crate) fn load<K, S>(self: &Arc<Self>, bytes: &[u8]) -> ComputeResult<Decoded<K, S>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        self.load_from(bytes)
    }

    /// Replaces everything with the checkpoint encoding read from `input` in pieces, entry by
    /// entry (a state larger than memory is never in memory).
    pub(crate) fn load_from<K, S>(
        self: &Arc<Self>,
        input: impl std::io::Read,
    ) -> ComputeResult<Decoded<K, S>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        let (as_of, mut entries) = ReadEntries::<_, K, S>::open(input)?;
        let txn = self.write(false)?;
        txn.delete_table(TABLE).map_err(store_error)?;
        {
            let mut table = txn.open_table(TABLE).map_err(store_error)?;
            let mut key = Vec::new();
            while let Some(entry) = entries.next_raw() {
                let (k, _, key_bytes, state) = entry?;
                key.clear();
                key.extend_from_slice(&prefix(partition_of(&k, self.partitions)));
                key.extend_from_slice(key_bytes);
                table.insert(key.as_slice(), state).map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)?;
        self.folded.store(NOT_FOLDED, Ordering::Release);
        Ok((as_of, self.base()))
    }

    /// Replaces everything with a chain — the base encoding `base`, then `deltas` in order (a
    /// later one's word on a key wins) — in one pass: each delta is sorted by key into a
    /// temporary run file (one delta in memory at a time), then the base and the runs are
    /// merged into the B-tree in key order, so its pages are written once, in order. (Loading
    /// the base and then writing each delta into it rewrote pages all over the B-tree for
    /// every delta: at 10 M keys, 67 s against 10 s for a base alone.) `None`, and nothing
    /// changed, if the base is not in key order — written with another partition count —
    /// when the caller loads the base and writes the deltas into it instead.
    pub(crate) fn load_chain<K, S>(
        self: &Arc<Self>,
        base: &StateBytes,
        deltas: &[StateBytes],
    ) -> ComputeResult<Option<Decoded<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        let mut runs = Vec::with_capacity(deltas.len());
        let mut deltas_as_of = None;
        for delta in deltas {
            let bytes = delta
                .bytes()
                .map_err(|e| store_error(format!("reading a state delta: {e}")))?;
            let (as_of, mut entries) = Entries::<K, Option<S>>::open(&bytes)
                .map_err(|e| ComputeError::new(format!("decoding a state delta: {e}")))?;
            deltas_as_of = deltas_as_of.max(as_of);
            let mut changes: Vec<(Vec<u8>, Option<&[u8]>)> = Vec::new();
            while let Some(entry) = entries.next_raw() {
                let (k, s, key_bytes, state) = entry?;
                let mut key = prefix(partition_of(&k, self.partitions)).to_vec();
                key.extend_from_slice(key_bytes);
                // `Some(state)` is encoded as a 1 byte, then the state.
                changes.push((key, s.is_some().then(|| state.get(1..).unwrap_or_default())));
            }
            // Stable: a delta holds a key once, but keep the order regardless.
            changes.sort_by(|a, b| a.0.cmp(&b.0));
            runs.push(Run::write(&self.options.dir, &changes)?);
        }
        let (base_as_of, mut entries) = ReadEntries::<_, K, S>::open(base.reader())?;
        let txn = self.write(false)?;
        txn.delete_table(TABLE).map_err(store_error)?;
        {
            let mut table = txn.open_table(TABLE).map_err(store_error)?;
            let mut heads = runs
                .iter_mut()
                .map(Run::next)
                .collect::<ComputeResult<Vec<_>>>()?;
            // The base's next entry (while `in_base`), and the key being merged: buffers
            // reused from entry to entry.
            let (mut base_key, mut base_state, mut key) = (Vec::new(), Vec::new(), Vec::new());
            let mut in_base = self.next_base(&mut entries, &mut base_key, &mut base_state)?;
            loop {
                let smallest = heads
                    .iter()
                    .flatten()
                    .map(|(key, _)| key)
                    .chain(in_base.then_some(&base_key))
                    .min();
                let Some(smallest) = smallest else {
                    break;
                };
                key.clear();
                key.extend_from_slice(smallest);
                // The newest delta with the key decides; else the base.
                let mut change = None;
                for (head, run) in heads.iter_mut().zip(runs.iter_mut()) {
                    if head.as_ref().is_some_and(|(k, _)| *k == key) {
                        change = head.take().map(|(_, state)| state);
                        *head = run.next()?;
                    }
                }
                let from_base = in_base && base_key == key;
                let state = match &change {
                    Some(change) => change.as_deref(),
                    None => from_base.then_some(base_state.as_slice()),
                };
                if let Some(state) = state {
                    table.insert(key.as_slice(), state).map_err(store_error)?;
                }
                if from_base {
                    in_base = self.next_base(&mut entries, &mut base_key, &mut base_state)?;
                    if in_base && base_key <= key {
                        // Not in key order: nothing is committed.
                        return Ok(None);
                    }
                }
            }
        }
        txn.commit().map_err(store_error)?;
        self.folded.store(NOT_FOLDED, Ordering::Release);
        Ok(Some((base_as_of.max(deltas_as_of), self.base())))
    }

    /// Reads the next entry of a base into `key` (its B-tree key: the partition's prefix, then
    /// the key's bytes) and `state`; `false` at the end.
    fn next_base<R, K, S>(
        &self,
        entries: &mut ReadEntries<R, K, S>,
        key: &mut Vec<u8>,
        state: &mut Vec<u8>,
    ) -> ComputeResult<bool>
    where
        R: std::io::Read,
        K: Key + DeserializeOwned,
        S: DeserializeOwned,
    {
        let Some(entry) = entries.next_raw() else {
            return Ok(false);
        };
        let (k, _, key_bytes, state_bytes) = entry?;
        key.clear();
        key.extend_from_slice(&prefix(partition_of(&k, self.partitions)));
        key.extend_from_slice(key_bytes);
        state.clear();
        state.extend_from_slice(state_bytes);
        Ok(true)
    }

    /// `previous` changed by `next` in batch `time`.
    pub(crate) fn next<K: Key, S: Data>(
        &self,
        previous: &Arc<DiskPart<K, S>>,
        time: u64,
        next: Next<K, S>,
    ) -> StatePart<K, S> {
        let layer = match next {
            Next::Same => return StatePart::Disk(Arc::clone(previous)),
            Next::Changes(changes) if changes.is_empty() => {
                return StatePart::Disk(Arc::clone(previous));
            }
            Next::Changes(entries) => Layer {
                time,
                replace: false,
                entries,
            },
            Next::Replace(map) => Layer {
                time,
                replace: true,
                entries: map.into_iter().map(|(k, s)| (k, Some(s))).collect(),
            },
        };
        let mut layers = Vec::with_capacity(previous.layers.len() + 1);
        let replace = layer.replace;
        layers.push(Arc::new(layer));
        if !replace {
            layers.extend(
                previous
                    .layers
                    .iter()
                    .filter(|l| self.unfolded(l.time))
                    .cloned(),
            );
        }
        StatePart::Disk(Arc::new(DiskPart {
            store: Arc::clone(&previous.store),
            part: previous.part,
            layers,
        }))
    }

    /// Writes the layers of `parts`, the versions after batch `through`, into the B-tree.
    ///
    /// Sorted by key in chunks of [`SORT_CHUNK`], in transactions of at most [`FOLD_CHUNK`]
    /// changes: a B-tree transaction keeps every page it changes in memory until it commits,
    /// and changes spread over the keys touch most pages, so one transaction for a whole batch
    /// would hold most of the tree. Readers
    /// never see a fold half-done: every version read during the fold reads the folded
    /// layers first (they are trimmed only after the fold, by the versions made after it).
    pub(crate) fn fold<K, S>(
        self: &Arc<Self>,
        through: u64,
        parts: Vec<StatePart<K, S>>,
    ) -> ComputeResult<Vec<StatePart<K, S>>>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        if self.options.release_memory {
            release_freed_memory();
        }
        let mut chunk = Chunk::default();
        for part in &parts {
            let StatePart::Disk(p) = part else {
                return Err(ComputeError::new(
                    "a state version of one backend was given to another",
                ));
            };
            // The layers not written yet, oldest first, from the newest that replaces all.
            let mut layers: Vec<&Layer<K, S>> = Vec::new();
            for layer in p.layers.iter().filter(|l| self.unfolded(l.time)) {
                layers.push(layer);
                if layer.replace {
                    break;
                }
            }
            layers.reverse();
            if layers.first().is_some_and(|l| l.replace) {
                self.clear_partition(p.part)?;
            }
            let lo = prefix(p.part);
            for layer in layers {
                for (k, s) in &layer.entries {
                    let key = postcard::to_extend(k, lo.to_vec()).map_err(encoding)?;
                    let state = match s {
                        Some(s) => Some(postcard::to_allocvec(s).map_err(encoding)?),
                        None => None,
                    };
                    if chunk.push(key, state) {
                        self.apply(&mut chunk)?;
                    }
                }
            }
        }
        self.apply(&mut chunk)?;
        self.folded.store(through, Ordering::Release);
        Ok(self.base())
    }

    /// Writes `changes` (`Some` a key's new state, `None` the key removed), in order, into the
    /// B-tree, in transactions of at most [`FOLD_CHUNK`] changes: a restore applies a chain's
    /// deltas this way, one entry at a time, instead of merging them in memory first.
    pub(crate) fn write_changes<K, S>(
        &self,
        changes: impl Iterator<Item = ComputeResult<(K, Option<S>)>>,
    ) -> ComputeResult<()>
    where
        K: Key + Serialize + DeserializeOwned,
        S: Data + Serialize + DeserializeOwned,
    {
        let mut chunk = Chunk::default();
        for change in changes {
            let (k, s) = change?;
            let key = prefix(partition_of(&k, self.partitions)).to_vec();
            let key = postcard::to_extend(&k, key).map_err(encoding)?;
            let state = match s {
                Some(s) => Some(postcard::to_allocvec(&s).map_err(encoding)?),
                None => None,
            };
            if chunk.push(key, state) {
                self.apply(&mut chunk)?;
            }
        }
        self.apply(&mut chunk)
    }

    /// Writes `chunk` in key order (a key's changes in the order they were made: the last
    /// wins), in transactions of at most [`FOLD_CHUNK`] changes, and empties it.
    fn apply(&self, chunk: &mut Chunk) -> ComputeResult<()> {
        // Stable: a key's changes stay in their order.
        chunk.changes.sort_by(|a, b| a.0.cmp(&b.0));
        for part in chunk.changes.chunks(FOLD_CHUNK) {
            let txn = self.write(self.next_durable())?;
            {
                let mut table = txn.open_table(TABLE).map_err(store_error)?;
                for (key, state) in part {
                    match state {
                        Some(state) => {
                            table
                                .insert(key.as_slice(), state.as_slice())
                                .map_err(store_error)?;
                        }
                        None => {
                            table.remove(key.as_slice()).map_err(store_error)?;
                        }
                    }
                }
            }
            txn.commit().map_err(store_error)?;
        }
        chunk.changes.clear();
        chunk.bytes = 0;
        Ok(())
    }

    /// Removes every key of partition `part`, [`FOLD_CHUNK`] keys per transaction.
    fn clear_partition(&self, part: usize) -> ComputeResult<()> {
        let (lo, hi) = (prefix(part), prefix(part + 1));
        loop {
            let txn = self.write(self.next_durable())?;
            let removed = {
                let mut table = txn.open_table(TABLE).map_err(store_error)?;
                let mut keys = Vec::new();
                for entry in table
                    .range(lo.as_slice()..hi.as_slice())
                    .map_err(store_error)?
                    .take(FOLD_CHUNK)
                {
                    keys.push(entry.map_err(store_error)?.0.value().to_vec());
                }
                for key in &keys {
                    table.remove(key.as_slice()).map_err(store_error)?;
                }
                keys.len()
            };
            txn.commit().map_err(store_error)?;
            if removed < FOLD_CHUNK {
                return Ok(());
            }
        }
    }

    /// Whether the next commit is to be durable (one in [`DURABLE_EVERY`]).
    fn next_durable(&self) -> bool {
        self.folds.fetch_add(1, Ordering::Relaxed) % DURABLE_EVERY == DURABLE_EVERY - 1
    }

    /// The checkpoint encoding of the B-tree, as of `as_of`.
    pub(crate) fn encode(&self, as_of: Option<u64>) -> ComputeResult<Vec<u8>> {
        let mut out = Vec::new();
        self.encode_into(as_of, &mut out)?;
        Ok(out)
    }

    /// `header`, then the checkpoint encoding of the B-tree as of `as_of`, written into an
    /// anonymous temporary file in the backend's directory as it is read from a snapshot of
    /// the B-tree: a state larger than memory is never in memory.
    pub(crate) fn encode_to_file(
        &self,
        as_of: Option<u64>,
        header: &[u8],
    ) -> ComputeResult<StateBytes> {
        let dir = &self.options.dir;
        let file = StateBytes::temp_file_in(dir).map_err(|e| {
            store_error(format!(
                "creating a temporary file in {}: {e}",
                dir.display()
            ))
        })?;
        let mut out = StateWriter::new(file);
        let written = std::io::Write::write_all(&mut out, header)
            .map_err(|e| store_error(format!("writing a temporary file: {e}")))
            .and_then(|()| self.encode_into(as_of, &mut out));
        written?;
        let (bytes, _) = out
            .finish()
            .map_err(|e| store_error(format!("writing a temporary file: {e}")))?;
        Ok(bytes)
    }

    /// Writes the checkpoint encoding of the B-tree, as of `as_of`, into `out`.
    fn encode_into(&self, as_of: Option<u64>, out: &mut impl std::io::Write) -> ComputeResult<()> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(store_error)?;
        let table = txn.open_table(TABLE).map_err(store_error)?;
        let len = table.len().map_err(store_error)?;
        let write = |out: &mut dyn std::io::Write, bytes: &[u8]| {
            out.write_all(bytes)
                .map_err(|e| store_error(format!("writing the state's encoding: {e}")))
        };
        write(
            out,
            &postcard::to_allocvec(&(as_of, len)).map_err(encoding)?,
        )?;
        for entry in table.iter().map_err(store_error)? {
            let (key, state) = entry.map_err(store_error)?;
            write(out, key.value().get(4..).unwrap_or_default())?;
            write(out, state.value())?;
        }
        Ok(())
    }
}

/// A delta's changes sorted by key in an anonymous temporary file, read back in order
/// ([`DiskStore::load_chain`]). A record: the key's length (`u32`, little-endian) and bytes,
/// then 0 (removed) or 1 and the state's length and bytes.
struct Run {
    file: std::io::BufReader<std::fs::File>,
}

/// A change read from a [`Run`]: the B-tree key, and the new state (`None`: removed).
type Change = (Vec<u8>, Option<Vec<u8>>);

impl Run {
    /// Writes `changes` (sorted) into a temporary file in `dir`.
    fn write(dir: &std::path::Path, changes: &[(Vec<u8>, Option<&[u8]>)]) -> ComputeResult<Run> {
        use std::io::{Seek, Write};
        let failed =
            |e: std::io::Error| store_error(format!("a temporary file in {}: {e}", dir.display()));
        let file = StateBytes::temp_file_in(dir).map_err(failed)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
        for (key, state) in changes {
            out.write_all(&len(key.len())).map_err(failed)?;
            out.write_all(key).map_err(failed)?;
            match state {
                Some(state) => {
                    out.write_all(&[1]).map_err(failed)?;
                    out.write_all(&len(state.len())).map_err(failed)?;
                    out.write_all(state).map_err(failed)?;
                }
                None => out.write_all(&[0]).map_err(failed)?,
            }
        }
        let mut file = out.into_inner().map_err(|e| failed(e.into_error()))?;
        file.rewind().map_err(failed)?;
        Ok(Run {
            file: std::io::BufReader::with_capacity(1 << 20, file),
        })
    }

    /// The next change; `None` at the end.
    fn next(&mut self) -> ComputeResult<Option<Change>> {
        use std::io::{BufRead, Read};
        let failed = |e: std::io::Error| store_error(format!("reading a temporary file: {e}"));
        if self.file.fill_buf().map_err(failed)?.is_empty() {
            return Ok(None);
        }
        let mut bytes = |n: usize| -> ComputeResult<Vec<u8>> {
            let mut out = vec![0; n];
            self.file.read_exact(&mut out).map_err(failed)?;
            Ok(out)
        };
        let len = |b: Vec<u8>| {
            let mut word = [0u8; 4];
            word.copy_from_slice(b.get(..4).unwrap_or(&[0; 4]));
            u32::from_le_bytes(word) as usize
        };
        let key_len = len(bytes(4)?);
        let key = bytes(key_len)?;
        let state = match bytes(1)?.first() {
            Some(1) => {
                let state_len = len(bytes(4)?);
                Some(bytes(state_len)?)
            }
            _ => None,
        };
        Ok(Some((key, state)))
    }
}

/// Encoded changes waiting to be written: `Some` a key's new state, `None` the key removed.
#[derive(Default)]
struct Chunk {
    changes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl Chunk {
    /// Adds a change; whether the chunk is full ([`SORT_CHUNK`], [`SORT_CHUNK_BYTES`]).
    fn push(&mut self, key: Vec<u8>, state: Option<Vec<u8>>) -> bool {
        self.bytes += key.len() + state.as_ref().map_or(0, Vec::len);
        self.changes.push((key, state));
        self.changes.len() >= SORT_CHUNK || self.bytes >= SORT_CHUNK_BYTES
    }
}

/// What one batch changed in a partition.
struct Layer<K, S> {
    time: u64,
    /// Whether this is the whole partition (nothing below it is read).
    replace: bool,
    entries: StableMap<K, Option<S>>,
}

/// One version of one partition: layers over the base on disk.
pub(crate) struct DiskPart<K, S> {
    store: Arc<DiskStore>,
    part: usize,
    /// Newest first.
    layers: Vec<Arc<Layer<K, S>>>,
}

impl<K, S> DiskPart<K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    /// The state of `key`, reading the B-tree through `table` (opened if `None`).
    pub(crate) fn get_with(
        &self,
        key: &K,
        table: &mut Option<DiskTable>,
    ) -> ComputeResult<Option<S>> {
        for layer in &self.layers {
            if let Some(s) = layer.entries.get(key) {
                return Ok(s.clone());
            }
            if layer.replace {
                return Ok(None);
            }
        }
        let mut bytes = prefix(self.part).to_vec();
        bytes = postcard::to_extend(key, bytes).map_err(encoding)?;
        let table = match table {
            Some(table) => table,
            None => {
                let db = self.store.db()?;
                let txn = db.begin_read().map_err(store_error)?;
                table.insert(txn.open_table(TABLE).map_err(store_error)?)
            }
        };
        match table.get(bytes.as_slice()).map_err(store_error)? {
            Some(state) => postcard::from_bytes(state.value())
                .map(Some)
                .map_err(decoding),
            None => Ok(None),
        }
    }

    pub(crate) fn for_each(
        &self,
        f: &mut dyn FnMut(&K, &S) -> ComputeResult<()>,
    ) -> ComputeResult<()> {
        // What the layers say of each key they hold (the newest layer's word).
        let mut overlay: StableMap<&K, Option<&S>> = StableMap::default();
        let mut replaced = false;
        for layer in &self.layers {
            for (k, s) in &layer.entries {
                overlay.entry(k).or_insert(s.as_ref());
            }
            if layer.replace {
                replaced = true;
                break;
            }
        }
        if !replaced {
            let db = self.store.db()?;
            let txn = db.begin_read().map_err(store_error)?;
            let table = txn.open_table(TABLE).map_err(store_error)?;
            let (lo, hi) = (prefix(self.part), prefix(self.part + 1));
            for entry in table
                .range(lo.as_slice()..hi.as_slice())
                .map_err(store_error)?
            {
                let (key, state) = entry.map_err(store_error)?;
                let k: K = postcard::from_bytes(key.value().get(4..).unwrap_or_default())
                    .map_err(decoding)?;
                if overlay.contains_key(&k) {
                    continue;
                }
                let s: S = postcard::from_bytes(state.value()).map_err(decoding)?;
                f(&k, &s)?;
            }
        }
        for (k, s) in overlay {
            if let Some(s) = s {
                f(k, s)?;
            }
        }
        Ok(())
    }
}
