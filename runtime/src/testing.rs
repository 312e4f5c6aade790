//! Running a streaming graph batch by batch on a manual clock, for operator tests.
//!
//! [`ManualClock`] drives a [`StreamingContext`]'s graph without the engine: batch `k` has time
//! `k × interval` (like Spark's `TestSuiteBase`, whose clock starts at zero), every job of a
//! batch runs concurrently, then the batch completes and a checkpoint snapshot is taken — the
//! same calls the engine makes, in the same order. [`ManualClock::restart`] rebuilds the graph
//! from the same code and restores it from the last snapshot, as a driver restart would.
//! [`Collected`] gathers what an output saw, per batch.
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use weir::dstream::QueueStream;
//! use weir::testing::{Collected, ManualClock};
//!
//! let queue = QueueStream::new(true, 2);
//! queue.push(vec!["a b".to_owned(), "b".to_owned()]);
//! let out = Collected::default();
//! let build = {
//!     let (queue, out) = (queue.clone(), out.clone());
//!     move |ctx: &weir::StreamingContext| {
//!         let words = ctx.queue_stream(&queue).flat_map(|l: &String| {
//!             l.split_whitespace().map(str::to_owned).collect::<Vec<_>>()
//!         });
//!         out.collect(&words.map(|w| (w.clone(), 1u64)).reduce_by_key(|a, b| a + b));
//!     }
//! };
//! let mut clock = ManualClock::new(1000, 2, build)?;
//! clock.run(1).await?;
//! assert_eq!(out.sorted(1000), vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_actors::checkpoint::{CheckpointData, CheckpointStore};
use weir_actors::pipeline::{BatchInput, JobContext, Pipeline, StateFiles};

use crate::UserError;
use crate::dstream::memo::lock;
use crate::dstream::{DStream, Data, OffsetSource};
use crate::error::Error;
use crate::{Storage, StreamingConfig, StreamingContext};

/// What an output saw: batch time → elements, in partition order.
#[derive(Debug)]
pub struct Collected<T> {
    batches: Arc<Mutex<BTreeMap<u64, Vec<T>>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            batches: Arc::clone(&self.batches),
        }
    }
}

impl<T> Default for Collected<T> {
    fn default() -> Self {
        Collected {
            batches: Arc::default(),
        }
    }
}

impl<T: Data> Collected<T> {
    /// Adds an output to `stream` that records every batch here (a re-run replaces it).
    pub fn collect(&self, stream: &DStream<T>) {
        let batches = Arc::clone(&self.batches);
        stream.foreach_batch(move |batch| {
            lock(&batches).insert(batch.time_ms, batch.iter().cloned().collect());
            Ok(())
        });
    }

    /// Every batch recorded so far.
    pub fn batches(&self) -> BTreeMap<u64, Vec<T>> {
        lock(&self.batches).clone()
    }

    /// The elements of batch `time` (empty if none were recorded).
    pub fn batch(&self, time: u64) -> Vec<T> {
        lock(&self.batches).get(&time).cloned().unwrap_or_default()
    }
}

impl<T: Data + Ord> Collected<T> {
    /// The elements of batch `time`, sorted.
    pub fn sorted(&self, time: u64) -> Vec<T> {
        let mut batch = self.batch(time);
        batch.sort();
        batch
    }

    /// Every batch's elements, sorted, in batch order (batches with no output are absent).
    pub fn all_sorted(&self) -> Vec<Vec<T>> {
        lock(&self.batches)
            .values()
            .map(|b| {
                let mut b = b.clone();
                b.sort();
                b
            })
            .collect()
    }
}

type Build = Box<dyn Fn(&StreamingContext) + Send + Sync>;

/// Drives a graph batch by batch; see the [module documentation](self).
pub struct ManualClock {
    interval_ms: u64,
    /// The configuration changes made so far ([`with_config`](ManualClock::with_config),
    /// [`restart_with_config`](ManualClock::restart_with_config)), applied at every rebuild.
    configured: StreamingConfig,
    build: Build,
    context: StreamingContext,
    next_batch: u64,
    last_checkpoint: Option<CheckpointData>,
    /// Where snapshots are written as checkpoints, if anywhere (see
    /// [`ManualClock::checkpoint_to`]).
    store: Option<Arc<CheckpointStore>>,
    /// The time spent taking and writing checkpoints so far.
    checkpointing: std::time::Duration,
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualClock")
            .field("interval_ms", &self.interval_ms)
            .field("next_batch", &self.next_batch)
            .finish_non_exhaustive()
    }
}

