//! The checkpoint coordinator: when the job generator's checkpoints start, wait, are skipped or
//! fail, what a durable one lets go, and when held batches may run — Flink's checkpoint
//! controls ([`CheckpointPolicy`]) as plain decisions.
//!
//! [`CheckpointCoordinator`] holds the coordinator's state and nothing else: no actor, no task,
//! no I/O, no clock. The job generator tells it facts, each with "now" as an argument — a
//! checkpoint was asked for, a write started (or could not), a write ended, the minimum pause
//! elapsed, the generator is draining with nothing left to run — and executes the
//! [`CheckpointAction`]s it returns, in the order returned. The generator owns everything else:
//! the snapshot, the store, the write tasks and their timeout, the timer, the tracker.
//!
//! # The rules
//!
//! * **Interval.** A checkpoint asked for after a batch completed ([`Asked::AfterBatch`]) is
//!   skipped if the latest write *started* less than `interval` ago, or *ended* less than
//!   `min_pause` ago — unless the generator is draining, or a request already waits (it then
//!   coalesces with it). A checkpoint asked for before a batch ([`Asked::BeforeBatch`]) records
//!   what a restore must re-run and is never skipped.
//! * **Maximum concurrent.** At most `max_concurrent` writes are in flight. A checkpoint asked
//!   for while that many are in flight waits.
//! * **Minimum pause.** A write starts at least `min_pause` after the latest write ended
//!   (either way). A checkpoint that must wait for the pause asks for one timer
//!   ([`CheckpointAction::ArmPauseTimer`], the time still to wait), and starts when the
//!   generator reports [`pause_elapsed`](CheckpointCoordinator::pause_elapsed).
//! * **Coalescing.** At most one checkpoint waits; further requests coalesce with it, and the
//!   newest checkpoint time wins. When a slot frees (a write ended) or the pause elapsed, one
//!   [`CheckpointAction::StartWrite`] is returned: the generator takes its snapshot *then*, so
//!   it supersedes every request that waited.
//! * **Timeout.** The generator abandons a write still running after `timeout` and reports
//!   [`WriteOutcome::TimedOut`]: a failure. The write is then no longer in flight, so a later
//!   report for it — durable or not — is ignored: it is never taken as success.
//! * **Tolerable failures.** A failed write, or one that could not start (snapshot or
//!   reservation failed), is [`CheckpointAction::FailureTolerated`] up to `tolerable_failures`
//!   in a row; one more is [`CheckpointAction::GiveUp`], and nothing follows it (the generator
//!   fails; the driver restarts from the latest valid checkpoint). A durable write resets the
//!   count.
//! * **Durability and cleanup.** The newest durable checkpoint only moves forward: a write that
//!   ends durable after a newer one did (a slow older write) changes nothing. Each write
//!   carries the oldest batch its snapshot still needs (`cleanup_before`). What may be cleaned
//!   is what none of the newest `retained` durable checkpoints (the store's retention, with
//!   the checkpoint restored at start among them) needs — so a restore falling back past a
//!   damaged newest checkpoint, or asked for an older retained one, finds every batch
//!   allocation it re-runs; when a write becomes the newest durable checkpoint and that
//!   threshold moves ahead of what was cleaned, the result is [`CheckpointAction::Clean`].
//!   Cleaning only moves forward too, and only counts once the generator reports it done
//!   ([`cleaned`](CheckpointCoordinator::cleaned)): a cleanup that failed is asked for again
//!   by the next durable checkpoint.
//! * **Held batches.** A generated batch is held (not submitted) until a checkpoint that lists
//!   it as pending has ended. Each write carries the newest batch held when its snapshot was
//!   taken (`held_through`); when it ends durable, or its failure is tolerated, the result is
//!   [`CheckpointAction::Release`] through that batch — after the cleanup, before the next
//!   write starts. A write that could not start releases what it was for in the same way.
//! * **Drain.** While draining, nothing is skipped. Once the generator has nothing queued or
//!   pending ([`drain_idle`](CheckpointCoordinator::drain_idle)), the drain waits for every
//!   write in flight, the waiting request and the pause; if the latest write started is not
//!   the newest durable one (the final checkpoint failed), the final checkpoint is asked for
//!   again; otherwise [`CheckpointAction::DrainFinished`].
//! * **Settled.** A checkpoint has settled once this run started it and its write is no longer
//!   in flight ([`has_settled`](CheckpointCoordinator::has_settled)); older ids, too.
//!
//! # Invariants
//!
//! At most `max_concurrent` writes in flight and at most one request waiting; the newest durable
//! id and the cleanup threshold never go back; a [`CheckpointAction::GiveUp`] is the last action
//! of its list; a write's `held_through` is released at most once, by that write's end.
//!
//! # What a crash leaves behind
//!
//! Nothing: the coordinator is the memory of one run of the generator. A restarted generator
//! starts a fresh one; what survives is in the checkpoint store.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::checkpoint::CheckpointId;
use crate::config::CheckpointPolicy;

