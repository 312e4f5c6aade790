//! The Kafka direct stream (Spark's `createDirectStream`, Flink's `KafkaSource`): a planned
//! source (a `Planner` of `dstream/planned.rs`) whose plan for a batch is an offset range
//! `[from, until)` per Kafka partition, assigned to one of a fixed number of reading tasks.
//!
//! Invariants it keeps: a batch's ranges are in the checkpoint before the batch runs (the
//! `Planned` node around it does that), and a re-run reads exactly them — a reading task
//! assigns its consumer exactly its partitions at `from` (no group subscription) and stops
//! each at `until`, so offsets that do not exist (transaction markers, compacted records)
//! make a range deliver fewer records, never a wait. Every broker call runs off the actors'
//! threads with a timeout: planning on the blocking pool, reads in the batch's tasks, commits
//! on a thread of the stream's own. The set of partitions is looked up at every plan:
//! partitions and topics that appear (matching the topics or the pattern) are read from
//! their earliest offset; a position the broker no longer has (retention, a deleted or
//! recreated topic) is never skipped silently — [`OffsetResetPolicy`] decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use weir_actors::SourceLag;

use crate::backpressure::RateConfig;
use crate::dstream::DirectStreamOptions;
use crate::dstream::graph::EventSlot;
use crate::dstream::memo::lock;
use crate::dstream::planned::{OffsetRange, Planner, cap_ranges};
use crate::error::{ComputeError, ComputeResult};
use crate::kafka::record::{KafkaRecord, RecordBuilder};
use crate::sources::rate::RateHandle;

/// Which topics a direct stream reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KafkaTopics {
    /// These topics. With [`OffsetResetPolicy::Fail`] each must exist (planning fails naming
    /// a missing one); with a reset policy a missing topic is read once it exists.
    Names(Vec<String>),
    /// Every topic whose name matches this regular expression (the `regex` crate's syntax,
    /// matched anywhere in the name unless anchored with `^…$`), including topics created
    /// while the job runs.
    Pattern(String),
}

/// Where a Kafka direct stream starts when there is no checkpoint (a restore always continues
/// from the checkpoint's positions). Partitions that appear later start at their earliest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KafkaStartingOffsets {
    /// From each partition's first available record.
    #[default]
    Earliest,
    /// From the records that arrive after the start (the partitions' end offsets then).
    Latest,
    /// From the consumer group's committed offsets (needs a group id); a partition without a
    /// committed offset starts as the fallback says.
    Committed(CommittedFallback),
    /// From these offsets, by `(topic, partition)` — offsets kept in the application's own
    /// store; a partition not listed starts at its earliest. An offset outside its
    /// partition's records is handled by the [`OffsetResetPolicy`], as a checkpoint's is.
    Given(BTreeMap<(String, i32), u64>),
    /// From the first record whose timestamp is at or after this one (ms since the Unix
    /// epoch); a partition without such a record starts at its end (as Kafka answers it:
    /// the test broker, tansu, answers offset 0 instead — docs/kafka.md).
    Timestamp(i64),
}

/// Where [`KafkaStartingOffsets::Committed`] starts a partition the group has no committed
/// offset for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommittedFallback {
    /// Its earliest offset.
    #[default]
    Earliest,
    /// Its end.
    Latest,
    /// Planning fails, naming the partition.
    Fail,
}

/// What a direct stream does when the offset it would read next is not in the partition any
/// more (below its earliest offset: retention deleted the records; above its end: the topic
/// was deleted and recreated), or its partition no longer exists (the topic was deleted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OffsetResetPolicy {
    /// Planning fails with an error naming the partition, the offset and the partition's
    /// range; the engine reports it (`PlanningFailed`) and retries, so the job stops making
    /// batches until an operator decides (the default: nothing is skipped unless asked).
    #[default]
    Fail,
    /// Continue from the partition's earliest offset (a deleted partition is dropped), with an
    /// event ([`Event::SourceReset`](weir_actors::Event::SourceReset), counted in
    /// `weir_source_resets_total`), a warning and a [`KafkaReset`] to the options' `on_reset`
    /// callback.
    Earliest,
    /// Continue from the partition's end (a deleted partition is dropped), with an event
    /// ([`Event::SourceReset`](weir_actors::Event::SourceReset)), a warning and a
    /// [`KafkaReset`] to the options' `on_reset` callback.
    Latest,
}

/// A position a direct stream moved because the broker no longer had it (see
/// [`OffsetResetPolicy`]). Planning may be retried, so the same reset can be reported more
/// than once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaReset {
    /// The stream's name.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset the stream would have read next.
    pub from: u64,
    /// Where it continues (`None`: the partition no longer exists and is dropped).
    pub to: Option<u64>,
    /// The partition's available offsets `[earliest, end)` when it was moved (`None`: the
    /// partition no longer exists).
    pub available: Option<Range<u64>>,
}

