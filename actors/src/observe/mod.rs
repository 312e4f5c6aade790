//! Observing the engine: typed events, the hub that fans them out, the persisted event log,
//! the `event-bus` actor that writes it, the control endpoint that `weir` connects to, and the
//! HTTP server (metrics for Prometheus, a JSON API, the web dashboard) with the metrics and
//! history it shows.
//!
//! Everything an operator or a test sees comes from one feed of [`event::Event`]s published
//! on the [`hub::EventHub`]; publishing never blocks, so watching never slows the engine.

pub(crate) mod control;
pub(crate) mod event;
pub(crate) mod event_bus;
pub(crate) mod event_log;
pub(crate) mod history;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod metrics;
