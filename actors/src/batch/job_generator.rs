//! The job generator: the batch clock, and the checkpoints around every batch.
//!
//! Registered as `job-generator`, a child of the driver. It owns a timer aligned to batch
//! boundaries — batch times are `zero_time_ms + k × batch_interval`, where the zero time is
//! fixed at the first start and kept across restarts in the checkpoint — and for every batch
//! time, in order:
//!
//! 0. plans it ([`Pipeline::prepare`]: a direct source's offset look-ups), off its handler,
//!    with a timeout, retried after a failure — see "Planning" below;
//! 1. asks the `received-block-tracker` to allocate the batch's blocks (durable, idempotent for
//!    a batch that was already allocated);
//! 2. builds the batch's input from the [`BlockStore`] (blocks shared by `Arc`; a block no
//!    longer in memory is read back from the receiver WAL) and asks the [`Pipeline`] for its
//!    jobs;
//! 3. asks for a checkpoint that lists the batch as pending ("before");
//! 4. submits the jobs to the `job-scheduler` once such a checkpoint has been written (or its
//!    write failed and the failure was tolerated), without waiting in its handler;
//! 5. when the scheduler reports the batch complete: tells the pipeline
//!    ([`Pipeline::batch_completed`]) and asks for a checkpoint without the batch ("after");
//!    only once that checkpoint is durable does it let the tracker drop old allocations and
//!    the receiver WAL drop old segments.
//!
//! Every checkpoint carries [`Pipeline::snapshot`] as of the completed prefix of batches (every
//! batch up to it complete, none after it), so a restore re-runs exactly the batches after it.
//!
//! At most `max_pending_batches` batches are generated and not yet complete; further batch
//! times wait as plain times, so a slow pipeline or a long outage never loads more than that
//! many batches' data into memory. On a restart it re-runs the pending batches of the restored
//! checkpoint first, then the batches missed while it was down, then resumes the timer.
//!
//! # Planning: off the handler, one batch at a time, in order
//!
//! A batch's planning may wait on the outside world (a Kafka broker that is slow, down or
//! stopped), so it never runs in the handler. The batch at the front of the queue is planned
//! by [`Pipeline::prepare`]: its future is polled once in the handler (ready at once for a
//! pipeline with nothing to plan, so such a batch is generated right away), otherwise it runs
//! in a task the generator owns, abandoned after the [`PlanningPolicy`]'s timeout, and its
//! answer comes back as a [`JobGeneratorMsg::Planned`]. Meanwhile the generator answers
//! everything else — checkpoint requests, status queries, ticks (queued behind the batch),
//! completed batches, a drain.
//!
//! * **Order.** Only the front of the queue is planned, and it stays in the queue (so the
//!   checkpoints taken meanwhile list it as pending) until its plan succeeded and it is
//!   generated; the next batch is planned only after that. So batches are generated in time
//!   order, each once.
//! * **Failure.** A failed or timed-out attempt is an [`Event::PlanningFailed`] (the source,
//!   the cause, the attempt, the wait), logged and counted; the same batch is planned again
//!   after a backoff ([`PlanningPolicy::retry_delay`]), until it succeeds or the generator
//!   stops. It is never skipped, nor planned empty.
//! * **Stale answers.** Every attempt has a sequence number; an answer or a retry timer
//!   carrying another one than the attempt in hand is ignored. An abandoned attempt's task is
//!   aborted (its future dropped) and its blocking look-up, if any, finishes on its own: what
//!   it leaves behind is the pipeline's to make harmless (see [`Pipeline::prepare`]). A
//!   restarted generator is a new actor: answers meant for its predecessor never reach it.
//! * **Stop.** A drain lets the attempt in flight finish (within its timeout) but retries
//!   nothing: if it fails, nothing more is generated and the drain completes once the
//!   generated batches have. The next start runs the batches not generated: every checkpoint
//!   lists the queue as pending, and a batch queued after the latest checkpoint is later than
//!   its time, so a restore queues it again as missed.
//!
//! # Checkpoints: the coordinator decides, the generator executes
//!
//! When a checkpoint starts, waits, is skipped or fails, what a durable one lets the tracker
//! clean and which held batches it lets run — the [`CheckpointPolicy`] — is decided by the
//! [`CheckpointCoordinator`], a plain struct in the generator's state (its module docs state
//! every rule). The generator tells it the facts as they happen and executes the
//! [`CheckpointAction`]s it returns, in order:
//!
//! * **Start a write.** The id is reserved in the store ([`CheckpointStore::reserve`]) and the
//!   snapshot ([`Pipeline::snapshot_for`]) taken for it, in the generator's handler when the
//!   write starts; the state files the snapshot asks for are written by the write's task,
//!   before the checkpoint, and the pipeline hears how the write ended
//!   ([`Pipeline::checkpoint_ended`]) before any later snapshot;
//!   so ids follow the snapshots, and a slow older write that lands after a newer one never
//!   becomes the latest for a restore (the store prefers the largest valid id, and its
//!   retention keeps the largest ids). The write itself runs in a task the generator owns, so
//!   it keeps ticking, generating and completing batches while writes are in flight. The task
//!   drops the write's future after `timeout` and reports it timed out; with local storage a
//!   write already on a blocking thread may still land: it is then a valid, older-than-next
//!   checkpoint, and nothing was cleaned on its account.
//! * **Arm the pause timer**: a [`JobGeneratorMsg::CheckpointDue`] after the delay asked.
//! * **Clean**: the tracker drops allocations before the threshold, the block store and the
//!   receiver WAL what only they used; a tracker that fails to clean is asked again after the
//!   next durable checkpoint.
//! * **Release** held batches: their `Submit`s are sent from the handler, in batch order.
//! * **Report a tolerated failure** (an [`Event::CheckpointFailed`]), or **give up**: the
//!   generator fails, and the driver restarts from the last good checkpoint.
//! * **Finish the drain**: answer the pending [`JobGeneratorMsg::Drain`].
//!
//! **Kill safety.** The write tasks are owned by the generator's state and aborted when the
//! generator stops or its state is dropped after a kill; the restarted driver restores from the
//! latest valid checkpoint. A local write already on a blocking thread runs to its end; the
//! restarted driver waits for it before it opens the store, and the engine before it releases
//! the storage directory (see `storage::in_flight_io`).
//!
//! Flink forbids `max-concurrent-checkpoints > 1` with a non-zero minimum pause; so does weir:
//! [`CheckpointPolicy::validate`] refuses it, and the generator (like the engine) refuses to
//! start with it.
//!
//! # What a crash leaves behind
//!
//! The generator's memory (queue, pending set) is rebuilt from the checkpoint on restart. A
//! batch allocated but not checkpointed as pending is re-allocated to the same blocks (the
//! tracker answers idempotently) when it is generated again; a batch whose "after" checkpoint
//! was not written is re-run. Jobs therefore may run more than once per batch, and outputs are
//! idempotent per (batch time, job id).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::batch::checkpoint_coordinator::{
    Asked, CheckpointAction, CheckpointCoordinator, StartedWrite, WriteOutcome,
};
use crate::batch::job_scheduler::{BatchJobs, BatchOutcome, JobSchedulerMsg};
use crate::batch::span::batch_span;
use crate::checkpoint::{CheckpointData, CheckpointId, CheckpointStore, OperatorState};
use crate::clock::now_ms;
use crate::config::{CheckpointPolicy, PlanningPolicy};
use crate::ingest::block_store::{BlockStore, BlockStoreError};
use crate::ingest::blocks::BlockInfo;
use crate::ingest::in_flight::{InFlight, WalFloor, clean_receiver_wal};
use crate::ingest::received_block_tracker::ReceivedBlockTrackerMsg;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::pipeline::{BatchInput, Pipeline, PlanningError};
use crate::tree::names::{Names, peer};
use crate::wal::Wal;

