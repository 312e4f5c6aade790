//! The received-block tracker: which stored blocks belong to which batch, durably.
//!
//! Receivers store blocks and report their [`BlockInfo`]s here
//! ([`ReceivedBlockTrackerMsg::AddBlocks`]); the job generator asks, once per batch time, for
//! the blocks of that batch ([`ReceivedBlockTrackerMsg::AllocateBatch`]); once a batch's
//! checkpoint is durable, old allocations are dropped
//! ([`ReceivedBlockTrackerMsg::CleanupBefore`]). This is Spark
//! Streaming's `ReceivedBlockTracker`, with its rules:
//!
//! * Allocating batch `t` takes every unallocated block of every stream, in arrival order —
//!   or, as the job generator asks it (`AllocateBatchUpTo`), of each stream its oldest
//!   blocks up to a byte cap (at least one), leaving the rest for the next batches, so that a
//!   batch generated late does not take a whole backlog into memory at once.
//! * Allocating a time at or before the last allocated one is refused
//!   ([`TrackerError::BatchTooOld`]) — unless it *is* a live allocated time: then the call is
//!   idempotent and returns the existing allocation, because a restarted job generator asks
//!   again for the batches that were pending when it died.
//! * Adding a block that is already known (unallocated, or in a live allocation) does nothing:
//!   a receiver that retries a report after a crash never duplicates a block. A block's
//!   identity is its stream and its WAL handle.
//! * Cleaning before `t` drops the allocations of batches before `t`, never unallocated blocks.
//!
//! # Design: a pure state machine, the WAL at the edge
//!
//! [`BlockTrackerState`] holds the state and makes every decision without I/O. Its only mutation
//! is [`BlockTrackerState::apply`] of a [`TrackerEvent`], used both live and on replay, so
//! replaying the log rebuilds exactly the state the live actor had. The actor,
//! [`ReceivedBlockTracker`], asks the state what event a request means, appends that event to
//! its WAL, waits until it is durable, and only then applies it and answers. Nothing is visible
//! — to a caller, or to the next request — before its WAL record is durable. At start the actor
//! replays the whole log ([`Wal::iter_from`]) into a fresh state.
//!
//! # The WAL record
//!
//! Each request that changes anything is **one** WAL record (an `AddBlocks` of many blocks is
//! one append, not one per block): `{ u8 version = 1 | postcard Vec<TrackerEvent> }` — the
//! format version ([`RECORD_VERSION`]), then a varint count and each event as postcard encodes
//! an enum (a varint variant index, then the fields). The events of one record are applied in
//! order; a record is written whole or not at all, so a request is never half-replayed.
//! Variant indices are part of the format: [`TrackerEvent`]'s variants are never reordered and
//! new ones are only added at the end.
//!
//! # Cleaning the log: compaction, not record times
//!
//! [`Wal::clean`] deletes whole segments by record time. No choice of record times makes that
//! safe by itself: a `BlockAdded` record is needed for as long as its block stays unallocated,
//! which is not known when the record is written (a receiver can report a block long after it
//! was stored, and nothing bounds how long a block waits if no batch is allocated). Stamping it
//! with the block's stored time or the write time lets a later clean delete the only record of a
//! live block. So the tracker *carries the live state forward* instead:
//!
//! 1. Record times are a monotone clock, `max(now, previous record time)`; the log's order and
//!    its record times agree. (Replay finds the previous record time in the log.)
//! 2. `CleanupBefore(t)` first appends `BatchesCleaned { before_ms: t }` and applies it. Then,
//!    if the log has a sealed segment (one that could be deleted), it **compacts**: it seals
//!    the current segment ([`Wal::roll`]), appends a [`TrackerEvent::Snapshot`] of the whole
//!    live state — stamped `s`, strictly later than every earlier record — as the first record
//!    of a fresh segment, and calls [`Wal::clean`]`(s)`.
//! 3. That deletes exactly sealed segments whose records are all older than `s`, i.e. records
//!    before the snapshot, and never the snapshot's own segment (the WAL keeps the newest
//!    segment). Replay then meets the snapshot, which replaces the state wholesale, so whatever
//!    survives before it — all of it, some of it, none of it — does not matter.
//!
//! Between compactions the log holds one segment plus whatever rolled since (the WAL rolls a
//! segment by size and by age, 60 s by default), so its size stays bounded by the live state
//! and one roll interval of records, and compaction writes at most one snapshot per rolled
//! segment — not one per batch.
//!
//! # What a crash leaves behind
//!
//! A `kill` cancels the handler at its next `.await`; the only awaits that matter are the WAL
//! calls, and the state is applied only *after* an append returns, in code with no `.await`
//! in it. So:
//!
//! * **Killed during an append**: the change was not applied in memory and the caller got no
//!   answer. The record was handed to the WAL's writer whole, so the log holds it whole or not
//!   at all. The restarted actor replays whatever reached the log: the change is there or not.
//!   Either is consistent, because callers retry unanswered requests and every request is
//!   idempotent — a re-reported block is not added twice, and a re-asked batch returns the
//!   allocation that reached the log, or is allocated now. No answer was ever given that the
//!   log does not back.
//! * The killed actor's WAL handle dies with its state; the log's writer finishes what was
//!   queued and then releases the log, and the successor's [`Wal::open`] waits for that
//!   ([`WalConfig::lock_wait`]), so the old and the new incarnation never write interleaved.
//! * **Killed during compaction** (after `BatchesCleaned` is durable and applied): the segment
//!   may be rolled, the snapshot may be written, some old segments may be deleted. Replay is
//!   right in every case: before the snapshot is durable no segment is deleted; after it, the
//!   snapshot overrides what precedes it. Undeleted segments are deleted by the next compaction.
//! * **A failed append**: the change is not applied, and the caller gets the error. If the WAL
//!   says it is poisoned (it cannot vouch for its own state after a storage failure) or closed,
//!   the actor answers the caller and then fails, so its supervisor restarts it: reopening the
//!   log runs recovery, and replay rebuilds the state from what is really on storage.
//! * In-memory state is never trusted across a restart: `pre_start` always rebuilds it from
//!   the log.
//!
//! A block whose allocation has been cleaned is forgotten; a receiver re-reporting it after that
//! (much too late to matter) would have it added again as a new block.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::clock::now_ms;
use crate::ingest::blocks::{BlockInfo, StreamId};
use crate::observe::hub::EventSink;
use crate::storage::location::Storage;
use crate::tree::children::answer;
use crate::wal::{Position, RecordHandle, Wal, WalConfig, WalError};

