//! State backends: where the stateful operators (`update_state_by_key`, `map_with_state`, the
//! incremental windows) keep their per-key state. Wiring only: the interface is in
//! [`part`], the backends in [`memory`] and [`disk`], the user's choice in [`config`].

pub(crate) mod config;
pub(crate) mod disk;
pub(crate) mod memory;
pub(crate) mod part;

pub use config::{DiskStateOptions, StateBackend};
