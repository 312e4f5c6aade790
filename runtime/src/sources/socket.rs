//! The socket text receiver: lines of UTF-8 text from a TCP server, Spark's
//! `socketTextStream`.
//!
//! [`SocketTextReceiver`] connects to a `host:port`, cuts what it reads into lines, and hands
//! them to the engine with [`ReceiverContext::store`] in chunks — never one message per line.
//! A chunk is stored when it holds [`chunk_records`](SocketTextReceiver::chunk_records)
//! lines or [`chunk_bytes`](SocketTextReceiver::chunk_bytes) bytes, and at the latest
//! [`flush_interval`](SocketTextReceiver::flush_interval) (20 ms by default) after its first
//! line arrived, so a trickle of lines is not held back waiting for a full chunk. While a
//! chunk is on its way to the WAL the receiver reads the next one
//! ([`ReceiverContext::submit`]), but it keeps at most
//! [`stores_in_flight`](SocketTextReceiver::stores_in_flight) chunks in flight (1 by
//! default): past that it stops reading the socket until the oldest is stored, so a slow WAL
//! slows the sender down through TCP flow control instead of growing a buffer here.
//!
//! # What is a line
//!
//! Bytes up to a `\n`, without it and without a `\r` before it; a last line without `\n` is
//! a line when the server closes the connection. A line that is not valid UTF-8 is reported
//! and skipped. A line longer than [`max_line_len`](SocketTextReceiver::max_line_len) bytes
//! is reported and, depending on [`LongLines`], skipped or cut to its first `max_line_len`
//! bytes (at a character boundary); either way the receiver's memory stays bounded by that
//! length. Both are counted in [`SocketStats`], exactly, and logged as `tracing` warnings (the
//! line's number and byte offset in the connection) — but of each kind at most once per
//! [`problem_log_interval`](SocketTextReceiver::problem_log_interval) (10 s by default): that
//! warning is a sample and says how many were counted and not logged since the previous one,
//! so a server sending bad lines cannot flood the log. Nothing here panics on what the server
//! sends.
//!
//! # Connection loss
//!
//! When the server closes the connection or it fails, the receiver stores what it has read
//! and connects again, after an exponential backoff with jitter (from
//! [`backoff`](SocketTextReceiver::backoff)'s initial delay, doubling per consecutive
//! failure up to its maximum; a connection that delivered data resets it). Every attempt is
//! logged. A socket receiver never ends by itself: it returns `Ok` only when
//! [`ReceiverContext::stopping`] resolves, after storing what it read.
//!
//! # Guarantees
//!
//! A TCP socket cannot replay, so this receiver is as reliable as Spark's: what it stored is
//! durable in the WAL, but lines read and not yet stored when the receiver is killed are lost,
//! and so is whatever the server sent into a connection that broke. If a store fails while
//! the receiver is not stopping, it returns the error and the engine restarts it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use weir_actors::BlockInfo;
use weir_actors::pipeline::{
    BoxFuture, PendingStore, Receiver, ReceiverContext, ReceiverFactory, StoreError, UserError,
};

use super::problems::{ProblemLog, suppressed_note};
use super::rate::RateLimiter;

/// What to do with a line longer than the maximum line length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LongLines {
    /// Report it and drop the whole line (the default).
    #[default]
    Skip,
    /// Report it and keep its first `max_line_len` bytes, cut at a character boundary.
    Truncate,
}

/// Counters of one receiver, shared by every instance its factory makes (so they survive a
/// restart). Read them with [`SocketStats::snapshot`].
#[derive(Debug, Default)]
pub struct SocketStats {
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    lines: AtomicU64,
    bytes: AtomicU64,
    bad_utf8_lines: AtomicU64,
    long_lines: AtomicU64,
    blocks: AtomicU64,
}

/// The values of [`SocketStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketStatsSnapshot {
    /// Connections established.
    pub connects: u64,
    /// Connection attempts that failed or timed out.
    pub connect_failures: u64,
    /// Connections closed by the server or broken.
    pub disconnects: u64,
    /// Lines stored (including cut long lines).
    pub lines: u64,
    /// Bytes read from the sockets.
    pub bytes: u64,
    /// Lines skipped because they were not valid UTF-8.
    pub bad_utf8_lines: u64,
    /// Lines over the maximum length (skipped or cut).
    pub long_lines: u64,
    /// Blocks stored (calls to `store` that succeeded).
    pub blocks: u64,
}

