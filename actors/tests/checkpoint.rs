//! The checkpoint store, from outside.
//!
//! Every store test runs against three storage modes — a local directory, opendal's memory
//! service, and opendal's `fs` service used as an object store — and, with the `s3` feature, a
//! fourth: S3 on moto's server (a fresh bucket per test), through the `all_modes!` macro, which
//! turns `async fn name(mode: Mode)` into the tests `name::local`, `name::memory`,
//! `name::object_fs` and `name::s3`. Damage is done to the raw bytes: with `std::fs`
//! locally, by overwriting the object through the operator in object modes.
//!
//! The format tests at the end check the versioning rule of `docs/architecture.md`: an older
//! layout, an unknown optional section, an unknown critical section, and the golden fixtures
//! `tests/fixtures/checkpoint-v1.bin`, `tests/fixtures/checkpoint-chain-v1.bin` (operator
//! state as chains of state files, tag `0x8009`) and `tests/fixtures/checkpoint-schema-v1.bin`
//! (state schema versions, tag `0x800A`).

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use opendal::Operator;
use tempfile::TempDir;
use weir_actors::checkpoint::{
    CheckpointConfig, CheckpointData, CheckpointError, CheckpointId, CheckpointStore, FormatError,
    OperatorState, RESTORED_FROM_SETTING, Savepoint, SavepointError, SourceOffset, StateBytes,
    StateData, StateFileRef, StateUpload, StateWriter, export_savepoint,
};
use weir_actors::{Event, EventSink, Storage};

// ------------------------------------------------------------------------------------------
// Harness
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Local,
    Memory,
    ObjectFs,
    #[cfg(feature = "s3")]
    S3,
}

/// One store location in one mode, with raw access to its bytes and a record of events.
struct Fixture {
    storage: Storage,
    events: Arc<Mutex<Vec<Event>>>,
    _dirs: Vec<TempDir>,
}

impl Fixture {
    fn new(mode: Mode) -> Self {
        let mut dirs = Vec::new();
        let root = match mode {
            Mode::Local => {
                let dir = TempDir::new().unwrap();
                let storage = Storage::local(dir.path());
                dirs.push(dir);
                storage
            }
            Mode::Memory => Storage::memory(),
            Mode::ObjectFs => {
                let (data, temp) = (TempDir::new().unwrap(), TempDir::new().unwrap());
                let builder = opendal::services::Fs::default()
                    .root(data.path().to_str().unwrap())
                    .atomic_write_dir(temp.path().to_str().unwrap());
                let op = Operator::new(builder).unwrap();
                dirs.push(data);
                dirs.push(temp);
                Storage::object(op)
            }
            #[cfg(feature = "s3")]
            Mode::S3 => weir_actors::testing::MotoServer::shared()
                .and_then(|server| server.fresh())
                .unwrap_or_else(|e| panic!("moto's S3 server: {e}")),
        };
        Fixture {
            // A sub-location, so prefixes and nested directories are exercised.
            storage: root.join("checkpoints"),
            events: Arc::new(Mutex::new(Vec::new())),
            _dirs: dirs,
        }
    }

    fn config(&self) -> CheckpointConfig {
        let events = Arc::clone(&self.events);
        CheckpointConfig::default().with_events(EventSink::new(move |event| {
            events.lock().unwrap().push(event);
        }))
    }

    async fn open(&self) -> CheckpointStore {
        CheckpointStore::open(self.storage.clone(), self.config())
            .await
            .unwrap()
    }

    async fn open_retaining(&self, retain: usize) -> CheckpointStore {
        CheckpointStore::open(self.storage.clone(), self.config().with_retain(retain))
            .await
            .unwrap()
    }

    fn take_events(&self) -> Vec<Event> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.storage.local_dir().map(|dir| dir.join(name))
    }

    fn object_path(&self, name: &str) -> (Operator, String) {
        match &self.storage {
            Storage::Object { op, prefix } => (op.clone(), format!("{prefix}{name}")),
            Storage::Local(_) => unreachable!("local storage has no operator"),
        }
    }

    /// The bytes stored under `name` (relative to the store, e.g. `state/…`).
    async fn raw_read(&self, name: &str) -> Vec<u8> {
        match self.local_path(name) {
            Some(path) => std::fs::read(path).unwrap(),
            None => {
                let (op, path) = self.object_path(name);
                op.read(&path).await.unwrap().to_vec()
            }
        }
    }

    /// Replaces (or creates) `name` with `bytes`, bypassing the store.
    async fn raw_write(&self, name: &str, bytes: Vec<u8>) {
        match self.local_path(name) {
            Some(path) => std::fs::write(path, bytes).unwrap(),
            None => {
                let (op, path) = self.object_path(name);
                op.write(&path, bytes).await.unwrap();
            }
        }
    }

    /// The file names directly under `sub` ("" for the store itself), sorted.
    async fn raw_list(&self, sub: &str) -> Vec<String> {
        let mut names: Vec<String> = match self.local_path(sub) {
            Some(dir) => std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| e.file_type().unwrap().is_file())
                .map(|e| e.file_name().into_string().unwrap())
                .collect(),
            None => {
                let (op, path) = self.object_path(sub);
                let dir = if path.ends_with('/') || path.is_empty() {
                    path
                } else {
                    format!("{path}/")
                };
                match op.list(&dir).await {
                    Ok(entries) => entries
                        .into_iter()
                        .filter(|e| e.metadata().is_file())
                        .map(|e| e.name().to_owned())
                        .collect(),
                    Err(err) if err.kind() == opendal::ErrorKind::NotFound => Vec::new(),
                    Err(err) => panic!("list {dir}: {err}"),
                }
            }
        };
        names.sort();
        names
    }

    /// Applies `damage` to the stored checkpoint `id`.
    async fn damage(&self, id: CheckpointId, damage: Damage) {
        let name = id.file_name();
        let mut bytes = self.raw_read(&name).await;
        match damage {
            Damage::FlipByte => {
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
            }
            Damage::Truncate => bytes.truncate(bytes.len() - 3),
            Damage::Garbage => bytes = b"this is not a checkpoint at all".to_vec(),
        }
        self.raw_write(&name, bytes).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Damage {
    FlipByte,
    Truncate,
    Garbage,
}

/// Generates `mod $name { local, memory, object_fs, s3 }` tests (`s3` with the feature) calling `async fn $name(Mode)`.
macro_rules! all_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::Mode;

            #[tokio::test]
            async fn local() {
                super::$name(Mode::Local).await
            }

            #[tokio::test]
            async fn memory() {
                super::$name(Mode::Memory).await
            }

            #[tokio::test]
            async fn object_fs() {
                super::$name(Mode::ObjectFs).await
            }

            #[cfg(feature = "s3")]
            #[tokio::test]
            async fn s3() {
                super::$name(Mode::S3).await
            }
        }
    )*};
}

