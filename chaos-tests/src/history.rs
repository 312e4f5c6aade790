//! What happened during a run: records produced, acknowledged, written to the WAL, allocated
//! to a batch and committed; faults injected; actors failed, restarted and given up on;
//! memory while a part was down.
//!
//! A [`Recorder`] is the shared, cloneable handle the parts of a run write to: the runner feeds
//! it the engine's events ([`Recorder::event`]), the workload's receiver calls
//! [`Recorder::produced`] and [`Recorder::acknowledged`], its sink calls
//! [`Recorder::attempt_started`], [`Recorder::committed`] and [`Recorder::replayed`]. At the
//! end, [`Recorder::history`] is the [`History`] that [`crate::invariants::check`] judges.
//!
//! Record identities are `u64`s chosen by the workload (a sequence number, an offset, a hash of
//! the record); the checker only compares them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use weir_actors::Event;

use crate::schedule::Fault;

/// One first commit of a batch's output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    /// The batch time.
    pub batch: u64,
    /// The attempt that committed it (from [`Recorder::attempt_started`]).
    pub attempt: u64,
    /// The records it committed.
    pub records: Vec<u64>,
}

/// What a reader of the output sees for one batch, read from the sink at the end of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VisibleBatch {
    /// The attempt whose output this is.
    pub attempt: u64,
    /// The records.
    pub records: Vec<u64>,
}

/// One injected fault and how the pipeline came back from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// The fault.
    pub fault: Fault,
    /// When it was injected, from the start of the run.
    pub injected_at: Duration,
    /// How long until the pipeline completed a batch with records again (`None`: it did not,
    /// within the runner's wait).
    pub recovery: Option<Duration>,
    /// Why it could not be injected (the target was not running, the fault is unsupported).
    pub skipped: Option<String>,
}

/// An actor failure, and when the actor was running again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    /// The actor's name.
    pub actor: String,
    /// Why it failed.
    pub reason: String,
    /// When it failed, from the start of the run.
    pub failed_at: Duration,
    /// How long until it had started again (`None`: it did not).
    pub restarted_in: Option<Duration>,
}

/// A supervisor giving up on a child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GiveUp {
    /// The supervisor.
    pub actor: String,
    /// The child whose failure spent the budget.
    pub child: String,
    /// Why.
    pub reason: String,
    /// When, from the start of the run.
    pub at: Duration,
}

/// Resident memory of the process during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Before the first fault, in bytes.
    pub baseline: u64,
    /// The largest sample.
    pub peak: u64,
    /// The largest sample taken while a part was down (between a fault and its recovery).
    pub peak_while_down: u64,
    /// The largest growth over the sample taken when the part went down, while it was down:
    /// what an outage costs, apart from what the run accumulates over time.
    pub growth_while_down: u64,
    /// The fault during which that growth was seen (its index in [`History::faults`]).
    pub growth_during: Option<usize>,
    /// Samples taken.
    pub samples: u64,
}

/// Everything a run recorded. Fields are public so a test can build a history by hand.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Records the sources produced (handed to `store`).
    pub produced: BTreeSet<u64>,
    /// Records whose `store` returned `Ok` (acknowledged to the source).
    pub acknowledged: BTreeSet<u64>,
    /// Blocks durable in the WAL (`block_stored` events).
    pub wal_blocks: u64,
    /// Records in those blocks.
    pub wal_records: u64,
    /// Records allocated to each batch (`batch_generated` events; a re-generated batch keeps
    /// the last count).
    pub allocated: BTreeMap<u64, u64>,
    /// Every attempt started: attempt id → batch.
    pub attempts: BTreeMap<u64, u64>,
    /// First commits, in the order they happened.
    pub commits: Vec<Commit>,
    /// Re-commits of an already committed batch that the sink skipped.
    pub replays: u64,
    /// Re-commits of a committed batch with *other* records: (batch, attempt).
    pub conflicts: Vec<(u64, u64)>,
    /// What a reader of the output sees, per batch (set by the runner at the end; `None` if
    /// the workload cannot read its output back).
    pub visible: Option<BTreeMap<u64, VisibleBatch>>,
    /// The faults injected.
    pub faults: Vec<FaultRecord>,
    /// Actor failures, each with its restart.
    pub restarts: Vec<Restart>,
    /// Give-ups.
    pub give_ups: Vec<GiveUp>,
    /// How the engine ended, if it ended with an error.
    pub engine_error: Option<String>,
    /// Batches completed (with or without records).
    pub batches_completed: u64,
    /// Checkpoints written (durable).
    pub checkpoints_written: u64,
    /// Checkpoint writes that failed.
    pub checkpoints_failed: u64,
    /// Memory samples.
    pub memory: MemoryStats,
    /// Events the recorder missed because it fell behind (the checks that need every event
    /// are then relaxed and say so).
    pub lagged_events: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

