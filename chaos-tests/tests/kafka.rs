//! The Kafka workload (feature `kafka`): a job reading a 4-partition topic through the Kafka
//! direct stream and writing through the exactly-once Kafka sink (`KafkaSinkMode::ExactlyOnce`)
//! to a 3-partition topic, on a real Kafka-protocol broker (tansu, started on 127.0.0.1),
//! while an independent producer (rdkafka, none of weir's code) writes numbered records and
//! every actor kind of the engine is killed, twice, in a seeded order. At the end the output
//! topic, read back by an independent consumer, must hold every input record's contribution
//! exactly once.
//!
//! The job: each input record `r-<n>` (n unique) becomes `(r-<n>, 1)`, summed per key by
//! `reduce_by_key` (a shuffle, so executors exchange data) and written as the record
//! `r-<n> → count` stamped with its batch time. A record read twice (a batch's ranges read
//! again into another batch) shows as two output records of one key; a batch written twice,
//! or in part twice, as two records of one key or one (partition, batch, index) stamp; a lost
//! one as a key missing. So: every key once, with count 1.
//!
//! How it differs from `tests/kills.rs`: the harness's `Workload` trait builds a raw
//! `weir_actors` pipeline with receivers, and the Kafka direct stream is a planned source of
//! `weir::StreamingContext` (no receiver, no WAL), so the `Runner` cannot run it. This test
//! uses the harness's `Schedule::each_kind` and `ActorKind` names, kills the actors of the
//! context's engine by name as the runner does (`ractor::registry::where_is`, then `kill`),
//! and awaits the same recovery (the actor failed, started again, and a batch with records
//! completed). There are no receivers, so the receiver kinds are not in the schedule (the
//! receiver trackers are, and are killed). The runner's recorded invariants (acknowledged
//! records, WAL blocks, commits per attempt) do not apply: the proof is the output topic.
//!
//! Replay a run with `WEIR_CHAOS_SEED=<seed>` (the seed is printed).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir::kafka::sink::{KafkaRecordOut, KafkaSink, KafkaSinkMode};
use weir::kafka::testing::{TestBroker, group_positions, read_topic};
use weir::kafka::{KafkaDirectOptions, KafkaRecord};
use weir::{StreamingConfig, StreamingContext};
use weir_actors::{Event, EventSubscription};
use weir_chaos_tests::{
    ActorKind, Fault, Recorder, Schedule, Summary, chaos_config, seed_from_env,
};

const INPUT: &str = "chaos-in";
const INPUT_PARTITIONS: i32 = 4;
const OUTPUT: &str = "chaos-out";
const OUTPUT_PARTITIONS: i32 = 3;
const GROUP: &str = "kafka-chaos";
const ROUNDS: usize = 2;
/// How long one recovery (or the final catch-up) may take, on 2 loaded cores.
const RECOVERY: Duration = Duration::from_secs(60);

/// The producer: records `r-<n>`, keyless (spread over the partitions by the client), about
/// 200 a second in small bursts (well below what the job handles while it is being killed on
/// 2 loaded cores, so that it catches up), until `stop`; returns how many it wrote, all
/// acknowledged.
fn produce(client: &ClientConfig, stop: &AtomicBool) -> u64 {
    let producer: BaseProducer = client
        .clone()
        .set("linger.ms", "10")
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..10 {
            let value = format!("r-{n:08}");
            producer
                .send(BaseRecord::<(), _>::to(INPUT).payload(&value))
                .unwrap();
            n += 1;
        }
        producer.poll(Duration::ZERO);
        // Pacing of the producer (records arrive during the kills), not synchronisation.
        std::thread::sleep(Duration::from_millis(50));
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    n
}

/// The input's high watermarks and the group's committed offsets, per partition (an
/// independent client). The broker may be slow to answer on loaded cores: a failed request is
/// an error, for the caller to ask again.
fn positions(client: &ClientConfig) -> Result<(Vec<i64>, Vec<i64>), KafkaError> {
    group_positions(client, GROUP, INPUT, INPUT_PARTITIONS)
}

/// One output record: (partition, key, count, batch, index).
type Out = (i32, String, u64, u64, u64);