/// A checkpoint with every field set.
fn full(time: u64) -> CheckpointData {
    CheckpointData {
        checkpoint_time_ms: time,
        pending_batches: vec![time - 2_000, time - 1_000, time],
        batch_interval_ms: 1_000,
        zero_time_ms: 1_699_999_999_000,
        settings: BTreeMap::from([
            ("weir.batch.interval".to_owned(), "1s".to_owned()),
            ("weir.checkpoint.retain".to_owned(), "10".to_owned()),
        ]),
        source_offsets: vec![
            SourceOffset {
                source: "clicks".to_owned(),
                partition: 0,
                offset: 12_345,
            },
            SourceOffset {
                source: "clicks".to_owned(),
                partition: 1,
                offset: u64::MAX,
            },
        ],
        operator_state: vec![
            OperatorState {
                schema_version: 1,
                operator_id: "count-by-page".to_owned(),
                type_name: "weir::state::Counts".to_owned(),
                data: StateData::Inline(vec![0, 1, 2, 255]),
            },
            OperatorState {
                schema_version: 1,
                operator_id: "window".to_owned(),
                type_name: "weir::state::Window".to_owned(),
                data: StateData::File(StateFileRef {
                    name: "00000000000000000001-00000000000000000000-window".to_owned(),
                    len: 3,
                    crc32c: 0xDEAD_BEEF,
                }),
            },
        ],
        graph_fingerprint: 0x0123_4567_89AB_CDEF,
    }
}

/// A small checkpoint told apart by its time.
fn small(time: u64) -> CheckpointData {
    CheckpointData {
        checkpoint_time_ms: time,
        ..CheckpointData::default()
    }
}

fn ids(raw: impl IntoIterator<Item = u64>) -> Vec<CheckpointId> {
    raw.into_iter().map(CheckpointId).collect()
}

async fn listed_ids(store: &CheckpointStore) -> Vec<CheckpointId> {
    store.list().await.unwrap().iter().map(|c| c.id).collect()
}

// ------------------------------------------------------------------------------------------
// Store tests, in every mode
// ------------------------------------------------------------------------------------------

all_modes!(
    chains_share_files_and_retention_keeps_exactly_what_is_referenced,
    large_state_files_go_through_local_files_in_pieces,
    pinned_checkpoints_survive_retention_with_their_files,
    round_trip_preserves_every_field,
    ids_increase_across_reopen,
    corrupt_newest_checkpoint_falls_back_to_previous,
    all_corrupt_checkpoints_are_no_valid_checkpoint,
    empty_store_reads_none,
    retention_keeps_exactly_the_configured_number,
    retention_keeps_ten_by_default,
    read_by_id_returns_that_checkpoint,
    checkpoint_from_a_newer_writer_is_reported_not_misread,
    state_file_round_trips,
    corrupted_state_file_is_detected,
    state_file_gc_spares_referenced_and_in_preparation_files,
    leftover_temp_files_are_removed_on_open,
    reserved_ids_order_checkpoints_whatever_order_they_are_written_in,
    state_files_of_a_reservation_in_flight_survive_retention,
    a_local_savepoint_is_self_contained_relocatable_and_outside_retention,
);

async fn round_trip_preserves_every_field(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    let data = full(1_700_000_000_000);
    let id = store.write(&data).await.unwrap();
    assert_eq!(id, CheckpointId(1));

    let size = data.encode().unwrap().len() as u64;
    assert_eq!(fx.raw_list("").await, vec![id.file_name()]);
    let listed = store.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].size), (id, size));

    let restored = store.read_latest().await.unwrap().unwrap();
    assert_eq!(restored.id, id);
    assert_eq!(restored.data, data);
    assert!(restored.skipped.is_empty());
    assert_eq!(store.read(id).await.unwrap(), data);

    // Another store on the same location (a restart) reads the same.
    let reopened = fx.open().await;
    assert_eq!(reopened.read_latest().await.unwrap().unwrap().data, data);

    let events = fx.take_events();
    match &events[0] {
        Event::CheckpointWritten {
            store,
            id,
            bytes,
            duration_ms,
        } => {
            assert_eq!(
                (store.as_str(), *id, *bytes),
                (fx.storage.describe().as_str(), 1, size)
            );
            assert!(
                duration_ms.is_some(),
                "a written checkpoint says how long it took"
            );
        }
        other => panic!("expected the checkpoint written, got {other:?}"),
    }
    let restores = events
        .iter()
        .filter(|e| matches!(e, Event::CheckpointRestored { id: 1, .. }))
        .count();
    assert_eq!(restores, 3);
}

async fn ids_increase_across_reopen(mode: Mode) {
    let fx = Fixture::new(mode);
    {
        let store = fx.open().await;
        for n in 1..=3 {
            assert_eq!(store.write(&small(n)).await.unwrap(), CheckpointId(n));
        }
    }
    let store = fx.open().await;
    assert_eq!(store.write(&small(4)).await.unwrap(), CheckpointId(4));

    // A corrupt file counts too: its id is never handed out again.
    fx.raw_write(&CheckpointId(9).file_name(), b"garbage".to_vec())
        .await;
    let store = fx.open().await;
    assert_eq!(store.write(&small(10)).await.unwrap(), CheckpointId(10));
    assert_eq!(listed_ids(&store).await, ids([1, 2, 3, 4, 9, 10]));
}

async fn corrupt_newest_checkpoint_falls_back_to_previous(mode: Mode) {
    for (damage, expected_reason) in [
        (Damage::FlipByte, "CRC32C"),
        (Damage::Truncate, "truncated"),
        (Damage::Garbage, "magic"),
    ] {
        let fx = Fixture::new(mode);
        let store = fx.open().await;
        let first = store.write(&small(100)).await.unwrap();
        let second = store.write(&small(200)).await.unwrap();
        fx.damage(second, damage).await;
        fx.take_events();

        let restored = store.read_latest().await.unwrap().unwrap();
        assert_eq!(restored.id, first, "{damage:?}");
        assert_eq!(restored.data, small(100));
        assert_eq!(restored.skipped.len(), 1);
        assert_eq!(restored.skipped[0].0, second);
        let reason = &restored.skipped[0].1;
        assert!(reason.contains(expected_reason), "{damage:?}: {reason}");

        assert_eq!(
            fx.take_events(),
            vec![
                Event::CheckpointSkipped {
                    store: fx.storage.describe(),
                    id: second.0,
                    reason: reason.clone(),
                },
                Event::CheckpointRestored {
                    store: fx.storage.describe(),
                    id: first.0,
                },
            ]
        );

        // Asked for by id, the damaged one is a typed error with the reason.
        match store.read(second).await {
            Err(CheckpointError::Corrupt { id, reason, .. }) => {
                assert_eq!(id, second);
                assert!(reason.to_string().contains(expected_reason), "{reason}");
            }
            other => panic!("{damage:?}: expected Corrupt, got {other:?}"),
        }

        // A new write after the damaged one becomes the newest and is used.
        let third = store.write(&small(300)).await.unwrap();
        assert_eq!(third, CheckpointId(3));
        let restored = store.read_latest().await.unwrap().unwrap();
        assert_eq!((restored.id, restored.skipped.len()), (third, 0));
    }
}

