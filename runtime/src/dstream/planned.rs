//! Sources whose input is planned by the driver, batch by batch, instead of received: the
//! queue stream, direct offset-based sources (Kafka-style) and the file stream.
//!
//! When a batch is generated, each planned source decides what the batch reads (an offset
//! range per partition, a list of files, a range of queued items) from where the previous
//! batch ended. The plan is part of the operator's checkpointed state, together with the
//! position as of the last completed batch, and the job generator makes the checkpoint that
//! lists a batch as pending durable before the batch runs. So a batch re-run after a crash
//! reads exactly what it read the first time, and its idempotent output is the same.
//!
//! Planning asks the source (a broker's offsets, a directory listing), which may be slow or
//! hang: the graph runs it on the blocking pool under the planning timeout
//! ([`GraphPipeline::prepare`](super::graph::GraphPipeline)), and [`Planned`] asks its planner
//! without holding its state's lock, so snapshots and reads never wait for a source. A plan
//! is kept only if none was kept for its batch meanwhile and the node was not restored since
//! its look-ups began: an abandoned attempt that answers late either leaves the plan a later
//! attempt would have made from the same position, or nothing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_actors::SourceLag;
use weir_actors::pipeline::UserError;

use super::Data;
use super::graph::{BatchCx, Compute, GraphShared, Lifecycle};
use super::memo::lock;
use crate::error::{ComputeError, ComputeResult};

/// The default byte budget of one batch of a planned source that reads bytes (the file
/// stream, a direct stream): 64 MiB. A plan is checkpointed before its batch runs and a
/// restart re-runs it, so a batch must be bounded by what it holds, not by what is waiting.
pub(crate) const DEFAULT_MAX_BYTES_PER_BATCH: u64 = 64 * 1024 * 1024;

/// What a planned source does; the node around it keeps the plans and positions.
pub(crate) trait Planner: Send + Sync + 'static {
    type Item: Data;
    type Plan: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;
    type Position: Clone + Send + Sync + Serialize + DeserializeOwned + 'static;

    fn partitions(&self) -> usize;
    /// The source's name, for planning failures; the operator's id if `None`.
    fn name(&self) -> Option<String> {
        None
    }
    /// Where a first start begins.
    fn initial(&self) -> ComputeResult<Self::Position>;
    /// What batch `time` reads from `from`, and where the next batch starts.
    fn plan(&self, from: &Self::Position, time: u64)
    -> ComputeResult<(Self::Plan, Self::Position)>;
    /// Partition `part` of a planned batch.
    fn read(&self, plan: &Self::Plan, part: usize) -> ComputeResult<Vec<Self::Item>>;
    /// Every batch up to one that ended at `through` is complete.
    fn commit(&self, through: &Self::Position) {
        let _ = through;
    }
    /// Offset ranges of a plan, for sinks that store offsets with their output.
    fn offset_ranges(&self, plan: &Self::Plan) -> Vec<OffsetRange> {
        let _ = plan;
        Vec::new()
    }
    /// Where each partition is, as of the newest plan (for the lag metric).
    fn sources(&self) -> Vec<SourceLag> {
        Vec::new()
    }
    /// The node's state as an earlier release checkpointed it, with plan and position types
    /// then named `type_name` (in the sense of [`Lifecycle::state_type`]), re-encoded with
    /// today's types ([`upgrade_state`] does the work); `None` if this planner never had such
    /// a state.
    fn upgrade(&self, type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>> {
        let _ = (type_name, bytes);
        None
    }
}

/// A [`PlannedState`] with an earlier release's plan and position types.
#[derive(Deserialize)]
#[serde(bound = "Plan: DeserializeOwned, Position: DeserializeOwned")]
struct OlderState<Plan, Position> {
    as_of: Option<u64>,
    position: Option<Position>,
    plans: BTreeMap<u64, (Plan, Position)>,
}