impl SocketStats {
    /// The current values.
    pub fn snapshot(&self) -> SocketStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SocketStatsSnapshot {
            connects: get(&self.connects),
            connect_failures: get(&self.connect_failures),
            disconnects: get(&self.disconnects),
            lines: get(&self.lines),
            bytes: get(&self.bytes),
            bad_utf8_lines: get(&self.bad_utf8_lines),
            long_lines: get(&self.long_lines),
            blocks: get(&self.blocks),
        }
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Reads UTF-8 lines from a TCP server and stores them in chunks; reconnects with backoff.
///
/// Built with [`new`](Self::new) and the setters; its clones share the [`SocketStats`] and
/// the rate, so it is its own [`ReceiverFactory`].
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use weir::sources::rate::RateLimiter;
/// use weir::sources::socket::SocketTextReceiver;
///
/// let receiver = SocketTextReceiver::new("127.0.0.1:9999")
///     .backoff(Duration::from_millis(100), Duration::from_secs(5))
///     .rate_limiter(RateLimiter::new(10_000.0)?);
/// let stats = receiver.stats();
/// // hand `receiver` to the engine as the stream's ReceiverFactory
/// # let _ = (receiver, stats);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SocketTextReceiver {
    addr: String,
    max_line_len: usize,
    long_lines: LongLines,
    chunk_records: usize,
    chunk_bytes: usize,
    flush_interval: Duration,
    stores_in_flight: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    connect_timeout: Duration,
    limiter: Option<RateLimiter>,
    stats: Arc<SocketStats>,
    problems: Arc<ProblemLog>,
}

impl fmt::Debug for SocketTextReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SocketTextReceiver")
            .field("addr", &self.addr)
            .field("max_line_len", &self.max_line_len)
            .field("long_lines", &self.long_lines)
            .field("chunk_records", &self.chunk_records)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("stores_in_flight", &self.stores_in_flight)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("rate", &self.limiter.as_ref().map(RateLimiter::rate))
            .field("problem_log_interval", &self.problems.interval())
            .finish_non_exhaustive()
    }
}

/// How many bytes a read asks for at least.
const READ_SIZE: usize = 64 * 1024;

impl SocketTextReceiver {
    /// A receiver of the server at `addr` (`host:port`, resolved at every connection attempt),
    /// with the defaults: lines of at most 64 KiB (longer ones skipped), chunks of at most
    /// 100 000 lines or 1 MiB stored at least every 20 ms, one chunk in flight while the next
    /// is read, reconnection backoff from 100 ms up to 10 s, a 5 s connect timeout, no rate
    /// limit, at most one warning per kind of bad line every 10 s.
    pub fn new(addr: impl Into<String>) -> Self {
        SocketTextReceiver {
            addr: addr.into(),
            max_line_len: 64 * 1024,
            long_lines: LongLines::Skip,
            chunk_records: 100_000,
            chunk_bytes: 1024 * 1024,
            flush_interval: Duration::from_millis(20),
            stores_in_flight: 1,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            limiter: None,
            stats: Arc::default(),
            problems: Arc::default(),
        }
    }

    /// The longest line kept whole, in bytes (at least 1).
    pub fn max_line_len(mut self, bytes: usize) -> Self {
        self.max_line_len = bytes.max(1);
        self
    }

    /// What happens to longer lines.
    pub fn long_lines(mut self, policy: LongLines) -> Self {
        self.long_lines = policy;
        self
    }

    /// A chunk is stored once it holds this many lines (at least 1).
    pub fn chunk_records(mut self, lines: usize) -> Self {
        self.chunk_records = lines.max(1);
        self
    }

