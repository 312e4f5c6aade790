//! The streaming context: build a graph of DStreams, start it, stop it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use weir_actors::checkpoint::{CheckpointConfig, CheckpointId, CheckpointStore};
use weir_actors::engine::{Engine, EngineConfig};
use weir_actors::event_bus::EventSubscription;
use weir_actors::pipeline::{Receiver, ReceiverFactory};

use crate::Storage;
use crate::backpressure::{Admitted, RateConfig, RateControl};
use crate::dstream::graph::{GraphPipeline, GraphSettings, GraphShared};
use crate::dstream::input::ReceiverInput;
use crate::dstream::planned::{Direct, Planned};
use crate::dstream::{DStream, Data, OffsetSource, QueueStream, StartingOffsets, memo::lock};
use crate::error::{ComputeError, Error};
use crate::sources::file_stream::{FileStream, FileStreamOptions};
use crate::sources::socket::SocketTextReceiver;

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
    /// Rate limits of the sources, and backpressure. Default: no limit, no backpressure.
    pub rate: RateConfig,
}

impl StreamingConfig {
    /// Defaults, storing checkpoints and WALs in `storage`.
    pub fn new(storage: Storage) -> Self {
        let engine = EngineConfig::new(storage);
        StreamingConfig {
            parallelism: engine.executors,
            engine,
            allow_unmatched_state: false,
            rate: RateConfig::default(),
        }
    }

    /// Defaults, storing everything under the local directory `dir`.
    pub fn local(dir: impl AsRef<Path>) -> Self {
        StreamingConfig::new(Storage::local(dir.as_ref()))
    }

    /// Sets the batch interval.
    #[must_use]
    pub fn batch_interval(mut self, interval: Duration) -> Self {
        self.engine.batch_interval = interval;
        self.engine.graceful_stop_timeout = interval * 10;
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
    /// Settings that differ between the checkpoint and the current code: the current
    /// values take effect (`name: checkpoint -> now`).
    pub changed_settings: Vec<String>,
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
}

impl StreamingContext {
    /// A context with nothing in it yet.
    pub fn new(config: StreamingConfig) -> Self {
        let graph = Arc::new(GraphShared::new(GraphSettings {
            batch_interval_ms: (config.engine.batch_interval.as_millis() as u64).max(1),
            parallelism: config.parallelism.max(1),
            allow_unmatched_state: config.allow_unmatched_state,
        }));
        StreamingContext {
            rate: Arc::new(RateControl::new(config.rate)),
            config,
            graph,
            engine: None,
            restored: None,
            rate_task: None,
        }
    }

    /// Spark's `getOrCreate`: builds the context with `build` — the current code, always, so
    /// changed configuration and operators take effect — storing under the local directory
    /// `checkpoint_dir`; if it holds a valid checkpoint, the context restores from it (state
    /// and source positions matched by operator id, pending batches re-run) when it starts.
    ///
    /// # Errors
    ///
    /// `build` failed, or the checkpoint directory cannot be read (a directory with only
    /// damaged checkpoints is an error, not a silent fresh start).
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
        let mut context = build(StreamingConfig::new(storage.clone()))?;
        context.config.engine.storage = storage.clone();
        let store = CheckpointStore::open(storage.join("checkpoints"), CheckpointConfig::default())
            .await
            .map_err(|e| Error::Checkpoint(e.to_string()))?;
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
        context.restored = restored.map(|(id, data, skipped)| {
            let now = context.graph.interval_ms().to_string();
            let mut changed = Vec::new();
            if let Some(then) = data.settings.get("batch_interval_ms")
                && *then != now
            {
                changed.push(format!("batch_interval_ms: {then} -> {now}"));
            }
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
    pub fn receiver_stream(&self, factory: impl ReceiverFactory) -> DStream<Bytes> {
        self.receiver_stream_decoded(factory, |record| Ok(record.clone()))
    }

    /// A stream fed by a custom receiver, each stored record decoded by `decode`. A record
    /// that fails to decode fails its batch (it was stored, so it is not silently dropped).
    ///
    /// # Panics
    ///
    /// If the context has started.
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
    pub fn socket_text_stream(&self, addr: impl Into<String>) -> DStream<String> {
        self.socket_text_stream_with(SocketTextReceiver::new(addr))
    }

    /// [`socket_text_stream`](Self::socket_text_stream) with a configured receiver (line
    /// limits, backoff, rate limit).
    ///
    /// # Panics
    ///
    /// If the context has started.
    pub fn socket_text_stream_with(&self, receiver: SocketTextReceiver) -> DStream<String> {
        self.text_receiver_stream(move || Box::new(receiver.clone()) as Box<dyn Receiver>)
    }

    /// A stream of text lines from a receiver that stores UTF-8 lines.
    fn text_receiver_stream(&self, factory: impl ReceiverFactory) -> DStream<String> {
        self.receiver_stream_decoded(factory, |record| {
            std::str::from_utf8(record)
                .map(str::to_owned)
                .map_err(|e| format!("a stored record is not UTF-8: {e}").into())
        })
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
    pub fn text_file_stream(&self, dir: impl AsRef<Path>) -> DStream<String> {
        self.text_file_stream_with(dir, FileStreamOptions::new())
    }

    /// [`text_file_stream`](Self::text_file_stream) with options: files per batch, line
    /// length limit, bad UTF-8 and missing-file policies, remember window, filter.
    ///
    /// # Panics
    ///
    /// If the context has started.
    pub fn text_file_stream_with(
        &self,
        dir: impl AsRef<Path>,
        options: FileStreamOptions,
    ) -> DStream<String> {
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

    /// A stream of the batches pushed into `queue` (for tests and demos).
    ///
    /// # Panics
    ///
    /// If the context has started.
    pub fn queue_stream<T: Data>(&self, queue: &QueueStream<T>) -> DStream<T> {
        self.check_not_started();
        let node = self
            .graph
            .add_node("queue_stream", Planned::new(queue.clone()));
        DStream::from_node(&self.graph, node)
    }

    /// A direct stream over an offset-based source: one partition per source partition, an
    /// offset range per partition per batch (at most `max_per_partition` records, if set),
    /// positions kept in the checkpoint under the stream's uid (set one!), committed back to
    /// the source after each batch's output.
    ///
    /// # Panics
    ///
    /// If the context has started.
    pub fn direct_stream(
        &self,
        source: Arc<dyn OffsetSource>,
        start: StartingOffsets,
        max_per_partition: Option<u64>,
    ) -> DStream<Bytes> {
        self.check_not_started();
        let partitions = source.partitions().max(1);
        let node = self.graph.add_node(
            "direct_stream",
            Planned::new(Direct {
                source,
                partitions,
                start,
                max_per_partition,
                rate: self.rate.direct_rate().ok().flatten(),
                rate_config: self.config.rate,
                batch_interval: self.config.engine.batch_interval,
            }),
        );
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
        let engine = Engine::start(self.config.engine.clone(), pipeline, receivers).await?;
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

    /// Waits until the engine ends: `Ok` after a stop, an error if it failed or gave up.
    ///
    /// # Errors
    ///
    /// The engine failed or gave up ([`weir_actors::engine::EngineError::GaveUp`] says which
    /// actor, how often and why).
    pub async fn await_termination(mut self) -> Result<(), Error> {
        let result = match self.engine.take() {
            Some(engine) => Ok(engine.await_termination().await?),
            None => Err(Error::State("the streaming context has not started".into())),
        };
        self.end_rate_control();
        result
    }

    fn end_rate_control(&mut self) {
        if let Some(task) = self.rate_task.take() {
            task.abort();
        }
    }
}
