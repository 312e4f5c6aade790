//! [`KafkaSink`]: writes each batch of a stream to a Kafka topic, in one of three modes
//! ([`KafkaSinkMode`]), and [`DStream::write_to_kafka`], which runs it as an output operation.
//!
//! Invariants, in every mode: a batch's output completes only once the broker acknowledged
//! every record it sent (idempotent producer, `acks=all`; the delivery of each record is
//! awaited, also when another fails, so nothing of a failed attempt is still in flight when
//! the engine retries it); each record goes to the partition [`assign_partition`] gives it and
//! carries the [`Stamp`] headers; batches are written one at a time, in the order the engine
//! runs them. In [`KafkaSinkMode::ExactlyOnce`], a record is sent only if the partition's tail
//! shows it is not there yet (the `plan` module); the tail is read whenever this sink cannot
//! vouch for it itself — on the first batch after a (re)start and after any failure.
//!
//! Every call here blocks (librdkafka's API is blocking); the output operation runs on the
//! executor's blocking pool.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::error::KafkaSinkError;
use super::format::{KafkaRecordOut, Stamp, assign_partition};
use super::plan::{PartitionPlan, PlanInput, TailRecord, plan_partition};
use crate::dstream::{DStream, Data};

/// The default bound on each broker request the sink makes (metadata, watermarks, a tail
/// read, a transaction step) and on the delivery of a batch's records.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the sink guarantees, and what it costs (docs/kafka.md, "The Kafka sink").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KafkaSinkMode {
    /// Exactly once in the log itself, with no transaction coordinator: every consumer, at
    /// any isolation level, sees each record once, as long as this sink is the only writer
    /// of the topic's partitions. A batch run again after a failure or a crash reads the tail
    /// of each partition and writes only what its dead attempt did not.
    #[default]
    ExactlyOnce,
    /// Each batch in one Kafka transaction (Flink's `KafkaSink` with `EXACTLY_ONCE`), with the
    /// deterministic `transactional.id` `<writer id>-0`: a restart's `init_transactions`
    /// fences the dead attempt's producer and aborts what it left open; a `read_committed`
    /// consumer sees each batch once. Needs a broker with transactions (`EndTxn`).
    Transactional,
    /// At least once: the idempotent producer, no tail read. A batch run again after a
    /// failure writes its records again.
    AtLeastOnce,
}

/// How to build a [`KafkaSink`].
#[derive(Clone, Debug)]
pub struct KafkaSinkBuilder {
    bootstrap: String,
    topic: String,
    mode: KafkaSinkMode,
    writer_id: Option<String>,
    keep_order: bool,
    timeout: Duration,
    client: Vec<(String, String)>,
}

impl KafkaSinkBuilder {
    /// The mode ([`KafkaSinkMode::ExactlyOnce`] unless told).
    #[must_use]
    pub fn mode(mut self, mode: KafkaSinkMode) -> Self {
        self.mode = mode;
        self
    }

    /// The id written in every record's `weir.writer` header and the base of the
    /// `transactional.id`: the same across restarts of the job, different for every sink that
    /// writes to the same cluster. Default: `weir-<topic>`.
    #[must_use]
    pub fn writer_id(mut self, id: impl Into<String>) -> Self {
        self.writer_id = Some(id.into());
        self
    }

    /// Writes each batch's records of a partition in the stream's order, instead of sorted by
    /// content (the default). Only for streams whose order within a batch is the same on
    /// every run: the exactly-once mode numbers records by their position, and refuses a
    /// re-run whose records differ from its dead attempt's.
    #[must_use]
    pub fn keep_order(mut self, keep: bool) -> Self {
        self.keep_order = keep;
        self
    }

