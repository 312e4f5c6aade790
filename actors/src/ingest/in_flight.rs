//! Blocks on their way — appended to the receiver WAL, not yet known to the block tracker —
//! and cleaning the receiver WAL by position, without deleting them.
//!
//! A receiver supervisor appends a block to the receiver WAL, then reports it to the
//! received-block tracker; in between, only the supervisor knows the block exists. Cleaning
//! the receiver WAL must not delete its segment then — and it must not rely on the clock to
//! tell (a wall clock stepped forward made a time margin useless). So a supervisor enters
//! [`InFlight`] before it appends, with a floor: the newest segment of the log at that
//! moment, below which none of its appends can land; it leaves once the tracker has the block
//! (or it gave up on it). The job generator reads the lowest floor and keeps every segment
//! from there on.
//!
//! Invariant (with the order the cleaner reads in: the log's newest segment, then this
//! registry, then the tracker): every block appended and not yet in the tracker sits at or
//! above `min(newest segment read first, lowest floor)`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ractor::ActorRef;

use crate::ingest::received_block_tracker::ReceivedBlockTrackerMsg;
use crate::wal::Wal;

/// The floors of the appends on their way; cheap to clone, all clones share it.
#[derive(Clone, Debug, Default)]
pub(crate) struct InFlight {
    floors: Arc<Mutex<BTreeMap<u64, usize>>>,
}

/// One supervisor's appends on their way; leaves the registry when dropped.
#[derive(Debug)]
pub(crate) struct Entered {
    floors: Arc<Mutex<BTreeMap<u64, usize>>>,
    floor: u64,
}

fn lock(m: &Mutex<BTreeMap<u64, usize>>) -> MutexGuard<'_, BTreeMap<u64, usize>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    /// Appends are about to be made; none of them can land below segment `floor`.
    pub(crate) fn enter(&self, floor: u64) -> Entered {
        *lock(&self.floors).entry(floor).or_insert(0) += 1;
        Entered {
            floors: Arc::clone(&self.floors),
            floor,
        }
    }

    /// The lowest floor of the appends on their way, if any is.
    pub(crate) fn floor(&self) -> Option<u64> {
        lock(&self.floors).keys().next().copied()
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let mut floors = lock(&self.floors);
        if let Some(count) = floors.get_mut(&self.floor) {
            *count -= 1;
            if *count == 0 {
                floors.remove(&self.floor);
            }
        }
    }
}

/// The lowest segment a block on its way may be in, read before the tracker is asked what it
/// still needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct WalFloor {
    newest: u64,
    in_flight: Option<u64>,
}

impl WalFloor {
    /// Reads the log's newest segment, then the registry — in that order: an append that
    /// enters after the first read cannot land below it, one that entered before the second
    /// is still registered or already known to the tracker, which is asked after.
    pub(crate) fn read(wal: &Wal, in_flight: &InFlight) -> WalFloor {
        let newest = wal.newest_segment();
        WalFloor {
            newest,
            in_flight: in_flight.floor(),
        }
    }
}

/// Deletes the receiver WAL's segments below every block still needed: live in the tracker
/// (unallocated, or in a live allocation) or on its way to it (`floor`, read before). By
/// position, never by time: a wall clock that steps cannot make a block on its way look old.
pub(crate) async fn clean_receiver_wal(
    wal: &Wal,
    floor: WalFloor,
    tracker: &ActorRef<ReceivedBlockTrackerMsg>,
) {
    let Ok(live) = ractor::call!(tracker, ReceivedBlockTrackerMsg::Inspect) else {
        return;
    };
    let keep_from = [
        Some(floor.newest),
        floor.in_flight,
        live.oldest_live_segment(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(floor.newest);
    if let Err(err) = wal.clean_before_segment(keep_from).await {
        tracing::warn!(error = %err, "receiver WAL cleanup failed; retried after the next checkpoint");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_is_the_lowest_entry_still_on_its_way() {
        let in_flight = InFlight::default();
        assert_eq!(in_flight.floor(), None);
        let a = in_flight.enter(3);
        let b = in_flight.enter(5);
        let c = in_flight.clone().enter(3);
        assert_eq!(in_flight.floor(), Some(3));
        drop(a);
        assert_eq!(
            in_flight.floor(),
            Some(3),
            "another append at 3 is still on its way"
        );
        drop(c);
        assert_eq!(in_flight.floor(), Some(5));
        drop(b);
        assert_eq!(in_flight.floor(), None);
    }
}