    /// A chunk is stored once its lines hold this many bytes (at least 1).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// A chunk is stored at the latest this long after its first line arrived.
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.flush_interval = interval;
        self
    }

    /// How many stored chunks may still be on their way to the WAL while the receiver reads
    /// the next (default 1). With 0 the socket is read only once every chunk is stored, so a
    /// chunk's WAL append and the reading of the next never overlap; more lets chunks share
    /// group commits, at the cost of that many chunks held (at most
    /// [`chunk_bytes`](Self::chunk_bytes) each) and lost if the receiver dies.
    pub fn stores_in_flight(mut self, chunks: usize) -> Self {
        self.stores_in_flight = chunks;
        self
    }

    /// The delay before the first reconnection attempt and the cap of the doubling delays.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// How long a connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Caps the lines per second (Spark's `spark.streaming.receiver.maxRate`); the limiter's
    /// [`handle`](RateLimiter::handle) changes the rate while the receiver runs.
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Of each kind of bad line (invalid UTF-8, too long) at most one `tracing` warning per
    /// `interval` (default 10 s; zero: every line), shared with the receiver's clones; the
    /// others are counted in the [stats](Self::stats) and told by the next warning of their
    /// kind.
    pub fn problem_log_interval(mut self, interval: Duration) -> Self {
        self.problems = Arc::new(ProblemLog::new(interval));
        self
    }

    /// The receiver's counters, shared with its clones.
    pub fn stats(&self) -> Arc<SocketStats> {
        Arc::clone(&self.stats)
    }

    /// The server address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The delay before reconnection attempt `failures + 1`: the exponential delay, with
    /// "equal jitter" (half fixed, half uniformly random) so that many receivers that lost
    /// the same server do not come back in lockstep.
    fn backoff_delay(&self, failures: u32) -> Duration {
        let exp = self
            .initial_backoff
            .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff);
        let half = exp / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(fastrand::u64(0..=jitter_nanos))
    }

    async fn run(&mut self, ctx: &ReceiverContext) -> Result<(), UserError> {
        let mut failures: u32 = 0;
        loop {
            if ctx.is_stopping() {
                return Ok(());
            }
            let attempt = failures + 1;
            tracing::debug!(addr = %self.addr, attempt, "connecting");
            let connect =
                tokio::time::timeout(self.connect_timeout, TcpStream::connect(&self.addr));
            let connected = tokio::select! {
                biased;
                () = ctx.stopping() => return Ok(()),
                connected = connect => connected,
            };
            match connected {
                Ok(Ok(stream)) => {
                    bump(&self.stats.connects, 1);
                    let peer = stream
                        .peer_addr()
                        .map_or_else(|_| self.addr.clone(), |a| a.to_string());
                    tracing::info!(addr = %self.addr, %peer, "connected");
                    let mut conn = Connection::new(self, ctx, peer);
                    let end = conn.read(stream).await?;
                    let delivered = conn.delivered;
                    match end {
                        End::Stopped => return Ok(()),
                        End::Closed => {
                            tracing::info!(addr = %self.addr, "the server closed the connection")
                        }
                        End::Failed(err) => {
                            tracing::warn!(addr = %self.addr, error = %err, "the connection failed")
                        }
                    }
                    bump(&self.stats.disconnects, 1);
                    if delivered {
                        failures = 0;
                    }
                }
                Ok(Err(err)) => {
                    bump(&self.stats.connect_failures, 1);
                    tracing::warn!(addr = %self.addr, attempt, error = %err, "could not connect");
                }
                Err(_) => {
                    bump(&self.stats.connect_failures, 1);
                    tracing::warn!(
                        addr = %self.addr,
                        attempt,
                        timeout = ?self.connect_timeout,
                        "could not connect: timed out"
                    );
                }
            }
            let delay = self.backoff_delay(failures);
            failures = failures.saturating_add(1);
            tracing::info!(addr = %self.addr, next_attempt = failures + 1, ?delay, "reconnecting after a delay");
            tokio::select! {
                biased;
                () = ctx.stopping() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

impl Receiver for SocketTextReceiver {
    fn start(&mut self, ctx: ReceiverContext) -> BoxFuture<'_, Result<(), UserError>> {
        Box::pin(async move {
            let result = self.run(&ctx).await;
            tracing::info!(addr = %self.addr, stats = ?self.stats.snapshot(), "socket receiver ended");
            result
        })
    }
}

impl ReceiverFactory for SocketTextReceiver {
    fn create(&self) -> Box<dyn Receiver> {
        Box::new(self.clone())
    }
}

// ===================================== one connection ===================================== //

/// How a connection ended.
enum End {
    /// The receiver was asked to stop (and stored what it had).
    Stopped,
    /// The server closed it.
    Closed,
    /// Reading failed.
    Failed(std::io::Error),
}

/// Whether to go on after storing.
enum Flow {
    Go,
    Stop,
}

struct Connection<'a> {
    rx: &'a mut SocketTextReceiver,
    ctx: &'a ReceiverContext,
    peer: String,
    framer: LineFramer,
    chunk: Vec<Bytes>,
    chunk_bytes: usize,
    /// When the chunk's first line arrived.
    chunk_since: Option<Instant>,
    /// Chunks handed over and not yet answered, oldest first, with their line counts.
    in_flight: VecDeque<(PendingStore, u64)>,
    /// Whether any line was stored from this connection.
    delivered: bool,
}

impl<'a> Connection<'a> {
    fn new(rx: &'a mut SocketTextReceiver, ctx: &'a ReceiverContext, peer: String) -> Self {
        let framer = LineFramer::new(rx.max_line_len, rx.long_lines);
        Connection {
            rx,
            ctx,
            peer,
            framer,
            chunk: Vec::new(),
            chunk_bytes: 0,
            chunk_since: None,
            in_flight: VecDeque::new(),
            delivered: false,
        }
    }

    async fn read(&mut self, mut stream: TcpStream) -> Result<End, UserError> {
        loop {
            while let Some(framed) = self.framer.next_line() {
                if let Flow::Stop = self.take(framed).await? {
                    return Ok(End::Stopped);
                }
            }
            let deadline = self.chunk_since.map(|t| t + self.rx.flush_interval);
            let buf = self.framer.buffer_for_read();
            let read = tokio::select! {
                biased;
                () = self.ctx.stopping() => None,
                stored = oldest(&mut self.in_flight) => {
                    // Popped only now that it resolved, so a cancelled poll loses nothing.
                    let lines = self.in_flight.pop_front().map_or(0, |(_, lines)| lines);
                    if let Flow::Stop = self.stored(stored, lines)? {
                        // Hear the rest out: the supervisor stops once this receiver returns.
                        self.flush().await?;
                        return Ok(End::Stopped);
                    }
                    continue;
                }
                () = sleep_until_or_never(deadline) => Some(None),
                read = stream.read_buf(buf) => Some(Some(read)),
            };
            match read {
                None => {
                    self.flush().await?;
                    return Ok(End::Stopped);
                }
                Some(None) => {
                    if let Flow::Stop = self.submit().await? {
                        return Ok(End::Stopped);
                    }
                }
                Some(Some(Ok(0))) => {
                    if let Some(framed) = self.framer.finish()
                        && let Flow::Stop = self.take(framed).await?
                    {
                        return Ok(End::Stopped);
                    }
                    return Ok(match self.flush().await? {
                        Flow::Go => End::Closed,
                        Flow::Stop => End::Stopped,
                    });
                }
                Some(Some(Ok(n))) => bump(&self.rx.stats.bytes, n as u64),
                Some(Some(Err(err))) => {
                    return Ok(match self.flush().await? {
                        Flow::Go => End::Failed(err),
                        Flow::Stop => End::Stopped,
                    });
                }
            }
        }
    }

    /// Handles one framed line: reports it, or waits for the rate limit and adds it.
    async fn take(&mut self, framed: Framed) -> Result<Flow, UserError> {
        let line = match framed {
            Framed::Line(line) => line,
            Framed::BadUtf8 {
                line,
                offset,
                error,
            } => {
                bump(&self.rx.stats.bad_utf8_lines, 1);
                if let Some(suppressed) = self.rx.problems.admit("bad_utf8") {
                    tracing::warn!(
                        addr = %self.rx.addr, peer = %self.peer, line, offset,
                        kind = "bad_utf8", suppressed,
                        "line {line} (at byte {offset} of the connection) is not valid UTF-8 \
                         ({error}); it is skipped{}",
                        suppressed_note(suppressed)
                    );
                }
                return Ok(Flow::Go);
            }
            Framed::TooLong {
                line,
                offset,
                seen,
                kept,
            } => {
                bump(&self.rx.stats.long_lines, 1);
                let max = self.rx.max_line_len;
                let what = if kept.is_some() {
                    "cut to its first bytes"
                } else {
                    "skipped"
                };
                if let Some(suppressed) = self.rx.problems.admit("long_line") {
                    tracing::warn!(
                        addr = %self.rx.addr, peer = %self.peer, line, offset,
                        kind = "long_line", suppressed,
                        "line {line} (at byte {offset} of the connection) is longer than the \
                         maximum of {max} bytes (at least {seen}); it is {what}{}",
                        suppressed_note(suppressed)
                    );
                }
                match kept {
                    Some(kept) => kept,
                    None => return Ok(Flow::Go),
                }
            }
        };
        if let Some(limiter) = &mut self.rx.limiter {
            let wait = limiter.reserve(1);
            if !wait.is_zero() {
                // Do not hold what was read while waiting for the rate limit.
                if let Flow::Stop = self.flush().await? {
                    return Ok(Flow::Stop);
                }
                tokio::select! {
                    biased;
                    () = self.ctx.stopping() => {
                        // The line was read: store it with the rest.
                        self.add(line);
                        self.flush().await?;
                        return Ok(Flow::Stop);
                    }
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        self.add(line);
        if self.chunk.len() >= self.rx.chunk_records || self.chunk_bytes >= self.rx.chunk_bytes {
            return self.submit().await;
        }
        Ok(Flow::Go)
    }

    fn add(&mut self, line: Bytes) {
        if self.chunk.is_empty() {
            self.chunk_since = Some(Instant::now());
        }
        self.chunk_bytes += line.len();
        self.chunk.push(line);
    }

    /// Stores the chunk and waits until every chunk in flight is stored. `Stop` if a store
    /// failed because the receiver is stopping.
    async fn flush(&mut self) -> Result<Flow, UserError> {
        self.submit_within(0).await
    }

    /// Hands the chunk over, then waits while more than `stores_in_flight` are in flight.
    async fn submit(&mut self) -> Result<Flow, UserError> {
        self.submit_within(self.rx.stores_in_flight).await
    }

    /// Hands the chunk over (if any), then waits while more than `limit` are in flight — or,
    /// once a store failed because the receiver is stopping, until none is: a receiver that
    /// returns with chunks unanswered would have them dropped by its stopping supervisor.
    async fn submit_within(&mut self, limit: usize) -> Result<Flow, UserError> {
        self.chunk_since = None;
        self.chunk_bytes = 0;
        let mut flow = Flow::Go;
        if !self.chunk.is_empty() {
            let records = std::mem::take(&mut self.chunk);
            let lines = records.len() as u64;
            match self.ctx.submit(records).await {
                Ok(pending) => self.in_flight.push_back((pending, lines)),
                Err(err) => flow = self.stored(Err(err), lines)?,
            }
        }
        loop {
            let limit = if matches!(flow, Flow::Stop) { 0 } else { limit };
            if self.in_flight.len() <= limit {
                return Ok(flow);
            }
            let Some((pending, lines)) = self.in_flight.pop_front() else {
                return Ok(flow);
            };
            if let Flow::Stop = self.stored(pending.await, lines)? {
                flow = Flow::Stop;
            }
        }
    }

    /// Accounts for the outcome of storing a chunk of `lines` lines. `Stop` if it failed
    /// because the receiver is stopping; an error if it failed otherwise.
    fn stored(
        &mut self,
        stored: Result<BlockInfo, StoreError>,
        lines: u64,
    ) -> Result<Flow, UserError> {
        match stored {
            Ok(info) => {
                bump(&self.rx.stats.lines, lines);
                bump(&self.rx.stats.blocks, 1);
                self.delivered = true;
                tracing::trace!(addr = %self.rx.addr, lines, block = ?info.handle, "stored");
                Ok(Flow::Go)
            }
            Err(err) if self.ctx.is_stopping() => {
                tracing::warn!(
                    addr = %self.rx.addr, lines, error = %err,
                    "the receiver is stopping and its last lines could not be stored"
                );
                Ok(Flow::Stop)
            }
            Err(err) => Err(Box::new(err)),
        }
    }
}

/// Resolves with the outcome of the oldest chunk in flight, which stays queued (the caller pops
/// it); never if none is.
async fn oldest(in_flight: &mut VecDeque<(PendingStore, u64)>) -> Result<BlockInfo, StoreError> {
    match in_flight.front_mut() {
        Some((pending, _)) => pending.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

// ======================================== framing ======================================== //

/// What the framer found.
#[derive(Debug, PartialEq)]
pub(crate) enum Framed {
    /// A whole, valid line (without its line ending).
    Line(Bytes),
    /// A line that is not UTF-8.
    BadUtf8 {
        line: u64,
        offset: u64,
        error: std::str::Utf8Error,
    },
    /// A line over the maximum length, and what is kept of it.
    TooLong {
        line: u64,
        offset: u64,
        seen: usize,
        kept: Option<Bytes>,
    },
}

/// Cuts a byte stream into lines, holding at most about `max` bytes of an unfinished line.
pub(crate) struct LineFramer {
    buf: BytesMut,
    /// How much of `buf` is known to hold no `\n`.
    scanned: usize,
    /// The 1-based number of the line at the start of `buf`.
    line: u64,
    /// The byte offset in the stream of the start of `buf`.
    offset: u64,
    /// Dropping the rest of an overlong line.
    discarding: bool,
    /// `buf[..valid]` is known to be UTF-8, and ends after a `\n` (or is empty): the lines
    /// in it were validated together, in one pass over many lines.
    valid: usize,
    /// The lines ending before `buf[checked]` were part of a validation of many lines that
    /// found an error: those after `valid` are validated one by one (for the error's line and
    /// offset), and not again together.
    checked: usize,
    max: usize,
    policy: LongLines,
}

impl LineFramer {
    pub(crate) fn new(max: usize, policy: LongLines) -> Self {
        LineFramer {
            buf: BytesMut::new(),
            scanned: 0,
            line: 1,
            offset: 0,
            discarding: false,
            valid: 0,
            checked: 0,
            max,
            policy,
        }
    }

    pub(crate) fn buffer_for_read(&mut self) -> &mut BytesMut {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        &mut self.buf
    }

    pub(crate) fn next_line(&mut self) -> Option<Framed> {
        loop {
            let newline =
                memchr::memchr(b'\n', &self.buf[self.scanned..]).map(|i| self.scanned + i);
            if self.discarding {
                match newline {
                    Some(at) => {
                        self.consume(at + 1);
                        self.line += 1;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        let len = self.buf.len();
                        self.consume(len);
                        return None;
                    }
                }
            }
            let Some(at) = newline else {
                self.scanned = self.buf.len();
                // One more byte than the maximum may be a `\r` before the `\n`.
                if self.buf.len() > self.max + 1 {
                    let (line, offset, seen) = (self.line, self.offset, self.buf.len());
                    let head = self.buf.split_to(seen).freeze();
                    self.offset += seen as u64;
                    self.scanned = 0;
                    self.valid = 0;
                    self.checked = 0;
                    self.discarding = true;
                    return Some(self.too_long(head, line, offset, seen));
                }
                return None;
            };
            let (line, offset) = (self.line, self.offset);
            let valid = self.validate_through(at);
            let mut bytes = self.buf.split_to(at + 1);
            self.scanned = 0;
            self.valid -= self.valid.min(at + 1);
            self.checked -= self.checked.min(at + 1);
            self.offset += (at + 1) as u64;
            self.line += 1;
            bytes.truncate(at);
            if bytes.last() == Some(&b'\r') {
                bytes.truncate(at - 1);
            }
            let bytes = bytes.freeze();
            if bytes.len() > self.max {
                let seen = bytes.len();
                return Some(self.too_long(bytes, line, offset, seen));
            }
            if valid {
                return Some(Framed::Line(bytes));
            }
            return Some(validate(bytes, line, offset));
        }
    }

    /// At the end of the stream: the last line, if it had no `\n`.
    pub(crate) fn finish(&mut self) -> Option<Framed> {
        if self.discarding || self.buf.is_empty() {
            self.buf.clear();
            return None;
        }
        let len = self.buf.len();
        let (line, offset) = (self.line, self.offset);
        let mut bytes = self.buf.split_to(len);
        self.consume(0);
        (self.valid, self.checked) = (0, 0);
        self.line += 1;
        self.offset += len as u64;
        if bytes.last() == Some(&b'\r') {
            bytes.truncate(len - 1);
        }
        let bytes = bytes.freeze();
        if bytes.len() > self.max {
            return Some(self.too_long(bytes, line, offset, len));
        }
        Some(validate(bytes, line, offset))
    }

    /// Whether the line whose `\n` is at `buf[at]` is known to be UTF-8. When it is not yet
    /// known, every whole line buffered from it on is validated in one pass (the cost of a
    /// validation is mostly per call, and lines are short); if that finds an error, the lines
    /// before it are known valid and the others are left to be validated one by one.
    fn validate_through(&mut self, at: usize) -> bool {
        if at < self.valid {
            return true;
        }
        if at < self.checked {
            return false;
        }
        let end = memchr::memrchr(b'\n', &self.buf[at..]).map_or(at, |i| at + i) + 1;
        match std::str::from_utf8(&self.buf[..end]) {
            Ok(_) => self.valid = end,
            Err(e) => {
                let bad = e.valid_up_to();
                // The lines before the one the error is in.
                self.valid = memchr::memrchr(b'\n', &self.buf[..bad]).map_or(0, |i| i + 1);
                self.checked = end;
            }
        }
        at < self.valid
    }

    fn consume(&mut self, n: usize) {
        self.buf.advance(n);
        self.offset += n as u64;
        self.scanned = 0;
        self.valid -= self.valid.min(n);
        self.checked -= self.checked.min(n);
    }

    fn too_long(&self, bytes: Bytes, line: u64, offset: u64, seen: usize) -> Framed {
        let kept = match self.policy {
            LongLines::Skip => None,
            LongLines::Truncate => {
                let head = bytes.slice(..self.max.min(bytes.len()));
                match std::str::from_utf8(&head) {
                    Ok(_) => Some(head),
                    // Cut inside the last character: keep the characters before it.
                    Err(e) if e.error_len().is_none() => Some(head.slice(..e.valid_up_to())),
                    Err(error) => {
                        return Framed::BadUtf8 {
                            line,
                            offset,
                            error,
                        };
                    }
                }
            }
        };
        Framed::TooLong {
            line,
            offset,
            seen,
            kept,
        }
    }
}

fn validate(bytes: Bytes, line: u64, offset: u64) -> Framed {
    match std::str::from_utf8(&bytes) {
        Ok(_) => Framed::Line(bytes),
        Err(error) => Framed::BadUtf8 {
            line,
            offset,
            error,
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use proptest::prelude::*;

    use super::*;
    use crate::sources::problems::capture::Warnings;
    use tokio::io::AsyncWriteExt;
    use weir_actors::testing::ManualSupervisor;

    fn frame_all(framer: &mut LineFramer, input: &[&[u8]]) -> Vec<Framed> {
        let mut out = Vec::new();
        for piece in input {
            framer.buffer_for_read().extend_from_slice(piece);
            while let Some(f) = framer.next_line() {
                out.push(f);
            }
        }
        out.extend(framer.finish());
        out
    }

    fn line(s: &str) -> Framed {
        Framed::Line(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        let mut f = LineFramer::new(100, LongLines::Skip);
        let out = frame_all(&mut f, &[b"hel", b"lo\r\nwor", b"ld\n\n", b"last"]);
        assert_eq!(
            out,
            vec![line("hello"), line("world"), line(""), line("last")]
        );
    }

    #[test]
    fn bad_utf8_is_reported_with_its_line_and_offset() {
        let mut f = LineFramer::new(100, LongLines::Skip);
        let out = frame_all(&mut f, &[b"ok\n\xff\xfe\nfine\n"]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], line("ok"));
        assert!(
            matches!(
                out[1],
                Framed::BadUtf8 {
                    line: 2,
                    offset: 3,
                    ..
                }
            ),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2], line("fine"));
    }

    proptest! {
        /// However the stream is cut into reads, and wherever bad UTF-8 is, the framer finds
        /// the lines one at a time would: lines validated together in one pass are the same
        /// lines, and a bad line is reported with its own number and offset.
        #[test]
        fn lines_validated_together_are_the_lines_validated_alone(
            lines in proptest::collection::vec(
                proptest::collection::vec(
                    proptest::prop_oneof![
                        4 => proptest::char::range('a', 'z').prop_map(|c| c.to_string().into_bytes()),
                        1 => proptest::strategy::Just(" ".as_bytes().to_vec()),
                        1 => proptest::strategy::Just("é".as_bytes().to_vec()),
                        1 => proptest::strategy::Just(b"\xff".to_vec()),
                        1 => proptest::strategy::Just(b"\r".to_vec()),
                    ],
                    0..12,
                ),
                0..40,
            ),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let lines: Vec<Vec<u8>> = lines.into_iter().map(|l| l.concat()).collect();
            let mut stream = Vec::new();
            for l in &lines {
                stream.extend_from_slice(l);
                stream.push(b'\n');
            }
            // The reference: each line alone.
            let mut expected = Vec::new();
            let mut offset = 0u64;
            for (i, l) in lines.iter().enumerate() {
                let text = l.strip_suffix(b"\r").unwrap_or(l);
                expected.push(match std::str::from_utf8(text) {
                    Ok(_) => format!("line {text:?}"),
                    Err(_) => format!("bad {} {offset}", i + 1),
                });
                offset += l.len() as u64 + 1;
            }
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for c in cuts.into_iter().chain([stream.len()]) {
                pieces.push(&stream[from..c]);
                from = c;
            }
            let mut f = LineFramer::new(10_000, LongLines::Skip);
            let got: Vec<String> = frame_all(&mut f, &pieces)
                .into_iter()
                .map(|framed| match framed {
                    Framed::Line(b) => format!("line {:?}", &b[..]),
                    Framed::BadUtf8 { line, offset, .. } => format!("bad {line} {offset}"),
                    Framed::TooLong { .. } => "too long".to_owned(),
                })
                .collect();
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn an_overlong_line_is_skipped_and_the_next_one_kept() {
        let mut f = LineFramer::new(4, LongLines::Skip);
        let out = frame_all(&mut f, &[b"abcdefg", b"hij", b"klm\nok\n"]);
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(matches!(
            out[0],
            Framed::TooLong {
                line: 1,
                offset: 0,
                seen: 7,
                kept: None
            }
        ));
        assert_eq!(out[1], line("ok"));
        assert_eq!(f.offset, 17);
    }

    #[test]
    fn an_overlong_line_is_cut_at_a_character_boundary() {
        let mut f = LineFramer::new(4, LongLines::Truncate);
        // "aé" is 3 bytes, "aéé" 5: the cut at 4 falls inside the second "é".
        let out = frame_all(&mut f, &["aéé\nxy\n".as_bytes()]);
        assert_eq!(
            out[0],
            Framed::TooLong {
                line: 1,
                offset: 0,
                seen: 5,
                kept: Some(Bytes::from("aé"))
            }
        );
        assert_eq!(out[1], line("xy"));
    }

    #[test]
    fn a_line_of_exactly_the_maximum_with_crlf_is_kept() {
        let mut f = LineFramer::new(4, LongLines::Skip);
        let out = frame_all(&mut f, &[b"abcd\r", b"\n"]);
        assert_eq!(out, vec![line("abcd")]);
    }

    /// Issue 16, item 7: every bad line was a warning, so a server sending bad lines flooded
    /// the log. Current-thread runtime: the receiver logs on the test's thread.
    #[tokio::test]
    async fn a_flood_of_bad_lines_is_counted_exactly_and_logged_a_few_times() {
        let warnings = Warnings::install();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let receiver = SocketTextReceiver::new(&addr).max_line_len(8);
        let stats = receiver.stats();
        let (mut supervisor, ctx) = ManualSupervisor::new(0, 4);
        let task = tokio::spawn(async move {
            let mut receiver = receiver;
            receiver.start(ctx).await
        });
        let (mut server, _) = listener.accept().await.unwrap();
        let mut wire = Vec::new();
        for i in 0..10_000 {
            wire.extend_from_slice(b"bad \xff\n");
            wire.extend_from_slice(b"far too long a line\n");
            wire.extend_from_slice(format!("ok {i}\n").as_bytes());
        }
        let writer = tokio::spawn(async move { server.write_all(&wire).await });
        let mut stored = 0;
        let mut n = 0;
        while stored < 10_000 {
            let block = supervisor.next().await.unwrap();
            stored += block.records().len();
            block.stored_as(n);
            n += 1;
        }
        writer.await.unwrap().unwrap();
        supervisor.stop();
        task.await.unwrap().unwrap();
        let s = stats.snapshot();
        assert_eq!(
            (s.bad_utf8_lines, s.long_lines, s.lines),
            (10_000, 10_000, 10_000)
        );
        let logged: Vec<String> = warnings
            .lines()
            .into_iter()
            .filter(|l| l.contains("line "))
            .collect();
        assert!(
            logged.len() <= 2,
            "{} warnings for 20 000 bad lines, the first: {:?}",
            logged.len(),
            logged.first()
        );
        assert!(
            logged.iter().any(|l| l.contains("not valid UTF-8")),
            "{logged:?}"
        );
        assert!(
            logged.iter().any(|l| l.contains("longer than the maximum")),
            "{logged:?}"
        );
    }
}
