//! How an engine runs: [`EngineConfig`], the checkpoint controls ([`CheckpointPolicy`]) and
//! every default, in one place.
//!
//! This module is a leaf of the crate: it names storage, restart-policy and checkpoint-id
//! types, never an actor, so every actor can read its configuration without the crate's
//! modules depending on each other in a circle.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::checkpoint::CheckpointId;
use crate::storage::location::Storage;
use crate::tree::names::Names;
use crate::tree::restart_policy::{Backoff, Intensity, RestartPolicy, Strategy};

/// The batch interval by default: 1 s.
pub(crate) const DEFAULT_BATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Receivers cut pushed records into a block this often by default (Spark's
/// `spark.streaming.blockInterval`): 200 ms.
pub(crate) const DEFAULT_BLOCK_INTERVAL: Duration = Duration::from_millis(200);
/// A block is cut early past this size by default: 4 MiB.
pub(crate) const DEFAULT_MAX_BLOCK_BYTES: usize = 4 << 20;
/// Received blocks kept in memory by default: 256 MiB.
pub(crate) const DEFAULT_BLOCK_STORE_BYTES: usize = 256 << 20;
/// The bytes of received blocks one batch takes of a stream by default: the block store's
/// budget, 256 MiB. A cap is a cap on throughput too — at most this much per batch interval —
/// so it must sit above what the machine can process: at 64 MiB a 1 s batch took at most
/// 11.6 M of the bench's words, and input faster than that only grew a backlog (in memory up to
/// the block store's budget with the receiver WAL off, then pushing the sender back; without a
/// bound in the WAL with it on).
pub(crate) const DEFAULT_RECEIVER_BATCH_MAX_BYTES: u64 = DEFAULT_BLOCK_STORE_BYTES as u64;
/// Batches running at once by default: 1 (batches complete in order).
pub(crate) const DEFAULT_MAX_BATCHES_IN_FLIGHT: usize = 1;
/// Attempts per task before its batch fails, by default: 4.
pub(crate) const DEFAULT_MAX_TASK_ATTEMPTS: u32 = 4;
/// Batches generated and not complete at most, by default: 4.
pub(crate) const DEFAULT_MAX_PENDING_BATCHES: usize = 4;
/// Checkpoints kept by default: 10.
pub(crate) const DEFAULT_CHECKPOINTS_RETAINED: usize = 10;
/// Delay before a failed receiver is restarted, by default: 2 s.
pub(crate) const DEFAULT_RECEIVER_RESTART_DELAY: Duration = Duration::from_secs(2);
/// A checkpoint write is abandoned after this long by default: 60 s.
pub(crate) const DEFAULT_CHECKPOINT_TIMEOUT: Duration = Duration::from_secs(60);
/// Consecutive failed checkpoints tolerated by default: 3.
pub(crate) const DEFAULT_TOLERABLE_CHECKPOINT_FAILURES: u32 = 3;
/// An attempt to plan a batch is abandoned after this long by default: 10 s.
pub(crate) const DEFAULT_PLANNING_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry of a failed planning attempt waits this long by default: 100 ms.
pub(crate) const DEFAULT_PLANNING_RETRY_INITIAL: Duration = Duration::from_millis(100);
/// Retries of a failed planning attempt wait at most this long by default: 5 s.
pub(crate) const DEFAULT_PLANNING_RETRY_MAX: Duration = Duration::from_secs(5);

/// The control endpoint's token file, in the storage directory.
pub(crate) const CONTROL_TOKEN_FILE: &str = "control-token";
/// Connections the control endpoint serves at once by default: 64.
pub(crate) const DEFAULT_CONTROL_MAX_CONNECTIONS: usize = 64;

/// Executor workers by default: the number of cores.
pub(crate) fn default_executors() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How an engine runs. `EngineConfig::new(storage)` has Spark's defaults.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Where checkpoints, WALs and the event log live.
    pub storage: Storage,
    /// Prefix of every actor name (empty by default; see [`Names`]).
    pub name_prefix: String,
    /// The batch interval. Default: 1 s.
    pub batch_interval: Duration,
    /// Receivers cut pushed records into a block this often. Default: 200 ms.
    pub block_interval: Duration,
    /// A block is cut early past this size. Default: 4 MiB.
    pub max_block_bytes: usize,
    /// Received blocks kept in memory (older ones are read back from the WAL). Default: 256 MiB.
    pub block_store_bytes: usize,
    /// The most bytes of received blocks one batch takes of each stream (at least one block);
    /// a backlog is spread over the next batches instead of becoming one batch. The final
    /// batch of a graceful stop takes everything. It also bounds the throughput: at most this
    /// much per batch interval, so set it above the input's bytes per interval. Default:
    /// 256 MiB (the block store's budget).
    pub receiver_batch_max_bytes: u64,
    /// Whether receivers write every block to the receiver WAL before acknowledging it —
    /// Spark's `spark.streaming.receiver.writeAheadLog.enable`, but on by default. Off, a block
    /// is acknowledged once it is in memory and known to the tracker: no WAL write or fsync,
    /// but the blocks not yet processed when the driver dies are lost (at-most-once input;
    /// the job generator logs each lost block), and memory-only blocks are kept outside
    /// `block_store_bytes` (bound the input with a rate limit). Direct and file sources, which
    /// replay from their own positions, are not affected. Default: on.
    pub receiver_wal: bool,
    /// Executor workers. Default: the number of cores.
    pub executors: usize,
    /// Batches running at once. Default: 1 (batches complete in order).
    pub max_batches_in_flight: usize,
    /// Attempts per task before its batch fails. Default: 4.
    pub max_task_attempts: u32,
    /// Batches generated and not complete at most (bounds memory in catch-up). Default: 4.
    pub max_pending_batches: usize,
    /// Checkpoint controls (Flink's: interval, minimum pause, timeout, tolerable failures,
    /// maximum concurrent checkpoints). Checked at [`Engine::start`](crate::Engine::start).
    pub checkpoint_policy: CheckpointPolicy,
    /// Checkpoints kept. Default: 10.
    pub checkpoints_retained: usize,
    /// How long planning a batch may take (a direct source's offset look-ups), and how a
    /// failed attempt is retried. Default: 10 s; 100 ms doubling to 5 s.
    pub planning: PlanningPolicy,
    /// Restore from this checkpoint instead of the latest valid one (Flink's `run -s`), once:
    /// the first driver to start re-publishes it as the newest checkpoint, and a driver
    /// restarted after a failure resumes from the latest valid checkpoint as usual — never
    /// rewinding to the chosen one again. Default: none.
    pub restore_from: Option<CheckpointId>,
    /// How the root restarts a failed driver. Default: 5 in 60 s, backoff from 100 ms.
    pub driver_policy: RestartPolicy,
    /// How a receiver tracker restarts its receiver supervisors.
    pub receiver_policy: RestartPolicy,
    /// Delay before a failed receiver is restarted. Default: 2 s.
    pub receiver_restart_delay: Duration,
    /// How the job scheduler restarts its executors.
    pub executor_policy: RestartPolicy,
    /// A graceful stop gives up after this long. Default: 10 × the batch interval.
    pub graceful_stop_timeout: Duration,
    /// Seed of the restart jitter.
    pub seed: u64,
    /// Where the control endpoint listens (`weir watch`, `weir kill`); `None` (the default):
    /// no endpoint. A loopback address such as `127.0.0.1:0`; any other address is refused at
    /// [`Engine::start`](crate::Engine::start) unless
    /// [`control_allow_remote`](Self::control_allow_remote) is set. See `docs/operations.md`.
    pub control_addr: Option<SocketAddr>,
    /// Allows a [`control_addr`](Self::control_addr) that is not a loopback address (such as
    /// `0.0.0.0:7070`). Then every connection must present the token as its first line before
    /// it is sent anything but a hello — the event stream and snapshots included — so the
    /// storage must be a local directory (where the token is written). Default: off.
    pub control_allow_remote: bool,
    /// The control endpoint serves at most this many connections at once; one more is told
    /// why in one line and closed at once, so idle clients cannot take the file descriptors
    /// the engine's own files need. At least 1. Default: 64.
    pub control_max_connections: usize,
    /// Where the HTTP server listens (`/metrics` for Prometheus, the JSON API under
    /// `/api/v1/`, the web dashboard at `/`); `None` (the default): no server. A loopback
    /// address such as `127.0.0.1:4040`; any other is refused at
    /// [`Engine::start`](crate::Engine::start) unless
    /// [`http_allow_remote`](Self::http_allow_remote) is set. See `docs/operations.md`.
    pub http_addr: Option<SocketAddr>,
    /// Allows an [`http_addr`](Self::http_addr) that is not a loopback address. Then every
    /// request must carry the token (`Authorization: Bearer <token>`), reads included, so the
    /// storage must be a local directory (where the token is written). Default: off.
    pub http_allow_remote: bool,
    /// The HTTP server serves at most this many connections at once; one more is answered
    /// `503` and closed at once. At least 1. Default: 64.
    pub http_max_connections: usize,
    /// Settings of the layer above the engine (e.g. the runtime's parallelism and rate
    /// limits), written into every checkpoint with the engine's own (see
    /// [`settings`](Self::settings)) so that a restore can report what changed. Default: none.
    pub extra_settings: BTreeMap<String, String>,
}

