//! A client of the control endpoint: connect, check the hello (presenting the token first when
//! the endpoint requires it), read messages, send commands.
//!
//! Lines are framed as the server frames them ([`LineReader`], [`encode_line`] from
//! `weir_actors::control`); a server line longer than [`MAX_SERVER_LINE`] bytes is an error,
//! so a broken server cannot grow this process's memory without bound.

use std::path::Path;

use anyhow::{Context, bail};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use weir_actors::control::{
    Command, LineReader, MAX_SERVER_LINE, PROTOCOL_VERSION, Reply, ServerMessage, encode_line,
};

/// One connection to a control endpoint.
#[derive(Debug)]
pub(super) struct Client {
    lines: LineReader<OwnedReadHalf>,
    write: OwnedWriteHalf,
    /// The engine's process id, from the hello.
    pub pid: u32,
    /// The server's name and version, from the hello.
    pub server: String,
    next_id: u64,
}

impl Client {
    /// Connects to `addr` (`host:port`) and reads the hello; if the hello says the endpoint
    /// requires the token, presents `token` and reads the full hello that admits it.
    ///
    /// # Errors
    ///
    /// Nothing listens there, the endpoint refused the connection (it serves as many as it
    /// may, or the token is missing or wrong), the first line is not a hello, or its protocol
    /// version is not this client's.
    pub(super) async fn connect(addr: &str, token: Option<&str>) -> anyhow::Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("could not connect to the control endpoint at {addr}"))?;
        let (read, write) = stream.into_split();
        let mut client = Client {
            lines: LineReader::new(read, MAX_SERVER_LINE),
            write,
            pid: 0,
            server: String::new(),
            next_id: 1,
        };
        if client.hello(addr).await? {
            let Some(token) = token else {
                bail!(
                    "the control endpoint at {addr} requires the token before anything else; \
                     pass --token-file"
                );
            };
            client
                .send(|id| Command::Auth {
                    id,
                    token: token.to_owned(),
                })
                .await?;
            if client.hello(addr).await? {
                bail!("the control endpoint at {addr} asked for the token twice");
            }
        }
        Ok(client)
    }

    /// Reads a hello and keeps what it says; whether it requires the token.
    async fn hello(&mut self, addr: &str) -> anyhow::Result<bool> {
        match self.next().await? {
            Some(ServerMessage::Hello {
                protocol,
                server,
                pid,
                token_required,
                ..
            }) => {
                if protocol != PROTOCOL_VERSION {
                    bail!(
                        "the control endpoint at {addr} speaks protocol version {protocol}, but this weir speaks version {PROTOCOL_VERSION}"
                    );
                }
                self.pid = pid;
                self.server = server;
                Ok(token_required)
            }
            Some(ServerMessage::Reply(reply)) if !reply.ok => bail!(
                "the control endpoint at {addr} refused the connection: {}",
                reply.message
            ),
            Some(_) => bail!("the control endpoint at {addr} did not start with a hello line"),
            None => bail!("the control endpoint at {addr} closed the connection at once"),
        }
    }

    /// The next message; `None` when the server closed the connection. Lines this client
    /// does not understand (from a newer server) are skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call loses no part of a line.
    ///
    /// # Errors
    ///
    /// Reading failed, a line is not UTF-8, or a line is longer than [`MAX_SERVER_LINE`].
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
            let line =
                std::str::from_utf8(line).context("reading from the control endpoint failed")?;
            match serde_json::from_str::<ServerMessage>(line) {
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
        let line = encode_line(&make(id))?;
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

/// One command that changes something: connects to `addr` with the token of `token_file`,
/// sends the command `make` builds from the request id and the token, and prints the engine's
/// answer — or fails with it when the engine refused.
///
/// # Errors
///
/// The token file is unreadable, the endpoint unreachable, or the engine refused or failed.
pub(super) async fn command(
    addr: &str,
    token_file: Option<&Path>,
    make: impl FnOnce(u64, Option<String>) -> Command,
) -> anyhow::Result<()> {
    let token = token_file.map(read_token).transpose()?;
    let mut client = Client::connect(addr, token.as_deref()).await?;
    let id = client.send(|id| make(id, token)).await?;
    let reply = client.reply(id).await?;
    if !reply.ok {
        anyhow::bail!("{}", reply.message);
    }
    println!("{}", reply.message);
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// A server that sends `lines` (each as given, no newline added) and then closes.
    async fn server(lines: Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            for line in lines {
                if stream.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
        addr
    }

    const HELLO: &[u8] =
        b"{\"type\":\"hello\",\"protocol\":1,\"server\":\"weir test\",\"pid\":7,\"name_prefix\":\"\"}\n";

    #[tokio::test]
    async fn lines_not_understood_are_skipped_and_the_end_is_none() {
        let addr = server(vec![
            HELLO.to_vec(),
            b"{\"type\":\"from_a_newer_server\"}\n".to_vec(),
            b"{\"type\":\"reply\",\"id\":1,\"ok\":true,\"message\":\"done\"}\r\n".to_vec(),
        ])
        .await;
        let mut client = Client::connect(&addr, None).await.expect("connect");
        assert_eq!((client.pid, client.server.as_str()), (7, "weir test"));
        let reply = client.reply(1).await.expect("the reply");
        assert_eq!(
            (reply.id, reply.ok, reply.message.as_str()),
            (1, true, "done")
        );
        assert!(client.next().await.expect("read").is_none());
    }

    #[tokio::test]
    async fn a_server_line_over_the_bound_is_an_error_naming_it() {
        let mut long = vec![b'x'; MAX_SERVER_LINE + 1];
        long.push(b'\n');
        let addr = server(vec![HELLO.to_vec(), long]).await;
        let mut client = Client::connect(&addr, None).await.expect("connect");
        let err = client.next().await.expect_err("too long");
        assert_eq!(
            format!("{err:#}"),
            format!(
                "reading from the control endpoint failed: a line is longer than \
                 {MAX_SERVER_LINE} bytes"
            )
        );
    }

    const GUARDED_HELLO: &[u8] = b"{\"type\":\"hello\",\"protocol\":1,\"server\":\"weir\",\"pid\":0,\"name_prefix\":\"\",\"token_required\":true}\n";

    #[tokio::test]
    async fn an_endpoint_that_requires_the_token_gets_it_as_the_first_line() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            write.write_all(GUARDED_HELLO).await.expect("write");
            let mut lines = LineReader::new(read, 1024);
            let first = lines.next_line().await.expect("read").expect("a line");
            let first = String::from_utf8(first.to_vec()).expect("utf-8");
            write.write_all(HELLO).await.expect("write");
            first
        });
        let client = Client::connect(&addr, Some("the-token"))
            .await
            .expect("connect");
        assert_eq!(
            server.await.expect("join"),
            r#"{"cmd":"auth","id":1,"token":"the-token"}"#
        );
        assert_eq!(
            (client.pid, client.server.as_str()),
            (7, "weir test"),
            "what the full hello says"
        );
    }

    #[tokio::test]
    async fn without_a_token_for_an_endpoint_that_requires_one_the_error_says_what_to_pass() {
        let addr = server(vec![GUARDED_HELLO.to_vec()]).await;
        let err = Client::connect(&addr, None).await.expect_err("no token");
        assert_eq!(
            format!("{err:#}"),
            format!(
                "the control endpoint at {addr} requires the token before anything else; pass \
                 --token-file"
            )
        );
    }

    #[tokio::test]
    async fn a_refusal_instead_of_the_hello_is_an_error_with_the_servers_reason() {
        let addr = server(vec![
            b"{\"type\":\"reply\",\"id\":0,\"ok\":false,\"message\":\"full\"}\n".to_vec(),
        ])
        .await;
        let err = Client::connect(&addr, None).await.expect_err("refused");
        assert_eq!(
            format!("{err:#}"),
            format!("the control endpoint at {addr} refused the connection: full")
        );
    }

    #[tokio::test]
    async fn a_line_that_is_not_utf8_is_an_error() {
        let addr = server(vec![HELLO.to_vec(), b"{\"type\":\xff}\n".to_vec()]).await;
        let mut client = Client::connect(&addr, None).await.expect("connect");
        let err = client.next().await.expect_err("not UTF-8");
        assert_eq!(
            format!("{err:#}"),
            "reading from the control endpoint failed: invalid utf-8 sequence of 1 bytes from index 8"
        );
    }
}
