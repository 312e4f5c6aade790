//! The test broker's conformance, checked with an independent client (rdkafka used directly,
//! none of weir's code): what every later Kafka test relies on works, and what the broker
//! does not support fails in the exact way written down in docs/kafka.md ("The test broker"),
//! so that a broker upgrade that fixes it makes a test fail and say so.
//!
//! Also the harness itself (`weir::kafka::testing::TestBroker`): a restart on the same port and
//! storage keeps topics and offsets; a paused (SIGSTOP) broker answers nothing until resumed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, DeliveryResult, Header, Headers, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{Message, Offset, Timestamp, TopicPartitionList};
use weir::kafka::testing::TestBroker;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(120);

/// Records in the main test (≥ 10 000, over [`PARTITIONS`] partitions).
const RECORDS: usize = 12_000;

/// Partitions of the main test's topic.
const PARTITIONS: i32 = 4;

/// The create time of record `i` is `BASE_TS + i` ms.
const BASE_TS: i64 = 1_700_000_000_000;

/// Where record `i` went: `(partition, offset)`, or the delivery error.
type Delivery = Result<(i32, i64), String>;

/// A record's headers as received: `(key, value)`.
type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// Where each delivered record went, by record index.
#[derive(Default)]
struct Deliveries(Mutex<BTreeMap<usize, Delivery>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, i: usize) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.0.lock().unwrap().insert(i, outcome);
    }
}

/// A batching producer: 20 ms linger, 64 KiB batches, acks from all replicas.
fn batching_producer(broker: &TestBroker, extra: &[(&str, &str)]) -> BaseProducer<Deliveries> {
    let mut config = broker.client_config();
    config
        .set("linger.ms", "20")
        .set("batch.size", "65536")
        .set("acks", "all")
        .set("enable.idempotence", "false");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create_with_context(Deliveries::default()).unwrap()
}

/// The record `i` of the main test: key, value, headers, create time.
fn record_parts(i: usize) -> (String, String, OwnedHeaders, i64) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "idx",
            value: Some(&i.to_string()),
        })
        .insert(Header {
            key: "bin",
            value: Some(&[0u8, 255, (i % 256) as u8][..]),
        });
    (
        format!("k{i}"),
        format!("v{i}"),
        headers,
        BASE_TS + i64::try_from(i).unwrap(),
    )
}

