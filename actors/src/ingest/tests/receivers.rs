//! The receiver side on real local WALs: the receiver tracker, its receiver supervisors (block
//! generator, WAL before acknowledgement, restarts) and their receivers, reporting to a real
//! received-block tracker.
//!
//! The property behind every test: **a record a receiver acknowledged is in a block that the
//! block tracker knows and that reads back from the receiver WAL** — whatever was killed, and
//! whenever. Tests that assert timing (block interval, restart delay) run on a current-thread
//! runtime with paused time and wait for events, never sleeps; the others run in real time.
//!
//! A caveat of paused time here: the local WAL's writer runs on its own thread, and while the
//! test runtime waits for it, tokio advances the paused clock to the next timer. So virtual time
//! can pass during an fsync; the timing assertions are therefore either lower bounds, or exact
//! only across stretches with no I/O (the restart delay).

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::Names;
use crate::ingest::block_store::BlockStore;
use crate::ingest::blocks::{BlockInfo, StreamId};
use crate::ingest::in_flight::InFlight;
use crate::ingest::received_block_tracker::{
    BatchAllocation, ReceivedBlockTracker, ReceivedBlockTrackerArgs, ReceivedBlockTrackerMsg,
};
use crate::ingest::receiver_supervisor::ReceiverStats;
use crate::ingest::receiver_tracker::{ReceiverTracker, ReceiverTrackerArgs, ReceiverTrackerMsg};
use crate::messages::{Fail, Stop};
use crate::pipeline::{BoxFuture, Receiver, ReceiverContext, ReceiverFactory, UserError};
use crate::tree::restart_policy::{Backoff, Intensity, RestartPolicy, Strategy};
use crate::wal::{Wal, WalConfig};
use crate::{Event, Storage};
use crate::{EventHub, EventSubscription};
use bytes::Bytes;
use ractor::{Actor, ActorCell, ActorRef, call};
use tempfile::TempDir;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Longer than any wait a passing test does, in real time.
const WAIT: Duration = Duration::from_secs(60);
/// Longer than any wait a passing test does, in virtual time (paused tests).
const VIRTUAL_WAIT: Duration = Duration::from_secs(4 * 3600);

// ===================================== test receivers ===================================== //

/// A block `store` returned `Ok` for, with its records.
type AckedBlock = (BlockInfo, Vec<Bytes>);

/// What a receiver acknowledged: each block `store` returned `Ok` for, with its records.
#[derive(Clone)]
struct Acked {
    blocks: Arc<Mutex<Vec<AckedBlock>>>,
    count: Arc<watch::Sender<usize>>,
}

impl Acked {
    fn new() -> Acked {
        Acked {
            blocks: Arc::default(),
            count: Arc::new(watch::channel(0).0),
        }
    }

    fn push(&self, info: BlockInfo, records: Vec<Bytes>) {
        let mut blocks = self.blocks.lock().unwrap();
        blocks.push((info, records));
        self.count.send_replace(blocks.len());
    }

    fn len(&self) -> usize {
        *self.count.borrow()
    }

    fn all(&self) -> Vec<AckedBlock> {
        self.blocks.lock().unwrap().clone()
    }

    /// Waits (at most `wait`) until at least `n` blocks are acknowledged.
    async fn reach(&self, n: usize, wait: Duration) {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(wait, rx.wait_for(|c| *c >= n))
            .await
            .expect("the receiver did not acknowledge enough blocks")
            .unwrap();
    }
}

/// Stores batches of unique records with `store` and acknowledges each once it returns `Ok`,
/// from `concurrency` loops at once; stops after `per_run` batches per loop (or never), then
/// waits to be stopped. A failed `store` fails the receiver.
struct Generator {
    acked: Acked,
    next: Arc<AtomicU64>,
    batch: usize,
    per_run: Option<usize>,
    concurrency: usize,
}

