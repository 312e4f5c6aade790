//! The job scheduler: runs each batch's jobs on the executor workers, a bounded number of
//! batches at a time, retrying failed jobs elsewhere.
//!
//! The job generator submits one batch at a time ([`JobSchedulerMsg::Submit`]): its time, its
//! jobs, and its record count. The scheduler owns
//!
//! * the executors — its children `executor-0` … `executor-{W-1}` (see
//!   [`Names::executor`]), restarted one-for-one and permanently through [`Children`];
//! * the queue of submitted batches, of which at most `max_batches_in_flight` run at once
//!   (default 1); the others wait in submit order;
//! * each running job's bookkeeping: how many times it was dispatched and failed, and which
//!   executors it failed on;
//! * which executor runs what: each executor gets one job at a time.
//!
//! This is Spark Streaming's `JobScheduler` with `spark.streaming.concurrentJobs` batches in
//! flight and the task scheduler's `maxTaskFailures` retries folded in.
//!
//! # Invariant
//!
//! **A batch is reported complete only when every one of its jobs has succeeded once.** Its
//! submitter then gets `Ok` timings and [`Event::BatchCompleted`] is published. A job that
//! fails `max_attempts` times fails its batch: the submitter gets `Err` with the last reason,
//! the batch's jobs that have not started are dropped, and the results of those still running
//! are ignored when they come back. With one batch in flight (the default), batches complete
//! strictly in submit order; with more, they may overlap and complete out of order.
//!
//! # Retries
//!
//! An attempt ends in one of three ways, each reported to the scheduler as a message:
//!
//! * **it succeeded**;
//! * **it failed** — the job returned an error or panicked (the executor catches the panic and
//!   keeps running, see [`crate::batch::executor`]). This counts toward `max_attempts`;
//! * **it was lost** — its executor died while running it (the call ended with
//!   `SenderError`), or the job could not be sent to it. This does *not* count toward
//!   `max_attempts`: a chaos kill is no fault of the job. It is still bounded, because every
//!   loss is an executor death and the executors' restart intensity makes the scheduler give
//!   up (and escalate) when they die too often.
//!
//! Either way the job goes back in the queue, in its original place (batch order, then job
//! order), and is retried on an executor it has not failed on yet, round robin over the live
//! executors. When it has failed on every live executor it runs on any idle one; while an
//! executor it has not failed on is live but busy, it waits for that one. Executors are looked
//! up by name in ractor's registry at every dispatch, because a restarted executor is a new
//! actor with a new [`ActorRef`]; the incarnation that lost a job is never used again.
//!
//! # Never blocking on a job
//!
//! The scheduler never awaits a job. Each dispatch is an [`ActorRef::call`] to the executor
//! inside a spawned task, which casts the outcome back as [`JobSchedulerMsg::JobFinished`];
//! the state machine (`Schedule`) changes only in the scheduler's handler. So submissions,
//! status queries and supervision events are handled while jobs run.
//!
//! # Events
//!
//! [`Event::BatchStarted`] when a batch's first job is dispatched (scheduling delay = that
//! wall-clock time − the batch time), and [`Event::BatchCompleted`] with the timings and the
//! record count when its last job succeeds. The executors publish [`Event::OutputStarted`] for
//! every attempt of a job and [`Event::OutputCompleted`] for the one that succeeds, with
//! `output` = the job id. A failed batch is logged (`tracing::error!`), answered, and
//! published as [`Event::BatchFailed`].
//!
//! # What a crash leaves behind
//!
//! The scheduler keeps nothing durable. If it is killed, its executors die with it (they are
//! linked) and the jobs they were running are cancelled at their next `.await`; every batch in
//! its memory, waiting or running, is lost: each submitter sees its reply port dropped. The
//! driver's restart re-runs the pending batches from the last checkpoint. A job may therefore
//! run more than once — after a crash, and after a retry of an attempt that had already
//! output something — so jobs are idempotent per (batch time, job id), the exactly-once sink
//! contract (see [`crate::pipeline`]).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::batch::executor::{Executor, ExecutorArgs, ExecutorMsg};
use crate::batch::span::batch_span;
use crate::clock::now_ms;
use crate::config::{DEFAULT_MAX_BATCHES_IN_FLIGHT, DEFAULT_MAX_TASK_ATTEMPTS, default_executors};
use crate::messages::RestartChildren;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::pipeline::{Job, JobContext};
use crate::tree::children::{ChildSpec, Children, answer};
use crate::tree::names::Names;
use crate::tree::names::peer;
use crate::tree::restart_policy::{RestartPolicy, RestartType, Strategy};

