//! Typed events: every lifecycle and supervision step of the engine.
//!
//! An actor started, failed, was restarted or given up on; a receiver started or stopped; a
//! block stored; a batch's planning failed; a batch generated, started, completed; an output
//! committed; a checkpoint written, skipped, restored; a WAL segment rolled, cleaned, or a torn
//! tail cut — each is an [`Event`]. Components take an [`EventSink`](super::hub::EventSink) and call it
//! synchronously; a sink never blocks (the [`EventHub`](super::hub::EventHub) behind it drops
//! events for a slow subscriber and tells it how many, instead of waiting). Components also log
//! through `tracing`.

use serde::{Deserialize, Serialize};

/// One lifecycle or supervision step of the engine.
///
/// In JSON each event is an object with a snake_case `kind` tag and, where it concerns an
/// actor, `actor` (its stable name), e.g.
/// `{"time_ms":1700000000000,"kind":"actor_restarted","actor":"receiver-0","attempt":1,...}`
/// (`time_ms` comes from the [`EventRecord`] that carries it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    // ----------------------------------- supervision ----------------------------------- //
    /// An actor started (for the first time, or again after a restart).
    ActorStarted {
        /// The actor's stable name.
        actor: String,
    },
    /// An actor exited abnormally: it returned an error, panicked, or was killed.
    ActorFailed {
        /// The actor's stable name.
        actor: String,
        /// What happened (`"killed"`, the panic message, the error).
        reason: String,
    },
    /// A supervisor will restart an actor after `delay_ms`.
    ActorRestarted {
        /// The actor's stable name.
        actor: String,
        /// Restarts of this supervisor's children within its intensity window, this one
        /// included.
        attempt: u32,
        /// The backoff delay before the restart.
        delay_ms: u64,
    },
    /// A supervisor exceeded its restart intensity and gave up; the failure escalates.
    ActorGaveUp {
        /// The supervisor that gave up.
        actor: String,
        /// The child whose failure spent the budget.
        child: String,
        /// Why, as one sentence.
        reason: String,
    },
    // ------------------------------------ receivers ------------------------------------ //
    /// A receiver started.
    ReceiverStarted {
        /// The receiver actor.
        actor: String,
        /// Its stream.
        stream: u32,
    },
    /// A receiver stopped.
    ReceiverStopped {
        /// The receiver actor.
        actor: String,
        /// Its stream.
        stream: u32,
        /// Why.
        reason: String,
    },
    /// A receiver reported an error.
    ReceiverError {
        /// The receiver actor.
        actor: String,
        /// Its stream.
        stream: u32,
        /// The error.
        error: String,
    },
    /// A block is durable in the WAL and reported to the tracker.
    BlockStored {
        /// The receiver supervisor that stored it.
        actor: String,
        /// Its stream.
        stream: u32,
        /// Records in the block.
        records: u64,
        /// Payload bytes.
        bytes: u64,
    },
    // ------------------------------------- batches ------------------------------------- //
    /// The job generator generated a batch's jobs.
    BatchGenerated {
        /// The batch time (ms since the Unix epoch).
        batch_time_ms: u64,
        /// Blocks allocated to it.
        blocks: u64,
        /// Records in them.
        records: u64,
    },
    /// Planning a batch failed: a source it reads (a direct stream asking its broker for
    /// offsets, a file stream listing its directory) failed or did not answer within the
    /// planning timeout. The batch is not generated — never skipped, never planned empty —
    /// and neither is any later one until it is; planning is tried again after
    /// `retry_in_ms`. The job generator keeps answering checkpoints, stops and queries
    /// meanwhile.
    PlanningFailed {
        /// The batch time.
        batch_time_ms: u64,
        /// The source whose look-up failed: a direct stream's source name, or the operator's
        /// id.
        source: String,
        /// Why, as one sentence.
        cause: String,
        /// Failed attempts at planning this batch, this one included (1 for the first).
        attempt: u32,
        /// When planning is tried again; absent when it is not, because the engine is
        /// stopping (the batch is planned again by the next start).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// A direct source moved its position because the source no longer had it: the offsets
    /// it would have read next were deleted (a Kafka partition's retention), or the partition
    /// itself is gone. Reported when the source's policy says to reset rather than fail
    /// (`OffsetResetPolicy` of the Kafka direct stream); the records between `from` and `to`
    /// are not read. Planning may be retried, so the same reset can be reported more than
    /// once.
    SourceReset {
        /// The source's name.
        source: String,
        /// The partition, as the source names it (Kafka: `topic/partition`).
        partition: String,
        /// The offset the source would have read next.
        from: u64,
        /// Where it continues; absent when the partition no longer exists and is dropped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<u64>,
        /// Why, as one sentence.
        reason: String,
    },
    /// A batch's jobs started running.
    BatchStarted {
        /// The batch time.
        batch_time_ms: u64,
        /// How long after its batch time it started.
        scheduling_delay_ms: u64,
    },
    /// Every job of a batch succeeded.
    BatchCompleted {
        /// The batch time.
        batch_time_ms: u64,
        /// How long after its batch time it started.
        scheduling_delay_ms: u64,
        /// How long its jobs ran.
        processing_ms: u64,
        /// Records processed.
        records: u64,
    },
    /// What each source read for a completed batch (published after its
    /// [`BatchCompleted`](Event::BatchCompleted), by the job generator).
    BatchInputs {
        /// The batch time.
        batch_time_ms: u64,
        /// Records of every source together.
        records: u64,
        /// Records per source, by the source's id (its `uid`).
        sources: std::collections::BTreeMap<String, u64>,
    },
    /// A batch failed: one of its jobs failed more often than the task attempts allow. The
    /// driver's restart re-runs it from the last checkpoint.
    BatchFailed {
        /// The batch time.
        batch_time_ms: u64,
        /// Why, as one sentence.
        reason: String,
    },
    /// An output operation of a batch started.
    OutputStarted {
        /// The batch time.
        batch_time_ms: u64,
        /// The output's id.
        output: String,
    },
    /// An output operation of a batch committed.
    OutputCompleted {
        /// The batch time.
        batch_time_ms: u64,
        /// The output's id.
        output: String,
        /// How long it took.
        duration_ms: u64,
    },
    // ------------------------------------ durability ----------------------------------- //
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
        /// How long writing it took, from encoding to durable (absent in event logs of weir
        /// 0.1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
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
    /// A subscriber fell behind and missed events (its queue is bounded; the engine never
    /// waits for it).
    Lagged {
        /// How many events it missed.
        missed: u64,
    },
    /// Writing a checkpoint failed.
    CheckpointFailed {
        /// Where the checkpoints live.
        store: String,
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The actor this event concerns, if any.
    pub fn actor(&self) -> Option<&str> {
        match self {
            Event::ActorStarted { actor }
            | Event::ActorFailed { actor, .. }
            | Event::ActorRestarted { actor, .. }
            | Event::ActorGaveUp { actor, .. }
            | Event::ReceiverStarted { actor, .. }
            | Event::ReceiverStopped { actor, .. }
            | Event::ReceiverError { actor, .. }
            | Event::BlockStored { actor, .. } => Some(actor),
            _ => None,
        }
    }
}

/// An [`Event`] with the wall-clock time it was raised at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// When (ms since the Unix epoch).
    pub time_ms: u64,
    /// What.
    #[serde(flatten)]
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_time_kind_and_actor() {
        let record = EventRecord {
            time_ms: 5,
            event: Event::ActorRestarted {
                actor: "receiver-0".into(),
                attempt: 2,
                delay_ms: 200,
            },
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["time_ms"], 5);
        assert_eq!(json["kind"], "actor_restarted");
        assert_eq!(json["actor"], "receiver-0");
        assert_eq!(json["attempt"], 2);
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }
}
