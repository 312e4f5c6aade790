//! Chaos tests for weir, and a harness to run them on your own pipeline: kill its parts, and
//! the whole process, while data flows, then check that nothing acknowledged was lost and
//! nothing was committed twice or out of order.
//!
//! * [`schedule`]: a seeded [`Schedule`] of [`Fault`]s (`WEIR_CHAOS_SEED` replays one);
//! * [`history`]: the [`Recorder`] of what happened, and the [`History`] it produces;
//! * [`invariants`]: the checker, [`check`], with one [`Violation`] per broken rule;
//! * [`workload`]: what the harness runs — the [`Workload`] trait you implement for your
//!   pipeline, and [`Numbered`], the harness's own;
//! * [`runner`]: the [`Runner`] that runs a schedule against an in-process engine;
//! * [`hold`]: the points where the driver can be held and killed;
//! * [`process`]: `kill -9` of a whole program on a schedule, restarted with the same
//!   arguments;
//! * [`summary`]: the summary table of a run (the `chaos` binary prints it).
//!
//! `docs/chaos.md` describes the invariants, the scenarios and the long run.
//!
//! # Running the harness on your pipeline
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use weir_chaos_tests::{
//!     ActorKind, Numbered, NumberedConfig, RunConfig, Runner, Schedule, ScheduleConfig,
//!     seed_from_env,
//! };
//!
//! # async fn example() {
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! // Your own type implementing `Workload` goes here; `Numbered` is the harness's own.
//! let workload = Arc::new(Numbered::new(NumberedConfig::default()));
//! let runner = Runner::new(
//!     workload,
//!     RunConfig::new(weir_actors::Storage::local(dir.path()), "my-pipeline/"),
//! );
//! let seed = seed_from_env(); // prints WEIR_CHAOS_SEED=<seed>
//! let schedule = Schedule::generate(
//!     seed,
//!     &ScheduleConfig::kills(20, Duration::from_millis(200), ActorKind::all(&[0], 2)),
//! );
//! let outcome = runner.run(&schedule).await;
//! assert!(outcome.report.is_ok(), "seed {seed}: {}", outcome.report);
//! # }
//! ```
//!
//! `tests/wal_kill9.rs` holds the process-level proof for the durable core: it runs
//! [`wal_writer`](../wal_writer/index.html), kills it with `SIGKILL` at seeded random moments,
//! and checks the log after every kill.

pub mod history;
pub mod hold;
pub mod invariants;
pub mod payload;
pub mod process;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod summary;
pub mod workload;

pub use history::{History, Recorder, VisibleBatch};
pub use hold::{HoldPoint, Holds};
pub use invariants::{Bounds, Report, Violation, check};
pub use runner::{Outcome, RunConfig, Runner, chaos_config};
pub use schedule::{
    ActorKind, Fault, FaultClass, Schedule, ScheduleConfig, StorageEdge, seed_from_env,
};
pub use summary::Summary;
pub use workload::{HarnessContext, Numbered, NumberedConfig, Parts, StagingSink, Workload};