/// The job scheduler actor (registered as `job-scheduler`; see [`Names::job_scheduler`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JobScheduler;

/// What the job scheduler starts from.
#[derive(Clone, Debug)]
pub(crate) struct JobSchedulerArgs {
    /// The engine's names: the executors are registered as [`Names::executor`].
    pub names: Names,
    /// How many executors to run. Default: [`default_executors`]. At least 1 (0 means 1).
    pub executors: usize,
    /// How many batches may run at once. Default 1 (batches complete in order). At least 1.
    pub max_batches_in_flight: usize,
    /// How many times one job may fail (return an error or panic) before its batch fails.
    /// Default 4. At least 1. Attempts lost to a dying executor do not count.
    pub max_attempts: u32,
    /// How the executors are restarted: its intensity and backoff apply; the strategy is
    /// always one-for-one, because executors are independent of each other.
    pub policy: RestartPolicy,
    /// Where batch events (and the executors' events) go.
    pub events: EventSink,
}

impl Default for JobSchedulerArgs {
    fn default() -> Self {
        JobSchedulerArgs {
            names: Names::default(),
            executors: default_executors(),
            max_batches_in_flight: DEFAULT_MAX_BATCHES_IN_FLIGHT,
            max_attempts: DEFAULT_MAX_TASK_ATTEMPTS,
            policy: RestartPolicy::default(),
            events: EventSink::default(),
        }
    }
}

/// One batch to run.
#[derive(Debug)]
pub(crate) struct BatchJobs {
    /// The batch time (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// Its jobs; each job's closure already holds its input.
    pub jobs: Vec<Job>,
    /// Records in its input (for [`Event::BatchCompleted`]).
    pub records: u64,
}

/// How long a completed batch waited and ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchTimings {
    /// Wall-clock time its first job was dispatched, minus its batch time.
    pub scheduling_delay_ms: u64,
    /// Wall-clock time from its first dispatch to its last job's success.
    pub processing_ms: u64,
}

/// The answer to a [`JobSchedulerMsg::Submit`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchOutcome {
    /// The batch time.
    pub batch_time_ms: u64,
    /// Its timings when every job succeeded; otherwise why it failed, as a sentence.
    pub result: Result<BatchTimings, String>,
}

/// A snapshot of the scheduler's queues, for tests and the CLI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SchedulerStatus {
    /// Batch times of the batches waiting for a slot, in submit order.
    pub waiting_batches: Vec<u64>,
    /// Batch times of the batches running, in submit order.
    pub running_batches: Vec<u64>,
    /// Jobs running on an executor now.
    pub running_jobs: usize,
    /// Jobs of running batches waiting for an executor (first attempts and retries).
    pub pending_jobs: usize,
    /// The number of executors.
    pub executors: usize,
    /// Executors registered and usable now (the others are restarting).
    pub live_executors: usize,
}

/// Messages of the job scheduler.
#[derive(Debug)]
pub(crate) enum JobSchedulerMsg {
    /// Runs a batch; the reply comes when it completes or fails definitively. The port is
    /// dropped unanswered if the scheduler dies first.
    Submit(BatchJobs, RpcReplyPort<BatchOutcome>),
    /// Replies with a snapshot of the queues.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    Status(RpcReplyPort<SchedulerStatus>),
    /// Internal: an attempt ended (sent by the scheduler's own dispatch tasks).
    JobFinished(JobFinished),
    /// Internal: restart these executors (sent by the scheduler to itself after a backoff).
    Restart(RestartChildren),
}

/// How one attempt of a job ended: the payload of [`JobSchedulerMsg::JobFinished`]. Only the
/// scheduler makes these.
#[derive(Debug)]
pub(crate) struct JobFinished {
    dispatch: u64,
    task: TaskKey,
    executor: usize,
    executor_id: ActorId,
    attempt: Attempt,
}

/// How an attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// The job returned `Ok`.
    Succeeded,
    /// The job returned an error or panicked: counts toward `max_attempts`.
    Failed(String),
    /// The executor died while running it, or could not be sent it: does not count.
    Lost(String),
}

