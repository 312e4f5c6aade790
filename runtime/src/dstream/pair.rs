//! Transformations of key-value streams: shuffles by key (reduce, group, combine), joins and
//! cogroups of two streams batch by batch.

use std::sync::Arc;

use super::graph::{BatchCx, Compute, Node};
use super::memo::Memo;
use super::{DStream, Data, Key, StableMap, partition_of, pull_all};
use crate::error::ComputeResult;

type Buckets<K, C> = Arc<Vec<Vec<(K, C)>>>;

/// Spark's `combineByKey`: each parent partition is combined by key and cut into one bucket
/// per output partition (memoised, so each is computed once however many reducers read it);
/// output partition `p` merges bucket `p` of every parent partition. The three functions are
/// type parameters, not boxed: called per record, they are inlined into the combine's loop.
pub(crate) struct Combine<K, V, C, Create, MergeValue, MergeCombiners> {
    parent: Arc<Node<(K, V)>>,
    partitions: usize,
    create: Create,
    merge_value: MergeValue,
    merge_combiners: MergeCombiners,
    map_side: Memo<Buckets<K, C>>,
}

impl<K, V, C, Create, MergeValue, MergeCombiners>
    Combine<K, V, C, Create, MergeValue, MergeCombiners>
where
    K: Key,
    V: Data,
    C: Data,
    Create: Fn(&V) -> C + Send + Sync + 'static,
    MergeValue: Fn(&mut C, &V) + Send + Sync + 'static,
    MergeCombiners: Fn(&mut C, C) + Send + Sync + 'static,
{
    fn buckets(&self, cx: BatchCx<'_>, q: usize) -> ComputeResult<Buckets<K, C>> {
        self.map_side.get_or_compute(cx.time, q, || {
            // Visited: a chain of maps before the shuffle runs inside this loop.
            let mut combined: StableMap<K, C> = StableMap::default();
            self.parent.visit(cx, q, &mut |chunk| {
                for (k, v) in chunk {
                    match combined.get_mut(k) {
                        Some(c) => (self.merge_value)(c, v),
                        None => {
                            combined.insert(k.clone(), (self.create)(v));
                        }
                    }
                }
            })?;
            let mut buckets: Vec<Vec<(K, C)>> = (0..self.partitions).map(|_| Vec::new()).collect();
            for (k, c) in combined {
                buckets[partition_of(&k, self.partitions)].push((k, c));
            }
            Ok(Arc::new(buckets))
        })
    }
}

impl<K, V, C, Create, MergeValue, MergeCombiners> Compute<(K, C)>
    for Combine<K, V, C, Create, MergeValue, MergeCombiners>
where
    K: Key,
    V: Data,
    C: Data,
    Create: Fn(&V) -> C + Send + Sync + 'static,
    MergeValue: Fn(&mut C, &V) + Send + Sync + 'static,
    MergeCombiners: Fn(&mut C, C) + Send + Sync + 'static,
{
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<(K, C)>> {
        // Parallel reducers compute different map partitions first; the merge is in
        // partition order.
        let map_side = pull_all(part, self.partitions, self.parent.partitions(), |q| {
            self.buckets(cx, q)
        })?;
        let mut merged: StableMap<K, C> = StableMap::default();
        for buckets in map_side {
            for (k, c) in &buckets[part] {
                match merged.get_mut(k) {
                    Some(acc) => (self.merge_combiners)(acc, c.clone()),
                    None => {
                        merged.insert(k.clone(), c.clone());
                    }
                }
            }
        }
        Ok(merged.into_iter().collect())
    }
    fn active(&self, time: u64) -> bool {
        self.parent.active(time)
    }
    fn evict_through(&self, time: u64) {
        self.map_side.evict_through(time);
    }
}

/// Two streams partitioned alike, zipped partition by partition into per-key groups.
struct CoGroup<K, V, W> {
    left: Arc<Node<(K, Vec<V>)>>,
    right: Arc<Node<(K, Vec<W>)>>,
}

