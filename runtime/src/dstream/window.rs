//! Window operations (Spark's `window`, `reduceByWindow`, `reduceByKeyAndWindow`, ...).
//!
//! A window of length `len` sliding by `slide` has a batch at every `slide`: at time `t` it
//! holds the parent's batches in `(t − len, t]`. Like Spark, the first window ends one slide
//! after the stream's zero time (the batch before the first one), and batches before the
//! first one are empty — so the first windows are not yet full. Length and slide must be
//! positive multiples of the batch interval; otherwise [`StreamingContext::start`] fails with
//! [`Error::InvalidGraph`] (and so does every batch of the operator, if it is run anyway).
//!
//! A window needs its parent's past batches after they completed, when the memo and the
//! inputs of those batches are gone. So every window operator keeps what it still needs of
//! its parent — its "remember duration" — as operator state: it takes its parent's partition
//! of every batch (it is computed every batch, output or not), drops those no later window
//! needs when a checkpoint is taken, and checkpoints the rest under its [`uid`](DStream::uid).
//! After a driver restart, the windows go on exactly where they were. Memory is bounded by
//! the window (plus, for the incremental form, one slide), the batches since the last
//! checkpoint, and what the parent's batches hold.
//!
//! The incremental forms ([`DStream::reduce_by_key_and_window_inv`]) keep the last window's
//! value per key as versioned state, like [`DStream::update_state_by_key`], and compute each
//! window as `previous ⊕ entering ⊖ leaving`.
//!
//! [`StreamingContext::start`]: crate::StreamingContext::start
//! [`Error::InvalidGraph`]: crate::Error::InvalidGraph

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::graph::{BatchCx, Compute, GraphShared, Lifecycle, Node, Partition};
use super::memo::lock;
use super::state::Versions;
use super::state_backend::part::{Next, StatePart};
use super::{DStream, Data, Key, StableMap};
use crate::error::{ComputeError, ComputeResult};

/// A window's length and slide, in milliseconds, checked against the batch interval.
#[derive(Clone, Debug)]
struct Windowing {
    len: u64,
    slide: u64,
    interval: u64,
    /// Why the settings are invalid.
    invalid: Option<String>,
}

fn millis(d: Duration) -> Option<u64> {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return None;
    }
    u64::try_from(d.as_millis()).ok()
}

impl Windowing {
    fn new(graph: &GraphShared, op: &str, len: Duration, slide: Duration) -> Self {
        let interval = graph.interval_ms();
        let check = |what: &str, d: Duration| match millis(d) {
            Some(ms) if ms > 0 && ms.is_multiple_of(interval) => Ok(ms),
            _ => Err(format!(
                "{op}: the window {what} ({d:?}) must be a positive multiple of the batch \
                 interval ({interval} ms)"
            )),
        };
        let (len, slide, invalid) = match (check("length", len), check("slide", slide)) {
            (Ok(len), Ok(slide)) => (len, slide, None),
            (Err(e), _) | (_, Err(e)) => (interval, interval, Some(e)),
        };
        if let Some(why) = &invalid {
            graph.invalidate(why.clone());
        }
        Windowing {
            len,
            slide,
            interval,
            invalid,
        }
    }

    fn check(&self) -> ComputeResult<()> {
        match &self.invalid {
            Some(why) => Err(ComputeError::new(why.clone())),
            None => Ok(()),
        }
    }

    /// The zero time: the batch before the first one.
    fn zero(&self, first: Option<u64>) -> u64 {
        first.map_or(0, |f| f.saturating_sub(self.interval))
    }

    /// Whether a window ends at `time`.
    fn active(&self, first: Option<u64>, time: u64) -> bool {
        let zero = self.zero(first);
        time > zero && (time - zero).is_multiple_of(self.slide)
    }

    /// The batches in `(from, until]` that exist (after the zero time), oldest first.
    fn batches(&self, first: Option<u64>, from: u64, until: u64) -> Vec<u64> {
        let zero = self.zero(first);
        let mut out = Vec::new();
        let mut t = until;
        while t > from && t > zero {
            out.push(t);
            t = match t.checked_sub(self.interval) {
                Some(t) => t,
                None => break,
            };
        }
        out.reverse();
        out
    }
}

