//! The write-ahead log: records are durable before they are acknowledged.
//!
//! A [`Wal`] is an append-only sequence of records, each framed with its length and a CRC32C
//! (see the [format module](self::format)), kept in numbered segments that roll by size and by age. Receivers write
//! every block here, and the block tracker every metadata change, *before* anything is
//! acknowledged or made visible, so a crash of the process at any instant loses nothing that
//! was acknowledged.
//!
//! # Guarantees
//!
//! * [`Wal::append`] returns a [`RecordHandle`] only once the record is durable: on a local
//!   directory its bytes are `fdatasync`ed (and, for a new segment, the directory entry too); in
//!   object-store mode the object that holds it has been written.
//! * Appends from many tasks share one fsync (group commit, see [`WalConfig`]).
//! * [`Wal::open`] scans the segments in order. In the newest segment, the first invalid byte
//!   (a torn write, a flipped bit) ends the log: the tail from there is cut off, durably, and
//!   reported as [`crate::Event::WalTornTailCut`]. It is never returned as a record. In any older
//!   segment an invalid record is [`WalError::Corrupt`], never skipped.
//! * A record whose `append` did not return (the caller was cancelled, the process died) was
//!   never acknowledged. After a crash it may or may not be present, whole; its producer must
//!   treat it as not stored and may send it again.
//! * After a storage failure the log *poisons* itself when it cannot prove the segment's
//!   state ([`WalError::Poisoned`]); reopening runs recovery.
//!
//! # Layout
//!
//! Segments are one appended file each on a local directory, or one write-once object per
//! group commit on an object store (see `segments.rs`). Both layouts give a segment the same
//! logical bytes, so offsets and handles mean the same thing everywhere.

mod config;
mod error;
pub mod format;
pub(crate) mod inspect;
mod log;
mod reader;
mod record;
mod recovery;
mod segments;
mod state;
mod writer;

pub use config::{RecoveryMode, WalConfig};
pub use error::WalError;
pub use inspect::{AfterDamage, RecoveryAction, SegmentReport, WalInspection, inspect};
pub use log::Wal;
pub use reader::WalIter;
pub use record::{Position, Record, RecordHandle};
pub use recovery::{RecoveryReport, TornTail};
pub use state::{SegmentInfo, WalStats};