impl ManualClock {
    /// Builds the graph with `build` (batch interval `interval_ms`, `parallelism` partitions);
    /// the first batch will be at `interval_ms`.
    ///
    /// # Errors
    ///
    /// The graph is invalid (e.g. has no output).
    pub fn new(
        interval_ms: u64,
        parallelism: usize,
        build: impl Fn(&StreamingContext) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let build: Build = Box::new(build);
        let configured = Self::base_config(interval_ms, parallelism);
        let context = Self::build_configured(configured.clone(), &build);
        context
            .pipeline()
            .restore(None)
            .map_err(|e| Error::Incompatible(e.to_string()))?;
        Ok(ManualClock {
            interval_ms,
            configured,
            build,
            context,
            next_batch: interval_ms,
            last_checkpoint: None,
            store: None,
            checkpointing: std::time::Duration::ZERO,
        })
    }

    /// [`new`](Self::new) with the configuration changed by `configure` (e.g. rate limits).
    ///
    /// # Errors
    ///
    /// The graph is invalid (e.g. has no output).
    pub fn with_config(
        interval_ms: u64,
        parallelism: usize,
        configure: impl FnOnce(&mut StreamingConfig),
        build: impl Fn(&StreamingContext) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let mut clock = Self::new(interval_ms, parallelism, build)?;
        clock.restart_with_config(configure)?;
        Ok(clock)
    }

    /// The configuration before any change: in memory, the clock's interval and parallelism.
    fn base_config(interval_ms: u64, parallelism: usize) -> StreamingConfig {
        let mut config = StreamingConfig::new(Storage::memory())
            .batch_interval(Duration::from_millis(interval_ms));
        config.parallelism = parallelism;
        config
    }

    fn build_configured(config: StreamingConfig, build: &Build) -> StreamingContext {
        let context = StreamingContext::new(config);
        build(&context);
        context
    }

    /// The context the graph was last built on (e.g. for its restore report).
    pub fn context(&self) -> &StreamingContext {
        &self.context
    }

    /// The time of the next batch.
    pub fn next_batch_time(&self) -> u64 {
        self.next_batch
    }

    /// Runs the next `batches` batches: plans each, runs all its jobs concurrently, completes
    /// it and takes a checkpoint snapshot.
    ///
    /// # Errors
    ///
    /// A job failed (the message names the job and the cause).
    pub async fn run(&mut self, batches: usize) -> Result<(), Error> {
        let pipeline = self.context.pipeline();
        for _ in 0..batches {
            let time = self.next_batch;
            let input = BatchInput {
                batch_time_ms: time,
                blocks: BTreeMap::new(),
            };
            let jobs = pipeline
                .jobs(&input)
                .map_err(|e| Error::State(format!("batch {time}: {e}")))?;
            let runs = jobs.iter().map(|job| {
                let ctx = JobContext {
                    batch_time_ms: time,
                    attempt: 1,
                    executor: "manual".to_owned(),
                };
                let run = (job.run)(ctx);
                let id = job.id.clone();
                async move { run.await.map_err(|e| format!("job {id}: {e}")) }
            });
            for result in futures::future::join_all(runs).await {
                result.map_err(|e| Error::State(format!("batch {time}: {e}")))?;
            }
            pipeline.batch_completed(time);
            self.checkpoint(time, Vec::new(), Some(time))
                .map_err(|e| Error::State(format!("snapshot after batch {time}: {e}")))?;
            self.next_batch += self.interval_ms;
        }
        Ok(())
    }

