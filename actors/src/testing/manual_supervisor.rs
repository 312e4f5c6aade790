//! A receiver supervisor played by hand: the test is the supervisor.
//!
//! See [`ManualSupervisor`].

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use crate::ingest::blocks::{BlockInfo, StreamId};
use crate::pipeline::{ReceiverContext, StoreError, StoreRequest};
use crate::wal::RecordHandle;

/// A receiver supervisor that the test plays.
///
/// The engine's receiver supervisor takes each block a receiver hands over, makes it durable
/// and answers. To test a [`Receiver`](crate::pipeline::Receiver) on its own — how many blocks
/// it keeps in flight, what it does when a store fails, whether a stop waits for every answer —
/// [`ManualSupervisor::new`] gives it a [`ReceiverContext`] whose blocks come to the test
/// instead, one [`HandedOver`] each, answered when and how the test chooses.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use bytes::Bytes;
/// use weir_actors::testing::ManualSupervisor;
///
/// let (mut supervisor, ctx) = ManualSupervisor::new(0, 4);
/// let receiver = tokio::spawn(async move { ctx.store(vec![Bytes::from_static(b"hi")]).await });
/// let block = supervisor.next().await.expect("the receiver hands a block over");
/// assert_eq!(block.records(), [Bytes::from_static(b"hi")]);
/// let info = block.stored_as(7);
/// assert_eq!(receiver.await.unwrap().unwrap(), info);
/// # }
/// ```
#[derive(Debug)]
pub struct ManualSupervisor {
    stream: StreamId,
    requests: mpsc::Receiver<StoreRequest>,
    stop: watch::Sender<bool>,
    pushed: Arc<Mutex<Vec<Bytes>>>,
}

/// One block a receiver handed over (by [`ReceiverContext::store`] or
/// [`submit`](ReceiverContext::submit)), waiting for the test's answer. Dropped unanswered,
/// the receiver sees [`StoreError::Closed`], as when the real supervisor goes away.
#[derive(Debug)]
pub struct HandedOver {
    stream: StreamId,
    records: Vec<Bytes>,
    reply: Option<oneshot::Sender<Result<BlockInfo, StoreError>>>,
}

impl ManualSupervisor {
    /// A supervisor of `stream` whose queue holds `depth` blocks (at least 1) before the
    /// receiver's `store` waits, and the context to start the receiver with.
    pub fn new(stream: StreamId, depth: usize) -> (ManualSupervisor, ReceiverContext) {
        let (to_supervisor, requests) = mpsc::channel(depth.max(1));
        let (stop, stopping) = watch::channel(false);
        let pushed = Arc::new(Mutex::new(Vec::new()));
        let ctx = ReceiverContext::new(stream, to_supervisor, Arc::clone(&pushed), stopping);
        let supervisor = ManualSupervisor {
            stream,
            requests,
            stop,
            pushed,
        };
        (supervisor, ctx)
    }

    /// The next block handed over, in order; `None` once every context is gone (the receiver
    /// returned and dropped it).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call loses no block.
    pub async fn next(&mut self) -> Option<HandedOver> {
        let request = self.requests.recv().await?;
        Some(self.handed_over(request))
    }

    /// The next block if one is waiting, without waiting.
    pub fn try_next(&mut self) -> Option<HandedOver> {
        let request = self.requests.try_recv().ok()?;
        Some(self.handed_over(request))
    }

    fn handed_over(&self, request: StoreRequest) -> HandedOver {
        HandedOver {
            stream: self.stream,
            records: request.records,
            reply: request.reply,
        }
    }

    /// Asks the receiver to stop: its [`ReceiverContext::stopping`] resolves.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// The records the receiver [`push`](ReceiverContext::push)ed since the last call (the
    /// real supervisor cuts them into blocks every block interval).
    pub fn take_pushed(&self) -> Vec<Bytes> {
        std::mem::take(&mut *self.pushed.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl HandedOver {
    /// The block's records, in the order the receiver gave them.
    pub fn records(&self) -> &[Bytes] {
        &self.records
    }

    /// Answers with `answer` (what the real supervisor answers once the block is durable, or
    /// why it was not stored).
    pub fn answer(mut self, answer: Result<BlockInfo, StoreError>) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(answer);
        }
    }

    /// Answers "stored", as the `n`-th block of the stream (its handle says so), and returns
    /// what was answered.
    pub fn stored_as(self, n: u64) -> BlockInfo {
        let info = BlockInfo {
            stream: self.stream,
            handle: RecordHandle {
                segment: 0,
                offset: n,
                length: 0,
            },
            records: self.records.len() as u64,
            stored_ms: 0,
        };
        self.answer(Ok(info));
        info
    }

    /// Answers "not stored" with `reason` ([`StoreError::Failed`]).
    pub fn failed(self, reason: impl Into<String>) {
        let stream = self.stream;
        self.answer(Err(StoreError::Failed {
            stream,
            reason: reason.into(),
        }));
    }

    /// Answers "the supervisor is gone" ([`StoreError::Closed`]), as a supervisor that stops
    /// does for what it has not stored.
    pub fn closed(self) {
        let stream = self.stream;
        self.answer(Err(StoreError::Closed { stream }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_block_dropped_unanswered_is_closed_and_a_failed_one_says_why() {
        let (mut supervisor, ctx) = ManualSupervisor::new(3, 4);
        let first = ctx.submit(vec![Bytes::from_static(b"a")]).await.unwrap();
        let second = ctx.submit(vec![Bytes::from_static(b"b")]).await.unwrap();
        drop(supervisor.next().await.unwrap());
        supervisor.next().await.unwrap().failed("the disk is full");
        assert!(matches!(first.await, Err(StoreError::Closed { stream: 3 })));
        match second.await {
            Err(StoreError::Failed { stream: 3, reason }) => assert_eq!(reason, "the disk is full"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn stop_and_pushes_reach_the_receiver_side() {
        let (supervisor, ctx) = ManualSupervisor::new(0, 1);
        assert!(!ctx.is_stopping());
        ctx.push(Bytes::from_static(b"x"));
        supervisor.stop();
        ctx.stopping().await;
        assert_eq!(supervisor.take_pushed(), [Bytes::from_static(b"x")]);
        assert!(supervisor.take_pushed().is_empty());
    }
}
