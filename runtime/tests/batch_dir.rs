//! The exactly-once batch-directory sink: atomic `<prefix>-<ms>/part-*` directories, sorted
//! part files, nothing for empty batches, replays skipped, crash leftovers removed.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use weir::dstream::QueueStream;
use weir::sinks::batch_dir::{BatchDirSink, Commit, MARKER_FILE, SinkError};
use weir::testing::ManualClock;

/// Every entry of `dir`, by name.
fn entries(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The part files of a batch directory, by name (the commit marker left out).
fn parts(dir: &Path) -> BTreeSet<String> {
    let mut parts = entries(dir);
    assert!(
        parts.remove(MARKER_FILE),
        "{} has its marker",
        dir.display()
    );
    parts
}

fn read(path: PathBuf) -> String {
    fs::read_to_string(path).unwrap()
}

/// A word count over `queue` saved under `prefix` (two partitions).
fn word_count(queue: &QueueStream<String>, prefix: &Path) -> ManualClock {
    let (q, prefix) = (queue.clone(), prefix.to_path_buf());
    ManualClock::new(1000, 2, move |ctx| {
        ctx.queue_stream(&q)
            .flat_map(|l: &String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .map(|w| (w.clone(), 1u64))
            .reduce_by_key(|a, b| a + b)
            .map(|(w, n)| format!("{w}\t{n}"))
            .save_as_text_files(&prefix);
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_batch_becomes_one_directory_of_sorted_part_files() {
    let out = tempfile::tempdir().unwrap();
    let queue: QueueStream<String> = QueueStream::new(true, 2);
    queue.push(vec![
        "the cat the dog".into(),
        "a cat".into(),
        "zebra yak".into(),
    ]);
    queue.push(vec![]);
    queue.push(vec!["dog".into()]);
    let mut clock = word_count(&queue, &out.path().join("batch"));
    clock.run(3).await.unwrap();

    // The empty second batch wrote nothing; nothing hidden or temporary is left.
    assert_eq!(
        entries(out.path()),
        BTreeSet::from(["batch-1000".to_owned(), "batch-3000".to_owned()])
    );
    let first = out.path().join("batch-1000");
    assert_eq!(
        entries(&first),
        BTreeSet::from([
            MARKER_FILE.to_owned(),
            "part-00000".to_owned(),
            "part-00001".to_owned()
        ])
    );
    let mut all = Vec::new();
    for part in parts(&first) {
        let text = read(first.join(&part));
        let lines: Vec<&str> = text.lines().collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted, "{part} is sorted");
        all.extend(lines.into_iter().map(str::to_owned));
    }
    all.sort();
    assert_eq!(
        all,
        vec!["a\t1", "cat\t2", "dog\t1", "the\t2", "yak\t1", "zebra\t1"]
    );
    let third: String = parts(&out.path().join("batch-3000"))
        .into_iter()
        .map(|p| read(out.path().join("batch-3000").join(p)))
        .collect();
    assert_eq!(third, "dog\t1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_batch_does_not_write_a_second_copy() {
    let out = tempfile::tempdir().unwrap();
    let queue: QueueStream<String> = QueueStream::new(true, 1);
    queue.push(vec!["x".into(), "y".into()]);
    let attempts = Arc::new(AtomicUsize::new(0));
    let (q, prefix, a) = (queue.clone(), out.path().join("out"), Arc::clone(&attempts));
    let mut clock = ManualClock::new(1000, 1, move |ctx| {
        let lines = ctx.queue_stream(&q);
        lines.save_as_text_files(&prefix);
        // A second output that fails the first attempt: the batch runs again, and with it
        // the sink's job.
        let a = Arc::clone(&a);
        lines.foreach_batch(move |_| {
            if a.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("injected failure of another output".into())
            } else {
                Ok(())
            }
        });
    })
    .unwrap();

    let err = clock.run(1).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    let dir = out.path().join("out-1000");
    assert_eq!(read(dir.join("part-00000")), "x\ny\n");
    // Mark the committed directory: a second copy would replace it.
    fs::write(dir.join("marker"), b"first commit").unwrap();

    clock.run(1).await.unwrap(); // the same batch again, then complete
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(read(dir.join("marker")), "first commit");
    assert_eq!(read(dir.join("part-00000")), "x\ny\n");
    assert_eq!(entries(out.path()), BTreeSet::from(["out-1000".to_owned()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_part_files_and_rename_leaves_nothing_visible_and_is_cleaned_up() {
    let out = tempfile::tempdir().unwrap();
    let prefix = out.path().join("batch");
    let sink = BatchDirSink::new(&prefix);
    // The crashed writer: one of two part files written, then the process dies.
    let mut staged = sink.begin(1000).unwrap().unwrap();
    staged.write_part(0, &["half"]).unwrap();
    let temp = staged.temp_dir().to_path_buf();
    staged.abandon();
    assert!(temp.join("part-00000").is_file());
    assert!(temp.file_name().unwrap().to_str().unwrap().starts_with('.'));
    assert!(!sink.is_committed(1000));
    assert!(!out.path().join("batch-1000").exists());

    // The restarted application builds its graph and re-runs the batch.
    let queue: QueueStream<String> = QueueStream::new(true, 2);
    queue.push(vec!["b".into(), "a".into()]);
    let (q, p) = (queue.clone(), prefix.clone());
    let mut clock = ManualClock::new(1000, 2, move |ctx| {
        ctx.queue_stream(&q).save_as_text_files(&p);
    })
    .unwrap();
    // Building the graph touches nothing (a second process, refused at the storage lock,
    // builds its graph too): the leftover goes at the sink's first batch.
    assert!(
        temp.exists(),
        "building the graph removed a batch in progress"
    );
    clock.run(1).await.unwrap();
    assert!(!temp.exists(), "the leftover is removed at the first batch");
    assert_eq!(
        entries(out.path()),
        BTreeSet::from(["batch-1000".to_owned()])
    );
    let dir = out.path().join("batch-1000");
    assert_eq!(read(dir.join("part-00000")), "b\n");
    assert_eq!(read(dir.join("part-00001")), "a\n");
}

#[test]
fn remove_leftovers_removes_only_this_prefixs_temporaries() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    for t in [1000, 2000] {
        let mut staged = sink.begin(t).unwrap().unwrap();
        staged.write_part(0, &[t]).unwrap();
        staged.abandon();
    }
    let other = BatchDirSink::new(out.path().join("other"));
    other.begin(1000).unwrap().unwrap().abandon();
    fs::create_dir(out.path().join(".batch-notes")).unwrap(); // not a temporary
    sink.write_batch(3000, [&["kept"][..]]).unwrap();

    assert_eq!(sink.remove_leftovers().unwrap(), 2);
    let left = entries(out.path());
    assert!(left.contains("batch-3000"));
    assert!(left.contains(".batch-notes"));
    assert_eq!(
        left.iter()
            .filter(|n| n.starts_with(".other-1000.tmp-"))
            .count(),
        1
    );
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(sink.remove_leftovers().unwrap(), 0);
}

#[test]
fn racing_attempts_commit_once() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("b"));
    let mut first = sink.begin(5).unwrap().unwrap();
    let mut second = sink.begin(5).unwrap().unwrap();
    first.write_part(0, &["one"]).unwrap();
    second.write_part(0, &["two"]).unwrap();
    let second_temp = second.temp_dir().to_path_buf();
    assert!(matches!(
        first.commit().unwrap(),
        Commit::Written { parts: 1, .. }
    ));
    assert_eq!(
        second.commit().unwrap(),
        Commit::AlreadyCommitted(out.path().join("b-5"))
    );
    assert!(!second_temp.exists());
    assert_eq!(read(out.path().join("b-5/part-00000")), "one\n");
    assert!(sink.begin(5).unwrap().is_none());
}

#[test]
fn empty_batches_write_nothing_and_unsorted_keeps_partition_order() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("x")).sort_lines(false);
    let empty: [&[u32]; 2] = [&[], &[]];
    assert_eq!(sink.write_batch(1, empty).unwrap(), Commit::Empty);
    assert!(entries(out.path()).is_empty());
    sink.write_batch(2, [&[3, 1, 2][..], &[]]).unwrap();
    assert_eq!(read(out.path().join("x-2/part-00000")), "3\n1\n2\n");
    assert_eq!(read(out.path().join("x-2/part-00001")), "");
}

#[test]
fn a_prefix_without_a_name_is_a_clear_error() {
    let sink = BatchDirSink::new("");
    let err = sink.write_batch(1, [&["a"][..]]).unwrap_err();
    assert!(matches!(err, SinkError::BadPrefix(_)));
    assert!(err.to_string().contains("has no file name"), "{err}");
}

#[test]
fn the_parent_directory_is_created() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("deep/er/batch"));
    sink.write_batch(7, [&["z"][..]]).unwrap();
    assert_eq!(read(out.path().join("deep/er/batch-7/part-00000")), "z\n");
}

// ================ issue 16, item 4: "a directory exists" is not "committed" ================ //
// See: issue 16, item 4. The sink took any entry under a batch's name for that batch's commit,
// so an empty or foreign `batch-<t>` (or a symlink) made a batch with elements count as done:
// silent loss. A batch is committed only by a valid commit marker whose parts match.

/// Writes batch `time` with one element and checks it was refused because of `path`: an
/// error naming it, and nothing committed. Returns the error's message.
fn assert_refused(sink: &BatchDirSink, time: u64, path: &Path) -> String {
    let result = sink.write_batch(time, [&["lost?"][..]]);
    let err = match result {
        Err(err) => err,
        Ok(commit) => panic!("{} was taken for a commit: {commit:?}", path.display()),
    };
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "the error names {}: {err}",
        path.display()
    );
    assert!(
        matches!(&err, SinkError::Foreign { path: p, batch_time_ms, .. }
            if p == path && *batch_time_ms == time),
        "{err:?}"
    );
    assert!(!sink.is_committed(time), "{}", path.display());
    assert!(matches!(
        sink.committed(time),
        Err(SinkError::Foreign { .. })
    ));
    err.to_string()
}