/// The job scheduler's state.
#[derive(Debug)]
pub(crate) struct JobSchedulerState {
    names: Names,
    children: Children,
    schedule: Schedule,
    /// Per executor, the incarnation that lost a job: it is dying, and is not used again even
    /// if the registry still shows it for a moment.
    lost: Vec<Option<ActorId>>,
}

impl Actor for JobScheduler {
    type Msg = JobSchedulerMsg;
    type State = JobSchedulerState;
    type Arguments = JobSchedulerArgs;

    /// Starts the executors.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: JobSchedulerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let executors = args.executors.max(1);
        let policy = RestartPolicy {
            strategy: Strategy::OneForOne,
            ..args.policy
        };
        let mut children = Children::new(
            args.names.job_scheduler(),
            policy,
            fastrand::u64(..),
            args.events.clone(),
        );
        let mut executor_names = Vec::with_capacity(executors);
        for n in 0..executors {
            let name = args.names.executor(n);
            let (child, events) = (name.clone(), args.events.clone());
            children.add(ChildSpec::new(
                name.clone(),
                RestartType::Permanent,
                Executor,
                move || ExecutorArgs {
                    name: child.clone(),
                    events: events.clone(),
                },
            ));
            executor_names.push(name);
        }
        children
            .start_all(&myself.get_cell())
            .await
            .map_err(|(name, err)| format!("executor {name} did not start: {err}"))?;
        tracing::info!(
            scheduler = %args.names.job_scheduler(),
            executors,
            max_batches_in_flight = args.max_batches_in_flight.max(1),
            max_attempts = args.max_attempts.max(1),
            "job scheduler started"
        );
        Ok(JobSchedulerState {
            names: args.names,
            children,
            schedule: Schedule::new(
                executor_names,
                args.max_batches_in_flight,
                args.max_attempts,
                args.events,
            ),
            lost: vec![None; executors],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            JobSchedulerMsg::Submit(batch, reply) => state.schedule.submit(batch, reply),
            JobSchedulerMsg::Status(reply) => {
                let live = state.live_executors().iter().flatten().count();
                answer(reply, state.schedule.status(live));
            }
            JobSchedulerMsg::JobFinished(finished) => {
                if matches!(finished.attempt, Attempt::Lost(_)) {
                    state.lost[finished.executor] = Some(finished.executor_id);
                }
                state.schedule.finished(
                    finished.dispatch,
                    finished.task,
                    finished.executor,
                    finished.attempt,
                );
            }
            JobSchedulerMsg::Restart(RestartChildren(set)) => {
                let decision = state.children.restart(&myself.get_cell(), set).await;
                decision.carry_out(&myself, JobSchedulerMsg::Restart)?;
            }
        }
        state.dispatch(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let decision = state.children.handle(event).await;
        decision.carry_out(&myself, JobSchedulerMsg::Restart)
    }
}

impl JobSchedulerState {
    /// Each executor's current incarnation, looked up by name, unless it is the one that lost
    /// a job (dying) or none is registered (restarting).
    fn live_executors(&self) -> Vec<Option<ActorRef<ExecutorMsg>>> {
        (0..self.lost.len())
            .map(|n| {
                let executor = peer::<ExecutorMsg>(&self.names.executor(n)).ok()?;
                (Some(executor.get_id()) != self.lost[n]).then_some(executor)
            })
            .collect()
    }

