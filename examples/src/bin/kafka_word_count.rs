//! Word count from Kafka to Kafka, exactly once: lines from a topic in, each batch's word
//! counts out to another topic, surviving `kill -9` at any moment (built with the `kafka`
//! feature).
//!
//! Run it against a broker on 127.0.0.1:9092 (checkpoints in
//! `./weir-data/kafka-word-count/checkpoint`):
//! ```text
//! cargo run --release -p weir-examples --features kafka --bin kafka_word_count
//! cargo run --release -p weir-examples --features kafka --bin kafka_word_count -- \
//!     --bootstrap 127.0.0.1:9092 --input-topic lines --output-topic word-counts \
//!     [--group kafka-word-count] [--batch-ms 1000] [--max-batches N] [--http-addr ADDR]
//! ```
//! Missing topics are created (`--partitions`, default 3). With no broker answering within a
//! few seconds it says so and how to start one, and exits with status 1. `--demo-rate N` also
//! produces N generated lines a second into the input topic, for a demo without a Kafka client
//! of your own.
//!
//! The program is the textbook one. The input is the Kafka direct stream
//! (`StreamingContext::kafka_direct_stream`): each batch reads an offset range of every
//! partition, planned into the checkpoint before the batch runs, so a batch run again after a
//! crash reads exactly the same records; it starts from the group's committed offsets, or from
//! the earliest on the first start, and commits each completed batch back to the group. Each
//! record's value is split into words (`Str::words`), each word paired with 1 and summed by
//! `reduce_by_key`. The counts go out through the exactly-once Kafka sink
//! (`KafkaSinkMode::ExactlyOnce`, no transactions): one record per word and batch, key = the
//! word, value = its count in that batch as decimal text, and in the headers the batch time
//! (`weir.batch`, ms) and the record's place in its batch (`weir.index` of `weir.count`). A
//! batch run again after a crash first reads what its dead attempt already wrote and writes
//! only the rest, so the output topic holds every batch's counts exactly once, and summing the
//! values per key over all batches gives each word's total
//! (`examples/tests/kafka_word_count_kill9.rs` proves it across ten `kill -9`s).
//!
//! The job must be the only writer of the output topic. Watch it with
//! `weir events --dir <checkpoint-dir>`, or the dashboard at `--http-addr`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use weir::kafka::sink::{KafkaRecordOut, KafkaSink, KafkaSinkMode};
use weir::kafka::{CommittedFallback, KafkaDirectOptions, KafkaRecord, KafkaStartingOffsets};
use weir::{DStream, Event, Storage, Str, StreamingConfig, StreamingContext};
use weir_examples::generator::TextGenerator;
use weir_examples::run::{BoxError, CommonArgs, Limits, main_with, run_until_stopped};

/// The batch interval unless a flag, the environment or `--config` says otherwise.
const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_millis(1000);

/// How long the broker has to answer before the program gives up on it (a loaded test broker
/// can take a few seconds to answer a metadata request).
const BROKER_WAIT: Duration = Duration::from_secs(5);

/// Exactly-once word count from a Kafka topic to a Kafka topic.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The Kafka brokers (`bootstrap.servers`).
    #[arg(long, value_name = "HOST:PORT[,…]", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The topic the lines are read from (one line per record value).
    #[arg(long, value_name = "TOPIC", default_value = "lines")]
    input_topic: String,
    /// The topic each batch's word counts are written to (this job must be its only writer).
    #[arg(long, value_name = "TOPIC", default_value = "word-counts")]
    output_topic: String,
    /// The consumer group the read offsets are committed to; also the sink's writer id.
    #[arg(long, value_name = "GROUP", default_value = "kafka-word-count")]
    group: String,
    /// Partitions of a topic this program creates because it does not exist.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
    /// Where checkpoints live: a directory, or (built with weir's `s3` feature)
    /// `s3://BUCKET/PREFIX?endpoint=URL` with credentials from the AWS environment.
    #[arg(
        long,
        value_name = "DIR|S3-URL",
        default_value = "weir-data/kafka-word-count/checkpoint"
    )]
    checkpoint_dir: String,
    /// The batch interval in milliseconds (default: 1000, or `batch_interval_ms` of --config).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    batch_ms: Option<u64>,
    /// At most this many records per partition per batch.
    #[arg(long, value_name = "N")]
    max_per_partition: Option<u64>,
    /// Serve the metrics, the JSON API and the web dashboard over HTTP on ADDR (e.g.
    /// 127.0.0.1:4040).
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// Stop gracefully after N batches have completed.
    #[arg(long, value_name = "N")]
    max_batches: Option<u64>,
    /// Stop gracefully after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    duration_secs: Option<u64>,
    /// Also produce this many generated lines a second into the input topic (a demo that needs
    /// no Kafka client of your own).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    demo_rate: Option<u32>,
    /// Do not print a line per batch.
    #[arg(long)]
    quiet: bool,
    /// The flags every example has.
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    main_with("kafka_word_count", args.common.log_format, run(args))
}

