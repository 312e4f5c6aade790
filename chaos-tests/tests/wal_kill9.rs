//! Process-level proof of the WAL's durability: `kill -9` a writer at seeded random moments.
//!
//! Each round starts `wal_writer` on the same directory, waits for a random number of
//! acknowledgements, and kills the process with `SIGKILL` (no destructor, no flush, no close).
//! Then the log is opened in this process and checked:
//!
//! * every record it returns is whole and correct (self-checking payload) and appears once;
//! * every record the writer acknowledged (printed `ACK` for) is present;
//! * per writer and round, the records present are a gap-free prefix of its sequence (a
//!   writer appends one record at a time, so a later record cannot be durable without the
//!   earlier one).
//!
//! The seed is printed; set `WEIR_CHAOS_SEED` to replay a schedule.
//!
//! With the `s3` feature the same rounds run on moto's S3-compatible server (a fresh bucket,
//! the writer given an `s3://` URL): the objects outlive the killed writer in the server, as
//! they would in S3, and a group commit is one write-once object.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_actors::Storage;
use weir_actors::wal::{Position, Wal, WalConfig};
use weir_chaos_tests::payload::{self, RecordId};
use weir_chaos_tests::rng::Rng;

const ROUNDS: u32 = 6;
const WRITERS: u32 = 4;
const ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one writer process until it has acknowledged `acks_wanted` records, then kills it with
/// SIGKILL. Returns every record it acknowledged.
fn run_and_kill(
    dir: &str,
    env: &[(&str, &str)],
    round: u32,
    acks_wanted: usize,
) -> BTreeSet<RecordId> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wal_writer"))
        .arg(dir)
        .envs(env.iter().copied())
        .arg(round.to_string())
        .arg(WRITERS.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start wal_writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acked = BTreeSet::new();
    let deadline = Instant::now() + ROUND_TIMEOUT;
    while acked.len() < acks_wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => acked.extend(payload::parse_ack_line(&line)),
            Err(err) => {
                let _ = child.kill();
                panic!(
                    "round {round}: wal_writer gave {} of {acks_wanted} acks: {err}",
                    acked.len()
                );
            }
        }
    }
    child.kill().expect("SIGKILL wal_writer");
    child.wait().expect("reap wal_writer");
    // Lines printed before the kill are acknowledgements too: read them all.
    reader.join().expect("reader thread");
    acked.extend(
        rx.try_iter()
            .filter_map(|line| payload::parse_ack_line(&line)),
    );
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().to_str().expect("a UTF-8 temp dir").to_owned();
    kill_rounds(&path, &[], Storage::local(dir.path())).await;
}

#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_repeated_kill_9_on_s3() {
    let server = weir_actors::testing::MotoServer::shared()
        .unwrap_or_else(|e| panic!("moto's S3 server: {e}"));
    let options = server.fresh_bucket().expect("a bucket");
    let url = format!("{}wal?endpoint={}", options.url(), server.endpoint());
    let env = [
        ("AWS_ACCESS_KEY_ID", "weir-test"),
        ("AWS_SECRET_ACCESS_KEY", "weir-test-secret"),
    ];
    let storage = Storage::s3(&options).expect("S3 storage").join("wal");
    kill_rounds(&url, &env, storage).await;
}

/// `ROUNDS` rounds of: a writer on `location` killed after a random number of acks, then the
/// log opened here (on `storage`, the same place) and checked.
async fn kill_rounds(location: &str, env: &[(&str, &str)], storage: Storage) {
    let seed = std::env::var("WEIR_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::fresh_seed);
    println!("WEIR_CHAOS_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut all_acked = BTreeSet::new();
    let mut torn_tails = 0;
    for round in 0..ROUNDS {
        let wanted = rng.range(50, 1500) as usize;
        let acked = tokio::task::block_in_place(|| run_and_kill(location, env, round, wanted));
        all_acked.extend(acked);

        let (wal, report) = Wal::open(storage.clone(), WalConfig::default())
            .await
            .expect("the log opens after kill -9");
        torn_tails += report.torn_tails.len();
        let records = wal
            .iter_from(Position::START)
            .collect_all()
            .await
            .expect("every record reads");
        let mut present = BTreeSet::new();
        let mut per_writer: BTreeMap<(u32, u32), Vec<u64>> = BTreeMap::new();
        for record in &records {
            let id = payload::decode(&record.payload)
                .unwrap_or_else(|| panic!("round {round}: a wrong record at {}", record.handle));
            assert!(present.insert(id), "round {round}: {id:?} appears twice");
            per_writer
                .entry((id.round, id.writer))
                .or_default()
                .push(id.seq);
        }
        let lost: Vec<_> = all_acked.difference(&present).collect();
        assert!(
            lost.is_empty(),
            "round {round}, seed {seed}: acknowledged records lost: {lost:?}"
        );
        for ((r, w), seqs) in per_writer {
            let mut sorted = seqs.clone();
            sorted.sort_unstable();
            let expected: Vec<u64> = (0..sorted.len() as u64).collect();
            assert_eq!(
                sorted, expected,
                "round {r} writer {w}: records are not a gap-free prefix"
            );
        }
        wal.close().await.expect("close");
    }
    println!(
        "{ROUNDS} kills, {} acknowledged records, all present; {torn_tails} torn tails cut",
        all_acked.len()
    );
}
