//! `kill -9` of the whole process, then a restart with the same arguments, on a seeded
//! schedule, for the two replayable sources weir has:
//!
//! * the file source — `weir-examples`' `word_count` counting files this test drops into its
//!   input directory; the summed per-batch output must equal an independent count of the input;
//! * the offset-based log source — `weir-examples`' `direct_log`, whose producer appends
//!   `r-<n>` records to a partitioned log read by a direct stream; every record must be in the
//!   output exactly once (checked here, and by the program itself before it exits 0).
//!
//! With the `s3` feature, the log source's test runs a second time with its checkpoints and
//! WAL on moto's S3 server (`--checkpoint-dir s3://…`).
//!
//! The binaries are built by the test with the cargo that runs it
//! (`weir_chaos_tests::process::example_binary`). Replay with `WEIR_CHAOS_SEED=<seed>`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir_actors::checkpoint::{CheckpointData, StateData};
use weir_chaos_tests::process::{Life, ProcessChaos, ProcessError, Running, example_binary};
use weir_chaos_tests::rng::Rng;
use weir_chaos_tests::{FaultClass, Schedule, ScheduleConfig, seed_from_env};

const KILLS: usize = 4;
/// Kills of the delta-upload test, whose lives are short (each killed at its first new state
/// file).
const DELTA_KILLS: usize = 10;

fn kill9_schedule(seed: u64) -> Schedule {
    let mut config = ScheduleConfig::kills(KILLS, Duration::from_millis(500), Vec::new())
        .with_mix(vec![(FaultClass::ProcessKill9, 1)]);
    config.warm_up = Duration::from_millis(100);
    Schedule::generate(seed, &config)
}

/// Every line of every part file of every `batch-<time>` directory, by batch time; `None`
/// while a batch directory cannot be read whole.
fn read_batches(output: &Path) -> Option<BTreeMap<u64, Vec<String>>> {
    let mut batches = BTreeMap::new();
    let Ok(entries) = fs::read_dir(output) else {
        return Some(batches);
    };
    for entry in entries {
        let entry = entry.ok()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(time) = name.strip_prefix("batch-").and_then(|t| t.parse().ok()) else {
            continue; // a temp directory being committed
        };
        let mut parts: Vec<PathBuf> = fs::read_dir(entry.path())
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
            })
            .collect();
        parts.sort();
        let mut lines = Vec::new();
        for part in parts {
            lines.extend(fs::read_to_string(part).ok()?.lines().map(str::to_owned));
        }
        batches.insert(time, lines);
    }
    Some(batches)
}

/// Polls the output under `output` until `count` of its batches covers `total` words (60 s at
/// most) — once the last life said it is running — then stops it with SIGINT and requires a
/// clean exit; returns that count.
fn until_covered_then_stop(
    output: &Path,
    total: u64,
    count: impl Fn(&BTreeMap<u64, Vec<String>>) -> BTreeMap<String, u64>,
    seed: u64,
    chaos: &ProcessChaos,
    mut last: Running,
) -> BTreeMap<String, u64> {
    // Running, its SIGINT handler installed (a life killed a moment after its start may not
    // have got there yet; SIGINT would then end it by the signal).
    assert!(
        last.wait_for_line("running;", Duration::from_secs(60))
            .is_some(),
        "seed {seed}: the last life did not start\n{}",
        chaos.logs()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = read_batches(output).map(|b| count(&b)).unwrap_or_default();
        if got.values().sum::<u64>() >= total {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: the output covers {} of {total} words\n{}",
            got.values().sum::<u64>(),
            chaos.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    // A graceful stop exits 0.
    let pid = last.child.id().to_string();
    let sent = Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("run kill");
    assert!(sent.success());
    let status = last
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("seed {seed}: no exit after SIGINT\n{}", chaos.logs()));
    assert!(status.success(), "seed {seed}: exited with {status}");
    got
}

fn report(what: &str, seed: u64, lives: &[Life]) {
    let mut ready: Vec<Duration> = lives.iter().filter_map(|l| l.ready_after).collect();
    ready.sort_unstable();
    println!(
        "{what}: {} kill -9s (seed {seed}); restart to running: p50 {:?}, max {:?}",
        lives.len(),
        ready.get(ready.len() / 2).copied().unwrap_or_default(),
        ready.last().copied().unwrap_or_default()
    );
}

#[test]
fn the_log_source_is_exactly_once_across_kill_9() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let checkpoint = tmp.path().join("checkpoint");
    log_source_across_kill_9(&tmp, checkpoint.into(), Vec::new());
}