/// The version byte at the start of every tracker WAL record.
pub(crate) const RECORD_VERSION: u8 = 1;

// ================================ the pure state machine ================================ //

/// One change to the tracker's state: the payload of its WAL records.
///
/// **Never reorder these variants, and add new ones only at the end**: postcard encodes a
/// variant as its index, so the order is part of the on-storage format.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum TrackerEvent {
    /// A receiver stored a block (index 0).
    BlockAdded(BlockInfo),
    /// Batch `batch_time_ms` took `blocks`: every unallocated block at the time (index 1).
    BatchAllocated {
        /// The batch time (ms since the Unix epoch).
        batch_time_ms: u64,
        /// The blocks, per stream in arrival order.
        blocks: Vec<BlockInfo>,
    },
    /// Allocations of batches before `before_ms` were dropped (index 2).
    BatchesCleaned {
        /// The threshold: batches with a time `< before_ms` are dropped.
        before_ms: u64,
    },
    /// The whole live state, written by compaction; replaces the state it is applied to
    /// (index 3).
    Snapshot {
        /// The last allocated batch time.
        last_allocated_ms: Option<u64>,
        /// Every unallocated block, per stream in arrival order (streams ascending).
        unallocated: Vec<BlockInfo>,
        /// Every live allocation, ascending by batch time.
        allocations: Vec<(u64, Vec<BlockInfo>)>,
    },
}

/// The blocks allocated to one batch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchAllocation {
    /// The blocks of each stream that had any, in arrival order.
    pub blocks: BTreeMap<StreamId, Vec<BlockInfo>>,
}

impl BatchAllocation {
    fn from_blocks<'a>(blocks: impl IntoIterator<Item = &'a BlockInfo>) -> Self {
        let mut allocation = BatchAllocation::default();
        for block in blocks {
            allocation
                .blocks
                .entry(block.stream)
                .or_default()
                .push(*block);
        }
        allocation
    }

    /// Every block, stream by stream.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &BlockInfo> {
        self.blocks.values().flatten()
    }

    /// How many blocks the batch has.
    pub(crate) fn block_count(&self) -> usize {
        self.blocks.values().map(Vec::len).sum()
    }
}

/// The unallocated blocks of one stream: what is waiting for the next batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Backlog {
    /// Unallocated blocks.
    pub blocks: usize,
    /// Records in them.
    pub records: u64,
}

/// What [`BlockTrackerState::decide_allocation`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AllocationDecision {
    /// The batch is already allocated: this is its allocation; nothing to write.
    Existing(BatchAllocation),
    /// A new allocation: write this [`TrackerEvent::BatchAllocated`], then apply it.
    New(TrackerEvent),
}

