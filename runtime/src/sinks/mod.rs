//! Built-in sinks.

pub mod batch_dir;
pub(crate) mod durable;

pub use durable::FsError;