    /// Hands pending jobs to idle live executors; each runs in a task that reports back.
    fn dispatch(&mut self, myself: &ActorRef<JobSchedulerMsg>) {
        let executors = self.live_executors();
        let available: Vec<bool> = executors.iter().map(Option::is_some).collect();
        for assignment in self.schedule.assign(&available) {
            let Some(executor) = executors[assignment.executor].clone() else {
                continue; // `assign` only picks available executors
            };
            let scheduler = myself.clone();
            let span = batch_span(assignment.ctx.batch_time_ms);
            tokio::spawn(run_on(executor, assignment, scheduler).instrument(span));
        }
    }
}

/// Runs one attempt on `executor` and casts how it ended back to the scheduler.
async fn run_on(
    executor: ActorRef<ExecutorMsg>,
    assignment: Assignment,
    scheduler: ActorRef<JobSchedulerMsg>,
) {
    let Assignment {
        dispatch,
        task,
        executor: index,
        job,
        ctx,
    } = assignment;
    let attempt = match executor
        .call(|reply| ExecutorMsg::Run(job, ctx, reply), None)
        .await
    {
        Ok(CallResult::Success(Ok(()))) => Attempt::Succeeded,
        Ok(CallResult::Success(Err(reason))) => Attempt::Failed(reason),
        Ok(CallResult::SenderError) => {
            Attempt::Lost("the executor stopped while running it".to_owned())
        }
        Ok(CallResult::Timeout) => Attempt::Lost("the executor timed out".to_owned()),
        Err(err) => Attempt::Lost(format!("it could not be sent to the executor: {err}")),
    };
    // If the scheduler is gone, so is the batch: there is nobody to tell.
    let _ = scheduler.cast(JobSchedulerMsg::JobFinished(JobFinished {
        dispatch,
        task,
        executor: index,
        executor_id: executor.get_id(),
        attempt,
    }));
}

// ================================ the scheduling state machine ================================ //

/// One job of one submitted batch: (batch sequence number, job index). Orders the pending
/// queue: earlier batches first, then job order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct TaskKey {
    batch: u64,
    job: usize,
}

/// A job handed to an executor: what the actor sends.
#[derive(Debug)]
struct Assignment {
    dispatch: u64,
    task: TaskKey,
    executor: usize,
    job: Job,
    ctx: JobContext,
}

/// A submitted batch.
#[derive(Debug)]
struct Batch {
    batch_time_ms: u64,
    records: u64,
    jobs: Vec<JobSlot>,
    /// Jobs that have not succeeded yet.
    remaining: usize,
    /// Wall-clock time its first job was dispatched.
    started_ms: Option<u64>,
    reply: RpcReplyPort<BatchOutcome>,
}

/// One job's bookkeeping.
#[derive(Debug)]
struct JobSlot {
    job: Job,
    /// Attempts dispatched so far (the next one's [`JobContext::attempt`] is this + 1).
    dispatched: u32,
    /// Attempts that failed (counted against `max_attempts`).
    failures: u32,
    /// Executors (by index) on which an attempt failed or was lost.
    failed_on: BTreeSet<usize>,
    succeeded: bool,
}

/// The scheduler's bookkeeping, without I/O: which batches wait and run, which jobs are
/// pending, what each executor runs. The actor feeds it submissions, executor availability
/// and attempt outcomes; it answers submitters and publishes batch events itself (neither
/// waits).
#[derive(Debug)]
struct Schedule {
    max_in_flight: usize,
    max_attempts: u32,
    events: EventSink,
    executor_names: Vec<String>,
    next_batch: u64,
    next_dispatch: u64,
    /// Submitted batches waiting for a slot, in submit order.
    waiting: VecDeque<(u64, Batch)>,
    /// Running batches by sequence number.
    running: BTreeMap<u64, Batch>,
    /// Jobs of running batches that wait for an executor.
    pending: BTreeSet<TaskKey>,
    /// Per executor, the dispatch it is running.
    busy: Vec<Option<u64>>,
    /// Where the round robin over executors resumes.
    cursor: usize,
}

impl Schedule {
    fn new(
        executor_names: Vec<String>,
        max_in_flight: usize,
        max_attempts: u32,
        events: EventSink,
    ) -> Self {
        Schedule {
            max_in_flight: max_in_flight.max(1),
            max_attempts: max_attempts.max(1),
            events,
            busy: vec![None; executor_names.len()],
            executor_names,
            next_batch: 0,
            next_dispatch: 0,
            waiting: VecDeque::new(),
            running: BTreeMap::new(),
            pending: BTreeSet::new(),
            cursor: 0,
        }
    }

    /// Queues a batch, and starts it if a slot is free.
    fn submit(&mut self, batch: BatchJobs, reply: RpcReplyPort<BatchOutcome>) {
        let span = batch_span(batch.batch_time_ms);
        let guard = span.enter();
        let seq = self.next_batch;
        self.next_batch += 1;
        tracing::debug!(
            batch_time_ms = batch.batch_time_ms,
            jobs = batch.jobs.len(),
            "batch submitted"
        );
        let jobs: Vec<JobSlot> = batch
            .jobs
            .into_iter()
            .map(|job| JobSlot {
                job,
                dispatched: 0,
                failures: 0,
                failed_on: BTreeSet::new(),
                succeeded: false,
            })
            .collect();
        self.waiting.push_back((
            seq,
            Batch {
                batch_time_ms: batch.batch_time_ms,
                records: batch.records,
                remaining: jobs.len(),
                jobs,
                started_ms: None,
                reply,
            },
        ));
        drop(guard);
        self.admit();
    }