/// Why a checkpoint is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Asked {
    /// A batch was generated: the checkpoint lists it as pending ("before" the batch). Never
    /// skipped.
    BeforeBatch,
    /// A batch completed: the checkpoint records it as done ("after" the batch). Skipped if the
    /// latest checkpoint is too recent, unless draining.
    AfterBatch,
    /// An operator asked for one (`POST /api/v1/checkpoints`). Never skipped.
    Requested,
}

/// How a checkpoint write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteOutcome {
    /// The checkpoint is durable.
    Durable,
    /// The write failed, for this reason.
    Failed(String),
    /// The write ran past the policy's `timeout` and was abandoned.
    TimedOut,
}

/// A checkpoint write that has started: its id, reserved when its snapshot was taken, and what
/// that snapshot covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StartedWrite {
    /// The checkpoint's id.
    pub id: CheckpointId,
    /// The oldest batch a restore from this checkpoint may need: allocations of batches before
    /// it, and the blocks only they use, may go once it is durable. `None` before anything was
    /// queued.
    pub cleanup_before: Option<u64>,
    /// The newest batch held when the snapshot was taken: it and the held batches before it are
    /// listed as pending, and may run once this write has ended. `None` if none was held.
    pub held_through: Option<u64>,
}

/// What the job generator does next, in the order returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CheckpointAction {
    /// Take the snapshot now, reserve its id and start writing it, with this checkpoint time;
    /// then report [`write_started`](CheckpointCoordinator::write_started) or
    /// [`write_not_started`](CheckpointCoordinator::write_not_started) before any other fact.
    StartWrite {
        /// The checkpoint time (the newest of the requests it covers).
        time_ms: u64,
    },
    /// The checkpoint asked for was skipped: the latest one is too recent. Nothing to do.
    Skipped {
        /// The checkpoint time asked for.
        time_ms: u64,
    },
    /// Report [`pause_elapsed`](CheckpointCoordinator::pause_elapsed) after this long.
    ArmPauseTimer(Duration),
    /// The newest durable checkpoint needs nothing before this batch time: drop older
    /// allocations and what only they use; report [`cleaned`](CheckpointCoordinator::cleaned)
    /// once done.
    Clean {
        /// Batches before this time are no longer needed.
        before_ms: u64,
    },
    /// Submit the held batches up to this batch time, in batch order.
    Release {
        /// The newest batch to submit.
        through_ms: u64,
    },
    /// A checkpoint failed and the failure is tolerated: report it and go on.
    FailureTolerated {
        /// Why it failed.
        reason: String,
    },
    /// One failure too many: fail the generator with this error. Nothing follows.
    GiveUp(TooManyFailedCheckpoints),
    /// The drain is complete: every batch ran and the final state is durable.
    DrainFinished,
}

/// More consecutive checkpoints failed than the policy tolerates.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{failed} consecutive checkpoints failed (tolerated: {tolerated}); the last: {last}")]
pub(crate) struct TooManyFailedCheckpoints {
    /// Consecutive failures, the last included.
    pub failed: u32,
    /// The policy's `tolerable_failures`.
    pub tolerated: u32,
    /// Why the last one failed.
    pub last: String,
}

/// A write in flight, as far as the policy cares.
#[derive(Clone, Copy, Debug)]
struct WriteInFlight {
    cleanup_before: Option<u64>,
    held_through: Option<u64>,
}

/// The checkpoint coordinator's state: see the [module docs](self) for the rules.
#[derive(Debug)]
pub(crate) struct CheckpointCoordinator {
    policy: CheckpointPolicy,
    /// Writes in flight, by id: the order of their snapshots.
    in_flight: BTreeMap<CheckpointId, WriteInFlight>,
    /// The checkpoint time of the request waiting to start (the newest of those coalesced).
    waiting: Option<u64>,
    /// A pause timer was asked for and has not been reported elapsed.
    pause_timer_armed: bool,
    /// When the latest write started (the interval is measured from it).
    last_start: Option<Instant>,
    /// When the latest write ended, either way (the minimum pause is measured from it).
    last_end: Option<Instant>,
    /// The id of the latest write started.
    last_started: Option<CheckpointId>,
    /// The newest checkpoint known to be durable.
    latest_durable: Option<CheckpointId>,
    /// Cleanup has been done for batches before this time.
    cleaned_before: Option<u64>,
    /// How many of the newest checkpoints a restore may fall back to (the store's retention).
    retained: usize,
    /// What each of the newest `retained` durable checkpoints still needs (`cleanup_before`;
    /// `None`: everything), oldest first — seeded with the restored checkpoint's needs.
    retained_needs: VecDeque<Option<u64>>,
    /// Failures since the last durable checkpoint.
    consecutive_failures: u32,
}

