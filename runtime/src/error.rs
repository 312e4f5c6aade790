//! The runtime's errors.

use weir_actors::EngineError;
use weir_actors::pipeline::UserError;

/// Why a streaming context could not be built, started or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The streaming graph is not valid (e.g. no output operation, a window that is not a
    /// multiple of the batch interval).
    #[error("invalid streaming graph: {0}")]
    InvalidGraph(String),
    /// The checkpoint does not fit the current graph (state of an operator that no longer
    /// exists, or whose type changed).
    #[error("the checkpoint does not fit the current graph: {0}")]
    Incompatible(String),
    /// The engine failed or gave up.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Reading the checkpoint directory failed.
    #[error("reading checkpoints: {0}")]
    Checkpoint(String),
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A savepoint could not be taken or restored (a stateful operator without an explicit
    /// id, the target not empty, the path not a savepoint, ...).
    #[error(transparent)]
    Savepoint(#[from] weir_actors::checkpoint::SavepointError),
    /// The context was used in the wrong state (e.g. started twice).
    #[error("{0}")]
    State(String),
}

/// An error from computing a batch: user code failed, or input was missing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ComputeError(pub String);

impl ComputeError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ComputeError(message.into())
    }
}

impl From<UserError> for ComputeError {
    fn from(err: UserError) -> Self {
        ComputeError(err.to_string())
    }
}

/// The result of computing part of a batch.
pub(crate) type ComputeResult<T> = Result<T, ComputeError>;
