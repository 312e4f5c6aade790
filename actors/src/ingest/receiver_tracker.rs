//! The receiver tracker: registered as `receiver-tracker`, it runs one receiver supervisor per
//! input stream (`receiver-supervisor-<stream>`, each with its `receiver-<stream>`) and stops
//! them, gracefully or not, when the driver stops.
//!
//! It is the one-for-one supervisor of the receiver supervisors: a supervisor that fails — it
//! was killed, or it gave up on a receiver that kept failing — is restarted alone, after the
//! backoff of the tracker's [`RestartPolicy`], with a fresh receiver; other streams go on. Past
//! the policy's intensity the tracker gives up and fails, and the failure escalates to the
//! driver. A receiver supervisor that stops normally (after a graceful stop) is not restarted.
//!
//! The tracker holds no data: blocks are durable in the receiver WAL and known to the
//! `received-block-tracker` before any receiver acknowledges them (see
//! [`crate::ingest::receiver_supervisor`]), so restarting any part of this subtree loses nothing that
//! was acknowledged.
//!
//! # Stopping
//!
//! [`ReceiverTrackerMsg::StopReceivers`] with `graceful = true` tells every receiver to stop and
//! waits until each supervisor has stored its receiver's last blocks (what was pushed, too);
//! when it answers, every record the receivers handed over is in the tracker. With `graceful =
//! false` the supervisors are simply stopped, and records pushed but not yet cut into a block
//! are dropped (stored records are unaffected: they are durable, or were never acknowledged).
//! Either way the tracker then restarts nothing, and stays up, empty, until it is stopped.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use ractor::rpc::CallResult;
use ractor::{
    Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort, SupervisionEvent,
};

use crate::ingest::block_store::BlockStore;
use crate::ingest::blocks::StreamId;
use crate::ingest::in_flight::InFlight;
use crate::ingest::receiver_supervisor::{
    ReceiverStats, ReceiverSupervisor, ReceiverSupervisorArgs, ReceiverSupervisorMsg,
};
use crate::messages::{Fail, RestartChildren, Stop};
use crate::observe::hub::EventSink;
use crate::pipeline::ReceiverFactory;
use crate::tree::children::{ChildSpec, Children, STOP_WAIT, answer};
use crate::tree::names::Names;
use crate::tree::restart_policy::{RestartPolicy, RestartType, Strategy};
use crate::wal::Wal;

/// The receiver tracker actor (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceiverTracker;

/// What the receiver tracker starts from.
#[derive(Clone)]
pub(crate) struct ReceiverTrackerArgs {
    /// The engine's actor names.
    pub names: Names,
    /// The input streams and the factory of each one's receiver.
    pub streams: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
    /// The receiver WAL, shared by every stream; `None`: the receiver WAL is off (blocks are
    /// kept in memory only, see [`EngineConfig::receiver_wal`](crate::config::EngineConfig::receiver_wal)).
    pub wal: Option<Wal>,
    /// Where stored blocks are kept in memory.
    pub block_store: BlockStore,
    /// The receiver WAL's appends on their way to the block tracker (kept from cleaning).
    pub in_flight: InFlight,
    /// Pushed records are cut into a block this often (default
    /// [`DEFAULT_BLOCK_INTERVAL`](crate::config::DEFAULT_BLOCK_INTERVAL)).
    pub block_interval: Duration,
    /// Pushed records are cut into blocks of at most this many bytes (default
    /// [`DEFAULT_MAX_BLOCK_BYTES`](crate::config::DEFAULT_MAX_BLOCK_BYTES)).
    pub max_block_bytes: usize,
    /// A failed receiver is restarted after this delay (default
    /// [`DEFAULT_RECEIVER_RESTART_DELAY`](crate::config::DEFAULT_RECEIVER_RESTART_DELAY)).
    pub receiver_restart_delay: Duration,
    /// How the tracker restarts failed receiver supervisors (always one-for-one: the strategy
    /// is ignored). Its intensity also bounds each supervisor's restarts of its receiver.
    pub policy: RestartPolicy,
    /// The owner of the receiver WAL (the driver), asked to fail when the WAL takes no more
    /// appends, so that it is reopened.
    pub wal_owner: DerivedActorRef<Fail>,
    /// Where every event of the subtree goes.
    pub events: EventSink,
}

impl fmt::Debug for ReceiverTrackerArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let streams: Vec<StreamId> = self.streams.iter().map(|(s, _)| *s).collect();
        f.debug_struct("ReceiverTrackerArgs")
            .field("names", &self.names)
            .field("streams", &streams)
            .field("wal", &self.wal.as_ref().map(Wal::location))
            .field("block_interval", &self.block_interval)
            .field("max_block_bytes", &self.max_block_bytes)
            .field("receiver_restart_delay", &self.receiver_restart_delay)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// The receiver tracker's state.
#[derive(Debug)]
pub(crate) struct ReceiverTrackerState {
    names: Names,
    streams: Vec<StreamId>,
    children: Children,
    /// Set by `StopReceivers`: nothing is restarted any more.
    stopped: bool,
}

