//! The job generator executes its checkpoint coordinator's actions: end to end, with real
//! writes whose order the test decides. The rules themselves (when a checkpoint starts, waits,
//! is skipped, fails; what its end cleans and releases) are unit-tested in
//! `checkpoint_coordinator.rs`; these tests check what only a running generator shows: a
//! waiting checkpoint's snapshot is taken when it starts, ids follow snapshots in the store,
//! cleanup reaches the tracker with the snapshot's threshold, an abandoned write's future is
//! dropped, the pause timer fires, a drain retries its final checkpoint, released batches reach
//! the scheduler in order, a kill aborts the writes, and the engine refuses a bad policy.
//!
//! Each test runs a real job generator and a real received-block tracker on a current-thread
//! runtime with paused time, over opendal's memory service wrapped in a [`StallLayer`]: every
//! write of a checkpoint file stops before it completes until the test releases it, so the test
//! decides which write finishes when. The job scheduler is a stand-in that holds each batch
//! until the test completes it. Nothing sleeps: the tests wait for stalled writes, for events,
//! and for the generator's `StatusAfterCheckpoint` answers.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Names;
use crate::batch::job_generator::{
    GeneratorStatus, JobGenerator, JobGeneratorArgs, JobGeneratorMsg,
};
use crate::batch::job_scheduler::{BatchOutcome, BatchTimings, JobSchedulerMsg, SchedulerStatus};
use crate::checkpoint::{CheckpointConfig, CheckpointId, CheckpointStore};
use crate::clock::now_ms;
use crate::config::{CheckpointPolicy, CheckpointPolicyError};
use crate::ingest::block_store::BlockStore;
use crate::ingest::in_flight::InFlight;
use crate::ingest::received_block_tracker::{
    ReceivedBlockTracker, ReceivedBlockTrackerArgs, ReceivedBlockTrackerMsg,
};
use crate::testing::CommitLogPipeline;
use crate::wal::{Wal, WalConfig};
use crate::{Engine, EngineConfig, EngineError};
use crate::{Event, Storage};
use crate::{EventHub, EventSubscription};
use opendal::raw::{
    Layer, OpCopy, OpCreateDir, OpList, OpPresign, OpRead, OpRename, OpStat, OpWrite, RpCreateDir,
    RpPresign, RpRename, RpStat, Service, ServiceInfo, Servicer, oio,
};
use opendal::{Buffer, Capability, Metadata, OperationContext, Operator};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::sync::{Notify, mpsc, oneshot};

// ================================ a storage that stalls writes ================================ //

/// Which checkpoint writes are stopped, and the means to let each one go.
#[derive(Debug, Default)]
struct Gate {
    inner: Mutex<GateInner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct GateInner {
    /// Stalled writes by checkpoint id, each waiting for its sender: `true` to complete,
    /// `false` to fail.
    stalled: BTreeMap<u64, oneshot::Sender<bool>>,
    /// Every checkpoint id whose write reached the storage, in order.
    reached: Vec<u64>,
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateInner> {
        self.inner.lock().unwrap()
    }

    /// The ids of the writes stalled now.
    fn stalled(&self) -> Vec<u64> {
        self.lock().stalled.keys().copied().collect()
    }

    /// Every checkpoint id whose write reached the storage, in order.
    fn reached(&self) -> Vec<u64> {
        self.lock().reached.clone()
    }

    /// Lets the stalled write of checkpoint `id` complete; `false` if that write is no longer
    /// waiting (its future was dropped: the write was abandoned).
    fn release(&self, id: u64) -> bool {
        let sender = self.lock().stalled.remove(&id);
        sender.expect("the write is stalled").send(true).is_ok()
    }

    /// Makes the stalled write of checkpoint `id` fail.
    fn fail(&self, id: u64) {
        let sender = self.lock().stalled.remove(&id);
        assert!(sender.expect("the write is stalled").send(false).is_ok());
    }

    /// Waits until the write of checkpoint `id` is stalled.
    async fn stalled_write(&self, id: u64) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().stalled.contains_key(&id) {
                return;
            }
            tokio::time::timeout(Duration::from_secs(3600), notified)
                .await
                .unwrap_or_else(|_| panic!("checkpoint {id} was never written"));
        }
    }

    /// Stops a write of `path` if it is a checkpoint file: returns what to wait for.
    fn stop(&self, path: &str) -> Option<oneshot::Receiver<bool>> {
        let name = path.rsplit('/').next()?;
        let id: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.reached.push(id);
            inner.stalled.insert(id, tx);
        }
        self.changed.notify_waiters();
        Some(rx)
    }
}

