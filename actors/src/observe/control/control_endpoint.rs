//! The `control-endpoint` actor: listens for `weir` clients, serves each with a
//! [`Connection`], and carries out their commands — `snapshot`, and `kill` and `panic` after
//! checking the token.
//!
//! `kill` and `panic` reach only the engine's own actors: a name is looked up under the
//! engine's prefix (added when the command lacks it), and the actor found must be in the
//! tree under the engine's root.
//!
//! # Hostile neighbours
//!
//! The [`accept_loop`] serves at most `max_connections` sessions and turns one more away at
//! once, with one line written without waiting: idle clients cannot take the file descriptors
//! the engine's own files need. A failing `accept` (out of descriptors) is retried after a
//! pause that doubles from 10 ms to 1 s, never in a hot loop. On a non-loopback address every
//! session is [`Admission::Token`]: the client presents the token before it is sent anything
//! but a hello.
//!
//! Opt-in ([`EngineConfig::control_addr`](crate::config::EngineConfig::control_addr)); a child
//! of the root, so it survives driver restarts. The protocol is in
//! [`protocol`](crate::observe::control::protocol).
//!
//! # Restarts
//!
//! After a restart the endpoint binds the address it had before (also when it was configured
//! with port 0), so clients reconnect to the same place. The tree model lives in the
//! [`ControlHandle`], which outlives the actor (the hub feeds it every event). The listener
//! and every session are tasks owned by abort-on-drop guards in the actor's state, so a killed endpoint
//! leaves no listener and no session behind.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, DerivedActorRef};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;

use crate::batch::take_savepoint::take_for_client;
use crate::config::is_loopback;
use crate::messages::Stop;
use crate::observe::control::connection::{AbortOnDrop, Admission, CommandRequest, Connection};
use crate::observe::control::protocol::{
    Command, PROTOCOL_VERSION, Reply, ServerMessage, encode_line,
};
use crate::observe::control::token::token_matches;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::hub::EventHub;
use crate::tree::names::Names;

/// The `control-endpoint` actor.
#[derive(Clone, Debug)]
pub(crate) struct ControlEndpoint;

/// What the control endpoint starts from.
#[derive(Clone, Debug)]
pub(crate) struct ControlEndpointArgs {
    /// Where to listen (the address bound before, after a restart).
    pub(crate) addr: SocketAddr,
    /// The event feed.
    pub(crate) hub: EventHub,
    /// The engine's actor names.
    pub(crate) names: Names,
    /// The engine's name prefix.
    pub(crate) name_prefix: String,
    /// The token; `None`: every command that changes anything is refused.
    pub(crate) token: Option<Arc<str>>,
    /// Shared with the engine; the hub's ([`EventHub::tree`]), which feeds it.
    pub(crate) handle: ControlHandle,
    /// Connections served at once at most; one more is turned away.
    pub(crate) max_connections: usize,
    /// On a non-loopback address: how long a client has to present the token.
    pub(crate) auth_timeout: Duration,
    /// Stops the engine (the root), for a savepoint with `stop`; `None` (tests): such a
    /// savepoint is taken and the engine is not stopped.
    pub(crate) stopper: Option<DerivedActorRef<Stop>>,
}

/// Messages of the control endpoint.
#[derive(Debug)]
pub(crate) enum ControlMsg {
    /// Carry out a command from a connection.
    Command(CommandRequest),
}

impl From<CommandRequest> for ControlMsg {
    fn from(request: CommandRequest) -> Self {
        ControlMsg::Command(request)
    }
}

/// The way back, which ractor needs to return an undelivered request to its session.
impl From<ControlMsg> for CommandRequest {
    fn from(message: ControlMsg) -> Self {
        let ControlMsg::Command(request) = message;
        request
    }
}

/// The control endpoint's state.
#[derive(Debug)]
pub(crate) struct ControlEndpointState {
    args: ControlEndpointArgs,
    _tasks: Vec<AbortOnDrop>,
}