impl fmt::Display for KafkaReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (topic, p, from) = (&self.topic, self.partition, self.from);
        match (&self.to, &self.available) {
            (Some(to), Some(range)) => write!(
                f,
                "{}: topic {topic} partition {p}: offset {from} is out of range \
                 (available {range:?}); reset to {to}",
                self.source
            ),
            _ => write!(
                f,
                "{}: topic {topic} partition {p} (at offset {from}) no longer exists; dropped",
                self.source
            ),
        }
    }
}

/// Called for every [`KafkaReset`].
pub type ResetCallback = Arc<dyn Fn(&KafkaReset) + Send + Sync>;

/// How a Kafka direct stream connects, what it reads and how it plans its batches (see
/// [`StreamingContext::kafka_direct_stream`](crate::StreamingContext::kafka_direct_stream)).
///
/// ```
/// use std::time::Duration;
/// use weir::kafka::{KafkaDirectOptions, KafkaStartingOffsets, CommittedFallback};
///
/// let options = KafkaDirectOptions::pattern("127.0.0.1:9092", "^events-.*")
///     .group_id("my-job")
///     .starting_offsets(KafkaStartingOffsets::Committed(CommittedFallback::Earliest))
///     .max_per_partition(50_000)
///     .request_timeout(Duration::from_secs(5))
///     .set("fetch.min.bytes", "1");
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct KafkaDirectOptions {
    bootstrap: String,
    topics: KafkaTopics,
    group_id: Option<String>,
    start: KafkaStartingOffsets,
    on_out_of_range: OffsetResetPolicy,
    limits: DirectStreamOptions,
    tasks: Option<usize>,
    request_timeout: Duration,
    read_timeout: Duration,
    commit_offsets: bool,
    properties: Vec<(String, String)>,
    name: Option<String>,
    on_reset: Option<ResetCallback>,
}

impl fmt::Debug for KafkaDirectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDirectOptions")
            .field("bootstrap", &self.bootstrap)
            .field("topics", &self.topics)
            .field("group_id", &self.group_id)
            .field("start", &self.start)
            .field("on_out_of_range", &self.on_out_of_range)
            .field("limits", &self.limits)
            .field("tasks", &self.tasks)
            .field("request_timeout", &self.request_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("commit_offsets", &self.commit_offsets)
            .field("properties", &self.properties)
            .field("name", &self.name)
            .field("on_reset", &self.on_reset.is_some())
            .finish()
    }
}

impl KafkaDirectOptions {
    /// Reads `topics` from the brokers at `bootstrap` (`host:port[,host:port…]`), with the
    /// defaults: from the earliest offsets, `read_committed`, no group (so no commits), at
    /// most 64 MiB per batch, one reading task per unit of the context's parallelism,
    /// broker requests timed out after 10 s, reads after 60 s, out-of-range positions fail.
    pub fn topics<S: Into<String>>(
        bootstrap: impl Into<String>,
        topics: impl IntoIterator<Item = S>,
    ) -> Self {
        Self::new(
            bootstrap.into(),
            KafkaTopics::Names(topics.into_iter().map(Into::into).collect()),
        )
    }

    /// Reads every topic matching `pattern` (see [`KafkaTopics::Pattern`]), with the defaults
    /// of [`topics`](Self::topics).
    pub fn pattern(bootstrap: impl Into<String>, pattern: impl Into<String>) -> Self {
        Self::new(bootstrap.into(), KafkaTopics::Pattern(pattern.into()))
    }

    fn new(bootstrap: String, topics: KafkaTopics) -> Self {
        KafkaDirectOptions {
            bootstrap,
            topics,
            group_id: None,
            start: KafkaStartingOffsets::Earliest,
            on_out_of_range: OffsetResetPolicy::Fail,
            limits: DirectStreamOptions::new(),
            tasks: None,
            request_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            commit_offsets: true,
            properties: Vec::new(),
            name: None,
            on_reset: None,
        }
    }

    /// The consumer group (`group.id`): after each batch's outputs complete, the stream
    /// commits its offsets to this group (unless [`commit_offsets`](Self::commit_offsets)
    /// is off), and [`KafkaStartingOffsets::Committed`] starts from them. Reads never join
    /// the group: each reading task is assigned its partitions.
    #[must_use]
    pub fn group_id(mut self, group: impl Into<String>) -> Self {
        self.group_id = Some(group.into());
        self
    }

    /// Where the stream starts without a checkpoint (default: earliest).
    #[must_use]
    pub fn starting_offsets(mut self, start: KafkaStartingOffsets) -> Self {
        self.start = start;
        self
    }

    /// What to do with a position the broker no longer has (default: fail).
    #[must_use]
    pub fn on_out_of_range(mut self, policy: OffsetResetPolicy) -> Self {
        self.on_out_of_range = policy;
        self
    }

    /// Called (on the planning thread) for every position reset by the out-of-range policy.
    #[must_use]
    pub fn on_reset(mut self, callback: impl Fn(&KafkaReset) + Send + Sync + 'static) -> Self {
        self.on_reset = Some(Arc::new(callback));
        self
    }

