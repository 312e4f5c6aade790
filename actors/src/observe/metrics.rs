//! The engine's metrics, in the Prometheus text format: fed by the events and by a few
//! counters kept where the work happens, never by a cost per record.
//!
//! [`EngineMetrics`] is one registry per engine, owned by its [`EventHub`](super::hub::EventHub):
//! every published event updates the batch, receiver, checkpoint and supervision metrics
//! ([`EngineMetrics::observe`]), the WAL writer records each group commit
//! ([`EngineMetrics::wal_group_committed`]: one call per fsync, not per record), and what is
//! cheaper to read than to track — the block store's bytes, the lag of offset sources, the
//! process's memory and CPU — is read when Prometheus scrapes ([`EngineMetrics::encode`]).
//!
//! Names follow Prometheus's conventions: a `weir_` prefix, base units (seconds, bytes),
//! `_total` on counters, and the standard `process_*` metrics of the process collector. The
//! full list is in `docs/operations.md`. Nothing here is durable: a restarted process starts
//! counting from zero, which Prometheus's `rate()` and `increase()` expect.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::observe::event::Event;

/// Buckets of the batch delays and durations, in seconds: 5 ms to 2 minutes.
const DELAY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Buckets of the WAL's fsync latency, in seconds: 50 µs to 2.5 s.
const FSYNC_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5,
];
/// Buckets of the WAL's group size, in records.
const GROUP_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0,
];

/// How far an offset source is behind, per partition (for the lag gauge).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceLag {
    /// The source's name (a direct stream's [`name`], e.g. a log's path).
    ///
    /// [`name`]: https://docs.rs/weir-streaming/latest/weir/trait.OffsetSource.html
    pub source: String,
    /// The partition.
    pub partition: u32,
    /// The end of what the newest planned batch reads.
    pub planned: u64,
    /// The latest offset the source reported.
    pub latest: u64,
}

impl SourceLag {
    /// Records the source has that no batch has planned yet.
    pub fn lag(&self) -> u64 {
        self.latest.saturating_sub(self.planned)
    }
}

/// What a scrape reads on the spot.
type Probe<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// One engine's metrics. Cheap to update; [`encode`](Self::encode) renders them.
pub struct EngineMetrics {
    registry: Registry,
    batches_completed: IntCounter,
    batches_failed: IntCounter,
    planning_failures: IntCounterVec,
    source_resets: IntCounterVec,
    batch_records: IntCounter,
    batch_processing: Histogram,
    batch_scheduling_delay: Histogram,
    batch_total_delay: Histogram,
    input_rate: Gauge,
    last_batch_time: Gauge,
    outputs_completed: IntCounter,
    output_duration: Histogram,
    source_records: IntCounterVec,
    receiver_records: IntCounterVec,
    receiver_bytes: IntCounterVec,
    receiver_blocks: IntCounterVec,
    receiver_errors: IntCounterVec,
    source_lag: IntGaugeVec,
    wal_appends: IntCounter,
    wal_bytes: IntCounter,
    wal_group_commits: IntCounter,
    wal_group_records: Histogram,
    wal_fsync: Histogram,
    wal_segments: IntGaugeVec,
    wal_segments_rolled: IntCounter,
    wal_segments_cleaned: IntCounter,
    wal_torn_tails: IntCounter,
    checkpoints_written: IntCounter,
    checkpoints_failed: IntCounter,
    checkpoints_skipped: IntCounter,
    checkpoint_duration: Histogram,
    checkpoint_bytes: IntGauge,
    checkpoint_last_id: IntGauge,
    actor_failures: IntCounterVec,
    actor_restarts: IntCounterVec,
    actor_give_ups: IntCounterVec,
    block_store_bytes: IntGauge,
    events_lagged: IntCounter,
    batch_interval_s: Mutex<f64>,
    /// The last completed batch: its time and the records its blocks held.
    last_batch: Mutex<(u64, u64)>,
    block_store_probe: Mutex<Option<Probe<u64>>>,
    source_probe: Mutex<Option<Probe<Vec<SourceLag>>>>,
}

impl fmt::Debug for EngineMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EngineMetrics")
            .field("batches_completed", &self.batches_completed.get())
            .finish_non_exhaustive()
    }
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics::new()
    }
}

