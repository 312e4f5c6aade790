//! What `weir watch` shows, as plain data: built from the endpoint's snapshot and events, and
//! changed by keys. Rendering (`view`) only reads it, so it is tested with a fixed `State`.

use std::collections::VecDeque;

use weir_actors::Event;
use weir_actors::EventRecord;
use weir_actors::control::{ActorState, TreeSnapshot};

/// Events kept for the event log.
pub(crate) const EVENTS_KEPT: usize = 500;
/// Batches kept for the timeline.
pub(crate) const BATCHES_KEPT: usize = 60;

/// The connection to the endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Link {
    /// Trying for the first time.
    Connecting,
    /// Connected.
    Connected {
        /// The server's name and version.
        server: String,
        /// The engine's process id.
        pid: u32,
    },
    /// The connection was lost (or never made); reconnecting.
    Lost {
        /// Why.
        reason: String,
        /// Attempts since it was lost.
        attempts: u32,
    },
}

/// One actor row of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ActorRow {
    /// Its registered name.
    pub name: String,
    /// Its supervisor.
    pub parent: Option<String>,
    /// Its depth in the tree (the root is 0).
    pub depth: usize,
    /// Its state.
    pub state: ActorState,
    /// Restarts seen.
    pub restarts: u32,
    /// Its last failure.
    pub last_failure: Option<String>,
}

/// One completed batch.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BatchRow {
    /// The batch time.
    pub time_ms: u64,
    /// How long after its time it started.
    pub scheduling_delay_ms: u64,
    /// How long its jobs ran.
    pub processing_ms: u64,
    /// Records in it.
    pub records: u64,
    /// Records per second of batch time (records over the interval since the previous batch).
    pub records_per_s: f64,
}

/// WAL activity seen in the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct WalStatus {
    /// Blocks made durable.
    pub blocks: u64,
    /// Records in them.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The last segment roll, as text.
    pub last_roll: Option<String>,
    /// Segments cleaned.
    pub cleaned: u64,
    /// Torn tails cut at recovery.
    pub torn_tails: u64,
}

/// Checkpoint activity seen in the events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CheckpointStatus {
    /// The newest checkpoint written: id, size, when.
    pub last: Option<(u64, u64, u64)>,
    /// Checkpoints written.
    pub written: u64,
    /// Checkpoints skipped at restore.
    pub skipped: u64,
    /// Failed writes.
    pub failed: u64,
    /// The checkpoint restored from, if any was seen.
    pub restored: Option<u64>,
    /// The last problem, as text.
    pub last_problem: Option<String>,
}

/// Everything the screen shows.
#[derive(Clone, Debug)]
pub(crate) struct State {
    /// The endpoint's address.
    pub addr: String,
    /// The connection.
    pub link: Link,
    /// Connections made so far (more than one: it reconnected).
    pub connections: u32,
    /// The tree, parents before children.
    pub actors: Vec<ActorRow>,
    /// The selected row of the tree.
    pub selected: usize,
    /// The event log, oldest first.
    pub events: VecDeque<EventRecord>,
    /// Events missed because this viewer was slow.
    pub missed: u64,
    /// The batch timeline, oldest first.
    pub batches: VecDeque<BatchRow>,
    /// WAL status.
    pub wal: WalStatus,
    /// Checkpoint status.
    pub checkpoints: CheckpointStatus,
    /// An actor waiting for the kill confirmation.
    pub confirm_kill: Option<String>,
    /// The last message for the status line, and whether it reports a problem.
    pub status: Option<(String, bool)>,
    /// Whether a token was given (killing needs one).
    pub has_token: bool,
}

impl State {
    /// Nothing known yet about the engine at `addr`.
    pub(crate) fn new(addr: impl Into<String>, has_token: bool) -> Self {
        State {
            addr: addr.into(),
            link: Link::Connecting,
            connections: 0,
            actors: Vec::new(),
            selected: 0,
            events: VecDeque::new(),
            missed: 0,
            batches: VecDeque::new(),
            wal: WalStatus::default(),
            checkpoints: CheckpointStatus::default(),
            confirm_kill: None,
            status: None,
            has_token,
        }
    }

    /// The connection is up.
    pub(crate) fn connected(&mut self, server: String, pid: u32) {
        self.connections += 1;
        if self.connections > 1 {
            self.status = Some((format!("reconnected to {server} (pid {pid})"), false));
        }
        self.link = Link::Connected { server, pid };
    }

    /// The connection is down (or could not be made); the viewer keeps trying.
    pub(crate) fn lost(&mut self, reason: String) {
        let attempts = match &self.link {
            Link::Lost { attempts, .. } => attempts + 1,
            _ => 1,
        };
        self.link = Link::Lost { reason, attempts };
        self.confirm_kill = None;
    }

    /// The name of the selected actor.
    pub(crate) fn selected_actor(&self) -> Option<&str> {
        self.actors.get(self.selected).map(|a| a.name.as_str())
    }