    /// Crashes in the middle of the next batch: plans it and takes the snapshot the engine's
    /// "before" checkpoint carries (the batch pending), runs none of its jobs, then rebuilds the
    /// graph and restores from that snapshot. The next [`run`](Self::run) re-runs the batch,
    /// as a restarted driver re-runs its pending batches.
    ///
    /// # Errors
    ///
    /// Planning or the snapshot failed, or the snapshot does not fit the rebuilt graph.
    pub fn crash_mid_batch(&mut self) -> Result<(), Error> {
        let pipeline = self.context.pipeline();
        let time = self.next_batch;
        pipeline
            .jobs(&BatchInput {
                batch_time_ms: time,
                blocks: BTreeMap::new(),
            })
            .map_err(|e| Error::State(format!("batch {time}: {e}")))?;
        let completed = self.last_checkpoint.as_ref().map(|c| c.checkpoint_time_ms);
        self.checkpoint(time, vec![time], completed)
            .map_err(|e| Error::State(format!("snapshot before batch {time}: {e}")))?;
        self.restart()
    }

    /// From now on, writes every snapshot as a checkpoint into `store` — incrementally if the
    /// configuration says so ([`StreamingConfig::incremental_checkpoints`]), with the state
    /// files the snapshot asks for, as the engine does — and restores from what it wrote,
    /// reading the state files back from `store`. Needs a multi-thread tokio runtime.
    pub fn checkpoint_to(&mut self, store: Arc<CheckpointStore>) {
        self.store = Some(store);
    }

    /// The last checkpoint taken (written into the store, if one is set).
    pub fn last_checkpoint(&self) -> Option<&CheckpointData> {
        self.last_checkpoint.as_ref()
    }

    /// The wall time spent so far taking checkpoints (the operators' snapshots) and writing
    /// them, state files included, out of the time [`run`](Self::run) took.
    pub fn checkpoint_time(&self) -> std::time::Duration {
        self.checkpointing
    }

    /// Takes the snapshot as of `completed` for a checkpoint at `time` listing `pending`.
    fn checkpoint(
        &mut self,
        time: u64,
        pending: Vec<u64>,
        completed: Option<u64>,
    ) -> Result<(), UserError> {
        let started = std::time::Instant::now();
        let taken = self.take_checkpoint(time, pending, completed);
        self.checkpointing += started.elapsed();
        taken
    }

    /// [`checkpoint`](Self::checkpoint), untimed.
    fn take_checkpoint(
        &mut self,
        time: u64,
        pending: Vec<u64>,
        completed: Option<u64>,
    ) -> Result<(), UserError> {
        let pipeline = self.context.pipeline();
        let data = |operator_state| CheckpointData {
            checkpoint_time_ms: time,
            pending_batches: pending,
            batch_interval_ms: self.interval_ms,
            zero_time_ms: 0,
            settings: BTreeMap::new(),
            source_offsets: Vec::new(),
            operator_state,
            graph_fingerprint: pipeline.fingerprint(),
        };
        let Some(store) = &self.store else {
            self.last_checkpoint = Some(data(pipeline.snapshot(completed)?));
            return Ok(());
        };
        let reservation = store.reserve()?;
        let id = reservation.id();
        let snapshot = pipeline.snapshot_for(id, completed)?;
        let data = data(snapshot.states);
        let written = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(store.write_reserved_with_uploads(
                reservation,
                data,
                snapshot.uploads,
            ))
        });
        match written {
            Ok((_, written)) => {
                pipeline.checkpoint_ended(id, Some(&written));
                self.last_checkpoint = Some(written);
                Ok(())
            }
            Err(e) => {
                pipeline.checkpoint_ended(id, None);
                Err(e.into())
            }
        }
    }

    /// Rebuilds the graph from the same code and configuration (with the changes of
    /// [`with_config`](Self::with_config) and earlier restarts) and restores it from the last
    /// snapshot (taken after the last batch, or by [`crash_mid_batch`](Self::crash_mid_batch)),
    /// as a driver restart would.
    ///
    /// # Errors
    ///
    /// The snapshot does not fit the rebuilt graph.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.restart_with_config(|_| {})
    }

    /// Like [`restart`](Self::restart), with the graph built by new code (an upgrade).
    ///
    /// # Errors
    ///
    /// The snapshot does not fit the new graph.
    pub fn restart_with(
        &mut self,
        build: impl Fn(&StreamingContext) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.build = Box::new(build);
        self.restart()
    }

    /// Like [`restart_with`](Self::restart_with) (new code) and
    /// [`restart_with_config`](Self::restart_with_config) (a changed configuration) at once.
    ///
    /// # Errors
    ///
    /// The snapshot does not fit the new graph.
    pub fn restart_with_code_and_config(
        &mut self,
        configure: impl FnOnce(&mut StreamingConfig),
        build: impl Fn(&StreamingContext) + Send + Sync + 'static,
    ) -> Result<(), Error> {
        self.build = Box::new(build);
        self.restart_with_config(configure)
    }

    /// Like [`restart`](Self::restart), after `configure` changed the configuration (e.g.
    /// `allow_unmatched_state`); the change stays for later restarts.
    ///
    /// # Errors
    ///
    /// The snapshot does not fit the graph.
    pub fn restart_with_config(
        &mut self,
        configure: impl FnOnce(&mut StreamingConfig),
    ) -> Result<(), Error> {
        configure(&mut self.configured);
        self.context = Self::build_configured(self.configured.clone(), &self.build);
        let files = match (&self.store, &self.last_checkpoint) {
            (Some(store), Some(data)) => tokio::task::block_in_place(|| {
                let spill = self.context.pipeline().spill_dir();
                tokio::runtime::Handle::current()
                    .block_on(store.read_state_files(data, spill.as_deref()))
            })
            .map_err(|e| Error::Incompatible(e.to_string()))?,
            _ => StateFiles::new(),
        };
        self.context
            .pipeline()
            .restore_with_files(self.last_checkpoint.as_ref(), &files)
            .map_err(|e| Error::Incompatible(e.to_string()))
    }
}