/// The same, with the checkpoints and the WAL on moto's S3 server (a fresh bucket): every
/// life's driver restores from S3.
#[cfg(feature = "s3")]
#[test]
fn the_log_source_is_exactly_once_across_kill_9_with_checkpoints_on_s3() {
    let server = weir_actors::testing::MotoServer::shared()
        .unwrap_or_else(|e| panic!("moto's S3 server: {e}"));
    let options = server.fresh_bucket().expect("a bucket");
    let url = format!("{}checkpoint?endpoint={}", options.url(), server.endpoint());
    let env = vec![
        ("AWS_ACCESS_KEY_ID".into(), "weir-test".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "weir-test-secret".into()),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    log_source_across_kill_9(&tmp, url.into(), env);
}

/// `direct_log` killed `KILLS` times and run to the end, with its checkpoints at `checkpoint`
/// (a directory or an `s3://` URL): every record of the log in the output exactly once.
fn log_source_across_kill_9(
    tmp: &tempfile::TempDir,
    checkpoint: std::ffi::OsString,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
) {
    let seed = seed_from_env();
    let direct_log = example_binary("weir-examples", "direct_log").expect("build direct_log");
    let (output, logs) = (tmp.path().join("output"), tmp.path().join("logs"));
    fs::create_dir_all(&logs).expect("logs dir");
    // Production (RECORDS at 1,000 a second) outlasts the killed lives (about 0.5 s each), so
    // no life runs out of work before its kill.
    const RECORDS: u64 = 6000;
    let chaos = ProcessChaos {
        program: direct_log,
        args: vec![
            "--log-dir".into(),
            tmp.path().join("log").into(),
            "--checkpoint-dir".into(),
            checkpoint,
            "--output-dir".into(),
            output.clone().into(),
            "--records".into(),
            RECORDS.to_string().into(),
            "--rate".into(),
            "1000".into(),
            "--batch-ms".into(),
            "100".into(),
            "--max-per-partition".into(),
            "150".into(),
        ],
        logs,
        env,
        ready: "running;".to_owned(),
        ready_within: Duration::from_secs(60),
    };
    let (lives, mut last) = chaos
        .run(&kill9_schedule(seed))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", chaos.logs()));
    assert_eq!(lives.len(), KILLS);
    report("direct_log", seed, &lives);
    // The last life consumes the rest, checks the output against the log itself, and exits.
    let status = last.wait_exit(Duration::from_secs(120)).unwrap_or_else(|| {
        panic!(
            "seed {seed}: the last life did not finish\n{}",
            chaos.logs()
        )
    });
    assert!(
        status.success(),
        "seed {seed}: the last life exited with {status}\n{}",
        chaos.logs()
    );
    // Our own check: every record r-0 .. r-(RECORDS-1) exactly once.
    let batches = read_batches(&output).expect("the output reads");
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for line in batches.values().flatten() {
        *seen.entry(line.clone()).or_default() += 1;
    }
    let expected: Vec<String> = (0..RECORDS).map(|i| format!("r-{i:08}")).collect();
    let missing: Vec<&String> = expected.iter().filter(|r| !seen.contains_key(*r)).collect();
    let twice: Vec<(&String, &u32)> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: {} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        twice.is_empty(),
        "seed {seed}: {} records written twice, e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert_eq!(
        seen.len() as u64,
        RECORDS,
        "seed {seed}: records not in the log"
    );
}

