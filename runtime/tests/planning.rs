//! Planning never blocks an actor (issue 14, item 1), end to end: a direct stream whose
//! source's `latest()` hangs or fails, under a real engine with its HTTP API on 127.0.0.1.
//!
//! While the look-up hangs, checkpoints are taken on request, the API answers, every attempt
//! fails at the planning timeout with an event naming the source (one blocked thread, however
//! many attempts), and a graceful stop completes; the next start runs the batches that could
//! not be planned, so every record is output once. A source that fails three times and then
//! recovers gets three `PlanningFailed` events with a doubling backoff, and its records are
//! output once each, in contiguous offset ranges, batch after batch. A job generator killed
//! while its look-up hangs is restarted without a second blocked call, and loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use weir::dstream::{OffsetRange, OffsetSource, StartingOffsets};
use weir::testing::MemoryLog;
use weir::{StreamingConfig, StreamingContext};
use weir_actors::pipeline::UserError;
use weir_actors::{Event, EventSubscription, PlanningPolicy};

/// Long enough for a loaded CI machine; every wait in this file is bounded by it.
const PATIENCE: Duration = Duration::from_secs(60);
/// The source's name, which every planning failure gives.
const SOURCE: &str = "orders";

// ============================== a source that hangs or fails ============================== //

#[derive(Debug, Default)]
struct Gate {
    closed: bool,
    /// `latest()` calls blocked now, and the most ever blocked at once.
    blocked: u32,
    most_blocked: u32,
}

/// A [`MemoryLog`] whose `latest()` fails the next `fail_next` calls, or blocks while the gate
/// is closed (as a broker that is down, or `SIGSTOP`ped, does to a client without a timeout).
#[derive(Debug)]
struct FlakySource {
    log: Arc<MemoryLog>,
    fail_next: AtomicU32,
    gate: Mutex<Gate>,
    opened: Condvar,
    /// Notified when a call blocks.
    blocked: Notify,
}

impl FlakySource {
    fn new(partitions: usize) -> Arc<FlakySource> {
        Arc::new(FlakySource {
            log: MemoryLog::new(SOURCE, partitions),
            fail_next: AtomicU32::new(0),
            gate: Mutex::default(),
            opened: Condvar::new(),
            blocked: Notify::new(),
        })
    }

    fn close(&self) {
        self.gate.lock().unwrap().closed = true;
    }

    fn open(&self) {
        self.gate.lock().unwrap().closed = false;
        self.opened.notify_all();
    }

    fn most_blocked(&self) -> u32 {
        self.gate.lock().unwrap().most_blocked
    }

    /// Appends `n` records named `<prefix>-<i>`, spread over the partitions.
    fn append(&self, prefix: &str, n: usize) -> Vec<String> {
        let partitions = self.log.partitions();
        let records: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
        for (i, record) in records.iter().enumerate() {
            self.log.append(i % partitions, &[record.as_str()]);
        }
        records
    }
}

impl OffsetSource for FlakySource {
    fn name(&self) -> String {
        SOURCE.to_owned()
    }
    fn partitions(&self) -> usize {
        self.log.partitions()
    }
    fn earliest(&self) -> Result<Vec<u64>, UserError> {
        self.log.earliest()
    }
    fn latest(&self) -> Result<Vec<u64>, UserError> {
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err("the broker at 127.0.0.1:9 refused the connection".into());
        }
        let mut gate = self.gate.lock().unwrap();
        if gate.closed {
            gate.blocked += 1;
            gate.most_blocked = gate.most_blocked.max(gate.blocked);
            self.blocked.notify_one();
            while gate.closed {
                gate = self.opened.wait(gate).unwrap();
            }
            gate.blocked -= 1;
        }
        drop(gate);
        self.log.latest()
    }
    fn read(
        &self,
        partition: u32,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<bytes::Bytes>, UserError> {
        self.log.read(partition, range)
    }
    fn commit(&self, next: &[u64]) -> Result<(), UserError> {
        self.log.commit(next)
    }
}