/// Sends records `range` to `topic` (record `i` to partition `i % partitions`, or the
/// partitioner's choice when `partitions` is `None`), then flushes; returns the deliveries.
fn produce(
    producer: &BaseProducer<Deliveries>,
    topic: &str,
    range: std::ops::Range<usize>,
    partitions: Option<i32>,
) -> BTreeMap<usize, Delivery> {
    let deadline = Instant::now() + WAIT;
    for i in range {
        let (key, value, headers, ts) = record_parts(i);
        let mut record = BaseRecord::with_opaque_to(topic, i)
            .key(&key)
            .payload(&value)
            .headers(headers)
            .timestamp(ts);
        if let Some(p) = partitions {
            record = record.partition(i32::try_from(i).unwrap() % p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    assert!(Instant::now() < deadline, "the producer queue stays full");
                    record = back;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => panic!("producing record {i}: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(WAIT).expect("flushing the producer");
    std::mem::take(&mut *producer.context().0.lock().unwrap())
}

/// An assign-only consumer (no group), partition EOF reported.
fn plain_consumer(broker: &TestBroker) -> BaseConsumer {
    broker
        .client_config()
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("group.id", "weir-conformance-plain")
        .create()
        .unwrap()
}

/// What a consumer received.
struct Polled {
    /// `(topic, partition, offset)` → record index parsed from the value.
    records: Vec<((String, i32, i64), usize)>,
    /// Per record index: its headers and timestamp as received.
    meta: HashMap<usize, (HeaderList, Timestamp)>,
    /// Partitions that reported end-of-partition (since their last record). The error names
    /// no topic: the consumers that use it read one topic.
    eofs: std::collections::BTreeSet<i32>,
}

/// Polls `consumer` until `done(&received)`, at most [`WAIT`] (then the test fails).
fn poll_until(consumer: &BaseConsumer, mut done: impl FnMut(&Polled) -> bool) -> Polled {
    let mut polled = Polled {
        records: Vec::new(),
        meta: HashMap::new(),
        eofs: Default::default(),
    };
    let deadline = Instant::now() + WAIT;
    while !done(&polled) {
        assert!(
            Instant::now() < deadline,
            "consumer: not done after {WAIT:?}: {} records, EOF on {:?}",
            polled.records.len(),
            polled.eofs
        );
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Ok(message)) => note(&mut polled, &message),
            Some(Err(KafkaError::PartitionEOF(p))) => {
                polled.eofs.insert(p);
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
        }
    }
    polled
}

/// Adds `message` to `polled`.
fn note(polled: &mut Polled, message: &BorrowedMessage<'_>) {
    let value = std::str::from_utf8(message.payload().unwrap()).unwrap();
    let i: usize = value.strip_prefix('v').unwrap().parse().unwrap();
    polled.eofs.remove(&message.partition());
    polled.records.push((
        (
            message.topic().to_owned(),
            message.partition(),
            message.offset(),
        ),
        i,
    ));
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default();
    polled.meta.insert(i, (headers, message.timestamp()));
}

/// The main conformance run: batched produce over partitions, watermarks, a fetch from the
/// middle, group commits read back, and one full consume with headers and timestamps.
#[test]
fn batched_produce_offsets_fetch_commits_and_full_consume() {
    let broker = TestBroker::start().unwrap();
    let topic = "conformance";
    broker.create_topic(topic, PARTITIONS).unwrap();
    let log = broker.log_path();

    // Produce: every record delivered, offsets per partition 0, 1, 2, … without a gap.
    let producer = batching_producer(&broker, &[]);
    let started = Instant::now();
    let deliveries = produce(&producer, topic, 0..RECORDS, Some(PARTITIONS));
    let produce_time = started.elapsed();
    assert_eq!(deliveries.len(), RECORDS, "broker log: {}", log.display());
    let mut at: HashMap<(i32, i64), usize> = HashMap::new();
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (i, outcome) in &deliveries {
        let (p, offset) = outcome
            .clone()
            .unwrap_or_else(|e| panic!("record {i} not delivered: {e} (log {})", log.display()));
        assert_eq!(p, i32::try_from(*i).unwrap() % PARTITIONS);
        assert!(
            at.insert((p, offset), *i).is_none(),
            "two records at {p}/{offset}"
        );
        per_partition.entry(p).or_default().push(offset);
    }
    let per = RECORDS / usize::try_from(PARTITIONS).unwrap();
    for (p, offsets) in &mut per_partition {
        offsets.sort_unstable();
        let expected: Vec<i64> = (0..i64::try_from(per).unwrap()).collect();
        assert_eq!(*offsets, expected, "partition {p}: offsets not 0..{per}");
    }
    eprintln!("produced {RECORDS} records in {produce_time:?}");

    // List offsets: earliest 0, high watermark = records produced to the partition.
    let consumer = plain_consumer(&broker);
    for p in 0..PARTITIONS {
        let (low, high) = consumer.fetch_watermarks(topic, p, WAIT).unwrap();
        assert_eq!(
            (low, high),
            (0, i64::try_from(per).unwrap()),
            "partition {p}"
        );
    }

    // Fetch from a middle offset: exactly the records from there to the end, in order.
    let middle = i64::try_from(per / 2).unwrap() + 7;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 1, Offset::Offset(middle))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let polled = poll_until(&consumer, |p| !p.eofs.is_empty());
    let offsets: Vec<i64> = polled.records.iter().map(|((_, _, o), _)| *o).collect();
    let expected: Vec<i64> = (middle..i64::try_from(per).unwrap()).collect();
    assert_eq!(
        offsets, expected,
        "fetch from offset {middle} of partition 1"
    );
    for ((_, p, o), i) in &polled.records {
        assert_eq!(at[&(*p, *o)], *i, "the record at {p}/{o}");
    }
    consumer.unassign().unwrap();

    // Consumer-group commits, read back by another consumer of the same group.
    let group = "weir-conformance-group";
    let committer: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut commits = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        commits
            .add_partition_offset(topic, p, Offset::Offset(i64::from(p) * 100 + 17))
            .unwrap();
    }
    committer.commit(&commits, CommitMode::Sync).unwrap();
    let reader: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut ask = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        ask.add_partition(topic, p);
    }
    let committed = reader.committed_offsets(ask, WAIT).unwrap();
    for p in 0..PARTITIONS {
        let got = committed.find_partition(topic, p).unwrap().offset();
        assert_eq!(
            got,
            Offset::Offset(i64::from(p) * 100 + 17),
            "partition {p}"
        );
    }

    // Consume everything once through a subscription: every record exactly once, with its
    // headers and create time.
    let all: BaseConsumer = broker
        .client_config()
        .set("group.id", "weir-conformance-all")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    all.subscribe(&[topic]).unwrap();
    let started = Instant::now();
    let polled = poll_until(&all, |p| {
        p.records.len() >= RECORDS && p.eofs.len() == usize::try_from(PARTITIONS).unwrap()
    });
    eprintln!(
        "consumed {} records in {:?}",
        polled.records.len(),
        started.elapsed()
    );
    let mut seen = vec![0u32; RECORDS];
    for ((_, p, o), i) in &polled.records {
        seen[*i] += 1;
        assert_eq!(at[&(*p, *o)], *i, "the record at {p}/{o}");
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .filter(|(_, n)| **n != 1)
        .map(|(i, n)| (i, *n))
        .take(10)
        .collect();
    assert!(wrong.is_empty(), "records not seen exactly once: {wrong:?}");
    for i in 0..RECORDS {
        let (headers, ts) = &polled.meta[&i];
        let idx = i.to_string().into_bytes();
        assert_eq!(
            *headers,
            vec![
                ("idx".to_owned(), Some(idx)),
                ("bin".to_owned(), Some(vec![0, 255, (i % 256) as u8])),
            ],
            "record {i}'s headers"
        );
        assert_eq!(
            *ts,
            Timestamp::CreateTime(BASE_TS + i64::try_from(i).unwrap()),
            "record {i}'s timestamp"
        );
    }
}

/// A restart (SIGTERM, start again on the same port and storage) keeps topics, offsets and
/// committed group offsets; a SIGKILL does too (what the broker acknowledged is on disk); a
/// paused broker answers no metadata request until resumed.
#[test]
fn harness_restart_kill_and_pause() {
    let mut broker = TestBroker::start().unwrap();
    let addr = broker.addr();
    broker.create_topic("survives", 2).unwrap();
    let producer = batching_producer(&broker, &[]);
    let delivered = produce(&producer, "survives", 0..200, Some(2));
    assert!(delivered.values().all(Result::is_ok), "{delivered:?}");
    drop(producer);

    broker.restart().unwrap();
    assert_eq!(broker.addr(), addr, "a restart keeps the port");
    let consumer = plain_consumer(&broker);
    for p in 0..2 {
        assert_eq!(
            consumer.fetch_watermarks("survives", p, WAIT).unwrap(),
            (0, 100),
            "partition {p} after a restart"
        );
    }

    let producer = batching_producer(&broker, &[]);
    let delivered = produce(&producer, "survives", 200..300, Some(2));
    assert!(delivered.values().all(Result::is_ok), "{delivered:?}");
    drop(producer);
    broker.kill();
    assert!(!broker.is_running());
    broker.start_again().unwrap();
    let consumer = plain_consumer(&broker);
    for p in 0..2 {
        assert_eq!(
            consumer.fetch_watermarks("survives", p, WAIT).unwrap(),
            (0, 150),
            "partition {p} after a SIGKILL"
        );
    }

    broker.pause().unwrap();
    let paused = Instant::now();
    let asked = consumer.fetch_watermarks("survives", 0, Duration::from_secs(2));
    assert!(
        asked.is_err(),
        "a paused broker answered: {asked:?} after {:?}",
        paused.elapsed()
    );
    broker.resume().unwrap();
    assert_eq!(
        consumer.fetch_watermarks("survives", 0, WAIT).unwrap(),
        (0, 150),
        "after resume"
    );
    let status = broker.stop().unwrap().expect("it was running");
    assert!(!broker.is_running(), "stopped with {status}");
}

/// Transactions: `InitProducerId` works (so `init_transactions` and transactional sends
/// succeed) but the broker has no `EndTxn`, so `commit_transaction` and `abort_transaction`
/// fail and the records stay in an open transaction: a `read_committed` consumer's end offset
/// (the last stable offset) stays 0 while the log's high watermark is past them.
#[test]
fn transactions_cannot_commit_or_abort() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("txn", 1).unwrap();
    let producer: BaseProducer<Deliveries> = broker
        .client_config()
        .set("transactional.id", "weir-conformance-txn")
        .set("transaction.timeout.ms", "10000")
        .create_with_context(Deliveries::default())
        .unwrap();
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("init_transactions (InitProducerId)");
    producer.begin_transaction().unwrap();
    let sent = produce(&producer, "txn", 0..10, Some(1));
    let offsets: Vec<_> = sent.values().cloned().collect();
    assert_eq!(offsets, (0..10).map(|o| Ok((0, o))).collect::<Vec<_>>());

    let commit = producer.commit_transaction(Duration::from_secs(30));
    match &commit {
        Err(e @ KafkaError::Transaction(_)) => {
            assert_eq!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnsupportedFeature),
                "{e}"
            );
            assert!(e.to_string().contains("EndTxnRequest"), "{e}");
        }
        Ok(()) => panic!(
            "the broker now commits transactions (EndTxn): update docs/kafka.md (\"The test \
             broker\") and run the transactional sink's tests against it"
        ),
        Err(e) => panic!("commit_transaction: {e}"),
    }

    // A second transactional producer that aborts instead: the same missing request.
    let aborter: BaseProducer<Deliveries> = broker
        .client_config()
        .set("transactional.id", "weir-conformance-txn-abort")
        .create_with_context(Deliveries::default())
        .unwrap();
    aborter.init_transactions(Duration::from_secs(30)).unwrap();
    aborter.begin_transaction().unwrap();
    let sent = produce(&aborter, "txn", 10..15, Some(1));
    assert!(sent.values().all(Result::is_ok), "{sent:?}");
    let abort = aborter.abort_transaction(Duration::from_secs(30));
    match &abort {
        Err(e @ KafkaError::Transaction(_)) => {
            assert_eq!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::UnsupportedFeature),
                "{e}"
            );
            assert!(e.to_string().contains("EndTxnRequest"), "{e}");
        }
        Ok(()) => panic!(
            "the broker now aborts transactions (EndTxn): update docs/kafka.md (\"The test \
             broker\") and run the transactional sink's tests against it"
        ),
        Err(e) => panic!("abort_transaction: {e}"),
    }

    // The records are in the log, but in transactions that never end: a read_committed
    // consumer's end offset (the last stable offset) stays at 0.
    let end_offsets = |isolation: &str| {
        let consumer: BaseConsumer = broker
            .client_config()
            .set("group.id", "weir-conformance-txn-reader")
            .set("isolation.level", isolation)
            .create()
            .unwrap();
        consumer.fetch_watermarks("txn", 0, WAIT).unwrap()
    };
    assert_eq!(end_offsets("read_uncommitted"), (0, 15));
    assert_eq!(
        end_offsets("read_committed"),
        (0, 0),
        "the last stable offset moved: do transactions end now?"
    );
}