async fn all_corrupt_checkpoints_are_no_valid_checkpoint(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    let a = store.write(&small(1)).await.unwrap();
    let b = store.write(&small(2)).await.unwrap();
    fx.damage(a, Damage::Truncate).await;
    fx.damage(b, Damage::FlipByte).await;

    let err = store.read_latest().await.unwrap_err();
    let message = err.to_string();
    match err {
        CheckpointError::NoValidCheckpoint { store: name, tried } => {
            assert_eq!(name, fx.storage.describe());
            let tried_ids: Vec<CheckpointId> = tried.iter().map(|(id, _)| *id).collect();
            assert_eq!(tried_ids, vec![b, a]);
        }
        other => panic!("expected NoValidCheckpoint, got {other:?}"),
    }
    assert!(
        message.starts_with(&format!(
            "no valid checkpoint in `{}`",
            fx.storage.describe()
        )),
        "{message}"
    );
    assert!(message.contains("checkpoint 2: the CRC32C"), "{message}");
    assert!(
        message.contains("checkpoint 1: the file is truncated"),
        "{message}"
    );
    assert!(!message.contains('\n'), "{message}");
}

async fn empty_store_reads_none(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    assert_eq!(store.read_latest().await.unwrap(), None);
    assert!(store.list().await.unwrap().is_empty());
    assert!(matches!(
        store.read(CheckpointId(1)).await,
        Err(CheckpointError::NotFound {
            id: CheckpointId(1),
            ..
        })
    ));
    assert!(fx.take_events().is_empty());
}

async fn retention_keeps_exactly_the_configured_number(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(3).await;
    assert_eq!(store.retain(), 3);
    for n in 1..=10 {
        store.write(&small(n)).await.unwrap();
        let expected: Vec<u64> = (n.saturating_sub(2).max(1)..=n).collect();
        assert_eq!(listed_ids(&store).await, ids(expected));
    }
    let names: Vec<String> = [8, 9, 10].map(|n| CheckpointId(n).file_name()).to_vec();
    assert_eq!(fx.raw_list("").await, names);
    assert_eq!(store.read_latest().await.unwrap().unwrap().data, small(10));

    let zero = CheckpointStore::open(fx.storage.clone(), fx.config().with_retain(0)).await;
    let err = zero.unwrap_err();
    assert!(
        matches!(err, CheckpointError::InvalidRetain { retain: 0 }),
        "{err:?}"
    );
}

async fn retention_keeps_ten_by_default(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    assert_eq!(store.retain(), 10);
    for n in 1..=13 {
        store.write(&small(n)).await.unwrap();
    }
    assert_eq!(listed_ids(&store).await, ids(4..=13));
}

async fn read_by_id_returns_that_checkpoint(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    for n in 1..=3 {
        store.write(&full(1_000_000 + n)).await.unwrap();
    }
    fx.take_events();
    assert_eq!(store.read(CheckpointId(2)).await.unwrap(), full(1_000_002));
    assert_eq!(
        fx.take_events(),
        vec![Event::CheckpointRestored {
            store: fx.storage.describe(),
            id: 2
        }]
    );

    let err = store.read(CheckpointId(99)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::NotFound {
                id: CheckpointId(99),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint 99 does not exist in `{}`",
            fx.storage.describe()
        )
    );

    fx.damage(CheckpointId(1), Damage::FlipByte).await;
    let err = store.read(CheckpointId(1)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Corrupt {
                id: CheckpointId(1),
                reason: FormatError::CrcMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "checkpoint 1 in `{}` is corrupt: ",
            fx.storage.describe()
        )),
        "{err}"
    );
}

