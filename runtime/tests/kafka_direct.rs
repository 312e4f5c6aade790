//! The Kafka direct stream (`StreamingContext::kafka_direct_stream`) against the test broker
//! (tansu, docs/kafka.md), with records produced and offsets checked by an independent client
//! (rdkafka used directly, none of weir's code).
//!
//! Proven here: every record of a batching producer over several partitions is output exactly
//! once, across a non-graceful stop and a restart from the checkpoint; a batch planned before
//! a crash is re-read with exactly its ranges; after a graceful stop the group's committed
//! offsets are the end of the last batch; a topic created while running that matches the
//! pattern is read from its earliest offset; a restarted broker and a paused (SIGSTOP) one —
//! planning fails naming the source, the job keeps answering and recovers; the out-of-range
//! policy (fail, or reset with a report) on positions a broker does not have and on a topic
//! that is gone; a range whose last offsets do not exist is read without waiting; every
//! starting position; the byte budget, the rate limit and the per-partition cap;
//! `read_committed` by default.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir::dstream::OffsetRange;
use weir::kafka::testing::TestBroker;
use weir::kafka::{KafkaDirectOptions, KafkaRecord, KafkaTimestamp, OffsetResetPolicy};
use weir::testing::ManualClock;
use weir::{Event, StreamingConfig, StreamingContext};
use weir_actors::{EventSubscription, PlanningPolicy};

/// Every wait in these tests is bounded by this.
const PATIENCE: Duration = Duration::from_secs(60);

/// The create time of record `i` is `BASE_TS + i` ms.
const BASE_TS: i64 = 1_700_000_000_000;

// ================================ the independent client ================================ //

/// A batching producer (20 ms linger, 64 KiB batches, acks from all replicas).
fn producer(broker: &TestBroker) -> BaseProducer {
    broker
        .client_config()
        .set("linger.ms", "20")
        .set("batch.size", "65536")
        .set("acks", "all")
        .create()
        .unwrap()
}

/// Sends `v{i}` (key `k{i}`, header `idx` = i, create time `BASE_TS + i`) for `i` in
/// `range`, to partition `i % partitions` of `topic`; flushes.
fn produce(broker: &TestBroker, topic: &str, range: std::ops::Range<usize>, partitions: i32) {
    let producer = producer(broker);
    for i in range {
        let (key, value) = (format!("k{i}"), format!("v{i}"));
        let idx = i.to_string();
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "idx",
            value: Some(&idx),
        });
        let mut record = BaseRecord::to(topic)
            .key(&key)
            .payload(&value)
            .headers(headers)
            .timestamp(BASE_TS + i64::try_from(i).unwrap())
            .partition(i32::try_from(i).unwrap() % partitions);
        let deadline = Instant::now() + PATIENCE;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, back)) => {
                    assert!(Instant::now() < deadline, "producing {i}: {e}");
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(PATIENCE).expect("flushing the producer");
}

/// The group's committed offsets of `topic`'s `partitions`, read by a consumer of the group.
fn committed(broker: &TestBroker, group: &str, topic: &str, partitions: i32) -> Vec<Offset> {
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut ask = TopicPartitionList::new();
    for p in 0..partitions {
        ask.add_partition(topic, p);
    }
    let got = reader.committed_offsets(ask, PATIENCE).unwrap();
    (0..partitions)
        .map(|p| got.find_partition(topic, p).unwrap().offset())
        .collect()
}

// ==================================== what was output ==================================== //

/// Every batch the output saw: batch time → (offset ranges, values). A batch seen again (a
/// re-run) must hold the same ranges and values.
type Seen = Arc<Mutex<BTreeMap<u64, (Vec<OffsetRange>, Vec<String>)>>>;

/// Records `batch` in `seen`, checking a re-run against the first run.
fn note(seen: &Seen, time: u64, ranges: Vec<OffsetRange>, mut values: Vec<String>) {
    values.sort();
    let entry = (ranges, values);
    let mut seen = seen.lock().unwrap();
    if let Some(before) = seen.get(&time) {
        assert_eq!(before, &entry, "batch {time} re-ran differently");
    }
    seen.insert(time, entry);
}

