//! The `http-server` actor: listens on the configured address and serves the routes of
//! [`routes`](crate::observe::http::routes) over HTTP/1.1.
//!
//! Opt-in ([`EngineConfig::http_addr`](crate::config::EngineConfig::http_addr)); a child of the
//! root, so it survives driver restarts, and after a restart of its own it binds the address it
//! had (also when configured with port 0), so scrapers and browsers reconnect to the same place.
//!
//! # Hostile neighbours
//!
//! The control endpoint's accept loop serves at most `max_connections` connections and answers
//! one more `503 Service Unavailable` at once (written only if the socket takes it without
//! waiting); a failing `accept` backs off. Each connection's request head must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`]; bodies are capped at
//! [`MAX_BODY_BYTES`](crate::observe::http::routes::MAX_BODY_BYTES). The listener and every
//! connection are tasks owned by an abort-on-drop guard in the actor's state: a killed server
//! leaves nothing behind.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpStream;

use crate::config::is_loopback;
use crate::observe::control::connection::AbortOnDrop;
use crate::observe::control::control_endpoint::{accept_loop, listen, write_now};
use crate::observe::http::routes::{Api, router};

/// How long a client has to send a request's head.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head (request line and headers) read.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The `http-server` actor.
#[derive(Clone, Debug)]
pub(crate) struct HttpServer;

/// The address the server bound, shared with the engine (and kept across the server's
/// restarts).
#[derive(Clone, Debug, Default)]
pub(crate) struct HttpHandle {
    bound: Arc<Mutex<Option<SocketAddr>>>,
}

impl HttpHandle {
    /// The bound address, once the server listens.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        *self.bound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set_local_addr(&self, addr: SocketAddr) {
        *self.bound.lock().unwrap_or_else(PoisonError::into_inner) = Some(addr);
    }
}

/// What the HTTP server starts from.
#[derive(Clone, Debug)]
pub(crate) struct HttpServerArgs {
    /// Where to listen (the address bound before, after a restart).
    pub(crate) addr: SocketAddr,
    /// Shared with the engine.
    pub(crate) handle: HttpHandle,
    /// Connections served at once at most.
    pub(crate) max_connections: usize,
    /// What the routes answer from.
    pub(crate) api: Api,
}

/// The server's state: its tasks, aborted when it goes.
#[derive(Debug)]
pub(crate) struct HttpServerState {
    _accept: AbortOnDrop,
}

impl Actor for HttpServer {
    type Msg = ();
    type State = HttpServerState;
    type Arguments = HttpServerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: HttpServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let addr = args.handle.local_addr().unwrap_or(args.addr);
        let listener =
            listen(addr).map_err(|e| format!("the HTTP server could not listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        args.handle.set_local_addr(bound);
        tracing::info!(%bound, "HTTP server listening");
        let mut api = args.api.clone();
        // Off loopback, anyone on the network could connect: every request needs the token.
        api.token_for_reads = !is_loopback(bound);
        let mut settings = (*api.settings).clone();
        settings.insert("http_addr".to_owned(), bound.to_string());
        api.settings = Arc::new(settings);
        let app = router(api);
        let accept = AbortOnDrop(tokio::spawn(accept_loop(
            listener,
            args.max_connections,
            move |stream| serve(stream, app.clone()),
            refuse,
        )));
        Ok(HttpServerState { _accept: accept })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        _message: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        Ok(())
    }
}

/// Serves one connection until the client closes it (keep-alive), a request head is late or
/// too large, or the server goes.
async fn serve(stream: TcpStream, app: axum::Router) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app);
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = result {
        tracing::debug!(error = %err, "an HTTP connection ended with an error");
    }
}

/// Answers a connection over the cap with `503`, without waiting for it.
fn refuse(stream: TcpStream, max: usize) {
    tracing::debug!(max, "HTTP server full: a connection is turned away");
    let body = format!(
        "{{\"ok\":false,\"message\":\"the HTTP server serves at most {max} connections at \
         once; try again later\"}}"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    write_now(stream, response.as_bytes());
}
