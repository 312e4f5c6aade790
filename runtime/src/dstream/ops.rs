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

/// What the elements of a chunk become under a map, flat_map or filter: appended to `out`.
/// One dynamic call per chunk; the user's function is called directly (and inlined) within it.
trait ElementOp<T, U>: Send + Sync {
    fn each_chunk(&self, items: &[T], out: &mut Vec<U>);
}

struct MapOp<F>(F);

impl<T, U, F: Fn(&T) -> U + Send + Sync> ElementOp<T, U> for MapOp<F> {
    fn each_chunk(&self, items: &[T], out: &mut Vec<U>) {
        out.extend(items.iter().map(&self.0));
    }
}

struct FlatMapOp<F>(F);

impl<T, U, I, F> ElementOp<T, U> for FlatMapOp<F>
where
    F: Fn(&T) -> I + Send + Sync,
    I: IntoIterator<Item = U>,
{
    fn each_chunk(&self, items: &[T], out: &mut Vec<U>) {
        for item in items {
            out.extend((self.0)(item));
        }
    }
}

struct FilterOp<F>(F);

impl<T: Clone, F: Fn(&T) -> bool + Send + Sync> ElementOp<T, T> for FilterOp<F> {
    fn each_chunk(&self, items: &[T], out: &mut Vec<T>) {
        out.extend(items.iter().filter(|item| (self.0)(item)).cloned());
    }
}

/// Input elements per chunk of a streaming map, flat_map or filter: enough that a dynamic
/// call per chunk costs nothing per element and that an element is read a while after it was
/// written; few enough that a chunk stays in the first-level cache.
const CHUNK: usize = 128;

/// A map, flat_map or filter: computed a chunk at a time from its parent's elements
/// (visited, so a chain of them is one loop over chunks), and streamed into its reader when it
/// has just one that only visits it (see `Node::visit`).
struct Elementwise<T, U> {
    parent: Arc<Node<T>>,
    op: Box<dyn ElementOp<T, U>>,
}

