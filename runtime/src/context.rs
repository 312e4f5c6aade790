//! The streaming context: build a graph of DStreams, start it, stop it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_actors::EventSubscription;
use weir_actors::checkpoint::{
    CheckpointConfig, CheckpointId, CheckpointStore, RESTORED_FROM_LOCATION_SETTING,
    RESTORED_FROM_SETTING, Savepoint, SavepointInfo,
};
use weir_actors::pipeline::{Pipeline, Receiver, ReceiverFactory};
use weir_actors::{Engine, EngineConfig, StorageLock, StorageLockError};

use crate::backpressure::{Admitted, RateConfig, RateControl};
use crate::dstream::graph::{GraphPipeline, GraphSettings, GraphShared};
use crate::dstream::input::ReceiverInput;
use crate::dstream::planned::{Direct, Planned};
use crate::dstream::{
    DStream, Data, DirectStreamOptions, OffsetSource, QueueStream, StartingOffsets, StateBackend,
    memo::lock,
};
use crate::error::{ComputeError, Error};
use crate::sources::file_stream::{BinaryRecords, FileStream, FileStreamOptions};
use crate::sources::socket::SocketTextReceiver;
use crate::{Storage, Str};

/// How a streaming context runs. `StreamingConfig::new(storage)` has Spark's defaults; the
/// engine's settings (batch interval, block interval, executors, checkpoint policy, restart
/// policies, ...) are in [`engine`](Self::engine).
#[derive(Clone, Debug)]
pub struct StreamingConfig {
    /// The engine's configuration, including where checkpoints and WALs live.
    pub engine: EngineConfig,
    /// Partitions of shuffled streams (reduce_by_key, state, joins) and of received batches.
    /// Default: the number of cores.
    pub parallelism: usize,
    /// On restore, drop the state of operators that no longer exist instead of refusing to
    /// start. Default: false.
    pub allow_unmatched_state: bool,
    /// Where the stateful operators (`update_state_by_key`, `map_with_state`, the incremental
    /// windows) keep their per-key state: in memory, or on local disk for state larger than
    /// memory. Default: [`StateBackend::Memory`]. Checkpoints do not depend on it: a
    /// checkpoint taken with one backend restores with the other.
    pub state_backend: StateBackend,
    /// Incremental checkpoints: a stateful operator's state larger than 64 KiB is written
    /// as state files next to the checkpoint rather than inside it, and `map_with_state`
    /// writes only the keys changed since the last checkpoint (a delta over a base; a new
    /// base once the deltas outgrow it). Off: every checkpoint holds every operator's whole
    /// state inline. Either way a checkpoint restores whatever this setting is now.
    /// Default: true (the configuration file's `incremental_checkpoints` key).
    pub incremental_checkpoints: bool,
    /// With [`incremental_checkpoints`](Self::incremental_checkpoints), an operator's state
    /// of at most this many bytes stays inline in the checkpoint; larger state goes into state
    /// files (Flink's `state.storage.fs.memory-threshold`). Default: 64 KiB (the
    /// configuration file's `state_inline_max_bytes` key).
    pub state_inline_max_bytes: usize,
    /// Rate limits of the sources, and backpressure. Default: no limit, no backpressure.
    pub rate: RateConfig,
    /// Spark's `spark.streaming.stopGracefullyOnShutdown`: when true, [`start`] installs a
    /// handler for SIGTERM and SIGINT (Ctrl-C) that stops the context gracefully (everything
    /// received is processed and checkpointed, within the engine's graceful stop timeout);
    /// [`await_termination`] then returns `Ok`. Once installed, the handler stays for the life
    /// of the process (the signals no longer kill it; the application ends by returning from
    /// `main` after `await_termination`). Default: false — no handler is installed.
    ///
    /// [`start`]: StreamingContext::start
    /// [`await_termination`]: StreamingContext::await_termination
    pub stop_gracefully_on_shutdown: bool,
    /// A savepoint to start from (Flink's `run -s`): see
    /// [`restore_from_savepoint`](Self::restore_from_savepoint). Default: none.
    pub restore_from_savepoint: Option<Storage>,
}

impl StreamingConfig {
    /// Defaults, storing checkpoints and WALs in `storage`.
    pub fn new(storage: Storage) -> Self {
        let engine = EngineConfig::new(storage);
        StreamingConfig {
            parallelism: engine.executors,
            engine,
            allow_unmatched_state: false,
            state_backend: StateBackend::Memory,
            incremental_checkpoints: true,
            state_inline_max_bytes: crate::dstream::graph::INLINE_MAX,
            rate: RateConfig::default(),
            stop_gracefully_on_shutdown: false,
            restore_from_savepoint: None,
        }
    }

