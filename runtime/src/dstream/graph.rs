//! The streaming graph: its nodes, its outputs, and the [`Pipeline`] the engine runs.
//!
//! A [`DStream`](super::DStream) is a handle on a node. A node computes each partition of each
//! batch through a memo ([`super::memo`]), so the output jobs of a batch — one per output and
//! partition, run in parallel on the executor workers — share the work; except a map, flat_map
//! or filter whose one reader only visits its elements (another such operator, or a shuffle's
//! map side): it streams its elements into that reader a chunk at a time as they are
//! computed, so a chain of them runs as one loop and nothing between them is materialised
//! beyond a chunk (`Node::visit`). The graph is built by user code before the context
//! starts, and built again from the current code at every start; only data (operator state,
//! source positions and plans) crosses a restart, matched by each node's stable id.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use weir_actors::StreamId;
use weir_actors::checkpoint::{
    CheckpointData, CheckpointId, FIRST_SCHEMA_VERSION, OperatorState, StateBytes, StateData,
    StateFileRef, StateUpload,
};
use weir_actors::pipeline::{
    BatchInput, BoxFuture, Job, Pipeline, PlanningError, ReceiverFactory, Snapshot, StateFiles,
    UserError,
};

use super::memo::{Memo, lock};
use super::state::Piece;
use crate::error::{ComputeError, ComputeResult};

/// One partition of one batch of a stream: shared, never copied between jobs.
pub type Partition<T> = Arc<Vec<T>>;

/// What is needed while computing a batch.
#[derive(Clone, Copy)]
pub(crate) struct BatchCx<'a> {
    /// The batch time (ms since the Unix epoch).
    pub(crate) time: u64,
    pub(crate) graph: &'a GraphShared,
}

impl BatchCx<'_> {
    /// The batch before this one.
    pub(crate) fn previous(&self) -> u64 {
        self.time.saturating_sub(self.graph.interval_ms())
    }
}

/// How a node computes its partitions; the node wraps it with a memo and an identity.
pub(crate) trait Compute<T>: Send + Sync + 'static {
    /// How many partitions each batch has.
    fn partitions(&self) -> usize;
    /// Computes partition `part` of batch `cx.time` (called at most once per live batch).
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<T>>;
    /// Whether the stream has a batch at `time` (windows only at their slide).
    fn active(&self, time: u64) -> bool {
        let _ = time;
        true
    }
    /// Batch `time` and every earlier one are complete: drop what was kept for them.
    fn evict_through(&self, time: u64) {
        let _ = time;
    }
    /// Batches this node holds data of besides its memo (a window's retained parent batches,
    /// state versions not yet folded into a checkpoint).
    fn remembered(&self) -> Vec<u64> {
        Vec::new()
    }
    /// Extra behaviour of sources and stateful nodes.
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        None
    }
    /// Whether [`visit`](Self::visit) computes the partition a chunk at a time, without
    /// materialising it (maps, flat_maps, filters).
    fn can_stream(&self) -> bool {
        false
    }
    /// Calls `f` with the elements of partition `part` of batch `cx.time`, in order, a chunk
    /// at a time, computed on the fly (only called when [`can_stream`](Self::can_stream) is
    /// true; the default materialises the partition and hands it over as one chunk).
    fn visit(&self, cx: BatchCx<'_>, part: usize, f: &mut dyn FnMut(&[T])) -> ComputeResult<()> {
        f(&self.compute(cx, part)?);
        Ok(())
    }
    /// Whether this node reads a batch's input (a source): its records per batch are counted
    /// (one count per computed partition, never per record) and reported as the batch's input.
    fn is_input(&self) -> bool {
        false
    }
}

