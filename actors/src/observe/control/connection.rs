//! One client's session with the control endpoint: the hello, a snapshot of the tree, then
//! every event, with the client's commands answered in between.
//!
//! A session never slows the engine: it reads events from its own bounded
//! [`EventSubscription`], so a client that reads slowly gets an
//! [`Event::Lagged`](crate::Event::Lagged) marker instead of holding anything up, and it reads
//! command lines of at most [`MAX_LINE`] bytes (a longer one is refused and closes the
//! connection). It subscribes before it takes the snapshot, so no event falls between the
//! two. Commands are carried out by the endpoint actor, which the session reaches through a
//! [`CommandRequest`] without naming the actor's own message type. A session ends when the
//! client closes, a write fails or the hub is gone; it holds nothing durable, and its tasks
//! are aborted with the endpoint's.
//!
//! Under [`Admission::Token`] (an endpoint on a non-loopback address) a session first sends a
//! hello that says the token is required and names nothing else, and admits the client only
//! if its first line, within the timeout, is an `auth` with the token: before that it
//! subscribes to nothing and sends nothing more; otherwise it sends one refusal and closes.

use std::sync::Arc;
use std::time::Duration;

use ractor::{DerivedActorRef, RpcReplyPort};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batch::take_savepoint::SAVEPOINT_TIMEOUT;
use crate::observe::control::protocol::{
    Command, LineError, LineReader, MAX_LINE, PROTOCOL_VERSION, Reply, ServerMessage, encode_line,
};
use crate::observe::control::token::token_matches;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::hub::{EventHub, EventSubscription};

/// How long a command may wait for the endpoint actor.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// What a session asks of the endpoint actor: carry out `command` and answer on `reply`.
#[derive(Debug)]
pub(crate) struct CommandRequest {
    /// The command, as the client sent it.
    pub(crate) command: Command,
    /// Where the reply goes.
    pub(crate) reply: RpcReplyPort<Reply>,
}

/// Aborts its task when dropped — also when the actor that owns it is killed, which drops its
/// state without running `post_stop`.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Whom a session serves.
#[derive(Clone, Debug)]
pub(crate) enum Admission {
    /// Anyone who connects (an endpoint on a loopback address).
    Open,
    /// Only a client whose first line, within `timeout`, is an `auth` with `token`; with no
    /// token, nobody.
    Token {
        /// The engine's token.
        token: Option<Arc<str>>,
        /// How long to wait for the first line.
        timeout: Duration,
    },
}

/// What every session of one endpoint shares.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The first line of every admitted session.
    hello: ServerMessage,
    hub: EventHub,
    handle: ControlHandle,
    /// The root's registered name, where snapshots start.
    root: String,
    endpoint: DerivedActorRef<CommandRequest>,
    admission: Admission,
}

impl Connection {
    /// Sessions that admit clients by `admission`, greet them with `hello`, stream the events
    /// of `hub`, take snapshots from `handle` under `root`, and hand commands to `endpoint`.
    pub(crate) fn new(
        hello: ServerMessage,
        hub: EventHub,
        handle: ControlHandle,
        root: String,
        endpoint: DerivedActorRef<CommandRequest>,
        admission: Admission,
    ) -> Self {
        Connection {
            hello,
            hub,
            handle,
            root,
            endpoint,
            admission,
        }
    }

