//! The receiver supervisor: one per stream, registered as `receiver-supervisor-<stream>`. It
//! runs the stream's receiver as its one child and turns what the receiver hands over into
//! durable, reported blocks — Spark's `ReceiverSupervisor` with its `BlockGenerator`.
//!
//! # Invariant: a block is acknowledged only after it is durable and known
//!
//! For every block, in this order:
//!
//! 1. its records are encoded ([`encode_records`]) and appended to the receiver WAL, and the
//!    append returns — the record is durable (blocks handled together share one group commit,
//!    and so do the blocks of every receiver, as they all append to one [`Wal`]);
//! 2. the block goes into the [`BlockStore`], shared by `Arc`;
//! 3. it is reported to the `received-block-tracker` ([`ReceivedBlockTrackerMsg::AddBlocks`],
//!    looked up by name every time, since the tracker may have been restarted), whose answer
//!    comes only once the addition is durable in the tracker's own WAL;
//! 4. only then is the [`ReceiverContext::store`] call answered `Ok(BlockInfo)` — the receiver
//!    may now acknowledge its source — and [`Event::BlockStored`] published.
//!
//! If the append or the report fails, the call is answered [`StoreError::Failed`]: not stored,
//! not acknowledged. So an `Ok` is never given for a block the tracker does not know.
//!
//! With the receiver WAL off ([`EngineConfig::receiver_wal`](crate::config::EngineConfig::receiver_wal),
//! `wal: None` here) step 1 is skipped: the block gets a
//! [`memory_handle`] and the block store holds its only
//! copy, so an `Ok` then means "in memory and known to the tracker" — lost if the driver dies
//! before its batch is done.
//!
//! # Where blocks come from
//!
//! * **Reliable store**: every [`ReceiverContext::store`] call becomes one block. The calls
//!   travel on a bounded channel ([`STORE_QUEUE_DEPTH`]), so a receiver that stores faster than
//!   the WAL can take it waits in `store` (backpressure). A forwarding task drains the channel
//!   into the actor's mailbox a batch at a time, and takes the next batch only once the actor
//!   has handled the previous one: the supervisor's mailbox never holds more than one batch,
//!   and it stays free for the timers, the restarts and the stop requests in between.
//! * **Unreliable push**: [`ReceiverContext::push`] appends to a shared buffer. Every block
//!   interval ([`DEFAULT_BLOCK_INTERVAL`](crate::config::DEFAULT_BLOCK_INTERVAL), Spark's `spark.streaming.blockInterval`) the buffer is
//!   cut into blocks; an empty interval makes no block. The buffer is also checked more often
//!   (every quarter interval, at least every 50 ms), and whenever it holds `max_block_bytes`
//!   the full blocks are cut at once. No block is larger than `max_block_bytes` unless a single
//!   record is.
//!
//! # Restarts
//!
//! The receiver is a transient child: when it fails (an error, a panic, a kill) it is
//! restarted after the receiver restart delay (default 2 s, fixed, Spark's
//! `spark.streaming.receiverRestartDelay`) with a fresh receiver; when it returns `Ok` it stays
//! stopped. Past the restart intensity the supervisor gives up and fails, and the receiver
//! tracker restarts it. The push buffer belongs to the supervisor, so it survives a receiver
//! restart.
//!
//! # Stopping
//!
//! A graceful stop ([`ReceiverSupervisorMsg::Stop`]) sets the receiver's stop signal
//! ([`ReceiverContext::stopping`]) and waits for the receiver to return (its last `store`
//! calls are served meanwhile); then it cuts and stores whatever is left in the push buffer,
//! answers, and stops. A receiver that does not return within [`STOP_WAIT`] is killed with the
//! supervisor. A plain `stop()` of the actor is not graceful: the push buffer is dropped.
//!
//! # What a crash leaves behind
//!
//! A `kill` cancels the handler at its next `.await`. Killed during an append, the record may
//! or may not be in the WAL, whole (see [`Wal::append`]); killed during the report, the block
//! is durable and the tracker may or may not know it. Either way the store call is never
//! answered (its reply is dropped, and the caller gets [`StoreError::Closed`]), so nothing was
//! acknowledged. A block in the WAL that the tracker never heard of is never allocated; it is
//! deleted with its segment. The push buffer dies with the supervisor: pushed records are
//! unreliable by contract. The receiver child dies with it too (ractor kills linked children)
//! and the restarted supervisor starts a fresh one.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort, SupervisionEvent,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::ingest::block_store::{BlockStore, memory_handle};
use crate::ingest::blocks::{Block, BlockInfo, StreamId, encode_records};
use crate::ingest::in_flight::InFlight;
use crate::ingest::received_block_tracker::ReceivedBlockTrackerMsg;
use crate::ingest::receiver::{ReceiverActor, ReceiverArgs};
use crate::messages::{Fail, RestartChildren, Stop};
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::pipeline::{ReceiverContext, ReceiverFactory, StoreError, StoreRequest};
use crate::tree::children::{ChildSpec, Children, STOP_WAIT, answer};
use crate::tree::names::Names;
use crate::tree::names::peer;
use crate::tree::restart_policy::{Backoff, Exit, Intensity, RestartPolicy, RestartType, Strategy};
use crate::wal::{Wal, WalError};

