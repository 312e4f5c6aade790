//! Every example runs, produces its output and exits as it says — briefly, each bounded by a
//! deadline, each in its own temp directory.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_examples::generator::{TextGenerator, WORDS, drop_file};
use weir_examples::output::read_output;

const LIMIT: Duration = Duration::from_secs(60);

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `bin` with `args` in `cwd` to its end (killed, and the test failed, after `LIMIT`).
fn run(bin: &str, cwd: &Path, args: &[&str]) -> Ran {
    let out = cwd.join(format!("{}.stdout", fastrand::u64(..)));
    let err = cwd.join(format!("{}.stderr", fastrand::u64(..)));
    let mut child = Command::new(bin)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "{bin} {args:?} did not end within {LIMIT:?}:\n{}\n{}",
                fs::read_to_string(&out).unwrap_or_default(),
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ran = Ran {
        status,
        stdout: fs::read_to_string(&out).unwrap(),
        stderr: fs::read_to_string(&err).unwrap(),
    };
    fs::remove_file(out).unwrap();
    fs::remove_file(err).unwrap();
    ran
}

fn ok(bin: &str, cwd: &Path, args: &[&str]) -> Ran {
    let ran = run(bin, cwd, args);
    assert!(
        ran.status.success(),
        "{bin} {args:?} exited with {:?}:\n{}\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    ran
}

fn count(text: &str, into: &mut BTreeMap<String, u64>) {
    for word in text.split_whitespace() {
        *into.entry(word.to_owned()).or_insert(0) += 1;
    }
}

#[test]
fn word_count_demo_counts_the_generated_files() {
    let cwd = tempfile::tempdir().unwrap();
    let ran = ok(
        env!("CARGO_BIN_EXE_word_count"),
        cwd.path(),
        &["--batch-ms", "200", "--max-batches", "6"],
    );
    assert!(ran.stdout.contains("demo"), "{}", ran.stdout);
    assert!(ran.stdout.contains("weir events --dir"), "{}", ran.stdout);
    let output = read_output(&cwd.path().join("weir-data/output")).unwrap();
    assert!(!output.batches.is_empty(), "batch directories were written");
    assert!(output.temps.is_empty() && output.strays.is_empty());
    let counted = output.summed_counts().unwrap();
    assert!(counted.keys().all(|w| WORDS.contains(&w.as_str())));
    // Never more than the input holds (files written after the last batch wait for the
    // next run).
    let mut input = BTreeMap::new();
    for entry in fs::read_dir(cwd.path().join("weir-data/input")).unwrap() {
        count(
            &fs::read_to_string(entry.unwrap().path()).unwrap(),
            &mut input,
        );
    }
    assert!(counted.values().sum::<u64>() > 0);
    for (word, n) in &counted {
        assert!(
            *n <= input[word],
            "{word}: counted {n}, the input holds {}",
            input[word]
        );
    }
}

#[test]
fn word_count_running_totals_match_the_input_and_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let mut expected = BTreeMap::new();
    let mut generator = TextGenerator::new(42);
    for n in 0..20 {
        let text = generator.text(10);
        count(&text, &mut expected);
        drop_file(&input, &format!("f{n}.txt"), &text).unwrap();
    }
    let args = |max: &'static str| {
        vec![
            "--input-dir".to_owned(),
            input.display().to_string(),
            "--checkpoint-dir".to_owned(),
            tmp.path().join("ck").display().to_string(),
            "--output-dir".to_owned(),
            tmp.path().join("out").display().to_string(),
            "--batch-ms".to_owned(),
            "100".to_owned(),
            "--running".to_owned(),
            "--max-batches".to_owned(),
            max.to_owned(),
        ]
    };
    let bin = env!("CARGO_BIN_EXE_word_count");
    let first = args("3");
    ok(
        bin,
        tmp.path(),
        &first.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let totals = |tmp: &Path| {
        let output = read_output(&tmp.join("out")).unwrap();
        let last = output.batches.last().copied().unwrap();
        let mut totals = BTreeMap::new();
        for line in &output.lines[&last] {
            let (w, n) = weir_examples::output::parse_count(line).unwrap();
            totals.insert(w.to_owned(), n);
        }
        (output.batches.len(), totals)
    };
    let (batches, after_first) = totals(tmp.path());
    assert_eq!(
        after_first, expected,
        "the running totals are the input's counts"
    );

    // More input, a restart: the totals go on from the checkpointed state.
    for n in 20..25 {
        let text = generator.text(10);
        count(&text, &mut expected);
        drop_file(&input, &format!("f{n}.txt"), &text).unwrap();
    }
    let second = args("3");
    let ran = ok(
        bin,
        tmp.path(),
        &second.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(
        ran.stdout.contains("continuing from checkpoint"),
        "{}",
        ran.stdout
    );
    let (more, after_second) = totals(tmp.path());
    assert!(more > batches);
    assert_eq!(after_second, expected, "totals continue across the restart");
}

#[test]
fn word_count_refuses_a_checkpoint_that_does_not_fit_with_one_sentence_and_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_word_count");
    let input = tmp.path().join("in");
    drop_file(&input, "a.txt", "one two two\n").unwrap();
    let input = input.display().to_string();
    let common = [
        "--input-dir",
        input.as_str(),
        "--batch-ms",
        "100",
        "--quiet",
    ];
    let mut first = common.to_vec();
    first.extend(["--running", "--max-batches", "2"]);
    ok(bin, tmp.path(), &first);
    // The same checkpoint, but the running-totals state no longer has an operator:
    // `get_or_create` refuses it at once, naming the operator (no driver is started to fail).
    let mut second = common.to_vec();
    second.extend(["--max-batches", "2"]);
    let ran = run(bin, tmp.path(), &second);
    assert_eq!(ran.status.code(), Some(1), "{}\n{}", ran.stdout, ran.stderr);
    // The program's own line (tracing lines start with a timestamp).
    let last = ran
        .stderr
        .lines()
        .rfind(|l| l.starts_with("word_count: "))
        .unwrap_or_default();
    assert!(
        last.starts_with("word_count: ")
            && last.contains("does not fit")
            && last.contains("\"running-totals\""),
        "the last line says why: {last}"
    );
}

