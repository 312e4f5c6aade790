//! The HTTP server: `/metrics` for Prometheus, a JSON API under `/api/v1/`, and the web
//! dashboard at `/` — what Prometheus, Grafana, curl and a browser read.
//!
//! * `http_server.rs` — the actor: listens (loopback unless explicitly allowed), accepts at
//!   most a configured number of connections, serves each with hyper.
//! * `routes.rs` — the routes, the token rules and the answers, from the hub's metrics and
//!   history and the tree model.
//! * `dashboard/` — the page, its script and its style, compiled into the binary.
//!
//! The server never slows the engine: every answer is read from what the hub keeps (bounded,
//! under short locks), the live event stream reads its own bounded subscription (a slow client
//! gets a lag marker), and the connections are capped. It keeps nothing durable.

pub(crate) mod http_server;
pub(crate) mod routes;
