//! The invariants a run must keep, checked over its [`History`].
//!
//! * every acknowledged record is in exactly one committed batch (none lost, none duplicated),
//!   and nothing committed was never produced;
//! * every acknowledged record was written to the WAL first;
//! * batches commit in order, each once, with no gaps (a batch that was allocated records is
//!   committed before any later batch is), and a batch commits exactly what was allocated to it;
//! * nothing from an abandoned attempt is visible: what a reader sees of a batch is the output
//!   of the attempt that committed it, and only that;
//! * every restart completes within a bound, and the pipeline recovers from every fault within
//!   a bound;
//! * memory stays bounded while a part is down;
//! * no supervisor gives up unless the scenario expects it (and then one does).
//!
//! [`check`] returns a [`Report`] listing every [`Violation`], each a sentence with the values
//! that broke it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::history::History;

/// The bounds a run must stay within.
#[derive(Clone, Debug)]
pub struct Bounds {
    /// An actor that failed must have started again within this long.
    pub restart: Duration,
    /// After every fault, a batch with records must complete within this long.
    pub recovery: Duration,
    /// Resident memory may grow at most this much while a part is down, over what it was
    /// when the part went down.
    pub memory_growth: u64,
    /// The scenario expects a supervisor to give up (the budget-spent path).
    pub give_up_expected: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            restart: Duration::from_secs(10),
            recovery: Duration::from_secs(20),
            memory_growth: 128 << 20,
            give_up_expected: false,
        }
    }
}

const EXAMPLES: usize = 10;

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// Acknowledged records in no committed batch.
    #[error("{count} acknowledged records are in no committed batch, e.g. {examples:?}")]
    Lost {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<u64>,
    },
    /// Records committed in more than one batch (or twice in one).
    #[error("{count} records were committed more than once, e.g. {examples:?} (record, batches)")]
    Duplicated {
        /// How many.
        count: usize,
        /// The first few, each with the batches that hold it.
        examples: Vec<(u64, Vec<u64>)>,
    },
    /// Committed records that no source produced.
    #[error("{count} committed records were never produced, e.g. {examples:?}")]
    NeverProduced {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<u64>,
    },
    /// More records acknowledged than were written to the WAL.
    #[error(
        "{acknowledged} records were acknowledged but only {wal_records} were written to the WAL"
    )]
    AckedBeforeWal {
        /// Acknowledged records.
        acknowledged: u64,
        /// Records in `block_stored` events.
        wal_records: u64,
    },
    /// A batch committed after a later one.
    #[error("batch {batch} committed after the later batch {after}")]
    OutOfOrder {
        /// The batch.
        batch: u64,
        /// The later batch that committed before it.
        after: u64,
    },
    /// A batch committed for the first time twice.
    #[error("batch {batch} was committed twice, by attempts {first} and {second}")]
    CommittedTwice {
        /// The batch.
        batch: u64,
        /// The first committing attempt.
        first: u64,
        /// The second.
        second: u64,
    },
    /// A batch allocated records never committed although a later batch did.
    #[error(
        "batch {missing} was allocated {records} records but never committed, while the later batch {later} was"
    )]
    Gap {
        /// The batch missing.
        missing: u64,
        /// Its records.
        records: u64,
        /// A later committed batch.
        later: u64,
    },
    /// A batch committed another number of records than was allocated to it.
    #[error("batch {batch} was allocated {allocated} records but committed {committed}")]
    AllocationMismatch {
        /// The batch.
        batch: u64,
        /// Records allocated.
        allocated: u64,
        /// Records committed.
        committed: u64,
    },
    /// A committed batch re-committed with other records.
    #[error("batch {batch} was committed again by attempt {attempt} with other records")]
    Conflict {
        /// The batch.
        batch: u64,
        /// The attempt.
        attempt: u64,
    },
    /// A reader sees output of an attempt that did not commit the batch.
    #[error("batch {batch} shows the output of attempt {attempt}, which {why}")]
    AbandonedVisible {
        /// The batch.
        batch: u64,
        /// The visible attempt.
        attempt: u64,
        /// `"was abandoned"`, or `"did not commit it (attempt N did)"`.
        why: String,
    },
    /// What a reader sees of a batch differs from what was committed.
    #[error("batch {batch}: a reader sees {visible} records but {committed} were committed")]
    VisibleMismatch {
        /// The batch.
        batch: u64,
        /// Records visible (0: the batch is not visible).
        visible: usize,
        /// Records committed (0: never committed).
        committed: usize,
    },
    /// An actor failed and was not running again within the bound.
    #[error("{actor} failed ({reason}) and took {took:?} to restart, more than {bound:?}")]
    SlowRestart {
        /// The actor.
        actor: String,
        /// Its failure.
        reason: String,
        /// How long it took.
        took: Duration,
        /// The bound.
        bound: Duration,
    },
    /// An actor failed and never started again (and was not given up on).
    #[error("{actor} failed ({reason}) {failed_at:?} into the run and never restarted")]
    NeverRestarted {
        /// The actor.
        actor: String,
        /// Its failure.
        reason: String,
        /// When.
        failed_at: Duration,
    },
    /// The pipeline took too long to complete a batch again after a fault.
    #[error(
        "after `{fault}` the pipeline took {took:?} to complete a batch again, more than {bound:?}"
    )]
    SlowRecovery {
        /// The fault.
        fault: String,
        /// How long.
        took: Duration,
        /// The bound.
        bound: Duration,
    },
    /// The pipeline never completed a batch again after a fault.
    #[error("after `{fault}` ({at:?} into the run) the pipeline never completed a batch again")]
    NotRecovered {
        /// The fault.
        fault: String,
        /// When it was injected.
        at: Duration,
    },
    /// Memory grew too much while a part was down.
    #[error(
        "resident memory grew by {growth} bytes while a part was down (peak {peak} bytes), more than the {bound} bytes allowed"
    )]
    Memory {
        /// The largest growth during an outage.
        growth: u64,
        /// The peak while down.
        peak: u64,
        /// The allowed growth.
        bound: u64,
    },
    /// A supervisor gave up although the scenario did not expect it.
    #[error("{actor} gave up on {child}: {reason}")]
    UnexpectedGiveUp {
        /// The supervisor.
        actor: String,
        /// The child.
        child: String,
        /// Why.
        reason: String,
    },
    /// The scenario expected a give-up and none happened.
    #[error("a supervisor was expected to give up, and none did")]
    MissingGiveUp,
}