    /// At most this many records per partition per batch (the rate controller, when
    /// backpressure is on, and `max_rate_per_partition` cap it too).
    #[must_use]
    pub fn max_per_partition(mut self, records: u64) -> Self {
        self.limits = self.limits.max_per_partition(records);
        self
    }

    /// At most about this many bytes of keys and values per batch, all partitions together
    /// (default 64 MiB; `u64::MAX`: no bound), shared as
    /// [`DirectStreamOptions::max_bytes_per_batch`] describes. Planning does not read the
    /// records: it counts with the average record size this stream has read (a sample of up
    /// to 256 records of a partition the first time), so a batch can be over the budget by
    /// as much as its records are over the average.
    #[must_use]
    pub fn max_bytes_per_batch(mut self, bytes: u64) -> Self {
        self.limits = self.limits.max_bytes_per_batch(bytes);
        self
    }

    /// How many tasks read each batch (the stream's partitions; default: the context's
    /// parallelism). Kafka partitions are dealt to them in turn; each task has a consumer of
    /// its own, assigned exactly its partitions.
    #[must_use]
    pub fn tasks(mut self, tasks: usize) -> Self {
        self.tasks = Some(tasks.max(1));
        self
    }

    /// The timeout of each broker request of planning (metadata, offsets) and of a commit
    /// (default 10 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a task may take to read its ranges of a batch before it fails (default
    /// 60 s).
    #[must_use]
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Whether completed batches' offsets are committed to the group (default: true; needs a
    /// group id). The checkpoint is the source of truth either way.
    #[must_use]
    pub fn commit_offsets(mut self, commit: bool) -> Self {
        self.commit_offsets = commit;
        self
    }

    /// Sets an rdkafka (librdkafka) property of every client the stream makes, over the
    /// stream's defaults: `isolation.level=read_committed` (set `read_uncommitted` to read
    /// open transactions), `queued.max.messages.kbytes=16384` (each reading consumer buffers
    /// at most 16 MiB), `allow.auto.create.topics=false`. Three properties the stream's
    /// correctness rests on are always forced: `enable.auto.commit=false`,
    /// `enable.partition.eof=true` and `auto.offset.reset=error` (a read never jumps).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// The stream's name in events, errors, offset ranges and lags (default: `kafka:` and the
    /// topics or the pattern).
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The name the stream reports.
    pub fn source_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match &self.topics {
            KafkaTopics::Names(names) => format!("kafka:{}", names.join(",")),
            KafkaTopics::Pattern(p) => format!("kafka:/{p}/"),
        })
    }

    /// Whether the options can work: a pattern that compiles, at least one topic, a group id
    /// when starting from committed offsets.
    ///
    /// # Errors
    ///
    /// What is wrong, in a sentence.
    pub fn validate(&self) -> Result<(), String> {
        let name = self.source_name();
        match &self.topics {
            KafkaTopics::Names(names) if names.is_empty() => {
                return Err(format!("{name}: no topic to read"));
            }
            KafkaTopics::Pattern(p) => {
                regex::Regex::new(p)
                    .map_err(|e| format!("{name}: the topic pattern does not compile: {e}"))?;
            }
            KafkaTopics::Names(_) => {}
        }
        if matches!(self.start, KafkaStartingOffsets::Committed(_)) && self.group_id.is_none() {
            return Err(format!(
                "{name}: starting from committed offsets needs a group id"
            ));
        }
        Ok(())
    }

    /// The config of every client: bootstrap, defaults, the user's, then the forced ones.
    fn client_config(&self, group: bool) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set("isolation.level", "read_committed")
            .set("queued.max.messages.kbytes", "16384")
            .set("allow.auto.create.topics", "false");
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        // librdkafka's consumer needs a group id even to be assigned partitions; readers
        // never join it, subscribe or commit, so without the user's a fixed one does.
        match (&self.group_id, group) {
            (Some(g), true) => config.set("group.id", g),
            _ => config.set("group.id", "weir-direct-reader"),
        };
        config
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "error");
        config
    }
}

/// The offset range one task reads of one Kafka partition in one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KafkaRange {
    topic: String,
    partition: i32,
    from: u64,
    until: u64,
    /// The reading task.
    task: u32,
}

/// What one batch reads: every known partition's range (empty ones too, for
/// `offset_ranges`), each dealt to a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KafkaPlan {
    ranges: Vec<KafkaRange>,
}

impl KafkaPlan {
    /// The non-empty ranges task `part` of `tasks` reads. A plan restored into a stream with
    /// fewer tasks than it was dealt to (the parallelism changed) deals the extra tasks'
    /// ranges again, modulo, so every range is read by exactly one task.
    fn ranges_of(&self, part: usize, tasks: usize) -> Vec<&KafkaRange> {
        self.ranges
            .iter()
            .filter(|r| r.task as usize % tasks.max(1) == part && r.from < r.until)
            .collect()
    }
}

/// Where the next batch starts, by `(topic, partition)`: every partition known so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct KafkaPositions(BTreeMap<(String, i32), u64>);

type TopicPartition = (String, i32);

