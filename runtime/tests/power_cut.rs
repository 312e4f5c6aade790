//! Power cuts through the page-cache model of `weir_actors::power_cut` (see docs/testing.md):
//! the batch-directory sink and the partitioned log run a workload, the disk freezes at every
//! operation in turn (with and without unsynced writes torn onto it), the directory is rebuilt
//! as the disk holds it, and the component opens it again. What was acknowledged before the
//! cut must be there, whole; what was not may be there or not, but never damaged, partial or
//! in the way of a retry. And the checks must fail when file or directory fsyncs reach
//! nothing — they do, below.
//!
//! Built only with the `failpoints` feature (`cargo test -p weir-streaming --features
//! failpoints --test power_cut`).

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use weir::sinks::batch_dir::{BatchDirSink, Commit};
use weir::sources::file_stream::FileStreamOptions;
use weir::sources::partitioned_log::PartitionedLog;
use weir_actors::power_cut::{Acks, Options, PowerCut, assert_fsyncs_tested, at_every_cut};

// ---- the batch-directory sink ----

const BATCHES: u64 = 5;

/// Batch `t`'s partitions: two part files.
fn batch(t: u64) -> [Vec<String>; 2] {
    [
        vec![format!("{t} b"), format!("{t} a"), format!("{t} c")],
        vec![format!("{t} z").repeat(usize::try_from(t).unwrap())],
    ]
}

/// What batch `t`'s part files hold (the sink sorts each part's lines).
fn expected_parts(t: u64) -> Vec<String> {
    batch(t)
        .iter()
        .map(|lines| {
            let mut lines = lines.clone();
            lines.sort();
            lines.iter().map(|l| format!("{l}\n")).collect()
        })
        .collect()
}

fn sink(dir: &Path) -> BatchDirSink {
    BatchDirSink::new(dir.join("out").join("batch"))
}

fn write(sink: &BatchDirSink, t: u64) -> Commit {
    let parts = batch(t);
    sink.write_batch(t, parts.iter().map(Vec::as_slice))
        .unwrap()
}

/// Five batches, each acknowledged when `write_batch` returned; then a replay of the last.
async fn sink_workload(dir: &Path, cut: &PowerCut) -> Acks<u64> {
    let sink = sink(dir);
    let mut acks = Vec::new();
    for t in 1..=BATCHES {
        assert!(matches!(write(&sink, t), Commit::Written { parts: 2, .. }));
        acks.push((cut.ops(), t));
    }
    assert!(matches!(write(&sink, BATCHES), Commit::AlreadyCommitted(_)));
    acks
}

/// Every batch acknowledged by operation `k` is committed and reads back whole; any other is
/// committed whole or not at all; the leftovers go, and the rest of the batches then commit.
async fn sink_check(dir: &Path, acks: &Acks<u64>, k: u64) -> Result<(), String> {
    let sink = sink(dir);
    for &(acked_at, t) in acks {
        let committed = sink
            .committed(t)
            .map_err(|e| format!("batch {t} after the cut: {e}"))?;
        let Some(committed) = committed else {
            if acked_at <= k {
                return Err(format!(
                    "batch {t}, acknowledged after operation {acked_at}, is not committed"
                ));
            }
            continue;
        };
        let found: Vec<String> = committed
            .parts
            .iter()
            .map(|part| fs::read_to_string(committed.dir.join(&part.name)).unwrap_or_default())
            .collect();
        if found != expected_parts(t) {
            return Err(format!("batch {t} is committed with {found:?}"));
        }
    }
    sink.remove_leftovers()
        .map_err(|e| format!("the leftovers stay: {e}"))?;
    for t in 1..=BATCHES {
        let commit = sink.write_batch(t, batch(t).iter().map(Vec::as_slice));
        match commit {
            Ok(Commit::Written { .. } | Commit::AlreadyCommitted(_)) => {}
            other => {
                return Err(format!(
                    "batch {t} does not commit after the cut: {other:?}"
                ));
            }
        }
        if sink.committed(t).ok().flatten().is_none() {
            return Err(format!("batch {t} is not committed after its retry"));
        }
    }
    let parent = dir.join("out");
    let names: Vec<String> = fs::read_dir(&parent)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    if names.len() != usize::try_from(BATCHES).unwrap() {
        return Err(format!(
            "more than the batches in {}: {names:?}",
            parent.display()
        ));
    }
    Ok(())
}

#[tokio::test]
async fn the_sink_keeps_every_acknowledged_batch_at_every_power_cut() {
    at_every_cut(sink_workload, sink_check).await;
}

#[tokio::test]
async fn the_sink_power_cut_test_fails_without_fsyncs() {
    assert_fsyncs_tested(sink_workload, sink_check).await;
}

// ---- the partitioned log ----

const PARTITIONS: u32 = 2;

fn record(partition: u32, i: u64) -> String {
    format!(
        "p{partition} record {i} {}",
        ".".repeat(usize::try_from(i % 9).unwrap())
    )
}

