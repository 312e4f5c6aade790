//! Starting, watching and stopping a whole engine: the embedding entry point of `weir-actors`.
//!
//! [`Engine::start`] builds the tree under a root supervisor and returns at once;
//! [`Engine::events`] subscribes to its event feed; [`Engine::stop`] stops it gracefully or
//! immediately; [`Engine::await_termination`] waits until it ends and says why — in particular
//! [`EngineError::GaveUp`] when the driver failed more often than the restart intensity allows.

use std::collections::BTreeMap;
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
use crate::job_generator::{CheckpointPolicy, CheckpointPolicyError};
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
    /// Whether receivers write every block to the receiver WAL before acknowledging it —
    /// Spark's `spark.streaming.receiver.writeAheadLog.enable`, but on by default. Off, a block
    /// is acknowledged once it is in memory and known to the tracker: no WAL write or fsync,
    /// but the blocks not yet processed when the driver dies are lost (at-most-once input;
    /// the job generator logs each lost block), and memory-only blocks are kept outside
    /// `block_store_bytes` (bound the input with a rate limit). Direct and file sources, which
    /// replay from their own positions, are not affected. Default: on.
    pub receiver_wal: bool,
    /// Executor workers. Default: the number of cores.
    pub executors: usize,
    /// Batches running at once. Default: 1 (batches complete in order).
    pub max_batches_in_flight: usize,
    /// Attempts per task before its batch fails. Default: 4.
    pub max_task_attempts: u32,
    /// Batches generated and not complete at most (bounds memory in catch-up). Default: 4.
    pub max_pending_batches: usize,
    /// Checkpoint controls (Flink's: interval, minimum pause, timeout, tolerable failures,
    /// maximum concurrent checkpoints). Checked at [`Engine::start`].
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
    /// Settings of the layer above the engine (e.g. the runtime's parallelism and rate
    /// limits), written into every checkpoint with the engine's own (see
    /// [`settings`](Self::settings)) so that a restore can report what changed. Default: none.
    pub extra_settings: BTreeMap<String, String>,
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
            receiver_wal: true,
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
            extra_settings: BTreeMap::new(),
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

impl EngineConfig {
    /// The settings written into every checkpoint (name → value): every engine setting that
    /// shapes how batches run, then [`extra_settings`](Self::extra_settings). A restore
    /// compares them with the current ones and reports each difference; the current values
    /// always take effect.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let policy = &self.checkpoint_policy;
        let mut settings = BTreeMap::from([
            ("batch_interval_ms".to_owned(), ms(self.batch_interval)),
            ("block_interval_ms".to_owned(), ms(self.block_interval)),
            (
                "max_block_bytes".to_owned(),
                self.max_block_bytes.to_string(),
            ),
            (
                "block_store_bytes".to_owned(),
                self.block_store_bytes.to_string(),
            ),
            ("receiver_wal".to_owned(), self.receiver_wal.to_string()),
            ("executors".to_owned(), self.executors.to_string()),
            (
                "max_batches_in_flight".to_owned(),
                self.max_batches_in_flight.to_string(),
            ),
            (
                "max_task_attempts".to_owned(),
                self.max_task_attempts.to_string(),
            ),
            (
                "max_pending_batches".to_owned(),
                self.max_pending_batches.to_string(),
            ),
            ("checkpoint_interval_ms".to_owned(), ms(policy.interval)),
            ("checkpoint_min_pause_ms".to_owned(), ms(policy.min_pause)),
            ("checkpoint_timeout_ms".to_owned(), ms(policy.timeout)),
            (
                "checkpoint_tolerable_failures".to_owned(),
                policy.tolerable_failures.to_string(),
            ),
            (
                "checkpoints_retained".to_owned(),
                self.checkpoints_retained.to_string(),
            ),
            (
                "receiver_restart_delay_ms".to_owned(),
                ms(self.receiver_restart_delay),
            ),
            (
                "graceful_stop_timeout_ms".to_owned(),
                ms(self.graceful_stop_timeout),
            ),
        ]);
        for (name, value) in &self.extra_settings {
            settings.insert(name.clone(), value.clone());
        }
        settings
    }
}

/// Why an engine ended, or could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine could not start.
    #[error("the engine did not start: {0}")]
    Start(String),
    /// The checkpoint controls are refused (see [`CheckpointPolicy::validate`]); nothing was
    /// started.
    #[error("the engine did not start: {0}")]
    InvalidCheckpointPolicy(#[from] CheckpointPolicyError),
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
    handle: JoinHandle<Result<(), String>>,
    ended: tokio::sync::watch::Receiver<bool>,
    hub: EventHub,
    outcome: Arc<Mutex<Option<EngineError>>>,
    control: ControlHandle,
}

impl Engine {
    /// Starts an engine running `pipeline` over the streams of `receivers`.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidCheckpointPolicy`] if the checkpoint controls do not combine,
    /// [`EngineError::Start`] if the tree could not be built (a name already in use, the
    /// event log unwritable), or [`EngineError::GaveUp`] if the driver kept failing to start.
    pub async fn start(
        config: EngineConfig,
        pipeline: Arc<dyn Pipeline>,
        receivers: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
    ) -> Result<Engine, EngineError> {
        config.checkpoint_policy.validate()?;
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
            Ok((root, handle)) => {
                // The root's end is also announced on a watch channel, so that it can be
                // awaited without consuming the engine (`wait_timeout`).
                let (ended_tx, ended) = tokio::sync::watch::channel(false);
                let handle = tokio::spawn(async move {
                    let joined = handle.await.map_err(|e| e.to_string());
                    let _ = ended_tx.send(true);
                    joined
                });
                Ok(Engine {
                    root,
                    handle,
                    ended,
                    hub,
                    outcome,
                    control,
                })
            }
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
        let joined = match self.handle.await {
            Ok(joined) => joined,
            Err(e) => Err(e.to_string()),
        };
        match take(&self.outcome) {
            Some(error) => Err(error),
            None => joined.map_err(EngineError::Failed),
        }
    }

    /// Waits at most `timeout` for the engine to end (Spark's `awaitTerminationOrTimeout`):
    /// `true` if it has ended — [`await_termination`](Self::await_termination) then returns
    /// why at once — `false` if it is still running.
    pub async fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let mut ended = self.ended.clone();
        matches!(
            tokio::time::timeout(timeout, ended.wait_for(|ended| *ended)).await,
            Ok(Ok(_))
        ) || *self.ended.borrow()
    }

    /// A handle that can stop this engine from another task (e.g. a signal handler).
    pub fn stopper(&self) -> EngineStopper {
        EngineStopper {
            root: self.root.clone(),
        }
    }
}

/// Stops an engine from anywhere; see [`Engine::stopper`].
#[derive(Clone, Debug)]
pub struct EngineStopper {
    root: ActorRef<RootMsg>,
}

impl EngineStopper {
    /// Asks the engine to stop (gracefully or not) and returns when it has stopped (at once if
    /// it had already ended). Whoever owns the [`Engine`] sees the outcome in
    /// [`Engine::await_termination`].
    pub async fn stop(&self, graceful: bool) {
        let _ = self
            .root
            .call(|reply| RootMsg::Stop { graceful, reply }, None)
            .await;
    }
}

fn take(outcome: &Mutex<Option<EngineError>>) -> Option<EngineError> {
    outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}