/// The direct stream's planner (see the file's `//!`).
pub(crate) struct KafkaDirect {
    options: KafkaDirectOptions,
    name: String,
    pattern: Option<regex::Regex>,
    tasks: usize,
    rate: Option<RateHandle>,
    rate_config: RateConfig,
    batch_interval: Duration,
    /// The consumer planning asks (metadata, offsets); made at the first plan.
    planner: Mutex<Option<Arc<BaseConsumer>>>,
    /// Reading consumers not in use.
    readers: Mutex<Vec<BaseConsumer>>,
    /// Bytes (keys and values) and records read so far: the average record size.
    read_bytes: AtomicU64,
    read_records: AtomicU64,
    /// Each partition's planned end and latest offset, as of the newest plan.
    lags: Mutex<Vec<SourceLag>>,
    /// Positions to commit, to the committer thread (started at the first commit).
    committer: Mutex<Option<Committer>>,
    /// Where resets are reported as events.
    events: EventSlot,
}

impl fmt::Debug for KafkaDirect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaDirect")
            .field("name", &self.name)
            .field("tasks", &self.tasks)
            .finish_non_exhaustive()
    }
}

impl KafkaDirect {
    /// The planner of a stream with `options` (checked with `validate` by the caller) read by
    /// `tasks` tasks unless the options say.
    pub(crate) fn new(
        options: KafkaDirectOptions,
        tasks: usize,
        rate: Option<RateHandle>,
        rate_config: RateConfig,
        batch_interval: Duration,
        events: EventSlot,
    ) -> Self {
        let pattern = match &options.topics {
            KafkaTopics::Pattern(p) => regex::Regex::new(p).ok(),
            KafkaTopics::Names(_) => None,
        };
        KafkaDirect {
            name: options.source_name(),
            tasks: options.tasks.unwrap_or(tasks).max(1),
            options,
            pattern,
            rate,
            rate_config,
            batch_interval,
            planner: Mutex::new(None),
            readers: Mutex::new(Vec::new()),
            read_bytes: AtomicU64::new(0),
            read_records: AtomicU64::new(0),
            lags: Mutex::new(Vec::new()),
            committer: Mutex::new(None),
            events,
        }
    }

    fn error(&self, what: impl fmt::Display) -> ComputeError {
        ComputeError::new(format!("{}: {what}", self.name))
    }

    /// The planning consumer (made once; events it queued are drained).
    fn planning_client(&self) -> ComputeResult<Arc<BaseConsumer>> {
        let mut slot = lock(&self.planner);
        if let Some(client) = slot.as_ref() {
            let _ = client.poll(Duration::ZERO);
            return Ok(Arc::clone(client));
        }
        let client: BaseConsumer = self
            .options
            .client_config(true)
            .create()
            .map_err(|e| self.error(format_args!("creating the Kafka client: {e}")))?;
        let client = Arc::new(client);
        *slot = Some(Arc::clone(&client));
        Ok(client)
    }

    /// The partitions of the topics read, as the broker's metadata lists them now.
    fn discover(&self, client: &BaseConsumer) -> ComputeResult<BTreeSet<TopicPartition>> {
        let metadata = client
            .fetch_metadata(None, self.options.request_timeout)
            .map_err(|e| self.error(format_args!("fetching the topics' metadata: {e}")))?;
        let mut found = BTreeSet::new();
        let mut seen_topics = BTreeSet::new();
        for topic in metadata.topics() {
            let wanted = match (&self.options.topics, &self.pattern) {
                (KafkaTopics::Names(names), _) => names.iter().any(|n| n == topic.name()),
                (KafkaTopics::Pattern(_), Some(re)) => re.is_match(topic.name()),
                (KafkaTopics::Pattern(p), None) => {
                    return Err(
                        self.error(format_args!("the topic pattern {p:?} does not compile"))
                    );
                }
            };
            if !wanted || topic.error().is_some() {
                continue;
            }
            seen_topics.insert(topic.name().to_owned());
            for p in topic.partitions() {
                found.insert((topic.name().to_owned(), p.id()));
            }
        }
        if let KafkaTopics::Names(names) = &self.options.topics {
            let missing: Vec<&String> =
                names.iter().filter(|n| !seen_topics.contains(*n)).collect();
            if !missing.is_empty() && self.on_missing_is_fail() {
                return Err(self.error(format_args!(
                    "topic(s) {missing:?} not found in the broker's metadata"
                )));
            }
        }
        Ok(found)
    }

    fn on_missing_is_fail(&self) -> bool {
        self.options.on_out_of_range == OffsetResetPolicy::Fail
    }