/// Every value output, checking that each partition's ranges follow each other without a gap
/// or an overlap; and each partition's end.
fn values_once(seen: &Seen) -> (Vec<String>, BTreeMap<(String, u32), u64>) {
    let seen = seen.lock().unwrap();
    let mut next: BTreeMap<(String, u32), u64> = BTreeMap::new();
    let mut all = Vec::new();
    for (time, (ranges, values)) in seen.iter() {
        for r in ranges {
            if let Some(expected) = next.get(&(r.source.clone(), r.partition)) {
                assert_eq!(
                    r.from, *expected,
                    "batch {time}: {}/{} starts at {}, not where the last batch ended",
                    r.source, r.partition, r.from
                );
            }
            next.insert((r.source.clone(), r.partition), r.until);
        }
        all.extend(values.iter().cloned());
    }
    (all, next)
}

fn count(seen: &Seen) -> usize {
    seen.lock().unwrap().values().map(|(_, v)| v.len()).sum()
}

/// `v0 … v{n-1}`, sorted as strings.
fn expected(range: std::ops::Range<usize>) -> Vec<String> {
    let mut v: Vec<String> = range.map(|i| format!("v{i}")).collect();
    v.sort();
    v
}

/// Checks what a record carries against what the producer sent.
fn check_record(r: &KafkaRecord) {
    let value = r.value_str().unwrap();
    let i: i64 = value.strip_prefix('v').unwrap().parse().unwrap();
    assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
    assert_eq!(r.timestamp, KafkaTimestamp::CreateTime(BASE_TS + i));
    assert_eq!(
        r.header("idx").flatten().map(|b| b.to_vec()),
        Some(i.to_string().into_bytes())
    );
    assert!(r.offset >= 0);
}

/// A context reading `options` whose output notes every batch in `seen` (uid `kafka`).
fn job(config: StreamingConfig, options: KafkaDirectOptions, seen: &Seen) -> StreamingContext {
    let ctx = StreamingContext::new(config);
    let seen = Arc::clone(seen);
    ctx.kafka_direct_stream(options)
        .uid("kafka")
        .foreach_batch(move |batch| {
            let values = batch
                .iter()
                .map(|r| {
                    check_record(r);
                    r.value_str().unwrap().to_owned()
                })
                .collect();
            note(&seen, batch.time_ms, batch.offset_ranges.clone(), values);
            Ok(())
        });
    ctx
}

/// `config` with a batch every 100 ms, 2 executors and partitions, planning timed out after
/// 2 s, a unique name prefix.
fn configured(config: StreamingConfig, prefix: &str) -> StreamingConfig {
    let mut config = config.batch_interval(Duration::from_millis(100));
    config.engine.name_prefix = format!("{prefix}-{}/", fastrand::u32(..));
    config.engine.executors = 2;
    config.parallelism = 2;
    config.engine.planning = PlanningPolicy {
        timeout: Duration::from_secs(2),
        ..PlanningPolicy::default()
    };
    config.engine.graceful_stop_timeout = PATIENCE;
    config
}

/// Waits until the output has seen at least `n` values.
async fn output_has(events: &mut EventSubscription, seen: &Seen, n: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count(seen) < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        events
            .next_matching(left, |e| matches!(e, Event::BatchCompleted { .. }))
            .await
            .unwrap_or_else(|| panic!("the output saw {} values, never {n}", count(seen)));
    }
}

/// The options every test uses against `broker`: short timeouts.
fn options(broker: &TestBroker, topics: &[&str]) -> KafkaDirectOptions {
    KafkaDirectOptions::topics(broker.bootstrap(), topics.iter().copied())
        .request_timeout(Duration::from_millis(1500))
        .read_timeout(Duration::from_secs(20))
}

/// Polls `f` until it holds, at most [`PATIENCE`].
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ========================================= tests ========================================= //

