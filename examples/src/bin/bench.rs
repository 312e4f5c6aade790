//! weir vs Spark Streaming, side by side, in one run on one machine.
//!
//! ```text
//! cargo run --release -p weir-examples --bin bench -- --all
//! ```
//!
//! The bench builds weir's `word_count` (the same profile as itself), runs
//! `examples/bench/setup.sh` (PySpark 3.5 from PyPI into a venv under `target/bench/`, and
//! `JavaWordCount.java` compiled with `javac` against the jars it ships), then measures, each
//! run bounded in time and stopping by itself, everything on 127.0.0.1:
//!
//! * the feeder's own ceiling (TCP to a reader that discards; files into a directory);
//! * the floors: a single-threaded `split_whitespace` + `HashMap` word count over the
//!   feeder's bytes (read once from memory, not counted again in the cache), and raw
//!   `write` + `sync_data` bandwidth at the WAL's group sizes;
//! * the sustainable rate of each system on the socket source (weir and Spark Java with and
//!   without the receiver WAL; PySpark without): doubling then bisection over input rates,
//!   each step a fresh bounded run, passing when the feeder delivered the rate, enough
//!   batches completed, their p95 processing time stayed below the batch interval, the
//!   scheduling delay did not build up, and the output kept up with the input (nearly every
//!   word delivered by the window's end counted within two batches after it);
//! * per-batch processing time, scheduling delay and end-to-end latency p50 / p99 at a fixed
//!   moderate rate with `--latency-batch-ms` batches;
//! * start-up to the first completed batch, and `kill -9` → restart → first completed batch
//!   with lost and duplicated word counts (the summed output against what the feeder
//!   delivered), on the directory and on the socket source;
//! * peak RSS (VmHWM of the process and its descendants: for PySpark, python + the JVM).
//!
//! It prints a markdown report and writes it to `target/bench/report.md` (`--report`).
//! Spark's per-batch timings come from a StreamingListener in each Spark job, weir's from its
//! event log (`<checkpoint>/events/events.jsonl`). The bench is not part of CI (it downloads
//! Spark); CI only builds it.

#[path = "bench/feeder.rs"]
mod feeder;
#[path = "bench/floors.rs"]
mod floors;
#[path = "bench/overload.rs"]
mod overload;
#[path = "bench/system.rs"]
mod system;
#[path = "bench/workload.rs"]
mod workload;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::feeder::{Feeder, Pool, Tally, wall_ms};
use crate::system::{BatchStat, Kind, Launch, RunDirs, Running, Source, SparkSetup, read_output};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// weir vs Spark Streaming: sustainable rate, latency, recovery, memory, and two floors.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Run every phase against every system (installs Spark on first use).
    #[arg(long)]
    all: bool,
    /// Run only these phases (feeder, floors, rate, latency, kill, http, workloads,
    /// overload); repeatable. `workloads` runs the compute floor and the sustainable-rate
    /// search of every system on each `--workload` (default: a spread of them) and reports one
    /// table. `overload` feeds weir at `--overload-rate` (or twice its sustained rate) for
    /// `--overload-secs`, WAL off and on, and fails unless memory stayed bounded, the sender
    /// was pushed back and nothing was lost.
    #[arg(long = "phase", value_name = "PHASE")]
    phases: Vec<String>,
    /// The text fed (see bench/workload.rs): `classic`, or e.g.
    /// `vocab=100000,len=3-12,line=1-20,dist=zipf:1.1,text=utf8`. Repeatable: the
    /// `workloads` phase runs each; the other phases use the first (default `classic`).
    #[arg(long = "workload", value_name = "SPEC")]
    workloads: Vec<workload::Workload>,
    /// Leave out these systems (weir, spark-java, pyspark); repeatable.
    #[arg(long = "skip", value_name = "SYSTEM")]
    skip: Vec<String>,
    /// Short runs (a smoke test of the harness; numbers are rough).
    #[arg(long)]
    quick: bool,
    /// The batch interval of the rate and kill phases, for every system.
    #[arg(long, default_value_t = 1000)]
    batch_ms: u64,
    /// The batch interval of the latency phase.
    #[arg(long, default_value_t = 100)]
    latency_batch_ms: u64,
    /// The fixed moderate rate (words/s) of the latency and kill phases.
    #[arg(long, default_value_t = 100_000.0)]
    moderate_rate: f64,
    /// The first rate (words/s) of the sustainable-rate search (default 50 000). In the
    /// `workloads` phase, by default, weir's search starts at half the workload's compute
    /// floor (so its doubling tries the floor itself, the target) and Spark's at a tenth of
    /// weir's sustained rate with the same WAL setting (the ×10 target).
    #[arg(long)]
    start_rate: Option<f64>,
    /// The highest rate tried (default: 90% of the feeder's socket ceiling).
    #[arg(long)]
    max_rate: Option<f64>,
    /// Seconds measured per rate step (after the warm-up).
    #[arg(long)]
    step_secs: Option<f64>,
    /// Seconds of warm-up after the first completed batch before a step is measured
    /// (default 15, 10 with --quick: a JVM under load needs about 10 to JIT-compile and work
    /// off its first slow batches; with 3, Spark's measured rates collapsed).
    #[arg(long)]
    warmup_secs: Option<f64>,
    /// Bisection steps after the doubling.
    #[arg(long)]
    bisect_steps: Option<u32>,
    /// Seconds of input before and after the kill in the kill phase.
    #[arg(long)]
    kill_secs: Option<f64>,
    /// The `http` phase: how many pairs of searches (off and on) and, at least three, of
    /// fixed-rate steps it runs (default 3, 1 with --quick).
    #[arg(long)]
    http_rounds: Option<usize>,
    /// The `http` phase: skip the searches and run only the fixed-rate steps, at this rate
    /// (words/s).
    #[arg(long)]
    http_fixed_rate: Option<f64>,
    /// The `overload` phase's offered rate (words/s); default: twice the sustained rate the
    /// `rate` phase found for weir with the same receiver WAL setting in this invocation.
    #[arg(long)]
    overload_rate: Option<f64>,
    /// The `overload` phase: seconds fed at the offered rate (default 60, 15 with --quick).
    #[arg(long)]
    overload_secs: Option<f64>,
    /// Where Spark is installed and runs happen (default: target/bench).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Where the markdown report is written (default: CACHE/report.md).
    #[arg(long)]
    report: Option<PathBuf>,
    /// An extra argument for weir's `word_count` (repeatable), e.g.
    /// `--weir-arg=--program=owned-words` to build a `String` per word as the Spark jobs do; the report
    /// names them.
    #[arg(long = "weir-arg", value_name = "ARG", allow_hyphen_values = true)]
    weir_args: Vec<String>,
    /// How the bench's own log lines are written to stderr: `text` or `json` (`RUST_LOG`
    /// filters them; default: warn). The runs' `word_count` inherit `WEIR_LOG_FORMAT`.
    #[arg(long, value_name = "FORMAT", env = weir::logging::LOG_FORMAT_VAR,
          default_value_t = weir::logging::LogFormat::Text)]
    log_format: weir::logging::LogFormat,
}