/// A parent's partitions of past batches that windows still need: the window's remember
/// duration, kept in memory and in checkpoints.
struct Retained<T> {
    partitions: usize,
    /// How far back from the next batch windows reach: batches `s ≤ next − span` are dropped.
    span: u64,
    interval: u64,
    inner: Mutex<RetainedInner<T>>,
}

struct RetainedInner<T> {
    /// The first batch of the stream (its zero time is one interval before).
    first: Option<u64>,
    batches: BTreeMap<u64, Vec<Option<Partition<T>>>>,
    /// Encoded batches, so each is serialised once however many checkpoints carry it.
    encoded: BTreeMap<u64, Vec<u8>>,
}

impl<T: Data + Serialize + DeserializeOwned> Retained<T> {
    fn new(partitions: usize, span: u64, interval: u64) -> Self {
        Retained {
            partitions,
            span,
            interval,
            inner: Mutex::new(RetainedInner {
                first: None,
                batches: BTreeMap::new(),
                encoded: BTreeMap::new(),
            }),
        }
    }

    fn first(&self) -> Option<u64> {
        lock(&self.inner).first
    }

    fn plan(&self, time: u64) {
        let mut inner = lock(&self.inner);
        if inner.first.is_none_or(|first| time < first) {
            inner.first = Some(time);
        }
    }

    fn get(&self, time: u64, part: usize) -> Option<Partition<T>> {
        lock(&self.inner)
            .batches
            .get(&time)
            .and_then(|parts| parts.get(part).cloned().flatten())
    }

    fn keep(&self, time: u64, part: usize, value: Partition<T>) {
        let mut inner = lock(&self.inner);
        let partitions = self.partitions;
        let parts = inner
            .batches
            .entry(time)
            .or_insert_with(|| vec![None; partitions]);
        if let Some(slot) = parts.get_mut(part) {
            *slot = Some(value);
        }
    }

    fn times(&self) -> Vec<u64> {
        lock(&self.inner).batches.keys().copied().collect()
    }

    /// Drops the batches no window after `through` needs, and encodes those up to `through`.
    fn snapshot(&self, through: Option<u64>) -> ComputeResult<Vec<u8>> {
        let mut inner = lock(&self.inner);
        let Some(through) = through else {
            let none: Vec<(u64, &[u8])> = Vec::new();
            return postcard::to_allocvec(&(inner.first, none))
                .map_err(|e| ComputeError::new(format!("encoding a window's batches: {e}")));
        };
        let horizon = (through + self.interval).saturating_sub(self.span);
        let keep = inner.batches.split_off(&(horizon + 1));
        inner.batches = keep;
        let keep = inner.encoded.split_off(&(horizon + 1));
        inner.encoded = keep;
        let inner = &mut *inner;
        for (&time, parts) in inner.batches.range(..=through) {
            if inner.encoded.contains_key(&time) {
                continue;
            }
            let mut whole: Vec<&[T]> = Vec::with_capacity(parts.len());
            for (part, p) in parts.iter().enumerate() {
                whole.push(p.as_deref().map(Vec::as_slice).ok_or_else(|| {
                    ComputeError::new(format!(
                        "partition {part} of batch {time}, which a window still needs, is not \
                         in memory"
                    ))
                })?);
            }
            let bytes = postcard::to_allocvec(&whole).map_err(|e| {
                ComputeError::new(format!("encoding batch {time} of a window: {e}"))
            })?;
            inner.encoded.insert(time, bytes);
        }
        let kept: Vec<(u64, &[u8])> = inner
            .encoded
            .range(..=through)
            .map(|(&time, bytes)| (time, bytes.as_slice()))
            .collect();
        postcard::to_allocvec(&(inner.first, kept))
            .map_err(|e| ComputeError::new(format!("encoding a window's batches: {e}")))
    }

