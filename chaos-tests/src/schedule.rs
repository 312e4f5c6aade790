//! Seeded fault schedules: which part, when, and how.
//!
//! A [`Schedule`] is a list of [`Step`]s — a [`Fault`] at a time relative to the start of the
//! run — generated from a seed by [`Schedule::generate`]. The same seed and
//! [`ScheduleConfig`] always give the same schedule, so a failing run is replayed by setting
//! `WEIR_CHAOS_SEED` to the seed it printed ([`seed_from_env`]).

use std::fmt;
use std::time::Duration;

use weir_actors::Names;
use weir_actors::StreamId;

use crate::rng::Rng;

/// The environment variable that replays a schedule: `WEIR_CHAOS_SEED=<seed>`.
pub const SEED_VAR: &str = "WEIR_CHAOS_SEED";

/// The seed to use: `WEIR_CHAOS_SEED` if it is set to a number, else a fresh one. The seed is
/// printed (`WEIR_CHAOS_SEED=<seed>`) so that a run can be replayed.
pub fn seed_from_env() -> u64 {
    let seed = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    println!("{SEED_VAR}={seed}");
    seed
}

/// One actor of the supervision tree, by kind (and index where there are several).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ActorKind {
    /// `driver`: its restart rebuilds the whole engine from the latest checkpoint.
    Driver,
    /// `received-block-tracker`
    ReceivedBlockTracker,
    /// `receiver-tracker`
    ReceiverTracker,
    /// `receiver-supervisor-<stream>`
    ReceiverSupervisor(StreamId),
    /// `receiver-<stream>`
    Receiver(StreamId),
    /// `job-generator`
    JobGenerator,
    /// `job-scheduler`
    JobScheduler,
    /// `executor-<n>`
    Executor(usize),
}

impl ActorKind {
    /// The actor's registered name in the engine named by `names`.
    pub fn name(self, names: &Names) -> String {
        match self {
            ActorKind::Driver => names.driver(),
            ActorKind::ReceivedBlockTracker => names.received_block_tracker(),
            ActorKind::ReceiverTracker => names.receiver_tracker(),
            ActorKind::ReceiverSupervisor(s) => names.receiver_supervisor(s),
            ActorKind::Receiver(s) => names.receiver(s),
            ActorKind::JobGenerator => names.job_generator(),
            ActorKind::JobScheduler => names.job_scheduler(),
            ActorKind::Executor(n) => names.executor(n),
        }
    }

    /// The kind without its index (`"executor"`, `"receiver"`, ...), for summaries.
    pub fn label(self) -> &'static str {
        match self {
            ActorKind::Driver => "driver",
            ActorKind::ReceivedBlockTracker => "received-block-tracker",
            ActorKind::ReceiverTracker => "receiver-tracker",
            ActorKind::ReceiverSupervisor(_) => "receiver-supervisor",
            ActorKind::Receiver(_) => "receiver",
            ActorKind::JobGenerator => "job-generator",
            ActorKind::JobScheduler => "job-scheduler",
            ActorKind::Executor(_) => "executor",
        }
    }

    /// Whether the actor handles messages all the time while batches run, so that a panic
    /// armed for its next message fires soon. The driver and the receiver tracker handle
    /// messages only at starts, restarts and stops, and a receiver runs its source inside one
    /// long handler.
    pub fn handles_messages_steadily(self) -> bool {
        !matches!(
            self,
            ActorKind::Driver | ActorKind::ReceiverTracker | ActorKind::Receiver(_)
        )
    }

    /// Every actor of an engine with `streams` receivers and `executors` executors.
    pub fn all(streams: &[StreamId], executors: usize) -> Vec<ActorKind> {
        let mut all = vec![
            ActorKind::Driver,
            ActorKind::ReceivedBlockTracker,
            ActorKind::ReceiverTracker,
            ActorKind::JobGenerator,
            ActorKind::JobScheduler,
        ];
        for &s in streams {
            all.push(ActorKind::ReceiverSupervisor(s));
            all.push(ActorKind::Receiver(s));
        }
        all.extend((0..executors).map(ActorKind::Executor));
        all
    }
}

impl fmt::Display for ActorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorKind::ReceiverSupervisor(s) | ActorKind::Receiver(s) => {
                write!(f, "{}-{s}", self.label())
            }
            ActorKind::Executor(n) => write!(f, "executor-{n}"),
            _ => f.write_str(self.label()),
        }
    }
}