/// Every record of the output topic, read from the start until each partition's end.
fn read_output(client: &ClientConfig) -> Vec<Out> {
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
                r.header(name).expect("the sink's headers").parse().unwrap()
            };
            (
                r.partition,
                r.key.clone(),
                r.value.parse().unwrap(),
                header("weir.batch"),
                header("weir.index"),
            )
        })
        .collect()
}

fn job(config: StreamingConfig, bootstrap: &str) -> Result<StreamingContext, weir::Error> {
    let mut config = config.batch_interval(Duration::from_millis(200));
    // The harness's engine settings (restart budgets that heal repeated kills rather than
    // give up, overlapping checkpoints), over the context's.
    let chaos = chaos_config(config.engine.storage.clone(), "kafka-chaos/");
    config.engine.name_prefix = chaos.name_prefix;
    config.engine.executors = chaos.executors;
    config.engine.driver_policy = chaos.driver_policy;
    config.engine.executor_policy = chaos.executor_policy;
    config.engine.checkpoint_policy.max_concurrent = chaos.checkpoint_policy.max_concurrent;
    config.engine.graceful_stop_timeout = chaos.graceful_stop_timeout;
    config.parallelism = 2;
    let ctx = StreamingContext::new(config);
    let sink = KafkaSink::builder(bootstrap, OUTPUT)
        .mode(KafkaSinkMode::ExactlyOnce)
        .writer_id("kafka-chaos")
        .build()
        .map_err(|e| weir::Error::Config(e.to_string()))?;
    ctx.kafka_direct_stream(
        KafkaDirectOptions::topics(bootstrap, [INPUT])
            .group_id(GROUP)
            .max_per_partition(500),
    )
    .uid("input")
    .map(|r: &KafkaRecord| (r.value_str().unwrap_or_default().to_owned(), 1u64))
    .reduce_by_key(|a, b| a + b)
    .uid("counts")
    .write_to_kafka(sink, |(id, n): &(String, u64)| {
        KafkaRecordOut::keyed(id.as_bytes(), n.to_string())
    });
    Ok(ctx)
}

