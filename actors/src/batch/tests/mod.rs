//! Tests of the batch actors through their own protocols: the scheduler's retries and
//! in-flight limit, and the job generator's concurrent checkpoints.

mod checkpoint_concurrency;
mod checkpoint_coordinator;
mod job_scheduler;