/// How many `store` calls of one stream may wait for the supervisor before `store` itself
/// waits.
pub(crate) const STORE_QUEUE_DEPTH: usize = 64;
/// The most `store` calls handled as one batch (their appends share a group commit, and their
/// blocks are reported in one tracker request).
const STORE_BATCH_MAX: usize = 64;
/// The push buffer's size is checked at least this often.
const MAX_SIZE_CHECK_PERIOD: Duration = Duration::from_millis(50);

/// The reason a receiver supervisor gives when it stops after a graceful stop.
pub(crate) const STOPPED: &str = "stopped";

/// The receiver supervisor actor (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceiverSupervisor;

/// What a receiver supervisor starts from (built by the receiver tracker, again for every
/// restart).
#[derive(Clone)]
pub(crate) struct ReceiverSupervisorArgs {
    /// The engine's actor names.
    pub names: Names,
    /// The stream.
    pub stream: StreamId,
    /// Makes the stream's receiver, once per start.
    pub factory: Arc<dyn ReceiverFactory>,
    /// The receiver WAL, shared by every stream (their appends share fsyncs); `None`: the
    /// receiver WAL is off, and blocks are kept in memory only (see
    /// [`EngineConfig::receiver_wal`](crate::config::EngineConfig::receiver_wal)).
    pub wal: Option<Wal>,
    /// Where stored blocks are kept in memory for the job generator.
    pub block_store: BlockStore,
    /// The receiver WAL's appends on their way to the block tracker (kept from cleaning).
    pub in_flight: InFlight,
    /// Pushed records are cut into a block this often.
    pub block_interval: Duration,
    /// Pushed records are cut into blocks of at most this many bytes (of records).
    pub max_block_bytes: usize,
    /// A failed receiver is restarted after this delay.
    pub restart_delay: Duration,
    /// At most this many receiver restarts within the period, or the supervisor gives up.
    pub intensity: Intensity,
    /// The owner of the receiver WAL (the driver), asked to fail when the WAL takes no more
    /// appends, so that it is reopened.
    pub wal_owner: DerivedActorRef<Fail>,
    /// Where receiver, block and supervision events go.
    pub events: EventSink,
}

impl fmt::Debug for ReceiverSupervisorArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverSupervisorArgs")
            .field("names", &self.names)
            .field("stream", &self.stream)
            .field("wal", &self.wal.as_ref().map(Wal::location))
            .field("block_interval", &self.block_interval)
            .field("max_block_bytes", &self.max_block_bytes)
            .field("restart_delay", &self.restart_delay)
            .field("intensity", &self.intensity)
            .finish_non_exhaustive()
    }
}

/// Counters of one receiver supervisor since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReceiverStats {
    /// Blocks stored and reported.
    pub blocks: u64,
    /// Records in them.
    pub records: u64,
    /// WAL payload bytes of them.
    pub bytes: u64,
    /// Blocks that failed (not stored, or not reported; never acknowledged).
    pub failed_blocks: u64,
    /// Pushed records waiting to be cut into a block.
    pub buffered_records: u64,
    /// Whether the receiver is running (not stopped, and not waiting to be restarted).
    pub receiver_running: bool,
}