impl<T: Data, U: Data> Compute<U> for Elementwise<T, U> {
    fn partitions(&self) -> usize {
        self.parent.partitions()
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<U>> {
        let mut out = Vec::new();
        self.parent
            .visit(cx, part, &mut |items| self.op.each_chunk(items, &mut out))?;
        Ok(out)
    }
    fn can_stream(&self) -> bool {
        true
    }
    fn visit(&self, cx: BatchCx<'_>, part: usize, f: &mut dyn FnMut(&[U])) -> ComputeResult<()> {
        let mut chunk = Vec::new();
        self.parent.visit(cx, part, &mut |items| {
            for items in items.chunks(CHUNK) {
                self.op.each_chunk(items, &mut chunk);
                if !chunk.is_empty() {
                    f(&chunk);
                    chunk.clear();
                }
            }
        })
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
        for (q, input) in self
            .parent
            .all_for(cx, part, self.partitions)?
            .into_iter()
            .enumerate()
        {
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
        Ok(even_part(&all, part, self.partitions))
    }
    fn evict_through(&self, time: u64) {
        self.result.evict_through(time);
    }
    fn active(&self, time: u64) -> bool {
        self.parent.active(time)
    }
}

type PairFn<T, U, V> =
    dyn Fn(u64, &[Partition<T>], &[Partition<U>]) -> ComputeResult<Vec<V>> + Send + Sync;

/// A function of the same batch of two streams, computed once per batch.
struct WholeBatchWith<T, U, V> {
    left: Arc<Node<T>>,
    right: Arc<Node<U>>,
    partitions: usize,
    f: Box<PairFn<T, U, V>>,
    result: Memo<Arc<Vec<V>>>,
}

/// Every partition of batch `cx.time` of `node`, or none if the stream has no batch then
/// (a window between its slides).
fn all_if_active<T: Data>(node: &Node<T>, cx: BatchCx<'_>) -> ComputeResult<Vec<Partition<T>>> {
    if node.active(cx.time) {
        node.all(cx)
    } else {
        Ok(Vec::new())
    }
}

/// Part `part` of `n` even parts of `all`.
fn even_part<V: Clone>(all: &[V], part: usize, n: usize) -> Vec<V> {
    let len = all.len();
    all[part * len / n..(part + 1) * len / n].to_vec()
}

impl<T: Data, U: Data, V: Data> Compute<V> for WholeBatchWith<T, U, V> {
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<V>> {
        let all = self.result.get_or_compute(cx.time, 0, || {
            let left = all_if_active(&self.left, cx)?;
            let right = all_if_active(&self.right, cx)?;
            (self.f)(cx.time, &left, &right).map(Arc::new)
        })?;
        Ok(even_part(&all, part, self.partitions))
    }
    fn evict_through(&self, time: u64) {
        self.result.evict_through(time);
    }
    fn active(&self, time: u64) -> bool {
        self.left.active(time) || self.right.active(time)
    }
}

type ManyFn<T, U> = dyn Fn(u64, &[Vec<Partition<T>>]) -> ComputeResult<Vec<U>> + Send + Sync;

/// A function of the same batch of several streams, computed once per batch.
struct WholeBatchOfMany<T, U> {
    parents: Vec<Arc<Node<T>>>,
    partitions: usize,
    f: Box<ManyFn<T, U>>,
    result: Memo<Arc<Vec<U>>>,
}

impl<T: Data, U: Data> Compute<U> for WholeBatchOfMany<T, U> {
    fn partitions(&self) -> usize {
        self.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<U>> {
        let all = self.result.get_or_compute(cx.time, 0, || {
            let batches = self
                .parents
                .iter()
                .map(|p| all_if_active(p, cx))
                .collect::<ComputeResult<Vec<_>>>()?;
            (self.f)(cx.time, &batches).map(Arc::new)
        })?;
        Ok(even_part(&all, part, self.partitions))
    }
    fn evict_through(&self, time: u64) {
        self.result.evict_through(time);
    }
    fn active(&self, time: u64) -> bool {
        self.parents.iter().any(|p| p.active(time))
    }
}

/// Each batch of several streams transformed together by `f(batch_time_ms, batches)`, where
/// `batches[i]` holds the partitions of `streams[i]`'s batch (empty when that stream has no
/// batch then, e.g. a window between slides) — Spark's `StreamingContext.transform`. The
/// streams carry one type; map them into an enum first to combine different types. The
/// result is spread evenly over as many partitions as the first stream has. Also available
/// as [`StreamingContext::transform`](crate::StreamingContext::transform).
///
/// ```
/// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use weir::dstream::{QueueStream, transform_of};
/// use weir::testing::{Collected, ManualClock};
///
/// let (a, b) = (QueueStream::new(true, 1), QueueStream::new(true, 1));
/// a.push(vec![1, 2]);
/// b.push(vec![10]);
/// let out = Collected::default();
/// let (qa, qb, o) = (a.clone(), b.clone(), out.clone());
/// let mut clock = ManualClock::new(1000, 1, move |ctx| {
///     let streams = [ctx.queue_stream(&qa), ctx.queue_stream(&qb)];
///     // One element per batch: the sum of each stream's batch.
///     o.collect(&transform_of(&streams, |_time, batches| {
///         let sums = batches.iter().map(|b| b.iter().flat_map(|p| p.iter()).sum::<i32>());
///         Ok(vec![sums.collect::<Vec<_>>()])
///     }));
/// })?;
/// clock.run(1).await?;
/// assert_eq!(out.batch(1000), vec![vec![3, 10]]);
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// If `streams` is empty, or the context has started.
pub fn transform_of<T: Data, U: Data>(
    streams: &[DStream<T>],
    f: impl Fn(u64, &[Vec<Partition<T>>]) -> Result<Vec<U>, weir_actors::pipeline::UserError>
    + Send
    + Sync
    + 'static,
) -> DStream<U> {
    let first = streams.first().expect("transform of no streams");
    first.derive(
        "transform",
        WholeBatchOfMany {
            parents: streams.iter().map(|s| s.node.consumed()).collect(),
            partitions: first.partitions().max(1),
            f: Box::new(move |time, batches| f(time, batches).map_err(ComputeError::from)),
            result: Memo::default(),
        },
    )
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
                parent: self.node.consumed(),
                f: Box::new(f),
            },
        )
    }

