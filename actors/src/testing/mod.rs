//! Test support, for weir's own tests and for yours.
//!
//! * Exactly-once checks: a receiver of numbered records ([`NumberedReceiver`]), a pipeline whose sink records
//!   what it committed ([`CommitLogPipeline`]) under each batch id, and [`verify`], which says whether every acknowledged
//!   record was committed in exactly one batch — run an [`Engine`](crate::Engine) with them,
//!   kill whatever you like, stop it, and verify.
//! * [`ManualSupervisor`]: a receiver supervisor played by hand, to test a
//!   [`Receiver`](crate::pipeline::Receiver) on its own — every block it hands over is yours
//!   to answer (stored, failed, closed) when you choose, and you say when it must stop.
//! * [`golden_bytes`]: a format's example bytes, read from the Markdown document that shows
//!   them, for a test to compare its encoder with.
//! * `MotoServer` (with the `s3` feature): moto's S3-compatible server on 127.0.0.1, installed
//!   by the repository's script, and a fresh bucket per test.

mod exactly_once;
mod golden;
mod manual_supervisor;
#[cfg(feature = "s3")]
mod moto;

pub use exactly_once::{CommitLog, CommitLogPipeline, NumberedReceiver, Verdict, verify};
pub use golden::golden_bytes;
pub use manual_supervisor::{HandedOver, ManualSupervisor};
#[cfg(feature = "s3")]
pub use moto::MotoServer;
