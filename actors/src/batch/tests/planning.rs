//! The job generator plans batches off its handler (issue 14, item 1): while a plan hangs it
//! still answers checkpoint requests, status queries and a drain; a failed plan is retried
//! with a growing backoff and every batch is then generated once, in time order; a plan that
//! does not answer is abandoned at the timeout.
//!
//! Each test runs a real job generator and a real received-block tracker on a current-thread
//! runtime with paused time, over in-memory storage. The pipeline is scripted: each call of
//! [`Pipeline::prepare`] takes the next answer of the script — succeed, fail, or hang until the
//! test releases it — and records when it was called. The scheduler is a stand-in that
//! completes every batch at once. Nothing sleeps on the wall clock: the tests wait for
//! recorded calls, events and the generator's answers, and virtual time runs the timers.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::Names;
use crate::batch::job_generator::{
    GeneratorStatus, JobGenerator, JobGeneratorArgs, JobGeneratorMsg,
};
use crate::batch::job_scheduler::{BatchOutcome, BatchTimings, JobSchedulerMsg, SchedulerStatus};
use crate::checkpoint::{
    CheckpointConfig, CheckpointData, CheckpointId, CheckpointStore, OperatorState,
};
use crate::clock::now_ms;
use crate::config::{CheckpointPolicy, PlanningPolicy};
use crate::ingest::block_store::BlockStore;
use crate::ingest::in_flight::InFlight;
use crate::ingest::received_block_tracker::{
    ReceivedBlockTracker, ReceivedBlockTrackerArgs, ReceivedBlockTrackerMsg,
};
use crate::pipeline::{BatchInput, BoxFuture, Job, Pipeline, PlanningError, UserError};
use crate::wal::{Wal, WalConfig};
use crate::{Event, EventHub, EventSubscription, Storage};

/// The source name the scripted pipeline's failures give.
const SOURCE: &str = "orders";

// ================================== a scripted pipeline ================================== //

/// What one call of `prepare` does.
#[derive(Clone, Debug)]
enum Answer {
    /// Fails at once with this cause.
    Fail(&'static str),
    /// Waits until the test releases the plans; if it honours the deadline, fails with the
    /// source's name when the deadline passes first, as `GraphPipeline` does.
    Hang { honours_deadline: bool },
}

#[derive(Debug, Default)]
struct Script {
    /// Answers of the next calls, in order; once empty, every call succeeds at once.
    answers: Mutex<VecDeque<Answer>>,
    /// Every call: the batch time and when (virtual time).
    calls: Mutex<Vec<(u64, Instant)>>,
    /// Batches whose jobs were asked for, in order.
    jobs: Mutex<Vec<u64>>,
    /// Hung plans whose future was dropped before it answered (abandoned).
    abandoned: AtomicU64,
    /// `true` releases every hung plan.
    released: Mutex<Option<watch::Sender<bool>>>,
    changed: Notify,
}

impl Script {
    fn new(answers: impl IntoIterator<Item = Answer>) -> Arc<Script> {
        let (tx, _) = watch::channel(false);
        Arc::new(Script {
            answers: Mutex::new(answers.into_iter().collect()),
            released: Mutex::new(Some(tx)),
            ..Script::default()
        })
    }

    fn calls(&self) -> Vec<(u64, Instant)> {
        self.calls.lock().unwrap().clone()
    }

    fn jobs(&self) -> Vec<u64> {
        self.jobs.lock().unwrap().clone()
    }

    fn release(&self) {
        if let Some(tx) = &*self.released.lock().unwrap() {
            tx.send_replace(true);
        }
    }

    /// Waits until `done` holds for the script (checked after every call and every batch).
    async fn until(&self, what: &str, done: impl Fn(&Script) -> bool) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(self) {
                return;
            }
            tokio::time::timeout(Duration::from_secs(3600), notified)
                .await
                .unwrap_or_else(|_| panic!("never: {what}"));
        }
    }
}

/// Counts a hung plan dropped before it answered.
struct Abandoned(Arc<Script>, bool);

impl Drop for Abandoned {
    fn drop(&mut self) {
        if !self.1 {
            self.0.abandoned.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Debug)]
struct ScriptedPipeline(Arc<Script>);

impl Pipeline for ScriptedPipeline {
    fn fingerprint(&self) -> u64 {
        1
    }

