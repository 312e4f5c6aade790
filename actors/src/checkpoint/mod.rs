//! Checkpoints: the durable snapshot a restarted driver resumes from.
//!
//! This module owns one [`Storage`](crate::Storage) location. A [`CheckpointStore`] writes
//! [`CheckpointData`] — pending batch times, the timer's origin, the configuration that must
//! survive, source offsets, operator state keyed by stable operator ids, a graph fingerprint:
//! data only, never code — keeps the newest `retain` checkpoints, and on restore reads the
//! newest *valid* one, reporting every newer one it had to skip. Large operator state can live
//! in separate state files that checkpoints reference ([`StateFileRef`]). A [`Savepoint`] is
//! one checkpoint exported with its state files to a location of the user's, outside every
//! store's retention. The bytes are
//! documented in `docs/architecture.md` ("Checkpoint file", "State files").
//!
//! # Invariant
//!
//! A name `checkpoint-{id:020}` only ever holds a complete checkpoint: locally it appears by
//! `rename` of a fsynced temp file (then the directory is fsynced); in object mode it is a
//! write-once object. Ids increase: a new one is one more than the largest present, valid or
//! not, and a failed write burns its id. Ids are taken when a write is *reserved*
//! ([`CheckpointStore::reserve`]), so a writer with several writes in flight orders its
//! checkpoints by its snapshots, not by which write finishes first: the newest valid id is the
//! newest snapshot written. A state file referenced by a retained checkpoint is never deleted.
//!
//! # What a crash leaves behind
//!
//! * During a write, before the rename (or before the object write completes): at most a
//!   temp file named `.tmp-…`, removed by the next [`CheckpointStore::open`]; the newest
//!   checkpoint is the previous one.
//! * After the rename, before the directory fsync: after a power cut the new name may or may
//!   not exist; either way every checkpoint present is complete.
//! * During retention: some old checkpoints or unreferenced state files not yet deleted;
//!   there are briefly more than `retain`, and the next write deletes them.
//! * A state file written for a checkpoint that never got written: unreferenced, deleted by
//!   retention once its embedded id is older than the oldest retained checkpoint.
//! * Damage by the storage itself (bit rot, a truncated file): detected by length and CRC32C;
//!   [`CheckpointStore::read_latest`] falls back to an older checkpoint and reports the skip.
//!
//! A location has one writer at a time. Two stores writing the same object-store location are
//! detected (the write-once name is taken: [`CheckpointError::AlreadyExists`]); two writers
//! of the same local directory are not.
//!
//! # Versioning rule
//!
//! The payload is a list of sections `(tag: u16, bytes)`, each holding one field.
//!
//! * A tag is never reused, and a field's type never changes: a changed field gets a new tag.
//! * A reader ignores a section whose tag it does not know, unless the tag has bit 15 set
//!   ([`CRITICAL_TAG_BIT`], "critical", as in PNG): then it refuses the checkpoint with
//!   [`FormatError::UnknownCriticalSection`] naming the tag.
//! * A missing optional section takes the field's default; `checkpoint_time_ms` (tag 1) is
//!   required.
//! * The header's format version changes only if the framing itself changes.
//!
//! The schema version of an operator's *state* (its Rust type's, declared by the program:
//! [`OperatorState::schema_version`]) is another thing: it travels in section `0x800A`, and
//! the runtime migrates or refuses state of another version on restore.

pub(crate) mod format;
mod resolve;
pub(crate) mod savepoint;
mod state_bytes;
mod store;

pub use format::{
    CHECKPOINT_FORMAT_VERSION, CHECKPOINT_MAGIC, CRITICAL_TAG_BIT, CheckpointData, CheckpointId,
    FIRST_SCHEMA_VERSION, FormatError, HEADER_LEN, OperatorState, STATE_FILE_FORMAT_VERSION,
    STATE_FILE_MAGIC, SourceOffset, StateData, StateFileRef,
};
pub use savepoint::{
    MANIFEST_FORMAT, MANIFEST_NAME, MANIFEST_VERSION, RESTORED_FROM_LOCATION_SETTING,
    RESTORED_FROM_SETTING, Savepoint, SavepointError, SavepointInfo, SavepointManifest,
    SavepointOperator, export as export_savepoint, export_latest as export_latest_savepoint,
};
pub use state_bytes::{StateBytes, StateReader, StateWriter};
pub use store::{
    CheckpointConfig, CheckpointError, CheckpointInfo, CheckpointStore, DEFAULT_RETAIN,
    Reservation, Restored, StateUpload,
};