/// Messages of the receiver supervisor.
#[derive(Debug)]
pub(crate) enum ReceiverSupervisorMsg {
    /// `store` calls of the receiver, each to become one block; the second field is answered
    /// once they are handled. Sent by the supervisor's own forwarding task.
    Store(Vec<StoreRequest>, RpcReplyPort<()>),
    /// A block interval has passed: cut the push buffer into blocks. Sent by the actor's timer.
    CutBlocks,
    /// Cut full blocks if the push buffer holds `max_block_bytes`. Sent by the actor's timer.
    CheckSize,
    /// Restarts the receiver after the restart delay. Sent by the actor to itself.
    Restart(RestartChildren),
    /// Stops. Gracefully: the receiver is told to stop, its last blocks are stored, then the
    /// supervisor answers and stops. At once: it answers and stops (its receiver with it).
    Stop(Stop),
    /// The receiver did not stop in time after a graceful stop. Sent by the actor's timer.
    StopTimeout,
    /// The supervisor's counters.
    Stats(RpcReplyPort<ReceiverStats>),
}

/// Where the supervisor is in its life.
#[derive(Debug)]
enum Phase {
    Running,
    /// A graceful stop is waiting for the receiver to return.
    Stopping {
        replies: Vec<RpcReplyPort<()>>,
        timeout: JoinHandle<Result<(), ractor::MessagingErr<ReceiverSupervisorMsg>>>,
    },
    /// The last blocks are stored; the actor is stopping.
    Stopped,
}

/// The receiver supervisor's state.
#[derive(Debug)]
pub(crate) struct ReceiverSupervisorState {
    stream: StreamId,
    name: String,
    receiver_name: String,
    names: Names,
    children: Children,
    wal: Option<Wal>,
    block_store: BlockStore,
    in_flight: InFlight,
    pushed: PushBuffer,
    block_interval: Duration,
    max_block_bytes: usize,
    stop: watch::Sender<bool>,
    phase: Phase,
    forwarder: JoinHandle<()>,
    timers: Vec<JoinHandle<()>>,
    stats: ReceiverStats,
    wal_owner: DerivedActorRef<Fail>,
    events: EventSink,
}

impl Actor for ReceiverSupervisor {
    type Msg = ReceiverSupervisorMsg;
    type State = ReceiverSupervisorState;
    type Arguments = ReceiverSupervisorArgs;