/// An opendal layer whose writes of checkpoint files wait at `close()` for the [`Gate`].
#[derive(Debug, Clone)]
struct StallLayer(Arc<Gate>);

impl Layer for StallLayer {
    fn apply_service(&self, inner: Servicer) -> Servicer {
        Arc::new(StallService {
            inner,
            gate: Arc::clone(&self.0),
        })
    }
}

#[derive(Debug)]
struct StallService {
    inner: Servicer,
    gate: Arc<Gate>,
}

struct StallWriter {
    inner: oio::Writer,
    gate: Arc<Gate>,
    path: String,
}

impl oio::Write for StallWriter {
    async fn write(&mut self, bs: Buffer) -> opendal::Result<()> {
        self.inner.write(bs).await
    }

    async fn close(&mut self) -> opendal::Result<Metadata> {
        if let Some(release) = self.gate.stop(&self.path) {
            // A dropped sender (the gate dropped) lets the write go as well.
            if release.await == Ok(false) {
                let _ = self.inner.abort().await;
                return Err(opendal::Error::new(
                    opendal::ErrorKind::Unexpected,
                    "write failed by the test",
                ));
            }
        }
        self.inner.close().await
    }

    async fn abort(&mut self) -> opendal::Result<()> {
        self.inner.abort().await
    }
}

impl Service for StallService {
    type Reader = oio::Reader;
    type Writer = StallWriter;
    type Lister = oio::Lister;
    type Deleter = oio::Deleter;
    type Copier = oio::Copier;
    type Composer = oio::Composer;

    fn info(&self) -> ServiceInfo {
        self.inner.info()
    }

    fn capability(&self) -> Capability {
        self.inner.capability()
    }

    async fn create_dir(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpCreateDir,
    ) -> opendal::Result<RpCreateDir> {
        self.inner.create_dir(ctx, path, args).await
    }

    async fn stat(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpStat,
    ) -> opendal::Result<RpStat> {
        self.inner.stat(ctx, path, args).await
    }

    fn read(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpRead,
    ) -> opendal::Result<Self::Reader> {
        self.inner.read(ctx, path, args)
    }

    fn write(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpWrite,
    ) -> opendal::Result<Self::Writer> {
        Ok(StallWriter {
            inner: self.inner.write(ctx, path, args)?,
            gate: Arc::clone(&self.gate),
            path: path.to_owned(),
        })
    }

    fn delete(&self, ctx: &OperationContext) -> opendal::Result<Self::Deleter> {
        self.inner.delete(ctx)
    }

    fn list(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpList,
    ) -> opendal::Result<Self::Lister> {
        self.inner.list(ctx, path, args)
    }

    fn copy(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpCopy,
    ) -> opendal::Result<Self::Copier> {
        self.inner.copy(ctx, from, to, args)
    }

    async fn rename(
        &self,
        ctx: &OperationContext,
        from: &str,
        to: &str,
        args: OpRename,
    ) -> opendal::Result<RpRename> {
        self.inner.rename(ctx, from, to, args).await
    }

    async fn presign(
        &self,
        ctx: &OperationContext,
        path: &str,
        args: OpPresign,
    ) -> opendal::Result<RpPresign> {
        self.inner.presign(ctx, path, args).await
    }
}

// ================================ a scheduler held by the test ================================ //

/// Batches submitted to the stand-in scheduler, waiting for the test to complete them.
#[derive(Debug, Default)]
struct Submitted {
    replies: Mutex<BTreeMap<u64, RpcReplyPort<BatchOutcome>>>,
    /// Every batch time submitted, in the order the submissions arrived.
    order: Mutex<Vec<u64>>,
    changed: Notify,
}

struct HeldScheduler;

impl Actor for HeldScheduler {
    type Msg = JobSchedulerMsg;
    type State = Arc<Submitted>;
    type Arguments = Arc<Submitted>;