    /// `[earliest, end)` of every partition of `parts` (the end is the last stable offset
    /// under `read_committed`): two ListOffsets look-ups for all of them (timestamps -2 and -1,
    /// which librdkafka sends one request per leader for, under the client's isolation level),
    /// not two round trips per partition as `fetch_watermarks` takes.
    fn watermarks(
        &self,
        client: &BaseConsumer,
        parts: &BTreeSet<TopicPartition>,
    ) -> ComputeResult<BTreeMap<TopicPartition, Range<u64>>> {
        if parts.is_empty() {
            return Ok(BTreeMap::new());
        }
        let ask = |which: Offset, what: &str| -> ComputeResult<BTreeMap<TopicPartition, u64>> {
            let mut tpl = TopicPartitionList::with_capacity(parts.len());
            for (t, p) in parts {
                tpl.add_partition_offset(t, *p, which)
                    .map_err(|e| self.error(e))?;
            }
            let found = client
                .offsets_for_times(tpl, self.options.request_timeout)
                .map_err(|e| self.error(format_args!("listing the {what} offsets: {e}")))?;
            let mut offsets = BTreeMap::new();
            for element in found.elements() {
                let (topic, partition) = (element.topic(), element.partition());
                match (element.error(), element.offset()) {
                    (Ok(()), Offset::Offset(o)) if o >= 0 => {
                        offsets.insert((topic.to_owned(), partition), o.unsigned_abs());
                    }
                    (Err(e), _) => {
                        return Err(self.error(format_args!(
                            "topic {topic} partition {partition}: listing the {what} offset: {e}"
                        )));
                    }
                    (Ok(()), other) => {
                        return Err(self.error(format_args!(
                            "topic {topic} partition {partition}: the broker answered no {what}                              offset ({other:?})"
                        )));
                    }
                }
            }
            Ok(offsets)
        };
        let low = ask(Offset::Beginning, "earliest")?;
        let high = ask(Offset::End, "latest")?;
        let mut marks = BTreeMap::new();
        for tp in parts {
            match (low.get(tp), high.get(tp)) {
                (Some(&low), Some(&high)) => {
                    marks.insert(tp.clone(), low..high.max(low));
                }
                _ => {
                    return Err(self.error(format_args!(
                        "topic {} partition {}: missing from the broker's offsets answer",
                        tp.0, tp.1
                    )));
                }
            }
        }
        Ok(marks)
    }

    fn report(&self, reset: &KafkaReset) {
        tracing::warn!(source = %self.name, "{reset}");
        self.events.emit(weir_actors::Event::SourceReset {
            source: reset.source.clone(),
            partition: format!("{}/{}", reset.topic, reset.partition),
            from: reset.from,
            to: reset.to,
            reason: reset.to_string(),
        });
        if let Some(callback) = &self.options.on_reset {
            callback(reset);
        }
    }

    /// The average size of the records read so far, if any were.
    fn average_size(&self) -> Option<u64> {
        let records = self.read_records.load(Ordering::Relaxed);
        (records > 0).then(|| (self.read_bytes.load(Ordering::Relaxed) / records).max(1))
    }

    fn take_reader(&self) -> ComputeResult<BaseConsumer> {
        if let Some(reader) = lock(&self.readers).pop() {
            return Ok(reader);
        }
        self.options
            .client_config(false)
            .create()
            .map_err(|e| self.error(format_args!("creating a reading consumer: {e}")))
    }

    fn give_back(&self, reader: BaseConsumer) {
        let _ = reader.unassign();
        let mut readers = lock(&self.readers);
        if readers.len() < self.tasks {
            readers.push(reader);
        }
    }