/// The feeder's small vocabulary: every batch holds most of it.
const WORDS: [&str; 12] = [
    "weir",
    "stream",
    "batch",
    "actor",
    "kill",
    "restart",
    "log",
    "offset",
    "checkpoint",
    "exactly",
    "once",
    "river",
];

/// Drops 120 small text files of `WORDS` into `input`, paced over the lives, and returns how
/// many times it wrote each word.
fn spawn_feeder(input: PathBuf, seed: u64) -> std::thread::JoinHandle<BTreeMap<String, u64>> {
    let words = WORDS.iter().map(|w| (*w).to_owned()).collect();
    spawn_feeder_of(input, seed, words, 120, Arc::new(AtomicBool::new(true)))
}

/// Drops small text files of words drawn from `words` into `input`, paced, at least `files`
/// of them and then more until `enough` is set, and returns how many times it wrote each word.
fn spawn_feeder_of(
    input: PathBuf,
    seed: u64,
    words: Vec<String>,
    files: usize,
    enough: Arc<AtomicBool>,
) -> std::thread::JoinHandle<BTreeMap<String, u64>> {
    std::thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0xf11e);
        let mut expected: BTreeMap<String, u64> = BTreeMap::new();
        // Bounded: 20 times the files asked for at most.
        for n in 0..files * 20 {
            if n >= files && enough.load(Ordering::SeqCst) {
                break;
            }
            let mut text = String::new();
            for _ in 0..rng.range(1, 20) {
                for _ in 0..rng.range(1, 8) {
                    let w = &words[rng.range(0, words.len() as u64) as usize];
                    *expected.entry(w.to_owned()).or_default() += 1;
                    text.push_str(w);
                    text.push(' ');
                }
                text.push('\n');
            }
            // Written under a hidden name, fsynced, then renamed into place whole.
            let tmp = input.join(format!(".tmp-{n}"));
            fs::write(&tmp, &text).expect("write an input file");
            fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .expect("fsync an input file");
            fs::rename(&tmp, input.join(format!("{n:04}.txt"))).expect("rename");
            // Pacing of the feeder (files arrive over the lives), not synchronisation.
            std::thread::sleep(Duration::from_millis(rng.range(5, 30)));
        }
        expected
    })
}

#[test]
fn the_file_source_is_exactly_once_across_kill_9() {
    let seed = seed_from_env();
    let word_count = example_binary("weir-examples", "word_count").expect("build word_count");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (input, output, logs) = (
        tmp.path().join("input"),
        tmp.path().join("output"),
        tmp.path().join("logs"),
    );
    fs::create_dir_all(&input).expect("input dir");
    fs::create_dir_all(&logs).expect("logs dir");
    // The feeder drops files while the lives are killed, counting their words itself.
    let feeder = spawn_feeder(input.clone(), seed);
    let chaos = ProcessChaos {
        program: word_count,
        args: vec![
            "--input-dir".into(),
            input.into(),
            "--checkpoint-dir".into(),
            tmp.path().join("checkpoint").into(),
            "--output-dir".into(),
            output.clone().into(),
            "--batch-ms".into(),
            "100".into(),
            "--quiet".into(),
        ],
        logs,
        env: Vec::new(),
        ready: "running;".to_owned(),
        ready_within: Duration::from_secs(60),
    };
    let (lives, last) = chaos
        .run(&kill9_schedule(seed))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", chaos.logs()));
    report("word_count", seed, &lives);
    let expected = feeder.join().expect("the feeder");
    let total: u64 = expected.values().sum();
    // The last life finishes the input. Its output directory is the only sign of progress an
    // outside observer has, so it is read until it covers the input (bounded).
    let sum = |b: &BTreeMap<u64, Vec<String>>| -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for line in b.values().flatten() {
            if let Some((w, n)) = line.split_once('\t')
                && let Ok(n) = n.parse::<u64>()
            {
                *counts.entry(w.to_owned()).or_default() += n;
            }
        }
        counts
    };
    let got = until_covered_then_stop(&output, total, sum, seed, &chaos, last);
    assert_eq!(
        got, expected,
        "seed {seed}: the summed output differs from the input's count"
    );
}

