//! `get_or_create` refuses a checkpoint that does not fit the current code at once, naming the
//! operator — it does not start a driver that fails on it again and again until the root gives
//! up.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;
use std::time::Duration;

use weir::dstream::QueueStream;
use weir::{Error, StreamingConfig, StreamingContext};

fn configure(config: StreamingConfig) -> StreamingConfig {
    let mut config = config.batch_interval(Duration::from_millis(50));
    config.engine.name_prefix = format!("restore-check-{}/", fastrand::u32(..));
    config.parallelism = 1;
    config
}

/// [`configure`], with every operator's state in state files however small (what a large state
/// does; with incremental checkpoints, `map_with_state`'s a chain of them).
fn configure_files(config: StreamingConfig) -> StreamingConfig {
    let mut config = configure(config);
    config.state_inline_max_bytes = 0;
    config
}

/// Runs a running count per word until one batch with records completed, then stops.
async fn run_once(dir: &Path) {
    let queue = QueueStream::new(true, 1);
    queue.push(vec!["a".to_owned(), "b".to_owned(), "a".to_owned()]);
    let (seen, mut saw) = tokio::sync::watch::channel(false);
    let mut ctx = StreamingContext::get_or_create(dir, |config| {
        let ctx = StreamingContext::new(configure(config));
        ctx.queue_stream(&queue)
            .uid("words")
            .map(|w: &String| (w.clone(), 1u64))
            .update_state_by_key(|values: &[u64], total: Option<u64>| {
                Some(total.unwrap_or(0) + values.iter().sum::<u64>())
            })
            .uid("totals")
            .foreach_batch(move |batch| {
                if !batch.is_empty() {
                    seen.send_replace(true);
                }
                Ok(())
            });
        Ok(ctx)
    })
    .await
    .unwrap();
    ctx.start().await.unwrap();
    tokio::time::timeout(Duration::from_secs(30), saw.wait_for(|seen| *seen))
        .await
        .expect("the totals are output")
        .unwrap();
    // A graceful stop checkpoints the completed batches, state included.
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_state_type_is_refused_by_get_or_create() {
    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path()).await;
    let queue: QueueStream<String> = QueueStream::new(true, 1);
    let err = StreamingContext::get_or_create(dir.path(), |config| {
        let ctx = StreamingContext::new(configure(config));
        ctx.queue_stream(&queue)
            .uid("words")
            .map(|w: &String| (w.clone(), 1u64))
            // The state is now a String: the checkpoint's u64 totals do not fit.
            .update_state_by_key(|_: &[u64], s: Option<String>| s.or(Some(String::new())))
            .uid("totals")
            .foreach_batch(|_| Ok(()));
        Ok(ctx)
    })
    .await
    .unwrap_err();
    match err {
        Error::Incompatible(message) => assert!(message.contains("\"totals\""), "{message}"),
        other => panic!("expected Incompatible, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_stateful_operator_is_refused_unless_its_state_may_be_dropped() {
    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path()).await;
    let build = |allow: bool| {
        move |config: StreamingConfig| {
            let mut config = configure(config);
            config.allow_unmatched_state = allow;
            let ctx = StreamingContext::new(config);
            let queue: QueueStream<String> = QueueStream::new(true, 1);
            // The running totals are gone from the code.
            ctx.queue_stream(&queue)
                .uid("words")
                .foreach_batch(|_| Ok(()));
            Ok(ctx)
        }
    };
    let err = StreamingContext::get_or_create(dir.path(), build(false))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Incompatible(m) if m.contains("\"totals\"")),
        "{err}"
    );
    let ctx = StreamingContext::get_or_create(dir.path(), build(true))
        .await
        .unwrap();
    assert!(ctx.restored().is_some());
    assert!(
        ctx.restore_report().iter().any(|l| l.contains("totals")),
        "{:?}",
        ctx.restore_report()
    );
}

// ------------------------------------------------------------------------------------------
// Savepoints
// ------------------------------------------------------------------------------------------

type Totals = std::collections::BTreeMap<String, u64>;

