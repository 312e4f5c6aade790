//! The feeder: a workload's text (`workload.rs`; by default the fixed vocabulary of
//! `weir_examples::generator::WORDS`), sent over
//! TCP (the bench listens on 127.0.0.1, the system under test connects like to `nc -lk`) or
//! dropped into a directory (a hidden temp file written, then renamed), at a set rate in
//! words/s or as fast as possible.
//!
//! The text is a pool of pre-generated chunks of whole lines, each with its per-word counts,
//! so sending costs one `write` per chunk and the feeder knows exactly what it delivered: a
//! chunk counts once it is fully handed to the kernel (socket) or renamed into place
//! (directory). A chunk cut short by a dead connection counts its whole lines.

use std::collections::HashMap;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir_examples::generator::TextGenerator;

use crate::workload::{Lines, Workload};

/// Lines per pre-generated chunk.
const CHUNK_LINES: usize = 64;
/// Chunks in the pool (the text repeats after this many).
const POOL_CHUNKS: usize = 512;
/// A directory feeder closes a file this often (or past [`MAX_FILE_BYTES`]).
const FILE_EVERY: Duration = Duration::from_millis(50);
/// How long a stopping socket feeder tries to finish the line it is in.
const STOP_LINE_PATIENCE: Duration = Duration::from_secs(10);
/// The largest file a directory feeder writes.
const MAX_FILE_BYTES: usize = 4 << 20;

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One chunk of whole lines and what it holds.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The text, ending in `\n`.
    pub(crate) bytes: Vec<u8>,
    /// Words in it.
    pub(crate) words: u64,
    /// How often each vocabulary word it holds occurs: (index in the vocabulary, count),
    /// by index.
    pub(crate) counts: Vec<(u32, u32)>,
}

/// The pre-generated text.
#[derive(Debug)]
pub(crate) struct Pool {
    /// The chunks, sent in order, cyclically.
    pub(crate) chunks: Vec<Chunk>,
    /// The vocabulary, by index.
    words: Vec<String>,
    index: HashMap<String, u32>,
}

/// The most text a pool holds (a large vocabulary wants a large pool, so that its words
/// occur; this bounds the bench's memory).
const MAX_POOL_BYTES: usize = 64 << 20;

impl Pool {
    /// The pool of `workload`'s text, fixed by `seed`: at least [`POOL_CHUNKS`] chunks, and
    /// enough for about two occurrences of each vocabulary word, up to [`MAX_POOL_BYTES`].
    pub(crate) fn new(workload: &Workload, seed: u64) -> Self {
        let mut lines = Lines::new(workload, seed);
        let words: Vec<String> = lines.words().to_vec();
        let index: HashMap<String, u32> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.clone(), i as u32))
            .collect();
        // The classic workload is the issue-7 text, byte for byte (tabs and double spaces
        // now and then), so that results stay comparable.
        let mut classic = workload.is_classic().then(|| TextGenerator::new(seed));
        let mut scratch = vec![0u32; words.len()];
        let mut chunks = Vec::new();
        let (mut total_words, mut total_bytes) = (0usize, 0usize);
        while chunks.len() < POOL_CHUNKS
            || (total_words < 2 * words.len() && total_bytes < MAX_POOL_BYTES)
        {
            let mut text = String::new();
            let mut seen = Vec::new();
            match &mut classic {
                Some(generator) => {
                    text = generator.text(CHUNK_LINES);
                    seen.extend(
                        text.split_whitespace()
                            .filter_map(|w| index.get(w).copied()),
                    );
                }
                None => {
                    for _ in 0..CHUNK_LINES {
                        lines.line(&mut text, &mut seen);
                        text.push('\n');
                    }
                }
            }
            let chunk_words = text.split_whitespace().count();
            total_words += chunk_words;
            total_bytes += text.len();
            chunks.push(Chunk {
                bytes: text.into_bytes(),
                words: chunk_words as u64,
                counts: sparse(&seen, &mut scratch),
            });
        }
        Pool {
            chunks,
            words,
            index,
        }
    }

    /// The vocabulary, by index.
    pub(crate) fn words(&self) -> &[String] {
        &self.words
    }

    /// Mean bytes per word of the text.
    pub(crate) fn bytes_per_word(&self) -> f64 {
        let bytes: usize = self.chunks.iter().map(|c| c.bytes.len()).sum();
        let words: u64 = self.chunks.iter().map(|c| c.words).sum();
        bytes as f64 / words.max(1) as f64
    }

    /// Counts of the whole lines in `prefix` (a chunk cut short).
    fn count_whole_lines(&self, prefix: &[u8]) -> (u64, Vec<(u32, u32)>) {
        let end = prefix
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        let mut seen = Vec::new();
        let mut words = 0;
        for w in String::from_utf8_lossy(&prefix[..end]).split_whitespace() {
            if let Some(i) = self.index.get(w) {
                seen.push(*i);
            }
            words += 1;
        }
        let mut scratch = vec![0u32; self.words.len()];
        (words, sparse(&seen, &mut scratch))
    }
}

