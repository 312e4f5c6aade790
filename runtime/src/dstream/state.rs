//! Stateful transformations: state kept per key across batches, checkpointed, restored.
//!
//! State is versioned by batch: the version after batch `t` is computed from the version after
//! the batch before and `t`'s input, partition by partition (keys are hash-partitioned, so a
//! partition's state depends only on the same partition's input). Versions are kept until a
//! checkpoint as of a later batch has been snapshotted, so a checkpoint always carries the
//! state as of its completed batches even while later batches run.
//!
//! # Incremental checkpoints
//!
//! An operator whose batches change some keys (not all: `map_with_state`) can checkpoint as a
//! chain of state files: a base (the whole state) and deltas, each holding the keys changed
//! or removed since the chain's last written checkpoint with their state as of the snapshot
//! ([`Piece::Delta`]). Invariant: a delta covers every key changed since the newest
//! checkpoint heard written ([`Versions::checkpoint_ended`]) — the keys of every snapshot
//! since, whether its write failed or is in flight — so a failed write never leaves a gap, and
//! a chain only ever references files of a written checkpoint. While another snapshot's write
//! is in flight, or the chain outgrows its base ([`MAX_DELTAS`], or deltas larger than the
//! base), the snapshot is a new base instead (compaction).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use weir_actors::checkpoint::{CheckpointId, StateBytes, StateFileRef};

use super::graph::{BatchCx, Compute, GraphShared, Lifecycle, Node, STATE_FORMAT, format_header};
use super::memo::{Memo, lock};
use super::schema::{Hook, migrate_encoding};
use super::state_backend::part::{Decoded, Entries, Next, StatePart, Store};
use super::{DStream, Data, Key, StableMap, partition_of};
use crate::error::{ComputeError, ComputeResult};