async fn checkpoint_from_a_newer_writer_is_reported_not_misread(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    let good = store.write(&small(1)).await.unwrap();

    // Checkpoint 2: a critical section this build does not know.
    let mut sections = old_layout_sections(&small(2));
    sections.push((0x8000 | 42, vec![1, 2, 3]));
    fx.raw_write(&CheckpointId(2).file_name(), frame(1, &sections))
        .await;
    // Checkpoint 3: a framing version from the future.
    fx.raw_write(
        &CheckpointId(3).file_name(),
        frame(2, &old_layout_sections(&small(3))),
    )
    .await;

    let err = store.read(CheckpointId(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::UnknownCriticalSection {
                id: CheckpointId(2),
                tag: 0x802a,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("critical section 0x802a"), "{err}");

    let err = store.read(CheckpointId(3)).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::UnsupportedVersion {
                version: 2,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 2"), "{err}");

    let restored = store.read_latest().await.unwrap().unwrap();
    assert_eq!(restored.id, good);
    let skipped: Vec<CheckpointId> = restored.skipped.iter().map(|(id, _)| *id).collect();
    assert_eq!(skipped, ids([3, 2]));
}

async fn state_file_round_trips(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    let bytes: Vec<u8> = (0..100_000u32).map(|n| (n % 251) as u8).collect();
    let file = store
        .write_state_file("window/page#1", &bytes)
        .await
        .unwrap();
    assert_eq!(file.len, bytes.len() as u64);
    assert_eq!(file.crc32c, crc32c::crc32c(&bytes));
    assert_eq!(fx.raw_list("state").await, vec![file.name.clone()]);
    assert!(file.name.ends_with("-window_page_1"), "{}", file.name);
    assert_eq!(store.read_state_file(&file).await.unwrap(), bytes);

    let empty = store.write_state_file("empty", &[]).await.unwrap();
    assert_eq!(
        store.read_state_file(&empty).await.unwrap(),
        Vec::<u8>::new()
    );
    assert_ne!(empty.name, file.name);

    let data = CheckpointData {
        operator_state: vec![OperatorState {
            schema_version: 1,
            operator_id: "window/page#1".to_owned(),
            type_name: "Window".to_owned(),
            data: StateData::File(file.clone()),
        }],
        ..small(5)
    };
    store.write(&data).await.unwrap();
    let restored = fx.open().await.read_latest().await.unwrap().unwrap();
    assert_eq!(restored.data, data);
    let StateData::File(reference) = &restored.data.operator_state[0].data else {
        panic!("expected a state file reference");
    };
    assert_eq!(store.read_state_file(reference).await.unwrap(), bytes);
}

async fn corrupted_state_file_is_detected(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    let file = store
        .write_state_file("op", b"operator state")
        .await
        .unwrap();
    let path = format!("state/{}", file.name);
    let good = fx.raw_read(&path).await;

    // A flipped payload byte: the frame's CRC catches it.
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x20;
    fx.raw_write(&path, bad).await;
    let err = store.read_state_file(&file).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::StateFileCorrupt {
                reason: FormatError::CrcMismatch { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&file.name), "{err}");

    // Truncated.
    fx.raw_write(&path, good[..good.len() - 4].to_vec()).await;
    let err = store.read_state_file(&file).await.unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::StateFileCorrupt {
                reason: FormatError::Truncated { .. },
                ..
            }
        ),
        "{err:?}"
    );

    // Intact, but not what the reference describes.
    fx.raw_write(&path, good).await;
    let wrong = StateFileRef {
        crc32c: file.crc32c ^ 1,
        ..file.clone()
    };
    let err = store.read_state_file(&wrong).await.unwrap_err();
    assert!(
        matches!(err, CheckpointError::StateFileMismatch { .. }),
        "{err:?}"
    );
    let wrong = StateFileRef {
        len: file.len + 1,
        ..file.clone()
    };
    assert!(matches!(
        store.read_state_file(&wrong).await,
        Err(CheckpointError::StateFileMismatch { .. })
    ));
    assert_eq!(
        store.read_state_file(&file).await.unwrap(),
        b"operator state"
    );

    // Missing, and names that are not state file names.
    let missing = StateFileRef {
        name: "00000000000000000009-00000000000000000009-gone".to_owned(),
        ..file.clone()
    };
    assert!(matches!(
        store.read_state_file(&missing).await,
        Err(CheckpointError::StateFileNotFound { .. })
    ));
    for name in ["../checkpoint-00000000000000000001", "", "x/y"] {
        let bad = StateFileRef {
            name: name.to_owned(),
            ..file.clone()
        };
        assert!(
            matches!(
                store.read_state_file(&bad).await,
                Err(CheckpointError::InvalidStateFileName { .. })
            ),
            "{name}"
        );
    }
}

fn referencing(time: u64, files: &[&StateFileRef]) -> CheckpointData {
    CheckpointData {
        operator_state: files
            .iter()
            .map(|file| OperatorState {
                schema_version: 1,
                operator_id: "op".to_owned(),
                type_name: "State".to_owned(),
                data: StateData::File((*file).clone()),
            })
            .collect(),
        ..small(time)
    }
}

async fn state_file_gc_spares_referenced_and_in_preparation_files(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(2).await;
    let state_files = || fx.raw_list("state");

    // Written while checkpoint 1 is next, referenced by checkpoints 1 and 3.
    let kept = store.write_state_file("kept", b"kept").await.unwrap();
    assert!(
        kept.name.starts_with("00000000000000000001-"),
        "{}",
        kept.name
    );
    store.write(&referencing(1, &[&kept])).await.unwrap();
    // Written while checkpoint 2 is next, never referenced.
    let orphan = store.write_state_file("orphan", b"orphan").await.unwrap();
    assert!(
        orphan.name.starts_with("00000000000000000002-"),
        "{}",
        orphan.name
    );
    store.write(&small(2)).await.unwrap(); // retained: 1, 2
    store.write(&referencing(3, &[&kept])).await.unwrap(); // retained: 2, 3
    // The orphan's embedded id (2) is not older than the oldest retained (2): kept.
    let mut both = vec![kept.name.clone(), orphan.name.clone()];
    both.sort();
    assert_eq!(state_files().await, both);

    // A state file for checkpoint 4, still being prepared when checkpoint 4 is written.
    let preparing = store
        .write_state_file("preparing", b"preparing")
        .await
        .unwrap();
    assert!(
        preparing.name.starts_with("00000000000000000004-"),
        "{}",
        preparing.name
    );
    store.write(&small(4)).await.unwrap(); // retained: 3, 4
    // The orphan is now older than checkpoint 3 and unreferenced: deleted. `kept` is still
    // referenced by checkpoint 3; `preparing` is not older than checkpoint 3.
    let mut expected = vec![kept.name.clone(), preparing.name.clone()];
    expected.sort();
    assert_eq!(state_files().await, expected);

    // After a restart (nothing cached), the store reads the retained checkpoints to learn
    // what they reference.
    drop(store);
    let store = fx.open_retaining(2).await;
    store.write(&referencing(5, &[&preparing])).await.unwrap(); // retained: 4, 5
    assert_eq!(state_files().await, vec![preparing.name.clone()]);
    assert_eq!(
        store.read_state_file(&preparing).await.unwrap(),
        b"preparing"
    );
    let latest = store.read_latest().await.unwrap().unwrap();
    assert_eq!(latest.data, referencing(5, &[&preparing]));

    // A retained checkpoint that cannot be read stops collection for that round.
    let stale = store.write_state_file("stale", b"stale").await.unwrap(); // embeds 6
    store.write(&small(6)).await.unwrap(); // retained: 5, 6
    let mut expected = vec![preparing.name.clone(), stale.name.clone()];
    expected.sort();
    assert_eq!(state_files().await, expected);
    drop(store);
    fx.damage(CheckpointId(6), Damage::FlipByte).await;
    let store = fx.open_retaining(2).await;
    store.write(&small(7)).await.unwrap(); // retained: 6 (corrupt), 7
    // `preparing` (embeds 4) is now unreferenced and old, but checkpoint 6 cannot tell.
    assert_eq!(state_files().await, expected);
    store.write(&small(8)).await.unwrap(); // retained: 7, 8
    assert!(state_files().await.is_empty());
}

async fn leftover_temp_files_are_removed_on_open(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open().await;
    store.write(&small(1)).await.unwrap();
    drop(store);
    if mode == Mode::Local {
        // What a crash between creating the temp file and the rename leaves behind.
        let temp = ".tmp-checkpoint-00000000000000000002-123-0";
        fx.raw_write(temp, b"half a checkp".to_vec()).await;
        fx.raw_write(&format!("state/.tmp-{temp}"), b"half".to_vec())
            .await;
    }
    let store = fx.open().await;
    assert_eq!(fx.raw_list("").await, vec![CheckpointId(1).file_name()]);
    assert!(fx.raw_list("state").await.is_empty());
    assert_eq!(store.write(&small(2)).await.unwrap(), CheckpointId(2));
}

// ------------------------------------------------------------------------------------------
// Format: the versioning rule
// ------------------------------------------------------------------------------------------

/// Frames a section list the way `docs/architecture.md` describes, independently of the crate.
fn frame(version: u16, sections: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let payload = postcard::to_stdvec(sections).unwrap();
    let mut out = vec![0x89, b'W', b'E', b'I', b'R', b'C', b'K', b'P'];
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out), &payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

fn enc<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap()
}

