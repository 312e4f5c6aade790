//! Process-level exactly-once from Kafka to Kafka: `kafka_word_count` is killed with `kill -9`
//! at ten seeded moments while an independent producer (rdkafka, none of weir's code) writes
//! lines into a 4-partition input topic of a real Kafka-protocol broker (tansu, started by the
//! test on 127.0.0.1), started again with the same arguments after each kill, and finally
//! stopped gracefully once its consumer group has committed the end of the input. The output
//! topic, read back by an independent consumer, must equal an independent count of the words
//! produced: 0 lost, 0 duplicated.
//!
//! Why the output can be summed. Each output record is one word's count in one batch: key =
//! the word, value = the count, header `weir.batch` = the batch time. A batch's input is the
//! offset ranges planned into the checkpoint before it runs — the ranges of consecutive
//! batches are contiguous and disjoint, and a batch re-run after a kill reads exactly its
//! ranges again — so its counts are a function of its batch time. If the sink writes each
//! batch's counts exactly once, then (batch time, word) appears at most once in the topic and
//! the sum of the values per word over all batches is how often the word was produced. A lost
//! batch (or record) makes a sum too small; a batch written twice, or part of one, shows as a
//! (batch time, word) twice and a sum too large. Both are checked, and every record's
//! (partition, batch, index) stamp is checked to be unique too.
//!
//! The kill moments come from a seed printed at the start (`WEIR_KILL9_SEED=<seed>` repeats a
//! run): a quarter of the lives are killed during start-up and recovery (before they print
//! `running;`), half 0 to 30 ms after the output topic grew (an independent client polls its
//! high watermarks: the kill lands while the sink writes a batch or before the batch's
//! checkpoint), the others 0 to 2 s after `running;`. The sink's debug log says how many
//! re-run batches found records their dead attempt had written, and how many skipped a
//! completed batch's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir::kafka::testing::{TestBroker, group_positions, read_topic};

const KILLS: usize = 10;
const INPUT: &str = "lines";
const INPUT_PARTITIONS: i32 = 4;
const OUTPUT: &str = "word-counts";
const OUTPUT_PARTITIONS: i32 = 3;
const GROUP: &str = "kwc-kill9";
/// Distinct words: a batch writes up to this many records, so its write to the output topic
/// lasts long enough for kills to land in it.
const VOCABULARY: usize = 300;
/// The whole test's bound: every wait is cut to what is left of it, so the test fails rather
/// than run longer.
const TEST_LIMIT: Duration = Duration::from_secs(170);

/// `limit`, or less if the test's bound comes first.
fn within(started: Instant, limit: Duration) -> Duration {
    limit.min(TEST_LIMIT.saturating_sub(started.elapsed()))
}

/// One life of the program: the child and its stdout lines (copied to its log as they come).
struct Life {
    child: Child,
    lines: mpsc::Receiver<String>,
}

/// Over every life's log: the batch writes, those that found records a dead attempt had written
/// (a kill between a batch's first record and its checkpoint), and those that skipped
/// partitions already holding a later batch (a replay of completed output).
fn sink_recoveries(tmp: &Path) -> (usize, usize, usize) {
    let (mut writes, mut found, mut skipped) = (0, 0, 0);
    for entry in fs::read_dir(tmp.join("logs")).unwrap() {
        let text = fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("batch written")) {
            let nonzero = |field: &str| {
                line.split(field)
                    .nth(1)
                    .is_some_and(|rest| !rest.starts_with('0'))
            };
            writes += 1;
            found += usize::from(nonzero("found: "));
            skipped += usize::from(nonzero("skipped: "));
        }
    }
    (writes, found, skipped)
}

impl Drop for Life {
    /// A life still running when the test fails is killed with it.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// How many batches with words life `n` printed (it prints one line per non-empty batch it
/// computed, before writing it).
fn batches_printed(tmp: &Path, n: usize) -> usize {
    fs::read_to_string(tmp.join("logs").join(format!("life-{n:02}.stdout")))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("batch "))
        .count()
}