/// The effective settings.
#[derive(Debug)]
struct Plan {
    systems: Vec<Kind>,
    phases: Vec<String>,
    batch_ms: u64,
    latency_batch_ms: u64,
    moderate_rate: f64,
    start_rate: f64,
    /// Whether `--start-rate` was given (the `workloads` phase then starts every search there).
    start_rate_given: bool,
    max_rate: Option<f64>,
    step_secs: f64,
    warmup_secs: f64,
    bisect_steps: u32,
    kill_secs: f64,
    http_rounds: usize,
    http_fixed_rate: Option<f64>,
    overload_rate: Option<f64>,
    overload_secs: f64,
    cache: PathBuf,
    report: PathBuf,
    quick: bool,
    weir_args: Vec<String>,
    /// The workload of every phase but `workloads`.
    workload: workload::Workload,
    /// The workloads of the `workloads` phase.
    workloads: Vec<workload::Workload>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = weir::logging::init(args.log_format);
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn plan(args: &Args) -> Result<Plan, BoxError> {
    const PHASES: &[&str] = &[
        "feeder",
        "floors",
        "rate",
        "latency",
        "kill",
        "http",
        "workloads",
        "overload",
    ];
    let phases: Vec<String> = if args.all {
        PHASES.iter().map(|p| (*p).to_owned()).collect()
    } else if args.phases.is_empty() {
        return Err(
            "choose what to run: --all, or --phase PHASE (feeder, floors, rate, latency, kill, http, workloads, overload)"
                .into(),
        );
    } else {
        for p in &args.phases {
            if !PHASES.contains(&p.as_str()) {
                return Err(format!("unknown phase {p:?}; phases are {PHASES:?}").into());
            }
        }
        args.phases.clone()
    };
    let mut systems = vec![Kind::Weir, Kind::SparkJava, Kind::PySpark];
    for s in &args.skip {
        let kind = match s.as_str() {
            "weir" => Kind::Weir,
            "spark-java" => Kind::SparkJava,
            "pyspark" => Kind::PySpark,
            other => {
                return Err(format!(
                    "unknown system {other:?}; systems are weir, spark-java, pyspark"
                )
                .into());
            }
        };
        systems.retain(|k| *k != kind);
    }
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the bench binary is not inside a cargo target directory")?;
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| target.join("bench"));
    let report = args
        .report
        .clone()
        .unwrap_or_else(|| cache.join("report.md"));
    Ok(Plan {
        systems,
        phases,
        batch_ms: args.batch_ms.max(1),
        latency_batch_ms: args.latency_batch_ms.max(1),
        moderate_rate: args.moderate_rate,
        start_rate: args.start_rate.unwrap_or(50_000.0),
        start_rate_given: args.start_rate.is_some(),
        max_rate: args.max_rate,
        step_secs: args
            .step_secs
            .unwrap_or(if args.quick { 4.0 } else { 10.0 }),
        warmup_secs: args
            .warmup_secs
            .unwrap_or(if args.quick { 10.0 } else { 15.0 }),
        bisect_steps: args.bisect_steps.unwrap_or(if args.quick { 1 } else { 3 }),
        kill_secs: args.kill_secs.unwrap_or(if args.quick { 3.0 } else { 6.0 }),
        http_rounds: args
            .http_rounds
            .unwrap_or(if args.quick { 1 } else { 3 })
            .max(1),
        http_fixed_rate: args.http_fixed_rate,
        overload_rate: args.overload_rate,
        overload_secs: args
            .overload_secs
            .unwrap_or(if args.quick { 15.0 } else { 60.0 }),
        weir_args: args.weir_args.clone(),
        cache,
        report,
        quick: args.quick,
        workload: args.workloads.first().cloned().unwrap_or_default(),
        workloads: if args.workloads.is_empty() {
            workload::spread()
        } else {
            args.workloads.clone()
        },
    })
}

fn run(args: &Args) -> Result<(), BoxError> {
    let plan = plan(args)?;
    std::fs::create_dir_all(&plan.cache)?;
    let launch = setup(&plan)?;
    let machine = describe_machine();
    println!("bench: machine\n{machine}");
    let pool = Arc::new(Pool::new(&plan.workload, 7));
    println!("bench: workload {}", plan.workload);
    let scratch = plan.cache.join("runs");
    let mut report = Report::default();
    let has = |p: &str| plan.phases.iter().any(|x| x == p);

    let secs = if plan.quick { 0.5 } else { 1.0 };
    let ceiling = feeder::ceiling(&pool, secs, &scratch)?;
    println!(
        "bench: feeder ceiling: socket {:.0} words/s, directory {:.0} words/s ({:.2} bytes/word)",
        ceiling.socket_words_per_s,
        ceiling.dir_words_per_s,
        pool.bytes_per_word()
    );
    report.ceiling = Some(ceiling);
    if has("floors") {
        let compute = floors::compute(&pool, if plan.quick { 1.0 } else { 2.0 });
        println!(
            "bench: compute floor {:.0} words/s ({:.1} MB/s) over {} MiB of text from memory; {:.0} words/s over the pool in the cache",
            compute.words_per_s,
            compute.mb_per_s,
            compute.buffer_bytes >> 20,
            compute.cached_words_per_s
        );
        let wal = floors::wal(&scratch, &[64 << 10, 1 << 20, 4 << 20], secs)?;
        for w in &wal {
            println!(
                "bench: WAL floor {} KiB groups: {:.1} MB/s (write + sync p50 {:.2} ms)",
                w.group_bytes >> 10,
                w.mb_per_s,
                w.p50_ms
            );
        }
        report.compute = Some(compute);
        report.wal = wal;
    }
    let max_rate = plan.max_rate.unwrap_or(ceiling.socket_words_per_s * 0.9);
    if has("rate") {
        for &kind in &plan.systems {
            let wals: &[bool] = match kind {
                Kind::Weir | Kind::SparkJava => &[false, true],
                Kind::PySpark => &[false],
            };
            for &wal in wals {
                let found = search(
                    &launch,
                    &plan,
                    &pool,
                    &scratch,
                    kind,
                    wal,
                    (plan.start_rate, max_rate, 1.1),
                );
                report.rates.push(found);
            }
        }
    }
    if has("workloads") {
        for w in &plan.workloads {
            let pool = Arc::new(Pool::new(w, 7));
            let ceiling = feeder::ceiling(&pool, secs, &scratch)?;
            let compute = floors::compute(&pool, if plan.quick { 1.0 } else { 2.0 });
            println!(
                "bench: workload {w}: {:.2} bytes/word, compute floor {:.0} words/s (text from memory; {:.0} over the pool in the cache), feeder ceiling {:.0} words/s",
                pool.bytes_per_word(),
                compute.words_per_s,
                compute.cached_words_per_s,
                ceiling.socket_words_per_s
            );
            let max_rate = plan.max_rate.unwrap_or(ceiling.socket_words_per_s * 0.9);
            let mut rates: Vec<RateResult> = Vec::new();
            for &kind in &plan.systems {
                if kind == Kind::PySpark {
                    continue; // far below the others; its row would say nothing new
                }
                for wal in [false, true] {
                    let weir = rates
                        .iter()
                        .find(|r| r.kind == Kind::Weir && r.wal == wal)
                        .and_then(|r| r.sustained.as_ref())
                        .map(|s| s.rate);
                    let start = workload_start(
                        kind,
                        plan.start_rate_given.then_some(plan.start_rate),
                        compute.words_per_s,
                        weir,
                    );
                    rates.push(search(
                        &launch,
                        &plan,
                        &pool,
                        &scratch,
                        kind,
                        wal,
                        (start.min(max_rate), max_rate, 1.1),
                    ));
                }
            }
            report.workloads.push(WorkloadRow {
                workload: w.clone(),
                bytes_per_word: pool.bytes_per_word(),
                compute,
                rates,
            });
        }
    }
    if has("http") {
        // weir's word_count with its HTTP server on and scraped as Prometheus and an open
        // dashboard would (`/metrics` and `/api/v1/batches` every second, the event stream
        // read), against it off: the same search, finer, in this run.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut observed = launch.clone();
        observed
            .weir_args
            .push(format!("--http-addr=127.0.0.1:{port}"));
        let start = plan.start_rate.min(max_rate);
        // Searches alternate off/on, on/off, ... (so a drift of the machine over the run
        // weighs on both alike); the report compares their medians.
        let pair = |round: usize| {
            if round.is_multiple_of(2) {
                [("off", &launch), ("on", &observed)]
            } else {
                [("on", &observed), ("off", &launch)]
            }
        };
        let searches = if plan.http_fixed_rate.is_some() {
            0
        } else {
            plan.http_rounds
        };
        for round in 0..searches {
            for (label, l) in pair(round) {
                let found = search(
                    l,
                    &plan,
                    &pool,
                    &scratch,
                    Kind::Weir,
                    true,
                    (start, max_rate, 1.02),
                );
                println!(
                    "bench: http {label} (round {}): sustained {}",
                    round + 1,
                    found.sustained.as_ref().map_or_else(
                        || "nothing".to_owned(),
                        |s| format!("{:.0} words/s", s.rate)
                    )
                );
                report.http.push((label, found));
            }
        }
        // The search's bounds move by several percent from run to run (a step passes or
        // fails on the slowest batch or two of its window), so also compare the cost directly:
        // the same fixed rate, below every sustained rate, off and on alternating, with the
        // CPU time weir used per word and the processing time per batch.
        let lowest = report
            .http
            .iter()
            .filter_map(|(_, r)| r.sustained.as_ref().map(|s| s.rate))
            .fold(f64::INFINITY, f64::min);
        if let Some(rate) = plan
            .http_fixed_rate
            .or(lowest.is_finite().then_some(0.85 * lowest))
        {
            for round in 0..plan.http_rounds.max(3) {
                for (label, l) in pair(round) {
                    let dir = scratch.join(format!("http-fixed-{label}-{round}"));
                    let r = step(
                        l,
                        Kind::Weir,
                        true,
                        rate,
                        plan.batch_ms,
                        (plan.warmup_secs, plan.step_secs),
                        &dir,
                        &pool,
                    );
                    match &r {
                        Ok(s) => println!("bench: http {label} at {rate:.0}: {}", s.summary()),
                        Err(e) => println!("bench: http {label} at {rate:.0}: failed: {e}"),
                    }
                    if let Ok(s) = r {
                        report.http_fixed.push((label, s));
                    }
                }
            }
        }
    }
    if has("latency") {
        for &kind in &plan.systems {
            let dir = scratch.join(format!("latency-{}", slug(kind)));
            // weir with its receiver WAL on (its default), Spark with it off (Spark's).
            let r = step(
                &launch,
                kind,
                kind == Kind::Weir,
                plan.moderate_rate,
                plan.latency_batch_ms,
                (plan.warmup_secs, plan.step_secs),
                &dir,
                &pool,
            );
            match &r {
                Ok(s) => println!("bench: latency {kind}: {}", s.summary()),
                Err(e) => println!("bench: latency {kind}: failed: {e}"),
            }
            report.latency.push((kind, r.map_err(|e| e.to_string())));
        }
    }
    if has("kill") {
        for &kind in &plan.systems {
            // The moderate rate, or half the system's sustained rate if that is lower: a
            // system that falls behind would count its backlog as lost.
            let sustained = report
                .rates
                .iter()
                .filter(|r| r.kind == kind)
                .filter_map(|r| r.sustained.as_ref().map(|s| s.rate))
                .reduce(f64::min);
            let rate = sustained.map_or(plan.moderate_rate, |s| plan.moderate_rate.min(s / 2.0));
            for socket in [false, true] {
                let r = kill_test(&launch, &plan, &pool, &scratch, kind, socket, rate);
                match &r {
                    Ok(k) => println!(
                        "bench: kill -9 {kind} {}: start-up {} ms, kill→first batch {} ms, sent {}, lost {}, duplicated {}",
                        if socket { "socket" } else { "directory" },
                        k.startup_ms,
                        k.restart_ms
                            .map_or_else(|| "none".to_owned(), |v| v.to_string()),
                        k.sent,
                        k.lost,
                        k.duplicated
                    ),
                    Err(e) => println!("bench: kill -9 {kind}: failed: {e}"),
                }
                report
                    .kills
                    .push((kind, socket, r.map_err(|e| e.to_string())));
            }
        }
    }
    if has("overload") && plan.systems.contains(&Kind::Weir) {
        overload_phase(&launch, &plan, &pool, &scratch, &mut report);
    }
    let text = report.markdown(&plan, &machine, &pool);
    println!("\n{text}");
    if let Some(parent) = plan.report.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&plan.report, &text)?;
    println!("bench: report written to {}", plan.report.display());
    if has("overload") && !report.overload.passed() {
        return Err("the overload phase failed (see its table)".into());
    }
    Ok(())
}