    /// Every setting that a checkpoint records (name → value): the engine's
    /// ([`EngineConfig::settings`]) and the runtime's — parallelism, rate limits and
    /// backpressure, graceful stop on shutdown. On restore, each one that differs is listed
    /// in [`RestoreInfo::changed_settings`]; the current values take effect.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let mut engine = self.engine.clone();
        engine.extra_settings.extend(self.runtime_settings());
        engine.settings()
    }

    /// The runtime's own settings, written into checkpoints through the engine's
    /// `extra_settings`.
    fn runtime_settings(&self) -> BTreeMap<String, String> {
        let rate = |r: Option<f64>| r.map_or_else(|| "unlimited".to_owned(), |r| r.to_string());
        let rates = &self.rate;
        let mut settings = BTreeMap::from([
            ("parallelism".to_owned(), self.parallelism.to_string()),
            (
                "receiver_max_rate".to_owned(),
                rate(rates.receiver_max_rate),
            ),
            (
                "max_rate_per_partition".to_owned(),
                rate(rates.max_rate_per_partition),
            ),
            (
                "min_rate_per_partition".to_owned(),
                rates.min_rate_per_partition.to_string(),
            ),
            (
                "backpressure".to_owned(),
                if rates.backpressure.is_some() {
                    "on"
                } else {
                    "off"
                }
                .to_owned(),
            ),
            (
                "state_backend".to_owned(),
                self.state_backend.name().to_owned(),
            ),
            (
                "stop_gracefully_on_shutdown".to_owned(),
                self.stop_gracefully_on_shutdown.to_string(),
            ),
            (
                "incremental_checkpoints".to_owned(),
                self.incremental_checkpoints.to_string(),
            ),
            (
                "state_inline_max_bytes".to_owned(),
                self.state_inline_max_bytes.to_string(),
            ),
        ]);
        if let Some(bp) = &rates.backpressure {
            settings.insert(
                "backpressure_initial_rate".to_owned(),
                rate(bp.initial_rate),
            );
            settings.insert(
                "backpressure_pid".to_owned(),
                format!(
                    "proportional={} integral={} derivative={} min_rate={}",
                    bp.pid.proportional, bp.pid.integral, bp.pid.derivative, bp.pid.min_rate
                ),
            );
        }
        settings
    }

    /// Defaults, storing everything under the local directory `dir`.
    pub fn local(dir: impl AsRef<Path>) -> Self {
        StreamingConfig::new(Storage::local(dir.as_ref()))
    }

    /// Serves the control endpoint on `addr` (e.g. `127.0.0.1:0`): `weir watch`, `weir
    /// events`, `weir kill` connect to it; see `docs/operations.md`. An address that is not
    /// a loopback one is refused at start unless `engine.control_allow_remote` is set (then
    /// every connection must present the token first).
    #[must_use]
    pub fn control_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.engine.control_addr = Some(addr);
        self
    }

    /// Allows a [`control_addr`](Self::control_addr) that is not a loopback address (such as
    /// `0.0.0.0:7070`): every connection must then present the token (written to
    /// `<checkpoint dir>/control-token`, mode 0600) as its first line; see
    /// `docs/operations.md`.
    #[must_use]
    pub fn control_allow_remote(mut self, allow: bool) -> Self {
        self.engine.control_allow_remote = allow;
        self
    }

    /// Serves HTTP on `addr` (e.g. `127.0.0.1:4040`): `/metrics` for Prometheus, the JSON API
    /// under `/api/v1/` and the web dashboard at `/`; see `docs/operations.md`. An address that
    /// is not a loopback one is refused at start unless
    /// [`http_allow_remote`](Self::http_allow_remote) is set.
    #[must_use]
    pub fn http_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.engine.http_addr = Some(addr);
        self
    }

    /// Allows an [`http_addr`](Self::http_addr) that is not a loopback address: every request
    /// must then carry the token (`Authorization: Bearer <token>`, the token in
    /// `<checkpoint dir>/control-token`), reads included.
    #[must_use]
    pub fn http_allow_remote(mut self, allow: bool) -> Self {
        self.engine.http_allow_remote = allow;
        self
    }

    /// Starts from the savepoint at `savepoint` (Flink's `run -s`), taken by
    /// [`StreamingContext::savepoint`], `weir savepoint` or `POST /api/v1/savepoints`, possibly
    /// by an earlier version of the program and moved since. At
    /// [`get_or_create`](StreamingContext::get_or_create), its state is matched by operator
    /// id — operators added since start empty; state of an operator that no longer exists is
    /// refused (unless [`allow_non_restored_state`](Self::allow_non_restored_state)), as is a
    /// changed state type — then copied into this job's own checkpoint directory as its
    /// newest checkpoint, so that nothing the job writes later refers to the savepoint. It is
    /// restored once: a later start that finds the job's checkpoints already descend from it
    /// (a restart after a crash, with the same option) resumes from them instead — also when
    /// the savepoint has since been moved or deleted (the job's newest checkpoint names the
    /// place it was restored from). A missing savepoint the job does not descend from is
    /// refused.
    #[must_use]
    pub fn restore_from_savepoint(mut self, savepoint: Storage) -> Self {
        self.restore_from_savepoint = Some(savepoint);
        self
    }

    /// Flink's `--allowNonRestoredState`: on restore, drop the state of operators that no
    /// longer exist, and state at a [schema version](crate::DStream::state_schema) the
    /// program cannot migrate, instead of refusing to start (the same as
    /// `allow_unmatched_state`).
    #[must_use]
    pub fn allow_non_restored_state(mut self, allow: bool) -> Self {
        self.allow_unmatched_state = allow;
        self
    }

    /// Sets the batch interval.
    #[must_use]
    pub fn batch_interval(mut self, interval: Duration) -> Self {
        self.engine.batch_interval = interval;
        self.engine.graceful_stop_timeout = interval * 10;
        self
    }

    /// Turns the receiver WAL on (the default) or off — Spark's
    /// `spark.streaming.receiver.writeAheadLog.enable`. Off, receiver streams
    /// ([`socket_text_stream`](StreamingContext::socket_text_stream), custom receivers) are
    /// at-most-once: what a dead driver held in memory is lost. Direct and file streams,
    /// which replay from their own positions, stay exactly once. See
    /// [`EngineConfig::receiver_wal`].
    #[must_use]
    pub fn receiver_wal(mut self, enabled: bool) -> Self {
        self.engine.receiver_wal = enabled;
        self
    }
}

