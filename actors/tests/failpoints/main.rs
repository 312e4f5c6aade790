//! x
mod checkpoint;
mod wal;