    fn restore(&self, bytes: Option<&[u8]>) -> ComputeResult<()> {
        let mut restored = RetainedInner {
            first: None,
            batches: BTreeMap::new(),
            encoded: BTreeMap::new(),
        };
        if let Some(bytes) = bytes {
            let (first, kept): (Option<u64>, Vec<(u64, Vec<u8>)>) = postcard::from_bytes(bytes)
                .map_err(|e| ComputeError::new(format!("decoding a window's batches: {e}")))?;
            restored.first = first;
            for (time, encoded) in kept {
                let parts: Vec<Vec<T>> = postcard::from_bytes(&encoded).map_err(|e| {
                    ComputeError::new(format!("decoding batch {time} of a window: {e}"))
                })?;
                if parts.len() != self.partitions {
                    return Err(ComputeError::new(format!(
                        "the checkpoint holds {} partitions of batch {time} for this window, \
                         which now has {}; give the changed window a new id to start it empty",
                        parts.len(),
                        self.partitions
                    )));
                }
                restored
                    .batches
                    .insert(time, parts.into_iter().map(|p| Some(Arc::new(p))).collect());
                restored.encoded.insert(time, encoded);
            }
        }
        *lock(&self.inner) = restored;
        Ok(())
    }
}

/// What a window reads of its parent: partitions of past batches from [`Retained`], the
/// current one computed (and retained).
struct Source<T> {
    parent: Arc<Node<T>>,
    retained: Retained<T>,
}

impl<T: Data + Serialize + DeserializeOwned> Source<T> {
    fn at(&self, cx: BatchCx<'_>, time: u64, part: usize) -> ComputeResult<Partition<T>> {
        if let Some(p) = self.retained.get(time, part) {
            return Ok(p);
        }
        let value = if self.parent.active(time) {
            self.parent.partition(
                BatchCx {
                    time,
                    graph: cx.graph,
                },
                part,
            )?
        } else {
            Arc::new(Vec::new())
        };
        self.retained.keep(time, part, Arc::clone(&value));
        Ok(value)
    }
}

/// `window`: the union of the parent's batches in the window, partition by partition.
struct Window<T> {
    windowing: Windowing,
    source: Source<T>,
}