    async fn pre_start(
        &self,
        _: ActorRef<JobSchedulerMsg>,
        submitted: Arc<Submitted>,
    ) -> Result<Arc<Submitted>, ActorProcessingErr> {
        Ok(submitted)
    }

    async fn handle(
        &self,
        _: ActorRef<JobSchedulerMsg>,
        message: JobSchedulerMsg,
        submitted: &mut Arc<Submitted>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            JobSchedulerMsg::Submit(batch, reply) => {
                submitted.order.lock().unwrap().push(batch.batch_time_ms);
                submitted
                    .replies
                    .lock()
                    .unwrap()
                    .insert(batch.batch_time_ms, reply);
                submitted.changed.notify_waiters();
            }
            JobSchedulerMsg::Status(reply) => {
                let _ = reply.send(SchedulerStatus::default());
            }
            _ => {}
        }
        Ok(())
    }
}

// ============================ a supervisor that only reports ============================ //

/// Reports how its children end: `Err(reason)` for a failure, `Ok(())` for any other end.
struct Watcher;

impl Actor for Watcher {
    type Msg = ();
    type State = mpsc::UnboundedSender<Result<(), String>>;
    type Arguments = mpsc::UnboundedSender<Result<(), String>>;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        ends: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ends)
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        ends: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let end = match event {
            SupervisionEvent::ActorFailed(_, reason) => Err(reason.to_string()),
            SupervisionEvent::ActorTerminated(..) => Ok(()),
            _ => return Ok(()),
        };
        let _ = ends.send(end);
        Ok(())
    }
}

// ======================================== the harness ======================================== //

struct Harness {
    gate: Arc<Gate>,
    store: Arc<CheckpointStore>,
    generator: ActorRef<JobGeneratorMsg>,
    tracker: ActorRef<ReceivedBlockTrackerMsg>,
    scheduler: ActorRef<JobSchedulerMsg>,
    submitted: Arc<Submitted>,
    events: EventSubscription,
    watcher: ActorCell,
    /// How the generator ended.
    ended: mpsc::UnboundedReceiver<Result<(), String>>,
}

struct Setup {
    policy: CheckpointPolicy,
    max_pending_batches: usize,
    retain: usize,
}

impl Setup {
    fn concurrent(max_concurrent: usize) -> Setup {
        Setup {
            policy: CheckpointPolicy {
                max_concurrent,
                // Far beyond what a test lets virtual time run, unless a test sets it.
                timeout: Duration::from_secs(24 * 3600),
                ..CheckpointPolicy::default()
            },
            max_pending_batches: 4,
            retain: 10,
        }
    }
}

const INTERVAL: Duration = Duration::from_secs(1);

impl Harness {
    async fn start(test: &str, setup: Setup) -> Harness {
        let names = Names::new(format!("ckpt-concurrency-{test}/"));
        let gate = Arc::new(Gate::default());
        let hub = EventHub::default();
        let events = hub.subscribe();
        let op = Operator::new(opendal::services::Memory::default())
            .unwrap()
            .layer(StallLayer(Arc::clone(&gate)));
        let storage = Storage::object(op);
        let store = Arc::new(
            CheckpointStore::open(
                storage.join("checkpoints"),
                CheckpointConfig::default()
                    .with_retain(setup.retain)
                    .with_events(hub.sink()),
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
        let submitted = Arc::new(Submitted::default());
        let (scheduler, _) = Actor::spawn(
            Some(names.job_scheduler()),
            HeldScheduler,
            Arc::clone(&submitted),
        )
        .await
        .unwrap();
        let (receiver_wal, _) = Wal::open(storage.join("receiver-wal"), WalConfig::default())
            .await
            .unwrap();
        let interval_ms = INTERVAL.as_millis() as u64;
        let (ends, ended) = mpsc::unbounded_channel();
        let (watcher, _) = Actor::spawn(None, Watcher, ends).await.unwrap();
        let (generator, _) = Actor::spawn_linked(
            Some(names.job_generator()),
            JobGenerator,
            JobGeneratorArgs {
                names: names.clone(),
                pipeline: Arc::new(CommitLogPipeline::new(Arc::default(), Duration::ZERO)),
                checkpoints: Arc::clone(&store),
                restored: None,
                batch_interval: INTERVAL,
                zero_time_ms: now_ms() / interval_ms * interval_ms,
                max_pending_batches: setup.max_pending_batches,
                receiver_batch_max_bytes: u64::MAX,
                checkpoint_policy: setup.policy,
                planning: crate::config::PlanningPolicy::default(),
                checkpoints_retained: 1,
                settings: BTreeMap::new(),
                block_store: BlockStore::new(1 << 20),
                in_flight: InFlight::default(),
                receiver_wal,
                events: hub.sink(),
            },
            watcher.get_cell(),
        )
        .await
        .unwrap();
        Harness {
            gate,
            store,
            generator,
            tracker,
            scheduler,
            submitted,
            events,
            watcher: watcher.get_cell(),
            ended,
        }
    }

    /// Waits until the generator ends; `Err(reason)` if it failed.
    async fn generator_ended(&mut self) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(3600), self.ended.recv())
            .await
            .expect("the generator ended")
            .expect("the watcher is running")
    }

