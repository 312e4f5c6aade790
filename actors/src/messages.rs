//! The message vocabulary shared by the actors: the same request has the same shape in every
//! actor that takes it.
//!
//! * [`Fail`] — "fail, so that your supervisor rebuilds you and what you own": sent to an
//!   owner by something below it that found a shared resource unusable. A child reaches its
//!   owner through a narrowed reference (`DerivedActorRef<Fail>`, ractor's derived
//!   references), so it names neither the owner's type nor the rest of its protocol.
//! * [`RestartChildren`] — what every supervising actor sends itself after a restart
//!   decision's backoff (its variant is always `Restart`).
//! * [`Stop`] — stop, gracefully or at once, answered once stopped (its variant is always
//!   `Stop`). The job generator's half of a graceful stop is `Drain`: it stops nothing, it
//!   finishes every batch.
//!
//! Requests that expect an answer carry a ractor [`RpcReplyPort`] last, and the answer is
//! sent only if the caller still waits (`children::answer`).
//!
//! A leaf of the crate: it names no actor.

use std::ops::Range;

use ractor::RpcReplyPort;

/// Asks an actor to fail (its supervisor restarts it, and with it what it owns): e.g. a
/// receiver supervisor whose receiver WAL takes no more appends asks the driver, which owns
/// the WAL, to fail, so that the new driver reopens it. The reason becomes the failure's.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) String);

/// Restart these children — by their start order, a range of the supervising actor's
/// [`Children`](crate::tree::children::Children) — after their backoff: what a supervising
/// actor sends itself to carry out a restart decision
/// ([`Decision::carry_out`](crate::tree::children::Decision::carry_out)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestartChildren(pub(crate) Range<usize>);

/// Stop: gracefully (what was received is finished first) or at once. Answered on `reply`
/// once stopped; most actors answer `()`, the driver whether its graceful stop reached the job
/// generator.
#[derive(Debug)]
pub(crate) struct Stop<R: Send + 'static = ()> {
    /// Whether to finish what was received first.
    pub(crate) graceful: bool,
    /// Answered once stopped.
    pub(crate) reply: RpcReplyPort<R>,
}
