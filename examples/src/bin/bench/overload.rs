//! The `overload` phase (issue 19, item 5): weir's `word_count` fed over TCP at twice its
//! sustainable rate for a minute, with the receiver WAL off and on. It passes when resident
//! memory stayed under a bound computed from the settings the phase gives the process
//! ([`Bound`]), the feeder was pushed back (it delivered less than it offered and its writes
//! stalled), and, once the feed stopped and the output caught up, the output counts every word
//! the feeder delivered exactly once.
//!
//! What the process holds, from the code (actors/src/ingest, actors/src/batch, runtime/src):
//!
//! * **Blocks in the block store.** With the WAL off the store holds the only copy of each
//!   block and admits more only while the memory-only bytes fit `block_store_bytes`
//!   (`BlockStore::wait_for_room`, which the supervisor's forwarder awaits before it hands a
//!   batch of blocks on): at most `B`. With the WAL on it is a cache that evicts its oldest
//!   blocks past `B`.
//! * **Blocks held by batches** (WAL on): a generated batch holds its blocks (`Arc`s) until it
//!   completes; each takes at most `receiver_batch_max_bytes` (`M`) of the stream, and at most
//!   `max_pending_batches` (`P`) are generated and not complete. A block evicted from the store
//!   stays alive while a batch holds it, and one read back from the WAL is a copy outside the
//!   store: up to `P · M` on top of `B`. With the WAL off those blocks are the store's own.
//! * **Per line**, besides its text, the block's records hold a 32-byte `Bytes` handle: the
//!   store counts only the text, so `B` and `M` of text hold `(1 + 32 / L)` times that, `L`
//!   the mean line length of the feed.
//! * **The running batch** (one at a time, weir's default) decodes its lines into a 32-byte
//!   `Str` view each: `32 / L · M`.
//! * **The socket receiver's chunks** outside the store: the one being read and the one being
//!   stored, 1 MiB each (`SocketTextReceiver`'s defaults, one store in flight): [`CHUNKS`].
//! * **The allocator's slack**, a factor `A` ([`ALLOCATOR_SLACK`]) on all of the above: glibc's
//!   malloc gives every allocating thread an arena and does not reuse memory freed into one
//!   arena for another thread, so what the process takes from the system is more than what it
//!   holds live. docs/operations.md ("Memory") measured up to about 1.5 times the live data;
//!   the first run of this phase (2026-12-07, WAL off, default arenas) peaked at 493 MiB where
//!   the terms above come to 348 MiB (+ C), 444 MiB with `MALLOC_ARENA_MAX=2`.
//! * **The rest**, `C` ([`PROGRAM_BYTES`]): the program, its threads and runtime, the WAL
//!   writer's buffers, the operators' tables. The phase measures it: a calibration run at the
//!   moderate rate with the same settings, whose peak RSS (blocks of a moderate batch
//!   included) must stay under `C`.
//!
//! So the bound is `A · ((1 + 32/L) · B + 32/L · M + CHUNKS) + C` with the WAL off and
//! `A · ((1 + 32/L) · (B + P · M) + 32/L · M + CHUNKS) + C` with it on.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::feeder::{Feeder, Pool, wall_ms};
use crate::system::{Kind, Launch, RunDirs, Source};
use crate::{BoxError, Plan, drain, lost_and_duplicated, mib, sleep_until, summed_output};

/// The block store's budget the phase sets (`WEIR_BLOCK_STORE_BYTES`): `B`.
pub(crate) const STORE_BYTES: u64 = 128 << 20;
/// The most bytes of received blocks a batch takes (`WEIR_RECEIVER_BATCH_MAX_BYTES`): `M`.
pub(crate) const BATCH_MAX_BYTES: u64 = 128 << 20;
/// Batches generated and not complete at most (`WEIR_MAX_PENDING_BATCHES`, weir's default):
/// `P`.
pub(crate) const PENDING_BATCHES: u64 = 4;
/// The socket receiver's chunk being read and the one being stored, 1 MiB each.
pub(crate) const CHUNKS: u64 = 2 << 20;
/// Bytes per line besides its text: a `Bytes` handle in a block, a `Str` in a running batch.
pub(crate) const LINE_HANDLE_BYTES: f64 = 32.0;
/// `A`: what the allocator takes from the system per byte held live (see the module
/// documentation).
pub(crate) const ALLOCATOR_SLACK: f64 = 1.5;
/// `C`: what the process holds besides the blocks and the running batch's lines. The
/// calibration run (100 000 words/s, the same settings) peaked at 15 MiB on the 2-core
/// development machine; `C` leaves four times that for what grows with the rate but not with
/// the backlog (the WAL writer's groups of up to 4 MiB, the runtime's buffers, the threads).
pub(crate) const PROGRAM_BYTES: u64 = 64 << 20;
/// A pause between two deliveries longer than this (and than four chunks' due time) is a
/// stall: the feeder's write was held by TCP flow control.
pub(crate) const STALL_MS: u64 = 20;

