//! The durable-file module's failpoints: each field of `Failpoints` fires in the functions its
//! documentation names, fails them with an error naming the failpoint, and leaves on disk
//! what a crash at that edge would: an atomic write keeps the old content (or, failing at the
//! directory fsync after the rename, holds the new) and never leaves its temp file.
//!
//! The names here belong to this test; the WAL's, the checkpoint store's, the sink's and the
//! partitioned log's own names are exercised by their suites. Failpoints are process-global,
//! so each test holds a `fail::FailScenario` for its whole duration.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::fs;
use std::path::Path;

use fail::FailScenario;
use weir_actors::durable::{self, Failpoints, FsError};

const TEST: Failpoints = Failpoints {
    write: Some("durable_test::write"),
    torn_write: Some("durable_test::write::torn"),
    disk_full: Some("durable_test::write::enospc"),
    fsync: Some("durable_test::fsync"),
    dir_fsync: Some("durable_test::dir_fsync"),
    rename: Some("durable_test::rename"),
    create_dir: Some("durable_test::create_dir"),
    truncate: Some("durable_test::truncate"),
    remove: Some("durable_test::remove"),
    close: Some("durable_test::close"),
};

/// Every name of [`TEST`].
fn all_names() -> Vec<&'static str> {
    let Failpoints {
        write,
        torn_write,
        disk_full,
        fsync,
        dir_fsync,
        rename,
        create_dir,
        truncate,
        remove,
        close,
    } = TEST;
    [
        write, torn_write, disk_full, fsync, dir_fsync, rename, create_dir, truncate, remove, close,
    ]
    .into_iter()
    .map(Option::unwrap)
    .collect()
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Checks that `err` came from `failpoint`: its name, or `ENOSPC` for the disk-full one.
fn assert_fired(err: &FsError, failpoint: &str) {
    if failpoint == TEST.disk_full.unwrap() {
        assert_eq!(
            err.io_error().and_then(std::io::Error::raw_os_error),
            Some(28),
            "{failpoint}: {err}"
        );
        assert!(err.to_string().contains("No space left on device"), "{err}");
    } else {
        assert_eq!(err.failpoint(), Some(failpoint), "{err}");
        assert!(err.to_string().contains(failpoint), "{err}");
    }
}

#[test]
fn a_failure_before_the_rename_keeps_the_old_content_and_removes_the_temp_file() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("committed");
    durable::write_atomic(&path, b"old", TEST).unwrap();
    let before_rename = [
        (TEST.write, "write"),
        (TEST.torn_write, "write"),
        (TEST.disk_full, "write"),
        (TEST.fsync, "fsync"),
        (TEST.rename, "rename"),
    ];
    for (failpoint, op) in before_rename {
        let failpoint = failpoint.unwrap();
        fail::cfg(failpoint, "return").unwrap();
        let err = durable::write_atomic(&path, b"new content", TEST).unwrap_err();
        fail::remove(failpoint);
        assert_fired(&err, failpoint);
        assert_eq!(err.op(), op, "{failpoint}");
        assert_eq!(fs::read(&path).unwrap(), b"old", "{failpoint}");
        assert_eq!(names(dir.path()), vec!["committed"], "{failpoint}");
    }
    durable::write_atomic(&path, b"new content", TEST).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new content");
    scenario.teardown();
}

#[test]
fn a_failed_directory_fsync_comes_after_the_rename() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("committed");
    durable::write_atomic(&path, b"old", TEST).unwrap();
    fail::cfg("durable_test::dir_fsync", "return").unwrap();
    let err = durable::write_atomic(&path, b"new", TEST).unwrap_err();
    assert_fired(&err, "durable_test::dir_fsync");
    assert_eq!((err.op(), err.path()), ("fsync directory", dir.path()));
    // The new content is in place (a power cut could still undo the rename); no temp file.
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(names(dir.path()), vec!["committed"]);
    // `sync_dir` and `create_new` fire it too.
    assert_fired(
        &durable::sync_dir(dir.path(), TEST).unwrap_err(),
        "durable_test::dir_fsync",
    );
    let err = durable::create_new(&dir.path().join("new"), b"bytes", TEST).unwrap_err();
    assert_fired(&err, "durable_test::dir_fsync");
    assert_eq!(fs::read(dir.path().join("new")).unwrap(), b"bytes");
    scenario.teardown();
}

#[test]
fn create_new_fails_at_each_edge_leaving_a_prefix_of_its_bytes() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let edges = [
        (TEST.write, &b""[..]),
        (TEST.disk_full, b""),
        (TEST.torn_write, b"head"),
        (TEST.fsync, b"header!!"),
    ];
    for (i, (failpoint, left)) in edges.into_iter().enumerate() {
        let failpoint = failpoint.unwrap();
        let path = dir.path().join(format!("segment-{i}"));
        fail::cfg(failpoint, "return").unwrap();
        let err = durable::create_new(&path, b"header!!", TEST).unwrap_err();
        fail::remove(failpoint);
        assert_fired(&err, failpoint);
        assert_eq!(fs::read(&path).unwrap(), left, "{failpoint}");
    }
    // An empty file is created without a write: the write failpoints do not fire.
    for failpoint in [TEST.write, TEST.torn_write, TEST.disk_full] {
        fail::cfg(failpoint.unwrap(), "return").unwrap();
    }
    durable::create_new(&dir.path().join("empty"), b"", TEST).unwrap();
    scenario.teardown();
}