/// 4 000 records from a batching producer over 4 partitions, read 150 per partition per
/// batch; the job is stopped without a drain (a crash) midway and restarted from its
/// checkpoint while 2 000 more arrive: every record is output exactly once (a batch re-run
/// after the restart holds exactly what it held before), and after the graceful stop the
/// group's committed offsets, read by an independent consumer, are the end of the last batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_once_across_a_crash_and_offsets_committed_after_a_graceful_stop() {
    let broker = TestBroker::start().unwrap();
    let (topic, partitions, group) = ("kd-main", 4, "kd-main-group");
    broker.create_topic(topic, partitions).unwrap();
    produce(&broker, topic, 0..4_000, partitions);
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let build = |prefix: &'static str| {
        let (seen, options) = (
            Arc::clone(&seen),
            options(&broker, &[topic])
                .group_id(group)
                .max_per_partition(150),
        );
        move |config: StreamingConfig| Ok(job(configured(config, prefix), options, &seen))
    };

    let mut first = StreamingContext::get_or_create(dir.path(), build("kd-main-1"))
        .await
        .unwrap();
    first.start().await.unwrap();
    let mut events = first.events().unwrap();
    output_has(&mut events, &seen, 1_500).await;
    first.stop(false).await.unwrap();
    let before = count(&seen);
    assert!(before < 4_000, "the crash came too late: {before} read");

    produce(&broker, topic, 4_000..6_000, partitions);
    let mut second = StreamingContext::get_or_create(dir.path(), build("kd-main-2"))
        .await
        .unwrap();
    assert!(second.restored().is_some(), "restored from the checkpoint");
    second.start().await.unwrap();
    let mut events = second.events().unwrap();
    output_has(&mut events, &seen, 6_000).await;
    second.stop(true).await.unwrap();

    let (mut values, ends) = values_once(&seen);
    values.sort();
    assert_eq!(values.len(), 6_000, "every record once, no more");
    assert_eq!(values, expected(0..6_000));
    // Every partition's last batch ended at its end: 1 500 records each.
    let per = 6_000 / 4;
    for p in 0..4u32 {
        assert_eq!(ends.get(&(topic.to_owned(), p)), Some(&per));
    }
    // The commit of the last batch is made off the actors' threads: wait for it.
    let want = vec![Offset::Offset(i64::try_from(per).unwrap()); 4];
    eventually("the group's offsets are the last batch's end", || {
        committed(&broker, group, topic, partitions) == want
    })
    .await;
}

/// A batch planned before a crash is re-read with exactly its planned ranges, though more
/// records arrived meanwhile (the driver, under `ManualClock`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_planned_before_a_crash_is_reread_with_exactly_its_ranges() {
    let broker = TestBroker::start().unwrap();
    let topic = "kd-crash";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, 0..100, 2);
    let seen: Seen = Arc::default();
    let (s, o) = (Arc::clone(&seen), options(&broker, &[topic]).tasks(2));
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let s = Arc::clone(&s);
        ctx.kafka_direct_stream(o.clone())
            .uid("kafka")
            .foreach_batch(move |batch| {
                let values = batch
                    .iter()
                    .map(|r| r.value_str().unwrap().to_owned())
                    .collect();
                note(&s, batch.time_ms, batch.offset_ranges.clone(), values);
                Ok(())
            });
    })
    .unwrap();
    clock.run(1).await.unwrap();
    assert_eq!(count(&seen), 100);

    produce(&broker, topic, 100..110, 2);
    clock.crash_mid_batch().unwrap(); // batch 2000 planned: 5 records per partition, then lost
    produce(&broker, topic, 110..130, 2); // arrive while the driver is down
    clock.run(1).await.unwrap(); // batch 2000 again: the same ranges, not the new records
    let batch = seen.lock().unwrap()[&2000].clone();
    assert_eq!(batch.1, expected(100..110));
    let ranges: Vec<(u32, u64, u64)> = batch
        .0
        .iter()
        .map(|r| (r.partition, r.from, r.until))
        .collect();
    assert_eq!(ranges, vec![(0, 50, 55), (1, 50, 55)]);
    clock.run(1).await.unwrap();
    assert_eq!(seen.lock().unwrap()[&3000].1, expected(110..130));
}