/// The tracker's state, as a pure state machine: decisions without I/O, and [`apply`] as the
/// only mutation.
///
/// [`apply`]: BlockTrackerState::apply
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct BlockTrackerState {
    /// Per stream, the unallocated blocks in arrival order. A stream with none has no entry.
    unallocated: BTreeMap<StreamId, VecDeque<BlockInfo>>,
    /// The live allocations by batch time.
    allocations: BTreeMap<u64, BatchAllocation>,
    /// The last allocated batch time (kept when its allocation is cleaned).
    last_allocated_ms: Option<u64>,
    /// The identities of every block in `unallocated` and `allocations`.
    known: BTreeSet<(StreamId, RecordHandle)>,
}

fn key(block: &BlockInfo) -> (StreamId, RecordHandle) {
    (block.stream, block.handle)
}

impl BlockTrackerState {
    /// An empty state: what a tracker with an empty log has.
    pub(crate) fn new() -> Self {
        BlockTrackerState::default()
    }

    /// Applies one event. Total: any event applies to any state without panicking, so a log
    /// replays whatever it holds; applying the events the decisions produced, in order, is
    /// what the live tracker does.
    pub(crate) fn apply(&mut self, event: &TrackerEvent) {
        match event {
            TrackerEvent::BlockAdded(block) => {
                if self.known.insert(key(block)) {
                    self.unallocated
                        .entry(block.stream)
                        .or_default()
                        .push_back(*block);
                }
            }
            TrackerEvent::BatchAllocated {
                batch_time_ms,
                blocks,
            } => {
                if let Some(previous) = self.allocations.remove(batch_time_ms) {
                    for block in previous.iter() {
                        self.known.remove(&key(block));
                    }
                }
                let taken: BTreeSet<_> = blocks.iter().map(key).collect();
                for queue in self.unallocated.values_mut() {
                    queue.retain(|b| !taken.contains(&key(b)));
                }
                self.unallocated.retain(|_, queue| !queue.is_empty());
                self.known.extend(taken);
                self.allocations
                    .insert(*batch_time_ms, BatchAllocation::from_blocks(blocks));
                self.last_allocated_ms = self.last_allocated_ms.max(Some(*batch_time_ms));
            }
            TrackerEvent::BatchesCleaned { before_ms } => {
                let kept = self.allocations.split_off(before_ms);
                let dropped = std::mem::replace(&mut self.allocations, kept);
                for block in dropped.values().flat_map(BatchAllocation::iter) {
                    self.known.remove(&key(block));
                }
            }
            TrackerEvent::Snapshot {
                last_allocated_ms,
                unallocated,
                allocations,
            } => {
                let mut state = BlockTrackerState::new();
                for (batch_time_ms, blocks) in allocations {
                    state.known.extend(blocks.iter().map(key));
                    state
                        .allocations
                        .insert(*batch_time_ms, BatchAllocation::from_blocks(blocks));
                }
                for block in unallocated {
                    state.apply(&TrackerEvent::BlockAdded(*block));
                }
                state.last_allocated_ms = *last_allocated_ms;
                *self = state;
            }
        }
    }

    /// The events that add `blocks`: one [`TrackerEvent::BlockAdded`] per block not already
    /// known (and not repeated earlier in `blocks`). Empty when there is nothing new.
    pub(crate) fn add_events(&self, blocks: &[BlockInfo]) -> Vec<TrackerEvent> {
        let mut seen = BTreeSet::new();
        blocks
            .iter()
            .filter(|b| !self.known.contains(&key(b)) && seen.insert(key(b)))
            .map(|b| TrackerEvent::BlockAdded(*b))
            .collect()
    }

    /// Every unallocated block: [`decide_allocation_up_to`](Self::decide_allocation_up_to)
    /// without a cap (the tests' allocation).
    #[cfg(test)]
    pub(crate) fn decide_allocation(
        &self,
        batch_time_ms: u64,
    ) -> Result<AllocationDecision, TrackerError> {
        self.decide_allocation_up_to(batch_time_ms, u64::MAX)
    }

    /// What allocating batch `batch_time_ms` means now, taking of each stream only its oldest
    /// blocks up to `max_bytes` (their WAL record lengths; always at least one block, so a
    /// backlog drains): the rest stay unallocated, in order, for the next batches.
    ///
    /// # Errors
    ///
    /// [`TrackerError::BatchTooOld`] when the time is at or before the last allocated batch
    /// time and is not a live allocation.
    pub(crate) fn decide_allocation_up_to(
        &self,
        batch_time_ms: u64,
        max_bytes: u64,
    ) -> Result<AllocationDecision, TrackerError> {
        if let Some(existing) = self.allocations.get(&batch_time_ms) {
            return Ok(AllocationDecision::Existing(existing.clone()));
        }
        match self.last_allocated_ms {
            Some(last) if batch_time_ms <= last => Err(TrackerError::BatchTooOld {
                batch_time_ms,
                last_allocated_ms: last,
            }),
            _ => Ok(AllocationDecision::New(TrackerEvent::BatchAllocated {
                batch_time_ms,
                blocks: self
                    .unallocated
                    .values()
                    .flat_map(|queue| {
                        let mut bytes = 0u64;
                        queue.iter().enumerate().take_while(move |(i, b)| {
                            bytes = bytes.saturating_add(u64::from(b.handle.length));
                            *i == 0 || bytes <= max_bytes
                        })
                    })
                    .map(|(_, b)| *b)
                    .collect(),
            })),
        }
    }