/// The memory bound of one run and its terms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Bound {
    /// Whether the receiver WAL is on.
    pub(crate) wal: bool,
    /// `B`.
    pub(crate) store: u64,
    /// `M`.
    pub(crate) batch_max: u64,
    /// `P`.
    pub(crate) pending: u64,
    /// `L`, the mean bytes per line of the feed (its newline included).
    pub(crate) line_bytes: f64,
    /// `CHUNKS`.
    pub(crate) chunks: u64,
    /// `A`.
    pub(crate) allocator: f64,
    /// `C`.
    pub(crate) program: u64,
}

impl Bound {
    /// The bound of the phase's settings for a feed of `line_bytes` per line.
    pub(crate) fn new(wal: bool, line_bytes: f64) -> Bound {
        Bound {
            wal,
            store: STORE_BYTES,
            batch_max: BATCH_MAX_BYTES,
            pending: PENDING_BATCHES,
            line_bytes,
            chunks: CHUNKS,
            allocator: ALLOCATOR_SLACK,
            program: PROGRAM_BYTES,
        }
    }

    /// `32 / L`: the bytes of handles per byte of line text.
    fn per_text_byte(&self) -> f64 {
        LINE_HANDLE_BYTES / self.line_bytes.max(1.0)
    }

    /// The bytes of text in blocks the process can hold: `B`, plus `P · M` with the WAL on.
    pub(crate) fn block_text(&self) -> u64 {
        if self.wal {
            self.store + self.pending * self.batch_max
        } else {
            self.store
        }
    }

    /// The bound, in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        let k = self.per_text_byte();
        let blocks = (1.0 + k) * self.block_text() as f64;
        let running = k * self.batch_max as f64;
        (self.allocator * (blocks + running + self.chunks as f64)).ceil() as u64 + self.program
    }

    /// The formula with its numbers, in MiB.
    pub(crate) fn formula(&self) -> String {
        let m = |b: u64| b as f64 / f64::from(1 << 20);
        let k = self.per_text_byte();
        let blocks = if self.wal {
            format!(
                "(B {:.0} + P {} × M {:.0})",
                m(self.store),
                self.pending,
                m(self.batch_max)
            )
        } else {
            format!("B {:.0}", m(self.store))
        };
        format!(
            "A {} × ((1 + 32/L {k:.3}) × {blocks} + 32/L × M {:.0} + chunks {:.0}) + C {:.0} = \
             {:.0} MiB (L = {:.1} bytes/line)",
            self.allocator,
            m(self.batch_max),
            m(self.chunks),
            m(self.program),
            m(self.bytes()),
            self.line_bytes
        )
    }
}

/// The offered rate: `explicit` if given, else twice `sustained` (the `rate` phase's finding
/// for this WAL setting in this invocation).
pub(crate) fn offered_rate(
    explicit: Option<f64>,
    sustained: Option<f64>,
    wal: bool,
) -> Result<f64, String> {
    match (explicit, sustained) {
        (Some(r), _) if r > 0.0 => Ok(r),
        (Some(r), _) => Err(format!("--overload-rate must be positive, not {r}")),
        (None, Some(s)) => Ok(2.0 * s),
        (None, None) => Err(format!(
            "the overload phase needs a rate for weir with the receiver WAL {}: pass \
             --overload-rate WORDS_PER_S, or run the rate phase in the same invocation \
             (--phase rate --phase overload) and let it find weir's sustained rate",
            if wal { "on" } else { "off" }
        )),
    }
}

