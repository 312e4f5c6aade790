//! The Kafka sink (issue 14, item 5; docs/kafka.md, "The Kafka sink"): each batch of a stream
//! written to a Kafka topic by [`KafkaSink`]
//! ([`DStream::write_to_kafka`](crate::dstream::DStream::write_to_kafka)),
//! exactly once in the log itself (the job as the only writer of its output partitions, every
//! record stamped with its batch and index, a batch run again writing only what its dead
//! attempt did not), in Kafka transactions, or at least once. This file is wiring only.
//!
//! * [`format`](mod@format): the record type, the `weir.*` headers, the record → partition assignment;
//! * `plan`: what a partition's tail says is left to write (pure);
//! * [`writer`]: the sink itself, its modes and the output operation;
//! * [`error`]: its errors.
//!
//! ```no_run
//! use weir::DStream;
//! use weir::kafka::sink::{KafkaRecordOut, KafkaSink, KafkaSinkError, KafkaSinkMode};
//!
//! /// Each batch's word counts to the topic `word-counts`, exactly once.
//! fn counts_to_kafka(words: &DStream<String>) -> Result<(), KafkaSinkError> {
//!     let sink = KafkaSink::builder("127.0.0.1:9092", "word-counts")
//!         .mode(KafkaSinkMode::ExactlyOnce)
//!         .writer_id("word-count-job")
//!         .build()?;
//!     words
//!         .map(|w: &String| (w.clone(), 1u64))
//!         .reduce_by_key(|a, b| a + b)
//!         .write_to_kafka(sink, |(word, n): &(String, u64)| {
//!             KafkaRecordOut::keyed(word.as_bytes(), n.to_string())
//!         });
//!     Ok(())
//! }
//! # let _ = counts_to_kafka;
//! ```

pub mod error;
pub mod format;
mod plan;
pub mod writer;

pub use error::KafkaSinkError;
pub use format::KafkaRecordOut;
pub use writer::{KafkaSink, KafkaSinkBuilder, KafkaSinkMode, KafkaWrite};