fn generator(
    acked: &Acked,
    batch: usize,
    per_run: Option<usize>,
    concurrency: usize,
) -> Arc<dyn ReceiverFactory> {
    let acked = acked.clone();
    let next = Arc::new(AtomicU64::new(0));
    Arc::new(move || {
        Box::new(Generator {
            acked: acked.clone(),
            next: Arc::clone(&next),
            batch,
            per_run,
            concurrency,
        }) as Box<dyn Receiver>
    })
}

impl Generator {
    async fn run_loop(&self, ctx: &ReceiverContext) -> Result<(), UserError> {
        let mut stored = 0;
        while !ctx.is_stopping() && self.per_run.is_none_or(|n| stored < n) {
            let records: Vec<Bytes> = (0..self.batch)
                .map(|_| {
                    let n = self.next.fetch_add(1, Ordering::SeqCst);
                    Bytes::from(format!("stream {} record {n}", ctx.stream()))
                })
                .collect();
            let info = ctx.store(records.clone()).await?;
            // Only now may the source be acknowledged.
            self.acked.push(info, records);
            stored += 1;
        }
        Ok(())
    }
}

impl Receiver for Generator {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            let loops = (0..self.concurrency).map(|_| self.run_loop(&ctx));
            for result in futures::future::join_all(loops).await {
                result?;
            }
            ctx.stopping().await;
            Ok(())
        })
    }
}

/// Hands its context to the test (which pushes through it), waits to be stopped, then pushes
/// its `last` records and returns.
struct Pusher {
    contexts: mpsc::UnboundedSender<ReceiverContext>,
    last: Vec<Bytes>,
}

fn pusher(
    last: Vec<Bytes>,
) -> (
    Arc<dyn ReceiverFactory>,
    mpsc::UnboundedReceiver<ReceiverContext>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let factory = Arc::new(move || {
        Box::new(Pusher {
            contexts: tx.clone(),
            last: last.clone(),
        }) as Box<dyn Receiver>
    });
    (factory, rx)
}

impl Receiver for Pusher {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            self.contexts.send(ctx.clone()).unwrap();
            ctx.stopping().await;
            for record in self.last.drain(..) {
                ctx.push(record);
            }
            Ok(())
        })
    }
}

/// Fails at once on its first `failures` starts, then stores like a [`Generator`].
struct Flaky {
    starts: Arc<AtomicU32>,
    failures: u32,
    then: Generator,
}

impl Receiver for Flaky {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            if self.starts.fetch_add(1, Ordering::SeqCst) < self.failures {
                return Err("the source is unreachable".into());
            }
            self.then.start(ctx).await
        })
    }
}

fn records(prefix: &str, n: usize, len: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| {
            let mut r = format!("{prefix}{i}").into_bytes();
            r.resize(len, b'.');
            Bytes::from(r)
        })
        .collect()
}

// ======================================== the rig ======================================== //

struct Options {
    /// How long any wait may take before the test fails: [`WAIT`], or [`VIRTUAL_WAIT`] for
    /// paused tests.
    wait: Duration,
    block_interval: Duration,
    max_block_bytes: usize,
    receiver_restart_delay: Duration,
    policy: RestartPolicy,
    /// Keep the WALs in opendal's memory service. Paused-time tests need it: a local WAL
    /// writes on a thread of its own, and while the test runtime waits for that thread tokio
    /// auto-advances the paused clock to the next timer. The memory service's writer is a task
    /// on the test's runtime, so no I/O happens off the paused clock.
    in_memory: bool,
}

/// The options of a test on paused time.
fn paused() -> Options {
    Options {
        wait: VIRTUAL_WAIT,
        in_memory: true,
        ..Options::default()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            wait: WAIT,
            block_interval: Duration::from_millis(200),
            max_block_bytes: 4 << 20,
            receiver_restart_delay: Duration::from_secs(2),
            in_memory: false,
            policy: RestartPolicy {
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 100,
                    period: Duration::from_secs(60),
                },
                backoff: Backoff {
                    initial: Duration::from_millis(10),
                    max: Duration::from_millis(10),
                    multiplier: 1,
                    jitter: 0.0,
                    reset_after: Duration::from_secs(60),
                },
            },
        }
    }
}

