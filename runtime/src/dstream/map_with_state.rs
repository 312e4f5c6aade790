//! `map_with_state`: per-key state touched only by keys with new data or timing out (Spark's
//! `mapWithState` with a `StateSpec`).
//!
//! For every value of a batch, in arrival order within its partition, the mapping function is
//! called with the key, the value and the key's [`State`]; what it returns is the mapped
//! stream's element. Keys without values in a batch are not touched — unless the spec has a
//! [`timeout`](StateSpec::timeout): a key whose state was not updated for longer than it is
//! removed, after one last call with no value and [`State::is_timing_out`] true.
//! [`MapWithStateDStream::state_snapshots`] is every key's state after each batch.
//!
//! The state is versioned per batch and checkpointed under the operator's
//! [`uid`](MapWithStateDStream::uid), like [`DStream::update_state_by_key`]'s, so it crosses
//! driver restarts. Differences from Spark: timeouts are checked every batch (Spark checks them
//! only at its state checkpoints, every 10 batches by default), so a key times out in the
//! first batch more than `timeout` after its last update; the state of a partition is copied
//! when a batch changes it (no delta chains), so a batch costs time proportional to its
//! partition's state, while the mapping function is only called for the keys touched.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::graph::{BatchCx, Compute, GraphShared, Lifecycle, Node};
use super::memo::Memo;
use super::schema::{Hook, migrate_encoding};
use super::state::{Piece, Versions};
use super::state_backend::part::{Next, StatePart};
use super::{DStream, Data, Key, StableMap};
use crate::error::{ComputeError, ComputeResult};
use weir_actors::checkpoint::{CheckpointId, StateBytes, StateFileRef};

/// A key's state as the mapping function of [`DStream::map_with_state`] sees it (Spark's
/// `State`): read it, update it, remove it.
///
/// Updating or removing the state of a key that is timing out, or updating or removing a
/// state already removed in the same call, is a programming error: the batch fails with an
/// error saying which (as Spark's `IllegalArgumentException`).
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    updated: bool,
    removed: bool,
    timing_out: bool,
    misuse: Option<&'static str>,
}

impl<S> State<S> {
    fn wrap(value: Option<S>) -> Self {
        State {
            value,
            updated: false,
            removed: false,
            timing_out: false,
            misuse: None,
        }
    }

    fn timing_out(value: S) -> Self {
        State {
            timing_out: true,
            ..State::wrap(Some(value))
        }
    }

    /// Whether the key has a state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The key's state, if it has one (Spark's `getOption`).
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the key's state (it counts as updated now, for the timeout).
    pub fn update(&mut self, state: S) {
        if self.timing_out {
            self.misuse
                .get_or_insert("the state of a key that is timing out cannot be updated");
        } else if self.removed {
            self.misuse
                .get_or_insert("the state cannot be updated after it was removed");
        } else {
            self.value = Some(state);
            self.updated = true;
        }
    }

    /// Removes the key's state.
    pub fn remove(&mut self) {
        if self.timing_out {
            self.misuse.get_or_insert(
                "the state of a key that is timing out cannot be removed (it is removed anyway)",
            );
        } else if self.removed {
            self.misuse
                .get_or_insert("the state cannot be removed twice");
        } else {
            self.value = None;
            self.updated = false;
            self.removed = true;
        }
    }

    /// Whether the key is timing out: this is the last call for it, with no value, and its
    /// state is removed after it.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }

    /// Whether the state was updated in this call.
    pub fn is_updated(&self) -> bool {
        self.updated
    }

    /// Whether the state was removed in this call.
    pub fn is_removed(&self) -> bool {
        self.removed
    }
}

type MappingFn<K, V, S, T> = dyn Fn(u64, &K, Option<&V>, &mut State<S>) -> Option<T> + Send + Sync;

