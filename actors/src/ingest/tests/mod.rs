//! Tests of the ingest actors through their own protocols: the block tracker's rules and its
//! model with crashes, and receivers under their supervisors.

mod block_tracker;
mod model_block_tracker;
mod receiver_wal_cleaning;
mod receivers;