/// Decodes the state of a `P` node written with the plan type `Plan` and the position type
/// `Position` of an earlier release, converts every plan and position with `plan` and
/// `position`, and encodes it as `P`'s state today.
///
/// # Errors
///
/// The bytes are not such a state, or the result does not encode.
pub(crate) fn upgrade_state<P: Planner, Plan: DeserializeOwned, Position: DeserializeOwned>(
    bytes: &[u8],
    plan: impl Fn(Plan) -> P::Plan,
    position: impl Fn(Position) -> P::Position,
) -> ComputeResult<Vec<u8>> {
    let older: OlderState<Plan, Position> = postcard::from_bytes(bytes)
        .map_err(|e| ComputeError::new(format!("decoding an earlier release's positions: {e}")))?;
    let state = PlannedState::<P> {
        as_of: older.as_of,
        position: older.position.map(&position),
        plans: older
            .plans
            .into_iter()
            .map(|(time, (p, after))| (time, (plan(p), position(after))))
            .collect(),
    };
    postcard::to_allocvec(&state)
        .map_err(|e| ComputeError::new(format!("encoding source positions: {e}")))
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct PlannedState<P: Planner> {
    /// The position after the batch `as_of` (`None`: not started, or as restored).
    as_of: Option<u64>,
    position: Option<P::Position>,
    /// Plans of batches after `as_of`, with the position after each.
    plans: BTreeMap<u64, (P::Plan, P::Position)>,
}

impl<P: Planner> Default for PlannedState<P> {
    fn default() -> Self {
        PlannedState {
            as_of: None,
            position: None,
            plans: BTreeMap::new(),
        }
    }
}

/// A node around a [`Planner`].
pub(crate) struct Planned<P: Planner> {
    pub(crate) planner: P,
    state: Mutex<PlannedState<P>>,
    /// Restores so far, changed under the state's lock: a plan whose look-ups began before a
    /// restore is dropped.
    restores: AtomicU64,
}

impl<P: Planner> Planned<P> {
    pub(crate) fn new(planner: P) -> Self {
        Planned {
            planner,
            state: Mutex::new(PlannedState::default()),
            restores: AtomicU64::new(0),
        }
    }

    /// The offset ranges planned for batch `time`.
    pub(crate) fn ranges(&self, time: u64) -> Vec<OffsetRange> {
        lock(&self.state)
            .plans
            .get(&time)
            .map(|(plan, _)| self.planner.offset_ranges(plan))
            .unwrap_or_default()
    }
}

impl<P: Planner> Compute<P::Item> for Planned<P> {
    fn is_input(&self) -> bool {
        true
    }
    fn partitions(&self) -> usize {
        self.planner.partitions()
    }

    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<P::Item>> {
        let plan = lock(&self.state)
            .plans
            .get(&cx.time)
            .map(|(plan, _)| plan.clone())
            .ok_or_else(|| ComputeError::new(format!("batch {} was not planned", cx.time)))?;
        self.planner.read(&plan, part)
    }

    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl<P: Planner> Lifecycle for Planned<P> {
    fn plans_input(&self) -> bool {
        true
    }

    fn source_name(&self) -> Option<String> {
        self.planner.name()
    }

    fn plan(&self, graph: &GraphShared, time: u64) -> ComputeResult<()> {
        let _ = graph;
        let (from, restores) = {
            let state = lock(&self.state);
            if state.plans.contains_key(&time) {
                return Ok(()); // planned before a restart, or by an earlier attempt
            }
            if state.as_of.is_some_and(|as_of| time <= as_of) {
                return Err(ComputeError::new(format!(
                    "batch {time} is already complete; it cannot be planned again"
                )));
            }
            let from = match state.plans.range(..time).next_back() {
                Some((_, (_, after))) => Some(after.clone()),
                None => state.position.clone(),
            };
            (from, self.restores.load(Ordering::SeqCst))
        };
        // The source is asked without the lock: a snapshot (taken in the job generator's
        // handler) or a batch's read never waits for a slow source.
        let from = match from {
            Some(from) => from,
            None => self.planner.initial()?,
        };
        let planned = self.planner.plan(&from, time)?;
        let mut state = lock(&self.state);
        if self.restores.load(Ordering::SeqCst) != restores {
            return Err(ComputeError::new(format!(
                "the source was restored while batch {time} was being planned; the plan is dropped"
            )));
        }
        // A plan kept meanwhile (an abandoned attempt that answered late) stays: it was made
        // from the same position, and a batch's plan never changes once kept.
        state.plans.entry(time).or_insert(planned);
        Ok(())
    }

    fn snapshot(
        &self,
        _graph: &GraphShared,
        completed_through: Option<u64>,
    ) -> ComputeResult<Option<Vec<u8>>> {
        let mut state = lock(&self.state);
        if let Some(through) = completed_through
            && state.as_of.is_none_or(|as_of| as_of < through)
        {
            // Fold the completed plans into the position.
            let later = state.plans.split_off(&(through + 1));
            if let Some((_, (_, after))) = state.plans.pop_last() {
                state.position = Some(after);
            }
            state.plans = later;
            state.as_of = Some(through);
        }
        postcard::to_allocvec(&*state)
            .map(Some)
            .map_err(|e| ComputeError::new(format!("encoding source positions: {e}")))
    }

    fn state_type(&self) -> &'static str {
        std::any::type_name::<(P::Plan, P::Position)>()
    }

    fn upgrade(&self, type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>> {
        self.planner.upgrade(type_name, bytes)
    }

    fn restore(&self, _graph: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        let restored = match bytes {
            Some(bytes) => postcard::from_bytes(bytes)
                .map_err(|e| ComputeError::new(format!("decoding source positions: {e}")))?,
            None => PlannedState::default(),
        };
        let mut state = lock(&self.state);
        *state = restored;
        self.restores.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn offset_ranges(&self, time: u64) -> Vec<OffsetRange> {
        self.ranges(time)
    }

    fn sources(&self) -> Vec<SourceLag> {
        self.planner.sources()
    }

    fn completed(&self, _graph: &GraphShared, time: u64) {
        let after = lock(&self.state)
            .plans
            .get(&time)
            .map(|(_, after)| after.clone());
        if let Some(after) = after {
            self.planner.commit(&after);
        }
    }
}

// ===================================== queue stream ===================================== //

struct QueueInner<T> {
    /// Items not yet committed, by sequence number; each is one batch's worth.
    items: BTreeMap<u64, Vec<T>>,
    next_seq: u64,
}

/// A queue of batches for tests and demos (Spark's `queueStream`): each pushed `Vec` becomes
/// one batch (or, with `one_at_a_time` off, everything queued becomes the next batch); a
/// batch that finds the queue empty is empty, or the default batch if one was set with
/// [`with_default`](Self::with_default) (Spark's `defaultRDD`).
///
/// Items leave the queue only when the batch that read them completes, so a driver restart
/// in the same process re-reads exactly what the lost batches read. The queue lives in memory:
/// it does not survive the process.
pub struct QueueStream<T> {
    inner: Arc<Mutex<QueueInner<T>>>,
    one_at_a_time: bool,
    partitions: usize,
    default: Option<Arc<Vec<T>>>,
}

impl<T> Clone for QueueStream<T> {
    fn clone(&self) -> Self {
        QueueStream {
            inner: Arc::clone(&self.inner),
            one_at_a_time: self.one_at_a_time,
            partitions: self.partitions,
            default: self.default.clone(),
        }
    }
}

impl<T> std::fmt::Debug for QueueStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStream")
            .field("queued", &lock(&self.inner).items.len())
            .finish()
    }
}

impl<T: Data> QueueStream<T> {
    /// An empty queue whose batches have `partitions` partitions; with `one_at_a_time`, each
    /// batch takes one pushed `Vec`, otherwise all that are queued.
    pub fn new(one_at_a_time: bool, partitions: usize) -> Self {
        QueueStream {
            inner: Arc::new(Mutex::new(QueueInner {
                items: BTreeMap::new(),
                next_seq: 0,
            })),
            one_at_a_time,
            partitions: partitions.max(1),
            default: None,
        }
    }

    /// The same queue, whose batches read `items` whenever nothing is queued (Spark's
    /// `queueStream(queue, oneAtATime, defaultRDD)`).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let queue = QueueStream::new(true, 1).with_default(vec![0]);
    /// queue.push(vec![1, 2]);
    /// let (q, out) = (queue.clone(), Collected::default());
    /// let o = out.clone();
    /// let mut clock = ManualClock::new(1000, 1, move |ctx| o.collect(&ctx.queue_stream(&q)))?;
    /// clock.run(2).await?;
    /// assert_eq!(out.batch(1000), vec![1, 2]);
    /// assert_eq!(out.batch(2000), vec![0]); // the queue was empty
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_default(mut self, items: Vec<T>) -> Self {
        self.default = Some(Arc::new(items));
        self
    }

    /// Queues one batch's worth of items.
    pub fn push(&self, items: Vec<T>) {
        let mut inner = lock(&self.inner);
        let seq = inner.next_seq;
        inner.items.insert(seq, items);
        inner.next_seq += 1;
    }

    /// How many pushed `Vec`s have not been committed yet.
    pub fn pending(&self) -> usize {
        lock(&self.inner).items.len()
    }
}

impl<T: Data> Planner for QueueStream<T> {
    type Item = T;
    type Plan = Range<u64>;
    type Position = u64;

    fn partitions(&self) -> usize {
        self.partitions
    }
    fn initial(&self) -> ComputeResult<u64> {
        Ok(lock(&self.inner).items.keys().next().copied().unwrap_or(0))
    }
    fn plan(&self, from: &u64, _time: u64) -> ComputeResult<(Range<u64>, u64)> {
        let inner = lock(&self.inner);
        let available = inner.next_seq.max(*from);
        let until = if self.one_at_a_time {
            (*from + 1).min(available)
        } else {
            available
        };
        Ok((*from..until, until))
    }
    fn read(&self, plan: &Range<u64>, part: usize) -> ComputeResult<Vec<T>> {
        let inner = lock(&self.inner);
        let all: Vec<&T> = match &self.default {
            Some(default) if plan.is_empty() => default.iter().collect(),
            _ => inner
                .items
                .range(plan.clone())
                .flat_map(|(_, items)| items.iter())
                .collect(),
        };
        let n = self.partitions;
        let len = all.len();
        Ok(all[part * len / n..(part + 1) * len / n]
            .iter()
            .map(|x| (*x).clone())
            .collect())
    }
    fn commit(&self, through: &u64) {
        let mut inner = lock(&self.inner);
        let keep = inner.items.split_off(through);
        inner.items = keep;
    }
}

// ================================ direct offset sources ================================ //

/// One partition's records of one batch: `[from, until)`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The source's name.
    pub source: String,
    /// The partition.
    pub partition: u32,
    /// The first offset read.
    pub from: u64,
    /// One past the last offset read.
    pub until: u64,
}

