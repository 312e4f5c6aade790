//! Savepoints (Flink's): one checkpoint, exported with every state file it references to a
//! location the user names, restorable after a code change.
//!
//! A savepoint is a self-contained, relocatable one-checkpoint store: at its location (a
//! local directory or an object-store prefix) the checkpoint file and its state files lie in
//! the layout a [`CheckpointStore`] reads (so [`CheckpointStore::open`] and `read_latest` open
//! it), next to a small manifest, [`MANIFEST_NAME`], that names it a savepoint. Nothing in it
//! refers to anything outside it, and no store's retention ever looks at it: it lives outside
//! every checkpoint directory, and is never written again once complete.
//!
//! # Invariant
//!
//! A location holds a complete savepoint exactly when it holds the manifest: [`export`]
//! copies the state files, then writes the checkpoint, and publishes the manifest last
//! (atomically: a fsynced temp file renamed into place, or a write-once object). A crash
//! mid-copy leaves files that [`Savepoint::open`] refuses ("not a savepoint"). [`export`]
//! refuses a location that already holds a manifest or a checkpoint.
//!
//! Restoring ([`Savepoint::restore_into`]) copies the savepoint's state files into the job's
//! own store and writes its checkpoint there as the newest: the job's later checkpoints refer
//! to its own copies, never to the savepoint's files, so either can be moved or deleted.

use std::collections::BTreeMap;

use opendal::Buffer;
use serde::{Deserialize, Serialize};

use super::format::{CheckpointData, CheckpointId, FIRST_SCHEMA_VERSION};
use super::store::{CheckpointConfig, CheckpointError, CheckpointStore};
use crate::clock::now_ms;
use crate::storage::durable;
use crate::storage::failpoint::CHECKPOINT;
use crate::storage::local;
use crate::storage::location::{self, Storage, StorageError};
use crate::storage::object::ObjectDir;

/// The manifest's name inside a savepoint's location.
pub const MANIFEST_NAME: &str = "savepoint.json";
/// What the manifest's `format` field holds.
pub const MANIFEST_FORMAT: &str = "weir-savepoint";
/// The manifest version this build writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The checkpoint setting a restored job carries, naming the savepoint it was restored from
/// (its [`SavepointManifest::id`]): a later start that finds it in the job's newest
/// checkpoint resumes from there instead of restoring the savepoint again.
pub const RESTORED_FROM_SETTING: &str = "restored_from_savepoint";

/// The checkpoint setting a restored job carries next to [`RESTORED_FROM_SETTING`]: where the
/// savepoint was when it was restored ([`Storage::describe`]). A later start whose savepoint is
/// gone from there resumes from the job's own checkpoints when the newest names that place.
pub const RESTORED_FROM_LOCATION_SETTING: &str = "restored_from_savepoint_location";

fn first_schema_version() -> u32 {
    FIRST_SCHEMA_VERSION
}

/// One operator's state in a savepoint, as its manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointOperator {
    /// The operator's id.
    pub id: String,
    /// The name of its state's type.
    pub type_name: String,
    /// The schema version of its state (absent in manifests written before versions existed:
    /// [`FIRST_SCHEMA_VERSION`]).
    #[serde(default = "first_schema_version")]
    pub schema_version: u32,
}

/// The manifest of a savepoint (`savepoint.json`, documented in `docs/architecture.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: String,
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// A name unique to this savepoint: `<graph fingerprint>-<batch time>-<created>`.
    pub id: String,
    /// When it was written (ms since the Unix epoch).
    pub created_ms: u64,
    /// The batch time of its checkpoint (ms).
    pub checkpoint_time_ms: u64,
    /// Its checkpoint's id inside the savepoint.
    pub checkpoint: u64,
    /// The id the checkpoint had in the job's store it was copied from.
    pub source_checkpoint: u64,
    /// Where it was copied from.
    pub source: String,
    /// The fingerprint of the graph that wrote it (informative: a restore matches state by
    /// operator id).
    pub graph_fingerprint: u64,
    /// Every operator with state in it.
    pub operators: Vec<SavepointOperator>,
    /// The state files it holds.
    pub state_files: Vec<String>,
}

/// What taking a savepoint produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavepointInfo {
    /// Where it is ([`Storage::describe`]).
    pub location: String,
    /// Its manifest.
    pub manifest: SavepointManifest,
}

/// Why a savepoint could not be taken, opened or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SavepointError {
    /// The engine or the pipeline refused (e.g. a stateful operator without an explicit id).
    #[error("{0}")]
    Refused(String),
    /// The target already holds a savepoint or checkpoints.
    #[error("refused to write a savepoint to `{location}`: it already holds {what}")]
    TargetNotEmpty {
        /// The target.
        location: String,
        /// What is there.
        what: String,
    },
    /// The location holds no complete savepoint.
    #[error("`{location}` is not a savepoint: {reason}")]
    NotASavepoint {
        /// The location.
        location: String,
        /// Why not.
        reason: String,
    },
    /// The engine failed, stopped or did not answer while the savepoint was taken.
    #[error("{0}")]
    Engine(String),
    /// Reading or writing a checkpoint or state file failed.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