async fn run(args: Args) -> Result<(), BoxError> {
    // Flags given explicitly win over the environment and the file (docs/operations.md).
    let mut overrides = args.common.overrides()?;
    if let Some(ms) = args.batch_ms {
        overrides.set("batch_interval_ms", &ms.to_string())?;
    }
    if let Some(addr) = args.http_addr {
        overrides.set("http_addr", &addr.to_string())?;
    }
    prepare_topics(&args).await?;

    let storage = Storage::from_location(&args.checkpoint_dir)?;
    let ctx = StreamingContext::get_or_create_in(storage, |config: StreamingConfig| {
        let ctx = StreamingContext::new(
            args.common
                .restore(overrides.apply(config.batch_interval(DEFAULT_BATCH_INTERVAL)))?,
        );
        let mut input = KafkaDirectOptions::topics(&args.bootstrap, [args.input_topic.as_str()])
            .group_id(&args.group)
            .starting_offsets(KafkaStartingOffsets::Committed(CommittedFallback::Earliest));
        if let Some(max) = args.max_per_partition {
            input = input.max_per_partition(max);
        }
        let lines = ctx.kafka_direct_stream(input).uid("input-lines");
        let counts = word_counts(&lines);
        if !args.quiet {
            print_batches(&counts);
        }
        let sink = KafkaSink::builder(&args.bootstrap, &args.output_topic)
            .mode(KafkaSinkMode::ExactlyOnce)
            .writer_id(&args.group)
            .build()
            .map_err(|err| weir::Error::Config(err.to_string()))?;
        counts.write_to_kafka(sink, |(word, count): &(Str, u64)| {
            KafkaRecordOut::keyed(word.as_bytes(), count.to_string())
        });
        Ok(ctx)
    })
    .await?;

    match ctx.restored() {
        Some(info) => println!(
            "kafka_word_count: continuing from checkpoint {} (batch {}); {} batch(es) to re-run",
            info.checkpoint.0,
            info.checkpoint_time_ms,
            info.pending_batches.len()
        ),
        None => println!("kafka_word_count: starting fresh"),
    }
    println!(
        "kafka_word_count: counting the words of topic {} at {} (group {}), counts per batch to topic {}",
        args.input_topic, args.bootstrap, args.group, args.output_topic
    );
    println!(
        "kafka_word_count: watch with `weir events --dir {}`; the counts are records word → count, with the batch time in header weir.batch",
        args.checkpoint_dir
    );

    let stop_demo = Arc::new(AtomicBool::new(false));
    let demo = match args.demo_rate {
        Some(rate) => {
            println!(
                "kafka_word_count: demo — producing {rate} generated lines a second into {}",
                args.input_topic
            );
            let producer: BaseProducer = ClientConfig::new()
                .set("bootstrap.servers", &args.bootstrap)
                .set("linger.ms", "20")
                .create()?;
            let (topic, stop) = (args.input_topic.clone(), Arc::clone(&stop_demo));
            Some(std::thread::spawn(move || {
                produce_demo(&producer, &topic, rate, &stop)
            }))
        }
        None => None,
    };

    let limits = Limits {
        max_batches: args.max_batches,
        duration: args.duration_secs.map(Duration::from_secs),
    };
    let outcome = run_until_stopped(ctx, limits, |event| {
        if let Event::PlanningFailed {
            batch_time_ms,
            source,
            cause,
            ..
        } = event
        {
            eprintln!(
                "kafka_word_count: planning batch {batch_time_ms} failed ({source}: {cause}); it is retried"
            );
        }
        false
    })
    .await;
    stop_demo.store(true, Ordering::SeqCst);
    if let Some(demo) = demo {
        let lines = demo.join().map_err(|_| "the demo producer panicked")??;
        println!("kafka_word_count: the demo produced {lines} lines");
    }
    let stopped = outcome?;
    println!("kafka_word_count: stopped ({stopped:?}); every completed batch is checkpointed");
    Ok(())
}