/// What an older writer, which knew only tags 1 (time), 2 (pending batches) and 3 (batch
/// interval), would have written.
fn old_layout_sections(data: &CheckpointData) -> Vec<(u16, Vec<u8>)> {
    vec![
        (1, enc(&data.checkpoint_time_ms)),
        (2, enc(&data.pending_batches)),
        (3, enc(&data.batch_interval_ms)),
    ]
}

/// Every section today's layout has, as the table in `docs/architecture.md` numbers them.
fn current_layout_sections(data: &CheckpointData) -> Vec<(u16, Vec<u8>)> {
    let mut sections = old_layout_sections(data);
    sections.extend([
        (4, enc(&data.zero_time_ms)),
        (5, enc(&data.settings)),
        (6, enc(&data.source_offsets)),
        (7, enc(&data.operator_state)),
        (8, enc(&data.graph_fingerprint)),
    ]);
    sections
}

#[test]
fn the_documented_layout_is_the_encoders_layout() {
    let data = full(1_700_000_000_000);
    assert_eq!(
        frame(1, &current_layout_sections(&data)),
        data.encode().unwrap()
    );
}

#[test]
fn old_layout_decodes_with_defaults() {
    let data = full(1_700_000_000_000);
    let decoded = CheckpointData::decode(&frame(1, &old_layout_sections(&data))).unwrap();
    assert_eq!(
        decoded,
        CheckpointData {
            checkpoint_time_ms: data.checkpoint_time_ms,
            pending_batches: data.pending_batches.clone(),
            batch_interval_ms: data.batch_interval_ms,
            ..CheckpointData::default()
        }
    );
}

#[test]
fn unknown_optional_section_is_ignored() {
    let data = full(1_700_000_000_000);
    let mut sections = current_layout_sections(&data);
    // A newer writer's optional field, placed first and last: order does not matter.
    sections.insert(0, (0x7fff, enc(&"a field from the future")));
    sections.push((9, vec![0xff; 17]));
    assert_eq!(CheckpointData::decode(&frame(1, &sections)).unwrap(), data);
}

#[test]
fn unknown_critical_section_is_refused() {
    let data = full(1_700_000_000_000);
    let mut sections = current_layout_sections(&data);
    // 0x8009 is known (operator state with chains); 0x80ff is not.
    sections.push((0x80ff, enc(&7u64)));
    let err = CheckpointData::decode(&frame(1, &sections)).unwrap_err();
    assert_eq!(err, FormatError::UnknownCriticalSection { tag: 0x80ff });
    assert!(
        err.to_string().contains("section 0x80ff is critical"),
        "{err}"
    );
}

#[test]
fn unknown_format_version_is_refused_by_number() {
    let err = CheckpointData::decode(&frame(3, &old_layout_sections(&small(1)))).unwrap_err();
    assert_eq!(
        err,
        FormatError::UnsupportedVersion {
            version: 3,
            supported: 1
        }
    );
    assert!(err.to_string().contains("format version 3"), "{err}");
}

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-v1.bin")
}

/// The value stored in `tests/fixtures/checkpoint-v1.bin`. Never change it: the fixture is
/// what the first format wrote, and every later build must read it as this.
fn golden_value() -> CheckpointData {
    CheckpointData {
        checkpoint_time_ms: 1_700_000_000_000,
        pending_batches: vec![1_699_999_998_000, 1_699_999_999_000, 1_700_000_000_000],
        batch_interval_ms: 1_000,
        zero_time_ms: 1_699_999_999_000,
        settings: BTreeMap::from([
            ("weir.batch.interval".to_owned(), "1s".to_owned()),
            ("weir.checkpoint.retain".to_owned(), "10".to_owned()),
        ]),
        source_offsets: vec![
            SourceOffset {
                source: "clicks".to_owned(),
                partition: 0,
                offset: 12_345,
            },
            SourceOffset {
                source: "clicks".to_owned(),
                partition: 1,
                offset: u64::MAX,
            },
        ],
        operator_state: vec![
            OperatorState {
                schema_version: 1,
                operator_id: "count-by-page".to_owned(),
                type_name: "weir::state::Counts".to_owned(),
                data: StateData::Inline(vec![0, 1, 2, 255]),
            },
            OperatorState {
                schema_version: 1,
                operator_id: "window".to_owned(),
                type_name: "weir::state::Window".to_owned(),
                data: StateData::File(StateFileRef {
                    name: "00000000000000000001-00000000000000000000-window".to_owned(),
                    len: 3,
                    crc32c: 0xDEAD_BEEF,
                }),
            },
        ],
        graph_fingerprint: 0x0123_4567_89AB_CDEF,
    }
}

/// `tests/fixtures/checkpoint-v1.bin` was written by weir 0.1's `CheckpointData::encode` of
/// `golden_value()`. It is never regenerated: every later version must keep decoding it.
#[test]
fn golden_v1_fixture_still_decodes() {
    let bytes = std::fs::read(golden_path()).unwrap();
    assert_eq!(CheckpointData::decode(&bytes).unwrap(), golden_value());
    // Today's writer still produces exactly these bytes.
    assert_eq!(golden_value().encode().unwrap(), bytes);
}

async fn reserved_ids_order_checkpoints_whatever_order_they_are_written_in(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(1).await;
    let older = store.reserve().unwrap();
    let newer = store.reserve().unwrap();
    assert_eq!((older.id(), newer.id()), (CheckpointId(1), CheckpointId(2)));
    // The newer snapshot is written first, the older one last.
    assert_eq!(
        store.write_reserved(newer, &small(200)).await.unwrap(),
        CheckpointId(2)
    );
    assert_eq!(
        store.write_reserved(older, &small(100)).await.unwrap(),
        CheckpointId(1)
    );
    let latest = store.read_latest().await.unwrap().unwrap();
    assert_eq!((latest.id, latest.data), (CheckpointId(2), small(200)));
    // Retention (retain = 1) removed the late older checkpoint, not the newer one.
    let ids: Vec<CheckpointId> = store.list().await.unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![CheckpointId(2)]);
    // An unwritten reservation burns its id.
    drop(store.reserve().unwrap());
    assert_eq!(store.write(&small(300)).await.unwrap(), CheckpointId(4));
}