/// Opens the source's gate when dropped — also when the test fails — so that no blocking
/// thread is left waiting on it: the runtime waits for its blocking threads when it shuts
/// down.
struct OpenOnDrop(Arc<FlakySource>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

// ================================= what the outputs saw ================================= //

/// Every batch the output saw: batch time → (offset ranges, records).
type Seen = Arc<Mutex<BTreeMap<u64, (Vec<OffsetRange>, Vec<String>)>>>;

/// Builds the job: the source's records, each batch recorded in `seen`. A batch seen again
/// (a re-run) must hold the same ranges and records, as the exactly-once contract says.
fn build(
    config: StreamingConfig,
    source: &Arc<FlakySource>,
    seen: &Seen,
) -> Result<StreamingContext, weir::Error> {
    let ctx = StreamingContext::new(config);
    let seen = Arc::clone(seen);
    ctx.direct_stream(
        Arc::clone(source) as Arc<dyn OffsetSource>,
        StartingOffsets::Earliest,
        None,
    )
    .uid("orders")
    .map(|b| String::from_utf8(b.to_vec()).unwrap())
    .foreach_batch(move |batch| {
        let mut records: Vec<String> = batch.iter().cloned().collect();
        records.sort();
        let entry = (batch.offset_ranges.clone(), records);
        let mut seen = seen.lock().unwrap();
        if let Some(before) = seen.get(&batch.time_ms) {
            assert_eq!(before, &entry, "batch {} re-ran differently", batch.time_ms);
        }
        seen.insert(batch.time_ms, entry);
        Ok(())
    });
    Ok(ctx)
}

/// Every record the output saw, sorted; and checks that each partition's ranges follow each
/// other without a gap or an overlap, batch after batch, in time order.
fn records_once(seen: &Seen) -> Vec<String> {
    let seen = seen.lock().unwrap();
    let mut next: BTreeMap<u32, u64> = BTreeMap::new();
    let mut all = Vec::new();
    for (time, (ranges, records)) in seen.iter() {
        for range in ranges {
            let expected = next.entry(range.partition).or_insert(0);
            assert_eq!(
                range.from, *expected,
                "batch {time}: partition {} starts at {}, not where the last batch ended",
                range.partition, range.from
            );
            *expected = range.until;
        }
        all.extend(records.iter().cloned());
    }
    all.sort();
    all
}

/// `config` (of a local directory) with a batch every 100 ms, the HTTP API on 127.0.0.1 and
/// this planning timeout.
fn configured(config: StreamingConfig, prefix: &str, timeout: Duration) -> StreamingConfig {
    let mut config = config
        .batch_interval(Duration::from_millis(100))
        .http_addr("127.0.0.1:0".parse().unwrap());
    config.engine.name_prefix = prefix.to_owned();
    config.engine.executors = 2;
    config.parallelism = 2;
    config.engine.planning = PlanningPolicy {
        timeout,
        ..PlanningPolicy::default()
    };
    // The drain, not this bound, must end a stop whose planning hangs.
    config.engine.graceful_stop_timeout = PATIENCE;
    config
}

/// Waits until the output has seen `n` records.
async fn output_has(events: &mut EventSubscription, seen: &Seen, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while seen
        .lock()
        .unwrap()
        .values()
        .map(|(_, r)| r.len())
        .sum::<usize>()
        < n
    {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        events
            .next_matching(left, |e| matches!(e, Event::BatchCompleted { .. }))
            .await
            .unwrap_or_else(|| panic!("the output never saw {n} records"));
    }
}

/// The next planning failure: (batch, source, cause, attempt, retry).
async fn planning_failed(
    events: &mut EventSubscription,
) -> (u64, String, String, u32, Option<u64>) {
    let record = events
        .next_matching(PATIENCE, |e| matches!(e, Event::PlanningFailed { .. }))
        .await
        .expect("a planning attempt failed");
    match record.event {
        Event::PlanningFailed {
            batch_time_ms,
            source,
            cause,
            attempt,
            retry_in_ms,
        } => (batch_time_ms, source, cause, attempt, retry_in_ms),
        _ => unreachable!("only planning failures match"),
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("authorization: Bearer {token}\r\n"));
    }
    if method == "POST" {
        head.push_str("content-length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

// ========================================= tests ========================================= //

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_hangs_leaves_checkpoints_the_api_and_a_graceful_stop_answering() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(1_000);
    let source = FlakySource::new(2);
    let seen: Seen = Arc::default();
    let mut expected = source.append("a", 20);

    let first = configured(
        StreamingConfig::local(dir.path()),
        "planning-hang-1/",
        timeout,
    );
    let mut ctx = build(first, &source, &seen).unwrap();
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 20).await;

    // The broker stops answering; records keep arriving.
    let _open_at_the_end = OpenOnDrop(Arc::clone(&source));
    source.close();
    tokio::time::timeout(PATIENCE, source.blocked.notified())
        .await
        .expect("planning asked the source");
    expected.extend(source.append("b", 10));
    let addr = ctx.http_addr().unwrap();
    let token = std::fs::read_to_string(dir.path().join("control-token")).unwrap();

    // The attempt fails at the timeout, naming the source.
    let (batch, source_name, cause, attempt, retry) = planning_failed(&mut events).await;
    assert_eq!(
        (source_name.as_str(), attempt, retry),
        (SOURCE, 1, Some(100))
    );
    assert_eq!(cause, "no answer within 1000 ms (the planning timeout)");

    // An operator's checkpoint is taken, and the API answers, while the look-up hangs (the
    // batches before it completed and were checkpointed a second ago: the checkpoint
    // written now is the one asked for).
    // (A generator blocked in the look-up would not answer: the route gives up after its
    // command timeout and answers 503.)
    let mut checkpoints = ctx.events().unwrap();
    let (status, body) = request(addr, "POST", "/api/v1/checkpoints", Some(token.trim())).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = request(addr, "GET", "/api/v1/overview", None).await;
    assert_eq!(status, 200, "{body}");
    checkpoints
        .next_matching(PATIENCE, |e| matches!(e, Event::CheckpointWritten { .. }))
        .await
        .expect("the checkpoint asked for is written");

    // The retry finds the first call still blocked and waits for it, instead of blocking a
    // second thread; it fails at its timeout too.
    let second = planning_failed(&mut events).await;
    assert_eq!((second.0, second.3, second.4), (batch, 2, Some(200)));
    assert_eq!(
        second.2,
        "an earlier look-up has not answered yet, 1000 ms later (the planning timeout)"
    );
    assert_eq!(source.most_blocked(), 1);
    let (status, body) = request(addr, "GET", "/api/v1/events/recent", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"kind\":\"planning_failed\""), "{body}");
    let metrics = request(addr, "GET", "/metrics", None).await.1;
    assert!(
        metrics.contains("weir_planning_failures_total{source=\"orders\"}"),
        "{metrics}"
    );

    // A graceful stop completes: the attempt in flight ends at its timeout, nothing retries.
    // (Were it waiting for the source, only the graceful stop timeout — a minute here —
    // would end it.)
    let stopping = Instant::now();
    ctx.stop(true).await.unwrap();
    let took = stopping.elapsed();
    assert!(took < timeout * 10, "the stop took {took:?}");
    assert!(seen.lock().unwrap().keys().all(|&t| t < batch));
    // The abandoned call returns when the broker does; its answer is not used.
    source.open();

    // The next start runs the batches that could not be planned: every record once.
    let mut ctx = StreamingContext::get_or_create(dir.path(), |config| {
        build(
            configured(config, "planning-hang-2/", timeout),
            &source,
            &seen,
        )
    })
    .await
    .unwrap();
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 30).await;
    ctx.stop(true).await.unwrap();
    expected.sort();
    assert_eq!(records_once(&seen), expected, "every record exactly once");
    assert!(
        seen.lock().unwrap().contains_key(&batch),
        "the hung batch ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_failing_three_times_is_retried_and_every_record_is_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let source = FlakySource::new(3);
    let seen: Seen = Arc::default();
    let mut expected = source.append("a", 30);

    let config = configured(
        StreamingConfig::local(dir.path()),
        "planning-fail/",
        Duration::from_secs(10),
    );
    let mut ctx = build(config, &source, &seen).unwrap();
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 30).await;

    source.fail_next.store(3, Ordering::SeqCst);
    expected.extend(source.append("b", 30));
    let mut failures = Vec::new();
    for _ in 0..3 {
        failures.push(planning_failed(&mut events).await);
    }
    let batch = failures[0].0;
    let cause = "the broker at 127.0.0.1:9 refused the connection";
    assert_eq!(
        failures,
        [(1, 100), (2, 200), (3, 400)]
            .map(|(attempt, retry)| (
                batch,
                SOURCE.to_owned(),
                cause.to_owned(),
                attempt,
                Some(retry)
            ))
            .to_vec()
    );
    output_has(&mut events, &seen, 60).await;
    expected.extend(source.append("c", 30));
    output_has(&mut events, &seen, 90).await;
    ctx.stop(true).await.unwrap();

    expected.sort();
    assert_eq!(records_once(&seen), expected, "every record exactly once");
    let times: Vec<u64> = seen.lock().unwrap().keys().copied().collect();
    assert!(
        times.windows(2).all(|w| w[1] == w[0] + 100),
        "a batch every interval, none lost: {times:?}"
    );
    assert!(times.contains(&batch), "the failing batch ran");
    assert_eq!(
        source.log.committed().last().unwrap().iter().sum::<u64>(),
        90,
        "the offsets committed are the end of the last batch"
    );
}

