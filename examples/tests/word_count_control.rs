//! `word_count --control-addr` end to end with the `weir` tool: `weir events --addr --json`
//! follows the live stream, `weir kill receiver-0` without the token is refused, and with it
//! the receiver's failure and its restart appear in the stream. `weir savepoint --stop`
//! against a running `stateful_word_count`, restored by another with `--restore-from`.
//!
//! The `weir` binary (package `weir`) is looked up next to `word_count` in the target
//! directory; when this package's tests run alone it is built first with the running cargo.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_examples::text_server::TextServer;

mod common;
use common::{Reaped, free_addr, weir_binary};

const WAIT: Duration = Duration::from_secs(60);

/// `weir events --addr A --json`, its lines arriving on a channel.
fn follow(weir: &Path, addr: SocketAddr) -> (Reaped, mpsc::Receiver<serde_json::Value>) {
    let mut child = Command::new(weir)
        .args(["events", "--addr", &addr.to_string(), "--json"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let value: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{line}` is not JSON: {e}"));
            if tx.send(value).is_err() {
                return;
            }
        }
    });
    (Reaped(child), rx)
}

/// Reads events until one matches, failing after `WAIT`.
fn until(
    events: &mpsc::Receiver<serde_json::Value>,
    what: &str,
    f: impl Fn(&serde_json::Value) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = events
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if f(&event) {
            return;
        }
    }
}

fn kind_and_actor(event: &serde_json::Value) -> (&str, &str) {
    (
        event["kind"].as_str().unwrap_or(""),
        event["actor"].as_str().unwrap_or(""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_follows_word_count_and_kills_its_receiver_only_with_the_token() {
    let weir = weir_binary();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let server = TextServer::start(20, Duration::from_millis(10), 7)
        .await
        .unwrap();
    let control = free_addr();
    let word_count = Reaped(
        Command::new(env!("CARGO_BIN_EXE_word_count"))
            .args([
                "--socket",
                &server.addr().to_string(),
                "--control-addr",
                &control.to_string(),
                "--checkpoint-dir",
                checkpoint.to_str().unwrap(),
                "--output-dir",
                dir.path().join("output").to_str().unwrap(),
                "--batch-ms",
                "200",
                "--quiet",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The endpoint is up once it accepts connections (the token is written before it binds).
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(control).is_err() {
        assert!(
            Instant::now() < deadline,
            "the control endpoint never came up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = checkpoint.join("control-token");
    assert!(token.exists(), "no token at {}", token.display());

    let (follower, events) = follow(&weir, control);
    until(&events, "a completed batch", |e| {
        kind_and_actor(e).0 == "batch_completed"
    });

    let kill = |with_token: bool| {
        let mut command = Command::new(&weir);
        command
            .args(["kill", "receiver-0", "--addr", &control.to_string()])
            .env("NO_COLOR", "1");
        if with_token {
            command.arg("--token-file").arg(&token);
        }
        command.output().unwrap()
    };
    let refused = kill(false);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a kill without the token is refused"
    );
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(said.contains("token"), "the refusal says why: {said}");

    let done = kill(true);
    assert!(
        done.status.success(),
        "kill with the token: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    until(&events, "receiver-0's failure", |e| {
        kind_and_actor(e) == ("actor_failed", "receiver-0")
    });
    until(&events, "receiver-0's restart", |e| {
        kind_and_actor(e) == ("actor_restarted", "receiver-0")
    });
    until(&events, "receiver-0 started again", |e| {
        kind_and_actor(e) == ("actor_started", "receiver-0")
    });
    drop(follower);
    drop(word_count);
}

/// `--control-addr` off loopback is refused at start unless `--control-allow-remote` is given
/// (nothing is bound: the check comes first); with it the engine goes on to listen there; and
/// `--control-allow-remote` alone is a usage error.
#[test]
fn an_address_off_loopback_needs_control_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_word_count"))
            .args(["--checkpoint-dir", dir.path().join("ck").to_str().unwrap()])
            .args(["--output-dir", dir.path().join("out").to_str().unwrap()])
            .args(["--input-dir", dir.path().join("in").to_str().unwrap()])
            .args(["--max-batches", "1", "--quiet"])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let refused = run(&["--control-addr", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("control_allow_remote"),
        "says what allows it: {said}"
    );
    assert!(!dir.path().join("ck").join("control-token").exists());

    // Allowed, the start gets as far as listening: on an address of TEST-NET-1 (RFC 5737),
    // which no interface of this machine has, so nothing is ever bound.
    let allowed = run(&["--control-addr", "192.0.2.1:0", "--control-allow-remote"]);
    assert_eq!(allowed.status.code(), Some(1), "{allowed:?}");
    let said = String::from_utf8_lossy(&allowed.stderr);
    assert!(said.contains("could not listen on 192.0.2.1"), "{said}");

    let usage = run(&["--control-allow-remote"]);
    assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--control-addr"));
}

/// The "words so far" of a `stateful_word_count` batch line, if `line` is one.
fn words_so_far(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once(": ")?;
    rest.split_once(" words so far")?.0.parse().ok()
}

/// `stateful_word_count` in `checkpoint` with `extra` flags and `env`, its stdout lines on a
/// channel.
fn stateful(
    checkpoint: &Path,
    extra: &[&str],
    env: &[(&str, String)],
) -> (Reaped, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stateful_word_count"))
        .args(["--checkpoint-dir", checkpoint.to_str().unwrap()])
        .args(["--batch-ms", "200"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Reaped(child), rx)
}

/// Reads lines until one holds "words so far" satisfying `f`; returns that count.
fn until_words(lines: &mpsc::Receiver<String>, what: &str, f: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
        if let Some(n) = words_so_far(&line)
            && f(n)
        {
            return n;
        }
    }
}

/// `weir savepoint --stop` against a running `stateful_word_count` process: the savepoint is
/// written, the process stops by itself, and a new job in another directory started with
/// `--restore-from` continues from the savepoint's totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_savepoint_stops_stateful_word_count_and_a_new_job_restores_from_it() {
    let weir = weir_binary();
    let dir = tempfile::tempdir().unwrap();
    let (job1, job2) = (dir.path().join("job1"), dir.path().join("job2"));
    let savepoint = dir.path().join("savepoint");
    let control = free_addr();
    let (mut first, lines) = stateful(&job1, &[], &[("WEIR_CONTROL_ADDR", control.to_string())]);
    // A few batches of totals before the savepoint.
    let one = until_words(&lines, "a first batch", |n| n > 0);
    let before = until_words(&lines, "several batches", |n| n >= 4 * one);
    // One batch more: batches run one at a time, so the one that printed `before` has
    // completed, and the savepoint's checkpoint holds its state (not only lists it as
    // pending: a pending batch's received records stay in this job's WAL).
    until_words(&lines, "one batch more", |n| n >= before);

    let token = job1.join("control-token");
    let run = |extra: &[&str]| {
        Command::new(&weir)
            .args(["savepoint", "--addr", &control.to_string()])
            .args(["--path", savepoint.to_str().unwrap()])
            .args(extra)
            .env("NO_COLOR", "1")
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no token"));
    let done = run(&["--token-file", token.to_str().unwrap(), "--stop"]);
    let said = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{done:?}");
    assert!(
        said.contains("savepoint written to") && said.contains("at batch time"),
        "{said}"
    );
    assert!(said.contains("stops gracefully"), "{said}");
    assert!(savepoint.join("savepoint.json").is_file());
    // The process stops by itself: its stdout ends, then it exits.
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(_) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("stateful_word_count did not stop"),
        }
    }
    let status = first.0.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // Another directory, restored from the savepoint: the totals go on from there.
    let (_second, lines) = stateful(
        &job2,
        &[
            "--restore-from",
            savepoint.to_str().unwrap(),
            "--max-batches",
            "2",
        ],
        &[],
    );
    let restored = until_words(&lines, "a batch of the restored job", |n| n > 0);
    assert!(
        restored >= before,
        "the restored job starts from the savepoint's totals ({before} words or more), \
         not from zero: {restored}"
    );
}
