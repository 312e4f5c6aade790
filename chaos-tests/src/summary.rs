//! The summary table of a run: faults per kind, records in / acknowledged / committed, lost and
//! duplicated, recovery times.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use crate::history::History;
use crate::schedule::Fault;

/// The figures of one run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The seed, if the run had one.
    pub seed: Option<u64>,
    /// Kills injected, per actor kind (`"driver"`, `"executor"`, ...).
    pub kills: BTreeMap<&'static str, u64>,
    /// Other faults injected, per kind (`"panic in executor"`, `"storage error"`, ...).
    pub other_faults: BTreeMap<String, u64>,
    /// Faults that could not be injected.
    pub skipped: u64,
    /// Records the sources produced.
    pub records_in: u64,
    /// Records acknowledged.
    pub acknowledged: u64,
    /// Distinct records committed.
    pub committed: u64,
    /// Acknowledged records in no committed batch.
    pub lost: u64,
    /// Records committed more than once.
    pub duplicated: u64,
    /// Batches committed.
    pub batches: u64,
    /// Re-runs of committed batches that the sink skipped.
    pub replays: u64,
    /// Actor failures seen (kills, panics, and the failures they caused).
    pub actor_failures: u64,
    /// Give-ups.
    pub give_ups: u64,
    /// Checkpoints written, and checkpoint writes that failed.
    pub checkpoints: (u64, u64),
    /// Recovery times (fault → a batch with records completed again).
    pub recovery_p50: Duration,
    /// 99th percentile.
    pub recovery_p99: Duration,
    /// The longest.
    pub recovery_max: Duration,
    /// Resident memory: at the start, the peak while a part was down, and the largest growth
    /// during one outage, in bytes.
    pub memory: (u64, u64, u64),
    /// The fault during which memory grew most.
    pub memory_growth_during: Option<String>,
    /// How long the run took.
    pub elapsed: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Summary {
    /// The summary of `history`.
    pub fn of(history: &History, seed: Option<u64>) -> Summary {
        let mut s = Summary {
            seed,
            ..Summary::default()
        };
        let mut recoveries = Vec::new();
        for f in &history.faults {
            if f.skipped.is_some() {
                s.skipped += 1;
                continue;
            }
            match f.fault {
                Fault::Kill(kind) => *s.kills.entry(kind.label()).or_default() += 1,
                Fault::Panic(kind) => {
                    *s.other_faults
                        .entry(format!("panic in {}", kind.label()))
                        .or_default() += 1
                }
                Fault::StorageError(edge, _) => {
                    *s.other_faults
                        .entry(format!("storage error at {edge}"))
                        .or_default() += 1
                }
                Fault::TornWrite(edge) => {
                    *s.other_faults
                        .entry(format!("torn write at {edge}"))
                        .or_default() += 1
                }
                Fault::Stall(edge, _) => {
                    *s.other_faults
                        .entry(format!("stall at {edge}"))
                        .or_default() += 1
                }
                Fault::DiskFull(_) => *s.other_faults.entry("disk full".into()).or_default() += 1,
                Fault::ProcessKill9 => *s.other_faults.entry("kill -9".into()).or_default() += 1,
            }
            recoveries.extend(f.recovery);
        }
        recoveries.sort_unstable();
        s.recovery_p50 = percentile(&recoveries, 50.0);
        s.recovery_p99 = percentile(&recoveries, 99.0);
        s.recovery_max = recoveries.last().copied().unwrap_or_default();
        s.records_in = history.produced.len() as u64;
        s.acknowledged = history.acknowledged.len() as u64;
        let mut seen = BTreeSet::new();
        let mut duplicated = BTreeSet::new();
        for c in &history.commits {
            for r in &c.records {
                if !seen.insert(*r) {
                    duplicated.insert(*r);
                }
            }
        }
        s.committed = seen.len() as u64;
        s.duplicated = duplicated.len() as u64;
        s.lost = history.acknowledged.difference(&seen).count() as u64;
        s.batches = history.commits.len() as u64;
        s.replays = history.replays;
        s.actor_failures = history.restarts.len() as u64;
        s.give_ups = history.give_ups.len() as u64;
        s.checkpoints = (history.checkpoints_written, history.checkpoints_failed);
        s.memory = (
            history.memory.baseline,
            history.memory.peak_while_down,
            history.memory.growth_while_down,
        );
        s.memory_growth_during = history
            .memory
            .growth_during
            .and_then(|i| history.faults.get(i))
            .map(|f| f.fault.to_string());
        s.elapsed = history.elapsed;
        s
    }

    /// All kills.
    pub fn total_kills(&self) -> u64 {
        self.kills.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row =
            |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "| {k:<36} | {v:>14} |");
        writeln!(f, "| {:<36} | {:>14} |", "", "")?;
        writeln!(f, "|{:-<38}|{:->16}|", "", "")?;
        if let Some(seed) = self.seed {
            row(f, "seed (WEIR_CHAOS_SEED)", seed.to_string())?;
        }
        row(
            f,
            "run time",
            format!("{:.1} s", self.elapsed.as_secs_f64()),
        )?;
        for (kind, n) in &self.kills {
            row(f, &format!("kills: {kind}"), n.to_string())?;
        }
        row(f, "kills: total", self.total_kills().to_string())?;
        for (kind, n) in &self.other_faults {
            row(f, kind, n.to_string())?;
        }
        if self.skipped > 0 {
            row(f, "faults skipped", self.skipped.to_string())?;
        }
        row(f, "actor failures seen", self.actor_failures.to_string())?;
        row(f, "give-ups", self.give_ups.to_string())?;
        row(f, "checkpoints written", self.checkpoints.0.to_string())?;
        row(
            f,
            "checkpoint writes failed",
            self.checkpoints.1.to_string(),
        )?;
        row(f, "records in", self.records_in.to_string())?;
        row(f, "records acknowledged", self.acknowledged.to_string())?;
        row(f, "records committed", self.committed.to_string())?;
        row(f, "lost (must be 0)", self.lost.to_string())?;
        row(f, "duplicated (must be 0)", self.duplicated.to_string())?;
        row(f, "batches committed", self.batches.to_string())?;
        row(
            f,
            "batch re-runs skipped by the sink",
            self.replays.to_string(),
        )?;
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        row(f, "recovery p50", ms(self.recovery_p50))?;
        row(f, "recovery p99", ms(self.recovery_p99))?;
        row(f, "recovery max", ms(self.recovery_max))?;
        row(
            f,
            "RSS at start / peak while down",
            format!("{} / {} MiB", self.memory.0 >> 20, self.memory.1 >> 20),
        )?;
        row(
            f,
            "RSS growth during one outage, max",
            format!("{} MiB", self.memory.2 >> 20),
        )?;
        if let Some(fault) = &self.memory_growth_during {
            row(f, "  (the largest growth was during)", fault.clone())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Commit, FaultRecord};
    use crate::schedule::ActorKind;

    #[test]
    fn figures_come_from_the_history() {
        let mut h = History {
            produced: (0..10).collect(),
            acknowledged: (0..8).collect(),
            ..History::default()
        };
        h.commits.push(Commit {
            batch: 1,
            attempt: 1,
            records: vec![0, 1, 2, 3],
        });
        h.commits.push(Commit {
            batch: 2,
            attempt: 2,
            records: vec![3, 4, 5, 6],
        });
        for (i, kind) in [
            ActorKind::Driver,
            ActorKind::Executor(0),
            ActorKind::Executor(1),
        ]
        .into_iter()
        .enumerate()
        {
            h.faults.push(FaultRecord {
                fault: Fault::Kill(kind),
                injected_at: Duration::ZERO,
                recovery: Some(Duration::from_millis(100 * (i as u64 + 1))),
                skipped: None,
            });
        }
        let s = Summary::of(&h, Some(5));
        assert_eq!(s.kills["executor"], 2);
        assert_eq!(s.total_kills(), 3);
        assert_eq!((s.records_in, s.acknowledged, s.committed), (10, 8, 7));
        assert_eq!((s.lost, s.duplicated), (1, 1));
        assert_eq!(s.recovery_p50, Duration::from_millis(200));
        assert_eq!(s.recovery_max, Duration::from_millis(300));
        assert!(s.to_string().contains("lost (must be 0)"));
    }
}