#[test]
fn an_empty_directory_under_a_batch_name_is_an_error_not_a_commit() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    let dir = out.path().join("batch-1000");
    fs::create_dir(&dir).unwrap();
    let err = assert_refused(&sink, 1000, &dir);
    assert!(err.contains("holds no commit marker _COMMITTED"), "{err}");
    // Left as it was (not filled, not replaced), and no temporary directory stays behind.
    assert!(entries(&dir).is_empty());
    assert_eq!(
        entries(out.path()),
        BTreeSet::from(["batch-1000".to_owned()])
    );
}

#[test]
fn a_directory_of_part_files_without_a_marker_is_an_error_not_a_commit() {
    // Someone else's output, a copy in progress, or a batch written by a weir without
    // markers: the part files say nothing about being complete.
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    let dir = out.path().join("batch-1000");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("part-00000"), "half of it\n").unwrap();
    let err = assert_refused(&sink, 1000, &dir);
    assert!(err.contains("before commit markers"), "{err}");
    assert_eq!(read(dir.join("part-00000")), "half of it\n");
    assert_eq!(entries(&dir), BTreeSet::from(["part-00000".to_owned()]));
}

#[test]
fn an_entry_under_a_batch_name_that_is_not_a_directory_is_an_error() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    let file = out.path().join("batch-1000");
    fs::write(&file, "a file").unwrap();
    let err = assert_refused(&sink, 1000, &file);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(read(file), "a file");
}