/// A pattern stream picks up a topic created while it runs and reads it from its earliest
/// offset (the records produced before the stream saw the topic included); then the broker
/// is restarted (SIGTERM, same port and storage) and the records produced after it are read,
/// every one once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_topic_matching_the_pattern_and_a_broker_restart_while_running() {
    let mut broker = TestBroker::start().unwrap();
    broker.create_topic("kd-pat-a", 2).unwrap();
    broker.create_topic("other", 1).unwrap();
    produce(&broker, "kd-pat-a", 0..50, 2);
    produce(&broker, "other", 10_000..10_010, 1);
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let opts = KafkaDirectOptions::pattern(broker.bootstrap(), "^kd-pat-")
        .request_timeout(Duration::from_millis(1500))
        .read_timeout(Duration::from_secs(20));
    let mut ctx = job(
        configured(StreamingConfig::local(dir.path()), "kd-pat"),
        opts,
        &seen,
    );
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 50).await;

    broker.create_topic("kd-pat-b", 3).unwrap();
    produce(&broker, "kd-pat-b", 50..80, 3);
    output_has(&mut events, &seen, 80).await;

    broker.restart().unwrap();
    produce(&broker, "kd-pat-a", 80..120, 2);
    produce(&broker, "kd-pat-b", 120..150, 3);
    output_has(&mut events, &seen, 150).await;
    ctx.stop(true).await.unwrap();

    let (mut values, ends) = values_once(&seen);
    values.sort();
    assert_eq!(
        values,
        expected(0..150),
        "every record once; none of `other`"
    );
    let topics: BTreeSet<&str> = ends.keys().map(|(t, _)| t.as_str()).collect();
    assert_eq!(topics, BTreeSet::from(["kd-pat-a", "kd-pat-b"]));
    // kd-pat-b was read from offset 0 of each partition.
    let seen = seen.lock().unwrap();
    let first_b: BTreeMap<u32, u64> = seen
        .values()
        .flat_map(|(ranges, _)| ranges.iter())
        .filter(|r| r.source == "kd-pat-b")
        .fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.partition).or_insert(r.from);
            m
        });
    assert_eq!(first_b, BTreeMap::from([(0, 0), (1, 0), (2, 0)]));
}

/// One HTTP/1.1 GET on a fresh connection: the status.
async fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    text.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A broker that never answers (SIGSTOP): planning fails at its timeout with an event naming
/// the stream, the control endpoint keeps answering, and when the broker is resumed the job
/// reads what was produced, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_fails_planning_naming_the_source_and_the_job_recovers() {
    let mut broker = TestBroker::start().unwrap();
    let topic = "kd-pause";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, 0..40, 2);
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let config = configured(StreamingConfig::local(dir.path()), "kd-pause")
        .http_addr("127.0.0.1:0".parse().unwrap());
    let mut ctx = job(config, options(&broker, &[topic]).name("orders"), &seen);
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    output_has(&mut events, &seen, 40).await;

    broker.pause().unwrap();
    let failed = events
        .next_matching(PATIENCE, |e| matches!(e, Event::PlanningFailed { .. }))
        .await
        .expect("planning fails while the broker is paused");
    let Event::PlanningFailed { source, cause, .. } = failed.event else {
        unreachable!("only planning failures match")
    };
    assert_eq!(source, "orders", "the event names the stream ({cause})");
    let addr = ctx.http_addr().unwrap();
    assert_eq!(get(addr, "/api/v1/overview").await, 200, "the API answers");

    broker.resume().unwrap();
    produce(&broker, topic, 40..80, 2);
    output_has(&mut events, &seen, 80).await;
    ctx.stop(true).await.unwrap();
    let (mut values, _) = values_once(&seen);
    values.sort();
    assert_eq!(values, expected(0..80));
}

