//! What the harness runs: a [`Workload`] is a pipeline with its receivers that records what it
//! produced, acknowledged and committed into the run's [`Recorder`].
//!
//! To point the harness at your own pipeline, implement [`Workload`]: build your
//! [`Pipeline`] and receivers in [`Workload::build`], and in them call
//!
//! * [`Recorder::produced`] with the ids of the records handed to `store`, and
//!   [`Recorder::acknowledged`] once `store` returned `Ok` (when you acknowledge your source);
//! * [`Recorder::attempt_started`] when a job for a batch starts, and [`Recorder::committed`]
//!   or [`Recorder::replayed`] when your sink committed its output or skipped a batch it had
//!   already committed;
//! * optionally [`Holds::at`] with [`HoldPoint::BeforeAck`] and [`HoldPoint::AfterCommit`], so
//!   that the harness can kill the driver exactly there;
//!
//! and return what a reader of your output sees from [`Workload::visible`]. [`Numbered`] is
//! the harness's own workload, written that way; `docs/chaos.md` walks through it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use weir_actors::EngineConfig;
use weir_actors::StreamId;
use weir_actors::checkpoint::{CheckpointData, OperatorState};
use weir_actors::pipeline::{
    BatchInput, BoxFuture, Job, Pipeline, Receiver, ReceiverContext, ReceiverFactory, UserError,
};

use crate::history::{Recorder, VisibleBatch};
use crate::hold::{HoldPoint, Holds};

/// What the harness gives a workload to build its parts with.
#[derive(Clone, Debug)]
pub struct HarnessContext {
    /// Where the parts record what they do.
    pub recorder: Recorder,
    /// The workload's hold points.
    pub holds: Holds,
}

/// A pipeline and its receivers, ready for [`weir_actors::Engine::start`].
#[derive(Clone)]
pub struct Parts {
    /// The pipeline.
    pub pipeline: Arc<dyn Pipeline>,
    /// The receivers, by stream.
    pub receivers: Vec<(StreamId, Arc<dyn ReceiverFactory>)>,
}

impl std::fmt::Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let streams: Vec<StreamId> = self.receivers.iter().map(|(s, _)| *s).collect();
        f.debug_struct("Parts").field("streams", &streams).finish()
    }
}

/// A pipeline the harness can run and judge (see the module documentation).
pub trait Workload: Send + Sync + 'static {
    /// Builds the pipeline and its receivers; they record into `ctx.recorder`.
    fn build(&self, ctx: &HarnessContext) -> Parts;

    /// Adjusts the engine's configuration (intervals, executors) after the harness set its
    /// defaults. Default: nothing.
    fn configure(&self, config: &mut EngineConfig) {
        let _ = config;
    }

    /// What a reader of the output sees now, per batch; `None` if the output cannot be read
    /// back (visibility is then not checked).
    fn visible(&self) -> Option<BTreeMap<u64, VisibleBatch>> {
        None
    }

    /// The engine gave up and the harness is about to start it again
    /// ([`crate::runner::RunConfig::restart_after_give_up`]): remove the cause, as an operator
    /// would. Default: nothing.
    fn restarted(&self) {}
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A transactional sink: each attempt stages its output, and a commit publishes it atomically
/// under the batch id unless the batch is already published (then it is a replay, skipped).
/// Staged output of an attempt that never commits is never visible.
#[derive(Debug, Default)]
pub struct StagingSink {
    staged: Mutex<BTreeMap<u64, (u64, Vec<u64>)>>,
    visible: Mutex<BTreeMap<u64, VisibleBatch>>,
}

/// What [`StagingSink::commit`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The attempt's output is now visible.
    Committed,
    /// The batch was already visible; `same` says whether with the same records.
    Replayed {
        /// Whether the records matched.
        same: bool,
    },
    /// Nothing was staged under the attempt.
    NothingStaged,
}

impl StagingSink {
    /// Stages `records` of `batch` under `attempt` (invisible until committed).
    pub fn stage(&self, attempt: u64, batch: u64, records: Vec<u64>) {
        lock(&self.staged).insert(attempt, (batch, records));
    }

