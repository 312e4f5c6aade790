//! The job generator: the batch clock, and the checkpoints around every batch.
//!
//! Registered as `job-generator`, a child of the driver. It owns a timer aligned to batch
//! boundaries — batch times are `zero_time_ms + k × batch_interval`, where the zero time is
//! fixed at the first start and kept across restarts in the checkpoint — and for every batch
//! time, in order:
//!
//! 1. asks the `received-block-tracker` to allocate the batch's blocks (durable, idempotent for
//!    a batch that was already allocated);
//! 2. builds the batch's input from the [`BlockStore`] (blocks shared by `Arc`; a block no
//!    longer in memory is read back from the receiver WAL) and asks the [`Pipeline`] for its
//!    jobs;
//! 3. writes a checkpoint that lists the batch as pending ("before");
//!
//! Every checkpoint carries [`Pipeline::snapshot`] as of the completed prefix of batches (every
//! batch up to it complete, none after it), so a restore re-runs exactly the batches after it.
//! 4. submits the jobs to the `job-scheduler`, without waiting in its handler;
//! 5. when the scheduler reports the batch complete: tells the pipeline
//!    ([`Pipeline::batch_completed`]) and writes a checkpoint without the batch ("after"), and only once that checkpoint is durable lets
//!    the tracker drop old allocations and the receiver WAL drop old segments.
//!
//! At most `max_pending_batches` batches are generated and not yet complete; further batch
//! times wait as plain times, so a slow pipeline or a long outage never loads more than that
//! many batches' data into memory. On a restart it re-runs the pending batches of the restored
//! checkpoint first, then the batches missed while it was down, then resumes the timer.
//!
//! # Checkpoint controls (as in Flink)
//!
//! [`CheckpointPolicy`]: the interval (a checkpoint after a completed batch is skipped if the
//! last one is more recent), the minimum pause between two checkpoints, a timeout after which
//! a write is abandoned, and the number of consecutive failures tolerated before the generator
//! fails (and the driver restarts from the last good checkpoint). Checkpoints are written one at
//! a time (at most one concurrent checkpoint), in the generator's own handler, so they are
//! ordered with the batches they describe.
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

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::block_store::BlockStore;
use crate::checkpoint::{CheckpointData, CheckpointStore, OperatorState};
use crate::events::{Event, EventSink};
use crate::job_scheduler::{BatchJobs, BatchOutcome, JobSchedulerMsg};
use crate::names::Names;
use crate::pipeline::{BatchInput, Pipeline};
use crate::received_block_tracker::ReceivedBlockTrackerMsg;
use crate::wal::{Wal, now_ms};

/// Flink's checkpoint controls, for the driver's checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Checkpoint after a completed batch only if the last checkpoint is at least this old
    /// (`0`: after every batch, Spark's behaviour). Default: 0.
    pub interval: Duration,
    /// At least this long between the end of one checkpoint and the start of the next.
    /// Default: 0.
    pub min_pause: Duration,
    /// A checkpoint write taking longer is abandoned and counts as a failure. Default: 60 s.
    pub timeout: Duration,
    /// This many consecutive failed checkpoints are tolerated; one more fails the generator.
    /// Default: 3.
    pub tolerable_failures: u32,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            interval: Duration::ZERO,
            min_pause: Duration::ZERO,
            timeout: Duration::from_secs(60),
            tolerable_failures: 3,
        }
    }
}

/// The job generator actor.
#[derive(Clone, Debug)]
pub struct JobGenerator;