impl CheckpointCoordinator {
    /// A coordinator with nothing started yet. The policy is taken as given (the generator
    /// validated it); a `max_concurrent` of 0 counts as 1.
    #[cfg(test)]
    pub(crate) fn new(policy: CheckpointPolicy) -> Self {
        Self::retaining(policy, 1, None)
    }

    /// A coordinator that cleans only what none of the newest `retained` durable checkpoints
    /// needs — so a restore that falls back past a damaged newest checkpoint, or is asked for an
    /// older one, finds every batch allocation it re-runs — counting the checkpoint restored at
    /// start, which needs what is at or after `restored_needs` (`None`: nothing restored).
    pub(crate) fn retaining(
        policy: CheckpointPolicy,
        retained: usize,
        restored_needs: Option<u64>,
    ) -> Self {
        CheckpointCoordinator {
            retained: retained.max(1),
            retained_needs: restored_needs.map(Some).into_iter().collect(),
            policy,
            in_flight: BTreeMap::new(),
            waiting: None,
            pause_timer_armed: false,
            last_start: None,
            last_end: None,
            last_started: None,
            latest_durable: None,
            cleaned_before: None,
            consecutive_failures: 0,
        }
    }

    /// A checkpoint at `time_ms` is asked for: skipped, started, or waiting (coalesced with the
    /// request already waiting).
    pub(crate) fn checkpoint_asked(
        &mut self,
        time_ms: u64,
        asked: Asked,
        draining: bool,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        if asked == Asked::AfterBatch && !draining && self.waiting.is_none() && self.too_recent(now)
        {
            return vec![CheckpointAction::Skipped { time_ms }];
        }
        let time_ms = self.waiting.map_or(time_ms, |waiting| waiting.max(time_ms));
        self.waiting = Some(time_ms);
        self.start_waiting(now)
    }

    /// The write asked for by [`CheckpointAction::StartWrite`] has started.
    pub(crate) fn write_started(&mut self, write: StartedWrite, now: Instant) {
        self.last_start = Some(now);
        self.last_started = Some(write.id);
        self.in_flight.insert(
            write.id,
            WriteInFlight {
                cleanup_before: write.cleanup_before,
                held_through: write.held_through,
            },
        );
    }

    /// The write asked for by [`CheckpointAction::StartWrite`] could not start (its snapshot or
    /// its id could not be had): a failed checkpoint, and what it was for — the batches held
    /// through `held_through` — runs.
    pub(crate) fn write_not_started(
        &mut self,
        reason: String,
        held_through: Option<u64>,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        self.last_end = Some(now);
        let failure = self.count_failure(reason);
        if matches!(failure, CheckpointAction::GiveUp(_)) {
            return vec![failure];
        }
        let mut actions = vec![failure];
        actions.extend(held_through.map(|through_ms| CheckpointAction::Release { through_ms }));
        actions
    }

    /// The write of checkpoint `id` ended. A write not in flight (it timed out earlier) changes
    /// nothing; then, as after every end, a waiting checkpoint may start.
    pub(crate) fn write_ended(
        &mut self,
        id: CheckpointId,
        outcome: WriteOutcome,
        now: Instant,
    ) -> Vec<CheckpointAction> {
        let Some(write) = self.in_flight.remove(&id) else {
            return self.start_waiting(now);
        };
        self.last_end = Some(now);
        let mut actions = Vec::new();
        let reason = match outcome {
            WriteOutcome::Durable => {
                self.consecutive_failures = 0;
                if self.latest_durable < Some(id) {
                    self.latest_durable = Some(id);
                    self.retained_needs.push_back(write.cleanup_before);
                    while self.retained_needs.len() > self.retained {
                        self.retained_needs.pop_front();
                    }
                    if let Some(before_ms) = self.retained_need()
                        && self.cleaned_before < Some(before_ms)
                    {
                        actions.push(CheckpointAction::Clean { before_ms });
                    }
                }
                None
            }
            WriteOutcome::Failed(reason) => Some(reason),
            WriteOutcome::TimedOut => Some(format!(
                "checkpoint {id} timed out after {:?} and was abandoned",
                self.policy.timeout
            )),
        };
        if let Some(reason) = reason {
            let failure = self.count_failure(reason);
            if matches!(failure, CheckpointAction::GiveUp(_)) {
                return vec![failure];
            }
            actions.push(failure);
        }
        actions.extend(
            write
                .held_through
                .map(|through_ms| CheckpointAction::Release { through_ms }),
        );
        actions.extend(self.start_waiting(now));
        actions
    }

