//! Where weir keeps durable bytes: a local directory, or any opendal operator.
//!
//! The WAL and the checkpoint store are written against [`Storage`], which has two shapes:
//!
//! * [`Storage::Local`] — a directory on the local filesystem, accessed with `std::fs`.
//!   opendal's `fs` service fsyncs a file at `close()` but never fsyncs the parent directory,
//!   so a freshly created segment or a renamed checkpoint could vanish after a power cut. weir
//!   needs directory fsyncs for its durability rules, so for local directories it takes the
//!   path around opendal (see `docs/architecture.md`, "Storage").
//! * [`Storage::Object`] — any opendal [`Operator`] (S3, GCS, Azure, the in-memory service, or
//!   opendal's own `fs` service). Only whole-object writes are used: no append, no rename.
//!   Durability is "the write call returned". With the `s3` feature, `Storage::s3` builds one
//!   for S3 or an S3-compatible server from weir's own `S3Options` (`s3` module).
//!
//! Both shapes offer the same operations to the components; the components choose their
//! on-storage layout per shape (one appended file per WAL segment locally, one write-once
//! object per group commit on an object store).
//!
//! [`durable`] holds the local file operations that make writes durable (atomic write, durable
//! directory creation, directory fsync, ...) with each component's failpoints. It is public
//! (`weir_actors::durable`) because the runtime's file sink and partitioned log write through
//! it too.

pub mod durable;
pub(crate) mod failpoint;
pub(crate) mod in_flight_io;
pub(crate) mod local;
pub(crate) mod locate;
pub(crate) mod location;
pub(crate) mod object;
#[cfg(feature = "failpoints")]
pub mod power_cut;
#[cfg(feature = "s3")]
pub(crate) mod s3;
pub(crate) mod storage_lock;