    /// Publishes what `attempt` staged, unless its batch is already published.
    pub fn commit(&self, attempt: u64) -> CommitOutcome {
        let Some((batch, records)) = lock(&self.staged).remove(&attempt) else {
            return CommitOutcome::NothingStaged;
        };
        let mut visible = lock(&self.visible);
        match visible.get(&batch) {
            Some(existing) => CommitOutcome::Replayed {
                same: existing.records == records,
            },
            None => {
                visible.insert(batch, VisibleBatch { attempt, records });
                CommitOutcome::Committed
            }
        }
    }

    /// What a reader sees.
    pub fn visible(&self) -> BTreeMap<u64, VisibleBatch> {
        lock(&self.visible).clone()
    }

    /// Attempts staged and never committed.
    pub fn abandoned(&self) -> usize {
        lock(&self.staged).len()
    }
}

/// How [`Numbered`] behaves.
#[derive(Clone, Debug)]
pub struct NumberedConfig {
    /// Streams (one receiver each).
    pub streams: u32,
    /// Records per `store` call.
    pub per_store: u64,
    /// Pause between `store` calls (pacing of the load).
    pub pause: Duration,
    /// Simulated work per job (so that faults land while batches run).
    pub processing: Duration,
    /// After this many successful stores, every receiver fails at once on each start (the
    /// give-up scenario). `None`: receivers never fail by themselves.
    pub receivers_fail_after: Option<u64>,
}

impl Default for NumberedConfig {
    fn default() -> Self {
        NumberedConfig {
            streams: 1,
            per_store: 10,
            pause: Duration::from_millis(5),
            processing: Duration::from_millis(10),
            receivers_fail_after: None,
        }
    }
}

/// The harness's own workload: receivers of numbered records (8-byte little-endian ids, unique
/// across streams) and a pipeline whose one job per batch commits the batch's ids to a
/// [`StagingSink`].
#[derive(Debug)]
pub struct Numbered {
    config: NumberedConfig,
    next: Arc<AtomicU64>,
    sink: Arc<StagingSink>,
    healed: Arc<AtomicBool>,
}

impl Numbered {
    /// A workload with `config`.
    pub fn new(config: NumberedConfig) -> Self {
        Numbered {
            config,
            next: Arc::default(),
            sink: Arc::default(),
            healed: Arc::default(),
        }
    }

    /// Receivers stop failing by themselves ([`NumberedConfig::receivers_fail_after`]).
    pub fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    /// The sink.
    pub fn sink(&self) -> &Arc<StagingSink> {
        &self.sink
    }
}

impl Workload for Numbered {
    fn build(&self, ctx: &HarnessContext) -> Parts {
        let receivers = (0..self.config.streams)
            .map(|stream| {
                let receiver = NumberedSource {
                    next: Arc::clone(&self.next),
                    per_store: self.config.per_store.max(1),
                    pause: self.config.pause,
                    fail_after: self.config.receivers_fail_after,
                    healed: Arc::clone(&self.healed),
                    recorder: ctx.recorder.clone(),
                    holds: ctx.holds.clone(),
                };
                let factory: Arc<dyn ReceiverFactory> =
                    Arc::new(move || Box::new(receiver.clone()) as Box<dyn Receiver>);
                (stream, factory)
            })
            .collect();
        Parts {
            pipeline: Arc::new(NumberedPipeline {
                sink: Arc::clone(&self.sink),
                recorder: ctx.recorder.clone(),
                holds: ctx.holds.clone(),
                processing: self.config.processing,
            }),
            receivers,
        }
    }

    fn visible(&self) -> Option<BTreeMap<u64, VisibleBatch>> {
        Some(self.sink.visible())
    }

    fn restarted(&self) {
        self.heal();
    }
}