    fn elementwise<U: Data>(
        &self,
        kind: &'static str,
        op: impl ElementOp<T, U> + 'static,
    ) -> DStream<U> {
        self.derive(
            kind,
            Elementwise {
                parent: self.node.visited(),
                op: Box::new(op),
            },
        )
    }

    /// Each element mapped by `f`.
    ///
    /// Maps, flat_maps and filters feeding one shuffle (`reduce_by_key`, ...) or one another
    /// run as one loop over the input, without materialising what each step produces.
    pub fn map<U: Data>(&self, f: impl Fn(&T) -> U + Send + Sync + 'static) -> DStream<U> {
        self.elementwise("map", MapOp(f))
    }

    /// Each element mapped to any number of elements.
    ///
    /// Over text, [`Str::words`](crate::Str::words) splits without copying:
    /// `lines.flat_map(|line: &Str| line.words())`.
    pub fn flat_map<U: Data, I>(&self, f: impl Fn(&T) -> I + Send + Sync + 'static) -> DStream<U>
    where
        I: IntoIterator<Item = U> + 'static,
    {
        self.elementwise("flat_map", FlatMapOp(f))
    }

    /// The elements for which `f` is true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        self.elementwise("filter", FilterOp(f))
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
                parent: self.node.consumed(),
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

    /// The same batch of `self` and `other` transformed together by
    /// `f(batch_time_ms, self's partitions, other's partitions)` (Spark's `transformWith`); the
    /// function runs again every batch, so it may pick what to combine by the batch time. A
    /// stream with no batch at that time (a window between slides) contributes no partitions.
    /// The result is spread evenly over as many partitions as `self` has.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let (words, stop) = (QueueStream::new(true, 2), QueueStream::new(true, 1));
    /// words.push(vec!["a".to_owned(), "the".to_owned(), "b".to_owned()]);
    /// stop.push(vec!["the".to_owned()]);
    /// let out = Collected::default();
    /// let (w, s, o) = (words.clone(), stop.clone(), out.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     let stop_words = ctx.queue_stream(&s);
    ///     let kept = ctx.queue_stream(&w).transform_with(&stop_words, |_time, words, stop| {
    ///         let stop: Vec<&String> = stop.iter().flat_map(|p| p.iter()).collect();
    ///         let words = words.iter().flat_map(|p| p.iter());
    ///         Ok(words.filter(|w| !stop.contains(w)).cloned().collect())
    ///     });
    ///     o.collect(&kept);
    /// })?;
    /// clock.run(1).await?;
    /// assert_eq!(out.sorted(1000), vec!["a", "b"]);
    /// # Ok(()) }
    /// ```
    pub fn transform_with<U: Data, V: Data>(
        &self,
        other: &DStream<U>,
        f: impl Fn(
            u64,
            &[Partition<T>],
            &[Partition<U>],
        ) -> Result<Vec<V>, weir_actors::pipeline::UserError>
        + Send
        + Sync
        + 'static,
    ) -> DStream<V> {
        self.derive(
            "transform_with",
            WholeBatchWith {
                left: self.node.consumed(),
                right: other.node.consumed(),
                partitions: self.partitions().max(1),
                f: Box::new(move |time, left, right| {
                    f(time, left, right).map_err(ComputeError::from)
                }),
                result: Memo::default(),
            },
        )
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
                parent: self.node.consumed(),
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
            parents: streams.iter().map(|s| s.node.consumed()).collect(),
        },
    )
}
