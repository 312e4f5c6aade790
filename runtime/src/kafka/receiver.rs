//! The receiver-based Kafka stream (issue 14, item 4; Spark's receiver approach with the
//! write-ahead log): [`KafkaReceiver`] subscribes to topics as a member of a consumer group
//! and hands what it reads to the engine in blocks, through the receiver WAL; use it as
//! `ctx.receiver_stream(KafkaReceiverOptions::new(…))`, one record per Kafka record's value.
//!
//! Invariant: **an offset is committed to the group only after the records before it are
//! stored** — durable in the receiver WAL and known to the block tracker
//! ([`ReceiverContext::store`] returned `Ok`). A block is stored when it holds
//! [`block_records`](KafkaReceiverOptions::block_records) records or
//! [`block_interval`](KafkaReceiverOptions::block_interval) after its first record, and on
//! stop; its offsets are committed (synchronously) right after. A commit that fails is kept and
//! retried with the next one (commits are cumulative), and on stop it is an error.
//!
//! Rebalances: the group can take partitions away only while the receiver polls (librdkafka
//! runs the rebalance callback there), never between a store and its commit. On a revocation
//! the callback commits, synchronously, what was stored and not yet committed for the revoked
//! partitions, and the receiver drops the records of those partitions it read but did not
//! store: their new owner reads them from the committed offset, which is exactly where this
//! receiver's stored records end.
//!
//! What a crash leaves: records stored and not yet committed (a crash between the store and the
//! commit) are read again by the restarted receiver — at least once, as Spark's reliable
//! receiver; records read and not stored are read again, never lost. For exactly once use the
//! direct stream, whose offsets are in the checkpoint (docs/kafka.md, "Which stream").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use weir_actors::pipeline::{BoxFuture, Receiver, ReceiverContext, ReceiverFactory, UserError};

/// How to subscribe, and how to cut blocks. Also the [`ReceiverFactory`] of the stream.
#[derive(Clone, Debug)]
pub struct KafkaReceiverOptions {
    bootstrap: String,
    group: String,
    topics: Vec<String>,
    block_records: usize,
    block_interval: Duration,
    client: Vec<(String, String)>,
    stats: Arc<KafkaReceiverStats>,
}

/// What the receivers made from one [`KafkaReceiverOptions`] report: the partitions the
/// group gave them, and what rebalances did.
#[derive(Debug)]
pub struct KafkaReceiverStats {
    assignment: watch::Sender<Vec<(String, i32)>>,
    rebalances: AtomicU64,
    dropped_on_revoke: AtomicU64,
    read: AtomicU64,
    progress: tokio::sync::Notify,
}

impl Default for KafkaReceiverStats {
    fn default() -> Self {
        KafkaReceiverStats {
            assignment: watch::Sender::new(Vec::new()),
            rebalances: AtomicU64::new(0),
            dropped_on_revoke: AtomicU64::new(0),
            read: AtomicU64::new(0),
            progress: tokio::sync::Notify::new(),
        }
    }
}

impl KafkaReceiverStats {
    /// The partitions currently assigned (topic, partition), sorted.
    #[must_use]
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.assignment.borrow().clone()
    }

    /// Follows the assignment as rebalances change it.
    #[must_use]
    pub fn watch_assignment(&self) -> watch::Receiver<Vec<(String, i32)>> {
        self.assignment.subscribe()
    }

    /// How many assignments and revocations the group made.
    #[must_use]
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::Relaxed)
    }

    /// Records read from Kafka (stored or not yet, dropped on a revocation or not).
    #[must_use]
    pub fn records_read(&self) -> u64 {
        self.read.load(Ordering::Acquire)
    }

    /// Waits until at least `n` records were read ([`records_read`](Self::records_read)).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only watches.
    pub async fn wait_until_read(&self, n: u64) {
        loop {
            let progressed = self.progress.notified();
            if self.records_read() >= n {
                return;
            }
            progressed.await;
        }
    }

    /// Records read from partitions revoked before they were stored, dropped (their new
    /// owner reads them).
    #[must_use]
    pub fn dropped_on_revoke(&self) -> u64 {
        self.dropped_on_revoke.load(Ordering::Relaxed)
    }
}

impl KafkaReceiverOptions {
    /// Subscribes to `topics` through the brokers `bootstrap`, as a member of the consumer
    /// group `group` (where its offsets are committed; a new group starts at the earliest
    /// offsets).
    #[must_use]
    pub fn new(
        bootstrap: impl Into<String>,
        group: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        KafkaReceiverOptions {
            bootstrap: bootstrap.into(),
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            block_records: 1000,
            block_interval: Duration::from_millis(100),
            client: Vec::new(),
            stats: Arc::default(),
        }
    }