impl EngineConfig {
    /// Defaults, storing everything in `storage`.
    pub fn new(storage: Storage) -> Self {
        let batch_interval = DEFAULT_BATCH_INTERVAL;
        EngineConfig {
            storage,
            name_prefix: String::new(),
            batch_interval,
            block_interval: DEFAULT_BLOCK_INTERVAL,
            max_block_bytes: DEFAULT_MAX_BLOCK_BYTES,
            block_store_bytes: DEFAULT_BLOCK_STORE_BYTES,
            receiver_batch_max_bytes: DEFAULT_RECEIVER_BATCH_MAX_BYTES,
            receiver_wal: true,
            executors: default_executors(),
            max_batches_in_flight: DEFAULT_MAX_BATCHES_IN_FLIGHT,
            max_task_attempts: DEFAULT_MAX_TASK_ATTEMPTS,
            max_pending_batches: DEFAULT_MAX_PENDING_BATCHES,
            checkpoint_policy: CheckpointPolicy::default(),
            checkpoints_retained: DEFAULT_CHECKPOINTS_RETAINED,
            planning: PlanningPolicy::default(),
            restore_from: None,
            driver_policy: RestartPolicy {
                strategy: Strategy::OneForOne,
                intensity: Intensity {
                    max_restarts: 5,
                    period: Duration::from_secs(60),
                },
                backoff: Backoff::default(),
            },
            receiver_policy: RestartPolicy::default(),
            receiver_restart_delay: DEFAULT_RECEIVER_RESTART_DELAY,
            executor_policy: RestartPolicy::default(),
            graceful_stop_timeout: batch_interval * 10,
            seed: 0,
            control_addr: None,
            control_allow_remote: false,
            control_max_connections: DEFAULT_CONTROL_MAX_CONNECTIONS,
            http_addr: None,
            http_allow_remote: false,
            http_max_connections: DEFAULT_CONTROL_MAX_CONNECTIONS,
            extra_settings: BTreeMap::new(),
        }
    }