    /// Replaces the tree with `snapshot`'s, keeping the selection on the same actor; the first
    /// snapshot of a connection also fills the timeline from its recent events.
    pub(crate) fn apply_snapshot(&mut self, snapshot: &TreeSnapshot, first: bool) {
        let keep = self.selected_actor().map(str::to_owned);
        self.actors = snapshot
            .actors
            .iter()
            .map(|a| ActorRow {
                name: a.name.clone(),
                parent: a.parent.clone(),
                depth: 0,
                state: a.state,
                restarts: a.restarts,
                last_failure: a.last_failure.clone(),
            })
            .collect();
        for i in 0..self.actors.len() {
            let depth = self.actors[i]
                .parent
                .as_ref()
                .and_then(|p| self.actors[..i].iter().find(|a| &a.name == p))
                .map_or(0, |p| p.depth + 1);
            self.actors[i].depth = depth;
        }
        self.selected = keep
            .and_then(|name| self.actors.iter().position(|a| a.name == name))
            .unwrap_or(0)
            .min(self.actors.len().saturating_sub(1));
        if first {
            self.events.clear();
            self.batches.clear();
            // The tree already counts these; they fill the log, timeline and status only.
            for record in &snapshot.recent {
                self.record(record, false);
            }
        }
    }

    /// Applies one event; `true` if the tree changed shape and a fresh snapshot is wanted.
    pub(crate) fn apply_event(&mut self, record: &EventRecord) -> bool {
        self.record(record, true)
    }

    fn record(&mut self, record: &EventRecord, tree: bool) -> bool {
        let mut reshape = false;
        let mut log = true;
        match &record.event {
            Event::ActorStarted { .. }
            | Event::ActorFailed { .. }
            | Event::ActorRestarted { .. }
            | Event::ActorGaveUp { .. }
                if !tree => {}
            Event::ActorStarted { actor } => {
                // A (re)started actor may have new children or a supervisor not known yet.
                reshape = true;
                if let Some(row) = self.row(actor) {
                    row.state = ActorState::Running;
                }
            }
            Event::ActorFailed { actor, reason } => {
                if let Some(row) = self.row(actor) {
                    row.state = ActorState::Failed;
                    row.last_failure = Some(reason.clone());
                }
            }
            Event::ActorRestarted { actor, .. } => {
                if let Some(row) = self.row(actor) {
                    row.state = ActorState::Restarting;
                    row.restarts += 1;
                }
            }
            Event::ActorGaveUp { child, .. } => {
                if let Some(row) = self.row(child) {
                    row.state = ActorState::GaveUp;
                }
            }
            Event::BlockStored { records, bytes, .. } => {
                self.wal.blocks += 1;
                self.wal.records += records;
                self.wal.bytes += bytes;
                log = false;
            }
            Event::WalSegmentRolled {
                sealed,
                segment,
                reason,
                ..
            } => self.wal.last_roll = Some(format!("{sealed} -> {segment} ({reason})")),
            Event::WalSegmentsCleaned { segments, .. } => {
                self.wal.cleaned += segments.len() as u64;
            }
            Event::WalTornTailCut { .. } => self.wal.torn_tails += 1,
            Event::CheckpointWritten { id, bytes, .. } => {
                self.checkpoints.last = Some((*id, *bytes, record.time_ms));
                self.checkpoints.written += 1;
                log = false;
            }
            Event::CheckpointSkipped { id, reason, .. } => {
                self.checkpoints.skipped += 1;
                self.checkpoints.last_problem = Some(format!("{id} skipped: {reason}"));
            }
            Event::CheckpointFailed { reason, .. } => {
                self.checkpoints.failed += 1;
                self.checkpoints.last_problem = Some(format!("write failed: {reason}"));
            }
            Event::CheckpointRestored { id, .. } => self.checkpoints.restored = Some(*id),
            Event::BatchCompleted {
                batch_time_ms,
                scheduling_delay_ms,
                processing_ms,
                records,
            } => {
                let records_per_s = match self.batches.back() {
                    Some(prev) if *batch_time_ms > prev.time_ms => {
                        *records as f64 * 1000.0 / (*batch_time_ms - prev.time_ms) as f64
                    }
                    _ => 0.0,
                };
                if self.batches.len() == BATCHES_KEPT {
                    self.batches.pop_front();
                }
                self.batches.push_back(BatchRow {
                    time_ms: *batch_time_ms,
                    scheduling_delay_ms: *scheduling_delay_ms,
                    processing_ms: *processing_ms,
                    records: *records,
                    records_per_s,
                });
            }
            Event::Lagged { missed } => self.missed += missed,
            Event::BatchGenerated { .. }
            | Event::BatchStarted { .. }
            | Event::OutputStarted { .. }
            | Event::OutputCompleted { .. } => log = false,
            _ => {}
        }
        if log {
            if self.events.len() == EVENTS_KEPT {
                self.events.pop_front();
            }
            self.events.push_back(record.clone());
        }
        reshape
    }

    fn row(&mut self, actor: &str) -> Option<&mut ActorRow> {
        self.actors.iter_mut().find(|a| a.name == actor)
    }

    /// Moves the selection by `delta` rows, within the tree.
    pub(crate) fn move_selection(&mut self, delta: isize) {
        if self.actors.is_empty() {
            self.selected = 0;
            return;
        }
        let last = self.actors.len() - 1;
        self.selected = self.selected.saturating_add_signed(delta).min(last);
    }
}
