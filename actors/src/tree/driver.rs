//! The driver: Spark's `StreamingContext`, as an actor whose whole subtree restarts from the
//! latest valid checkpoint.
//!
//! Registered as `driver`, a child of the root. `pre_start` reads the checkpoint to restore
//! from (the latest valid one, or a chosen id), restores the pipeline's operator state, opens
//! the receiver WAL and starts its children, in this order:
//!
//! ```text
//! driver
//! ├── received-block-tracker   replays its WAL
//! ├── job-scheduler            └── executor-0 … executor-{W-1}
//! ├── receiver-tracker         └── receiver-supervisor-<s> └── receiver-<s>
//! └── job-generator            re-runs pending and missed batches, then ticks
//! ```
//!
//! Its children share state that only the checkpoint and the WALs can rebuild consistently
//! (which blocks were allocated, which batches are pending, the operator state), so the driver
//! does not restart them one by one: **any** failure of a child fails the driver, and the root
//! restarts the driver — and with it the subtree — from the latest valid checkpoint, under the
//! root's restart intensity and backoff. Failures *inside* a child's own subtree (a receiver, an
//! executor) are handled there and never reach the driver. A driver that cannot start (an
//! unreadable checkpoint, a pipeline whose state does not fit) is a failure too.
//!
//! Before it reads anything, `pre_start` waits (at most 30 s) for the local storage work still
//! in flight under the engine's directory (`storage::in_flight_io`): a failed predecessor's
//! checkpoint write runs on to its end on a blocking thread, and must land before this driver
//! opens the store, removes temp files and reserves ids.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::batch::job_generator::{JobGenerator, JobGeneratorArgs, JobGeneratorMsg};
use crate::batch::job_scheduler::{JobScheduler, JobSchedulerArgs};
use crate::checkpoint::{CheckpointConfig, CheckpointData, CheckpointId, CheckpointStore};
use crate::clock::now_ms;
use crate::config::EngineConfig;
use crate::ingest::block_store::BlockStore;
use crate::ingest::blocks::StreamId;
use crate::ingest::in_flight::InFlight;
use crate::ingest::received_block_tracker::{ReceivedBlockTracker, ReceivedBlockTrackerArgs};
use crate::ingest::receiver_tracker::{ReceiverTracker, ReceiverTrackerArgs, ReceiverTrackerMsg};
use crate::messages::{Fail, Stop};
use crate::observe::hub::EventHub;
use crate::pipeline::{Pipeline, ReceiverFactory};
use crate::storage::in_flight_io;
use crate::tree::children::{ChildSpec, Children};
use crate::tree::names::peer;
use crate::tree::restart_policy::{Exit, RestartPolicy, RestartType};
use crate::wal::{Wal, WalConfig};

/// The driver actor.
#[derive(Clone, Debug)]
pub(crate) struct Driver;

/// What the driver starts from (the same at every restart: the checkpoint is read anew).
#[derive(Clone)]
pub(crate) struct DriverArgs {
    /// The engine's configuration.
    pub config: Arc<EngineConfig>,
    /// What every batch computes.
    pub pipeline: Arc<dyn Pipeline>,
    /// The receiver of each input stream.
    pub receivers: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
    /// The event feed.
    pub hub: EventHub,
    /// The checkpoint chosen to restore from ([`EngineConfig::restore_from`]), until a driver
    /// has started from it: shared by every start, emptied by the first that succeeds in
    /// making it the newest checkpoint, so that a driver restarted later resumes from there
    /// and never rewinds to the chosen one again.
    pub restore_from: Arc<Mutex<Option<CheckpointId>>>,
}

impl std::fmt::Debug for DriverArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverArgs")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The driver's state.
#[derive(Debug)]
pub(crate) struct DriverState {
    children: Children,
    names: crate::tree::names::Names,
    stop_timeout: Duration,
    stopping: bool,
}

/// Messages of the driver.
#[derive(Debug)]
pub(crate) enum DriverMsg {
    /// Stop: gracefully (stop receivers, process everything received, final checkpoint, all
    /// within the configured timeout) or immediately. Replies when the subtree is stopped:
    /// `false` if a graceful stop found no job generator to drain (it had just failed and the
    /// driver had not acted on it yet), so nothing was drained — the root then starts the
    /// driver again and retries.
    Stop(Stop<bool>),
    /// Fail (the root restarts the driver from the latest valid checkpoint): something the
    /// driver owns cannot go on until it is rebuilt, e.g. a poisoned receiver WAL.
    Fail(String),
}

