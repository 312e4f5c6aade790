//! Per-batch memoisation of computed partitions.
//!
//! Every node of the graph computes each (batch, partition) at most once while the batch is
//! live: the output jobs of a batch run in parallel on the executors and pull what they need
//! through these cells; the first to arrive computes, the others wait for it. A failed
//! computation is not memoised, so a retried job computes again. Entries are dropped when the
//! batch completes (or, for state, when a checkpoint no longer needs them).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::ComputeResult;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

type Cell<V> = Arc<Mutex<Option<V>>>;

/// Cells keyed by (batch time, partition).
pub(crate) struct Memo<V> {
    cells: Mutex<BTreeMap<(u64, usize), Cell<V>>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo {
            cells: Mutex::new(BTreeMap::new()),
        }
    }
}

impl<V: Clone> Memo<V> {
    /// The value of (time, part): memoised, or computed now by `compute` (once, however many
    /// callers arrive together).
    pub(crate) fn get_or_compute(
        &self,
        time: u64,
        part: usize,
        compute: impl FnOnce() -> ComputeResult<V>,
    ) -> ComputeResult<V> {
        let cell = Arc::clone(lock(&self.cells).entry((time, part)).or_default());
        let mut slot = lock(&cell);
        if let Some(value) = slot.as_ref() {
            return Ok(value.clone());
        }
        let value = compute()?;
        *slot = Some(value.clone());
        Ok(value)
    }

    /// The memoised value of (time, part), if computed.
    pub(crate) fn get(&self, time: u64, part: usize) -> Option<V> {
        let cell = lock(&self.cells).get(&(time, part)).cloned()?;
        lock(&cell).clone()
    }

    /// The batch times with an entry.
    pub(crate) fn times(&self) -> Vec<u64> {
        let mut times: Vec<u64> = lock(&self.cells).keys().map(|(t, _)| *t).collect();
        times.dedup();
        times
    }

    /// Stores a value.
    #[cfg(test)]
    pub(crate) fn insert(&self, time: u64, part: usize, value: V) {
        lock(&self.cells).insert((time, part), Arc::new(Mutex::new(Some(value))));
    }

    /// Drops every entry of a batch before `time`.
    pub(crate) fn evict_before(&self, time: u64) {
        let mut cells = lock(&self.cells);
        let keep = cells.split_off(&(time, 0));
        *cells = keep;
    }

    /// Drops the entries of batch `time` and every earlier one.
    pub(crate) fn evict_through(&self, time: u64) {
        self.evict_before(time.saturating_add(1));
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        lock(&self.cells).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computes_once_and_forgets_failures() {
        let memo = Memo::<u32>::default();
        assert!(
            memo.get_or_compute(1, 0, || Err(crate::error::ComputeError::new("no")))
                .is_err()
        );
        assert_eq!(memo.get_or_compute(1, 0, || Ok(7)).ok(), Some(7));
        assert_eq!(memo.get_or_compute(1, 0, || Ok(8)).ok(), Some(7));
        memo.evict_through(1);
        assert_eq!(memo.get(1, 0), None);
    }

    #[test]
    fn eviction_keeps_later_batches() {
        let memo = Memo::<u32>::default();
        memo.insert(1, 3, 1);
        memo.insert(2, 0, 2);
        memo.evict_before(2);
        assert_eq!((memo.get(1, 3), memo.get(2, 0)), (None, Some(2)));
    }
}
