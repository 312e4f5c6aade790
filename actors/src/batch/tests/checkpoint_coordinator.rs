//! The checkpoint coordinator's rules, one by one, as plain unit tests: facts in, actions out,
//! with "now" chosen by the test. No actor, no storage, no timer: each test plays the job
//! generator's part (starting the writes the coordinator asks for, reporting how they end) and
//! asserts the exact list of actions, in order.

use std::time::{Duration, Instant};

use crate::batch::checkpoint_coordinator::{
    Asked, CheckpointAction, CheckpointCoordinator, StartedWrite, TooManyFailedCheckpoints,
    WriteOutcome,
};
use crate::checkpoint::CheckpointId;
use crate::config::CheckpointPolicy;

use CheckpointAction::{
    ArmPauseTimer, Clean, DrainFinished, FailureTolerated, GiveUp, Release, Skipped, StartWrite,
};
use WriteOutcome::{Durable, Failed, TimedOut};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The default policy with a short timeout and `max_concurrent` writes.
fn policy(max_concurrent: usize) -> CheckpointPolicy {
    CheckpointPolicy {
        max_concurrent,
        timeout: TIMEOUT,
        ..CheckpointPolicy::default()
    }
}

/// A coordinator and a virtual clock: `at(s)` is `s` seconds after the test's start.
struct Test {
    coordinator: CheckpointCoordinator,
    start: Instant,
}

