//! The long chaos run: a seeded schedule of 1,000 kills or more (and panics, storage errors,
//! torn writes, stalls and full disks between them) against an in-process engine under load;
//! prints the summary table and exits non-zero if an invariant failed.
//!
//! ```text
//! cargo run --release -p weir-chaos-tests --bin chaos -- --kills 1000 [--seed N] [--gap-ms 30]
//!     [--kills-only] [--streams 2] [--verbose] [--dir DIR] [--without-wal-fsync]
//!     [--max-concurrent-checkpoints 3]
//! ```

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use weir_actors::Storage;
use weir_chaos_tests::rng::Rng;
use weir_chaos_tests::{
    ActorKind, FaultClass, Numbered, NumberedConfig, RunConfig, Runner, Schedule, ScheduleConfig,
    Summary,
};

/// The long chaos run against an in-process engine.
#[derive(clap::Parser, Debug)]
#[command(about, after_help = "Example:\n  chaos --kills 1000 --seed 20261204")]
struct Args {
    /// At least this many kills.
    #[arg(long, default_value_t = 1000)]
    kills: usize,
    /// The schedule's seed (default: `WEIR_CHAOS_SEED`, else a fresh one, printed).
    #[arg(long, env = weir_chaos_tests::schedule::SEED_VAR,
          default_value_t = Rng::fresh_seed(), hide_default_value = true)]
    seed: u64,
    /// Mean gap between faults, in milliseconds.
    #[arg(long = "gap-ms", value_name = "MS", default_value_t = 30)]
    gap_ms: u64,
    /// Only kills, no panics or storage faults.
    #[arg(long)]
    kills_only: bool,
    /// Receiver streams under load.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    streams: u32,
    /// Print every fault as it is injected.
    #[arg(long)]
    verbose: bool,
    /// Keep the engine's storage in DIR (default: a temporary directory, removed).
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
    /// Leave the WALs' fsyncs out of the storage edges that fail (they are in by default).
    #[arg(long = "without-wal-fsync")]
    without_wal_fsync: bool,
    /// Checkpoint writes in flight at once (Flink's maximum concurrent checkpoints).
    #[arg(long = "max-concurrent-checkpoints", value_name = "N",
          default_value_t = weir_chaos_tests::runner::CHAOS_MAX_CONCURRENT_CHECKPOINTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_concurrent_checkpoints: usize,
}

impl Args {
    fn gap(&self) -> Duration {
        Duration::from_millis(self.gap_ms)
    }
}

/// The schedule with at least `kills` kills: faults are drawn from the mix until there are.
fn schedule(args: &Args, actors: Vec<ActorKind>) -> Schedule {
    let mut config = ScheduleConfig::kills(args.kills, args.gap(), actors);
    if args.without_wal_fsync {
        config.edges = weir_chaos_tests::StorageEdge::WITHOUT_WAL_FSYNC.to_vec();
    }
    if !args.kills_only {
        config = config.with_mix(vec![
            (FaultClass::Kill, 16),
            (FaultClass::Panic, 2),
            (FaultClass::StorageError, 1),
            (FaultClass::TornWrite, 1),
            (FaultClass::Stall, 1),
            (FaultClass::DiskFull, 1),
        ]);
    }
    loop {
        let s = Schedule::generate(args.seed, &config);
        let kills = s
            .steps
            .iter()
            .filter(|s| s.fault.class() == FaultClass::Kill)
            .count();
        if kills >= args.kills {
            return s;
        }
        config.faults += (args.kills - kills).max(1);
    }
}

fn main() -> ExitCode {
    // clap exits 2 on a usage error and 0 after --help.
    let args = <Args as clap::Parser>::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("chaos: cannot start a runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> ExitCode {
    // With --dir the storage (WALs, checkpoints, the event log) is kept for inspection.
    let keep = args.dir.is_some();
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("weir-chaos-{}", std::process::id())));
    if let Err(err) = std::fs::create_dir_all(&dir) {
        eprintln!("chaos: cannot create `{}`: {err}", dir.display());
        return ExitCode::FAILURE;
    }
    let streams: Vec<u32> = (0..args.streams).collect();
    let workload = Arc::new(Numbered::new(NumberedConfig {
        streams: args.streams,
        ..NumberedConfig::default()
    }));
    let executors = weir_chaos_tests::chaos_config(Storage::local(&dir), "").executors;
    let schedule = schedule(&args, ActorKind::all(&streams, executors));
    println!(
        "WEIR_CHAOS_SEED={} — {} faults, mean gap {:?}, {} concurrent checkpoints, wal::fsync \
         faults {}, storage {}",
        args.seed,
        schedule.steps.len(),
        args.gap(),
        args.max_concurrent_checkpoints,
        if args.without_wal_fsync { "off" } else { "on" },
        dir.display()
    );
    let mut config = RunConfig::new(Storage::local(&dir), "chaos/");
    config.verbose = args.verbose;
    config.max_concurrent_checkpoints = args.max_concurrent_checkpoints;
    let runner = Runner::new(workload, config);
    let outcome = runner.run(&schedule).await;
    let summary = Summary::of(&outcome.history, Some(args.seed));
    println!("{summary}");
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut ok = outcome.report.is_ok();
    println!("{}", outcome.report);
    if let Err(err) = &outcome.engine {
        println!("the engine ended with an error: {err}");
        ok = false;
    }
    if summary.total_kills() < args.kills as u64 {
        println!(
            "only {} of the {} kills were injected ({} faults skipped)",
            summary.total_kills(),
            args.kills,
            summary.skipped
        );
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