/// The out-of-range policy, on a checkpoint whose positions the broker no longer has: a job
/// reads 40 records of a topic on one broker and stops; restarted from its checkpoint against
/// another broker where the topic holds 6 records (as if it had been deleted and recreated),
/// with `fail` planning fails naming the topic, the partition and the offset, and nothing is
/// read; restarted again with `earliest`, the stream reports a reset for each partition and
/// reads the new records from the start. (Deleting the topic on the same broker would be
/// closer to life, but librdkafka crashes on tansu's metadata after a `DeleteTopics`:
/// docs/kafka.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_positions_fail_or_reset_as_the_policy_says() {
    let (first_broker, second_broker) =
        (TestBroker::start().unwrap(), TestBroker::start().unwrap());
    let topic = "kd-range";
    first_broker.create_topic(topic, 2).unwrap();
    produce(&first_broker, topic, 0..40, 2);
    second_broker.create_topic(topic, 2).unwrap();
    produce(&second_broker, topic, 100..106, 2); // offsets 0..3 per partition, below 20
    let swap = across_a_broker_swap(
        [&first_broker, &second_broker],
        "kd-range",
        |broker| options(broker, &[topic]).name("range"),
        (OffsetResetPolicy::Earliest, || {}),
        [40, 46],
    )
    .await;
    assert_eq!(swap.source, "range");
    assert!(
        swap.cause
            .contains("topic kd-range partition 0: offset 20 is out of range")
            && swap.cause.contains("holds 0..3"),
        "{}",
        swap.cause
    );
    let mut values: Vec<String> = swap
        .seen
        .lock()
        .unwrap()
        .values()
        .flat_map(|(_, v)| v.iter().cloned())
        .collect();
    values.sort();
    let mut want = expected(0..40);
    want.extend(expected(100..106));
    want.sort();
    assert_eq!(values, want);
    let topic = topic.to_owned();
    assert_eq!(
        swap.resets,
        BTreeSet::from([(topic.clone(), 0, 20, Some(0)), (topic, 1, 20, Some(0))]),
    );
    // Each reset is an engine event too (in the event log, the metrics, the HTTP API).
    let log = std::fs::read_to_string(swap.dir.path().join("events").join("events.jsonl")).unwrap();
    for partition in ["kd-range/0", "kd-range/1"] {
        assert!(
            log.lines().any(|l| l.contains("\"kind\":\"source_reset\"")
                && l.contains(&format!("\"partition\":\"{partition}\""))
                && l.contains("\"from\":20")
                && l.contains("\"to\":0")),
            "no source_reset event for {partition} in the event log:\n{}",
            log.lines()
                .filter(|l| l.contains("reset") || l.contains("planning"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// What [`across_a_broker_swap`] saw.
struct Swap {
    /// The job's checkpoint directory.
    dir: tempfile::TempDir,
    /// The output of all three runs.
    seen: Seen,
    /// The resets reported (to the `on_reset` callback): (topic, partition, from, to).
    resets: BTreeSet<(String, i32, u64, Option<u64>)>,
    /// The source named by the failed planning under `Fail`, and its cause.
    source: String,
    cause: String,
}

/// The course of the policy tests. A job reads from `brokers[0]` until it output
/// `outputs[0]` values and stops gracefully. Restarted from its checkpoint against
/// `brokers[1]` (which lacks positions the checkpoint holds) under `OffsetResetPolicy::Fail`,
/// its planning must fail and nothing more is read (the source and cause are returned); it is
/// stopped. Restarted again under `reset.0`, `reset.1` runs once it started, and it runs until
/// it output `outputs[1]` values. Under `Fail` no reset may be reported.
async fn across_a_broker_swap(
    brokers: [&TestBroker; 2],
    prefix: &str,
    options: impl Fn(&TestBroker) -> KafkaDirectOptions,
    reset: (OffsetResetPolicy, impl FnOnce()),
    outputs: [usize; 2],
) -> Swap {
    let dir = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let resets: Arc<Mutex<Vec<weir::kafka::KafkaReset>>> = Arc::default();
    let build = |broker: &TestBroker, run: u32, policy: OffsetResetPolicy| {
        let resets = Arc::clone(&resets);
        let (seen, prefix) = (Arc::clone(&seen), format!("{prefix}-{run}"));
        let options = options(broker)
            .on_out_of_range(policy)
            .on_reset(move |r| resets.lock().unwrap().push(r.clone()));
        move |config: StreamingConfig| Ok(job(configured(config, &prefix), options, &seen))
    };
    let (ctx, mut events) =
        started(dir.path(), build(brokers[0], 1, OffsetResetPolicy::Fail)).await;
    output_has(&mut events, &seen, outputs[0]).await;
    ctx.stop(true).await.unwrap();

    let (ctx, mut events) =
        started(dir.path(), build(brokers[1], 2, OffsetResetPolicy::Fail)).await;
    let failed = events
        .next_matching(PATIENCE, |e| matches!(e, Event::PlanningFailed { .. }))
        .await
        .expect("planning fails under the policy Fail");
    let Event::PlanningFailed { source, cause, .. } = failed.event else {
        unreachable!()
    };
    assert_eq!(count(&seen), outputs[0], "nothing read past the error");
    assert!(resets.lock().unwrap().is_empty(), "fail resets nothing");
    ctx.stop(false).await.unwrap();

    let (ctx, mut events) = started(dir.path(), build(brokers[1], 3, reset.0)).await;
    (reset.1)();
    output_has(&mut events, &seen, outputs[1]).await;
    ctx.stop(true).await.unwrap();
    let resets = resets
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.topic.clone(), r.partition, r.from, r.to))
        .collect();
    Swap {
        dir,
        seen,
        resets,
        source,
        cause,
    }
}

/// The context `build` makes — or restores from `dir` — started, and a subscription to its
/// events.
async fn started(
    dir: &std::path::Path,
    build: impl FnOnce(StreamingConfig) -> Result<StreamingContext, weir::Error>,
) -> (StreamingContext, weir_actors::EventSubscription) {
    let mut ctx = StreamingContext::get_or_create(dir, build).await.unwrap();
    ctx.start().await.unwrap();
    let events = ctx.events().unwrap();
    (ctx, events)
}

/// Runs one batch of a stream over `topic` with `options` under `ManualClock`: its values.
async fn one_batch(options: KafkaDirectOptions) -> Vec<String> {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        let s = Arc::clone(&s);
        ctx.kafka_direct_stream(options.clone())
            .uid("kafka")
            .foreach_batch(move |batch| {
                let values = batch
                    .iter()
                    .map(|r| r.value_str().unwrap().to_owned())
                    .collect();
                note(&s, batch.time_ms, batch.offset_ranges.clone(), values);
                Ok(())
            });
    })
    .unwrap();
    clock.run(1).await.unwrap();
    let batch = seen.lock().unwrap().remove(&1000);
    batch.expect("batch 1000 ran").1
}