impl<K: Key, V: Data, W: Data> Compute<(K, (Vec<V>, Vec<W>))> for CoGroup<K, V, W> {
    fn partitions(&self) -> usize {
        self.left.partitions()
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<(K, (Vec<V>, Vec<W>))>> {
        let mut groups: StableMap<K, (Vec<V>, Vec<W>)> = StableMap::default();
        let mut order = Vec::new();
        if self.left.active(cx.time) {
            for (k, vs) in self.left.partition(cx, part)?.iter() {
                order.push(k.clone());
                groups
                    .entry(k.clone())
                    .or_default()
                    .0
                    .extend(vs.iter().cloned());
            }
        }
        if self.right.active(cx.time) {
            for (k, ws) in self.right.partition(cx, part)?.iter() {
                let entry = groups.entry(k.clone()).or_insert_with(|| {
                    order.push(k.clone());
                    Default::default()
                });
                entry.1.extend(ws.iter().cloned());
            }
        }
        Ok(order
            .into_iter()
            .filter_map(|k| groups.remove(&k).map(|g| (k, g)))
            .collect())
    }
    fn active(&self, time: u64) -> bool {
        self.left.active(time) || self.right.active(time)
    }
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// Spark's `combineByKey` into `partitions` partitions: the values of each key in a batch
    /// combined into one `C`.
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(&V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(&mut C, &V) + Send + Sync + 'static,
        merge_combiners: impl Fn(&mut C, C) + Send + Sync + 'static,
        partitions: usize,
    ) -> DStream<(K, C)> {
        self.combine_named(
            "combine_by_key",
            create,
            merge_value,
            merge_combiners,
            partitions,
        )
    }

    pub(crate) fn combine_named<C: Data>(
        &self,
        kind: &'static str,
        create: impl Fn(&V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(&mut C, &V) + Send + Sync + 'static,
        merge_combiners: impl Fn(&mut C, C) + Send + Sync + 'static,
        partitions: usize,
    ) -> DStream<(K, C)> {
        self.derive(
            kind,
            Combine {
                parent: self.node.visited(),
                partitions: partitions.max(1),
                create,
                merge_value,
                merge_combiners,
                map_side: Memo::default(),
            },
        )
    }

    /// The values of each key in a batch combined by `f` (associative and commutative), into
    /// the default number of partitions.
    pub fn reduce_by_key(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> DStream<(K, V)> {
        self.reduce_by_key_into(f, self.graph.parallelism())
    }

    /// [`reduce_by_key`](Self::reduce_by_key) into `partitions` partitions.
    pub fn reduce_by_key_into(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        partitions: usize,
    ) -> DStream<(K, V)> {
        let f = Arc::new(f);
        let (f1, f2) = (Arc::clone(&f), f);
        self.combine_named(
            "reduce_by_key",
            V::clone,
            move |acc, v| *acc = f1(acc, v),
            move |acc, c| *acc = f2(acc, &c),
            partitions,
        )
    }

    /// The values of each key in a batch, in arrival order within each partition.
    pub fn group_by_key(&self) -> DStream<(K, Vec<V>)> {
        self.group_by_key_into(self.graph.parallelism())
    }

    /// [`group_by_key`](Self::group_by_key) into `partitions` partitions.
    pub fn group_by_key_into(&self, partitions: usize) -> DStream<(K, Vec<V>)> {
        self.combine_named(
            "group_by_key",
            |v: &V| vec![v.clone()],
            |acc: &mut Vec<V>, v: &V| acc.push(v.clone()),
            |acc: &mut Vec<V>, mut c: Vec<V>| acc.append(&mut c),
            partitions,
        )
    }

    /// Each value mapped by `f`, keys kept.
    pub fn map_values<U: Data>(
        &self,
        f: impl Fn(&V) -> U + Send + Sync + 'static,
    ) -> DStream<(K, U)> {
        self.map(move |(k, v)| (k.clone(), f(v)))
    }

    /// Each value mapped to any number of values, keys kept.
    pub fn flat_map_values<U: Data, I>(
        &self,
        f: impl Fn(&V) -> I + Send + Sync + 'static,
    ) -> DStream<(K, U)>
    where
        I: IntoIterator<Item = U>,
    {
        self.flat_map(move |(k, v)| f(v).into_iter().map(|u| (k.clone(), u)).collect::<Vec<_>>())
    }

    /// Per key, the values of both streams in the same batch (Spark's `cogroup`).
    #[allow(
        clippy::type_complexity,
        reason = "the element type is the documentation"
    )]
    pub fn cogroup<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (Vec<V>, Vec<W>))> {
        let n = self.graph.parallelism();
        let left = self.group_by_key_into(n);
        let right = other.group_by_key_into(n);
        self.derive(
            "cogroup",
            CoGroup {
                left: left.node.consumed(),
                right: right.node.consumed(),
            },
        )
    }

    /// Inner join of the two streams' batches at the same time.
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, W))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::with_capacity(vs.len() * ws.len());
            for v in vs {
                for w in ws {
                    out.push((k.clone(), (v.clone(), w.clone())));
                }
            }
            out
        })
    }

    /// Left outer join: every pair of `self`, with `None` where `other` has no value.
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (V, Option<W>))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::new();
            for v in vs {
                if ws.is_empty() {
                    out.push((k.clone(), (v.clone(), None)));
                }
                for w in ws {
                    out.push((k.clone(), (v.clone(), Some(w.clone()))));
                }
            }
            out
        })
    }

    /// Right outer join: every pair of `other`, with `None` where `self` has no value.
    pub fn right_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, W))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::new();
            for w in ws {
                if vs.is_empty() {
                    out.push((k.clone(), (None, w.clone())));
                }
                for v in vs {
                    out.push((k.clone(), (Some(v.clone()), w.clone())));
                }
            }
            out
        })
    }

    /// Full outer join: every key of either stream.
    #[allow(
        clippy::type_complexity,
        reason = "the element type is the documentation"
    )]
    pub fn full_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (Option<V>, Option<W>))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::new();
            match (vs.is_empty(), ws.is_empty()) {
                (true, _) => out.extend(ws.iter().map(|w| (k.clone(), (None, Some(w.clone()))))),
                (false, true) => {
                    out.extend(vs.iter().map(|v| (k.clone(), (Some(v.clone()), None))));
                }
                (false, false) => {
                    for v in vs {
                        for w in ws {
                            out.push((k.clone(), (Some(v.clone()), Some(w.clone()))));
                        }
                    }
                }
            }
            out
        })
    }
}

impl<T: Key> DStream<T> {
    /// Per distinct element of a batch, how often it occurs.
    pub fn count_by_value(&self) -> DStream<(T, u64)> {
        self.map(|x| (x.clone(), 1u64)).reduce_by_key(|a, b| a + b)
    }
}
