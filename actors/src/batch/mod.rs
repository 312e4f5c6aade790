//! Batches: the clock that makes them, the scheduler that runs them, the executors that work.
//!
//! The `job-generator` ticks every batch interval, has the tracker allocate the batch's
//! blocks, asks the [`Pipeline`](crate::pipeline::Pipeline) for the batch's jobs, and
//! checkpoints before and after every batch, as its checkpoint coordinator (plain logic, no
//! actor) decides; the `job-scheduler` runs the jobs of at most `max_batches_in_flight`
//! batches on its `executor-<n>` workers, retrying a failed job on another worker.
//!
//! Invariant: a batch runs only once a checkpoint that lists it as pending has been written
//! (or its write failed and the failure was tolerated), and the state a checkpoint carries is
//! as of the completed prefix of batches.

pub(crate) mod checkpoint_coordinator;
pub(crate) mod executor;
pub(crate) mod job_generator;
pub(crate) mod job_scheduler;
pub(crate) mod span;
pub(crate) mod take_savepoint;

#[cfg(test)]
mod tests;
