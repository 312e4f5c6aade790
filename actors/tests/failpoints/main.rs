//! Failpoint tests: faults injected at the storage edges (see docs/testing.md).
mod checkpoint;
mod durable;
mod engine;
mod power_cut;
mod wal;
