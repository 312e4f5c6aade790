//! The control endpoint: the engine's events and a few commands over TCP, for `weir watch`.
//!
//! Opt-in ([`EngineConfig::control_addr`](crate::config::EngineConfig::control_addr)); an
//! actor registered as `control-endpoint`, a child of the root, so it survives driver restarts.
//! The protocol is newline-delimited JSON both ways (`docs/operations.md` has every message):
//!
//! 1. On connect the server sends a [`ServerMessage::Hello`] with [`PROTOCOL_VERSION`], then a
//!    [`ServerMessage::Snapshot`] of the supervision tree (each actor's parent, state, restart
//!    count and last failure, plus the most recent events) for a client that joins late, then
//!    every event as a [`ServerMessage::Event`].
//! 2. A client may send [`Command`]s, one JSON object a line; each is answered with a
//!    [`ServerMessage::Reply`] carrying the command's `id`. `snapshot` needs nothing; `kill`
//!    and `panic` change the engine and need the token, which the engine creates at start and
//!    writes to `<storage>/control-token` with mode 0600 ([`TOKEN_FILE`]). Without it, or with
//!    a wrong one, the command is refused. Tokens are compared in constant time.
//!
//! # Never slowing the engine
//!
//! Each connection has its own bounded event queue (an [`EventSubscription`]): a client that
//! reads slowly receives an [`Event::Lagged`] marker saying how many events it missed, and the
//! engine never waits for it. Command lines are limited to [`MAX_LINE`] bytes.
//!
//! # Restarts
//!
//! After a restart the endpoint binds the address it had before (also when it was configured
//! with port 0), so clients reconnect to the same place. The tree model lives in the
//! [`ControlHandle`], which outlives the actor.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::now_ms;
use crate::observe::event::{Event, EventRecord};
use crate::observe::hub::{EventHub, EventSubscription};
use crate::tree::names::Names;

/// The protocol version in the hello line. A client refuses a server of another version.
pub const PROTOCOL_VERSION: u32 = 1;
/// The token's file name, in the engine's storage directory.
pub use crate::config::CONTROL_TOKEN_FILE as TOKEN_FILE;
/// The longest command line a client may send, in bytes; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;
/// How many recent events a snapshot carries.
pub const RECENT_EVENTS: usize = 128;

// ================================== the protocol ================================== //

/// A line the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ServerMessage {
    /// The first line of every connection.
    Hello {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The server's name and version, e.g. `weir 0.1.0`.
        server: String,
        /// The process id of the engine.
        pid: u32,
        /// The engine's actor-name prefix (often empty).
        name_prefix: String,
    },
    /// The tree as it is now (the second line, and the answer to a `snapshot` command).
    Snapshot(TreeSnapshot),
    /// One engine event, as in the persisted event log.
    Event(EventRecord),
    /// The answer to a command.
    Reply(Reply),
}

/// The supervision tree and recent events, for a client that joins late.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeSnapshot {
    /// When it was taken (ms since the Unix epoch).
    pub time_ms: u64,
    /// Every actor known, parents before their children.
    pub actors: Vec<ActorInfo>,
    /// The most recent events (at most [`RECENT_EVENTS`]), oldest first.
    pub recent: Vec<EventRecord>,
}

/// One actor of the tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// Its registered name.
    pub name: String,
    /// Its supervisor's name (`None` for the root).
    pub parent: Option<String>,
    /// What it is doing.
    pub state: ActorState,
    /// How often it was restarted since the engine started.
    pub restarts: u32,
    /// Why it last failed.
    pub last_failure: Option<String>,
}

/// The state of one actor, as the endpoint knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ActorState {
    /// Starting (in `pre_start`).
    Starting,
    /// Running.
    Running,
    /// Stopping.
    Stopping,
    /// Failed; its supervisor decides what happens.
    Failed,
    /// Failed and waiting for its restart (backoff).
    Restarting,
    /// Its supervisor gave up on it.
    GaveUp,
    /// Stopped and not coming back.
    Stopped,
}

impl ActorState {
    /// The state as a word (`running`, `restarting`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ActorState::Starting => "starting",
            ActorState::Running => "running",
            ActorState::Stopping => "stopping",
            ActorState::Failed => "failed",
            ActorState::Restarting => "restarting",
            ActorState::GaveUp => "gave up",
            ActorState::Stopped => "stopped",
        }
    }
}

