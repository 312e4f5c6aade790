//! The protocol of the control endpoint, as both sides speak it: the lines the server sends,
//! the commands a client sends, the constants they agree on, and the framing both read lines
//! with. Public as `weir_actors::control`; the `weir` tool is its client.
//!
//! The protocol is newline-delimited JSON both ways (`docs/operations.md` has every message):
//!
//! 1. On connect the server sends a [`ServerMessage::Hello`] with [`PROTOCOL_VERSION`], then a
//!    [`ServerMessage::Snapshot`] of the supervision tree (each actor's parent, state, restart
//!    count and last failure, plus the most recent events) for a client that joins late, then
//!    every event as a [`ServerMessage::Event`]. A client that reads slowly receives an
//!    [`Event::Lagged`](crate::Event::Lagged) marker saying how many events it missed; the
//!    engine never waits for it.
//! 2. A client may send [`Command`]s, one JSON object a line; each is answered with a
//!    [`ServerMessage::Reply`] carrying the command's `id`. `snapshot` needs nothing; `kill`
//!    and `panic` change the engine and need the token, which the engine creates at start and
//!    writes to `<storage>/control-token` with mode 0600 (see
//!    [`EngineConfig::control_token_path`](crate::EngineConfig::control_token_path)). Without
//!    it, or with a wrong one, the command is refused. Tokens are compared in constant time.
//! 3. An endpoint on a non-loopback address (allowed only with
//!    [`EngineConfig::control_allow_remote`](crate::EngineConfig::control_allow_remote)) wants
//!    the token before anything else: its hello says `token_required` (and names no pid or
//!    prefix), the client's first line must be [`Command::Auth`] with the token, and only a
//!    matching one is answered with the full hello, the snapshot and the events. A wrong
//!    token, another first line, or none within [`AUTH_TIMEOUT`] gets a refusal and the
//!    connection is closed.
//! 4. An endpoint serving as many connections as it may
//!    ([`EngineConfig::control_max_connections`](crate::EngineConfig::control_max_connections))
//!    answers one more with a single refusing [`ServerMessage::Reply`] (id 0) instead of the
//!    hello, and closes it.
//!
//! Version 1 throughout: a loopback endpoint's lines are unchanged, and a client that does not
//! know `token_required` is refused by a remote endpoint rather than misled.
//!
//! # Framing
//!
//! Both sides write a message with [`encode_line`] and read lines with a [`LineReader`], which
//! never holds more than its bound in memory: the server reads command lines of at most
//! [`MAX_LINE`] bytes (a longer one closes the connection), a client reads server lines of at
//! most [`MAX_SERVER_LINE`] bytes.
//!
//! The serde attributes of the types here are the wire format: changing one changes the bytes
//! that `docs/operations.md` documents (a unit test pins them).

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use crate::observe::event::EventRecord;

/// The protocol version in the hello line. A client refuses a server of another version.
pub const PROTOCOL_VERSION: u32 = 1;
/// The longest command line a client may send, in bytes; a longer one closes the connection.
pub const MAX_LINE: usize = 64 * 1024;
/// The longest line a client reads from the server, in bytes; a longer one is an error. Far
/// above any real line (the largest is a snapshot: the actors and [`RECENT_EVENTS`] events);
/// it only keeps a broken or hostile server from growing a client's memory without bound.
pub const MAX_SERVER_LINE: usize = 16 * 1024 * 1024;
/// How many recent events a snapshot carries.
pub const RECENT_EVENTS: usize = 128;
/// How long an endpoint that requires the token waits for a client's first line.
pub const AUTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

// ================================== the messages ================================== //

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
        /// Whether the client must send the token ([`Command::Auth`]) as its first line before
        /// it is sent anything more (an endpoint on a non-loopback address). Then this hello
        /// names no pid and no prefix (`0` and empty), and a second, full hello answers a
        /// matching token. Absent from the JSON when false.
        #[serde(default, skip_serializing_if = "is_false")]
        token_required: bool,
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
        /// The actor's registered name (with or without the engine's name prefix); only an
        /// actor of the engine's own tree is killed.
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
    /// Take a savepoint now (a checkpoint exported, once durable, with its state files to
    /// `path`), and with `stop`, then stop the engine gracefully. Needs the token. Answered
    /// once the savepoint is written, with where it is and its batch time.
    Savepoint {
        /// Echoed in the reply.
        #[serde(default)]
        id: u64,
        /// Where: an absolute local directory or an `s3://` URL, holding no savepoint or
        /// checkpoint yet.
        path: String,
        /// Whether the engine then stops gracefully.
        #[serde(default)]
        stop: bool,
        /// The content of the token file.
        #[serde(default)]
        token: Option<String>,
    },
    /// Present the token: the first line a client must send when the hello says
    /// `token_required`. A matching token is answered with the full hello, then the snapshot
    /// and the events; anything else with a refusal, and the connection is closed. Later (or
    /// where no token is required) it changes nothing and is answered with a reply.
    Auth {
        /// Echoed in a refusal.
        #[serde(default)]
        id: u64,
        /// The content of the token file.
        token: String,
    },
}

