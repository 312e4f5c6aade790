//! Streams fed by receivers: each batch is the blocks the block tracker allocated to it.

use bytes::Bytes;
use weir_actors::StreamId;

use super::Data;
use super::graph::{BatchCx, Compute};
use crate::error::ComputeResult;

type Decode<T> = dyn Fn(&Bytes) -> ComputeResult<T> + Send + Sync;

/// A receiver stream's batch: its blocks' records, split evenly (in order) over the
/// partitions and decoded.
pub(crate) struct ReceiverInput<T> {
    pub(crate) stream: StreamId,
    pub(crate) partitions: usize,
    pub(crate) decode: Box<Decode<T>>,
}

impl<T: Data> Compute<T> for ReceiverInput<T> {
    fn is_input(&self) -> bool {
        true
    }
    fn partitions(&self) -> usize {
        self.partitions
    }

    fn compute(&self, cx: BatchCx<'_>, part: usize) -> ComputeResult<Vec<T>> {
        let input = cx.graph.input(cx.time)?;
        let Some(blocks) = input.blocks.get(&self.stream) else {
            return Ok(Vec::new());
        };
        let total: usize = blocks.iter().map(|b| b.records.len()).sum();
        let (from, until) = (
            part * total / self.partitions,
            (part + 1) * total / self.partitions,
        );
        let mut out = Vec::with_capacity(until - from);
        let mut at = 0;
        for block in blocks {
            let len = block.records.len();
            if at + len > from && at < until {
                let start = from.saturating_sub(at);
                let end = (until - at).min(len);
                for record in &block.records[start..end] {
                    out.push((self.decode)(record)?);
                }
            }
            at += len;
            if at >= until {
                break;
            }
        }
        Ok(out)
    }
}