    /// Wires the receiver's context to this supervisor and starts the receiver.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReceiverSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stream = args.stream;
        let name = args.names.receiver_supervisor(stream);
        let receiver_name = args.names.receiver(stream);
        let (to_supervisor, requests) = mpsc::channel(STORE_QUEUE_DEPTH);
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopping) = watch::channel(false);
        let ctx = ReceiverContext::new(stream, to_supervisor, Arc::clone(&pushed), stopping);

        let policy = RestartPolicy {
            strategy: Strategy::OneForOne,
            intensity: args.intensity,
            backoff: Backoff {
                initial: args.restart_delay,
                max: args.restart_delay,
                multiplier: 1,
                jitter: 0.0,
                reset_after: args.restart_delay,
            },
        };
        let mut children = Children::new(&name, policy, u64::from(stream), args.events.clone());
        let receiver_args = ReceiverArgs {
            stream,
            name: receiver_name.clone(),
            factory: args.factory,
            ctx,
            events: args.events.clone(),
        };
        children.add(ChildSpec::new(
            &receiver_name,
            RestartType::Transient,
            ReceiverActor,
            move || receiver_args.clone(),
        ));
        // With the receiver WAL off, the block store holds the only copy of each block: the
        // forwarder admits blocks only while they fit its budget (see block_store.rs).
        let gate = args.wal.is_none().then(|| args.block_store.clone());
        let forwarder = tokio::spawn(forward(requests, myself.clone(), gate));
        if let Err((child, err)) = children.start_all(&myself.get_cell()).await {
            forwarder.abort();
            return Err(format!("{child} did not start: {err}").into());
        }
        Ok(ReceiverSupervisorState {
            stream,
            name,
            receiver_name,
            names: args.names,
            children,
            wal: args.wal,
            block_store: args.block_store,
            in_flight: args.in_flight,
            pushed: PushBuffer::new(pushed),
            block_interval: args.block_interval,
            max_block_bytes: args.max_block_bytes.max(1),
            stop,
            phase: Phase::Running,
            forwarder,
            timers: Vec::new(),
            stats: ReceiverStats::default(),
            wal_owner: args.wal_owner,
            events: args.events,
        })
    }

    /// Starts the block interval and the size check timers.
    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let interval = state.block_interval.max(Duration::from_millis(1));
        let size_check = (interval / 4)
            .min(MAX_SIZE_CHECK_PERIOD)
            .max(Duration::from_millis(1));
        state.timers = vec![
            myself.send_interval(interval, || ReceiverSupervisorMsg::CutBlocks),
            myself.send_interval(size_check, || ReceiverSupervisorMsg::CheckSize),
        ];
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            ReceiverSupervisorMsg::Store(requests, handled) => {
                state.store(requests).await;
                answer(handled, ());
            }
            ReceiverSupervisorMsg::CutBlocks => {
                let blocks = state.pushed.take_all(state.max_block_bytes);
                state.store(pushed_requests(blocks)).await;
            }
            ReceiverSupervisorMsg::CheckSize => {
                let blocks = state.pushed.take_full(state.max_block_bytes);
                state.store(pushed_requests(blocks)).await;
            }
            ReceiverSupervisorMsg::Restart(RestartChildren(set)) => {
                if matches!(state.phase, Phase::Running) {
                    let decision = state.children.restart(&myself.get_cell(), set).await;
                    return decision.carry_out(&myself, ReceiverSupervisorMsg::Restart);
                }
            }
            ReceiverSupervisorMsg::Stop(Stop {
                graceful: false,
                reply,
            }) => {
                tracing::info!(actor = %state.name, "stopping the receiver at once");
                answer(reply, ());
                myself.stop(Some(STOPPED.to_owned()));
            }
            ReceiverSupervisorMsg::Stop(Stop {
                graceful: true,
                reply,
            }) => match &mut state.phase {
                Phase::Running => {
                    tracing::info!(actor = %state.name, "stopping the receiver gracefully");
                    state.stop.send_replace(true);
                    let timeout =
                        myself.send_after(STOP_WAIT, || ReceiverSupervisorMsg::StopTimeout);
                    state.phase = Phase::Stopping {
                        replies: vec![reply],
                        timeout,
                    };
                    if state.children.cell(&state.receiver_name).is_none() {
                        finish(&myself, state).await;
                    }
                }
                Phase::Stopping { replies, .. } => replies.push(reply),
                Phase::Stopped => answer(reply, ()),
            },
            ReceiverSupervisorMsg::StopTimeout => {
                if matches!(state.phase, Phase::Stopping { .. }) {
                    tracing::warn!(actor = %state.receiver_name, timeout = ?STOP_WAIT,
                        "the receiver did not stop in time; it is killed with its supervisor");
                    finish(&myself, state).await;
                }
            }
            ReceiverSupervisorMsg::Stats(reply) => {
                let stats = ReceiverStats {
                    buffered_records: state.pushed.len() as u64,
                    receiver_running: state.children.cell(&state.receiver_name).is_some(),
                    ..state.stats
                };
                answer(reply, stats);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let receiver_id = state
            .children
            .cell(&state.receiver_name)
            .map(|c| c.get_id());
        let receiver_exit = match event.actor_cell() {
            Some(cell) if Some(cell.get_id()) == receiver_id => Exit::classify(&event),
            _ => None,
        };
        let decision = state.children.handle(event).await;
        if let Some(exit) = &receiver_exit {
            state.events.emit(Event::ReceiverStopped {
                actor: state.receiver_name.clone(),
                stream: state.stream,
                reason: exit.reason().to_owned(),
            });
        }
        match state.phase {
            Phase::Running => decision.carry_out(&myself, ReceiverSupervisorMsg::Restart),
            Phase::Stopping { .. } => {
                // Whatever the exit, the receiver is not restarted: the stop goes on.
                if receiver_exit.is_some() {
                    finish(&myself, state).await;
                }
                Ok(())
            }
            Phase::Stopped => Ok(()),
        }
    }

    /// Ends the forwarding task and the timers (a killed supervisor skips this: they end by
    /// themselves at their next send).
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.forwarder.abort();
        for timer in &state.timers {
            timer.abort();
        }
        if let Phase::Stopping { timeout, .. } = &state.phase {
            timeout.abort();
        }
        Ok(())
    }
}