    /// Serves one client until it closes, a write fails or the hub is gone.
    pub(crate) async fn serve(self: Arc<Self>, stream: TcpStream) {
        let (read, write) = stream.into_split();
        let mut out = BufWriter::new(write);
        let mut lines = LineReader::new(read, MAX_LINE);
        if let Admission::Token { token, timeout } = &self.admission {
            let guarded = ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: "weir".to_owned(),
                pid: 0,
                name_prefix: String::new(),
                token_required: true,
            };
            if send(&mut out, &guarded).await.is_err() {
                return;
            }
            if let Err(refusal) = admit(&mut lines, token.as_deref(), *timeout).await {
                let _ = send(&mut out, &ServerMessage::Reply(refusal)).await;
                let _ = out.shutdown().await;
                return;
            }
        }
        // Subscribe before the snapshot, so that nothing falls between the two.
        let mut events: EventSubscription = self.hub.subscribe();
        let snapshot = ServerMessage::Snapshot(self.handle.snapshot(&self.root));
        if send(&mut out, &self.hello).await.is_err() || send(&mut out, &snapshot).await.is_err() {
            return;
        }
        let (tx, mut commands) = mpsc::channel::<Result<Command, String>>(16);
        let _reader = AbortOnDrop(tokio::spawn(read_commands(lines, tx)));
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

    /// Has the endpoint actor carry out `command`, waiting at most [`COMMAND_TIMEOUT`] (a
    /// savepoint: [`SAVEPOINT_TIMEOUT`] more).
    async fn command(&self, command: Command) -> Reply {
        let id = command.id();
        // A savepoint waits for a checkpoint to become durable and for its copy.
        let timeout = if matches!(command, Command::Savepoint { .. }) {
            SAVEPOINT_TIMEOUT + COMMAND_TIMEOUT
        } else {
            COMMAND_TIMEOUT
        };
        match self
            .endpoint
            .call(|reply| CommandRequest { command, reply }, Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(reply)) => reply,
            Ok(_) => Reply::refused(id, "the control endpoint did not answer in time".to_owned()),
            Err(err) => Reply::refused(id, format!("the control endpoint failed: {err}")),
        }
    }
}

async fn send(out: &mut BufWriter<OwnedWriteHalf>, message: &ServerMessage) -> std::io::Result<()> {
    let line = encode_line(message).map_err(std::io::Error::other)?;
    out.write_all(&line).await?;
    out.flush().await
}

/// Admits the client if its first line, within `timeout`, is an `auth` with `token`;
/// otherwise the refusal to send it before closing.
async fn admit(
    lines: &mut LineReader<OwnedReadHalf>,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(), Reply> {
    const HOW: &str = "this endpoint needs the token first: send {\"cmd\":\"auth\",\"token\":\"…\"} \
                       as the first line";
    let line = match tokio::time::timeout(timeout, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None) | Err(LineError::Io(_))) => {
            return Err(Reply::refused(0, "the connection ended".to_owned()));
        }
        Ok(Err(LineError::TooLong { .. })) => {
            return Err(Reply::refused(
                0,
                format!("a command line is longer than {MAX_LINE} bytes; closing the connection"),
            ));
        }
        Err(_) => {
            return Err(Reply::refused(
                0,
                format!("{HOW}, and none came within {timeout:?}; closing the connection"),
            ));
        }
    };
    match serde_json::from_slice::<Command>(line) {
        Ok(Command::Auth { id, token: given }) => match token {
            Some(expected) if token_matches(expected, &given) => Ok(()),
            Some(_) => Err(Reply::refused(
                id,
                "refused the connection: the token does not match; closing the connection"
                    .to_owned(),
            )),
            None => Err(Reply::refused(
                id,
                "refused the connection: this engine has no control token; closing the connection"
                    .to_owned(),
            )),
        },
        Ok(other) => Err(Reply::refused(
            other.id(),
            format!("{HOW}; closing the connection"),
        )),
        Err(_) => Err(Reply::refused(0, format!("{HOW}; closing the connection"))),
    }
}

/// Reads command lines (at most [`MAX_LINE`] bytes each) until the client closes.
async fn read_commands(
    mut lines: LineReader<OwnedReadHalf>,
    tx: mpsc::Sender<Result<Command, String>>,
) {
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) | Err(LineError::Io(_)) => return,
            Err(LineError::TooLong { .. }) => {
                let _ = tx
                    .send(Err(format!(
                        "a command line is longer than {MAX_LINE} bytes; closing the connection"
                    )))
                    .await;
                return;
            }
        };
        let text = String::from_utf8_lossy(line);
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
