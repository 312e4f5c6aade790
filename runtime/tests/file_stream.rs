//! The file stream: files moved into a directory are read exactly once across restarts and
//! crashes, the batch's file list is planned and replayed (a large file as byte ranges over
//! batches), what is remembered is bounded, and bad input (invalid UTF-8, a 100 MB line, a
//! file that vanishes) is reported, never fatal.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, SystemTime};

use weir::sources::file_stream::{BadUtf8, FileStreamOptions, LongLines, MissingFiles};
use weir::testing::{Collected, ManualClock};

/// Moves a file with `content` into `dir` the recommended way: written under a hidden name,
/// given the modification time `base + secs`, renamed in.
fn put(dir: &Path, name: &str, content: &[u8], secs: u64) {
    let temp = dir.join(format!(".{name}.writing"));
    fs::write(&temp, content).unwrap();
    set_mtime(&temp, secs);
    fs::rename(&temp, dir.join(name)).unwrap();
}

/// A fixed base time, so that tests control the modification times exactly.
fn base() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

fn set_mtime(path: &Path, secs: u64) {
    File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(base() + Duration::from_secs(secs))
        .unwrap();
}

/// A clock over `text_file_stream_with(dir, options)` collecting its lines.
fn lines_of(
    dir: &Path,
    options: FileStreamOptions,
    parallelism: usize,
) -> (ManualClock, Collected<String>) {
    let out = Collected::default();
    let (d, o) = (dir.to_path_buf(), out.clone());
    let clock = ManualClock::new(1000, parallelism, move |ctx| {
        o.collect(
            &ctx.text_file_stream_with(&d, options.clone())
                .uid("files")
                .map(|line: &weir::Str| line.to_string()),
        );
    })
    .unwrap();
    (clock, out)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_file_is_read_once_in_the_batch_after_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "1.txt", b"a\nb\n", 0);
    put(dir.path(), "2.txt", b"c", 1);
    let (mut clock, out) = lines_of(dir.path(), FileStreamOptions::new(), 2);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(1000), strings(&["a", "b", "c"]));
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(2000), Vec::<String>::new());
    put(dir.path(), "3.txt", b"d\n", 2);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(3000), strings(&["d"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_temporary_and_non_file_entries_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        ".hidden",
        "_SUCCESS",
        "x.tmp",
        "y.partial",
        "z.part",
        "w~",
        "u.temp",
    ] {
        fs::write(dir.path().join(name), b"ignored\n").unwrap();
    }
    fs::create_dir(dir.path().join("subdir")).unwrap();
    fs::write(dir.path().join("subdir/inner.txt"), b"ignored\n").unwrap();
    put(dir.path(), "data.txt", b"kept\n", 0);
    put(dir.path(), "skip.csv", b"filtered\n", 0);
    let options = FileStreamOptions::new().filter(|name| !name.ends_with(".csv"));
    let (mut clock, out) = lines_of(dir.path(), options, 2);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(1000), strings(&["kept"]));
    // A temporary file renamed to a proper name is read then.
    fs::rename(dir.path().join("x.tmp"), dir.path().join("x.txt")).unwrap();
    set_mtime(&dir.path().join("x.txt"), 1);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(2000), strings(&["ignored"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_batch_rereads_exactly_its_planned_files_and_a_restart_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "a", b"a1\na2\n", 0);
    let (mut clock, out) = lines_of(dir.path(), FileStreamOptions::new(), 2);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(1000), strings(&["a1", "a2"]));

    put(dir.path(), "b", b"b1\n", 1);
    clock.crash_mid_batch().unwrap(); // batch 2000 planned [b], then the driver died
    put(dir.path(), "c", b"c1\n", 2); // arrives while the driver is down
    // b grows after it was planned: the re-run reads it as planned, and nobody reads the rest.
    fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("b"))
        .unwrap()
        .write_all(b"late\n")
        .unwrap();
    set_mtime(&dir.path().join("b"), 1);
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(2000), strings(&["b1"]));
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(3000), strings(&["c1"]));

    clock.restart().unwrap(); // a clean restart from the checkpoint after batch 3000
    put(dir.path(), "d", b"d1\n", 3);
    clock.run(2).await.unwrap();
    assert_eq!(out.sorted(4000), strings(&["d1"]));
    assert_eq!(out.sorted(5000), Vec::<String>::new());
    let all: Vec<String> = out.batches().into_values().flatten().collect();
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        strings(&["a1", "a2", "b1", "c1", "d1"]),
        "each line once"
    );
}