/// Each starting position: earliest, latest, the group's committed offsets (committed by an
/// independent consumer; a partition without one falls back to earliest), given offsets, and
/// by timestamp (the first record at or after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_offsets_earliest_latest_committed_given_and_by_timestamp() {
    use weir::kafka::{CommittedFallback, KafkaStartingOffsets};
    let broker = TestBroker::start().unwrap();
    let topic = "kd-start";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, 0..40, 2); // partition 0: v0, v2, …; partition 1: v1, v3, …
    let base = || options(&broker, &[topic]).group_id("kd-start-group");

    assert_eq!(one_batch(base()).await, expected(0..40));
    let latest = base().starting_offsets(KafkaStartingOffsets::Latest);
    assert_eq!(one_batch(latest).await, Vec::<String>::new());

    // The runs above committed their ends to their group (20 and 20).
    assert_eq!(
        committed(&broker, "kd-start-group", topic, 2),
        vec![Offset::Offset(20); 2]
    );
    // Another group committed offset 15 of partition 0 only: partition 1 falls back to
    // earliest.
    let committer: BaseConsumer = broker
        .client_config()
        .set("group.id", "kd-start-other")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(15))
        .unwrap();
    committer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    let committed = base()
        .group_id("kd-start-other")
        .starting_offsets(KafkaStartingOffsets::Committed(CommittedFallback::Earliest));
    let mut want: Vec<String> = (30..40)
        .step_by(2)
        .chain((1..40).step_by(2))
        .map(|i| format!("v{i}"))
        .collect();
    want.sort();
    assert_eq!(one_batch(committed).await, want);

    let given = base().starting_offsets(KafkaStartingOffsets::Given(BTreeMap::from([
        ((topic.to_owned(), 0), 19),
        ((topic.to_owned(), 1), 18),
    ])));
    assert_eq!(one_batch(given).await, expected(37..40));

    // Record i was created at BASE_TS + i: from BASE_TS + 33, v33 … v39 (and v34 … on
    // partition 0).
    let by_time = base().starting_offsets(KafkaStartingOffsets::Timestamp(BASE_TS + 33));
    assert_eq!(one_batch(by_time).await, expected(33..40));
}