/// Milliseconds the feeder stalled between `from_ms` and `to_ms` (wall clock), from its
/// (wall ms, cumulative words) delivery curve: the sum of the gaps between deliveries longer
/// than `threshold_ms`. A feeder that keeps up delivers a chunk every few microseconds to
/// milliseconds; a longer pause is a write TCP held.
pub(crate) fn stalled_ms(curve: &[(u64, u64)], from_ms: u64, to_ms: u64, threshold_ms: u64) -> u64 {
    let mut last = from_ms;
    let mut stalled = 0;
    for &(t, _) in curve {
        if t <= from_ms {
            continue;
        }
        let t = t.min(to_ms);
        let gap = t.saturating_sub(last);
        if gap > threshold_ms {
            stalled += gap;
        }
        last = t;
        if t >= to_ms {
            break;
        }
    }
    let tail = to_ms.saturating_sub(last);
    if tail > threshold_ms {
        stalled += tail;
    }
    stalled
}

/// What one run measured.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    /// Receiver WAL on.
    pub(crate) wal: bool,
    /// Offered words/s.
    pub(crate) offered: f64,
    /// Delivered words/s over the feed.
    pub(crate) delivered: f64,
    /// Seconds fed.
    pub(crate) secs: f64,
    /// Words delivered in all.
    pub(crate) sent: u64,
    /// Milliseconds the feeder's writes stalled during the feed.
    pub(crate) stalled_ms: u64,
    /// Peak RSS (VmHWM) until the output caught up, KiB.
    pub(crate) peak_kb: u64,
    /// Median sampled RSS (every 100 ms) during the feed, KiB.
    pub(crate) median_kb: Option<u64>,
    /// The highest sampled RSS in each quarter of the feed, KiB: whether memory levels off.
    pub(crate) quarters_kb: [u64; 4],
    /// The bound.
    pub(crate) bound: Bound,
    /// Seconds from the end of the feed until the output held every word (or it gave up).
    pub(crate) drain_secs: f64,
    /// Words of the output once drained.
    pub(crate) counted: u64,
    /// Words delivered and not in the output.
    pub(crate) lost: u64,
    /// Words in the output more often than delivered.
    pub(crate) duplicated: u64,
}

impl Run {
    /// Why the run fails; empty if it passes.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut why = Vec::new();
        let bound_kb = self.bound.bytes() / 1024;
        if self.peak_kb > bound_kb {
            why.push(format!(
                "peak RSS {} over the bound {}",
                mib(self.peak_kb),
                mib(bound_kb)
            ));
        }
        // Pushed back: less delivered than offered, and writes held for a tenth of the feed.
        if self.delivered >= 0.95 * self.offered || (self.stalled_ms as f64) < 100.0 * self.secs {
            why.push(format!(
                "the sender was not pushed back (delivered {:.0} of {:.0} words/s, stalled \
                 {} ms of {:.0} s)",
                self.delivered, self.offered, self.stalled_ms, self.secs
            ));
        }
        if self.lost > 0 || self.duplicated > 0 {
            why.push(format!(
                "{} words lost, {} duplicated",
                self.lost, self.duplicated
            ));
        }
        why
    }
}

/// The calibration run: peak RSS at a moderate rate with the phase's settings.
#[derive(Clone, Debug)]
pub(crate) struct Calibration {
    /// Words/s.
    pub(crate) rate: f64,
    /// Peak RSS, KiB.
    pub(crate) peak_kb: u64,
    /// Median RSS, KiB.
    pub(crate) median_kb: Option<u64>,
}

/// The phase's results.
#[derive(Debug, Default)]
pub(crate) struct Results {
    /// The calibration, if it ran.
    pub(crate) calibration: Option<Result<Calibration, String>>,
    /// One run per WAL setting.
    pub(crate) runs: Vec<Result<Run, String>>,
}

impl Results {
    /// Whether every run passed and `C` covered the calibration.
    pub(crate) fn passed(&self) -> bool {
        let calibrated =
            matches!(&self.calibration, Some(Ok(c)) if c.peak_kb <= PROGRAM_BYTES / 1024);
        calibrated
            && !self.runs.is_empty()
            && self
                .runs
                .iter()
                .all(|r| matches!(r, Ok(run) if run.failures().is_empty()))
    }