/// What the workload did, in order.
#[derive(Clone, Debug)]
enum LogAck {
    /// Records `offsets` of `partition` were appended.
    Appended {
        partition: u32,
        offsets: std::ops::Range<u64>,
    },
    /// The group's offsets were committed.
    Committed(Vec<u64>),
}

fn open_log(dir: &Path) -> Result<PartitionedLog, String> {
    PartitionedLog::create(dir.join("log"), PARTITIONS)
        .map(|log| log.segment_bytes(160))
        .map_err(|e| format!("the log does not open: {e}"))
}

/// Appends of one to three records, alternating partitions, rolling segments every few
/// appends; the group's offsets committed after every third append.
async fn log_workload(dir: &Path, cut: &PowerCut) -> Acks<LogAck> {
    let log = open_log(dir).unwrap().consumer_group("readers");
    let mut next = [0u64; PARTITIONS as usize];
    let mut acks = Vec::new();
    for round in 0..12u64 {
        let partition = u32::try_from(round % 2).unwrap();
        let p = partition as usize;
        let records: Vec<String> = (0..1 + round % 3)
            .map(|i| record(partition, next[p] + i))
            .collect();
        let offsets = log.append(partition, &records).unwrap();
        assert_eq!(offsets.start, next[p]);
        next[p] = offsets.end;
        acks.push((cut.ops(), LogAck::Appended { partition, offsets }));
        if round % 3 == 2 {
            let committed = next.map(|n| n.saturating_sub(1)).to_vec();
            log.commit_offsets(&committed).unwrap();
            acks.push((cut.ops(), LogAck::Committed(committed)));
        }
    }
    acks
}

/// Each partition holds, from offset 0, the records appended to it in order — every one
/// acknowledged by operation `k`, and perhaps some more of those appended; the committed
/// offsets are the last commit acknowledged or a later one; appends then go on at the end.
async fn log_check(dir: &Path, acks: &Acks<LogAck>, k: u64) -> Result<(), String> {
    let log = open_log(dir)?.consumer_group("readers");
    let ends = log.end_offsets().map_err(|e| e.to_string())?;
    for partition in 0..PARTITIONS {
        let p = partition as usize;
        let appended = acks.iter().filter_map(|(at, ack)| match ack {
            LogAck::Appended {
                partition: q,
                offsets,
            } if *q == partition => Some((*at, offsets.end)),
            _ => None,
        });
        let must = appended
            .clone()
            .filter(|(at, _)| *at <= k)
            .map(|(_, end)| end)
            .max()
            .unwrap_or(0);
        let most = appended.map(|(_, end)| end).max().unwrap_or(0);
        if ends[p] < must || ends[p] > most {
            return Err(format!(
                "partition {partition} ends at {}, acknowledged up to {must}, appended up to {most}",
                ends[p]
            ));
        }
        let records = log
            .read_range(partition, 0..ends[p])
            .map_err(|e| format!("partition {partition} does not read back: {e}"))?;
        for (i, bytes) in (0..).zip(&records) {
            if bytes.as_ref() != record(partition, i).as_bytes() {
                return Err(format!("partition {partition} offset {i} holds {bytes:?}"));
            }
        }
    }
    let committed = log
        .committed()
        .map_err(|e| format!("the committed offsets: {e}"))?;
    let commits: Vec<(u64, &Vec<u64>)> = acks
        .iter()
        .filter_map(|(at, ack)| match ack {
            LogAck::Committed(offsets) => Some((*at, offsets)),
            _ => None,
        })
        .collect();
    let must = commits.iter().rposition(|(at, _)| *at <= k);
    match (&committed, must) {
        (None, None) => {}
        (None, Some(i)) => return Err(format!("commit {i} was acknowledged and none is left")),
        (Some(found), must) => {
            let Some(at) = commits.iter().position(|(_, c)| *c == found) else {
                return Err(format!("committed offsets {found:?} were never committed"));
            };
            if must.is_some_and(|must| at < must) {
                return Err(format!(
                    "commit {at} is left, commit {must:?} was acknowledged"
                ));
            }
        }
    }
    // And the log goes on where it ends.
    for partition in 0..PARTITIONS {
        let end = ends[partition as usize];
        let offsets = log
            .append(partition, &[record(partition, end)])
            .map_err(|e| format!("no append to partition {partition} after the cut: {e}"))?;
        if offsets != (end..end + 1) {
            return Err(format!(
                "the append after the cut took {offsets:?}, not {end}"
            ));
        }
    }
    Ok(())
}

#[tokio::test]
async fn the_partitioned_log_keeps_every_acknowledged_append_and_commit_at_every_power_cut() {
    at_every_cut(log_workload, log_check).await;
}

#[tokio::test]
async fn the_partitioned_log_power_cut_test_fails_without_fsyncs() {
    assert_fsyncs_tested(log_workload, log_check).await;
}

// ---- a whole job: files → word count → batch directories, cut anywhere ----