/// A byte budget bounds every batch (planning counts with the average record size read so
/// far), and every record is still read once, in contiguous ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_bounds_each_batch_and_every_record_is_read_once() {
    let broker = TestBroker::start().unwrap();
    let topic = "kd-bytes";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, 1000..1200, 2); // key k1xxx, value v1xxx: 10 bytes a record
    let seen: Seen = Arc::default();
    let (s, o) = (
        Arc::clone(&seen),
        options(&broker, &[topic]).max_bytes_per_batch(200),
    );
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        let s = Arc::clone(&s);
        ctx.kafka_direct_stream(o.clone())
            .uid("kafka")
            .foreach_batch(move |batch| {
                let values = batch
                    .iter()
                    .map(|r| r.value_str().unwrap().to_owned())
                    .collect();
                note(&s, batch.time_ms, batch.offset_ranges.clone(), values);
                Ok(())
            });
    })
    .unwrap();
    clock.run(10).await.unwrap();
    let sizes: Vec<usize> = seen
        .lock()
        .unwrap()
        .values()
        .map(|(_, v)| v.len())
        .collect();
    assert_eq!(sizes, vec![20; 10], "200 bytes of 10-byte records a batch");
    let (mut values, _) = values_once(&seen);
    values.sort();
    assert_eq!(values, expected(1000..1200));
}

/// A planned range whose last offsets do not exist when it is read (as transaction markers
/// and compacted records do not): the read stops at the partition's end and delivers fewer
/// records, at once, instead of waiting for offsets that never come. The gap is made with a
/// second broker: the batch is planned against one (offsets 30..40), the driver crashes, and
/// the re-run reads from another whose partition ends at 35.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_with_missing_offsets_delivers_fewer_records_without_waiting() {
    let (first_broker, second_broker) =
        (TestBroker::start().unwrap(), TestBroker::start().unwrap());
    let topic = "kd-gap";
    first_broker.create_topic(topic, 1).unwrap();
    produce(&first_broker, topic, 0..30, 1);
    second_broker.create_topic(topic, 1).unwrap();
    produce(&second_broker, topic, 100..135, 1); // offsets 0..35
    let bootstrap = Arc::new(Mutex::new(first_broker.bootstrap()));
    let seen: Seen = Arc::default();
    let (s, b) = (Arc::clone(&seen), Arc::clone(&bootstrap));
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        let s = Arc::clone(&s);
        let options = KafkaDirectOptions::topics(b.lock().unwrap().clone(), [topic])
            .request_timeout(Duration::from_millis(1500))
            .read_timeout(Duration::from_secs(30));
        ctx.kafka_direct_stream(options)
            .uid("kafka")
            .foreach_batch(move |batch| {
                let values = batch
                    .iter()
                    .map(|r| r.value_str().unwrap().to_owned())
                    .collect();
                note(&s, batch.time_ms, batch.offset_ranges.clone(), values);
                Ok(())
            });
    })
    .unwrap();
    clock.run(1).await.unwrap();
    assert_eq!(count(&seen), 30);

    produce(&first_broker, topic, 30..40, 1);
    *bootstrap.lock().unwrap() = second_broker.bootstrap(); // for the rebuilt graph
    clock.crash_mid_batch().unwrap(); // batch 2000 planned on the first broker: 30..40
    let started = Instant::now();
    clock.run(1).await.unwrap(); // read from the second: offsets 35..40 do not exist
    let took = started.elapsed();
    let batch = seen.lock().unwrap()[&2000].clone();
    let ranges: Vec<(u64, u64)> = batch.0.iter().map(|r| (r.from, r.until)).collect();
    assert_eq!(ranges, vec![(30, 40)], "the planned range");
    assert_eq!(batch.1, expected(130..135), "the five records that exist");
    assert!(
        took < Duration::from_secs(10),
        "the read waited for missing offsets: {took:?}"
    );
}