    /// The bound on each broker request and on a batch's deliveries ([`DEFAULT_TIMEOUT`]).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A librdkafka setting for the sink's clients (e.g. `linger.ms`, `compression.type`,
    /// security settings). The sink's own (`enable.idempotence`, `acks`,
    /// `transactional.id`, `isolation.level`, `enable.partition.eof`) cannot be overridden.
    #[must_use]
    pub fn client_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client.push((key.into(), value.into()));
        self
    }

    /// The sink. No connection is made yet: the first batch connects.
    ///
    /// # Errors
    ///
    /// [`KafkaSinkError::Config`]: an empty bootstrap, topic or writer id.
    pub fn build(self) -> Result<KafkaSink, KafkaSinkError> {
        if self.bootstrap.is_empty() {
            return Err(KafkaSinkError::Config(
                "the bootstrap servers are empty".into(),
            ));
        }
        if self.topic.is_empty() {
            return Err(KafkaSinkError::Config("the topic is empty".into()));
        }
        let writer = self
            .writer_id
            .clone()
            .unwrap_or_else(|| format!("weir-{}", self.topic));
        if writer.is_empty() {
            return Err(KafkaSinkError::Config("the writer id is empty".into()));
        }
        Ok(KafkaSink {
            options: self,
            writer,
            state: Mutex::new(State::default()),
        })
    }
}

/// What one batch's write did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KafkaWrite {
    /// Records sent and acknowledged.
    pub written: usize,
    /// Records found already written by a dead attempt (exactly-once mode), not sent again.
    pub found: usize,
    /// Records not sent because their partition already holds a later batch (a replay of a
    /// batch whose output had completed), or — transactional mode — because the batch was
    /// committed before.
    pub skipped: usize,
    /// Whether the partitions' tails were read for this batch.
    pub read_tail: bool,
}

/// The sink's clients and what it knows of the topic, kept between batches.
#[derive(Default)]
struct State {
    producer: Option<FutureProducer>,
    consumer: Option<BaseConsumer>,
    /// The last batch this sink wrote completely since it started, with nothing failed since,
    /// and the partition count then: while set, the tails are what this sink left.
    clean: Option<(u64, i32)>,
    /// Transactional mode: the broker said it lacks this transaction request. Sticky: every
    /// later batch fails with it at once, since nothing it wrote could ever be committed.
    unsupported: Option<(&'static str, Box<KafkaError>)>,
}

/// Writes batches to a Kafka topic; see the [module documentation](self) and
/// [`KafkaSinkMode`].
pub struct KafkaSink {
    options: KafkaSinkBuilder,
    writer: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("bootstrap", &self.options.bootstrap)
            .field("topic", &self.options.topic)
            .field("mode", &self.options.mode)
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

/// One partition's records of a batch, in index order.
type Groups = BTreeMap<i32, Vec<KafkaRecordOut>>;

impl KafkaSink {
    /// A builder for a sink writing to `topic` through the brokers `bootstrap`
    /// (`host:port,…`).
    #[must_use]
    pub fn builder(bootstrap: impl Into<String>, topic: impl Into<String>) -> KafkaSinkBuilder {
        KafkaSinkBuilder {
            bootstrap: bootstrap.into(),
            topic: topic.into(),
            mode: KafkaSinkMode::default(),
            writer_id: None,
            keep_order: false,
            timeout: DEFAULT_TIMEOUT,
            client: Vec::new(),
        }
    }

    /// The output topic.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.options.topic
    }

    /// The id in the records' `weir.writer` header.
    #[must_use]
    pub fn writer_id(&self) -> &str {
        &self.writer
    }

    /// The `transactional.id` of [`KafkaSinkMode::Transactional`]: `<writer id>-0` (one
    /// producer per sink, subtask 0: a batch's output is written by one job).
    #[must_use]
    pub fn transactional_id(&self) -> String {
        format!("{}-0", self.writer)
    }