    /// Moves waiting batches into free slots, in submit order. A batch without jobs completes
    /// at once.
    fn admit(&mut self) {
        while self.running.len() < self.max_in_flight {
            let Some((seq, mut batch)) = self.waiting.pop_front() else {
                return;
            };
            if batch.jobs.is_empty() {
                let _span = batch_span(batch.batch_time_ms).entered();
                mark_started(&self.events, &mut batch);
                self.complete(batch);
                continue;
            }
            self.pending
                .extend((0..batch.jobs.len()).map(|job| TaskKey { batch: seq, job }));
            self.running.insert(seq, batch);
        }
    }

    /// Pairs pending jobs with idle executors among the `available` ones, in queue order.
    fn assign(&mut self, available: &[bool]) -> Vec<Assignment> {
        let mut out = Vec::new();
        let mut after = Bound::Unbounded;
        loop {
            let idle = |i: usize| available.get(i) == Some(&true) && self.busy[i].is_none();
            if !(0..self.busy.len()).any(idle) {
                break;
            }
            let Some(&task) = self.pending.range((after, Bound::Unbounded)).next() else {
                break;
            };
            after = Bound::Excluded(task);
            let failed_on = match self.running.get(&task.batch) {
                Some(batch) => &batch.jobs[task.job].failed_on,
                None => continue,
            };
            let Some(executor) = self.choose(failed_on, available) else {
                continue; // it waits for an executor it has not failed on
            };
            out.extend(self.start_task(task, executor));
        }
        out
    }

    /// The executor for a job that failed on `failed_on`: the next idle one, round robin,
    /// that it has not failed on; else, if it has failed on every live executor, the next idle
    /// one; else none (it waits for a busy executor it has not failed on).
    fn choose(&self, failed_on: &BTreeSet<usize>, available: &[bool]) -> Option<usize> {
        let count = self.busy.len();
        let live = |i: usize| available.get(i) == Some(&true);
        let mut idle = (0..count)
            .map(|k| (self.cursor + k) % count)
            .filter(|&i| live(i) && self.busy[i].is_none());
        let first_idle = idle.clone().next()?;
        if let Some(fresh) = idle.find(|i| !failed_on.contains(i)) {
            return Some(fresh);
        }
        let fresh_but_busy = (0..count).any(|i| live(i) && !failed_on.contains(&i));
        (!fresh_but_busy).then_some(first_idle)
    }

    /// Records `task` (of a running batch) as running on `executor`.
    fn start_task(&mut self, task: TaskKey, executor: usize) -> Option<Assignment> {
        let batch = self.running.get_mut(&task.batch)?;
        let _span = batch_span(batch.batch_time_ms).entered();
        let dispatch = self.next_dispatch;
        self.next_dispatch += 1;
        self.pending.remove(&task);
        self.busy[executor] = Some(dispatch);
        self.cursor = (executor + 1) % self.busy.len();
        mark_started(&self.events, batch);
        let slot = &mut batch.jobs[task.job];
        slot.dispatched += 1;
        let ctx = JobContext {
            batch_time_ms: batch.batch_time_ms,
            attempt: slot.dispatched,
            executor: self.executor_names[executor].clone(),
        };
        tracing::debug!(job = %slot.job.id, batch_time_ms = ctx.batch_time_ms,
            attempt = ctx.attempt, executor = %ctx.executor, "job dispatched");
        Some(Assignment {
            dispatch,
            task,
            executor,
            job: slot.job.clone(),
            ctx,
        })
    }