    /// The event that cleans batches before `before_ms`, if there is any such batch.
    pub(crate) fn cleanup_event(&self, before_ms: u64) -> Option<TrackerEvent> {
        self.allocations
            .range(..before_ms)
            .next()
            .map(|_| TrackerEvent::BatchesCleaned { before_ms })
    }

    /// The whole live state as one event; applying it to any state yields this state.
    pub(crate) fn snapshot(&self) -> TrackerEvent {
        TrackerEvent::Snapshot {
            last_allocated_ms: self.last_allocated_ms,
            unallocated: self.unallocated.values().flatten().copied().collect(),
            allocations: self
                .allocations
                .iter()
                .map(|(t, a)| (*t, a.iter().copied().collect()))
                .collect(),
        }
    }

    /// The allocation of batch `batch_time_ms`, if it is live.
    pub(crate) fn allocation(&self, batch_time_ms: u64) -> Option<&BatchAllocation> {
        self.allocations.get(&batch_time_ms)
    }

    /// Every live allocation, by batch time.
    pub(crate) fn allocations(&self) -> &BTreeMap<u64, BatchAllocation> {
        &self.allocations
    }

    /// The unallocated blocks and records of every stream that has any.
    pub(crate) fn backlog(&self) -> BTreeMap<StreamId, Backlog> {
        self.unallocated
            .iter()
            .map(|(stream, queue)| {
                let backlog = Backlog {
                    blocks: queue.len(),
                    records: queue.iter().map(|b| b.records).sum(),
                };
                (*stream, backlog)
            })
            .collect()
    }

    /// The last allocated batch time.
    pub(crate) fn last_allocated_ms(&self) -> Option<u64> {
        self.last_allocated_ms
    }

    /// The lowest receiver-WAL segment holding a block still needed (unallocated, or in a
    /// live allocation): the segments below it hold only garbage — as far as the tracker
    /// knows (blocks on their way to it are another matter: `ingest::in_flight`). Memory-only
    /// blocks (the receiver WAL off) have a segment no log reaches, so they never lower it.
    pub(crate) fn oldest_live_segment(&self) -> Option<u64> {
        let unallocated = self.unallocated.values().flatten();
        let allocated = self
            .allocations
            .values()
            .flat_map(|a| a.blocks.values().flatten());
        unallocated.chain(allocated).map(|b| b.handle.segment).min()
    }
}

/// Encodes `events` as one WAL record payload (see the module docs for the format).
///
/// # Errors
///
/// [`TrackerError::Encode`] if postcard fails (it does not for these types; the error is kept
/// rather than a panic).
pub(crate) fn encode_record(events: &[TrackerEvent]) -> Result<Bytes, TrackerError> {
    let mut out = vec![RECORD_VERSION];
    postcard::to_io(events, &mut out).map_err(TrackerError::Encode)?;
    Ok(Bytes::from(out))
}

/// Decodes a WAL record payload made by [`encode_record`].
///
/// # Errors
///
/// A sentence saying what is wrong: an unknown version, or bytes that are not events.
pub(crate) fn decode_record(payload: &[u8]) -> Result<Vec<TrackerEvent>, String> {
    match payload.split_first() {
        Some((&RECORD_VERSION, rest)) => match postcard::take_from_bytes(rest) {
            Ok((events, [])) => Ok(events),
            Ok((_, trailing)) => Err(format!(
                "{} bytes follow the tracker events in the record",
                trailing.len()
            )),
            Err(err) => Err(format!("the record is not a list of tracker events: {err}")),
        },
        Some((version, _)) => Err(format!(
            "unknown tracker record version {version} (this build reads version {RECORD_VERSION})"
        )),
        None => Err("the record is empty".to_owned()),
    }
}

// ===================================== errors ===================================== //