#[test]
fn write_all_at_and_sync_data_fire_their_failpoints() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let file = durable::create_new(&path, b"0123", TEST).unwrap();
    for failpoint in [TEST.write, TEST.disk_full, TEST.torn_write] {
        let failpoint = failpoint.unwrap();
        fail::cfg(failpoint, "return").unwrap();
        let err = durable::write_all_at(&file, &path, 4, b"abcdef", TEST).unwrap_err();
        fail::remove(failpoint);
        assert_fired(&err, failpoint);
    }
    // Only the torn write wrote anything: its first half.
    assert_eq!(fs::read(&path).unwrap(), b"0123abc");

    // `return(TEXT)` fails the fsync of paths that contain TEXT only.
    let other = dir.path().join("other-file");
    let other_file = durable::create_new(&other, b"x", TEST).unwrap();
    fail::cfg("durable_test::fsync", "return(other)").unwrap();
    durable::sync_data(&file, &path, TEST).unwrap();
    let err = durable::sync_data(&other_file, &other, TEST).unwrap_err();
    assert_fired(&err, "durable_test::fsync");
    assert_eq!((err.op(), err.path()), ("fsync", other.as_path()));
    fail::cfg("durable_test::fsync", "return").unwrap();
    let err = durable::write_file(&dir.path().join("part"), b"lines", TEST).unwrap_err();
    assert_fired(&err, "durable_test::fsync");
    scenario.teardown();
}

#[test]
fn create_dir_all_fails_at_the_level_it_cannot_create() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b/c");
    // The first level is created, the second fails.
    fail::cfg("durable_test::create_dir", "1*off->return").unwrap();
    let err = durable::create_dir_all(&deep, TEST).unwrap_err();
    fail::remove("durable_test::create_dir");
    assert_fired(&err, "durable_test::create_dir");
    assert_eq!(
        (err.op(), err.path()),
        ("create directory", &*dir.path().join("a/b"))
    );
    assert_eq!(names(dir.path()), vec!["a"]);
    assert!(names(&dir.path().join("a")).is_empty());
    // A second call completes what the first began.
    durable::create_dir_all(&deep, TEST).unwrap();
    assert!(deep.is_dir());
    scenario.teardown();
}

#[test]
fn rename_truncate_and_remove_fail_with_nothing_done() {
    let scenario = FailScenario::setup();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str| dir.path().join(name);
    fs::write(file("a"), b"0123456789").unwrap();
    fs::write(file(".tmp-leftover"), b"").unwrap();
    fs::create_dir(file("d")).unwrap();
    let listing = names(dir.path());

    fail::cfg("durable_test::rename", "return").unwrap();
    let err = durable::rename(&file("a"), &file("b"), TEST).unwrap_err();
    assert_fired(&err, "durable_test::rename");

    fail::cfg("durable_test::truncate", "return").unwrap();
    let err = durable::truncate(&file("a"), 2, TEST).unwrap_err();
    assert_fired(&err, "durable_test::truncate");
    assert_eq!(fs::read(file("a")).unwrap(), b"0123456789");

    fail::cfg("durable_test::remove", "return").unwrap();
    let err = durable::remove_files(dir.path(), &["a".to_owned()], TEST).unwrap_err();
    assert_fired(&err, "durable_test::remove");
    let err = durable::remove_dirs(dir.path(), &["d".to_owned()], TEST).unwrap_err();
    assert_fired(&err, "durable_test::remove");
    let err = durable::remove_temp_files(dir.path(), TEST).unwrap_err();
    assert_fired(&err, "durable_test::remove");
    // Nothing to remove: nothing to fail.
    durable::remove_files(dir.path(), &[], TEST).unwrap();
    assert_eq!(names(dir.path()), listing);
    scenario.teardown();
}

#[test]
fn a_component_without_failpoints_is_never_failed() {
    let scenario = FailScenario::setup();
    for name in all_names() {
        fail::cfg(name, "return").unwrap();
    }
    let none = Failpoints::NONE;
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("x/y");
    durable::create_dir_all(&sub, none).unwrap();
    let path = sub.join("f");
    let file = durable::create_new(&path, b"abc", none).unwrap();
    durable::write_all_at(&file, &path, 3, b"def", none).unwrap();
    durable::sync_data(&file, &path, none).unwrap();
    durable::write_atomic(&sub.join("g"), b"atomic", none).unwrap();
    durable::write_file(&sub.join("h"), b"plain", none).unwrap();
    durable::rename(&sub.join("h"), &sub.join("i"), none).unwrap();
    durable::sync_dir(&sub, none).unwrap();
    durable::truncate(&path, 1, none).unwrap();
    durable::remove_files(&sub, &["i".to_owned()], none).unwrap();
    assert_eq!(durable::remove_temp_files(&sub, none).unwrap(), 0);
    durable::remove_dirs(dir.path(), &["x".to_owned()], none).unwrap();
    assert!(names(dir.path()).is_empty());
    scenario.teardown();
}
