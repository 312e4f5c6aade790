//! Checking exactly-once: a receiver of numbered records and a pipeline whose sink records
//! what it committed under each batch id.
//!
//! Used by weir's own end-to-end tests and examples, and meant for yours: run an [`Engine`]
//! with a [`NumberedReceiver`] and a [`CommitLogPipeline`], kill whatever you like while it
//! runs, stop it, and [`verify`] that every record the receiver had acknowledged was committed
//! in exactly one batch and that no batch id was committed twice with different records.
//!
//! [`Engine`]: crate::Engine

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use crate::checkpoint::{CheckpointData, OperatorState};
use crate::pipeline::{
    BatchInput, BoxFuture, Job, Pipeline, Receiver, ReceiverContext, ReceiverFactory, UserError,
};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A receiver that stores records numbered 0, 1, 2, ... (each an 8-byte little-endian number),
/// `per_store` at a time, and remembers every number whose `store` returned `Ok`.
///
/// Clones share the counter and the acknowledged set, so a factory can hand a clone to each
/// restart of the receiver.
#[derive(Clone, Debug)]
pub struct NumberedReceiver {
    next: Arc<AtomicU64>,
    acked: Arc<Mutex<BTreeSet<u64>>>,
    per_store: u64,
    pause: Duration,
}

impl NumberedReceiver {
    /// Stores `per_store` records at a time, pausing `pause` between stores (pacing).
    pub fn new(per_store: u64, pause: Duration) -> Self {
        NumberedReceiver {
            next: Arc::default(),
            acked: Arc::default(),
            per_store: per_store.max(1),
            pause,
        }
    }

    /// The numbers acknowledged so far.
    pub fn acknowledged(&self) -> BTreeSet<u64> {
        lock(&self.acked).clone()
    }

    /// A factory of receivers that are clones of this one (a restarted receiver goes on
    /// numbering where the last one stopped, and what each acknowledges is seen here).
    pub fn factory(&self) -> Arc<dyn ReceiverFactory> {
        let receiver = self.clone();
        Arc::new(move || Box::new(receiver.clone()) as Box<dyn Receiver>)
    }
}

impl Receiver for NumberedReceiver {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            while !ctx.is_stopping() {
                let first = self.next.fetch_add(self.per_store, Ordering::SeqCst);
                let ids = first..first + self.per_store;
                let records = ids
                    .clone()
                    .map(|i| Bytes::copy_from_slice(&i.to_le_bytes()));
                if ctx.store(records.collect()).await.is_ok() {
                    lock(&self.acked).extend(ids);
                }
                tokio::time::sleep(self.pause).await;
            }
            Ok(())
        })
    }
}

/// What a [`CommitLogPipeline`] committed: batch time → the record numbers of that batch.
#[derive(Debug, Default)]
pub struct CommitLog {
    committed: Mutex<BTreeMap<u64, Vec<u64>>>,
    conflicts: AtomicU64,
}

impl CommitLog {
    /// The committed batches.
    pub fn committed(&self) -> BTreeMap<u64, Vec<u64>> {
        lock(&self.committed).clone()
    }

    /// How often a batch id was committed again with *different* records (must stay 0).
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::SeqCst)
    }
}

/// A pipeline with one job per batch that commits the batch's record numbers to a
/// [`CommitLog`] under the batch time, following the exactly-once sink contract: a batch id
/// already committed is skipped (a replay), and committing it with different records is
/// counted as a conflict.
#[derive(Debug)]
pub struct CommitLogPipeline {
    log: Arc<CommitLog>,
    processing: Duration,
    fail: Option<String>,
}

impl CommitLogPipeline {
    /// Commits to `log`; each job takes `processing` (simulated work, so that kills can land
    /// while batches run).
    pub fn new(log: Arc<CommitLog>, processing: Duration) -> Self {
        CommitLogPipeline {
            log,
            processing,
            fail: None,
        }
    }

    /// A pipeline that fails to plan every batch with `reason` (to exercise giving up).
    pub fn failing(reason: impl Into<String>) -> Self {
        CommitLogPipeline {
            log: Arc::default(),
            processing: Duration::ZERO,
            fail: Some(reason.into()),
        }
    }
}

impl Pipeline for CommitLogPipeline {
    fn fingerprint(&self) -> u64 {
        1
    }

    fn jobs(&self, input: &BatchInput) -> Result<Vec<Job>, UserError> {
        if let Some(reason) = &self.fail {
            return Err(reason.clone().into());
        }
        let mut ids = Vec::new();
        for block in input.blocks.values().flatten() {
            for record in block.records.iter() {
                ids.push(u64::from_le_bytes(record.as_ref().try_into()?));
            }
        }
        let (log, processing, batch) =
            (Arc::clone(&self.log), self.processing, input.batch_time_ms);
        Ok(vec![Job {
            id: "commit".to_owned(),
            run: Arc::new(move |_ctx| {
                let (log, ids) = (Arc::clone(&log), ids.clone());
                Box::pin(async move {
                    if ids.is_empty() {
                        return Ok(());
                    }
                    tokio::time::sleep(processing).await;
                    let mut committed = lock(&log.committed);
                    match committed.get(&batch) {
                        Some(existing) if *existing != ids => {
                            log.conflicts.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(_) => {} // a replay of a committed batch: skipped
                        None => {
                            committed.insert(batch, ids);
                        }
                    }
                    Ok(())
                })
            }),
        }])
    }

    fn snapshot(&self, _: Option<u64>) -> Result<Vec<OperatorState>, UserError> {
        Ok(Vec::new())
    }

    fn restore(&self, _: Option<&CheckpointData>) -> Result<(), UserError> {
        Ok(())
    }
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Records acknowledged by the receiver.
    pub acknowledged: usize,
    /// Distinct records committed.
    pub committed: usize,
    /// Acknowledged records in no committed batch (must be empty).
    pub lost: Vec<u64>,
    /// Records committed in more than one batch (must be empty).
    pub duplicated: Vec<u64>,
    /// Batch ids committed twice with different records (must be 0).
    pub conflicts: u64,
}

impl Verdict {
    /// Whether exactly-once held.
    pub fn is_exactly_once(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.conflicts == 0
    }
}

/// Checks exactly-once: every acknowledged record in exactly one committed batch, no batch id
/// committed twice with different records.
pub fn verify(acknowledged: &BTreeSet<u64>, log: &CommitLog) -> Verdict {
    let mut seen = BTreeSet::new();
    let mut duplicated = Vec::new();
    for ids in log.committed().values() {
        for id in ids {
            if !seen.insert(*id) {
                duplicated.push(*id);
            }
        }
    }
    Verdict {
        acknowledged: acknowledged.len(),
        committed: seen.len(),
        lost: acknowledged.difference(&seen).copied().collect(),
        duplicated,
        conflicts: log.conflicts(),
    }
}
