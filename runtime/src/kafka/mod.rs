//! Kafka integration (the `kafka` feature; issue 14, docs/kafka.md): the Kafka sources and
//! sinks will live here — a direct stream whose per-batch offset ranges are checkpointed before
//! the batch runs and committed back to the consumer group after its outputs complete, a
//! receiver-based stream behind the receiver write-ahead log, and exactly-once Kafka sinks —
//! all over rdkafka (librdkafka, built from source and linked statically). Planning never
//! blocks an actor: every broker call runs off the actors' threads, with a timeout.
//!
//! For now it holds [`testing`], the Kafka-protocol test broker every Kafka test starts (Unix:
//! it drives the broker with signals). This file is wiring only.

pub mod receiver;
pub mod sink;
#[cfg(unix)]
pub mod testing;