/// What sources with planned input and stateful nodes add to a node.
pub(crate) trait Lifecycle: Send + Sync {
    /// Plans batch `time` (sources decide their input here, in batch order).
    fn plan(&self, graph: &GraphShared, time: u64) -> ComputeResult<()> {
        let _ = (graph, time);
        Ok(())
    }
    /// Whether [`plan`](Self::plan) asks a source (may be slow or hang): it then runs in
    /// [`Pipeline::prepare`], on the blocking pool under the planning timeout, and must be
    /// idempotent per batch (the batch's `jobs` plans it again: a no-op). Otherwise it runs
    /// in `jobs`, in the job generator's handler, and must be cheap.
    fn plans_input(&self) -> bool {
        false
    }
    /// The name a planning failure gives (a direct stream's source); the node's id if `None`.
    fn source_name(&self) -> Option<String> {
        None
    }
    /// The node's state to checkpoint, as of `completed_through` (see [`Pipeline::snapshot`]).
    fn snapshot(
        &self,
        graph: &GraphShared,
        completed_through: Option<u64>,
    ) -> ComputeResult<Option<Vec<u8>>> {
        let _ = (graph, completed_through);
        Ok(None)
    }
    /// The node's snapshot for checkpoint `id` (incremental checkpoints): by default the
    /// whole state, as [`snapshot`](Self::snapshot).
    fn snapshot_piece(
        &self,
        graph: &GraphShared,
        completed_through: Option<u64>,
        id: CheckpointId,
    ) -> ComputeResult<Option<Piece>> {
        let _ = id;
        Ok(self.snapshot(graph, completed_through)?.map(Piece::Full))
    }
    /// The write of checkpoint `id` ended: `Some` with the node's chain in it (empty if its
    /// state was not a chain) if written, `None` if it failed.
    fn checkpoint_ended(&self, id: CheckpointId, written: Option<&[StateFileRef]>) {
        let _ = (id, written);
    }
    /// Drops everything and restores a chain: `base` (what [`restore`](Self::restore) reads)
    /// then `deltas` in order; `chain` names the files. Only nodes that write deltas accept
    /// any.
    fn restore_chain(
        &self,
        graph: &GraphShared,
        base: &StateBytes,
        deltas: &[StateBytes],
        chain: &[StateFileRef],
    ) -> ComputeResult<()> {
        let _ = chain;
        if deltas.is_empty() {
            self.restore_bytes(graph, base)
        } else {
            Err(ComputeError::new(
                "the checkpoint holds state deltas for an operator that does not write any",
            ))
        }
    }
    /// The name of the state's type, checked on restore.
    fn state_type(&self) -> &'static str {
        ""
    }
    /// State of another type, `type_name`, that an earlier release checkpointed for this node,
    /// re-encoded as today's ([`state_type`](Self::state_type)); `None` if the node never had
    /// state of that type (the restore is then refused).
    fn upgrade(&self, type_name: &str, bytes: &[u8]) -> Option<ComputeResult<Vec<u8>>> {
        let _ = (type_name, bytes);
        None
    }
    /// Takes the program's migration hook for the node's state (an
    /// `Arc<schema::MigrateFn<S>>` for its state type `S`); `false` if the node cannot.
    fn set_migration(&self, hook: Box<dyn std::any::Any + Send + Sync>) -> bool {
        let _ = hook;
        false
    }
    /// Whether the node has a migration hook for its state.
    fn migrates(&self) -> bool {
        false
    }
    /// State of schema version `from` (`bytes`: what [`restore`](Self::restore) reads, or a
    /// delta of a chain if `delta`) rewritten as today's with the migration hook; `migrated`
    /// counts the keys migrated so far. Only called if [`migrates`](Self::migrates).
    fn migrate(
        &self,
        from: u32,
        bytes: &[u8],
        delta: bool,
        migrated: &mut u64,
    ) -> Result<Vec<u8>, String> {
        let _ = (from, bytes, delta, migrated);
        Err("the operator has no state migration".to_owned())
    }
    /// Drops everything and restores `state` (`None`: a fresh start for this node).
    fn restore(&self, graph: &GraphShared, state: Option<&[u8]>) -> ComputeResult<()>;
    /// [`restore`](Self::restore) of a state in memory or in a local file: by default read
    /// into memory; nodes whose backend keeps state out of memory read a file in pieces.
    fn restore_bytes(&self, graph: &GraphShared, state: &StateBytes) -> ComputeResult<()> {
        let bytes = state
            .bytes()
            .map_err(|e| ComputeError::new(format!("reading state: {e}")))?;
        self.restore(graph, Some(&bytes))
    }
    /// Batch `time` completed.
    fn completed(&self, graph: &GraphShared, time: u64) {
        let _ = (graph, time);
    }
    /// Whether every partition must be computed every batch, output or not (state).
    fn maintained(&self) -> bool {
        false
    }
    /// The offset ranges a direct source planned for batch `time`.
    fn offset_ranges(&self, time: u64) -> Vec<super::OffsetRange> {
        let _ = time;
        Vec::new()
    }
    /// Where a direct source's partitions are, as of its newest plan.
    fn sources(&self) -> Vec<weir_actors::SourceLag> {
        Vec::new()
    }
}

/// A node's identity.
#[derive(Debug)]
pub(crate) struct NodeMeta {
    /// What it is (`map`, `update_state_by_key`, ...).
    pub(crate) kind: &'static str,
    /// Its stable id: set by the user, or `<kind>-<index>`.
    pub(crate) uid: Mutex<String>,
    /// Whether the user set the uid.
    pub(crate) uid_set: AtomicBool,
    /// Where the user's program made it (the public builder's caller), for messages.
    pub(crate) defined_at: &'static std::panic::Location<'static>,
    /// The schema version of its state ([`DStream::state_schema`](super::DStream::state_schema);
    /// [`FIRST_SCHEMA_VERSION`] unless set).
    pub(crate) schema_version: AtomicU32,
}

impl NodeMeta {
    pub(crate) fn uid(&self) -> String {
        lock(&self.uid).clone()
    }

    /// The schema version of the node's state.
    pub(crate) fn schema_version(&self) -> u32 {
        self.schema_version.load(Ordering::SeqCst)
    }
}

/// A node: its computation, memoised per (batch, partition).
pub(crate) struct Node<T> {
    pub(crate) meta: NodeMeta,
    pub(crate) compute: Box<dyn Compute<T>>,
    memo: Memo<Partition<T>>,
    /// Inner nodes holding this operator's state (a composite operator's window): named
    /// `<uid>/<suffix>` when the operator's uid is set.
    pub(crate) helpers: Mutex<Vec<(&'static str, Arc<dyn AnyNode>)>>,
    /// One permit: held by this node's planning while it runs on the blocking pool, so that
    /// a source that hangs holds one blocking thread, not one per retry.
    plan_slot: Arc<tokio::sync::Semaphore>,
    /// A source's records per batch and partition (a recomputed partition counts once).
    input_counts: Mutex<BTreeMap<u64, BTreeMap<usize, u64>>>,
    /// How many operators read this node ([`consumed`](Node::consumed)), and how many of them
    /// only [`visit`](Node::visit) its elements one at a time.
    consumers: AtomicUsize,
    visitors: AtomicUsize,
}

impl<T: Send + Sync + 'static> Node<T> {
    /// The handle an operator reading whole partitions of this node keeps: every reader of a
    /// node takes its handle through this or [`visited`](Self::visited), so that the node
    /// knows whether its partitions must be memoised.
    pub(crate) fn consumed(self: &Arc<Self>) -> Arc<Self> {
        self.consumers.fetch_add(1, Ordering::SeqCst);
        Arc::clone(self)
    }

    /// The handle an operator that only [`visit`](Self::visit)s this node's elements keeps.
    pub(crate) fn visited(self: &Arc<Self>) -> Arc<Self> {
        self.visitors.fetch_add(1, Ordering::SeqCst);
        self.consumed()
    }

    /// Whether this node is computed a chunk at a time into its one reader, which only
    /// visits it: a chain of maps, flat_maps and filters feeding a shuffle or another such
    /// operator is then one loop, and no partition of it is materialised or memoised (Spark
    /// pipelines narrow transformations within a stage the same way). A node read by more
    /// than one operator is memoised, so that its work is shared.
    fn streams(&self) -> bool {
        self.compute.can_stream()
            && self.consumers.load(Ordering::SeqCst) == 1
            && self.visitors.load(Ordering::SeqCst) == 1
    }