/// A running count per word over `queue` (uid `source`), the totals (uid `totals`) sent on
/// `out` after every batch with records; with `added`, a second stateful operator (uid
/// `added`) counting since it was added, sent on `added`.
fn word_totals(
    ctx: &StreamingContext,
    queue: &QueueStream<String>,
    source: Option<&str>,
    out: tokio::sync::watch::Sender<Totals>,
    added: Option<tokio::sync::watch::Sender<Totals>>,
) {
    let words = ctx.queue_stream(queue);
    let words = match source {
        Some(uid) => words.uid(uid),
        None => words,
    };
    let pairs = words.map(|w: &String| (w.clone(), 1u64));
    running_total(&pairs, "totals", out);
    if let Some(added) = added {
        running_total(&pairs, "added", added);
    }
}

/// A running count per word of `pairs` (uid `uid`), sent on `out` after every batch with
/// records.
fn running_total(
    pairs: &weir::DStream<(String, u64)>,
    uid: &str,
    out: tokio::sync::watch::Sender<Totals>,
) {
    pairs
        .update_state_by_key(|values: &[u64], total: Option<u64>| {
            Some(total.unwrap_or(0) + values.iter().sum::<u64>())
        })
        .uid(uid)
        .foreach_batch(move |batch| {
            if !batch.is_empty() {
                out.send_replace(batch.iter().cloned().collect());
            }
            Ok(())
        });
}

fn totals(pairs: &[(&str, u64)]) -> Totals {
    pairs.iter().map(|(w, n)| ((*w).to_owned(), *n)).collect()
}

async fn until_equal(rx: &mut tokio::sync::watch::Receiver<Totals>, want: &Totals) {
    let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|got| got == want))
        .await
        .map(|got| got.map(|_| ()));
    if waited.is_err() {
        panic!("never output {want:?}; last {:?}", *rx.borrow());
    }
}

fn words(list: &[&str]) -> Vec<String> {
    list.iter().map(|w| (*w).to_owned()).collect()
}

/// Copies the directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
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