/// A storage edge with a failpoint (the names of `docs/testing.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StorageEdge {
    /// `wal::write`: a WAL group-commit write (the receiver's and the block tracker's logs).
    WalWrite,
    /// `wal::fsync`: the fdatasync after a WAL write (the log poisons itself and is reopened).
    WalFsync,
    /// `checkpoint::write`: the checkpoint temp file write.
    CheckpointWrite,
    /// `checkpoint::rename`: between the durable temp file and the rename.
    CheckpointRename,
}

impl StorageEdge {
    /// The edges a pipeline is expected to heal from by itself: every edge. (A failed
    /// `wal::fsync` poisons the receiver WAL; the receiver supervisor then fails the driver,
    /// whose restart reopens the log — see `docs/chaos.md`, "Findings".)
    pub const HEALING: [StorageEdge; 4] = StorageEdge::ALL;

    /// Every edge.
    pub const ALL: [StorageEdge; 4] = [
        StorageEdge::WalWrite,
        StorageEdge::WalFsync,
        StorageEdge::CheckpointWrite,
        StorageEdge::CheckpointRename,
    ];

    /// Every edge but `wal::fsync` (the default before the long run recorded it).
    pub const WITHOUT_WAL_FSYNC: [StorageEdge; 3] = [
        StorageEdge::WalWrite,
        StorageEdge::CheckpointWrite,
        StorageEdge::CheckpointRename,
    ];

    /// The failpoint's name.
    pub fn failpoint(self) -> &'static str {
        match self {
            StorageEdge::WalWrite => "wal::write",
            StorageEdge::WalFsync => "wal::fsync",
            StorageEdge::CheckpointWrite => "checkpoint::write",
            StorageEdge::CheckpointRename => "checkpoint::rename",
        }
    }

    /// The failpoint that tears a write at this edge, if it has one.
    pub fn torn_failpoint(self) -> Option<&'static str> {
        match self {
            StorageEdge::WalWrite => Some("wal::write::torn"),
            StorageEdge::CheckpointWrite => Some("checkpoint::write::torn"),
            StorageEdge::WalFsync | StorageEdge::CheckpointRename => None,
        }
    }
}

impl fmt::Display for StorageEdge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.failpoint())
    }
}

/// How a part is made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `ActorRef::kill` of the actor (ractor's registry, by its stable name).
    Kill(ActorKind),
    /// A panic inside the actor's handler of the next message it handles
    /// (`weir_actors::faults`).
    Panic(ActorKind),
    /// The next `count` calls at a storage edge fail.
    StorageError(StorageEdge, u32),
    /// The next write at the edge stops half-way and fails.
    TornWrite(StorageEdge),
    /// The next call at the edge takes `Duration` longer (a stalled disk).
    Stall(StorageEdge, Duration),
    /// Every WAL and checkpoint write fails with "no space left on device" for a while.
    DiskFull(Duration),
    /// `kill -9` of the whole process (process runs only).
    ProcessKill9,
}

impl Fault {
    /// The fault's class, for summaries: `kill`, `panic`, `storage-error`, ...
    pub fn class(&self) -> FaultClass {
        match self {
            Fault::Kill(_) => FaultClass::Kill,
            Fault::Panic(_) => FaultClass::Panic,
            Fault::StorageError(..) => FaultClass::StorageError,
            Fault::TornWrite(_) => FaultClass::TornWrite,
            Fault::Stall(..) => FaultClass::Stall,
            Fault::DiskFull(_) => FaultClass::DiskFull,
            Fault::ProcessKill9 => FaultClass::ProcessKill9,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(a) => write!(f, "kill {a}"),
            Fault::Panic(a) => write!(f, "panic in {a}"),
            Fault::StorageError(e, n) => write!(f, "fail the next {n} calls at {e}"),
            Fault::TornWrite(e) => write!(f, "tear the next write at {e}"),
            Fault::Stall(e, d) => write!(f, "stall the next call at {e} for {d:?}"),
            Fault::DiskFull(d) => write!(f, "disk full for {d:?}"),
            Fault::ProcessKill9 => f.write_str("kill -9 the process"),
        }
    }
}

/// The kinds of [`Fault`], without their parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultClass {
    /// [`Fault::Kill`]
    Kill,
    /// [`Fault::Panic`]
    Panic,
    /// [`Fault::StorageError`]
    StorageError,
    /// [`Fault::TornWrite`]
    TornWrite,
    /// [`Fault::Stall`]
    Stall,
    /// [`Fault::DiskFull`]
    DiskFull,
    /// [`Fault::ProcessKill9`]
    ProcessKill9,
}

