//! What happened recently, as the HTTP API and the dashboard show it: batches, checkpoints,
//! receivers and the event log tail, kept from the events in bounded memory.
//!
//! [`History`] is fed every event by the [`EventHub`](super::hub::EventHub) as it is published
//! (so it misses none, whoever is watching), and answers the API's questions with owned,
//! serialisable views. Each list is capped ([`MAX_BATCHES`], [`MAX_CHECKPOINTS`],
//! [`MAX_EVENTS`]): the oldest entries go first. Nothing here is durable: a new process starts
//! with an empty history (its checkpoints are listed by `weir checkpoints`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::observe::event::{Event, EventRecord};

/// Batches remembered.
pub(crate) const MAX_BATCHES: usize = 1000;
/// Checkpoints remembered.
pub(crate) const MAX_CHECKPOINTS: usize = 200;
/// Events remembered for the log tail (block and lag events are left out: they would drown
/// the rest).
pub(crate) const MAX_EVENTS: usize = 500;

/// Where a batch is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Its jobs were generated; it waits to run.
    Generated,
    /// Its jobs are running.
    Running,
    /// Every job succeeded.
    Completed,
    /// A job failed beyond its attempts.
    Failed,
}

/// One output operation of a batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputView {
    /// The output's id.
    pub output: String,
    /// How long it took, once it committed.
    pub duration_ms: Option<u64>,
}

/// One batch, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    /// The batch time (ms since the Unix epoch).
    pub batch_time_ms: u64,
    /// Where it is.
    pub status: BatchStatus,
    /// Blocks allocated to it.
    pub blocks: u64,
    /// Records: those of its blocks when generated, those processed once completed.
    pub records: u64,
    /// How long after its batch time it started.
    pub scheduling_delay_ms: Option<u64>,
    /// How long its jobs ran.
    pub processing_ms: Option<u64>,
    /// Scheduling delay plus processing time (Spark's "total delay").
    pub total_delay_ms: Option<u64>,
    /// Records per source (by the source's id), once the batch completed.
    pub sources: BTreeMap<String, u64>,
    /// Its output operations.
    pub outputs: Vec<OutputView>,
    /// Why it failed.
    pub failure: Option<String>,
}

/// How a checkpoint went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointOutcome {
    /// Written and durable.
    Written,
    /// The write failed.
    Failed,
    /// Read for restoring.
    Restored,
    /// Could not be read on restore; an older one was used.
    Skipped,
}

/// One checkpoint event, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The checkpoint's id (none for a failed write).
    pub id: Option<u64>,
    /// When (ms since the Unix epoch).
    pub time_ms: u64,
    /// How long writing it took.
    pub duration_ms: Option<u64>,
    /// Its size.
    pub bytes: Option<u64>,
    /// What happened.
    pub outcome: CheckpointOutcome,
    /// Why it failed or was skipped.
    pub reason: Option<String>,
}

impl CheckpointView {
    /// A checkpoint event at `time_ms`, without size or duration.
    fn new(
        time_ms: u64,
        outcome: CheckpointOutcome,
        id: Option<u64>,
        reason: Option<&String>,
    ) -> Self {
        CheckpointView {
            id,
            time_ms,
            duration_ms: None,
            bytes: None,
            outcome,
            reason: reason.cloned(),
        }
    }
}

/// One receiver, as the API shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverView {
    /// The receiver (its supervisor's name until the receiver's start is seen).
    pub actor: String,
    /// Its stream.
    pub stream: u32,
    /// `running` or `stopped`.
    pub state: String,
    /// Records stored.
    pub records: u64,
    /// Payload bytes stored.
    pub bytes: u64,
    /// Blocks stored.
    pub blocks: u64,
    /// The last error it reported.
    pub last_error: Option<String>,
}

/// The WAL's counters from the events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalEvents {
    /// Segments sealed for size or age.
    pub segments_rolled: u64,
    /// Segments deleted by cleaning.
    pub segments_cleaned: u64,
    /// Torn tails cut by recovery.
    pub torn_tails_cut: u64,
}