impl Test {
    fn new(policy: CheckpointPolicy) -> Test {
        Test {
            coordinator: CheckpointCoordinator::new(policy),
            start: Instant::now(),
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.start + Duration::from_secs(secs)
    }

    fn ask(&mut self, time_ms: u64, asked: Asked, secs: u64) -> Vec<CheckpointAction> {
        let now = self.at(secs);
        self.coordinator
            .checkpoint_asked(time_ms, asked, false, now)
    }

    fn ask_draining(&mut self, time_ms: u64, asked: Asked, secs: u64) -> Vec<CheckpointAction> {
        let now = self.at(secs);
        self.coordinator.checkpoint_asked(time_ms, asked, true, now)
    }

    /// Reports that write `id` started, covering held batches through `held_through` and
    /// needing nothing before `cleanup_before`.
    fn started(
        &mut self,
        id: u64,
        cleanup_before: Option<u64>,
        held_through: Option<u64>,
        secs: u64,
    ) {
        let now = self.at(secs);
        self.coordinator.write_started(
            StartedWrite {
                id: CheckpointId(id),
                cleanup_before,
                held_through,
            },
            now,
        );
    }

    fn ended(&mut self, id: u64, outcome: WriteOutcome, secs: u64) -> Vec<CheckpointAction> {
        let now = self.at(secs);
        self.coordinator.write_ended(CheckpointId(id), outcome, now)
    }

    fn pause_elapsed(&mut self, secs: u64) -> Vec<CheckpointAction> {
        let now = self.at(secs);
        self.coordinator.pause_elapsed(now)
    }

    fn drain_idle(&mut self, final_time_ms: u64, secs: u64) -> Vec<CheckpointAction> {
        let now = self.at(secs);
        self.coordinator.drain_idle(final_time_ms, now)
    }

    fn in_flight(&self) -> Vec<u64> {
        self.coordinator.in_flight().iter().map(|id| id.0).collect()
    }

    fn latest(&self) -> Option<u64> {
        self.coordinator.latest_durable().map(|id| id.0)
    }
}

fn start(time_ms: u64) -> Vec<CheckpointAction> {
    vec![StartWrite { time_ms }]
}

fn timed_out(id: u64) -> String {
    format!("checkpoint {id} timed out after 5s and was abandoned")
}

// ========================================= interval ========================================= //

#[test]
fn an_after_checkpoint_within_the_interval_of_the_last_start_is_skipped() {
    let mut t = Test::new(CheckpointPolicy {
        interval: Duration::from_secs(10),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ended(1, Durable, 1), vec![]);
    // Measured from the start of the latest write, not its end.
    assert_eq!(
        t.ask(1000, Asked::AfterBatch, 9),
        vec![Skipped { time_ms: 1000 }]
    );
    assert!(!t.coordinator.is_waiting());
    assert_eq!(t.ask(2000, Asked::AfterBatch, 10), start(2000));
}

#[test]
fn with_a_zero_interval_every_after_checkpoint_is_written() {
    let mut t = Test::new(policy(1));
    for id in 1..=3 {
        assert_eq!(t.ask(id * 1000, Asked::AfterBatch, 0), start(id * 1000));
        t.started(id, None, None, 0);
        assert_eq!(t.ended(id, Durable, 0), vec![]);
    }
    assert_eq!(t.latest(), Some(3));
}

#[test]
fn before_checkpoints_and_checkpoints_while_draining_are_never_skipped() {
    let mut t = Test::new(CheckpointPolicy {
        interval: Duration::from_secs(3600),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ended(1, Durable, 1), vec![]);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 2), start(2000));
    t.started(2, None, None, 2);
    assert_eq!(t.ended(2, Durable, 3), vec![]);
    assert_eq!(
        t.ask(2000, Asked::AfterBatch, 4),
        vec![Skipped { time_ms: 2000 }]
    );
    assert_eq!(t.ask_draining(2000, Asked::AfterBatch, 4), start(2000));
}

#[test]
fn an_after_checkpoint_coalesces_with_a_waiting_one_instead_of_being_skipped() {
    let mut t = Test::new(CheckpointPolicy {
        interval: Duration::from_secs(3600),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), vec![]);
    // Within the interval, but a checkpoint waits: it covers this request too.
    assert_eq!(t.ask(3000, Asked::AfterBatch, 2), vec![]);
    assert_eq!(t.ended(1, Durable, 3), start(3000));
}

// ======================================= minimum pause ======================================= //

#[test]
fn an_after_checkpoint_within_the_minimum_pause_is_skipped() {
    let mut t = Test::new(CheckpointPolicy {
        min_pause: Duration::from_secs(10),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    // Measured from the end of the latest write, failed or not.
    assert_eq!(
        t.ended(1, Failed("disk full".into()), 5),
        vec![FailureTolerated {
            reason: "disk full".into()
        }]
    );
    assert_eq!(
        t.ask(1000, Asked::AfterBatch, 14),
        vec![Skipped { time_ms: 1000 }]
    );
    assert_eq!(t.ask(2000, Asked::AfterBatch, 15), start(2000));
}

#[test]
fn the_minimum_pause_holds_the_next_checkpoint_back_with_one_timer() {
    let mut t = Test::new(CheckpointPolicy {
        min_pause: Duration::from_secs(10),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, Some(1000), 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), vec![]);
    // The write ends: what it covered runs, and the waiting checkpoint waits for the whole
    // pause, measured from now.
    assert_eq!(
        t.ended(1, Durable, 2),
        vec![
            Release { through_ms: 1000 },
            ArmPauseTimer(Duration::from_secs(10))
        ]
    );
    assert!(t.coordinator.is_waiting());
    assert!(t.in_flight().is_empty());
    // Another request while the timer is armed coalesces and asks for no second timer.
    assert_eq!(t.ask(3000, Asked::BeforeBatch, 5), vec![]);
    assert_eq!(t.drain_idle(3000, 6), vec![], "a drain waits for the pause");
    // A timer that fires early is armed again for what is left.
    assert_eq!(
        t.pause_elapsed(11),
        vec![ArmPauseTimer(Duration::from_secs(1))]
    );
    assert_eq!(t.pause_elapsed(12), start(3000));
    assert!(!t.coordinator.is_waiting());
}

// ===================================== maximum concurrent ===================================== //

#[test]
fn with_one_concurrent_checkpoint_writes_go_one_at_a_time() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, Some(1000), 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), vec![]);
    assert_eq!(t.in_flight(), vec![1]);
    assert!(t.coordinator.is_waiting());
    assert_eq!(
        t.ended(1, Durable, 2),
        vec![Release { through_ms: 1000 }, StartWrite { time_ms: 2000 }]
    );
    t.started(2, None, Some(2000), 2);
    assert_eq!(t.in_flight(), vec![2]);
    assert_eq!(t.latest(), Some(1));
    assert!(!t.coordinator.is_waiting());
    assert_eq!(t.ended(2, Durable, 3), vec![Release { through_ms: 2000 }]);
    assert_eq!(t.latest(), Some(2));
}