/// The job generator actor.
#[derive(Clone, Debug)]
pub(crate) struct JobGenerator;

/// What the job generator starts from (built by the driver, again at every restart).
#[derive(Clone)]
pub(crate) struct JobGeneratorArgs {
    /// Actor names.
    pub names: Names,
    /// What every batch computes.
    pub pipeline: Arc<dyn Pipeline>,
    /// The checkpoint store.
    pub checkpoints: Arc<CheckpointStore>,
    /// The checkpoint restored at start, if any.
    pub restored: Option<CheckpointData>,
    /// The batch interval.
    pub batch_interval: Duration,
    /// The timer's origin (ms since the Unix epoch); batch times are multiples of the interval
    /// after it.
    pub zero_time_ms: u64,
    /// At most this many batches generated and not yet complete.
    pub max_pending_batches: usize,
    /// The most bytes of received blocks a batch takes of each stream
    /// ([`EngineConfig::receiver_batch_max_bytes`](crate::config::EngineConfig::receiver_batch_max_bytes)).
    pub receiver_batch_max_bytes: u64,
    /// Checkpoint controls.
    pub checkpoint_policy: CheckpointPolicy,
    /// How long planning a batch may take, and how a failed attempt is retried.
    pub planning: PlanningPolicy,
    /// How many checkpoints the store keeps: nothing any of the newest that many needs is
    /// cleaned, so a restore may fall back to any of them.
    pub checkpoints_retained: usize,
    /// Configuration that must survive restarts, stored in every checkpoint.
    pub settings: BTreeMap<String, String>,
    /// Where received blocks are kept in memory.
    pub block_store: BlockStore,
    /// The receiver WAL's appends on their way to the block tracker (kept from cleaning).
    pub in_flight: InFlight,
    /// The receiver WAL, to read evicted blocks back and to clean.
    pub receiver_wal: Wal,
    /// Where events go.
    pub events: EventSink,
}

impl std::fmt::Debug for JobGeneratorArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobGeneratorArgs")
            .field("batch_interval", &self.batch_interval)
            .field("zero_time_ms", &self.zero_time_ms)
            .finish_non_exhaustive()
    }
}