    async fn status(&self) -> GeneratorStatus {
        ractor::call!(self.generator, JobGeneratorMsg::Status).unwrap()
    }

    /// The status once checkpoint `id` was written or failed and the generator acted on it.
    async fn status_after(&self, id: u64) -> GeneratorStatus {
        ractor::call!(
            self.generator,
            JobGeneratorMsg::StatusAfterCheckpoint,
            CheckpointId(id)
        )
        .unwrap()
    }

    /// Waits until `n` batches were submitted; returns their times.
    async fn submitted(&self, n: usize) -> Vec<u64> {
        loop {
            let notified = self.submitted.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let replies = self.submitted.replies.lock().unwrap();
                if replies.len() >= n {
                    return replies.keys().copied().collect();
                }
            }
            tokio::time::timeout(Duration::from_secs(3600), notified)
                .await
                .expect("batches were submitted");
        }
    }

    /// Completes the batch at `t` successfully.
    fn complete(&self, t: u64) {
        let reply = self
            .submitted
            .replies
            .lock()
            .unwrap()
            .remove(&t)
            .expect("the batch was submitted");
        reply
            .send(BatchOutcome {
                batch_time_ms: t,
                result: Ok(BatchTimings {
                    scheduling_delay_ms: 0,
                    processing_ms: 0,
                }),
            })
            .unwrap();
    }

    /// Waits for the `n`-th `BatchGenerated` event since the start; returns every batch time
    /// generated so far.
    async fn generated(&mut self, seen: &mut Vec<u64>, n: usize) -> Vec<u64> {
        while seen.len() < n {
            let record = tokio::time::timeout(Duration::from_secs(3600), self.events.next())
                .await
                .expect("batches kept being generated")
                .expect("the event feed is open");
            if let Event::BatchGenerated { batch_time_ms, .. } = record.event {
                seen.push(batch_time_ms);
            }
        }
        seen.clone()
    }

    /// Waits for the next `CheckpointFailed` event; returns its reason.
    async fn checkpoint_failed(&mut self) -> String {
        loop {
            let record = tokio::time::timeout(Duration::from_secs(3600), self.events.next())
                .await
                .expect("a checkpoint failed")
                .expect("the event feed is open");
            if let Event::CheckpointFailed { reason, .. } = record.event {
                return reason;
            }
        }
    }

    async fn allocated(&self, t: u64) -> bool {
        ractor::call!(self.tracker, ReceivedBlockTrackerMsg::GetAllocation, t)
            .unwrap()
            .is_some()
    }

    async fn checkpoints(&self) -> Vec<u64> {
        self.store
            .list()
            .await
            .unwrap()
            .iter()
            .map(|info| info.id.0)
            .collect()
    }

    async fn shutdown(self) {
        self.generator.kill_and_wait(None).await.unwrap();
        self.scheduler.kill_and_wait(None).await.unwrap();
        self.tracker.kill_and_wait(None).await.unwrap();
        self.watcher.kill_and_wait(None).await.unwrap();
    }
}

fn ids(ids: &[u64]) -> Vec<CheckpointId> {
    ids.iter().copied().map(CheckpointId).collect()
}

// ========================================== tests ========================================== //

