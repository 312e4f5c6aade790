//! Unit tests of the durable-file functions without failpoints: what each leaves on disk, and
//! the errors it gives. The failpoints are tested in `actors/tests/failpoints/durable.rs`.

use std::io;
use std::path::Path;

use super::*;
use crate::storage::location::StorageError;

const NO: Failpoints = Failpoints::NONE;

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn write_atomic_replaces_the_content_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    write_atomic(&path, b"old", NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"old");
    write_atomic(&path, b"new content", NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new content");
    assert_eq!(names(dir.path()), vec!["state"]);
}

#[test]
fn a_failed_atomic_write_removes_its_temp_file_and_leaves_the_target_alone() {
    let dir = tempfile::tempdir().unwrap();
    // A non-empty directory under the target name: the temp file is written, the rename fails.
    let target = dir.path().join("taken");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside"), b"kept").unwrap();
    let err = write_atomic(&target, b"new", NO).unwrap_err();
    assert_eq!(err.op(), "rename");
    assert_eq!(err.path(), target);
    assert!(
        err.io_error().is_some() && err.failpoint().is_none(),
        "{err:?}"
    );
    assert_eq!(names(dir.path()), vec!["taken"], "the temp file is gone");
    assert_eq!(fs::read(target.join("inside")).unwrap(), b"kept");
}

#[test]
fn an_atomic_write_into_a_missing_directory_fails_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let err = write_atomic(&dir.path().join("missing/file"), b"x", NO).unwrap_err();
    assert_eq!(err.op(), "create");
    assert!(err.path().starts_with(dir.path().join("missing")));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn an_atomic_write_to_a_path_without_a_file_name_is_refused() {
    let err = write_atomic(Path::new("/"), b"x", NO).unwrap_err();
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::InvalidInput)
    );
}

#[test]
fn create_dir_all_creates_every_missing_level_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b/c");
    create_dir_all(&deep, NO).unwrap();
    assert!(deep.is_dir());
    create_dir_all(&deep, NO).unwrap();
    create_dir_all(&dir.path().join("a/b/d"), NO).unwrap();
    assert_eq!(names(&dir.path().join("a/b")), vec!["c", "d"]);
}

#[test]
fn create_dir_all_over_a_file_is_an_error_naming_the_level() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("file"), b"").unwrap();
    let err = create_dir_all(&dir.path().join("file/sub"), NO).unwrap_err();
    assert_eq!(err.op(), "create directory");
    assert_eq!(err.path(), dir.path().join("file"));
}

#[test]
fn create_new_writes_its_bytes_and_refuses_a_taken_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    let file = create_new(&path, b"header", NO).unwrap();
    write_all_at(&file, &path, 6, b"+more", NO).unwrap();
    sync_data(&file, &path, NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"header+more");
    let err = create_new(&path, b"other", NO).unwrap_err();
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::AlreadyExists)
    );
    assert_eq!(fs::read(&path).unwrap(), b"header+more", "untouched");
    create_new(&dir.path().join("empty"), b"", NO).unwrap();
    assert_eq!(fs::read(dir.path().join("empty")).unwrap(), b"");
}

#[test]
fn write_file_replaces_what_the_file_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part-00000");
    write_file(&path, b"a long first version", NO).unwrap();
    write_file(&path, b"short", NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"short");
}

#[test]
fn rename_moves_a_directory_with_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join(".batch.tmp"), dir.path().join("batch"));
    fs::create_dir(&from).unwrap();
    write_file(&from.join("part"), b"x", NO).unwrap();
    rename(&from, &to, NO).unwrap();
    sync_dir(dir.path(), NO).unwrap();
    assert_eq!(names(dir.path()), vec!["batch"]);
    assert_eq!(fs::read(to.join("part")).unwrap(), b"x");
}

#[test]
fn truncate_cuts_to_the_length_and_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    fs::write(&path, b"0123456789").unwrap();
    truncate(&path, 4, NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"0123");
    let err = truncate(&dir.path().join("missing"), 0, NO).unwrap_err();
    assert_eq!(err.op(), "open");
}

#[test]
fn remove_files_and_dirs_remove_what_is_named_and_accept_what_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "keep"] {
        fs::write(dir.path().join(name), b"").unwrap();
    }
    fs::create_dir_all(dir.path().join("d/inner")).unwrap();
    fs::write(dir.path().join("d/inner/f"), b"").unwrap();
    let gone = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    remove_files(dir.path(), &gone(&["a", "b", "never-there"]), NO).unwrap();
    remove_dirs(dir.path(), &gone(&["d", "never-there"]), NO).unwrap();
    remove_files(dir.path(), &[], NO).unwrap();
    assert_eq!(names(dir.path()), vec!["keep"]);
    // A directory is not a file: `remove_files` refuses it.
    fs::create_dir(dir.path().join("sub")).unwrap();
    let err = remove_files(dir.path(), &gone(&["sub"]), NO).unwrap_err();
    assert_eq!((err.op(), err.path()), ("remove", &*dir.path().join("sub")));
}

#[test]
fn remove_temp_files_removes_only_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        remove_temp_files(&dir.path().join("absent"), NO).unwrap(),
        0
    );
    fs::write(dir.path().join(".tmp-checkpoint-1-2-0"), b"half").unwrap();
    fs::write(dir.path().join(".tmp-x"), b"").unwrap();
    fs::write(dir.path().join("checkpoint-1"), b"whole").unwrap();
    fs::write(dir.path().join(".hidden"), b"").unwrap();
    fs::create_dir(dir.path().join(".tmp-dir")).unwrap();
    assert_eq!(remove_temp_files(dir.path(), NO).unwrap(), 2);
    assert_eq!(
        names(dir.path()),
        vec![".hidden", ".tmp-dir", "checkpoint-1"]
    );
}