/// The `overload` phase: the calibration of `C`, then weir at the offered rate with the
/// receiver WAL off and on (see bench/overload.rs).
fn overload_phase(
    launch: &Launch,
    plan: &Plan,
    pool: &Arc<Pool>,
    scratch: &Path,
    report: &mut Report,
) {
    let calibration = overload::calibrate(
        launch,
        plan,
        pool,
        &scratch.join("overload-calibration"),
        plan.moderate_rate,
        if plan.quick { 5.0 } else { 10.0 },
    );
    match &calibration {
        Ok(c) => println!(
            "bench: overload calibration at {:.0} words/s: peak RSS {} (C = {} MiB)",
            c.rate,
            mib(c.peak_kb),
            overload::PROGRAM_BYTES >> 20
        ),
        Err(e) => println!("bench: overload calibration failed: {e}"),
    }
    report.overload.calibration = Some(calibration.map_err(|e| e.to_string()));
    for wal in [false, true] {
        let sustained = report.sustained(Kind::Weir, wal).map(|s| s.rate);
        let r = overload::offered_rate(plan.overload_rate, sustained, wal)
            .map_err(BoxError::from)
            .and_then(|rate| {
                let secs = plan.overload_secs;
                // The backlog drains at the batches' pace: give it up to ten times the feed
                // (the drain also ends once the output stops growing).
                let patience = Duration::from_secs_f64((10.0 * secs).max(60.0));
                let root = scratch.join(format!("overload-{}", if wal { "wal" } else { "nowal" }));
                overload::run(launch, plan, pool, &root, wal, (rate, secs, patience))
            });
        match &r {
            Ok(run) => {
                let why = run.failures();
                println!(
                    "bench: overload WAL {}: offered {:.0}, delivered {:.0} words/s, stalled {} ms, \
                     peak RSS {} (bound {}), median {}, by quarter {:?} MiB, {} words delivered, \
                     output caught up after \
                     {:.0} s, lost {}, duplicated {}: {}",
                    if wal { "on" } else { "off" },
                    run.offered,
                    run.delivered,
                    run.stalled_ms,
                    mib(run.peak_kb),
                    mib(run.bound.bytes() / 1024),
                    run.median_kb.map_or_else(|| "n/a".to_owned(), mib),
                    run.quarters_kb.map(|kb| kb >> 10),
                    run.sent,
                    run.drain_secs,
                    run.lost,
                    run.duplicated,
                    if why.is_empty() {
                        "pass".to_owned()
                    } else {
                        format!("FAIL ({})", why.join("; "))
                    }
                );
            }
            Err(e) => println!(
                "bench: overload WAL {}: failed: {e}",
                if wal { "on" } else { "off" }
            ),
        }
        report.overload.runs.push(r.map_err(|e| e.to_string()));
    }
}

fn slug(kind: Kind) -> &'static str {
    match kind {
        Kind::Weir => "weir",
        Kind::SparkJava => "spark-java",
        Kind::PySpark => "pyspark",
    }
}

