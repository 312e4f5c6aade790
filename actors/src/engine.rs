//! Starting, watching and stopping a whole engine: the embedding entry point of `weir-actors`.
//!
//! [`Engine::start`] builds the tree under a root supervisor and returns at once;
//! [`Engine::events`] subscribes to its event feed; [`Engine::stop`] stops it gracefully or
//! immediately; [`Engine::await_termination`] waits until it ends and says why — in particular
//! [`EngineError::GaveUp`] when the driver failed more often than the restart intensity allows.
//!
//! **The storage directory is handed on only when nothing of this engine writes to it any
//! more.** The engine holds the [`StorageLock`] from before anything touches the directory
//! until after the root has ended *and* the local storage work its actors started has returned
//! ([`in_flight_io::settle`](crate::storage::in_flight_io::settle), at most 30 s): a checkpoint
//! write on tokio's blocking pool cannot be aborted and runs to its end even after the job
//! generator that started it stopped. Only then is the lock released and the end announced, so
//! [`Engine::stop`], [`Engine::await_termination`], [`Engine::wait_timeout`],
//! [`Engine::ended`] and [`EngineStopper::stop`] all return after the last write landed, and a
//! second process (or a new engine of this one) that takes the directory next finds it still.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use tokio::task::JoinHandle;

use crate::batch::take_savepoint::{self, SAVEPOINT_TIMEOUT};
use crate::checkpoint::savepoint::{SavepointError, SavepointInfo, export_latest};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::ingest::blocks::StreamId;
use crate::messages::Stop;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::http::http_server::HttpHandle;
use crate::observe::hub::{EventHub, EventSubscription};
use crate::observe::metrics::EngineMetrics;
use crate::pipeline::{Pipeline, ReceiverFactory};
use crate::storage::in_flight_io;
use crate::storage::location::Storage;
use crate::storage::storage_lock::{StorageLock, StorageLockError};
use crate::tree::driver::DriverArgs;
use crate::tree::names::Names;
use crate::tree::root::{Root, RootArgs, RootMsg};

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    root: ActorRef<RootMsg>,
    handle: JoinHandle<Result<(), String>>,
    ended: tokio::sync::watch::Receiver<bool>,
    hub: EventHub,
    outcome: Arc<Mutex<Option<EngineError>>>,
    control: ControlHandle,
    http: HttpHandle,
    names: Names,
}

impl Engine {
    /// Starts an engine running `pipeline` over the streams of `receivers`.
    ///
    /// # Errors
    ///
    /// [`EngineError::InvalidCheckpointPolicy`] if the checkpoint controls do not combine,
    /// [`EngineError::InvalidControlConfig`] if the control endpoint's settings are refused
    /// (a non-loopback address not explicitly allowed, see
    /// [`EngineConfig::validate_control`]),
    /// [`EngineError::Start`] if the tree could not be built (a name already in use, the
    /// event log unwritable), or [`EngineError::GaveUp`] if the driver kept failing to start.
    pub async fn start(
        config: EngineConfig,
        pipeline: Arc<dyn Pipeline>,
        receivers: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
    ) -> Result<Engine, EngineError> {
        config.checkpoint_policy.validate()?;
        config.validate_control()?;
        // Before anything touches the storage (the event log, the token, the checkpoint store,
        // the WALs): a second process on the same directory fails here, having touched nothing.
        let lock = StorageLock::acquire(&config.storage).map_err(|err| match err {
            StorageLockError::InUse { .. } => EngineError::StorageInUse(err.to_string()),
            other => EngineError::Start(other.to_string()),
        })?;
        let config = Arc::new(config);
        let hub = EventHub::default();
        hub.metrics().set_batch_interval(config.batch_interval);
        let outcome = Arc::new(Mutex::new(None));
        let control = hub.tree().clone();
        let http = HttpHandle::default();
        let args = RootArgs {
            config: Arc::clone(&config),
            driver: DriverArgs {
                config: Arc::clone(&config),
                pipeline,
                receivers,
                hub: hub.clone(),
                restore_from: Arc::new(Mutex::new(config.restore_from)),
            },
            hub: hub.clone(),
            outcome: Arc::clone(&outcome),
            control: control.clone(),
            http: http.clone(),
        };
        let storage_dir = config.storage.local_dir().map(std::path::Path::to_path_buf);
        match Actor::spawn(Some(config.names().root()), Root, args).await {
            Ok((root, handle)) => {
                // The root's end is also announced on a watch channel, so that it can be
                // awaited without consuming the engine (`wait_timeout`).
                let (ended_tx, ended) = tokio::sync::watch::channel(false);
                let handle = tokio::spawn(async move {
                    let joined = handle.await.map_err(|e| e.to_string());
                    // However the root ended (stopped, gave up, killed): the writes its actors
                    // left on blocking threads land first, then the directory is released,
                    // then the end is announced.
                    settle_and_release(storage_dir.as_deref(), lock).await;
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
                    http,
                    names: config.names(),
                })
            }
            Err(err) => {
                settle_and_release(storage_dir.as_deref(), lock).await;
                Err(take(&outcome).unwrap_or_else(|| EngineError::Start(err.to_string())))
            }
        }
    }

