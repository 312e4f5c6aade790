//! The `tracing` span of one batch: everything the engine does for batch `t` runs inside
//! [`batch_span`]`(t)`, so every log line of a batch carries `batch_time_ms = t` and can be
//! grouped.
//!
//! Which work is inside: generating the batch (allocating its blocks, building its input,
//! asking the pipeline for its jobs), the scheduler's bookkeeping for it (submit, dispatch,
//! retries, completion or failure), each job's run on an executor — the user's closures
//! included, also on the blocking pool when the runtime carries the span there — and what its
//! completion triggers (the pipeline's `batch_completed`, the "after" checkpoint's start).
//!
//! Futures are wrapped with [`tracing::Instrument`]; a guard from `Span::enter` is held only
//! in synchronous code, never across an `.await` (the span would leak into whatever else the
//! task polls).
//!
//! The span is at level `ERROR` on purpose: a span is recorded only when the subscriber's
//! filter enables it, and a span at `INFO` would vanish under the default `warn` filter —
//! taking `batch_time_ms` off exactly the warnings an operator wants grouped. At `ERROR` it is
//! enabled whenever anything from this crate is logged.

/// The span of batch `batch_time_ms`, named `batch` (a new span each call: every actor that
/// works on the batch opens its own, with the same name and field).
pub(crate) fn batch_span(batch_time_ms: u64) -> tracing::Span {
    tracing::error_span!("batch", batch_time_ms)
}