    /// Reads `ranges` (distinct partition numbers, so that an end-of-partition is
    /// unambiguous) with `reader`; appends to `out`.
    fn read_round(
        &self,
        reader: &BaseConsumer,
        ranges: &[&KafkaRange],
        out: &mut Vec<KafkaRecord>,
    ) -> ComputeResult<()> {
        let mut tpl = TopicPartitionList::new();
        for r in ranges {
            let from = i64::try_from(r.from).map_err(|_| self.error("offset out of i64"))?;
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(from))
                .map_err(|e| self.error(e))?;
        }
        reader
            .assign(&tpl)
            .map_err(|e| self.error(format_args!("assigning {ranges:?}: {e}")))?;
        // Partition number → (range, topic, records taken).
        let mut open: HashMap<i32, (&KafkaRange, Arc<str>, u64)> = ranges
            .iter()
            .map(|r| (r.partition, (*r, Arc::from(r.topic.as_str()), 0)))
            .collect();
        let mut builder = RecordBuilder::default();
        let deadline = Instant::now() + self.options.read_timeout;
        while !open.is_empty() {
            if Instant::now() >= deadline {
                let left: Vec<String> = open
                    .values()
                    .map(|(r, _, n)| {
                        format!(
                            "topic {} partition {} offsets {}..{} ({n} read)",
                            r.topic, r.partition, r.from, r.until
                        )
                    })
                    .collect();
                return Err(self.error(format_args!(
                    "reading did not finish within {:?}: {}",
                    self.options.read_timeout,
                    left.join("; ")
                )));
            }
            match reader.poll(Duration::from_millis(100)) {
                None => {}
                Some(Ok(message)) => {
                    use rdkafka::Message;
                    let p = message.partition();
                    let Some((range, topic, taken)) = open.get_mut(&p) else {
                        continue;
                    };
                    if message.topic() != range.topic {
                        continue;
                    }
                    let offset = u64::try_from(message.offset()).unwrap_or(0);
                    if offset >= range.until {
                        open.remove(&p);
                        continue;
                    }
                    if offset >= range.from {
                        out.push(builder.record(topic, &message));
                        *taken += 1;
                    }
                    if offset + 1 >= range.until {
                        open.remove(&p);
                    }
                }
                // The partition's end (its last stable offset, at least the range's end when
                // planned): offsets not delivered below `until` do not exist.
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(KafkaError::MessageConsumption(code)))
                    if matches!(
                        code,
                        RDKafkaErrorCode::OffsetOutOfRange
                            | RDKafkaErrorCode::UnknownTopicOrPartition
                            | RDKafkaErrorCode::UnknownTopic
                            | RDKafkaErrorCode::UnknownPartition
                    ) =>
                {
                    let what: Vec<String> = open
                        .values()
                        .map(|(r, _, _)| {
                            format!(
                                "topic {} partition {} offsets {}..{}",
                                r.topic, r.partition, r.from, r.until
                            )
                        })
                        .collect();
                    return Err(self.error(format_args!(
                        "{code:?} reading {}: the planned records are gone (retention, or the \
                         topic was deleted); this batch cannot be read again",
                        what.join("; ")
                    )));
                }
                Some(Err(e)) => {
                    // Transport errors and the like: librdkafka retries; the deadline bounds it.
                    tracing::debug!(source = %self.name, error = %e, "while reading");
                }
            }
        }
        Ok(())
    }

    /// Reads `ranges` with one consumer, in rounds of distinct partition numbers.
    fn read_ranges(&self, ranges: &[&KafkaRange]) -> ComputeResult<Vec<KafkaRecord>> {
        let mut rounds: Vec<Vec<&KafkaRange>> = Vec::new();
        for r in ranges {
            match rounds
                .iter_mut()
                .find(|round| round.iter().all(|x| x.partition != r.partition))
            {
                Some(round) => round.push(r),
                None => rounds.push(vec![r]),
            }
        }
        let total: u64 = ranges.iter().map(|r| r.until - r.from).sum();
        let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0).min(1 << 20));
        let reader = self.take_reader()?;
        for round in &rounds {
            self.read_round(&reader, round, &mut out)?;
        }
        self.give_back(reader);
        let bytes: u64 = out.iter().map(KafkaRecord::size).sum();
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.read_records
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(out)
    }

    /// The partition's longest prefix of `range` within `max_bytes`, estimated with the
    /// average record size (sampled from the partition if none is known yet).
    fn byte_prefix(
        &self,
        tp: &TopicPartition,
        range: Range<u64>,
        max_bytes: u64,
    ) -> ComputeResult<(u64, u64)> {
        let average = match self.average_size() {
            Some(a) => a,
            None => {
                let sample = KafkaRange {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    from: range.start,
                    until: range.end.min(range.start + crate::dstream::SIZE_CHUNK),
                    task: 0,
                };
                self.read_ranges(&[&sample])?;
                self.average_size().unwrap_or(1)
            }
        };
        let count = (max_bytes / average).min(range.end - range.start);
        Ok((range.start + count, count * average))
    }

    fn commit_now(&self, through: &KafkaPositions) {
        if !self.options.commit_offsets || self.options.group_id.is_none() {
            return;
        }
        let mut slot = lock(&self.committer);
        if slot.is_none() {
            match Committer::start(&self.options, self.name.clone()) {
                Ok(c) => *slot = Some(c),
                Err(e) => {
                    tracing::warn!(source = %self.name, error = %e, "cannot start committing offsets");
                    return;
                }
            }
        }
        if let Some(c) = slot.as_ref() {
            let _ = c.send.send(through.0.clone());
        }
    }
}

impl Planner for KafkaDirect {
    type Item = KafkaRecord;
    type Plan = KafkaPlan;
    type Position = KafkaPositions;

    fn partitions(&self) -> usize {
        self.tasks
    }

    fn name(&self) -> Option<String> {
        Some(self.name.clone())
    }