/// Waits (at most [`RECOVERY`]) until `done` says so for an event.
async fn wait_for(events: &mut EventSubscription, mut done: impl FnMut(&Event) -> bool) -> bool {
    tokio::time::timeout(RECOVERY, async {
        while let Some(r) = events.next().await {
            if done(&r.event) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_source_and_exactly_once_sink_with_every_actor_kind_killed() {
    let seed = seed_from_env();
    let started = Instant::now();
    // Owned here (the threads get client configurations), so a failing test stops it.
    let broker = TestBroker::start().unwrap();
    broker.create_topic(INPUT, INPUT_PARTITIONS).unwrap();
    broker.create_topic(OUTPUT, OUTPUT_PARTITIONS).unwrap();
    let client = broker.client_config();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (client, stop) = (client.clone(), Arc::clone(&stop));
        std::thread::spawn(move || produce(&client, &stop))
    };

    let dir = tempfile::tempdir().unwrap();
    let bootstrap = broker.bootstrap();
    let mut ctx = StreamingContext::get_or_create(dir.path(), |config| job(config, &bootstrap))
        .await
        .unwrap();
    let names = ctx.config().engine.names();
    ctx.start().await.unwrap();
    let recorder = Recorder::new();
    let recording = {
        let (mut events, recorder) = (ctx.events().unwrap(), recorder.clone());
        tokio::spawn(async move {
            while let Some(r) = events.next().await {
                recorder.event(&r.event);
            }
        })
    };
    let mut events = ctx.events().unwrap();
    // A completed batch that read records (a planned source's records are in `BatchInputs`,
    // published after `BatchCompleted`; `BatchCompleted` counts received records only).
    let with_records = |e: &Event| matches!(e, Event::BatchInputs { records, .. } if *records > 0);
    assert!(
        wait_for(&mut events, with_records).await,
        "no batch with records completed"
    );

    // No receivers: the kinds of a direct-stream engine.
    let actors = ActorKind::all(&[], 2);
    let schedule = Schedule::each_kind(
        seed,
        &actors,
        ROUNDS,
        Duration::ZERO,
        Duration::from_millis(300),
    );
    let start = tokio::time::Instant::now();
    for step in &schedule.steps {
        let Fault::Kill(kind) = step.fault else {
            continue;
        };
        tokio::time::sleep_until(start + step.at).await;
        let name = kind.name(&names);
        while events.try_next().is_some() {}
        let cell = match ractor::registry::where_is(name.clone()) {
            Some(cell) => cell,
            None => {
                // Still restarting after an earlier kill (the driver's restart rebuilds all).
                let found = wait_for(
                    &mut events,
                    |e| matches!(e, Event::ActorStarted { actor } if *actor == name),
                )
                .await;
                assert!(found, "seed {seed}: {name} never ran");
                ractor::registry::where_is(name.clone()).unwrap()
            }
        };
        let index = recorder.fault(step.fault, None);
        cell.kill();
        let (mut failed, mut restarted) = (false, false);
        let healed = wait_for(&mut events, |e| match e {
            Event::ActorFailed { actor, .. } if *actor == name => {
                failed = true;
                false
            }
            Event::ActorStarted { actor } if failed && *actor == name => {
                restarted = true;
                false
            }
            e => restarted && with_records(e),
        })
        .await;
        assert!(
            healed,
            "seed {seed}: no batch with records completed after {name} was killed (failed {failed}, restarted {restarted})"
        );
        recorder.recovered(index, true);
    }

    stop.store(true, Ordering::SeqCst);
    let produced = tokio::task::spawn_blocking(move || producer.join().unwrap())
        .await
        .unwrap();
    // The group's committed offsets reach the input's ends once every batch up to them
    // completed; and the ends hold what the producer wrote: every record in the input once.
    let deadline = Instant::now() + RECOVERY;
    loop {
        let c = client.clone();
        let seen = match tokio::task::spawn_blocking(move || positions(&c))
            .await
            .unwrap()
        {
            Ok((ends, committed)) => {
                assert_eq!(
                    ends.iter().sum::<i64>() as u64,
                    produced,
                    "records in the input"
                );
                if committed == ends {
                    break;
                }
                format!("committed {committed:?} of the input's ends {ends:?}")
            }
            Err(e) => format!("the broker did not answer: {e}"),
        };
        assert!(Instant::now() < deadline, "seed {seed}: {seen}");
        wait_for(&mut events, |e| matches!(e, Event::BatchCompleted { .. })).await;
    }
    ctx.stop(true).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), recording).await;

    let c = client.clone();
    let output = tokio::task::spawn_blocking(move || read_output(&c))
        .await
        .unwrap();
    let mut per_key: BTreeMap<&str, u64> = BTreeMap::new();
    let mut stamps = BTreeSet::new();
    for (partition, key, count, batch, index) in &output {
        *per_key.entry(key).or_insert(0) += count;
        assert!(
            stamps.insert((partition, batch, index)),
            "seed {seed}: the stamp (partition {partition}, batch {batch}, index {index}) twice"
        );
    }
    let twice: Vec<_> = output.iter().filter(|o| o.2 != 1).collect();
    assert!(
        twice.is_empty(),
        "seed {seed}: counts other than 1: {twice:?}"
    );
    assert_eq!(
        output.len(),
        per_key.len(),
        "seed {seed}: keys written more than once"
    );
    let expected: Vec<String> = (0..produced).map(|n| format!("r-{n:08}")).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|k| !per_key.contains_key(k.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "seed {seed}: {} records lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(
        per_key.len() as u64,
        produced,
        "seed {seed}: keys not in the input"
    );

    let summary = Summary::of(&recorder.history(), Some(seed));
    for kind in &actors {
        assert!(
            summary.kills[kind.label()] >= ROUNDS as u64,
            "{kind} killed {} times",
            summary.kills[kind.label()]
        );
    }
    let batches: BTreeSet<u64> = output.iter().map(|o| o.3).collect();
    println!(
        "{} kills ({:?}); recovery p50 {:?}, max {:?}; {} actor failures; {produced} records over {INPUT_PARTITIONS} partitions, each once in {} output records of {} batches; {:.1} s",
        schedule.steps.len(),
        summary.kills,
        summary.recovery_p50,
        summary.recovery_max,
        summary.actor_failures,
        output.len(),
        batches.len(),
        started.elapsed().as_secs_f64()
    );
}