    /// The actor names of this engine.
    pub fn names(&self) -> Names {
        Names::new(self.name_prefix.clone())
    }

    /// Where the event log goes: `<storage>/events` for local storage, nowhere otherwise.
    pub fn event_log_dir(&self) -> Option<PathBuf> {
        self.storage.local_dir().map(|d| d.join("events"))
    }

    /// Where the control endpoint's token is written: `<storage>/control-token` for local
    /// storage; nowhere otherwise (then commands that change anything are refused).
    pub fn control_token_path(&self) -> Option<PathBuf> {
        self.storage
            .local_dir()
            .map(|dir| dir.join(CONTROL_TOKEN_FILE))
    }

    /// Checks the control endpoint's and the HTTP server's settings (nothing to check without
    /// [`control_addr`](Self::control_addr) and [`http_addr`](Self::http_addr)).
    ///
    /// # Errors
    ///
    /// [`ControlConfigError::NotLoopback`] if the address is not a loopback address and
    /// [`control_allow_remote`](Self::control_allow_remote) is off,
    /// [`ControlConfigError::RemoteWithoutToken`] if it is allowed but the storage is not a
    /// local directory (so there is no token to present),
    /// [`ControlConfigError::NoConnections`] if
    /// [`control_max_connections`](Self::control_max_connections) is 0; the `Http…` variants
    /// for the same faults of the HTTP settings.
    pub fn validate_control(&self) -> Result<(), ControlConfigError> {
        if let Some(addr) = self.http_addr {
            if !is_loopback(addr) {
                if !self.http_allow_remote {
                    return Err(ControlConfigError::HttpNotLoopback { addr });
                }
                if self.storage.local_dir().is_none() {
                    return Err(ControlConfigError::HttpRemoteWithoutToken { addr });
                }
            }
            if self.http_max_connections == 0 {
                return Err(ControlConfigError::HttpNoConnections);
            }
        }
        let Some(addr) = self.control_addr else {
            return Ok(());
        };
        if !is_loopback(addr) {
            if !self.control_allow_remote {
                return Err(ControlConfigError::NotLoopback { addr });
            }
            if self.storage.local_dir().is_none() {
                return Err(ControlConfigError::RemoteWithoutToken { addr });
            }
        }
        if self.control_max_connections == 0 {
            return Err(ControlConfigError::NoConnections);
        }
        Ok(())
    }
}