/// The job generator's state.
#[derive(Debug)]
pub(crate) struct JobGeneratorState {
    args: JobGeneratorArgs,
    /// Batch times waiting to be generated, in order.
    queue: VecDeque<u64>,
    /// Generated, not yet complete (submitted, or held).
    pending: BTreeSet<u64>,
    /// The blocks allocated to each pending batch: they leave the block store (a cache of the
    /// receiver WAL) when their batch completes.
    blocks_of: BTreeMap<u64, Vec<BlockInfo>>,
    /// Generated batches not yet submitted: a batch runs only once a checkpoint that lists it
    /// as pending has been written ("before" the batch), as with one checkpoint at a time.
    held: BTreeMap<u64, BatchJobs>,
    /// The latest batch time that entered the queue.
    last_queued_ms: Option<u64>,
    /// The first and the latest batch time generated by this run.
    first_generated_ms: Option<u64>,
    last_generated_ms: Option<u64>,
    /// When checkpoints start, and what their ends allow (see [`CheckpointCoordinator`]).
    coordinator: CheckpointCoordinator,
    /// The checkpoint writes in flight, by id, each aborted when dropped.
    writes: BTreeMap<CheckpointId, OwnedTask<()>>,
    /// The planning of the batch at the front of the queue: in flight, or waiting to be
    /// retried. Nothing else is generated meanwhile.
    planning: Option<Planning>,
    /// Failed planning attempts of the batch at the front of the queue (0 once it is
    /// generated).
    planning_failures: u32,
    /// The number of the last planning attempt started: answers of any other are stale.
    planning_seq: u64,
    /// Set when a planning attempt failed while draining: nothing more is generated by this
    /// run, and the batches still queued stay listed as pending in the final checkpoint.
    planning_abandoned: bool,
    /// Fires [`JobGeneratorMsg::CheckpointDue`] when the minimum pause has elapsed.
    pause_timer: Option<TimerHandle>,
    /// Status requests waiting for a checkpoint to settle.
    settle_waiters: Vec<(CheckpointId, RpcReplyPort<GeneratorStatus>)>,
    timer: Option<TimerHandle>,
    drain: Option<RpcReplyPort<()>>,
}

type TimerHandle = JoinHandle<Result<(), ractor::MessagingErr<JobGeneratorMsg>>>;

/// A task the generator owns, aborted when this is dropped (the generator stopped or was
/// killed, or the task's work is no longer wanted): a stopped generator's snapshot must not
/// land after its successor started, nor an abandoned plan's answer arrive.
#[derive(Debug)]
struct OwnedTask<T>(JoinHandle<T>);

impl<T> Drop for OwnedTask<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The planning of one batch, the front of the queue.
#[derive(Debug)]
struct Planning {
    /// The batch.
    time_ms: u64,
    /// The attempt's number (see `planning_seq`).
    seq: u64,
    /// Its task in flight (awaiting the pipeline's answer), or the timer of its retry.
    _task: OwnedTask<()>,
    /// Whether it waits to be retried (else it is in flight).
    waiting: bool,
}

/// Messages of the job generator.
#[derive(Debug)]
pub(crate) enum JobGeneratorMsg {
    /// The timer reached a batch boundary.
    Tick(u64),
    /// The scheduler finished a batch (sent by the task that waited for it).
    BatchDone(BatchOutcome),
    /// The scheduler is gone before answering for a batch: it dies with the driver subtree,
    /// whose restart re-runs the batch from the checkpoint.
    BatchLost(u64),
    /// Stop the timer, generate one last batch for what is left, wait until every batch is
    /// complete and checkpointed, then reply (a graceful stop).
    Drain(RpcReplyPort<()>),
    /// The pending batch times, the queue and the checkpoints, for tests and status.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    Status(RpcReplyPort<GeneratorStatus>),
    /// The status, once the checkpoint with this id has been started by this run and its
    /// write has ended (durable or failed) and been acted on — cleanup included.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    StatusAfterCheckpoint(CheckpointId, RpcReplyPort<GeneratorStatus>),
    /// Internal: a checkpoint write ended (sent by the task that wrote it).
    CheckpointDone {
        /// The checkpoint.
        id: CheckpointId,
        /// Durable, failed or timed out.
        outcome: WriteOutcome,
        /// What was written, if durable (its chains name the state files written for it).
        written: Option<Box<CheckpointData>>,
    },
    /// Internal: the minimum pause has elapsed; a waiting checkpoint may start.
    CheckpointDue,
    /// Take a checkpoint now (an operator's request, through the HTTP API): answered with the
    /// checkpoint time once it has started or waits for a free slot, or why not.
    CheckpointNow(RpcReplyPort<Result<u64, String>>),
    /// Before a savepoint: the checkpoint store, if the pipeline can be savepointed (every
    /// stateful operator has an explicit id), or why not.
    SavepointCheck(RpcReplyPort<Result<Arc<CheckpointStore>, String>>),
    /// Internal: a planning attempt ended (sent by the task that awaited it).
    Planned {
        /// The batch.
        time_ms: u64,
        /// The attempt's number: an answer of another attempt than the one in hand is stale.
        seq: u64,
        /// Planned, or why not.
        result: Result<(), PlanningError>,
    },
    /// Internal: the wait after a failed planning attempt elapsed; plan the batch again.
    RetryPlanning {
        /// The failed attempt's number.
        seq: u64,
    },
}

/// How long after an attempt's timeout the generator abandons a pipeline that did not answer
/// within it (a [`Pipeline::prepare`] that honours its timeout reports the source itself).
const PLANNING_GRACE: Duration = Duration::from_secs(1);

/// What the generator is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct GeneratorStatus {
    /// Generated, not complete.
    pub pending: Vec<u64>,
    /// Waiting to be generated.
    pub queued: Vec<u64>,
    /// Generated and not submitted yet: waiting for a checkpoint that lists them as pending.
    pub held: Vec<u64>,
    /// Checkpoint writes in flight, oldest first.
    pub checkpoints_in_flight: Vec<CheckpointId>,
    /// Whether a checkpoint is waiting for a free slot (or for the minimum pause).
    pub checkpoint_waiting: bool,
    /// The newest checkpoint this run knows to be durable.
    pub latest_checkpoint: Option<CheckpointId>,
    /// Checkpoint failures since the last success.
    pub failed_checkpoints: u32,
    /// The batch being planned (in flight or waiting to be retried), if any.
    pub planning: Option<u64>,
    /// Failed planning attempts of the batch being planned.
    pub planning_failures: u32,
}