    fn prepare(
        &self,
        batch_time_ms: u64,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), PlanningError>> {
        let deadline = Instant::now() + timeout;
        let script = Arc::clone(&self.0);
        script
            .calls
            .lock()
            .unwrap()
            .push((batch_time_ms, Instant::now()));
        script.changed.notify_waiters();
        let answer = script.answers.lock().unwrap().pop_front();
        match answer {
            None => Box::pin(std::future::ready(Ok(()))),
            Some(Answer::Fail(cause)) => {
                Box::pin(std::future::ready(Err(PlanningError::new(SOURCE, cause))))
            }
            Some(Answer::Hang { honours_deadline }) => {
                let mut released = script
                    .released
                    .lock()
                    .unwrap()
                    .as_ref()
                    .unwrap()
                    .subscribe();
                Box::pin(async move {
                    let mut guard = Abandoned(Arc::clone(&script), false);
                    let wait = released.wait_for(|r| *r);
                    let answer = if honours_deadline {
                        match tokio::time::timeout_at(deadline, wait).await {
                            Ok(_) => Ok(()),
                            Err(_) => Err(PlanningError::new(SOURCE, "no answer by the deadline")),
                        }
                    } else {
                        let _ = wait.await;
                        Ok(())
                    };
                    guard.1 = true;
                    answer
                })
            }
        }
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        self.0.jobs.lock().unwrap().push(input.batch_time_ms);
        self.0.changed.notify_waiters();
        Ok(Vec::new())
    }

    fn snapshot(&self, _: Option<u64>) -> Result<Vec<OperatorState>, UserError> {
        Ok(Vec::new())
    }

    fn restore(&self, _: Option<&CheckpointData>) -> Result<(), UserError> {
        Ok(())
    }
}

// =========================== a scheduler that completes at once =========================== //

struct CompletingScheduler;

impl Actor for CompletingScheduler {
    type Msg = JobSchedulerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<JobSchedulerMsg>,
        _: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<JobSchedulerMsg>,
        message: JobSchedulerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JobSchedulerMsg::Submit(batch, reply) => {
                let _ = reply.send(BatchOutcome {
                    batch_time_ms: batch.batch_time_ms,
                    result: Ok(BatchTimings {
                        scheduling_delay_ms: 0,
                        processing_ms: 0,
                    }),
                });
            }
            JobSchedulerMsg::Status(reply) => {
                let _ = reply.send(SchedulerStatus::default());
            }
            _ => {}
        }
        Ok(())
    }
}

// ======================================== the harness ======================================== //

struct Harness {
    script: Arc<Script>,
    hub: EventHub,
    events: EventSubscription,
    store: Arc<CheckpointStore>,
    generator: ActorRef<JobGeneratorMsg>,
    tracker: ActorRef<ReceivedBlockTrackerMsg>,
    scheduler: ActorRef<JobSchedulerMsg>,
}

const INTERVAL: Duration = Duration::from_secs(1);

impl Harness {
    async fn start(test: &str, script: Arc<Script>, planning: PlanningPolicy) -> Harness {
        let names = Names::new(format!("planning-{test}/"));
        let hub = EventHub::default();
        let events = hub.subscribe();
        let storage = Storage::memory();
        let store = Arc::new(
            CheckpointStore::open(
                storage.join("checkpoints"),
                CheckpointConfig::default().with_events(hub.sink()),
            )
            .await
            .unwrap(),
        );
        let (tracker, _) = Actor::spawn(
            Some(names.received_block_tracker()),
            ReceivedBlockTracker,
            ReceivedBlockTrackerArgs {
                wal_storage: storage.join("tracker-wal"),
                wal_config: WalConfig::default(),
                events: hub.sink(),
            },
        )
        .await
        .unwrap();
        let (scheduler, _) = Actor::spawn(Some(names.job_scheduler()), CompletingScheduler, ())
            .await
            .unwrap();
        let (receiver_wal, _) = Wal::open(storage.join("receiver-wal"), WalConfig::default())
            .await
            .unwrap();
        let interval_ms = INTERVAL.as_millis() as u64;
        let (generator, _) = Actor::spawn(
            Some(names.job_generator()),
            JobGenerator,
            JobGeneratorArgs {
                names: names.clone(),
                pipeline: Arc::new(ScriptedPipeline(Arc::clone(&script))),
                checkpoints: Arc::clone(&store),
                restored: None,
                batch_interval: INTERVAL,
                zero_time_ms: now_ms() / interval_ms * interval_ms,
                max_pending_batches: 4,
                receiver_batch_max_bytes: u64::MAX,
                checkpoint_policy: CheckpointPolicy {
                    timeout: Duration::from_secs(24 * 3600),
                    ..CheckpointPolicy::default()
                },
                planning,
                checkpoints_retained: 10,
                settings: BTreeMap::new(),
                block_store: BlockStore::new(1 << 20),
                in_flight: InFlight::default(),
                receiver_wal,
                events: hub.sink(),
            },
        )
        .await
        .unwrap();
        Harness {
            script,
            hub,
            events,
            store,
            generator,
            tracker,
            scheduler,
        }
    }