impl OffsetRange {
    /// How many records the range holds.
    pub fn count(&self) -> u64 {
        self.until.saturating_sub(self.from)
    }
}

/// A replayable, partitioned source read by offset (Kafka-style), without a receiver: each
/// batch reads an offset range per partition, planned by the driver and kept in the
/// checkpoint, so a batch re-run after a crash reads the same records.
pub trait OffsetSource: Send + Sync + 'static {
    /// A stable name, used in offset ranges.
    fn name(&self) -> String;
    /// How many partitions it has (fixed for the life of the graph).
    fn partitions(&self) -> usize;
    /// The first available offset of each partition.
    ///
    /// Planning calls it, [`latest`](Self::latest) and [`byte_prefix`](Self::byte_prefix) on
    /// the blocking pool, never on an actor's thread, so they may block (a network call with a
    /// timeout of its own); a call that outlasts the planning timeout
    /// ([`PlanningPolicy`](weir_actors::PlanningPolicy)) is abandoned — it finishes on its own
    /// thread and, for a source that never answers, keeps that thread: at most one such call
    /// per source at a time, later attempts wait for it (within their own timeout) instead of
    /// calling again.
    ///
    /// # Errors
    ///
    /// The source cannot be reached: that planning attempt fails (an
    /// [`Event::PlanningFailed`](weir_actors::Event::PlanningFailed) naming this source's
    /// [`name`](Self::name) and the error) and the batch is planned again after a backoff.
    fn earliest(&self) -> Result<Vec<u64>, UserError>;
    /// One past the last available offset of each partition.
    ///
    /// # Errors
    ///
    /// As for [`earliest`](Self::earliest).
    fn latest(&self) -> Result<Vec<u64>, UserError>;
    /// The records `[range)` of `partition`.
    ///
    /// # Errors
    ///
    /// As for [`earliest`](Self::earliest).
    fn read(&self, partition: u32, range: Range<u64>) -> Result<Vec<Bytes>, UserError>;
    /// Of the records `range` of `partition`, the longest run from `range.start` whose
    /// payloads total at most `max_bytes`: one past its last record, and its bytes. A direct
    /// stream asks this when it plans a batch, to bound the batch in bytes (see
    /// [`DirectStreamOptions::max_bytes_per_batch`]); the answer goes into the checkpointed
    /// plan, so it need not be the same when asked again.
    ///
    /// The default reads the records, at most [`SIZE_CHUNK`] at a time, and counts their
    /// bytes: it works for every source, at the cost of reading a batch's records twice. A
    /// source that knows its record sizes answers without reading the payloads (the
    /// partitioned log does, from its index and frame headers).
    ///
    /// # Errors
    ///
    /// As for [`read`](Self::read).
    fn byte_prefix(
        &self,
        partition: u32,
        range: Range<u64>,
        max_bytes: u64,
    ) -> Result<(u64, u64), UserError> {
        let (mut until, mut bytes) = (range.start, 0u64);
        while until < range.end {
            let records = self.read(partition, until..range.end.min(until + SIZE_CHUNK))?;
            if records.is_empty() {
                break;
            }
            for record in &records {
                let len = record.len() as u64;
                if bytes.saturating_add(len) > max_bytes {
                    return Ok((until, bytes));
                }
                bytes += len;
                until += 1;
            }
        }
        Ok((until, bytes))
    }
    /// Every batch up to one ending at `next` completed its output: commit (e.g. a consumer
    /// group's offsets). A failure is logged; the checkpoint stays the source of truth.
    ///
    /// # Errors
    ///
    /// The commit failed.
    fn commit(&self, next: &[u64]) -> Result<(), UserError> {
        let _ = next;
        Ok(())
    }
}