fn align_up(t: u64, zero: u64, interval: u64) -> u64 {
    if t <= zero {
        return zero;
    }
    zero + (t - zero).div_ceil(interval) * interval
}

impl JobGeneratorState {
    fn interval_ms(&self) -> u64 {
        (self.args.batch_interval.as_millis() as u64).max(1)
    }

    /// The next batch time after the last queued one (or the first boundary after now).
    fn next_batch_time(&self) -> u64 {
        let interval = self.interval_ms();
        match self.last_queued_ms {
            Some(last) => last + interval,
            None => align_up(now_ms(), self.args.zero_time_ms, interval),
        }
    }

    /// Every batch up to this one has completed, and none after it: the state a checkpoint
    /// carries is as of its end. `None` before the first batch of this run completes.
    fn completed_through(&self) -> Option<u64> {
        match self.pending.first() {
            Some(&oldest) if Some(oldest) == self.first_generated_ms => None,
            Some(&oldest) => Some(oldest - self.interval_ms()),
            None => self.last_generated_ms,
        }
    }

    /// What the generator is doing now.
    fn status(&self) -> GeneratorStatus {
        GeneratorStatus {
            pending: self.pending.iter().copied().collect(),
            queued: self.queue.iter().copied().collect(),
            held: self.held.keys().copied().collect(),
            checkpoints_in_flight: self.coordinator.in_flight(),
            checkpoint_waiting: self.coordinator.is_waiting(),
            latest_checkpoint: self.coordinator.latest_durable(),
            failed_checkpoints: self.coordinator.consecutive_failures(),
            planning: self.planning.as_ref().map(|p| p.time_ms),
            planning_failures: self.planning_failures,
        }
    }

    /// The oldest batch a restore from a checkpoint taken now may need: the oldest pending or
    /// queued one, or the one after the last queued. `None` before anything was queued.
    fn oldest_needed(&self) -> Option<u64> {
        self.pending
            .first()
            .copied()
            .or(self.queue.front().copied())
            .or(self.last_queued_ms.map(|t| t + 1))
    }

    fn checkpoint_data(&self, time_ms: u64, operator_state: Vec<OperatorState>) -> CheckpointData {
        CheckpointData {
            checkpoint_time_ms: time_ms,
            pending_batches: self
                .pending
                .iter()
                .copied()
                .chain(self.queue.iter().copied())
                .collect(),
            batch_interval_ms: self.interval_ms(),
            zero_time_ms: self.args.zero_time_ms,
            settings: self.args.settings.clone(),
            source_offsets: Vec::new(),
            operator_state,
            graph_fingerprint: self.args.pipeline.fingerprint(),
        }
    }
}