/// Whether `addr` is a loopback address (`127.0.0.0/8`, `::1`, or `::ffff:127.x.y.z`).
pub(crate) fn is_loopback(addr: SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// Why the control endpoint's or the HTTP server's settings are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlConfigError {
    /// A non-loopback `control_addr` without `control_allow_remote`.
    #[error(
        "the control endpoint would listen on {addr}, which is not a loopback address; set \
         `control_allow_remote` to allow it (then every connection must present the token)"
    )]
    NotLoopback {
        /// The configured address.
        addr: SocketAddr,
    },
    /// A non-loopback `control_addr` allowed, but no local directory to write the token to.
    #[error(
        "the control endpoint may listen on {addr}, which is not a loopback address, only with \
         a token for connections to present, and the token is written only to a local storage \
         directory"
    )]
    RemoteWithoutToken {
        /// The configured address.
        addr: SocketAddr,
    },
    /// `control_max_connections` is 0.
    #[error("`control_max_connections` is 0: the control endpoint would serve no connection")]
    NoConnections,
    /// A non-loopback `http_addr` without `http_allow_remote`.
    #[error(
        "the HTTP server would listen on {addr}, which is not a loopback address; set \
         `http_allow_remote` (`--http-allow-remote`) to allow it (then every request must carry \
         the token)"
    )]
    HttpNotLoopback {
        /// The configured address.
        addr: SocketAddr,
    },
    /// A non-loopback `http_addr` allowed, but no local directory to write the token to.
    #[error(
        "the HTTP server may listen on {addr}, which is not a loopback address, only with a \
         token for requests to carry, and the token is written only to a local storage directory"
    )]
    HttpRemoteWithoutToken {
        /// The configured address.
        addr: SocketAddr,
    },
    /// `http_max_connections` is 0.
    #[error("`http_max_connections` is 0: the HTTP server would serve no connection")]
    HttpNoConnections,
}

