//! Tests of the batch actors through their own protocols — the scheduler's retries and
//! in-flight limit, the job generator executing its checkpoints and planning off its handler —
//! and of the checkpoint coordinator's rules as plain unit tests.

mod checkpoint_concurrency;
mod checkpoint_coordinator;
mod job_scheduler;
mod planning;