/// The end of a graceful stop: stores what is left in the push buffer, answers, stops.
async fn finish(myself: &ActorRef<ReceiverSupervisorMsg>, state: &mut ReceiverSupervisorState) {
    let blocks = state.pushed.take_all(state.max_block_bytes);
    state.store(pushed_requests(blocks)).await;
    if let Phase::Stopping { replies, timeout } =
        std::mem::replace(&mut state.phase, Phase::Stopped)
    {
        timeout.abort();
        for reply in replies {
            answer(reply, ());
        }
    }
    tracing::info!(actor = %state.name, stats = ?state.stats, "receiver supervisor stopped");
    myself.stop(Some(STOPPED.to_owned()));
}

/// Moves `store` calls from the receiver's channel to the actor, one batch at a time.
///
/// It waits for each batch to be handled before taking the next, so the channel's bound is
/// the bound on waiting calls. With a `gate` (the block store, when the receiver WAL is off)
/// it first waits until the batch's bytes fit the store's budget for memory-only blocks: the
/// receiver's calls wait meanwhile, and the receiver is pushed back. It ends when the actor
/// is gone (a cast fails; `post_stop` aborts it too) or every sender is dropped (the actor's
/// state, with the receiver's context, is gone).
async fn forward(
    mut requests: mpsc::Receiver<StoreRequest>,
    myself: ActorRef<ReceiverSupervisorMsg>,
    gate: Option<BlockStore>,
) {
    let mut batch = Vec::new();
    while requests.recv_many(&mut batch, STORE_BATCH_MAX).await > 0 {
        if let Some(store) = &gate {
            let bytes: usize = batch
                .iter()
                .flat_map(|r| r.records.iter())
                .map(Bytes::len)
                .sum();
            store.wait_for_room(bytes).await;
        }
        let (handled, wait) = ractor::concurrency::oneshot();
        let msg = ReceiverSupervisorMsg::Store(std::mem::take(&mut batch), handled.into());
        if myself.cast(msg).is_err() {
            break;
        }
        // An error means the actor died with the batch; the next cast tells.
        let _ = wait.await;
    }
}

fn pushed_requests(blocks: Vec<Vec<Bytes>>) -> Vec<StoreRequest> {
    blocks
        .into_iter()
        .map(|records| StoreRequest {
            records,
            reply: None,
        })
        .collect()
}

/// Where a `store` call waits for its outcome.
type StoreReply = oneshot::Sender<Result<BlockInfo, StoreError>>;

/// A block on its way: durable in the WAL, not yet answered.
struct Durable {
    info: BlockInfo,
    bytes: usize,
    reply: Option<StoreReply>,
}

impl ReceiverSupervisorState {
    /// Stores each request as one block: WAL, block store, tracker, then the answer (see the
    /// module docs).
    ///
    /// # Cancel safety
    ///
    /// If cancelled (the actor killed), no request is answered `Ok` that was not already
    /// answered; the blocks may or may not be in the WAL and the tracker.
    async fn store(&mut self, requests: Vec<StoreRequest>) {
        // A caller that has gone away (its receiver was killed or restarted) will not
        // acknowledge anything: its records are not stored at all.
        let requests: Vec<StoreRequest> = requests
            .into_iter()
            .filter(|r| !r.reply.as_ref().is_some_and(oneshot::Sender::is_closed))
            .collect();
        if requests.is_empty() {
            return;
        }
        let stored_ms = now_ms();
        let wal = self.wal.as_ref();
        // On their way until the tracker has them (or they failed): the receiver WAL's
        // cleaning keeps every segment from the log's newest one, as it is now, on.
        let _in_flight = wal.map(|wal| self.in_flight.enter(wal.newest_segment()));
        let appends = requests.iter().map(|request| async move {
            let Some(wal) = wal else {
                // The receiver WAL is off: the block store holds the only copy.
                let bytes: usize = request.records.iter().map(Bytes::len).sum();
                let length = u32::try_from(bytes).unwrap_or(u32::MAX);
                return Ok((memory_handle(length), bytes));
            };
            let payload = encode_records(&request.records)
                .map_err(|e| (format!("encoding the block failed: {e}"), false))?;
            let bytes = payload.len();
            let handle = wal
                .append_at(stored_ms, Bytes::from(payload))
                .await
                .map_err(|e| {
                    let unusable = matches!(e, WalError::Poisoned { .. } | WalError::Closed { .. });
                    (e.to_string(), unusable)
                })?;
            Ok::<_, (String, bool)>((handle, bytes))
        });
        let appended = join_all(appends).await;
        // The receiver WAL is the driver's, shared by every stream: once it takes no more
        // appends (a failed fsync poisons it) only a new driver, which reopens it and runs
        // recovery, can store again. Ask the driver to fail, so that the root restarts it.
        if let Some(Err((reason, _))) = appended.iter().find(|r| matches!(r, Err((_, true)))) {
            self.wal_unusable(reason.clone());
        }
        let appended = appended
            .into_iter()
            .map(|r| r.map_err(|(reason, _)| reason));

        let mut durable = Vec::with_capacity(requests.len());
        let mut failed = Vec::new();
        for (request, result) in requests.into_iter().zip(appended) {
            match result {
                Ok((handle, bytes)) => {
                    let info = BlockInfo {
                        stream: self.stream,
                        handle,
                        records: request.records.len() as u64,
                        stored_ms,
                    };
                    // In memory before the tracker knows it: once the job generator can
                    // allocate the block, it finds it here.
                    self.block_store.insert(Block {
                        info,
                        records: Arc::from(request.records),
                    });
                    durable.push(Durable {
                        info,
                        bytes,
                        reply: request.reply,
                    });
                }
                Err(reason) => failed.push((request.reply, reason)),
            }
        }
        if durable.is_empty() {
            self.fail(failed);
            return;
        }
        let infos: Vec<BlockInfo> = durable.iter().map(|d| d.info).collect();
        if let Err(reason) = self.report(&infos).await {
            self.block_store.remove(&infos);
            failed.extend(durable.into_iter().map(|d| (d.reply, reason.clone())));
            self.fail(failed);
            return;
        }
        for block in durable {
            if let Some(reply) = block.reply {
                let _ = reply.send(Ok(block.info));
            }
            self.stats.blocks += 1;
            self.stats.records += block.info.records;
            self.stats.bytes += block.bytes as u64;
            self.events.emit(Event::BlockStored {
                actor: self.name.clone(),
                stream: self.stream,
                records: block.info.records,
                bytes: block.bytes as u64,
            });
        }
        self.fail(failed);
    }