impl Actor for JobGenerator {
    type Msg = JobGeneratorMsg;
    type State = JobGeneratorState;
    type Arguments = JobGeneratorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: JobGeneratorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.checkpoint_policy.validate()?;
        let mut state = JobGeneratorState {
            queue: VecDeque::new(),
            pending: BTreeSet::new(),
            blocks_of: BTreeMap::new(),
            last_queued_ms: None,
            first_generated_ms: None,
            last_generated_ms: None,
            held: BTreeMap::new(),
            coordinator: CheckpointCoordinator::retaining(
                args.checkpoint_policy,
                args.checkpoints_retained,
                None,
            ),
            writes: BTreeMap::new(),
            planning: None,
            planning_failures: 0,
            planning_seq: 0,
            planning_abandoned: false,
            pause_timer: None,
            settle_waiters: Vec::new(),
            timer: None,
            drain: None,
            args,
        };
        if let Some(restored) = state.args.restored.clone() {
            // Pending batches first, then every batch time missed while down.
            let mut times: BTreeSet<u64> = restored.pending_batches.iter().copied().collect();
            let interval = state.interval_ms();
            let now = now_ms();
            let mut t = align_up(
                restored.checkpoint_time_ms + 1,
                state.args.zero_time_ms,
                interval,
            );
            while t <= now {
                times.insert(t);
                t += interval;
            }
            let missed = times.len() - restored.pending_batches.len().min(times.len());
            tracing::info!(
                pending = restored.pending_batches.len(),
                missed,
                "job generator restored; re-running pending and missed batches"
            );
            // Never a batch time at or before the checkpoint's again: a graceful stop's last
            // batch is at a boundary that may still be ahead, and it was allocated, completed
            // and cleaned — the timer resumes after it.
            state.last_queued_ms = times.last().copied().max(Some(restored.checkpoint_time_ms));
            state.queue.extend(times);
            // What the restored checkpoint needs stays until enough newer ones are durable:
            // the next start may have to fall back to it again.
            state.coordinator = CheckpointCoordinator::retaining(
                state.args.checkpoint_policy,
                state.args.checkpoints_retained,
                state.oldest_needed(),
            );
        }
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        schedule_next_tick(&myself, state);
        generate_ready(&myself, state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            JobGeneratorMsg::Tick(t) => {
                if state.drain.is_none() && state.last_queued_ms.is_none_or(|last| t > last) {
                    state.queue.push_back(t);
                    state.last_queued_ms = Some(t);
                }
                schedule_next_tick(&myself, state);
                generate_ready(&myself, state).await?;
            }
            JobGeneratorMsg::BatchDone(outcome) => {
                let span = batch_span(outcome.batch_time_ms);
                complete(&myself, state, outcome).instrument(span).await?;
                generate_ready(&myself, state).await?;
            }
            JobGeneratorMsg::CheckpointDone {
                id,
                outcome,
                written,
            } => {
                if state.writes.remove(&id).is_none() {
                    tracing::debug!(%id, "the end of a checkpoint write not in flight");
                }
                // Before any later snapshot: an incremental one builds on what was written.
                state.args.pipeline.checkpoint_ended(id, written.as_deref());
                let actions = state.coordinator.write_ended(id, outcome, monotonic_now());
                execute(&myself, state, actions).await?;
            }
            JobGeneratorMsg::CheckpointDue => {
                state.pause_timer = None;
                let actions = state.coordinator.pause_elapsed(monotonic_now());
                execute(&myself, state, actions).await?;
            }
            JobGeneratorMsg::CheckpointNow(reply) => {
                // The newest batch queued: the checkpoint lists it and every batch before it
                // that has not completed as pending, as the one before a batch does.
                let answer = match state.last_queued_ms {
                    Some(t) => {
                        let draining = state.drain.is_some();
                        let actions = state.coordinator.checkpoint_asked(
                            t,
                            Asked::Requested,
                            draining,
                            monotonic_now(),
                        );
                        execute(&myself, state, actions).await?;
                        Ok(t)
                    }
                    None => Err(
                        "no batch has been generated yet; there is nothing to checkpoint"
                            .to_owned(),
                    ),
                };
                if !reply.is_closed() {
                    let _ = reply.send(answer);
                }
            }
            JobGeneratorMsg::SavepointCheck(reply) => {
                let answer = match state.args.pipeline.savepoint_refusal() {
                    Some(why) => Err(why),
                    None => Ok(Arc::clone(&state.args.checkpoints)),
                };
                if !reply.is_closed() {
                    let _ = reply.send(answer);
                }
            }
            JobGeneratorMsg::Planned {
                time_ms,
                seq,
                result,
            } => {
                if !state
                    .planning
                    .as_ref()
                    .is_some_and(|p| p.seq == seq && p.time_ms == time_ms && !p.waiting)
                {
                    tracing::debug!(batch_time_ms = time_ms, seq, "a stale planning answer");
                } else {
                    state.planning = None;
                    match result {
                        Ok(()) => {
                            generate_planned(&myself, state, time_ms).await?;
                            generate_ready(&myself, state).await?;
                        }
                        Err(error) => planning_failed(&myself, state, time_ms, seq, &error),
                    }
                }
            }
            JobGeneratorMsg::RetryPlanning { seq } => {
                if state
                    .planning
                    .as_ref()
                    .is_some_and(|p| p.seq == seq && p.waiting)
                {
                    state.planning = None;
                    generate_ready(&myself, state).await?;
                }
            }
            JobGeneratorMsg::StatusAfterCheckpoint(id, reply) => {
                state.settle_waiters.push((id, reply));
            }
            JobGeneratorMsg::BatchLost(t) => {
                batch_span(t).in_scope(|| {
                    tracing::warn!(
                        batch_time_ms = t,
                        "the job scheduler went away during a batch"
                    );
                });
            }
            JobGeneratorMsg::Drain(reply) => {
                if let Some(timer) = state.timer.take() {
                    timer.abort();
                }
                let last = state.next_batch_time();
                state.queue.push_back(last);
                state.last_queued_ms = Some(last);
                state.drain = Some(reply);
                if state.planning.as_ref().is_some_and(|p| p.waiting) {
                    // A batch whose planning failed is not retried once the engine stops.
                    abandon_planning(state);
                }
                generate_ready(&myself, state).await?;
            }
            JobGeneratorMsg::Status(reply) => {
                if !reply.is_closed() {
                    let _ = reply.send(state.status());
                }
            }
        }
        finish_drain(&myself, state).await?;
        answer_settle_waiters(state);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        if let Some(timer) = state.pause_timer.take() {
            timer.abort();
        }
        // Abandon the writes in flight (dropping them aborts their tasks). A local write
        // already on a blocking thread cannot be aborted and runs to its end: the restarted
        // driver and the engine's end wait for it (`storage::in_flight_io`) before a successor
        // starts or the directory is released. The planning in flight is dropped too: its
        // answer has nobody to go to.
        state.writes.clear();
        state.planning = None;
        Ok(())
    }
}

/// Arms the timer for the next batch boundary (nothing while draining).
fn schedule_next_tick(myself: &ActorRef<JobGeneratorMsg>, state: &mut JobGeneratorState) {
    if state.drain.is_some() {
        return;
    }
    let next = state.next_batch_time();
    let delay = Duration::from_millis(next.saturating_sub(now_ms()));
    state.timer = Some(myself.send_after(delay, move || JobGeneratorMsg::Tick(next)));
}

/// Generates queued batches while fewer than `max_pending_batches` are pending, each once
/// its planning succeeded; returns when the queue is empty, enough batches are pending, or
/// the front batch's planning is in flight or waits for a retry (its answer resumes it).
async fn generate_ready(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
) -> Result<(), ActorProcessingErr> {
    while !state.planning_abandoned
        && state.planning.is_none()
        && state.pending.len() < state.args.max_pending_batches.max(1)
    {
        let Some(&t) = state.queue.front() else {
            break;
        };
        if !start_planning(myself, state, t) {
            break;
        }
        generate_planned(myself, state, t).await?;
    }
    Ok(())
}