/// An in-memory partitioned log, the smallest [`OffsetSource`]: records appended per partition,
/// offsets are their indices, and every commit is remembered — for tests of direct streams.
///
/// ```
/// use weir::dstream::OffsetSource;
/// use weir::testing::MemoryLog;
///
/// let log = MemoryLog::new("log", 2);
/// log.append(0, &["a", "b"]);
/// assert_eq!(log.latest().unwrap(), vec![2, 0]);
/// log.commit(&[2, 0]).unwrap();
/// assert_eq!(log.committed(), vec![vec![2, 0]]);
/// ```
#[derive(Debug)]
pub struct MemoryLog {
    name: String,
    partitions: Mutex<Vec<Vec<bytes::Bytes>>>,
    committed: Mutex<Vec<Vec<u64>>>,
}

impl MemoryLog {
    /// An empty log called `name` with `partitions` partitions.
    pub fn new(name: impl Into<String>, partitions: usize) -> Arc<Self> {
        Arc::new(MemoryLog {
            name: name.into(),
            partitions: Mutex::new(vec![Vec::new(); partitions]),
            committed: Mutex::default(),
        })
    }

    /// Appends `records` (as UTF-8 bytes) to `partition`.
    ///
    /// # Panics
    ///
    /// If the partition does not exist.
    pub fn append(&self, partition: usize, records: &[&str]) {
        lock(&self.partitions)[partition].extend(
            records
                .iter()
                .map(|r| bytes::Bytes::copy_from_slice(r.as_bytes())),
        );
    }

    /// Every commit so far, oldest first (the next offset of each partition).
    pub fn committed(&self) -> Vec<Vec<u64>> {
        lock(&self.committed).clone()
    }
}

impl OffsetSource for MemoryLog {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn partitions(&self) -> usize {
        lock(&self.partitions).len()
    }
    fn earliest(&self) -> Result<Vec<u64>, UserError> {
        Ok(vec![0; self.partitions()])
    }
    fn latest(&self) -> Result<Vec<u64>, UserError> {
        Ok(lock(&self.partitions)
            .iter()
            .map(|p| p.len() as u64)
            .collect())
    }
    fn read(
        &self,
        partition: u32,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<bytes::Bytes>, UserError> {
        let partitions = lock(&self.partitions);
        let records = partitions
            .get(partition as usize)
            .ok_or_else(|| format!("{}: no partition {partition}", self.name))?;
        records
            .get(range.start as usize..range.end as usize)
            .map(<[bytes::Bytes]>::to_vec)
            .ok_or_else(|| {
                format!(
                    "{}: partition {partition} has no offsets {range:?}",
                    self.name
                )
                .into()
            })
    }
    fn commit(&self, next: &[u64]) -> Result<(), UserError> {
        lock(&self.committed).push(next.to_vec());
        Ok(())
    }
}
