//! The boundary between the engine and what it runs.
//!
//! `weir-actors` knows nothing of DStreams. The runtime crate drives the engine through two
//! small traits:
//!
//! * [`Receiver`] — what a receiver produces. It runs as the task of the `receiver-<stream>`
//!   actor and hands records to its [`ReceiverContext`]: [`ReceiverContext::store`] is the
//!   reliable path (it returns only once the block holding the records is durable in the WAL
//!   and known to the block tracker, so the receiver acknowledges its source afterwards);
//!   [`ReceiverContext::push`] is the unreliable one (records are buffered and cut into a block
//!   every block interval; what is buffered when the receiver dies is lost).
//! * [`Pipeline`] — what a batch computes from its input blocks ([`Pipeline::jobs`]), and how its
//!   operator state is snapshotted into a checkpoint and restored from one. The graph is rebuilt
//!   from the current code on every start; only data crosses a restart.
//!
//! Jobs run on the executor workers. A job may run more than once (a retried task, a batch
//! re-run after a driver restart), so what it outputs must be idempotent per
//! ([`JobContext::batch_time_ms`], [`Job::id`]) — the exactly-once sink contract.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::{CheckpointData, CheckpointId, OperatorState, StateBytes, StateUpload};
use crate::ingest::blocks::{Block, BlockInfo, StreamId};
use crate::observe::metrics::SourceLag;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An error from user code (a receiver, a job, the pipeline), as a sentence.
pub type UserError = Box<dyn std::error::Error + Send + Sync>;

// ======================================= receivers ======================================= //

/// A source of records, run by the `receiver-<stream>` actor.
///
/// A failed receiver (an `Err` from `start`, a panic, a kill) is restarted after the receiver
/// restart delay with a fresh instance from its [`ReceiverFactory`]; what it stored before is
/// kept.
pub trait Receiver: Send + 'static {
    /// Receives until [`ReceiverContext::stopping`] resolves (then returns `Ok`) or until it
    /// fails (returns `Err`).
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>>;
}

/// Makes a fresh [`Receiver`] for each start of a stream's receiver.
pub trait ReceiverFactory: Send + Sync + 'static {
    /// A new receiver.
    fn create(&self) -> Box<dyn Receiver>;
}

impl<F> ReceiverFactory for F
where
    F: Fn() -> Box<dyn Receiver> + Send + Sync + 'static,
{
    fn create(&self) -> Box<dyn Receiver> {
        self()
    }
}

/// Why [`ReceiverContext::store`] did not store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The receiver supervisor is gone (the receiver is being stopped or restarted).
    #[error("stream {stream}: the receiver supervisor is gone; the records were not stored")]
    Closed {
        /// The stream.
        stream: StreamId,
    },
    /// Writing the block failed; the records were not stored (not acknowledged).
    #[error("stream {stream}: storing a block failed: {reason}")]
    Failed {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: String,
    },
}

/// A request from a receiver to its supervisor: store these records as one block.
#[derive(Debug)]
pub(crate) struct StoreRequest {
    /// The records.
    pub(crate) records: Vec<Bytes>,
    /// Where the outcome goes (`None` for pushed records, which nobody waits for).
    pub(crate) reply: Option<oneshot::Sender<Result<BlockInfo, StoreError>>>,
}

/// Admission control of a receiver's records — a rate limit (Spark's
/// `spark.streaming.receiver.maxRate`, or the rate that backpressure computes).
///
/// [`ReceiverContext::store`] waits on it before it stores; receivers that [`push`](ReceiverContext::push)
/// (ReceiverContext::push) call [`ReceiverContext::admit`] themselves.
pub trait Admission: Send + Sync + fmt::Debug + 'static {
    /// Resolves when `records` more records may pass.
    ///
    /// # Cancel safety
    ///
    /// Must be cancel safe: a cancelled wait may count its records as passed (erring on the
    /// slow side), never let more through than allowed.
    fn admit(&self, records: u64) -> BoxFuture<'_, ()>;
}

/// A block handed over by [`ReceiverContext::submit`]: resolves once it is durable in the WAL
/// and reported to the block tracker (`Ok`), or was not stored (`Err`; a supervisor that
/// stopped before answering is [`StoreError::Closed`]). Dropped before the supervisor took the
/// block up, it withdraws the block (the supervisor stores nothing for a caller that went
/// away); dropped later, the block may still be stored, unheard. Either way it was not
/// acknowledged — so a receiver that stops must await every `PendingStore` it holds.
#[derive(Debug)]
#[must_use = "a block may be acknowledged only once its PendingStore resolved Ok"]
pub struct PendingStore {
    stream: StreamId,
    reply: oneshot::Receiver<Result<BlockInfo, StoreError>>,
}