impl From<Fail> for DriverMsg {
    fn from(Fail(reason): Fail) -> Self {
        DriverMsg::Fail(reason)
    }
}

impl TryFrom<DriverMsg> for Fail {
    type Error = DriverMsg;

    fn try_from(message: DriverMsg) -> Result<Self, DriverMsg> {
        match message {
            DriverMsg::Fail(reason) => Ok(Fail(reason)),
            other => Err(other),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Actor for Driver {
    type Msg = DriverMsg;
    type State = DriverState;
    type Arguments = DriverArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DriverArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let config = &args.config;
        let events = args.hub.sink();
        // A restarted driver: the writes its dead predecessor left on blocking threads (a
        // checkpoint write its job generator dropped, cannot be aborted) land first. Opening the
        // store removes temp files, and the next id reserved would be the one still being
        // written.
        if let Some(dir) = config.storage.local_dir() {
            in_flight_io::settle(dir, "the driver's start").await;
        }
        let checkpoints = CheckpointStore::open(
            config.storage.join("checkpoints"),
            CheckpointConfig {
                retain: config.checkpoints_retained,
                events: events.clone(),
            },
        )
        .await?;
        let chosen = *lock(&args.restore_from);
        let restored: Option<CheckpointData> = match chosen {
            Some(id) => {
                let data = checkpoints.read(id).await?;
                // Re-published as the newest checkpoint: from now on the latest valid
                // checkpoint is the chosen state (or what this run checkpoints after it), so a
                // driver restarted after a failure resumes from there — not from the chosen id
                // again, which would rewind what this run did, nor from the checkpoints newer
                // than the chosen one, which the user chose to go back from.
                let newest = checkpoints.write(&data).await?;
                tracing::info!(
                    chosen = id.0,
                    newest = newest.0,
                    "restoring from the chosen checkpoint; it is now the newest"
                );
                *lock(&args.restore_from) = None;
                Some(data)
            }
            None => checkpoints.read_latest().await?.map(|r| r.data),
        };
        if let Some(data) = &restored
            && data.graph_fingerprint != args.pipeline.fingerprint()
        {
            tracing::warn!(
                checkpoint = data.graph_fingerprint,
                current = args.pipeline.fingerprint(),
                "the pipeline changed since the checkpoint was written; state is matched by \
                 operator id"
            );
        }
        if restored
            .as_ref()
            .is_some_and(|data| args.pipeline.holds(data))
        {
            tracing::debug!("the pipeline holds the checkpoint's state already (checked at start)");
        } else {
            // Only the state files the restored checkpoint references, each verified.
            let files = match &restored {
                Some(data) => {
                    let spill = args.pipeline.spill_dir();
                    checkpoints.read_state_files(data, spill.as_deref()).await?
                }
                None => Default::default(),
            };
            args.pipeline
                .restore_with_files(restored.as_ref(), &files)
                .map_err(|e| format!("restoring operator state from the checkpoint: {e}"))?;
        }
        let interval_ms = (config.batch_interval.as_millis() as u64).max(1);
        let zero_time_ms = restored
            .as_ref()
            .map_or_else(|| now_ms() / interval_ms * interval_ms, |c| c.zero_time_ms);
        let wal_config = || WalConfig {
            events: events.clone(),
            ..WalConfig::default()
        };
        let (receiver_wal, _) =
            Wal::open(config.storage.join("receiver-wal"), wal_config()).await?;
        let block_store = BlockStore::new(config.block_store_bytes);
        // What a scrape reads on the spot: this run's block store, and the pipeline's sources.
        let metrics = args.hub.metrics();
        let probed = block_store.clone();
        metrics.set_block_store_probe(move || (probed.bytes() + probed.memory_only_bytes()) as u64);
        let pipeline = Arc::clone(&args.pipeline);
        metrics.set_source_probe(move || pipeline.sources());
        let in_flight = InFlight::default();
        let names = config.names();
        let temporary = RestartType::Temporary; // the root restarts the whole driver instead

        let mut children =
            Children::new(names.driver(), RestartPolicy::default(), 0, events.clone());
        let tracker_args = ReceivedBlockTrackerArgs {
            wal_storage: config.storage.join("tracker-wal"),
            wal_config: wal_config(),
            events: events.clone(),
        };
        children.add(ChildSpec::new(
            names.received_block_tracker(),
            temporary,
            ReceivedBlockTracker,
            move || tracker_args.clone(),
        ));
        let scheduler_args = JobSchedulerArgs {
            names: names.clone(),
            executors: config.executors,
            max_batches_in_flight: config.max_batches_in_flight,
            max_attempts: config.max_task_attempts,
            policy: config.executor_policy,
            events: events.clone(),
        };
        children.add(ChildSpec::new(
            names.job_scheduler(),
            temporary,
            JobScheduler,
            move || scheduler_args.clone(),
        ));
        let receiver_args = ReceiverTrackerArgs {
            names: names.clone(),
            streams: args.receivers.clone(),
            wal: config.receiver_wal.then(|| receiver_wal.clone()),
            block_store: block_store.clone(),
            in_flight: in_flight.clone(),
            block_interval: config.block_interval,
            max_block_bytes: config.max_block_bytes,
            receiver_restart_delay: config.receiver_restart_delay,
            policy: config.receiver_policy,
            wal_owner: myself.get_derived(),
            events: events.clone(),
        };
        children.add(ChildSpec::new(
            names.receiver_tracker(),
            temporary,
            ReceiverTracker,
            move || receiver_args.clone(),
        ));
        let generator_args = JobGeneratorArgs {
            names: names.clone(),
            pipeline: Arc::clone(&args.pipeline),
            checkpoints: Arc::new(checkpoints),
            restored,
            batch_interval: config.batch_interval,
            zero_time_ms,
            max_pending_batches: config.max_pending_batches,
            receiver_batch_max_bytes: config.receiver_batch_max_bytes,
            checkpoint_policy: config.checkpoint_policy,
            planning: config.planning,
            checkpoints_retained: config.checkpoints_retained,
            settings: config.settings(),
            block_store,
            in_flight,
            receiver_wal,
            events,
        };
        children.add(ChildSpec::new(
            names.job_generator(),
            temporary,
            JobGenerator,
            move || generator_args.clone(),
        ));
        children
            .start_all(&myself.get_cell())
            .await
            .map_err(|(name, err)| format!("{name} did not start: {err}"))?;
        Ok(DriverState {
            children,
            names,
            stop_timeout: config.graceful_stop_timeout,
            stopping: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let (graceful, reply) = match message {
            DriverMsg::Stop(Stop { graceful, reply }) => (graceful, reply),
            DriverMsg::Fail(reason) => {
                if state.stopping {
                    return Ok(());
                }
                return Err(reason.into());
            }
        };
        state.stopping = true;
        let mut reached = true;
        if graceful {
            // Receivers first (they store their last blocks), then the generator drains: one
            // last batch for what is left, every batch complete and checkpointed.
            let deadline = tokio::time::Instant::now() + state.stop_timeout;
            let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
            let ms = |d: Duration| d.as_millis() as u64;
            if let Ok(rt) = peer::<ReceiverTrackerMsg>(&state.names.receiver_tracker()) {
                let stop = |reply| {
                    ReceiverTrackerMsg::Stop(Stop {
                        graceful: true,
                        reply,
                    })
                };
                let _ = rt.call(stop, Some(left())).await;
            }
            let generator = peer::<JobGeneratorMsg>(&state.names.job_generator());
            reached = generator.is_ok();
            if let Ok(jg) = generator
                && ractor::call_t!(jg, JobGeneratorMsg::Drain, ms(left())).is_err()
            {
                tracing::warn!(timeout = ?state.stop_timeout,
                    "graceful stop timed out; stopping what is left");
            }
        }
        state.children.stop_all(Duration::from_secs(10)).await;
        if !reply.is_closed() {
            let _ = reply.send(reached);
        }
        myself.stop(Some("stopped".to_owned()));
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let exit = Exit::classify(&event);
        let child = event
            .actor_cell()
            .and_then(|c| c.get_name())
            .unwrap_or_default();
        state.children.handle(event).await;
        match exit {
            Some(exit) if !state.stopping => {
                Err(format!("{child} exited: {}", exit.reason()).into())
            }
            _ => Ok(()),
        }
    }
}
