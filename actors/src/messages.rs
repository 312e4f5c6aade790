//! The message vocabulary shared by the actors: the same request has the same shape in every
//! actor that takes it.
//!
//! * [`Fail`] — "fail, so that your supervisor rebuilds you and what you own": sent to an
//!   owner by something below it that found a shared resource unusable. A child reaches its
//!   owner through a narrowed reference (`DerivedActorRef<Fail>`, ractor's derived
//!   references), so it names neither the owner's type nor the rest of its protocol.
//!
//! A leaf of the crate: it names no actor.

/// Asks an actor to fail (its supervisor restarts it, and with it what it owns): e.g. a
/// receiver supervisor whose receiver WAL takes no more appends asks the driver, which owns
/// the WAL, to fail, so that the new driver reopens it. The reason becomes the failure's.
#[derive(Debug)]
pub(crate) struct Fail(pub(crate) String);