/// The input files, each a few lines; the file stream takes one per batch.
fn input_files() -> Vec<(String, String)> {
    (0..6)
        .map(|f| {
            let text: String = (0..3)
                .map(|l| format!("w{} w{} w{}\n", f % 3, l, (f * l) % 4))
                .collect();
            (format!("in-{f}.txt"), text)
        })
        .collect()
}

/// `word → count` over every input file: what the job must have counted, exactly once.
fn expected_counts() -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for (_, text) in input_files() {
        for word in text.split_whitespace() {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    counts
}

/// Sums the counts of every committed batch under `out` (read through the sink, so a batch
/// without a valid commit marker fails the test).
fn committed_counts(out: &Path) -> BTreeMap<String, u64> {
    let sink = BatchDirSink::new(out.join("batch"));
    let mut counts = BTreeMap::new();
    let Ok(entries) = fs::read_dir(out) else {
        return counts;
    };
    for entry in entries {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(time) = name.strip_prefix("batch-").and_then(|t| t.parse().ok()) else {
            continue; // a batch being written
        };
        let batch = sink.committed(time).unwrap().expect("a committed batch");
        for part in &batch.parts {
            for line in fs::read_to_string(batch.dir.join(&part.name))
                .unwrap()
                .lines()
            {
                let (word, n) = line.split_once('\t').unwrap();
                *counts.entry(word.to_owned()).or_default() += n.parse::<u64>().unwrap();
            }
        }
    }
    counts
}

fn word_count_job(
    config: weir::StreamingConfig,
    input: &Path,
    out: &Path,
) -> Result<weir::StreamingContext, weir::Error> {
    let mut config = config.batch_interval(Duration::from_millis(50));
    config.engine.name_prefix = format!("power-cut-{}/", fastrand::u32(..));
    let ctx = weir::StreamingContext::new(config);
    ctx.text_file_stream_with(input, FileStreamOptions::new().max_files_per_batch(1))
        .uid("input")
        .flat_map(|l: &weir::Str| l.words())
        .map(|w: &weir::Str| (w.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .map(|(w, n)| format!("{w}\t{n}"))
        .save_as_text_files(out.join("batch"));
    Ok(ctx)
}

/// Runs the job over `root` until `done` holds of its committed output, then stops it.
async fn run_job(root: &Path, done: impl Fn(&BTreeMap<String, u64>) -> bool) {
    let (input, out) = (root.join("in"), root.join("out"));
    let mut ctx = weir::StreamingContext::get_or_create(root.join("checkpoints"), {
        let (input, out) = (input.clone(), out.clone());
        move |config| word_count_job(config, &input, &out)
    })
    .await
    .unwrap();
    ctx.start().await.unwrap();
    let mut events = ctx.events().unwrap();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done(&committed_counts(&out)) {
            while !matches!(
                events.next().await.expect("the event feed is open").event,
                weir::Event::BatchCompleted { .. }
            ) {}
        }
    })
    .await
    .expect("timed out waiting for the output");
    ctx.stop(true).await.unwrap();
}

/// A new directory with the input files in place (durable before any cut: they are there
/// when recording starts).
fn job_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir(root.path().join("in")).unwrap();
    for (name, text) in input_files() {
        fs::write(root.path().join("in").join(name), text).unwrap();
    }
    root
}

/// The job's seed: `WEIR_POWER_CUT_SEED`, or a fresh one (printed when the test fails).
fn seed() -> u64 {
    std::env::var("WEIR_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_word_count_job_counts_every_file_exactly_once_after_a_power_cut() {
    let expected = expected_counts();
    let total: u64 = expected.values().sum();
    let all_counted = |counts: &BTreeMap<String, u64>| counts.values().sum::<u64>() >= total;
    // How many operations a whole run takes (it varies a little: the job runs on real time).
    let ops = {
        let root = job_root();
        let cut = PowerCut::start(root.path(), Options::default());
        run_job(root.path(), all_counted).await;
        let ops = cut.ops();
        drop(cut);
        assert_eq!(committed_counts(&root.path().join("out")), expected);
        ops
    };
    assert!(ops > 50, "the job did too little: {ops} operations");
    let seed = seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    for run in 0..6 {
        // Spread over the run, each at a seeded point of its sixth.
        let k = ops * run / 6 + rng.u64(..ops / 6);
        let options = Options {
            cut_after: Some(k),
            tear: rng.bool().then(|| rng.u64(..)),
            ..Options::default()
        };
        let root = job_root();
        let cut = PowerCut::start(root.path(), options);
        run_job(root.path(), all_counted).await;
        cut.cut();
        // The machine is back: the job starts again from what the disk held, and goes on
        // until every word is counted; nothing may be counted twice.
        run_job(root.path(), all_counted).await;
        assert_eq!(
            committed_counts(&root.path().join("out")),
            expected,
            "WEIR_POWER_CUT_SEED={seed}: cut after operation {k} of about {ops} ({options:?})"
        );
    }
}