fn spawn(binary: &Path, broker: &TestBroker, tmp: &Path, n: usize) -> Life {
    let logs = tmp.join("logs");
    let mut stdout_log = File::create(logs.join(format!("life-{n:02}.stdout"))).unwrap();
    let mut child = Command::new(binary)
        .args(["--bootstrap", &broker.bootstrap()])
        .args(["--input-topic", INPUT, "--output-topic", OUTPUT])
        .args(["--group", GROUP, "--batch-ms", "200"])
        .arg("--checkpoint-dir")
        .arg(tmp.join("checkpoint"))
        // The sink's debug line per batch says what it wrote, found and skipped.
        .env("RUST_LOG", "warn,weir::kafka::sink=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(logs.join(format!("life-{n:02}.stderr"))).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(stdout_log, "{line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Life { child, lines }
}

impl Life {
    /// Waits (at most `limit`) for a stdout line starting with `marker`.
    fn wait_for_line(&self, marker: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(marker) => return true,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Waits (at most `limit`) for the process to exit: its stdout closes, then it is reaped.
    fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.child.wait().ok()
    }
}

fn logs_of(tmp: &Path) -> String {
    let mut names: Vec<PathBuf> = fs::read_dir(tmp.join("logs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("== {}\n{}\n", p.display(), tail.join("\n"))
        })
        .collect()
}

/// The producer: lines of 1 to 8 words `w<n>` (n below [`VOCABULARY`]), keyless (spread over the partitions
/// by the client), about 300 a second in small bursts, until `stop`. Returns the count of
/// every word in a line whose delivery the broker acknowledged, and the number of lines.
fn produce(client: &ClientConfig, seed: u64, stop: &AtomicBool) -> (BTreeMap<String, u64>, u64) {
    let producer: BaseProducer = client
        .clone()
        .set("linger.ms", "20")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x11e5);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    let mut lines = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..rng.usize(5..25) {
            let words: Vec<String> = (0..rng.usize(1..=8))
                .map(|_| format!("w{}", rng.usize(..VOCABULARY)))
                .collect();
            let line = words.join(" ");
            producer
                .send(BaseRecord::<(), _>::to(INPUT).payload(&line))
                .unwrap();
            for w in words {
                *expected.entry(w).or_insert(0) += 1;
            }
            lines += 1;
        }
        producer.poll(Duration::ZERO);
        // Pacing of the producer (lines arrive over the lives), not synchronisation.
        std::thread::sleep(Duration::from_millis(rng.u64(20..80)));
    }
    // Every line acknowledged (an idempotent producer: none written twice by its retries).
    producer.flush(Duration::from_secs(30)).unwrap();
    (expected, lines)
}

/// The input's high watermarks and the group's committed offsets, per partition (an
/// independent client). The broker may be slow to answer on loaded cores: a failed request is
/// an error, for the caller to ask again.
fn positions(client: &ClientConfig) -> Result<(Vec<i64>, Vec<i64>), KafkaError> {
    group_positions(client, GROUP, INPUT, INPUT_PARTITIONS)
}

/// The output topic's records (the sum of its high watermarks); `None` if the broker did not
/// answer in time.
fn output_size(watcher: &BaseConsumer) -> Option<i64> {
    let mut sum = 0;
    for p in 0..OUTPUT_PARTITIONS {
        sum += watcher
            .fetch_watermarks(OUTPUT, p, Duration::from_secs(2))
            .ok()?
            .1;
    }
    Some(sum)
}

