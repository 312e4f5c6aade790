//! Chaos tests for weir: kill its parts, and the whole process, while data flows, then check
//! that nothing acknowledged was lost and nothing was returned twice or corrupted.
//!
//! This crate grows with the engine. Today it holds the process-level proof for the durable
//! core: `tests/wal_kill9.rs` runs [`wal_writer`](../wal_writer/index.html) — a process that
//! appends records to a WAL from several tasks and prints each acknowledgement — kills it with
//! `SIGKILL` at seeded random moments, and checks the log after every kill.

pub mod payload;
pub mod rng;