#[test]
fn two_writes_are_in_flight_at_once_and_a_third_waits() {
    let mut t = Test::new(policy(2));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(1000), Some(1000), 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), start(2000));
    t.started(2, Some(1000), Some(2000), 1);
    // Two in flight: the next requests wait, as one.
    assert_eq!(t.ask(3000, Asked::BeforeBatch, 2), vec![]);
    assert_eq!(t.ask(4000, Asked::BeforeBatch, 3), vec![]);
    assert_eq!(t.in_flight(), vec![1, 2]);
    assert!(t.coordinator.is_waiting());
    // One write ends: what it covered runs, then one checkpoint starts for every request that
    // waited, at the newest time.
    assert_eq!(
        t.ended(1, Durable, 4),
        vec![
            Clean { before_ms: 1000 },
            Release { through_ms: 1000 },
            StartWrite { time_ms: 4000 }
        ]
    );
    t.coordinator.cleaned(1000);
    t.started(3, Some(1000), Some(4000), 4);
    assert_eq!(t.in_flight(), vec![2, 3]);
    assert!(!t.coordinator.is_waiting());
    assert_eq!(t.latest(), Some(1));
    assert_eq!(t.ended(3, Durable, 5), vec![Release { through_ms: 4000 }]);
    assert_eq!(t.latest(), Some(3));
    // Nothing started a fourth write.
    assert_eq!(t.ended(2, Durable, 6), vec![Release { through_ms: 2000 }]);
    assert!(t.in_flight().is_empty());
}

#[test]
fn a_max_concurrent_of_zero_counts_as_one() {
    let mut t = Test::new(policy(0));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 0), vec![]);
    assert_eq!(t.ended(1, Durable, 1), start(2000));
}

// ========================================= coalescing ========================================= //

#[test]
fn requests_that_wait_coalesce_into_one_write_at_the_newest_time() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    // The newest time wins, whatever order the requests came in.
    assert_eq!(t.ask(3000, Asked::BeforeBatch, 1), vec![]);
    assert_eq!(t.ask(2000, Asked::AfterBatch, 2), vec![]);
    assert_eq!(t.ask(2500, Asked::BeforeBatch, 3), vec![]);
    // Nothing starts (so no snapshot is taken) until the slot is free; then exactly one.
    assert_eq!(t.ended(1, Durable, 4), start(3000));
    t.started(2, None, None, 4);
    assert_eq!(t.ended(2, Durable, 5), vec![]);
}

// ========================================== timeout ========================================== //

#[test]
fn a_timed_out_write_is_a_failure_and_its_late_completion_is_not_success() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(1000), Some(1000), 0);
    assert_eq!(
        t.ended(1, TimedOut, 5),
        vec![
            FailureTolerated {
                reason: timed_out(1)
            },
            Release { through_ms: 1000 }
        ]
    );
    assert_eq!(t.coordinator.consecutive_failures(), 1);
    assert_eq!(t.latest(), None);
    assert!(t.in_flight().is_empty());
    // Its write lands after all: it is not in flight any more, so nothing changes — no
    // cleanup, no latest, no reset of the failure count, no second release.
    assert_eq!(t.ended(1, Durable, 6), vec![]);
    assert_eq!(t.latest(), None);
    assert_eq!(t.coordinator.consecutive_failures(), 1);
    // The next checkpoint succeeds and resets the count.
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 7), start(2000));
    t.started(2, Some(1000), Some(2000), 7);
    assert_eq!(
        t.ended(2, Durable, 8),
        vec![Clean { before_ms: 1000 }, Release { through_ms: 2000 }]
    );
    assert_eq!(t.coordinator.consecutive_failures(), 0);
    assert_eq!(t.latest(), Some(2));
}

// ==================================== tolerable failures ==================================== //

#[test]
fn failures_beyond_the_tolerance_give_up_and_nothing_follows() {
    let mut t = Test::new(CheckpointPolicy {
        tolerable_failures: 1,
        ..policy(2)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, Some(1000), 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), start(2000));
    t.started(2, None, Some(2000), 1);
    assert_eq!(t.ask(3000, Asked::BeforeBatch, 2), vec![]);
    assert_eq!(
        t.ended(1, TimedOut, 5),
        vec![
            FailureTolerated {
                reason: timed_out(1)
            },
            Release { through_ms: 1000 },
            StartWrite { time_ms: 3000 }
        ]
    );
    t.started(3, None, Some(3000), 5);
    // The second failure in a row is one too many: no release, no next write.
    let failure = TooManyFailedCheckpoints {
        failed: 2,
        tolerated: 1,
        last: timed_out(2),
    };
    assert_eq!(t.ended(2, TimedOut, 6), vec![GiveUp(failure.clone())]);
    let message = failure.to_string();
    assert!(
        message.contains("2 consecutive checkpoints failed (tolerated: 1)")
            && message.contains("timed out after 5s"),
        "{message}"
    );
}

