//! Built-in sinks.

pub mod batch_dir;
