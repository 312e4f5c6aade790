//! The same command started again beside a running job, as a clumsy operator would: every
//! second process exits at once with one sentence naming the running one's pid, and the running
//! job is not disturbed — its checkpoints keep being written, its output stays exactly once.
//!
//! The bug this guards: a second process removed the first one's checkpoint temp files (the
//! store's cleanup at open) and its sinks' batches in progress, replaced the control token and
//! appended to the event log, all before the WAL lock stopped it; the running job's checkpoint
//! writes then failed. Now `get_or_create` (and `Engine::start`) take one exclusive lock on the
//! checkpoint directory before touching anything.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_examples::generator::{TextGenerator, drop_file};
use weir_examples::output::{parse_count, read_output};

const LIMIT: Duration = Duration::from_secs(60);
const SECOND_TRIES: usize = 10;

fn word_count(tmp: &Path, stdout: Stdio, stderr: Stdio) -> Child {
    Command::new(env!("CARGO_BIN_EXE_word_count"))
        .args(["--input-dir", &tmp.join("in").display().to_string()])
        .args(["--checkpoint-dir", &tmp.join("ck").display().to_string()])
        .args(["--output-dir", &tmp.join("out").display().to_string()])
        .args(["--batch-ms", "100"])
        .current_dir(tmp)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap()
}

/// The lines of `child`'s stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for a line for which `f` holds.
fn wait_for(lines: &mpsc::Receiver<String>, what: &str, f: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + LIMIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if f(&line) {
            return;
        }
    }
}

fn is_batch_with_words(line: &str) -> bool {
    line.starts_with("batch ") && !line.contains(": 0 words")
}

#[test]
fn the_same_job_started_again_beside_a_running_one_exits_naming_it_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let mut expected = BTreeMap::new();
    let mut generator = TextGenerator::new(7);
    let mut drop = |n: usize, expected: &mut BTreeMap<String, u64>| {
        let text = generator.text(20);
        for word in text.split_whitespace() {
            *expected.entry(word.to_owned()).or_insert(0) += 1;
        }
        drop_file(&input, &format!("f{n:03}.txt"), &text).unwrap();
    };
    for n in 0..10 {
        drop(n, &mut expected);
    }
    let mut first = word_count(tmp.path(), Stdio::piped(), Stdio::null());
    let lines = lines_of(&mut first);
    wait_for(&lines, "the first batch with words", is_batch_with_words);

    // The same command, again and again, while the first runs and gets more input.
    for attempt in 0..SECOND_TRIES {
        drop(10 + attempt, &mut expected);
        let err_path = tmp.path().join(format!("second-{attempt}.stderr"));
        let mut second = word_count(
            tmp.path(),
            Stdio::null(),
            File::create(&err_path).unwrap().into(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = second.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = second.kill();
                panic!(
                    "a second word_count on the same checkpoint directory was still running \
                     after 20 s; its stderr:\n{}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = std::fs::read_to_string(&err_path).unwrap();
        assert_eq!(status.code(), Some(1), "{stderr}");
        let sentence = format!("is in use by another weir process (pid {})", first.id());
        assert!(
            stderr.contains(&sentence),
            "the second process did not name the running one: {stderr}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one sentence: {stderr}");
    }

    // The first job goes on: more batches, and everything counted exactly once.
    wait_for(
        &lines,
        "a batch after the second processes",
        is_batch_with_words,
    );
    let deadline = Instant::now() + LIMIT;
    let counted = loop {
        let output = read_output(&tmp.path().join("out")).unwrap();
        let mut counted: BTreeMap<String, u64> = BTreeMap::new();
        for line in output.lines.values().flatten() {
            let (word, n) = parse_count(line).unwrap();
            *counted.entry(word.to_owned()).or_insert(0) += n;
        }
        if counted == expected || Instant::now() > deadline {
            break counted;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // SIGINT: a graceful stop.
    Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .unwrap();
    let status = first.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        counted, expected,
        "every word of the input counted exactly once"
    );
    let (events, _) = weir_actors::read_event_log(&tmp.path().join("ck").join("events")).unwrap();
    let failed: Vec<String> = events
        .iter()
        .filter_map(|r| match &r.event {
            weir_actors::Event::CheckpointFailed { reason, .. } => Some(reason.clone()),
            weir_actors::Event::ActorFailed { actor, reason } => Some(format!("{actor}: {reason}")),
            _ => None,
        })
        .collect();
    assert!(
        failed.is_empty(),
        "the running job was disturbed: {failed:?}"
    );
}
