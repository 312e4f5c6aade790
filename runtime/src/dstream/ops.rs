//! Stateless transformations of one batch at a time.

use std::sync::Arc;

use super::graph::{BatchCx, Compute, Node, Partition};
use super::memo::Memo;
use super::{DStream, Data};
use crate::error::{ComputeError, ComputeResult};

type PartFn<T, U> = dyn Fn(&[T]) -> ComputeResult<Vec<U>> + Send + Sync;

/// A transformation applied to each partition on its own (map, flat_map, filter, ...).
struct Narrow<T, U> {
    parent: Arc<Node<T>>,
    f: Box<PartFn<T, U>>,
}

impl<T: Data, U: Data> Compute<U> for Narrow<T, U> {
    fn partitions(&self) -> usize {
        self.parent.partitions()
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<U>> {
        (self.f)(&self.parent.partition(cx, part)?)
    }
    fn active(&self, time: u64) -> bool {
        self.parent.active(time)
    }
}

struct Union<T> {
    parents: Vec<Arc<Node<T>>>,
}

impl<T: Data> Compute<T> for Union<T> {
    fn partitions(&self) -> usize {
        self.parents.iter().map(|p| p.partitions()).sum()
    }
    fn compute(&self, cx: BatchCx<'_>, mut part: usize) -> ComputeResult<Vec<T>> {
        for parent in &self.parents {
            if part < parent.partitions() {
                if !parent.active(cx.time) {
                    return Ok(Vec::new());
                }
                return Ok(parent.partition(cx, part)?.as_ref().clone());
            }
            part -= parent.partitions();
        }
        Err(ComputeError::new(format!("union has no partition {part}")))
    }
    fn active(&self, time: u64) -> bool {
        self.parents.iter().any(|p| p.active(time))
    }
}

/// Redistributes elements round-robin over `partitions` partitions.
struct Repartition<T> {
    parent: Arc<Node<T>>,
    partitions: usize,
}

impl<T: Data> Compute<T> for Repartition<T> {
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<T>> {
        let mut out = Vec::new();
        for q in 0..self.parent.partitions() {
            let input = self.parent.partition(cx, q)?;
            // Each parent partition starts at a different target, so small ones spread out.
            let start = (part + self.partitions - q % self.partitions) % self.partitions;
            out.extend(input.iter().skip(start).step_by(self.partitions).cloned());
        }
        Ok(out)
    }
    fn active(&self, time: u64) -> bool {
        self.parent.active(time)
    }
}

type BatchFn<T, U> = dyn Fn(u64, &[Partition<T>]) -> ComputeResult<Vec<U>> + Send + Sync;

/// A function of a whole batch, computed once per batch, its result split into `partitions`
/// even parts.
struct WholeBatch<T, U> {
    parent: Arc<Node<T>>,
    partitions: usize,
    f: Box<BatchFn<T, U>>,
    result: Memo<Arc<Vec<U>>>,
}

impl<T: Data, U: Data> Compute<U> for WholeBatch<T, U> {
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<U>> {
        let all = self.result.get_or_compute(cx.time, 0, || {
            let input = self.parent.all(cx)?;
            (self.f)(cx.time, &input).map(Arc::new)
        })?;
        let (n, len) = (self.partitions, all.len());
        Ok(all[part * len / n..(part + 1) * len / n].to_vec())
    }
    fn evict_through(&self, time: u64) {
        self.result.evict_through(time);
    }
    fn active(&self, time: u64) -> bool {
        self.parent.active(time)
    }
}

impl<T: Data> DStream<T> {
    fn narrow<U: Data>(
        &self,
        kind: &'static str,
        f: impl Fn(&[T]) -> ComputeResult<Vec<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.derive(
            kind,
            Narrow {
                parent: Arc::clone(&self.node),
                f: Box::new(f),
            },
        )
    }

