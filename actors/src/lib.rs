//! weir's fault-tolerant engine: a supervision tree of actors that receives records into a
//! write-ahead log, cuts them into batches on a clock, runs each batch's jobs, and checkpoints
//! before and after every batch, so that a killed actor — or a dead process — resumes without
//! losing or duplicating anything.
//!
//! Most users embed the runtime (`weir-streaming`), which builds a [`pipeline::Pipeline`] from
//! a DStream graph. This crate is what it runs on:
//!
//! * [`Engine`] starts a tree from an [`EngineConfig`], a pipeline and its receivers, and
//!   stops it; [`Engine::events`] subscribes to its typed [`Event`]s.
//! * [`pipeline`] is the boundary the engine drives: what a batch computes, what a receiver
//!   produces.
//! * [`wal`] and [`checkpoint`] are the durable memory the actors own, over a [`Storage`]
//!   that is a local directory (with real file and directory fsyncs) or any opendal operator.
//! * [`control`] is the protocol of the control endpoint that the `weir` tool speaks;
//!   [`faults`] arms the panics that chaos tests inject.
//!
//! The crate's layout follows the tree (`docs/architecture.md`): `ingest/` (receivers,
//! blocks, the block tracker), `batch/` (job generator, scheduler, executors), `tree/` (root,
//! driver, restart policy), `observe/` (events, event log, control endpoint), next to `wal/`,
//! `checkpoint/` and `storage/`.

mod batch;
pub mod checkpoint;
mod clock;
mod config;
mod engine;
mod error;
pub mod faults;
#[cfg(feature = "fuzzing")]
pub mod fuzz;
mod ingest;
mod messages;
mod observe;
pub mod pipeline;
mod storage;
pub mod testing;
mod tree;
pub mod wal;

pub use config::{CheckpointPolicy, CheckpointPolicyError, ControlConfigError, EngineConfig};
pub use engine::{Engine, EngineStopper};
pub use error::EngineError;
pub use ingest::blocks::{Block, BlockInfo, StreamId};
pub use observe::control::protocol as control;
pub use observe::event::{Event, EventRecord};
pub use observe::event_log::read_event_log;
pub use observe::history::{
    BatchStatus, BatchView, CheckpointOutcome, CheckpointView, History, OutputView, ReceiverView,
    Totals, WalEvents,
};
pub use observe::hub::{EventHub, EventSink, EventSubscription};
pub use observe::metrics::{EngineMetrics, SourceLag};
pub use storage::durable;
pub use storage::location::{LocationError, Storage, StorageError};
#[cfg(feature = "failpoints")]
pub use storage::power_cut;
#[cfg(feature = "s3")]
pub use storage::s3::{S3Options, S3UrlError};
pub use storage::storage_lock::{StorageLock, StorageLockError};
pub use tree::names::Names;
pub use tree::restart_policy::{Backoff, Intensity, RestartPolicy, Strategy};