/// Builds `word_count` and, if a Spark system is wanted, runs `setup.sh`.
fn setup(plan: &Plan) -> Result<Launch, BoxError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(manifest.join("Cargo.toml"))
        .args(["-p", "weir-examples", "--bin", "word_count"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    println!("bench: building word_count");
    let status = build.status()?;
    if !status.success() {
        return Err(format!("building word_count failed ({status})").into());
    }
    let exe = std::env::current_exe()?;
    let word_count = exe
        .parent()
        .ok_or("the bench binary has no directory")?
        .join("word_count");
    let spark = if plan.systems.iter().any(|k| *k != Kind::Weir) {
        println!("bench: setting up Spark (examples/bench/setup.sh)");
        let out = Command::new("bash")
            .arg(manifest.join("bench/setup.sh"))
            .arg(&plan.cache)
            .stderr(std::process::Stdio::inherit())
            .output()?;
        if !out.status.success() {
            return Err(format!("examples/bench/setup.sh failed ({})", out.status).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let get = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(PathBuf::from)
                .ok_or_else(|| format!("setup.sh printed no {k} line"))
        };
        Some(SparkSetup {
            jars: get("SPARK_JARS=")?,
            classes: get("JAVA_CLASSES=")?,
            python: get("PYTHON=")?,
            script: manifest.join("bench/word_count.py"),
        })
    } else {
        None
    };
    Ok(Launch {
        word_count,
        weir_args: plan.weir_args.clone(),
        weir_env: Vec::new(),
        spark,
    })
}

fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let free = Command::new("free")
        .arg("-h")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mem = free
        .lines()
        .take(2)
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" / ");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let java = Command::new("java")
        .arg("-version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default();
    format!(
        "| CPU | {cpu} |\n| `nproc` | {nproc} |\n| `free -h` | `{mem}` |\n| load average at start | {} |\n| Java | {java} |\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// One bounded run at one rate on the socket source.
#[derive(Clone, Debug)]
struct Step {
    rate: f64,
    achieved: f64,
    batches: usize,
    expected_batches: usize,
    processing: Quantiles,
    scheduling: Quantiles,
    /// The last batch's scheduling delay (none if no batch completed in the window).
    last_scheduling_ms: Option<u64>,
    e2e: Option<Quantiles>,
    startup_ms: u64,
    steady_rss_kb: Option<u64>,
    peak_rss_kb: u64,
    /// Words in the output once the window's batches completed (every batch since start).
    output_words: u64,
    /// Words the feeder delivered from the start to the window's end.
    words_delivered: u64,
    pass: bool,
    /// With the HTTP server on: scrapes answered (and 1 if the event stream delivered).
    scrapes: Option<u64>,
    /// CPU seconds (user + system, the whole process tree) the system used per million
    /// words delivered in the window.
    cpu_s_per_mword: Option<f64>,
    /// weir only: where the CPU went in the window, by thread group.
    stages: Option<Stages>,
}

/// CPU used per second of the window (1.0 = one core busy), by weir's thread groups, which
/// `weir_examples::run::main_with` names: `weir-worker` (the tokio workers: the actors —
/// receivers framing and storing lines, trackers, the job generator — and async I/O),
/// `weir-blocking` (the blocking pool: the batch jobs — map side, shuffle, output — and
/// planning), `weir-wal-writer` (the WAL's writer and syncer), and the rest. `busiest` is the
/// busiest single thread, which shows a serial stage: near 1.0 it is one core's worth.
#[derive(Clone, Copy, Debug, Default)]
struct Stages {
    workers: f64,
    blocking: f64,
    wal: f64,
    other: f64,
    busiest: f64,
}

impl Stages {
    /// The groups' CPU between two samples of `Running::thread_cpu`, over `secs` of wall time.
    fn between(before: &[(u32, String, f64)], after: &[(u32, String, f64)], secs: f64) -> Self {
        let mut st = Stages::default();
        for (tid, name, cpu) in after {
            let was = before
                .iter()
                .find(|(t, _, _)| t == tid)
                .map_or(0.0, |(_, _, c)| *c);
            let used = (cpu - was).max(0.0) / secs.max(1e-9);
            st.busiest = st.busiest.max(used);
            if name.starts_with("weir-worker") {
                st.workers += used;
            } else if name.starts_with("weir-blocking") {
                st.blocking += used;
            } else if name.starts_with("weir-wal") {
                st.wal += used;
            } else {
                st.other += used;
            }
        }
        st
    }

    fn summary(&self) -> String {
        format!(
            "cores: workers {:.2} blocking {:.2} wal {:.2} other {:.2}, busiest thread {:.2}",
            self.workers, self.blocking, self.wal, self.other, self.busiest
        )
    }
}

impl Step {
    fn summary(&self) -> String {
        format!(
            "rate {:.0} (delivered {:.0}) words/s: start-up {} ms, {}/{} batches, {}, e2e {}, output {:.1}% of the words delivered by the window's end, CPU {} s/M words{}, RSS steady {} peak {} → {}",
            self.rate,
            self.achieved,
            self.startup_ms,
            self.batches,
            self.expected_batches,
            self.last_scheduling_ms.map_or_else(
                || "no batch completed in the window".to_owned(),
                |last| format!(
                    "processing p50 {} p95 {} p99 {} ms, scheduling p50 {} p99 {} last {last} ms",
                    self.processing.p50,
                    self.processing.p95,
                    self.processing.p99,
                    self.scheduling.p50,
                    self.scheduling.p99,
                )
            ),
            self.e2e.map_or_else(
                || "n/a".to_owned(),
                |q| format!("p50 {} p99 {} ms", q.p50, q.p99)
            ),
            100.0 * self.output_words as f64 / self.words_delivered.max(1) as f64,
            self.cpu_s_per_mword
                .map_or_else(|| "n/a".to_owned(), |c| format!("{c:.4}")),
            self.stages
                .map_or_else(String::new, |st| format!(" ({})", st.summary())),
            self.steady_rss_kb.map_or_else(|| "n/a".to_owned(), mib),
            mib(self.peak_rss_kb),
            if self.pass {
                "sustained"
            } else {
                "not sustained"
            }
        )
    }
}

fn mib(kb: u64) -> String {
    format!("{:.0} MiB", kb as f64 / 1024.0)
}

#[derive(Clone, Copy, Debug, Default)]
struct Quantiles {
    p50: u64,
    p95: u64,
    p99: u64,
}

fn quantiles(mut v: Vec<u64>) -> Quantiles {
    v.sort_unstable();
    let q = |p: f64| -> u64 {
        if v.is_empty() {
            return 0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    };
    Quantiles {
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
    }
}

#[allow(clippy::too_many_arguments)]
fn step(
    launch: &Launch,
    kind: Kind,
    wal: bool,
    rate: f64,
    batch_ms: u64,
    (warmup_secs, secs): (f64, f64),
    root: &Path,
    pool: &Arc<Pool>,
) -> Result<Step, BoxError> {
    let dirs = RunDirs::fresh(root)?;
    let feeder = Feeder::socket(Arc::clone(pool), Some(rate))?;
    let addr = feeder.addr.ok_or("the socket feeder has no address")?;
    let mut running = launch.start(kind, &Source::Socket(addr), batch_ms, wal, &dirs, "run")?;
    let scraper = http_addr(launch).map(Scraper::start);
    let Some(first) = running.wait_batches(1, Duration::from_secs(120)) else {
        running.stop(Duration::from_secs(10))?;
        return Err(format!(
            "{kind} completed no batch within 120 s (logs in {})",
            dirs.logs.display()
        )
        .into());
    };
    let startup_ms = (first - running.spawned).as_millis() as u64;
    let warmup = Duration::from_secs_f64(warmup_secs).max(Duration::from_millis(3 * batch_ms));
    sleep_until(first + warmup);
    let (t0, w0, words0, cpu0) = (
        Instant::now(),
        wall_ms(),
        feeder.tally().words(),
        running.cpu_secs(),
    );
    let threads0 = running.thread_cpu();
    sleep_until(t0 + Duration::from_secs_f64(secs));
    let (t1, w1, words1, cpu1) = (
        Instant::now(),
        wall_ms(),
        feeder.tally().words(),
        running.cpu_secs(),
    );
    let stages = (kind == Kind::Weir)
        .then(|| Stages::between(&threads0, &running.thread_cpu(), (t1 - t0).as_secs_f64()));
    let achieved = (words1 - words0) as f64 / (t1 - t0).as_secs_f64();
    let cpu_s_per_mword = match (cpu0, cpu1) {
        (Some(a), Some(b)) if words1 > words0 => Some((b - a) / ((words1 - words0) as f64 / 1e6)),
        _ => None,
    };
    let tally: Arc<Tally> = Arc::clone(feeder.tally());
    feeder.stop()?;
    let scrapes = scraper.map(Scraper::stop);
    // Let the batches of the window finish (bounded).
    let seen = running.batches().len();
    running.wait_batches(seen + 2, Duration::from_millis(3 * batch_ms + 5000));
    let steady_rss_kb = running.rss_median_kb(t0);
    let all = running.batches();
    // Read before the stop: a graceful stop's last batch takes every block left.
    let output_words: u64 = read_output(&dirs.output)
        .values()
        .flat_map(|counts| counts.values())
        .sum();
    let peak_rss_kb = running.stop(Duration::from_secs(15))?;
    let steady: Vec<&BatchStat> = all
        .iter()
        .filter(|b| b.batch_time_ms >= w0 && b.batch_time_ms + batch_ms <= w1)
        .collect();
    // Batch times that fit in the window (Spark's are multiples of the interval; weir's
    // close to it): one less is tolerated for alignment.
    let first_time = w0.div_ceil(batch_ms) * batch_ms;
    let expected_batches = if first_time + batch_ms <= w1 {
        ((w1 - batch_ms - first_time) / batch_ms + 1) as usize
    } else {
        1
    };
    let processing = quantiles(steady.iter().map(|b| b.processing_ms).collect());
    let scheduling = quantiles(steady.iter().map(|b| b.scheduling_ms).collect());
    let last_scheduling_ms = steady.last().map(|b| b.scheduling_ms);
    let e2e = end_to_end(&tally, &all, &dirs.output, words0, words1);
    dirs.discard_data();
    // Kept up: the words delivered up to the window's end are (nearly all) in the output of
    // the batches completed shortly after it. A system that accepts its input but processes
    // less per batch (a per-batch cap, a backlog in its WAL) passes every other test.
    let kept_up = output_words as f64 >= words0 as f64 + 0.95 * (words1 - words0) as f64;
    let pass = achieved >= 0.95 * rate
        && kept_up
        && steady.len() + 1 >= expected_batches
        && processing.p95 < batch_ms
        && last_scheduling_ms.is_some_and(|last| last < batch_ms);
    Ok(Step {
        rate,
        achieved,
        batches: steady.len(),
        expected_batches,
        processing,
        scheduling,
        last_scheduling_ms,
        e2e,
        startup_ms,
        steady_rss_kb,
        peak_rss_kb,
        output_words,
        words_delivered: words1,
        pass,
        scrapes,
        cpu_s_per_mword,
        stages,
    })
}

/// The `--http-addr=ADDR` among weir's extra arguments, if any.
fn http_addr(launch: &Launch) -> Option<std::net::SocketAddr> {
    launch
        .weir_args
        .iter()
        .find_map(|a| a.strip_prefix("--http-addr="))
        .and_then(|a| a.parse().ok())
}

/// What Prometheus and an open dashboard ask of a job: `/metrics` and `/api/v1/batches`
/// every second, and the event stream read as it comes.
struct Scraper {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u64>>,
}

impl Scraper {
    fn start(addr: std::net::SocketAddr) -> Scraper {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poll = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut ok = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for path in ["/metrics", "/api/v1/batches"] {
                        let answered = std::net::TcpStream::connect(addr).and_then(|mut c| {
                            write!(
                                c,
                                "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                            )?;
                            let mut body = Vec::new();
                            c.read_to_end(&mut body)?;
                            Ok(body.starts_with(b"HTTP/1.1 200"))
                        });
                        ok += u64::from(matches!(answered, Ok(true)));
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                ok
            })
        };
        let events = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut read = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut c) = std::net::TcpStream::connect(addr) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_millis(500)));
                    if write!(c, "GET /api/v1/events HTTP/1.1\r\nhost: x\r\n\r\n").is_err() {
                        continue;
                    }
                    let mut buf = [0u8; 16 * 1024];
                    while !stop.load(Ordering::Relaxed) {
                        match c.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => read += n as u64,
                            Err(e)
                                if e.kind() == std::io::ErrorKind::WouldBlock
                                    || e.kind() == std::io::ErrorKind::TimedOut => {}
                            Err(_) => break,
                        }
                    }
                }
                (read > 0).into()
            })
        };
        Scraper {
            stop,
            threads: vec![poll, events],
        }
    }

    /// Stops; the scrapes answered `200`, plus 1 if the event stream delivered anything.
    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().unwrap_or(0))
            .sum()
    }
}

