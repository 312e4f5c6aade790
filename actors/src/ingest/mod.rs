//! Ingest: how received records become durable blocks that batches are given.
//!
//! A [`Receiver`](crate::pipeline::Receiver) runs inside its `receiver-<s>` actor and hands
//! records to its `receiver-supervisor-<s>`, which cuts them into [`blocks`], appends each
//! block to the receiver WAL (group-committed across receivers), keeps it in the shared
//! [`block_store`], and reports it to the `received-block-tracker` — and only then answers the
//! receiver, which may acknowledge its source. The `receiver-tracker` starts and stops the
//! receiver supervisors. At every batch the tracker allocates the unallocated blocks to that
//! batch, durably in its own WAL.
//!
//! Invariant: a block is acknowledged to its receiver only after its WAL record and the
//! tracker's record of it are durable (with the receiver WAL off: after the tracker's record).

pub(crate) mod block_store;
pub(crate) mod blocks;
pub(crate) mod in_flight;
pub(crate) mod received_block_tracker;
pub(crate) mod receiver;
pub(crate) mod receiver_supervisor;
pub(crate) mod receiver_tracker;

#[cfg(test)]
mod tests;