/// Computes what a batch changes in a partition's state, from the state before it.
pub(crate) type Step<'a, K, S> =
    dyn Fn(BatchCx<'_>, &StatePart<K, S>) -> ComputeResult<Next<K, S>> + 'a;

/// The state before the first batch this run computes.
pub(crate) struct Base<K, S> {
    /// The batch the state is as of (`None`: before any batch).
    pub(crate) as_of: Option<u64>,
    /// Its partitions (`None`: not made yet — the backend failed; every batch fails).
    pub(crate) parts: Option<Vec<StatePart<K, S>>>,
    /// The encoded form, once computed (kept only if the backend says so).
    pub(crate) encoded: Option<Vec<u8>>,
}

/// The most deltas a chain has: the next snapshot after that many is a new base.
pub(crate) const MAX_DELTAS: usize = 16;

/// What an operator's snapshot for one checkpoint holds.
#[derive(Debug)]
pub(crate) enum Piece {
    /// The whole state, in the encoding [`restore`](Versions::restore) reads.
    Full(Vec<u8>),
    /// The whole state with its format header in front
    /// ([`STATE_FORMAT`](super::graph::STATE_FORMAT)), in a local file: how the disk backend
    /// hands on a state larger than memory.
    Framed(StateBytes),
    /// The chain of the newest written checkpoint, and one more delta for it.
    Delta {
        /// The files of that chain, base first.
        keep: Vec<StateFileRef>,
        /// The delta: `postcard` of `(as_of, [(key, Option<state>)])`.
        delta: Vec<u8>,
    },
}

/// A key a batch changed, with its state after the batch (`None`: removed).
type Change<K, S> = (K, Option<S>);

/// What incremental checkpoints of one operator remember (see the module docs).
struct Incremental<K, S> {
    /// The changes of each batch not yet snapshotted, in the order they were made.
    changed: BTreeMap<u64, Vec<Change<K, S>>>,
    /// The changes each snapshot since the newest written checkpoint covered (beyond the
    /// previous). A delta is made of them, not read back from the state: on the disk backend
    /// that was a B-tree lookup per changed key, most of them cache misses once the state
    /// outgrows the cache.
    epochs: BTreeMap<CheckpointId, Vec<Change<K, S>>>,
    /// Snapshots whose write has not ended.
    in_flight: BTreeSet<CheckpointId>,
    /// The newest checkpoint heard written (`CheckpointId(0)`: the restored one).
    written: Option<CheckpointId>,
    /// Its chain for this operator (empty: its state is not a chain).
    chain: Vec<StateFileRef>,
}

impl<K, S> Default for Incremental<K, S> {
    fn default() -> Self {
        Incremental {
            changed: BTreeMap::new(),
            epochs: BTreeMap::new(),
            in_flight: BTreeSet::new(),
            written: None,
            chain: Vec::new(),
        }
    }
}

/// Versioned per-key state: the machinery shared by the stateful operators. Where each
/// version lives is the operator's backend's business ([`Store`]).
pub(crate) struct Versions<K, S> {
    pub(crate) partitions: usize,
    pub(crate) versions: Memo<StatePart<K, S>>,
    pub(crate) base: Mutex<Base<K, S>>,
    store: Store,
    /// Whether to fold each batch as it completes (see [`completed`](Self::completed)).
    eager: bool,
    /// Incremental checkpoints, if the operator and the context use them.
    incremental: Option<Mutex<Incremental<K, S>>>,
}

impl<K, S> Versions<K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    /// Empty state in `partitions` partitions, kept by the graph's state backend, checkpointed
    /// in full.
    pub(crate) fn new(graph: &GraphShared, partitions: usize) -> Self {
        Self::with_incremental(graph, partitions, false)
    }

    /// Empty state in `partitions` partitions, kept by the graph's state backend; checkpointed
    /// incrementally if `incremental` and the context's setting say so. The operator's steps
    /// must then never answer [`Next::Replace`].
    pub(crate) fn with_incremental(
        graph: &GraphShared,
        partitions: usize,
        incremental: bool,
    ) -> Self {
        let store = Store::new(&graph.settings.state_backend, partitions);
        let parts = store.empty(partitions);
        if let Err(e) = &parts {
            graph.invalidate(format!("the state backend: {e}"));
        }
        Versions {
            partitions,
            versions: Memo::default(),
            base: Mutex::new(Base {
                as_of: None,
                parts: parts.ok(),
                encoded: None,
            }),
            eager: graph.settings.in_order && store.folds_eagerly(),
            store,
            incremental: (incremental && graph.settings.incremental_checkpoints)
                .then(|| Mutex::new(Incremental::default())),
        }
    }

    /// The state of partition `part` after batch `cx.time`, computed by `step(previous)` if
    /// not yet known.
    pub(crate) fn at(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        step: &Step<'_, K, S>,
    ) -> ComputeResult<StatePart<K, S>> {
        self.versions.get_or_compute(cx.time, part, || {
            let previous = self.before(cx, part, step)?;
            let next = step(cx, &previous)?;
            if let Some(incremental) = &self.incremental {
                match &next {
                    Next::Same => {}
                    Next::Changes(changes) => lock(incremental)
                        .changed
                        .entry(cx.time)
                        .or_default()
                        .extend(changes.iter().map(|(k, s)| (k.clone(), s.clone()))),
                    Next::Replace(_) => {
                        return Err(ComputeError::new(
                            "an operator checkpointed incrementally replaced its whole state",
                        ));
                    }
                }
            }
            self.store.next(&previous, cx.time, next)
        })
    }

    fn base_part(base: &Base<K, S>, part: usize) -> ComputeResult<StatePart<K, S>> {
        base.parts
            .as_ref()
            .and_then(|parts| parts.get(part))
            .cloned()
            .ok_or_else(|| ComputeError::new("the state backend could not be opened"))
    }

    /// The state of partition `part` before batch `cx.time`.
    fn before(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        step: &Step<'_, K, S>,
    ) -> ComputeResult<StatePart<K, S>> {
        let previous = cx.previous();
        if let Some(state) = self.versions.get(previous, part) {
            return Ok(state);
        }
        let base = lock(&self.base);
        match base.as_of {
            // The first batch after the base (or the very first batch).
            None => Self::base_part(&base, part),
            Some(as_of) if as_of >= previous => {
                if as_of > previous {
                    return Err(ComputeError::new(format!(
                        "batch {} is older than the restored state (as of batch {as_of})",
                        cx.time
                    )));
                }
                Self::base_part(&base, part)
            }
            // A batch in between has not been computed by this run yet: compute it first.
            Some(_) => {
                drop(base);
                let earlier = BatchCx {
                    time: previous,
                    graph: cx.graph,
                };
                self.at(earlier, part, step)
            }
        }
    }

    /// Makes the versions after batch `through` the base, and forgets older versions.
    fn fold(&self, base: &mut Base<K, S>, through: u64) -> ComputeResult<()> {
        let mut parts = Vec::with_capacity(self.partitions);
        for part in 0..self.partitions {
            parts.push(self.versions.get(through, part).ok_or_else(|| {
                ComputeError::new(format!(
                    "the state after batch {through} (partition {part}) is not in memory"
                ))
            })?);
        }
        let parts = self.store.fold(through, parts)?;
        *base = Base {
            as_of: Some(through),
            parts: Some(parts),
            encoded: None,
        };
        self.versions.evict_through(through);
        Ok(())
    }

    /// Batch `time` completed. With batches completing in order, every later checkpoint is as
    /// of `time` or later, so a backend that keeps only the base out of memory (the disk
    /// backend) folds it now: memory then holds the versions of the batches in flight only,
    /// however rarely checkpoints are taken.
    pub(crate) fn completed(&self, time: u64) {
        if !self.eager {
            return;
        }
        let mut base = lock(&self.base);
        if base.as_of.is_some_and(|as_of| as_of >= time) {
            return;
        }
        if let Err(e) = self.fold(&mut base, time) {
            // The versions stay in memory; the next checkpoint folds them (or fails).
            tracing::warn!("folding the state of batch {time} into the state backend: {e}");
        }
    }

    /// Encodes the state as of `completed_through`, and forgets older versions.
    pub(crate) fn snapshot(&self, completed_through: Option<u64>) -> ComputeResult<Vec<u8>> {
        let mut base = lock(&self.base);
        self.fold_for_snapshot(&mut base, completed_through)?;
        self.encode_base(&mut base)
    }

    /// Makes the state as of `completed_through` the base.
    fn fold_for_snapshot(
        &self,
        base: &mut Base<K, S>,
        completed_through: Option<u64>,
    ) -> ComputeResult<()> {
        if let Some(through) = completed_through {
            match base.as_of {
                Some(as_of) if as_of > through && self.eager => {
                    return Err(ComputeError::new(format!(
                        "the state as of batch {through} is no longer kept (it is as of batch \
                         {as_of}); batches completed out of order"
                    )));
                }
                Some(as_of) if as_of >= through => {}
                _ => self.fold(base, through)?,
            }
        }
        Ok(())
    }

    /// The whole encoding of the base.
    fn encode_base(&self, base: &mut Base<K, S>) -> ComputeResult<Vec<u8>> {
        if let Some(encoded) = &base.encoded {
            return Ok(encoded.clone());
        }
        let parts = base
            .parts
            .as_deref()
            .ok_or_else(|| ComputeError::new("the state backend could not be opened"))?;
        let encoded = self.store.encode(base.as_of, parts)?;
        if self.store.caches_encoding() {
            base.encoded = Some(encoded.clone());
        }
        Ok(encoded)
    }

    /// The whole state of the base as a snapshot: in a local file with the disk backend
    /// ([`Piece::Framed`]), else encoded in memory.
    fn base_piece(&self, base: &mut Base<K, S>) -> ComputeResult<Piece> {
        if base.parts.is_none() {
            return Err(ComputeError::new("the state backend could not be opened"));
        }
        match self
            .store
            .encode_to_file(base.as_of, &format_header(STATE_FORMAT))
        {
            Some(file) => file.map(Piece::Framed),
            None => self.encode_base(base).map(Piece::Full),
        }
    }

    /// The snapshot for checkpoint `id`, as of `completed_through`: the whole state, or a
    /// delta over the chain of the newest written checkpoint (see the module docs).
    pub(crate) fn snapshot_piece(
        &self,
        completed_through: Option<u64>,
        id: CheckpointId,
    ) -> ComputeResult<Piece> {
        let mut base = lock(&self.base);
        self.fold_for_snapshot(&mut base, completed_through)?;
        let Some(incremental) = &self.incremental else {
            return self.base_piece(&mut base);
        };
        let mut inc = lock(incremental);
        // The changes of the batches this snapshot covers.
        let mut epoch = Vec::new();
        if let Some(as_of) = base.as_of {
            let later = inc.changed.split_off(&as_of.saturating_add(1));
            for changes in std::mem::replace(&mut inc.changed, later).into_values() {
                epoch.extend(changes);
            }
        }
        inc.epochs.insert(id, epoch);
        let busy = !inc.in_flight.is_empty();
        inc.in_flight.insert(id);
        if inc.chain.is_empty() || busy || inc.chain.len() > MAX_DELTAS {
            drop(inc);
            return self.base_piece(&mut base);
        }
        // Every key changed since the chain's checkpoint, with its state now: the last change
        // of each (epochs and the batches in them are in order).
        let mut last: StableMap<&K, Option<&S>> = StableMap::default();
        for epoch in inc.epochs.values() {
            last.extend(epoch.iter().map(|(k, s)| (k, s.as_ref())));
        }
        let entries: Vec<(&K, Option<&S>)> = last.into_iter().collect();
        let delta = postcard::to_allocvec(&(base.as_of, entries))
            .map_err(|e| ComputeError::new(format!("encoding a state delta: {e}")))?;
        let (base_len, deltas_len) = match inc.chain.split_first() {
            Some((first, rest)) => (first.len, rest.iter().map(|f| f.len).sum::<u64>()),
            None => (0, 0),
        };
        if deltas_len.saturating_add(delta.len() as u64) > base_len {
            drop(inc);
            return self.base_piece(&mut base);
        }
        Ok(Piece::Delta {
            keep: inc.chain.clone(),
            delta,
        })
    }

    /// The write of checkpoint `id` ended: `Some(chain)` if written (the operator's files in
    /// it, empty if its state was not a chain), `None` if it failed.
    pub(crate) fn checkpoint_ended(&self, id: CheckpointId, written: Option<&[StateFileRef]>) {
        let Some(incremental) = &self.incremental else {
            return;
        };
        let mut inc = lock(incremental);
        if !inc.in_flight.remove(&id) {
            return;
        }
        if let Some(chain) = written
            && inc.written.is_none_or(|newest| newest < id)
        {
            inc.written = Some(id);
            inc.chain = chain.to_vec();
            inc.epochs = inc.epochs.split_off(&CheckpointId(id.0.saturating_add(1)));
        }
    }

    /// Replaces everything with a chain's state: `base` (the encoding
    /// [`restore`](Self::restore) reads), then each delta in order; `chain` names its files.
    /// The disk backend reads the base in pieces and one delta at a time.
    pub(crate) fn restore_chain(
        &self,
        base_bytes: &StateBytes,
        deltas: &[StateBytes],
        chain: &[StateFileRef],
    ) -> ComputeResult<()> {
        if !deltas.is_empty()
            && let Some(decoded) = self.store.load_chain(base_bytes, deltas)?
        {
            // The disk backend merged base and deltas in one pass.
            self.restore_with(|_, _| Ok(decoded))?;
            self.restart_chain(chain);
            return Ok(());
        }
        self.restore_bytes(Some(base_bytes))?;
        let mut base = lock(&self.base);
        let mut as_of = base.as_of;
        if self.store.changes_in_place() {
            // The disk backend: each delta's entries written into the base in order (a later
            // one's word on a key wins), one at a time — memory holds no delta decoded whole.
            for delta in deltas {
                let bytes = read_delta(delta)?;
                let (delta_as_of, entries) = Entries::<K, Option<S>>::open(&bytes)
                    .map_err(|e| ComputeError::new(format!("decoding a state delta: {e}")))?;
                as_of = as_of.max(delta_as_of);
                self.store.write_changes(entries)?;
            }
            base.as_of = as_of;
            base.encoded = None;
            drop(base);
            self.restart_chain(chain);
            return Ok(());
        }
        // The memory backend: the deltas merged, in order (a later one's word on a key wins),
        // then applied to the base at once: one copy of each partition.
        let mut changes: Vec<StableMap<K, Option<S>>> =
            (0..self.partitions).map(|_| StableMap::default()).collect();
        for delta in deltas {
            let bytes = read_delta(delta)?;
            let (delta_as_of, entries): (Option<u64>, Vec<(K, Option<S>)>) =
                postcard::from_bytes(&bytes)
                    .map_err(|e| ComputeError::new(format!("decoding a state delta: {e}")))?;
            as_of = as_of.max(delta_as_of);
            for (k, s) in entries {
                let part = partition_of(&k, self.partitions);
                if let Some(map) = changes.get_mut(part) {
                    map.insert(k, s);
                }
            }
        }
        if changes.iter().any(|c| !c.is_empty()) {
            // The disk backend layers by batch time: the changes' must be newer than the base's.
            let time = match (as_of, base.as_of) {
                (Some(t), Some(b)) if t > b => t,
                (Some(t), None) => t,
                (_, b) => b.map_or(0, |b| b.saturating_add(1)),
            };
            let parts = base
                .parts
                .take()
                .ok_or_else(|| ComputeError::new("the state backend could not be opened"))?;
            let mut next = Vec::with_capacity(parts.len());
            for (part, changes) in parts.iter().zip(changes) {
                next.push(self.store.next(part, time, Next::Changes(changes))?);
            }
            drop(parts);
            base.parts = Some(self.store.fold(time, next)?);
            base.encoded = None;
        }
        base.as_of = as_of;
        drop(base);
        self.restart_chain(chain);
        Ok(())
    }

    /// After a restore from `chain`: the next checkpoints' deltas go over it.
    fn restart_chain(&self, chain: &[StateFileRef]) {
        if let Some(incremental) = &self.incremental {
            let mut inc = lock(incremental);
            *inc = Incremental::default();
            inc.written = Some(CheckpointId(0));
            inc.chain = chain.to_vec();
        }
    }

    /// Replaces everything with the decoded state (or an empty one).
    pub(crate) fn restore(&self, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.restore_with(|store, partitions| match bytes {
            Some(bytes) => store.decode(partitions, bytes),
            None => Ok((None, store.empty(partitions)?)),
        })
    }

    /// [`restore`](Self::restore) of bytes in memory or in a file (read in pieces by the disk
    /// backend).
    pub(crate) fn restore_bytes(&self, bytes: Option<&StateBytes>) -> ComputeResult<()> {
        self.restore_with(|store, partitions| match bytes {
            Some(bytes) => store.decode_bytes(partitions, bytes),
            None => Ok((None, store.empty(partitions)?)),
        })
    }

    /// Replaces everything with what `decode` makes.
    fn restore_with(
        &self,
        decode: impl FnOnce(&Store, usize) -> ComputeResult<Decoded<K, S>>,
    ) -> ComputeResult<()> {
        if let Some(incremental) = &self.incremental {
            *lock(incremental) = Incremental::default();
        }
        self.versions.clear();
        let mut base = lock(&self.base);
        let (as_of, parts) = decode(&self.store, self.partitions)?;
        *base = Base {
            as_of,
            parts: Some(parts),
            encoded: None,
        };
        Ok(())
    }

    /// Replaces the state before the first batch with `entries` (an initial state).
    pub(crate) fn seed(&self, entries: impl IntoIterator<Item = (K, S)>) -> ComputeResult<()> {
        if let Some(incremental) = &self.incremental {
            *lock(incremental) = Incremental::default();
        }
        self.versions.clear();
        let mut base = lock(&self.base);
        let parts = self.store.seed(self.partitions, entries)?;
        *base = Base {
            as_of: None,
            parts: Some(parts),
            encoded: None,
        };
        Ok(())
    }
}