    /// The report's section.
    pub(crate) fn markdown(&self, s: &mut String, batch_ms: u64) {
        if self.runs.is_empty() && self.calibration.is_none() {
            return;
        }
        let _ = writeln!(
            s,
            "### Overload: bounded memory, pushback, nothing lost (weir, socket, {batch_ms} ms \
             batches)\n\n\
             `WEIR_BLOCK_STORE_BYTES` = {} MiB (B), `WEIR_RECEIVER_BATCH_MAX_BYTES` = {} MiB (M), \
             `WEIR_MAX_PENDING_BATCHES` = {} (P). Max RSS is the process's VmHWM until the output \
             caught up; median RSS of the samples every 100 ms during the feed.\n",
            STORE_BYTES >> 20,
            BATCH_MAX_BYTES >> 20,
            PENDING_BATCHES
        );
        match &self.calibration {
            Some(Ok(c)) => {
                let _ = writeln!(
                    s,
                    "Calibration of C: at {:.0} words/s with the same settings (WAL on), peak RSS \
                     {}, median {}; C = {} MiB.\n",
                    c.rate,
                    mib(c.peak_kb),
                    c.median_kb.map_or_else(|| "n/a".to_owned(), mib),
                    PROGRAM_BYTES >> 20
                );
            }
            Some(Err(e)) => {
                let _ = writeln!(s, "Calibration of C failed: {e}\n");
            }
            None => {}
        }
        let _ = writeln!(
            s,
            "| receiver WAL | offered words/s | delivered words/s | feeder stalled | max RSS | \
             median RSS | max RSS by quarter of the feed | bound | words delivered | output caught up | lost | duplicated | \
             result |\n\
             |---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"
        );
        for r in &self.runs {
            let _ = match r {
                Ok(run) => {
                    let why = run.failures();
                    writeln!(
                        s,
                        "| {} | {:.0} | {:.0} | {:.1} of {:.0} s | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                        if run.wal { "on" } else { "off" },
                        run.offered,
                        run.delivered,
                        run.stalled_ms as f64 / 1000.0,
                        run.secs,
                        mib(run.peak_kb),
                        run.median_kb.map_or_else(|| "n/a".to_owned(), mib),
                        run.quarters_kb
                            .map(|kb| format!("{}", kb >> 10))
                            .join(" / "),
                        mib(run.bound.bytes() / 1024),
                        run.sent,
                        if run.counted >= run.sent {
                            format!("after {:.0} s", run.drain_secs)
                        } else {
                            format!("no: {} words after {:.0} s", run.counted, run.drain_secs)
                        },
                        run.lost,
                        run.duplicated,
                        if why.is_empty() {
                            "pass".to_owned()
                        } else {
                            format!("FAIL: {}", why.join("; "))
                        }
                    )
                }
                Err(e) => writeln!(s, "| failed: {e} | | | | | | | | | | | | FAIL |"),
            };
        }
        let _ = writeln!(s, "\nBounds:\n");
        for run in self.runs.iter().flatten() {
            let _ = writeln!(
                s,
                "* WAL {}: {}",
                if run.wal { "on" } else { "off" },
                run.bound.formula()
            );
        }
        s.push('\n');
    }
}

/// The environment the phase gives `word_count`.
pub(crate) fn env() -> Vec<(String, String)> {
    vec![
        ("WEIR_BLOCK_STORE_BYTES".into(), STORE_BYTES.to_string()),
        (
            "WEIR_RECEIVER_BATCH_MAX_BYTES".into(),
            BATCH_MAX_BYTES.to_string(),
        ),
        (
            "WEIR_MAX_PENDING_BATCHES".into(),
            PENDING_BATCHES.to_string(),
        ),
    ]
}

/// Mean bytes per line of the pool's text (the newline included).
pub(crate) fn line_bytes(pool: &Pool) -> f64 {
    let (bytes, lines) = pool.chunks.iter().fold((0usize, 0usize), |(b, l), c| {
        (
            b + c.bytes.len(),
            l + c.bytes.iter().filter(|x| **x == b'\n').count(),
        )
    });
    bytes as f64 / lines.max(1) as f64
}

