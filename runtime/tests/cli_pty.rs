//! `weir watch` in a real terminal: the tree is on screen, a kill chosen with the keys shows up
//! as the actor's failure and restart, the viewer says when the engine goes away and when it is
//! back, and `q` exits cleanly (status 0, the screen, the cursor and the terminal's modes given
//! back).
//!
//! The real `weir` binary runs in a pseudo-terminal of the test's own (portable-pty), and what it
//! draws is parsed into a screen (vt100), so the test needs nothing installed. Waiting is on
//! events: a thread reads the terminal, feeds the parser and publishes each new screen on a
//! watch channel; the test awaits the screen it expects (within a deadline), and the exit status
//! from a thread blocked in `wait`. A viewer still running when the test ends is killed.
//! Unix only: the terminal's modes are read from its device (`/dev/pts/N`).

#![cfg(unix)]

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::termios::tcgetattr;
use portable_pty::{
    ChildKiller, CommandBuilder, ExitStatus, MasterPty, PtySize, native_pty_system,
};
use tokio::sync::{oneshot, watch};
use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;
use weir_actors::pipeline::Receiver;
use weir_actors::testing::NumberedReceiver;

const WAIT: Duration = Duration::from_secs(60);
const ROWS: u16 = 40;
const COLS: u16 = 120;
/// The key a terminal sends for the down arrow.
const DOWN: &str = "\x1b[B";

/// `weir watch` running in a pseudo-terminal; dropping it kills the viewer if it still runs.
struct Viewer {
    /// The screen as text, republished after every read from the terminal; closed once the
    /// viewer has exited and everything it wrote has been read.
    screen: watch::Receiver<String>,
    parser: Arc<Mutex<vt100::Parser>>,
    /// The terminal device the viewer runs on (`/dev/pts/N`).
    tty: PathBuf,
    /// Keeps the terminal open until the test ends.
    _master: Box<dyn MasterPty + Send>,
    keys: Box<dyn Write + Send>,
    killer: Box<dyn ChildKiller + Send + Sync>,
    exit: Option<oneshot::Receiver<std::io::Result<ExitStatus>>>,
}

impl Viewer {
    /// Starts `weir watch` against `addr` in a fresh `COLS`×`ROWS` terminal; returns it and
    /// the terminal's modes from before the viewer started.
    fn start(dir: &Path, addr: &str, token: &Path) -> (Viewer, String) {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: ROWS,
                cols: COLS,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("open a pseudo-terminal");
        let tty = pty.master.tty_name().expect("the terminal's device");
        let modes_before = modes(&tty);
        let mut command = CommandBuilder::new(env!("CARGO_BIN_EXE_weir"));
        command.args(["watch", "--addr", addr, "--token-file"]);
        command.arg(token);
        command.cwd(dir);
        command.env("TERM", "xterm-256color");
        let mut child = pty.slave.spawn_command(command).expect("spawn weir watch");
        // Only the viewer keeps the terminal's other end open, so reading ends when it exits.
        drop(pty.slave);
        let killer = child.clone_killer();
        let (exit_tx, exit) = oneshot::channel();
        std::thread::spawn(move || {
            let _ = exit_tx.send(child.wait());
        });

        let parser = Arc::new(Mutex::new(vt100::Parser::new(ROWS, COLS, 0)));
        let (screen_tx, screen) = watch::channel(String::new());
        let mut output = pty.master.try_clone_reader().expect("terminal reader");
        let feed = Arc::clone(&parser);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match output.read(&mut buf) {
                    // End of file, or EIO once the viewer has exited and closed the terminal.
                    Ok(0) => return,
                    Ok(n) => {
                        let contents = {
                            let mut parser = feed.lock().expect("parser lock");
                            parser.process(&buf[..n]);
                            parser.screen().contents()
                        };
                        screen_tx.send_replace(contents);
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => return,
                }
            }
        });
        let keys = pty.master.take_writer().expect("terminal writer");
        let viewer = Viewer {
            screen,
            parser,
            tty,
            _master: pty.master,
            keys,
            killer,
            exit: Some(exit),
        };
        (viewer, modes_before)
    }

    fn screen(&self) -> String {
        self.screen.borrow().clone()
    }

    /// Types `keys` into the terminal.
    fn keys(&mut self, keys: &str) {
        self.keys
            .write_all(keys.as_bytes())
            .and_then(|()| self.keys.flush())
            .expect("write to the terminal");
    }

    /// Waits for a screen on which `f` holds; returns that screen.
    async fn until(&mut self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let waited = tokio::time::timeout(WAIT, self.screen.wait_for(|s| f(s)))
            .await
            .map(|screen| screen.map(|screen| screen.clone()));
        match waited {
            Ok(Ok(screen)) => screen,
            Ok(Err(_)) => panic!(
                "the viewer closed its terminal while the test waited for {what}; the screen:\n{}",
                self.screen()
            ),
            Err(_) => panic!(
                "timed out waiting for {what}; the screen:\n{}",
                self.screen()
            ),
        }
    }

    /// Waits for the viewer to exit and for everything it wrote to be read; returns its status.
    async fn exited(&mut self) -> ExitStatus {
        let exit = self.exit.take().expect("exited is awaited once");
        let status = tokio::time::timeout(WAIT, exit)
            .await
            .unwrap_or_else(|_| panic!("weir watch did not exit; the screen:\n{}", self.screen()))
            .expect("the waiting thread reports")
            .expect("wait for weir watch");
        tokio::time::timeout(WAIT, async { while self.screen.changed().await.is_ok() {} })
            .await
            .expect("the terminal is closed after the viewer exits");
        status
    }

    /// The terminal's modes as the viewer sees them.
    fn modes(&self) -> String {
        modes(&self.tty)
    }
}

