//! weir's fault-tolerant engine.
//!
//! This crate holds the durable memory the engine's actors own — the write-ahead log
//! ([`wal`]) and the checkpoint store ([`checkpoint`]) — over a [`Storage`] that is either a
//! local directory (with real file and directory fsyncs) or any opendal operator.

pub mod block_store;
pub mod blocks;
pub mod checkpoint;
pub mod control_endpoint;
pub mod driver;
pub mod engine;
pub mod event_bus;
pub mod events;
pub mod executor;
pub mod faults;
pub mod job_generator;
pub mod job_scheduler;
pub mod names;
pub mod pipeline;
pub mod received_block_tracker;
pub mod receiver;
pub mod receiver_supervisor;
pub mod receiver_tracker;
pub mod root;
pub mod storage;
pub mod supervision;
pub mod supervisor;
pub mod testing;
pub mod wal;

pub use events::{Event, EventSink};
pub use storage::{Storage, StorageError};