/// Starts `word_count` with the phase's settings, feeds it at `rate` for `secs`, drains
/// the output (for at most `patience`) and compares it with what was delivered.
pub(crate) fn run(
    launch: &Launch,
    plan: &Plan,
    pool: &Arc<Pool>,
    root: &Path,
    wal: bool,
    (rate, secs, patience): (f64, f64, Duration),
) -> Result<Run, BoxError> {
    let mut launch = launch.clone();
    launch.weir_env.extend(env());
    let dirs = RunDirs::fresh(root)?;
    let feeder = Feeder::socket(Arc::clone(pool), Some(rate))?;
    let addr = feeder.addr.ok_or("the socket feeder has no address")?;
    let mut running = launch.start(
        Kind::Weir,
        &Source::Socket(addr),
        plan.batch_ms,
        wal,
        &dirs,
        "run",
    )?;
    let (t0, w0, words0) = (Instant::now(), wall_ms(), feeder.tally().words());
    sleep_until(t0 + Duration::from_secs_f64(secs));
    let (t1, w1, words1) = (Instant::now(), wall_ms(), feeder.tally().words());
    let tally = Arc::clone(feeder.tally());
    feeder.stop()?;
    let median_kb = running.rss_median_kb(t0);
    let feed_secs = (t1 - t0).as_secs_f64();
    let quarters_kb = quarters(&running.rss_samples(t0), t0, t1 - t0);
    // The stalls from the first delivery on (the start-up before it is not the feeder's).
    let curve = tally.curve();
    let first = curve.first().map_or(w0, |(t, _)| (*t).max(w0));
    let chunk_ms =
        (4.0 * 1000.0 * pool.chunks.first().map_or(0, |c| c.words) as f64 / rate).ceil() as u64;
    let stalled = stalled_ms(&curve, first, w1, STALL_MS.max(chunk_ms));
    let sent_counts = tally.counts(pool);
    let sent: u64 = sent_counts.values().sum();
    let drained_from = Instant::now();
    let counted = drain(&mut running, &dirs.output, sent, plan.batch_ms, patience);
    let drain_secs = drained_from.elapsed().as_secs_f64();
    // Memory until the output caught up; a graceful stop's last batch takes whatever is left.
    let peak_kb = running.peak_rss_kb();
    running.stop(Duration::from_secs(30))?;
    let out = summed_output(&dirs.output);
    let (lost, duplicated) = lost_and_duplicated(&sent_counts, &out);
    if lost > 0 || duplicated > 0 {
        // What differs, for the report: the first few words (and the data is kept).
        let mut differ: Vec<String> = sent_counts
            .iter()
            .map(|(w, s)| (w, *s, out.get(w).copied().unwrap_or(0)))
            .chain(
                out.iter()
                    .filter(|(w, _)| !sent_counts.contains_key(*w))
                    .map(|(w, o)| (w, 0, *o)),
            )
            .filter(|(_, s, o)| s != o)
            .map(|(w, s, o)| format!("{w:?} sent {s} counted {o}"))
            .collect();
        differ.sort();
        differ.truncate(10);
        println!(
            "bench: overload WAL {}: words that differ: {} (data kept in {})",
            if wal { "on" } else { "off" },
            differ.join(", "),
            root.display()
        );
    } else {
        dirs.discard_data();
    }
    Ok(Run {
        wal,
        offered: rate,
        delivered: (words1 - words0) as f64 / feed_secs,
        secs: feed_secs,
        sent,
        stalled_ms: stalled,
        peak_kb,
        median_kb,
        quarters_kb,
        bound: Bound::new(wal, line_bytes(pool)),
        drain_secs,
        counted,
        lost,
        duplicated,
    })
}

/// The highest of the (time, KiB) `samples` in each quarter of the `span` from `t0`.
pub(crate) fn quarters(samples: &[(Instant, u64)], t0: Instant, span: Duration) -> [u64; 4] {
    let mut q = [0; 4];
    for (t, kb) in samples {
        let at = t.saturating_duration_since(t0).as_secs_f64() / span.as_secs_f64().max(1e-9);
        if (0.0..1.0).contains(&at) {
            let i = ((at * 4.0) as usize).min(3);
            q[i] = q[i].max(*kb);
        }
    }
    q
}