/// Sleeps until `t`: a measuring window of fixed length, not a wait for an event.
fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// End-to-end latency of the words delivered between cumulative counts `lo` and `hi`: the
/// time from the feeder handing a word to the kernel to the completion of the batch whose
/// output holds it, with both sides in FIFO order (one TCP connection): the k-th word out is
/// the k-th word in.
fn end_to_end(
    tally: &Tally,
    batches: &[BatchStat],
    output: &Path,
    lo: u64,
    hi: u64,
) -> Option<Quantiles> {
    latency_from(&tally.curve(), batches, output, lo, hi)
}

/// [`end_to_end`] over a (wall ms, cumulative words) input curve.
fn latency_from(
    curve: &[(u64, u64)],
    batches: &[BatchStat],
    output: &Path,
    lo: u64,
    hi: u64,
) -> Option<Quantiles> {
    let out = read_output(output);
    let completed: HashMap<u64, u64> = batches
        .iter()
        .map(|b| (b.batch_time_ms, b.completed_wall_ms))
        .collect();
    let mut cumulative = Vec::new(); // (cumulative words after the batch, completed wall ms)
    let mut total = 0u64;
    for (time, counts) in &out {
        total += counts.values().sum::<u64>();
        if let Some(done) = completed.get(time) {
            cumulative.push((total, *done));
        }
    }
    if hi <= lo || cumulative.is_empty() {
        return None;
    }
    let stride = ((hi - lo) / 5000).max(1);
    let mut latencies = Vec::new();
    let mut k = lo + 1;
    while k <= hi {
        let j = cumulative.partition_point(|(c, _)| *c < k);
        let i = curve.partition_point(|(_, c)| *c < k);
        if let (Some((_, done)), Some((sent, _))) = (cumulative.get(j), curve.get(i)) {
            latencies.push(done.saturating_sub(*sent));
        }
        k += stride;
    }
    (!latencies.is_empty()).then(|| quantiles(latencies))
}

/// The outcome of one sustainable-rate search.
#[derive(Debug)]
struct RateResult {
    kind: Kind,
    wal: bool,
    /// The largest rate that passed.
    sustained: Option<Step>,
    /// The smallest rate that failed.
    failed: Option<f64>,
    steps: Vec<Result<Step, String>>,
}

/// The sustainable rate: doubling from `start` (or halving), then bisection until the bounds
/// are within `resolution` (a ratio, e.g. 1.1) or the plan's bisection steps are spent.
#[allow(clippy::too_many_arguments)]
fn search(
    launch: &Launch,
    plan: &Plan,
    pool: &Arc<Pool>,
    scratch: &Path,
    kind: Kind,
    wal: bool,
    (start, max_rate, resolution): (f64, f64, f64),
) -> RateResult {
    let mut result = RateResult {
        kind,
        wal,
        sustained: None,
        failed: None,
        steps: Vec::new(),
    };
    let try_rate = |rate: f64, result: &mut RateResult| -> bool {
        let dir = scratch.join(format!(
            "rate-{}-{}{}-{rate:.0}",
            slug(kind),
            if wal { "wal" } else { "nowal" },
            if http_addr(launch).is_some() {
                "-http"
            } else {
                ""
            }
        ));
        let r = step(
            launch,
            kind,
            wal,
            rate,
            plan.batch_ms,
            (plan.warmup_secs, plan.step_secs),
            &dir,
            pool,
        );
        let wal_text = if wal { "WAL on" } else { "WAL off" };
        match &r {
            Ok(s) => println!("bench: rate {kind} ({wal_text}): {}", s.summary()),
            Err(e) => println!("bench: rate {kind} ({wal_text}) at {rate:.0}: failed: {e}"),
        }
        let pass = matches!(&r, Ok(s) if s.pass);
        if let Ok(s) = &r
            && s.pass
            && result.sustained.as_ref().is_none_or(|b| b.rate < rate)
        {
            result.sustained = Some(s.clone());
        }
        if !pass && result.failed.is_none_or(|f| f > rate) {
            result.failed = Some(rate);
        }
        result.steps.push(r.map_err(|e| e.to_string()));
        pass
    };
    // Doubling (or halving, if the first rate fails), then bisection.
    let mut rate = start.min(max_rate);
    if try_rate(rate, &mut result) {
        while rate < max_rate {
            rate = (rate * 2.0).min(max_rate);
            if !try_rate(rate, &mut result) {
                break;
            }
        }
    } else {
        for _ in 0..4 {
            rate /= 2.0;
            if try_rate(rate, &mut result) {
                break;
            }
        }
    }
    for _ in 0..plan.bisect_steps {
        let (Some(lo), Some(hi)) = (result.sustained.as_ref().map(|s| s.rate), result.failed)
        else {
            break;
        };
        if hi <= lo * resolution {
            break;
        }
        try_rate((lo + hi) / 2.0, &mut result);
    }
    result
}

/// Where the `workloads` phase starts `kind`'s search: `given` if the rate was given; for
/// weir, half the compute `floor` (the doubling then tries the floor, the target); for Spark,
/// a tenth of `weir`'s sustained rate with the same WAL setting (the ×10 target), or a
/// twentieth of the floor if weir's is not known.
fn workload_start(kind: Kind, given: Option<f64>, floor: f64, weir: Option<f64>) -> f64 {
    let start = match (given, kind) {
        (Some(rate), _) => rate,
        (None, Kind::Weir) => floor / 2.0,
        (None, _) => weir.map_or(floor / 20.0, |w| w / 10.0),
    };
    // Round to three significant digits: the rates name the runs' directories.
    let scale = 10f64.powf(start.max(1.0).log10().floor() - 2.0);
    ((start / scale).round() * scale).max(1.0)
}

/// The outcome of a kill -9 test.
#[derive(Debug)]
struct Kill {
    rate: f64,
    startup_ms: u64,
    restart_ms: Option<u64>,
    sent: u64,
    lost: u64,
    duplicated: u64,
    peak_rss_kb: u64,
}