impl History {
    /// Every actor failure with its restart, in failure order.
    pub fn restarts(&self) -> &[Restart] {
        &self.restarts
    }

    /// The distinct committed records.
    pub fn committed_records(&self) -> BTreeSet<u64> {
        self.commits
            .iter()
            .flat_map(|c| c.records.iter().copied())
            .collect()
    }

    /// Attempts that neither committed nor replayed a batch: abandoned (killed, failed, or
    /// cut off by a restart).
    pub fn abandoned_attempts(&self) -> BTreeSet<u64> {
        let finished: BTreeSet<u64> = self.commits.iter().map(|c| c.attempt).collect();
        self.attempts
            .keys()
            .copied()
            .filter(|a| !finished.contains(a))
            .collect()
    }
}

#[derive(Debug)]
struct Inner {
    history: History,
    start: Instant,
    finished_attempts: BTreeSet<u64>,
    next_attempt: u64,
    down: u32,
    last_rss: u64,
    rss_when_down: u64,
}

/// The shared handle a run records into. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder; times are measured from now.
    pub fn new() -> Self {
        Recorder {
            inner: Arc::new(Mutex::new(Inner {
                history: History::default(),
                start: Instant::now(),
                finished_attempts: BTreeSet::new(),
                next_attempt: 1,
                down: 0,
                last_rss: 0,
                rss_when_down: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Time since the recorder was made.
    pub fn elapsed(&self) -> Duration {
        self.lock().start.elapsed()
    }

    /// A source produced these records (handed them to `store`).
    pub fn produced(&self, ids: impl IntoIterator<Item = u64>) {
        self.lock().history.produced.extend(ids);
    }

    /// `store` returned `Ok` for these records: they are acknowledged to the source.
    pub fn acknowledged(&self, ids: impl IntoIterator<Item = u64>) {
        self.lock().history.acknowledged.extend(ids);
    }

    /// A job attempt for `batch` starts; returns its attempt id (unique in the run).
    pub fn attempt_started(&self, batch: u64) -> u64 {
        let mut inner = self.lock();
        let attempt = inner.next_attempt;
        inner.next_attempt += 1;
        inner.history.attempts.insert(attempt, batch);
        attempt
    }

    /// `attempt` committed `batch` for the first time, with `records`.
    pub fn committed(&self, batch: u64, attempt: u64, records: Vec<u64>) {
        let mut inner = self.lock();
        inner.finished_attempts.insert(attempt);
        inner.history.commits.push(Commit {
            batch,
            attempt,
            records,
        });
    }

    /// `attempt` found `batch` already committed and skipped it; `same` says whether it
    /// carried the same records (if not, it is a conflict).
    pub fn replayed(&self, batch: u64, attempt: u64, same: bool) {
        let mut inner = self.lock();
        inner.finished_attempts.insert(attempt);
        inner.history.replays += 1;
        if !same {
            inner.history.conflicts.push((batch, attempt));
        }
    }

    /// Records one engine event.
    pub fn event(&self, event: &Event) {
        let mut inner = self.lock();
        let now = inner.start.elapsed();
        let h = &mut inner.history;
        match event {
            Event::BlockStored { records, .. } => {
                h.wal_blocks += 1;
                h.wal_records += records;
            }
            Event::BatchGenerated {
                batch_time_ms,
                records,
                ..
            } => {
                h.allocated.insert(*batch_time_ms, *records);
            }
            Event::BatchCompleted { .. } => h.batches_completed += 1,
            Event::CheckpointWritten { .. } => h.checkpoints_written += 1,
            Event::CheckpointFailed { .. } => h.checkpoints_failed += 1,
            Event::ActorFailed { actor, reason } => h.restarts.push(Restart {
                actor: actor.clone(),
                reason: reason.clone(),
                failed_at: now,
                restarted_in: None,
            }),
            Event::ActorStarted { actor } => {
                if let Some(r) = h
                    .restarts
                    .iter_mut()
                    .rev()
                    .find(|r| r.actor == *actor && r.restarted_in.is_none())
                {
                    r.restarted_in = Some(now.saturating_sub(r.failed_at));
                }
            }
            Event::ActorGaveUp {
                actor,
                child,
                reason,
            } => h.give_ups.push(GiveUp {
                actor: actor.clone(),
                child: child.clone(),
                reason: reason.clone(),
                at: now,
            }),
            Event::Lagged { missed } => h.lagged_events += missed,
            _ => {}
        }
    }

    /// A fault was injected (or skipped); returns its index for [`Recorder::recovered`].
    pub fn fault(&self, fault: Fault, skipped: Option<String>) -> usize {
        let mut inner = self.lock();
        let injected_at = inner.start.elapsed();
        if skipped.is_none() {
            if inner.down == 0 {
                inner.rss_when_down = inner.last_rss;
            }
            inner.down += 1;
        }
        inner.history.faults.push(FaultRecord {
            fault,
            injected_at,
            recovery: None,
            skipped,
        });
        inner.history.faults.len() - 1
    }

    /// The pipeline recovered from fault `index` (or gave up waiting: `recovered = false`).
    pub fn recovered(&self, index: usize, recovered: bool) {
        let mut inner = self.lock();
        let now = inner.start.elapsed();
        inner.down = inner.down.saturating_sub(1);
        if let Some(f) = inner.history.faults.get_mut(index)
            && recovered
        {
            f.recovery = Some(now.saturating_sub(f.injected_at));
        }
    }

    /// Fault `index` turned out not to have been injected, for `reason`.
    pub fn skipped(&self, index: usize, reason: String) {
        let mut inner = self.lock();
        inner.down = inner.down.saturating_sub(1);
        if let Some(f) = inner.history.faults.get_mut(index) {
            f.skipped = Some(reason);
        }
    }

    /// Whether a part is down now (a fault injected and not yet recovered from).
    pub fn is_down(&self) -> bool {
        self.lock().down > 0
    }

    /// One sample of resident memory, in bytes.
    pub fn memory_sample(&self, rss: u64) {
        let mut inner = self.lock();
        let down = inner.down > 0;
        inner.last_rss = rss;
        let since = inner.rss_when_down;
        let current = inner.history.faults.len().checked_sub(1);
        let m = &mut inner.history.memory;
        if m.samples == 0 {
            m.baseline = rss;
        }
        m.samples += 1;
        m.peak = m.peak.max(rss);
        if down {
            m.peak_while_down = m.peak_while_down.max(rss);
            if rss.saturating_sub(since) > m.growth_while_down {
                m.growth_while_down = rss.saturating_sub(since);
                m.growth_during = current;
            }
        }
    }

    /// Sets the baseline memory (before the first fault).
    pub fn memory_baseline(&self, rss: u64) {
        self.lock().history.memory.baseline = rss;
    }

    /// The engine ended with `error`.
    pub fn engine_error(&self, error: String) {
        self.lock().history.engine_error = Some(error);
    }

    /// What a reader sees, read from the sink at the end.
    pub fn set_visible(&self, visible: BTreeMap<u64, VisibleBatch>) {
        self.lock().history.visible = Some(visible);
    }

    /// A copy of what was recorded so far.
    pub fn history(&self) -> History {
        let inner = self.lock();
        let mut h = inner.history.clone();
        h.elapsed = inner.start.elapsed();
        h
    }
}

/// The resident set size of this process in bytes (`/proc/self/statm`), if readable.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on every platform weir's CI runs on (x86-64 and aarch64 Linux
    // with 4 KiB pages); a larger page size only makes the figure an underestimate.
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_matched_to_the_next_start_of_the_same_actor() {
        let r = Recorder::new();
        r.event(&Event::ActorFailed {
            actor: "a".into(),
            reason: "killed".into(),
        });
        r.event(&Event::ActorStarted { actor: "b".into() });
        let h = r.history();
        assert_eq!(h.restarts.len(), 1);
        assert_eq!(h.restarts[0].restarted_in, None);
        r.event(&Event::ActorStarted { actor: "a".into() });
        assert!(r.history().restarts[0].restarted_in.is_some());
    }

    #[test]
    fn checkpoint_writes_and_failures_are_counted() {
        let r = Recorder::new();
        for id in [1, 2] {
            r.event(&Event::CheckpointWritten {
                store: "s".into(),
                id,
                bytes: 10,
                duration_ms: None,
            });
        }
        r.event(&Event::CheckpointFailed {
            store: "s".into(),
            reason: "disk full".into(),
        });
        let h = r.history();
        assert_eq!((h.checkpoints_written, h.checkpoints_failed), (2, 1));
    }

    #[test]
    fn attempts_without_a_commit_are_abandoned() {
        let r = Recorder::new();
        let a1 = r.attempt_started(1000);
        let a2 = r.attempt_started(1000);
        r.committed(1000, a2, vec![1, 2]);
        let h = r.history();
        assert_eq!(h.abandoned_attempts(), BTreeSet::from([a1]));
        assert_eq!(h.committed_records(), BTreeSet::from([1, 2]));
    }

    #[test]
    fn memory_while_down_is_tracked_apart() {
        let r = Recorder::new();
        r.memory_sample(100);
        let f = r.fault(Fault::ProcessKill9, None);
        assert!(r.is_down());
        r.memory_sample(300);
        r.recovered(f, true);
        r.memory_sample(500);
        let m = r.history().memory;
        assert_eq!((m.baseline, m.peak_while_down, m.peak), (100, 300, 500));
        assert_eq!(m.growth_while_down, 200);
        assert!(r.history().faults[0].recovery.is_some());
    }

    #[test]
    fn rss_is_readable_here() {
        let rss = rss_bytes().expect("/proc/self/statm");
        assert!(rss > 1 << 20, "{rss}");
    }
}