/// A started job in `dir` (state in files) whose source (uid `words`) read `a b a` and whose
/// totals (uid `totals`) were output; its queue and the totals it outputs.
async fn running_job_with_state(
    dir: &Path,
) -> (
    StreamingContext,
    QueueStream<String>,
    tokio::sync::watch::Receiver<Totals>,
) {
    let queue = QueueStream::new(true, 1);
    queue.push(words(&["a", "b", "a"]));
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::new(configure_files(StreamingConfig::local(dir)));
    word_totals(&ctx, &queue, Some("words"), out, None);
    ctx.start().await.unwrap();
    until_equal(&mut rx, &totals(&[("a", 2), ("b", 1)])).await;
    (ctx, queue, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_of_a_running_job_restores_a_changed_program_from_a_copy_once() {
    let root = tempfile::tempdir().unwrap();
    let (job1, job2) = (root.path().join("job1"), root.path().join("job2"));
    let (taken, moved) = (root.path().join("taken"), root.path().join("moved"));

    // A running job, with state.
    let (ctx, queue, mut rx) = running_job_with_state(&job1).await;
    // A later batch's output: batches run one at a time, so the one with the words has
    // completed, and a checkpoint taken now holds its state (not only lists it as pending).
    tokio::time::timeout(Duration::from_secs(30), rx.changed())
        .await
        .expect("a later batch")
        .unwrap();

    let info = ctx.savepoint(weir::Storage::local(&taken)).await.unwrap();
    let ids: Vec<&str> = info
        .manifest
        .operators
        .iter()
        .map(|o| o.id.as_str())
        .collect();
    assert!(ids.contains(&"totals") && ids.contains(&"words"), "{ids:?}");
    assert!(taken.join("savepoint.json").is_file());
    // A target that holds a savepoint is refused.
    let again = ctx
        .savepoint(weir::Storage::local(&taken))
        .await
        .unwrap_err();
    assert!(
        again.to_string().contains("already holds a savepoint"),
        "{again}"
    );
    // The job goes on after its savepoint; what it does next is not in the savepoint.
    queue.push(words(&["z"]));
    until_equal(&mut rx, &totals(&[("a", 2), ("b", 1), ("z", 1)])).await;
    ctx.stop(true).await.unwrap();

    // The state is in the savepoint's state files, not inline.
    let state_files = std::fs::read_dir(taken.join("state")).unwrap().count();
    assert!(state_files > 0, "no state file in the savepoint");
    // The savepoint moves: copied elsewhere, the original deleted.
    copy_dir(&taken, &moved);
    std::fs::remove_dir_all(&taken).unwrap();

    // A changed program: a new source (the old one's position is dropped, as allowed) and an
    // added stateful operator, which starts empty; the totals continue from the savepoint.
    let restored = |queue: &QueueStream<String>,
                    out: tokio::sync::watch::Sender<Totals>,
                    added: tokio::sync::watch::Sender<Totals>| {
        let (queue, moved) = (queue.clone(), moved.clone());
        move |config: StreamingConfig| {
            let config = configure_files(config)
                .restore_from_savepoint(weir::Storage::local(&moved))
                .allow_non_restored_state(true);
            let ctx = StreamingContext::new(config);
            word_totals(&ctx, &queue, Some("words-v2"), out, Some(added));
            Ok(ctx)
        }
    };
    let queue2 = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let (added, mut added_rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::get_or_create(&job2, restored(&queue2, out, added))
        .await
        .unwrap();
    assert_eq!(
        ctx.restored().map(|r| r.checkpoint_time_ms),
        Some(info.manifest.checkpoint_time_ms)
    );
    let report = ctx.restore_report().join("\n");
    assert!(report.contains("\"added\""), "{report}");
    assert!(
        report.contains("\"words\""),
        "the dropped state is reported: {report}"
    );
    ctx.start().await.unwrap();
    queue2.push(words(&["a", "c"]));
    until_equal(&mut rx, &totals(&[("a", 3), ("b", 1), ("c", 1)])).await;
    until_equal(&mut added_rx, &totals(&[("a", 1), ("c", 1)])).await;
    ctx.stop(true).await.unwrap();

    // A later start with the same option resumes from the job's own checkpoints: the
    // savepoint is not restored again (the totals do not go back).
    let queue3 = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let (added, _added_rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::get_or_create(&job2, restored(&queue3, out, added))
        .await
        .unwrap();
    ctx.start().await.unwrap();
    // The source's restored position is past one pushed batch: this one is not read.
    queue3.push(words(&["already-read"]));
    queue3.push(words(&["b"]));
    until_equal(&mut rx, &totals(&[("a", 3), ("b", 2), ("c", 1)])).await;
    ctx.stop(true).await.unwrap();

    // Self-contained both ways: without the savepoint, the job's checkpoints read alone.
    std::fs::remove_dir_all(&moved).unwrap();
    let store = weir::checkpoint::CheckpointStore::open(
        weir::Storage::local(job2.join("checkpoints")),
        weir::checkpoint::CheckpointConfig::default(),
    )
    .await
    .unwrap();
    let latest = store.read_latest().await.unwrap().unwrap().data;
    for file in latest.state_files() {
        store.read_state_file(file).await.unwrap();
    }

    // A missing savepoint the job's checkpoints do not descend from is a mistake: refused.
    let elsewhere = root.path().join("elsewhere");
    let queue4 = QueueStream::new(true, 1);
    let (out, _rx) = tokio::sync::watch::channel(Totals::new());
    let refused = StreamingContext::get_or_create(&job2, move |config| {
        let config =
            configure_files(config).restore_from_savepoint(weir::Storage::local(&elsewhere));
        let ctx = StreamingContext::new(config);
        word_totals(&ctx, &queue4, Some("words"), out, None);
        Ok(ctx)
    })
    .await;
    match refused {
        Ok(_) => panic!("a missing savepoint of another place was accepted"),
        Err(err) => assert!(err.to_string().contains("not a savepoint"), "{err}"),
    }
}

/// A savepoint taken on a local directory (by stop-with-savepoint) restores into a job whose
/// checkpoints and WAL are on S3 (moto): state and the source's position continue from it, a
/// later start resumes from the job's own checkpoints on S3, and those read without the
/// savepoint.
#[cfg(feature = "s3")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_savepoint_restores_into_a_job_on_s3() {
    let root = tempfile::tempdir().unwrap();
    let (job1, taken) = (root.path().join("job1"), root.path().join("taken"));
    let (mut ctx, _queue, _rx) = running_job_with_state(&job1).await;
    ctx.stop_with_savepoint(weir::Storage::local(&taken))
        .await
        .unwrap();

    let s3 = weir_actors::testing::MotoServer::shared()
        .and_then(|server| server.fresh())
        .unwrap_or_else(|e| panic!("moto's S3 server: {e}"));
    let job2 = s3.join("job2");
    let restored = |queue: &QueueStream<String>, out: tokio::sync::watch::Sender<Totals>| {
        let (queue, taken) = (queue.clone(), taken.clone());
        move |config: StreamingConfig| {
            let config =
                configure_files(config).restore_from_savepoint(weir::Storage::local(&taken));
            let ctx = StreamingContext::new(config);
            word_totals(&ctx, &queue, Some("words"), out, None);
            Ok(ctx)
        }
    };
    let queue2 = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::get_or_create_in(job2.clone(), restored(&queue2, out))
        .await
        .unwrap();
    ctx.start().await.unwrap();
    // The source's position came with the savepoint: the first pushed batch is not read.
    queue2.push(words(&["already-read"]));
    queue2.push(words(&["a", "c"]));
    until_equal(&mut rx, &totals(&[("a", 3), ("b", 1), ("c", 1)])).await;
    ctx.stop(true).await.unwrap();

    // Restarted, it resumes from its own checkpoints on S3, not from the savepoint again.
    std::fs::remove_dir_all(&taken).unwrap();
    let queue3 = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::get_or_create_in(job2.clone(), restored(&queue3, out))
        .await
        .unwrap();
    ctx.start().await.unwrap();
    queue3.push(words(&["already-read"]));
    queue3.push(words(&["already-read"]));
    queue3.push(words(&["b"]));
    until_equal(&mut rx, &totals(&[("a", 3), ("b", 2), ("c", 1)])).await;
    ctx.stop(true).await.unwrap();
    let store = weir::checkpoint::CheckpointStore::open(
        job2.join("checkpoints"),
        weir::checkpoint::CheckpointConfig::default(),
    )
    .await
    .unwrap();
    let latest = store.read_latest().await.unwrap().unwrap().data;
    assert!(
        latest.state_files().next().is_some(),
        "the state is in files"
    );
    for file in latest.state_files() {
        store.read_state_file(file).await.unwrap();
    }
}

/// `get_or_create` reads a checkpoint's state files once: the graph keeps the state it restored
/// to check that the checkpoint fits, and the driver's first start does not read them again —
/// deleted in between, the job still starts with its totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_files_are_read_once_at_start() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("job");
    let (ctx, _queue, _rx) = running_job_with_state(&dir).await;
    ctx.stop(true).await.unwrap();

    let queue = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let build_queue = queue.clone();
    let mut ctx = StreamingContext::get_or_create(&dir, move |config| {
        let ctx = StreamingContext::new(configure_files(config));
        word_totals(&ctx, &build_queue, Some("words"), out, None);
        Ok(ctx)
    })
    .await
    .unwrap();
    let mut removed = 0;
    for entry in std::fs::read_dir(dir.join("checkpoints/state")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
        removed += 1;
    }
    assert!(removed > 0, "the state was in files");
    ctx.start().await.unwrap();
    // The source's position came with the checkpoint: the first pushed batch is not read.
    queue.push(words(&["already-read"]));
    queue.push(words(&["b"]));
    until_equal(&mut rx, &totals(&[("a", 2), ("b", 2)])).await;
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoints_refuse_operators_without_an_id_and_restores_refuse_unknown_state() {
    let root = tempfile::tempdir().unwrap();

    // A stateful operator without an explicit id: refused, naming it; nothing is stopped.
    let queue = QueueStream::new(true, 1);
    queue.push(words(&["a"]));
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::new(configure(StreamingConfig::local(root.path().join("j"))));
    word_totals(&ctx, &queue, None, out, None);
    ctx.start().await.unwrap();
    until_equal(&mut rx, &totals(&[("a", 1)])).await;
    let target = root.path().join("refused");
    let err = ctx
        .savepoint(weir::Storage::local(&target))
        .await
        .unwrap_err();
    let said = err.to_string();
    assert!(matches!(err, Error::Savepoint(_)), "{err:?}");
    assert!(said.contains("queue_stream"), "names the operator: {said}");
    // Where this program made it (word_totals' queue_stream call, in this file).
    assert!(
        said.contains("made at runtime/tests/restore_checks.rs:"),
        "says where: {said}"
    );
    assert!(said.contains(".uid("), "says what to do: {said}");
    let err = ctx
        .stop_with_savepoint(weir::Storage::local(&target))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("queue_stream"), "{err}");
    assert!(!target.join("savepoint.json").exists());
    // Still running: it takes more input.
    queue.push(words(&["a"]));
    until_equal(&mut rx, &totals(&[("a", 2)])).await;
    ctx.stop(true).await.unwrap();

    // Stop with a savepoint: the final state is in it.
    let queue = QueueStream::new(true, 1);
    queue.push(words(&["x", "y"]));
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::new(configure(StreamingConfig::local(root.path().join("k"))));
    word_totals(&ctx, &queue, Some("words"), out, None);
    ctx.start().await.unwrap();
    until_equal(&mut rx, &totals(&[("x", 1), ("y", 1)])).await;
    let savepoint = root.path().join("final");
    let info = ctx
        .stop_with_savepoint(weir::Storage::local(&savepoint))
        .await
        .unwrap();
    assert!(info.manifest.operators.iter().any(|o| o.id == "totals"));

    // Restored into a program without `totals`: refused, naming it, nothing written.
    let job = root.path().join("without-totals");
    let err = StreamingContext::get_or_create(&job, |config| {
        let ctx = StreamingContext::new(
            configure(config).restore_from_savepoint(weir::Storage::local(&savepoint)),
        );
        ctx.queue_stream(&QueueStream::<String>::new(true, 1))
            .uid("words")
            .foreach_batch(|_| Ok(()));
        Ok(ctx)
    })
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Incompatible(_)), "{err:?}");
    assert!(err.to_string().contains("\"totals\""), "{err}");
    let written = std::fs::read_dir(job.join("checkpoints"))
        .map(|dir| dir.filter(|e| e.as_ref().unwrap().path().is_file()).count())
        .unwrap_or(0);
    assert_eq!(written, 0, "a refused savepoint is not restored");

    // A directory that is not a (complete) savepoint is refused with one sentence.
    std::fs::remove_file(savepoint.join("savepoint.json")).unwrap();
    let err = StreamingContext::get_or_create(root.path().join("other"), |config| {
        let ctx = StreamingContext::new(
            configure(config).restore_from_savepoint(weir::Storage::local(&savepoint)),
        );
        ctx.queue_stream(&QueueStream::<String>::new(true, 1))
            .uid("words")
            .foreach_batch(|_| Ok(()));
        Ok(ctx)
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("is not a savepoint"), "{err}");
}

// ------------------------------------------------------------------------------------------
// State schema versions
// ------------------------------------------------------------------------------------------

/// Version 2 of the running totals' state: version 1 was a bare `u64` total.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Total {
    total: u64,
    /// Batches that counted the word since the migration.
    batches: u64,
}

