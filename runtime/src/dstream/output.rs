//! Output operations: where batches leave the graph.
//!
//! Every output operation turns each batch into jobs for the executor workers: one job per
//! partition (`out-<n>/part-<p>`), which computes that partition — so partitions are computed
//! in parallel — and, for operations that see the batch as a whole, one more job
//! (`out-<n>/batch`) that runs the operation over every partition. A job may run more than
//! once for the same batch; each call gets the batch's identity, with which the sink makes its
//! output idempotent (the exactly-once sink contract, see `docs/guarantees.md`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use weir_actors::pipeline::{Job, UserError};

use super::graph::{BatchCx, GraphShared, Node, Output, Partition, blocking_job};
use super::{DStream, Data, OffsetRange};
use crate::error::ComputeError;

/// One batch of a stream, as an output operation sees it.
#[derive(Debug)]
pub struct Batch<T> {
    /// The batch time (ms since the Unix epoch): with the partition index, the id of every
    /// piece of output.
    pub time_ms: u64,
    /// Its partitions.
    pub partitions: Vec<Partition<T>>,
    /// The offset ranges read by direct sources in this batch, for sinks that store offsets
    /// in the same transaction as their output.
    pub offset_ranges: Vec<OffsetRange>,
}

impl<T> Batch<T> {
    /// Every element, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.partitions.iter().flat_map(|p| p.iter())
    }

    /// How many elements the batch holds.
    pub fn len(&self) -> usize {
        self.partitions.iter().map(|p| p.len()).sum()
    }

    /// Whether the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One partition of one batch, as a per-partition output operation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchPartition {
    /// The batch time (ms since the Unix epoch).
    pub time_ms: u64,
    /// The partition index.
    pub partition: usize,
}

type BatchOp<T> = dyn Fn(&Batch<T>) -> Result<(), UserError> + Send + Sync;
type PartitionOp<T> = dyn Fn(BatchPartition, &[T]) -> Result<(), UserError> + Send + Sync;

enum Op<T> {
    Batch(Box<BatchOp<T>>),
    Partition(Box<PartitionOp<T>>),
}

struct OutputOp<T> {
    index: usize,
    node: Arc<Node<T>>,
    op: Arc<Op<T>>,
}

impl<T: Data> Output for OutputOp<T> {
    fn jobs(&self, graph: &Arc<GraphShared>, time: u64) -> Vec<Job> {
        if !self.node.active(time) {
            return Vec::new();
        }
        let mut jobs = Vec::new();
        for part in 0..self.node.partitions() {
            let (graph, node, op) = (
                Arc::clone(graph),
                self.node.consumed(),
                Arc::clone(&self.op),
            );
            jobs.push(blocking_job(
                format!("out-{}/part-{part}", self.index),
                move || {
                    let data = node.partition(
                        BatchCx {
                            time,
                            graph: &graph,
                        },
                        part,
                    )?;
                    if let Op::Partition(f) = op.as_ref() {
                        f(
                            BatchPartition {
                                time_ms: time,
                                partition: part,
                            },
                            &data,
                        )
                        .map_err(ComputeError::from)?;
                    }
                    Ok(())
                },
            ));
        }
        if matches!(self.op.as_ref(), Op::Batch(_)) {
            let (graph, node, op) = (
                Arc::clone(graph),
                self.node.consumed(),
                Arc::clone(&self.op),
            );
            jobs.push(blocking_job(
                format!("out-{}/batch", self.index),
                move || {
                    let batch = Batch {
                        time_ms: time,
                        partitions: node.all(BatchCx {
                            time,
                            graph: &graph,
                        })?,
                        offset_ranges: graph.offset_ranges(time),
                    };
                    match op.as_ref() {
                        Op::Batch(f) => f(&batch).map_err(ComputeError::from),
                        Op::Partition(_) => Ok(()),
                    }
                },
            ));
        }
        jobs
    }
}

impl<T: Data> DStream<T> {
    fn add_output(&self, op: Op<T>) {
        assert!(
            !self.graph.is_started(),
            "output operations must be added before the streaming context starts"
        );
        let index = self.graph.output_count();
        self.graph.add_output(Arc::new(OutputOp {
            index,
            node: self.node.consumed(),
            op: Arc::new(op),
        }));
    }