async fn state_files_of_a_reservation_in_flight_survive_retention(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(1).await;
    // A state file for the snapshot that reserves checkpoint 1, whose write is slow.
    let slow_state = store.write_state_file("slow", b"slow").await.unwrap();
    let slow = store.reserve().unwrap();
    // A newer checkpoint, then another, are written meanwhile: the oldest retained is now
    // 3, newer than the state file's embedded id (1), but checkpoint 1 is still in flight.
    store.write(&small(2)).await.unwrap();
    store.write(&small(3)).await.unwrap();
    assert_eq!(fx.raw_list("state").await, vec![slow_state.name.clone()]);
    // Written at last, it is the oldest and retired by its own retention, and its state
    // file, no longer protected by the reservation nor referenced, goes with it.
    store
        .write_reserved(slow, &referencing(1, &[&slow_state]))
        .await
        .unwrap();
    let ids: Vec<CheckpointId> = store.list().await.unwrap().iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![CheckpointId(3)]);
    assert!(fx.raw_list("state").await.is_empty());
}

// ------------------------------------------------------------------------------------------
// Chains of state files (incremental checkpoints)
// ------------------------------------------------------------------------------------------

/// A checkpoint whose operator `op` holds `chain` (files written earlier), written with one
/// more file `upload` (a new base if `chain` is empty).
async fn write_chain(
    store: &CheckpointStore,
    time: u64,
    chain: &[StateFileRef],
    upload: &[u8],
) -> (CheckpointId, Vec<StateFileRef>) {
    let data = CheckpointData {
        operator_state: vec![
            OperatorState {
                schema_version: 1,
                operator_id: "op".to_owned(),
                type_name: "State".to_owned(),
                data: StateData::Chain(chain.to_vec()),
            },
            OperatorState {
                schema_version: 1,
                operator_id: "small".to_owned(),
                type_name: "Small".to_owned(),
                data: StateData::Inline(vec![1, 2, 3]),
            },
        ],
        ..small(time)
    };
    let upload = StateUpload {
        operator_id: "op".to_owned(),
        bytes: upload.to_vec().into(),
    };
    let (id, written) = store
        .write_reserved_with_uploads(store.reserve().unwrap(), data, vec![upload])
        .await
        .unwrap();
    let chain = match &written.operator_state[0].data {
        StateData::Chain(files) => files.clone(),
        other => panic!("{other:?}"),
    };
    (id, chain)
}

/// Every state file name the store's retained checkpoints reference, sorted.
async fn referenced(store: &CheckpointStore) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for info in store.list().await.unwrap() {
        let data = store.read(info.id).await.unwrap();
        names.extend(data.state_files().map(|f| f.name.clone()));
    }
    names.into_iter().collect()
}

async fn chains_share_files_and_retention_keeps_exactly_what_is_referenced(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(3).await;
    let mut chain = Vec::new();
    let mut bases = 0;
    for time in 1..=20u64 {
        // A new base every 6 checkpoints, deltas in between.
        if time % 6 == 1 {
            chain.clear();
            bases += 1;
        }
        let bytes = format!("state {time}").into_bytes();
        let (id, written) = write_chain(&store, time, &chain, &bytes).await;
        assert_eq!(written.len(), chain.len() + 1);
        assert_eq!(
            &written[..chain.len()],
            chain.as_slice(),
            "earlier files shared"
        );
        // The new file embeds the checkpoint's id.
        let last = written.last().unwrap();
        assert!(
            last.name.starts_with(&format!("{:020}-", id.0)),
            "{}",
            last.name
        );
        chain = written;
        // After every write: exactly the files the retained checkpoints reference.
        assert_eq!(
            fx.raw_list("state").await,
            referenced(&store).await,
            "at {time}"
        );
    }
    assert_eq!(bases, 4);
    // The newest checkpoint's chain reads back, file by file, CRC-checked.
    let latest = store.read_latest().await.unwrap().unwrap();
    let files = store.read_state_files(&latest.data, None).await.unwrap();
    assert_eq!(files.len(), chain.len());
    for (i, file) in chain.iter().enumerate() {
        let time = 19 + i as u64;
        assert_eq!(
            files[&file.name].to_vec().unwrap(),
            format!("state {time}").into_bytes()
        );
    }
    // A damaged shared file is detected when the chain is read.
    fx.raw_write(&format!("state/{}", chain[0].name), b"garbage".to_vec())
        .await;
    assert!(matches!(
        store.read_state_files(&latest.data, None).await,
        Err(CheckpointError::StateFileCorrupt { .. })
    ));
}