/// One fault at a time relative to the start of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// When, from the start of the run. A runner still recovering from the previous fault
    /// injects this one as soon as it has recovered.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// What a generated schedule may contain.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// How many faults.
    pub faults: usize,
    /// Before the first fault (the pipeline warms up).
    pub warm_up: Duration,
    /// The mean gap between faults; each gap is uniform in `[gap/2, 3·gap/2)`.
    pub mean_gap: Duration,
    /// The actors that may be killed, or panicked (those of them that
    /// [handle messages steadily](ActorKind::handles_messages_steadily)).
    pub actors: Vec<ActorKind>,
    /// The classes to draw from, each with a weight.
    pub mix: Vec<(FaultClass, u32)>,
    /// Storage edges for storage faults. Default: [`StorageEdge::HEALING`].
    pub edges: Vec<StorageEdge>,
    /// Longest stall or disk-full period.
    pub max_outage: Duration,
}

impl ScheduleConfig {
    /// `faults` kills of the actors in `actors`, about `mean_gap` apart.
    pub fn kills(faults: usize, mean_gap: Duration, actors: Vec<ActorKind>) -> Self {
        ScheduleConfig {
            faults,
            warm_up: Duration::from_millis(300),
            mean_gap,
            actors,
            mix: vec![(FaultClass::Kill, 1)],
            edges: StorageEdge::HEALING.to_vec(),
            max_outage: Duration::from_millis(300),
        }
    }

    /// Draws from `mix` instead of kills only.
    pub fn with_mix(mut self, mix: Vec<(FaultClass, u32)>) -> Self {
        self.mix = mix;
        self
    }
}

/// A seeded list of faults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// The seed it was generated from.
    pub seed: u64,
    /// The faults, in time order.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// The schedule for `seed`: the same seed and configuration give the same schedule.
    pub fn generate(seed: u64, config: &ScheduleConfig) -> Schedule {
        let mut rng = Rng::new(seed);
        let total_weight: u64 = config.mix.iter().map(|(_, w)| u64::from(*w)).sum();
        let gap_ms = (config.mean_gap.as_millis() as u64).max(2);
        let max_outage_ms = (config.max_outage.as_millis() as u64).max(2);
        let mut at = config.warm_up;
        let mut steps = Vec::with_capacity(config.faults);
        for _ in 0..config.faults {
            at += Duration::from_millis(rng.range(gap_ms / 2, gap_ms * 3 / 2 + 1));
            let class = if total_weight == 0 {
                FaultClass::Kill
            } else {
                let mut pick = rng.range(0, total_weight);
                let mut chosen = FaultClass::Kill;
                for (class, weight) in &config.mix {
                    if pick < u64::from(*weight) {
                        chosen = *class;
                        break;
                    }
                    pick -= u64::from(*weight);
                }
                chosen
            };
            let actor = |rng: &mut Rng| {
                if config.actors.is_empty() {
                    ActorKind::Driver
                } else {
                    config.actors[rng.range(0, config.actors.len() as u64) as usize]
                }
            };
            let edge = |rng: &mut Rng, torn: bool| {
                let edges: Vec<StorageEdge> = config
                    .edges
                    .iter()
                    .copied()
                    .filter(|e| !torn || e.torn_failpoint().is_some())
                    .collect();
                if edges.is_empty() {
                    StorageEdge::WalWrite
                } else {
                    edges[rng.range(0, edges.len() as u64) as usize]
                }
            };
            let fault = match class {
                FaultClass::Kill => Fault::Kill(actor(&mut rng)),
                FaultClass::Panic => {
                    let busy: Vec<ActorKind> = config
                        .actors
                        .iter()
                        .copied()
                        .filter(|a| a.handles_messages_steadily())
                        .collect();
                    if busy.is_empty() {
                        Fault::Kill(actor(&mut rng))
                    } else {
                        Fault::Panic(busy[rng.range(0, busy.len() as u64) as usize])
                    }
                }
                FaultClass::StorageError => {
                    Fault::StorageError(edge(&mut rng, false), rng.range(1, 4) as u32)
                }
                FaultClass::TornWrite => Fault::TornWrite(edge(&mut rng, true)),
                FaultClass::Stall => Fault::Stall(
                    edge(&mut rng, false),
                    Duration::from_millis(rng.range(1, max_outage_ms)),
                ),
                FaultClass::DiskFull => {
                    Fault::DiskFull(Duration::from_millis(rng.range(1, max_outage_ms)))
                }
                FaultClass::ProcessKill9 => Fault::ProcessKill9,
            };
            steps.push(Step { at, fault });
        }
        Schedule { seed, steps }
    }
}

