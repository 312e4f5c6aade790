//! The Kafka sink's errors: each names the topic (and the partition and offset where one is
//! involved) and the cause, so a failed batch's event says what to fix.

use rdkafka::error::KafkaError;

/// What went wrong writing a batch to Kafka. A failed batch is retried by the engine; the
/// exactly-once modes make the retry write only what is missing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSinkError {
    /// The sink's options are not usable (an empty topic or writer id, a bad client setting).
    #[error("Kafka sink: {0}")]
    Config(String),
    /// A client could not be created, or a request to the broker failed.
    #[error("Kafka sink for topic {topic}: {what}: {source}")]
    Client {
        /// The output topic.
        topic: String,
        /// What was being done.
        what: String,
        /// librdkafka's error.
        source: Box<KafkaError>,
    },
    /// The topic is not there, or has no partitions.
    #[error("Kafka sink: topic {topic} on {bootstrap}: {reason}")]
    Topic {
        /// The output topic.
        topic: String,
        /// The brokers asked.
        bootstrap: String,
        /// What the metadata said.
        reason: String,
    },
    /// Records were not delivered (after the producer's retries, within `delivery.timeout.ms`).
    #[error(
        "Kafka sink: {failed} of {records} records of batch {batch_time_ms} to {topic}/{partition} \
         were not delivered: {cause}"
    )]
    Delivery {
        /// The output topic.
        topic: String,
        /// The partition (the first that failed).
        partition: i32,
        /// The batch.
        batch_time_ms: u64,
        /// How many records to that partition failed.
        failed: usize,
        /// How many records the batch sent to that partition.
        records: usize,
        /// The first failure's cause.
        cause: String,
    },
    /// A record names a partition the topic does not have.
    #[error(
        "Kafka sink: a record of batch {batch_time_ms} asks for partition {partition} of {topic}, \
         which has {partitions}"
    )]
    BadPartition {
        /// The output topic.
        topic: String,
        /// The partition the record asked for.
        partition: i32,
        /// The topic's partition count.
        partitions: i32,
        /// The batch.
        batch_time_ms: u64,
    },
    /// The topic's partition count is not the one its records were written with: the
    /// record → partition assignment changed, so what a dead attempt wrote can no longer be
    /// found, and keys would move between partitions. Refused, never written through.
    #[error(
        "Kafka sink: topic {topic} has {now} partitions, but its record at {topic}/{partition} \
         offset {offset} was written when it had {written_with}; the exactly-once sink refuses \
         to write to a topic whose partition count changed (write to a new topic, or start the \
         job with a new writer id)"
    )]
    PartitionCountChanged {
        /// The output topic.
        topic: String,
        /// The partition where the old count was seen.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The partition count in the record's `weir.partitions` header.
        written_with: i32,
        /// The partition count now.
        now: i32,
    },
    /// The partition's tail holds what this sink did not write, or not as it writes it: a
    /// record of another producer, of another writer id, or damaged stamps. The exactly-once
    /// mode needs the job to be the partition's only writer.
    #[error(
        "Kafka sink: {topic}/{partition} offset {offset}: {reason}; the exactly-once sink needs \
         to be the only writer of its output partitions"
    )]
    Foreign {
        /// The output topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offending record's offset.
        offset: i64,
        /// What is wrong with it.
        reason: String,
    },
    /// A batch run again does not produce what its dead attempt wrote (the same records to
    /// the same partitions, in the same order): the output is not a function of the batch's
    /// input, so what is missing cannot be told from what is there.
    #[error(
        "Kafka sink: batch {batch_time_ms} at {topic}/{partition} offset {offset}: {reason}; \
         the exactly-once sink needs a batch's records to be the same on every run"
    )]
    Nondeterministic {
        /// The output topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The batch.
        batch_time_ms: u64,
        /// The record where the difference shows.
        offset: i64,
        /// The difference.
        reason: String,
    },
    /// Reading a partition's tail did not finish in time.
    #[error(
        "Kafka sink: reading the tail of {topic}/{partition} (offsets {from}..{to}) did not \
         finish within {timeout_ms} ms: {cause}"
    )]
    TailTimeout {
        /// The output topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The first offset asked for.
        from: i64,
        /// The high watermark.
        to: i64,
        /// The bound.
        timeout_ms: u64,
        /// What was seen last.
        cause: String,
    },
    /// The broker does not support Kafka transactions: the transactional mode cannot work
    /// there.
    #[error(
        "Kafka sink: the broker at {bootstrap} does not support Kafka transactions \
         ({feature} is not supported; transactions are KIP-98): the transactional mode cannot \
         commit batch {batch_time_ms} of {topic}; use KafkaSinkMode::ExactlyOnce, which needs no \
         transaction coordinator ({source})"
    )]
    TransactionsUnsupported {
        /// The output topic.
        topic: String,
        /// The brokers.
        bootstrap: String,
        /// The request the broker lacks (e.g. `EndTxn`).
        feature: &'static str,
        /// The batch that could not be committed.
        batch_time_ms: u64,
        /// librdkafka's error.
        source: Box<KafkaError>,
    },
    /// A transaction step failed (other than the broker lacking transactions).
    #[error(
        "Kafka sink: transaction {transactional_id} for batch {batch_time_ms} of {topic}: \
         {step} failed: {source}"
    )]
    Transaction {
        /// The output topic.
        topic: String,
        /// The producer's `transactional.id`.
        transactional_id: String,
        /// The batch.
        batch_time_ms: u64,
        /// `init_transactions`, `begin_transaction`, `commit_transaction`, ….
        step: &'static str,
        /// librdkafka's error.
        source: Box<KafkaError>,
    },
}