/// A state file larger than memory should hold: written from a local file in pieces (a
/// multipart upload on object stores), read back as a range of a local file (the store's own,
/// or a temporary download in the spill directory) with its checksum verified first; damage
/// in its middle is found before anything reads it; savepoint copies stream it too.
async fn large_state_files_go_through_local_files_in_pieces(mode: Mode) {
    use std::io::Write as _;
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(3).await;
    let spill = TempDir::new().unwrap();
    // 19 MiB and a bit: more than two 8 MiB parts of a multipart upload, not a multiple of
    // any piece size.
    let payload: Vec<u8> = (0..19 * (1 << 20) + 12_345u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut writer = StateWriter::new(StateBytes::temp_file_in(spill.path()).unwrap());
    for piece in payload.chunks(100_003) {
        writer.write_all(piece).unwrap();
    }
    let (bytes, crc) = writer.finish().unwrap();
    assert_eq!(crc, crc32c::crc32c(&payload));
    assert!(bytes.in_memory().is_none(), "the state is in a file");
    let data = CheckpointData {
        operator_state: vec![OperatorState {
            schema_version: 1,
            operator_id: "op".to_owned(),
            type_name: "State".to_owned(),
            data: StateData::Chain(Vec::new()),
        }],
        ..small(1)
    };
    let upload = StateUpload {
        operator_id: "op".to_owned(),
        bytes,
    };
    let (_, written) = store
        .write_reserved_with_uploads(store.reserve().unwrap(), data, vec![upload])
        .await
        .unwrap();
    let file = written.state_files().next().unwrap().clone();
    assert_eq!(file.len, payload.len() as u64);
    assert_eq!(file.crc32c, crc32c::crc32c(&payload));
    // Framed as a state file written whole would be.
    let raw = fx.raw_read(&format!("state/{}", file.name)).await;
    assert_eq!(
        &raw[weir_actors::checkpoint::HEADER_LEN..],
        payload.as_slice()
    );
    assert_eq!(
        store.read_state_file(&file).await.unwrap(),
        payload,
        "the whole read agrees"
    );

    let read = store
        .read_state_file_bytes(&file, Some(spill.path()))
        .await
        .unwrap();
    assert!(
        read.in_memory().is_none(),
        "{mode:?}: read as a file, not into memory"
    );
    assert_eq!(read.to_vec().unwrap(), payload);
    let spilled = std::fs::read_dir(spill.path()).unwrap().count();
    assert_eq!(spilled, 0, "temporary files have no names");
    drop(read);
    if mode != Mode::Local {
        // Without a spill directory, an object store's file is read into memory.
        let read = store.read_state_file_bytes(&file, None).await.unwrap();
        assert_eq!(read.in_memory(), Some(payload.as_slice()));
    }

    // Savepoints copy it in pieces, byte for byte.
    let other = Fixture::new(Mode::Local);
    let copy = other.open_retaining(3).await;
    copy.copy_state_file_from(&store, &file).await.unwrap();
    assert_eq!(copy.read_state_file(&file).await.unwrap(), payload);

    // One byte flipped in the middle: found by the checksum before the bytes are handed out.
    let mut damaged = raw;
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x40;
    fx.raw_write(&format!("state/{}", file.name), damaged).await;
    let err = store
        .read_state_file_bytes(&file, Some(spill.path()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CheckpointError::StateFileCorrupt { .. }),
        "{mode:?}: {err}"
    );
}

/// A write that dies after uploading some state files, before its checkpoint lands (as a
/// crash would: here an upload for an operator without a chain fails the write after the
/// first upload), leaves orphans; the next checkpoints delete them, and a file left by a
/// reopened store's predecessor too.
#[tokio::test]
async fn files_of_a_write_that_never_landed_are_collected() {
    let fx = Fixture::new(Mode::Local);
    let store = fx.open_retaining(2).await;
    let (_, chain) = write_chain(&store, 1, &[], b"base").await;
    let data = CheckpointData {
        operator_state: vec![OperatorState {
            schema_version: 1,
            operator_id: "op".to_owned(),
            type_name: "State".to_owned(),
            data: StateData::Chain(chain.clone()),
        }],
        ..small(2)
    };
    let uploads = ["op", "no-chain"].map(|op| StateUpload {
        operator_id: op.to_owned(),
        bytes: b"delta".to_vec().into(),
    });
    let err = store
        .write_reserved_with_uploads(store.reserve().unwrap(), data, uploads.to_vec())
        .await
        .unwrap_err();
    assert!(matches!(err, CheckpointError::NoChainFor { .. }), "{err}");
    assert_eq!(
        fx.raw_list("state").await.len(),
        2,
        "the base and an orphan"
    );
    // A crash: the store goes away with a file written for its next checkpoint.
    store
        .write_state_file("crashed", b"uploaded, never referenced")
        .await
        .unwrap();
    drop(store);
    let store = fx.open_retaining(2).await;
    let mut chain = chain;
    for time in 3..=6 {
        chain = write_chain(&store, time, &chain, b"delta").await.1;
    }
    assert_eq!(fx.raw_list("state").await, referenced(&store).await);
    assert_eq!(fx.raw_list("state").await.len(), chain.len());
}

async fn pinned_checkpoints_survive_retention_with_their_files(mode: Mode) {
    let fx = Fixture::new(mode);
    let store = fx.open_retaining(2).await;
    let (pinned, pinned_chain) = write_chain(&store, 1, &[], b"pinned base").await;
    store.pin(pinned).await;
    for time in 2..=6 {
        write_chain(&store, time, &[], b"other base").await;
    }
    // Pinned: kept, with its file, beyond the two newest.
    assert_eq!(listed_ids(&store).await, ids([1, 5, 6]));
    assert_eq!(
        store.read_state_file(&pinned_chain[0]).await.unwrap(),
        b"pinned base"
    );
    assert_eq!(fx.raw_list("state").await, referenced(&store).await);
    store.unpin(pinned).await;
    write_chain(&store, 7, &[], b"other base").await;
    assert_eq!(listed_ids(&store).await, ids([6, 7]));
    assert_eq!(fx.raw_list("state").await, referenced(&store).await);
}

fn chain_golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-chain-v1.bin")
}

/// The value stored in `tests/fixtures/checkpoint-chain-v1.bin`: operator state with a chain
/// (section `0x8009`). Never change it.
fn chain_golden_value() -> CheckpointData {
    let file = |seq: u64, len: u64, crc32c: u32| StateFileRef {
        name: format!("{:020}-{seq:020}-counts", seq + 1),
        len,
        crc32c,
    };
    CheckpointData {
        operator_state: vec![
            OperatorState {
                schema_version: 1,
                operator_id: "counts".to_owned(),
                type_name: "(alloc::string::String, (i64, core::option::Option<u64>))".to_owned(),
                data: StateData::Chain(vec![
                    file(0, 100_000, 0x0102_0304),
                    file(1, 1_200, 0xA0B0_C0D0),
                    file(2, 900, 0xFFFF_0000),
                ]),
            },
            OperatorState {
                schema_version: 1,
                operator_id: "totals".to_owned(),
                type_name: "(alloc::string::String, i64)".to_owned(),
                data: StateData::Inline(b"weir-runtime/1\0\x01".to_vec()),
            },
        ],
        ..golden_value()
    }
}

/// `tests/fixtures/checkpoint-chain-v1.bin` is the first encoding of a checkpoint with a chain
/// (`CheckpointData::encode` of `chain_golden_value()`); every later build must read it.
#[test]
fn golden_chain_fixture_still_decodes() {
    let value = chain_golden_value();
    let bytes = std::fs::read(chain_golden_path()).unwrap();
    assert_eq!(CheckpointData::decode(&bytes).unwrap(), value);
    assert_eq!(value.encode().unwrap(), bytes);
    // Its operator state is under the critical tag 0x8009, not tag 7: a reader that does not
    // know chains refuses it rather than restoring without the state.
    let without_chain = golden_value().encode().unwrap();
    assert!(
        bytes.windows(3).any(|w| w == [0x89, 0x80, 0x02]),
        "tag 0x8009 as a varint"
    );
    assert!(!without_chain.windows(3).any(|w| w == [0x89, 0x80, 0x02]));
    assert_eq!(value.state_files().count(), 3);
}

fn schema_golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint-schema-v1.bin")
}

/// The value stored in `tests/fixtures/checkpoint-schema-v1.bin`: the chain fixture's, with
/// the chained operator's state at schema version 2 and the inline one's at 7. Never change it.
fn schema_golden_value() -> CheckpointData {
    let mut value = chain_golden_value();
    value.operator_state[0].schema_version = 2;
    value.operator_state[1].schema_version = 7;
    value
}