/// What the job generator starts from (built by the driver, again at every restart).
#[derive(Clone)]
pub struct JobGeneratorArgs {
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
    /// Checkpoint controls.
    pub checkpoint_policy: CheckpointPolicy,
    /// Configuration that must survive restarts, stored in every checkpoint.
    pub settings: BTreeMap<String, String>,
    /// Where received blocks are kept in memory.
    pub block_store: BlockStore,
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
pub struct JobGeneratorState {
    args: JobGeneratorArgs,
    /// Batch times waiting to be generated, in order.
    queue: VecDeque<u64>,
    /// Generated and submitted, not yet complete.
    pending: BTreeSet<u64>,
    /// The latest batch time that entered the queue.
    last_queued_ms: Option<u64>,
    /// The first and the latest batch time generated by this run.
    first_generated_ms: Option<u64>,
    last_generated_ms: Option<u64>,
    last_checkpoint: Option<tokio::time::Instant>,
    failed_checkpoints: u32,
    timer: Option<JoinHandle<Result<(), ractor::MessagingErr<JobGeneratorMsg>>>>,
    drain: Option<RpcReplyPort<()>>,
}

/// Messages of the job generator.
#[derive(Debug)]
pub enum JobGeneratorMsg {
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
    /// The pending batch times and the queue, for tests and status.
    Status(RpcReplyPort<GeneratorStatus>),
}

/// What the generator is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratorStatus {
    /// Generated, not complete.
    pub pending: Vec<u64>,
    /// Waiting to be generated.
    pub queued: Vec<u64>,
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
        let mut state = JobGeneratorState {
            queue: VecDeque::new(),
            pending: BTreeSet::new(),
            last_queued_ms: None,
            first_generated_ms: None,
            last_generated_ms: None,
            last_checkpoint: None,
            failed_checkpoints: 0,
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
            state.last_queued_ms = times.last().copied();
            state.queue.extend(times);
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
                complete(state, outcome).await?;
                generate_ready(&myself, state).await?;
            }
            JobGeneratorMsg::BatchLost(t) => {
                tracing::warn!(
                    batch_time_ms = t,
                    "the job scheduler went away during a batch"
                );
            }
            JobGeneratorMsg::Drain(reply) => {
                if let Some(timer) = state.timer.take() {
                    timer.abort();
                }
                let last = state.next_batch_time();
                state.queue.push_back(last);
                state.last_queued_ms = Some(last);
                state.drain = Some(reply);
                generate_ready(&myself, state).await?;
            }
            JobGeneratorMsg::Status(reply) => {
                let status = GeneratorStatus {
                    pending: state.pending.iter().copied().collect(),
                    queued: state.queue.iter().copied().collect(),
                };
                if !reply.is_closed() {
                    let _ = reply.send(status);
                }
            }
        }
        finish_drain(state);
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

/// Generates queued batches while fewer than `max_pending_batches` are pending.
async fn generate_ready(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
) -> Result<(), ActorProcessingErr> {
    while state.pending.len() < state.args.max_pending_batches.max(1) {
        let Some(t) = state.queue.pop_front() else {
            break;
        };
        generate(myself, state, t).await?;
    }
    Ok(())
}