async fn open_store(storage: Storage) -> Result<CheckpointStore, CheckpointError> {
    CheckpointStore::open(storage, CheckpointConfig::default().with_retain(1)).await
}

/// Reads the manifest at `storage`; `None` if there is none.
async fn read_manifest(storage: &Storage) -> Result<Option<Vec<u8>>, StorageError> {
    let read = match storage {
        Storage::Local(dir) => {
            let path = dir.join(MANIFEST_NAME);
            location::blocking(&path.clone(), move || local::read_file(&path)).await
        }
        Storage::Object { op, prefix } => ObjectDir::new(op.clone(), prefix.clone())
            .read(MANIFEST_NAME)
            .await
            .map(|buffer| buffer.to_vec()),
    };
    match read {
        Ok(bytes) => Ok(Some(bytes)),
        Err(err) if err.is_not_found() => Ok(None),
        Err(err) => Err(err),
    }
}

/// Publishes the manifest atomically (never over an existing one in object mode).
async fn write_manifest(storage: &Storage, bytes: Vec<u8>) -> Result<(), StorageError> {
    match storage {
        Storage::Local(dir) => {
            let path = dir.join(MANIFEST_NAME);
            location::blocking(&path.clone(), move || {
                Ok(durable::write_atomic(&path, &bytes, CHECKPOINT)?)
            })
            .await
        }
        Storage::Object { op, prefix } => {
            ObjectDir::new(op.clone(), prefix.clone())
                .write_once(MANIFEST_NAME, Buffer::from(bytes), CHECKPOINT)
                .await
        }
    }
}

/// Exports the checkpoint `id` of `source` (its content `data`, as read from there) as a
/// savepoint at `target`: every state file it references, then the checkpoint, then the
/// manifest.
///
/// # Errors
///
/// [`SavepointError::TargetNotEmpty`] if `target` holds a savepoint or checkpoints already
/// (nothing is written then); a checkpoint or storage error (a referenced state file gone,
/// say): what was copied stays, without a manifest, so it never reads as a savepoint.
pub async fn export(
    source: &CheckpointStore,
    id: CheckpointId,
    data: &CheckpointData,
    target: &Storage,
) -> Result<SavepointInfo, SavepointError> {
    let location = target.describe();
    if read_manifest(target).await?.is_some() {
        return Err(SavepointError::TargetNotEmpty {
            location,
            what: "a savepoint".to_owned(),
        });
    }
    let store = open_store(target.clone()).await?;
    let present = store.list().await?;
    if !present.is_empty() {
        return Err(SavepointError::TargetNotEmpty {
            location,
            what: format!("{} checkpoint(s)", present.len()),
        });
    }
    let mut state_files = Vec::new();
    for file in data.state_files() {
        store.copy_state_file_from(source, file).await?;
        state_files.push(file.name.clone());
    }
    let written = store.write(data).await?;
    let created_ms = now_ms();
    let manifest = SavepointManifest {
        format: MANIFEST_FORMAT.to_owned(),
        version: MANIFEST_VERSION,
        id: format!(
            "{:016x}-{}-{}",
            data.graph_fingerprint, data.checkpoint_time_ms, created_ms
        ),
        created_ms,
        checkpoint_time_ms: data.checkpoint_time_ms,
        checkpoint: written.0,
        source_checkpoint: id.0,
        source: source.storage().describe(),
        graph_fingerprint: data.graph_fingerprint,
        operators: data
            .operator_state
            .iter()
            .map(|op| SavepointOperator {
                id: op.operator_id.clone(),
                type_name: op.type_name.clone(),
                schema_version: op.schema_version,
            })
            .collect(),
        state_files,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|err| {
        SavepointError::Refused(format!(
            "the savepoint manifest could not be encoded: {err}"
        ))
    })?;
    write_manifest(target, bytes).await?;
    tracing::info!(
        savepoint = %location,
        checkpoint_time_ms = data.checkpoint_time_ms,
        source_checkpoint = id.0,
        "savepoint written"
    );
    Ok(SavepointInfo { location, manifest })
}

/// Exports the newest valid checkpoint of `source` as a savepoint at `target` (after a
/// graceful stop: its final checkpoint).
///
/// # Errors
///
/// [`SavepointError::Refused`] if `source` holds no valid checkpoint; as [`export`].
pub async fn export_latest(
    source: &CheckpointStore,
    target: &Storage,
) -> Result<SavepointInfo, SavepointError> {
    let listed = source.list().await?;
    for info in listed.iter().rev() {
        match source.peek(info.id).await {
            Ok(data) => return export(source, info.id, &data, target).await,
            Err(err) => {
                tracing::warn!(id = info.id.0, error = %err, "skipping a checkpoint for the savepoint");
            }
        }
    }
    Err(SavepointError::Refused(format!(
        "`{}` holds no valid checkpoint to make a savepoint of",
        source.storage().describe()
    )))
}