/// What `get_or_create` found in the checkpoint directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoreInfo {
    /// The checkpoint the context restores from.
    pub checkpoint: CheckpointId,
    /// Its batch time.
    pub checkpoint_time_ms: u64,
    /// The batches it lists as pending: they run again first.
    pub pending_batches: Vec<u64>,
    /// Newer checkpoints that were unusable, with the reason.
    pub skipped: Vec<(CheckpointId, String)>,
    /// Settings that differ between the checkpoint and the current configuration
    /// ([`StreamingConfig::settings`]), one line each, `name: <in checkpoint> -> <now>`
    /// (`(unset)` for a setting only one side has); the current values take effect.
    pub changed_settings: Vec<String>,
}

/// The settings that differ between `then` (a checkpoint's) and `now`, one line each.
fn changed_settings(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let unset = "(unset)".to_owned();
    let names: BTreeSet<&String> = then.keys().chain(now.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let (a, b) = (
                then.get(name).unwrap_or(&unset),
                now.get(name).unwrap_or(&unset),
            );
            (a != b).then(|| format!("{name}: {a} -> {b}"))
        })
        .collect()
}

/// A streaming application: sources, transformations and outputs over an engine.
///
/// Build the graph, [`start`](Self::start), then [`await_termination`](Self::await_termination)
/// or [`stop`](Self::stop). [`get_or_create`](Self::get_or_create) restores from the latest
/// valid checkpoint when there is one.
#[derive(Debug)]
pub struct StreamingContext {
    config: StreamingConfig,
    graph: Arc<GraphShared>,
    engine: Option<Engine>,
    restored: Option<RestoreInfo>,
    rate: Arc<RateControl>,
    rate_task: Option<tokio::task::JoinHandle<()>>,
    signal_task: Option<tokio::task::JoinHandle<()>>,
    /// The claim on the storage directory that `get_or_create` took before reading anything
    /// (the engine shares it once started). It goes with the context, so after `stop` or
    /// `await_termination` returned — which is after the engine's storage work landed.
    lock: Option<StorageLock>,
}

impl StreamingContext {
    /// A context with nothing in it yet.
    pub fn new(config: StreamingConfig) -> Self {
        let graph = Arc::new(GraphShared::new(GraphSettings {
            batch_interval_ms: (config.engine.batch_interval.as_millis() as u64).max(1),
            parallelism: config.parallelism.max(1),
            allow_unmatched_state: config.allow_unmatched_state,
            state_backend: config.state_backend.clone(),
            in_order: config.engine.max_batches_in_flight <= 1,
            incremental_checkpoints: config.incremental_checkpoints,
            state_inline_max_bytes: config.state_inline_max_bytes,
        }));
        StreamingContext {
            rate: Arc::new(RateControl::new(config.rate)),
            config,
            graph,
            engine: None,
            restored: None,
            rate_task: None,
            signal_task: None,
            lock: None,
        }
    }

    /// Spark's `getOrCreate`: builds the context with `build` — the current code, always, so
    /// changed configuration and operators take effect — storing under the local directory
    /// `checkpoint_dir`; if it holds a valid checkpoint, the context restores from it (state
    /// and source positions matched by operator id, pending batches re-run) when it starts.
    ///
    /// # Errors
    ///
    /// `build` failed, the checkpoint directory cannot be read (a directory with only
    /// damaged checkpoints is an error, not a silent fresh start), or the checkpoint does not
    /// fit the graph `build` made ([`Error::Incompatible`], naming the operator: its state
    /// type changed, or it no longer exists and `allow_unmatched_state` is off).
    pub async fn get_or_create(
        checkpoint_dir: impl AsRef<Path>,
        build: impl FnOnce(StreamingConfig) -> Result<StreamingContext, Error>,
    ) -> Result<StreamingContext, Error> {
        Self::get_or_create_in(Storage::local(checkpoint_dir.as_ref()), build).await
    }