/// What [`DStream::map_with_state`] does (Spark's `StateSpec`): the mapping function and its
/// options.
pub struct StateSpec<K, V, S, T> {
    func: Arc<MappingFn<K, V, S, T>>,
    initial: Vec<(K, S)>,
    partitions: Option<usize>,
    timeout: Option<Duration>,
}

impl<K, V, S, T> fmt::Debug for StateSpec<K, V, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateSpec")
            .field("initial_keys", &self.initial.len())
            .field("partitions", &self.partitions)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<K: Key, V: Data, S: Data, T: Data> StateSpec<K, V, S, T> {
    /// A spec with `f(key, value, state) -> mapped` (Spark's simple `StateSpec.function`):
    /// one mapped element per call. `value` is `None` only when the key is timing out.
    pub fn function(
        f: impl Fn(&K, Option<&V>, &mut State<S>) -> T + Send + Sync + 'static,
    ) -> Self {
        Self::function_with_time(move |_, k, v, s| Some(f(k, v, s)))
    }

    /// A spec with `f(batch_time_ms, key, value, state) -> Option<mapped>` (Spark's
    /// `StateSpec.function` with the batch time): `None` maps to nothing.
    pub fn function_with_time(
        f: impl Fn(u64, &K, Option<&V>, &mut State<S>) -> Option<T> + Send + Sync + 'static,
    ) -> Self {
        StateSpec {
            func: Arc::new(f),
            initial: Vec::new(),
            partitions: None,
            timeout: None,
        }
    }

    /// The state of keys before the first batch (used when the operator starts without
    /// state in the checkpoint); for the timeout they count as updated in the first batch.
    #[must_use]
    pub fn initial_state(mut self, entries: impl IntoIterator<Item = (K, S)>) -> Self {
        self.initial = entries.into_iter().collect();
        self
    }

    /// Into how many partitions keys are hashed (default: the context's parallelism).
    #[must_use]
    pub fn num_partitions(mut self, partitions: usize) -> Self {
        self.partitions = Some(partitions.max(1));
        self
    }

    /// Removes a key whose state was not updated for longer than `idle`, after calling the
    /// function once more for it with no value and [`State::is_timing_out`] true.
    #[must_use]
    pub fn timeout(mut self, idle: Duration) -> Self {
        self.timeout = Some(idle);
        self
    }
}

/// A key's state and the batch that last updated it (`None`: the initial state, as of the
/// first batch).
type Entry<S> = (S, Option<u64>);

/// The state and the mapped output, shared by the mapped stream and the snapshots.
struct Core<K, V, S, T> {
    input: Arc<Node<(K, Vec<V>)>>,
    func: Arc<MappingFn<K, V, S, T>>,
    timeout_ms: Option<u64>,
    initial: Vec<(K, S)>,
    state: Versions<K, Entry<S>>,
    mapped: Memo<Arc<Vec<T>>>,
    /// The migration hook of `S` (the time of the last update is kept as it was).
    migration: Hook<S>,
}