/// Starts planning the batch `t` (the front of the queue): `true` if it is planned already
/// (the pipeline answered at once), else its answer or its failure's retry comes as a message.
fn start_planning(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    t: u64,
) -> bool {
    state.planning_seq += 1;
    let seq = state.planning_seq;
    let timeout = state.args.planning.attempt_timeout();
    let deadline = tokio::time::Instant::now() + timeout + PLANNING_GRACE;
    let mut plan = {
        let _span = batch_span(t).entered();
        state.args.pipeline.prepare(t, timeout)
    };
    // Ready at once when there is nothing to wait for: no task, no message.
    match (&mut plan).now_or_never() {
        Some(Ok(())) => return true,
        Some(Err(error)) => {
            planning_failed(myself, state, t, seq, &error);
            return false;
        }
        None => {}
    }
    let me = myself.clone();
    let task = tokio::spawn(
        async move {
            let result = match tokio::time::timeout_at(deadline, plan).await {
                Ok(result) => result,
                // The pipeline's future is dropped here: it did not answer within its timeout.
                Err(_) => Err(PlanningError::new(
                    "the pipeline",
                    format!("planning did not answer within {} ms", timeout.as_millis()),
                )),
            };
            let _ = me.cast(JobGeneratorMsg::Planned {
                time_ms: t,
                seq,
                result,
            });
        }
        .instrument(batch_span(t)),
    );
    state.planning = Some(Planning {
        time_ms: t,
        seq,
        _task: OwnedTask(task),
        waiting: false,
    });
    false
}

/// Planning attempt `seq` of batch `t` failed: reported, and retried after the backoff — or,
/// while draining, not retried (see [`abandon_planning`]).
fn planning_failed(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    t: u64,
    seq: u64,
    error: &PlanningError,
) {
    state.planning_failures = state.planning_failures.saturating_add(1);
    let attempt = state.planning_failures;
    let draining = state.drain.is_some();
    let retry = (!draining).then(|| state.args.planning.retry_delay(attempt));
    let retry_in_ms = retry.map(|d| d.as_millis() as u64);
    batch_span(t).in_scope(|| {
        tracing::warn!(batch_time_ms = t, source = %error.source, cause = %error.cause, attempt,
            retry_in_ms, "planning the batch failed");
    });
    state.args.events.emit(Event::PlanningFailed {
        batch_time_ms: t,
        source: error.source.clone(),
        cause: error.cause.clone(),
        attempt,
        retry_in_ms,
    });
    match retry {
        Some(delay) => {
            let me = myself.clone();
            let timer = tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = me.cast(JobGeneratorMsg::RetryPlanning { seq });
            });
            state.planning = Some(Planning {
                time_ms: t,
                seq,
                _task: OwnedTask(timer),
                waiting: true,
            });
        }
        None => abandon_planning(state),
    }
}

/// While draining, after a failed planning attempt: the batches not generated yet are not
/// generated by this run. They stay queued, so any checkpoint still written lists them as
/// pending; the next start runs them (see "Planning" in the module docs) — never a batch
/// skipped, nor one whose late plan the pipeline kept left out.
fn abandon_planning(state: &mut JobGeneratorState) {
    state.planning = None;
    state.planning_abandoned = true;
    let queued: Vec<u64> = state.queue.iter().copied().collect();
    tracing::warn!(
        ?queued,
        "stopping with batches that could not be planned; \
        the final checkpoint lists them as pending, and the next start runs them"
    );
}

/// The front batch `t` is planned: it leaves the queue and is generated.
async fn generate_planned(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    t: u64,
) -> Result<(), ActorProcessingErr> {
    if state.queue.front() != Some(&t) {
        tracing::debug!(batch_time_ms = t, "a plan for a batch no longer queued");
        return Ok(());
    }
    state.queue.pop_front();
    state.planning_failures = 0;
    generate(myself, state, t).instrument(batch_span(t)).await
}

async fn generate(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    t: u64,
) -> Result<(), ActorProcessingErr> {
    let names = state.args.names.clone();
    let tracker = peer::<ReceivedBlockTrackerMsg>(&names.received_block_tracker())?;
    // A batch takes at most `receiver_batch_max_bytes` of each stream, so a backlog (input
    // that outran processing) is spread over the next batches rather than read into memory
    // at once; the final batch of a drain takes everything, so a graceful stop leaves nothing
    // acknowledged behind.
    let allocation = if state.drain.is_some() {
        ractor::call!(tracker, ReceivedBlockTrackerMsg::AllocateBatch, t)??
    } else {
        let cap = state.args.receiver_batch_max_bytes;
        ractor::call!(tracker, |reply| ReceivedBlockTrackerMsg::AllocateBatchUpTo(
            t, cap, reply
        ))??
    };
    let mut input = BatchInput {
        batch_time_ms: t,
        blocks: BTreeMap::new(),
    };
    for (stream, infos) in &allocation.blocks {
        let mut blocks = Vec::with_capacity(infos.len());
        for info in infos {
            match state
                .args
                .block_store
                .get_or_read(info, &state.args.receiver_wal)
                .await
            {
                Ok(block) => blocks.push(block),
                // The receiver WAL is off and the driver restarted since the block was
                // stored: the batch runs without it (at-most-once input, as configured).
                Err(BlockStoreError::Lost { .. }) => {
                    tracing::warn!(batch_time_ms = t, stream = *stream, handle = %info.handle,
                        records = info.records,
                        "a block kept in memory only (the receiver WAL is off) is gone; \
                         its records are lost");
                }
                Err(err) => return Err(err.into()),
            }
        }
        input.blocks.insert(*stream, blocks);
    }
    let jobs = state
        .args
        .pipeline
        .jobs(&input)
        .map_err(|e| format!("batch {t}: {e}"))?;
    let records = input.records();
    state.pending.insert(t);
    state
        .blocks_of
        .insert(t, allocation.iter().copied().collect());
    state.first_generated_ms.get_or_insert(t);
    state.last_generated_ms = Some(t);
    // Held until a checkpoint that lists it as pending has been written (see `release_held`).
    state.held.insert(
        t,
        BatchJobs {
            batch_time_ms: t,
            jobs,
            records,
        },
    );
    state.args.events.emit(Event::BatchGenerated {
        batch_time_ms: t,
        blocks: allocation.blocks.values().map(|b| b.len() as u64).sum(),
        records,
    });
    let draining = state.drain.is_some();
    let actions =
        state
            .coordinator
            .checkpoint_asked(t, Asked::BeforeBatch, draining, monotonic_now());
    execute(myself, state, actions).await
}