    /// What the receivers made from these options report (shared by all of them).
    #[must_use]
    pub fn stats(&self) -> Arc<KafkaReceiverStats> {
        Arc::clone(&self.stats)
    }

    /// A block is stored once it holds this many records (1000 by default; at least 1).
    #[must_use]
    pub fn block_records(mut self, n: usize) -> Self {
        self.block_records = n.max(1);
        self
    }

    /// A block is stored at the latest this long after its first record (100 ms by default).
    #[must_use]
    pub fn block_interval(mut self, interval: Duration) -> Self {
        self.block_interval = interval;
        self
    }

    /// A librdkafka setting for the consumer (e.g. `isolation.level`, `auto.offset.reset`,
    /// security). `enable.auto.commit` and `enable.auto.offset.store` stay off.
    #[must_use]
    pub fn client_option(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.client.push((key.into(), value.into()));
        self
    }
}

impl ReceiverFactory for KafkaReceiverOptions {
    fn create(&self) -> Box<dyn Receiver> {
        Box::new(KafkaReceiver {
            options: self.clone(),
        })
    }
}

/// One run of the Kafka receiver; see the [module documentation](self).
#[derive(Debug)]
pub struct KafkaReceiver {
    options: KafkaReceiverOptions,
}

impl KafkaReceiver {
    /// A receiver with these options (the engine makes them through the options'
    /// [`ReceiverFactory`]).
    #[must_use]
    pub fn new(options: KafkaReceiverOptions) -> Self {
        KafkaReceiver { options }
    }
}

/// A topic-partition.
type Tp = (String, i32);

/// What the rebalance callback and the receiver share.
#[derive(Debug, Default)]
struct Shared {
    /// Per partition, the offset after the last stored record, not yet committed.
    uncommitted: BTreeMap<Tp, i64>,
    /// Partitions revoked since the receiver last looked: drop their unstored records.
    revoked: Vec<Tp>,
}

/// The consumer's context: commits what was stored for partitions being revoked.
struct Revocations {
    shared: Arc<Mutex<Shared>>,
    stats: Arc<KafkaReceiverStats>,
}

impl ClientContext for Revocations {}

impl ConsumerContext for Revocations {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
            self.stats.assignment.send_modify(|now| {
                for elem in assigned.elements() {
                    let tp = (elem.topic().to_owned(), elem.partition());
                    if !now.contains(&tp) {
                        now.push(tp);
                    }
                }
                now.sort();
            });
        }
    }

    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(revoked) = rebalance else {
            return;
        };
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        self.stats.assignment.send_modify(|now| {
            now.retain(|(t, p)| {
                !revoked
                    .elements()
                    .iter()
                    .any(|e| e.topic() == t && e.partition() == *p)
            });
        });
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let mut commit = BTreeMap::new();
        for elem in revoked.elements() {
            let tp = (elem.topic().to_owned(), elem.partition());
            if let Some(offset) = shared.uncommitted.remove(&tp) {
                commit.insert(tp.clone(), offset);
            }
            shared.revoked.push(tp);
        }
        if commit.is_empty() {
            return;
        }
        let result = offsets_list(&commit).and_then(|tpl| consumer.commit(&tpl, CommitMode::Sync));
        match result {
            Ok(()) => tracing::info!(
                partitions = commit.len(),
                "Kafka receiver: committed what was stored for the revoked partitions"
            ),
            // Their new owner reads from the last committed offset: what was stored after it
            // is read again (at least once), never lost.
            Err(e) => {
                tracing::warn!(error = %e, "Kafka receiver: committing the revoked partitions' stored offsets failed; their new owner reads those records again")
            }
        }
    }
}

/// `offsets` as a list to commit.
fn offsets_list(offsets: &BTreeMap<Tp, i64>) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

/// A record read and not yet stored.
struct Read {
    tp: Tp,
    offset: i64,
    value: Bytes,
}

impl Receiver for KafkaReceiver {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(self.run(ctx))
    }
}