impl<K, V, S, T> Core<K, V, S, T>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
    T: Data,
{
    fn state_at(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<StatePart<K, Entry<S>>> {
        self.state
            .at(cx, part, &|cx, previous| self.step(cx, part, previous))
    }

    fn misused(state: &State<S>, time: u64) -> ComputeResult<()> {
        match state.misuse {
            Some(why) => Err(ComputeError::new(format!(
                "the mapping function misused the state in batch {time}: {why}"
            ))),
            None => Ok(()),
        }
    }

    fn step(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        previous: &StatePart<K, Entry<S>>,
    ) -> ComputeResult<Next<K, Entry<S>>> {
        let t = cx.time;
        let input = if self.input.active(t) {
            self.input.partition(cx, part)?
        } else {
            Arc::new(Vec::new())
        };
        if input.is_empty() && self.timeout_ms.is_none() {
            self.mapped
                .get_or_compute(t, part, || Ok(Arc::new(Vec::new())))?;
            return Ok(Next::Same);
        }
        // What this batch changed: `Some` the key's new state, `None` removed.
        let mut changes: StableMap<K, Option<Entry<S>>> = StableMap::default();
        let mut out = Vec::new();
        let mut reader = previous.reader();
        for (k, vs) in input.iter() {
            for v in vs {
                let current = match changes.get(k) {
                    Some(changed) => changed.as_ref().map(|(s, _)| s.clone()),
                    None => reader.get(k)?.map(|(s, _)| s),
                };
                let mut state = State::wrap(current);
                let mapped = (self.func)(t, k, Some(v), &mut state);
                Self::misused(&state, t)?;
                if state.removed {
                    changes.insert(k.clone(), None);
                } else if state.updated
                    && let Some(s) = state.value
                {
                    changes.insert(k.clone(), Some((s, Some(t))));
                }
                out.extend(mapped);
            }
        }
        drop(reader);
        if let Some(timeout) = self.timeout_ms {
            let threshold = t.saturating_sub(timeout);
            // Keys with the initial state count as updated in the first batch.
            let mut idle = Vec::new();
            let mut stamped = Vec::new();
            previous.for_each(|k, (s, updated)| {
                if changes.contains_key(k) {
                    return Ok(());
                }
                match updated {
                    None => stamped.push((k.clone(), s.clone())),
                    Some(u) if *u < threshold => idle.push((k.clone(), s.clone())),
                    Some(_) => {}
                }
                Ok(())
            })?;
            for (k, s) in stamped {
                changes.insert(k, Some((s, Some(t))));
            }
            for (k, changed) in &mut changes {
                if let Some((s, updated)) = changed
                    && *updated.get_or_insert(t) < threshold
                {
                    idle.push((k.clone(), s.clone()));
                }
            }
            for (k, s) in idle {
                changes.insert(k.clone(), None);
                let mut state = State::timing_out(s);
                let mapped = (self.func)(t, &k, None, &mut state);
                Self::misused(&state, t)?;
                out.extend(mapped);
            }
        }
        self.mapped.get_or_compute(t, part, || Ok(Arc::new(out)))?;
        Ok(Next::Changes(changes))
    }
}

/// The mapped stream: owns the state's lifecycle.
struct Mapped<K, V, S, T>(Arc<Core<K, V, S, T>>);

impl<K, V, S, T> Compute<T> for Mapped<K, V, S, T>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
    T: Data,
{
    fn partitions(&self) -> usize {
        self.0.state.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<T>> {
        self.0.state_at(cx, part)?;
        self.0
            .mapped
            .get(cx.time, part)
            .map(|m| m.as_ref().clone())
            .ok_or_else(|| {
                ComputeError::new(format!(
                    "the mapped output of batch {} (partition {part}) is no longer in memory",
                    cx.time
                ))
            })
    }
    fn evict_through(&self, time: u64) {
        self.0.mapped.evict_through(time);
    }
    fn remembered(&self) -> Vec<u64> {
        let mut times = self.0.mapped.times();
        times.extend(self.0.state.versions.times());
        times
    }
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl<K, V, S, T> Lifecycle for Mapped<K, V, S, T>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
    T: Data,
{
    fn snapshot(&self, _: &GraphShared, through: Option<u64>) -> ComputeResult<Option<Vec<u8>>> {
        self.0.state.snapshot(through).map(Some)
    }
    fn snapshot_piece(
        &self,
        _: &GraphShared,
        through: Option<u64>,
        id: CheckpointId,
    ) -> ComputeResult<Option<Piece>> {
        self.0.state.snapshot_piece(through, id).map(Some)
    }
    fn checkpoint_ended(&self, id: CheckpointId, written: Option<&[StateFileRef]>) {
        self.0.state.checkpoint_ended(id, written);
    }
    fn restore_chain(
        &self,
        _: &GraphShared,
        base: &StateBytes,
        deltas: &[StateBytes],
        chain: &[StateFileRef],
    ) -> ComputeResult<()> {
        self.0.mapped.clear();
        self.0.state.restore_chain(base, deltas, chain)
    }
    fn restore_bytes(&self, _: &GraphShared, bytes: &StateBytes) -> ComputeResult<()> {
        self.0.mapped.clear();
        self.0.state.restore_bytes(Some(bytes))
    }
    fn state_type(&self) -> &'static str {
        std::any::type_name::<(K, Entry<S>)>()
    }
    fn set_migration(&self, hook: Box<dyn std::any::Any + Send + Sync>) -> bool {
        self.0.migration.set(hook)
    }
    fn migrates(&self) -> bool {
        self.0.migration.get().is_some()
    }
    fn migrate(
        &self,
        from: u32,
        bytes: &[u8],
        delta: bool,
        migrated: &mut u64,
    ) -> Result<Vec<u8>, String> {
        let hook = self
            .0
            .migration
            .get()
            .ok_or("the operator has no state migration")?;
        // A stored entry is `(state, last update)`: the hook reads the state, then the time.
        let entry = |old: &[u8]| -> Result<(Entry<S>, usize), String> {
            let (state, used) = Hook::value(hook.as_ref(), from, old)?;
            let (updated, rest): (Option<u64>, _) =
                postcard::take_from_bytes(old.get(used..).unwrap_or_default())
                    .map_err(|e| format!("decoding the time of a key's last update: {e}"))?;
            Ok(((state, updated), old.len() - rest.len()))
        };
        migrate_encoding::<K, Entry<S>>(bytes, delta, &entry, migrated)
    }
    fn restore(&self, _: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.0.mapped.clear();
        match bytes {
            Some(_) => self.0.state.restore(bytes),
            None => self.0.state.seed(
                self.0
                    .initial
                    .iter()
                    .map(|(k, s)| (k.clone(), (s.clone(), None))),
            ),
        }
    }
    fn maintained(&self) -> bool {
        true
    }
    fn completed(&self, _: &GraphShared, time: u64) {
        self.0.state.completed(time);
    }
}

/// Every key's state after each batch.
struct Snapshots<K, V, S, T>(Arc<Core<K, V, S, T>>);

impl<K, V, S, T> Compute<(K, S)> for Snapshots<K, V, S, T>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
    S: Data + Serialize + DeserializeOwned,
    T: Data,
{
    fn partitions(&self) -> usize {
        self.0.state.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<(K, S)>> {
        let state = self.0.state_at(cx, part)?;
        state.collect(|k, (s, _)| (k.clone(), s.clone()))
    }
}

/// What [`DStream::map_with_state`] returns: the mapped stream (it derefs to it) and the
/// stream of state snapshots.
pub struct MapWithStateDStream<K, S, T> {
    mapped: DStream<T>,
    snapshots: DStream<(K, S)>,
}

impl<K, S, T> Clone for MapWithStateDStream<K, S, T> {
    fn clone(&self) -> Self {
        MapWithStateDStream {
            mapped: self.mapped.clone(),
            snapshots: self.snapshots.clone(),
        }
    }
}

impl<K, S, T> fmt::Debug for MapWithStateDStream<K, S, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapWithStateDStream")
            .field("mapped", &self.mapped)
            .field("snapshots", &self.snapshots)
            .finish()
    }
}

impl<K, S, T> Deref for MapWithStateDStream<K, S, T> {
    type Target = DStream<T>;
    fn deref(&self) -> &DStream<T> {
        &self.mapped
    }
}

impl<K: Data, S: Data, T: Data> MapWithStateDStream<K, S, T> {
    /// Every key's state after each batch (Spark's `stateSnapshots`).
    pub fn state_snapshots(&self) -> DStream<(K, S)> {
        self.snapshots.clone()
    }

    /// The mapped stream.
    pub fn mapped(&self) -> DStream<T> {
        self.mapped.clone()
    }

    /// Sets the operator's stable id (see [`DStream::uid`]): the state is checkpointed under
    /// it; the snapshot stream gets `<id>/snapshots`.
    ///
    /// # Panics
    ///
    /// If the context has already started.
    #[must_use]
    pub fn uid(self, id: impl Into<String>) -> Self {
        let id = id.into();
        MapWithStateDStream {
            snapshots: self.snapshots.uid(format!("{id}/snapshots")),
            mapped: self.mapped.uid(id),
        }
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data,
{
    /// Spark's `mapWithState`: for every value of a batch, `spec`'s function is called with
    /// the key, the value and the key's [`State`], and its result is an element of the
    /// returned stream. Only keys with values in the batch, or timing out, are touched; see
    /// [`StateSpec`] for the initial state, the partitions and the idle timeout, and
    /// [`MapWithStateDStream::state_snapshots`] for every key's state after each batch.
    ///
    /// The state is versioned per batch, checkpointed with every checkpoint under this
    /// operator's [`uid`](MapWithStateDStream::uid) and restored after a driver restart (the
    /// initial state applies only to a start without state in the checkpoint). When `S` changes
    /// shape, raise its [schema version](MapWithStateDStream::state_schema) and give a
    /// [migration](MapWithStateDStream::migrate_state).
    ///
    /// Differences from Spark: timeouts are checked every batch (Spark checks them only when
    /// it checkpoints the state, every 10 batches by default), so a key times out in the first
    /// batch more than the timeout after its last update; a partition's state is copied when a
    /// batch changes it (no delta chains), so a batch costs time proportional to its
    /// partition's state, while the function is called only for the keys touched.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::dstream::{QueueStream, State, StateSpec};
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let queue = QueueStream::new(true, 1);
    /// queue.push(vec!["a".to_owned(), "b".to_owned()]);
    /// queue.push(vec!["a".to_owned()]);
    /// let (totals, states) = (Collected::default(), Collected::default());
    /// let (q, t, s) = (queue.clone(), totals.clone(), states.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     // A running count per word; each occurrence maps to the count so far.
    ///     let spec = StateSpec::function(|_: &String, one: Option<&u64>, n: &mut State<u64>| {
    ///         let count = n.get().copied().unwrap_or(0) + one.copied().unwrap_or(0);
    ///         n.update(count);
    ///         count
    ///     });
    ///     let counts = ctx
    ///         .queue_stream(&q)
    ///         .map(|w: &String| (w.clone(), 1u64))
    ///         .map_with_state(spec)
    ///         .uid("word-counts");
    ///     t.collect(&counts);
    ///     s.collect(&counts.state_snapshots());
    /// })?;
    /// clock.run(2).await?;
    /// assert_eq!(totals.sorted(2000), vec![2]);
    /// assert_eq!(states.sorted(2000), vec![("a".to_owned(), 2), ("b".to_owned(), 1)]);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn map_with_state<S, T>(&self, spec: StateSpec<K, V, S, T>) -> MapWithStateDStream<K, S, T>
    where
        S: Data + Serialize + DeserializeOwned,
        T: Data,
    {
        let partitions = spec.partitions.unwrap_or_else(|| self.graph.parallelism());
        let input = self.group_by_key_into(partitions);
        let state = Versions::with_incremental(&self.graph, partitions, true);
        if let Err(e) = state.seed(
            spec.initial
                .iter()
                .map(|(k, s)| (k.clone(), (s.clone(), None))),
        ) {
            self.graph
                .invalidate(format!("map_with_state: its initial state: {e}"));
        }
        let core = Arc::new(Core {
            input: input.node.consumed(),
            func: spec.func,
            timeout_ms: spec
                .timeout
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            initial: spec.initial,
            state,
            mapped: Memo::default(),
            migration: Hook::default(),
        });
        let mapped = self.derive("map_with_state", Mapped(Arc::clone(&core)));
        let snapshots = self.derive("state_snapshots", Snapshots(core));
        MapWithStateDStream { mapped, snapshots }
    }
}