/// The (index, count) pairs of the indices in `seen`, by index; `scratch` (one counter per
/// vocabulary word, all zero) is left all zero.
fn sparse(seen: &[u32], scratch: &mut [u32]) -> Vec<(u32, u32)> {
    let mut distinct = Vec::new();
    for &i in seen {
        let c = &mut scratch[i as usize];
        if *c == 0 {
            distinct.push(i);
        }
        *c += 1;
    }
    distinct.sort_unstable();
    distinct
        .into_iter()
        .map(|i| (i, std::mem::take(&mut scratch[i as usize])))
        .collect()
}

/// What a feeder has delivered: per-word counts, and (wall ms, cumulative words) samples at
/// most one per millisecond, for end-to-end latency.
#[derive(Debug)]
pub(crate) struct Tally {
    counts: Vec<AtomicU64>,
    words: AtomicU64,
    curve: Mutex<Vec<(u64, u64)>>,
}

impl Tally {
    fn new(vocabulary: usize) -> Self {
        Tally {
            counts: (0..vocabulary).map(|_| AtomicU64::new(0)).collect(),
            words: AtomicU64::new(0),
            curve: Mutex::new(Vec::new()),
        }
    }

    fn add(&self, words: u64, counts: &[(u32, u32)]) {
        for (i, c) in counts {
            if let Some(total) = self.counts.get(*i as usize) {
                total.fetch_add(u64::from(*c), Ordering::Relaxed);
            }
        }
        let cumulative = self.words.fetch_add(words, Ordering::Relaxed) + words;
        let now = wall_ms();
        let mut curve = self.curve.lock().unwrap_or_else(PoisonError::into_inner);
        match curve.last_mut() {
            Some(last) if last.0 == now => last.1 = cumulative,
            _ => curve.push((now, cumulative)),
        }
    }

    /// Words delivered so far.
    pub(crate) fn words(&self) -> u64 {
        self.words.load(Ordering::Relaxed)
    }

    /// Delivered count per vocabulary word of `pool`.
    pub(crate) fn counts(&self, pool: &Pool) -> HashMap<String, u64> {
        pool.words()
            .iter()
            .zip(&self.counts)
            .map(|(w, c)| (w.clone(), c.load(Ordering::Relaxed)))
            .collect()
    }