#[test]
fn a_durable_checkpoint_resets_the_failure_count() {
    let mut t = Test::new(CheckpointPolicy {
        tolerable_failures: 1,
        ..policy(1)
    });
    let fail = |reason: &str| Failed(reason.to_owned());
    let tolerated = |reason: &str| {
        vec![FailureTolerated {
            reason: reason.to_owned(),
        }]
    };
    for (id, outcome, expected) in [
        (1, fail("one"), tolerated("one")),
        (2, Durable, vec![]),
        (3, fail("two"), tolerated("two")),
    ] {
        assert_eq!(t.ask(id * 1000, Asked::BeforeBatch, id), start(id * 1000));
        t.started(id, None, None, id);
        assert_eq!(t.ended(id, outcome, id), expected, "write {id}");
    }
    assert_eq!(t.coordinator.consecutive_failures(), 1);
}

#[test]
fn a_write_that_could_not_start_is_a_failure_and_releases_what_it_was_for() {
    let mut t = Test::new(CheckpointPolicy {
        min_pause: Duration::from_secs(10),
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    assert_eq!(
        t.coordinator
            .write_not_started("no id".into(), Some(1000), t.at(0)),
        vec![
            FailureTolerated {
                reason: "no id".into()
            },
            Release { through_ms: 1000 }
        ]
    );
    assert_eq!(t.coordinator.consecutive_failures(), 1);
    assert!(t.in_flight().is_empty() && !t.coordinator.is_waiting());
    // It counts as an end for the minimum pause.
    assert_eq!(
        t.ask(1000, Asked::AfterBatch, 1),
        vec![Skipped { time_ms: 1000 }]
    );

    let mut t = Test::new(CheckpointPolicy {
        tolerable_failures: 0,
        ..policy(1)
    });
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    assert_eq!(
        t.coordinator
            .write_not_started("no id".into(), Some(1000), t.at(0)),
        vec![GiveUp(TooManyFailedCheckpoints {
            failed: 1,
            tolerated: 0,
            last: "no id".into()
        })]
    );
}

// ===================================== cleanup and latest ===================================== //

#[test]
fn a_slow_older_write_that_lands_last_is_neither_the_latest_nor_cleaned_for() {
    let mut t = Test::new(policy(2));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(1000), None, 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), start(2000));
    t.started(2, Some(2000), None, 1);
    assert_eq!(t.ended(2, Durable, 2), vec![Clean { before_ms: 2000 }]);
    t.coordinator.cleaned(2000);
    assert_eq!(t.latest(), Some(2));
    // The older one lands: durable, but not newer than the latest.
    assert_eq!(t.ended(1, Durable, 3), vec![]);
    assert_eq!(t.latest(), Some(2));
    assert_eq!(t.coordinator.consecutive_failures(), 0);
}

#[test]
fn cleanup_only_moves_forward() {
    let mut t = Test::new(policy(1));
    let write = |t: &mut Test, id: u64, cleanup_before: Option<u64>| {
        assert_eq!(t.ask(id * 1000, Asked::BeforeBatch, id), start(id * 1000));
        t.started(id, cleanup_before, None, id);
        t.ended(id, Durable, id)
    };
    assert_eq!(
        write(&mut t, 1, Some(2000)),
        vec![Clean { before_ms: 2000 }]
    );
    t.coordinator.cleaned(2000);
    assert_eq!(write(&mut t, 2, Some(2000)), vec![], "nothing new to clean");
    assert_eq!(write(&mut t, 3, Some(1000)), vec![], "never backwards");
    assert_eq!(write(&mut t, 4, None), vec![], "nothing queued yet");
    assert_eq!(
        write(&mut t, 5, Some(3000)),
        vec![Clean { before_ms: 3000 }]
    );
    assert_eq!(t.latest(), Some(5));
}

#[test]
fn a_cleanup_not_reported_done_is_asked_again_by_the_next_durable_checkpoint() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(2000), None, 0);
    assert_eq!(t.ended(1, Durable, 1), vec![Clean { before_ms: 2000 }]);
    // The tracker failed to clean: no `cleaned`.
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 2), start(2000));
    t.started(2, Some(2000), None, 2);
    assert_eq!(t.ended(2, Durable, 3), vec![Clean { before_ms: 2000 }]);
}