type Totals2 = std::collections::BTreeMap<String, (u64, u64)>;

/// The running totals at schema version 2 (uid `totals`), migrated from version 1 if `hook`,
/// sent on `out` after every batch with records.
fn word_totals_v2(
    ctx: &StreamingContext,
    queue: &QueueStream<String>,
    out: tokio::sync::watch::Sender<Totals2>,
    hook: bool,
) {
    let totals = ctx
        .queue_stream(queue)
        .uid("words")
        .map(|w: &String| (w.clone(), 1u64))
        .update_state_by_key(|values: &[u64], state: Option<Total>| {
            let mut state = state.unwrap_or_default();
            if !values.is_empty() {
                state.total += values.iter().sum::<u64>();
                state.batches += 1;
            }
            Some(state)
        })
        .uid("totals")
        .state_schema(2);
    let totals = if hook {
        totals.migrate_state(|from, old| match from {
            1 => Ok(Total {
                total: old.decode::<u64>()?,
                batches: 0,
            }),
            _ => Err(format!("no migration from version {from}")),
        })
    } else {
        totals
    };
    totals.foreach_batch(move |batch| {
        if !batch.is_empty() {
            let got = batch
                .iter()
                .map(|(w, t)| (w.clone(), (t.total, t.batches)))
                .collect();
            out.send_replace(got);
        }
        Ok(())
    });
}

