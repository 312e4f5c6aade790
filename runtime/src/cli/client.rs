//! A client of the control endpoint: connect, check the hello, read messages, send commands.

use std::path::Path;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use weir_actors::control::{Command, PROTOCOL_VERSION, Reply, ServerMessage};

/// One connection to a control endpoint.
#[derive(Debug)]
pub(super) struct Client {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// The engine's process id, from the hello.
    pub pid: u32,
    /// The server's name and version, from the hello.
    pub server: String,
    next_id: u64,
}

impl Client {
    /// Connects to `addr` (`host:port`) and reads the hello.
    ///
    /// # Errors
    ///
    /// Nothing listens there, the first line is not a hello, or its protocol version is not
    /// this client's.
    pub(super) async fn connect(addr: &str) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("could not connect to the control endpoint at {addr}"))?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            lines: BufReader::new(read).lines(),
            write,
            pid: 0,
            server: String::new(),
            next_id: 1,
        };
        match client.next().await? {
            Some(ServerMessage::Hello {
                protocol,
                server,
                pid,
                ..
            }) => {
                if protocol != PROTOCOL_VERSION {
                    bail!(
                        "the control endpoint at {addr} speaks protocol version {protocol}, but this weir speaks version {PROTOCOL_VERSION}"
                    );
                }
                client.pid = pid;
                client.server = server;
                Ok(client)
            }
            Some(_) => bail!("the control endpoint at {addr} did not start with a hello line"),
            None => bail!("the control endpoint at {addr} closed the connection at once"),
        }
    }

    /// The next message; `None` when the server closed the connection. Lines this client
    /// does not understand (from a newer server) are skipped.
    ///
    /// # Errors
    ///
    /// Reading failed.
    pub(super) async fn next(&mut self) -> anyhow::Result<Option<ServerMessage>> {
        loop {
            let Some(line) = self
                .lines
                .next_line()
                .await
                .context("reading from the control endpoint failed")?
            else {
                return Ok(None);
            };
            match serde_json::from_str::<ServerMessage>(&line) {
                Ok(message) => return Ok(Some(message)),
                Err(err) => tracing::debug!(%err, line, "skipping a line not understood"),
            }
        }
    }

    /// Sends `make(id)` and returns its id.
    ///
    /// # Errors
    ///
    /// Writing failed.
    pub(super) async fn send(&mut self, make: impl FnOnce(u64) -> Command) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line = serde_json::to_vec(&make(id))?;
        line.push(b'\n');
        self.write
            .write_all(&line)
            .await
            .context("sending a command to the control endpoint failed")?;
        Ok(id)
    }

    /// Waits for the reply to command `id`, skipping other messages.
    ///
    /// # Errors
    ///
    /// The connection closed first, or reading failed.
    pub(super) async fn reply(&mut self, id: u64) -> anyhow::Result<Reply> {
        while let Some(message) = self.next().await? {
            if let ServerMessage::Reply(reply) = message
                && (reply.id == id || reply.id == 0)
            {
                return Ok(reply);
            }
        }
        bail!("the control endpoint closed the connection before it answered")
    }
}

/// Reads a token file.
///
/// # Errors
///
/// It cannot be read.
pub(super) fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("could not read the token file `{}`", path.display()))?;
    Ok(token.trim().to_owned())
}