#[test]
fn cleanup_uses_the_threshold_of_the_snapshot_not_a_later_one() {
    // Checkpoint 2's snapshot still lists t1 = 1000 as pending; t1 completes and checkpoint 3
    // (t1 done, oldest needed 2000) starts before 2 is durable. Checkpoint 2, durable after t1
    // completed, cleans nothing past 1000; checkpoint 3 cleans before 2000.
    let mut t = Test::new(policy(2));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(1000), Some(1000), 0);
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 1), start(2000));
    t.started(2, Some(1000), Some(2000), 1);
    assert_eq!(
        t.ended(1, Durable, 2),
        vec![Clean { before_ms: 1000 }, Release { through_ms: 1000 }]
    );
    t.coordinator.cleaned(1000);
    assert_eq!(t.ask(1000, Asked::AfterBatch, 3), start(1000));
    t.started(3, Some(2000), Some(2000), 3);
    assert_eq!(t.ended(2, Durable, 4), vec![Release { through_ms: 2000 }]);
    assert_eq!(t.latest(), Some(2));
    assert_eq!(
        t.ended(3, Durable, 5),
        vec![Clean { before_ms: 2000 }, Release { through_ms: 2000 }]
    );
    assert_eq!(t.latest(), Some(3));
}

// ======================================= held batches ======================================= //

#[test]
fn held_batches_are_released_after_the_cleanup_and_before_the_next_write() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, Some(1000), Some(2000), 0);
    assert_eq!(
        t.ask(3000, Asked::BeforeBatch, 1),
        vec![],
        "no release before the end"
    );
    assert_eq!(
        t.ended(1, Durable, 2),
        vec![
            Clean { before_ms: 1000 },
            Release { through_ms: 2000 },
            StartWrite { time_ms: 3000 }
        ]
    );
}

#[test]
fn a_write_that_covers_no_held_batch_releases_nothing() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask(1000, Asked::AfterBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ended(1, Durable, 1), vec![]);
    assert_eq!(t.ask(2000, Asked::AfterBatch, 2), start(2000));
    t.started(2, None, None, 2);
    assert_eq!(
        t.ended(2, Failed("no".into()), 3),
        vec![FailureTolerated {
            reason: "no".into()
        }]
    );
    assert_eq!(
        t.coordinator.write_not_started("no".into(), None, t.at(4)),
        vec![FailureTolerated {
            reason: "no".into()
        }]
    );
}

// ========================================== drain ========================================== //

#[test]
fn a_drain_waits_for_the_writes_in_flight() {
    let mut t = Test::new(policy(2));
    assert_eq!(t.ask_draining(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ask_draining(1000, Asked::AfterBatch, 0), start(1000));
    t.started(2, None, None, 0);
    assert_eq!(t.drain_idle(1000, 1), vec![]);
    assert_eq!(t.ended(2, Durable, 2), vec![]);
    assert_eq!(t.drain_idle(1000, 2), vec![], "write 1 is still in flight");
    assert_eq!(t.ended(1, Durable, 3), vec![]);
    assert_eq!(t.drain_idle(1000, 3), vec![DrainFinished]);
}

#[test]
fn a_drain_waits_for_a_waiting_checkpoint() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.ask_draining(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ask_draining(1000, Asked::AfterBatch, 0), vec![]);
    assert_eq!(t.drain_idle(1000, 1), vec![]);
    assert_eq!(t.ended(1, Durable, 1), start(1000));
    t.started(2, None, None, 1);
    assert_eq!(t.drain_idle(1000, 1), vec![]);
    assert_eq!(t.ended(2, Durable, 2), vec![]);
    assert_eq!(t.drain_idle(1000, 2), vec![DrainFinished]);
}

