//! Everything that can go wrong with the WAL: [`WalError`].

use std::sync::Arc;

use super::record::RecordHandle;
use crate::storage::location::StorageError;

/// Everything that can go wrong with the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A group commit failed in storage; the appends in it were not acknowledged.
    #[error("appending to the WAL at `{log}` failed: {cause}")]
    AppendFailed {
        /// Where the log lives.
        log: String,
        /// The storage failure, shared by every append of the group.
        #[source]
        cause: Arc<StorageError>,
    },
    /// A record or header that should be valid is not.
    #[error("corrupt WAL segment {segment} of `{log}` at offset {offset}: {reason}")]
    Corrupt {
        /// Where the log lives.
        log: String,
        /// The damaged segment.
        segment: u64,
        /// The offset of the first invalid byte.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The payload is larger than [`WalConfig::max_record_bytes`](super::WalConfig::max_record_bytes).
    #[error("a WAL record of {len} bytes exceeds the maximum record size of {max} bytes")]
    RecordTooLarge {
        /// The payload's length.
        len: usize,
        /// The configured maximum.
        max: u32,
    },
    /// The handle does not point at a record of this log.
    #[error("no WAL record at {handle} in `{log}`: {reason}")]
    InvalidHandle {
        /// Where the log lives.
        log: String,
        /// The handle that was asked for.
        handle: RecordHandle,
        /// Why it is not valid.
        reason: String,
    },
    /// A storage failure left the log in a state it cannot vouch for; it accepts no appends.
    #[error(
        "the WAL at `{log}` stopped accepting appends after a storage failure ({cause}); \
         reopen it to recover"
    )]
    Poisoned {
        /// Where the log lives.
        log: String,
        /// The failure that poisoned it.
        cause: String,
    },
    /// The log was closed.
    #[error("the WAL at `{log}` is closed")]
    Closed {
        /// Where the log lives.
        log: String,
    },
    /// A configuration value is out of range.
    #[error("invalid WAL configuration: {reason}")]
    Config {
        /// Which value, and why.
        reason: String,
    },
}
