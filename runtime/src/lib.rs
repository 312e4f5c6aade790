//! weir: an embeddable runtime for fault-tolerant micro-batch stream processing.
//!
//! This crate is what a service adds to embed weir. Today it exposes the durable core that the
//! engine is built on — the write-ahead log and the checkpoint store of [`weir_actors`] — and
//! grows into `StreamingContext` and the DStream API as the supervision tree lands.
//!
//! # Example
//!
//! Records appended to the write-ahead log are durable when `append` returns, and come back in
//! order, whole, after any crash:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use weir::Storage;
//! use weir::wal::{Position, Wal, WalConfig};
//!
//! let storage = Storage::memory(); // or Storage::local("data/wal")
//! let (wal, report) = Wal::open(storage.clone(), WalConfig::default()).await?;
//! assert_eq!(report.records, 0);
//! let handle = wal.append(Bytes::from_static(b"block 1")).await?; // durable now
//! assert_eq!(wal.read(handle).await?, Bytes::from_static(b"block 1"));
//! wal.close().await?;
//!
//! let (wal, report) = Wal::open(storage, WalConfig::default()).await?;
//! assert_eq!(report.records, 1);
//! let records = wal.iter_from(Position::START).collect_all().await?;
//! assert_eq!(records[0].payload, Bytes::from_static(b"block 1"));
//! # Ok(()) }
//! ```

#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "cli")]
pub mod cli;
mod context;
pub mod dstream;
mod error;
pub mod sinks;
pub mod sources;
pub mod testing;

pub use context::{RestoreInfo, StreamingConfig, StreamingContext};
pub use dstream::DStream;
pub use error::{ComputeError, Error};
pub use weir_actors::engine::EngineError;
pub use weir_actors::pipeline::UserError;

pub use weir_actors::{Event, EventSink, Storage, StorageError, checkpoint, wal};
