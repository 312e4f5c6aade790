//! How a log writes, rolls and recovers: [`WalConfig`] and [`RecoveryMode`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::WalError;
use super::format;
use crate::observe::hub::EventSink;

/// What recovery does with damage it finds in the newest segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RecoveryMode {
    /// Cut a torn or corrupt tail of the newest segment off and report it (the default). A
    /// crash during a write can only leave damage there, after the last acknowledged record.
    #[default]
    TruncateTornTail,
    /// Refuse to open a log with any damage, even a torn tail; nothing is changed on storage.
    Strict,
}

/// How a [`Wal`](super::Wal) writes, rolls and recovers. `WalConfig::default()` suits most uses.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// A segment is sealed and a new one started when the next write would make it larger than
    /// this (a single larger batch still goes into one segment). Default: 64 MiB.
    pub segment_max_bytes: u64,
    /// A segment older than this is sealed at the next append (Spark's
    /// `writeAheadLog.rollingIntervalSecs`). Default: 60 s.
    pub roll_interval: Duration,
    /// After the first append of a group arrives, wait at most this long for more appends to
    /// share its fsync. Appends that arrive while an fsync is running always share the next one,
    /// so `0` already batches under load. Default: 0.
    pub group_commit_max_delay: Duration,
    /// A group commit takes appends until it holds at least this many bytes. Default: 4 MiB.
    pub group_commit_max_bytes: usize,
    /// The largest payload `append` accepts. Default: 64 MiB. Minimum: 1 byte. Maximum:
    /// [`format::MAX_PAYLOAD_LEN`]. Only appends are checked: records written earlier under a
    /// larger limit still recover and read back.
    pub max_record_bytes: u32,
    /// How many appends may wait for the writer before `append` itself waits (backpressure).
    /// Default: 4096.
    pub queue_depth: usize,
    /// What recovery does with a damaged tail. Default: [`RecoveryMode::TruncateTornTail`].
    pub recovery_mode: RecoveryMode,
    /// How long [`Wal::open`](super::Wal::open) waits for another writer *of this process* to release a local
    /// log (one dropped without `close` releases it when its writer task ends, e.g. after an
    /// actor restart). A writer in another process is refused at once. Default: 10 s.
    pub lock_wait: Duration,
    /// Where segment rolls, cleanups and torn-tail cuts are reported.
    pub events: EventSink,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_max_bytes: 64 << 20,
            roll_interval: Duration::from_secs(60),
            group_commit_max_delay: Duration::ZERO,
            group_commit_max_bytes: 4 << 20,
            max_record_bytes: 64 << 20,
            queue_depth: 4096,
            recovery_mode: RecoveryMode::TruncateTornTail,
            lock_wait: Duration::from_secs(10),
            events: EventSink::discard(),
        }
    }
}

impl WalConfig {
    pub(super) fn validate(&self) -> Result<(), WalError> {
        let bad = |reason: String| Err(WalError::Config { reason });
        if self.max_record_bytes == 0 || self.max_record_bytes > format::MAX_PAYLOAD_LEN {
            return bad(format!(
                "max_record_bytes must be between 1 and {}, not {}",
                format::MAX_PAYLOAD_LEN,
                self.max_record_bytes
            ));
        }
        if self.segment_max_bytes < (format::SEGMENT_HEADER_LEN + format::FRAME_HEADER_LEN) as u64 {
            return bad(format!(
                "segment_max_bytes must be at least {}, not {}",
                format::SEGMENT_HEADER_LEN + format::FRAME_HEADER_LEN,
                self.segment_max_bytes
            ));
        }
        if self.group_commit_max_bytes == 0 {
            return bad("group_commit_max_bytes must be at least 1".to_owned());
        }
        if self.queue_depth == 0 {
            return bad("queue_depth must be at least 1".to_owned());
        }
        Ok(())
    }
}