    fn initial(&self) -> ComputeResult<KafkaPositions> {
        let client = self.planning_client()?;
        let parts = self.discover(&client)?;
        let timeout = self.options.request_timeout;
        let mut tpl = TopicPartitionList::new();
        for (t, p) in &parts {
            tpl.add_partition(t, *p);
        }
        let marks = self.watermarks(&client, &parts)?;
        let mark = |tp: &TopicPartition| marks.get(tp).cloned().unwrap_or(0..0);
        let mut positions = BTreeMap::new();
        match &self.options.start {
            KafkaStartingOffsets::Earliest => {
                for tp in parts {
                    let start = mark(&tp).start;
                    positions.insert(tp, start);
                }
            }
            KafkaStartingOffsets::Latest => {
                for tp in parts {
                    let end = mark(&tp).end;
                    positions.insert(tp, end);
                }
            }
            KafkaStartingOffsets::Given(given) => {
                for tp in parts {
                    let start = match given.get(&tp) {
                        Some(o) => *o,
                        None => mark(&tp).start,
                    };
                    positions.insert(tp, start);
                }
            }
            KafkaStartingOffsets::Committed(fallback) => {
                let committed = client
                    .committed_offsets(tpl, timeout)
                    .map_err(|e| {
                        self.error(format_args!("reading the group's committed offsets: {e}"))
                    })?
                    .to_topic_map();
                for tp in parts {
                    let start = match committed.get(&tp) {
                        Some(Offset::Offset(o)) if *o >= 0 => u64::try_from(*o).unwrap_or(0),
                        _ => match fallback {
                            CommittedFallback::Earliest => mark(&tp).start,
                            CommittedFallback::Latest => mark(&tp).end,
                            CommittedFallback::Fail => {
                                return Err(self.error(format_args!(
                                    "topic {} partition {}: the group has no committed offset",
                                    tp.0, tp.1
                                )));
                            }
                        },
                    };
                    positions.insert(tp, start);
                }
            }
            KafkaStartingOffsets::Timestamp(ms) => {
                let mut ask = TopicPartitionList::new();
                for (t, p) in &parts {
                    ask.add_partition_offset(t, *p, Offset::Offset(*ms))
                        .map_err(|e| self.error(e))?;
                }
                let found = client
                    .offsets_for_times(ask, timeout)
                    .map_err(|e| self.error(format_args!("looking offsets up by timestamp: {e}")))?
                    .to_topic_map();
                for tp in parts {
                    let start = match found.get(&tp) {
                        Some(Offset::Offset(o)) if *o >= 0 => u64::try_from(*o).unwrap_or(0),
                        _ => mark(&tp).end,
                    };
                    positions.insert(tp, start);
                }
            }
        }
        Ok(KafkaPositions(positions))
    }

    fn plan(
        &self,
        from: &KafkaPositions,
        _time: u64,
    ) -> ComputeResult<(KafkaPlan, KafkaPositions)> {
        let client = self.planning_client()?;
        let parts = self.discover(&client)?;
        let policy = self.options.on_out_of_range;
        for ((topic, partition), offset) in &from.0 {
            if parts.contains(&(topic.clone(), *partition)) {
                continue;
            }
            let reset = KafkaReset {
                source: self.name.clone(),
                topic: topic.clone(),
                partition: *partition,
                from: *offset,
                to: None,
                available: None,
            };
            if policy == OffsetResetPolicy::Fail {
                return Err(ComputeError::new(format!(
                    "{}: topic {topic} partition {partition} (next offset {offset}) is not in the \
                     broker's metadata any more: the topic was deleted? (on_out_of_range: fail)",
                    self.name
                )));
            }
            self.report(&reset);
        }
        let mut marks = self.watermarks(&client, &parts)?;
        let mut keys = Vec::with_capacity(parts.len());
        let mut available = Vec::with_capacity(parts.len());
        for tp in parts {
            let there = marks.remove(&tp).unwrap_or(0..0);
            let start = match from.0.get(&tp) {
                // A partition seen for the first time (a new partition or topic): earliest.
                None => there.start,
                Some(&pos) if pos < there.start || pos > there.end => {
                    let to = match policy {
                        OffsetResetPolicy::Fail => {
                            return Err(self.error(format_args!(
                                "topic {} partition {}: offset {pos} is out of range: the \
                                 partition holds {there:?} (retention deleted records, or the \
                                 topic was recreated; on_out_of_range: fail)",
                                tp.0, tp.1
                            )));
                        }
                        OffsetResetPolicy::Earliest => there.start,
                        OffsetResetPolicy::Latest => there.end,
                    };
                    self.report(&KafkaReset {
                        source: self.name.clone(),
                        topic: tp.0.clone(),
                        partition: tp.1,
                        from: pos,
                        to: Some(to),
                        available: Some(there.clone()),
                    });
                    to
                }
                Some(&pos) => pos,
            };
            available.push(start..there.end);
            keys.push(tp);
        }
        let latest: Vec<u64> = available.iter().map(|r| r.end).collect();
        let capped = cap_ranges(
            available,
            &self.options.limits,
            &self.rate_config,
            self.rate.as_ref().map(RateHandle::get),
            self.batch_interval,
            |i, range, share| match keys.get(i) {
                Some(tp) => self.byte_prefix(tp, range, share),
                None => Ok((range.end, 0)),
            },
        )?;
        let tasks = self.tasks as u64;
        let mut ranges = Vec::with_capacity(keys.len());
        let mut next = BTreeMap::new();
        let mut lags = Vec::with_capacity(keys.len());
        for (i, (tp, range)) in keys.into_iter().zip(capped).enumerate() {
            next.insert(tp.clone(), range.end);
            lags.push(SourceLag {
                source: tp.0.clone(),
                partition: u32::try_from(tp.1).unwrap_or(0),
                planned: range.end,
                latest: latest.get(i).copied().unwrap_or(range.end),
            });
            ranges.push(KafkaRange {
                topic: tp.0,
                partition: tp.1,
                from: range.start,
                until: range.end,
                task: u32::try_from(i as u64 % tasks).unwrap_or(0),
            });
        }
        *lock(&self.lags) = lags;
        Ok((KafkaPlan { ranges }, KafkaPositions(next)))
    }