    /// [`get_or_create`](Self::get_or_create) over any storage (e.g. an opendal operator).
    ///
    /// # Errors
    ///
    /// As for [`get_or_create`](Self::get_or_create).
    pub async fn get_or_create_in(
        storage: Storage,
        build: impl FnOnce(StreamingConfig) -> Result<StreamingContext, Error>,
    ) -> Result<StreamingContext, Error> {
        // First of all, before the graph is built (its sinks clean up after a crash) or a
        // checkpoint read (opening the store removes temp files): a second process on the same
        // directory stops here, having touched nothing.
        let lock = StorageLock::acquire(&storage).map_err(|err| match err {
            StorageLockError::InUse { .. } => {
                Error::Engine(weir_actors::EngineError::StorageInUse(err.to_string()))
            }
            other => Error::Checkpoint(other.to_string()),
        })?;
        let mut context = build(StreamingConfig::new(storage.clone()))?;
        context.lock = lock;
        context.config.engine.storage = storage.clone();
        let store = CheckpointStore::open(storage.join("checkpoints"), CheckpointConfig::default())
            .await
            .map_err(|e| Error::Checkpoint(e.to_string()))?;
        if let Some(savepoint) = context.config.restore_from_savepoint.clone() {
            context.restore_savepoint(savepoint, &store).await?;
        }
        let restored = match context.config.engine.restore_from {
            Some(id) => Some((
                id,
                store
                    .read(id)
                    .await
                    .map_err(|e| Error::Checkpoint(e.to_string()))?,
                Vec::new(),
            )),
            None => store
                .read_latest()
                .await
                .map_err(|e| Error::Checkpoint(e.to_string()))?
                .map(|r| (r.id, r.data, r.skipped)),
        };
        // A checkpoint that does not fit the current graph (state of a removed operator, a
        // changed state type) is refused here, with the reason, instead of failing every start
        // of the driver until the root gives up.
        if let Some((_, data, _)) = &restored {
            // With the state files it references (read and CRC-checked), as the driver does.
            let spill = context.pipeline().spill_dir();
            let files = store
                .read_state_files(data, spill.as_deref())
                .await
                .map_err(|e| Error::Checkpoint(e.to_string()))?;
            // The graph keeps this state: the driver's first start does not read it again.
            context
                .pipeline()
                .restore_to_check(data, &files)
                .map_err(|e| Error::Incompatible(e.to_string()))?;
        }
        context.restored = restored.map(|(id, data, skipped)| {
            let changed = changed_settings(&data.settings, &context.config.settings());
            for line in &changed {
                tracing::info!("configuration changed since the checkpoint; now in effect: {line}");
            }
            RestoreInfo {
                checkpoint: id,
                checkpoint_time_ms: data.checkpoint_time_ms,
                pending_batches: data.pending_batches,
                skipped,
                changed_settings: changed,
            }
        });
        Ok(context)
    }

    /// Restores the savepoint at `savepoint` into the job's store (see
    /// [`StreamingConfig::restore_from_savepoint`]), unless the job's newest checkpoint
    /// descends from it already.
    async fn restore_savepoint(
        &mut self,
        savepoint: Storage,
        store: &CheckpointStore,
    ) -> Result<(), Error> {
        if self.config.engine.restore_from.is_some() {
            return Err(Error::Config(
                "restore_from (a checkpoint id) and restore_from_savepoint exclude each other"
                    .into(),
            ));
        }
        let location = savepoint.describe();
        let latest = store
            .read_latest()
            .await
            .map_err(|e| Error::Checkpoint(e.to_string()))?;
        if !Savepoint::is_present(&savepoint).await? {
            // Gone (moved or deleted) after the job was restored from it: the job's own
            // checkpoints carry on, as Flink needs `-s` only for the first submission. Not when
            // the job's newest checkpoint came from elsewhere: then the path is a mistake.
            let descends = latest.as_ref().and_then(|latest| {
                let settings = &latest.data.settings;
                (settings.get(RESTORED_FROM_LOCATION_SETTING) == Some(&location))
                    .then(|| settings.get(RESTORED_FROM_SETTING).cloned())
                    .flatten()
            });
            if let Some(id) = descends {
                tracing::info!(
                    savepoint = %location,
                    "the savepoint is gone; the job was restored from it before and resumes \
                     from its own checkpoints"
                );
                self.carry_savepoint_settings(id, location);
                return Ok(());
            }
        }
        let savepoint = Savepoint::open(savepoint).await?;
        // Every checkpoint of this run names the savepoint, so a later start sees where the
        // job came from.
        self.carry_savepoint_settings(savepoint.manifest().id.clone(), location);
        if latest.is_some_and(|latest| savepoint.restored_in(&latest.data)) {
            tracing::info!(
                savepoint = %savepoint.store().storage().describe(),
                "the job was restored from this savepoint before; resuming from its own checkpoints"
            );
            return Ok(());
        }
        // Refused before anything is written: the savepoint must fit the graph (with the state
        // files it references, read from the savepoint and CRC-checked: an incremental
        // checkpoint's state is a chain of them).
        let spill = self.pipeline().spill_dir();
        let files = savepoint
            .store()
            .read_state_files(savepoint.data(), spill.as_deref())
            .await
            .map_err(|e| Error::Checkpoint(format!("the savepoint: {e}")))?;
        self.pipeline()
            .restore_with_files(Some(savepoint.data()), &files)
            .map_err(|e| Error::Incompatible(format!("the savepoint: {e}")))?;
        savepoint.restore_into(store).await?;
        Ok(())
    }

    /// Makes every checkpoint of this run name the savepoint `id` at `location` it descends
    /// from.
    fn carry_savepoint_settings(&mut self, id: String, location: String) {
        let settings = &mut self.config.engine.extra_settings;
        settings.insert(RESTORED_FROM_SETTING.to_owned(), id);
        settings.insert(RESTORED_FROM_LOCATION_SETTING.to_owned(), location);
    }