    /// Applies how dispatch `dispatch` of `task` on `executor` ended.
    fn finished(&mut self, dispatch: u64, task: TaskKey, executor: usize, attempt: Attempt) {
        if self.busy.get(executor) == Some(&Some(dispatch)) {
            self.busy[executor] = None;
        }
        let Some(batch) = self.running.get_mut(&task.batch) else {
            tracing::debug!(
                ?attempt,
                "an attempt of a batch that already failed ended; ignored"
            );
            return;
        };
        // The batch's completion or failure below is logged inside its span too.
        let _span = batch_span(batch.batch_time_ms).entered();
        let slot = &mut batch.jobs[task.job];
        let executor_name = &self.executor_names[executor];
        match attempt {
            Attempt::Succeeded => {
                if !slot.succeeded {
                    slot.succeeded = true;
                    batch.remaining -= 1;
                }
                if batch.remaining == 0 {
                    if let Some(batch) = self.running.remove(&task.batch) {
                        self.complete(batch);
                    }
                    self.admit();
                }
            }
            Attempt::Failed(reason) => {
                slot.failures += 1;
                slot.failed_on.insert(executor);
                if slot.failures < self.max_attempts {
                    tracing::warn!(job = %slot.job.id, batch_time_ms = batch.batch_time_ms,
                        executor = %executor_name, failures = slot.failures, %reason,
                        "job failed; retrying");
                    self.pending.insert(task);
                    return;
                }
                let reason = format!(
                    "job `{}` failed {} times (max_attempts = {}); the last attempt, on \
                     {executor_name}: {reason}",
                    slot.job.id, slot.failures, self.max_attempts
                );
                if let Some(batch) = self.running.remove(&task.batch) {
                    self.fail(batch, reason);
                }
                self.pending.retain(|t| t.batch != task.batch);
                self.admit();
            }
            Attempt::Lost(reason) => {
                tracing::warn!(job = %slot.job.id, batch_time_ms = batch.batch_time_ms,
                    executor = %executor_name, %reason, "job lost with its executor; retrying");
                slot.failed_on.insert(executor);
                self.pending.insert(task);
            }
        }
    }

    /// Answers a batch whose every job succeeded, and publishes [`Event::BatchCompleted`].
    fn complete(&self, batch: Batch) {
        let now = now_ms();
        let started = batch.started_ms.unwrap_or(now);
        let timings = BatchTimings {
            scheduling_delay_ms: started.saturating_sub(batch.batch_time_ms),
            processing_ms: now.saturating_sub(started),
        };
        tracing::info!(
            batch_time_ms = batch.batch_time_ms,
            jobs = batch.jobs.len(),
            records = batch.records,
            scheduling_delay_ms = timings.scheduling_delay_ms,
            processing_ms = timings.processing_ms,
            "batch completed"
        );
        self.events.emit(Event::BatchCompleted {
            batch_time_ms: batch.batch_time_ms,
            scheduling_delay_ms: timings.scheduling_delay_ms,
            processing_ms: timings.processing_ms,
            records: batch.records,
        });
        answer(
            batch.reply,
            BatchOutcome {
                batch_time_ms: batch.batch_time_ms,
                result: Ok(timings),
            },
        );
    }

    /// Answers a batch that failed definitively.
    fn fail(&self, batch: Batch, reason: String) {
        tracing::error!(batch_time_ms = batch.batch_time_ms, %reason, "batch failed");
        self.events.emit(Event::BatchFailed {
            batch_time_ms: batch.batch_time_ms,
            reason: reason.clone(),
        });
        answer(
            batch.reply,
            BatchOutcome {
                batch_time_ms: batch.batch_time_ms,
                // The outcome names the batch; the reason is only why.
                result: Err(reason),
            },
        );
    }

    /// A snapshot of the queues.
    fn status(&self, live_executors: usize) -> SchedulerStatus {
        SchedulerStatus {
            waiting_batches: self.waiting.iter().map(|(_, b)| b.batch_time_ms).collect(),
            running_batches: self.running.values().map(|b| b.batch_time_ms).collect(),
            running_jobs: self.busy.iter().flatten().count(),
            pending_jobs: self.pending.len(),
            executors: self.busy.len(),
            live_executors,
        }
    }
}