impl Command {
    /// The command's id.
    pub fn id(&self) -> u64 {
        match self {
            Command::Snapshot { id }
            | Command::Kill { id, .. }
            | Command::Panic { id, .. }
            | Command::Savepoint { id, .. }
            | Command::Auth { id, .. } => *id,
        }
    }
}

fn is_false(value: &bool) -> bool {
    !*value
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
    /// The command `id` was carried out.
    pub(crate) fn ok(id: u64, message: String) -> Self {
        Reply {
            id,
            ok: true,
            message,
        }
    }

    /// The command `id` was refused, for the reason in `message`.
    pub(crate) fn refused(id: u64, message: String) -> Self {
        Reply {
            id,
            ok: false,
            message,
        }
    }
}

// ==================================== framing ==================================== //

/// `message` as one line: its JSON and a `\n`. JSON escapes every newline inside a string, so
/// the line is exactly one line.
///
/// # Errors
///
/// `message` cannot be serialized (never for the types of this module).
pub fn encode_line<T: Serialize + ?Sized>(message: &T) -> serde_json::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    Ok(line)
}

/// Reads newline-delimited lines, each at most a bound of bytes, so a peer that never sends a
/// newline costs at most that much memory.
///
/// A line ends at `\n`, which is not part of it, nor is a `\r` right before it. The bound
/// counts the bytes before the `\n`. At the end of the stream, bytes after the last `\n` are
/// one last line.
#[derive(Debug)]
pub struct LineReader<R> {
    reader: BufReader<R>,
    /// The line being read; after [`next_line`](Self::next_line) returned it, the one returned.
    line: Vec<u8>,
    /// Whether `line` was returned (and the next call starts a new one).
    returned: bool,
    max: usize,
}