    /// The receiver WAL takes no more appends: asks the driver, which owns it, to fail (the
    /// root restarts it, and the new driver reopens the WAL and runs recovery).
    fn wal_unusable(&self, reason: String) {
        tracing::error!(actor = %self.name, %reason,
            "the receiver WAL takes no more appends; failing the driver to reopen it");
        // A closed owner is being stopped or restarted already, which reopens the WAL too.
        let _ = self.wal_owner.send_message(Fail(format!(
            "the receiver WAL takes no more appends until it is reopened: {reason}"
        )));
    }

    /// Answers the failed requests: not stored, not acknowledged.
    fn fail(&mut self, failed: Vec<(Option<StoreReply>, String)>) {
        for (reply, reason) in failed {
            tracing::warn!(actor = %self.name, %reason, reliable = reply.is_some(),
                "storing a block failed");
            self.stats.failed_blocks += 1;
            if let Some(reply) = reply {
                let _ = reply.send(Err(StoreError::Failed {
                    stream: self.stream,
                    reason,
                }));
            }
        }
    }

    /// Reports durable blocks to the block tracker and waits until it has them durably.
    ///
    /// No timeout: a tracker that dies drops the reply port, which ends the call.
    async fn report(&self, infos: &[BlockInfo]) -> Result<(), String> {
        let name = self.names.received_block_tracker();
        let tracker = peer::<ReceivedBlockTrackerMsg>(&name)
            .map_err(|err| format!("the block tracker: {err}"))?;
        let blocks = infos.to_vec();
        match tracker
            .call(
                |reply| ReceivedBlockTrackerMsg::AddBlocks(blocks, reply),
                None,
            )
            .await
        {
            Ok(CallResult::Success(Ok(()))) => Ok(()),
            Ok(CallResult::Success(Err(err))) => {
                Err(format!("the block tracker did not add the blocks: {err}"))
            }
            Ok(CallResult::Timeout) => Err(format!("the block tracker `{name}` did not answer")),
            Ok(CallResult::SenderError) | Err(_) => Err(format!(
                "the block tracker `{name}` stopped before it added the blocks"
            )),
        }
    }
}

// =================================== the push buffer =================================== //

/// The receiver's push buffer, and how much of it has been counted.
///
/// Only the receiver appends to it and only the supervisor takes from it, so the counted
/// prefix stays counted until the supervisor takes records out.
struct PushBuffer {
    shared: Arc<Mutex<Vec<Bytes>>>,
    /// Records counted in `bytes`.
    counted: usize,
    /// Bytes of the first `counted` records.
    bytes: usize,
}