/// Marks `batch` started (once), publishing [`Event::BatchStarted`].
fn mark_started(events: &EventSink, batch: &mut Batch) {
    if batch.started_ms.is_some() {
        return;
    }
    let now = now_ms();
    batch.started_ms = Some(now);
    events.emit(Event::BatchStarted {
        batch_time_ms: batch.batch_time_ms,
        scheduling_delay_ms: now.saturating_sub(batch.batch_time_ms),
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn schedule(executors: usize, max_attempts: u32) -> Schedule {
        let names = (0..executors).map(|n| format!("executor-{n}")).collect();
        Schedule::new(names, 1, max_attempts, EventSink::discard())
    }

    fn noop(id: &str) -> Job {
        Job {
            id: id.to_owned(),
            run: Arc::new(|_| Box::pin(async { Ok(()) })),
        }
    }

    fn submit(
        s: &mut Schedule,
        batch_time_ms: u64,
        ids: &[&str],
    ) -> tokio::sync::oneshot::Receiver<BatchOutcome> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let batch = BatchJobs {
            batch_time_ms,
            jobs: ids.iter().map(|id| noop(id)).collect(),
            records: 0,
        };
        s.submit(batch, tx.into());
        rx
    }

    fn failed_on(executors: &[usize]) -> BTreeSet<usize> {
        executors.iter().copied().collect()
    }

    #[test]
    fn first_attempts_go_round_robin_over_idle_live_executors() {
        let mut s = schedule(3, 4);
        let _rx = submit(&mut s, 1, &["a", "b", "c", "d"]);
        let on: Vec<usize> = s
            .assign(&[true, false, true])
            .iter()
            .map(|a| a.executor)
            .collect();
        assert_eq!(on, [0, 2], "one job per idle live executor, in job order");
        assert_eq!(s.choose(&failed_on(&[]), &[true, true, true]), Some(1));
    }

    #[test]
    fn a_retry_prefers_an_idle_executor_it_has_not_failed_on() {
        let mut s = schedule(3, 4);
        assert_eq!(s.choose(&failed_on(&[0]), &[true; 3]), Some(1));
        s.busy[1] = Some(7);
        assert_eq!(s.choose(&failed_on(&[0]), &[true; 3]), Some(2));
    }

    #[test]
    fn a_retry_waits_for_a_busy_executor_it_has_not_failed_on_but_not_for_a_dead_one() {
        let mut s = schedule(2, 4);
        s.busy[1] = Some(7);
        assert_eq!(s.choose(&failed_on(&[0]), &[true, true]), None);
        // Executor 1 is restarting: waiting for it could take long; run where it failed.
        assert_eq!(s.choose(&failed_on(&[0]), &[true, false]), Some(0));
    }

    #[test]
    fn a_job_that_failed_on_every_live_executor_runs_on_any_idle_one() {
        let s = schedule(2, 4);
        assert_eq!(s.choose(&failed_on(&[0, 1]), &[true, true]), Some(0));
        assert_eq!(s.choose(&failed_on(&[0, 1]), &[false, false]), None);
    }

    #[test]
    fn lost_attempts_do_not_count_toward_max_attempts() {
        let mut s = schedule(2, 2);
        let mut rx = submit(&mut s, 5, &["j"]);
        for _ in 0..5 {
            let a = s.assign(&[true, true]).pop().unwrap();
            s.finished(
                a.dispatch,
                a.task,
                a.executor,
                Attempt::Lost("killed".into()),
            );
        }
        let a = s.assign(&[true, true]).pop().unwrap();
        assert_eq!(a.ctx.attempt, 6);
        s.finished(a.dispatch, a.task, a.executor, Attempt::Succeeded);
        assert!(rx.try_recv().unwrap().result.is_ok());
    }

    #[test]
    fn a_failed_batch_drops_its_pending_jobs_and_ignores_late_results() {
        let mut s = schedule(2, 1);
        let mut rx = submit(&mut s, 5, &["a", "b", "c"]);
        let mut running = s.assign(&[true, true]);
        assert_eq!(running.len(), 2);
        let b = running.pop().unwrap();
        let a = running.pop().unwrap();
        s.finished(
            a.dispatch,
            a.task,
            a.executor,
            Attempt::Failed("boom".into()),
        );
        let reason = rx.try_recv().unwrap().result.unwrap_err();
        assert!(
            reason.contains("`a`") && reason.contains("boom"),
            "{reason}"
        );
        assert_eq!(s.status(2).pending_jobs, 0, "job c was not dropped");
        // The next batch is admitted, and starts only on the idle executor.
        let mut next = submit(&mut s, 6, &["d"]);
        let started: Vec<usize> = s.assign(&[true, true]).iter().map(|a| a.executor).collect();
        assert_eq!(started, [0]);
        // b's late success frees its executor and changes nothing else.
        s.finished(b.dispatch, b.task, b.executor, Attempt::Succeeded);
        assert_eq!(s.status(2).running_jobs, 1);
        assert!(next.try_recv().is_err());
    }
}