/// How many records the default [`OffsetSource::byte_prefix`] reads at a time.
pub const SIZE_CHUNK: u64 = 256;

/// How a direct stream plans its batches (see
/// [`StreamingContext::direct_stream_with`](crate::StreamingContext::direct_stream_with)).
///
/// ```
/// use weir::dstream::DirectStreamOptions;
///
/// let options = DirectStreamOptions::new()
///     .max_per_partition(10_000)
///     .max_bytes_per_batch(16 * 1024 * 1024);
/// # let _ = options;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectStreamOptions {
    max_per_partition: Option<u64>,
    max_bytes_per_batch: u64,
}

impl Default for DirectStreamOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl DirectStreamOptions {
    /// The defaults: no limit in records, at most 64 MiB of records per batch.
    pub fn new() -> Self {
        DirectStreamOptions {
            max_per_partition: None,
            max_bytes_per_batch: DEFAULT_MAX_BYTES_PER_BATCH,
        }
    }

    /// At most this many records per partition per batch (Spark's
    /// `maxRatePerPartition` × the batch interval, as a count).
    #[must_use]
    pub fn max_per_partition(mut self, records: u64) -> Self {
        self.max_per_partition = Some(records);
        self
    }

    /// At most this many bytes of records per batch, all partitions together (default
    /// 64 MiB; `u64::MAX`: no bound). A batch's plan is checkpointed before the batch runs
    /// and a restart re-runs it, so a batch larger than the process can hold would fail on
    /// every restart; with the bound, the records waiting are read over as many batches as
    /// they need. The budget is shared among the partitions with records waiting, in
    /// partition order, each taking at most an equal share of what is left; a partition
    /// whose next record alone is over its share still takes that one record, so a stream
    /// always makes progress (a batch then holds at most the budget plus one record per
    /// partition).
    #[must_use]
    pub fn max_bytes_per_batch(mut self, bytes: u64) -> Self {
        self.max_bytes_per_batch = bytes.max(1);
        self
    }
}