    async fn status(&self) -> GeneratorStatus {
        ractor::call!(self.generator, JobGeneratorMsg::Status).unwrap()
    }

    /// The next `PlanningFailed` event: (batch, source, cause, attempt, retry), and when it
    /// came (virtual time).
    async fn planning_failed(&mut self) -> ((u64, String, String, u32, Option<u64>), Instant) {
        let record = self
            .events
            .next_matching(Duration::from_secs(3600), |e| {
                matches!(e, Event::PlanningFailed { .. })
            })
            .await
            .expect("a planning attempt failed");
        let Event::PlanningFailed {
            batch_time_ms,
            source,
            cause,
            attempt,
            retry_in_ms,
        } = record.event
        else {
            unreachable!("only planning failures match");
        };
        (
            (batch_time_ms, source, cause, attempt, retry_in_ms),
            Instant::now(),
        )
    }

    async fn shutdown(self) {
        self.script.release();
        self.generator.kill_and_wait(None).await.unwrap();
        self.scheduler.kill_and_wait(None).await.unwrap();
        self.tracker.kill_and_wait(None).await.unwrap();
    }
}

fn policy(timeout: Duration) -> PlanningPolicy {
    PlanningPolicy {
        timeout,
        ..PlanningPolicy::default()
    }
}

// ========================================== tests ========================================== //

/// While the first batch's plan hangs, the generator answers a checkpoint request (and writes
/// a checkpoint listing the batch as pending), answers status queries, keeps queueing ticks,
/// ignores a stale answer, and a drain completes at the attempt's timeout without a retry:
/// nothing is generated, and the latest checkpoint lets the next start run every batch that
/// was not.
#[tokio::test(start_paused = true)]
async fn a_hung_plan_leaves_checkpoints_status_and_stop_answering() {
    let timeout = Duration::from_secs(30);
    let script = Script::new([Answer::Hang {
        honours_deadline: true,
    }]);
    let mut h = Harness::start("hung", Arc::clone(&script), policy(timeout)).await;
    script
        .until("the first plan", |s| !s.calls().is_empty())
        .await;
    let (t0, asked_at) = script.calls()[0];

    let status = h.status().await;
    assert_eq!(status.planning, Some(t0));
    assert_eq!(status.queued, vec![t0]);
    assert!(status.pending.is_empty(), "{status:?}");

    // An operator's checkpoint: answered, and written with the batch being planned pending.
    let asked = ractor::call!(h.generator, JobGeneratorMsg::CheckpointNow).unwrap();
    assert_eq!(asked, Ok(t0));
    let settled = ractor::call!(
        h.generator,
        JobGeneratorMsg::StatusAfterCheckpoint,
        CheckpointId(1)
    )
    .unwrap();
    assert_eq!(settled.latest_checkpoint, Some(CheckpointId(1)));
    let written = h.store.read(CheckpointId(1)).await.unwrap();
    assert_eq!(written.pending_batches, vec![t0]);

    // Ticks keep coming and queue behind the batch being planned. (The timer aims at wall-clock
    // boundaries, which paused time does not move: the n-th tick comes n virtual seconds after
    // the one before.)
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let status = h.status().await;
    assert_eq!(status.planning, Some(t0));
    assert_eq!(status.queued.first(), Some(&t0));
    assert!(status.queued.len() >= 2, "{status:?}");
    assert!(
        status.queued.windows(2).all(|w| w[1] == w[0] + 1_000),
        "{status:?}"
    );

    // An answer of another attempt is stale: ignored.
    h.generator
        .cast(JobGeneratorMsg::Planned {
            time_ms: t0,
            seq: 999,
            result: Ok(()),
        })
        .unwrap();
    assert_eq!(h.status().await.planning, Some(t0));
    assert!(script.jobs().is_empty());

    // A graceful stop: the attempt in flight ends at its timeout, is not retried, and the
    // drain completes.
    let drained = ractor::call_t!(h.generator, JobGeneratorMsg::Drain, 3_600_000);
    assert!(drained.is_ok(), "{drained:?}");
    assert!(
        Instant::now() <= asked_at + timeout + Duration::from_millis(5),
        "the drain took {:?}",
        Instant::now() - asked_at
    );
    let ((batch, source, cause, attempt, retry), _) = h.planning_failed().await;
    assert_eq!(batch, t0);
    assert_eq!(source, SOURCE);
    assert_eq!(cause, "no answer by the deadline");
    assert_eq!(attempt, 1);
    assert_eq!(retry, None, "no retry while stopping");
    assert!(script.jobs().is_empty(), "nothing was generated");
    assert_eq!(script.calls().len(), 1, "planning was not tried again");
    // The next start runs every batch not generated: the latest checkpoint lists each as
    // pending, or is older than it (a restore queues it again, as missed while down).
    let status = h.status().await;
    assert_eq!(status.queued.first(), Some(&t0));
    assert!(
        status.queued.len() >= 3,
        "the drain's last batch is queued: {status:?}"
    );
    let latest = h.store.list().await.unwrap().last().unwrap().id;
    assert_eq!(Some(latest), status.latest_checkpoint);
    let last = h.store.read(latest).await.unwrap();
    assert!(last.pending_batches.contains(&t0), "{last:?}");
    assert!(
        status
            .queued
            .iter()
            .all(|t| last.pending_batches.contains(t) || *t > last.checkpoint_time_ms),
        "{last:?} leaves out a batch of {status:?}"
    );
    h.shutdown().await;
}