#[derive(Clone, Debug)]
struct NumberedSource {
    next: Arc<AtomicU64>,
    per_store: u64,
    pause: Duration,
    fail_after: Option<u64>,
    healed: Arc<AtomicBool>,
    recorder: Recorder,
    holds: Holds,
}

impl Receiver for NumberedSource {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            let mut stored = 0u64;
            while !ctx.is_stopping() {
                if self.fail_after.is_some_and(|n| stored >= n)
                    && !self.healed.load(Ordering::SeqCst)
                {
                    return Err(format!(
                        "the source of stream {} failed after {stored} stores (injected)",
                        ctx.stream()
                    )
                    .into());
                }
                let first = self.next.fetch_add(self.per_store, Ordering::SeqCst);
                let ids = first..first + self.per_store;
                self.recorder.produced(ids.clone());
                let records = ids
                    .clone()
                    .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()))
                    .collect();
                if ctx.store(records).await.is_ok() {
                    stored += 1;
                    self.holds.at(HoldPoint::BeforeAck).await;
                    self.recorder.acknowledged(ids);
                }
                tokio::time::sleep(self.pause).await;
            }
            Ok(())
        })
    }
}

#[derive(Debug)]
struct NumberedPipeline {
    sink: Arc<StagingSink>,
    recorder: Recorder,
    holds: Holds,
    processing: Duration,
}

impl Pipeline for NumberedPipeline {
    fn fingerprint(&self) -> u64 {
        0x5eed
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        let mut ids = Vec::with_capacity(input.records() as usize);
        for block in input.blocks.values().flatten() {
            for record in block.records.iter() {
                ids.push(u64::from_le_bytes(record.as_ref().try_into()?));
            }
        }
        if ids.is_empty() {
            return Ok(vec![Job {
                id: "commit".to_owned(),
                run: Arc::new(|_ctx| Box::pin(async { Ok(()) })),
            }]);
        }
        let ids = Arc::new(ids);
        let batch = input.batch_time_ms;
        let (sink, recorder, holds, processing) = (
            Arc::clone(&self.sink),
            self.recorder.clone(),
            self.holds.clone(),
            self.processing,
        );
        Ok(vec![Job {
            id: "commit".to_owned(),
            run: Arc::new(move |_ctx| {
                let (sink, recorder, holds, ids) = (
                    Arc::clone(&sink),
                    recorder.clone(),
                    holds.clone(),
                    Arc::clone(&ids),
                );
                Box::pin(async move {
                    let attempt = recorder.attempt_started(batch);
                    sink.stage(attempt, batch, ids.to_vec());
                    tokio::time::sleep(processing).await;
                    match sink.commit(attempt) {
                        CommitOutcome::Committed => {
                            recorder.committed(batch, attempt, ids.to_vec());
                            holds.at(HoldPoint::AfterCommit).await;
                        }
                        CommitOutcome::Replayed { same } => {
                            recorder.replayed(batch, attempt, same);
                        }
                        CommitOutcome::NothingStaged => {
                            return Err(format!("attempt {attempt} staged nothing").into());
                        }
                    }
                    Ok(())
                })
            }),
        }])
    }

    fn snapshot(&self, _: Option<u64>) -> Result<Vec<OperatorState>, UserError> {
        Ok(Vec::new())
    }

    fn restore(&self, _: Option<&CheckpointData>) -> Result<(), UserError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_output_is_invisible_until_committed_and_a_replay_is_skipped() {
        let sink = StagingSink::default();
        sink.stage(1, 100, vec![1, 2]);
        assert!(sink.visible().is_empty());
        sink.stage(2, 100, vec![1, 2]);
        assert_eq!(sink.commit(2), CommitOutcome::Committed);
        assert_eq!(sink.commit(1), CommitOutcome::Replayed { same: true });
        assert_eq!(sink.commit(1), CommitOutcome::NothingStaged);
        assert_eq!(sink.visible()[&100].attempt, 2);
        sink.stage(3, 100, vec![9]);
        assert_eq!(sink.commit(3), CommitOutcome::Replayed { same: false });
    }
}