/// A received-block tracker and a receiver tracker under the test's own name prefix, on
/// tempdir WALs.
struct Rig {
    wait: Duration,
    names: Names,
    hub: EventHub,
    events: EventSubscription,
    wal: Wal,
    block_store: BlockStore,
    tracker_storage: Storage,
    receivers: ActorRef<ReceiverTrackerMsg>,
    _dir: TempDir,
}

/// Stands in for the driver, which owns the receiver WAL (these tests never poison it; the
/// failpoint suite proves that a poisoned WAL fails the real driver).
struct WalOwner;

impl Actor for WalOwner {
    type Msg = Fail;
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Fail>,
        _args: (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Fail>,
        Fail(reason): Fail,
        _state: &mut (),
    ) -> Result<(), ractor::ActorProcessingErr> {
        panic!("the receiver WAL was reported unusable: {reason}")
    }
}

/// Spawns the received-block tracker under its name, once a previous holder has stopped.
async fn spawn_block_tracker(
    names: &Names,
    hub: &EventHub,
    storage: &Storage,
) -> ActorRef<ReceivedBlockTrackerMsg> {
    let args = ReceivedBlockTrackerArgs {
        wal_storage: storage.clone(),
        wal_config: WalConfig::default(),
        events: hub.sink(),
    };
    let name = names.received_block_tracker();
    if let Some(previous) = ractor::registry::where_is(name.clone()) {
        previous.wait(Some(WAIT)).await.unwrap();
    }
    Actor::spawn(Some(name), ReceivedBlockTracker, args)
        .await
        .unwrap()
        .0
}

impl Rig {
    /// The records of `stream`'s blocks in `allocation`, in order, read from the block store
    /// (or back from the WAL).
    async fn records_of(&self, allocation: &BatchAllocation, stream: StreamId) -> Vec<Bytes> {
        let mut records = Vec::new();
        for info in &allocation.blocks[&stream] {
            let block = self.block_store.get_or_read(info, &self.wal).await.unwrap();
            records.extend(block.records.iter().cloned());
        }
        records
    }

    async fn start(
        test: &str,
        streams: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
        options: Options,
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let names = Names::new(format!("receivers-{test}/"));
        let hub = EventHub::default();
        let events = hub.subscribe();
        let root = if options.in_memory {
            Storage::memory()
        } else {
            Storage::local(dir.path())
        };
        let (wal, _) = Wal::open(root.join("receiver-wal"), WalConfig::default())
            .await
            .unwrap();
        let block_store = BlockStore::new(64 << 20);
        let tracker_storage = root.join("tracker-wal");
        spawn_block_tracker(&names, &hub, &tracker_storage).await;
        let (wal_owner, _) = Actor::spawn(None, WalOwner, ()).await.unwrap();
        let args = ReceiverTrackerArgs {
            names: names.clone(),
            streams,
            wal: Some(wal.clone()),
            block_store: block_store.clone(),
            in_flight: InFlight::default(),
            block_interval: options.block_interval,
            max_block_bytes: options.max_block_bytes,
            receiver_restart_delay: options.receiver_restart_delay,
            policy: options.policy,
            wal_owner: wal_owner.get_derived(),
            events: hub.sink(),
        };
        let (receivers, _) = Actor::spawn(Some(names.receiver_tracker()), ReceiverTracker, args)
            .await
            .unwrap();
        Rig {
            wait: options.wait,
            names,
            hub,
            events,
            wal,
            block_store,
            tracker_storage,
            receivers,
            _dir: dir,
        }
    }

    /// Restarts the block tracker, as its parent would after a failure.
    async fn respawn_block_tracker(&self) {
        spawn_block_tracker(&self.names, &self.hub, &self.tracker_storage).await;
    }

    fn block_tracker(&self) -> ActorRef<ReceivedBlockTrackerMsg> {
        ActorRef::where_is(self.names.received_block_tracker()).expect("block tracker running")
    }

    fn actor(&self, name: &str) -> Option<ActorCell> {
        ractor::registry::where_is(name)
    }