/// Where a direct source starts when there is no checkpoint (a restore from a checkpoint
/// always continues from the checkpoint's positions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StartingOffsets {
    /// From the first available record.
    #[default]
    Earliest,
    /// From the records that arrive after the start.
    Latest,
    /// From these offsets, one per partition (Kafka's `Assign(partitions, params,
    /// fromOffsets)`): the third way to keep offsets, in the application's own store,
    /// written in the same transaction as the results (read them from
    /// [`Batch::offset_ranges`](super::Batch::offset_ranges)). Start such an application
    /// without a checkpoint (`StreamingContext::new`, or a fresh checkpoint directory) so
    /// that the store is the only source of truth. An offset below the partition's earliest
    /// starts at the earliest; one past its latest waits for records there. If the list does
    /// not have one offset per partition, planning the first batch fails, naming the source
    /// and the counts (under the engine: a `PlanningFailed` event, retried until the job is
    /// stopped and fixed; under `ManualClock`: the batch's error).
    Given(Vec<u64>),
}

pub(crate) struct Direct {
    pub(crate) source: Arc<dyn OffsetSource>,
    pub(crate) partitions: usize,
    pub(crate) start: StartingOffsets,
    /// At most this many records per partition, and bytes per batch.
    pub(crate) options: DirectStreamOptions,
    /// The stream's rate from backpressure (records per second, all partitions).
    pub(crate) rate: Option<crate::sources::rate::RateHandle>,
    /// The fixed rate limits.
    pub(crate) rate_config: crate::backpressure::RateConfig,
    pub(crate) batch_interval: std::time::Duration,
    /// Each partition's planned end and latest offset, as of the newest plan.
    pub(crate) positions: std::sync::Mutex<Vec<SourceLag>>,
}