    fn read(&self, plan: &KafkaPlan, part: usize) -> ComputeResult<Vec<KafkaRecord>> {
        let mine = plan.ranges_of(part, self.tasks);
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        self.read_ranges(&mine)
    }

    fn commit(&self, through: &KafkaPositions) {
        self.commit_now(through);
    }

    fn offset_ranges(&self, plan: &KafkaPlan) -> Vec<OffsetRange> {
        plan.ranges
            .iter()
            .map(|r| OffsetRange {
                source: r.topic.clone(),
                partition: u32::try_from(r.partition).unwrap_or(0),
                from: r.from,
                until: r.until,
            })
            .collect()
    }

    fn sources(&self) -> Vec<SourceLag> {
        lock(&self.lags).clone()
    }
}

/// The thread that commits completed batches' offsets to the group, newest first (older ones
/// still queued are skipped: a commit covers every batch before it). Dropping it lets the
/// thread make the last commit, waiting at most the request timeout for it.
struct Committer {
    send: mpsc::Sender<BTreeMap<TopicPartition, u64>>,
    done: mpsc::Receiver<()>,
    wait: Duration,
}

impl Committer {
    fn start(options: &KafkaDirectOptions, name: String) -> Result<Self, String> {
        let client: BaseConsumer = options
            .client_config(true)
            .create()
            .map_err(|e| format!("creating the committing client: {e}"))?;
        let (send, receive) = mpsc::channel::<BTreeMap<TopicPartition, u64>>();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("weir-kafka-commit".into())
            .spawn(move || {
                let mut last: Option<BTreeMap<TopicPartition, u64>> = None;
                while let Ok(mut next) = receive.recv() {
                    while let Ok(newer) = receive.try_recv() {
                        next = newer;
                    }
                    if last.as_ref() == Some(&next) {
                        continue;
                    }
                    let mut tpl = TopicPartitionList::new();
                    for ((t, p), o) in &next {
                        let Ok(o) = i64::try_from(*o) else { continue };
                        let _ = tpl.add_partition_offset(t, *p, Offset::Offset(o));
                    }
                    match client.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => last = Some(next),
                        Err(e) => {
                            tracing::warn!(source = %name, error = %e, "committing offsets failed");
                        }
                    }
                    let _ = client.poll(Duration::ZERO);
                }
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("starting the committing thread: {e}"))?;
        Ok(Committer {
            send,
            done,
            wait: options.request_timeout,
        })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Close the channel: the thread commits what is queued and ends.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.send, closed));
        let _ = self.done.recv_timeout(self.wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_validate_and_name() {
        let o = KafkaDirectOptions::topics("127.0.0.1:1", ["a", "b"]);
        assert_eq!(o.source_name(), "kafka:a,b");
        assert!(o.validate().is_ok());
        let bad = KafkaDirectOptions::pattern("127.0.0.1:1", "(");
        assert!(bad.validate().unwrap_err().contains("does not compile"));
        let none = KafkaDirectOptions::topics("127.0.0.1:1", Vec::<String>::new());
        assert!(none.validate().is_err());
        let committed = KafkaDirectOptions::topics("127.0.0.1:1", ["a"])
            .starting_offsets(KafkaStartingOffsets::Committed(CommittedFallback::Fail));
        assert!(committed.validate().unwrap_err().contains("group id"));
        assert!(committed.group_id("g").validate().is_ok());
    }

    #[test]
    fn a_plan_dealt_to_more_tasks_than_there_are_now_is_read_once() {
        let range = |partition, task| KafkaRange {
            topic: "t".into(),
            partition,
            from: 0,
            until: 1,
            task,
        };
        let plan = KafkaPlan {
            ranges: (0..4).map(|p| range(p, p as u32)).collect(),
        };
        let read = |tasks: usize| -> Vec<Vec<i32>> {
            (0..tasks)
                .map(|part| {
                    plan.ranges_of(part, tasks)
                        .iter()
                        .map(|r| r.partition)
                        .collect()
                })
                .collect()
        };
        assert_eq!(read(4), vec![vec![0], vec![1], vec![2], vec![3]]);
        assert_eq!(read(2), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(read(1), vec![vec![0, 1, 2, 3]]);
    }

    #[test]
    fn forced_properties_win_over_the_users() {
        let o = KafkaDirectOptions::topics("b:1", ["a"])
            .set("enable.auto.commit", "true")
            .set("isolation.level", "read_uncommitted")
            .group_id("g");
        let c = o.client_config(true);
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("isolation.level"), Some("read_uncommitted"));
        assert_eq!(c.get("group.id"), Some("g"));
        assert_eq!(
            o.client_config(false).get("group.id"),
            Some("weir-direct-reader")
        );
    }
}