/// A delta's bytes: borrowed if in memory, else read from its file.
fn read_delta(delta: &StateBytes) -> ComputeResult<std::borrow::Cow<'_, [u8]>> {
    delta
        .bytes()
        .map_err(|e| ComputeError::new(format!("reading a state delta: {e}")))
}

type UpdateFn<V, S> = dyn Fn(&[V], Option<S>) -> Option<S> + Send + Sync;

/// `update_state_by_key`: every key's state updated every batch.
struct UpdateStateByKey<K, V, S> {
    input: Arc<Node<(K, Vec<V>)>>,
    update: Box<UpdateFn<V, S>>,
    state: Versions<K, S>,
    migration: Hook<S>,
}

impl<K, V, S> UpdateStateByKey<K, V, S>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
{
    fn step(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        previous: &StatePart<K, S>,
    ) -> ComputeResult<Next<K, S>> {
        let input = if self.input.active(cx.time) {
            self.input.partition(cx, part)?
        } else {
            Arc::new(Vec::new())
        };
        let mut next = StableMap::default();
        let mut touched: StableMap<&K, ()> = StableMap::default();
        let mut reader = previous.reader();
        for (k, vs) in input.iter() {
            touched.insert(k, ());
            if let Some(s) = (self.update)(vs, reader.get(k)?) {
                next.insert(k.clone(), s);
            }
        }
        drop(reader);
        previous.for_each(|k, s| {
            if !touched.contains_key(k)
                && let Some(s) = (self.update)(&[], Some(s.clone()))
            {
                next.insert(k.clone(), s);
            }
            Ok(())
        })?;
        Ok(Next::Replace(next))
    }
}

