//! The receiver-based Kafka stream against the real test broker (tansu; docs/kafka.md), with
//! records produced and offsets read by an independent client (rdkafka used directly) and the
//! engine's side played by `ManualSupervisor`: what the receiver stores is every record once,
//! its offsets are committed to the group only once stored, a restarted receiver continues
//! where the stored records end (each record counted once across the restart), and a failed
//! store commits nothing, so the records are read again, not lost.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use weir::kafka::receiver::{KafkaReceiver, KafkaReceiverOptions};
use weir::kafka::testing::TestBroker;
use weir_actors::pipeline::{Receiver, StoreError, UserError};
use weir_actors::testing::ManualSupervisor;

/// Every wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// Produces `r<i>` for `i` in `range` to `topic`, record `i` to partition `i % partitions`.
fn produce(broker: &TestBroker, topic: &str, partitions: i32, range: std::ops::Range<usize>) {
    let producer: BaseProducer = broker
        .client_config()
        .set("linger.ms", "5")
        .create()
        .unwrap();
    for i in range {
        let value = format!("r{i}");
        let p = i32::try_from(i).unwrap() % partitions;
        producer
            .send(BaseRecord::<(), _>::to(topic).partition(p).payload(&value))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(WAIT).unwrap();
}

/// The group's committed offsets for `topic`'s partitions (`None`: nothing committed).
fn committed(broker: &TestBroker, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = broker
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let offsets = consumer.committed_offsets(tpl, WAIT).unwrap();
    (0..partitions)
        .map(
            |p| match offsets.find_partition(topic, p).unwrap().offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            },
        )
        .collect()
}

/// How the played supervisor answers the `n`-th block.
type Policy = fn(usize) -> bool;

/// A receiver running against a played supervisor that stores (or fails) each block.
struct Running {
    supervisor_stop: tokio::sync::oneshot::Sender<()>,
    stored: watch::Receiver<Vec<String>>,
    task: JoinHandle<Result<(), UserError>>,
}

fn run(options: KafkaReceiverOptions, store_block: Policy) -> Running {
    let (mut supervisor, ctx) = ManualSupervisor::new(0, 4);
    let (supervisor_stop, mut stop) = tokio::sync::oneshot::channel::<()>();
    let (tx, stored) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut n = 0;
        let mut stopping = false;
        loop {
            let block = if stopping {
                supervisor.next().await
            } else {
                tokio::select! {
                    block = supervisor.next() => block,
                    _ = &mut stop => {
                        stopping = true;
                        supervisor.stop();
                        continue;
                    }
                }
            };
            let Some(block) = block else { break };
            if store_block(n) {
                let records: Vec<String> = block
                    .records()
                    .iter()
                    .map(|r| String::from_utf8(r.to_vec()).unwrap())
                    .collect();
                tx.send_modify(|s| s.extend(records));
                block.stored_as(n as u64);
            } else {
                block.answer(Err(StoreError::Failed {
                    stream: 0,
                    reason: "the disk is full".into(),
                }));
            }
            n += 1;
        }
    });
    let task = tokio::spawn(async move {
        let mut receiver = KafkaReceiver::new(options);
        receiver.start(ctx).await
    });
    Running {
        supervisor_stop,
        stored,
        task,
    }
}

impl Running {
    async fn wait_stored(&mut self, n: usize) {
        let waited = timeout(WAIT, self.stored.wait_for(|s| s.len() >= n))
            .await
            .map(|r| r.map(|s| s.len()));
        let stored = self.stored.borrow().len();
        assert!(
            matches!(waited, Ok(Ok(_))),
            "{n} records were not stored in time: {stored}"
        );
    }

    async fn stop(self) -> (Result<(), UserError>, Vec<String>) {
        let _ = self.supervisor_stop.send(());
        let result = timeout(WAIT, self.task)
            .await
            .expect("the receiver stops")
            .unwrap();
        let stored = self.stored.borrow().clone();
        (result, stored)
    }
}

fn options(broker: &TestBroker, group: &str, topic: &str) -> KafkaReceiverOptions {
    KafkaReceiverOptions::new(broker.bootstrap(), group, [topic])
        .block_records(64)
        .block_interval(Duration::from_millis(50))
        .client_option("reconnect.backoff.ms", "50")
}

/// Each value of `stored`, with how many times it was stored.
fn counts(stored: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in stored {
        *out.entry(s.clone()).or_insert(0) += 1;
    }
    out
}