/// The input, output, control and local modes (echo, canonical input, …) of the terminal
/// device `tty`, printed. Opened without becoming the test's controlling terminal.
fn modes(tty: &Path) -> String {
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOCTTY.bits())
        .open(tty)
        .expect("open the terminal device");
    let termios = tcgetattr(&tty).expect("the terminal's modes");
    format!(
        "{:?} {:?} {:?} {:?}",
        termios.input_flags, termios.output_flags, termios.control_flags, termios.local_flags
    )
}

impl Drop for Viewer {
    fn drop(&mut self) {
        if self.exit.is_some() {
            let _ = self.killer.kill();
        }
    }
}

/// The name of the actor with the tree's selection marker, when exactly one line has it (a
/// frame being drawn can show none, or the old and the new one, for a moment).
fn selected_actor(screen: &str) -> Option<&str> {
    let mut marked = screen
        .lines()
        .filter_map(|l| l.strip_prefix("│>"))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""));
    match (marked.next(), marked.next()) {
        (Some(actor), None) => Some(actor),
        _ => None,
    }
}

fn context(dir: &Path, addr: &str) -> StreamingContext {
    let mut config = StreamingConfig::local(dir)
        .batch_interval(Duration::from_millis(200))
        .control_addr(addr.parse().expect("addr"));
    config.engine.block_interval = Duration::from_millis(50);
    config.engine.receiver_restart_delay = Duration::from_millis(50);
    config.engine.executors = 1;
    config.parallelism = 1;
    let ctx = StreamingContext::new(config);
    let numbers = NumberedReceiver::new(10, Duration::from_millis(10));
    ctx.receiver_stream(move || Box::new(numbers.clone()) as Box<dyn Receiver>)
        .count()
        .foreach_batch(|_| Ok(()));
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_shows_the_tree_a_kill_and_quits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctx = context(dir.path(), "127.0.0.1:0");
    ctx.start().await.expect("start");
    let mut events = ctx.events().expect("events");
    let addr = ctx.control_addr().expect("bound").to_string();
    let token = dir.path().join("control-token");
    let (mut viewer, modes_before) = Viewer::start(dir.path(), &addr, &token);

    let screen = viewer
        .until("the tree on screen", |s| {
            s.contains("connected to weir")
                && s.contains("receiver-0")
                && s.contains("job-generator")
        })
        .await;
    for actor in [
        "root",
        "driver",
        "receiver-supervisor-0",
        "executor-0",
        "event-bus",
    ] {
        assert!(
            screen.contains(actor),
            "{actor} is not on screen:\n{screen}"
        );
    }
    assert_ne!(
        viewer.modes(),
        modes_before,
        "the viewer runs with the terminal in raw mode"
    );

    // Move the selection down to receiver-0.
    let mut moves = 0;
    loop {
        let screen = viewer
            .until("one selected actor", |s| selected_actor(s).is_some())
            .await;
        let selected = selected_actor(&screen).expect("waited for it").to_owned();
        if selected == "receiver-0" {
            break;
        }
        assert!(moves < 40, "receiver-0 was never selected:\n{screen}");
        viewer.keys(DOWN);
        moves += 1;
        viewer
            .until("the selection to move", |s| {
                selected_actor(s).is_some_and(|actor| actor != selected)
            })
            .await;
    }

    viewer.keys("k");
    viewer
        .until("the kill confirmation", |s| s.contains("Kill receiver-0?"))
        .await;
    viewer.keys("y");
    let screen = viewer
        .until("the kill on screen", |s| {
            s.contains("killed receiver-0") && s.contains("receiver-0 failed: killed")
        })
        .await;
    assert!(screen.contains("receiver-0 restarts in"), "{screen}");
    // The engine really lost and restarted it.
    tokio::time::timeout(WAIT, async {
        loop {
            let r = events.next().await.expect("open");
            if matches!(&r.event, Event::ActorStarted { actor } if actor == "receiver-0") {
                return;
            }
        }
    })
    .await
    .expect("receiver-0 is restarted");
    viewer
        .until("receiver-0 running again with one restart", |s| {
            s.lines().any(|l| {
                l.contains("receiver-0")
                    && l.contains("running")
                    && l.contains(" 1 ")
                    && l.contains("killed")
            })
        })
        .await;

    // The engine goes away and comes back on the same address: the viewer says both.
    ctx.stop(true).await.expect("stop");
    viewer
        .until("the lost connection on screen", |s| {
            s.contains("connection lost:")
        })
        .await;
    let mut ctx = context(dir.path(), &addr);
    ctx.start().await.expect("start again");
    assert_eq!(
        ctx.control_addr().map(|a| a.to_string()),
        Some(addr.clone())
    );
    viewer
        .until("the reconnection on screen", |s| {
            s.contains("reconnected to weir") && s.contains("receiver-0")
        })
        .await;

    viewer.keys("q");
    let status = viewer.exited().await;
    assert!(status.success(), "weir watch exited with {status}");
    assert_eq!(status.exit_code(), 0);
    let (screen, alternate, cursor_hidden) = {
        let parser = viewer.parser.lock().expect("parser lock");
        let screen = parser.screen();
        (
            screen.contents(),
            screen.alternate_screen(),
            screen.hide_cursor(),
        )
    };
    assert!(!alternate, "the alternate screen is left:\n{screen}");
    assert!(
        !screen.contains("supervision tree"),
        "the viewer's screen is left:\n{screen}"
    );
    assert!(!cursor_hidden, "the cursor is left hidden");
    assert_eq!(
        viewer.modes(),
        modes_before,
        "the terminal's modes are given back"
    );
    ctx.stop(true).await.expect("stop");
}