/// The idempotent producer (`enable.idempotence`): it gets a producer id and every record is
/// written once.
#[test]
fn idempotent_producer_writes_each_record_once() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("idem", 2).unwrap();
    let producer = batching_producer(&broker, &[("enable.idempotence", "true")]);
    let delivered = produce(&producer, "idem", 0..1000, Some(2));
    assert_eq!(delivered.len(), 1000);
    let failed: Vec<_> = delivered
        .iter()
        .filter(|(_, r)| r.is_err())
        .take(3)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    let consumer = plain_consumer(&broker);
    for p in 0..2 {
        assert_eq!(
            consumer.fetch_watermarks("idem", p, WAIT).unwrap(),
            (0, 500),
            "partition {p}"
        );
    }
}

/// `CreatePartitions` is not advertised by the broker: librdkafka refuses it before sending,
/// and the topic keeps its partitions.
#[test]
fn create_partitions_is_unsupported() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("grow", 2).unwrap();
    let admin: AdminClient<DefaultClientContext> = broker.client_config().create().unwrap();
    let grow = NewPartitions::new("grow", 4);
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(15)));
    let result = futures::executor::block_on(admin.create_partitions([&grow], &options));
    match result {
        Err(KafkaError::AdminOp(RDKafkaErrorCode::UnsupportedFeature)) => {}
        Ok(results) if results.iter().all(Result::is_ok) => panic!(
            "the broker now supports CreatePartitions: update docs/kafka.md (\"The test \
             broker\") and test partitions added at run time"
        ),
        other => panic!("CreatePartitions: {other:?}"),
    }
    let consumer = plain_consumer(&broker);
    let metadata = consumer.fetch_metadata(Some("grow"), WAIT).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 2);
}