/// A checkpoint that waited for a free slot takes its snapshot when it starts, not when it was
/// asked for, so it covers every request that waited. (When it starts is the coordinator's
/// rule, unit-tested; what it then writes is the generator's doing.)
#[tokio::test(start_paused = true)]
async fn a_checkpoint_that_waited_snapshots_the_state_when_it_starts() {
    let mut h = Harness::start("waited-snapshot", Setup::concurrent(2)).await;
    let mut seen = Vec::new();
    // The "before" checkpoints of the first two batches both reach the storage and stall.
    h.gate.stalled_write(1).await;
    h.gate.stalled_write(2).await;
    // The generator keeps ticking while they are stalled: all four batches it may have
    // pending are generated, their checkpoints wait as one, and none of them runs.
    let generated = h.generated(&mut seen, 4).await;
    let status = h.status().await;
    assert_eq!(status.pending, generated);
    assert_eq!(status.checkpoints_in_flight, ids(&[1, 2]));
    assert!(status.checkpoint_waiting, "{status:?}");
    assert_eq!(status.held, generated);
    assert!(h.submitted.replies.lock().unwrap().is_empty());
    assert_eq!(h.gate.reached(), vec![1, 2], "a third write started");

    // One write ends: the waiting checkpoint starts, with a snapshot taken now that lists all
    // four batches as pending.
    assert!(h.gate.release(1));
    h.gate.stalled_write(3).await;
    assert!(h.gate.release(3));
    let status = h.status_after(3).await;
    assert_eq!(status.latest_checkpoint, Some(CheckpointId(3)));
    let third = h.store.read(CheckpointId(3)).await.unwrap();
    assert_eq!(third.pending_batches, generated);
    assert_eq!(
        h.gate.reached(),
        vec![1, 2, 3],
        "requests were not coalesced"
    );
    assert!(h.gate.release(2));
    h.status_after(2).await;
    h.shutdown().await;
}