/// A line a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Command {
    /// Send a fresh [`ServerMessage::Snapshot`], then the reply.
    Snapshot {
        /// Echoed in the reply.
        #[serde(default)]
        id: u64,
    },
    /// Kill an actor (its supervisor restarts it). Needs the token.
    Kill {
        /// Echoed in the reply.
        #[serde(default)]
        id: u64,
        /// The actor's registered name (with or without the engine's name prefix).
        actor: String,
        /// The content of the token file.
        #[serde(default)]
        token: Option<String>,
    },
    /// Make an actor panic inside its next message handler. Needs the token.
    Panic {
        /// Echoed in the reply.
        #[serde(default)]
        id: u64,
        /// The actor's registered name (with or without the engine's name prefix).
        actor: String,
        /// The content of the token file.
        #[serde(default)]
        token: Option<String>,
    },
}

impl Command {
    /// The command's id.
    pub fn id(&self) -> u64 {
        match self {
            Command::Snapshot { id } | Command::Kill { id, .. } | Command::Panic { id, .. } => *id,
        }
    }
}

/// The answer to a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The command's id.
    pub id: u64,
    /// Whether it was carried out.
    pub ok: bool,
    /// What was done, or why it was refused, as one sentence.
    pub message: String,
}

impl Reply {
    fn ok(id: u64, message: String) -> Self {
        Reply {
            id,
            ok: true,
            message,
        }
    }
    fn refused(id: u64, message: String) -> Self {
        Reply {
            id,
            ok: false,
            message,
        }
    }
}

// ================================== the token ================================== //

/// Where the token of an engine storing in `dir` is written.
pub fn token_path(dir: &Path) -> PathBuf {
    dir.join(TOKEN_FILE)
}

/// Creates a new random token (32 bytes of OS entropy, as 64 hex digits) and writes it to
/// `<dir>/control-token` atomically (temp file with mode 0600, fsync, rename, fsync of `dir`).
///
/// # Errors
///
/// The OS gave no entropy, or the file could not be written.
pub fn create_token(dir: &Path) -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| {
        std::io::Error::other(format!("the OS gave no entropy for the control token: {e}"))
    })?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::create_dir_all(dir)?;
    let temp = dir.join(format!(".{TOKEN_FILE}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        #[cfg(unix)]
        std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        file.write_all(token.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, token_path(dir))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(err) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(std::io::Error::new(
            err.kind(),
            format!(
                "the control token could not be written to `{}`: {err}",
                token_path(dir).display()
            ),
        ));
    }
    Ok(token)
}

/// Whether `given` is the token, compared in constant time (for tokens of the same length).
pub fn token_matches(expected: &str, given: &str) -> bool {
    bool::from(expected.trim().as_bytes().ct_eq(given.trim().as_bytes()))
}

// ================================ the tree model ================================ //

#[derive(Clone, Debug)]
struct Entry {
    parent: Option<String>,
    state: ActorState,
    restarts: u32,
    last_failure: Option<String>,
}

/// What the endpoint knows of the tree from the events: restarts, failures, recent events.
#[derive(Debug, Default)]
struct TreeModel {
    actors: BTreeMap<String, Entry>,
    recent: VecDeque<EventRecord>,
}

impl TreeModel {
    fn entry(&mut self, actor: &str) -> &mut Entry {
        self.actors.entry(actor.to_owned()).or_insert(Entry {
            parent: None,
            state: ActorState::Running,
            restarts: 0,
            last_failure: None,
        })
    }

    fn apply(&mut self, record: &EventRecord) {
        match &record.event {
            Event::ActorStarted { actor } => self.entry(actor).state = ActorState::Running,
            Event::ActorFailed { actor, reason } => {
                let e = self.entry(actor);
                e.state = ActorState::Failed;
                e.last_failure = Some(reason.clone());
            }
            Event::ActorRestarted { actor, .. } => {
                let e = self.entry(actor);
                e.state = ActorState::Restarting;
                e.restarts += 1;
            }
            Event::ActorGaveUp { child, .. } => self.entry(child).state = ActorState::GaveUp,
            Event::BlockStored { .. } | Event::Lagged { .. } => return,
            _ => {}
        }
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
    }
}

