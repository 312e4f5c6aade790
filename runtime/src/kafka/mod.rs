//! Kafka integration (the `kafka` feature; issue 14, docs/kafka.md), over rdkafka
//! (librdkafka, built from source and linked statically). Planning never blocks an actor:
//! every broker call runs off the actors' threads, with a timeout.
//!
//! [`direct`]: the direct stream, whose per-batch offset ranges are checkpointed before the
//! batch runs and committed back to the consumer group after its outputs complete
//! ([`StreamingContext::kafka_direct_stream`](crate::StreamingContext::kafka_direct_stream));
//! [`record`]: the records it delivers; [`receiver`]: the receiver-based stream, a
//! consumer-group subscriber that commits to the group only what the receiver WAL stored;
//! [`sink`]: the Kafka sink — exactly-once in the log without a transaction coordinator (the
//! default), transactional, or at-least-once; [`testing`]: the Kafka-protocol test broker
//! every Kafka test starts (Unix: it drives the broker with signals). This file is wiring
//! only.

pub mod direct;
pub mod receiver;
pub mod record;
pub mod sink;
#[cfg(unix)]
pub mod testing;

pub use direct::{
    CommittedFallback, KafkaDirectOptions, KafkaReset, KafkaStartingOffsets, KafkaTopics,
    OffsetResetPolicy, ResetCallback,
};
pub use record::{KafkaRecord, KafkaTimestamp};
