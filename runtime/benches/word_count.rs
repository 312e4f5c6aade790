//! The word count's compute path, in process: one batch of text lines through the DStream
//! API, three ways of writing the program, on the same lines in the same run.
//!
//! * `textbook`: `flat_map(|line: &Str| line.words())` → `(word, 1)` → `reduce_by_key`: the
//!   ordinary program. Words are views of the lines; the maps run inside the shuffle's
//!   map-side combine (no per-word allocation, no per-word pair kept).
//! * `hand_combined`: each partition's words counted in a `HashMap<&str, u64>` by hand, then
//!   `reduce_by_key` (what `word_count --program hand-combined` runs).
//! * `owned_words`: the textbook program with an owned `String` per word, as Spark's Java
//!   jobs build it;
//!
//! and, on the same lines, two single-threaded floors without the engine: `floor` (the bench
//! harness's compute floor: `split_whitespace` into one `HashMap<&str, u64>`, foldhash) and
//! `floor_str_keys` (the same with `Str::words` and `Str` keys, as the engine's tables hold).
//!
//! Each batch is run by [`ManualClock`] (the pipeline without the actors: plan, run every job
//! — on the blocking pool, 2 partitions — complete, snapshot), so the time is the engine's
//! compute path and the program's, not the receiver's or the WAL's. Throughput is words per
//! CPU-second of the whole process (see [`cpu_time`]).
//! The lines are generated once per vocabulary size (uniformly chosen words of 3 to 10 ASCII
//! letters, 1 to 12 words a line, in blocks of about 64 KiB), before any timing. Run with
//! `cargo bench -p weir-streaming --bench word_count`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark")]
#![allow(missing_docs, reason = "a benchmark")]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use weir::dstream::{DStream, QueueStream};
use weir::testing::ManualClock;
use weir::{Str, StreamingContext};

/// The CPU time this process has used, all threads together.
///
/// The benchmark reports CPU time, not wall time: the work per word is what it compares, and
/// CPU time is what other processes on the machine disturb least (wall time on two shared
/// cores moved by ±60 % between runs while builds ran beside it). With both cores busy, words
/// per CPU-second is also what bounds the sustainable rate.
fn cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap()
}

/// Words per batch.
const WORDS_PER_BATCH: usize = 1_000_000;

/// A batch of lines over a vocabulary of `vocabulary` words, and how many words it holds.
fn lines(vocabulary: usize, seed: u64) -> (Vec<Str>, u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let words: Vec<String> = (0..vocabulary)
        .map(|i| {
            let len = rng.usize(3..=10);
            let mut w: String = (0..len).map(|_| rng.lowercase()).collect();
            w.push_str(&i.to_string()); // distinct
            w
        })
        .collect();
    // Lines as views of blocks of about 64 KiB (as a receiver's records share its blocks):
    // each partition works on blocks of its own.
    let mut lines = Vec::new();
    let mut text = String::new();
    let mut ends = Vec::new();
    let mut count = 0;
    let mut cut = |text: &mut String, ends: &mut Vec<usize>| {
        let block = Str::from(std::mem::take(text));
        let mut start = 0;
        for end in ends.drain(..) {
            lines.push(block.slice_ref(&block[start..end]));
            start = end + 1;
        }
    };
    while count < WORDS_PER_BATCH {
        let n = rng.usize(1..=12);
        for k in 0..n {
            if k > 0 {
                text.push(' ');
            }
            text.push_str(&words[rng.usize(..vocabulary)]);
        }
        count += n;
        ends.push(text.len());
        text.push('\n');
        if text.len() >= 64 << 10 {
            cut(&mut text, &mut ends);
        }
    }
    cut(&mut text, &mut ends);
    (lines, count as u64)
}

type Program = fn(&DStream<Str>) -> DStream<(Str, u64)>;

fn textbook(lines: &DStream<Str>) -> DStream<(Str, u64)> {
    lines
        .flat_map(|line: &Str| line.words())
        .map(|word: &Str| (word.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
}

fn hand_combined(lines: &DStream<Str>) -> DStream<(Str, u64)> {
    lines
        .map_partitions(|lines: &[Str]| {
            let mut counts: HashMap<&str, u64> = HashMap::new();
            for line in lines {
                for word in line.split_whitespace() {
                    *counts.entry(word).or_insert(0) += 1;
                }
            }
            Ok(counts.into_iter().map(|(w, n)| (Str::from(w), n)).collect())
        })
        .reduce_by_key(|a, b| a + b)
}

fn owned_words(lines: &DStream<Str>) -> DStream<(Str, u64)> {
    lines
        .flat_map(|line: &Str| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word: &String| (word.clone(), 1u64))
        .reduce_by_key(|a, b| a + b)
        .map(|(w, n): &(String, u64)| (Str::from(w.as_str()), *n))
}

/// A single-threaded word count over a batch's lines: the words counted.
type Floor = fn(&[Str]) -> u64;

/// A count table with the engine's hash (foldhash, fixed seed).
type Stable<K> = HashMap<K, u64, foldhash::fast::FixedState>;

/// The harness's compute floor (examples/src/bin/bench/floors.rs) on these lines: one thread,
/// one table of borrowed words. The words counted.
fn floor(lines: &[Str]) -> u64 {
    let mut counts: Stable<&str> = HashMap::default();
    for line in lines {
        for w in line.split_whitespace() {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts.values().sum()
}

/// [`floor`] with `Str` words and keys (what the engine's map side stores).
fn floor_str_keys(lines: &[Str]) -> u64 {
    let mut counts: Stable<Str> = HashMap::default();
    for line in lines {
        for w in line.words() {
            match counts.get_mut(&w) {
                Some(c) => *c += 1,
                None => {
                    counts.insert(w, 1);
                }
            }
        }
    }
    counts.values().sum()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let programs: [(&str, Program); 3] = [
        ("textbook", textbook),
        ("hand_combined", hand_combined),
        ("owned_words", owned_words),
    ];
    for vocabulary in [1_000, 100_000] {
        let (batch, words) = lines(vocabulary, 7);
        let mut group = c.benchmark_group(format!("word_count/vocabulary_{vocabulary}"));
        group.throughput(Throughput::Elements(words));
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        for (name, program) in programs {
            let queue = QueueStream::new(true, 2);
            let counted = Arc::new(AtomicU64::new(0));
            let (q, n) = (queue.clone(), Arc::clone(&counted));
            let mut clock = ManualClock::new(1000, 2, move |ctx: &StreamingContext| {
                let n = Arc::clone(&n);
                program(&ctx.queue_stream(&q)).foreach_batch(move |batch| {
                    let total: u64 = batch.iter().map(|(_, c)| c).sum();
                    n.fetch_add(total, Ordering::Relaxed);
                    Ok(())
                });
            })
            .unwrap();
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        queue.push(batch.clone());
                        let start = cpu_time();
                        runtime.block_on(clock.run(1)).unwrap();
                        spent += cpu_time().saturating_sub(start);
                    }
                    spent
                });
            });
            // Every word counted, by every program that ran (a filter may skip some).
            let total = counted.load(Ordering::Relaxed);
            assert!(total.is_multiple_of(words), "{name}: {total} of {words}");
            black_box(total);
        }
        // The floors, on the same lines: one thread, no engine.
        let floors: [(&str, Floor); 2] = [("floor", floor), ("floor_str_keys", floor_str_keys)];
        for (name, floor) in floors {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        let start = cpu_time();
                        assert_eq!(black_box(floor(&batch)), words);
                        spent += cpu_time().saturating_sub(start);
                    }
                    spent
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