#[test]
fn a_drain_writes_a_failed_final_checkpoint_again() {
    let mut t = Test::new(CheckpointPolicy {
        interval: Duration::from_secs(3600),
        ..policy(1)
    });
    assert_eq!(t.ask_draining(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert_eq!(t.ended(1, Durable, 1), vec![]);
    assert_eq!(t.ask_draining(1000, Asked::AfterBatch, 1), start(1000));
    t.started(2, None, None, 1);
    assert_eq!(
        t.ended(2, Failed("full".into()), 2),
        vec![FailureTolerated {
            reason: "full".into()
        }]
    );
    // The final state is not durable: written again, the interval notwithstanding.
    assert_eq!(t.drain_idle(1000, 2), start(1000));
    t.started(3, None, None, 2);
    assert_eq!(t.drain_idle(1000, 3), vec![]);
    assert_eq!(t.ended(3, Durable, 3), vec![]);
    assert_eq!(t.drain_idle(1000, 3), vec![DrainFinished]);
    assert_eq!(t.latest(), Some(3));
}

#[test]
fn a_drain_with_nothing_ever_started_finishes_at_once() {
    let mut t = Test::new(policy(1));
    assert_eq!(t.drain_idle(1000, 0), vec![DrainFinished]);
}

// ========================================== settle ========================================== //

#[test]
fn a_checkpoint_settles_once_started_and_no_longer_in_flight() {
    let mut t = Test::new(policy(2));
    let settled = |t: &Test, id: u64| t.coordinator.has_settled(CheckpointId(id));
    assert!(!settled(&t, 1), "not started yet");
    assert_eq!(t.ask(1000, Asked::BeforeBatch, 0), start(1000));
    t.started(1, None, None, 0);
    assert!(!settled(&t, 1), "in flight");
    assert_eq!(
        t.ended(1, Failed("no".into()), 1),
        vec![FailureTolerated {
            reason: "no".into()
        }]
    );
    assert!(settled(&t, 1), "failed is settled too");
    assert_eq!(t.ask(2000, Asked::BeforeBatch, 2), start(2000));
    t.started(2, None, None, 2);
    assert_eq!(t.ask(3000, Asked::BeforeBatch, 2), start(3000));
    t.started(3, None, None, 2);
    assert_eq!(t.ended(3, Durable, 3), vec![]);
    assert!(settled(&t, 3));
    assert!(!settled(&t, 2), "an older write still in flight");
    assert!(!settled(&t, 4), "not started yet");
    assert_eq!(t.ended(2, Durable, 4), vec![]);
    assert!(settled(&t, 2));
}

#[test]
fn nothing_the_retained_checkpoints_need_is_cleaned() {
    // The store keeps three checkpoints: a restore may fall back to the oldest of them, so
    // cleanup follows the oldest's needs, not the newest's.
    let mut t = Test {
        coordinator: CheckpointCoordinator::retaining(policy(1), 3, None),
        start: Instant::now(),
    };
    let write = |t: &mut Test, id: u64, cleanup_before: Option<u64>| {
        assert_eq!(t.ask(id * 1000, Asked::BeforeBatch, id), start(id * 1000));
        t.started(id, cleanup_before, None, id);
        let actions = t.ended(id, Durable, id);
        if let [Clean { before_ms }] = actions.as_slice() {
            t.coordinator.cleaned(*before_ms);
        }
        actions
    };
    assert_eq!(
        write(&mut t, 1, Some(1000)),
        vec![Clean { before_ms: 1000 }]
    );
    assert_eq!(
        write(&mut t, 2, Some(2000)),
        vec![],
        "checkpoint 1 still needs 1000"
    );
    assert_eq!(
        write(&mut t, 3, Some(3000)),
        vec![],
        "checkpoint 1 is still retained"
    );
    assert_eq!(
        write(&mut t, 4, Some(4000)),
        vec![Clean { before_ms: 2000 }],
        "checkpoint 1 left the retained three: what checkpoint 2 needs is the limit"
    );
    assert_eq!(
        write(&mut t, 5, Some(5000)),
        vec![Clean { before_ms: 3000 }]
    );
}

#[test]
fn the_restored_checkpoint_counts_as_retained_and_one_needing_everything_holds_cleanup() {
    // Restored from a checkpoint that needs batches from 500 on: kept until two newer ones
    // are durable.
    let mut t = Test {
        coordinator: CheckpointCoordinator::retaining(policy(1), 2, Some(500)),
        start: Instant::now(),
    };
    let write = |t: &mut Test, id: u64, cleanup_before: Option<u64>| {
        assert_eq!(t.ask(id * 1000, Asked::BeforeBatch, id), start(id * 1000));
        t.started(id, cleanup_before, None, id);
        t.ended(id, Durable, id)
    };
    assert_eq!(write(&mut t, 1, Some(1000)), vec![Clean { before_ms: 500 }]);
    t.coordinator.cleaned(500);
    assert_eq!(
        write(&mut t, 2, Some(2000)),
        vec![Clean { before_ms: 1000 }]
    );
    t.coordinator.cleaned(1000);
    // A checkpoint written before anything was queued needs everything after its time:
    // nothing is cleaned while it is retained.
    assert_eq!(write(&mut t, 3, None), vec![]);
    assert_eq!(write(&mut t, 4, Some(4000)), vec![]);
    assert_eq!(
        write(&mut t, 5, Some(5000)),
        vec![Clean { before_ms: 4000 }]
    );
}