/// A pattern subscription picks up a topic created after it started, from earliest, and
/// (positions committed) a rebalance does not redeliver the old topic's records.
#[test]
fn pattern_subscription_sees_new_topic() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("wpat-a", 1).unwrap();
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", "weir-conformance-pattern")
        .set("auto.offset.reset", "earliest")
        .set("topic.metadata.refresh.interval.ms", "500")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&["^wpat-.*"]).unwrap();
    let producer = batching_producer(&broker, &[]);
    produce(&producer, "wpat-a", 0..10, Some(1));
    let first = poll_until(&consumer, |p| p.records.len() >= 10);
    assert!(first.records.iter().all(|((t, _, _), _)| t == "wpat-a"));
    consumer.commit_consumer_state(CommitMode::Sync).unwrap();

    broker.create_topic("wpat-b", 2).unwrap();
    produce(&producer, "wpat-b", 10..30, Some(2));
    let started = Instant::now();
    let second = poll_until(&consumer, |p| p.records.len() >= 20);
    eprintln!(
        "new topic's records read {:?} after it was written",
        started.elapsed()
    );
    let mut got: Vec<(String, usize)> = second
        .records
        .iter()
        .map(|((t, _, _), i)| (t.clone(), *i))
        .collect();
    got.sort_unstable();
    let expected: Vec<(String, usize)> = (10..30).map(|i| ("wpat-b".to_owned(), i)).collect();
    assert_eq!(got, expected);
}