    /// The (wall ms, cumulative words) samples.
    pub(crate) fn curve(&self) -> Vec<(u64, u64)> {
        self.curve
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Paces chunk sends to a rate (words/s), or not at all.
struct Pacer {
    rate: Option<f64>,
    base: Instant,
    base_words: u64,
}

impl Pacer {
    fn new(rate: Option<f64>, words: u64) -> Self {
        Pacer {
            rate,
            base: Instant::now(),
            base_words: words,
        }
    }

    /// Starts counting afresh (after a reconnection: no burst to catch up).
    fn reset(&mut self, words: u64) {
        self.base = Instant::now();
        self.base_words = words;
    }

    /// Waits until `words` delivered words are due. Pacing, not synchronisation: the feeder
    /// emulates a source producing at a rate.
    fn wait(&self, words: u64) {
        if let Some(rate) = self.rate {
            let due = self.base
                + Duration::from_secs_f64(words.saturating_sub(self.base_words) as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
    }
}

/// A running feeder thread.
#[derive(Debug)]
pub(crate) struct Feeder {
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    thread: Option<JoinHandle<io::Result<()>>>,
    /// Where a socket feeder listens.
    pub(crate) addr: Option<SocketAddr>,
}

impl Feeder {
    /// Listens on 127.0.0.1 (a free port) and sends to each client that connects, one at a
    /// time, at `rate` words/s (`None`: as fast as the client takes it).
    pub(crate) fn socket(pool: Arc<Pool>, rate: Option<f64>) -> io::Result<Feeder> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::new(pool.words().len()));
        let (s, t) = (Arc::clone(&stop), Arc::clone(&tally));
        let thread = std::thread::Builder::new()
            .name("bench-feeder".into())
            .spawn(move || socket_loop(&listener, &pool, rate, &s, &t))?;
        Ok(Feeder {
            stop,
            tally,
            thread: Some(thread),
            addr: Some(addr),
        })
    }

    /// Drops files into `dir` at `rate` words/s (`None`: as fast as possible).
    pub(crate) fn dir(pool: Arc<Pool>, rate: Option<f64>, dir: PathBuf) -> io::Result<Feeder> {
        fs::create_dir_all(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::new(pool.words().len()));
        let (s, t) = (Arc::clone(&stop), Arc::clone(&tally));
        let thread = std::thread::Builder::new()
            .name("bench-feeder".into())
            .spawn(move || dir_loop(&dir, &pool, rate, &s, &t))?;
        Ok(Feeder {
            stop,
            tally,
            thread: Some(thread),
            addr: None,
        })
    }

    /// What it has delivered.
    pub(crate) fn tally(&self) -> &Arc<Tally> {
        &self.tally
    }

    /// Stops the feeder; its error, if it failed.
    pub(crate) fn stop(mut self) -> io::Result<()> {
        self.halt()
    }

    fn halt(&mut self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| io::Error::other("the feeder thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

fn socket_loop(
    listener: &TcpListener,
    pool: &Pool,
    rate: Option<f64>,
    stop: &AtomicBool,
    tally: &Tally,
) -> io::Result<()> {
    let mut next = 0usize;
    let mut pacer = Pacer::new(rate, 0);
    while !stop.load(Ordering::SeqCst) {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // Nobody connected yet: look again shortly (and notice a stop).
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            Err(e) => return Err(e),
        };
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        // A bounded write, so a stop is noticed while the client does not read.
        stream.set_write_timeout(Some(Duration::from_millis(50)))?;
        pacer.reset(tally.words());
        'connection: while !stop.load(Ordering::SeqCst) {
            let chunk = &pool.chunks[next];
            pacer.wait(tally.words());
            let mut written = 0;
            // When a stop came while the client did not read: how long the feeder still tries
            // to finish the line it is in.
            let mut give_up: Option<Instant> = None;
            while written < chunk.bytes.len() {
                match stream.write(&chunk.bytes[written..]) {
                    Ok(0) => break,
                    Ok(n) => written += n,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        // Stopping ends at a line's end: a partial last line would reach the
                        // client, which stores it at the end of input and counts its words
                        // (and word fragments), while the tally counts whole lines only. A
                        // client that never reads again is given up on after a while.
                        let at_line_end = written == 0 || chunk.bytes[written - 1] == b'\n';
                        if stop.load(Ordering::SeqCst)
                            && (at_line_end
                                || Instant::now()
                                    >= *give_up
                                        .get_or_insert_with(|| Instant::now() + STOP_LINE_PATIENCE))
                        {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            if written == chunk.bytes.len() {
                tally.add(chunk.words, &chunk.counts);
                next = (next + 1) % pool.chunks.len();
            } else {
                // The client went away (or we stop) mid-chunk: its whole lines were sent.
                let (words, counts) = pool.count_whole_lines(&chunk.bytes[..written]);
                tally.add(words, &counts);
                next = (next + 1) % pool.chunks.len();
                break 'connection;
            }
        }
    }
    Ok(())
}

fn dir_loop(
    dir: &Path,
    pool: &Pool,
    rate: Option<f64>,
    stop: &AtomicBool,
    tally: &Tally,
) -> io::Result<()> {
    let mut next = 0usize;
    let mut seq = 0u64;
    let pacer = Pacer::new(rate, 0);
    let mut pending_words = 0u64;
    let mut buf = Vec::with_capacity(MAX_FILE_BYTES);
    // The chunks in the file being written, counted once it is renamed into place.
    let mut in_file: Vec<usize> = Vec::new();
    let mut opened = Instant::now();
    let flush = |buf: &mut Vec<u8>, in_file: &mut Vec<usize>, words: &mut u64, seq: &mut u64| {
        if buf.is_empty() {
            return Ok::<(), io::Error>(());
        }
        let name = format!("in-{:09}-{}.txt", *seq, wall_ms());
        let tmp = dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, &buf)?;
        fs::rename(&tmp, dir.join(&name))?;
        for chunk in in_file.drain(..) {
            let chunk = &pool.chunks[chunk];
            tally.add(chunk.words, &chunk.counts);
        }
        *seq += 1;
        buf.clear();
        *words = 0;
        Ok(())
    };
    while !stop.load(Ordering::SeqCst) {
        pacer.wait(tally.words() + pending_words);
        let chunk = &pool.chunks[next];
        in_file.push(next);
        next = (next + 1) % pool.chunks.len();
        buf.extend_from_slice(&chunk.bytes);
        pending_words += chunk.words;
        if opened.elapsed() >= FILE_EVERY || buf.len() >= MAX_FILE_BYTES {
            flush(&mut buf, &mut in_file, &mut pending_words, &mut seq)?;
            opened = Instant::now();
        }
    }
    flush(&mut buf, &mut in_file, &mut pending_words, &mut seq)
}

/// The feeder's own ceiling: words/s it delivers as fast as possible, for `secs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ceiling {
    /// Over TCP to a client that reads and discards.
    pub(crate) socket_words_per_s: f64,
    /// Files into a directory (no reader).
    pub(crate) dir_words_per_s: f64,
}

/// Measures [`Ceiling`] (each for `secs`), with scratch files under `scratch`.
pub(crate) fn ceiling(pool: &Arc<Pool>, secs: f64, scratch: &Path) -> io::Result<Ceiling> {
    let feeder = Feeder::socket(Arc::clone(pool), None)?;
    let addr = feeder
        .addr
        .ok_or_else(|| io::Error::other("a socket feeder has an address"))?;
    let mut client = TcpStream::connect(addr)?;
    client.set_read_timeout(Some(Duration::from_millis(100)))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let window = Duration::from_secs_f64(secs);
    while start.elapsed() < window {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e),
        }
    }
    let socket_words_per_s = feeder.tally().words() as f64 / start.elapsed().as_secs_f64();
    drop(client);
    feeder.stop()?;

    let dir = scratch.join("feeder-ceiling");
    let _ = fs::remove_dir_all(&dir);
    let feeder = Feeder::dir(Arc::clone(pool), None, dir.clone())?;
    let start = Instant::now();
    std::thread::sleep(window); // a fixed measuring window, not a wait for an event
    let dir_words_per_s = feeder.tally().words() as f64 / start.elapsed().as_secs_f64();
    feeder.stop()?;
    let _ = fs::remove_dir_all(&dir);
    Ok(Ceiling {
        socket_words_per_s,
        dir_words_per_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_pool_chunk_counts_what_its_text_holds() {
        for spec in [
            "classic",
            "vocab=300,len=2-5,line=1-20,dist=zipf:1.0,text=utf8",
        ] {
            let pool = Pool::new(&spec.parse().expect("spec"), 3);
            let chunk = &pool.chunks[5];
            let text = String::from_utf8_lossy(&chunk.bytes);
            assert_eq!(chunk.words, text.split_whitespace().count() as u64);
            let mut expected: HashMap<&str, u32> = HashMap::new();
            for w in text.split_whitespace() {
                *expected.entry(w).or_default() += 1;
            }
            let counted: HashMap<&str, u32> = chunk
                .counts
                .iter()
                .map(|(i, c)| (pool.words()[*i as usize].as_str(), *c))
                .collect();
            assert_eq!(counted, expected, "{spec}");
            assert!(text.ends_with('\n'), "chunks are whole lines");
            let cut = &chunk.bytes[..chunk.bytes.len() / 2];
            let (words, _) = pool.count_whole_lines(cut);
            assert!(
                words < chunk.words,
                "half a chunk holds fewer whole-line words"
            );
        }
    }

    #[test]
    fn a_large_vocabulary_gets_a_pool_where_its_words_occur() {
        let pool = Pool::new(&"vocab=100000".parse().expect("spec"), 1);
        let words: u64 = pool.chunks.iter().map(|c| c.words).sum();
        assert!(words >= 200_000, "{words}");
        let mut distinct = std::collections::HashSet::new();
        for chunk in &pool.chunks {
            distinct.extend(chunk.counts.iter().map(|(i, _)| *i));
        }
        // Two draws per word on average: most words occur.
        assert!(distinct.len() > 80_000, "{}", distinct.len());
    }

    #[test]
    fn a_socket_client_receives_exactly_what_the_tally_counts() {
        let pool = Arc::new(Pool::new(&Workload::default(), 11));
        let feeder = Feeder::socket(Arc::clone(&pool), None).expect("feeder");
        let addr = feeder.addr.expect("address");
        let (enough_tx, enough_rx) = mpsc::channel();
        let client = std::thread::spawn(move || {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let mut got = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut signalled = false;
            loop {
                let n = stream.read(&mut buf).expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if !signalled && got.len() > 256 << 10 {
                    signalled = true;
                    enough_tx.send(()).expect("signal");
                }
            }
            let mut counts: HashMap<String, u64> = HashMap::new();
            for w in String::from_utf8_lossy(&got).split_whitespace() {
                *counts.entry(w.to_owned()).or_insert(0) += 1;
            }
            counts
        });
        enough_rx.recv().expect("the client read 256 KiB");
        let tally = Arc::clone(feeder.tally());
        feeder.stop().expect("stop");
        let received = client.join().expect("client");
        let sent: HashMap<String, u64> = tally
            .counts(&pool)
            .into_iter()
            .filter(|(_, c)| *c > 0)
            .collect();
        assert!(tally.words() > 30_000);
        assert_eq!(received, sent, "every delivered word counted once");
        let curve = tally.curve();
        assert_eq!(curve.last().map(|(_, c)| *c), Some(tally.words()));
        assert!(
            curve
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
    }
}