    /// Waits for the next event matching `pred`; returns it with the (virtual) time it came.
    async fn wait_for(&mut self, pred: impl Fn(&Event) -> bool) -> (Event, Instant) {
        tokio::time::timeout(self.wait, async {
            loop {
                let record = self.events.next().await.expect("hub open");
                if pred(&record.event) {
                    return (record.event, Instant::now());
                }
            }
        })
        .await
        .expect("the event did not come")
    }

    async fn started(&mut self, actor: &str) -> Instant {
        self.wait_for(|e| matches!(e, Event::ActorStarted { actor: a } if a == actor))
            .await
            .1
    }

    async fn failed(&mut self, actor: &str) -> String {
        match self
            .wait_for(|e| matches!(e, Event::ActorFailed { actor: a, .. } if a == actor))
            .await
            .0
        {
            Event::ActorFailed { reason, .. } => reason,
            _ => unreachable!(),
        }
    }

    /// The restart's delay, and when it was decided.
    async fn restarted(&mut self, actor: &str) -> (u64, Instant) {
        match self
            .wait_for(|e| matches!(e, Event::ActorRestarted { actor: a, .. } if a == actor))
            .await
        {
            (Event::ActorRestarted { delay_ms, .. }, at) => (delay_ms, at),
            _ => unreachable!(),
        }
    }

    /// The records of the next stored block of `stream`, and when it came.
    async fn block_stored(&mut self, stream: StreamId) -> (u64, Instant) {
        match self
            .wait_for(|e| matches!(e, Event::BlockStored { stream: s, .. } if *s == stream))
            .await
        {
            (Event::BlockStored { records, .. }, at) => (records, at),
            _ => unreachable!(),
        }
    }

    async fn stats(&self) -> std::collections::BTreeMap<StreamId, ReceiverStats> {
        call!(self.receivers, ReceiverTrackerMsg::Stats).unwrap()
    }

    async fn stop_receivers(&self, graceful: bool) {
        let stop = |reply| ReceiverTrackerMsg::Stop(Stop { graceful, reply });
        self.receivers.call(stop, None).await.unwrap();
    }

    /// Allocates every block the tracker knows to one batch, and returns it.
    async fn allocate(&self, batch_time_ms: u64) -> BatchAllocation {
        call!(
            self.block_tracker(),
            ReceivedBlockTrackerMsg::AllocateBatch,
            batch_time_ms
        )
        .unwrap()
        .unwrap()
    }

    /// Every acknowledged block is in `allocation` and reads back, from memory and from the
    /// WAL, as the records that were acknowledged.
    async fn assert_known_and_readable(&self, acked: &[AckedBlock], allocation: &BatchAllocation) {
        let known: HashSet<BlockInfo> = allocation.iter().copied().collect();
        let cold = BlockStore::new(0);
        for (info, records) in acked {
            assert!(
                known.contains(info),
                "acknowledged block {info:?} is unknown to the tracker"
            );
            let warm = self.block_store.get_or_read(info, &self.wal).await.unwrap();
            assert_eq!(&warm.records[..], &records[..]);
            let read_back = cold.get_or_read(info, &self.wal).await.unwrap();
            assert_eq!(&read_back.records[..], &records[..]);
        }
    }

    async fn shutdown(self) {
        // No timeouts: under paused time, a timeout fires while the runtime waits for the WAL
        // writer thread (tokio advances the clock when idle).
        self.receivers.stop_and_wait(None, None).await.unwrap();
        if let Some(tracker) = self.actor(&self.names.received_block_tracker()) {
            tracker.stop_and_wait(None, None).await.unwrap();
        }
    }
}

// ====================================== reliable store ====================================== //