    /// Runs `f` on every batch (Spark's `foreachRDD`), on an executor worker. It may run more
    /// than once for a batch: key what it writes by [`Batch::time_ms`].
    pub fn foreach_batch(
        &self,
        f: impl Fn(&Batch<T>) -> Result<(), UserError> + Send + Sync + 'static,
    ) {
        self.add_output(Op::Batch(Box::new(f)));
    }

    /// Runs `f` on every partition of every batch, in parallel on the executor workers. It may
    /// run more than once for a partition: key what it writes by the [`BatchPartition`].
    pub fn foreach_partition(
        &self,
        f: impl Fn(BatchPartition, &[T]) -> Result<(), UserError> + Send + Sync + 'static,
    ) {
        self.add_output(Op::Partition(Box::new(f)));
    }
}

impl<T: Data + fmt::Debug> DStream<T> {
    /// Prints the first `n` elements of every batch to stdout, under a header with the batch
    /// time (Spark's `print`; at-least-once, like any side effect).
    pub fn print(&self, n: usize) {
        self.foreach_batch(move |batch| {
            use std::io::Write;
            let out = print_text(batch, n);
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(out.as_bytes())?;
            stdout.flush()?;
            Ok(())
        });
    }
}

/// What `print(n)` writes for `batch`: Spark's header, the first `n` elements, and a `...`
/// line if the batch holds more.
pub(crate) fn print_text<T: fmt::Debug>(batch: &Batch<T>, n: usize) -> String {
    let mut out = String::new();
    out.push_str("-------------------------------------------\n");
    out.push_str(&format!("Time: {} ms\n", batch.time_ms));
    out.push_str("-------------------------------------------\n");
    for x in batch.iter().take(n) {
        out.push_str(&format!("{x:?}\n"));
    }
    if batch.iter().nth(n).is_some() {
        out.push_str("...\n");
    }
    out.push('\n');
    out
}

impl<T: Data + fmt::Display> DStream<T> {
    /// Saves every batch with elements as the directory `<prefix>-<batch_time_ms>/` of
    /// `part-NNNNN` text files, one per partition, one line per element (Spark's
    /// `saveAsTextFiles`), exactly once: the directory is committed atomically (written
    /// hidden, fsynced, renamed), a batch already committed is skipped on replay, empty
    /// batches write nothing, and the lines of each part file are sorted. Temporary
    /// directories left by a crash are removed now, when the graph is built. See
    /// [`crate::sinks::batch_dir`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use weir::dstream::QueueStream;
    /// use weir::testing::ManualClock;
    ///
    /// let out = tempfile::tempdir()?;
    /// let queue = QueueStream::new(true, 1);
    /// queue.push(vec!["b".to_owned(), "a".to_owned(), "b".to_owned()]);
    /// let (q, prefix) = (queue.clone(), out.path().join("batch"));
    /// let mut clock = ManualClock::new(1000, 1, move |ctx| {
    ///     let counts = ctx
    ///         .queue_stream(&q)
    ///         .map(|w: &String| (w.clone(), 1u64))
    ///         .reduce_by_key(|a, b| a + b)
    ///         .map(|(w, n)| format!("{w}\t{n}"));
    ///     counts.save_as_text_files(&prefix);
    /// })?;
    /// clock.run(2).await?; // the second batch is empty: no directory
    /// let part = std::fs::read_to_string(out.path().join("batch-1000/part-00000"))?;
    /// assert_eq!(part, "a\t1\nb\t2\n");
    /// assert!(!out.path().join("batch-2000").exists());
    /// # Ok(()) }
    /// ```
    pub fn save_as_text_files(&self, prefix: impl AsRef<Path>) {
        self.save_as_text_files_with(crate::sinks::batch_dir::BatchDirSink::new(prefix));
    }