/// Shared between the engine and its control endpoint: the bound address and the tree model.
#[derive(Clone, Debug, Default)]
pub struct ControlHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug, Default)]
struct HandleInner {
    bound: Mutex<Option<SocketAddr>>,
    model: Mutex<TreeModel>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlHandle {
    /// The address the endpoint listens on, once it has bound.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.bound)
    }

    /// The tree as it is now: the live actors under `root` (from ractor's supervision links),
    /// with the restarts and failures seen in the events, and the actors that are down
    /// (failed, restarting, given up) where they were last seen.
    pub fn snapshot(&self, root: &str) -> TreeSnapshot {
        let mut live = Vec::new();
        if let Some(cell) = ractor::registry::where_is(root) {
            walk(&cell, None, &mut live);
        }
        let mut model = lock(&self.inner.model);
        let mut actors: Vec<ActorInfo> = Vec::with_capacity(live.len());
        for (name, parent, status) in live {
            let entry = model.entry(&name);
            entry.parent.clone_from(&parent);
            let state = match status {
                ActorStatus::Unstarted | ActorStatus::Starting => ActorState::Starting,
                ActorStatus::Running | ActorStatus::Upgrading => ActorState::Running,
                ActorStatus::Draining | ActorStatus::Stopping => ActorState::Stopping,
                ActorStatus::Stopped => ActorState::Stopped,
            };
            entry.state = state;
            actors.push(ActorInfo {
                name,
                parent,
                state,
                restarts: entry.restarts,
                last_failure: entry.last_failure.clone(),
            });
        }
        // Actors that are down now: after their parent (or at the end).
        for (name, entry) in &model.actors {
            if actors.iter().any(|a| &a.name == name) || entry.state == ActorState::Running {
                continue;
            }
            let info = ActorInfo {
                name: name.clone(),
                parent: entry.parent.clone(),
                state: entry.state,
                restarts: entry.restarts,
                last_failure: entry.last_failure.clone(),
            };
            let at = entry
                .parent
                .as_ref()
                .and_then(|p| actors.iter().position(|a| &a.name == p))
                .map_or(actors.len(), |i| i + 1);
            actors.insert(at, info);
        }
        TreeSnapshot {
            time_ms: now_ms(),
            actors,
            recent: model.recent.iter().cloned().collect(),
        }
    }
}

/// Depth-first, children in name order (ractor keeps them unordered).
fn walk(
    cell: &ActorCell,
    parent: Option<String>,
    out: &mut Vec<(String, Option<String>, ActorStatus)>,
) {
    let name = cell
        .get_name()
        .unwrap_or_else(|| format!("actor-{}", cell.get_id()));
    out.push((name.clone(), parent, cell.get_status()));
    let mut children = cell.get_children();
    children.sort_by_key(|c| c.get_name().unwrap_or_default());
    for child in children {
        walk(&child, Some(name.clone()), out);
    }
}

// ================================== the actor ================================== //

/// The `control-endpoint` actor.
#[derive(Clone, Debug)]
pub struct ControlEndpoint;

/// What the control endpoint starts from.
#[derive(Clone, Debug)]
pub struct ControlEndpointArgs {
    /// Where to listen (the address bound before, after a restart).
    pub addr: SocketAddr,
    /// The event feed.
    pub hub: EventHub,
    /// The engine's actor names.
    pub names: Names,
    /// The engine's name prefix.
    pub name_prefix: String,
    /// The token; `None`: every command that changes anything is refused.
    pub token: Option<Arc<str>>,
    /// Shared with the engine.
    pub handle: ControlHandle,
}

/// Messages of the control endpoint.
#[derive(Debug)]
pub enum ControlMsg {
    /// Carry out a command from a connection.
    Command {
        /// The command.
        command: Command,
        /// Answered with the reply.
        reply: RpcReplyPort<Reply>,
    },
}