impl Future for PendingStore {
    type Output = Result<BlockInfo, StoreError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let stream = self.stream;
        Pin::new(&mut self.reply)
            .poll(cx)
            .map(|answer| answer.unwrap_or(Err(StoreError::Closed { stream })))
    }
}

/// What a running [`Receiver`] uses to hand over records.
#[derive(Clone, Debug)]
pub struct ReceiverContext {
    stream: StreamId,
    to_supervisor: mpsc::Sender<StoreRequest>,
    pushed: Arc<std::sync::Mutex<Vec<Bytes>>>,
    stop: watch::Receiver<bool>,
    admission: Option<Arc<dyn Admission>>,
}

impl ReceiverContext {
    /// A context that sends to a receiver supervisor (built by the engine, or by
    /// [`ManualSupervisor`](crate::testing::ManualSupervisor) in tests).
    pub(crate) fn new(
        stream: StreamId,
        to_supervisor: mpsc::Sender<StoreRequest>,
        pushed: Arc<std::sync::Mutex<Vec<Bytes>>>,
        stop: watch::Receiver<bool>,
    ) -> Self {
        ReceiverContext {
            stream,
            to_supervisor,
            pushed,
            stop,
            admission: None,
        }
    }

    /// This context with records admitted by `admission` (a rate limit): [`store`](Self::store)
    /// waits on it, [`admit`](Self::admit) exposes it to receivers that push.
    #[must_use]
    pub fn with_admission(mut self, admission: Arc<dyn Admission>) -> Self {
        self.admission = Some(admission);
        self
    }

    /// Waits until `records` more records may be handed over (at once without a rate limit).
    /// [`store`](Self::store) calls it; a receiver that [`push`](Self::push)es records one at a
    /// time should call it before pushing them.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled wait never lets more records through than the limit allows.
    pub async fn admit(&self, records: u64) {
        if let Some(admission) = &self.admission {
            admission.admit(records).await;
        }
    }

    /// The stream this receiver feeds.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Stores `records` as one block and returns once the block is durable in the WAL and
    /// reported to the block tracker. Acknowledge the source only after it returns `Ok`.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the records may or may not have been stored; they were not acknowledged.
    pub async fn store(&self, records: Vec<Bytes>) -> Result<BlockInfo, StoreError> {
        self.submit(records).await?.await
    }

    /// Hands `records` over as one block without waiting for it to be durable: returns once
    /// the block is queued (after the rate limit and the supervisor's bounded queue, so the
    /// backpressure is the same as [`store`](Self::store)'s); the returned [`PendingStore`]
    /// resolves to what `store` would have returned. Blocks are stored in the order they
    /// were submitted, and blocks submitted together share one WAL group commit. A receiver
    /// can so read its next records while its last block is on its way to the disk; it must
    /// bound how many it keeps in flight, and acknowledge a block only once its
    /// `PendingStore` resolved `Ok`.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the records were not handed over.
    pub async fn submit(&self, records: Vec<Bytes>) -> Result<PendingStore, StoreError> {
        self.admit(records.len() as u64).await;
        let (reply, rx) = oneshot::channel();
        self.to_supervisor
            .send(StoreRequest {
                records,
                reply: Some(reply),
            })
            .await
            .map_err(|_| StoreError::Closed {
                stream: self.stream,
            })?;
        Ok(PendingStore {
            stream: self.stream,
            reply: rx,
        })
    }

    /// Buffers one record; the buffer is cut into a block every block interval. Unreliable:
    /// buffered records are lost if the receiver stops before they are stored.
    pub fn push(&self, record: Bytes) {
        self.pushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(record);
    }

    /// Resolves when the receiver is asked to stop.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stop| *stop).await;
    }

    /// Whether the receiver has been asked to stop.
    pub fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

// ======================================== batches ======================================== //

/// The input of one batch: the blocks allocated to it, per stream, shared (not copied).
#[derive(Clone, Debug, Default)]
pub struct BatchInput {
    /// The batch time (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// The blocks of each stream, in the order they were stored.
    pub blocks: BTreeMap<StreamId, Vec<Block>>,
}

impl BatchInput {
    /// How many records the batch holds.
    pub fn records(&self) -> u64 {
        self.blocks.values().flatten().map(|b| b.info.records).sum()
    }
}

/// Where a job runs, and which attempt it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobContext {
    /// The batch time: with [`Job::id`], the deterministic id of the job's output.
    pub batch_time_ms: u64,
    /// 1 for the first attempt; retries count up.
    pub attempt: u32,
    /// The executor running it (`executor-<n>`).
    pub executor: String,
}