/// Issue 16, item 6: a file larger than the byte budget is read over consecutive batches, a
/// byte range each; a batch that crashed re-reads exactly its range, the next one continues
/// where it ended, and a restart reads nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_file_continues_exactly_across_a_crash_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (1..=10).map(|i| format!("l{i:02}\n")).collect(); // 4 bytes a line
    put(dir.path(), "a", text.as_bytes(), 0);
    let options = FileStreamOptions::new().max_bytes_per_batch(10);
    let (mut clock, out) = lines_of(dir.path(), options, 2);
    clock.run(1).await.unwrap();
    // [0, 10): the lines starting at 0, 4 and 8 (the last read past the range's end).
    assert_eq!(out.sorted(1000), strings(&["l01", "l02", "l03"]));

    clock.crash_mid_batch().unwrap(); // batch 2000 planned [10, 20), then the driver died
    put(dir.path(), "b", b"b1\n", 1); // arrives while the driver is down
    clock.run(1).await.unwrap();
    assert_eq!(out.sorted(2000), strings(&["l04", "l05"]));
    clock.run(2).await.unwrap();
    assert_eq!(out.sorted(3000), strings(&["l06", "l07", "l08"]));
    // The rest of `a` first, the whole budget: `b` waits for the next batch.
    assert_eq!(out.sorted(4000), strings(&["l09", "l10"]));

    clock.restart().unwrap(); // a clean restart from the checkpoint after batch 4000
    clock.run(2).await.unwrap();
    assert_eq!(out.sorted(5000), strings(&["b1"]));
    assert_eq!(out.sorted(6000), Vec::<String>::new());
    let mut all: Vec<String> = out.batches().into_values().flatten().collect();
    all.sort();
    let mut expected: Vec<String> = text.lines().map(str::to_owned).collect();
    expected.insert(0, "b1".to_owned());
    assert_eq!(all, expected, "each line once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_files_per_batch_takes_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "late", b"3\n", 30);
    put(dir.path(), "early", b"1\n", 10);
    put(dir.path(), "mid-b", b"2b\n", 20);
    put(dir.path(), "mid-a", b"2a\n", 20);
    let (mut clock, out) = lines_of(
        dir.path(),
        FileStreamOptions::new().max_files_per_batch(2),
        1,
    );
    clock.run(3).await.unwrap();
    // The same order as (modification time, name): early, mid-a | mid-b, late.
    assert_eq!(out.batch(1000), strings(&["1", "2a"]));
    assert_eq!(out.batch(2000), strings(&["2b", "3"]));
    assert_eq!(out.batch(3000), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processed_file_that_is_modified_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "f", b"v1\n", 0);
    let (mut clock, out) = lines_of(dir.path(), FileStreamOptions::new(), 1);
    clock.run(1).await.unwrap();
    fs::write(dir.path().join("f"), b"v2\n").unwrap();
    set_mtime(&dir.path().join("f"), 5);
    clock.run(1).await.unwrap();
    assert_eq!(out.all_sorted(), vec![strings(&["v1"]), vec![]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remember_window_bounds_what_is_kept_and_older_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStreamOptions::new().remember(Duration::from_secs(10));
    put(dir.path(), "old", b"old\n", 0);
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.run(1).await.unwrap();
    put(dir.path(), "new", b"new\n", 100); // the watermark moves to 90 s: "old" is forgotten
    clock.run(1).await.unwrap();
    // Renamed in with a modification time below the watermark: ignored.
    put(dir.path(), "stale", b"stale\n", 50);
    // "old" is no longer remembered; touched to a time above the watermark it is new again.
    fs::write(dir.path().join("old"), b"old again\n").unwrap();
    set_mtime(&dir.path().join("old"), 95);
    // "new" is remembered (within the window): its modification is ignored.
    fs::write(dir.path().join("new"), b"new again\n").unwrap();
    set_mtime(&dir.path().join("new"), 96);
    clock.crash_mid_batch().unwrap(); // what is remembered survives in the checkpoint
    clock.run(1).await.unwrap();
    assert_eq!(
        out.all_sorted(),
        vec![
            strings(&["old"]),
            strings(&["new"]),
            strings(&["old again"])
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_from_the_future_does_not_hide_later_files() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileStreamOptions::new().remember(Duration::from_secs(10));
    let future = dir.path().join("future");
    fs::write(&future, b"future\n").unwrap();
    File::options()
        .write(true)
        .open(&future)
        .unwrap()
        .set_modified(SystemTime::now() + Duration::from_secs(86_400))
        .unwrap();
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.run(1).await.unwrap();
    fs::write(dir.path().join("now"), b"now\n").unwrap(); // modified now
    clock.run(1).await.unwrap();
    assert_eq!(
        out.all_sorted(),
        vec![strings(&["future"]), strings(&["now"])]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_files_only_ignores_what_is_there_at_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "before", b"before\n", 0);
    let (mut clock, out) = lines_of(dir.path(), FileStreamOptions::new().new_files_only(true), 1);
    clock.run(1).await.unwrap();
    put(dir.path(), "after", b"after\n", 1);
    clock.run(1).await.unwrap();
    assert_eq!(out.all_sorted(), vec![vec![], strings(&["after"])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_directory_gives_empty_batches_until_it_exists() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("later");
    let (mut clock, out) = lines_of(&dir, FileStreamOptions::new(), 1);
    clock.run(1).await.unwrap();
    fs::create_dir(&dir).unwrap();
    put(&dir, "x", b"x\n", 0);
    clock.run(1).await.unwrap();
    assert_eq!(out.all_sorted(), vec![vec![], strings(&["x"])]);
}

// ===================================== bad input ===================================== //

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_lines_are_reported_and_skipped_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    put(
        dir.path(),
        "mixed",
        b"good 1\nbad \xff\xfe here\ngood 2\n\xc3\n\xc3\xa9t\xc3\xa9\n",
        0,
    );
    put(dir.path(), "clean", b"other file\n", 0);
    let options = FileStreamOptions::new();
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 2);
    clock.run(1).await.unwrap();
    assert_eq!(
        out.sorted(1000),
        strings(&["good 1", "good 2", "other file", "été"])
    );
    assert_eq!(stats.snapshot().bad_utf8_lines, 2);
    let problems = stats.recent_problems();
    assert_eq!(problems.len(), 2);
    assert!(
        problems[0].contains("line 2 of") && problems[0].contains("mixed (at byte 7)"),
        "{problems:?}"
    );
    assert!(problems[0].contains("invalid byte at 11"), "{problems:?}");
    assert!(problems[1].contains("line 4 of"), "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_can_be_replaced_instead() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "f", b"a\xffb\n", 0);
    let options = FileStreamOptions::new().bad_utf8(BadUtf8::Replace);
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.run(1).await.unwrap();
    assert_eq!(out.batch(1000), strings(&["a\u{fffd}b"]));
    assert_eq!(stats.snapshot().bad_utf8_lines, 1);
}

/// Writes a file with a short line, a `len`-byte line of `x` and another short line, in
/// 1 MiB writes (never holding the long line in memory).
fn file_with_a_long_line(path: &Path, len: usize) {
    let mut file = BufWriter::new(File::create(path).unwrap());
    file.write_all(b"before\n").unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    file.write_all(b"\nafter\n").unwrap();
    file.flush().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_line_is_skipped_with_bounded_memory_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join(".big.writing");
    file_with_a_long_line(&temp, 100 * 1024 * 1024);
    set_mtime(&temp, 0);
    fs::rename(&temp, dir.path().join("big")).unwrap();
    put(dir.path(), "small", b"small\n", 1);

    let options = FileStreamOptions::new(); // 1 MiB maximum, long lines skipped
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 2);
    // 64 MiB per batch: the first batch reads the file's first 64 MiB, where the long line
    // starts (and reads it to its end, keeping nothing); the second the rest, and `small`.
    clock.run(2).await.unwrap();
    assert_eq!(out.sorted(1000), strings(&["before"]));
    assert_eq!(out.sorted(2000), strings(&["after", "small"]));
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.long_lines, 1);
    assert_eq!(snapshot.bytes, 100 * 1024 * 1024 + 14 + 6);
    let problems = stats.recent_problems();
    assert!(
        problems[0].contains("line 2 of")
            && problems[0].contains(
                "(at byte 7) is 104857600 bytes long, over the maximum of 1048576; it is skipped"
            ),
        "{problems:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_line_can_be_cut_instead() {
    let dir = tempfile::tempdir().unwrap();
    let temp = dir.path().join(".big.writing");
    file_with_a_long_line(&temp, 3 * 1024 * 1024);
    set_mtime(&temp, 0);
    fs::rename(&temp, dir.path().join("big")).unwrap();
    let options = FileStreamOptions::new()
        .max_line_len(1000)
        .long_lines(LongLines::Truncate);
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.run(1).await.unwrap();
    let lines = out.batch(1000);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], "before");
    assert_eq!(lines[1], "x".repeat(1000));
    assert_eq!(lines[2], "after");
    assert_eq!(stats.snapshot().long_lines, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_vanishes_after_planning_is_reported_and_read_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "stays", b"stays\n", 0);
    put(dir.path(), "goes", b"goes\n", 0);
    let options = FileStreamOptions::new();
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.crash_mid_batch().unwrap(); // batch 1000 planned both files
    fs::remove_file(dir.path().join("goes")).unwrap();
    clock.run(1).await.unwrap();
    assert_eq!(out.batch(1000), strings(&["stays"]));
    assert_eq!(stats.snapshot().missing_files, 1);
    assert!(
        stats.recent_problems()[0].contains("goes was planned for a batch but is gone"),
        "{:?}",
        stats.recent_problems()
    );
    // It is not planned again, even if it comes back.
    put(dir.path(), "goes", b"goes\n", 0);
    clock.run(1).await.unwrap();
    assert_eq!(out.batch(2000), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_missing_files_fail_the_batch_fails_until_the_file_is_back() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "goes", b"goes\n", 0);
    let options = FileStreamOptions::new().missing_files(MissingFiles::Fail);
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.crash_mid_batch().unwrap();
    fs::rename(dir.path().join("goes"), dir.path().join(".away")).unwrap();
    let err = clock.run(1).await.unwrap_err().to_string();
    assert!(
        err.contains("goes was planned for this batch but is gone"),
        "{err}"
    );
    fs::rename(dir.path().join(".away"), dir.path().join("goes")).unwrap();
    clock.run(1).await.unwrap(); // the same batch, now complete
    assert_eq!(out.batch(1000), strings(&["goes"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_shorter_than_planned_is_read_to_its_end_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "f", b"one\ntwo\n", 0);
    let options = FileStreamOptions::new();
    let stats = options.stats();
    let (mut clock, out) = lines_of(dir.path(), options, 1);
    clock.crash_mid_batch().unwrap();
    fs::write(dir.path().join("f"), b"one\n").unwrap();
    clock.run(1).await.unwrap();
    assert_eq!(out.batch(1000), strings(&["one"]));
    assert_eq!(stats.snapshot().changed_files, 1);
    assert!(stats.recent_problems()[0].contains("is shorter than when it was planned"));
}

// ================================ on the real engine ================================ //

/// Waits until `done` holds, checked again after every completed batch, at most 60 s.
async fn until(events: &mut weir_actors::EventSubscription, done: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done() {
            while !matches!(
                events.next().await.expect("the event feed is open").event,
                weir::Event::BatchCompleted { .. }
            ) {}
        }
    })
    .await
    .expect("timed out waiting for the output");
}

/// Every `word\tcount` line under `out`, with the batch directories they came from.
fn output_lines(out: &Path) -> (Vec<String>, usize) {
    let Ok(entries) = fs::read_dir(out) else {
        return (Vec::new(), 0);
    };
    let mut lines = Vec::new();
    let mut dirs = 0;
    for entry in entries {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        assert!(
            name.starts_with("batch-"),
            "only committed batch directories: {name}"
        );
        dirs += 1;
        for part in fs::read_dir(entry.path()).unwrap() {
            let part = part.unwrap();
            if part.file_name() == weir::sinks::batch_dir::MARKER_FILE {
                continue; // the commit marker, not data
            }
            let text = fs::read_to_string(part.path()).unwrap();
            lines.extend(text.lines().map(str::to_owned));
        }
    }
    lines.sort();
    (lines, dirs)
}

fn word_count_context(
    config: weir::StreamingConfig,
    input: &Path,
    out: &Path,
) -> Result<weir::StreamingContext, weir::Error> {
    let ctx = weir::StreamingContext::new(config);
    ctx.text_file_stream(input)
        .uid("input")
        .flat_map(|l: &weir::Str| l.words())
        .map(|w| (w.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .map(|(w, n)| format!("{w}\t{n}"))
        .save_as_text_files(out.join("batch"));
    Ok(ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_word_count_over_files_survives_a_restart_on_the_engine_without_rereading() {
    let root = tempfile::tempdir().unwrap();
    let (input, out, checkpoints) = (
        root.path().join("in"),
        root.path().join("out"),
        root.path().join("checkpoints"),
    );
    fs::create_dir(&input).unwrap();
    put(&input, "one.txt", b"the cat\nthe dog\n", 0);
    let configure = |config: weir::StreamingConfig| {
        let mut config = config.batch_interval(Duration::from_millis(100));
        config.engine.name_prefix = format!("fs-e2e-{}/", fastrand::u32(..));
        config.parallelism = 2;
        config
    };

    let (i, o) = (input.clone(), out.clone());
    let mut ctx = weir::StreamingContext::get_or_create(&checkpoints, move |config| {
        word_count_context(configure(config), &i, &o)
    })
    .await
    .unwrap();
    assert!(ctx.restored().is_none());
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    until(&mut events, || output_lines(&out).1 == 1).await;
    ctx.stop(true).await.unwrap();
    assert_eq!(output_lines(&out).0, ["cat\t1", "dog\t1", "the\t2"]);

    put(&input, "two.txt", b"a cat\n", 1);
    let (i, o) = (input.clone(), out.clone());
    let mut ctx = weir::StreamingContext::get_or_create(&checkpoints, move |config| {
        word_count_context(configure(config), &i, &o)
    })
    .await
    .unwrap();
    assert!(ctx.restored().is_some(), "restored from the checkpoint");
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    until(&mut events, || output_lines(&out).1 == 2).await;
    ctx.stop(true).await.unwrap();
    // one.txt was not read again after the restart: its words appear once.
    assert_eq!(
        output_lines(&out),
        (
            ["a\t1", "cat\t1", "cat\t1", "dog\t1", "the\t2"]
                .map(str::to_owned)
                .to_vec(),
            2
        )
    );
}

/// Copies the directory tree `from` to `to`.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `tests/fixtures/file-stream-v1/checkpoints` is what weir 0.1 (before byte ranges) left in
/// the checkpoint directory of `word_count_context` over `one.txt` and `two.txt` (put as
/// below) after a graceful stop. Its file stream's state has that release's plan and position
/// types; it is read as today's, and neither file is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_stream_checkpoint_of_weir_0_1_restores_and_reads_nothing_twice() {
    let root = tempfile::tempdir().unwrap();
    let (input, out, checkpoints) = (
        root.path().join("in"),
        root.path().join("out"),
        root.path().join("checkpoints"),
    );
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/file-stream-v1/checkpoints"),
        &checkpoints,
    );
    fs::create_dir(&input).unwrap();
    put(&input, "one.txt", b"the cat\nthe dog\n", 0);
    put(&input, "two.txt", b"a bird\n", 1);
    put(&input, "three.txt", b"a fish\n", 2);
    let (i, o) = (input.clone(), out.clone());
    let mut ctx = weir::StreamingContext::get_or_create(&checkpoints, move |config| {
        let mut config = config.batch_interval(Duration::from_millis(100));
        config.engine.name_prefix = format!("fs-v1-{}/", fastrand::u32(..));
        config.parallelism = 2;
        word_count_context(config, &i, &o)
    })
    .await
    .unwrap();
    assert!(
        ctx.restored().is_some(),
        "restored from weir 0.1's checkpoint"
    );
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    until(&mut events, || !output_lines(&out).0.is_empty()).await;
    ctx.stop(true).await.unwrap();
    // Only three.txt: the two files the old checkpoint had read are not read again.
    assert_eq!(
        output_lines(&out),
        (["a\t1", "fish\t1"].map(str::to_owned).to_vec(), 1)
    );
}