/// Offsets for times (`ListOffsets` with a timestamp): the first offset whose create time is
/// at or after the timestamp — except past the last record, where Kafka answers "none" (-1,
/// librdkafka's `Offset::End`) and this broker answers offset 0.
#[test]
fn offsets_for_times() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("times", 1).unwrap();
    let producer = batching_producer(&broker, &[]);
    produce(&producer, "times", 0..100, Some(1));
    let consumer = plain_consumer(&broker);
    let lookup = |ts: i64| {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("times", 0, Offset::Offset(ts))
            .unwrap();
        let found = consumer.offsets_for_times(tpl, WAIT).unwrap();
        let entry = found.find_partition("times", 0).unwrap();
        entry.error().unwrap();
        entry.offset()
    };
    assert_eq!(lookup(BASE_TS - 1), Offset::Offset(0));
    assert_eq!(lookup(BASE_TS), Offset::Offset(0));
    assert_eq!(lookup(BASE_TS + 42), Offset::Offset(42));
    assert_eq!(lookup(BASE_TS + 99), Offset::Offset(99));
    let past = lookup(BASE_TS + 1000);
    assert_ne!(
        past,
        Offset::End,
        "the broker now answers a timestamp past the last record as Kafka does: update \
         docs/kafka.md (\"The test broker\") and this test"
    );
    assert_eq!(past, Offset::Offset(0), "past the last record");
}

/// A broker that exits at once is reported as not ready, with its exit status and its log
/// file named; a binary that does not exist, with its path.
#[test]
fn harness_reports_a_broker_that_cannot_start() {
    let err = TestBroker::start_with(std::path::Path::new("/bin/false")).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, weir::kafka::testing::BrokerError::NotReady(_)),
        "{message}"
    );
    assert!(message.contains("exited with"), "{message}");
    // The log it names is kept for the post-mortem.
    let log = named_log(&message);
    assert!(log.is_file(), "{} is gone: {message}", log.display());
    std::fs::remove_dir_all(log.parent().unwrap()).unwrap();

    let missing = std::path::Path::new("/nonexistent/tansu");
    let message = TestBroker::start_with(missing).unwrap_err().to_string();
    assert!(message.contains("/nonexistent/tansu"), "{message}");
    std::fs::remove_dir_all(named_log(&message).parent().unwrap()).unwrap();
}

/// The log file a harness error names (`broker log: PATH` up to `;` or `)`).
fn named_log(message: &str) -> std::path::PathBuf {
    let log = message
        .split("broker log: ")
        .nth(1)
        .and_then(|rest| rest.split([';', ')']).next())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| panic!("no log named in: {message}"));
    assert!(log.ends_with("broker.log"), "{message}");
    log
}
