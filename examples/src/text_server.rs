//! A built-in TCP text server for the socket examples: it listens on `127.0.0.1` and sends
//! every client generated lines (see [`TextGenerator`]) at a steady pace, like `nc -lk`
//! with someone typing fast.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::generator::TextGenerator;

/// A running text server; dropping it stops it and every client connection.
#[derive(Debug)]
pub struct TextServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TextServer {
    /// Listens on `127.0.0.1` (an ephemeral port) and sends each client `lines` generated
    /// lines every `every`, seeded by `seed` (each client gets its own sequence).
    ///
    /// # Errors
    ///
    /// The listener could not be bound.
    pub async fn start(lines: usize, every: Duration, seed: u64) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            // Dropped with this task when the server stops: the clients' tasks end with it.
            let mut clients = JoinSet::new();
            let mut client = 0u64;
            while let Ok((mut socket, _)) = listener.accept().await {
                client += 1;
                let mut generator = TextGenerator::new(seed.wrapping_add(client));
                clients.spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tick.tick().await;
                        let text = generator.text(lines);
                        if socket.write_all(text.as_bytes()).await.is_err() {
                            return; // the client went away
                        }
                    }
                });
            }
        });
        Ok(TextServer { addr, task })
    }

    /// Where it listens (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TextServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
