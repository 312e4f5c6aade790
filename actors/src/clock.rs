//! Wall-clock time as weir stores it: milliseconds since the Unix epoch.
//!
//! Batch times, block and record times, and event times are wall-clock readings, so they step
//! when the system clock steps. Nothing that decides what to delete may depend on them alone
//! (the receiver WAL is cleaned by position, see `ingest::in_flight`). Tests step the clock
//! of their own thread ([`step_this_thread`], test builds only) to prove it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in ms since the Unix epoch (0 if the clock is before the epoch).
pub(crate) fn now_ms() -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    #[cfg(test)]
    let now = now.saturating_add_signed(STEP_MS.with(std::cell::Cell::get));
    now
}

#[cfg(test)]
thread_local! {
    static STEP_MS: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

/// Steps the wall clock as this thread sees it by `ms` (test builds only): as if the system
/// clock had been set forward (or back) — for everything that runs on this thread, e.g. every
/// actor of a test on a current-thread runtime.
#[cfg(test)]
pub(crate) fn step_this_thread(ms: i64) {
    STEP_MS.with(|step| step.set(step.get() + ms));
}