/// The calibration run: `rate` words/s for `secs` with the phase's settings and the WAL on.
pub(crate) fn calibrate(
    launch: &Launch,
    plan: &Plan,
    pool: &Arc<Pool>,
    root: &Path,
    rate: f64,
    secs: f64,
) -> Result<Calibration, BoxError> {
    let mut launch = launch.clone();
    launch.weir_env.extend(env());
    let dirs = RunDirs::fresh(root)?;
    let feeder = Feeder::socket(Arc::clone(pool), Some(rate))?;
    let addr = feeder.addr.ok_or("the socket feeder has no address")?;
    let mut running = launch.start(
        Kind::Weir,
        &Source::Socket(addr),
        plan.batch_ms,
        true,
        &dirs,
        "calibration",
    )?;
    let t0 = Instant::now();
    sleep_until(t0 + Duration::from_secs_f64(secs));
    let median_kb = running.rss_median_kb(t0);
    let peak_kb = running.peak_rss_kb();
    feeder.stop()?;
    running.stop(Duration::from_secs(15))?;
    dirs.discard_data();
    Ok(Calibration {
        rate,
        peak_kb,
        median_kb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_adds_the_pending_batches_only_with_the_wal_on() {
        let off = Bound::new(false, 64.0);
        let on = Bound::new(true, 64.0);
        // 32/L = 0.5: blocks hold 1.5 times their text; the running batch 0.5 × M; all of it
        // times A = 1.5.
        let rest = BATCH_MAX_BYTES / 2 + CHUNKS;
        assert_eq!(
            off.bytes(),
            (STORE_BYTES * 3 / 2 + rest) * 3 / 2 + PROGRAM_BYTES
        );
        assert_eq!(
            on.bytes(),
            ((STORE_BYTES + PENDING_BATCHES * BATCH_MAX_BYTES) * 3 / 2 + rest) * 3 / 2
                + PROGRAM_BYTES
        );
        assert!(on.formula().contains("P 4 × M 128"), "{}", on.formula());
        assert!(off.formula().ends_with("(L = 64.0 bytes/line)"));
    }

    #[test]
    fn the_offered_rate_is_the_explicit_one_or_twice_the_sustained_one() {
        assert_eq!(offered_rate(Some(5.0), Some(100.0), true), Ok(5.0));
        assert_eq!(offered_rate(None, Some(100.0), false), Ok(200.0));
        let err = offered_rate(None, None, true).expect_err("no rate");
        assert!(
            err.contains("--overload-rate") && err.contains("WAL on"),
            "{err}"
        );
        assert!(offered_rate(Some(0.0), None, true).is_err());
    }

    #[test]
    fn stalls_are_the_gaps_between_deliveries_over_the_threshold() {
        // Deliveries every ms from 1000 to 1010, a 50 ms gap, every ms to 1100, then none
        // until the end at 1200.
        let mut curve: Vec<(u64, u64)> = (1000..=1010).map(|t| (t, t)).collect();
        curve.extend((1060..=1100).map(|t| (t, t)));
        assert_eq!(stalled_ms(&curve, 1000, 1200, 20), 50 + 100);
        assert_eq!(stalled_ms(&curve, 1000, 1100, 20), 50);
        assert_eq!(stalled_ms(&curve, 1000, 1100, 60), 0);
        assert_eq!(
            stalled_ms(&[], 0, 1000, 20),
            1000,
            "nothing delivered: all stalled"
        );
    }

    #[test]
    fn quarters_keep_the_highest_sample_of_each() {
        let t0 = Instant::now();
        let at = |ms: u64, kb: u64| (t0 + Duration::from_millis(ms), kb);
        let samples = [
            at(0, 5),
            at(100, 7),
            at(250, 3),
            at(600, 9),
            at(999, 4),
            at(1000, 99),
        ];
        assert_eq!(
            quarters(&samples, t0, Duration::from_secs(1)),
            [7, 3, 9, 4],
            "the sample at the end of the span is outside it"
        );
    }

    fn run(peak_mib: u64, delivered: f64, stalled_ms: u64, lost: u64) -> Run {
        Run {
            wal: true,
            offered: 1000.0,
            delivered,
            secs: 60.0,
            sent: 100,
            stalled_ms,
            peak_kb: peak_mib << 10,
            median_kb: None,
            quarters_kb: [0; 4],
            bound: Bound::new(true, 64.0),
            drain_secs: 1.0,
            counted: 100,
            lost,
            duplicated: 0,
        }
    }

    #[test]
    fn a_run_fails_over_the_bound_without_pushback_or_with_a_word_lost() {
        let bound_mib = Bound::new(true, 64.0).bytes() >> 20;
        assert!(run(bound_mib - 1, 500.0, 30_000, 0).failures().is_empty());
        let over = run(bound_mib + 1, 500.0, 30_000, 0).failures();
        assert!(
            over.len() == 1 && over[0].contains("over the bound"),
            "{over:?}"
        );
        let kept_up = run(100, 990.0, 30_000, 0).failures();
        assert!(kept_up.len() == 1 && kept_up[0].contains("not pushed back"));
        let never_held = run(100, 500.0, 10, 0).failures();
        assert!(never_held.len() == 1 && never_held[0].contains("not pushed back"));
        let lost = run(100, 500.0, 30_000, 3).failures();
        assert!(lost.len() == 1 && lost[0].contains("3 words lost"));
    }
}