/// Why a [`LineReader`] returned no line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// More than `max` bytes came without a newline.
    #[error("a line is longer than {max} bytes")]
    TooLong {
        /// The reader's bound.
        max: usize,
    },
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Reads lines of at most `max` bytes from `read`.
    pub fn new(read: R, max: usize) -> Self {
        LineReader {
            reader: BufReader::new(read),
            line: Vec::new(),
            returned: false,
            max,
        }
    }

    /// The next line, without its `\n` (or `\r\n`); `None` at the end of the stream.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the bytes of a line read before a cancellation are kept, and the next call
    /// continues that line, so this can be a branch of `tokio::select!`.
    ///
    /// # Errors
    ///
    /// [`LineError::TooLong`] when more than the bound came without a newline (and again on
    /// every later call), [`LineError::Io`] when reading failed. After an error the stream is
    /// not at the start of a line: drop the reader.
    pub async fn next_line(&mut self) -> Result<Option<&[u8]>, LineError> {
        if std::mem::take(&mut self.returned) {
            self.line.clear();
        }
        // One byte past the bound: room for the `\n` of a line of exactly `max` bytes.
        let room = self.max.saturating_add(1).saturating_sub(self.line.len());
        let limit = u64::try_from(room).unwrap_or(u64::MAX);
        (&mut self.reader)
            .take(limit)
            .read_until(b'\n', &mut self.line)
            .await?;
        let mut end = self.line.len();
        if self.line.last() == Some(&b'\n') {
            end -= 1;
            if end > 0 && self.line[end - 1] == b'\r' {
                end -= 1;
            }
        } else if self.line.len() > self.max {
            return Err(LineError::TooLong { max: self.max });
        } else if self.line.is_empty() {
            // The stream ended between lines.
            return Ok(None);
        }
        // Otherwise the stream ended inside a line: that is the last one.
        self.returned = true;
        Ok(Some(&self.line[..end]))
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use tokio::io::AsyncWriteExt;

    use super::*;
    use crate::observe::event::Event;

    #[test]
    fn messages_have_the_documented_json() {
        let hello = ServerMessage::Hello {
            protocol: 1,
            server: "weir 0.1.0".into(),
            pid: 7,
            name_prefix: String::new(),
            token_required: false,
        };
        let json = serde_json::to_string(&hello).expect("json");
        assert_eq!(
            json,
            r#"{"type":"hello","protocol":1,"server":"weir 0.1.0","pid":7,"name_prefix":""}"#
        );
        let guarded = ServerMessage::Hello {
            protocol: 1,
            server: "weir".into(),
            pid: 0,
            name_prefix: String::new(),
            token_required: true,
        };
        let json = serde_json::to_string(&guarded).expect("json");
        assert_eq!(
            json,
            r#"{"type":"hello","protocol":1,"server":"weir","pid":0,"name_prefix":"","token_required":true}"#
        );
        let auth: Command =
            serde_json::from_str(r#"{"cmd":"auth","id":1,"token":"ab"}"#).expect("parse");
        assert_eq!(
            auth,
            Command::Auth {
                id: 1,
                token: "ab".into()
            }
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
    fn an_encoded_line_is_the_json_and_one_newline() {
        let reply = ServerMessage::Reply(Reply::refused(4, "a\nb".into()));
        let line = encode_line(&reply).expect("json");
        assert_eq!(
            line,
            b"{\"type\":\"reply\",\"id\":4,\"ok\":false,\"message\":\"a\\nb\"}\n"
        );
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
    }

    async fn all_lines(input: &[u8], max: usize) -> Vec<Result<String, String>> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        loop {
            match reader.next_line().await {
                Ok(Some(line)) => out.push(Ok(String::from_utf8_lossy(line).into_owned())),
                Ok(None) => return out,
                Err(err) => {
                    out.push(Err(err.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn lines_end_at_newlines_and_the_last_one_at_the_end_of_the_stream() {
        assert_eq!(
            all_lines(b"one\r\ntwo\n\nthree", 16).await,
            [Ok("one"), Ok("two"), Ok(""), Ok("three")].map(|l| l.map(str::to_owned))
        );
        assert!(all_lines(b"", 16).await.is_empty());
        assert_eq!(all_lines(b"one\n", 16).await, [Ok("one".to_owned())]);
    }

    #[tokio::test]
    async fn a_line_of_the_bound_passes_and_one_byte_more_is_an_error_naming_it() {
        assert_eq!(
            all_lines(b"12345\n123456\n", 5).await,
            [
                Ok("12345".to_owned()),
                Err("a line is longer than 5 bytes".to_owned())
            ]
        );
        // Without a newline at all: also cut at the bound, not read to the end.
        assert_eq!(
            all_lines(b"123456", 5).await,
            [Err("a line is longer than 5 bytes".to_owned())]
        );
        // At the end of the stream a short last line is fine.
        assert_eq!(all_lines(b"12345", 5).await, [Ok("12345".to_owned())]);
    }

    #[tokio::test]
    async fn too_long_holds_no_more_than_the_bound_and_stays_an_error() {
        let input = vec![b'x'; 10_000];
        let mut reader = LineReader::new(&input[..], 100);
        for _ in 0..2 {
            assert!(matches!(
                reader.next_line().await,
                Err(LineError::TooLong { max: 100 })
            ));
        }
        assert_eq!(
            reader.line.len(),
            101,
            "read one byte past the bound, no more"
        );
    }

    #[tokio::test]
    async fn a_cancelled_read_loses_no_bytes_of_the_line() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let mut reader = LineReader::new(rx, 64);
        tx.write_all(b"{\"cmd\":").await.expect("write");
        // Polled once: it reads what is there, then waits for the rest; dropping it cancels.
        assert!(reader.next_line().now_or_never().is_none());
        tx.write_all(b"\"snapshot\"}\nnext\n").await.expect("write");
        let line = reader.next_line().await.expect("read").map(<[u8]>::to_vec);
        assert_eq!(line.as_deref(), Some(&b"{\"cmd\":\"snapshot\"}"[..]));
        let line = reader.next_line().await.expect("read").map(<[u8]>::to_vec);
        assert_eq!(line.as_deref(), Some(&b"next"[..]));
        drop(tx);
        assert!(reader.next_line().await.expect("read").is_none());
    }
}