impl Schedule {
    /// `rounds` rounds in each of which every actor of `actors` is killed once, in a seeded
    /// order, about `mean_gap` apart (after `warm_up`).
    pub fn each_kind(
        seed: u64,
        actors: &[ActorKind],
        rounds: usize,
        warm_up: Duration,
        mean_gap: Duration,
    ) -> Schedule {
        let mut rng = Rng::new(seed);
        let gap_ms = (mean_gap.as_millis() as u64).max(2);
        let mut at = warm_up;
        let mut steps = Vec::with_capacity(rounds * actors.len());
        for _ in 0..rounds {
            let mut order = actors.to_vec();
            // Fisher-Yates with the seeded generator.
            for i in (1..order.len()).rev() {
                order.swap(i, rng.range(0, i as u64 + 1) as usize);
            }
            for actor in order {
                at += Duration::from_millis(rng.range(gap_ms / 2, gap_ms * 3 / 2 + 1));
                steps.push(Step {
                    at,
                    fault: Fault::Kill(actor),
                });
            }
        }
        Schedule { seed, steps }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "schedule for {SEED_VAR}={}:", self.seed)?;
        for step in &self.steps {
            writeln!(f, "  {:>8} ms  {}", step.at.as_millis(), step.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ScheduleConfig {
        ScheduleConfig::kills(200, Duration::from_millis(50), ActorKind::all(&[0, 1], 2)).with_mix(
            vec![
                (FaultClass::Kill, 5),
                (FaultClass::Panic, 1),
                (FaultClass::StorageError, 1),
                (FaultClass::TornWrite, 1),
                (FaultClass::Stall, 1),
                (FaultClass::DiskFull, 1),
            ],
        )
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let a = Schedule::generate(42, &config());
        let b = Schedule::generate(42, &config());
        assert_eq!(a, b);
        assert_eq!(a.steps.len(), 200);
    }

    #[test]
    fn another_seed_gives_another_schedule() {
        let a = Schedule::generate(42, &config());
        let b = Schedule::generate(43, &config());
        assert_ne!(a.steps, b.steps);
    }

    #[test]
    fn steps_are_in_time_order_and_draw_every_kind_and_class() {
        let s = Schedule::generate(7, &config());
        assert!(s.steps.windows(2).all(|w| w[0].at < w[1].at));
        assert!(s.steps[0].at >= config().warm_up);
        let classes: std::collections::BTreeSet<_> =
            s.steps.iter().map(|s| s.fault.class()).collect();
        assert_eq!(classes.len(), 6, "{classes:?}");
        let killed: std::collections::BTreeSet<_> = s
            .steps
            .iter()
            .filter_map(|s| match s.fault {
                Fault::Kill(a) => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(killed.len(), ActorKind::all(&[0, 1], 2).len());
        for step in &s.steps {
            if let Fault::TornWrite(edge) = step.fault {
                assert!(edge.torn_failpoint().is_some(), "{edge} cannot tear");
            }
        }
    }

    #[test]
    fn each_kind_kills_every_actor_once_per_round_reproducibly() {
        let actors = ActorKind::all(&[0], 2);
        let a = Schedule::each_kind(9, &actors, 3, Duration::ZERO, Duration::from_millis(10));
        assert_eq!(
            a,
            Schedule::each_kind(9, &actors, 3, Duration::ZERO, Duration::from_millis(10))
        );
        for round in a.steps.chunks(actors.len()) {
            let mut killed: Vec<ActorKind> = round
                .iter()
                .filter_map(|s| match s.fault {
                    Fault::Kill(a) => Some(a),
                    _ => None,
                })
                .collect();
            killed.sort();
            let mut all = actors.clone();
            all.sort();
            assert_eq!(killed, all);
        }
    }

    #[test]
    fn names_carry_the_engine_prefix() {
        let names = Names::new("t/");
        assert_eq!(ActorKind::Executor(1).name(&names), "t/executor-1");
        assert_eq!(ActorKind::Receiver(0).name(&names), "t/receiver-0");
        assert_eq!(ActorKind::Executor(1).label(), "executor");
    }
}