/// Totals since the process started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// When the history started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Batches completed.
    pub batches_completed: u64,
    /// Batches failed.
    pub batches_failed: u64,
    /// Records processed by completed batches.
    pub records_total: u64,
    /// The newest checkpoint written.
    pub last_checkpoint_id: Option<u64>,
    /// Restarts of any actor.
    pub restarts_total: u64,
}

/// The recent past of one engine. See the module docs.
#[derive(Debug)]
pub struct History {
    batches: BTreeMap<u64, BatchView>,
    checkpoints: VecDeque<CheckpointView>,
    receivers: BTreeMap<u32, ReceiverView>,
    events: VecDeque<EventRecord>,
    wal: WalEvents,
    totals: Totals,
}

impl Default for History {
    fn default() -> Self {
        History {
            batches: BTreeMap::new(),
            checkpoints: VecDeque::new(),
            receivers: BTreeMap::new(),
            events: VecDeque::new(),
            wal: WalEvents::default(),
            totals: Totals {
                started_ms: now_ms(),
                ..Totals::default()
            },
        }
    }
}

impl History {
    fn batch(&mut self, t: u64) -> &mut BatchView {
        self.batches.entry(t).or_insert(BatchView {
            batch_time_ms: t,
            status: BatchStatus::Generated,
            blocks: 0,
            records: 0,
            scheduling_delay_ms: None,
            processing_ms: None,
            total_delay_ms: None,
            sources: BTreeMap::new(),
            outputs: Vec::new(),
            failure: None,
        })
    }

    fn trim(&mut self) {
        while self.batches.len() > MAX_BATCHES {
            self.batches.pop_first();
        }
        while self.checkpoints.len() > MAX_CHECKPOINTS {
            self.checkpoints.pop_front();
        }
        while self.events.len() > MAX_EVENTS {
            self.events.pop_front();
        }
    }

    fn receiver(&mut self, actor: &str, stream: u32) -> &mut ReceiverView {
        self.receivers
            .entry(stream)
            .or_insert_with(|| ReceiverView {
                actor: actor.to_owned(),
                stream,
                state: "running".to_owned(),
                records: 0,
                bytes: 0,
                blocks: 0,
                last_error: None,
            })
    }