impl<K, V, S> Compute<(K, S)> for UpdateStateByKey<K, V, S>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
{
    fn partitions(&self) -> usize {
        self.state.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<(K, S)>> {
        let state = self
            .state
            .at(cx, part, &|cx, previous| self.step(cx, part, previous))?;
        state.collect(|k, s| (k.clone(), s.clone()))
    }
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl<K, V, S> Lifecycle for UpdateStateByKey<K, V, S>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
{
    fn snapshot(&self, _: &GraphShared, through: Option<u64>) -> ComputeResult<Option<Vec<u8>>> {
        self.state.snapshot(through).map(Some)
    }
    fn state_type(&self) -> &'static str {
        std::any::type_name::<(K, S)>()
    }
    fn snapshot_piece(
        &self,
        _: &GraphShared,
        through: Option<u64>,
        id: CheckpointId,
    ) -> ComputeResult<Option<Piece>> {
        self.state.snapshot_piece(through, id).map(Some)
    }
    fn restore(&self, _: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.state.restore(bytes)
    }
    fn restore_bytes(&self, _: &GraphShared, bytes: &StateBytes) -> ComputeResult<()> {
        self.state.restore_bytes(Some(bytes))
    }
    fn set_migration(&self, hook: Box<dyn std::any::Any + Send + Sync>) -> bool {
        self.migration.set(hook)
    }
    fn migrates(&self) -> bool {
        self.migration.get().is_some()
    }
    fn migrate(
        &self,
        from: u32,
        bytes: &[u8],
        delta: bool,
        migrated: &mut u64,
    ) -> Result<Vec<u8>, String> {
        let hook = self
            .migration
            .get()
            .ok_or("the operator has no state migration")?;
        migrate_encoding::<K, S>(
            bytes,
            delta,
            &|old| Hook::value(hook.as_ref(), from, old),
            migrated,
        )
    }
    fn maintained(&self) -> bool {
        true
    }
    fn completed(&self, _: &GraphShared, time: u64) {
        self.state.completed(time);
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
{
    /// Spark's `updateStateByKey`: after every batch, each key's state is
    /// `update(values of the key in the batch, previous state)`; `None` removes the key. The
    /// function is called for every key with state, every batch (also with no new values).
    /// The result is a stream of every key's state after each batch.
    ///
    /// The state is checkpointed with every checkpoint, under this operator's
    /// [`uid`](DStream::uid), with its [schema version](DStream::state_schema); when `S`
    /// changes shape, raise the version and give a [migration](DStream::migrate_state).
    #[track_caller]
    pub fn update_state_by_key<S>(
        &self,
        update: impl Fn(&[V], Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)>
    where
        S: Data + Serialize + DeserializeOwned,
    {
        let partitions = self.graph.parallelism();
        let input = self.group_by_key_into(partitions);
        self.derive(
            "update_state_by_key",
            UpdateStateByKey {
                input: input.node.consumed(),
                update: Box::new(update),
                state: Versions::new(&self.graph, partitions),
                migration: Hook::default(),
            },
        )
    }
}
