//! The job scheduler and its executors: every job of a batch runs; batches run at most N at a
//! time, in submit order; a failed, panicking or lost job is retried on another executor; a job
//! that keeps failing fails its batch; a killed executor is restarted.
//!
//! Each test runs on a current-thread runtime with paused time and never sleeps: jobs report
//! through channels and block on gates the test opens, and the test waits for those reports,
//! for batch outcomes and for events. A wait that can never end fails at once (paused time
//! jumps to the timeout when every task is idle).

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::time::Duration;

use crate::Event;
use crate::Names;
use crate::batch::job_scheduler::{
    BatchJobs, BatchOutcome, JobScheduler, JobSchedulerArgs, JobSchedulerMsg, SchedulerStatus,
};
use crate::clock::now_ms;
use crate::pipeline::{Job, JobContext, UserError};
use crate::tree::restart_policy::{Backoff, Intensity, RestartPolicy, Strategy};
use crate::{EventHub, EventSubscription};
use ractor::{Actor, ActorRef, RpcReplyPort};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// How long any wait may take (virtual time: only reached when nothing can make progress).
const WAIT: Duration = Duration::from_secs(60);

// ====================================== the harness ====================================== //

struct Harness {
    scheduler: ActorRef<JobSchedulerMsg>,
    handle: JoinHandle<()>,
    names: Names,
    events: EventSubscription,
    executors: usize,
    /// What the jobs report: (job id, its context).
    notes_tx: mpsc::UnboundedSender<(String, JobContext)>,
    notes: mpsc::UnboundedReceiver<(String, JobContext)>,
}

/// Starts a scheduler named under `test/` and waits until its executors have started.
async fn start(test: &str, executors: usize, in_flight: usize, max_attempts: u32) -> Harness {
    let hub = EventHub::default();
    let mut events = hub.subscribe();
    let names = Names::new(format!("{test}/"));
    let backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(10),
        multiplier: 1,
        jitter: 0.0,
        reset_after: Duration::from_secs(3600),
    };
    let args = JobSchedulerArgs {
        names: names.clone(),
        executors,
        max_batches_in_flight: in_flight,
        max_attempts,
        policy: RestartPolicy {
            strategy: Strategy::OneForOne,
            intensity: Intensity {
                max_restarts: 10,
                period: Duration::from_secs(60),
            },
            backoff,
        },
        events: hub.sink(),
    };
    let (scheduler, handle) = Actor::spawn(Some(names.job_scheduler()), JobScheduler, args)
        .await
        .unwrap();
    for n in 0..executors {
        let name = names.executor(n);
        wait_for(
            &mut events,
            |e| matches!(e, Event::ActorStarted { actor } if *actor == name),
        )
        .await;
    }
    let (notes_tx, notes) = mpsc::unbounded_channel();
    Harness {
        scheduler,
        handle,
        names,
        events,
        executors,
        notes_tx,
        notes,
    }
}

/// Waits for the next event matching `pred`.
async fn wait_for(events: &mut EventSubscription, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(WAIT, async {
        loop {
            let record = events.next().await.expect("hub open");
            if pred(&record.event) {
                return record.event;
            }
        }
    })
    .await
    .expect("the event did not come")
}

/// A job that notes its context, then runs `body` with it.
fn job<F>(h: &Harness, id: &str, body: F) -> Job
where
    F: Fn(JobContext) -> Result<(), UserError> + Send + Sync + 'static,
{
    let (id, notes) = (id.to_owned(), h.notes_tx.clone());
    let job_id = id.clone();
    let body = Arc::new(body);
    Job {
        id,
        run: Arc::new(move |ctx: JobContext| {
            let (id, notes, body) = (job_id.clone(), notes.clone(), Arc::clone(&body));
            Box::pin(async move {
                notes.send((id, ctx.clone())).unwrap();
                body(ctx)
            })
        }),
    }
}

/// A job that notes its context, then waits until `gate` opens (on attempts up to
/// `gated_attempts`; later attempts succeed at once).
fn gated_job(h: &Harness, id: &str, gate: &watch::Receiver<bool>, gated_attempts: u32) -> Job {
    let (id, notes, gate) = (id.to_owned(), h.notes_tx.clone(), gate.clone());
    let job_id = id.clone();
    Job {
        id,
        run: Arc::new(move |ctx: JobContext| {
            let (id, notes, mut gate) = (job_id.clone(), notes.clone(), gate.clone());
            Box::pin(async move {
                let attempt = ctx.attempt;
                notes.send((id, ctx)).unwrap();
                if attempt <= gated_attempts {
                    gate.wait_for(|open| *open).await.unwrap();
                }
                Ok(())
            })
        }),
    }
}