    /// Calls `f` with the elements of partition `part` of batch `cx.time`, in order, a chunk
    /// (a slice) at a time: the memoised partition as one chunk, or chunks computed on the fly
    /// if the node [streams](Self::streams). A chain of streaming operators thus makes one
    /// dynamic call per chunk, not per element, and what one step writes is read by the next
    /// a chunk later (not the instant after it was written).
    pub(crate) fn visit(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        f: &mut dyn FnMut(&[T]),
    ) -> ComputeResult<()> {
        if self.streams() {
            return self.compute.visit(cx, part, f).map_err(|e| {
                ComputeError(format!("{} ({}): {}", self.meta.uid(), self.meta.kind, e.0))
            });
        }
        f(&self.partition(cx, part)?);
        Ok(())
    }

    /// Partition `part` of batch `cx.time`.
    pub(crate) fn partition(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Partition<T>> {
        self.memo.get_or_compute(cx.time, part, || {
            let records = self.compute.compute(cx, part).map_err(|e| {
                ComputeError(format!("{} ({}): {}", self.meta.uid(), self.meta.kind, e.0))
            })?;
            if self.compute.is_input() {
                lock(&self.input_counts)
                    .entry(cx.time)
                    .or_default()
                    .insert(part, records.len() as u64);
            }
            Ok(Arc::new(records))
        })
    }

    /// Every partition of batch `cx.time`.
    pub(crate) fn all(&self, cx: BatchCx<'_>) -> ComputeResult<Vec<Partition<T>>> {
        (0..self.partitions())
            .map(|p| self.partition(cx, p))
            .collect()
    }

    /// Every partition of batch `cx.time`, in order, for consumer partition `part` of
    /// `consumers` in a shuffle: computed in [`pull_order`](super::pull_order), so that
    /// parallel consumers compute different partitions instead of waiting on the same one.
    pub(crate) fn all_for(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        consumers: usize,
    ) -> ComputeResult<Vec<Partition<T>>> {
        super::pull_all(part, consumers, self.partitions(), |q| {
            self.partition(cx, q)
        })
    }

    pub(crate) fn partitions(&self) -> usize {
        self.compute.partitions()
    }

    pub(crate) fn active(&self, time: u64) -> bool {
        self.compute.active(time)
    }

    /// The batches this node holds data of: memoised, or kept by the computation.
    pub(crate) fn remembered(&self) -> Vec<u64> {
        let mut times = self.memo.times();
        times.extend(self.compute.remembered());
        times.sort_unstable();
        times.dedup();
        times
    }
}

/// The type-erased view the graph keeps of every node.
pub(crate) trait AnyNode: Send + Sync {
    fn meta(&self) -> &NodeMeta;
    fn lifecycle(&self) -> Option<&dyn Lifecycle>;
    fn evict_through(&self, time: u64);
    fn clear(&self);
    fn partitions(&self) -> usize;
    /// Computes (and memoises) one partition, discarding the value.
    fn force(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<()>;
    /// A source's records in batch `time` (`None` for other nodes, or if it read nothing).
    fn input_records(&self, time: u64) -> Option<u64>;
    /// Held while this node plans on the blocking pool (see [`Node`]'s `plan_slot`).
    fn plan_slot(&self) -> Arc<tokio::sync::Semaphore>;
}

impl<T: Send + Sync + 'static> AnyNode for Node<T> {
    fn meta(&self) -> &NodeMeta {
        &self.meta
    }
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        self.compute.lifecycle()
    }
    fn evict_through(&self, time: u64) {
        self.memo.evict_through(time);
        self.compute.evict_through(time);
        lock(&self.input_counts).retain(|&t, _| t > time);
    }
    fn clear(&self) {
        self.memo.clear();
    }
    fn partitions(&self) -> usize {
        Node::partitions(self)
    }
    fn force(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<()> {
        self.partition(cx, part).map(|_| ())
    }
    fn input_records(&self, time: u64) -> Option<u64> {
        lock(&self.input_counts)
            .get(&time)
            .map(|parts| parts.values().sum())
    }
    fn plan_slot(&self) -> Arc<tokio::sync::Semaphore> {
        Arc::clone(&self.plan_slot)
    }
}

/// An output operation: the jobs it adds to a batch.
pub(crate) trait Output: Send + Sync {
    /// The jobs of batch `time` (none if its stream has no batch then).
    fn jobs(&self, graph: &Arc<GraphShared>, time: u64) -> Vec<Job>;
}

/// Settings of the graph fixed when the context is built.
#[derive(Clone, Debug)]
pub(crate) struct GraphSettings {
    pub(crate) batch_interval_ms: u64,
    pub(crate) parallelism: usize,
    pub(crate) allow_unmatched_state: bool,
    /// Where stateful operators keep their state.
    pub(crate) state_backend: crate::dstream::StateBackend,
    /// Whether batches complete in order (one in flight): every checkpoint's state is then as
    /// of the last completed batch, and a backend may fold each batch as it completes.
    pub(crate) in_order: bool,
    /// Whether large state goes into state files, and `map_with_state` writes deltas.
    pub(crate) incremental_checkpoints: bool,
    /// With incremental checkpoints, state of at most this many bytes stays inline.
    pub(crate) state_inline_max_bytes: usize,
}

/// Where the graph's nodes report events of their own (a direct source's
/// [`SourceReset`](weir_actors::Event::SourceReset)): the engine's events once the context has
/// started; what is reported before (at most [`EventSlot::PENDING_MAX`]) is published then.
#[derive(Clone, Default)]
pub(crate) struct EventSlot(Arc<Mutex<SlotState>>);

#[derive(Default)]
struct SlotState {
    sink: Option<weir_actors::EventSink>,
    pending: Vec<weir_actors::Event>,
}

#[cfg_attr(
    not(feature = "kafka"),
    allow(
        dead_code,
        reason = "only the Kafka direct stream reports events of its own yet"
    )
)]
impl EventSlot {
    /// Events kept until the engine starts; later ones are dropped (they are logged too).
    pub(crate) const PENDING_MAX: usize = 1000;