/// A source that fails three times, then answers: three `PlanningFailed` events for the same
/// batch with the backoff doubling from 100 ms, each retry after exactly that wait; then that
/// batch and the ones queued behind it are generated once each, in time order, none skipped.
#[tokio::test(start_paused = true)]
async fn a_failing_plan_is_retried_with_a_growing_backoff_then_every_batch_runs_once_in_order() {
    let script = Script::new([
        Answer::Fail("connection refused"),
        Answer::Fail("connection refused"),
        Answer::Fail("connection refused"),
    ]);
    let mut h = Harness::start(
        "retried",
        Arc::clone(&script),
        policy(Duration::from_secs(10)),
    )
    .await;
    let mut failures = Vec::new();
    for _ in 0..3 {
        failures.push(h.planning_failed().await.0);
    }
    let t0 = failures[0].0;
    assert_eq!(
        failures,
        [(1, Some(100)), (2, Some(200)), (3, Some(400))]
            .map(|(attempt, retry)| (
                t0,
                SOURCE.to_owned(),
                "connection refused".to_owned(),
                attempt,
                retry
            ))
            .to_vec()
    );
    script.until("six batches", |s| s.jobs().len() >= 6).await;
    let calls = script.calls();
    assert!(calls[..4].iter().all(|(t, _)| *t == t0), "{calls:?}");
    for (i, wait) in [100u64, 200, 400].into_iter().enumerate() {
        let gap = calls[i + 1].1 - calls[i].1;
        assert!(
            gap >= Duration::from_millis(wait) && gap < Duration::from_millis(wait + 5),
            "retry {} came after {gap:?}, not {wait} ms",
            i + 1
        );
    }
    let jobs = script.jobs();
    assert_eq!(jobs[0], t0, "the failing batch was not skipped");
    assert!(
        jobs.windows(2).all(|w| w[1] == w[0] + 1_000),
        "each batch once, in time order: {jobs:?}"
    );
    let metrics = h.hub.metrics().encode();
    assert!(
        metrics.contains("weir_planning_failures_total{source=\"orders\"} 3"),
        "{metrics}"
    );
    assert_eq!(h.status().await.planning_failures, 0);
    h.shutdown().await;
}

/// A plan that never answers (a pipeline that does not honour its deadline) is abandoned a
/// grace second after the timeout: its future is dropped, the failure names the pipeline and
/// the timeout, and the retry plans the batch.
#[tokio::test(start_paused = true)]
async fn a_plan_that_never_answers_is_abandoned_at_the_timeout_and_retried() {
    let timeout = Duration::from_secs(2);
    let script = Script::new([Answer::Hang {
        honours_deadline: false,
    }]);
    let mut h = Harness::start("timeout", Arc::clone(&script), policy(timeout)).await;
    script
        .until("the first plan", |s| !s.calls().is_empty())
        .await;
    let (t0, asked_at) = script.calls()[0];
    let ((batch, source, cause, attempt, retry), failed_at) = h.planning_failed().await;
    assert_eq!(
        (batch, source.as_str(), attempt, retry),
        (t0, "the pipeline", 1, Some(100))
    );
    assert_eq!(cause, "planning did not answer within 2000 ms");
    let waited = failed_at - asked_at;
    assert!(
        waited >= Duration::from_secs(3) && waited < Duration::from_millis(3_005),
        "abandoned after {waited:?}"
    );
    assert_eq!(
        script.abandoned.load(Ordering::SeqCst),
        1,
        "the future was dropped"
    );
    script.until("the batch", |s| !s.jobs().is_empty()).await;
    assert_eq!(script.jobs()[0], t0);
    assert_eq!(script.calls()[1].0, t0);
    h.shutdown().await;
}
