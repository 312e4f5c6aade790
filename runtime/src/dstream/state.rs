//! Stateful transformations: state kept per key across batches, checkpointed, restored.
//!
//! State is versioned by batch: the version after batch `t` is computed from the version after
//! the batch before and `t`'s input, partition by partition (keys are hash-partitioned, so a
//! partition's state depends only on the same partition's input). Versions are kept until a
//! checkpoint as of a later batch has been snapshotted, so a checkpoint always carries the
//! state as of its completed batches even while later batches run.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::graph::{BatchCx, Compute, GraphShared, Lifecycle, Node};
use super::memo::{Memo, lock};
use super::{DStream, Data, Key, StableMap, partition_of};
use crate::error::{ComputeError, ComputeResult};

/// A key's state after one batch.
pub(crate) type StatePart<K, S> = Arc<StableMap<K, S>>;

/// Computes a partition's state after a batch from the state before it (an operator whose
/// state does not change in a batch returns the same `Arc`).
pub(crate) type Step<'a, K, S> =
    dyn Fn(BatchCx<'_>, &StatePart<K, S>) -> ComputeResult<StatePart<K, S>> + 'a;

/// The state before the first batch this run computes.
pub(crate) struct Base<K, S> {
    /// The batch the state is as of (`None`: before any batch).
    pub(crate) as_of: Option<u64>,
    pub(crate) parts: Vec<StatePart<K, S>>,
    /// The encoded form, once computed.
    pub(crate) encoded: Option<Vec<u8>>,
}

impl<K, S> Base<K, S> {
    pub(crate) fn empty(partitions: usize) -> Self {
        Base {
            as_of: None,
            parts: (0..partitions)
                .map(|_| Arc::new(StableMap::default()))
                .collect(),
            encoded: None,
        }
    }
}

/// Versioned per-key state: the machinery shared by the stateful operators.
pub(crate) struct Versions<K, S> {
    pub(crate) partitions: usize,
    pub(crate) versions: Memo<StatePart<K, S>>,
    pub(crate) base: Mutex<Base<K, S>>,
}

impl<K, S> Versions<K, S>
where
    K: Key + Serialize + DeserializeOwned,
    S: Data + Serialize + DeserializeOwned,
{
    pub(crate) fn new(partitions: usize) -> Self {
        Versions {
            partitions,
            versions: Memo::default(),
            base: Mutex::new(Base::empty(partitions)),
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
            step(cx, &previous)
        })
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
            None => Ok(Arc::clone(&base.parts[part])),
            Some(as_of) if as_of >= previous => {
                if as_of > previous {
                    return Err(ComputeError::new(format!(
                        "batch {} is older than the restored state (as of batch {as_of})",
                        cx.time
                    )));
                }
                Ok(Arc::clone(&base.parts[part]))
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

    /// Encodes the state as of `completed_through`, and forgets older versions.
    pub(crate) fn snapshot(&self, completed_through: Option<u64>) -> ComputeResult<Vec<u8>> {
        let mut base = lock(&self.base);
        if let Some(through) = completed_through
            && base.as_of.is_none_or(|as_of| as_of < through)
        {
            let mut parts = Vec::with_capacity(self.partitions);
            for part in 0..self.partitions {
                parts.push(self.versions.get(through, part).ok_or_else(|| {
                    ComputeError::new(format!(
                        "the state after batch {through} (partition {part}) is not in memory"
                    ))
                })?);
            }
            *base = Base {
                as_of: Some(through),
                parts,
                encoded: None,
            };
            self.versions.evict_through(through);
        }
        if let Some(encoded) = &base.encoded {
            return Ok(encoded.clone());
        }
        let entries: Vec<(&K, &S)> = base.parts.iter().flat_map(|p| p.iter()).collect();
        let encoded = postcard::to_allocvec(&(base.as_of, entries))
            .map_err(|e| ComputeError::new(format!("encoding state: {e}")))?;
        base.encoded = Some(encoded.clone());
        Ok(encoded)
    }

    /// Replaces everything with the decoded state (or an empty one).
    pub(crate) fn restore(&self, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.versions.clear();
        let mut base = Base::empty(self.partitions);
        if let Some(bytes) = bytes {
            let (as_of, entries): (Option<u64>, Vec<(K, S)>) = postcard::from_bytes(bytes)
                .map_err(|e| ComputeError::new(format!("decoding state: {e}")))?;
            let mut parts: Vec<StableMap<K, S>> =
                (0..self.partitions).map(|_| StableMap::default()).collect();
            for (k, s) in entries {
                parts[partition_of(&k, self.partitions)].insert(k, s);
            }
            base.as_of = as_of;
            base.parts = parts.into_iter().map(Arc::new).collect();
        }
        *lock(&self.base) = base;
        Ok(())
    }

    /// Replaces the state before the first batch with `entries` (an initial state).
    pub(crate) fn seed(&self, entries: impl IntoIterator<Item = (K, S)>) {
        self.versions.clear();
        let mut parts: Vec<StableMap<K, S>> =
            (0..self.partitions).map(|_| StableMap::default()).collect();
        for (k, s) in entries {
            parts[partition_of(&k, self.partitions)].insert(k, s);
        }
        *lock(&self.base) = Base {
            as_of: None,
            parts: parts.into_iter().map(Arc::new).collect(),
            encoded: None,
        };
    }
}

type UpdateFn<V, S> = dyn Fn(&[V], Option<S>) -> Option<S> + Send + Sync;

/// `update_state_by_key`: every key's state updated every batch.
struct UpdateStateByKey<K, V, S> {
    input: Arc<Node<(K, Vec<V>)>>,
    update: Box<UpdateFn<V, S>>,
    state: Versions<K, S>,
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
        previous: &StableMap<K, S>,
    ) -> ComputeResult<StableMap<K, S>> {
        let input = if self.input.active(cx.time) {
            self.input.partition(cx, part)?
        } else {
            Arc::new(Vec::new())
        };
        let mut next = StableMap::default();
        let mut touched: StableMap<&K, ()> = StableMap::default();
        for (k, vs) in input.iter() {
            touched.insert(k, ());
            if let Some(s) = (self.update)(vs, previous.get(k).cloned()) {
                next.insert(k.clone(), s);
            }
        }
        for (k, s) in previous {
            if !touched.contains_key(k)
                && let Some(s) = (self.update)(&[], Some(s.clone()))
            {
                next.insert(k.clone(), s);
            }
        }
        Ok(next)
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
        let state = self.state.at(cx, part, &|cx, previous| {
            self.step(cx, part, previous).map(Arc::new)
        })?;
        Ok(state.iter().map(|(k, s)| (k.clone(), s.clone())).collect())
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
    fn restore(&self, _: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.state.restore(bytes)
    }
    fn maintained(&self) -> bool {
        true
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
    /// [`uid`](DStream::uid).
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
                state: Versions::new(partitions),
            },
        )
    }
}