    /// Reports `event`.
    pub(crate) fn emit(&self, event: weir_actors::Event) {
        let mut slot = lock(&self.0);
        match &slot.sink {
            Some(sink) => sink.emit(event),
            None if slot.pending.len() < Self::PENDING_MAX => slot.pending.push(event),
            None => {}
        }
    }

    /// From now on, events go to `sink`; those kept so far first.
    pub(crate) fn attach(&self, sink: weir_actors::EventSink) {
        let mut slot = lock(&self.0);
        for event in std::mem::take(&mut slot.pending) {
            sink.emit(event);
        }
        slot.sink = Some(sink);
    }
}

impl std::fmt::Debug for EventSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EventSlot")
    }
}

/// The graph, shared by every DStream handle, the pipeline and the jobs.
pub(crate) struct GraphShared {
    /// Where nodes report events of their own.
    pub(crate) events: EventSlot,
    pub(crate) settings: GraphSettings,
    nodes: Mutex<Vec<Arc<dyn AnyNode>>>,
    outputs: Mutex<Vec<Arc<dyn Output>>>,
    pub(crate) receivers: Mutex<Vec<(StreamId, Arc<dyn ReceiverFactory>)>>,
    inputs: Mutex<BTreeMap<u64, Arc<BatchInput>>>,
    next_node: AtomicUsize,
    next_stream: AtomicU32,
    started: AtomicBool,
    /// What restore reported (operators without state, state dropped), for the context.
    pub(crate) restore_report: Mutex<Vec<String>>,
    /// The checkpoint `get_or_create` restored the graph to (to check it fits), while nothing
    /// has changed the state since: the driver's first start takes it instead of reading the
    /// state files and restoring again.
    checked_restore: Mutex<Option<CheckpointData>>,
    /// Why operators added to the graph are invalid (reported by `validate`).
    invalid: Mutex<Vec<String>>,
}

impl std::fmt::Debug for GraphShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphShared")
            .field("settings", &self.settings)
            .field("nodes", &lock(&self.nodes).len())
            .field("outputs", &lock(&self.outputs).len())
            .finish_non_exhaustive()
    }
}

impl GraphShared {
    pub(crate) fn new(settings: GraphSettings) -> Self {
        GraphShared {
            events: EventSlot::default(),
            settings,
            nodes: Mutex::new(Vec::new()),
            outputs: Mutex::new(Vec::new()),
            receivers: Mutex::new(Vec::new()),
            inputs: Mutex::new(BTreeMap::new()),
            next_node: AtomicUsize::new(0),
            next_stream: AtomicU32::new(0),
            started: AtomicBool::new(false),
            restore_report: Mutex::new(Vec::new()),
            checked_restore: Mutex::new(None),
            invalid: Mutex::new(Vec::new()),
        }
    }

    /// Records that an operator was declared with invalid settings: `validate` fails with it.
    pub(crate) fn invalidate(&self, why: String) {
        lock(&self.invalid).push(why);
    }

    pub(crate) fn interval_ms(&self) -> u64 {
        self.settings.batch_interval_ms.max(1)
    }

    pub(crate) fn parallelism(&self) -> usize {
        self.settings.parallelism.max(1)
    }

    /// Adds a node computed by `compute`.
    #[track_caller]
    pub(crate) fn add_node<T: Send + Sync + 'static>(
        &self,
        kind: &'static str,
        compute: impl Compute<T>,
    ) -> Arc<Node<T>> {
        let index = self.next_node.fetch_add(1, Ordering::SeqCst);
        let node = Arc::new(Node {
            meta: NodeMeta {
                kind,
                uid: Mutex::new(format!("{kind}-{index}")),
                uid_set: AtomicBool::new(false),
                defined_at: std::panic::Location::caller(),
                schema_version: AtomicU32::new(FIRST_SCHEMA_VERSION),
            },
            compute: Box::new(compute),
            memo: Memo::default(),
            helpers: Mutex::new(Vec::new()),
            input_counts: Mutex::default(),
            consumers: AtomicUsize::new(0),
            visitors: AtomicUsize::new(0),
            plan_slot: Arc::new(tokio::sync::Semaphore::new(1)),
        });
        lock(&self.nodes).push(Arc::clone(&node) as Arc<dyn AnyNode>);
        node
    }

    pub(crate) fn add_output(&self, output: Arc<dyn Output>) {
        lock(&self.outputs).push(output);
    }

    pub(crate) fn new_stream_id(&self) -> StreamId {
        self.next_stream.fetch_add(1, Ordering::SeqCst)
    }

    pub(crate) fn output_count(&self) -> usize {
        lock(&self.outputs).len()
    }

    pub(crate) fn mark_started(&self) -> bool {
        !self.started.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }

    /// The input blocks of batch `time`.
    pub(crate) fn input(&self, time: u64) -> ComputeResult<Arc<BatchInput>> {
        lock(&self.inputs).get(&time).cloned().ok_or_else(|| {
            ComputeError(format!("the input of batch {time} is no longer in memory"))
        })
    }

    /// The offset ranges every direct source planned for batch `time`.
    pub(crate) fn offset_ranges(&self, time: u64) -> Vec<super::OffsetRange> {
        self.nodes()
            .iter()
            .filter_map(|n| n.lifecycle().map(|l| l.offset_ranges(time)))
            .flatten()
            .collect()
    }

    fn nodes(&self) -> Vec<Arc<dyn AnyNode>> {
        lock(&self.nodes).clone()
    }

    /// Checks that operators are valid and uids are unique.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(why) = lock(&self.invalid).first() {
            return Err(why.clone());
        }
        if self.output_count() == 0 {
            return Err("no output operation is defined (add print, foreach_batch, ...)".into());
        }
        let mut seen = BTreeSet::new();
        for node in self.nodes() {
            let uid = node.meta().uid();
            if !seen.insert(uid.clone()) {
                return Err(format!(
                    "two operators have the id {uid:?}; ids must be unique"
                ));
            }
        }
        Ok(())
    }
}