#[test]
fn stateful_word_count_totals_grow_and_continue_after_a_restart() {
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_stateful_word_count");
    let totals = |stdout: &str| -> Vec<u64> {
        stdout
            .lines()
            .filter_map(|l| {
                l.split_once(": ")?
                    .1
                    .split_once(" words so far")?
                    .0
                    .parse()
                    .ok()
            })
            .collect()
    };
    let first = ok(
        bin,
        cwd.path(),
        &["--batch-ms", "150", "--max-batches", "5"],
    );
    let t1 = totals(&first.stdout);
    assert!(
        !t1.is_empty(),
        "batches printed their totals:\n{}",
        first.stdout
    );
    assert!(t1.is_sorted(), "running totals never shrink: {t1:?}");
    let before = *t1.last().unwrap();
    assert!(before > 0);
    let second = ok(
        bin,
        cwd.path(),
        &["--batch-ms", "150", "--max-batches", "2"],
    );
    assert!(
        second.stdout.contains("restoring the totals"),
        "{}",
        second.stdout
    );
    let t2 = totals(&second.stdout);
    assert!(
        t2.first().is_some_and(|t| *t >= before),
        "the totals start from the checkpointed {before}: {t2:?}"
    );
}

#[test]
fn direct_log_reads_the_log_exactly_once_and_commits_offsets() {
    let cwd = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_direct_log");
    let first = ok(
        bin,
        cwd.path(),
        &["--batch-ms", "100", "--records", "600", "--rate", "3000"],
    );
    assert!(
        first.stdout.contains("committed back to the log"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("600 records in the log, 600 in"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("exactly once"), "{}", first.stdout);
    // A second run appends more and reads only the new records.
    let second = ok(
        bin,
        cwd.path(),
        &[
            "--batch-ms",
            "100",
            "--records",
            "900",
            "--rate",
            "3000",
            "--max-per-partition",
            "40",
        ],
    );
    assert!(
        second.stdout.contains("continuing from checkpoint"),
        "{}",
        second.stdout
    );
    assert!(
        second.stdout.contains("900 records in the log, 900 in"),
        "{}",
        second.stdout
    );
    assert!(
        !second.stdout.contains(" p0:0.."),
        "the second run does not read partition 0 from the start again:\n{}",
        second.stdout
    );
}

#[test]
fn embedding_serves_stats_alerts_on_a_restart_and_stops() {
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_embedding"))
        .args([
            "--batch-ms",
            "150",
            "--chaos-after",
            "2",
            "--max-batches",
            "8",
        ])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + LIMIT;
    let next = || {
        lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .ok()
    };
    let mut seen = Vec::new();
    let addr = loop {
        let line = next().expect("the stats address is printed");
        seen.push(line.clone());
        if let Some(addr) = line.strip_prefix("embedding: stats on ") {
            break addr.to_owned();
        }
    };
    let mut stats = String::new();
    TcpStream::connect(&addr)
        .unwrap()
        .read_to_string(&mut stats)
        .unwrap();
    assert!(stats.starts_with("batches_completed="), "{stats}");
    while let Some(line) = next() {
        seen.push(line);
    }
    let status = child.wait().unwrap();
    let all = seen.join("\n");
    assert!(status.success(), "{status:?}\n{all}");
    assert!(all.contains("chaos: killing executor-0"), "{all}");
    assert!(all.contains("alert: executor-0 failed: killed"), "{all}");
    assert!(all.contains("alert: executor-0 restarts in"), "{all}");
    assert!(
        all.contains("embedding: stopped; final stats: batches_completed=8"),
        "{all}"
    );
}

#[test]
fn embedding_with_a_failing_output_exits_non_zero_with_the_give_up() {
    let cwd = tempfile::tempdir().unwrap();
    let ran = run(
        env!("CARGO_BIN_EXE_embedding"),
        cwd.path(),
        &["--batch-ms", "100", "--fail"],
    );
    assert_eq!(ran.status.code(), Some(1), "{}\n{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.contains("alert: root gave up on driver"),
        "{}",
        ran.stdout
    );
    // The program's own line (tracing lines start with a timestamp).
    let last = ran
        .stderr
        .lines()
        .rfind(|l| l.starts_with("embedding: "))
        .unwrap_or_default();
    assert!(
        last.starts_with("embedding: driver failed") && last.contains("--fail"),
        "the last line names the actor and the cause: {last}"
    );
}

#[test]
fn word_count_counts_what_a_socket_sends() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let text = TextGenerator::new(9).text(50);
    let mut expected = BTreeMap::new();
    count(&text, &mut expected);
    let (done, finished) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        use std::io::Write;
        let (mut socket, _) = listener.accept().unwrap();
        socket.write_all(text.as_bytes()).unwrap();
        // Keep the connection open until the test is done.
        let _ = finished.recv();
    });
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_word_count"))
        .args(["--socket", &addr, "--batch-ms", "100", "--quiet"])
        .arg("--checkpoint-dir")
        .arg(tmp.path().join("ck"))
        .arg("--output-dir")
        .arg(&out)
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    let counted = loop {
        let counted = read_output(&out)
            .ok()
            .and_then(|o| o.summed_counts().ok())
            .unwrap_or_default();
        if counted.values().sum::<u64>() >= expected.values().sum::<u64>() {
            break counted;
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            let _ = child.kill();
            panic!("the socket's words were not counted in time: {counted:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(counted, expected);
    child.kill().unwrap();
    child.wait().unwrap();
    done.send(()).unwrap();
    server.join().unwrap();
}
