//! The DStream API: a stream of batches, each split into partitions, built from sources by
//! transformations and consumed by output operations.
//!
//! A [`DStream<T>`] is a cheap handle (clone it freely) on a node of the streaming graph. Like
//! Spark's, the graph is declared before the context starts; unlike Spark's, it is built from
//! the current code at every start (also when restoring from a checkpoint), and only data
//! crosses a restart: operator state and source positions, matched by each operator's stable
//! id ([`DStream::uid`]).
//!
//! Functions passed to transformations run on the executor workers, possibly more than once
//! per batch (a retried job, a batch re-run after a restart): they must be deterministic and
//! free of side effects. Side effects belong in output operations, which receive the batch's
//! identity (batch time, partition) so they can be made idempotent — the exactly-once sink
//! contract.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

pub(crate) mod graph;
pub(crate) mod input;
mod map_with_state;
pub(crate) mod memo;
mod ops;
mod output;
mod pair;
pub(crate) mod planned;
mod schema;
mod state;
pub(crate) mod state_backend;
mod window;

pub use graph::Partition;
pub use map_with_state::{MapWithStateDStream, State, StateSpec};
pub use ops::{transform_of, union_of};
pub use output::{Batch, BatchPartition};
pub use planned::{
    DirectStreamOptions, OffsetRange, OffsetSource, QueueStream, SIZE_CHUNK, StartingOffsets,
};
pub use schema::OldState;
pub use state_backend::{DiskStateOptions, StateBackend};

use crate::error::ComputeResult;
use graph::{GraphShared, Node};

/// What a stream can carry.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// What can key a pair stream: hashed to place each key in one partition.
pub trait Key: Data + Hash + Eq {}
impl<T: Data + Hash + Eq> Key for T {}

/// A hash map whose iteration order depends only on what was inserted, so that a batch
/// computed again — also after a restart — produces its output in the same order.
///
/// Hashed by foldhash with a fixed seed: deterministic, and several times faster than std's
/// SipHash on short keys such as words (the shuffle hashes every key once per record on the
/// map side). Like SipHash with its fixed keys before, it does not resist hash flooding by
/// someone who knows the seed.
pub(crate) type StableMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// The seed of [`partition_of`]'s hash: not [`StableMap`]'s (seed 0), so that the keys of one
/// partition do not share the low bits a partition's own hash table indexes by.
const PARTITION_SEED: u64 = 0x7765_6972_2d70_6172; // "weir-par"

/// The partition of `key` among `partitions` (stable across runs of the same binary; state
/// restored from a checkpoint is partitioned again by key, so a change of hash is safe).
pub(crate) fn partition_of<K: Hash>(key: &K, partitions: usize) -> usize {
    let hash = foldhash::fast::FixedState::with_seed(PARTITION_SEED).hash_one(key);
    (hash % partitions.max(1) as u64) as usize
}

/// The order in which consumer partition `part` of `consumers` pulls the `producers`
/// partitions of the stream it shuffles from: from its own share onwards, wrapping around.
/// Consumers run in parallel and a partition is computed once, by whoever asks first, while
/// the others wait for it (`memo`); if every consumer started at producer 0 they would queue
/// behind one another, one producer at a time, and the whole map side would run on one core.
pub(crate) fn pull_order(
    part: usize,
    consumers: usize,
    producers: usize,
) -> impl Iterator<Item = usize> {
    let start = part * producers / consumers.max(1);
    (0..producers).map(move |i| (start + i) % producers)
}

/// `fetch(q)` for every producer partition `q`, fetched in [`pull_order`] for consumer `part`
/// of `consumers`, returned in partition order (so what a consumer computes from them does not
/// depend on who computed what first).
pub(crate) fn pull_all<V>(
    part: usize,
    consumers: usize,
    producers: usize,
    mut fetch: impl FnMut(usize) -> ComputeResult<V>,
) -> ComputeResult<Vec<V>> {
    let mut pulled: Vec<Option<V>> = (0..producers).map(|_| None).collect();
    for q in pull_order(part, consumers, producers) {
        pulled[q] = Some(fetch(q)?);
    }
    Ok(pulled.into_iter().flatten().collect())
}

/// A stream of batches of `T`.
pub struct DStream<T> {
    pub(crate) node: Arc<Node<T>>,
    pub(crate) graph: Arc<GraphShared>,
}

impl<T> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            node: Arc::clone(&self.node),
            graph: Arc::clone(&self.graph),
        }
    }
}

impl<T> fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DStream")
            .field("uid", &self.node.meta.uid())
            .field("kind", &self.node.meta.kind)
            .finish()
    }
}

impl<T: Data> DStream<T> {
    pub(crate) fn from_node(graph: &Arc<GraphShared>, node: Arc<Node<T>>) -> Self {
        DStream {
            node,
            graph: Arc::clone(graph),
        }
    }

    /// Sets this operator's stable id (like Flink's `uid`): state and source positions in a
    /// checkpoint are matched to operators by it. A composite operator whose state is held by
    /// an inner node (e.g. the window inside `reduce_by_key_and_window`) names that node
    /// `<id>/window`. Without one, an operator's id is
    /// `<kind>-<n>` by creation order, which changes when operators are added before it — so
    /// give every stateful operator and every source an id before relying on restores across
    /// code changes.
    ///
    /// # Panics
    ///
    /// If the context has already started (the graph is fixed then).
    #[must_use]
    pub fn uid(self, id: impl Into<String>) -> Self {
        assert!(
            !self.graph.is_started(),
            "operator ids must be set before the streaming context starts"
        );
        let id = id.into();
        for (suffix, helper) in memo::lock(&self.node.helpers).iter() {
            *memo::lock(&helper.meta().uid) = format!("{id}/{suffix}");
            helper
                .meta()
                .uid_set
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        *memo::lock(&self.node.meta.uid) = id;
        self.node
            .meta
            .uid_set
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self
    }

    /// Makes `inner`, which holds this composite operator's state, take its id from this
    /// operator's: `<uid>/<suffix>`.
    pub(crate) fn owning<U: Data>(self, suffix: &'static str, inner: &DStream<U>) -> Self {
        memo::lock(&self.node.helpers)
            .push((suffix, Arc::clone(&inner.node) as Arc<dyn graph::AnyNode>));
        self
    }

    /// This operator's stable id.
    pub fn id(&self) -> String {
        self.node.meta.uid()
    }

    /// How many partitions each batch of this stream has.
    pub fn partitions(&self) -> usize {
        self.node.partitions()
    }

    #[track_caller]
    pub(crate) fn derive<U: Data>(
        &self,
        kind: &'static str,
        compute: impl graph::Compute<U>,
    ) -> DStream<U> {
        assert!(
            !self.graph.is_started(),
            "operators must be added before the streaming context starts"
        );
        DStream::from_node(&self.graph, self.graph.add_node(kind, compute))
    }
}