/// `word_count --running` (totals in `update_state_by_key` state) killed with `kill -9` while
/// every checkpoint writes its state as a state file (`WEIR_STATE_INLINE_MAX_BYTES=0`, the
/// incremental-checkpoint path): the kills land at seeded moments of a run that uploads a state
/// file before every checkpoint, so some land between an upload and its checkpoint. The last
/// batch's totals equal an independent count of the input (no state lost or applied twice),
/// and once the run stopped, the store's `state/` holds exactly the files its retained
/// checkpoints reference: no orphan of a killed upload is left.
#[test]
fn running_totals_in_state_files_are_exactly_once_across_kill_9() {
    let seed = seed_from_env();
    let run = RunningTotals::new(&[]);
    let feeder = spawn_feeder(run.input.clone(), seed);
    let chaos = &run.chaos;
    let (lives, last) = chaos
        .run(&kill9_schedule(seed))
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", chaos.logs()));
    report("word_count --running", seed, &lives);
    let expected = feeder.join().expect("the feeder");
    let retained = run.check(&expected, seed, last);
    assert!(
        retained
            .iter()
            .any(|data| data.state_files().next().is_some()),
        "seed {seed}: the totals were in state files"
    );
}

/// `word_count --running --running-with map-with-state` over a vocabulary of 3,000 words:
/// incremental checkpoints write a base state file, then deltas holding only the totals each
/// batch changed (`WEIR_STATE_INLINE_MAX_BYTES=0`). Each life is killed with `kill -9` at a
/// seeded moment 0–40 ms after a new state file appeared in the store — between a delta's
/// upload and its checkpoint, or in the middle of the next — DELTA_KILLS times. The last batch's
/// totals equal an independent count of the input, the store holds no orphan once stopped, and
/// the retained checkpoints hold a chain with deltas.
#[test]
fn running_totals_in_delta_chains_are_exactly_once_across_kill_9_during_uploads() {
    let seed = seed_from_env();
    let run = RunningTotals::new(&["--running-with", "map-with-state"]);
    let vocabulary = (0..3_000).map(|i| format!("w{i:04}")).collect();
    let enough = Arc::new(AtomicBool::new(false));
    let feeder = spawn_feeder_of(
        run.input.clone(),
        seed,
        vocabulary,
        120,
        Arc::clone(&enough),
    );
    let chaos = &run.chaos;
    let state = run.checkpoint.join("checkpoints/state");
    let names = |dir: &Path| -> BTreeSet<String> {
        fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut rng = Rng::new(seed ^ 0xde17a);
    let (lives, last) = chaos
        .run_killing(DELTA_KILLS, |life, _| {
            // Files of the lives before may still be there: wait for one not seen yet.
            let before = names(&state);
            let deadline = Instant::now() + Duration::from_secs(30);
            while names(&state).is_subset(&before) {
                if Instant::now() >= deadline {
                    return Err(ProcessError::NoMoment {
                        life,
                        what: "no new state file within 30 s".to_owned(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // The seeded moment after it (the kill's timing, not synchronisation).
            std::thread::sleep(Duration::from_millis(rng.range(0, 40)));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("seed {seed}: {e}\n{}", chaos.logs()));
    enough.store(true, Ordering::SeqCst);
    report("word_count --running-with map-with-state", seed, &lives);
    let expected = feeder.join().expect("the feeder");
    let retained = run.check(&expected, seed, last);
    assert!(
        retained.iter().any(|data| data
            .operator_state
            .iter()
            .any(|op| matches!(&op.data, StateData::Chain(files) if files.len() > 1))),
        "seed {seed}: the totals were checkpointed as chains with deltas"
    );
}

/// `word_count --running` with every checkpoint's state in state files
/// (`WEIR_STATE_INLINE_MAX_BYTES=0`), 3 checkpoints retained, in a temporary directory.
struct RunningTotals {
    /// Holds the directories below.
    _tmp: tempfile::TempDir,
    input: PathBuf,
    output: PathBuf,
    checkpoint: PathBuf,
    chaos: ProcessChaos,
}

impl RunningTotals {
    /// With `extra` arguments after `--running`.
    fn new(extra: &[&str]) -> RunningTotals {
        let word_count = example_binary("weir-examples", "word_count").expect("build word_count");
        let tmp = tempfile::tempdir().expect("tempdir");
        let (input, output, logs, checkpoint) = (
            tmp.path().join("input"),
            tmp.path().join("output"),
            tmp.path().join("logs"),
            tmp.path().join("checkpoint"),
        );
        fs::create_dir_all(&input).expect("input dir");
        fs::create_dir_all(&logs).expect("logs dir");
        let mut args: Vec<std::ffi::OsString> = vec![
            "--input-dir".into(),
            input.clone().into(),
            "--checkpoint-dir".into(),
            checkpoint.clone().into(),
            "--output-dir".into(),
            output.clone().into(),
            "--batch-ms".into(),
            "100".into(),
            "--running".into(),
            "--quiet".into(),
        ];
        args.extend(extra.iter().map(Into::into));
        let chaos = ProcessChaos {
            program: word_count,
            args,
            logs,
            env: vec![
                ("WEIR_STATE_INLINE_MAX_BYTES".into(), "0".into()),
                ("WEIR_CHECKPOINTS_RETAINED".into(), "3".into()),
            ],
            ready: "running;".to_owned(),
            ready_within: Duration::from_secs(60),
        };
        RunningTotals {
            _tmp: tmp,
            input,
            output,
            checkpoint,
            chaos,
        }
    }

    /// Once the last life's newest batch of running totals covers the input, stops it and
    /// checks the totals equal `expected` and that the store's `state/` holds exactly the
    /// files its retained checkpoints reference (no orphan of a killed upload); returns those
    /// checkpoints.
    fn check(
        &self,
        expected: &BTreeMap<String, u64>,
        seed: u64,
        last: Running,
    ) -> Vec<CheckpointData> {
        let (output, checkpoint, chaos) = (&self.output, &self.checkpoint, &self.chaos);
        let total: u64 = expected.values().sum();
        // The newest batch's running totals, once they cover the input (bounded).
        let latest = |b: &BTreeMap<u64, Vec<String>>| -> BTreeMap<String, u64> {
            let mut totals = BTreeMap::new();
            for line in b.values().next_back().into_iter().flatten() {
                if let Some((w, n)) = line.split_once('\t')
                    && let Ok(n) = n.parse::<u64>()
                {
                    totals.insert(w.to_owned(), n);
                }
            }
            totals
        };
        let got = until_covered_then_stop(output, total, latest, seed, chaos, last);
        assert_eq!(
            &got, expected,
            "seed {seed}: the running totals differ from the input's count"
        );
        // No orphan: the state files present are exactly those the retained checkpoints name.
        let runtime = tokio::runtime::Runtime::new().expect("a runtime");
        let retained = runtime.block_on(async {
            let store = weir_actors::checkpoint::CheckpointStore::open(
                weir_actors::Storage::local(checkpoint.join("checkpoints")),
                weir_actors::checkpoint::CheckpointConfig::default().with_retain(3),
            )
            .await
            .expect("open the checkpoint store");
            let mut retained = Vec::new();
            for info in store.list().await.expect("list") {
                retained.push(store.read(info.id).await.expect("read a checkpoint"));
            }
            retained
        });
        let referenced: BTreeSet<String> = retained
            .iter()
            .flat_map(|data| data.state_files().map(|f| f.name.clone()))
            .collect();
        let present: BTreeSet<String> = fs::read_dir(checkpoint.join("checkpoints/state"))
            .expect("the state directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(present, referenced, "seed {seed}: orphaned state files");
        retained
    }
}
