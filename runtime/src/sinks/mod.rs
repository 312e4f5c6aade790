//! Built-in sinks: [`batch_dir`] (a local directory per batch, committed by a rename) and
//! [`batch_objects`] (objects per batch on S3 or any object store, committed by a write-once
//! marker).
//!
//! Their file-system errors are [`FsError`], the error of the engine's durable-file module
//! (`weir_actors::durable`) that every durable write of weir goes through.

pub mod batch_dir;
pub mod batch_objects;

pub use weir_actors::durable::FsError;