impl Actor for ControlEndpoint {
    type Msg = ControlMsg;
    type State = ControlEndpointState;
    type Arguments = ControlEndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ControlEndpointArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let addr = args.handle.local_addr().unwrap_or(args.addr);
        let listener = listen(addr)
            .map_err(|e| format!("the control endpoint could not listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        args.handle.set_local_addr(bound);
        tracing::info!(%bound, "control endpoint listening");

        // Off loopback, anyone on the network could connect: the token comes first.
        let admission = if is_loopback(bound) {
            Admission::Open
        } else {
            Admission::Token {
                token: args.token.clone(),
                timeout: args.auth_timeout,
            }
        };
        let conn = Arc::new(Connection::new(
            ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: format!("weir {}", env!("CARGO_PKG_VERSION")),
                pid: std::process::id(),
                name_prefix: args.name_prefix.clone(),
                token_required: false,
            },
            args.hub.clone(),
            args.handle.clone(),
            args.names.root(),
            myself.get_derived(),
            admission,
        ));
        let accept = AbortOnDrop(tokio::spawn(accept_loop(
            listener,
            args.max_connections,
            move |stream| Arc::clone(&conn).serve(stream),
            turn_away,
        )));
        Ok(ControlEndpointState {
            args,
            _tasks: vec![accept],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let ControlMsg::Command(CommandRequest { command, reply }) = message;
        if let Command::Savepoint {
            id,
            path,
            stop,
            token,
        } = command
        {
            // Checked here; taken in a task, so the endpoint goes on answering meanwhile.
            if let Err(refusal) = authorise(&state.args, id, "take a savepoint", token) {
                if !reply.is_closed() {
                    let _ = reply.send(refusal);
                }
                return Ok(());
            }
            let args = state.args.clone();
            tokio::spawn(async move {
                let answer = match take_for_client(
                    &args.names,
                    &args.hub,
                    args.stopper.as_ref(),
                    &path,
                    stop,
                )
                .await
                {
                    Ok(message) => Reply::ok(id, message),
                    Err(message) => Reply::refused(id, message),
                };
                if !reply.is_closed() {
                    let _ = reply.send(answer);
                }
            });
            return Ok(());
        }
        let answer = carry_out(&state.args, command);
        if !reply.is_closed() {
            let _ = reply.send(answer);
        }
        Ok(())
    }
}

/// Connections the kernel completes and queues for `accept` (capped by the system's
/// `net.core.somaxconn`). Well above the connection cap: a burst of clients — a few hundred
/// `weir watch` or scrapers reconnecting at once — is queued and answered (served or told
/// why not) at once, instead of overflowing the queue, where Linux leaves each overflowing
/// client waiting for its handshake to be retried, for seconds. (`TcpListener::bind` asks
/// for 128.)
const LISTEN_BACKLOG: u32 = 1024;

/// A listener on `addr` with [`LISTEN_BACKLOG`], reusing the address as `TcpListener::bind`
/// does (so a restarted endpoint binds the port its killed predecessor held).
pub(crate) fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Where the accept loop takes connections from: the listener, or a test's stand-in.
pub(crate) trait Acceptor: Send + 'static {
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send;
}

impl Acceptor for TcpListener {
    async fn accept(&mut self) -> std::io::Result<TcpStream> {
        let (stream, peer) = TcpListener::accept(self).await?;
        tracing::debug!(%peer, "control client connected");
        Ok(stream)
    }
}

/// The pause after the first failed accept.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// The longest pause between failed accepts.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause before the next accept after failed ones: [`ACCEPT_BACKOFF_MIN`], doubling with
/// every failure in a row up to [`ACCEPT_BACKOFF_MAX`]; an accepted connection starts over.
#[derive(Debug, Default)]
struct AcceptBackoff {
    next: Option<Duration>,
}

impl AcceptBackoff {
    /// An accept failed: how long to pause before the next.
    fn failed(&mut self) -> Duration {
        let pause = self.next.unwrap_or(ACCEPT_BACKOFF_MIN);
        self.next = Some((pause * 2).min(ACCEPT_BACKOFF_MAX));
        pause
    }