/// Submits the held batches up to `through`, in order: a checkpoint that lists them as pending
/// has been written, or its write failed and the failure was tolerated.
fn release_held(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    through: u64,
) -> Result<(), ActorProcessingErr> {
    let later = match through.checked_add(1) {
        Some(next) => state.held.split_off(&next),
        None => BTreeMap::new(),
    };
    let ready = std::mem::replace(&mut state.held, later);
    for batch in ready.into_values() {
        submit(myself, &state.args.names, batch)?;
    }
    Ok(())
}

/// Hands a batch to the scheduler; its answer comes back as a message.
fn submit(
    myself: &ActorRef<JobGeneratorMsg>,
    names: &Names,
    batch: BatchJobs,
) -> Result<(), ActorProcessingErr> {
    let t = batch.batch_time_ms;
    let _span = batch_span(t).entered();
    let scheduler = peer::<JobSchedulerMsg>(&names.job_scheduler())?;
    let me = myself.clone();
    // Sent from the handler, not from the task below: batches released together must reach
    // the scheduler in batch order, which runs them in submit order (a task per batch would
    // race, and a later batch could run and complete before an earlier one).
    let (reply, answer) = ractor::concurrency::oneshot();
    if scheduler
        .cast(JobSchedulerMsg::Submit(batch, reply.into()))
        .is_err()
    {
        // Gone: it dies with the driver subtree, whose restart re-runs the batch.
        let _ = me.cast(JobGeneratorMsg::BatchLost(t));
        return Ok(());
    }
    // The scheduler answers when the batch is done; wait for it off the generator's mailbox.
    tokio::spawn(
        async move {
            let message = match answer.await {
                Ok(outcome) => JobGeneratorMsg::BatchDone(outcome),
                Err(_) => JobGeneratorMsg::BatchLost(t),
            };
            let _ = me.cast(message);
        }
        .instrument(batch_span(t)),
    );
    Ok(())
}

async fn complete(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    outcome: BatchOutcome,
) -> Result<(), ActorProcessingErr> {
    let t = outcome.batch_time_ms;
    if let Err(reason) = outcome.result {
        // The scheduler already retried; a batch that cannot complete stops the pipeline, so
        // the driver restarts and re-runs it from the checkpoint.
        return Err(format!("batch {t} failed: {reason}").into());
    }
    state.pending.remove(&t);
    // Done with in memory: a re-run (only after a driver restart, with a new block store)
    // reads them back from the receiver WAL. Without the WAL they were the only copy, lost
    // with the driver anyway.
    if let Some(blocks) = state.blocks_of.remove(&t) {
        state.args.block_store.remove(&blocks);
    }
    let sources = state.args.pipeline.batch_inputs(t);
    if !sources.is_empty() {
        state.args.events.emit(Event::BatchInputs {
            batch_time_ms: t,
            records: sources.values().sum(),
            sources,
        });
    }
    state.args.pipeline.batch_completed(t);
    let draining = state.drain.is_some();
    let actions =
        state
            .coordinator
            .checkpoint_asked(t, Asked::AfterBatch, draining, monotonic_now());
    execute(myself, state, actions).await
}