    /// The oldest batch any retained checkpoint still needs; `None` while one of them needs
    /// everything (it was written before anything was queued).
    fn retained_need(&self) -> Option<u64> {
        self.retained_needs
            .iter()
            .copied()
            .collect::<Option<Vec<u64>>>()?
            .into_iter()
            .min()
    }

    /// The cleanup asked for by [`CheckpointAction::Clean`] is done.
    pub(crate) fn cleaned(&mut self, before_ms: u64) {
        self.cleaned_before = self.cleaned_before.max(Some(before_ms));
    }

    /// The timer asked for by [`CheckpointAction::ArmPauseTimer`] fired: the waiting
    /// checkpoint may start.
    pub(crate) fn pause_elapsed(&mut self, now: Instant) -> Vec<CheckpointAction> {
        self.pause_timer_armed = false;
        self.start_waiting(now)
    }

    /// The generator is draining and has nothing queued or pending: wait for what is in flight,
    /// write the final state (at `final_time_ms`) again if its latest write was not durable, or
    /// finish.
    pub(crate) fn drain_idle(&mut self, final_time_ms: u64, now: Instant) -> Vec<CheckpointAction> {
        if !self.in_flight.is_empty() || self.waiting.is_some() || self.pause_timer_armed {
            return Vec::new();
        }
        if self.latest_durable != self.last_started {
            return self.checkpoint_asked(final_time_ms, Asked::AfterBatch, true, now);
        }
        vec![CheckpointAction::DrainFinished]
    }

    /// Whether checkpoint `id` has settled: started by this run (it or a newer one), and no
    /// longer in flight.
    pub(crate) fn has_settled(&self, id: CheckpointId) -> bool {
        self.last_started >= Some(id) && !self.in_flight.contains_key(&id)
    }

    /// The writes in flight, oldest first.
    pub(crate) fn in_flight(&self) -> Vec<CheckpointId> {
        self.in_flight.keys().copied().collect()
    }

    /// Whether a checkpoint waits for a free slot or for the minimum pause.
    pub(crate) fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// The newest checkpoint known to be durable.
    pub(crate) fn latest_durable(&self) -> Option<CheckpointId> {
        self.latest_durable
    }

    /// Failures since the last durable checkpoint.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The latest write started less than the interval ago, or ended less than the minimum
    /// pause ago.
    fn too_recent(&self, now: Instant) -> bool {
        let since = |then: Instant| now.saturating_duration_since(then);
        let recent_start = self
            .last_start
            .is_some_and(|start| since(start) < self.policy.interval);
        let recent_end = self
            .last_end
            .is_some_and(|end| since(end) < self.policy.min_pause);
        recent_start || recent_end
    }

    /// Starts the waiting checkpoint if a slot is free and the minimum pause has elapsed; else
    /// it keeps waiting (with a pause timer, if it waits for the pause).
    fn start_waiting(&mut self, now: Instant) -> Vec<CheckpointAction> {
        let Some(time_ms) = self.waiting else {
            return Vec::new();
        };
        if self.in_flight.len() >= self.policy.max_concurrent.max(1) {
            return Vec::new();
        }
        if let Some(end) = self.last_end {
            let since = now.saturating_duration_since(end);
            if since < self.policy.min_pause {
                if self.pause_timer_armed {
                    return Vec::new();
                }
                self.pause_timer_armed = true;
                return vec![CheckpointAction::ArmPauseTimer(
                    self.policy.min_pause - since,
                )];
            }
        }
        self.waiting = None;
        vec![CheckpointAction::StartWrite { time_ms }]
    }

    /// Counts a failed checkpoint: tolerated, or one too many.
    fn count_failure(&mut self, reason: String) -> CheckpointAction {
        self.consecutive_failures += 1;
        if self.consecutive_failures > self.policy.tolerable_failures {
            CheckpointAction::GiveUp(TooManyFailedCheckpoints {
                failed: self.consecutive_failures,
                tolerated: self.policy.tolerable_failures,
                last: reason,
            })
        } else {
            CheckpointAction::FailureTolerated { reason }
        }
    }
}