#[tokio::test]
async fn stored_records_are_acknowledged_only_once_durable_and_known_to_the_tracker() {
    let (a, b) = (Acked::new(), Acked::new());
    let streams = vec![
        (0, generator(&a, 5, Some(10), 2)),
        (1, generator(&b, 3, Some(20), 1)),
    ];
    let rig = Rig::start("reliable", streams, Options::default()).await;
    a.reach(20, rig.wait).await;
    b.reach(20, rig.wait).await;

    let stats = rig.stats().await;
    assert_eq!(
        (stats[&0].blocks, stats[&0].records, stats[&0].failed_blocks),
        (20, 100, 0)
    );
    assert_eq!((stats[&1].blocks, stats[&1].records), (20, 60));
    assert!(stats[&0].receiver_running);

    let allocation = rig.allocate(1_000).await;
    assert_eq!(allocation.block_count(), 40);
    rig.assert_known_and_readable(&a.all(), &allocation).await;
    rig.assert_known_and_readable(&b.all(), &allocation).await;
    // Each stream's blocks are in the tracker in the order they were acknowledged.
    let order: Vec<BlockInfo> = b.all().iter().map(|(info, _)| *info).collect();
    assert_eq!(allocation.blocks[&1], order);

    rig.stop_receivers(true).await;
    for stream in [0, 1] {
        assert!(rig.actor(&rig.names.receiver_supervisor(stream)).is_none());
        assert!(rig.actor(&rig.names.receiver(stream)).is_none());
    }
    rig.shutdown().await;
}

// ================================= the block generator ================================= //