impl fmt::Debug for PushBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushBuffer")
            .field("counted", &self.counted)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl PushBuffer {
    fn new(shared: Arc<Mutex<Vec<Bytes>>>) -> Self {
        PushBuffer {
            shared,
            counted: 0,
            bytes: 0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Bytes>> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// Everything buffered, cut into blocks of at most `max` bytes.
    fn take_all(&mut self, max: usize) -> Vec<Vec<Bytes>> {
        let records = std::mem::take(&mut *self.lock());
        self.counted = 0;
        self.bytes = 0;
        split_by_size(records, max)
    }

    /// The full blocks, if at least `max` bytes are buffered; the rest stays buffered.
    fn take_full(&mut self, max: usize) -> Vec<Vec<Bytes>> {
        let shared = Arc::clone(&self.shared);
        let mut buffer = shared.lock().unwrap_or_else(PoisonError::into_inner);
        self.bytes += buffer[self.counted..].iter().map(Bytes::len).sum::<usize>();
        self.counted = buffer.len();
        if self.bytes < max {
            return Vec::new();
        }
        let mut blocks = split_by_size(std::mem::take(&mut *buffer), max);
        let last_bytes: usize = blocks.last().map_or(0, |b| b.iter().map(Bytes::len).sum());
        if last_bytes < max {
            // Not full: back into the buffer (nothing was pushed meanwhile: the lock is held).
            *buffer = blocks.pop().unwrap_or_default();
        }
        self.counted = buffer.len();
        self.bytes = if self.counted == 0 { 0 } else { last_bytes };
        blocks
    }
}

/// Cuts `records` into blocks of at most `max` bytes each, in order; a record larger than
/// `max` is a block of its own.
fn split_by_size(records: Vec<Bytes>, max: usize) -> Vec<Vec<Bytes>> {
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    let mut bytes = 0;
    for record in records {
        if !block.is_empty() && bytes + record.len() > max {
            blocks.push(std::mem::take(&mut block));
            bytes = 0;
        }
        bytes += record.len();
        block.push(record);
    }
    if !block.is_empty() {
        blocks.push(block);
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(lens: &[usize]) -> Vec<Bytes> {
        lens.iter()
            .enumerate()
            .map(|(i, n)| Bytes::from(vec![i as u8; *n]))
            .collect()
    }

    proptest! {
        #[test]
        fn splitting_keeps_order_and_bounds_every_block(
            lens in prop::collection::vec(0usize..40, 0..60),
            max in 1usize..100,
        ) {
            let input = records(&lens);
            let blocks = split_by_size(input.clone(), max);
            prop_assert_eq!(blocks.concat(), input);
            for block in &blocks {
                let bytes: usize = block.iter().map(Bytes::len).sum();
                prop_assert!(!block.is_empty());
                prop_assert!(bytes <= max || block.len() == 1, "{} bytes in {:?}", bytes, block);
            }
            // Greedy: a block is cut only when the next record would not fit.
            for pair in blocks.windows(2) {
                let bytes: usize = pair[0].iter().map(Bytes::len).sum();
                prop_assert!(bytes + pair[1][0].len() > max);
            }
        }
    }

    #[test]
    fn full_blocks_are_taken_and_the_rest_stays_buffered() {
        let shared = Arc::new(Mutex::new(records(&[10; 25])));
        let mut buffer = PushBuffer::new(Arc::clone(&shared));
        assert!(buffer.take_full(1000).is_empty());
        let blocks = buffer.take_full(100);
        assert_eq!(
            blocks.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10]
        );
        assert_eq!(buffer.len(), 5);
        shared.lock().unwrap().extend(records(&[10; 4]));
        assert!(
            buffer.take_full(100).is_empty(),
            "90 bytes are not a full block"
        );
        shared.lock().unwrap().extend(records(&[10]));
        assert_eq!(buffer.take_full(100).concat().len(), 10);
        assert_eq!(buffer.len(), 0);
        shared.lock().unwrap().extend(records(&[3, 3]));
        assert_eq!(buffer.take_all(100), vec![records(&[3, 3])]);
        assert!(
            buffer.take_all(100).is_empty(),
            "an empty buffer makes no block"
        );
    }
}