/// What can go wrong with a tracker request, or with replaying its log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TrackerError {
    /// The batch time is at or before the last allocated one and is not a live allocation.
    #[error(
        "batch {batch_time_ms} cannot be allocated: batches up to {last_allocated_ms} are \
         already allocated, and {batch_time_ms} is not one of the live allocations (it was \
         never allocated, or has been cleaned)"
    )]
    BatchTooOld {
        /// The batch time asked for.
        batch_time_ms: u64,
        /// The last allocated batch time.
        last_allocated_ms: u64,
    },
    /// The WAL failed; the change was not applied.
    #[error("the received-block tracker's WAL failed; the change was not applied: {0}")]
    Wal(#[from] WalError),
    /// A record could not be encoded.
    #[error("encoding a received-block tracker WAL record failed: {0}")]
    Encode(#[source] postcard::Error),
    /// A record of the log, intact by its checksum, is not a tracker record.
    #[error(
        "the received-block tracker's WAL record at {handle} in `{log}` is unreadable: {reason}"
    )]
    Decode {
        /// Where the log lives.
        log: String,
        /// Where the record is.
        handle: RecordHandle,
        /// What is wrong with it.
        reason: String,
    },
}

impl TrackerError {
    /// Whether the WAL can take no more appends until it is reopened (the actor then fails so
    /// that its supervisor restarts it).
    fn needs_reopen(&self) -> bool {
        matches!(
            self,
            TrackerError::Wal(WalError::Poisoned { .. } | WalError::Closed { .. })
        )
    }
}

// ===================================== the actor ===================================== //

/// The `received-block-tracker` actor (see the module docs). Spawned by the driver under
/// [`Names::received_block_tracker`](crate::tree::names::Names::received_block_tracker).
#[derive(Clone, Debug)]
pub(crate) struct ReceivedBlockTracker;

/// What the tracker starts from.
#[derive(Clone, Debug)]
pub(crate) struct ReceivedBlockTrackerArgs {
    /// Where its WAL lives (its own directory or prefix: nothing else may write there).
    pub wal_storage: Storage,
    /// How its WAL writes and recovers. Its `events` field is replaced by [`Self::events`].
    pub wal_config: WalConfig,
    /// Where the tracker's WAL reports segment rolls, cleanups and torn-tail cuts.
    pub events: EventSink,
}

/// The tracker actor's state: its open WAL and the state the WAL's records built.
#[derive(Debug)]
pub(crate) struct ReceivedBlockTrackerState {
    wal: Wal,
    tracker: BlockTrackerState,
    /// The time of the newest record written or replayed: record times never go backwards.
    last_record_ms: u64,
}

/// What a cleanup did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CleanupReport {
    /// The batch times whose allocations were dropped.
    pub dropped_batches: Vec<u64>,
    /// The WAL segments deleted by compaction.
    pub deleted_segments: Vec<u64>,
    /// Why compaction failed, if it did. The cleanup itself still happened (it is durable);
    /// the next cleanup compacts again.
    pub compaction_error: Option<String>,
}

/// Messages of the tracker. Every request answers on the port it carries last.
#[derive(Debug)]
pub(crate) enum ReceivedBlockTrackerMsg {
    /// Adds stored blocks (one WAL append for the whole list). Blocks already known are
    /// skipped; answers once the new ones are durable and visible.
    AddBlocks(Vec<BlockInfo>, RpcReplyPort<Result<(), TrackerError>>),
    /// Allocates every unallocated block to the batch at this time (ms since the Unix epoch),
    /// or returns the batch's existing allocation.
    AllocateBatch(u64, RpcReplyPort<Result<BatchAllocation, TrackerError>>),
    /// As `AllocateBatch`, taking of each stream only its oldest blocks up to this many bytes
    /// (at least one): the job generator's allocation, so that a batch generated late does
    /// not take the whole backlog at once.
    AllocateBatchUpTo(
        u64,
        u64,
        RpcReplyPort<Result<BatchAllocation, TrackerError>>,
    ),
    /// The live allocation of the batch at this time, if any.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    GetAllocation(u64, RpcReplyPort<Option<BatchAllocation>>),
    /// The unallocated blocks and records of every stream that has any (the backlog).
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    Unallocated(RpcReplyPort<BTreeMap<StreamId, Backlog>>),
    /// Drops the allocations of batches before this time, then compacts the WAL if it can
    /// delete anything.
    CleanupBefore(u64, RpcReplyPort<Result<CleanupReport, TrackerError>>),
    /// A copy of the whole state, for tests and inspection tools.
    Inspect(RpcReplyPort<BlockTrackerState>),
}

impl ReceivedBlockTrackerState {
    /// The time for the next record: the clock, but never before the previous record.
    fn next_record_time(&mut self, strictly_later: bool) -> u64 {
        let floor = self.last_record_ms + u64::from(strictly_later);
        // Advanced before the append is awaited: a failed or cancelled append may still have
        // reached the log, and the clock must stay ahead of it.
        self.last_record_ms = now_ms().max(floor);
        self.last_record_ms
    }