/// Makes a job whose work runs on the blocking pool (computing partitions is CPU work; the
/// engine's actors must stay responsive meanwhile).
pub(crate) fn blocking_job(
    id: String,
    work: impl Fn() -> ComputeResult<()> + Send + Sync + 'static,
) -> Job {
    let work = Arc::new(work);
    Job {
        id,
        run: Arc::new(move |_ctx| -> BoxFuture<'static, Result<(), UserError>> {
            let work = Arc::clone(&work);
            // The engine runs the job inside its batch's `tracing` span; the blocking thread
            // enters it too, so what the user's closures log carries `batch_time_ms`.
            let span = tracing::Span::current();
            Box::pin(async move {
                match tokio::task::spawn_blocking(move || span.in_scope(|| work())).await {
                    Ok(result) => result.map_err(|e| Box::new(e) as UserError),
                    Err(join) if join.is_panic() => {
                        Err(format!("panicked: {}", panic_message(join.into_panic())).into())
                    }
                    Err(join) => Err(join.to_string().into()),
                }
            })
        }),
    }
}

/// Plans batch `time` of a source node on the blocking pool, by `deadline` (the attempt's
/// `timeout` after it began, shared by its sources): at most one
/// planning of the node runs at a time (an attempt abandoned while its source hangs keeps its
/// thread and its slot until the source answers; the next attempt waits for the slot, then
/// finds the batch planned or plans it).
async fn plan_node(
    graph: &Arc<GraphShared>,
    node: Arc<dyn AnyNode>,
    time: u64,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
) -> Result<(), PlanningError> {
    let source = node
        .lifecycle()
        .and_then(|l| l.source_name())
        .unwrap_or_else(|| node.meta().uid());
    let timeout_ms = timeout.as_millis();
    let slot = node.plan_slot();
    let permit = match tokio::time::timeout_at(deadline, slot.acquire_owned()).await {
        Ok(Ok(permit)) => permit,
        Ok(Err(closed)) => return Err(PlanningError::new(source, closed.to_string())),
        Err(_) => {
            return Err(PlanningError::new(
                source,
                format!(
                    "an earlier look-up has not answered yet, {timeout_ms} ms later (the planning \
                     timeout)"
                ),
            ));
        }
    };
    let graph = Arc::clone(graph);
    let span = tracing::Span::current();
    let look_up = tokio::task::spawn_blocking(move || {
        let _slot = permit;
        span.in_scope(|| match node.lifecycle() {
            Some(lifecycle) => lifecycle.plan(&graph, time),
            None => Ok(()),
        })
    });
    match tokio::time::timeout_at(deadline, look_up).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(error))) => Err(PlanningError::new(source, error.0)),
        Ok(Err(join)) if join.is_panic() => Err(PlanningError::new(
            source,
            format!("planning panicked: {}", panic_message(join.into_panic())),
        )),
        Ok(Err(join)) => Err(PlanningError::new(source, join.to_string())),
        // The blocking call goes on on its thread; its plan is kept if it is still wanted.
        Err(_) => Err(PlanningError::new(
            source,
            format!("no answer within {timeout_ms} ms (the planning timeout)"),
        )),
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// The [`Pipeline`] the engine runs: the graph.
#[derive(Debug)]
pub(crate) struct GraphPipeline {
    pub(crate) graph: Arc<GraphShared>,
}

/// Header of every operator state the runtime writes.
pub(crate) const STATE_FORMAT: &str = "weir-runtime/1";

/// The header of a delta state file (a base file starts with [`STATE_FORMAT`], as inline
/// state does).
const DELTA_FORMAT: &str = "weir-delta/1";

/// With incremental checkpoints, state larger than this goes into a state file (a chain's
/// base) by default; smaller state stays inline in the checkpoint.
pub(crate) const INLINE_MAX: usize = 64 << 10;

/// `header` and its 0 byte, as [`with_header`] puts them before a state.
pub(crate) fn format_header(header: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 1);
    out.extend_from_slice(header.as_bytes());
    out.push(0);
    out
}

/// `header`, a 0 byte, then `bytes`.
fn with_header(header: &str, mut bytes: Vec<u8>) -> Vec<u8> {
    // In the state's own allocation (growing a large one remaps its pages rather than copying
    // them): a large state is not in memory twice.
    let (len, prefix) = (bytes.len(), header.len() + 1);
    bytes.reserve_exact(prefix);
    bytes.resize(len + prefix, 0);
    bytes.copy_within(..len, prefix);
    bytes[..header.len()].copy_from_slice(header.as_bytes());
    bytes[header.len()] = 0;
    bytes
}

/// The bytes after `header` and its 0 byte.
fn strip_header<'a>(header: &str, data: &'a [u8]) -> Option<&'a [u8]> {
    data.strip_prefix(header.as_bytes())
        .and_then(|rest| rest.strip_prefix(&[0]))
}

/// [`strip_header`] of bytes in memory or in a file (not read beyond the header).
fn strip_header_bytes(header: &str, data: &StateBytes) -> Result<Option<StateBytes>, String> {
    let expected = format_header(header);
    let mut found = vec![0; expected.len()];
    let n = data
        .read_at(0, &mut found)
        .map_err(|e| format!("reading a state file: {e}"))?;
    Ok((n == expected.len() && found == expected).then(|| data.skip(n as u64)))
}

/// A node's state read from a checkpoint, to restore.
enum Restoring {
    /// Its whole state.
    Whole(StateBytes),
    /// A base and deltas (each without its header), and the files they came from.
    Chain {
        base: StateBytes,
        deltas: Vec<StateBytes>,
        files: Vec<StateFileRef>,
    },
}

impl Pipeline for GraphPipeline {
    fn spill_dir(&self) -> Option<std::path::PathBuf> {
        match &self.graph.settings.state_backend {
            crate::dstream::StateBackend::Disk(options) => Some(options.dir.clone()),
            _ => None,
        }
    }