    /// What `get_or_create` found to restore from (`None`: a fresh start).
    pub fn restored(&self) -> Option<&RestoreInfo> {
        self.restored.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &StreamingConfig {
        &self.config
    }

    /// The pipeline the engine would run (for [`crate::testing`]).
    pub(crate) fn pipeline(&self) -> GraphPipeline {
        GraphPipeline {
            graph: Arc::clone(&self.graph),
        }
    }

    /// What the last restore reported: operators that started without state, state dropped.
    pub fn restore_report(&self) -> Vec<String> {
        lock(&self.graph.restore_report).clone()
    }

    fn check_not_started(&self) {
        assert!(
            !self.graph.is_started(),
            "sources must be added before the streaming context starts"
        );
    }

    /// A stream fed by a custom receiver, one record per stored `Bytes`.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn receiver_stream(&self, factory: impl ReceiverFactory) -> DStream<Bytes> {
        self.receiver_stream_decoded(factory, |record| Ok(record.clone()))
    }

    /// A stream fed by a custom receiver, each stored record decoded by `decode`. A record
    /// that fails to decode fails its batch (it was stored, so it is not silently dropped).
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn receiver_stream_decoded<T: Data>(
        &self,
        factory: impl ReceiverFactory,
        decode: impl Fn(&Bytes) -> Result<T, weir_actors::pipeline::UserError> + Send + Sync + 'static,
    ) -> DStream<T> {
        self.check_not_started();
        let stream = self.graph.new_stream_id();
        let factory: Arc<dyn ReceiverFactory> = match self.rate.receiver_admission() {
            Ok(Some(admission)) => Arc::new(move || {
                Box::new(Admitted {
                    inner: factory.create(),
                    admission: Arc::clone(&admission),
                }) as Box<dyn Receiver>
            }),
            // An invalid rate is reported by `start`, which validates the configuration.
            Ok(None) | Err(_) => Arc::new(factory),
        };
        lock(&self.graph.receivers).push((stream, factory));
        let node = self.graph.add_node(
            "receiver_stream",
            ReceiverInput {
                stream,
                partitions: self.graph.parallelism(),
                decode: Box::new(move |record| decode(record).map_err(ComputeError::from)),
            },
        );
        DStream::from_node(&self.graph, node)
    }

