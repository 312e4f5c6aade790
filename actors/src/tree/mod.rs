//! The supervision tree: the root and the driver, the restart policy, and the machinery every
//! supervising actor shares.
//!
//! ```text
//! root ── event-bus, control-endpoint, driver
//! driver ── received-block-tracker, job-scheduler, receiver-tracker, job-generator
//! ```
//!
//! [`restart_policy`] is OTP's restart semantics as pure logic; [`children`] applies it to
//! ractor's supervision events for an actor that supervises; [`names`] are the stable names
//! every actor is registered under, and the one typed way to look a peer up by name.

pub(crate) mod children;
pub(crate) mod driver;
pub(crate) mod names;
pub(crate) mod restart_policy;
pub(crate) mod root;

#[cfg(test)]
mod tests;