/// The job generator is killed while its plan hangs: the driver restarts from the checkpoint,
/// and the source is not called again while the dead incarnation's look-up is still blocked
/// (the new incarnation's attempts wait for it and fail, saying so). When the source answers,
/// every record is output once. (That the late answer itself is dropped, because the source
/// was restored since the look-up began, is `planned.rs`'s unit test: here it would plan the
/// same range as a new attempt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_of_a_killed_generator_is_not_used_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let timeout = Duration::from_millis(500);
    let source = FlakySource::new(2);
    let seen: Seen = Arc::default();
    let mut expected = source.append("a", 20);
    let config = configured(
        StreamingConfig::local(dir.path()),
        "planning-restart-",
        timeout,
    );
    let mut ctx = build(config, &source, &seen).unwrap();
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 20).await;

    let _open_at_the_end = OpenOnDrop(Arc::clone(&source));
    source.close();
    tokio::time::timeout(PATIENCE, source.blocked.notified())
        .await
        .expect("planning asked the source");
    expected.extend(source.append("b", 10));
    let addr = ctx.http_addr().unwrap();
    let token = std::fs::read_to_string(dir.path().join("control-token")).unwrap();
    let (status, body) = request(
        addr,
        "POST",
        "/api/v1/actors/job-generator/kill",
        Some(token.trim()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    events
        .next_matching(PATIENCE, |e| matches!(e, Event::CheckpointRestored { .. }))
        .await
        .expect("the driver restarts from the checkpoint");
    // The new incarnation finds the dead one's look-up still blocked, and waits for it.
    let waited = "an earlier look-up has not answered yet, 500 ms later (the planning timeout)";
    events
        .next_matching(
            PATIENCE,
            |e| matches!(e, Event::PlanningFailed { cause, .. } if cause == waited),
        )
        .await
        .expect("the new incarnation's attempt waits for the old look-up");
    assert_eq!(source.most_blocked(), 1, "the source was called again");

    source.open();
    output_has(&mut events, &seen, 30).await;
    ctx.stop(true).await.unwrap();
    expected.sort();
    assert_eq!(records_once(&seen), expected, "every record exactly once");
}