    /// A stream of the text lines a TCP server sends (Spark's `socketTextStream`): a receiver
    /// connects to `addr` (`host:port`), reconnects with backoff when the connection drops,
    /// and stores the lines it reads in blocks (durable in the WAL). A plain TCP sender gets
    /// no acknowledgement, so what is in flight when the process dies is lost.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn socket_text_stream(&self, addr: impl Into<String>) -> DStream<Str> {
        self.socket_text_stream_with(SocketTextReceiver::new(addr))
    }

    /// [`socket_text_stream`](Self::socket_text_stream) with a configured receiver (line
    /// limits, backoff, rate limit).
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn socket_text_stream_with(&self, receiver: SocketTextReceiver) -> DStream<Str> {
        self.text_receiver_stream(move || Box::new(receiver.clone()) as Box<dyn Receiver>)
    }

    /// A stream of text lines from a receiver that stores UTF-8 lines.
    fn text_receiver_stream(&self, factory: impl ReceiverFactory) -> DStream<Str> {
        self.receiver_stream_decoded(factory, |record| {
            // A view of the stored block: no copy per line (a short line is inline).
            Str::from_utf8_of(record)
                .map_err(|e| format!("a stored record is not UTF-8: {e}").into())
        })
    }

    /// A stream of the records a TCP server sends (Spark's `socketStream` with a converter):
    /// like [`socket_text_stream`](Self::socket_text_stream), the receiver frames the byte
    /// stream into lines (so records can be cut into blocks and written to the WAL), and
    /// `convert` turns each stored line into a record. A line that does not convert fails its
    /// batch (it was stored, so it is not silently dropped); skip bad input in `convert` by
    /// returning an `Option` record instead.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn socket_stream<T: Data>(
        &self,
        addr: impl Into<String>,
        convert: impl Fn(&str) -> Result<T, weir_actors::pipeline::UserError> + Send + Sync + 'static,
    ) -> DStream<T> {
        let receiver = SocketTextReceiver::new(addr);
        self.receiver_stream_decoded(
            move || Box::new(receiver.clone()) as Box<dyn Receiver>,
            move |record| {
                let line = std::str::from_utf8(record)
                    .map_err(|e| format!("a stored record is not UTF-8: {e}"))?;
                convert(line)
            },
        )
    }

    /// Each batch of `streams` transformed together (Spark's `StreamingContext.transform`);
    /// see [`crate::dstream::transform_of`].
    ///
    /// # Panics
    ///
    /// If `streams` is empty, or the context has started.
    pub fn transform<T: Data, U: Data>(
        &self,
        streams: &[DStream<T>],
        f: impl Fn(
            u64,
            &[Vec<crate::dstream::Partition<T>>],
        ) -> Result<Vec<U>, weir_actors::pipeline::UserError>
        + Send
        + Sync
        + 'static,
    ) -> DStream<U> {
        self.check_not_started();
        crate::dstream::transform_of(streams, f)
    }

    /// The union of several streams of the same type (Spark's `StreamingContext.union`); see
    /// [`crate::dstream::union_of`].
    ///
    /// # Panics
    ///
    /// If `streams` is empty, or the context has started.
    pub fn union<T: Data>(&self, streams: &[DStream<T>]) -> DStream<T> {
        self.check_not_started();
        crate::dstream::union_of(streams)
    }

    /// A stream of the text lines of the files that appear in `dir` (Spark's
    /// `textFileStream`): every batch reads the files that arrived since the previous one,
    /// each file exactly once across restarts (the batch's file list is in the checkpoint).
    /// Move files in by rename; hidden (`.`), `_`-prefixed and `.tmp`/`.partial`-style names
    /// are ignored. Give the stream a [`uid`](DStream::uid). See
    /// [`crate::sources::file_stream`] for the rules and the bad-input policy.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let input = tempfile::tempdir()?;
    /// std::fs::write(input.path().join("a.txt"), "one\ntwo\n")?;
    /// let lines = Collected::default();
    /// let (dir, out) = (input.path().to_path_buf(), lines.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     out.collect(&ctx.text_file_stream(&dir).uid("input"));
    /// })?;
    /// clock.run(1).await?;
    /// std::fs::write(input.path().join(".b.txt.tmp"), "three\n")?; // ignored while written
    /// std::fs::rename(input.path().join(".b.txt.tmp"), input.path().join("b.txt"))?;
    /// clock.run(1).await?;
    /// assert_eq!(lines.all_sorted(), vec![vec!["one", "two"], vec!["three"]]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn text_file_stream(&self, dir: impl AsRef<Path>) -> DStream<Str> {
        self.text_file_stream_with(dir, FileStreamOptions::new())
    }

    /// [`text_file_stream`](Self::text_file_stream) with options: files per batch, line
    /// length limit, bad UTF-8 and missing-file policies, remember window, filter.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn text_file_stream_with(
        &self,
        dir: impl AsRef<Path>,
        options: FileStreamOptions,
    ) -> DStream<Str> {
        self.check_not_started();
        let node = self.graph.add_node(
            "text_file_stream",
            Planned::new(FileStream {
                dir: dir.as_ref().to_path_buf(),
                partitions: self.graph.parallelism(),
                options,
            }),
        );
        DStream::from_node(&self.graph, node)
    }

    /// A stream of the fixed-length binary records in the files that appear in `dir` (Spark's
    /// `binaryRecordsStream`): the files are chosen, planned and read exactly once as by
    /// [`text_file_stream_with`](Self::text_file_stream_with) (same `options`; the line
    /// policies do not apply), and each file's bytes are cut into records of `record_len`
    /// bytes. A trailing piece shorter than a record is skipped and reported in the stats
    /// (`partial_records`). Give the stream a [`uid`](DStream::uid).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::sources::file_stream::FileStreamOptions;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let input = tempfile::tempdir()?;
    /// std::fs::write(input.path().join("a.bin"), [1u8, 2, 3, 4, 5])?;
    /// let (dir, out) = (input.path().to_path_buf(), Collected::default());
    /// let o = out.clone();
    /// let mut clock = ManualClock::new(1000, 1, move |ctx| {
    ///     let records = ctx.binary_records_stream(&dir, 2, FileStreamOptions::new());
    ///     o.collect(&records.uid("input").map(|r| r.to_vec()));
    /// })?;
    /// clock.run(1).await?;
    /// assert_eq!(out.batch(1000), vec![vec![1, 2], vec![3, 4]]); // 5 is a partial record
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn binary_records_stream(
        &self,
        dir: impl AsRef<Path>,
        record_len: usize,
        options: FileStreamOptions,
    ) -> DStream<Bytes> {
        self.check_not_started();
        if record_len == 0 {
            self.graph.invalidate(format!(
                "binary_records_stream over {}: the record length must be at least 1 byte",
                dir.as_ref().display()
            ));
        }
        let node = self.graph.add_node(
            "binary_records_stream",
            Planned::new(BinaryRecords {
                files: FileStream {
                    dir: dir.as_ref().to_path_buf(),
                    partitions: self.graph.parallelism(),
                    options,
                },
                record_len,
            }),
        );
        DStream::from_node(&self.graph, node)
    }

    /// A stream of the batches pushed into `queue` (for tests and demos).
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn queue_stream<T: Data>(&self, queue: &QueueStream<T>) -> DStream<T> {
        self.check_not_started();
        let node = self
            .graph
            .add_node("queue_stream", Planned::new(queue.clone()));
        DStream::from_node(&self.graph, node)
    }

    /// A direct stream over an offset-based source: one partition per source partition, an
    /// offset range per partition per batch (at most `max_per_partition` records, if set, and
    /// at most 64 MiB of records per batch), positions kept in the checkpoint under the
    /// stream's uid (set one!), committed back to the source after each batch's output.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn direct_stream(
        &self,
        source: Arc<dyn OffsetSource>,
        start: StartingOffsets,
        max_per_partition: Option<u64>,
    ) -> DStream<Bytes> {
        let options = DirectStreamOptions::new();
        let options = match max_per_partition {
            Some(records) => options.max_per_partition(records),
            None => options,
        };
        self.direct_stream_with(source, start, options)
    }

    /// [`direct_stream`](Self::direct_stream) with options: records per partition and bytes
    /// per batch (see [`DirectStreamOptions`]).
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[track_caller]
    pub fn direct_stream_with(
        &self,
        source: Arc<dyn OffsetSource>,
        start: StartingOffsets,
        options: DirectStreamOptions,
    ) -> DStream<Bytes> {
        self.check_not_started();
        let partitions = source.partitions().max(1);
        let node = self.graph.add_node(
            "direct_stream",
            Planned::new(Direct {
                source,
                partitions,
                start,
                options,
                rate: self.rate.direct_rate().ok().flatten(),
                rate_config: self.config.rate,
                batch_interval: self.config.engine.batch_interval,
                positions: std::sync::Mutex::default(),
            }),
        );
        DStream::from_node(&self.graph, node)
    }

    /// A Kafka direct stream (Spark's `createDirectStream`, Flink's `KafkaSource`): each batch
    /// reads an offset range of every partition of the topics (or of the topics matching the
    /// pattern, found again at every batch), planned and checkpointed before the batch runs,
    /// read by [`KafkaDirectOptions::tasks`](crate::kafka::KafkaDirectOptions::tasks) tasks,
    /// committed to the consumer group after the batch's outputs complete. See
    /// docs/kafka.md, "The direct stream". Invalid options make [`start`](Self::start) fail.
    ///
    /// # Panics
    ///
    /// If the context has started.
    #[cfg(feature = "kafka")]
    #[track_caller]
    pub fn kafka_direct_stream(
        &self,
        options: crate::kafka::KafkaDirectOptions,
    ) -> DStream<crate::kafka::KafkaRecord> {
        self.check_not_started();
        if let Err(why) = options.validate() {
            self.graph.invalidate(why);
        }
        let planner = crate::kafka::direct::KafkaDirect::new(
            options,
            self.graph.parallelism(),
            self.rate.direct_rate().ok().flatten(),
            self.config.rate,
            self.config.engine.batch_interval,
            self.graph.events.clone(),
        );
        let node = self
            .graph
            .add_node("kafka_direct_stream", Planned::new(planner));
        DStream::from_node(&self.graph, node)
    }

    /// Starts the engine: receivers start, the batch clock starts (from the checkpoint's
    /// alignment when restoring).
    ///
    /// # Errors
    ///
    /// The graph is invalid (e.g. no output operation), the context was started before, or
    /// the engine could not start (e.g. the checkpoint does not fit the graph).
    pub async fn start(&mut self) -> Result<(), Error> {
        if !self.graph.mark_started() {
            return Err(Error::State(
                "the streaming context was already started".into(),
            ));
        }
        self.graph.validate().map_err(Error::InvalidGraph)?;
        self.config
            .rate
            .validate(self.config.engine.batch_interval)
            .map_err(|e| Error::Config(format!("rate control: {e}")))?;
        let pipeline = Arc::new(GraphPipeline {
            graph: Arc::clone(&self.graph),
        });
        let receivers = lock(&self.graph.receivers).clone();
        let mut engine_config = self.config.engine.clone();
        engine_config
            .extra_settings
            .extend(self.config.runtime_settings());
        // Installed before the engine starts, so that no signal is missed once `start`
        // returns; failing to install it fails the start (the user asked for it).
        let signals = if self.config.stop_gracefully_on_shutdown {
            Some(ShutdownSignals::install().map_err(|e| {
                Error::Config(format!(
                    "stop_gracefully_on_shutdown: cannot install the signal handler: {e}"
                ))
            })?)
        } else {
            None
        };
        let engine = Engine::start(engine_config, pipeline, receivers).await?;
        self.graph.events.attach(engine.event_sink());
        if let Some(signals) = signals {
            let stopper = engine.stopper();
            self.signal_task = Some(tokio::spawn(async move {
                let signal = signals.recv().await;
                tracing::info!("{signal} received: stopping the streaming context gracefully");
                stopper.stop(true).await;
            }));
        }
        self.rate_task = self
            .rate
            .spawn(self.config.engine.batch_interval, engine.events())
            .map_err(|e| Error::Config(format!("rate control: {e}")))?;
        self.engine = Some(engine);
        Ok(())
    }

    /// A new subscription to the engine's events.
    ///
    /// # Errors
    ///
    /// The context has not started.
    pub fn events(&self) -> Result<EventSubscription, Error> {
        self.engine
            .as_ref()
            .map(Engine::events)
            .ok_or_else(|| Error::State("the streaming context has not started".into()))
    }

    /// The address the control endpoint listens on: `None` before the context started, or
    /// without [`StreamingConfig::control_addr`].
    pub fn control_addr(&self) -> Option<std::net::SocketAddr> {
        self.engine.as_ref().and_then(Engine::control_addr)
    }

    /// Resolves when the engine has ended for whatever reason — a stop through the HTTP API,
    /// giving up — so that a program can select on it; `None` before the context started.
    /// [`await_termination`](Self::await_termination) then says why at once.
    pub fn ended(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.engine.as_ref().map(Engine::ended)
    }

    /// The address the HTTP server listens on: `None` before the context started, or without
    /// [`StreamingConfig::http_addr`].
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.engine.as_ref().and_then(Engine::http_addr)
    }

    /// Stops: gracefully (receivers stop, everything received is processed and checkpointed)
    /// or immediately; then waits for the engine to end.
    ///
    /// # Errors
    ///
    /// The engine had failed or gave up.
    pub async fn stop(mut self, graceful: bool) -> Result<(), Error> {
        self.end_rate_control();
        match self.engine.take() {
            Some(engine) => Ok(engine.stop(graceful).await?),
            None => Ok(()),
        }
    }

    /// Takes a savepoint now (Flink's `savepoint`): a checkpoint, once durable, exported with
    /// every state file it references to `target` — a local directory or an object-store
    /// prefix holding no savepoint or checkpoint yet — which can then be copied anywhere and
    /// restored with [`StreamingConfig::restore_from_savepoint`], also by a changed program.
    /// The context goes on running. See `docs/architecture.md`, "Savepoints".
    ///
    /// # Errors
    ///
    /// [`Error::Savepoint`]: a stateful operator or source has no explicit
    /// [`uid`](DStream::uid) (the message names it), no batch has run yet, the target is not
    /// empty, the checkpoint failed; [`Error::State`] before the context started.
    pub async fn savepoint(&self, target: Storage) -> Result<SavepointInfo, Error> {
        let engine = self
            .engine
            .as_ref()
            .ok_or_else(|| Error::State("the streaming context has not started".into()))?;
        Ok(engine.savepoint(target).await?)
    }

    /// Stops gracefully with a savepoint (Flink's `stop --savepointPath`): receivers stop,
    /// everything received is processed and checkpointed, and that final checkpoint is
    /// exported to `target` (as by [`savepoint`](Self::savepoint)): nothing is processed after
    /// the savepoint's state.
    ///
    /// # Errors
    ///
    /// As [`savepoint`](Self::savepoint): a refusal (say, an operator without an id) stops
    /// nothing, the context runs on; or the engine failed or gave up.
    pub async fn stop_with_savepoint(&mut self, target: Storage) -> Result<SavepointInfo, Error> {
        let Some(mut engine) = self.engine.take() else {
            return Err(Error::State("the streaming context has not started".into()));
        };
        let taken = match engine.stop_with_savepoint(target).await {
            // Refused before anything was stopped: the context runs on.
            Err(err) if !engine.wait_timeout(Duration::ZERO).await => {
                self.engine = Some(engine);
                return Err(err.into());
            }
            taken => taken,
        };
        self.end_rate_control();
        let ended = engine.await_termination().await;
        let info = taken?;
        ended?;
        Ok(info)
    }

    /// Waits until the engine ends: `Ok` after a stop, an error if it failed or gave up.
    ///
    /// # Errors
    ///
    /// The engine failed or gave up ([`weir_actors::EngineError::GaveUp`] says which
    /// actor, how often and why).
    pub async fn await_termination(mut self) -> Result<(), Error> {
        let result = match self.engine.take() {
            Some(engine) => Ok(engine.await_termination().await?),
            None => Err(Error::State("the streaming context has not started".into())),
        };
        self.end_rate_control();
        result
    }

    /// Waits at most `timeout` for the context to end (Spark's `awaitTerminationOrTimeout`):
    /// `Ok(true)` if it has stopped, `Ok(false)` if it is still running after `timeout` (the
    /// context stays usable: wait again, or stop it), an error if the engine failed or gave
    /// up.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use weir::dstream::QueueStream;
    /// use weir::{StreamingConfig, StreamingContext};
    ///
    /// let dir = tempfile::tempdir()?;
    /// let config = StreamingConfig::local(dir.path()).batch_interval(Duration::from_millis(50));
    /// let mut ctx = StreamingContext::new(config);
    /// ctx.queue_stream(&QueueStream::<u32>::new(true, 1)).count().foreach_batch(|_| Ok(()));
    /// ctx.start().await?;
    /// assert!(!ctx.await_termination_timeout(Duration::from_millis(20)).await?);
    /// ctx.stop(true).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The context has not started, or the engine failed or gave up.
    pub async fn await_termination_timeout(&mut self, timeout: Duration) -> Result<bool, Error> {
        let Some(engine) = self.engine.as_mut() else {
            return Err(Error::State("the streaming context has not started".into()));
        };
        if !engine.wait_timeout(timeout).await {
            return Ok(false);
        }
        let result = match self.engine.take() {
            Some(engine) => engine.await_termination().await,
            None => Ok(()),
        };
        self.end_rate_control();
        result.map(|()| true).map_err(Error::from)
    }

    fn end_rate_control(&mut self) {
        if let Some(task) = self.rate_task.take() {
            task.abort();
        }
        if let Some(task) = self.signal_task.take() {
            task.abort();
        }
    }
}

/// The shutdown signals a context listens to with `stop_gracefully_on_shutdown`.
struct ShutdownSignals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Installs the handlers now (a signal arriving from here on is seen).
    fn install() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(ShutdownSignals {
                terminate: signal(SignalKind::terminate())?,
                interrupt: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(ShutdownSignals {})
        }
    }

    /// Waits for the first signal; says which.
    async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => "SIGTERM",
                _ = self.interrupt.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = &mut self;
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_differing_setting_is_listed_once() {
        let then = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
            ("gone".to_owned(), "x".to_owned()),
        ]);
        let now = BTreeMap::from([
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "3".to_owned()),
            ("new".to_owned(), "y".to_owned()),
        ]);
        assert_eq!(
            changed_settings(&then, &now),
            vec!["b: 2 -> 3", "gone: x -> (unset)", "new: (unset) -> y"]
        );
        assert!(changed_settings(&now, &now).is_empty());
    }
}