/// The rate limits of the context cap the stream as they cap every direct stream: with
/// `max_rate_per_partition` 7/s and a 1 s batch, 7 records per partition per batch, and
/// `max_per_partition` lowers it further for the stream that sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_and_the_per_partition_cap_bound_each_batch() {
    let broker = TestBroker::start().unwrap();
    let topic = "kd-rate";
    broker.create_topic(topic, 2).unwrap();
    produce(&broker, topic, 0..40, 2);
    for (cap, per_batch) in [(None, vec![14, 14, 12]), (Some(5), vec![10, 10, 10, 10])] {
        let seen: Seen = Arc::default();
        let mut o = options(&broker, &[topic]);
        if let Some(cap) = cap {
            o = o.max_per_partition(cap);
        }
        let s = Arc::clone(&seen);
        let mut clock = ManualClock::with_config(
            1000,
            2,
            |config| config.rate.max_rate_per_partition = Some(7.0),
            move |ctx| {
                let s = Arc::clone(&s);
                ctx.kafka_direct_stream(o.clone())
                    .uid("kafka")
                    .foreach_batch(move |batch| {
                        let values = batch
                            .iter()
                            .map(|r| r.value_str().unwrap().to_owned())
                            .collect();
                        note(&s, batch.time_ms, batch.offset_ranges.clone(), values);
                        Ok(())
                    });
            },
        )
        .unwrap();
        clock.run(per_batch.len()).await.unwrap();
        let sizes: Vec<usize> = seen
            .lock()
            .unwrap()
            .values()
            .map(|(_, v)| v.len())
            .collect();
        assert_eq!(sizes, per_batch, "cap {cap:?}");
        let (mut values, _) = values_once(&seen);
        values.sort();
        assert_eq!(values, expected(0..40));
    }
}

/// A partition the checkpoint holds a position for is gone from the broker (its topic was
/// deleted): with `fail`, planning fails naming it; with `latest`, it is dropped with a
/// report and the other topics go on. (Shown with a second broker that lacks the topic:
/// deleting a topic on tansu crashes librdkafka, docs/kafka.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_topic_fails_or_is_dropped_as_the_policy_says() {
    let (first_broker, second_broker) =
        (TestBroker::start().unwrap(), TestBroker::start().unwrap());
    for broker in [&first_broker, &second_broker] {
        broker.create_topic("kd-del-a", 1).unwrap();
        produce(broker, "kd-del-a", 0..10, 1);
    }
    first_broker.create_topic("kd-del-b", 1).unwrap();
    produce(&first_broker, "kd-del-b", 10..20, 1);
    let swap = across_a_broker_swap(
        [&first_broker, &second_broker],
        "kd-del",
        |broker| {
            KafkaDirectOptions::pattern(broker.bootstrap(), "^kd-del-")
                .name("del")
                .request_timeout(Duration::from_millis(1500))
        },
        (OffsetResetPolicy::Latest, || {
            produce(&second_broker, "kd-del-a", 20..25, 1)
        }),
        [20, 25],
    )
    .await;
    assert!(
        swap.cause.contains(
            "topic kd-del-b partition 0 (next offset 10) is not in the broker's metadata"
        ),
        "{}",
        swap.cause
    );
    let (mut values, ends) = values_once(&swap.seen);
    values.sort();
    assert_eq!(values, expected(0..25));
    assert_eq!(ends.get(&("kd-del-a".to_owned(), 0)), Some(&15));
    assert_eq!(
        swap.resets,
        BTreeSet::from([("kd-del-b".to_owned(), 0, 10, None)])
    );
}

/// `read_committed` is the default: records of a transaction that is still open (on this
/// broker, every transaction: it cannot end one) are not read, and the records before them
/// are; `isolation.level=read_uncommitted`, set through the options, reads them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_by_default_and_overridable() {
    let broker = TestBroker::start().unwrap();
    let topic = "kd-txn";
    broker.create_topic(topic, 1).unwrap();
    produce(&broker, topic, 0..10, 1);
    let transactional: BaseProducer = broker
        .client_config()
        .set("transactional.id", "kd-txn-open")
        .create()
        .unwrap();
    transactional.init_transactions(PATIENCE).unwrap();
    transactional.begin_transaction().unwrap();
    for i in 10..15 {
        let value = format!("v{i}");
        transactional
            .send(BaseRecord::<(), _>::to(topic).payload(&value).partition(0))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    transactional.flush(PATIENCE).unwrap();

    assert_eq!(
        one_batch(options(&broker, &[topic])).await,
        expected(0..10),
        "read_committed: the open transaction's records are not read"
    );
    let uncommitted = options(&broker, &[topic]).set("isolation.level", "read_uncommitted");
    assert_eq!(one_batch(uncommitted).await, expected(0..15));
}
