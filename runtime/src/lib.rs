//! weir: an embeddable runtime for fault-tolerant micro-batch stream processing.
//!
//! A [`StreamingContext`] runs a graph of [`DStream`]s — sources, transformations, outputs —
//! batch by batch on a supervision tree of actors (`weir-actors`): receivers write what they
//! receive to a write-ahead log before acknowledging it, the job generator checkpoints before
//! and after every batch, and a killed actor (or a dead process, restarted with
//! [`StreamingContext::get_or_create`]) resumes from the latest valid checkpoint without losing
//! or duplicating output. The graph is rebuilt from the current code at every start; only
//! data (operator state and source positions, matched by stable operator ids) is restored.
//!
//! # Example
//!
//! A word count over a queue of lines (use `socket_text_stream`, `text_file_stream`, a
//! direct offset source or your own receiver in a real service):
//!
//! ```
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use weir::dstream::QueueStream;
//! use weir::{Storage, Str, StreamingConfig, StreamingContext};
//!
//! // Storage::memory() for the example; StreamingContext::get_or_create(dir, ..) in a service.
//! let config = StreamingConfig::new(Storage::memory()).batch_interval(Duration::from_millis(50));
//! let mut ctx = StreamingContext::new(config);
//! let lines = QueueStream::new(true, 1);
//! lines.push(vec![Str::from("the cat"), Str::from("the dog")]);
//!
//! let (tx, rx) = std::sync::mpsc::channel();
//! ctx.queue_stream(&lines)
//!     .flat_map(|line: &Str| line.words()) // views of the line: no copy per word
//!     .map(|word: &Str| (word.clone(), 1u64))
//!     .reduce_by_key(|a, b| a + b)
//!     .foreach_batch(move |batch| {
//!         // Outputs get the batch's identity (`batch.time_ms`): commit idempotently under it.
//!         if !batch.is_empty() {
//!             let mut counts: Vec<(Str, u64)> = batch.iter().cloned().collect();
//!             counts.sort();
//!             let _ = tx.send(counts);
//!         }
//!         Ok(())
//!     });
//! ctx.start().await?;
//! let counts = tokio::task::spawn_blocking(move || rx.recv()).await??;
//! assert_eq!(counts, [(Str::from("cat"), 1), (Str::from("dog"), 1), (Str::from("the"), 2)]);
//! ctx.stop(true).await?;
//! # Ok(()) }
//! ```
//!
//! The durable core is re-exported too: [`wal`] (segmented, checksummed, group-committed) and
//! [`checkpoint`] (atomic, versioned, with fallback to the newest valid one).

#![doc(test(attr(deny(warnings))))]

pub mod backpressure;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config_file;
mod context;
pub mod dstream;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "logging")]
pub mod logging;
pub mod memory;
pub mod sinks;
pub mod sources;
pub mod testing;
pub mod text;

pub use context::{RestoreInfo, StreamingConfig, StreamingContext};
pub use dstream::DStream;
pub use error::{ComputeError, Error};
pub use text::Str;
pub use weir_actors::EngineError;
pub use weir_actors::pipeline::UserError;

pub use weir_actors::{Event, EventSink, LocationError, Storage, StorageError, checkpoint, wal};
#[cfg(feature = "s3")]
pub use weir_actors::{S3Options, S3UrlError};

/// The README's Rust examples, compiled as doc-tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