/// Cuts the `available` ranges of a direct stream (one per partition, from its position to
/// its latest offset) to what one batch reads: the rate controller's and the fixed
/// per-partition caps, `options`' records per partition, then its byte budget (see
/// [`DirectStreamOptions::max_bytes_per_batch`]), with `byte_prefix(index, range, share)`
/// answering as [`OffsetSource::byte_prefix`] does for the partition at `index`. Every direct
/// stream plans through it (the offset sources' and Kafka's).
pub(crate) fn cap_ranges(
    available: Vec<Range<u64>>,
    options: &DirectStreamOptions,
    rate_config: &crate::backpressure::RateConfig,
    rate: Option<f64>,
    batch_interval: std::time::Duration,
    mut byte_prefix: impl FnMut(usize, Range<u64>, u64) -> ComputeResult<(u64, u64)>,
) -> ComputeResult<Vec<Range<u64>>> {
    let lags: Vec<u64> = available.iter().map(|r| r.end - r.start).collect();
    let caps = crate::backpressure::per_partition_caps(rate_config, rate, &lags, batch_interval);
    let mut plan = Vec::with_capacity(available.len());
    for (range, cap) in available.into_iter().zip(caps) {
        let limit = match (cap, options.max_per_partition) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let until = match limit {
            Some(max) => range.end.min(range.start.saturating_add(max)),
            None => range.end,
        };
        plan.push(range.start..until);
    }
    let budget = options.max_bytes_per_batch;
    if budget == u64::MAX {
        return Ok(plan);
    }
    let mut left = budget;
    let mut waiting = plan.iter().filter(|r| !r.is_empty()).count() as u64;
    for (p, range) in plan.iter_mut().enumerate() {
        if range.is_empty() {
            continue;
        }
        let share = left / waiting.max(1);
        waiting = waiting.saturating_sub(1);
        let (until, bytes) = byte_prefix(p, range.clone(), share)?;
        if until <= range.start {
            // At least one record, so that a record over the share still moves on; it
            // spends the share (its size is not known here).
            range.end = range.start + 1;
            left = left.saturating_sub(share);
        } else {
            range.end = until.min(range.end);
            left = left.saturating_sub(bytes);
        }
    }
    Ok(plan)
}