    /// A connection was accepted.
    fn succeeded(&mut self) {
        self.next = None;
    }
}

/// Accepts connections for ever: serves each with `serve` while fewer than `max` are served,
/// and hands the others to `refuse` (which must not wait: [`turn_away`] writes one line only if
/// the socket takes it at once). A failed accept (out of file descriptors, say) is retried
/// after an [`AcceptBackoff`] pause, never in a hot loop; sessions go on ending meanwhile. The
/// HTTP server uses it too.
pub(crate) async fn accept_loop<A, F, S, R>(mut acceptor: A, max: usize, serve: S, refuse: R)
where
    A: Acceptor,
    F: Future<Output = ()> + Send + 'static,
    S: Fn(TcpStream) -> F + Send + 'static,
    R: Fn(TcpStream, usize) + Send + 'static,
{
    let mut sessions = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    let mut paused_until: Option<tokio::time::Instant> = None;
    loop {
        let resume = paused_until.unwrap_or_else(tokio::time::Instant::now);
        tokio::select! {
            accepted = acceptor.accept(), if paused_until.is_none() => match accepted {
                Ok(stream) => {
                    backoff.succeeded();
                    if sessions.len() >= max {
                        refuse(stream, max);
                    } else {
                        sessions.spawn(serve(stream));
                    }
                }
                Err(err) => {
                    let pause = backoff.failed();
                    tracing::warn!(error = %err, ?pause, "control endpoint accept failed");
                    paused_until = Some(tokio::time::Instant::now() + pause);
                }
            },
            () = tokio::time::sleep_until(resume), if paused_until.is_some() => paused_until = None,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
}

/// Turns a connection away without waiting for it: one line saying why, written only if the
/// socket takes it at once (a fresh socket's buffer does), then closed.
fn turn_away(stream: TcpStream, max: usize) {
    tracing::debug!(max, "control endpoint full: a connection is turned away");
    let refusal = ServerMessage::Reply(Reply::refused(
        0,
        format!(
            "the control endpoint serves at most {max} connections at once; this one is \
             closed, try again later"
        ),
    ));
    if let Ok(line) = encode_line(&refusal) {
        write_now(stream, &line);
    }
}

/// Writes `bytes` to `stream` only as far as its buffer takes them at once, then closes it.
pub(crate) fn write_now(stream: TcpStream, bytes: &[u8]) {
    // Out of tokio's reactor, so the write is one non-blocking `write(2)`, now.
    if let Ok(stream) = stream.into_std() {
        let _ = (&stream).write(bytes);
    }
}

/// Kill or panic, after checking the token.
fn carry_out(args: &ControlEndpointArgs, command: Command) -> Reply {
    let (id, actor, token, kill) = match command {
        Command::Snapshot { id } => {
            return Reply::ok(id, "snapshot sent".to_owned());
        }
        Command::Auth { id, .. } => {
            return Reply::ok(
                id,
                "nothing to do: the token is checked only as a connection's first line, on an \
                 endpoint that requires it"
                    .to_owned(),
            );
        }
        Command::Savepoint { id, .. } => {
            return Reply::refused(id, "a savepoint is not taken here".to_owned());
        }
        Command::Kill { id, actor, token } => (id, actor, token, true),
        Command::Panic { id, actor, token } => (id, actor, token, false),
    };
    let verb = if kill { "kill" } else { "panic" };
    if let Err(refusal) = authorise(args, id, &format!("{verb} {actor}"), token) {
        return refusal;
    }
    match kill_or_panic(&args.names, &args.name_prefix, &actor, kill) {
        Ok(message) => Reply::ok(id, message),
        Err(refusal) => Reply::refused(id, refusal.message),
    }
}

/// Checks the token a command carries; the refusal says that it refused to `what`.
fn authorise(
    args: &ControlEndpointArgs,
    id: u64,
    what: &str,
    token: Option<String>,
) -> Result<(), Reply> {
    let Some(expected) = &args.token else {
        return Err(Reply::refused(
            id,
            format!(
                "refused to {what}: this engine has no control token (its storage is not a \
                 local directory), so commands that change anything are refused"
            ),
        ));
    };
    match token {
        None => Err(Reply::refused(
            id,
            format!("refused to {what}: the command carries no token"),
        )),
        Some(given) if !token_matches(expected, &given) => Err(Reply::refused(
            id,
            format!("refused to {what}: the token does not match"),
        )),
        Some(_) => Ok(()),
    }
}

/// Why [`kill_or_panic`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// No running actor has the name (as opposed to: not allowed).
    pub(crate) not_found: bool,
    /// One sentence.
    pub(crate) message: String,
}

/// Kills `actor` or arms a panic in it — only an actor of this engine's tree under its prefix,
/// never the root — once the caller has checked the token. What the control endpoint and the
/// HTTP API share.
pub(crate) fn kill_or_panic(
    names: &Names,
    name_prefix: &str,
    actor: &str,
    kill: bool,
) -> Result<String, Refusal> {
    let verb = if kill { "kill" } else { "panic" };
    let refuse = |not_found: bool, message: String| Refusal { not_found, message };
    // Only under this engine's prefix: never the name as given when it lacks the prefix, which
    // could be another engine's actor, or anything else registered in the process.
    let name = if actor.starts_with(name_prefix) {
        actor.to_owned()
    } else {
        format!("{name_prefix}{actor}")
    };
    let Some(cell) = ractor::registry::where_is(name.clone()) else {
        return Err(refuse(
            true,
            format!("refused to {verb} {actor}: no running actor has that name"),
        ));
    };
    let root = names.root();
    if name == root {
        return Err(refuse(
            false,
            format!(
                "refused to {verb} {name}: the root would take the whole engine down; stop the process instead"
            ),
        ));
    }
    // With an empty prefix every name is "under" it: the actor must also be in this engine's
    // supervision tree.
    if !descends_from(&cell, &root) {
        return Err(refuse(
            false,
            format!("refused to {verb} {name}: it is not an actor of this engine"),
        ));
    }
    if kill {
        tracing::warn!(actor = %name, "killing an actor on request of an operator");
        cell.kill();
        Ok(format!("killed {name}"))
    } else {
        tracing::warn!(actor = %name, "arming a panic on request of an operator");
        crate::faults::arm_panic(
            name.clone(),
            format!("panic injected through the control endpoint into {name}"),
        );
        Ok(format!("{name} panics when it next handles a message"))
    }
}

/// Deeper than any tree of the engine: a supervisor chain longer than this is not one.
const MAX_DEPTH: usize = 64;

/// Whether `cell` is supervised, directly or through its supervisors, by the actor registered
/// as `root`.
fn descends_from(cell: &ActorCell, root: &str) -> bool {
    let Some(root) = ractor::registry::where_is(root) else {
        return false;
    };
    let mut supervisor = cell.try_get_supervisor();
    for _ in 0..MAX_DEPTH {
        match supervisor {
            Some(s) if s.get_id() == root.get_id() => return true,
            Some(s) => supervisor = s.try_get_supervisor(),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>) -> ControlEndpointArgs {
        args_under("ce-unit/", token)
    }

    fn args_under(prefix: &str, token: Option<&str>) -> ControlEndpointArgs {
        ControlEndpointArgs {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: EventHub::default(),
            names: Names::new(prefix),
            name_prefix: prefix.to_owned(),
            token: token.map(Arc::from),
            handle: ControlHandle::default(),
            max_connections: 4,
            auth_timeout: Duration::from_secs(1),
            stopper: None,
        }
    }

    /// An actor that does nothing.
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn kill(id: u64, actor: &str, token: Option<&str>) -> Command {
        Command::Kill {
            id,
            actor: actor.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn without_a_token_every_changing_command_is_refused_and_snapshot_is_not() {
        let args = args(None);
        let reply = carry_out(&args, kill(1, "driver", Some("anything")));
        assert_eq!((reply.id, reply.ok), (1, false));
        assert!(
            reply.message.contains("this engine has no control token"),
            "{}",
            reply.message
        );
        let panic = Command::Panic {
            id: 2,
            actor: "driver".to_owned(),
            token: None,
        };
        let reply = carry_out(&args, panic);
        assert_eq!((reply.id, reply.ok), (2, false));
        assert!(
            reply.message.starts_with("refused to panic driver"),
            "{}",
            reply.message
        );
        let reply = carry_out(&args, Command::Snapshot { id: 3 });
        assert_eq!(reply, Reply::ok(3, "snapshot sent".to_owned()));
    }

    #[tokio::test]
    async fn kill_and_panic_reach_no_actor_outside_the_engines_own_tree() {
        // Another engine in the same process (its root and its driver, under its own prefix),
        // and a registered actor that belongs to no engine.
        let (other_root, other_root_done) = Actor::spawn(Some("ce-other/root".into()), Idle, ())
            .await
            .expect("spawn");
        let (other_driver, other_driver_done) = Actor::spawn_linked(
            Some("ce-other/driver".into()),
            Idle,
            (),
            other_root.get_cell(),
        )
        .await
        .expect("spawn");
        let (loner, loner_done) = Actor::spawn(Some("ce-loner".into()), Idle, ())
            .await
            .expect("spawn");
        // This engine's endpoint, under a prefix of its own and under the empty one.
        for prefix in ["ce-mine/", ""] {
            let args = args_under(prefix, Some("secret"));
            for actor in ["ce-other/driver", "ce-loner"] {
                let reply = carry_out(&args, kill(1, actor, Some("secret")));
                assert!(!reply.ok, "{prefix:?} killed {actor}: {}", reply.message);
                let panic = Command::Panic {
                    id: 2,
                    actor: actor.to_owned(),
                    token: Some("secret".to_owned()),
                };
                let reply = carry_out(&args, panic);
                assert!(!reply.ok, "{prefix:?} armed {actor}: {}", reply.message);
                assert!(!crate::faults::is_armed(actor), "{prefix:?}: {actor} armed");
            }
        }
        other_driver.stop(None);
        loner.stop(None);
        other_root.stop(None);
        loner_done.await.expect("join");
        other_root_done.await.expect("join");
        other_driver_done.await.expect("join");
    }

    /// An acceptor whose every accept fails as when the process is out of file descriptors,
    /// and which records when it was asked; asked `calls` times, it says so and never returns.
    struct OutOfDescriptors {
        asked: Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>,
        calls: usize,
        done: Arc<tokio::sync::Notify>,
    }

    impl Acceptor for OutOfDescriptors {
        fn accept(&mut self) -> impl Future<Output = std::io::Result<TcpStream>> + Send {
            let asked = Arc::clone(&self.asked);
            let done = Arc::clone(&self.done);
            let calls = self.calls;
            async move {
                let n = {
                    let mut asked = asked.lock().expect("lock");
                    asked.push(tokio::time::Instant::now());
                    asked.len()
                };
                if n == calls {
                    done.notify_one();
                    std::future::pending::<()>().await;
                }
                Err(std::io::Error::from_raw_os_error(libc::EMFILE))
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_accept_is_retried_after_a_doubling_pause_up_to_a_second() {
        let asked = Arc::default();
        let done = Arc::new(tokio::sync::Notify::new());
        let acceptor = OutOfDescriptors {
            asked: Arc::clone(&asked),
            calls: 10,
            done: Arc::clone(&done),
        };
        let accepting = tokio::spawn(accept_loop(acceptor, 4, |_stream| async {}, turn_away));
        tokio::time::timeout(Duration::from_secs(60), done.notified())
            .await
            .expect("ten accepts within a minute");
        accepting.abort();
        let asked = asked.lock().expect("lock");
        let pauses: Vec<u128> = asked
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
    }

    #[test]
    fn the_accept_backoff_starts_over_after_an_accepted_connection() {
        let mut backoff = AcceptBackoff::default();
        let pauses: Vec<u128> = (0..3).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(pauses, [10, 20, 40]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), ACCEPT_BACKOFF_MIN);
    }

    #[test]
    fn a_matching_token_for_an_unknown_actor_is_refused_by_name() {
        let args = args(Some("secret"));
        let reply = carry_out(&args, kill(4, "no-such-actor", Some("secret\n")));
        assert_eq!(
            reply,
            Reply::refused(
                4,
                "refused to kill no-such-actor: no running actor has that name".to_owned()
            )
        );
    }
}