    /// [`save_as_text_files`](Self::save_as_text_files) into directories named
    /// `<prefix>-<batch_time_ms>.<suffix>` (Spark's `saveAsTextFiles(prefix, suffix)`).
    pub fn save_as_text_files_suffixed(&self, prefix: impl AsRef<Path>, suffix: &str) {
        self.save_as_text_files_with(
            crate::sinks::batch_dir::BatchDirSink::new(prefix).suffix(suffix),
        );
    }

    /// [`save_as_text_files`](Self::save_as_text_files) on any [`Storage`](crate::Storage):
    /// in a local directory as there (`<dir>/<name>-<batch_time_ms>/`), or on object storage
    /// (S3, …) as the objects `<name>-<batch_time_ms>/part-NNNNN` committed, exactly once, by
    /// a write-once marker (see [`crate::sinks::batch_objects`]).
    ///
    /// # Errors
    ///
    /// [`SinkError::BadPrefix`](crate::sinks::batch_dir::SinkError::BadPrefix) if `name` is
    /// empty or holds a `/`.
    pub fn save_as_text_files_in(
        &self,
        storage: &crate::Storage,
        name: &str,
    ) -> Result<(), crate::sinks::batch_dir::SinkError> {
        use crate::sinks::batch_dir::{Commit, SinkError};
        if name.is_empty() || name.contains('/') {
            return Err(SinkError::BadPrefix(name.into()));
        }
        if let crate::Storage::Local(dir) = storage {
            self.save_as_text_files(dir.join(name));
            return Ok(());
        }
        let sink = crate::sinks::batch_objects::BatchObjectSink::new(storage, name)?;
        self.foreach_batch(move |batch| {
            let parts: Vec<&[T]> = batch.partitions.iter().map(|p| p.as_slice()).collect();
            // Output closures run on tokio's blocking pool, where blocking on the runtime's
            // handle is allowed.
            let commit = tokio::runtime::Handle::current()
                .block_on(sink.write_batch(batch.time_ms, &parts))?;
            if let Commit::AlreadyCommitted(dir) = commit {
                tracing::info!(dir = %dir.display(), "batch already committed; skipped");
            }
            Ok(())
        });
        Ok(())
    }

    /// [`save_as_text_files`](Self::save_as_text_files) through a configured sink (e.g.
    /// [`sort_lines(false)`](crate::sinks::batch_dir::BatchDirSink::sort_lines)).
    pub fn save_as_text_files_with(&self, sink: crate::sinks::batch_dir::BatchDirSink) {
        // Leftovers of a crash are removed once, at the first batch: the engine is running
        // then, so this process holds the storage lock, and a second process started by
        // mistake (which fails at the lock) never removes a live process's batch in progress.
        let cleaned = std::sync::Once::new();
        self.foreach_batch(move |batch| {
            cleaned.call_once(|| match sink.remove_leftovers() {
                Ok(_) => {}
                Err(err) => tracing::warn!(
                    prefix = %sink.prefix().display(),
                    error = %err,
                    "could not remove uncommitted batch directories left by a crash"
                ),
            });
            let commit =
                sink.write_batch(batch.time_ms, batch.partitions.iter().map(|p| p.as_slice()))?;
            if let crate::sinks::batch_dir::Commit::AlreadyCommitted(dir) = commit {
                tracing::info!(dir = %dir.display(), "batch already committed; skipped");
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(items: Vec<u32>) -> Batch<u32> {
        Batch {
            time_ms: 2000,
            partitions: vec![Arc::new(items[..1].to_vec()), Arc::new(items[1..].to_vec())],
            offset_ranges: Vec::new(),
        }
    }

    #[test]
    fn print_shows_the_first_n_elements_then_an_ellipsis_if_there_are_more() {
        let header = "-------------------------------------------\nTime: 2000 ms\n\
                      -------------------------------------------\n";
        assert_eq!(
            print_text(&batch(vec![1, 2, 3]), 2),
            format!("{header}1\n2\n...\n\n")
        );
        assert_eq!(
            print_text(&batch(vec![1, 2, 3]), 3),
            format!("{header}1\n2\n3\n\n")
        );
        assert_eq!(
            print_text(&batch(vec![1, 2, 3]), 0),
            format!("{header}...\n\n")
        );
    }
}