/// The textbook word count: each record's value split into words, `(word, 1)`, summed per
/// word. A value that is not UTF-8 text has no words.
fn word_counts(lines: &DStream<KafkaRecord>) -> DStream<(Str, u64)> {
    lines
        .flat_map(|record: &KafkaRecord| {
            Str::from_utf8(record.value_bytes())
                .map(|line| line.words())
                .into_iter()
                .flatten()
        })
        .map(|word: &Str| (word.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .uid("counts")
}

/// Prints a line for each non-empty batch (at least once: a re-run prints again).
fn print_batches(counts: &DStream<(Str, u64)>) {
    counts.foreach_batch(|batch| {
        if !batch.is_empty() {
            let words: u64 = batch.iter().map(|(_, n)| n).sum();
            println!(
                "batch {}: {words} words, {} distinct",
                batch.time_ms,
                batch.len()
            );
        }
        Ok(())
    });
}

/// Produces `rate` generated lines a second into `topic` until `stop`, then waits (at most
/// 10 s) for their deliveries; how many lines it produced.
fn produce_demo(
    producer: &BaseProducer,
    topic: &str,
    rate: u32,
    stop: &AtomicBool,
) -> Result<u64, BoxError> {
    let mut text = TextGenerator::new(fastrand::u64(..));
    let per_tick = u64::from(rate.div_ceil(10));
    let mut produced = 0u64;
    while !stop.load(Ordering::SeqCst) {
        for _ in 0..per_tick {
            let line = text.text(1);
            producer
                .send(BaseRecord::<(), _>::to(topic).payload(line.trim_end()))
                .map_err(|(err, _)| format!("producing a demo line: {err}"))?;
            produced += 1;
        }
        producer.poll(Duration::ZERO);
        // The demo's pace: a tenth of the rate every 100 ms.
        std::thread::sleep(Duration::from_millis(100));
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(produced)
}

/// Checks that a broker answers at `--bootstrap` within [`BROKER_WAIT`], and creates the input
/// and output topics if they do not exist.
async fn prepare_topics(args: &Args) -> Result<(), BoxError> {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &args.bootstrap);
    let consumer: BaseConsumer = config.create()?;
    let metadata = tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, BROKER_WAIT))
        .await?
        .map_err(|err| {
            format!(
                "no Kafka broker answered at {} within {} s ({err}); start one there (e.g. the test \
                 broker: `bash examples/tests/tools/install-tansu.sh` prints TANSU=PATH, then \
                 `PATH broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url \
                 tcp://127.0.0.1:9092 --storage-engine sqlite://tansu.db`) or pass --bootstrap",
                args.bootstrap,
                BROKER_WAIT.as_secs()
            )
        })?;
    let missing: Vec<&str> = [args.input_topic.as_str(), args.output_topic.as_str()]
        .into_iter()
        .filter(|name| !metadata.topics().iter().any(|t| t.name() == *name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = config.create()?;
    let topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|name| NewTopic::new(name, args.partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(topic) => println!(
                "kafka_word_count: created topic {topic} with {} partitions",
                args.partitions
            ),
            // Created meanwhile by someone else: as good.
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(format!("creating topic {topic}: {code}").into()),
        }
    }
    Ok(())
}