/// Aborts its task when dropped — also when the actor is killed, which drops its state
/// without running `post_stop`.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The control endpoint's state.
#[derive(Debug)]
pub struct ControlEndpointState {
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
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("the control endpoint could not listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        *lock(&args.handle.inner.bound) = Some(bound);
        tracing::info!(%bound, "control endpoint listening");

        let mut subscription = args.hub.subscribe();
        let handle = args.handle.clone();
        let model = AbortOnDrop(tokio::spawn(async move {
            while let Some(record) = subscription.next().await {
                lock(&handle.inner.model).apply(&record);
            }
        }));
        let conn = Arc::new(Connection {
            hello: ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: format!("weir {}", env!("CARGO_PKG_VERSION")),
                pid: std::process::id(),
                name_prefix: args.name_prefix.clone(),
            },
            hub: args.hub.clone(),
            handle: args.handle.clone(),
            root: args.names.root(),
            endpoint: myself,
        });
        let accept = AbortOnDrop(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "control client connected");
                            connections.spawn(Arc::clone(&conn).serve(stream));
                        }
                        Err(err) => tracing::warn!(error = %err, "control endpoint accept failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
        Ok(ControlEndpointState {
            args,
            _tasks: vec![model, accept],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let ControlMsg::Command { command, reply } = message;
        let answer = carry_out(&state.args, command);
        if !reply.is_closed() {
            let _ = reply.send(answer);
        }
        Ok(())
    }
}

/// Kill or panic, after checking the token.
fn carry_out(args: &ControlEndpointArgs, command: Command) -> Reply {
    let (id, actor, token, kill) = match command {
        Command::Snapshot { id } => {
            return Reply::ok(id, "snapshot sent".to_owned());
        }
        Command::Kill { id, actor, token } => (id, actor, token, true),
        Command::Panic { id, actor, token } => (id, actor, token, false),
    };
    let verb = if kill { "kill" } else { "panic" };
    let Some(expected) = &args.token else {
        return Reply::refused(
            id,
            format!(
                "refused to {verb} {actor}: this engine has no control token (its storage is \
                 not a local directory), so commands that change anything are refused"
            ),
        );
    };
    match token {
        None => {
            return Reply::refused(
                id,
                format!("refused to {verb} {actor}: the command carries no token"),
            );
        }
        Some(given) if !token_matches(expected, &given) => {
            return Reply::refused(
                id,
                format!("refused to {verb} {actor}: the token does not match"),
            );
        }
        Some(_) => {}
    }
    let candidates = [format!("{}{actor}", args.name_prefix), actor.clone()];
    let Some((name, cell)) = candidates
        .iter()
        .find_map(|n| ractor::registry::where_is(n.clone()).map(|c| (n.clone(), c)))
    else {
        return Reply::refused(
            id,
            format!("refused to {verb} {actor}: no running actor has that name"),
        );
    };
    if name == args.names.root() {
        return Reply::refused(
            id,
            format!(
                "refused to {verb} {name}: the root would take the whole engine down; stop the process instead"
            ),
        );
    }
    if kill {
        tracing::warn!(actor = %name, "killing an actor on request of the control endpoint");
        cell.kill();
        Reply::ok(id, format!("killed {name}"))
    } else {
        tracing::warn!(actor = %name, "arming a panic on request of the control endpoint");
        crate::faults::arm_panic(
            name.clone(),
            format!("panic injected through the control endpoint into {name}"),
        );
        Reply::ok(id, format!("{name} panics when it next handles a message"))
    }
}

// ================================ one connection ================================ //

#[derive(Debug)]
struct Connection {
    hello: ServerMessage,
    hub: EventHub,
    handle: ControlHandle,
    root: String,
    endpoint: ActorRef<ControlMsg>,
}

/// How long a command may wait for the endpoint actor.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

impl Connection {
    async fn serve(self: Arc<Self>, stream: TcpStream) {
        let (read, write) = stream.into_split();
        let mut out = BufWriter::new(write);
        // Subscribe before the snapshot, so that nothing falls between the two.
        let mut events: EventSubscription = self.hub.subscribe();
        let snapshot = ServerMessage::Snapshot(self.handle.snapshot(&self.root));
        if send(&mut out, &self.hello).await.is_err() || send(&mut out, &snapshot).await.is_err() {
            return;
        }
        let (tx, mut commands) = mpsc::channel::<Result<Command, String>>(16);
        let _reader = AbortOnDrop(tokio::spawn(read_commands(read, tx)));
        loop {
            let message = tokio::select! {
                record = events.next() => match record {
                    Some(record) => ServerMessage::Event(record),
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(Ok(command)) => {
                        if matches!(command, Command::Snapshot { .. }) {
                            let snapshot = ServerMessage::Snapshot(self.handle.snapshot(&self.root));
                            if send(&mut out, &snapshot).await.is_err() {
                                break;
                            }
                        }
                        ServerMessage::Reply(self.command(command).await)
                    }
                    Some(Err(reason)) => ServerMessage::Reply(Reply::refused(0, reason)),
                    None => break,
                },
            };
            if send(&mut out, &message).await.is_err() {
                break;
            }
        }
        let _ = out.shutdown().await;
    }

    async fn command(&self, command: Command) -> Reply {
        let id = command.id();
        match self
            .endpoint
            .call(
                |reply| ControlMsg::Command { command, reply },
                Some(COMMAND_TIMEOUT),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(reply)) => reply,
            Ok(_) => Reply::refused(id, "the control endpoint did not answer in time".to_owned()),
            Err(err) => Reply::refused(id, format!("the control endpoint failed: {err}")),
        }
    }
}