    fn savepoint_refusal(&self) -> Option<String> {
        let unnamed: Vec<String> = self
            .graph
            .nodes()
            .iter()
            .filter(|node| {
                node.lifecycle().is_some() && !node.meta().uid_set.load(Ordering::SeqCst)
            })
            .map(|node| {
                let meta = node.meta();
                format!(
                    "{:?} (a {}, made at {})",
                    meta.uid(),
                    meta.kind,
                    meta.defined_at
                )
            })
            .collect();
        (!unnamed.is_empty()).then(|| {
            format!(
                "refused to take a savepoint: every stateful operator and source needs an \
                 explicit id, so that a changed program finds its state, but these have ids \
                 derived from the graph's layout: {}; give each one with .uid(..)",
                unnamed.join(", ")
            )
        })
    }

    fn fingerprint(&self) -> u64 {
        let mut hasher = std::hash::DefaultHasher::new();
        for node in self.graph.nodes() {
            (node.meta().uid(), node.meta().kind).hash(&mut hasher);
        }
        self.graph.output_count().hash(&mut hasher);
        hasher.finish()
    }

    fn prepare(
        &self,
        batch_time_ms: u64,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PlanningError>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let planners: Vec<Arc<dyn AnyNode>> = self
            .graph
            .nodes()
            .into_iter()
            .filter(|node| node.lifecycle().is_some_and(|l| l.plans_input()))
            .collect();
        if planners.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let graph = Arc::clone(&self.graph);
        Box::pin(async move {
            for node in planners {
                plan_node(&graph, node, batch_time_ms, deadline, timeout).await?;
            }
            Ok(())
        })
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        let time = input.batch_time_ms;
        lock(&self.graph.inputs).insert(time, Arc::new(input.clone()));
        let nodes = self.graph.nodes();
        for node in &nodes {
            if let Some(lifecycle) = node.lifecycle() {
                lifecycle.plan(&self.graph, time)?;
            }
        }
        let mut jobs = Vec::new();
        for node in &nodes {
            if node.lifecycle().is_some_and(|l| l.maintained()) {
                let uid = node.meta().uid();
                for part in 0..node.partitions() {
                    let (graph, node) = (Arc::clone(&self.graph), Arc::clone(node));
                    jobs.push(blocking_job(
                        format!("state/{uid}/part-{part}"),
                        move || {
                            node.force(
                                BatchCx {
                                    time,
                                    graph: &graph,
                                },
                                part,
                            )
                        },
                    ));
                }
            }
        }
        for output in lock(&self.graph.outputs).iter() {
            jobs.extend(output.jobs(&self.graph, time));
        }
        Ok(jobs)
    }

    fn snapshot(&self, completed_through_ms: Option<u64>) -> Result<Vec<OperatorState>, UserError> {
        let mut states = Vec::new();
        for node in self.graph.nodes() {
            let Some(lifecycle) = node.lifecycle() else {
                continue;
            };
            if let Some(bytes) = lifecycle.snapshot(&self.graph, completed_through_ms)? {
                let mut data = STATE_FORMAT.as_bytes().to_vec();
                data.push(0);
                data.extend_from_slice(&bytes);
                states.push(OperatorState {
                    operator_id: node.meta().uid(),
                    type_name: lifecycle.state_type().to_owned(),
                    data: weir_actors::checkpoint::StateData::Inline(data),
                    schema_version: node.meta().schema_version(),
                });
            }
        }
        Ok(states)
    }

    fn snapshot_for(
        &self,
        checkpoint: CheckpointId,
        completed_through_ms: Option<u64>,
    ) -> Result<Snapshot, UserError> {
        if !self.graph.settings.incremental_checkpoints {
            return Ok(Snapshot {
                states: self.snapshot(completed_through_ms)?,
                uploads: Vec::new(),
            });
        }
        let snapshot = self.snapshot_pieces(checkpoint, completed_through_ms);
        if snapshot.is_err() {
            // No write follows: nodes that took their snapshot hear it ended, failed.
            self.checkpoint_ended(checkpoint, None);
        }
        snapshot
    }

    fn checkpoint_ended(&self, checkpoint: CheckpointId, written: Option<&CheckpointData>) {
        for node in self.graph.nodes() {
            let Some(lifecycle) = node.lifecycle() else {
                continue;
            };
            let chain = written.map(|data| {
                let uid = node.meta().uid();
                data.operator_state
                    .iter()
                    .find(|s| s.operator_id == uid)
                    .map_or(&[][..], |s| match &s.data {
                        StateData::Chain(files) => files.as_slice(),
                        _ => &[],
                    })
            });
            lifecycle.checkpoint_ended(checkpoint, chain);
        }
    }

    fn restore_with_files(
        &self,
        checkpoint: Option<&CheckpointData>,
        files: &StateFiles,
    ) -> Result<(), UserError> {
        self.restore_from(checkpoint, files)
    }

    fn restore(&self, checkpoint: Option<&CheckpointData>) -> Result<(), UserError> {
        self.restore_from(checkpoint, &StateFiles::new())
    }

    fn holds(&self, checkpoint: &CheckpointData) -> bool {
        lock(&self.graph.checked_restore)
            .take()
            .is_some_and(|held| held == *checkpoint)
    }
    fn batch_inputs(&self, batch_time_ms: u64) -> BTreeMap<String, u64> {
        self.graph
            .nodes()
            .iter()
            .filter_map(|node| Some((node.meta().uid(), node.input_records(batch_time_ms)?)))
            .collect()
    }

    fn sources(&self) -> Vec<weir_actors::SourceLag> {
        self.graph
            .nodes()
            .iter()
            .filter_map(|node| node.lifecycle())
            .flat_map(|lifecycle| lifecycle.sources())
            .collect()
    }

    fn batch_completed(&self, batch_time_ms: u64) {
        lock(&self.graph.inputs).retain(|&t, _| t > batch_time_ms);
        for node in self.graph.nodes() {
            node.evict_through(batch_time_ms);
            if let Some(lifecycle) = node.lifecycle() {
                lifecycle.completed(&self.graph, batch_time_ms);
            }
        }
    }
}