impl Planner for Direct {
    type Item = Bytes;
    type Plan = Vec<Range<u64>>;
    type Position = Vec<u64>;

    fn partitions(&self) -> usize {
        self.partitions
    }
    fn name(&self) -> Option<String> {
        Some(self.source.name())
    }
    fn initial(&self) -> ComputeResult<Vec<u64>> {
        match &self.start {
            StartingOffsets::Earliest => self.source.earliest(),
            StartingOffsets::Latest => self.source.latest(),
            StartingOffsets::Given(offsets) if offsets.len() == self.partitions => {
                Ok(offsets.clone())
            }
            StartingOffsets::Given(offsets) => Err(format!(
                "{}: {} starting offsets were given for {} partitions",
                self.source.name(),
                offsets.len(),
                self.partitions
            )
            .into()),
        }
        .map_err(ComputeError::from)
    }
    fn plan(&self, from: &Vec<u64>, _time: u64) -> ComputeResult<(Vec<Range<u64>>, Vec<u64>)> {
        let latest = self.source.latest().map_err(ComputeError::from)?;
        let earliest = self.source.earliest().map_err(ComputeError::from)?;
        let available: Vec<Range<u64>> = (0..self.partitions)
            .map(|p| {
                let start = from
                    .get(p)
                    .copied()
                    .unwrap_or(0)
                    .max(earliest.get(p).copied().unwrap_or(0));
                start..latest.get(p).copied().unwrap_or(start).max(start)
            })
            .collect();
        let plan = cap_ranges(
            available,
            &self.options,
            &self.rate_config,
            self.rate.as_ref().map(|r| r.get()),
            self.batch_interval,
            |p, range, share| {
                self.source
                    .byte_prefix(p as u32, range, share)
                    .map_err(ComputeError::from)
            },
        )?;
        let name = self.source.name();
        *lock(&self.positions) = plan
            .iter()
            .enumerate()
            .map(|(p, range)| SourceLag {
                source: name.clone(),
                partition: p as u32,
                planned: range.end,
                latest: latest.get(p).copied().unwrap_or(range.end),
            })
            .collect();
        let next = plan.iter().map(|r| r.end).collect();
        Ok((plan, next))
    }
    fn read(&self, plan: &Vec<Range<u64>>, part: usize) -> ComputeResult<Vec<Bytes>> {
        let range = plan.get(part).cloned().unwrap_or(0..0);
        if range.is_empty() {
            return Ok(Vec::new());
        }
        let records = self
            .source
            .read(part as u32, range.clone())
            .map_err(ComputeError::from)?;
        if records.len() as u64 != range.end - range.start {
            return Err(ComputeError::new(format!(
                "{} partition {part}: asked for offsets {range:?}, got {} records",
                self.source.name(),
                records.len()
            )));
        }
        Ok(records)
    }
    fn sources(&self) -> Vec<SourceLag> {
        lock(&self.positions).clone()
    }
    fn commit(&self, through: &Vec<u64>) {
        if let Err(err) = self.source.commit(through) {
            tracing::warn!(source = %self.source.name(), error = %err, "committing offsets failed");
        }
    }
    fn offset_ranges(&self, plan: &Vec<Range<u64>>) -> Vec<OffsetRange> {
        plan.iter()
            .enumerate()
            .map(|(p, r)| OffsetRange {
                source: self.source.name(),
                partition: p as u32,
                from: r.start,
                until: r.end,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a failed unwrap is a failed test"
    )]

    use std::sync::atomic::AtomicU64;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::dstream::graph::GraphSettings;

    /// Plans each batch as the next number of a counter (taken when the look-up starts); the
    /// first call stops inside the look-up (telling `entered`) until the test sends on their `release`.
    struct Held {
        next: AtomicU64,
        hold: Mutex<Vec<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    }

    impl Planner for Held {
        type Item = u64;
        type Plan = u64;
        type Position = u64;

        fn partitions(&self) -> usize {
            1
        }
        fn initial(&self) -> ComputeResult<u64> {
            Ok(0)
        }
        fn plan(&self, from: &u64, _time: u64) -> ComputeResult<(u64, u64)> {
            let plan = self.next.fetch_add(1, Ordering::SeqCst);
            let held = lock(&self.hold).pop();
            if let Some((entered, release)) = held {
                entered.send(()).unwrap();
                release.recv_timeout(Duration::from_secs(60)).unwrap();
            }
            Ok((plan, from + 1))
        }
        fn read(&self, plan: &u64, _part: usize) -> ComputeResult<Vec<u64>> {
            Ok(vec![*plan])
        }
    }

    /// A node whose first look-up stops; returns it, the graph, and the means to wait for the
    /// look-up to start and to let it answer.
    fn held_node() -> (
        Arc<Planned<Held>>,
        Arc<GraphShared>,
        mpsc::Receiver<()>,
        mpsc::Sender<()>,
    ) {
        let (entered_tx, entered) = mpsc::channel();
        let (release, release_rx) = mpsc::channel();
        let node = Arc::new(Planned::new(Held {
            next: AtomicU64::new(100),
            hold: Mutex::new(vec![(entered_tx, release_rx)]),
        }));
        let graph = Arc::new(GraphShared::new(GraphSettings {
            batch_interval_ms: 1000,
            parallelism: 1,
            allow_unmatched_state: false,
            state_backend: crate::dstream::StateBackend::Memory,
            in_order: true,
            incremental_checkpoints: false,
            state_inline_max_bytes: 0,
        }));
        (node, graph, entered, release)
    }

    fn plan_of(node: &Planned<Held>, time: u64) -> Option<u64> {
        lock(&node.state).plans.get(&time).map(|(plan, _)| *plan)
    }

    /// A look-up that hangs holds no lock: a snapshot and another attempt go on; when the
    /// abandoned look-up answers late, the plan kept first stays.
    #[test]
    fn a_late_plan_never_replaces_the_kept_one_and_a_look_up_holds_no_lock() {
        let (node, graph, entered, release) = held_node();
        let abandoned = {
            let (node, graph) = (Arc::clone(&node), Arc::clone(&graph));
            std::thread::spawn(move || node.plan(&graph, 1000))
        };
        entered.recv_timeout(Duration::from_secs(60)).unwrap();
        // A snapshot, then the retry (planned as 101), from a thread of their own: had the
        // look-up kept the lock, they would wait for it, and the test would time out here.
        let (done_tx, done) = mpsc::channel();
        {
            let (node, graph) = (Arc::clone(&node), Arc::clone(&graph));
            std::thread::spawn(move || {
                let snapshot = node.snapshot(&graph, None).map(|s| s.is_some());
                let retry = node.plan(&graph, 1000);
                done_tx.send((snapshot, retry)).unwrap();
            });
        }
        let (snapshot, retry) = done
            .recv_timeout(Duration::from_secs(60))
            .expect("a snapshot and a retry while the look-up hangs");
        assert!(snapshot.unwrap());
        retry.unwrap();
        assert_eq!(plan_of(&node, 1000), Some(101));
        release.send(()).unwrap();
        abandoned.join().unwrap().unwrap(); // answered 100: dropped
        assert_eq!(plan_of(&node, 1000), Some(101));
        node.plan(&graph, 2000).unwrap();
        assert_eq!(plan_of(&node, 2000), Some(102));
    }

    /// A look-up that began before a restore answers after it: its plan is dropped, and the
    /// restored node plans the batch afresh.
    #[test]
    fn a_plan_that_answers_after_a_restore_is_dropped() {
        let (node, graph, entered, release) = held_node();
        let abandoned = {
            let (node, graph) = (Arc::clone(&node), Arc::clone(&graph));
            std::thread::spawn(move || node.plan(&graph, 1000))
        };
        entered.recv_timeout(Duration::from_secs(60)).unwrap();
        node.restore(&graph, None).unwrap();
        release.send(()).unwrap();
        let late = abandoned.join().unwrap();
        assert!(late.is_err(), "{late:?}");
        assert_eq!(plan_of(&node, 1000), None);
        node.plan(&graph, 1000).unwrap();
        assert_eq!(plan_of(&node, 1000), Some(101));
    }
}
