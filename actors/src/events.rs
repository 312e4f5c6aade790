//! Typed events that the durable core reports.
//!
//! Every step that an operator may want to see — a WAL segment rolled or cleaned, a torn tail
//! cut off during recovery, a checkpoint written or skipped because it was corrupt — is an
//! [`Event`]. Components take an [`EventSink`] and call it synchronously; the sink must not
//! block (the event bus of the supervision tree forwards into bounded queues). Every event is
//! also logged through `tracing` by the component that raises it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// One lifecycle step of the durable core.
///
/// In JSON each event is an object with a snake_case `kind` tag, e.g.
/// `{"kind":"wal_torn_tail_cut","segment":3,...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The WAL opened a new segment because the previous one reached its size or age limit.
    WalSegmentRolled {
        /// Where the log lives.
        log: String,
        /// The segment that was sealed.
        sealed: u64,
        /// The segment that now takes appends.
        segment: u64,
        /// Why it rolled: `"size"`, `"age"`, or `"request"` (`Wal::roll`).
        reason: String,
    },
    /// `clean` deleted segments whose records were all older than the threshold.
    WalSegmentsCleaned {
        /// Where the log lives.
        log: String,
        /// The deleted segment ids.
        segments: Vec<u64>,
        /// The time threshold (ms since the Unix epoch) that was asked for.
        before_ms: u64,
    },
    /// Recovery found a torn or corrupt tail in the last segment and cut it off.
    WalTornTailCut {
        /// Where the log lives.
        log: String,
        /// The segment that was cut.
        segment: u64,
        /// The byte offset of the first invalid byte; the segment now ends here.
        offset: u64,
        /// How many bytes were discarded.
        discarded_bytes: u64,
        /// What was wrong at `offset`.
        reason: String,
    },
    /// A checkpoint was written and is durable.
    CheckpointWritten {
        /// Where the checkpoints live.
        store: String,
        /// The new checkpoint's id.
        id: u64,
        /// Its size in bytes.
        bytes: u64,
    },
    /// A checkpoint could not be read and an older one was used instead.
    CheckpointSkipped {
        /// Where the checkpoints live.
        store: String,
        /// The checkpoint that was skipped.
        id: u64,
        /// Why it could not be used.
        reason: String,
    },
    /// A checkpoint was read for restoring.
    CheckpointRestored {
        /// Where the checkpoints live.
        store: String,
        /// The checkpoint that was restored.
        id: u64,
    },
}

/// Where a component reports its [`Event`]s. Cheap to clone.
///
/// The callback runs on the reporting component's task: it must return quickly and never block.
#[derive(Clone)]
pub struct EventSink(Arc<dyn Fn(Event) + Send + Sync>);

impl EventSink {
    /// A sink that calls `f` for every event.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(f))
    }

    /// A sink that drops every event (they are still logged through `tracing`).
    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        (self.0)(event)
    }
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink::discard()
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}