    /// Writes batch `batch_time_ms`'s `records` as the mode says, and returns once every
    /// record sent is acknowledged. Blocks.
    ///
    /// # Errors
    ///
    /// A broker request failed or timed out, records were not delivered, or (exactly-once
    /// modes) the partitions' tails break the sink's premises; each names the topic, the
    /// partition where one is involved, and the cause. Nothing is half-remembered: the next
    /// call (the engine's retry) reads the tails again.
    ///
    /// # Panics
    ///
    /// Never on broker input; a panic inside is caught by the engine as a failed job, and
    /// the next call reads the tails again.
    pub fn write_batch(
        &self,
        batch_time_ms: u64,
        records: Vec<KafkaRecordOut>,
    ) -> Result<KafkaWrite, KafkaSinkError> {
        let mut state = self.lock();
        if let Some((feature, source)) = state.unsupported.clone() {
            return Err(KafkaSinkError::TransactionsUnsupported {
                topic: self.options.topic.clone(),
                bootstrap: self.options.bootstrap.clone(),
                feature,
                batch_time_ms,
                source,
            });
        }
        // Forgotten until this write succeeds: a failure (or a panic) leaves it unset.
        let clean = state.clean.take();
        let result = self.write_locked(&mut state, clean, batch_time_ms, records);
        match &result {
            Ok(_) => {}
            Err(err) => {
                if let KafkaSinkError::TransactionsUnsupported {
                    feature, source, ..
                } = err
                {
                    state.unsupported = Some((feature, source.clone()));
                }
                tracing::warn!(topic = %self.options.topic, batch_time_ms, error = %err, "Kafka sink: batch not written");
                if self.options.mode == KafkaSinkMode::Transactional {
                    // A failed transactional producer is replaced: the next one's
                    // init_transactions fences this one and aborts what it left.
                    state.producer = None;
                }
            }
        }
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| {
            let mut state = poisoned.into_inner();
            state.clean = None;
            state.producer = None;
            state
        })
    }

    fn write_locked(
        &self,
        state: &mut State,
        clean: Option<(u64, i32)>,
        batch_time_ms: u64,
        records: Vec<KafkaRecordOut>,
    ) -> Result<KafkaWrite, KafkaSinkError> {
        let producer = self.producer(state, batch_time_ms)?.clone();
        let partitions = self.partition_count(&producer)?;
        let mut groups: Groups = BTreeMap::new();
        for record in records {
            let p = assign_partition(&record, partitions).map_err(|partition| {
                KafkaSinkError::BadPartition {
                    topic: self.options.topic.clone(),
                    partition,
                    partitions,
                    batch_time_ms,
                }
            })?;
            groups.entry(p).or_default().push(record);
        }
        if !self.options.keep_order {
            for group in groups.values_mut() {
                group.sort_by(KafkaRecordOut::content_cmp);
            }
        }
        let total: usize = groups.values().map(Vec::len).sum();
        let mode = self.options.mode;
        // This sink vouches for the tails only after it wrote an earlier batch itself, with
        // the same partition count and nothing failed since.
        let vouched = clean.is_some_and(|(last, n)| last < batch_time_ms && n == partitions);
        let mut report = KafkaWrite::default();
        // Whether a partition holds a later batch than this one: then its tail is not what
        // this write leaves, and the next batch must read it again.
        let mut newer = false;
        let to_send: Vec<(i32, Vec<usize>)> = match mode {
            KafkaSinkMode::AtLeastOnce => all_of(&groups),
            _ if vouched => all_of(&groups),
            KafkaSinkMode::ExactlyOnce => {
                report.read_tail = true;
                let plans = self.plans(state, partitions, batch_time_ms, &groups, false)?;
                let mut to_send = Vec::new();
                for (p, plan) in plans {
                    let n = groups.get(&p).map_or(0, Vec::len);
                    match plan {
                        PartitionPlan::All => to_send.push((p, (0..n).collect())),
                        PartitionPlan::Missing(missing) => {
                            report.found += n - missing.len();
                            to_send.push((p, missing));
                        }
                        PartitionPlan::Newer(later) => {
                            newer = true;
                            tracing::info!(topic = %self.options.topic, partition = p, batch_time_ms, later, "Kafka sink: the partition holds a later batch; this batch's records for it were written before");
                            report.skipped += n;
                        }
                    }
                }
                to_send
            }
            KafkaSinkMode::Transactional => {
                report.read_tail = true;
                let plans = self.plans(state, partitions, batch_time_ms, &groups, true)?;
                // A committed transaction is visible whole: the batch is there on every
                // partition it wrote, or on none.
                let committed = plans.values().any(|plan| match plan {
                    PartitionPlan::Newer(_) => true,
                    PartitionPlan::Missing(missing) => missing.is_empty(),
                    PartitionPlan::All => false,
                });
                if committed {
                    newer = true;
                    tracing::info!(topic = %self.options.topic, batch_time_ms, "Kafka sink: the batch's transaction was committed before; skipped");
                    report.skipped = total;
                    Vec::new()
                } else if let Some((p, _)) = plans
                    .iter()
                    .find(|(_, plan)| matches!(plan, PartitionPlan::Missing(_)))
                {
                    return Err(KafkaSinkError::Nondeterministic {
                        topic: self.options.topic.clone(),
                        partition: *p,
                        batch_time_ms,
                        offset: -1,
                        reason:
                            "part of the batch is visible to read_committed, another part is not"
                                .into(),
                    });
                } else {
                    all_of(&groups)
                }
            }
        };
        if mode == KafkaSinkMode::Transactional && report.skipped == 0 {
            self.transaction(&producer, batch_time_ms, || {
                self.send(&producer, partitions, batch_time_ms, &groups, &to_send)
            })?;
        } else {
            self.send(&producer, partitions, batch_time_ms, &groups, &to_send)?;
        }
        report.written = to_send.iter().map(|(_, idx)| idx.len()).sum();
        if !newer {
            state.clean = Some((batch_time_ms, partitions));
        }
        Ok(report)
    }

