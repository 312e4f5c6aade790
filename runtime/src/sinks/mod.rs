//! Built-in sinks.
//!
//! Their file-system errors are [`FsError`], the error of the engine's durable-file module
//! (`weir_actors::durable`) that every durable write of weir goes through.

pub mod batch_dir;

pub use weir_actors::durable::FsError;
