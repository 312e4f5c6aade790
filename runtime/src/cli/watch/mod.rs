//! `weir watch`: the full-screen view of a running engine.
//!
//! Model / view / input: [`state::State`] is all that is shown, built from the endpoint's
//! messages; [`view::render`] draws it; [`input::on_key`] changes it. The loop here connects
//! (and reconnects, saying so on screen), feeds messages and keys in, and draws. The terminal
//! is restored by [`term::TerminalGuard`] on every exit path, panics included.

pub(super) mod input;
pub(super) mod state;
pub(super) mod term;
#[cfg(test)]
mod tests;
pub(super) mod view;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use std::time::Duration;

use crossterm::event::{self, Event as TermEvent};
use tokio::sync::mpsc;
use weir_actors::control::{Command, ServerMessage};

use super::args::WatchArgs;
use super::client::{Client, read_token};
use input::Action;
use state::State;

/// From the connection task to the screen.
#[derive(Debug)]
enum Net {
    Connected { server: String, pid: u32 },
    Message(ServerMessage),
    Lost(String),
}

/// From the screen to the connection task.
#[derive(Debug)]
enum Outgoing {
    Kill(String),
    Snapshot,
}

/// Runs the viewer until `q`.
///
/// # Errors
///
/// The token file cannot be read, or the terminal cannot be put in full-screen mode.
pub(super) fn run(args: WatchArgs) -> anyhow::Result<()> {
    // Read once now so that a wrong path is an error at once; read again at every connection,
    // since a restarted engine writes a new token.
    let has_token = args
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()?
        .is_some();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "watch needs a terminal, and standard output is not one; `weir events --addr {}` follows the stream in a pipe",
            args.addr
        );
    }
    let mut guard = term::TerminalGuard::enter()
        .context("watch could not put the terminal in full-screen mode")?;
    let state = State::new(args.addr.clone(), has_token);
    runtime.block_on(ui(&mut guard, state, args.addr, args.token_file))
}

async fn ui(
    guard: &mut term::TerminalGuard,
    mut state: State,
    addr: String,
    token_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (key_tx, mut keys) = mpsc::channel::<TermEvent>(64);
    // Keys are read on a thread of their own (crossterm's reading blocks); it ends when the
    // screen loop is gone.
    std::thread::spawn(move || {
        loop {
            match event::poll(Duration::from_millis(100)) {
                Ok(true) => match event::read() {
                    Ok(ev) => {
                        if key_tx.blocking_send(ev).is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                },
                Ok(false) if key_tx.is_closed() => return,
                Ok(false) => {}
                Err(_) => return,
            }
        }
    });
    let (net_tx, mut net) = mpsc::channel::<Net>(1024);
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(16);
    let connection = tokio::spawn(connect_loop(addr, token_file, net_tx, out_rx));
    let mut first_snapshot = false;
    let mut dirty = true;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let result = loop {
        tokio::select! {
            key = keys.recv() => {
                let Some(ev) = key else { break Ok(()) };
                if let TermEvent::Key(key) = ev {
                    match input::on_key(&mut state, key) {
                        Action::Quit => break Ok(()),
                        Action::Kill(actor) => {
                            let _ = out_tx.try_send(Outgoing::Kill(actor));
                        }
                        Action::Redraw => {}
                    }
                }
                dirty = true;
            }
            message = net.recv() => {
                let Some(message) = message else { break Ok(()) };
                match message {
                    Net::Connected { server, pid } => {
                        state.connected(server, pid);
                        first_snapshot = true;
                    }
                    Net::Lost(reason) => state.lost(reason),
                    Net::Message(ServerMessage::Snapshot(snapshot)) => {
                        state.apply_snapshot(&snapshot, first_snapshot);
                        first_snapshot = false;
                    }
                    Net::Message(ServerMessage::Event(record)) => {
                        if state.apply_event(&record) {
                            let _ = out_tx.try_send(Outgoing::Snapshot);
                        }
                    }
                    Net::Message(ServerMessage::Reply(reply)) => {
                        if reply.message != "snapshot sent" {
                            state.status = Some((reply.message, !reply.ok));
                        }
                    }
                    Net::Message(_) => {}
                }
                dirty = true;
            }
            _ = tick.tick() => {
                if dirty {
                    if let Err(err) = guard.terminal.draw(|f| view::render(f, &state)) {
                        break Err(err.into());
                    }
                    dirty = false;
                }
            }
        }
    };
    connection.abort();
    result
}

/// Connects, forwards messages, sends commands; on a lost connection says so and tries again
/// (every 250 ms at first, backing off to 2 s) until the screen loop is gone.
async fn connect_loop(
    addr: String,
    token_file: Option<PathBuf>,
    net: mpsc::Sender<Net>,
    mut outgoing: mpsc::Receiver<Outgoing>,
) {
    let mut backoff = Duration::from_millis(250);
    loop {
        // Read at every connection: a restarted engine writes a new token.
        let token = token_file.as_deref().and_then(|f| read_token(f).ok());
        let reason = match Client::connect(&addr, token.as_deref()).await {
            Ok(mut client) => {
                backoff = Duration::from_millis(250);
                let connected = Net::Connected {
                    server: client.server.clone(),
                    pid: client.pid,
                };
                if net.send(connected).await.is_err() {
                    return;
                }
                loop {
                    tokio::select! {
                        message = client.next() => match message {
                            Ok(Some(message)) => {
                                if net.send(Net::Message(message)).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break "the engine closed the connection".to_owned(),
                            Err(err) => break crate::cli::sentence(&err),
                        },
                        command = outgoing.recv() => {
                            let Some(command) = command else { return };
                            let token = token.clone();
                            let sent = match command {
                                Outgoing::Kill(actor) => {
                                    client.send(|id| Command::Kill { id, actor, token }).await
                                }
                                Outgoing::Snapshot => client.send(|id| Command::Snapshot { id }).await,
                            };
                            if let Err(err) = sent {
                                break crate::cli::sentence(&err);
                            }
                        }
                    }
                }
            }
            Err(err) => crate::cli::sentence(&err),
        };
        if net.send(Net::Lost(reason)).await.is_err() {
            return;
        }
        // A retry interval, not a synchronisation: the engine may be down for any time.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