    /// Writes `events` as one record, waits until it is durable, then applies them.
    ///
    /// # Cancel safety
    ///
    /// If cancelled (the actor killed) the events are not applied; the record may or may not
    /// be in the log, whole.
    async fn record(&mut self, events: Vec<TrackerEvent>) -> Result<(), TrackerError> {
        let payload = encode_record(&events)?;
        let time = self.next_record_time(false);
        self.wal.append_at(time, payload).await?;
        // No `.await` from here on: the change becomes visible all at once.
        for event in &events {
            self.tracker.apply(event);
        }
        Ok(())
    }

    async fn add_blocks(&mut self, blocks: &[BlockInfo]) -> Result<(), TrackerError> {
        let events = self.tracker.add_events(blocks);
        if events.is_empty() {
            return Ok(());
        }
        let added = events.len();
        self.record(events).await?;
        tracing::debug!(added, skipped = blocks.len() - added, "blocks added");
        Ok(())
    }

    async fn allocate(
        &mut self,
        batch_time_ms: u64,
        max_bytes: u64,
    ) -> Result<BatchAllocation, TrackerError> {
        match self
            .tracker
            .decide_allocation_up_to(batch_time_ms, max_bytes)?
        {
            AllocationDecision::Existing(allocation) => {
                tracing::debug!(batch_time_ms, "batch already allocated; returning it again");
                Ok(allocation)
            }
            AllocationDecision::New(event) => {
                self.record(vec![event]).await?;
                let allocation = self
                    .tracker
                    .allocation(batch_time_ms)
                    .cloned()
                    .unwrap_or_default();
                tracing::debug!(
                    batch_time_ms,
                    blocks = allocation.block_count(),
                    "batch allocated"
                );
                Ok(allocation)
            }
        }
    }

    async fn cleanup(&mut self, before_ms: u64) -> Result<CleanupReport, TrackerError> {
        let mut report = CleanupReport {
            dropped_batches: self
                .tracker
                .allocations()
                .range(..before_ms)
                .map(|(t, _)| *t)
                .collect(),
            ..CleanupReport::default()
        };
        if let Some(event) = self.tracker.cleanup_event(before_ms) {
            self.record(vec![event]).await?;
        }
        if self.wal.segments().iter().any(|s| s.sealed) {
            match self.compact().await {
                Ok(deleted) => report.deleted_segments = deleted,
                Err(err) => {
                    tracing::warn!(error = %err, "block tracker WAL compaction failed; \
                        the next cleanup retries it");
                    report.compaction_error = Some(err.to_string());
                }
            }
        }
        Ok(report)
    }

    /// Seals the current segment, writes the whole state as the first record of a fresh one,
    /// and deletes every segment before it (see "Cleaning the log" in the module docs).
    ///
    /// # Cancel safety
    ///
    /// Nothing is deleted before the snapshot is durable; the state is not changed.
    async fn compact(&mut self) -> Result<Vec<u64>, TrackerError> {
        self.wal.roll().await?;
        let payload = encode_record(&[self.tracker.snapshot()])?;
        let time = self.next_record_time(true);
        self.wal.append_at(time, payload).await?;
        // Applying the snapshot would leave the state as it is: nothing to apply.
        let deleted = self.wal.clean(time).await?;
        tracing::info!(segments = ?deleted, "block tracker WAL compacted");
        Ok(deleted)
    }
}

impl Actor for ReceivedBlockTracker {
    type Msg = ReceivedBlockTrackerMsg;
    type State = ReceivedBlockTrackerState;
    type Arguments = ReceivedBlockTrackerArgs;