fn totals2(pairs: &[(&str, u64, u64)]) -> Totals2 {
    pairs
        .iter()
        .map(|(w, t, b)| ((*w).to_owned(), (*t, *b)))
        .collect()
}

async fn until_equal2(rx: &mut tokio::sync::watch::Receiver<Totals2>, want: &Totals2) {
    let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|got| got == want))
        .await
        .map(|got| got.map(|_| ()));
    if waited.is_err() {
        panic!("never output {want:?}; last {:?}", *rx.borrow());
    }
}

/// The parts of the refusal of state at schema version 1 by a version-2 program without a
/// migration.
const NO_MIGRATION: [&str; 5] = [
    "operator \"totals\" has state of schema version 1",
    "declares version 2",
    "no migration",
    ".migrate_state(..)",
    "allow_non_restored_state",
];

/// A version-1 job stops with a savepoint. From its checkpoint and from the savepoint alike,
/// a version-2 program without a migration is refused with the same sentence (nothing written
/// for the savepoint) and one with a migration starts with every word's total carried into the
/// new type; the version-1 program is then refused by the version-2 checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_schema_change_migrates_from_a_checkpoint_and_a_savepoint_alike() {
    let root = tempfile::tempdir().unwrap();
    let (job1, job2) = (root.path().join("job1"), root.path().join("job2"));
    let savepoint = root.path().join("savepoint");

    let queue = QueueStream::new(true, 1);
    queue.push(words(&["a", "b", "a"]));
    let (out, mut rx) = tokio::sync::watch::channel(Totals::new());
    let mut ctx = StreamingContext::new(configure(StreamingConfig::local(&job1)));
    word_totals(&ctx, &queue, Some("words"), out, None);
    ctx.start().await.unwrap();
    until_equal(&mut rx, &totals(&[("a", 2), ("b", 1)])).await;
    let info = ctx
        .stop_with_savepoint(weir::Storage::local(&savepoint))
        .await
        .unwrap();
    assert!(info.manifest.operators.iter().any(|o| o.id == "totals"));

    let v2 = |queue: &QueueStream<String>,
              out: tokio::sync::watch::Sender<Totals2>,
              hook: bool,
              from_savepoint: bool| {
        let (queue, savepoint) = (queue.clone(), savepoint.clone());
        move |config: StreamingConfig| {
            let mut config = configure(config);
            if from_savepoint {
                config = config.restore_from_savepoint(weir::Storage::local(&savepoint));
            }
            let ctx = StreamingContext::new(config);
            word_totals_v2(&ctx, &queue, out, hook);
            Ok(ctx)
        }
    };
    // Without a migration: refused, from the checkpoint and from the savepoint alike.
    let queue = QueueStream::new(true, 1);
    for (dir, from_savepoint) in [(&job1, false), (&job2, true)] {
        let (out, _rx) = tokio::sync::watch::channel(Totals2::new());
        let err = StreamingContext::get_or_create(dir, v2(&queue, out, false, from_savepoint))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Incompatible(_)), "{err:?}");
        let said = err.to_string();
        for part in NO_MIGRATION {
            assert!(said.contains(part), "{part:?} missing from {said}");
        }
    }
    let written = std::fs::read_dir(job2.join("checkpoints"))
        .map(|dir| dir.filter(|e| e.as_ref().unwrap().path().is_file()).count())
        .unwrap_or(0);
    assert_eq!(written, 0, "a refused savepoint is not restored");

    // With a migration: the totals go on in the new type, from the checkpoint...
    let (out, mut rx) = tokio::sync::watch::channel(Totals2::new());
    let mut ctx = StreamingContext::get_or_create(&job1, v2(&queue, out, true, false))
        .await
        .unwrap();
    let report = ctx.restore_report().join("\n");
    assert!(
        report.contains("migrated from schema version 1 to 2"),
        "{report}"
    );
    ctx.start().await.unwrap();
    // The source's restored position is past one pushed batch: this one is not read.
    queue.push(words(&["already-read"]));
    queue.push(words(&["a", "c"]));
    until_equal2(&mut rx, &totals2(&[("a", 3, 1), ("b", 1, 0), ("c", 1, 1)])).await;
    ctx.stop(true).await.unwrap();
    // ... and from the savepoint, into another job.
    let queue = QueueStream::new(true, 1);
    let (out, mut rx) = tokio::sync::watch::channel(Totals2::new());
    let mut ctx = StreamingContext::get_or_create(&job2, v2(&queue, out, true, true))
        .await
        .unwrap();
    ctx.start().await.unwrap();
    queue.push(words(&["already-read"]));
    queue.push(words(&["b"]));
    until_equal2(&mut rx, &totals2(&[("a", 2, 0), ("b", 2, 1)])).await;
    ctx.stop(true).await.unwrap();

    // The version-1 program, from the version-2 checkpoint: refused in one sentence.
    let said = refused_start_of_the_first_program(&job1).await;
    assert!(
        said.contains("operator \"totals\" has state of schema version 2")
            && said.contains("newer than this program's version 1"),
        "{said}"
    );
}