impl<T: Data + Serialize + DeserializeOwned> Compute<T> for Window<T> {
    fn partitions(&self) -> usize {
        self.source.parent.partitions()
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<T>> {
        self.windowing.check()?;
        self.source.at(cx, cx.time, part)?;
        let first = self.source.retained.first();
        if !self.windowing.active(first, cx.time) {
            return Ok(Vec::new());
        }
        let from = cx.time.saturating_sub(self.windowing.len);
        let mut out = Vec::new();
        for time in self.windowing.batches(first, from, cx.time) {
            out.extend(self.source.at(cx, time, part)?.iter().cloned());
        }
        Ok(out)
    }
    fn active(&self, time: u64) -> bool {
        self.windowing.active(self.source.retained.first(), time)
    }
    fn remembered(&self) -> Vec<u64> {
        self.source.retained.times()
    }
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl<T: Data + Serialize + DeserializeOwned> Lifecycle for Window<T> {
    fn plan(&self, _: &GraphShared, time: u64) -> ComputeResult<()> {
        self.source.retained.plan(time);
        Ok(())
    }
    fn snapshot(&self, _: &GraphShared, through: Option<u64>) -> ComputeResult<Option<Vec<u8>>> {
        self.source.retained.snapshot(through).map(Some)
    }
    fn state_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
    fn restore(&self, _: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        self.source.retained.restore(bytes)
    }
    fn maintained(&self) -> bool {
        true
    }
}

type Reduce<V> = dyn Fn(&V, &V) -> V + Send + Sync;
type KeyFilter<K, V> = dyn Fn(&K, &V) -> bool + Send + Sync;

/// `reduce_by_key_and_window` with an inverse: each window from the previous one, plus the
/// batches entering, minus the batches leaving (Spark's `ReducedWindowedDStream`).
struct InvWindow<K, V> {
    windowing: Windowing,
    /// The parent reduced by key per batch.
    source: Source<(K, V)>,
    reduce: Box<Reduce<V>>,
    inverse: Box<Reduce<V>>,
    filter: Option<Box<KeyFilter<K, V>>>,
    /// Every key's value in the last window, as of every batch.
    state: Versions<K, V>,
}

impl<K, V> InvWindow<K, V>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data + Serialize + DeserializeOwned,
{
    /// The batches' values in `(from, until]` reduced per key.
    fn reduced(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        from: u64,
        until: u64,
    ) -> ComputeResult<StableMap<K, V>> {
        let mut acc: StableMap<K, V> = StableMap::default();
        let first = self.source.retained.first();
        for time in self.windowing.batches(first, from, until) {
            for (k, v) in self.source.at(cx, time, part)?.iter() {
                match acc.get_mut(k) {
                    Some(a) => *a = (self.reduce)(a, v),
                    None => {
                        acc.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Ok(acc)
    }

    fn step(
        &self,
        cx: BatchCx<'_>,
        part: usize,
        previous: &StatePart<K, V>,
    ) -> ComputeResult<Next<K, V>> {
        if !self.windowing.active(self.source.retained.first(), cx.time) {
            return Ok(Next::Same);
        }
        let (t, len, slide) = (cx.time, self.windowing.len, self.windowing.slide);
        // The previous window is (t − slide − len, t − slide], the current one (t − len, t].
        let before = t.saturating_sub(slide);
        let leaving = self.reduced(
            cx,
            part,
            before.saturating_sub(len),
            before.min(t.saturating_sub(len)),
        )?;
        let mut entering = self.reduced(cx, part, before.max(t.saturating_sub(len)), t)?;
        let keep = |k: &K, v: &V| self.filter.as_ref().is_none_or(|f| f(k, v));
        // Only keys with values leaving or entering change (the others were kept by the
        // filter before, with the same value).
        let mut changes: StableMap<K, Option<V>> = StableMap::default();
        let mut previous = previous.reader();
        for (k, old) in leaving {
            if let Some(v) = previous.get(&k)? {
                let mut v = (self.inverse)(&v, &old);
                if let Some(new) = entering.remove(&k) {
                    v = (self.reduce)(&v, &new);
                }
                let kept = keep(&k, &v);
                changes.insert(k, kept.then_some(v));
            }
        }
        // Keys not in the previous window (or dropped by the filter) start from what enters.
        for (k, new) in entering {
            let v = match previous.get(&k)? {
                Some(v) => (self.reduce)(&v, &new),
                None => new,
            };
            let kept = keep(&k, &v);
            changes.insert(k, kept.then_some(v));
        }
        Ok(Next::Changes(changes))
    }
}

impl<K, V> Compute<(K, V)> for InvWindow<K, V>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data + Serialize + DeserializeOwned,
{
    fn partitions(&self) -> usize {
        self.state.partitions
    }
    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<(K, V)>> {
        self.windowing.check()?;
        self.source.at(cx, cx.time, part)?;
        let state = self
            .state
            .at(cx, part, &|cx, previous| self.step(cx, part, previous))?;
        if !self.active(cx.time) {
            return Ok(Vec::new());
        }
        state.collect(|k, v| (k.clone(), v.clone()))
    }
    fn active(&self, time: u64) -> bool {
        self.windowing.active(self.source.retained.first(), time)
    }
    fn remembered(&self) -> Vec<u64> {
        self.source.retained.times()
    }
    fn lifecycle(&self) -> Option<&dyn Lifecycle> {
        Some(self)
    }
}

impl<K, V> Lifecycle for InvWindow<K, V>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data + Serialize + DeserializeOwned,
{
    fn plan(&self, _: &GraphShared, time: u64) -> ComputeResult<()> {
        self.source.retained.plan(time);
        Ok(())
    }
    fn snapshot(&self, _: &GraphShared, through: Option<u64>) -> ComputeResult<Option<Vec<u8>>> {
        let state = self.state.snapshot(through)?;
        let batches = self.source.retained.snapshot(through)?;
        postcard::to_allocvec(&(state, batches))
            .map(Some)
            .map_err(|e| ComputeError::new(format!("encoding a window's state: {e}")))
    }
    fn state_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
    fn restore(&self, _: &GraphShared, bytes: Option<&[u8]>) -> ComputeResult<()> {
        match bytes {
            Some(bytes) => {
                let (state, batches): (Vec<u8>, Vec<u8>) = postcard::from_bytes(bytes)
                    .map_err(|e| ComputeError::new(format!("decoding a window's state: {e}")))?;
                self.state.restore(Some(&state))?;
                self.source.retained.restore(Some(&batches))
            }
            None => {
                self.state.restore(None)?;
                self.source.retained.restore(None)
            }
        }
    }
    fn completed(&self, _: &GraphShared, time: u64) {
        self.state.completed(time);
    }
    fn maintained(&self) -> bool {
        true
    }
}

impl<T: Data> DStream<T> {
    /// The batch times this operator holds data of in memory: partitions memoised for live
    /// batches, and the parent's past batches a window keeps. For checking that memory stays
    /// bounded: a completed batch appears only while a window still needs it.
    pub fn remembered_batches(&self) -> Vec<u64> {
        self.node.remembered()
    }

    /// Slide by slide, how many elements the window `(t − len, t]` holds (Spark's
    /// `countByWindow`; incremental, so a window whose batches are all empty counts 0).
    ///
    /// Invalid durations are reported as for [`window`](Self::window).
    #[track_caller]
    pub fn count_by_window(&self, len: Duration, slide: Duration) -> DStream<u64> {
        self.map(|_| 1u64)
            .reduce_by_window_inv(|a, b| a + b, |a, b| a - b, len, slide)
    }
}

impl<T: Data + Serialize + DeserializeOwned> DStream<T> {
    /// Every `slide`, the elements of the parent's batches in the last `len` (Spark's
    /// `window`): at time `t`, partition `p` of the window is partition `p` of each of the
    /// parent's batches in `(t − len, t]`, oldest first. As in Spark, the first window ends one
    /// slide after the zero time (one interval before the first batch), and batches before
    /// the first one are empty: the first windows, before `len` has passed, are not full.
    ///
    /// `len` and `slide` must be positive multiples of the batch interval; otherwise
    /// [`StreamingContext::start`](crate::StreamingContext::start) fails with
    /// [`Error::InvalidGraph`](crate::Error::InvalidGraph) naming the operator and the
    /// durations (and every batch of the operator fails, if it is run anyway).
    ///
    /// The window needs its parent's batches after they completed, when their input is gone:
    /// it keeps those later windows still need — its remember duration — in memory and, as
    /// operator state, in every checkpoint (under its [`uid`](DStream::uid)), so after a
    /// driver restart the windows go on exactly; its elements must therefore be
    /// serialisable. What no later window needs is dropped when a checkpoint is taken, so
    /// memory is bounded by the window and the batches since the last checkpoint
    /// ([`remembered_batches`](DStream::remembered_batches) shows what is held).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let queue = QueueStream::new(true, 1);
    /// for x in 0..4 {
    ///     queue.push(vec![x]);
    /// }
    /// let out = Collected::default();
    /// let (q, o) = (queue.clone(), out.clone());
    /// let mut clock = ManualClock::new(1000, 1, move |ctx| {
    ///     let s = Duration::from_secs;
    ///     o.collect(&ctx.queue_stream(&q).window(s(2), s(1)));
    /// })?;
    /// clock.run(4).await?;
    /// assert_eq!(out.all_sorted(), vec![vec![0], vec![0, 1], vec![1, 2], vec![2, 3]]);
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn window(&self, len: Duration, slide: Duration) -> DStream<T> {
        let windowing = Windowing::new(&self.graph, "window", len, slide);
        let span = windowing.len;
        self.derive(
            "window",
            Window {
                source: Source {
                    parent: self.node.consumed(),
                    retained: Retained::new(self.partitions(), span, windowing.interval),
                },
                windowing,
            },
        )
    }

    /// Every `slide`, the elements of the window `(t − len, t]` combined by `f` (associative
    /// and commutative): one element, none for a window without elements (Spark's
    /// `reduceByWindow`). Recomputed from each batch's reduced value at every slide.
    ///
    /// Invalid durations are reported as for [`window`](Self::window).
    #[track_caller]
    pub fn reduce_by_window(
        &self,
        f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
    ) -> DStream<T> {
        let f = Arc::new(f);
        let g = Arc::clone(&f);
        let window = self.reduce(move |a, b| f(a, b)).window(len, slide);
        window.reduce(move |a, b| g(a, b)).owning("window", &window)
    }

    /// [`reduce_by_window`](Self::reduce_by_window) computed incrementally: each window's value
    /// is the previous one `⊕` the batches entering `⊖` (by `inverse`, with `inverse(f(a, b),
    /// b) == a`) those leaving. Once the stream had an element, every window has a value (the
    /// inverse of everything, e.g. 0, when its batches are empty).
    ///
    /// Invalid durations are reported as for [`window`](Self::window).
    #[track_caller]
    pub fn reduce_by_window_inv(
        &self,
        f: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        inverse: impl Fn(&T, &T) -> T + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
    ) -> DStream<T> {
        let window = self.map(|x| ((), x.clone())).inv_window(
            "reduce_by_window",
            f,
            inverse,
            len,
            slide,
            1,
            None,
        );
        window.map(|(_, x)| x.clone()).owning("window", &window)
    }
}

impl<K, V> DStream<(K, V)>
where
    K: Key + Serialize + DeserializeOwned,
    V: Data + Serialize + DeserializeOwned,
{
    /// Every `slide`, per key, the values of the window `(t − len, t]` combined by `f`
    /// (associative and commutative), into the default number of partitions (Spark's
    /// `reduceByKeyAndWindow` without an inverse): each batch is reduced by key once, the
    /// window is reduced again at every slide. Keys without values in the window are absent.
    ///
    /// Invalid durations are reported as for [`window`](DStream::window).
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let kv = |k: &str, v: i64| (k.to_owned(), v);
    /// let queue = QueueStream::new(true, 1);
    /// queue.push(vec![kv("a", 1), kv("b", 1)]);
    /// queue.push(vec![kv("a", 1)]);
    /// queue.push(vec![]);
    /// let out = Collected::default();
    /// let (q, o) = (queue.clone(), out.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     let s = Duration::from_secs;
    ///     let words = ctx.queue_stream(&q);
    ///     o.collect(&words.reduce_by_key_and_window(|a, b| a + b, s(2), s(1)));
    /// })?;
    /// clock.run(3).await?;
    /// assert_eq!(
    ///     out.all_sorted(),
    ///     vec![
    ///         vec![kv("a", 1), kv("b", 1)],
    ///         vec![kv("a", 2), kv("b", 1)],
    ///         vec![kv("a", 1)]
    ///     ]
    /// );
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
    ) -> DStream<(K, V)> {
        let n = self.graph.parallelism();
        let f = Arc::new(f);
        let g = Arc::clone(&f);
        let window = self
            .reduce_by_key_into(move |a, b| f(a, b), n)
            .window(len, slide);
        window
            .reduce_by_key_into(move |a, b| g(a, b), n)
            .owning("window", &window)
    }

    /// [`reduce_by_key_and_window`](Self::reduce_by_key_and_window) computed incrementally
    /// (Spark's `reduceByKeyAndWindow` with `invReduceFunc`): per key, the previous window's
    /// value `⊕` (by `f`) the values of the batches entering the window `⊖` (by `inverse`, with
    /// `inverse(f(a, b), b) == a`) those of the batches leaving it. Work per slide is
    /// proportional to the batches entering and leaving, not to the window.
    ///
    /// A key stays once seen, with the inverse of everything (e.g. 0) when no values of it
    /// are left in the window; [`reduce_by_key_and_window_inv_filtered`](
    /// Self::reduce_by_key_and_window_inv_filtered) drops such keys. The window's values
    /// and the batches it still needs are operator state, checkpointed under its
    /// [`uid`](DStream::uid): after a driver restart the windows go on exactly.
    ///
    /// Invalid durations are reported as for [`window`](DStream::window).
    #[track_caller]
    pub fn reduce_by_key_and_window_inv(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        inverse: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
    ) -> DStream<(K, V)> {
        let n = self.graph.parallelism();
        self.inv_window("reduce_by_key_and_window", f, inverse, len, slide, n, None)
    }

    /// [`reduce_by_key_and_window_inv`](Self::reduce_by_key_and_window_inv) keeping only the
    /// keys for which `keep(key, window value)` holds (Spark's `filterFunc`), e.g. those
    /// whose count is not 0. A key dropped by the filter starts again from the values that
    /// enter the window later.
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use weir::dstream::QueueStream;
    /// use weir::testing::{Collected, ManualClock};
    ///
    /// let kv = |k: &str, v: i64| (k.to_owned(), v);
    /// let queue = QueueStream::new(true, 1);
    /// queue.push(vec![kv("a", 1), kv("b", 1)]);
    /// queue.push(vec![kv("a", 1)]);
    /// queue.push(vec![]);
    /// let out = Collected::default();
    /// let (q, o) = (queue.clone(), out.clone());
    /// let mut clock = ManualClock::new(1000, 2, move |ctx| {
    ///     let s = Duration::from_secs;
    ///     let counts = ctx.queue_stream(&q).reduce_by_key_and_window_inv_filtered(
    ///         |a, b| a + b,
    ///         |a, b| a - b,
    ///         s(2),
    ///         s(1),
    ///         |_, count| *count != 0,
    ///     );
    ///     o.collect(&counts);
    /// })?;
    /// clock.run(3).await?;
    /// assert_eq!(
    ///     out.all_sorted(),
    ///     vec![
    ///         vec![kv("a", 1), kv("b", 1)],
    ///         vec![kv("a", 2), kv("b", 1)],
    ///         vec![kv("a", 1)]
    ///     ]
    /// );
    /// # Ok(()) }
    /// ```
    #[track_caller]
    pub fn reduce_by_key_and_window_inv_filtered(
        &self,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        inverse: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
        keep: impl Fn(&K, &V) -> bool + Send + Sync + 'static,
    ) -> DStream<(K, V)> {
        let n = self.graph.parallelism();
        self.inv_window(
            "reduce_by_key_and_window",
            f,
            inverse,
            len,
            slide,
            n,
            Some(Box::new(keep)),
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "internal: one place builds the node"
    )]
    #[track_caller]
    fn inv_window(
        &self,
        op: &'static str,
        f: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        inverse: impl Fn(&V, &V) -> V + Send + Sync + 'static,
        len: Duration,
        slide: Duration,
        partitions: usize,
        filter: Option<Box<KeyFilter<K, V>>>,
    ) -> DStream<(K, V)> {
        let f = Arc::new(f);
        let g = Arc::clone(&f);
        let reduced = self.reduce_by_key_into(move |a, b| g(a, b), partitions);
        let windowing = Windowing::new(&self.graph, op, len, slide);
        // Leaving batches reach back one slide before the window.
        let span = windowing.len + windowing.slide;
        reduced.derive(
            op,
            InvWindow {
                source: Source {
                    parent: reduced.node.consumed(),
                    retained: Retained::new(partitions.max(1), span, windowing.interval),
                },
                windowing,
                reduce: Box::new(move |a, b| f(a, b)),
                inverse: Box::new(inverse),
                filter,
                state: Versions::new(&reduced.graph, partitions.max(1)),
            },
        )
    }

    /// Every `slide`, per key, the values of the window `(t − len, t]`, oldest batch first
    /// (Spark's `groupByKeyAndWindow`).
    ///
    /// Invalid durations are reported as for [`window`](DStream::window).
    pub fn group_by_key_and_window(&self, len: Duration, slide: Duration) -> DStream<(K, Vec<V>)> {
        let n = self.graph.parallelism();
        let window = self.group_by_key_into(n).window(len, slide);
        window
            .combine_named(
                "group_by_key_and_window",
                Vec::clone,
                |acc: &mut Vec<V>, vs: &Vec<V>| acc.extend(vs.iter().cloned()),
                |acc: &mut Vec<V>, mut vs: Vec<V>| acc.append(&mut vs),
                n,
            )
            .owning("window", &window)
    }
}

impl<T: Key + Serialize + DeserializeOwned> DStream<T> {
    /// Every `slide`, how often each distinct element occurs in the window `(t − len, t]`
    /// (Spark's `countByValueAndWindow`): incremental, elements whose count fell to 0 dropped.
    ///
    /// Invalid durations are reported as for [`window`](DStream::window).
    #[track_caller]
    pub fn count_by_value_and_window(&self, len: Duration, slide: Duration) -> DStream<(T, u64)> {
        self.map(|x| (x.clone(), 1u64))
            .reduce_by_key_and_window_inv_filtered(
                |a, b| a + b,
                |a, b| a - b,
                len,
                slide,
                |_, count| *count != 0,
            )
    }
}