impl KafkaReceiver {
    async fn run(&mut self, ctx: ReceiverContext) -> Result<(), UserError> {
        let options = &self.options;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut config = ClientConfig::new();
        config.set("auto.offset.reset", "earliest");
        for (k, v) in &options.client {
            config.set(k, v);
        }
        config
            .set("bootstrap.servers", &options.bootstrap)
            .set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let consumer: StreamConsumer<Revocations> = config
            .create_with_context(Revocations {
                shared: Arc::clone(&shared),
                stats: Arc::clone(&options.stats),
            })
            .map_err(|e| {
                format!(
                    "Kafka receiver (group {}): creating the consumer: {e}",
                    options.group
                )
            })?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            format!(
                "Kafka receiver (group {}): subscribing to {topics:?}: {e}",
                options.group
            )
        })?;
        let consumer = Arc::new(consumer);
        let mut buffer: Vec<Read> = Vec::new();
        let mut deadline: Option<Instant> = None;
        loop {
            let flush = tokio::select! {
                biased;
                () = ctx.stopping() => break,
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => true,
                read = consumer.recv() => match read {
                    Ok(message) => {
                        // A revocation seen in this poll applies to what was read before it,
                        // never to this record (read under the new assignment).
                        drop_revoked(&shared, &mut buffer, &options.stats);
                        buffer.push(Read {
                            tp: (message.topic().to_owned(), message.partition()),
                            offset: message.offset(),
                            value: Bytes::copy_from_slice(message.payload().unwrap_or_default()),
                        });
                        deadline.get_or_insert_with(|| Instant::now() + options.block_interval);
                        options.stats.read.fetch_add(1, Ordering::Release);
                        options.stats.progress.notify_waiters();
                        buffer.len() >= options.block_records
                    }
                    Err(e) => {
                        // librdkafka retries broker failures itself; they are reported here.
                        tracing::warn!(group = %options.group, error = %e, "Kafka receiver: consumer error");
                        false
                    }
                },
            };
            if flush {
                drop_revoked(&shared, &mut buffer, &options.stats);
                deadline = None;
                self.store(&ctx, &consumer, &shared, &mut buffer, false)
                    .await?;
            }
        }
        drop_revoked(&shared, &mut buffer, &options.stats);
        self.store(&ctx, &consumer, &shared, &mut buffer, true)
            .await
    }

    /// Stores `buffer` as one block, then commits the offsets after it (and any earlier
    /// commit that failed). On `last` (the stop), a commit that fails is an error.
    async fn store(
        &self,
        ctx: &ReceiverContext,
        consumer: &Arc<StreamConsumer<Revocations>>,
        shared: &Arc<Mutex<Shared>>,
        buffer: &mut Vec<Read>,
        last: bool,
    ) -> Result<(), UserError> {
        let group = &self.options.group;
        if !buffer.is_empty() {
            let records: Vec<Bytes> = buffer.iter().map(|r| r.value.clone()).collect();
            let mut next: BTreeMap<Tp, i64> = BTreeMap::new();
            for r in buffer.iter() {
                let at = next.entry(r.tp.clone()).or_insert(r.offset + 1);
                *at = (*at).max(r.offset + 1);
            }
            ctx.store(records)
                .await
                .map_err(|e| format!("Kafka receiver (group {group}): {e}"))?;
            buffer.clear();
            let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
            for (tp, offset) in next {
                let at = s.uncommitted.entry(tp).or_insert(offset);
                *at = (*at).max(offset);
            }
        }
        let pending = shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .uncommitted
            .clone();
        if pending.is_empty() {
            return Ok(());
        }
        let tpl =
            offsets_list(&pending).map_err(|e| format!("Kafka receiver (group {group}): {e}"))?;
        let c = Arc::clone(consumer);
        let result = tokio::task::spawn_blocking(move || c.commit(&tpl, CommitMode::Sync))
            .await
            .map_err(|e| format!("Kafka receiver (group {group}): the commit task failed: {e}"))?;
        match result {
            Ok(()) => {
                let mut s = shared.lock().unwrap_or_else(PoisonError::into_inner);
                for (tp, offset) in pending {
                    if s.uncommitted.get(&tp) == Some(&offset) {
                        s.uncommitted.remove(&tp);
                    }
                }
                Ok(())
            }
            Err(e) if last => Err(format!(
                "Kafka receiver (group {group}): committing the stored offsets {pending:?} on stop failed: {e}"
            )
            .into()),
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "Kafka receiver: committing the stored offsets failed; retried with the next block");
                Ok(())
            }
        }
    }
}

/// Drops the buffered records of partitions revoked since the last call. Called before a
/// record is added and before a store, so the revocations it applies all came after every
/// buffered record was read (the rebalance callback runs only inside the consumer's poll).
fn drop_revoked(shared: &Mutex<Shared>, buffer: &mut Vec<Read>, stats: &KafkaReceiverStats) {
    let revoked = std::mem::take(
        &mut shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .revoked,
    );
    if !revoked.is_empty() {
        let before = buffer.len();
        buffer.retain(|r| !revoked.contains(&r.tp));
        let dropped = (before - buffer.len()) as u64;
        stats
            .dropped_on_revoke
            .fetch_add(dropped, Ordering::Relaxed);
    }
}