fn each_once(range: std::ops::Range<usize>) -> BTreeMap<String, usize> {
    range.map(|i| (format!("r{i}"), 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_records_are_committed_and_a_restart_counts_each_record_once() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("in", 3).unwrap();
    produce(&broker, "in", 3, 0..300);

    let mut first = run(options(&broker, "g", "in"), |_| true);
    first.wait_stored(300).await;
    let (result, stored_first) = first.stop().await;
    result.unwrap();
    assert_eq!(counts(&stored_first), each_once(0..300));
    // The group's position is the end of what was stored.
    assert_eq!(
        committed(&broker, "g", "in", 3),
        [Some(100), Some(100), Some(100)]
    );

    // Records that arrive while the job is down; the restarted receiver (same group) stores
    // exactly them.
    produce(&broker, "in", 3, 300..450);
    let mut second = run(options(&broker, "g", "in"), |_| true);
    second.wait_stored(150).await;
    let (result, stored_second) = second.stop().await;
    result.unwrap();
    let mut all = stored_first;
    all.extend(stored_second);
    assert_eq!(counts(&all), each_once(0..450));
    assert_eq!(
        committed(&broker, "g", "in", 3),
        [Some(150), Some(150), Some(150)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_commits_nothing_and_the_records_are_read_again() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("fails", 2).unwrap();
    produce(&broker, "fails", 2, 0..40);

    // The first block's store fails (the WAL's disk is full): the receiver fails with it.
    let failing = run(options(&broker, "g2", "fails"), |_| false);
    let result = timeout(WAIT, failing.task).await.unwrap().unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("the disk is full"), "{err}");
    assert!(failing.stored.borrow().is_empty());
    assert_eq!(committed(&broker, "g2", "fails", 2), [None, None]);

    // The engine restarts the receiver: every record is read again and stored once.
    let mut again = run(options(&broker, "g2", "fails"), |_| true);
    again.wait_stored(40).await;
    let (result, stored) = again.stop().await;
    result.unwrap();
    assert_eq!(counts(&stored), each_once(0..40));
    assert_eq!(committed(&broker, "g2", "fails", 2), [Some(20), Some(20)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_takes_partitions_over_and_no_record_is_lost_or_doubled() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("shared", 4).unwrap();
    produce(&broker, "shared", 4, 0..400);
    // A second member joins: the group rebalances, the first gives partitions up (committing
    // what it stored for them) and the second continues them from there.
    let first_options = options(&broker, "g3", "shared");
    let second_options = options(&broker, "g3", "shared");
    let (first_stats, second_stats) = (first_options.stats(), second_options.stats());
    let mut first = run(first_options, |_| true);
    first.wait_stored(400).await;
    assert_eq!(first_stats.assignment().len(), 4);
    let mut second = run(second_options, |_| true);
    // Once both hold partitions, the second half is produced: both must take part in it.
    let (mut a, mut b) = (
        first_stats.watch_assignment(),
        second_stats.watch_assignment(),
    );
    timeout(WAIT, async {
        b.wait_for(|tps| !tps.is_empty()).await.unwrap();
        a.wait_for(|tps| tps.len() < 4).await.unwrap();
    })
    .await
    .expect("the group rebalances over both members");
    assert_eq!(
        first_stats.assignment().len() + second_stats.assignment().len(),
        4
    );
    assert!(first_stats.rebalances() >= 2, "assigned, revoked");
    produce(&broker, "shared", 4, 400..800);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let total = first.stored.borrow().len() + second.stored.borrow().len();
        if total >= 800 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let mut all = first.stored.borrow().clone();
            all.extend(second.stored.borrow().iter().cloned());
            let c = counts(&all);
            let missing: Vec<String> = (0..800)
                .map(|i| format!("r{i}"))
                .filter(|r| !c.contains_key(r))
                .collect();
            panic!(
                "only {total} of 800 stored; missing {missing:?}; assigned {:?} and {:?}; \
                 dropped on revoke {} and {}; committed {:?}",
                first_stats.assignment(),
                second_stats.assignment(),
                first_stats.dropped_on_revoke(),
                second_stats.dropped_on_revoke(),
                committed(&broker, "g3", "shared", 4)
            );
        }
        // Wake on either member's next block.
        tokio::select! {
            _ = first.stored.changed() => {}
            _ = second.stored.changed() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    let (r1, mut all) = first.stop().await;
    let (r2, stored_second) = second.stop().await;
    r1.unwrap();
    r2.unwrap();
    assert!(
        !stored_second.is_empty(),
        "the second member was given no partition (no rebalance)"
    );
    all.extend(stored_second);
    assert_eq!(counts(&all), each_once(0..800));
    assert_eq!(committed(&broker, "g3", "shared", 4), [Some(200); 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_read_but_not_stored_when_revoked_are_read_again_not_lost() {
    let broker = TestBroker::start().unwrap();
    broker.create_topic("revoked", 4).unwrap();
    produce(&broker, "revoked", 4, 0..200);
    // The first member holds what it reads in its buffer (no block is due for a minute).
    let holding = options(&broker, "g4", "revoked")
        .block_records(10_000)
        .block_interval(Duration::from_secs(60));
    let first_stats = holding.stats();
    let first = run(holding, |_| true);
    timeout(WAIT, first_stats.wait_until_read(200))
        .await
        .expect("the first member reads every record");
    assert!(first.stored.borrow().is_empty(), "nothing stored yet");
    // A second member joins: the first loses partitions with their records unstored.
    let second_options = options(&broker, "g4", "revoked");
    let second_stats = second_options.stats();
    let mut second = run(second_options, |_| true);
    let mut b = second_stats.watch_assignment();
    timeout(WAIT, b.wait_for(|tps| !tps.is_empty()))
        .await
        .expect("the group rebalances over both members")
        .unwrap();
    let theirs = 50 * second_stats.assignment().len();
    second.wait_stored(theirs).await;
    // The first member reads its own partitions again from the (empty) committed position:
    // 200 before, then the records of the partitions it kept.
    let mine = 50 * first_stats.assignment().len();
    timeout(WAIT, first_stats.wait_until_read(200 + mine as u64))
        .await
        .expect("the first member reads its partitions again");
    assert!(
        first_stats.dropped_on_revoke() > 0,
        "the revoked records were dropped"
    );
    let (r1, mut all) = first.stop().await;
    let (r2, stored_second) = second.stop().await;
    r1.unwrap();
    r2.unwrap();
    all.extend(stored_second);
    assert_eq!(counts(&all), each_once(0..200));
    assert_eq!(committed(&broker, "g4", "revoked", 4), [Some(50); 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_restarted_with_get_or_create_counts_each_record_once() {
    use weir::{StreamingConfig, StreamingContext};
    let broker = TestBroker::start().unwrap();
    broker.create_topic("job-in", 2).unwrap();
    produce(&broker, "job-in", 2, 0..200);
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let build = |prefix: &'static str| {
        let (tx, options) = (tx.clone(), options(&broker, "job", "job-in"));
        move |mut config: StreamingConfig| {
            config = config.batch_interval(Duration::from_millis(100));
            config.engine.name_prefix = prefix.to_owned();
            config.engine.executors = 2;
            config.parallelism = 2;
            let ctx = StreamingContext::new(config);
            ctx.receiver_stream(options)
                .map(|b| String::from_utf8(b.to_vec()).unwrap())
                .foreach_batch(move |batch| {
                    let _ = tx.send(batch.iter().cloned().collect());
                    Ok(())
                });
            Ok(ctx)
        }
    };
    let mut seen: Vec<String> = Vec::new();
    let mut collect_until = async |seen: &mut Vec<String>, n: usize| {
        while seen.len() < n {
            let batch = timeout(WAIT, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} records counted", seen.len()))
                .expect("the output is running");
            seen.extend(batch);
        }
    };

    let mut first = StreamingContext::get_or_create(dir.path(), build("kafka-recv-1/"))
        .await
        .unwrap();
    first.start().await.unwrap();
    collect_until(&mut seen, 200).await;
    first.stop(true).await.unwrap();

    // Records produced while the job is down; the restarted job (same checkpoint directory,
    // same group) counts exactly them.
    produce(&broker, "job-in", 2, 200..300);
    let mut second = StreamingContext::get_or_create(dir.path(), build("kafka-recv-2/"))
        .await
        .unwrap();
    assert!(second.restored().is_some());
    second.start().await.unwrap();
    collect_until(&mut seen, 300).await;
    second.stop(true).await.unwrap();
    while let Ok(batch) = rx.try_recv() {
        seen.extend(batch);
    }
    assert_eq!(counts(&seen), each_once(0..300));
    assert_eq!(
        committed(&broker, "job", "job-in", 2),
        [Some(150), Some(150)]
    );
}