/// Regression: batches released together — one checkpoint listing several held batches was
/// written — reach the scheduler in batch order, which is the order it runs them in. Each
/// submission used to be sent from a task of its own, and the tasks raced: on tokio's
/// multi-thread runtime the task spawned last sits in the worker's LIFO slot and runs first, so
/// a later batch ran and completed before an earlier one, and a stateful graph lost the
/// earlier batch's records (found by the runtime's kill test and the chaos full-disk runs).
/// One worker thread makes that order deterministic; time is real (1 s batches, a few seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn batches_released_together_reach_the_scheduler_in_batch_order() {
    let mut h = Harness::start("release-order", Setup::concurrent(1)).await;
    let mut seen = Vec::new();
    // The first "before" checkpoint stalls; the next batches are generated and held.
    h.gate.stalled_write(1).await;
    let generated = h.generated(&mut seen, 3).await;
    assert!(h.gate.release(1));
    // The second checkpoint lists every batch held when it started; once it is written they
    // are all released at once.
    h.gate.stalled_write(2).await;
    let status = h.status().await;
    assert!(status.held.len() >= 2, "{status:?}");
    assert!(h.gate.release(2));
    h.status_after(2).await;
    let submitted = h.submitted(generated.len()).await;
    assert_eq!(submitted[..3], generated[..3]);
    let order = h.submitted.order.lock().unwrap().clone();
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(order, sorted, "batches reached the scheduler out of order");
    assert_eq!(order[..3], generated[..3]);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_minimum_pause_holds_the_next_checkpoint_back() {
    let mut setup = Setup::concurrent(1);
    setup.policy.min_pause = Duration::from_secs(10);
    let mut h = Harness::start("min-pause", setup).await;
    let mut seen = Vec::new();
    h.gate.stalled_write(1).await;
    h.generated(&mut seen, 2).await;
    assert!(h.gate.release(1));
    let ended = tokio::time::Instant::now();
    let status = h.status_after(1).await;
    assert!(status.checkpoint_waiting, "{status:?}");
    assert!(status.checkpoints_in_flight.is_empty(), "{status:?}");
    // The waiting "before" checkpoint starts only once the pause has elapsed.
    h.gate.stalled_write(2).await;
    let paused = ended.elapsed();
    assert!(
        paused >= Duration::from_secs(10),
        "started after {paused:?}"
    );
    assert!(paused < Duration::from_secs(11), "started after {paused:?}");
    assert!(h.gate.release(2));
    h.status_after(2).await;
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_drain_retries_a_failed_final_checkpoint() {
    let mut setup = Setup::concurrent(1);
    setup.max_pending_batches = 1;
    let mut h = Harness::start("drain-retry", setup).await;
    let generator = h.generator.clone();
    let drain = tokio::spawn(async move { ractor::call!(generator, JobGeneratorMsg::Drain) });
    // The drain's last batch: its "before" checkpoint, then the batch, then its "after"
    // checkpoint, which fails.
    h.gate.stalled_write(1).await;
    assert!(h.gate.release(1));
    let last = h.submitted(1).await[0];
    h.complete(last);
    h.gate.stalled_write(2).await;
    h.gate.fail(2);
    let reason = h.checkpoint_failed().await;
    assert!(reason.contains("write failed by the test"), "{reason}");
    // The final state is not durable yet: the drain writes it again before it answers.
    h.gate.stalled_write(3).await;
    assert!(!drain.is_finished());
    assert!(h.gate.release(3));
    tokio::time::timeout(Duration::from_secs(3600), drain)
        .await
        .expect("the drain answered")
        .unwrap()
        .unwrap();
    // Nothing was in flight when the drain answered, and the latest checkpoint is the final
    // state: nothing pending.
    assert!(h.gate.stalled().is_empty(), "a write was in flight");
    let status = h.status().await;
    assert!(status.pending.is_empty() && status.checkpoints_in_flight.is_empty());
    let latest = h.store.read_latest().await.unwrap().expect("a checkpoint");
    assert_eq!(latest.id, CheckpointId(3));
    assert_eq!(status.latest_checkpoint, Some(latest.id));
    assert!(latest.data.pending_batches.is_empty(), "{:?}", latest.data);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_slow_older_write_that_lands_last_does_not_become_the_latest() {
    let setup = Setup {
        retain: 1,
        ..Setup::concurrent(2)
    };
    let mut h = Harness::start("older-lands-last", setup).await;
    let mut seen = Vec::new();
    h.gate.stalled_write(1).await;
    h.gate.stalled_write(2).await;
    let generated = h.generated(&mut seen, 2).await;

    // The newer write completes first, then the older one.
    assert!(h.gate.release(2));
    let status = h.status_after(2).await;
    assert_eq!(status.latest_checkpoint, Some(CheckpointId(2)));
    assert!(h.gate.release(1));
    let status = h.status_after(1).await;
    assert_eq!(
        status.latest_checkpoint,
        Some(CheckpointId(2)),
        "the older checkpoint became the generator's latest"
    );

    // What a restart would restore: the newer snapshot, which lists both batches.
    let latest = h.store.read_latest().await.unwrap().expect("a checkpoint");
    assert_eq!(latest.id, CheckpointId(2));
    assert_eq!(latest.data.checkpoint_time_ms, generated[1]);
    assert_eq!(latest.data.pending_batches, generated[..2].to_vec());
    // Retention (retain = 1) deleted the late older one, not the newest.
    assert_eq!(h.checkpoints().await, vec![2]);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn cleanup_waits_until_the_checkpoint_that_covers_the_batch_is_durable() {
    let setup = Setup {
        max_pending_batches: 2,
        ..Setup::concurrent(2)
    };
    let h = Harness::start("cleanup", setup).await;
    // t1 and t2 are generated; their "before" checkpoints (1: t1 pending; 2: t1, t2 pending)
    // stall, and neither batch runs before a checkpoint listing it is written.
    h.gate.stalled_write(1).await;
    h.gate.stalled_write(2).await;
    let status = h.status().await;
    let (t1, t2) = (status.pending[0], status.pending[1]);
    assert_eq!(status.held, vec![t1, t2]);
    assert!(h.submitted.replies.lock().unwrap().is_empty());

    // Checkpoint 1 is durable: t1 runs (t2, not in it, is still held) and completes; its
    // "after" checkpoint (3: t2 pending) stalls.
    assert!(h.gate.release(1));
    let status = h.status_after(1).await;
    assert_eq!(status.held, vec![t2]);
    assert_eq!(h.submitted(1).await, vec![t1]);
    h.complete(t1);
    h.gate.stalled_write(3).await;
    assert!(h.allocated(t1).await);

    // Checkpoint 2 becomes durable now, after t1 completed, but its snapshot lists t1 as
    // pending: a restore from it re-runs t1, so t1's allocation must stay.
    assert!(h.gate.release(2));
    let status = h.status_after(2).await;
    assert_eq!(status.latest_checkpoint, Some(CheckpointId(2)));
    assert!(status.held.is_empty(), "{status:?}");
    assert!(
        h.allocated(t1).await,
        "t1's allocation was cleaned by a checkpoint that still lists t1 as pending"
    );

    // Checkpoint 3 records t1 as complete: once durable, t1's allocation goes, t2's stays.
    assert!(h.gate.release(3));
    let status = h.status_after(3).await;
    assert_eq!(status.latest_checkpoint, Some(CheckpointId(3)));
    assert!(
        !h.allocated(t1).await,
        "t1's allocation survived the covering checkpoint"
    );
    assert!(h.allocated(t2).await);
    for id in h.gate.stalled() {
        h.gate.release(id);
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_write_is_a_failure_and_its_late_completion_is_not_success() {
    let mut setup = Setup::concurrent(1);
    setup.policy.timeout = Duration::from_secs(5);
    setup.policy.tolerable_failures = 3;
    let mut h = Harness::start("timeout", setup).await;
    h.gate.stalled_write(1).await;
    // Virtual time runs on while the write is stalled, past the timeout.
    let reason = h.checkpoint_failed().await;
    assert!(
        reason.contains("checkpoint 1 timed out after 5s"),
        "{reason}"
    );
    let status = h.status_after(1).await;
    assert_eq!(status.failed_checkpoints, 1);
    assert_eq!(status.latest_checkpoint, None);
    assert!(!status.checkpoints_in_flight.contains(&CheckpointId(1)));
    // The abandoned write's future is gone: releasing it completes nothing.
    assert!(!h.gate.release(1), "the abandoned write was still running");
    assert!(!h.checkpoints().await.contains(&1));
    // Its batch ran all the same (the failure was tolerated), and the next write starts.
    h.submitted(1).await;
    h.gate.stalled_write(2).await;
    for id in h.gate.stalled() {
        h.gate.release(id);
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_killed_generator_abandons_its_writes_in_flight() {
    let mut h = Harness::start("killed", Setup::concurrent(2)).await;
    h.gate.stalled_write(1).await;
    h.gate.stalled_write(2).await;
    h.generator.kill();
    assert_eq!(h.generator_ended().await, Ok(()));
    // Its writes died with it: neither lands after it (a restarted generator would restore
    // from what was durable before the kill).
    assert!(!h.gate.release(1), "write 1 outlived the generator");
    assert!(!h.gate.release(2), "write 2 outlived the generator");
    assert!(h.checkpoints().await.is_empty());
    assert_eq!(h.store.read_latest().await.unwrap(), None);
    h.scheduler.kill_and_wait(None).await.unwrap();
    h.tracker.kill_and_wait(None).await.unwrap();
    h.watcher.kill_and_wait(None).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn concurrency_with_a_minimum_pause_is_refused_at_engine_start() {
    let mut config = EngineConfig::new(Storage::memory());
    config.name_prefix = "ckpt-concurrency-refused/".to_owned();
    config.checkpoint_policy.max_concurrent = 2;
    config.checkpoint_policy.min_pause = Duration::from_secs(1);
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::default(), Duration::ZERO));
    match Engine::start(config.clone(), pipeline.clone(), Vec::new()).await {
        Err(EngineError::InvalidCheckpointPolicy(err)) => {
            assert_eq!(
                err,
                CheckpointPolicyError::ConcurrentWithMinPause {
                    max_concurrent: 2,
                    min_pause: Duration::from_secs(1)
                }
            );
            let message = EngineError::InvalidCheckpointPolicy(err).to_string();
            assert!(message.contains("`max_concurrent` to 2"), "{message}");
        }
        other => panic!("expected a refused policy, got {other:?}"),
    }
    config.checkpoint_policy.min_pause = Duration::ZERO;
    config.checkpoint_policy.max_concurrent = 0;
    assert!(matches!(
        Engine::start(config.clone(), pipeline, Vec::new()).await,
        Err(EngineError::InvalidCheckpointPolicy(
            CheckpointPolicyError::NoConcurrentCheckpoint
        ))
    ));
    // Nothing was started under the engine's names.
    assert!(ractor::registry::where_is(config.names().root()).is_none());
}