/// A complete savepoint, opened to restore from.
#[derive(Debug)]
pub struct Savepoint {
    manifest: SavepointManifest,
    data: CheckpointData,
    store: CheckpointStore,
}

impl Savepoint {
    /// Whether `storage` holds a savepoint's manifest (complete or not, readable or not):
    /// `false` when the savepoint is gone (moved or deleted) or was never completed.
    ///
    /// # Errors
    ///
    /// A storage error.
    pub async fn is_present(storage: &Storage) -> Result<bool, SavepointError> {
        Ok(read_manifest(storage).await?.is_some())
    }

    /// Opens the savepoint at `storage`: its manifest, then its checkpoint.
    ///
    /// # Errors
    ///
    /// [`SavepointError::NotASavepoint`] if there is no manifest (an interrupted savepoint, a
    /// checkpoint directory), or it is not one this build reads, or its checkpoint does not
    /// match it; a checkpoint or storage error.
    pub async fn open(storage: Storage) -> Result<Savepoint, SavepointError> {
        let location = storage.describe();
        let not = |reason: String| SavepointError::NotASavepoint {
            location: location.clone(),
            reason,
        };
        let Some(bytes) = read_manifest(&storage).await? else {
            return Err(not(format!(
                "it has no {MANIFEST_NAME} (an interrupted savepoint, or not one at all)"
            )));
        };
        let manifest: SavepointManifest = serde_json::from_slice(&bytes)
            .map_err(|err| not(format!("its {MANIFEST_NAME} does not parse: {err}")))?;
        if manifest.format != MANIFEST_FORMAT || manifest.version != MANIFEST_VERSION {
            return Err(not(format!(
                "its {MANIFEST_NAME} is format {:?} version {}, but this build reads {:?} \
                 version {}",
                manifest.format, manifest.version, MANIFEST_FORMAT, MANIFEST_VERSION
            )));
        }
        let store = open_store(storage).await?;
        let data = store.peek(CheckpointId(manifest.checkpoint)).await?;
        if data.checkpoint_time_ms != manifest.checkpoint_time_ms {
            return Err(not(format!(
                "its checkpoint is of batch time {}, but the manifest says {}",
                data.checkpoint_time_ms, manifest.checkpoint_time_ms
            )));
        }
        Ok(Savepoint {
            manifest,
            data,
            store,
        })
    }

    /// Its manifest.
    pub fn manifest(&self) -> &SavepointManifest {
        &self.manifest
    }

    /// Its checkpoint.
    pub fn data(&self) -> &CheckpointData {
        &self.data
    }

    /// The store it is (to read its state files).
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Whether the job whose newest checkpoint is `latest` was restored from this savepoint
    /// already (it carries [`RESTORED_FROM_SETTING`] with this savepoint's id).
    pub fn restored_in(&self, latest: &CheckpointData) -> bool {
        latest.settings.get(RESTORED_FROM_SETTING) == Some(&self.manifest.id)
    }

    /// The savepoint's checkpoint as the job restores it: with [`RESTORED_FROM_SETTING`] and
    /// [`RESTORED_FROM_LOCATION_SETTING`].
    pub fn restored_data(&self) -> CheckpointData {
        let mut data = self.data.clone();
        let mut settings: BTreeMap<String, String> = data.settings;
        settings.insert(RESTORED_FROM_SETTING.to_owned(), self.manifest.id.clone());
        settings.insert(
            RESTORED_FROM_LOCATION_SETTING.to_owned(),
            self.store.storage().describe(),
        );
        data.settings = settings;
        data
    }

    /// Restores the savepoint into the job's store `job`: copies every state file it
    /// references there, under names of the job's store (so its retention collects them like
    /// its own), then writes its checkpoint (with [`RESTORED_FROM_SETTING`], referring to the
    /// copies) as the newest, which the job then starts from. Returns that checkpoint's id
    /// ([`CheckpointStore::import`]).
    ///
    /// # Errors
    ///
    /// A checkpoint or storage error; nothing is the newest checkpoint then.
    pub async fn restore_into(
        &self,
        job: &CheckpointStore,
    ) -> Result<CheckpointId, SavepointError> {
        let (id, _) = job.import(&self.store, &self.restored_data()).await?;
        tracing::info!(
            savepoint = %self.store.storage().describe(),
            checkpoint = id.0,
            "savepoint restored into the job's checkpoint store"
        );
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest entry written before schema versions existed reads as version 1.
    #[test]
    fn an_operator_without_a_schema_version_is_at_the_first() -> Result<(), serde_json::Error> {
        let old: SavepointOperator = serde_json::from_str(r#"{"id":"totals","type_name":"u64"}"#)?;
        assert_eq!(old.schema_version, FIRST_SCHEMA_VERSION);
        let new: SavepointOperator =
            serde_json::from_str(r#"{"id":"totals","type_name":"u64","schema_version":2}"#)?;
        assert_eq!(new.schema_version, 2);
        Ok(())
    }
}