    /// The producer, created on first use (transactional: with `init_transactions`, which
    /// fences an earlier producer of the same `transactional.id`).
    fn producer<'s>(
        &self,
        state: &'s mut State,
        batch_time_ms: u64,
    ) -> Result<&'s FutureProducer, KafkaSinkError> {
        if state.producer.is_none() {
            let mut config = self.client_config();
            config
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("delivery.timeout.ms", millis(self.options.timeout));
            let transactional = self.options.mode == KafkaSinkMode::Transactional;
            if transactional {
                config.set("transactional.id", self.transactional_id());
            }
            let producer: FutureProducer =
                config.create().map_err(|source| KafkaSinkError::Client {
                    topic: self.options.topic.clone(),
                    what: "creating the producer".into(),
                    source: Box::new(source),
                })?;
            if transactional {
                producer
                    .init_transactions(self.options.timeout)
                    .map_err(|source| self.txn_error("init_transactions", batch_time_ms, source))?;
            }
            state.producer = Some(producer);
        }
        state.producer.as_ref().ok_or_else(|| {
            KafkaSinkError::Config("the producer was not kept (a bug in the sink)".into())
        })
    }

    fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.options.client {
            config.set(k, v);
        }
        config.set("bootstrap.servers", &self.options.bootstrap);
        config
    }

    /// The topic's partition count, from the broker's metadata.
    fn partition_count(&self, producer: &FutureProducer) -> Result<i32, KafkaSinkError> {
        let topic = &self.options.topic;
        let metadata = producer
            .client()
            .fetch_metadata(Some(topic), self.options.timeout)
            .map_err(|source| KafkaSinkError::Client {
                topic: topic.clone(),
                what: "reading the topic's metadata".into(),
                source: Box::new(source),
            })?;
        let not_there = |reason: String| KafkaSinkError::Topic {
            topic: topic.clone(),
            bootstrap: self.options.bootstrap.clone(),
            reason,
        };
        let t = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| not_there("not in the broker's metadata".into()))?;
        if let Some(err) = t.error() {
            return Err(not_there(format!("{:?}", RDKafkaErrorCode::from(err))));
        }
        let n = t.partitions().len();
        if n == 0 {
            return Err(not_there("it has no partitions".into()));
        }
        i32::try_from(n).map_err(|_| not_there(format!("{n} partitions")))
    }

    /// Every partition's plan, from its tail: the last `n + 1` records, `n` = this batch's
    /// records there (at least the last one, so that every partition's partition count and
    /// writer are checked).
    fn plans(
        &self,
        state: &mut State,
        partitions: i32,
        batch_time_ms: u64,
        groups: &Groups,
        read_committed: bool,
    ) -> Result<BTreeMap<i32, PartitionPlan>, KafkaSinkError> {
        let topic = self.options.topic.clone();
        if state.consumer.is_none() {
            let consumer: BaseConsumer = self
                .client_config()
                .set("group.id", format!("{}-tail-reader", self.writer))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true")
                .set("auto.offset.reset", "earliest")
                .set(
                    "isolation.level",
                    if read_committed {
                        "read_committed"
                    } else {
                        "read_uncommitted"
                    },
                )
                .create()
                .map_err(|source| KafkaSinkError::Client {
                    topic: topic.clone(),
                    what: "creating the tail reader".into(),
                    source: Box::new(source),
                })?;
            state.consumer = Some(consumer);
        }
        let Some(consumer) = state.consumer.as_ref() else {
            return Err(KafkaSinkError::Config(
                "the tail reader was not kept (a bug in the sink)".into(),
            ));
        };
        let empty = Vec::new();
        let mut windows = Vec::new();
        for p in 0..partitions {
            let n = groups.get(&p).map_or(0, Vec::len);
            let (low, high) = consumer
                .fetch_watermarks(&topic, p, self.options.timeout)
                .map_err(|source| KafkaSinkError::Client {
                    topic: topic.clone(),
                    what: format!("reading the watermarks of {topic}/{p}"),
                    source: Box::new(source),
                })?;
            let look_back = i64::try_from(n).unwrap_or(i64::MAX).saturating_add(1);
            let from = low.max(high.saturating_sub(look_back));
            if from < high {
                windows.push((p, from, high));
            }
        }
        let tails = self.read_tails(consumer, &windows)?;
        let mut plans = BTreeMap::new();
        for p in 0..partitions {
            let plan = plan_partition(
                PlanInput {
                    topic: &topic,
                    partition: p,
                    partitions,
                    writer: &self.writer,
                    batch_time_ms,
                    records: groups.get(&p).unwrap_or(&empty),
                },
                tails.get(&p).map_or(&[], Vec::as_slice),
            )?;
            plans.insert(p, plan);
        }
        Ok(plans)
    }

    /// Reads offsets `from..high` of each `(partition, from, high)` with an assign()ed
    /// consumer (no group join, nothing committed), until each partition's end.
    fn read_tails(
        &self,
        consumer: &BaseConsumer,
        windows: &[(i32, i64, i64)],
    ) -> Result<BTreeMap<i32, Vec<TailRecord>>, KafkaSinkError> {
        let topic = &self.options.topic;
        let mut tails: BTreeMap<i32, Vec<TailRecord>> = BTreeMap::new();
        if windows.is_empty() {
            return Ok(tails);
        }
        let mut assignment = TopicPartitionList::new();
        for (p, from, _) in windows {
            assignment
                .add_partition_offset(topic, *p, Offset::Offset(*from))
                .map_err(|source| KafkaSinkError::Client {
                    topic: topic.clone(),
                    what: format!("assigning {topic}/{p}"),
                    source: Box::new(source),
                })?;
        }
        consumer
            .assign(&assignment)
            .map_err(|source| KafkaSinkError::Client {
                topic: topic.clone(),
                what: "assigning the partitions to read their tails".into(),
                source: Box::new(source),
            })?;
        let mut open: BTreeMap<i32, i64> = windows.iter().map(|(p, _, high)| (*p, *high)).collect();
        let deadline = Instant::now() + self.options.timeout;
        let mut last = String::from("no record yet");
        let result = loop {
            if open.is_empty() {
                break Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let (p, high) = open.iter().next().map_or((0, 0), |(p, h)| (*p, *h));
                let from = windows
                    .iter()
                    .find(|(q, _, _)| *q == p)
                    .map_or(0, |(_, f, _)| *f);
                break Err(KafkaSinkError::TailTimeout {
                    topic: topic.clone(),
                    partition: p,
                    from,
                    to: high,
                    timeout_ms: u64::try_from(self.options.timeout.as_millis()).unwrap_or(u64::MAX),
                    cause: last,
                });
            }
            match consumer.poll(left.min(Duration::from_millis(500))) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => last = e.to_string(),
                Some(Ok(message)) => {
                    let p = message.partition();
                    let Some(high) = open.get(&p).copied() else {
                        continue;
                    };
                    if message.offset() >= high {
                        open.remove(&p);
                        continue;
                    }
                    let stamp = Stamp::parse(
                        message
                            .headers()
                            .into_iter()
                            .flat_map(|h| h.iter())
                            .map(|h| (h.key, h.value)),
                    );
                    tails.entry(p).or_default().push(TailRecord {
                        offset: message.offset(),
                        stamp,
                        key: message.key().map(<[u8]>::to_vec),
                        value: message.payload().map(<[u8]>::to_vec),
                    });
                    if message.offset() + 1 >= high {
                        open.remove(&p);
                    }
                }
            }
        };
        // Stop fetching until the next tail read.
        let _ = consumer.unassign();
        result.map(|()| tails)
    }

    /// Sends the records `to_send` names and waits for every acknowledgement.
    fn send(
        &self,
        producer: &FutureProducer,
        partitions: i32,
        batch_time_ms: u64,
        groups: &Groups,
        to_send: &[(i32, Vec<usize>)],
    ) -> Result<(), KafkaSinkError> {
        let topic = &self.options.topic;
        let mut pending = std::collections::VecDeque::new();
        let mut failures: BTreeMap<i32, (usize, String)> = BTreeMap::new();
        let mut note = |p: i32, outcome: Result<(), String>| {
            if let Err(cause) = outcome {
                let entry = failures.entry(p).or_insert((0, cause));
                entry.0 += 1;
            }
        };
        let wait = |future: rdkafka::producer::DeliveryFuture| -> Result<(), String> {
            match futures::executor::block_on(future) {
                Ok(Ok(_)) => Ok(()),
                Ok(Err((e, _))) => Err(e.to_string()),
                Err(_) => Err("the producer was dropped before the delivery report".into()),
            }
        };
        for (p, indices) in to_send {
            let Some(group) = groups.get(p) else { continue };
            let count = group.len() as u64;
            for &i in indices {
                let Some(record) = group.get(i) else { continue };
                let stamp = Stamp {
                    batch_time_ms,
                    index: i as u64,
                    count,
                    partitions,
                    writer: self.writer.clone(),
                };
                let mut headers = OwnedHeaders::new_with_capacity(5 + record.headers.len());
                for (k, v) in stamp.headers() {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_bytes()),
                    });
                }
                for (k, v) in &record.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_slice()),
                    });
                }
                let mut out = FutureRecord {
                    topic,
                    partition: Some(*p),
                    payload: record.value.as_deref(),
                    key: record.key.as_deref(),
                    timestamp: None,
                    headers: Some(headers),
                };
                loop {
                    match producer.send_result(out) {
                        Ok(future) => {
                            pending.push_back((*p, future));
                            break;
                        }
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                            out = back;
                            // The queue drains as deliveries come back: wait for the oldest.
                            match pending.pop_front() {
                                Some((q, future)) => note(q, wait(future)),
                                None => producer.poll(Duration::from_millis(10)),
                            }
                        }
                        Err((e, _)) => {
                            note(*p, Err(e.to_string()));
                            break;
                        }
                    }
                }
            }
        }
        // Every delivery is awaited, also after a failure: nothing of this attempt is left in
        // flight when the engine retries it.
        for (p, future) in pending {
            note(p, wait(future));
        }
        match failures.into_iter().next() {
            None => Ok(()),
            Some((partition, (failed, cause))) => Err(KafkaSinkError::Delivery {
                topic: topic.clone(),
                partition,
                batch_time_ms,
                failed,
                records: to_send
                    .iter()
                    .find(|(q, _)| *q == partition)
                    .map_or(0, |(_, idx)| idx.len()),
                cause,
            }),
        }
    }

    /// Runs `send` inside a transaction, committed if it succeeds, aborted if not.
    fn transaction(
        &self,
        producer: &FutureProducer,
        batch_time_ms: u64,
        send: impl FnOnce() -> Result<(), KafkaSinkError>,
    ) -> Result<(), KafkaSinkError> {
        producer
            .begin_transaction()
            .map_err(|e| self.txn_error("begin_transaction", batch_time_ms, e))?;
        if let Err(err) = send() {
            if let Err(abort) = producer.abort_transaction(self.options.timeout) {
                tracing::warn!(topic = %self.options.topic, batch_time_ms, error = %abort, "Kafka sink: aborting the failed batch's transaction failed; the next producer's init_transactions aborts it");
            }
            return Err(err);
        }
        producer
            .commit_transaction(self.options.timeout)
            .map_err(|e| self.txn_error("commit_transaction", batch_time_ms, e))
    }

    fn txn_error(
        &self,
        step: &'static str,
        batch_time_ms: u64,
        source: KafkaError,
    ) -> KafkaSinkError {
        if source.rdkafka_error_code() == Some(RDKafkaErrorCode::UnsupportedFeature) {
            let feature = match step {
                "commit_transaction" | "abort_transaction" => "EndTxn",
                "init_transactions" => "InitProducerId",
                _ => "a transaction request",
            };
            return KafkaSinkError::TransactionsUnsupported {
                topic: self.options.topic.clone(),
                bootstrap: self.options.bootstrap.clone(),
                feature,
                batch_time_ms,
                source: Box::new(source),
            };
        }
        KafkaSinkError::Transaction {
            topic: self.options.topic.clone(),
            transactional_id: self.transactional_id(),
            batch_time_ms,
            step,
            source: Box::new(source),
        }
    }
}