fn kill_test(
    launch: &Launch,
    plan: &Plan,
    pool: &Arc<Pool>,
    scratch: &Path,
    kind: Kind,
    socket: bool,
    rate: f64,
) -> Result<Kill, BoxError> {
    let root = scratch.join(format!(
        "kill-{}-{}",
        slug(kind),
        if socket { "socket" } else { "dir" }
    ));
    let dirs = RunDirs::fresh(&root)?;
    let input = root.join("input");
    std::fs::create_dir_all(&input)?;
    let words_per_s = rate;
    let rate = Some(rate);
    // A socket feeder listens first (the system connects to it, and it sends only to a
    // connected client); a directory feeder starts once the system has completed a batch,
    // because Spark's textFileStream ignores files older than its start (newFilesOnly).
    let mut feeder = if socket {
        Some(Feeder::socket(Arc::clone(pool), rate)?)
    } else {
        None
    };
    let source = match feeder.as_ref().and_then(|f| f.addr) {
        Some(addr) => Source::Socket(addr),
        None => Source::Dir(input.clone()),
    };
    // The receiver WAL on where there is one: Spark's recovery depends on it.
    let wal = socket;
    let mut first = launch.start(kind, &source, plan.batch_ms, wal, &dirs, "first")?;
    let Some(t) = first.wait_batches(1, Duration::from_secs(120)) else {
        first.stop(Duration::from_secs(10))?;
        return Err(format!("{kind} completed no batch within 120 s").into());
    };
    let startup_ms = (t - first.spawned).as_millis() as u64;
    let feeder = match feeder.take() {
        Some(f) => f,
        None => Feeder::dir(Arc::clone(pool), rate, input)?,
    };
    sleep_until(t + Duration::from_secs_f64(plan.kill_secs));
    let mut peak_rss_kb = first.peak_rss_kb();
    let killed = Instant::now();
    first.kill9()?;
    let mut second = launch.start(kind, &source, plan.batch_ms, wal, &dirs, "restart")?;
    let restarted = second.wait_batches(1, Duration::from_secs(120));
    let restart_ms = restarted.map(|t| (t - killed).as_millis() as u64);
    sleep_until(restarted.unwrap_or_else(Instant::now) + Duration::from_secs_f64(plan.kill_secs));
    let tally = Arc::clone(feeder.tally());
    feeder.stop()?;
    let sent_counts = tally.counts(pool);
    let sent: u64 = sent_counts.values().sum();
    drain(
        &mut second,
        &dirs.output,
        sent,
        plan.batch_ms,
        Duration::from_secs(30),
    );
    peak_rss_kb = peak_rss_kb.max(second.stop(Duration::from_secs(15))?);
    let (lost, duplicated) = lost_and_duplicated(&sent_counts, &summed_output(&dirs.output));
    Ok(Kill {
        rate: words_per_s,
        startup_ms,
        restart_ms,
        sent,
        lost,
        duplicated,
        peak_rss_kb,
    })
}

/// Waits until the output under `output` holds `sent` words, or stops growing over three
/// waits of two batch intervals in a row, or `patience` has passed; the words it holds.
fn drain(
    running: &mut Running,
    output: &Path,
    sent: u64,
    batch_ms: u64,
    patience: Duration,
) -> u64 {
    let deadline = Instant::now() + patience;
    let mut last_total = u64::MAX;
    let mut still = 0;
    let mut total = 0;
    while Instant::now() < deadline {
        let n = running.batches().len();
        running.wait_batches(n + 1, Duration::from_millis(batch_ms * 2 + 1000));
        total = read_output(output).values().flat_map(|c| c.values()).sum();
        if total >= sent {
            break;
        }
        still = if total == last_total { still + 1 } else { 0 };
        if still >= 3 {
            break;
        }
        last_total = total;
    }
    total
}

/// Every word's count summed over the batches under `output`.
fn summed_output(output: &Path) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for counts in read_output(output).values() {
        for (w, c) in counts {
            *out.entry(w.clone()).or_insert(0) += c;
        }
    }
    out
}

/// Words lost and duplicated, word by word: what the feeder delivered (`sent`) against the
/// summed output (`out`). A word in the output that was never sent counts as duplicated.
fn lost_and_duplicated(sent: &HashMap<String, u64>, out: &HashMap<String, u64>) -> (u64, u64) {
    let (mut lost, mut duplicated) = (0, 0);
    for (w, s) in sent {
        let o = out.get(w).copied().unwrap_or(0);
        lost += s.saturating_sub(o);
        duplicated += o.saturating_sub(*s);
    }
    for (w, o) in out {
        if !sent.contains_key(w) {
            duplicated += o;
        }
    }
    (lost, duplicated)
}

/// One workload of the `workloads` phase: its floor and every system's sustainable rate.
#[derive(Debug)]
struct WorkloadRow {
    workload: workload::Workload,
    bytes_per_word: f64,
    compute: floors::ComputeFloor,
    rates: Vec<RateResult>,
}

#[derive(Debug, Default)]
struct Report {
    /// The `workloads` phase.
    workloads: Vec<WorkloadRow>,
    ceiling: Option<feeder::Ceiling>,
    compute: Option<floors::ComputeFloor>,
    wal: Vec<floors::WalFloor>,
    rates: Vec<RateResult>,
    latency: Vec<(Kind, Result<Step, String>)>,
    kills: Vec<(Kind, bool, Result<Kill, String>)>,
    /// The `http` phase: weir with its HTTP server off, then on and scraped.
    http: Vec<(&'static str, RateResult)>,
    /// The `http` phase's fixed-rate steps, off and on alternating.
    http_fixed: Vec<(&'static str, Step)>,
    /// The `overload` phase.
    overload: overload::Results,
}

/// The median of `v` (the mean of the middle two for an even count); none if empty.
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "n/a".to_owned()
    }
}

