//! The control endpoint that `weir` connects to: the engine's events and a few commands
//! (`snapshot`, and `kill` and `panic` with the token) over TCP, as newline-delimited JSON.
//!
//! * `protocol.rs` — the wire types, constants and line framing both sides use; public as
//!   `weir_actors::control`, the only part a client sees.
//! * `token.rs` — the secret that changing commands carry, written to `<storage>/control-token`.
//! * `tree_model.rs` — the tree as the events describe it, in the [`tree_model::ControlHandle`]
//!   that outlives the actor.
//! * `control_endpoint.rs` — the actor: listens, and carries out commands.
//! * `connection.rs` — one client's session: hello, snapshot, events, commands.
//!
//! The endpoint never slows the engine: every session reads its own bounded event queue and
//! a slow client gets a lag marker instead; at most a configured number of sessions hold a
//! connection (one more is turned away at once), and a failing `accept` backs off. Off
//! loopback a session sends nothing but a hello before the client presents the token. It
//! keeps nothing durable but the token file.

pub(crate) mod connection;
pub(crate) mod control_endpoint;
pub mod protocol;
pub(crate) mod token;
pub(crate) mod tree_model;

#[cfg(test)]
mod tests;
