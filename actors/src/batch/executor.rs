//! An executor worker: runs one job at a time for the job scheduler.
//!
//! The `executor-<n>` actors are the children of the [job scheduler](crate::batch::job_scheduler),
//! which sends each of them at most one [`ExecutorMsg::Run`] at a time and restarts them
//! (one-for-one, permanent) when they die. An executor owns nothing but its name: a job's
//! input travels inside the job (its closure captures the batch's blocks, shared by `Arc`),
//! so a run is one message per job, never one per record.
//!
//! Running a job means awaiting `(job.run)(ctx)` inside the handler, so the actor is busy
//! until the job ends, and replying with the outcome: `Ok(())`, or the reason the attempt
//! failed as a sentence. The scheduler decides what a failure means (retry elsewhere, or fail
//! the batch); the executor only reports it.
//!
//! # A panicking job fails its attempt, not the executor
//!
//! A panic in user code is caught ([`FutureExt::catch_unwind`]) and replied as
//! `Err("panicked: <message>")`; the executor keeps running. The alternative — letting the
//! actor fail — would report the same failure twice over (a dead executor *and* a lost job),
//! cost a restart with its backoff, and spend the scheduler's restart budget on a user bug
//! until it gives up and escalates to the driver. The executor holds no state a panic could
//! leave half-updated: the job's future is dropped whole, and nothing else is touched. The
//! default panic hook still prints the panic to stderr, so it is never silent.
//!
//! Each run reports [`Event::OutputStarted`] (every attempt) and, when it succeeds,
//! [`Event::OutputCompleted`] with its duration, both with `output` = the job's id.
//!
//! # What a crash leaves behind
//!
//! A `kill` cancels the running job at its next `.await` and drops the reply port unanswered:
//! the scheduler sees the call end with `SenderError` and retries the job on another
//! executor. Whatever the cancelled job had already output stays; jobs are idempotent per
//! ([`JobContext::batch_time_ms`], [`Job::id`]), so the retry overwrites or skips it.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;
use tracing::Instrument;

use crate::batch::span::batch_span;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::pipeline::{Job, JobContext};

/// The executor actor (registered as `executor-<n>`; see [`crate::tree::names::Names::executor`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Executor;

/// What an executor starts from.
#[derive(Clone, Debug)]
pub(crate) struct ExecutorArgs {
    /// Its registered name, written into every [`JobContext`] it runs.
    pub name: String,
    /// Where it reports [`Event::OutputStarted`] and [`Event::OutputCompleted`].
    pub events: EventSink,
}

/// An executor's state: its name and event sink, nothing a job could corrupt.
#[derive(Debug)]
pub(crate) struct ExecutorState {
    name: String,
    events: EventSink,
}

/// Messages of the executor.
#[derive(Debug)]
pub(crate) enum ExecutorMsg {
    /// Runs the job with this context and replies once it has ended: `Ok(())`, or why this
    /// attempt failed (the job's error, or `"panicked: <message>"`). The context's `executor`
    /// is set to this executor's name.
    Run(Job, JobContext, RpcReplyPort<Result<(), String>>),
}

impl Actor for Executor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ExecutorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ExecutorState {
            name: args.name,
            events: args.events,
        })
    }

    /// # Cancel safety
    ///
    /// A kill cancels the job at its next `.await` and the reply is never sent (see "What a
    /// crash leaves behind" in the module docs).
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            ExecutorMsg::Run(job, mut ctx, reply) => {
                ctx.executor.clone_from(&state.name);
                // The job — the user's code included — runs inside its batch's span.
                let span = batch_span(ctx.batch_time_ms);
                let result = state.run(&job, ctx).instrument(span).await;
                if !reply.is_closed() {
                    let _ = reply.send(result);
                }
            }
        }
        Ok(())
    }
}

impl ExecutorState {
    /// Runs one attempt of `job`, reporting its events; a panic becomes an `Err`.
    async fn run(&self, job: &Job, ctx: JobContext) -> Result<(), String> {
        let (batch_time_ms, attempt) = (ctx.batch_time_ms, ctx.attempt);
        self.events.emit(Event::OutputStarted {
            batch_time_ms,
            output: job.id.clone(),
        });
        let started = Instant::now();
        // The call `(job.run)(ctx)` happens inside the async block, so a panic while building
        // the future is caught as well as one while polling it.
        let run = job.run.clone();
        let outcome = AssertUnwindSafe(async move { run(ctx).await })
            .catch_unwind()
            .await;
        let result = match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
        };
        match &result {
            Ok(()) => {
                let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                tracing::debug!(executor = %self.name, job = %job.id, batch_time_ms, attempt,
                    duration_ms, "job succeeded");
                self.events.emit(Event::OutputCompleted {
                    batch_time_ms,
                    output: job.id.clone(),
                    duration_ms,
                });
            }
            Err(reason) => {
                tracing::warn!(executor = %self.name, job = %job.id, batch_time_ms, attempt,
                    %reason, "job attempt failed");
            }
        }
        result
    }
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic with a non-text payload"
    }
}
