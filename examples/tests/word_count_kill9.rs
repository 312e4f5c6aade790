//! Process-level exactly-once: the `word_count` binary is killed with `kill -9` several times
//! at random moments while text files arrive, started again with the same arguments each
//! time, and left to finish the input. The per-batch output directories, summed, must equal
//! an independent count of every input word — no word lost, none counted twice — and every
//! batch directory must be complete and present once.
//!
//! The kill moments come from a seed printed at the start (`WEIR_KILL9_SEED=<seed>` repeats a
//! run).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use weir::sinks::batch_dir::MARKER_FILE;
use weir_examples::generator::{TextGenerator, drop_file};
use weir_examples::output::{parse_count, read_output};

const FILES: usize = 80;
const KILLS: usize = 4;
const BATCH_MS: u64 = 150;

struct Dirs {
    input: PathBuf,
    checkpoint: PathBuf,
    output: PathBuf,
    logs: PathBuf,
}

fn spawn(word_count: &str, dirs: &Dirs, run: usize) -> Child {
    let log = |what: &str| File::create(dirs.logs.join(format!("run-{run}.{what}"))).unwrap();
    Command::new(word_count)
        .arg("--input-dir")
        .arg(&dirs.input)
        .arg("--checkpoint-dir")
        .arg(&dirs.checkpoint)
        .arg("--output-dir")
        .arg(&dirs.output)
        .args(["--batch-ms", &BATCH_MS.to_string(), "--quiet"])
        .stdin(Stdio::null())
        .stdout(log("stdout"))
        .stderr(log("stderr"))
        .spawn()
        .unwrap()
}

fn logs_of(dirs: &Dirs) -> String {
    let mut names: Vec<PathBuf> = fs::read_dir(&dirs.logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            format!(
                "== {}\n{}",
                p.display(),
                fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect()
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Sums the output so far; `None` while it cannot be read whole (a batch being committed).
fn summed(output: &Path) -> Option<BTreeMap<String, u64>> {
    read_output(output).ok()?.summed_counts().ok()
}

#[test]
fn word_count_is_exactly_once_across_kill_9() {
    let word_count = env!("CARGO_BIN_EXE_word_count");
    let seed = std::env::var("WEIR_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (set WEIR_KILL9_SEED={seed} to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs {
        input: tmp.path().join("input"),
        checkpoint: tmp.path().join("checkpoint"),
        output: tmp.path().join("output"),
        logs: tmp.path().join("logs"),
    };
    fs::create_dir_all(&dirs.input).unwrap();
    fs::create_dir_all(&dirs.logs).unwrap();

    // The feeder drops FILES files by rename at random gaps, counting their words itself.
    let feeder = {
        let input = dirs.input.clone();
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        std::thread::spawn(move || {
            let mut generator = TextGenerator::new(seed);
            let mut expected: BTreeMap<String, u64> = BTreeMap::new();
            for n in 0..FILES {
                let text = generator.text(rng.usize(1..30));
                for word in text.split_whitespace() {
                    *expected.entry(word.to_owned()).or_insert(0) += 1;
                }
                // Names in an order unrelated to arrival: the source must not depend on it.
                let name = format!("{:04}-{n}.txt", rng.u32(..10_000));
                drop_file(&input, &name, &text).unwrap();
                std::thread::sleep(Duration::from_millis(rng.u64(5..40)));
            }
            expected
        })
    };

    for run in 0..KILLS {
        let mut child = spawn(word_count, &dirs, run);
        // The fault: kill -9 at a random moment of the process's life.
        std::thread::sleep(Duration::from_millis(rng.u64(100..800)));
        let early = child.try_wait().unwrap();
        assert!(
            early.is_none(),
            "run {run} exited by itself ({early:?}) before it was killed:\n{}",
            logs_of(&dirs)
        );
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "run {run} ended by SIGKILL, not {status:?}"
        );
        println!("run {run}: killed");
    }
    let expected = feeder.join().unwrap();
    let total: u64 = expected.values().sum();

    // The last run finishes the input: poll until it runs (so SIGINT stops it gracefully)
    // and the output covers every input word.
    let mut last = spawn(word_count, &dirs, KILLS);
    let last_stdout = dirs.logs.join(format!("run-{KILLS}.stdout"));
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let got = summed(&dirs.output).unwrap_or_default();
        let running = fs::read_to_string(&last_stdout)
            .unwrap_or_default()
            .contains("running;");
        if running && got.values().sum::<u64>() >= total {
            break;
        }
        assert!(
            last.try_wait().unwrap().is_none(),
            "the last run exited early:\n{}",
            logs_of(&dirs)
        );
        assert!(
            Instant::now() < deadline,
            "the output did not cover the input in time ({} of {total} words):\n{}",
            got.values().sum::<u64>(),
            logs_of(&dirs)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // A graceful stop (Ctrl-C) exits 0.
    let pid = last.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut last, Duration::from_secs(20)).unwrap_or_else(|| {
        let _ = last.kill();
        panic!("the last run did not stop on SIGINT:\n{}", logs_of(&dirs))
    });
    assert!(
        status.success(),
        "the last run exited with {status:?}:\n{}",
        logs_of(&dirs)
    );
    let stdout = fs::read_to_string(&last_stdout).unwrap();
    assert!(
        stdout.contains("continuing from checkpoint"),
        "the last run restored from a checkpoint:\n{stdout}"
    );

    let output = read_output(&dirs.output).unwrap();
    assert!(
        output.temps.is_empty(),
        "temp dirs left: {:?}",
        output.temps
    );
    assert!(
        output.strays.is_empty(),
        "stray entries: {:?}",
        output.strays
    );
    assert!(!output.batches.is_empty());
    let mut times = output.batches.clone();
    times.dedup();
    assert_eq!(times, output.batches, "every batch time appears once");
    // Every batch directory is complete: the same part files, each line `word<TAB>count`,
    // each word once per batch, every part sorted.
    let parts_of = |time: u64| -> Vec<String> {
        let mut parts: Vec<String> = fs::read_dir(dirs.output.join(format!("batch-{time}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        parts.sort();
        parts
    };
    let first_parts = parts_of(output.batches[0]);
    for (time, lines) in &output.lines {
        assert_eq!(
            parts_of(*time),
            first_parts,
            "batch {time} has every part file"
        );
        let mut words: Vec<&str> = Vec::new();
        for line in lines {
            let (word, count) =
                parse_count(line).unwrap_or_else(|| panic!("batch {time}: bad line {line:?}"));
            assert!(count > 0);
            words.push(word);
        }
        let n = words.len();
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), n, "batch {time} counts each word once");
        // Every batch holds the same part files and its commit marker, which is not text.
        for part in first_parts.iter().filter(|p| *p != MARKER_FILE) {
            let text =
                fs::read_to_string(dirs.output.join(format!("batch-{time}")).join(part)).unwrap();
            let part_lines: Vec<&str> = text.lines().collect();
            assert!(part_lines.is_sorted(), "batch {time} {part} is sorted");
        }
    }
    let got = output.summed_counts().unwrap();
    assert_eq!(
        got, expected,
        "the summed output equals the independent count of the input (seed {seed})"
    );
    println!(
        "{} words in {FILES} files, {} batches, {KILLS} kills: exactly once",
        total,
        output.batches.len()
    );
}
