//! Starting, watching and stopping a whole engine: the embedding entry point of `weir-actors`.
//!
//! [`Engine::start`] builds the tree under a root supervisor and returns at once;
//! [`Engine::events`] subscribes to its event feed; [`Engine::stop`] stops it gracefully or
//! immediately; [`Engine::await_termination`] waits until it ends and says why — in particular
//! [`EngineError::GaveUp`] when the driver failed more often than the restart intensity allows.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::blocks::StreamId;
use crate::checkpoint::CheckpointId;
use crate::control_endpoint::ControlHandle;
use crate::driver::DriverArgs;
use crate::event_bus::{EventHub, EventSubscription};
use crate::job_generator::CheckpointPolicy;
use crate::names::Names;
use crate::pipeline::{Pipeline, ReceiverFactory};
use crate::root::{Root, RootArgs, RootMsg};
use crate::storage::Storage;
use crate::supervision::{Backoff, Intensity, RestartPolicy, Strategy};

/// How an engine runs. `EngineConfig::new(storage)` has Spark's defaults.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where checkpoints, WALs and the event log live.
    pub storage: Storage,
    /// Prefix of every actor name (empty by default; see [`Names`]).
    pub name_prefix: String,
    /// The batch interval. Default: 1 s.
    pub batch_interval: Duration,
    /// Receivers cut pushed records into a block this often. Default: 200 ms.
    pub block_interval: Duration,
    /// A block is cut early past this size. Default: 4 MiB.
    pub max_block_bytes: usize,
    /// Received blocks kept in memory (older ones are read back from the WAL). Default: 256 MiB.
    pub block_store_bytes: usize,
    /// Executor workers. Default: the number of cores.
    pub executors: usize,
    /// Batches running at once. Default: 1 (batches complete in order).
    pub max_batches_in_flight: usize,
    /// Attempts per task before its batch fails. Default: 4.
    pub max_task_attempts: u32,
    /// Batches generated and not complete at most (bounds memory in catch-up). Default: 4.
    pub max_pending_batches: usize,
    /// Checkpoint controls.
    pub checkpoint_policy: CheckpointPolicy,
    /// Checkpoints kept. Default: 10.
    pub checkpoints_retained: usize,
    /// Restore from this checkpoint instead of the latest valid one.
    pub restore_from: Option<CheckpointId>,
    /// How the root restarts a failed driver. Default: 5 in 60 s, backoff from 100 ms.
    pub driver_policy: RestartPolicy,
    /// How a receiver tracker restarts its receiver supervisors.
    pub receiver_policy: RestartPolicy,
    /// Delay before a failed receiver is restarted. Default: 2 s.
    pub receiver_restart_delay: Duration,
    /// How the job scheduler restarts its executors.
    pub executor_policy: RestartPolicy,
    /// A graceful stop gives up after this long. Default: 10 × the batch interval.
    pub graceful_stop_timeout: Duration,
    /// Seed of the restart jitter.
    pub seed: u64,
    /// Where the control endpoint listens (`weir watch`, `weir kill`); `None` (the default):
    /// no endpoint. Use a loopback address such as `127.0.0.1:0` unless the port must be
    /// reachable from elsewhere. See `docs/operations.md`.
    pub control_addr: Option<SocketAddr>,
}