/// Messages of the receiver tracker.
#[derive(Debug)]
pub(crate) enum ReceiverTrackerMsg {
    /// Stops every receiver: gracefully (`true`: their last blocks are stored first) or not
    /// (`false`). Answers once they are stopped.
    Stop(Stop),
    /// The counters of every running receiver supervisor, by stream.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    Stats(RpcReplyPort<BTreeMap<StreamId, ReceiverStats>>),
    /// Restarts receiver supervisors after their backoff. Sent by the actor to itself.
    Restart(RestartChildren),
}

/// How long the tracker waits for a supervisor's answer beyond the supervisor's own stop wait.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

impl Actor for ReceiverTracker {
    type Msg = ReceiverTrackerMsg;
    type State = ReceiverTrackerState;
    type Arguments = ReceiverTrackerArgs;

    /// Starts one receiver supervisor per stream, in the order given.
    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ReceiverTrackerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let policy = RestartPolicy {
            strategy: Strategy::OneForOne,
            ..args.policy
        };
        let mut children = Children::new(
            args.names.receiver_tracker(),
            policy,
            0,
            args.events.clone(),
        );
        let mut streams = Vec::with_capacity(args.streams.len());
        for (stream, factory) in &args.streams {
            let supervisor_args = ReceiverSupervisorArgs {
                names: args.names.clone(),
                stream: *stream,
                factory: Arc::clone(factory),
                wal: args.wal.clone(),
                block_store: args.block_store.clone(),
                in_flight: args.in_flight.clone(),
                block_interval: args.block_interval,
                max_block_bytes: args.max_block_bytes,
                restart_delay: args.receiver_restart_delay,
                intensity: args.policy.intensity,
                wal_owner: args.wal_owner.clone(),
                events: args.events.clone(),
            };
            children.add(ChildSpec::new(
                args.names.receiver_supervisor(*stream),
                RestartType::Transient,
                ReceiverSupervisor,
                move || supervisor_args.clone(),
            ));
            streams.push(*stream);
        }
        children
            .start_all(&myself.get_cell())
            .await
            .map_err(|(name, err)| format!("{name} did not start: {err}"))?;
        tracing::info!(streams = ?streams, "receiver tracker started");
        Ok(ReceiverTrackerState {
            names: args.names,
            streams,
            children,
            stopped: false,
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
            ReceiverTrackerMsg::Stop(Stop { graceful, reply }) => {
                state.stopped = true;
                if graceful {
                    stop_gracefully(state).await;
                }
                // What is left (all of it, if not graceful) is stopped outright.
                state.children.stop_all(STOP_WAIT).await;
                tracing::info!(graceful, "receivers stopped");
                answer(reply, ());
            }
            ReceiverTrackerMsg::Stats(reply) => {
                let supervisors = state.supervisors();
                let calls = supervisors.iter().map(|(stream, supervisor)| async move {
                    let stats = supervisor
                        .call(ReceiverSupervisorMsg::Stats, Some(ANSWER_MARGIN))
                        .await;
                    match stats {
                        Ok(CallResult::Success(stats)) => Some((*stream, stats)),
                        _ => None,
                    }
                });
                let stats = join_all(calls).await.into_iter().flatten().collect();
                answer(reply, stats);
            }
            ReceiverTrackerMsg::Restart(RestartChildren(set)) => {
                if !state.stopped {
                    let decision = state.children.restart(&myself.get_cell(), set).await;
                    return decision.carry_out(&myself, ReceiverTrackerMsg::Restart);
                }
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
        let decision = state.children.handle(event).await;
        if state.stopped {
            return Ok(());
        }
        decision.carry_out(&myself, ReceiverTrackerMsg::Restart)
    }

    /// Stops the receiver supervisors (not gracefully), so their own cleanup runs.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stopped = true;
        state.children.stop_all(STOP_WAIT).await;
        Ok(())
    }
}

impl ReceiverTrackerState {
    /// The running receiver supervisors, by stream.
    fn supervisors(&self) -> Vec<(StreamId, ActorRef<ReceiverSupervisorMsg>)> {
        self.streams
            .iter()
            .filter_map(|stream| {
                let cell = self
                    .children
                    .cell(&self.names.receiver_supervisor(*stream))?;
                Some((*stream, ActorRef::from(cell.clone())))
            })
            .collect()
    }
}

/// Asks every running supervisor to stop gracefully, all at once, and waits for each to have
/// stored its last blocks and stopped.
async fn stop_gracefully(state: &ReceiverTrackerState) {
    let supervisors = state.supervisors();
    let stops = supervisors.iter().map(|(stream, supervisor)| async move {
        let answer = supervisor
            .call(
                |reply| {
                    ReceiverSupervisorMsg::Stop(Stop {
                        graceful: true,
                        reply,
                    })
                },
                Some(STOP_WAIT + ANSWER_MARGIN),
            )
            .await;
        if !matches!(answer, Ok(CallResult::Success(()))) {
            tracing::warn!(stream, "a receiver supervisor did not stop gracefully");
        }
        // It stops itself right after answering.
        let _ = supervisor.get_cell().wait(Some(STOP_WAIT)).await;
    });
    join_all(stops).await;
}