/// The work of a job: runs on an executor, may run more than once.
pub type JobFn = Arc<dyn Fn(JobContext) -> BoxFuture<'static, Result<(), UserError>> + Send + Sync>;

/// One unit of a batch's work, e.g. one output operation over one partition.
#[derive(Clone)]
pub struct Job {
    /// Stable within the batch (e.g. `"output-0/part-3"`): the output's id is
    /// (batch time, job id).
    pub id: String,
    /// What it does.
    pub run: JobFn,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job").field("id", &self.id).finish()
    }
}

/// Why preparing a batch ([`Pipeline::prepare`]) failed: which source, and why, each in a few
/// words. The job generator publishes it as an
/// [`Event::PlanningFailed`](crate::Event::PlanningFailed) and tries again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanningError {
    /// The source whose look-up failed (a direct stream's source name, or the operator's id).
    pub source: String,
    /// Why, as one sentence (the source's error, or that it did not answer in time).
    pub cause: String,
}

impl PlanningError {
    /// `source` failed because of `cause`.
    pub fn new(source: impl Into<String>, cause: impl Into<String>) -> Self {
        PlanningError {
            source: source.into(),
            cause: cause.into(),
        }
    }
}

impl fmt::Display for PlanningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.cause)
    }
}

impl std::error::Error for PlanningError {}

/// A pipeline's snapshot for one checkpoint ([`Pipeline::snapshot_for`]): operator state, and
/// the state files still to write for it (incremental checkpoints).
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Operator state, keyed by operator id; a [`StateData::Chain`](crate::checkpoint::StateData::Chain)
    /// lists the files written by earlier checkpoints that this one references too.
    pub states: Vec<OperatorState>,
    /// Files to write before the checkpoint, each appended to its operator's chain.
    pub uploads: Vec<StateUpload>,
}

/// The state files a restored checkpoint references, by name, read and verified
/// ([`CheckpointStore::read_state_files`](crate::checkpoint::CheckpointStore::read_state_files)):
/// small ones in memory, large ones as local files read in pieces.
pub type StateFiles = BTreeMap<String, StateBytes>;