#[test]
fn sync_dir_of_a_missing_directory_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let err = sync_dir(&missing, NO).unwrap_err();
    assert_eq!((err.op(), err.path()), ("fsync directory", &*missing));
    assert_eq!(
        err.io_error().map(io::Error::kind),
        Some(io::ErrorKind::NotFound)
    );
    assert_eq!(
        err.to_string(),
        format!(
            "fsync directory `{}` failed: {}",
            missing.display(),
            err.io_error().unwrap()
        )
    );
}

#[test]
fn an_fs_error_becomes_a_storage_error_with_the_same_operation_path_and_message() {
    let path = Path::new("/weir/segment");
    let io_err = FsError::io("fsync", path)(io::Error::from_raw_os_error(28));
    let text = io_err.to_string();
    let storage = StorageError::from(io_err);
    assert_eq!(storage.operation(), "fsync");
    assert_eq!(storage.to_string(), text);
    assert!(matches!(&storage, StorageError::Io { path: p, .. } if p == path));

    let injected = FsError::Injected {
        op: "write",
        path: path.to_path_buf(),
        failpoint: "wal::write",
    };
    assert_eq!(injected.failpoint(), Some("wal::write"));
    let text = injected.to_string();
    assert!(text.contains("wal::write"), "{text}");
    let storage = StorageError::from(injected);
    assert_eq!(storage.to_string(), text);
    assert!(matches!(
        storage,
        StorageError::Injected {
            op: "write",
            failpoint: "wal::write",
            ..
        }
    ));
}

#[test]
fn not_found_and_already_exists_survive_the_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let missing = fs::read(dir.path().join("missing"))
        .map_err(FsError::io("read", &dir.path().join("missing")))
        .unwrap_err();
    assert!(StorageError::from(missing).is_not_found());
    let path = dir.path().join("taken");
    create_new(&path, b"", NO).unwrap();
    let taken = create_new(&path, b"", NO).unwrap_err();
    assert!(StorageError::from(taken).is_already_exists());
}

#[test]
fn write_file_with_streams_more_than_a_chunk_whole_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part-00000");
    std::fs::write(&path, b"old content, longer than nothing").unwrap();
    let lines: Vec<String> = (0..20_000).map(|i| format!("line {i}")).collect();
    write_file_with(&path, Failpoints::NONE, |out| {
        for line in &lines {
            writeln!(out, "{line}")?;
        }
        Ok(())
    })
    .unwrap();
    let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert!(expected.len() > 2 * STREAM_CHUNK, "the test spans chunks");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
}

#[test]
fn write_file_with_reports_what_its_filler_failed_with_as_a_write_of_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("part-00001");
    let err = write_file_with(&path, Failpoints::NONE, |_| {
        Err(io::Error::other("the formatter failed"))
    })
    .unwrap_err();
    assert_eq!(err.op(), "write");
    assert_eq!(err.path(), path);
    assert!(err.to_string().contains("the formatter failed"), "{err}");
}

#[test]
fn a_private_atomic_write_is_readable_by_its_owner_only_even_over_an_open_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, b"old").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    write_atomic_private(&path, b"new secret\n", Failpoints::NONE).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new secret\n");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(names(dir.path()), ["secret"], "no temp file is left");
}

/// Plants a symbolic link to `victim` at each of the next `count` temp names of an atomic
/// write to `path` — what a hostile neighbour with write access to the directory could do.
fn plant_symlinks(path: &Path, victim: &Path, count: u64) {
    for temp in upcoming_temp_paths(path, count) {
        std::os::unix::fs::symlink(victim, temp).unwrap();
    }
}

#[test]
fn an_atomic_write_never_follows_a_symlink_planted_at_its_temp_name() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    fs::write(&victim, b"precious").unwrap();
    for (target, private) in [("state", false), ("secret", true)] {
        let path = dir.path().join(target);
        // Enough names that writes of other tests in this process cannot move the counter
        // past them before this write takes its name.
        plant_symlinks(&path, &victim, 1024);
        let written = if private {
            write_atomic_private(&path, b"attacker-chosen", NO)
        } else {
            write_atomic(&path, b"attacker-chosen", NO)
        };
        let err = written.unwrap_err();
        assert_eq!(err.op(), "create", "{err}");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(fs::read(&victim).unwrap(), b"precious", "never followed");
        assert!(
            fs::symlink_metadata(&path).is_err(),
            "nothing is renamed onto `{target}`"
        );
    }
}

#[test]
fn an_atomic_write_steps_over_a_leftover_temp_file_and_leaves_it_alone() {
    // A crashed process with the same pid (pid 1 in a container) left files under the next
    // temp names: the write takes a free name and touches none of them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let leftovers = upcoming_temp_paths(&path, 3);
    for leftover in &leftovers {
        fs::write(leftover, b"leftover").unwrap();
    }
    write_atomic(&path, b"new", NO).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    for leftover in &leftovers {
        assert_eq!(fs::read(leftover).unwrap(), b"leftover");
    }
    assert_eq!(names(dir.path()).len(), 4, "the leftovers and the target");
}
