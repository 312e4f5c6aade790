//! Observing the engine: typed events, the hub that fans them out, the persisted event log,
//! the `event-bus` actor that writes it, and the control endpoint that `weir` connects to.
//!
//! Everything an operator or a test sees comes from one feed of [`event::Event`]s published
//! on the [`hub::EventHub`]; publishing never blocks, so watching never slows the engine.

pub(crate) mod control;
pub(crate) mod event;
pub(crate) mod event_bus;
pub(crate) mod event_log;
pub(crate) mod hub;