/// What the engine runs every batch.
pub trait Pipeline: Send + Sync + 'static {
    /// A fingerprint of the graph, stored in checkpoints to report an incompatible change.
    fn fingerprint(&self) -> u64;

    /// Prepares batch `batch_time_ms` before its [`jobs`](Self::jobs) are asked for: whatever
    /// planning the batch needs that may wait on the outside world — a direct source asking a
    /// broker for its offsets, a file stream listing a directory — happens here, off the job
    /// generator's handler. The job generator polls the future once in its handler (it must
    /// never block: a slow look-up belongs on the blocking pool, or is awaited), then awaits it
    /// in a task of its own and goes on answering its other messages meanwhile.
    ///
    /// Batches are prepared one at a time, in batch order, each until it succeeds: `jobs` is
    /// asked for a batch only once its `prepare` returned `Ok`, and the next batch is prepared
    /// only after that. A failed attempt is tried again after a backoff (see
    /// [`PlanningPolicy`](crate::PlanningPolicy)); an attempt may be abandoned (its future
    /// dropped) when it takes too long or the engine stops, and what it still does must then
    /// be harmless: leave the batch planned as a later attempt would, or not at all.
    ///
    /// The future should resolve within `timeout` of this call, reporting a look-up still
    /// waiting then as the error of the source it waits on; the job generator abandons it a
    /// little later in any case. Nothing to prepare by default.
    ///
    /// # Errors
    ///
    /// A source could not be asked, failed, or did not answer within `timeout`.
    fn prepare(
        &self,
        batch_time_ms: u64,
        timeout: std::time::Duration,
    ) -> BoxFuture<'static, Result<(), PlanningError>> {
        let _ = (batch_time_ms, timeout);
        Box::pin(std::future::ready(Ok(())))
    }

    /// The jobs of the batch `input`, once [`prepare`](Self::prepare) succeeded for it: cheap
    /// and synchronous (it runs in the job generator's handler). A batch re-run after a restart
    /// gets the same input.
    ///
    /// # Errors
    ///
    /// The batch cannot be planned; the job generator reports it and the batch fails (the
    /// driver restarts from the last checkpoint).
    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError>;

    /// The operator state to checkpoint: the state as of the end of batch
    /// `completed_through_ms` (every batch up to it has completed, none after it), plus
    /// whatever the pipeline needs to re-run the batches generated after it with the same
    /// input (e.g. the offset ranges a direct source planned for them). `None`: no batch has
    /// completed since the pipeline was restored; the restored state (plus plans) is wanted.
    ///
    /// Called for the checkpoint written before a batch runs and after it completes; later
    /// batches may already be running, so the state must be kept per batch.
    ///
    /// # Errors
    ///
    /// The state cannot be serialised; the checkpoint fails (and is retried).
    fn snapshot(&self, completed_through_ms: Option<u64>) -> Result<Vec<OperatorState>, UserError>;

    /// The snapshot for checkpoint `checkpoint`, as [`snapshot`](Self::snapshot) describes,
    /// possibly referencing state files of earlier checkpoints and asking for new ones
    /// (incremental checkpoints). Every call is followed by one
    /// [`checkpoint_ended`](Self::checkpoint_ended) for the same id, unless the engine stops
    /// first (the next start then [`restore`](Self::restore)s). By default, `snapshot`, with
    /// nothing to upload.
    ///
    /// A chain may only reference files of a checkpoint that
    /// [`checkpoint_ended`](Self::checkpoint_ended) reported written, and only while no
    /// other checkpoint write is in flight: retention may delete files that only an older
    /// checkpoint references.
    ///
    /// # Errors
    ///
    /// As [`snapshot`](Self::snapshot).
    fn snapshot_for(
        &self,
        checkpoint: CheckpointId,
        completed_through_ms: Option<u64>,
    ) -> Result<Snapshot, UserError> {
        let _ = checkpoint;
        Ok(Snapshot {
            states: self.snapshot(completed_through_ms)?,
            uploads: Vec::new(),
        })
    }

    /// The write of checkpoint `checkpoint` ended: `Some` with what was written (its chains
    /// name the files written for it) once it is durable, `None` if it failed. Called in the
    /// job generator's handler, before any later snapshot is taken. Nothing by default.
    fn checkpoint_ended(&self, checkpoint: CheckpointId, written: Option<&CheckpointData>) {
        let _ = (checkpoint, written);
    }

    /// [`restore`](Self::restore), with the state files the checkpoint references (read and
    /// verified). By default `restore`, which cannot use state files.
    ///
    /// # Errors
    ///
    /// As [`restore`](Self::restore).
    fn restore_with_files(
        &self,
        checkpoint: Option<&CheckpointData>,
        files: &StateFiles,
    ) -> Result<(), UserError> {
        let _ = files;
        self.restore(checkpoint)
    }

    /// Where large state files downloaded from object storage for a restore are kept (as
    /// anonymous temporary files) so that they are read in pieces, not held in memory; `None`:
    /// in memory. By default `None`.
    fn spill_dir(&self) -> Option<std::path::PathBuf> {
        None
    }

    /// Whether the pipeline holds exactly the state of `checkpoint` already, restored by the
    /// embedding before the engine started (to check that it fits) and unchanged since: the
    /// driver then neither reads the checkpoint's state files nor restores. Asked once, at a
    /// driver's start, and answers `true` at most once (a later driver restarts from the
    /// checkpoint as usual). By default `false`.
    fn holds(&self, checkpoint: &CheckpointData) -> bool {
        let _ = checkpoint;
        false
    }

    /// Resets the pipeline to the state of `checkpoint` (matching operator state by id), or to
    /// its initial state when there is none. Called at every start of the driver, before any
    /// batch is generated; anything the pipeline held from an earlier run is dropped.
    ///
    /// # Errors
    ///
    /// The state does not fit the current graph; the driver fails to start, with this reason.
    fn restore(&self, checkpoint: Option<&CheckpointData>) -> Result<(), UserError>;

    /// Why a savepoint of this pipeline is refused, in one sentence — a stateful operator
    /// whose id was derived from the graph's layout rather than set explicitly, so that a
    /// changed program could not find its state — or `None` (the default): it can be taken.
    fn savepoint_refusal(&self) -> Option<String> {
        None
    }

    /// Batch `batch_time_ms` completed (all its jobs succeeded). Its "after" checkpoint may not
    /// be durable yet. A direct source may commit offsets here; caches may be trimmed.
    fn batch_completed(&self, batch_time_ms: u64) {
        let _ = batch_time_ms;
    }

    /// The records each source (by its id) read for batch `batch_time_ms`, asked when the batch
    /// has completed, before [`batch_completed`](Self::batch_completed): published as
    /// [`Event::BatchInputs`](crate::Event::BatchInputs). None by default.
    fn batch_inputs(&self, batch_time_ms: u64) -> BTreeMap<String, u64> {
        let _ = batch_time_ms;
        BTreeMap::new()
    }

    /// Where each partition of each offset source is: the end of the newest planned batch and
    /// the latest offset the source reported (the `weir_source_lag_records` metric and
    /// `/api/v1/sources`). Called when they are asked for, from any thread: answer from what
    /// planning remembered, never by asking the source. None by default.
    fn sources(&self) -> Vec<SourceLag> {
        Vec::new()
    }
}
