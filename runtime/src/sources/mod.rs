//! Built-in sources: receivers (socket, custom) and direct, offset-based sources (files, the
//! partitioned log).

pub mod file_stream;
pub mod partitioned_log;
mod problems;
pub mod rate;
pub mod socket;