/// The verdict over a history: every violation found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// What broke; empty when every invariant held.
    pub violations: Vec<Violation>,
    /// Checks that could not be made fully (e.g. after missed events).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every invariant held.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.violations.is_empty() {
            f.write_str("every invariant held")?;
        } else {
            writeln!(f, "{} invariant violations:", self.violations.len())?;
            for v in &self.violations {
                writeln!(f, "  - {v}")?;
            }
        }
        for n in &self.notes {
            write!(f, "\n  note: {n}")?;
        }
        Ok(())
    }
}

/// Checks every invariant over `history` within `bounds`.
pub fn check(history: &History, bounds: &Bounds) -> Report {
    let mut report = Report::default();
    let v = &mut report.violations;

    // Exactly once: each record in one committed batch.
    let mut batches_of: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for c in &history.commits {
        for r in &c.records {
            batches_of.entry(*r).or_default().push(c.batch);
        }
    }
    let lost: Vec<u64> = history
        .acknowledged
        .iter()
        .filter(|r| !batches_of.contains_key(r))
        .copied()
        .collect();
    if !lost.is_empty() {
        v.push(Violation::Lost {
            count: lost.len(),
            examples: lost.into_iter().take(EXAMPLES).collect(),
        });
    }
    let duplicated: Vec<(u64, Vec<u64>)> = batches_of
        .iter()
        .filter(|(_, b)| b.len() > 1)
        .map(|(r, b)| (*r, b.clone()))
        .collect();
    if !duplicated.is_empty() {
        v.push(Violation::Duplicated {
            count: duplicated.len(),
            examples: duplicated.into_iter().take(EXAMPLES).collect(),
        });
    }
    let made_up: Vec<u64> = batches_of
        .keys()
        .filter(|r| !history.produced.contains(r))
        .copied()
        .collect();
    if !made_up.is_empty() {
        v.push(Violation::NeverProduced {
            count: made_up.len(),
            examples: made_up.into_iter().take(EXAMPLES).collect(),
        });
    }
    if history.lagged_events == 0 {
        let acknowledged = history.acknowledged.len() as u64;
        if acknowledged > history.wal_records {
            v.push(Violation::AckedBeforeWal {
                acknowledged,
                wal_records: history.wal_records,
            });
        }
    } else {
        report.notes.push(format!(
            "the recorder missed {} events: the WAL and allocation counts were not checked",
            history.lagged_events
        ));
    }

    // Order: first commits strictly increasing, each batch once.
    let mut first_commit: BTreeMap<u64, u64> = BTreeMap::new();
    let mut latest: Option<u64> = None;
    for c in &history.commits {
        if let Some(first) = first_commit.get(&c.batch) {
            v.push(Violation::CommittedTwice {
                batch: c.batch,
                first: *first,
                second: c.attempt,
            });
            continue;
        }
        first_commit.insert(c.batch, c.attempt);
        if let Some(l) = latest
            && c.batch < l
        {
            v.push(Violation::OutOfOrder {
                batch: c.batch,
                after: l,
            });
        }
        latest = latest.max(Some(c.batch));
    }
    // No gaps: an allocated batch is committed before any later batch.
    let committed_counts: BTreeMap<u64, u64> = history
        .commits
        .iter()
        .map(|c| (c.batch, c.records.len() as u64))
        .collect();
    for (&batch, &records) in &history.allocated {
        if records == 0 {
            continue;
        }
        match committed_counts.get(&batch) {
            None => {
                if let Some((&later, _)) = committed_counts.range(batch + 1..).next() {
                    v.push(Violation::Gap {
                        missing: batch,
                        records,
                        later,
                    });
                }
            }
            Some(&committed) if committed != records && history.lagged_events == 0 => {
                v.push(Violation::AllocationMismatch {
                    batch,
                    allocated: records,
                    committed,
                });
            }
            Some(_) => {}
        }
    }
    for &(batch, attempt) in &history.conflicts {
        v.push(Violation::Conflict { batch, attempt });
    }

    // Nothing from an abandoned attempt is visible.
    if let Some(visible) = &history.visible {
        let abandoned = history.abandoned_attempts();
        let committed: BTreeMap<u64, (u64, &Vec<u64>)> = history
            .commits
            .iter()
            .map(|c| (c.batch, (c.attempt, &c.records)))
            .collect();
        for (batch, seen) in visible {
            if abandoned.contains(&seen.attempt) {
                v.push(Violation::AbandonedVisible {
                    batch: *batch,
                    attempt: seen.attempt,
                    why: "was abandoned".to_owned(),
                });
                continue;
            }
            match committed.get(batch) {
                Some((attempt, _)) if *attempt != seen.attempt => {
                    v.push(Violation::AbandonedVisible {
                        batch: *batch,
                        attempt: seen.attempt,
                        why: format!("did not commit it (attempt {attempt} did)"),
                    });
                }
                Some((_, records)) if **records != seen.records => {
                    v.push(Violation::VisibleMismatch {
                        batch: *batch,
                        visible: seen.records.len(),
                        committed: records.len(),
                    });
                }
                None => v.push(Violation::VisibleMismatch {
                    batch: *batch,
                    visible: seen.records.len(),
                    committed: 0,
                }),
                Some(_) => {}
            }
        }
        for (batch, (_, records)) in &committed {
            if !visible.contains_key(batch) {
                v.push(Violation::VisibleMismatch {
                    batch: *batch,
                    visible: 0,
                    committed: records.len(),
                });
            }
        }
    } else {
        report
            .notes
            .push("the workload does not show its output: visibility was not checked".to_owned());
    }

    // Restarts and recoveries within bounds.
    let given_up: BTreeSet<&str> = history.give_ups.iter().map(|g| g.child.as_str()).collect();
    let end = history.elapsed;
    let ended_early = history.engine_error.is_some();
    for r in &history.restarts {
        match r.restarted_in {
            Some(took) if took > bounds.restart => v.push(Violation::SlowRestart {
                actor: r.actor.clone(),
                reason: r.reason.clone(),
                took,
                bound: bounds.restart,
            }),
            Some(_) => {}
            None => {
                let excused = given_up.contains(r.actor.as_str())
                    || ended_early
                    || end.saturating_sub(r.failed_at) < bounds.restart;
                if !excused {
                    v.push(Violation::NeverRestarted {
                        actor: r.actor.clone(),
                        reason: r.reason.clone(),
                        failed_at: r.failed_at,
                    });
                }
            }
        }
    }
    for f in history.faults.iter().filter(|f| f.skipped.is_none()) {
        match f.recovery {
            Some(took) if took > bounds.recovery => v.push(Violation::SlowRecovery {
                fault: f.fault.to_string(),
                took,
                bound: bounds.recovery,
            }),
            Some(_) => {}
            None if !bounds.give_up_expected => v.push(Violation::NotRecovered {
                fault: f.fault.to_string(),
                at: f.injected_at,
            }),
            None => {}
        }
    }

    // Bounded memory while a part is down.
    let m = &history.memory;
    if m.growth_while_down > bounds.memory_growth {
        v.push(Violation::Memory {
            growth: m.growth_while_down,
            peak: m.peak_while_down,
            bound: bounds.memory_growth,
        });
    }

    // Give-ups only where expected.
    if bounds.give_up_expected {
        if history.give_ups.is_empty() {
            v.push(Violation::MissingGiveUp);
        }
    } else {
        for g in &history.give_ups {
            v.push(Violation::UnexpectedGiveUp {
                actor: g.actor.clone(),
                child: g.child.clone(),
                reason: g.reason.clone(),
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Commit, FaultRecord, GiveUp, Restart, VisibleBatch};
    use crate::schedule::{ActorKind, Fault};

    /// A history where everything held: records 0..6 in batches 100, 200, 300.
    fn good() -> History {
        let batches = [
            (100, 1, vec![0, 1]),
            (200, 2, vec![2, 3]),
            (300, 4, vec![4, 5]),
        ];
        let mut h = History {
            produced: (0..8).collect(),
            acknowledged: (0..6).collect(),
            wal_blocks: 3,
            wal_records: 6,
            elapsed: Duration::from_secs(5),
            ..History::default()
        };
        h.attempts.insert(3, 300); // abandoned: killed before it committed
        let mut visible = BTreeMap::new();
        for (batch, attempt, records) in batches {
            h.allocated.insert(batch, records.len() as u64);
            h.attempts.insert(attempt, batch);
            visible.insert(
                batch,
                VisibleBatch {
                    attempt,
                    records: records.clone(),
                },
            );
            h.commits.push(Commit {
                batch,
                attempt,
                records,
            });
        }
        h.visible = Some(visible);
        h.restarts.push(Restart {
            actor: "driver".into(),
            reason: "killed".into(),
            failed_at: Duration::from_secs(1),
            restarted_in: Some(Duration::from_millis(200)),
        });
        h.faults.push(FaultRecord {
            fault: Fault::Kill(ActorKind::Driver),
            injected_at: Duration::from_secs(1),
            recovery: Some(Duration::from_millis(700)),
            skipped: None,
        });
        h.memory.baseline = 50 << 20;
        h.memory.peak_while_down = 60 << 20;
        h.memory.growth_while_down = 10 << 20;
        h
    }

    fn violations(h: &History) -> Vec<Violation> {
        check(h, &Bounds::default()).violations
    }

    #[test]
    fn a_good_history_passes() {
        let r = check(&good(), &Bounds::default());
        assert!(r.is_ok(), "{r}");
    }

    #[test]
    fn a_lost_record_is_caught() {
        let mut h = good();
        h.acknowledged.insert(6);
        h.wal_records = 7;
        assert_eq!(
            violations(&h),
            vec![Violation::Lost {
                count: 1,
                examples: vec![6]
            }]
        );
    }

    #[test]
    fn a_record_in_two_batches_is_caught() {
        let mut h = good();
        h.commits[2].records.push(1);
        h.allocated.insert(300, 3);
        if let Some(v) = h.visible.as_mut().and_then(|v| v.get_mut(&300)) {
            v.records.push(1);
        }
        assert_eq!(
            violations(&h),
            vec![Violation::Duplicated {
                count: 1,
                examples: vec![(1, vec![100, 300])]
            }]
        );
    }

    #[test]
    fn a_made_up_record_is_caught() {
        let mut h = good();
        h.produced.remove(&5);
        assert!(matches!(
            violations(&h)[..],
            [Violation::NeverProduced { count: 1, .. }]
        ));
    }

    #[test]
    fn an_ack_before_the_wal_is_caught() {
        let mut h = good();
        h.wal_records = 4;
        assert!(matches!(
            violations(&h)[..],
            [Violation::AckedBeforeWal {
                acknowledged: 6,
                wal_records: 4
            }]
        ));
    }

    #[test]
    fn batches_out_of_order_are_caught() {
        let mut h = good();
        h.commits.swap(1, 2);
        assert_eq!(
            violations(&h),
            vec![Violation::OutOfOrder {
                batch: 200,
                after: 300
            }]
        );
    }

    #[test]
    fn a_batch_committed_twice_is_caught() {
        let mut h = good();
        let again = h.commits[0].clone();
        h.commits.push(Commit {
            attempt: 9,
            ..again
        });
        assert!(
            violations(&h).contains(&Violation::CommittedTwice {
                batch: 100,
                first: 1,
                second: 9
            }),
            "{:?}",
            violations(&h)
        );
    }

    #[test]
    fn a_gap_is_caught() {
        let mut h = good();
        let removed = h.commits.remove(1);
        h.acknowledged.retain(|r| !removed.records.contains(r));
        if let Some(v) = h.visible.as_mut() {
            v.remove(&200);
        }
        assert_eq!(
            violations(&h),
            vec![Violation::Gap {
                missing: 200,
                records: 2,
                later: 300
            }]
        );
    }

    #[test]
    fn committing_other_than_allocated_is_caught() {
        let mut h = good();
        h.allocated.insert(200, 3);
        assert!(matches!(
            violations(&h)[..],
            [Violation::AllocationMismatch {
                batch: 200,
                allocated: 3,
                committed: 2
            }]
        ));
    }

    #[test]
    fn a_conflicting_recommit_is_caught() {
        let mut h = good();
        h.conflicts.push((100, 7));
        assert_eq!(
            violations(&h),
            vec![Violation::Conflict {
                batch: 100,
                attempt: 7
            }]
        );
    }

    #[test]
    fn output_of_an_abandoned_attempt_is_caught() {
        let mut h = good();
        if let Some(v) = h.visible.as_mut().and_then(|v| v.get_mut(&300)) {
            v.attempt = 3;
        }
        assert_eq!(
            violations(&h),
            vec![Violation::AbandonedVisible {
                batch: 300,
                attempt: 3,
                why: "was abandoned".into()
            }]
        );
    }

    #[test]
    fn visible_output_other_than_committed_is_caught() {
        let mut h = good();
        if let Some(v) = h.visible.as_mut() {
            v.remove(&100);
            if let Some(b) = v.get_mut(&200) {
                b.records.pop();
            }
        }
        assert_eq!(
            violations(&h),
            vec![
                Violation::VisibleMismatch {
                    batch: 200,
                    visible: 1,
                    committed: 2
                },
                Violation::VisibleMismatch {
                    batch: 100,
                    visible: 0,
                    committed: 2
                },
            ]
        );
    }

    #[test]
    fn a_slow_or_missing_restart_is_caught() {
        let mut h = good();
        h.restarts[0].restarted_in = Some(Duration::from_secs(11));
        assert!(matches!(
            violations(&h)[..],
            [Violation::SlowRestart { .. }]
        ));
        h.restarts[0].restarted_in = None;
        h.elapsed = Duration::from_secs(20);
        assert!(matches!(
            violations(&h)[..],
            [Violation::NeverRestarted { .. }]
        ));
        // A failure just before the end of the run is not yet late.
        h.restarts[0].failed_at = Duration::from_secs(15);
        assert!(violations(&h).is_empty());
    }

    #[test]
    fn a_slow_or_missing_recovery_is_caught() {
        let mut h = good();
        h.faults[0].recovery = Some(Duration::from_secs(30));
        assert!(matches!(
            violations(&h)[..],
            [Violation::SlowRecovery { .. }]
        ));
        h.faults[0].recovery = None;
        assert!(matches!(
            violations(&h)[..],
            [Violation::NotRecovered { .. }]
        ));
    }

    #[test]
    fn unbounded_memory_while_down_is_caught() {
        let mut h = good();
        h.memory.growth_while_down = 200 << 20;
        assert!(matches!(violations(&h)[..], [Violation::Memory { .. }]));
    }

    #[test]
    fn give_ups_are_caught_unless_expected() {
        let mut h = good();
        let expected = Bounds {
            give_up_expected: true,
            ..Bounds::default()
        };
        assert_eq!(
            check(&h, &expected).violations,
            vec![Violation::MissingGiveUp]
        );
        h.give_ups.push(GiveUp {
            actor: "receiver-supervisor-0".into(),
            child: "receiver-0".into(),
            reason: "too many".into(),
            at: Duration::from_secs(2),
        });
        assert!(check(&h, &expected).is_ok());
        assert!(matches!(
            violations(&h)[..],
            [Violation::UnexpectedGiveUp { .. }]
        ));
    }
}