impl GraphPipeline {
    /// [`restore_with_files`](Pipeline::restore_with_files) by `get_or_create`, to check that
    /// `checkpoint` fits the graph: the graph then holds its state, which the driver's first
    /// start keeps ([`Pipeline::holds`]) instead of reading the state files again.
    pub(crate) fn restore_to_check(
        &self,
        checkpoint: &CheckpointData,
        files: &StateFiles,
    ) -> Result<(), UserError> {
        self.restore_from(Some(checkpoint), files)?;
        *lock(&self.graph.checked_restore) = Some(checkpoint.clone());
        Ok(())
    }

    /// Resets every node to its state in `checkpoint` (inline, or in `files`).
    fn restore_from(
        &self,
        checkpoint: Option<&CheckpointData>,
        files: &StateFiles,
    ) -> Result<(), UserError> {
        // Whatever the graph held from a checked restore is replaced.
        lock(&self.graph.checked_restore).take();
        lock(&self.graph.inputs).clear();

        let mut by_id: BTreeMap<&str, &OperatorState> = checkpoint
            .map(|c| {
                c.operator_state
                    .iter()
                    .map(|s| (s.operator_id.as_str(), s))
                    .collect()
            })
            .unwrap_or_default();
        let mut report = Vec::new();
        let nodes = self.graph.nodes();
        // Check everything before changing anything.
        let mut matched = Vec::new();
        for node in &nodes {
            node.clear();
            let Some(lifecycle) = node.lifecycle() else {
                continue;
            };
            let uid = node.meta().uid();
            let state = match by_id.remove(uid.as_str()) {
                Some(state) if state.schema_version != node.meta().schema_version() => {
                    let (theirs, ours) = (state.schema_version, node.meta().schema_version());
                    let refusal = if theirs > ours {
                        Some(format!(
                            "operator {uid:?} has state of schema version {theirs} in the \
                             checkpoint, newer than this program's version {ours}; run a \
                             program that declares version {theirs} or later, or restore with \
                             allow_non_restored_state to drop this operator's state"
                        ))
                    } else if !lifecycle.migrates() {
                        Some(format!(
                            "operator {uid:?} has state of schema version {theirs} in the \
                             checkpoint but this program declares version {ours} and gives it \
                             no migration; add one with .migrate_state(..), or restore with \
                             allow_non_restored_state to drop this operator's state"
                        ))
                    } else {
                        None
                    };
                    if let Some(refusal) = refusal {
                        if !self.graph.settings.allow_unmatched_state {
                            return Err(refusal.into());
                        }
                        report.push(format!(
                            "dropped the state of operator {uid:?} (schema version {theirs}, \
                             the program's is {ours}); it starts empty"
                        ));
                        matched.push((Arc::clone(node), None));
                        continue;
                    }
                    let migrated = migrate_state(lifecycle, theirs, read_state(state, files)?)
                        .map_err(|(keys, e)| {
                            format!(
                                "operator {uid:?}: migrating its state from schema version \
                                 {theirs} to {ours} failed after {keys} keys: {e}"
                            )
                        })?;
                    report.push(format!(
                        "operator {uid:?}: state migrated from schema version {theirs} to {ours}"
                    ));
                    Some(migrated)
                }
                Some(state) => {
                    let read = read_state(state, files)?;
                    let bytes = match read {
                        read if state.type_name == lifecycle.state_type() => {
                            matched.push((Arc::clone(node), Some(read)));
                            continue;
                        }
                        Restoring::Whole(bytes) => read_whole(&uid, &bytes)?,
                        Restoring::Chain { base, deltas, .. } if deltas.is_empty() => {
                            read_whole(&uid, &base)?
                        }
                        Restoring::Chain { .. } => {
                            return Err(format!(
                                "operator {uid:?} held state of type {} in the checkpoint, but \
                                 is now {}; state written as deltas cannot be upgraded",
                                state.type_name,
                                lifecycle.state_type()
                            )
                            .into());
                        }
                    };
                    if let Some(upgraded) = lifecycle.upgrade(&state.type_name, &bytes) {
                        let upgraded = upgraded.map_err(|e| {
                            format!(
                                "operator {uid:?}: reading its state of type {} from an \
                                 earlier release: {e}",
                                state.type_name
                            )
                        })?;
                        report.push(format!(
                            "operator {uid:?}: state of type {} from an earlier release read as {}",
                            state.type_name,
                            lifecycle.state_type()
                        ));
                        Some(Restoring::Whole(upgraded.into()))
                    } else {
                        return Err(format!(
                            "operator {uid:?} held state of type {} in the checkpoint, but is \
                             now {}; if the state's type changed, declare a new schema version \
                             with .state_schema({}) and migrate the old state with \
                             .migrate_state(..), or give the changed operator a new id to start \
                             it empty",
                            state.type_name,
                            lifecycle.state_type(),
                            state.schema_version.saturating_add(1)
                        )
                        .into());
                    }
                }
                None => {
                    if checkpoint.is_some() {
                        report.push(format!(
                            "operator {uid:?} ({}) has no state in the checkpoint; it starts \
                             empty",
                            node.meta().kind
                        ));
                    }
                    None
                }
            };
            matched.push((Arc::clone(node), state));
        }
        if !by_id.is_empty() {
            let ids: Vec<String> = by_id.keys().map(|id| format!("{id:?}")).collect();
            if !self.graph.settings.allow_unmatched_state {
                return Err(format!(
                    "the checkpoint holds state of operators that no longer exist: {}; restore \
                     with allow_unmatched_state to drop it",
                    ids.join(", ")
                )
                .into());
            }
            report.push(format!(
                "dropped the state of removed operators: {}",
                ids.join(", ")
            ));
        }
        for (node, state) in matched {
            if let Some(lifecycle) = node.lifecycle() {
                let restored = match state {
                    None => lifecycle.restore(&self.graph, None),
                    Some(Restoring::Whole(bytes)) => lifecycle.restore_bytes(&self.graph, &bytes),
                    Some(Restoring::Chain {
                        base,
                        deltas,
                        files,
                    }) => lifecycle.restore_chain(&self.graph, &base, &deltas, &files),
                };
                restored.map_err(|e| {
                    let uid = node.meta().uid();
                    if e.0.starts_with("decoding") {
                        // The type kept its name but not its shape.
                        format!(
                            "operator {uid:?}: its state in the checkpoint (schema version {}) \
                             does not decode as today's state type ({e}); if that type changed, \
                             declare a new schema version with .state_schema({}) and migrate \
                             the old state with .migrate_state(..)",
                            node.meta().schema_version(),
                            node.meta().schema_version().saturating_add(1)
                        )
                    } else {
                        format!("restoring {uid:?}: {e}")
                    }
                })?;
            }
        }
        for line in &report {
            tracing::warn!("{line}");
        }
        *lock(&self.graph.restore_report) = report;
        Ok(())
    }