impl EngineConfig {
    /// The settings written into every checkpoint (name → value): every engine setting that
    /// shapes how batches run, then [`extra_settings`](Self::extra_settings). A restore
    /// compares them with the current ones and reports each difference; the current values
    /// always take effect.
    pub fn settings(&self) -> BTreeMap<String, String> {
        let ms = |d: Duration| d.as_millis().to_string();
        let policy = &self.checkpoint_policy;
        let mut settings = BTreeMap::from([
            ("batch_interval_ms".to_owned(), ms(self.batch_interval)),
            ("block_interval_ms".to_owned(), ms(self.block_interval)),
            (
                "max_block_bytes".to_owned(),
                self.max_block_bytes.to_string(),
            ),
            (
                "block_store_bytes".to_owned(),
                self.block_store_bytes.to_string(),
            ),
            ("receiver_wal".to_owned(), self.receiver_wal.to_string()),
            ("executors".to_owned(), self.executors.to_string()),
            (
                "max_batches_in_flight".to_owned(),
                self.max_batches_in_flight.to_string(),
            ),
            (
                "max_task_attempts".to_owned(),
                self.max_task_attempts.to_string(),
            ),
            (
                "max_pending_batches".to_owned(),
                self.max_pending_batches.to_string(),
            ),
            ("checkpoint_interval_ms".to_owned(), ms(policy.interval)),
            ("checkpoint_min_pause_ms".to_owned(), ms(policy.min_pause)),
            ("checkpoint_timeout_ms".to_owned(), ms(policy.timeout)),
            (
                "checkpoint_tolerable_failures".to_owned(),
                policy.tolerable_failures.to_string(),
            ),
            (
                "checkpoints_retained".to_owned(),
                self.checkpoints_retained.to_string(),
            ),
            (
                "receiver_restart_delay_ms".to_owned(),
                ms(self.receiver_restart_delay),
            ),
            (
                "graceful_stop_timeout_ms".to_owned(),
                ms(self.graceful_stop_timeout),
            ),
        ]);
        for (name, value) in &self.extra_settings {
            settings.insert(name.clone(), value.clone());
        }
        settings
    }
}

/// How the job generator plans batches: each batch's planning
/// ([`Pipeline::prepare`](crate::pipeline::Pipeline::prepare) — a direct source asking its
/// broker for offsets) runs off the generator's handler and is abandoned after `timeout`; a
/// failed or abandoned attempt is an [`Event::PlanningFailed`](crate::Event::PlanningFailed)
/// and is tried again after a backoff that starts at `retry_initial` and doubles up to
/// `retry_max`, until it succeeds or the engine stops. The batch is never skipped nor planned
/// empty, and the batches after it wait: batches are planned in time order, one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanningPolicy {
    /// An attempt that has not answered after this long fails (its look-up is abandoned).
    /// Default: 10 s. Zero is taken as 1 ms.
    pub timeout: Duration,
    /// The wait before the first retry. Default: 100 ms. Zero is taken as 1 ms.
    pub retry_initial: Duration,
    /// The longest wait between retries: the wait doubles after each failure up to this.
    /// Default: 5 s. Below `retry_initial`, `retry_initial` is used.
    pub retry_max: Duration,
}

impl Default for PlanningPolicy {
    fn default() -> Self {
        PlanningPolicy {
            timeout: DEFAULT_PLANNING_TIMEOUT,
            retry_initial: DEFAULT_PLANNING_RETRY_INITIAL,
            retry_max: DEFAULT_PLANNING_RETRY_MAX,
        }
    }
}

impl PlanningPolicy {
    /// The timeout of one attempt (at least 1 ms).
    pub fn attempt_timeout(&self) -> Duration {
        self.timeout.max(Duration::from_millis(1))
    }

    /// The wait after the `failures`-th consecutive failed attempt of a batch (1 for the
    /// first): `retry_initial × 2^(failures - 1)`, at most `retry_max`.
    pub fn retry_delay(&self, failures: u32) -> Duration {
        let initial = self.retry_initial.max(Duration::from_millis(1));
        let max = self.retry_max.max(initial);
        let doublings = failures.saturating_sub(1).min(31);
        initial.saturating_mul(1 << doublings).min(max)
    }
}