impl Harness {
    /// Submits a batch without waiting for it; the receiver gets its outcome.
    fn submit(
        &self,
        batch_time_ms: u64,
        jobs: Vec<Job>,
        records: u64,
    ) -> oneshot::Receiver<BatchOutcome> {
        let (tx, rx) = oneshot::channel();
        let batch = BatchJobs {
            batch_time_ms,
            jobs,
            records,
        };
        self.scheduler
            .cast(JobSchedulerMsg::Submit(batch, RpcReplyPort::from(tx)))
            .unwrap();
        rx
    }

    /// The next job report.
    async fn note(&mut self) -> (String, JobContext) {
        tokio::time::timeout(WAIT, self.notes.recv())
            .await
            .expect("no job reported")
            .unwrap()
    }

    /// Every job report queued now.
    fn queued_notes(&mut self) -> Vec<(String, JobContext)> {
        std::iter::from_fn(|| self.notes.try_recv().ok()).collect()
    }

    async fn status(&self) -> SchedulerStatus {
        ractor::call!(self.scheduler, JobSchedulerMsg::Status).unwrap()
    }

    fn executor_names(&self) -> Vec<String> {
        (0..self.executors)
            .map(|n| self.names.executor(n))
            .collect()
    }

    fn executor_id(&self, name: &str) -> ractor::ActorId {
        ractor::registry::where_is(name)
            .expect("executor registered")
            .get_id()
    }

    async fn shutdown(self) {
        self.scheduler.stop(None);
        self.handle.await.unwrap();
    }
}

/// The outcome of a submitted batch.
async fn outcome(rx: oneshot::Receiver<BatchOutcome>) -> BatchOutcome {
    tokio::time::timeout(WAIT, rx)
        .await
        .expect("the batch did not finish")
        .expect("the scheduler dropped the reply")
}

/// A batch time well in the past, so scheduling delays are large and positive.
fn base_time() -> u64 {
    now_ms() - 10_000
}

// ======================================= batches ======================================= //