    /// Takes in one event.
    pub fn apply(&mut self, record: &EventRecord) {
        let at = record.time_ms;
        match &record.event {
            Event::BatchGenerated {
                batch_time_ms,
                blocks,
                records,
            } => {
                let b = self.batch(*batch_time_ms);
                b.blocks = *blocks;
                b.records = *records;
            }
            Event::BatchStarted {
                batch_time_ms,
                scheduling_delay_ms,
            } => {
                let b = self.batch(*batch_time_ms);
                if b.status == BatchStatus::Generated {
                    b.status = BatchStatus::Running;
                }
                b.scheduling_delay_ms = Some(*scheduling_delay_ms);
            }
            Event::BatchCompleted {
                batch_time_ms,
                scheduling_delay_ms,
                processing_ms,
                records,
            } => {
                let b = self.batch(*batch_time_ms);
                b.status = BatchStatus::Completed;
                b.records = *records;
                b.scheduling_delay_ms = Some(*scheduling_delay_ms);
                b.processing_ms = Some(*processing_ms);
                b.total_delay_ms = Some(scheduling_delay_ms.saturating_add(*processing_ms));
                b.failure = None;
                self.totals.batches_completed += 1;
                self.totals.records_total += records;
            }
            Event::BatchInputs {
                batch_time_ms,
                records,
                sources,
            } => {
                let b = self.batch(*batch_time_ms);
                // A receiver's records are counted by its blocks too: the larger count is the
                // batch's input.
                let more = records.saturating_sub(b.records);
                b.records += more;
                b.sources.clone_from(sources);
                self.totals.records_total += more;
            }
            Event::BatchFailed {
                batch_time_ms,
                reason,
            } => {
                let b = self.batch(*batch_time_ms);
                b.status = BatchStatus::Failed;
                b.failure = Some(reason.clone());
                self.totals.batches_failed += 1;
            }
            Event::OutputStarted {
                batch_time_ms,
                output,
            } => {
                let b = self.batch(*batch_time_ms);
                if !b.outputs.iter().any(|o| o.output == *output) {
                    b.outputs.push(OutputView {
                        output: output.clone(),
                        duration_ms: None,
                    });
                }
            }
            Event::OutputCompleted {
                batch_time_ms,
                output,
                duration_ms,
            } => {
                let b = self.batch(*batch_time_ms);
                match b.outputs.iter_mut().find(|o| o.output == *output) {
                    Some(o) => o.duration_ms = Some(*duration_ms),
                    None => b.outputs.push(OutputView {
                        output: output.clone(),
                        duration_ms: Some(*duration_ms),
                    }),
                }
            }
            Event::CheckpointWritten {
                id,
                bytes,
                duration_ms,
                ..
            } => {
                self.totals.last_checkpoint_id = Some(*id);
                self.checkpoints.push_back(CheckpointView {
                    duration_ms: *duration_ms,
                    bytes: Some(*bytes),
                    ..CheckpointView::new(at, CheckpointOutcome::Written, Some(*id), None)
                });
            }
            Event::CheckpointFailed { reason, .. } => self.checkpoints.push_back(
                CheckpointView::new(at, CheckpointOutcome::Failed, None, Some(reason)),
            ),
            Event::CheckpointRestored { id, .. } => self.checkpoints.push_back(
                CheckpointView::new(at, CheckpointOutcome::Restored, Some(*id), None),
            ),
            Event::CheckpointSkipped { id, reason, .. } => self.checkpoints.push_back(
                CheckpointView::new(at, CheckpointOutcome::Skipped, Some(*id), Some(reason)),
            ),
            Event::ReceiverStarted { actor, stream } => {
                let r = self.receiver(actor, *stream);
                // The receiver's own name (block events name its supervisor).
                r.actor.clone_from(actor);
                r.state = "running".to_owned();
            }
            Event::ReceiverStopped { actor, stream, .. } => {
                self.receiver(actor, *stream).state = "stopped".to_owned();
            }
            Event::ReceiverError {
                actor,
                stream,
                error,
            } => self.receiver(actor, *stream).last_error = Some(error.clone()),
            Event::BlockStored {
                actor,
                stream,
                records,
                bytes,
            } => {
                let r = self.receiver(actor, *stream);
                r.records += records;
                r.bytes += bytes;
                r.blocks += 1;
            }
            Event::ActorRestarted { .. } => self.totals.restarts_total += 1,
            Event::WalSegmentRolled { .. } => self.wal.segments_rolled += 1,
            Event::WalSegmentsCleaned { segments, .. } => {
                self.wal.segments_cleaned += segments.len() as u64;
            }
            Event::WalTornTailCut { .. } => self.wal.torn_tails_cut += 1,
            _ => {}
        }
        if !matches!(
            record.event,
            Event::BlockStored { .. } | Event::Lagged { .. }
        ) {
            self.events.push_back(record.clone());
        }
        self.trim();
    }

    /// The newest `limit` batches, newest first.
    pub fn batches(&self, limit: usize) -> Vec<BatchView> {
        self.batches.values().rev().take(limit).cloned().collect()
    }

    /// The checkpoints, newest first.
    pub fn checkpoints(&self) -> Vec<CheckpointView> {
        self.checkpoints.iter().rev().cloned().collect()
    }

    /// The receivers, by stream.
    pub fn receivers(&self) -> Vec<ReceiverView> {
        self.receivers.values().cloned().collect()
    }