/// Registers `metric`. Our metrics' names are constants and distinct (the tests render them
/// all), so neither building nor registering one fails; if it did, the metric would be left
/// out of the scrape and the failure logged, never a panic in the engine.
fn register<C: Collector + Clone + 'static>(registry: &Registry, metric: C) -> C {
    if let Err(err) = registry.register(Box::new(metric.clone())) {
        tracing::error!(error = %err, "a metric could not be registered");
    }
    metric
}

const VALID: &str = "a metric with a constant, valid name and help text";

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect(VALID))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect(VALID),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect(VALID),
    )
}

fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect(VALID))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> Gauge {
    register(registry, Gauge::new(name, help).expect(VALID))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, Histogram::with_opts(opts).expect(VALID))
}

fn secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

impl EngineMetrics {
    /// Every metric at zero, and the process collector.
    pub fn new() -> Self {
        let r = Registry::new();
        let metrics = EngineMetrics {
            batches_completed: counter(
                &r,
                "weir_batches_completed_total",
                "Batches whose every job succeeded.",
            ),
            batches_failed: counter(
                &r,
                "weir_batches_failed_total",
                "Batches that failed after their jobs' retries.",
            ),
            planning_failures: counter_vec(
                &r,
                "weir_planning_failures_total",
                "Failed attempts at planning a batch, by the source that failed or timed out.",
                &["source"],
            ),
            source_resets: counter_vec(
                &r,
                "weir_source_resets_total",
                "Positions a direct source moved because the source no longer had them \
                 (deleted offsets, a deleted partition), by source.",
                &["source"],
            ),
            batch_records: counter(
                &r,
                "weir_batch_records_total",
                "Records processed by completed batches.",
            ),
            batch_processing: histogram(
                &r,
                "weir_batch_processing_seconds",
                "How long a batch's jobs ran.",
                DELAY_BUCKETS,
            ),
            batch_scheduling_delay: histogram(
                &r,
                "weir_batch_scheduling_delay_seconds",
                "How long after its batch time a batch started.",
                DELAY_BUCKETS,
            ),
            batch_total_delay: histogram(
                &r,
                "weir_batch_total_delay_seconds",
                "Scheduling delay plus processing time of a batch.",
                DELAY_BUCKETS,
            ),
            input_rate: gauge(
                &r,
                "weir_input_rate_records_per_second",
                "Records of the last completed batch per second of batch interval.",
            ),
            last_batch_time: gauge(
                &r,
                "weir_last_completed_batch_time_seconds",
                "The batch time of the last completed batch, since the Unix epoch.",
            ),
            outputs_completed: counter(
                &r,
                "weir_outputs_completed_total",
                "Output operations of batches that committed.",
            ),
            output_duration: histogram(
                &r,
                "weir_output_duration_seconds",
                "How long an output operation took.",
                DELAY_BUCKETS,
            ),
            source_records: counter_vec(
                &r,
                "weir_source_records_total",
                "Records a source read for completed batches, by the source's id.",
                &["source"],
            ),
            receiver_records: counter_vec(
                &r,
                "weir_receiver_records_total",
                "Records a receiver stored (durable in the WAL when it is on).",
                &["receiver", "stream"],
            ),
            receiver_bytes: counter_vec(
                &r,
                "weir_receiver_bytes_total",
                "Payload bytes a receiver stored.",
                &["receiver", "stream"],
            ),
            receiver_blocks: counter_vec(
                &r,
                "weir_receiver_blocks_total",
                "Blocks a receiver stored.",
                &["receiver", "stream"],
            ),
            receiver_errors: counter_vec(
                &r,
                "weir_receiver_errors_total",
                "Errors a receiver reported.",
                &["receiver", "stream"],
            ),
            source_lag: gauge_vec(
                &r,
                "weir_source_lag_records",
                "Records an offset source holds beyond the newest planned batch.",
                &["source", "partition"],
            ),
            wal_appends: counter(
                &r,
                "weir_wal_appends_total",
                "Records appended to write-ahead logs and acknowledged.",
            ),
            wal_bytes: counter(
                &r,
                "weir_wal_bytes_total",
                "Bytes (frames) made durable in write-ahead logs.",
            ),
            wal_group_commits: counter(
                &r,
                "weir_wal_group_commits_total",
                "Group commits of write-ahead logs: one write and one fsync each.",
            ),
            wal_group_records: histogram(
                &r,
                "weir_wal_group_records",
                "Records per group commit.",
                GROUP_BUCKETS,
            ),
            wal_fsync: histogram(
                &r,
                "weir_wal_fsync_seconds",
                "How long a group commit's write and fsync took.",
                FSYNC_BUCKETS,
            ),
            wal_segments: gauge_vec(
                &r,
                "weir_wal_segments",
                "Segments a write-ahead log holds.",
                &["log"],
            ),
            wal_segments_rolled: counter(
                &r,
                "weir_wal_segments_rolled_total",
                "Segments sealed because of their size or age.",
            ),
            wal_segments_cleaned: counter(
                &r,
                "weir_wal_segments_cleaned_total",
                "Segments deleted because every record in them was older than needed.",
            ),
            wal_torn_tails: counter(
                &r,
                "weir_wal_torn_tails_cut_total",
                "Torn or corrupt tails cut off by recovery.",
            ),
            checkpoints_written: counter(
                &r,
                "weir_checkpoints_written_total",
                "Checkpoints written and durable.",
            ),
            checkpoints_failed: counter(
                &r,
                "weir_checkpoints_failed_total",
                "Checkpoint writes that failed or timed out.",
            ),
            checkpoints_skipped: counter(
                &r,
                "weir_checkpoints_skipped_total",
                "Checkpoints that could not be read on restore (an older one was used).",
            ),
            checkpoint_duration: histogram(
                &r,
                "weir_checkpoint_duration_seconds",
                "How long a checkpoint took, from its snapshot to durable.",
                DELAY_BUCKETS,
            ),
            checkpoint_bytes: int_gauge(
                &r,
                "weir_checkpoint_size_bytes",
                "The size of the last checkpoint written.",
            ),
            checkpoint_last_id: int_gauge(
                &r,
                "weir_checkpoint_last_id",
                "The id of the last checkpoint written.",
            ),
            actor_failures: counter_vec(
                &r,
                "weir_actor_failures_total",
                "Abnormal exits of an actor (errors, panics, kills).",
                &["actor"],
            ),
            actor_restarts: counter_vec(
                &r,
                "weir_actor_restarts_total",
                "Restarts of an actor by its supervisor.",
                &["actor"],
            ),
            actor_give_ups: counter_vec(
                &r,
                "weir_actor_give_ups_total",
                "Times a supervisor gave up (its restart intensity was exceeded).",
                &["actor"],
            ),
            block_store_bytes: int_gauge(
                &r,
                "weir_block_store_bytes",
                "Bytes of received records held in the block store's memory.",
            ),
            events_lagged: counter(
                &r,
                "weir_events_dropped_total",
                "Events a slow subscriber missed (its queue is bounded; the engine never waits).",
            ),
            batch_interval_s: Mutex::new(0.0),
            last_batch: Mutex::new((0, 0)),
            block_store_probe: Mutex::new(None),
            source_probe: Mutex::new(None),
            registry: r,
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        if let Err(err) = metrics.registry.register(Box::new(process)) {
            tracing::debug!(error = %err, "no process metrics");
        }
        metrics
    }

    /// Sets the batch interval (for the input rate).
    pub fn set_batch_interval(&self, interval: Duration) {
        *lock(&self.batch_interval_s) = interval.as_secs_f64();
    }

    /// Reads the block store's bytes at every scrape.
    pub fn set_block_store_probe(&self, probe: impl Fn() -> u64 + Send + Sync + 'static) {
        *lock(&self.block_store_probe) = Some(Arc::new(probe));
    }

    /// Reads the offset sources' positions at every scrape.
    pub fn set_source_probe(&self, probe: impl Fn() -> Vec<SourceLag> + Send + Sync + 'static) {
        *lock(&self.source_probe) = Some(Arc::new(probe));
    }

    /// The offset sources' positions now (empty without a probe).
    pub fn sources(&self) -> Vec<SourceLag> {
        let probe = lock(&self.source_probe).clone();
        probe.map(|p| p()).unwrap_or_default()
    }

    /// One group commit of a write-ahead log: `records` records, `bytes` bytes, written and
    /// fsynced in `took`; the log now holds `segments` segments.
    pub fn wal_group_committed(
        &self,
        log: &str,
        records: u64,
        bytes: u64,
        took: Duration,
        segments: usize,
    ) {
        self.wal_appends.inc_by(records);
        self.wal_bytes.inc_by(bytes);
        self.wal_group_commits.inc();
        self.wal_group_records.observe(records as f64);
        self.wal_fsync.observe(took.as_secs_f64());
        self.wal_segments
            .with_label_values(&[log])
            .set(i64::try_from(segments).unwrap_or(i64::MAX));
    }

    /// Updates the metrics an event describes.
    pub fn observe(&self, event: &Event) {
        match event {
            Event::ActorFailed { actor, .. } => {
                self.actor_failures.with_label_values(&[actor]).inc();
            }
            Event::ActorRestarted { actor, .. } => {
                self.actor_restarts.with_label_values(&[actor]).inc();
            }
            Event::ActorGaveUp { actor, .. } => {
                self.actor_give_ups.with_label_values(&[actor]).inc();
            }
            Event::ReceiverError { actor, stream, .. } => {
                let stream = stream.to_string();
                self.receiver_errors
                    .with_label_values(&[actor.as_str(), &stream])
                    .inc();
            }
            Event::BlockStored {
                actor,
                stream,
                records,
                bytes,
            } => {
                let stream = stream.to_string();
                let labels = [actor.as_str(), stream.as_str()];
                self.receiver_records
                    .with_label_values(&labels)
                    .inc_by(*records);
                self.receiver_bytes
                    .with_label_values(&labels)
                    .inc_by(*bytes);
                self.receiver_blocks.with_label_values(&labels).inc();
            }
            Event::BatchCompleted {
                batch_time_ms,
                scheduling_delay_ms,
                processing_ms,
                records,
            } => {
                self.batches_completed.inc();
                self.batch_records.inc_by(*records);
                self.batch_processing.observe(secs(*processing_ms));
                self.batch_scheduling_delay
                    .observe(secs(*scheduling_delay_ms));
                self.batch_total_delay
                    .observe(secs(scheduling_delay_ms.saturating_add(*processing_ms)));
                *lock(&self.last_batch) = (*batch_time_ms, *records);
                self.set_input_rate(*records);
                self.last_batch_time.set(secs(*batch_time_ms));
            }
            Event::BatchInputs {
                batch_time_ms,
                records,
                sources,
            } => {
                for (source, n) in sources {
                    self.source_records.with_label_values(&[source]).inc_by(*n);
                }
                // A receiver's records are counted by its blocks too: the larger count is the
                // batch's input.
                let (last, counted) = *lock(&self.last_batch);
                if last == *batch_time_ms && *records > counted {
                    self.batch_records.inc_by(records - counted);
                    self.set_input_rate(*records);
                }
            }
            Event::BatchFailed { .. } => self.batches_failed.inc(),
            Event::SourceReset { source, .. } => {
                self.source_resets.with_label_values(&[source]).inc();
            }
            Event::PlanningFailed { source, .. } => {
                self.planning_failures.with_label_values(&[source]).inc();
            }
            Event::OutputCompleted { duration_ms, .. } => {
                self.outputs_completed.inc();
                self.output_duration.observe(secs(*duration_ms));
            }
            Event::WalSegmentRolled { .. } => self.wal_segments_rolled.inc(),
            Event::WalSegmentsCleaned { segments, .. } => {
                self.wal_segments_cleaned.inc_by(segments.len() as u64);
            }
            Event::WalTornTailCut { .. } => self.wal_torn_tails.inc(),
            Event::CheckpointWritten {
                id,
                bytes,
                duration_ms,
                ..
            } => {
                self.checkpoints_written.inc();
                self.checkpoint_bytes
                    .set(i64::try_from(*bytes).unwrap_or(i64::MAX));
                self.checkpoint_last_id
                    .set(i64::try_from(*id).unwrap_or(i64::MAX));
                if let Some(ms) = duration_ms {
                    self.checkpoint_duration.observe(secs(*ms));
                }
            }
            Event::CheckpointFailed { .. } => self.checkpoints_failed.inc(),
            Event::CheckpointSkipped { .. } => self.checkpoints_skipped.inc(),
            Event::Lagged { missed } => self.events_lagged.inc_by(*missed),
            _ => {}
        }
    }

    fn set_input_rate(&self, records: u64) {
        let interval = *lock(&self.batch_interval_s);
        if interval > 0.0 {
            self.input_rate.set(records as f64 / interval);
        }
    }

    /// The WAL's totals: (appends, bytes, group commits, mean fsync seconds if any).
    pub fn wal_totals(&self) -> (u64, u64, u64, Option<f64>) {
        let fsyncs = self.wal_fsync.get_sample_count();
        let mean = (fsyncs > 0).then(|| self.wal_fsync.get_sample_sum() / fsyncs as f64);
        (
            self.wal_appends.get(),
            self.wal_bytes.get(),
            self.wal_group_commits.get(),
            mean,
        )
    }

    /// Every metric in the Prometheus text format (version 0.0.4), with the probes read now.
    pub fn encode(&self) -> String {
        let block_store = lock(&self.block_store_probe).clone();
        if let Some(probe) = block_store {
            self.block_store_bytes
                .set(i64::try_from(probe()).unwrap_or(i64::MAX));
        }
        self.source_lag.reset();
        for source in self.sources() {
            let partition = source.partition.to_string();
            self.source_lag
                .with_label_values(&[source.source.as_str(), &partition])
                .set(i64::try_from(source.lag()).unwrap_or(i64::MAX));
        }
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %err, "metrics could not be encoded");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The content type of [`EngineMetrics::encode`].
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn events_feed_the_counters_and_histograms() {
        let m = EngineMetrics::new();
        m.set_batch_interval(Duration::from_millis(500));
        m.observe(&Event::BatchCompleted {
            batch_time_ms: 2_000,
            scheduling_delay_ms: 5,
            processing_ms: 120,
            records: 50,
        });
        m.observe(&Event::ActorRestarted {
            actor: "receiver-0".into(),
            attempt: 1,
            delay_ms: 100,
        });
        m.observe(&Event::BlockStored {
            actor: "receiver-supervisor-0".into(),
            stream: 0,
            records: 7,
            bytes: 70,
        });
        m.observe(&Event::PlanningFailed {
            batch_time_ms: 3_000,
            source: "orders".into(),
            cause: "no answer within 10000 ms".into(),
            attempt: 1,
            retry_in_ms: Some(100),
        });
        m.observe(&Event::SourceReset {
            source: "orders".into(),
            partition: "orders/3".into(),
            from: 10,
            to: Some(500),
            reason: "offset 10 is out of range".into(),
        });
        m.wal_group_committed("wal", 7, 90, Duration::from_micros(300), 2);
        m.set_block_store_probe(|| 4096);
        let text = m.encode();
        assert_eq!(value(&text, "weir_batches_completed_total"), Some(1.0));
        assert_eq!(
            value(&text, "weir_input_rate_records_per_second"),
            Some(100.0)
        );
        assert_eq!(
            value(&text, "weir_batch_processing_seconds_count"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "weir_batch_total_delay_seconds_sum"),
            Some(0.125)
        );
        assert_eq!(
            value(&text, "weir_actor_restarts_total{actor=\"receiver-0\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                "weir_receiver_records_total{receiver=\"receiver-supervisor-0\",stream=\"0\"}"
            ),
            Some(7.0)
        );
        assert_eq!(
            value(&text, "weir_planning_failures_total{source=\"orders\"}"),
            Some(1.0)
        );
        assert_eq!(
            value(&text, "weir_source_resets_total{source=\"orders\"}"),
            Some(1.0)
        );
        assert_eq!(value(&text, "weir_wal_appends_total"), Some(7.0));
        assert_eq!(value(&text, "weir_wal_segments{log=\"wal\"}"), Some(2.0));
        assert_eq!(value(&text, "weir_block_store_bytes"), Some(4096.0));
        assert!(
            text.contains("# TYPE weir_wal_fsync_seconds histogram"),
            "{text}"
        );
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }

    #[test]
    fn source_lag_is_read_at_scrape_time() {
        let m = EngineMetrics::new();
        let latest = Arc::new(std::sync::atomic::AtomicU64::new(10));
        let probe = Arc::clone(&latest);
        m.set_source_probe(move || {
            vec![SourceLag {
                source: "log".into(),
                partition: 3,
                planned: 4,
                latest: probe.load(std::sync::atomic::Ordering::Relaxed),
            }]
        });
        let series = "weir_source_lag_records{partition=\"3\",source=\"log\"}";
        assert_eq!(value(&m.encode(), series), Some(6.0));
        latest.store(25, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(value(&m.encode(), series), Some(21.0));
    }
}