#[cfg(unix)]
#[test]
fn a_symlink_under_a_batch_name_is_never_followed() {
    let out = tempfile::tempdir().unwrap();
    // A real commit of batch 1000, by another sink elsewhere: following the link would find
    // a valid batch directory.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = BatchDirSink::new(elsewhere.path().join("batch"));
    other.write_batch(1000, [&["theirs"][..]]).unwrap();
    let target = elsewhere.path().join("batch-1000");
    let link = out.path().join("batch-1000");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let sink = BatchDirSink::new(out.path().join("batch"));
    let err = assert_refused(&sink, 1000, &link);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(target.join("part-00000")), "theirs\n");
}

/// What a damage does, and how (to a committed batch directory).
type Damage = (&'static str, fn(&Path));

#[test]
fn a_commit_damaged_afterwards_is_an_error_not_a_skip() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    let parts: [&[&str]; 2] = [&["b", "a"], &["c"]];
    let damages: [Damage; 7] = [
        ("a part cut short", |dir| {
            fs::write(dir.join("part-00000"), "a\n").unwrap();
        }),
        ("a part's bytes changed", |dir| {
            fs::write(dir.join("part-00000"), "a\nB\n").unwrap();
        }),
        ("a part removed", |dir| {
            fs::remove_file(dir.join("part-00001")).unwrap();
        }),
        ("a part added", |dir| {
            fs::write(dir.join("part-00002"), "d\n").unwrap();
        }),
        (
            "a part replaced by a symbolic link to an identical copy",
            |dir| {
                let copy = dir.with_extension("copy");
                fs::copy(dir.join("part-00000"), &copy).unwrap();
                fs::remove_file(dir.join("part-00000")).unwrap();
                std::os::unix::fs::symlink(&copy, dir.join("part-00000")).unwrap();
            },
        ),
        (
            "the marker replaced by a symbolic link to an identical copy",
            |dir| {
                let copy = dir.with_extension("marker");
                fs::copy(dir.join(MARKER_FILE), &copy).unwrap();
                fs::remove_file(dir.join(MARKER_FILE)).unwrap();
                std::os::unix::fs::symlink(&copy, dir.join(MARKER_FILE)).unwrap();
            },
        ),
        ("every file but the parts removed", |dir| {
            for name in entries(dir) {
                if !name.starts_with("part-") {
                    fs::remove_file(dir.join(name)).unwrap();
                }
            }
        }),
    ];
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        let time = 1000 * (i as u64 + 1);
        sink.write_batch(time, parts).unwrap();
        assert!(sink.is_committed(time), "{what}");
        let dir = out.path().join(format!("batch-{time}"));
        damage(&dir);
        let result = sink.write_batch(time, parts);
        assert!(
            result.is_err(),
            "{what}: taken for a commit: {:?}",
            result.unwrap()
        );
        let err = result.unwrap_err();
        assert!(matches!(err, SinkError::Foreign { .. }), "{what}: {err}");
        assert!(!sink.is_committed(time), "{what}");
    }
}