/// `tests/fixtures/checkpoint-schema-v1.bin` is the first encoding of state schema versions
/// (section `0x800A`, operator id → version, for versions other than 1); every later build
/// must read it. The fixtures without versions still encode byte for byte as before (their
/// tests above) and decode with every state at version 1.
#[test]
fn golden_schema_version_fixture_still_decodes() {
    let value = schema_golden_value();
    let bytes = std::fs::read(schema_golden_path()).unwrap();
    assert_eq!(CheckpointData::decode(&bytes).unwrap(), value);
    assert_eq!(value.encode().unwrap(), bytes);
    // Tag 0x800A as a varint: critical, so a reader that does not know schema versions
    // refuses the checkpoint instead of reading version-2 state as version 1's type.
    let tag = [0x8A, 0x80, 0x02];
    assert!(bytes.windows(3).any(|w| w == tag));
    let old = std::fs::read(chain_golden_path()).unwrap();
    assert!(!old.windows(3).any(|w| w == tag));
    let decoded = CheckpointData::decode(&old).unwrap();
    assert!(
        decoded
            .operator_state
            .iter()
            .all(|op| op.schema_version == 1)
    );
    // Only versions other than 1 are written: back at 1, the bytes are the old fixture's.
    let mut back = value;
    back.operator_state[0].schema_version = 1;
    back.operator_state[1].schema_version = 1;
    assert_eq!(back.encode().unwrap(), old);
}

// ------------------------------------------------------------------------------------------
// Savepoints
// ------------------------------------------------------------------------------------------

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A job's store in `mode` exports a savepoint to a local directory; the savepoint is copied
/// elsewhere and the original deleted; retention in the job's store (retain 1) removes the
/// checkpoint and state file it was taken from, and the copy still opens (with
/// `CheckpointStore::open` and `read_latest` too) and restores into a new job's store in
/// `mode` — on S3 with the `s3` feature — which then reads without the savepoint.
async fn a_local_savepoint_is_self_contained_relocatable_and_outside_retention(mode: Mode) {
    let job = Fixture::new(mode);
    let store = job.open_retaining(1).await;
    // The job's ids are past the new job's: the copies must not keep them.
    for time in 1..=4 {
        store.write(&small(time * 1_000)).await.unwrap();
    }
    let file = store
        .write_state_file("big", b"the state of big")
        .await
        .unwrap();
    let mut data = referencing(5_000, &[&file]);
    data.operator_state.push(OperatorState {
        schema_version: 3,
        operator_id: "small".to_owned(),
        type_name: "Small".to_owned(),
        data: StateData::Inline(vec![1, 2, 3]),
    });
    let id = store.write(&data).await.unwrap();

    let dirs = TempDir::new().unwrap();
    let taken = dirs.path().join("taken");
    let info = export_savepoint(&store, id, &data, &Storage::local(&taken))
        .await
        .unwrap();
    assert_eq!(info.manifest.checkpoint_time_ms, 5_000);
    assert_eq!(info.manifest.state_files, vec![file.name.clone()]);
    let ops: Vec<(&str, u32)> = info
        .manifest
        .operators
        .iter()
        .map(|o| (o.id.as_str(), o.schema_version))
        .collect();
    assert_eq!(ops, [("op", 1), ("small", 3)]);
    // A second savepoint to the same place is refused, and so is a checkpoint directory.
    let again = export_savepoint(&store, id, &data, &Storage::local(&taken)).await;
    assert!(
        matches!(again, Err(SavepointError::TargetNotEmpty { .. })),
        "{again:?}"
    );
    let into_checkpoints = export_savepoint(&store, id, &data, &job.storage).await;
    assert!(
        matches!(into_checkpoints, Err(SavepointError::TargetNotEmpty { .. })),
        "{into_checkpoints:?}"
    );

    // Retention in the job's store: the savepoint's checkpoint and state file go there.
    store.write(&small(6_000)).await.unwrap();
    store.write(&small(7_000)).await.unwrap();
    assert!(matches!(
        store.read_state_file(&file).await,
        Err(CheckpointError::StateFileNotFound { .. })
    ));

    // Moved: copied elsewhere, the original deleted.
    let moved = dirs.path().join("moved");
    copy_dir(&taken, &moved);
    std::fs::remove_dir_all(&taken).unwrap();
    // It is a checkpoint store too.
    let plain = CheckpointStore::open(Storage::local(&moved), CheckpointConfig::default())
        .await
        .unwrap();
    assert_eq!(plain.read_latest().await.unwrap().unwrap().data, data);

    let savepoint = Savepoint::open(Storage::local(&moved)).await.unwrap();
    assert_eq!(savepoint.data(), &data);
    let target = Fixture::new(mode);
    let restored_store = target.open_retaining(1).await;
    let restored = savepoint.restore_into(&restored_store).await.unwrap();
    let latest = restored_store.read_latest().await.unwrap().unwrap();
    assert_eq!(latest.id, restored);
    assert!(savepoint.restored_in(&latest.data));
    assert_eq!(
        latest.data.settings.get(RESTORED_FROM_SETTING),
        Some(&savepoint.manifest().id)
    );
    // The same operators and bytes; the state file copied under a name of the job's store.
    assert_eq!(latest.data.operator_state.len(), data.operator_state.len());
    let copied: Vec<_> = latest.data.state_files().cloned().collect();
    assert_eq!(copied.len(), 1);
    assert_ne!(copied[0].name, file.name);
    assert_eq!((copied[0].len, copied[0].crc32c), (file.len, file.crc32c));
    for (ours, theirs) in latest.data.operator_state.iter().zip(&data.operator_state) {
        assert_eq!(
            (&ours.operator_id, &ours.type_name),
            (&theirs.operator_id, &theirs.type_name)
        );
    }
    drop(savepoint);

    // Without the savepoint, the restored job's store reads alone, and its retention does
    // not need it.
    std::fs::remove_dir_all(&moved).unwrap();
    assert_eq!(
        restored_store.read_state_file(&copied[0]).await.unwrap(),
        b"the state of big"
    );
    restored_store.write(&latest.data).await.unwrap();
    let newest = restored_store.read_latest().await.unwrap().unwrap();
    assert_eq!(newest.data.operator_state, latest.data.operator_state);

    // A copy interrupted before its manifest is not a savepoint.    // A copy interrupted before its manifest is not a savepoint.
    let partial = dirs.path().join("partial");
    export_savepoint(
        &restored_store,
        newest.id,
        &newest.data,
        &Storage::local(&partial),
    )
    .await
    .unwrap();
    std::fs::remove_file(partial.join("savepoint.json")).unwrap();
    let err = Savepoint::open(Storage::local(&partial)).await.unwrap_err();
    assert!(
        matches!(err, SavepointError::NotASavepoint { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("savepoint.json"), "{err}");

    // Once no retained checkpoint references the copy, retention deletes it, although the
    // savepoint came from a job with larger ids.
    restored_store.write(&small(8_000)).await.unwrap();
    restored_store.write(&small(9_000)).await.unwrap();
    assert!(matches!(
        restored_store.read_state_file(&copied[0]).await,
        Err(CheckpointError::StateFileNotFound { .. })
    ));
}