    /// Opens the WAL and replays it into a fresh state.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ReceivedBlockTrackerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut config = args.wal_config;
        config.events = args.events;
        let (wal, _) = Wal::open(args.wal_storage, config).await?;
        let mut tracker = BlockTrackerState::new();
        let (mut records, mut events, mut last_record_ms) = (0u64, 0u64, 0u64);
        let mut iter = wal.iter_from(Position::START);
        while let Some(record) = iter.next().await {
            let record = record?;
            let decoded =
                decode_record(&record.payload).map_err(|reason| TrackerError::Decode {
                    log: wal.location().to_owned(),
                    handle: record.handle,
                    reason,
                })?;
            for event in &decoded {
                tracker.apply(event);
            }
            records += 1;
            events += decoded.len() as u64;
            last_record_ms = last_record_ms.max(record.time_ms);
        }
        let backlog = tracker.backlog();
        tracing::info!(
            log = wal.location(),
            records,
            events,
            unallocated_blocks = backlog.values().map(|b| b.blocks).sum::<usize>(),
            allocated_batches = tracker.allocations().len(),
            allocated_blocks = tracker
                .allocations()
                .values()
                .map(BatchAllocation::block_count)
                .sum::<usize>(),
            last_allocated_ms = ?tracker.last_allocated_ms(),
            "received-block tracker recovered from its WAL"
        );
        Ok(ReceivedBlockTrackerState {
            wal,
            tracker,
            last_record_ms,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let fatal = match message {
            ReceivedBlockTrackerMsg::AddBlocks(blocks, reply) => {
                let result = state.add_blocks(&blocks).await;
                let fatal = fatal(&result);
                answer(reply, result);
                fatal
            }
            ReceivedBlockTrackerMsg::AllocateBatch(batch_time_ms, reply) => {
                let result = state.allocate(batch_time_ms, u64::MAX).await;
                let fatal = fatal(&result);
                answer(reply, result);
                fatal
            }
            ReceivedBlockTrackerMsg::AllocateBatchUpTo(batch_time_ms, max_bytes, reply) => {
                let result = state.allocate(batch_time_ms, max_bytes).await;
                let fatal = fatal(&result);
                answer(reply, result);
                fatal
            }
            ReceivedBlockTrackerMsg::CleanupBefore(before_ms, reply) => {
                let result = state.cleanup(before_ms).await;
                let fatal = fatal(&result);
                answer(reply, result);
                fatal
            }
            ReceivedBlockTrackerMsg::GetAllocation(batch_time_ms, reply) => {
                answer(reply, state.tracker.allocation(batch_time_ms).cloned());
                None
            }
            ReceivedBlockTrackerMsg::Unallocated(reply) => {
                answer(reply, state.tracker.backlog());
                None
            }
            ReceivedBlockTrackerMsg::Inspect(reply) => {
                answer(reply, state.tracker.clone());
                None
            }
        };
        match fatal {
            Some(reason) => Err(reason.into()),
            None => Ok(()),
        }
    }

    /// Closes the WAL, so a successor can open it at once.
    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(err) = state.wal.clone().close().await {
            tracing::warn!(error = %err, "closing the block tracker WAL failed");
        }
        Ok(())
    }
}