#[test]
fn a_commit_copied_under_another_batch_name_is_not_that_batchs_commit() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch"));
    sink.write_batch(1000, [&["one"][..]]).unwrap();
    let copy = out.path().join("batch-2000");
    fs::create_dir(&copy).unwrap();
    for name in entries(&out.path().join("batch-1000")) {
        fs::copy(out.path().join("batch-1000").join(&name), copy.join(&name)).unwrap();
    }
    let err = assert_refused(&sink, 2000, &copy);
    assert!(err.contains("its commit marker is batch 1000's"), "{err}");
}

#[test]
fn the_commit_marker_lists_each_part_with_its_length_and_checksum() {
    let out = tempfile::tempdir().unwrap();
    let sink = BatchDirSink::new(out.path().join("batch")).suffix("txt");
    assert_eq!(sink.committed(1000).unwrap(), None);
    sink.write_batch(1000, [&["b", "a"][..], &[], &["c"]])
        .unwrap();
    let committed = sink.committed(1000).unwrap().unwrap();
    let dir = out.path().join("batch-1000.txt");
    assert_eq!(committed.dir, dir);
    let listed: Vec<(String, u64, u32)> = committed
        .parts
        .iter()
        .map(|p| (p.name.clone(), p.len, p.crc32c))
        .collect();
    let expected: Vec<(String, u64, u32)> = ["part-00000", "part-00001", "part-00002"]
        .into_iter()
        .map(|name| {
            let bytes = fs::read(dir.join(name)).unwrap();
            (name.to_owned(), bytes.len() as u64, crc32c::crc32c(&bytes))
        })
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(expected[0].1, 4);
    // Files that are not parts are not the marker's business (see the replay test above).
    fs::write(dir.join("notes"), "mine").unwrap();
    assert!(sink.is_committed(1000));
}