#[tokio::test(start_paused = true)]
async fn every_job_of_a_batch_runs_and_the_batch_completes() {
    let mut h = start("sched_all_jobs", 3, 1, 4).await;
    let t = base_time();
    let ids = ["out-0/p0", "out-0/p1", "out-0/p2", "out-1/p0", "out-1/p1"];
    let jobs = ids.iter().map(|id| job(&h, id, |_| Ok(()))).collect();
    let result = outcome(h.submit(t, jobs, 42)).await;

    assert_eq!(result.batch_time_ms, t);
    let timings = result.result.unwrap();
    assert!(timings.scheduling_delay_ms >= 10_000, "{timings:?}");
    let mut ran: Vec<String> = h.queued_notes().into_iter().map(|(id, _)| id).collect();
    ran.sort();
    assert_eq!(ran, ids);

    // Events: the batch started, each output started and completed, then the batch completed.
    let mut seen = Vec::new();
    loop {
        let event = wait_for(&mut h.events, |e| {
            matches!(
                e,
                Event::BatchStarted { .. }
                    | Event::OutputStarted { .. }
                    | Event::OutputCompleted { .. }
                    | Event::BatchCompleted { .. }
            )
        })
        .await;
        let done = matches!(event, Event::BatchCompleted { .. });
        seen.push(event);
        if done {
            break;
        }
    }
    assert!(matches!(seen[0], Event::BatchStarted { batch_time_ms, .. } if batch_time_ms == t));
    let outputs = |started: bool| {
        let mut outputs: Vec<&str> = seen
            .iter()
            .filter_map(|e| match e {
                Event::OutputStarted { output, .. } if started => Some(output.as_str()),
                Event::OutputCompleted { output, .. } if !started => Some(output.as_str()),
                _ => None,
            })
            .collect();
        outputs.sort_unstable();
        outputs
    };
    assert_eq!(outputs(true), ids);
    assert_eq!(outputs(false), ids);
    match seen.last().unwrap() {
        Event::BatchCompleted {
            batch_time_ms,
            records,
            scheduling_delay_ms,
            processing_ms,
        } => {
            assert_eq!((*batch_time_ms, *records), (t, 42));
            assert_eq!(*scheduling_delay_ms, timings.scheduling_delay_ms);
            assert_eq!(*processing_ms, timings.processing_ms);
        }
        other => panic!("{other:?}"),
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_one_batch_in_flight_batches_complete_in_submit_order() {
    let mut h = start("sched_in_order", 2, 1, 4).await;
    let t = base_time();
    let (open, gate) = watch::channel(false);
    let slow = h.submit(t, vec![gated_job(&h, "slow", &gate, u32::MAX)], 1);
    assert_eq!(h.note().await.0, "slow");
    // The later batch's job is instant, and an executor is idle: it still must wait.
    let fast = h.submit(t + 1000, vec![job(&h, "fast", |_| Ok(()))], 1);
    let status = h.status().await; // handled after the submit: the fast job would be out by now
    assert_eq!(status.running_batches, [t]);
    assert_eq!(status.waiting_batches, [t + 1000]);
    assert_eq!(status.running_jobs, 1);
    assert!(
        h.queued_notes().is_empty(),
        "the second batch started early"
    );

    open.send(true).unwrap();
    assert!(outcome(slow).await.result.is_ok());
    assert!(outcome(fast).await.result.is_ok());
    let mut order = Vec::new();
    while order.len() < 4 {
        match wait_for(&mut h.events, |e| {
            matches!(e, Event::BatchStarted { .. } | Event::BatchCompleted { .. })
        })
        .await
        {
            Event::BatchStarted { batch_time_ms, .. } => order.push(("started", batch_time_ms)),
            Event::BatchCompleted { batch_time_ms, .. } => {
                order.push(("completed", batch_time_ms));
            }
            _ => unreachable!(),
        }
    }
    assert_eq!(
        order,
        [
            ("started", t),
            ("completed", t),
            ("started", t + 1000),
            ("completed", t + 1000)
        ]
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn with_two_batches_in_flight_two_batches_overlap() {
    let mut h = start("sched_overlap", 2, 2, 4).await;
    let t = base_time();
    let (open, gate) = watch::channel(false);
    let first = h.submit(t, vec![gated_job(&h, "a", &gate, u32::MAX)], 1);
    let second = h.submit(t + 1000, vec![gated_job(&h, "b", &gate, u32::MAX)], 1);
    let third = h.submit(t + 2000, vec![job(&h, "c", |_| Ok(()))], 1);
    // Both gated jobs run at the same time: with one batch in flight this would never happen.
    let mut started = vec![h.note().await.0, h.note().await.0];
    started.sort();
    assert_eq!(started, ["a", "b"]);
    let status = h.status().await;
    assert_eq!(status.running_batches, [t, t + 1000]);
    assert_eq!(status.waiting_batches, [t + 2000]);

    open.send(true).unwrap();
    for (rx, time) in [(first, t), (second, t + 1000), (third, t + 2000)] {
        let result = outcome(rx).await;
        assert_eq!(result.batch_time_ms, time);
        assert!(result.result.is_ok(), "{result:?}");
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_without_jobs_completes_at_once() {
    let mut h = start("sched_empty", 1, 1, 4).await;
    let t = base_time();
    assert!(outcome(h.submit(t, Vec::new(), 0)).await.result.is_ok());
    wait_for(
        &mut h.events,
        |e| matches!(e, Event::BatchCompleted { batch_time_ms, .. } if *batch_time_ms == t),
    )
    .await;
    h.shutdown().await;
}

// ======================================= retries ======================================= //

#[tokio::test(start_paused = true)]
async fn a_job_that_fails_once_is_retried_on_another_executor() {
    let mut h = start("sched_retry", 3, 1, 4).await;
    let t = base_time();
    let flaky = job(&h, "flaky", |ctx| {
        if ctx.attempt == 1 {
            Err("the disk hiccuped".into())
        } else {
            Ok(())
        }
    });
    assert!(outcome(h.submit(t, vec![flaky], 1)).await.result.is_ok());

    let runs: Vec<JobContext> = h.queued_notes().into_iter().map(|(_, ctx)| ctx).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!((runs[0].attempt, runs[1].attempt), (1, 2));
    assert!(runs.iter().all(|ctx| ctx.batch_time_ms == t));
    assert_ne!(runs[0].executor, runs[1].executor);
    let names = h.executor_names();
    assert!(
        runs.iter().all(|ctx| names.contains(&ctx.executor)),
        "{runs:?}"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_job_that_always_fails_fails_its_batch_after_max_attempts() {
    let mut h = start("sched_give_up", 1, 1, 3).await;
    let t = base_time();
    let bad = job(&h, "bad", |_| Err("disk full".into()));
    let good = job(&h, "good", |_| Ok(()));
    let result = outcome(h.submit(t, vec![bad, good], 2)).await;

    let reason = result.result.unwrap_err();
    assert!(
        reason.contains("`bad`") && reason.contains("3 times") && reason.contains("disk full"),
        "{reason}"
    );
    // The failing job was tried three times, and the batch's other job never started: the
    // retries went first, in job order, on the only executor.
    let runs = h.queued_notes();
    let attempts: Vec<(&str, u32)> = runs
        .iter()
        .map(|(id, ctx)| (id.as_str(), ctx.attempt))
        .collect();
    assert_eq!(attempts, [("bad", 1), ("bad", 2), ("bad", 3)]);

    // The scheduler carries on with the next batch.
    let next = job(&h, "next", |_| Ok(()));
    assert!(
        outcome(h.submit(t + 1000, vec![next], 1))
            .await
            .result
            .is_ok()
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_job_fails_its_attempt_and_is_retried_without_killing_the_executor() {
    let mut h = start("sched_panic", 2, 1, 4).await;
    let t = base_time();
    let ids_before: Vec<_> = h
        .executor_names()
        .iter()
        .map(|n| h.executor_id(n))
        .collect();
    let panicky = job(&h, "panicky", |ctx| {
        assert!(ctx.attempt > 1, "the job panicked on purpose");
        Ok(())
    });
    assert!(outcome(h.submit(t, vec![panicky], 1)).await.result.is_ok());

    let runs: Vec<JobContext> = h.queued_notes().into_iter().map(|(_, ctx)| ctx).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_ne!(runs[0].executor, runs[1].executor);
    // The executor that ran the panicking attempt is the same actor: it was not restarted.
    let ids_after: Vec<_> = h
        .executor_names()
        .iter()
        .map(|n| h.executor_id(n))
        .collect();
    assert_eq!(ids_before, ids_after);
    // And nothing failed on the way to the batch's completion.
    let event = wait_for(&mut h.events, |e| {
        matches!(e, Event::ActorFailed { .. } | Event::BatchCompleted { .. })
    })
    .await;
    assert!(matches!(event, Event::BatchCompleted { .. }), "{event:?}");
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_executor_loses_its_job_to_another_and_is_restarted() {
    let mut h = start("sched_kill", 2, 1, 4).await;
    let t = base_time();
    let (_open, gate) = watch::channel(false); // never opened: only the first attempt blocks
    let rx = h.submit(t, vec![gated_job(&h, "stuck", &gate, 1)], 1);

    let (_, first) = h.note().await;
    assert_eq!(first.attempt, 1);
    let victim = first.executor.clone();
    let old_id = h.executor_id(&victim);
    ractor::registry::where_is(victim.clone()).unwrap().kill();

    assert!(outcome(rx).await.result.is_ok());
    let (_, second) = h.note().await;
    assert_eq!(second.attempt, 2);
    assert_ne!(
        second.executor, victim,
        "the retry ran on the killed executor"
    );

    // The killed executor is restarted under its name, as a new actor.
    let reason = match wait_for(
        &mut h.events,
        |e| matches!(e, Event::ActorFailed { actor, .. } if *actor == victim),
    )
    .await
    {
        Event::ActorFailed { reason, .. } => reason,
        _ => unreachable!(),
    };
    assert_eq!(reason, "killed");
    wait_for(
        &mut h.events,
        |e| matches!(e, Event::ActorStarted { actor } if *actor == victim),
    )
    .await;
    assert_ne!(h.executor_id(&victim), old_id);
    let status = h.status().await;
    assert_eq!((status.executors, status.live_executors), (2, 2));

    // Both executors take work again: two gated jobs run side by side.
    let (open, gate) = watch::channel(false);
    let jobs = vec![gated_job(&h, "x", &gate, 1), gated_job(&h, "y", &gate, 1)];
    let rx = h.submit(t + 1000, jobs, 2);
    let mut used = vec![h.note().await.1.executor, h.note().await.1.executor];
    used.sort();
    assert_eq!(used, h.executor_names());
    open.send(true).unwrap();
    assert!(outcome(rx).await.result.is_ok());
    h.shutdown().await;
}