/// Flink's checkpoint controls, for the driver's checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Checkpoint after a completed batch only if the last checkpoint is at least this old
    /// (`0`: after every batch, Spark's behaviour). Default: 0.
    pub interval: Duration,
    /// At least this long between the end of one checkpoint and the start of the next.
    /// Default: 0.
    pub min_pause: Duration,
    /// A checkpoint write taking longer is abandoned and counts as a failure. Default: 60 s.
    pub timeout: Duration,
    /// This many consecutive failed checkpoints are tolerated; one more fails the generator.
    /// Default: 3.
    pub tolerable_failures: u32,
    /// At most this many checkpoint writes in flight at once (Flink's
    /// `max-concurrent-checkpoints`). A checkpoint asked for while this many are in flight
    /// waits, and later requests coalesce with it: when a write ends, one checkpoint starts
    /// with a snapshot taken then, which supersedes every request that waited. At least 1, and
    /// exactly 1 when `min_pause` is not zero (Flink forbids the combination too: a pause
    /// between the end of one checkpoint and the start of the next leaves nothing to overlap);
    /// [`CheckpointPolicy::validate`] refuses anything else, and so does the engine at start.
    /// Default: 1.
    pub max_concurrent: usize,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        CheckpointPolicy {
            interval: Duration::ZERO,
            min_pause: Duration::ZERO,
            timeout: DEFAULT_CHECKPOINT_TIMEOUT,
            tolerable_failures: DEFAULT_TOLERABLE_CHECKPOINT_FAILURES,
            max_concurrent: 1,
        }
    }
}

/// Why a [`CheckpointPolicy`] is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointPolicyError {
    /// `max_concurrent` is 0.
    #[error(
        "the checkpoint policy allows 0 concurrent checkpoints; `max_concurrent` must be at least 1"
    )]
    NoConcurrentCheckpoint,
    /// `max_concurrent` above 1 with a non-zero `min_pause`.
    #[error(
        "the checkpoint policy sets `max_concurrent` to {max_concurrent} and `min_pause` to \
         {min_pause:?}; a minimum pause between checkpoints requires `max_concurrent` = 1"
    )]
    ConcurrentWithMinPause {
        /// The configured maximum.
        max_concurrent: usize,
        /// The configured pause.
        min_pause: Duration,
    },
    /// `timeout` is zero: every write would be abandoned.
    #[error("the checkpoint policy's `timeout` is zero, so every checkpoint write would time out")]
    ZeroTimeout,
}

impl CheckpointPolicy {
    /// Checks the combination of controls.
    ///
    /// # Errors
    ///
    /// [`CheckpointPolicyError::NoConcurrentCheckpoint`] if `max_concurrent` is 0,
    /// [`CheckpointPolicyError::ConcurrentWithMinPause`] if it is above 1 while `min_pause` is
    /// not zero, [`CheckpointPolicyError::ZeroTimeout`] if `timeout` is zero.
    pub fn validate(&self) -> Result<(), CheckpointPolicyError> {
        if self.max_concurrent == 0 {
            return Err(CheckpointPolicyError::NoConcurrentCheckpoint);
        }
        if self.max_concurrent > 1 && !self.min_pause.is_zero() {
            return Err(CheckpointPolicyError::ConcurrentWithMinPause {
                max_concurrent: self.max_concurrent,
                min_pause: self.min_pause,
            });
        }
        if self.timeout.is_zero() {
            return Err(CheckpointPolicyError::ZeroTimeout);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planning_retries_double_from_the_initial_wait_up_to_the_maximum() {
        let policy = PlanningPolicy::default();
        let waits: Vec<u64> = (1..=8)
            .map(|failures| policy.retry_delay(failures).as_millis() as u64)
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(policy.retry_delay(u32::MAX), Duration::from_secs(5));
        let odd = PlanningPolicy {
            timeout: Duration::ZERO,
            retry_initial: Duration::ZERO,
            retry_max: Duration::ZERO,
        };
        assert_eq!(odd.attempt_timeout(), Duration::from_millis(1));
        assert_eq!(odd.retry_delay(1), Duration::from_millis(1));
        assert_eq!(odd.retry_delay(9), Duration::from_millis(1));
    }
}