async fn generate(
    myself: &ActorRef<JobGeneratorMsg>,
    state: &mut JobGeneratorState,
    t: u64,
) -> Result<(), ActorProcessingErr> {
    let names = state.args.names.clone();
    let tracker = ActorRef::<ReceivedBlockTrackerMsg>::where_is(names.received_block_tracker())
        .ok_or("the received-block tracker is not running")?;
    let allocation = ractor::call!(tracker, ReceivedBlockTrackerMsg::AllocateBatch, t)??;
    let mut input = BatchInput {
        batch_time_ms: t,
        blocks: BTreeMap::new(),
    };
    for (stream, infos) in &allocation.blocks {
        let mut blocks = Vec::with_capacity(infos.len());
        for info in infos {
            blocks.push(
                state
                    .args
                    .block_store
                    .get_or_read(info, &state.args.receiver_wal)
                    .await?,
            );
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
    state.first_generated_ms.get_or_insert(t);
    state.last_generated_ms = Some(t);
    checkpoint(state, t, true).await?;
    state.args.events.emit(Event::BatchGenerated {
        batch_time_ms: t,
        blocks: allocation.blocks.values().map(|b| b.len() as u64).sum(),
        records,
    });
    let scheduler = ActorRef::<JobSchedulerMsg>::where_is(names.job_scheduler())
        .ok_or("the job scheduler is not running")?;
    let me = myself.clone();
    let batch = BatchJobs {
        batch_time_ms: t,
        jobs,
        records,
    };
    // The scheduler answers when the batch is done; wait for it off the generator's mailbox.
    tokio::spawn(async move {
        let message = match scheduler
            .call(|reply| JobSchedulerMsg::Submit(batch, reply), None)
            .await
        {
            Ok(ractor::rpc::CallResult::Success(outcome)) => JobGeneratorMsg::BatchDone(outcome),
            _ => JobGeneratorMsg::BatchLost(t),
        };
        let _ = me.cast(message);
    });
    Ok(())
}

async fn complete(
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
    state.args.pipeline.batch_completed(t);
    let written = checkpoint(state, t, false).await?;
    if written {
        cleanup(state).await;
    }
    Ok(())
}

/// Writes a checkpoint at `time_ms` unless the policy says to skip it ("before" checkpoints are
/// never skipped: they record what must be re-run). Returns whether one was written.
async fn checkpoint(
    state: &mut JobGeneratorState,
    time_ms: u64,
    before: bool,
) -> Result<bool, ActorProcessingErr> {
    let policy = state.args.checkpoint_policy;
    if let Some(last) = state.last_checkpoint {
        let since = last.elapsed();
        if !before && (since < policy.interval || since < policy.min_pause) {
            return Ok(false);
        }
        if since < policy.min_pause {
            tokio::time::sleep(policy.min_pause - since).await;
        }
    }
    let result = match state.args.pipeline.snapshot(state.completed_through()) {
        Ok(operator_state) => {
            let data = state.checkpoint_data(time_ms, operator_state);
            tokio::time::timeout(policy.timeout, state.args.checkpoints.write(&data))
                .await
                .map_err(|_| format!("timed out after {:?}", policy.timeout))
                .and_then(|written| written.map_err(|e| e.to_string()))
        }
        Err(err) => Err(format!("snapshotting the pipeline's state: {err}")),
    };
    state.last_checkpoint = Some(tokio::time::Instant::now());
    let failure = match result {
        Ok(_) => {
            state.failed_checkpoints = 0;
            return Ok(true);
        }
        Err(failure) => failure,
    };
    state.failed_checkpoints += 1;
    state.args.events.emit(Event::CheckpointFailed {
        store: state.args.checkpoints.storage().describe(),
        reason: failure.clone(),
    });
    if state.failed_checkpoints > policy.tolerable_failures {
        return Err(format!(
            "{} consecutive checkpoints failed (tolerated: {}); the last: {failure}",
            state.failed_checkpoints, policy.tolerable_failures
        )
        .into());
    }
    tracing::warn!(error = %failure, "checkpoint failed; tolerated");
    Ok(false)
}

/// After a durable checkpoint: allocations of batches before the oldest pending one, and
/// receiver WAL segments older than every live block, are no longer needed.
async fn cleanup(state: &mut JobGeneratorState) {
    let oldest_needed = state
        .pending
        .first()
        .copied()
        .or(state.queue.front().copied());
    let Some(threshold) = oldest_needed.or(state.last_queued_ms.map(|t| t + 1)) else {
        return;
    };
    let Some(tracker) =
        ActorRef::<ReceivedBlockTrackerMsg>::where_is(state.args.names.received_block_tracker())
    else {
        return;
    };
    match ractor::call!(tracker, ReceivedBlockTrackerMsg::CleanupBefore, threshold) {
        Ok(Ok(_)) => {}
        other => {
            tracing::warn!(
                ?other,
                "block tracker cleanup failed; retried after the next batch"
            );
            return;
        }
    }
    let Ok(live) = ractor::call!(tracker, ReceivedBlockTrackerMsg::Inspect) else {
        return;
    };
    // A block is appended to the receiver WAL a moment before it is reported to the tracker:
    // keep a margin, so a block on its way is never cleaned.
    let margin = (state.args.batch_interval * 10).max(Duration::from_secs(10));
    let horizon = now_ms().saturating_sub(margin.as_millis() as u64);
    let before = live
        .oldest_live_stored_ms()
        .map_or(horizon, |oldest| oldest.min(horizon));
    state.args.block_store.remove_before(before);
    if let Err(err) = state.args.receiver_wal.clean(before).await {
        tracing::warn!(error = %err, "receiver WAL cleanup failed; retried after the next batch");
    }
}

/// Answers a pending drain once nothing is queued or pending.
fn finish_drain(state: &mut JobGeneratorState) {
    if !state.queue.is_empty() || !state.pending.is_empty() {
        return;
    }
    if let Some(reply) = state.drain.take()
        && !reply.is_closed()
    {
        let _ = reply.send(());
    }
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