/// Waits (at most `limit`, polling) until the output topic holds more records than now.
fn output_grows(watcher: &BaseConsumer, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let Some(before) = output_size(watcher) else {
        return false;
    };
    while Instant::now() < deadline {
        if output_size(watcher).is_some_and(|now| now > before) {
            return true;
        }
        // Polling another process's progress through the broker: there is no event to await.
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// One record of the output topic.
#[derive(Debug)]
struct Count {
    partition: i32,
    word: String,
    count: u64,
    batch: u64,
    index: u64,
}

/// Every record of the output topic, read from the start with an independent assign()ed
/// consumer, until each partition's end.
fn read_output(client: &ClientConfig) -> Vec<Count> {
    let read = read_topic(
        client,
        OUTPUT,
        OUTPUT_PARTITIONS,
        "read_committed",
        Duration::from_secs(60),
    );
    read.unwrap()
        .into_iter()
        .map(|r| {
            let header = |name: &str| -> u64 {
                r.header(name)
                    .unwrap_or_else(|| panic!("no header {name}"))
                    .parse()
                    .unwrap()
            };
            Count {
                partition: r.partition,
                word: r.key.clone(),
                count: r.value.parse().unwrap(),
                batch: header("weir.batch"),
                index: header("weir.index"),
            }
        })
        .collect()
}

#[test]
fn kafka_word_count_is_exactly_once_across_kill_9() {
    let started = Instant::now();
    let binary = Path::new(env!("CARGO_BIN_EXE_kafka_word_count"));
    let seed = std::env::var("WEIR_KILL9_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("seed {seed} (set WEIR_KILL9_SEED={seed} to repeat)");
    let mut rng = fastrand::Rng::with_seed(seed);
    // Owned here (the producer gets a client configuration), so a failing test stops it.
    let broker = TestBroker::start().unwrap();
    broker.create_topic(INPUT, INPUT_PARTITIONS).unwrap();
    broker.create_topic(OUTPUT, OUTPUT_PARTITIONS).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("logs")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (client, stop) = (broker.client_config(), Arc::clone(&stop));
        std::thread::spawn(move || produce(&client, seed, &stop))
    };

    let watcher: BaseConsumer = broker.client_config().create().unwrap();
    let (mut during_recovery, mut after_batch) = (0, 0);
    for n in 0..KILLS {
        let mut life = spawn(binary, &broker, tmp.path(), n);
        // The fault: kill -9 during start-up and recovery; or 0 to 30 ms after the output
        // topic grew (an independent client watching its high watermarks), so the kill lands
        // while the sink writes a batch or between its write and the checkpoint; or at any
        // moment while it runs.
        let when = match rng.usize(..4) {
            0 => {
                during_recovery += 1;
                std::thread::sleep(Duration::from_millis(rng.u64(50..800)));
                "during recovery"
            }
            mode => {
                if !life.wait_for_line("running;", within(started, Duration::from_secs(30))) {
                    panic!(
                        "seed {seed}: life {n} did not start running (exit: {:?}):\n{}",
                        life.child.try_wait(),
                        logs_of(tmp.path())
                    );
                }
                if mode < 3 && output_grows(&watcher, within(started, Duration::from_secs(10))) {
                    after_batch += 1;
                    std::thread::sleep(Duration::from_millis(rng.u64(..30)));
                    "as a batch is written"
                } else {
                    std::thread::sleep(Duration::from_millis(rng.u64(..2000)));
                    "while running"
                }
            }
        };
        let early = life.child.try_wait().unwrap();
        assert!(
            early.is_none(),
            "seed {seed}: life {n} exited by itself ({early:?}) before it was killed:\n{}",
            logs_of(tmp.path())
        );
        life.child.kill().unwrap(); // SIGKILL
        let status = life.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "life {n} ended by SIGKILL");
        println!(
            "life {n}: killed {when} after {} batch(es) with words ({:.1} s into the test)",
            batches_printed(tmp.path(), n),
            started.elapsed().as_secs_f64()
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (expected, lines) = producer.join().unwrap();
    let total: u64 = expected.values().sum();
    let client = broker.client_config();
    // The producer's count is the broker's: every acknowledged line is in the input once.
    let ends = positions(&client).unwrap().0;
    assert_eq!(ends.iter().sum::<i64>() as u64, lines, "lines in the input");

    // The last life reads the rest; the group's committed offsets (read independently) reach
    // the input's ends once the batches up to the end have completed, outputs included.
    let mut last = spawn(binary, &broker, tmp.path(), KILLS);
    if !last.wait_for_line("running;", within(started, Duration::from_secs(30))) {
        panic!(
            "seed {seed}: the last life did not start running (exit: {:?}):\n{}",
            last.child.try_wait(),
            logs_of(tmp.path())
        );
    }
    let deadline = Instant::now() + within(started, Duration::from_secs(60));
    loop {
        // The broker may not answer in time on loaded cores: then ask again.
        let seen = match positions(&client) {
            Ok((_, committed)) if committed == ends => break,
            Ok((_, committed)) => format!("committed {committed:?} of the input's ends {ends:?}"),
            Err(e) => format!("the broker did not answer: {e}"),
        };
        assert!(
            Instant::now() < deadline && last.child.try_wait().unwrap().is_none(),
            "seed {seed}: the group's position: {seen}:\n{}",
            logs_of(tmp.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A graceful stop (SIGINT) exits 0.
    let pid = last.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = last
        .wait_exit(within(started, Duration::from_secs(30)))
        .unwrap_or_else(|| {
            let _ = last.child.kill();
            panic!(
                "seed {seed}: the last life did not stop on SIGINT:\n{}",
                logs_of(tmp.path())
            )
        });
    assert!(
        status.success(),
        "seed {seed}: the last life exited with {status:?}:\n{}",
        logs_of(tmp.path())
    );

    let output = read_output(&client);
    let mut per_word: BTreeMap<String, u64> = BTreeMap::new();
    let mut batch_words = BTreeSet::new();
    let mut stamps = BTreeSet::new();
    for c in &output {
        assert!(c.count > 0, "a zero count: {c:?}");
        *per_word.entry(c.word.clone()).or_insert(0) += c.count;
        assert!(
            batch_words.insert((c.batch, c.word.clone())),
            "seed {seed}: batch {} counted {:?} twice: {c:?}",
            c.batch,
            c.word
        );
        assert!(
            stamps.insert((c.partition, c.batch, c.index)),
            "seed {seed}: the stamp (partition, batch, index) twice: {c:?}"
        );
    }
    let batches: BTreeSet<u64> = output.iter().map(|c| c.batch).collect();
    let (writes, found, skipped) = sink_recoveries(tmp.path());
    assert_eq!(
        per_word, expected,
        "seed {seed}: the summed output differs from the independent count of the input"
    );
    println!(
        "{total} words in {lines} lines over {INPUT_PARTITIONS} partitions; {} output records from {} batches; {KILLS} kills ({during_recovery} during recovery, {after_batch} as a batch is written); {writes} batch writes, of which {found} found records of a dead attempt and {skipped} skipped a replay's; exactly once, in {:.1} s",
        output.len(),
        batches.len(),
        started.elapsed().as_secs_f64()
    );
}
