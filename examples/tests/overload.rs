//! Issue 19, item 5: input that outruns processing, with the receiver WAL on and off.
//!
//! `word_count --socket` is fed by a sender that writes as fast as TCP lets it for
//! [`FEED`] — far more than the debug build can count — and then closes. Throughout, the
//! process's resident memory is sampled. The test requires that
//!
//! * resident memory stays under [`BOUND`]: the block-store budget ([`BUDGET`], set through
//!   `WEIR_BLOCK_STORE_BYTES`) plus a constant, however long the backlog. With the WAL off the
//!   store holds the only copy of each block and admits no more once full. With it on the
//!   backlog lives in the WAL, and each batch takes at most `receiver_batch_max_bytes`
//!   ([`BATCH_CAP`] here) of it: before that cap a batch generated late took every
//!   unallocated block, and memory grew with the backlog (240 MiB after 32 M words);
//! * the sender was pushed back over TCP: its writes blocked (a receiver that read
//!   everything into memory would never block it);
//! * nothing is lost: after the sender closes, the output counts every word it sent, exactly
//!   once.
//!
//! A memory bound, not a timing: [`FEED`] only bounds how long the test runs.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Reaped;
use weir_examples::output::read_output;

/// The block store's budget.
const BUDGET: u64 = 8 << 20;
/// The most bytes of received blocks one batch takes (`WEIR_RECEIVER_BATCH_MAX_BYTES`).
const BATCH_CAP: u64 = 8 << 20;
/// What resident memory may reach: the budget and a constant (the program, its runtime, the
/// batches being counted and their output).
const BOUND: u64 = BUDGET + (192 << 20);
/// How long the sender sends.
const FEED: Duration = Duration::from_secs(12);
/// How long the output may take to catch up once the sender is done.
const PATIENCE: Duration = Duration::from_secs(180);
/// One write of the sender: lines of the words below.
const WORDS: [&str; 8] = [
    "river", "weir", "flood", "bank", "stream", "current", "eddy", "delta",
];

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// The total of the counts in every committed batch under `output`.
fn counted(output: &Path) -> u64 {
    read_output(output)
        .and_then(|out| out.summed_counts())
        .map(|sums| sums.values().sum())
        .unwrap_or(0)
}

fn overload(wal: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let output = tmp.path().join("output");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_word_count"));
    command
        .arg("--socket")
        .arg(addr.to_string())
        .arg("--checkpoint-dir")
        .arg(tmp.path().join("checkpoint"))
        .arg("--output-dir")
        .arg(&output)
        .arg("--batch-ms")
        .arg("500")
        .arg("--quiet")
        .env("WEIR_BLOCK_STORE_BYTES", BUDGET.to_string())
        .env("WEIR_RECEIVER_BATCH_MAX_BYTES", BATCH_CAP.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if !wal {
        command.arg("--no-receiver-wal");
    }
    let child = Reaped(command.spawn().unwrap());
    let pid = child.0.id();
    let (mut conn, _) = listener.accept().unwrap();

    // The sender: whole lines, as fast as the socket takes them, for FEED.
    let line: String = WORDS.join(" ") + "\n";
    let chunk = line.repeat(8192);
    let words_per_chunk = (WORDS.len() * 8192) as u64;
    let blocked = Arc::new(AtomicU64::new(0));
    let sent_words = Arc::new(AtomicU64::new(0));
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (blocked, sent_words, sending) = (
            Arc::clone(&blocked),
            Arc::clone(&sent_words),
            Arc::clone(&sending),
        );
        std::thread::spawn(move || {
            let until = Instant::now() + FEED;
            while Instant::now() < until {
                let t = Instant::now();
                conn.write_all(chunk.as_bytes()).unwrap();
                // A write that took long was held by TCP flow control.
                let took = t.elapsed();
                if took > Duration::from_millis(20) {
                    blocked.fetch_add(took.as_millis() as u64, Ordering::Relaxed);
                }
                sent_words.fetch_add(words_per_chunk, Ordering::Relaxed);
            }
            drop(conn); // end of input: the receiver reads to the end and stops
            sending.store(false, Ordering::SeqCst);
        })
    };

    // Resident memory, sampled every 50 ms (a sampling period, not a wait for an event) until
    // everything sent is counted.
    let mut highest = 0;
    let deadline = Instant::now() + FEED + PATIENCE;
    loop {
        highest = highest.max(rss(pid).unwrap_or(0));
        if !sending.load(Ordering::SeqCst) && counted(&output) >= sent_words.load(Ordering::Relaxed)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "wal {wal}: the output did not catch up: {} of {} words counted",
            counted(&output),
            sent_words.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    sender.join().unwrap();
    let sent = sent_words.load(Ordering::Relaxed);
    let blocked_ms = blocked.load(Ordering::Relaxed);
    println!(
        "wal {wal}: {sent} words sent in {FEED:?}, the sender blocked {blocked_ms} ms; \
         highest RSS {} MiB (bound {} MiB)",
        highest >> 20,
        BOUND >> 20
    );
    assert!(
        highest <= BOUND,
        "wal {wal}: resident memory reached {} MiB, over the bound of {} MiB",
        highest >> 20,
        BOUND >> 20
    );
    assert!(
        blocked_ms >= 1000,
        "wal {wal}: the sender blocked only {blocked_ms} ms: it was not pushed back"
    );
    assert_eq!(
        counted(&output),
        sent,
        "wal {wal}: every word sent is counted, once"
    );
    drop(child);
}

#[test]
fn with_the_receiver_wal_off_memory_is_bounded_and_the_sender_pushed_back() {
    overload(false);
}

#[test]
fn with_the_receiver_wal_on_memory_is_bounded_and_the_sender_pushed_back() {
    overload(true);
}