    /// The newest `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Vec<EventRecord> {
        let skip = self.events.len().saturating_sub(limit);
        self.events.iter().skip(skip).cloned().collect()
    }

    /// The WAL's counters from the events.
    pub fn wal(&self) -> WalEvents {
        self.wal.clone()
    }

    /// The totals.
    pub fn totals(&self) -> Totals {
        self.totals.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(time_ms: u64, event: Event) -> EventRecord {
        EventRecord { time_ms, event }
    }

    #[test]
    fn a_batch_goes_from_generated_to_completed_with_its_outputs() {
        let mut h = History::default();
        h.apply(&rec(
            1,
            Event::BatchGenerated {
                batch_time_ms: 1000,
                blocks: 2,
                records: 30,
            },
        ));
        assert_eq!(h.batches(10)[0].status, BatchStatus::Generated);
        h.apply(&rec(
            2,
            Event::BatchStarted {
                batch_time_ms: 1000,
                scheduling_delay_ms: 4,
            },
        ));
        h.apply(&rec(
            3,
            Event::OutputStarted {
                batch_time_ms: 1000,
                output: "out-0".into(),
            },
        ));
        h.apply(&rec(
            4,
            Event::OutputCompleted {
                batch_time_ms: 1000,
                output: "out-0".into(),
                duration_ms: 7,
            },
        ));
        h.apply(&rec(
            5,
            Event::BatchCompleted {
                batch_time_ms: 1000,
                scheduling_delay_ms: 4,
                processing_ms: 20,
                records: 30,
            },
        ));
        let b = &h.batches(10)[0];
        assert_eq!(b.status, BatchStatus::Completed);
        assert_eq!(b.total_delay_ms, Some(24));
        assert_eq!(
            b.outputs,
            [OutputView {
                output: "out-0".into(),
                duration_ms: Some(7)
            }]
        );
        assert_eq!(h.totals().batches_completed, 1);
        assert_eq!(h.totals().records_total, 30);
        assert_eq!(h.events(100).len(), 5);
    }

    #[test]
    fn a_batchs_inputs_give_its_records_per_source() {
        let mut h = History::default();
        h.apply(&rec(
            1,
            Event::BatchCompleted {
                batch_time_ms: 1000,
                scheduling_delay_ms: 1,
                processing_ms: 2,
                records: 5,
            },
        ));
        h.apply(&rec(
            2,
            Event::BatchInputs {
                batch_time_ms: 1000,
                records: 12,
                sources: BTreeMap::from([("files".to_owned(), 7), ("socket".to_owned(), 5)]),
            },
        ));
        let b = &h.batches(1)[0];
        assert_eq!(b.records, 12);
        assert_eq!(b.sources["files"], 7);
        assert_eq!(h.totals().records_total, 12);
    }

    #[test]
    fn the_lists_are_capped_and_newest_first() {
        let mut h = History::default();
        for t in 0..(MAX_BATCHES as u64 + 10) {
            h.apply(&rec(
                t,
                Event::BatchFailed {
                    batch_time_ms: t,
                    reason: "boom".into(),
                },
            ));
        }
        let batches = h.batches(usize::MAX);
        assert_eq!(batches.len(), MAX_BATCHES);
        assert_eq!(batches[0].batch_time_ms, MAX_BATCHES as u64 + 9);
        assert_eq!(h.events(usize::MAX).len(), MAX_EVENTS);
        assert_eq!(h.totals().batches_failed, MAX_BATCHES as u64 + 10);
        for id in 0..(MAX_CHECKPOINTS as u64 + 3) {
            h.apply(&rec(
                id,
                Event::CheckpointWritten {
                    store: "s".into(),
                    id,
                    bytes: 1,
                    duration_ms: Some(2),
                },
            ));
        }
        let checkpoints = h.checkpoints();
        assert_eq!(checkpoints.len(), MAX_CHECKPOINTS);
        assert_eq!(checkpoints[0].id, Some(MAX_CHECKPOINTS as u64 + 2));
    }

    #[test]
    fn blocks_count_per_receiver_and_stay_out_of_the_event_tail() {
        let mut h = History::default();
        for _ in 0..3 {
            h.apply(&rec(
                1,
                Event::BlockStored {
                    actor: "receiver-supervisor-0".into(),
                    stream: 0,
                    records: 10,
                    bytes: 100,
                },
            ));
        }
        let r = &h.receivers()[0];
        assert_eq!((r.records, r.bytes, r.blocks), (30, 300, 3));
        assert!(h.events(10).is_empty());
    }
}