#[tokio::test(start_paused = true)]
async fn pushed_records_are_cut_into_a_block_every_block_interval() {
    let (factory, mut contexts) = pusher(Vec::new());
    let mut rig = Rig::start("interval", vec![(3, factory)], paused()).await;
    let ctx = contexts.recv().await.unwrap();
    let start = Instant::now();

    let first = records("first-", 3, 8);
    for r in &first {
        ctx.push(r.clone());
    }
    // Not before the interval is up.
    tokio::time::advance(Duration::from_millis(150)).await;
    let stats = rig.stats().await[&3];
    assert_eq!((stats.blocks, stats.buffered_records), (0, 3));
    let (n, at) = rig.block_stored(3).await;
    assert_eq!(n, 3, "the interval's records make one block");
    assert!(
        at - start >= Duration::from_millis(200),
        "cut after {:?}",
        at - start
    );

    // Five empty intervals make no block; then the next records make one more.
    tokio::time::advance(Duration::from_secs(1)).await;
    let second = records("second-", 2, 8);
    for r in &second {
        ctx.push(r.clone());
    }
    let (n, _) = rig.block_stored(3).await;
    assert_eq!(n, 2);
    let stats = rig.stats().await[&3];
    assert_eq!(
        (stats.blocks, stats.records, stats.buffered_records),
        (2, 5, 0)
    );

    let allocation = rig.allocate(1_000).await;
    let stored = rig.records_of(&allocation, 3).await;
    assert_eq!(stored, [first, second].concat());
    rig.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn pushed_records_are_cut_early_into_full_blocks_by_size() {
    let (factory, mut contexts) = pusher(Vec::new());
    let options = Options {
        block_interval: Duration::from_secs(60),
        max_block_bytes: 100,
        ..paused()
    };
    let mut rig = Rig::start("size", vec![(0, factory)], options).await;
    let ctx = contexts.recv().await.unwrap();
    let start = Instant::now();
    let pushed = records("r", 25, 10); // 250 bytes: two full blocks and 50 bytes
    for r in &pushed {
        ctx.push(r.clone());
    }
    for _ in 0..2 {
        let (n, at) = rig.block_stored(0).await;
        assert_eq!(n, 10, "a full block is 100 bytes of 10-byte records");
        assert!(
            at - start < Duration::from_secs(60),
            "cut by size, not by the interval"
        );
    }
    assert_eq!(rig.stats().await[&0].buffered_records, 5);
    // The rest waits for the block interval.
    let (n, at) = rig.block_stored(0).await;
    assert_eq!(n, 5);
    assert!(at - start >= Duration::from_secs(60));

    let allocation = rig.allocate(1_000).await;
    let stored = rig.records_of(&allocation, 0).await;
    assert_eq!(stored, pushed);
    rig.shutdown().await;
}

#[tokio::test]
async fn a_graceful_stop_stores_what_the_receiver_pushed_until_it_returned() {
    let last = records("last-", 1, 4);
    let (factory, mut contexts) = pusher(last.clone());
    let options = Options {
        block_interval: Duration::from_secs(3600),
        ..Options::default()
    };
    let mut rig = Rig::start("graceful", vec![(0, factory)], options).await;
    let ctx = contexts.recv().await.unwrap();
    let pushed = records("early-", 3, 4);
    for r in &pushed {
        ctx.push(r.clone());
    }
    rig.stop_receivers(true).await;

    let reason = match rig
        .wait_for(|e| matches!(e, Event::ReceiverStopped { .. }))
        .await
        .0
    {
        Event::ReceiverStopped { reason, .. } => reason,
        _ => unreachable!(),
    };
    assert_eq!(reason, "finished");
    assert_eq!(
        rig.block_stored(0).await.0,
        4,
        "one last block, cut after the receiver returned"
    );
    let allocation = rig.allocate(1_000).await;
    let stored = rig.records_of(&allocation, 0).await;
    assert_eq!(
        stored,
        [pushed, last].concat(),
        "everything pushed before the receiver returned"
    );
    // Stopped for good: nothing restarts, and the supervisor said why it stopped.
    assert!(rig.actor(&rig.names.receiver_supervisor(0)).is_none());
    assert!(rig.actor(&rig.names.receiver(0)).is_none());
    while let Some(record) = rig.events.try_next() {
        assert!(
            !matches!(
                record.event,
                Event::ActorRestarted { .. } | Event::ActorFailed { .. }
            ),
            "{:?}",
            record.event
        );
    }
    rig.shutdown().await;
}

// ======================================== restarts ======================================== //

#[tokio::test(start_paused = true)]
async fn a_killed_receiver_is_restarted_after_the_restart_delay_and_keeps_what_it_acknowledged() {
    let acked = Acked::new();
    let mut rig = Rig::start(
        "kill-receiver",
        vec![(0, generator(&acked, 4, None, 1))],
        paused(),
    )
    .await;
    let receiver = rig.names.receiver(0);
    acked.reach(3, rig.wait).await;
    let before = rig.actor(&receiver).unwrap();
    before.kill();

    assert_eq!(rig.failed(&receiver).await, "killed");
    let (delay_ms, decided) = rig.restarted(&receiver).await;
    assert_eq!(delay_ms, 2_000);
    let started = rig.started(&receiver).await;
    // A lower bound: the WAL writes on its own thread, and while a paused-time test waits for
    // it tokio may advance the clock past the restart timer before the event is read.
    assert!(
        started - decided >= Duration::from_secs(2),
        "restarted before the delay: {:?}",
        started - decided
    );
    assert_ne!(rig.actor(&receiver).unwrap().get_id(), before.get_id());

    // The new receiver acknowledges more; everything acknowledged, before and after, is kept.
    let at_restart = acked.len();
    acked.reach(at_restart + 3, rig.wait).await;
    rig.stop_receivers(true).await;
    let allocation = rig.allocate(1_000).await;
    rig.assert_known_and_readable(&acked.all(), &allocation)
        .await;
    rig.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_receiver_that_fails_is_restarted_after_the_restart_delay() {
    let acked = Acked::new();
    let starts = Arc::new(AtomicU32::new(0));
    let factory: Arc<dyn ReceiverFactory> = {
        let (acked, starts) = (acked.clone(), Arc::clone(&starts));
        Arc::new(move || {
            Box::new(Flaky {
                starts: Arc::clone(&starts),
                failures: 1,
                then: Generator {
                    acked: acked.clone(),
                    next: Arc::new(AtomicU64::new(0)),
                    batch: 2,
                    per_run: Some(2),
                    concurrency: 1,
                },
            }) as Box<dyn Receiver>
        })
    };
    let mut rig = Rig::start("fail-receiver", vec![(5, factory)], paused()).await;
    let receiver = rig.names.receiver(5);
    let error = match rig
        .wait_for(|e| matches!(e, Event::ReceiverError { .. }))
        .await
        .0
    {
        Event::ReceiverError { error, stream, .. } => {
            assert_eq!(stream, 5);
            error
        }
        _ => unreachable!(),
    };
    assert!(error.contains("the source is unreachable"), "{error}");
    assert!(
        rig.failed(&receiver)
            .await
            .contains("the source is unreachable")
    );
    let (delay_ms, decided) = rig.restarted(&receiver).await;
    assert_eq!(delay_ms, 2_000);
    assert_eq!(
        rig.started(&receiver).await - decided,
        Duration::from_secs(2)
    );
    acked.reach(2, rig.wait).await;
    assert_eq!(starts.load(Ordering::SeqCst), 2);
    let allocation = rig.allocate(1_000).await;
    rig.assert_known_and_readable(&acked.all(), &allocation)
        .await;
    rig.shutdown().await;
}

#[tokio::test]
async fn a_killed_receiver_supervisor_is_restarted_by_the_tracker_and_nothing_acknowledged_is_lost()
{
    let acked = Acked::new();
    let mut rig = Rig::start(
        "kill-supervisor",
        vec![(0, generator(&acked, 4, None, 2))],
        Options::default(),
    )
    .await;
    let supervisor = rig.names.receiver_supervisor(0);
    acked.reach(5, rig.wait).await;
    let before = rig.actor(&supervisor).unwrap();
    before.kill();

    assert_eq!(rig.failed(&supervisor).await, "killed");
    rig.started(&supervisor).await;
    assert_ne!(rig.actor(&supervisor).unwrap().get_id(), before.get_id());
    // With a new receiver, which acknowledges more.
    let at_restart = acked.len();
    acked.reach(at_restart + 5, rig.wait).await;

    rig.stop_receivers(true).await;
    let allocation = rig.allocate(1_000).await;
    rig.assert_known_and_readable(&acked.all(), &allocation)
        .await;
    rig.shutdown().await;
}

/// Kills receivers, receiver supervisors and the block tracker itself while stores are in
/// flight, on a multi-threaded runtime, and checks that no `Ok` was ever given for a block the
/// tracker does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_racing_kills_is_never_acknowledged_for_a_block_the_tracker_does_not_know() {
    let (a, b) = (Acked::new(), Acked::new());
    let options = Options {
        receiver_restart_delay: Duration::from_millis(1),
        policy: RestartPolicy {
            intensity: Intensity {
                max_restarts: 1_000,
                period: Duration::from_secs(60),
            },
            ..Options::default().policy
        },
        ..Options::default()
    };
    let streams = vec![
        (0, generator(&a, 3, None, 3)),
        (1, generator(&b, 2, None, 2)),
    ];
    let rig = Rig::start("race", streams, options).await;
    let targets = [
        rig.names.receiver_supervisor(0),
        rig.names.receiver(1),
        rig.names.receiver(0),
        rig.names.receiver_supervisor(1),
        rig.names.received_block_tracker(),
    ];
    for round in 0..15 {
        // Let both streams make progress, a different amount each round, then kill mid-flight.
        let step = 1 + round % 3;
        a.reach(a.len() + step, rig.wait).await;
        b.reach(b.len() + step, rig.wait).await;
        let target = &targets[round % targets.len()];
        let Some(cell) = rig.actor(target) else {
            continue;
        };
        cell.kill();
        if *target == rig.names.received_block_tracker() {
            // Nobody supervises the block tracker here: restart it as its parent would.
            rig.respawn_block_tracker().await;
        }
    }
    a.reach(a.len() + 3, rig.wait).await;
    b.reach(b.len() + 3, rig.wait).await;
    rig.stop_receivers(true).await;

    let allocation = rig.allocate(1_000).await;
    let acked = [a.all(), b.all()].concat();
    rig.assert_known_and_readable(&acked, &allocation).await;
    // Acknowledged blocks are unique: a store is never answered twice.
    let unique: HashSet<BlockInfo> = acked.iter().map(|(info, _)| *info).collect();
    assert_eq!(unique.len(), acked.len());
    rig.shutdown().await;
}