    /// Each element mapped by `f`.
    pub fn map<U: Data>(&self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> DStream<U> {
        self.narrow("map", move |part| Ok(part.iter().map(&f).collect()))
    }

    /// Each element mapped to any number of elements.
    pub fn flat_map<U: Data, I>(&self, f: impl Fn(&T) -> I + Send + Sync + 'static) -> DStream<U>
    where
        I: IntoIterator<Item = U>,
    {
        self.narrow("flat_map", move |part| {
            Ok(part.iter().flat_map(&f).collect())
        })
    }

    /// The elements for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        self.narrow("filter", move |part| {
            Ok(part.iter().filter(|x| f(x)).cloned().collect())
        })
    }

    /// Each partition mapped as a whole by `f` (which may fail: the job fails and is retried).
    pub fn map_partitions<U: Data>(
        &self,
        f: impl Fn(&[T]) -> Result<Vec<U>, weir_actors::pipeline::UserError> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.narrow("map_partitions", move |part| {
            f(part).map_err(ComputeError::from)
        })
    }

    /// Each partition as one element (Spark's `glom`).
    pub fn glom(&self) -> DStream<Vec<T>> {
        self.narrow("glom", |part| Ok(vec![part.to_vec()]))
    }

    /// Both streams' elements, batch by batch: the partitions of `self`, then of `other`.
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        union_of(std::slice::from_ref(self).iter().chain([other]))
    }

    /// The same elements spread round-robin over `partitions` partitions.
    pub fn repartition(&self, partitions: usize) -> DStream<T> {
        self.derive(
            "repartition",
            Repartition {
                parent: Arc::clone(&self.node),
                partitions: partitions.max(1),
            },
        )
    }

    /// Each batch transformed as a whole by `f(batch_time_ms, partitions)` (Spark's
    /// `transform`); the result is spread evenly over as many partitions as `self` has.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(u64, &[Partition<T>]) -> Result<Vec<U>, weir_actors::pipeline::UserError>
        + Send
        + Sync
        + 'static,
    ) -> DStream<U> {
        self.whole_batch("transform", self.partitions(), move |time, parts| {
            f(time, parts).map_err(ComputeError::from)
        })
    }

    pub(crate) fn whole_batch<U: Data>(
        &self,
        kind: &'static str,
        partitions: usize,
        f: impl Fn(u64, &[Partition<T>]) -> ComputeResult<Vec<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        self.derive(
            kind,
            WholeBatch {
                parent: Arc::clone(&self.node),
                partitions: partitions.max(1),
                f: Box::new(f),
                result: Memo::default(),
            },
        )
    }

    /// One element per batch: how many elements the batch holds.
    pub fn count(&self) -> DStream<u64> {
        self.whole_batch("count", 1, |_, parts| {
            Ok(vec![parts.iter().map(|p| p.len() as u64).sum()])
        })
    }

    /// One element per non-empty batch: its elements combined by `f` (associative and
    /// commutative).
    pub fn reduce(&self, f: impl Fn(&T, &T) -> T + Send + Sync + 'static) -> DStream<T> {
        self.whole_batch("reduce", 1, move |_, parts| {
            let mut acc: Option<T> = None;
            for x in parts.iter().flat_map(|p| p.iter()) {
                acc = Some(match acc {
                    None => x.clone(),
                    Some(a) => f(&a, x),
                });
            }
            Ok(acc.into_iter().collect())
        })
    }
}

/// The union of several streams of the same type (Spark's `StreamingContext.union`).
///
/// # Panics
///
/// If `streams` is empty.
pub fn union_of<'a, T: Data>(streams: impl IntoIterator<Item = &'a DStream<T>>) -> DStream<T> {
    let streams: Vec<&DStream<T>> = streams.into_iter().collect();
    let first = streams.first().expect("union of no streams");
    first.derive(
        "union",
        Union {
            parents: streams.iter().map(|s| Arc::clone(&s.node)).collect(),
        },
    )
}