/// Why `get_or_create` refuses to start the first program (`word_totals`, schema version 1)
/// from the checkpoints in `dir`.
async fn refused_start_of_the_first_program(dir: &Path) -> String {
    let refused = StreamingContext::get_or_create(dir, |config| {
        let ctx = StreamingContext::new(configure(config));
        let (out, _rx) = tokio::sync::watch::channel(Totals::new());
        word_totals(&ctx, &QueueStream::new(true, 1), Some("words"), out, None);
        Ok(ctx)
    })
    .await;
    match refused {
        Ok(_) => panic!("the first program started from {}", dir.display()),
        Err(err) => err.to_string(),
    }
}

/// State whose type kept its name but not its shape (here: bytes that do not decode as the
/// totals) is refused with a sentence suggesting a schema version and a migration, not with
/// the decoder's error alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_that_does_not_decode_suggests_a_schema_version() {
    use weir::checkpoint::{CheckpointConfig, CheckpointStore, StateData};

    let dir = tempfile::tempdir().unwrap();
    run_once(dir.path()).await;
    let store = CheckpointStore::open(
        weir::Storage::local(dir.path().join("checkpoints")),
        CheckpointConfig::default(),
    )
    .await
    .unwrap();
    let mut data = store.read_latest().await.unwrap().unwrap().data;
    let totals = data
        .operator_state
        .iter_mut()
        .find(|s| s.operator_id == "totals")
        .unwrap();
    // The runtime's header, then `Some(` and a varint cut short.
    totals.data = StateData::Inline(b"weir-runtime/1\0\x01\xff".to_vec());
    store.write(&data).await.unwrap();
    let said = refused_start_of_the_first_program(dir.path()).await;
    assert!(
        said.contains("operator \"totals\"")
            && said.contains("does not decode as today's state type")
            && said.contains(".state_schema(2)")
            && said.contains(".migrate_state(..)"),
        "{said}"
    );
}
