//! The long chaos run: a seeded schedule of 1,000 kills or more (and panics, storage errors,
//! torn writes, stalls and full disks between them) against an in-process engine under load;
//! prints the summary table and exits non-zero if an invariant failed.
//!
//! ```text
//! cargo run --release -p weir-chaos-tests --bin chaos -- --kills 1000 [--seed N] [--gap-ms 30]
//!     [--kills-only] [--streams 2] [--verbose] [--dir DIR] [--with-wal-fsync]
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

struct Args {
    kills: usize,
    seed: u64,
    gap: Duration,
    kills_only: bool,
    streams: u32,
    verbose: bool,
    dir: Option<std::path::PathBuf>,
    wal_fsync: bool,
}

const USAGE: &str =
    "usage: chaos [--kills N] [--seed N] [--gap-ms MS] [--kills-only] [--streams N] [--verbose]";

fn parse() -> Result<Args, String> {
    let mut args = Args {
        kills: 1000,
        seed: std::env::var(weir_chaos_tests::schedule::SEED_VAR)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(Rng::fresh_seed),
        gap: Duration::from_millis(30),
        kills_only: false,
        streams: 2,
        verbose: false,
        dir: None,
        wal_fsync: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = it
                .next()
                .ok_or_else(|| format!("{name} needs a value; {USAGE}"))?;
            v.parse()
                .map_err(|_| format!("{name} takes a number, not `{v}`; {USAGE}"))
        };
        match arg.as_str() {
            "--kills" => args.kills = value("--kills")? as usize,
            "--seed" => args.seed = value("--seed")?,
            "--gap-ms" => args.gap = Duration::from_millis(value("--gap-ms")?),
            "--streams" => args.streams = value("--streams")?.max(1) as u32,
            "--kills-only" => args.kills_only = true,
            "--verbose" => args.verbose = true,
            "--with-wal-fsync" => args.wal_fsync = true,
            "--dir" => {
                args.dir = Some(
                    it.next()
                        .ok_or_else(|| format!("--dir needs a value; {USAGE}"))?
                        .into(),
                )
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument `{other}`; {USAGE}")),
        }
    }
    Ok(args)
}

/// The schedule with at least `kills` kills: faults are drawn from the mix until there are.
fn schedule(args: &Args, actors: Vec<ActorKind>) -> Schedule {
    let mut config = ScheduleConfig::kills(args.kills, args.gap, actors);
    if args.wal_fsync {
        // Reproduces the poisoned-receiver-WAL finding of docs/chaos.md.
        config.edges = weir_chaos_tests::StorageEdge::ALL.to_vec();
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
    let args = match parse() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
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
        "WEIR_CHAOS_SEED={} — {} faults, mean gap {:?}, storage {}",
        args.seed,
        schedule.steps.len(),
        args.gap,
        dir.display()
    );
    let mut config = RunConfig::new(Storage::local(&dir), "chaos/");
    config.verbose = args.verbose;
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