/// The reason to fail the actor after answering, if `result` says the WAL must be reopened.
fn fatal<T>(result: &Result<T, TrackerError>) -> Option<String> {
    match result {
        Err(err) if err.needs_reopen() => {
            tracing::error!(error = %err, "block tracker WAL needs reopening; restarting");
            Some(format!("{err}; the tracker restarts to reopen its WAL"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(stream: StreamId, id: u64) -> BlockInfo {
        BlockInfo {
            stream,
            handle: RecordHandle {
                segment: 1,
                offset: id,
                length: 1,
            },
            records: id + 1,
            stored_ms: 1000 + id,
        }
    }

    fn apply_all(state: &mut BlockTrackerState, events: &[TrackerEvent]) {
        for event in events {
            state.apply(event);
        }
    }

    fn add(state: &mut BlockTrackerState, blocks: &[BlockInfo]) {
        let events = state.add_events(blocks);
        apply_all(state, &events);
    }

    fn allocate(state: &mut BlockTrackerState, t: u64) -> Result<BatchAllocation, TrackerError> {
        match state.decide_allocation(t)? {
            AllocationDecision::Existing(a) => Ok(a),
            AllocationDecision::New(event) => {
                state.apply(&event);
                Ok(state.allocation(t).cloned().unwrap_or_default())
            }
        }
    }

    #[test]
    fn a_capped_allocation_takes_the_oldest_blocks_of_each_stream_and_leaves_the_rest_in_order() {
        let sized = |stream: StreamId, id: u64, length: u32| BlockInfo {
            handle: RecordHandle {
                segment: 1,
                offset: 100 * u64::from(stream) + id,
                length,
            },
            ..block(stream, id)
        };
        let mut state = BlockTrackerState::default();
        let s0: Vec<BlockInfo> = (0..3).map(|i| sized(0, i, 10)).collect();
        let s1 = vec![sized(1, 0, 50), sized(1, 1, 5)];
        add(&mut state, &s0);
        add(&mut state, &s1);
        let mut take = |t: u64| match state.decide_allocation_up_to(t, 25).unwrap() {
            AllocationDecision::New(event) => {
                state.apply(&event);
                state.allocation(t).cloned().unwrap_or_default()
            }
            AllocationDecision::Existing(a) => a,
        };
        // Stream 0: 10 + 10 fit 25, the third would not; stream 1: its first block alone is
        // over the cap, and is taken all the same (a backlog always drains).
        let first = take(1000);
        assert_eq!(first.blocks[&0], s0[..2].to_vec());
        assert_eq!(first.blocks[&1], s1[..1].to_vec());
        // The rest, in order, for the next batch.
        let second = take(2000);
        assert_eq!(second.blocks[&0], s0[2..].to_vec());
        assert_eq!(second.blocks[&1], s1[1..].to_vec());
        assert_eq!(take(3000).block_count(), 0);
    }

    #[test]
    fn variant_indices_are_the_documented_format() {
        let cleaned = TrackerEvent::BatchesCleaned { before_ms: 5 };
        assert_eq!(encode_record(&[cleaned]).unwrap().as_ref(), &[1, 1, 2, 5]);
        let allocated = TrackerEvent::BatchAllocated {
            batch_time_ms: 7,
            blocks: vec![],
        };
        assert_eq!(
            encode_record(&[allocated]).unwrap().as_ref(),
            &[1, 1, 1, 7, 0]
        );
        let added = encode_record(&[TrackerEvent::BlockAdded(block(3, 4))]).unwrap();
        assert_eq!(&added[..5], &[1, 1, 0, 3, 1]);
        let snapshot = TrackerEvent::Snapshot {
            last_allocated_ms: None,
            unallocated: vec![],
            allocations: vec![],
        };
        assert_eq!(
            encode_record(&[snapshot]).unwrap().as_ref(),
            &[1, 1, 3, 0, 0, 0]
        );
    }

    #[test]
    fn records_round_trip_and_damage_is_an_error() {
        let events = vec![
            TrackerEvent::BlockAdded(block(0, 1)),
            TrackerEvent::BatchAllocated {
                batch_time_ms: 9,
                blocks: vec![block(0, 1)],
            },
        ];
        let payload = encode_record(&events).unwrap();
        assert_eq!(decode_record(&payload).unwrap(), events);
        for cut in 0..payload.len() {
            assert!(decode_record(&payload[..cut]).is_err());
        }
        let mut trailing = payload.to_vec();
        trailing.push(0);
        assert!(decode_record(&trailing).is_err());
        assert!(decode_record(&[2, 0]).unwrap_err().contains("version 2"));
    }

    #[test]
    fn allocation_takes_every_unallocated_block_in_arrival_order() {
        let mut state = BlockTrackerState::new();
        let blocks = [block(1, 0), block(0, 1), block(1, 2)];
        add(&mut state, &blocks);
        let a = allocate(&mut state, 100).unwrap();
        assert_eq!(a.blocks[&0], vec![block(0, 1)]);
        assert_eq!(a.blocks[&1], vec![block(1, 0), block(1, 2)]);
        assert!(state.backlog().is_empty());
    }

    #[test]
    fn known_blocks_are_never_added_twice() {
        let mut state = BlockTrackerState::new();
        let events = state.add_events(&[block(0, 1), block(0, 1)]);
        assert_eq!(events.len(), 1);
        apply_all(&mut state, &events);
        assert!(state.add_events(&[block(0, 1)]).is_empty());
        allocate(&mut state, 1).unwrap();
        assert!(state.add_events(&[block(0, 1)]).is_empty());
        // The same handle in another stream is another block.
        assert_eq!(state.add_events(&[block(1, 1)]).len(), 1);
    }

    #[test]
    fn old_times_are_refused_unless_live() {
        let mut state = BlockTrackerState::new();
        add(&mut state, &[block(0, 1)]);
        let first = allocate(&mut state, 10).unwrap();
        add(&mut state, &[block(0, 2)]);
        assert_eq!(allocate(&mut state, 10).unwrap(), first);
        assert!(matches!(
            allocate(&mut state, 5),
            Err(TrackerError::BatchTooOld {
                batch_time_ms: 5,
                last_allocated_ms: 10
            })
        ));
        let cleaned = state.cleanup_event(11);
        apply_all(&mut state, cleaned.as_slice());
        assert!(matches!(
            allocate(&mut state, 10),
            Err(TrackerError::BatchTooOld { .. })
        ));
        // The unallocated block survived the cleanup.
        assert_eq!(state.backlog()[&0].blocks, 1);
    }

    #[test]
    fn a_snapshot_rebuilds_the_state_exactly() {
        let mut state = BlockTrackerState::new();
        add(&mut state, &[block(0, 1), block(1, 2)]);
        allocate(&mut state, 10).unwrap();
        allocate(&mut state, 20).unwrap();
        add(&mut state, &[block(1, 3), block(0, 4)]);
        let mut rebuilt = BlockTrackerState::new();
        apply_all(&mut rebuilt, &[TrackerEvent::BlockAdded(block(5, 5))]);
        rebuilt.apply(&state.snapshot());
        assert_eq!(rebuilt, state);
        let mut same = state.clone();
        same.apply(&state.snapshot());
        assert_eq!(same, state);
    }
}
