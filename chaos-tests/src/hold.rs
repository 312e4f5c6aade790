//! Hold points: places where the harness stops a part of the pipeline, kills the driver while
//! it is stopped there, and lets it go.
//!
//! Two are storage edges, held through failpoint callbacks ([`HoldPoint::CheckpointWrite`],
//! [`HoldPoint::WalAppend`]); two are in the workload, which calls [`Holds::at`] there
//! ([`HoldPoint::BeforeAck`] after `store` returned and before the source is acknowledged,
//! [`HoldPoint::AfterCommit`] after the output committed and before the job returns, so before
//! the batch's checkpoint).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{oneshot, watch};

/// Where the driver is held before it is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HoldPoint {
    /// Inside a checkpoint write (failpoint `checkpoint::write`); the held write is torn when
    /// released, as a crash would leave it.
    CheckpointWrite,
    /// Inside a WAL append (failpoint `wal::write`); the held write is torn when released.
    WalAppend,
    /// After the block is durable in the WAL and known to the tracker, before the source is
    /// acknowledged (the workload's receiver calls [`Holds::at`]).
    BeforeAck,
    /// After the output of a batch committed, before its job returns and the batch is
    /// checkpointed (the workload's sink calls [`Holds::at`]).
    AfterCommit,
}

impl HoldPoint {
    /// Every hold point.
    pub const ALL: [HoldPoint; 4] = [
        HoldPoint::CheckpointWrite,
        HoldPoint::WalAppend,
        HoldPoint::BeforeAck,
        HoldPoint::AfterCommit,
    ];

    /// The failpoint held, for the storage points; `None` for the workload's points.
    pub fn failpoint(self) -> Option<(&'static str, &'static str)> {
        match self {
            HoldPoint::CheckpointWrite => Some(("checkpoint::write", "checkpoint::write::torn")),
            HoldPoint::WalAppend => Some(("wal::write", "wal::write::torn")),
            HoldPoint::BeforeAck | HoldPoint::AfterCommit => None,
        }
    }
}

impl fmt::Display for HoldPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldPoint::CheckpointWrite => "during a checkpoint write",
            HoldPoint::WalAppend => "during a WAL append",
            HoldPoint::BeforeAck => "between the WAL append and the ack",
            HoldPoint::AfterCommit => "between the output commit and the checkpoint",
        })
    }
}

#[derive(Debug)]
struct Armed {
    point: HoldPoint,
    reached: Option<oneshot::Sender<()>>,
    release: watch::Receiver<bool>,
}

/// The workload's side of the hold points. Cheap to clone; the harness hands one to
/// [`crate::workload::Workload::build`].
#[derive(Clone, Debug, Default)]
pub struct Holds {
    armed: Arc<Mutex<Option<Armed>>>,
}

/// The harness's side of one armed hold.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) reached: oneshot::Receiver<()>,
    pub(crate) release: watch::Sender<bool>,
}

impl Holds {
    fn lock(&self) -> MutexGuard<'_, Option<Armed>> {
        self.armed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The workload is at `point`: if the harness holds it, waits here until released (or
    /// until this task is killed). Costs a lock when nothing is armed.
    pub async fn at(&self, point: HoldPoint) {
        let release = {
            let mut armed = self.lock();
            match armed.as_mut() {
                Some(a) if a.point == point => match a.reached.take() {
                    Some(reached) => {
                        let _ = reached.send(());
                        Some(a.release.clone())
                    }
                    None => None,
                },
                _ => None,
            }
        };
        if let Some(mut release) = release {
            let _ = release.wait_for(|r| *r).await;
        }
    }

    /// Arms `point`: the first caller of [`Holds::at`] there is held.
    pub(crate) fn arm(&self, point: HoldPoint) -> Held {
        let (reached_tx, reached) = oneshot::channel();
        let (release, release_rx) = watch::channel(false);
        *self.lock() = Some(Armed {
            point,
            reached: Some(reached_tx),
            release: release_rx,
        });
        Held { reached, release }
    }

    /// Disarms whatever is armed (a held caller stays held until its `release` is sent).
    pub(crate) fn disarm(&self) {
        *self.lock() = None;
    }
}

/// A blocking hold at a failpoint: the first thread to reach it reports and waits.
pub(crate) fn hold_failpoint(name: &'static str) -> Result<FailpointHold, String> {
    let (reached_tx, reached) = oneshot::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let first = Mutex::new(Some((reached_tx, release_rx)));
    fail::cfg_callback(name, move || {
        let taken = first.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((reached, release)) = taken {
            let _ = reached.send(());
            // Blocks this storage thread until the harness releases it (or drops the sender).
            let _ = release.recv();
        }
    })?;
    Ok(FailpointHold { reached, release })
}

/// The harness's side of a failpoint hold.
#[derive(Debug)]
pub(crate) struct FailpointHold {
    pub(crate) reached: oneshot::Receiver<()>,
    pub(crate) release: std::sync::mpsc::Sender<()>,
}