impl EngineConfig {
    /// Defaults, storing everything in `storage`.
    pub fn new(storage: Storage) -> Self {
        let batch_interval = Duration::from_secs(1);
        EngineConfig {
            storage,
            name_prefix: String::new(),
            batch_interval,
            block_interval: Duration::from_millis(200),
            max_block_bytes: 4 << 20,
            block_store_bytes: 256 << 20,
            executors: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_batches_in_flight: 1,
            max_task_attempts: 4,
            max_pending_batches: 4,
            checkpoint_policy: CheckpointPolicy::default(),
            checkpoints_retained: 10,
            restore_from: None,
            driver_policy: RestartPolicy {
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 5,
                    period: Duration::from_secs(60),
                },
                backoff: Backoff::default(),
            },
            receiver_policy: RestartPolicy::default(),
            receiver_restart_delay: Duration::from_secs(2),
            executor_policy: RestartPolicy::default(),
            graceful_stop_timeout: batch_interval * 10,
            seed: 0,
            control_addr: None,
        }
    }

    /// The actor names of this engine.
    pub fn names(&self) -> Names {
        Names::new(self.name_prefix.clone())
    }

    /// Where the event log goes: `<storage>/events` for local storage, nowhere otherwise.
    pub fn event_log_dir(&self) -> Option<PathBuf> {
        self.storage.local_dir().map(|d| d.join("events"))
    }

    /// Where the control endpoint's token is written: `<storage>/control-token` for local
    /// storage; nowhere otherwise (then commands that change anything are refused).
    pub fn control_token_path(&self) -> Option<PathBuf> {
        self.storage
            .local_dir()
            .map(crate::control_endpoint::token_path)
    }
}

/// Why an engine ended, or could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine could not start.
    #[error("the engine did not start: {0}")]
    Start(String),
    /// An actor failed more often than its restart intensity allows.
    #[error(
        "{actor} failed {restarts} times within {period:?} and was given up on; the last failure: {reason}"
    )]
    GaveUp {
        /// The actor that kept failing.
        actor: String,
        /// How many restarts were attempted within the window.
        restarts: u32,
        /// The window.
        period: Duration,
        /// Its last failure.
        reason: String,
    },
    /// The root actor ended abnormally for another reason.
    #[error("the engine stopped abnormally: {0}")]
    Failed(String),
}

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    root: ActorRef<RootMsg>,
    handle: JoinHandle<()>,
    hub: EventHub,
    outcome: Arc<Mutex<Option<EngineError>>>,
    control: ControlHandle,
}

impl Engine {
    /// Starts an engine running `pipeline` over the streams of `receivers`.
    ///
    /// # Errors
    ///
    /// [`EngineError::Start`] if the tree could not be built (a name already in use, the
    /// event log unwritable), or [`EngineError::GaveUp`] if the driver kept failing to start.
    pub async fn start(
        config: EngineConfig,
        pipeline: Arc<dyn Pipeline>,
        receivers: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
    ) -> Result<Engine, EngineError> {
        let config = Arc::new(config);
        let hub = EventHub::default();
        let outcome = Arc::new(Mutex::new(None));
        let control = ControlHandle::default();
        let args = RootArgs {
            config: Arc::clone(&config),
            driver: DriverArgs {
                config: Arc::clone(&config),
                pipeline,
                receivers,
                hub: hub.clone(),
            },
            hub: hub.clone(),
            outcome: Arc::clone(&outcome),
            control: control.clone(),
        };
        match Actor::spawn(Some(config.names().root()), Root, args).await {
            Ok((root, handle)) => Ok(Engine {
                root,
                handle,
                hub,
                outcome,
                control,
            }),
            Err(err) => Err(take(&outcome).unwrap_or_else(|| EngineError::Start(err.to_string()))),
        }
    }

    /// A new subscription to the engine's events.
    pub fn events(&self) -> EventSubscription {
        self.hub.subscribe()
    }

    /// The address the control endpoint listens on (`None` without
    /// [`EngineConfig::control_addr`]).
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.local_addr()
    }

    /// Stops the engine: gracefully (receivers stop, everything received is processed and
    /// checkpointed, within [`EngineConfig::graceful_stop_timeout`]) or immediately; then waits
    /// for it to end.
    pub async fn stop(self, graceful: bool) -> Result<(), EngineError> {
        let _ = self
            .root
            .call(|reply| RootMsg::Stop { graceful, reply }, None)
            .await;
        self.await_termination().await
    }

    /// Waits until the engine ends; `Ok` after a requested stop.
    pub async fn await_termination(self) -> Result<(), EngineError> {
        let joined = self.handle.await;
        match take(&self.outcome) {
            Some(error) => Err(error),
            None => joined.map_err(|e| EngineError::Failed(e.to_string())),
        }
    }
}

fn take(outcome: &Mutex<Option<EngineError>>) -> Option<EngineError> {
    outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}