    /// A new subscription to the engine's events.
    pub fn events(&self) -> EventSubscription {
        self.hub.subscribe()
    }

    /// A sink that publishes into the engine's events, for what the engine's pipeline reports
    /// itself (a source's [`Event::SourceReset`](crate::Event::SourceReset)): subscribers, the
    /// event log, the metrics and the HTTP API see it like the engine's own events.
    pub fn event_sink(&self) -> crate::observe::hub::EventSink {
        self.hub.sink()
    }

    /// The address the control endpoint listens on (`None` without
    /// [`EngineConfig::control_addr`]).
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control.local_addr()
    }

    /// The address the HTTP server listens on (`None` without [`EngineConfig::http_addr`]).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.local_addr()
    }

    /// The engine's metrics (what `/metrics` serves), also without the HTTP server.
    pub fn metrics(&self) -> &EngineMetrics {
        self.hub.metrics()
    }

    /// Stops the engine: gracefully (receivers stop, everything received is processed and
    /// checkpointed, within [`EngineConfig::graceful_stop_timeout`]) or immediately; then waits
    /// for it to end.
    pub async fn stop(self, graceful: bool) -> Result<(), EngineError> {
        let _ = self
            .root
            .call(|reply| RootMsg::Stop(Stop { graceful, reply }), None)
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

    /// Resolves when the engine has ended, for whatever reason (a stop through the HTTP API,
    /// giving up); [`await_termination`](Self::await_termination) then says why at once.
    pub fn ended(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let _ = ended.wait_for(|ended| *ended).await;
        }
    }

    /// A handle that can stop this engine from another task (e.g. a signal handler).
    pub fn stopper(&self) -> EngineStopper {
        EngineStopper {
            root: self.root.clone(),
            ended: self.ended.clone(),
        }
    }
}

/// Waits for the local storage work of an ended engine (none for object storage), then drops
/// its claim on the directory.
async fn settle_and_release(dir: Option<&std::path::Path>, lock: Option<StorageLock>) {
    if let Some(dir) = dir {
        in_flight_io::settle(dir, "the engine's end").await;
    }
    drop(lock);
}

/// Savepoints (Flink's): a checkpoint exported with its state files to a location of the
/// user's, restorable after a code change (see `checkpoint::Savepoint`).
impl Engine {
    /// Takes a savepoint now: a checkpoint is taken, and once it is durable it is exported to
    /// `target` (a local directory or an object-store prefix that holds no savepoint or
    /// checkpoint yet). The engine goes on running.
    ///
    /// # Errors
    ///
    /// [`SavepointError::Refused`] when the pipeline has a stateful operator without an
    /// explicit id (the message names it) or no batch was generated yet;
    /// [`SavepointError::TargetNotEmpty`]; [`SavepointError::Engine`] when the checkpoint
    /// failed or did not become durable within two minutes; a storage error.
    pub async fn savepoint(&self, target: Storage) -> Result<SavepointInfo, SavepointError> {
        take_savepoint::take(&self.names, &self.hub, &target, SAVEPOINT_TIMEOUT).await
    }

    /// Stops with a savepoint: checks that one can be taken (as
    /// [`savepoint`](Self::savepoint)), stops gracefully (receivers stop, everything received
    /// is processed, a final checkpoint is written), then exports that final checkpoint to
    /// `target`: nothing is processed after the savepoint's state. Afterwards
    /// [`await_termination`](Self::await_termination) says how the engine ended.
    ///
    /// # Errors
    ///
    /// As [`savepoint`](Self::savepoint); a refusal leaves the engine running.
    pub async fn stop_with_savepoint(
        &self,
        target: Storage,
    ) -> Result<SavepointInfo, SavepointError> {
        let store = take_savepoint::check(&self.names).await?;
        self.stopper().stop(true).await;
        self.ended().await;
        export_latest(&store, &target).await
    }
}

/// Stops an engine from anywhere; see [`Engine::stopper`].
#[derive(Clone, Debug)]
pub struct EngineStopper {
    root: ActorRef<RootMsg>,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl EngineStopper {
    /// Asks the engine to stop (gracefully or not) and returns when it has ended, its storage
    /// work landed and its directory released (at once if it had already ended). Whoever owns
    /// the [`Engine`] sees the outcome in [`Engine::await_termination`].
    pub async fn stop(&self, graceful: bool) {
        let _ = self
            .root
            .call(|reply| RootMsg::Stop(Stop { graceful, reply }), None)
            .await;
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|ended| *ended).await;
    }
}

fn take(outcome: &Mutex<Option<EngineError>>) -> Option<EngineError> {
    outcome
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}
