//! Why an engine ended, or could not start: [`EngineError`].
//!
//! A leaf of the crate: the root records a give-up here and the engine hands it to its
//! owner, without either naming the other.

use std::time::Duration;

#[cfg(doc)]
use crate::config::CheckpointPolicy;
use crate::config::{CheckpointPolicyError, ControlConfigError};

/// Why an engine ended, or could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The engine could not start.
    #[error("the engine did not start: {0}")]
    Start(String),
    /// Another process holds the storage directory (see
    /// [`StorageLock`](crate::StorageLock)); nothing was touched.
    #[error("the engine did not start: {0}")]
    StorageInUse(String),
    /// The checkpoint controls are refused (see [`CheckpointPolicy::validate`]); nothing was
    /// started.
    #[error("the engine did not start: {0}")]
    InvalidCheckpointPolicy(#[from] CheckpointPolicyError),
    /// The control endpoint's settings are refused (see
    /// [`EngineConfig::validate_control`](crate::EngineConfig::validate_control)); nothing was
    /// started.
    #[error("the engine did not start: {0}")]
    InvalidControlConfig(#[from] ControlConfigError),
    /// An actor failed more often than its restart intensity allows.
    #[error(
        "{actor} failed {restarts} times within {period:?} and was given up on; the last failure: {reason}"
    )]
    GaveUp {
        /// The actor that kept failing.
        actor: String,
        /// How many restarts were attempted within the window.
        restarts: u32,
        /// The window.
        period: Duration,
        /// Its last failure.
        reason: String,
    },
    /// The root actor ended abnormally for another reason.
    #[error("the engine stopped abnormally: {0}")]
    Failed(String),
}