/// Now, on tokio's clock (paused in tests), for the coordinator.
fn monotonic_now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Executes the coordinator's actions, in order; a started write's follow-ups (a write that
/// could not start is a failure) run before the rest.
async fn execute(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    actions: Vec<CheckpointAction>,
) -> Result<(), ActorProcessingErr> {
    let mut actions = VecDeque::from(actions);
    while let Some(action) = actions.pop_front() {
        match action {
            CheckpointAction::StartWrite { time_ms } => {
                for follow_up in start_write(myself, state, time_ms).into_iter().rev() {
                    actions.push_front(follow_up);
                }
            }
            CheckpointAction::Skipped { time_ms } => {
                tracing::debug!(time_ms, "checkpoint skipped: the last one is too recent");
            }
            CheckpointAction::ArmPauseTimer(delay) => {
                state.pause_timer =
                    Some(myself.send_after(delay, || JobGeneratorMsg::CheckpointDue));
            }
            CheckpointAction::Clean { before_ms } => {
                if cleanup(state, before_ms).await {
                    state.coordinator.cleaned(before_ms);
                }
            }
            CheckpointAction::Release { through_ms } => release_held(myself, state, through_ms)?,
            CheckpointAction::FailureTolerated { reason } => {
                report_failure(state, &reason);
                tracing::warn!(error = %reason, "checkpoint failed; tolerated");
            }
            CheckpointAction::GiveUp(failures) => {
                report_failure(state, &failures.last);
                return Err(failures.into());
            }
            CheckpointAction::DrainFinished => {
                if let Some(reply) = state.drain.take()
                    && !reply.is_closed()
                {
                    let _ = reply.send(());
                }
            }
        }
    }
    Ok(())
}

/// Starts a checkpoint write at `time_ms`: the snapshot is taken now, and the id reserved now,
/// in the generator's handler, so ids follow the snapshots whatever order the writes finish in;
/// the write runs in a task, abandoned after the policy's timeout. Returns the coordinator's
/// answer if the write could not start.
fn start_write(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    time_ms: u64,
) -> Vec<CheckpointAction> {
    let held_through = state.held.keys().next_back().copied();
    let store = Arc::clone(&state.args.checkpoints);
    // The id first: an incremental snapshot is taken for it (a failed snapshot burns it).
    let reservation = store.reserve().map_err(|err| err.to_string());
    let prepared = reservation.and_then(|reservation| {
        state
            .args
            .pipeline
            .snapshot_for(reservation.id(), state.completed_through())
            .map_err(|err| format!("snapshotting the pipeline's state: {err}"))
            .map(|snapshot| {
                let data = state.checkpoint_data(time_ms, snapshot.states);
                (reservation, (data, snapshot.uploads))
            })
    });
    let (reservation, (data, uploads)) = match prepared {
        Ok(ready) => ready,
        // Nothing to write: it counts as a failed checkpoint, and what it was for runs.
        Err(failure) => {
            return state
                .coordinator
                .write_not_started(failure, held_through, monotonic_now());
        }
    };
    let id = reservation.id();
    let timeout = state.args.checkpoint_policy.timeout;
    let me = myself.clone();
    let task = tokio::spawn(async move {
        let write = store.write_reserved_with_uploads(reservation, data, uploads);
        let (outcome, written) = match tokio::time::timeout(timeout, write).await {
            Ok(Ok((_, written))) => (WriteOutcome::Durable, Some(Box::new(written))),
            Ok(Err(err)) => (WriteOutcome::Failed(err.to_string()), None),
            // The write future is dropped here: whatever it would still do is not success.
            Err(_) => (WriteOutcome::TimedOut, None),
        };
        let _ = me.cast(JobGeneratorMsg::CheckpointDone {
            id,
            outcome,
            written,
        });
    });
    state.writes.insert(id, OwnedTask(task));
    let write = StartedWrite {
        id,
        cleanup_before: state.oldest_needed(),
        held_through,
    };
    state.coordinator.write_started(write, monotonic_now());
    Vec::new()
}

/// Reports a failed checkpoint on the event bus.
fn report_failure(state: &JobGeneratorState, reason: &str) {
    state.args.events.emit(Event::CheckpointFailed {
        store: state.args.checkpoints.storage().describe(),
        reason: reason.to_owned(),
    });
}

/// After a durable checkpoint: allocations of batches before `threshold` (the oldest batch
/// the retained checkpoints still need), and the receiver WAL segments below every block still
/// needed, are no longer needed. Returns whether the tracker cleaned (else it is asked again
/// after the next durable checkpoint); the WAL is cleaned on a best-effort basis.
async fn cleanup(state: &mut JobGeneratorState, threshold: u64) -> bool {
    // Before the tracker is asked what it still needs (see `ingest::in_flight`).
    let on_their_way = WalFloor::read(&state.args.receiver_wal, &state.args.in_flight);
    let Ok(tracker) = peer::<ReceivedBlockTrackerMsg>(&state.args.names.received_block_tracker())
    else {
        return false;
    };
    match ractor::call!(tracker, ReceivedBlockTrackerMsg::CleanupBefore, threshold) {
        Ok(Ok(_)) => {}
        other => {
            tracing::warn!(
                ?other,
                "block tracker cleanup failed; retried after the next checkpoint"
            );
            return false;
        }
    }
    clean_receiver_wal(&state.args.receiver_wal, on_their_way, &tracker).await;
    true
}

/// Answers the status requests whose checkpoint has settled.
fn answer_settle_waiters(state: &mut JobGeneratorState) {
    if state.settle_waiters.is_empty() {
        return;
    }
    let waiters = std::mem::take(&mut state.settle_waiters);
    for (id, reply) in waiters {
        if !state.coordinator.has_settled(id) {
            state.settle_waiters.push((id, reply));
        } else if !reply.is_closed() {
            let _ = reply.send(state.status());
        }
    }
}

/// While draining with nothing queued or pending, lets the coordinator decide: wait for the
/// writes in flight, write the final state again (its latest write failed), or answer the
/// drain.
async fn finish_drain(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
) -> Result<(), ActorProcessingErr> {
    let queued = !state.queue.is_empty() && !state.planning_abandoned;
    if state.drain.is_none() || queued || !state.pending.is_empty() {
        return Ok(());
    }
    // Nothing generated by this run (its planning was abandoned): the restored checkpoint's
    // time, so that the next start queues the batch times this one did (and never those
    // since the zero time again).
    let final_time_ms = state
        .last_generated_ms
        .or(state.args.restored.as_ref().map(|r| r.checkpoint_time_ms))
        .unwrap_or(state.args.zero_time_ms);
    let actions = state.coordinator.drain_idle(final_time_ms, monotonic_now());
    execute(myself, state, actions).await
}

#[cfg(test)]
mod tests {
    use super::align_up;

    #[test]
    fn batch_times_align_to_the_zero_time() {
        assert_eq!(align_up(1000, 1000, 100), 1000);
        assert_eq!(align_up(1001, 1000, 100), 1100);
        assert_eq!(align_up(1100, 1000, 100), 1100);
        assert_eq!(align_up(999, 1000, 100), 1000);
    }
}