    /// The snapshot for `checkpoint` with incremental checkpoints: large state in state
    /// files, `map_with_state` as deltas.
    fn snapshot_pieces(
        &self,
        checkpoint: CheckpointId,
        completed_through_ms: Option<u64>,
    ) -> Result<Snapshot, UserError> {
        let mut snapshot = Snapshot::default();
        for node in self.graph.nodes() {
            let Some(lifecycle) = node.lifecycle() else {
                continue;
            };
            let Some(piece) =
                lifecycle.snapshot_piece(&self.graph, completed_through_ms, checkpoint)?
            else {
                continue;
            };
            let operator_id = node.meta().uid();
            let inline_max = self.graph.settings.state_inline_max_bytes;
            let (data, upload) = match piece {
                Piece::Full(bytes) => {
                    let data = with_header(STATE_FORMAT, bytes);
                    if data.len() > inline_max {
                        (StateData::Chain(Vec::new()), Some(StateBytes::from(data)))
                    } else {
                        (StateData::Inline(data), None)
                    }
                }
                Piece::Framed(bytes) => {
                    if bytes.len() > inline_max as u64 {
                        (StateData::Chain(Vec::new()), Some(bytes))
                    } else {
                        let data = bytes.to_vec().map_err(|e| {
                            format!("operator {operator_id:?}: reading its encoded state: {e}")
                        })?;
                        (StateData::Inline(data), None)
                    }
                }
                Piece::Delta { keep, delta } => (
                    StateData::Chain(keep),
                    Some(StateBytes::from(with_header(DELTA_FORMAT, delta))),
                ),
            };
            if let Some(bytes) = upload {
                snapshot.uploads.push(StateUpload {
                    operator_id: operator_id.clone(),
                    bytes,
                });
            }
            snapshot.states.push(OperatorState {
                operator_id,
                type_name: lifecycle.state_type().to_owned(),
                data,
                schema_version: node.meta().schema_version(),
            });
        }
        Ok(snapshot)
    }
}

/// `state` of schema version `from` migrated by `lifecycle`'s hook: a chain's base and each of
/// its deltas, the chain then restored without its files (its next checkpoint writes a new
/// base: the files hold the old version). On failure, the keys migrated before and why.
fn migrate_state(
    lifecycle: &dyn Lifecycle,
    from: u32,
    state: Restoring,
) -> Result<Restoring, (u64, String)> {
    let mut keys = 0;
    let mut migrate = |bytes: &[u8], delta: bool| {
        lifecycle
            .migrate(from, bytes, delta, &mut keys)
            .map_err(|e| (keys, e))
    };
    // A migration rewrites the state in memory.
    fn read(bytes: &StateBytes) -> Result<std::borrow::Cow<'_, [u8]>, (u64, String)> {
        bytes
            .bytes()
            .map_err(|e| (0, format!("reading the state to migrate: {e}")))
    }
    Ok(match state {
        Restoring::Whole(bytes) => Restoring::Whole(migrate(&read(&bytes)?, false)?.into()),
        Restoring::Chain { base, deltas, .. } => Restoring::Chain {
            base: migrate(&read(&base)?, false)?.into(),
            deltas: deltas
                .iter()
                .map(|d| Ok(migrate(&read(d)?, true)?.into()))
                .collect::<Result<_, _>>()?,
            files: Vec::new(),
        },
    })
}

/// All of `bytes` in memory, for operator `uid` (to upgrade them).
fn read_whole(uid: &str, bytes: &StateBytes) -> Result<Vec<u8>, UserError> {
    Ok(bytes
        .to_vec()
        .map_err(|e| format!("operator {uid:?}: reading its state: {e}"))?)
}

/// The state of `state`: inline, or read from `files` (a chain: its base and deltas, each
/// checked for its header).
fn read_state(state: &OperatorState, files: &StateFiles) -> Result<Restoring, UserError> {
    let id = &state.operator_id;
    let not_in = |format: &str| format!("operator {id:?}: state is not in format {format}");
    let file = |f: &StateFileRef| {
        files.get(&f.name).ok_or_else(|| {
            format!(
                "operator {id:?}: state file `{}` was not read with the checkpoint",
                f.name
            )
        })
    };
    let stripped = |format: &str, bytes: &StateBytes| {
        strip_header_bytes(format, bytes)
            .map_err(|e| format!("operator {id:?}: {e}"))?
            .ok_or_else(|| not_in(format))
    };
    match &state.data {
        StateData::Inline(data) => match strip_header(STATE_FORMAT, data) {
            Some(rest) => Ok(Restoring::Whole(rest.to_vec().into())),
            None => Err(not_in(STATE_FORMAT).into()),
        },
        StateData::File(f) => Ok(Restoring::Whole(stripped(STATE_FORMAT, file(f)?)?)),
        StateData::Chain(chain) => {
            let Some((first, rest)) = chain.split_first() else {
                return Err(format!("operator {id:?}: its chain of state files is empty").into());
            };
            let base = stripped(STATE_FORMAT, file(first)?)?;
            let mut deltas = Vec::with_capacity(rest.len());
            for f in rest {
                deltas.push(stripped(DELTA_FORMAT, file(f)?)?);
            }
            Ok(Restoring::Chain {
                base,
                deltas,
                files: chain.clone(),
            })
        }
    }
}