impl Report {
    /// The `workloads` phase's section: one row per workload.
    fn write_workloads(&self, s: &mut String, plan: &Plan) {
        if self.workloads.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "### Workloads: sustainable rate (socket source, {} ms batches), words/s\n\n\
             The compute floor is one thread counting the feeder's text with `split_whitespace` \
             and a `HashMap` hashed by foldhash (weir's hash), read once from a buffer four times \
             the last-level cache (as weir reads its received blocks: from memory), per second \
             of the thread's CPU time (one core's worth, however busy the machine); `cached` is \
             the same count over the feeder's pool again and again, in the cache (the floor \
             before 2026-12-07). Ratios: weir over Spark (Java), same receiver WAL setting; weir \
             over the floor (from memory).\n\n\
             | workload | bytes/word | floor | floor cached | weir WAL off | weir WAL on | Spark Java off | Spark Java on | weir/Spark off | weir/Spark on | weir off/floor | weir on/floor |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            plan.batch_ms
        );
        for row in &self.workloads {
            let rate = |kind: Kind, wal: bool| {
                row.rates
                    .iter()
                    .find(|r| r.kind == kind && r.wal == wal)
                    .and_then(|r| r.sustained.as_ref())
                    .map(|st| st.rate)
            };
            let show = |v: Option<f64>| v.map_or_else(|| "none".to_owned(), |v| format!("{v:.0}"));
            let over = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => ratio(a, b),
                _ => "n/a".to_owned(),
            };
            let floor = Some(row.compute.words_per_s);
            let _ = writeln!(
                s,
                "| `{}` | {:.2} | {:.0} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.workload,
                row.bytes_per_word,
                row.compute.words_per_s,
                row.compute.cached_words_per_s,
                show(rate(Kind::Weir, false)),
                show(rate(Kind::Weir, true)),
                show(rate(Kind::SparkJava, false)),
                show(rate(Kind::SparkJava, true)),
                over(rate(Kind::Weir, false), rate(Kind::SparkJava, false)),
                over(rate(Kind::Weir, true), rate(Kind::SparkJava, true)),
                over(rate(Kind::Weir, false), floor),
                over(rate(Kind::Weir, true), floor),
            );
        }
        let _ = writeln!(
            s,
            "\nweir at its highest sustained rate: processing p95 (the target: below the batch \
             interval), CPU seconds per million words (the whole process), and the cores its \
             thread groups used — workers (receiving, framing, validation, blocks, the WAL's \
             encoding), jobs (the blocking pool: map side, shuffle, output), the WAL writer — and \
             its busiest thread (near 1.0: a serial stage). A workload the floor's thread counts \
             at F words per CPU-second asks weir for 1/F CPU seconds per word or less on each \
             of its cores.\n\n\
             | workload | WAL | sustained | p95 ms | CPU s per M words | floor's CPU s per M words | cores: workers / jobs / WAL | busiest thread |\n\
             |---|---|---:|---:|---:|---:|---|---:|"
        );
        for row in &self.workloads {
            for r in row.rates.iter().filter(|r| r.kind == Kind::Weir) {
                let Some(st) = &r.sustained else {
                    continue;
                };
                let stages = st.stages.unwrap_or_default();
                let _ = writeln!(
                    s,
                    "| `{}` | {} | {:.0} | {} | {} | {:.4} | {:.2} / {:.2} / {:.2} | {:.2} |",
                    row.workload,
                    if r.wal { "on" } else { "off" },
                    st.rate,
                    st.processing.p95,
                    st.cpu_s_per_mword
                        .map_or_else(|| "–".to_owned(), |c| format!("{c:.4}")),
                    1e6 / row.compute.words_per_s.max(1.0),
                    stages.workers,
                    stages.blocking,
                    stages.wal,
                    stages.busiest,
                );
            }
        }
        let _ = writeln!(s, "\nEvery step:\n\n```text");
        for row in &self.workloads {
            for r in &row.rates {
                for st in &r.steps {
                    let _ = match st {
                        Ok(st) => writeln!(
                            s,
                            "{} {} WAL {}: {}",
                            row.workload,
                            r.kind,
                            if r.wal { "on" } else { "off" },
                            st.summary()
                        ),
                        Err(e) => writeln!(s, "{} {}: {e}", row.workload, r.kind),
                    };
                }
            }
        }
        s.push_str("```\n\n");
    }

    /// The `http` phase's section: every search, the medians, the fixed-rate pairs.
    fn write_http(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "### HTTP server and metrics: on vs off (weir, receiver WAL on)\n\n\
             On: `--http-addr`, with `/metrics` and `/api/v1/batches` asked every second and \
             the event stream read, as Prometheus and an open dashboard do. Searches in the \
             order run.\n\n\
             | HTTP server | sustained words/s | first failed | processing p95 ms | CPU s per M words | scrapes answered |\n|---|---|---|---|---|---|"
        );
        let cpu = |st: &Step| {
            st.cpu_s_per_mword
                .map_or_else(|| "–".to_owned(), |c| format!("{c:.4}"))
        };
        for (label, r) in &self.http {
            let sustained = r.sustained.as_ref();
            let _ = writeln!(
                s,
                "| {label} | {} | {} | {} | {} | {} |",
                sustained.map_or_else(|| "none".to_owned(), |st| format!("{:.0}", st.rate)),
                r.failed
                    .map_or_else(|| "none".to_owned(), |f| format!("{f:.0}")),
                sustained.map_or_else(|| "–".to_owned(), |st| st.processing.p95.to_string()),
                sustained.map_or_else(|| "–".to_owned(), cpu),
                sustained
                    .and_then(|st| st.scrapes)
                    .map_or_else(|| "–".to_owned(), |n| n.to_string()),
            );
        }
        let median_rate = |label: &str| {
            median(
                self.http
                    .iter()
                    .filter(|(l, _)| *l == label)
                    .filter_map(|(_, r)| r.sustained.as_ref().map(|st| st.rate))
                    .collect(),
            )
        };
        if let (Some(off), Some(on)) = (median_rate("off"), median_rate("on")) {
            let _ = writeln!(
                s,
                "\nMedian sustained: off {off:.0}, on {on:.0} words/s; on / off {} ({:+.1} %).",
                ratio(on, off),
                (on / off - 1.0) * 100.0
            );
            // How finely the search can tell two rates apart here: the spread of the same
            // configuration's searches.
            let offs: Vec<f64> = self
                .http
                .iter()
                .filter(|(l, _)| *l == "off")
                .filter_map(|(_, r)| r.sustained.as_ref().map(|st| st.rate))
                .collect();
            if offs.len() > 1 {
                let (lo, hi) = offs.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
                    (lo.min(*r), hi.max(*r))
                });
                let _ = writeln!(
                    s,
                    "The searches of the same configuration (off) alone spread from {lo:.0} to \
                     {hi:.0} words/s ({:.1} % of the lower): the search's resolution on this \
                     machine.",
                    (hi / lo - 1.0) * 100.0
                );
            }
            s.push('\n');
        }
        if self.http_fixed.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "At one fixed rate, off and on alternating:\n\n| HTTP server | rate words/s | delivered | processing p50 ms | p95 ms | CPU s per M words | passed | scrapes |\n|---|---|---|---|---|---|---|---|"
        );
        for (label, st) in &self.http_fixed {
            let _ = writeln!(
                s,
                "| {label} | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
                st.rate,
                st.achieved,
                st.processing.p50,
                st.processing.p95,
                cpu(st),
                if st.pass { "yes" } else { "no" },
                st.scrapes.map_or_else(|| "–".to_owned(), |n| n.to_string())
            );
        }
        // Medians: a step can be an outlier (the first of a run starts on a cold page cache).
        let middle = |label: &str, f: &dyn Fn(&Step) -> Option<f64>| {
            median(
                self.http_fixed
                    .iter()
                    .filter(|(l, _)| *l == label)
                    .filter_map(|(_, st)| f(st))
                    .collect(),
            )
        };
        let p50 = |st: &Step| Some(st.processing.p50 as f64);
        let cpu_per = |st: &Step| st.cpu_s_per_mword;
        if let (Some(off), Some(on)) = (middle("off", &p50), middle("on", &p50)) {
            let _ = writeln!(
                s,
                "\nMedian processing p50: off {off:.0} ms, on {on:.0} ms ({:+.1} %).",
                (on / off - 1.0) * 100.0
            );
        }
        if let (Some(off), Some(on)) = (middle("off", &cpu_per), middle("on", &cpu_per)) {
            let _ = writeln!(
                s,
                "Median CPU per million words: off {off:.4} s, on {on:.4} s ({:+.1} %). With both \
                 cores busy at the top rate, CPU per word is what bounds the sustainable rate: \
                 on / off estimated at {} ({:+.1} %).\n",
                (on / off - 1.0) * 100.0,
                ratio(off, on),
                (off / on - 1.0) * 100.0
            );
        }
    }

    fn sustained(&self, kind: Kind, wal: bool) -> Option<&Step> {
        self.rates
            .iter()
            .find(|r| r.kind == kind && r.wal == wal)
            .and_then(|r| r.sustained.as_ref())
    }

    fn markdown(&self, plan: &Plan, machine: &str, pool: &Pool) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "## Results\n\nbatch interval {} ms (latency phase {} ms), moderate rate {:.0} words/s, {} s measured per rate step after {} s of warm-up{}\n",
            plan.batch_ms,
            plan.latency_batch_ms,
            plan.moderate_rate,
            plan.step_secs,
            plan.warmup_secs,
            if plan.quick { " (--quick)" } else { "" }
        );
        if !plan.weir_args.is_empty() {
            let _ = writeln!(
                s,
                "weir's `word_count` ran with `{}`.\n",
                plan.weir_args.join(" ")
            );
        }
        let _ = writeln!(s, "| | |\n|---|---|\n{machine}");
        let bpw = pool.bytes_per_word();
        if let Some(c) = &self.ceiling {
            let _ = writeln!(
                s,
                "Feeder ceiling: socket {:.0} words/s ({:.0} MB/s), directory {:.0} words/s; {:.2} bytes/word.\n",
                c.socket_words_per_s,
                c.socket_words_per_s * bpw / 1e6,
                c.dir_words_per_s,
                bpw
            );
        }
        if let Some(c) = &self.compute {
            let _ = writeln!(
                s,
                "Compute floor (1 thread, `split_whitespace` + `HashMap`, foldhash; per CPU-second of the thread): {:.0} words/s ({:.1} MB/s) over {} MiB of the feeder's text read once from memory; {:.0} words/s over its pool again and again, in the cache.\n",
                c.words_per_s,
                c.mb_per_s,
                c.buffer_bytes >> 20,
                c.cached_words_per_s
            );
        }
        if !self.wal.is_empty() {
            let _ = writeln!(
                s,
                "| WAL floor: group | MB/s | write + sync p50 ms |\n|---:|---:|---:|"
            );
            for w in &self.wal {
                let _ = writeln!(
                    s,
                    "| {} KiB | {:.1} | {:.2} |",
                    w.group_bytes >> 10,
                    w.mb_per_s,
                    w.p50_ms
                );
            }
            s.push('\n');
        }
        if !self.rates.is_empty() {
            let _ = writeln!(
                s,
                "### Sustainable rate (socket source, {} ms batches)\n",
                plan.batch_ms
            );
            let _ = writeln!(
                s,
                "| system | receiver WAL | sustained words/s | first failed | processing p95 ms | steady RSS | weir/this | this/compute floor | cores used: workers / jobs / WAL (busiest thread) |\n|---|---|---:|---:|---:|---:|---:|---:|---|"
            );
            let weir = self.sustained(Kind::Weir, true).map(|s| s.rate);
            for r in &self.rates {
                let rate = r.sustained.as_ref().map(|s| s.rate);
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    r.kind,
                    if r.wal { "on" } else { "off" },
                    rate.map_or_else(|| "none".to_owned(), |v| format!("{v:.0}")),
                    r.failed
                        .map_or_else(|| "none (cap)".to_owned(), |v| format!("{v:.0}")),
                    r.sustained
                        .as_ref()
                        .map_or_else(|| "".to_owned(), |s| s.processing.p95.to_string()),
                    r.sustained
                        .as_ref()
                        .and_then(|s| s.steady_rss_kb)
                        .map_or_else(|| "".to_owned(), mib),
                    match (weir, rate) {
                        (Some(w), Some(t)) => ratio(w, t),
                        _ => "n/a".to_owned(),
                    },
                    match (rate, &self.compute) {
                        (Some(t), Some(c)) => format!("{:.0}%", 100.0 * t / c.words_per_s),
                        _ => "n/a".to_owned(),
                    },
                    r.sustained.as_ref().and_then(|st| st.stages).map_or_else(
                        String::new,
                        |st| format!(
                            "{:.2} / {:.2} / {:.2} ({:.2})",
                            st.workers, st.blocking, st.wal, st.busiest
                        )
                    ),
                );
            }
            s.push('\n');
            if let (Some(w), Some(floor)) = (
                self.sustained(Kind::Weir, true),
                self.wal.iter().find(|f| f.group_bytes == 1 << 20),
            ) {
                let mb = w.rate * bpw / 1e6;
                let _ = writeln!(
                    s,
                    "weir at its sustained rate logs {mb:.1} MB/s to its receiver WAL: {:.0}% of the raw 1 MiB-group floor ({:.1} MB/s).\n",
                    100.0 * mb / floor.mb_per_s,
                    floor.mb_per_s
                );
            }
            let _ = writeln!(s, "Every step:\n\n```text");
            for r in &self.rates {
                for st in &r.steps {
                    let _ = match st {
                        Ok(st) => writeln!(
                            s,
                            "{} WAL {}: {}",
                            r.kind,
                            if r.wal { "on" } else { "off" },
                            st.summary()
                        ),
                        Err(e) => writeln!(s, "{}: {e}", r.kind),
                    };
                }
            }
            s.push_str("```\n\n");
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "### Latency at {:.0} words/s, {} ms batches (socket; Spark's receiver WAL off, weir's on)\n",
                plan.moderate_rate, plan.latency_batch_ms
            );
            let _ = writeln!(
                s,
                "| system | batches | processing p50 / p99 ms | scheduling delay p50 / p99 ms | end-to-end p50 / p99 ms | peak RSS | steady RSS |\n|---|---:|---:|---:|---:|---:|---:|"
            );
            for (kind, r) in &self.latency {
                let _ = match r {
                    Ok(st) if st.last_scheduling_ms.is_none() => writeln!(
                        s,
                        "| {kind} | 0/{} | — | — | — | {} | {} |",
                        st.expected_batches,
                        mib(st.peak_rss_kb),
                        st.steady_rss_kb.map_or_else(|| "n/a".to_owned(), mib)
                    ),
                    Ok(st) => writeln!(
                        s,
                        "| {kind} | {}/{} | {} / {} | {} / {} | {} | {} | {} |",
                        st.batches,
                        st.expected_batches,
                        st.processing.p50,
                        st.processing.p99,
                        st.scheduling.p50,
                        st.scheduling.p99,
                        st.e2e
                            .map_or_else(|| "n/a".to_owned(), |q| format!("{} / {}", q.p50, q.p99)),
                        mib(st.peak_rss_kb),
                        st.steady_rss_kb.map_or_else(|| "n/a".to_owned(), mib)
                    ),
                    Err(e) => writeln!(s, "| {kind} | failed: {e} | | | | | |"),
                };
            }
            s.push('\n');
        }
        if !self.kills.is_empty() {
            let _ = writeln!(
                s,
                "### Start-up and kill -9, {} ms batches (Spark's receiver WAL on for the socket)\n",
                plan.batch_ms
            );
            let _ = writeln!(
                s,
                "| system | source | words/s | start-up → first batch ms | kill -9 → first batch after restart ms | words delivered | lost | duplicated | peak RSS |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (kind, socket, r) in &self.kills {
                let src = if *socket { "socket" } else { "directory" };
                let _ = match r {
                    Ok(k) => writeln!(
                        s,
                        "| {kind} | {src} | {:.0} | {} | {} | {} | {} | {} | {} |",
                        k.rate,
                        k.startup_ms,
                        k.restart_ms
                            .map_or_else(|| "no batch".to_owned(), |v| v.to_string()),
                        k.sent,
                        k.lost,
                        k.duplicated,
                        mib(k.peak_rss_kb)
                    ),
                    Err(e) => writeln!(s, "| {kind} | {src} | failed: {e} | | | | | | |"),
                };
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "load average at the end: {}",
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        if !self.http.is_empty() || !self.http_fixed.is_empty() {
            self.write_http(&mut s);
        }
        self.write_workloads(&mut s, plan);
        self.overload.markdown(&mut s, plan.batch_ms);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_the_middle_or_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn workload_searches_start_at_the_targets_unless_told() {
        // weir: half the floor, so that its doubling tries the floor.
        assert_eq!(
            workload_start(Kind::Weir, None, 42_345_678.0, None),
            21_200_000.0
        );
        // Spark: a tenth of weir's sustained rate with the same WAL setting.
        let spark = workload_start(Kind::SparkJava, None, 42e6, Some(16e6));
        assert_eq!(spark, 1_600_000.0);
        assert_eq!(
            workload_start(Kind::SparkJava, None, 42e6, None),
            2_100_000.0
        );
        // A given rate is every system's start.
        assert_eq!(
            workload_start(Kind::SparkJava, Some(5e4), 42e6, Some(16e6)),
            5e4
        );
        assert_eq!(workload_start(Kind::Weir, None, 0.0, None), 1.0);
    }

    #[test]
    fn quantiles_pick_the_nearest_rank() {
        let q = quantiles((1..=100).rev().collect());
        assert_eq!((q.p50, q.p95, q.p99), (50, 95, 99));
        let q = quantiles(vec![7]);
        assert_eq!((q.p50, q.p99), (7, 7));
        assert_eq!(quantiles(Vec::new()).p99, 0);
    }

    #[test]
    fn end_to_end_latency_pairs_the_kth_word_in_with_the_kth_word_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Two batches: 20 words then 10 words, completed at 1500 and 2600.
        for (time, count) in [(1000u64, 20u64), (2000, 10)] {
            let b = dir.path().join(format!("batch-{time}"));
            std::fs::create_dir_all(&b).expect("mkdir");
            std::fs::write(b.join("part-00000"), format!("the\t{count}\n")).expect("write");
        }
        let now = Instant::now();
        let stat = |t: u64, done: u64| BatchStat {
            batch_time_ms: t,
            processing_ms: 0,
            scheduling_ms: 0,
            completed_wall_ms: done,
            seen: now,
        };
        let batches = [stat(1000, 1500), stat(2000, 2600)];
        // Words 1..=20 handed over at 1100, 21..=30 at 2100.
        let curve = [(1100u64, 20u64), (2100, 30)];
        let q = latency_from(&curve, &batches, dir.path(), 0, 30).expect("latencies");
        assert_eq!(q.p50, 400, "the first batch's words waited 400 ms");
        assert_eq!(q.p99, 500, "the second batch's words waited 500 ms");
        assert!(
            latency_from(&curve, &batches, dir.path(), 30, 30).is_none(),
            "an empty window has no latency"
        );
    }
}