async fn send(
    out: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    message: &ServerMessage,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(message).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line).await?;
    out.flush().await
}

/// Reads command lines (at most [`MAX_LINE`] bytes each) until the client closes.
async fn read_commands(
    read: tokio::net::tcp::OwnedReadHalf,
    tx: mpsc::Sender<Result<Command, String>>,
) {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_LINE + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') && line.len() > MAX_LINE {
            let _ = tx
                .send(Err(format!(
                    "a command line is longer than {MAX_LINE} bytes; closing the connection"
                )))
                .await;
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Command>(text.trim())
            .map_err(|e| format!("the command `{}` is not understood: {e}", text.trim()));
        if tx.send(parsed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_json() {
        let hello = ServerMessage::Hello {
            protocol: 1,
            server: "weir 0.1.0".into(),
            pid: 7,
            name_prefix: String::new(),
        };
        let json = serde_json::to_string(&hello).expect("json");
        assert_eq!(
            json,
            r#"{"type":"hello","protocol":1,"server":"weir 0.1.0","pid":7,"name_prefix":""}"#
        );
        let event = ServerMessage::Event(EventRecord {
            time_ms: 5,
            event: Event::ActorFailed {
                actor: "receiver-0".into(),
                reason: "killed".into(),
            },
        });
        let json = serde_json::to_string(&event).expect("json");
        assert_eq!(
            json,
            r#"{"type":"event","time_ms":5,"kind":"actor_failed","actor":"receiver-0","reason":"killed"}"#
        );
        let back: ServerMessage = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, event);
        let kill: Command =
            serde_json::from_str(r#"{"cmd":"kill","id":3,"actor":"receiver-0","token":"ab"}"#)
                .expect("parse");
        assert_eq!(
            kill,
            Command::Kill {
                id: 3,
                actor: "receiver-0".into(),
                token: Some("ab".into())
            }
        );
    }

    #[test]
    fn the_token_file_is_private_and_matches_only_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = create_token(dir.path()).expect("token");
        assert_eq!(token.len(), 64);
        let read = std::fs::read_to_string(token_path(dir.path())).expect("read");
        assert!(token_matches(&read, &token));
        assert!(!token_matches(&read, &token[..63]));
        assert!(!token_matches(&read, &"0".repeat(64)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(token_path(dir.path()))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = create_token(dir.path()).expect("token");
        assert_ne!(again, token, "every start makes a new token");
    }

    #[test]
    fn the_model_counts_restarts_and_keeps_the_last_failure() {
        let mut model = TreeModel::default();
        let rec = |event| EventRecord { time_ms: 1, event };
        model.apply(&rec(Event::ActorFailed {
            actor: "receiver-0".into(),
            reason: "killed".into(),
        }));
        model.apply(&rec(Event::ActorRestarted {
            actor: "receiver-0".into(),
            attempt: 1,
            delay_ms: 100,
        }));
        let e = &model.actors["receiver-0"];
        assert_eq!((e.state, e.restarts), (ActorState::Restarting, 1));
        assert_eq!(e.last_failure.as_deref(), Some("killed"));
        model.apply(&rec(Event::ActorStarted {
            actor: "receiver-0".into(),
        }));
        assert_eq!(model.actors["receiver-0"].state, ActorState::Running);
        for _ in 0..RECENT_EVENTS + 5 {
            model.apply(&rec(Event::ActorStarted { actor: "x".into() }));
        }
        assert_eq!(model.recent.len(), RECENT_EVENTS);
    }
}