/// Every record of every group.
fn all_of(groups: &Groups) -> Vec<(i32, Vec<usize>)> {
    groups
        .iter()
        .map(|(p, group)| (*p, (0..group.len()).collect()))
        .collect()
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

impl<T: Data> DStream<T> {
    /// Writes every batch to Kafka through `sink`, each element as the record `to_record`
    /// makes of it (Flink's `KafkaSink`; docs/kafka.md, "The Kafka sink"). The batch's output
    /// completes once every record is acknowledged; how a batch run again is written depends
    /// on the sink's [`KafkaSinkMode`].
    ///
    /// The exactly-once modes need the batches to be written in order: keep the engine's
    /// `max_batches_in_flight` at 1 (the default).
    pub fn write_to_kafka(
        &self,
        sink: KafkaSink,
        to_record: impl Fn(&T) -> KafkaRecordOut + Send + Sync + 'static,
    ) {
        let sink = Arc::new(sink);
        self.foreach_batch(move |batch| {
            let records = batch.iter().map(&to_record).collect();
            let write = sink.write_batch(batch.time_ms, records)?;
            tracing::debug!(
                topic = sink.topic(),
                batch_time_ms = batch.time_ms,
                ?write,
                "Kafka sink: batch written"
            );
            Ok(())
        });
    }
}
