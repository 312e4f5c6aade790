//! `weir watch` in a real terminal (tmux): the tree is on screen, a kill chosen with the keys
//! shows up as the actor's failure and restart, the viewer says when the engine goes away and
//! when it is back, and `q` exits cleanly (status 0, the screen given back).
//!
//! tmux offers no event to await for "the screen now shows X", so the test polls
//! `capture-pane` (every 50 ms, within a deadline) — the only waiting here that is not on an
//! event. `.ci/run` installs tmux when it is missing; the test never skips.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;
use weir_actors::pipeline::Receiver;
use weir_actors::testing::NumberedReceiver;

const WAIT: Duration = Duration::from_secs(60);

/// A tmux server of this test's own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("weir-cli-tmux-{}", std::process::id()),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux is installed (.ci/run installs it)");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "watch"])
    }

    fn keys(&self, keys: &str) {
        self.run(&["send-keys", "-t", "watch", keys]);
    }

    /// Polls the screen until `f` holds; returns that screen.
    async fn until(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = self.screen();
            if f(&screen) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{screen}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

fn selected_line(screen: &str) -> Option<&str> {
    screen.lines().find(|l| l.starts_with("│>"))
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
    let status_file = dir.path().join("watch-status");
    let command = format!(
        "'{}' watch --addr {addr} --token-file '{}'; echo \"weir exited with $?\" | tee '{}'; exec cat",
        env!("CARGO_BIN_EXE_weir"),
        token.display(),
        status_file.display()
    );
    let tmux = Tmux::new();
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &command,
    ]);

    let screen = tmux
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

    // Move the selection down to receiver-0.
    let mut moves = 0;
    loop {
        let screen = tmux.screen();
        if selected_line(&screen).is_some_and(|l| l.contains("receiver-0")) {
            break;
        }
        let before = selected_line(&screen).map(str::to_owned);
        assert!(moves < 40, "receiver-0 was never selected:\n{screen}");
        tmux.keys("Down");
        moves += 1;
        tmux.until("the selection to move", |s| {
            selected_line(s).map(str::to_owned) != before
        })
        .await;
    }

    tmux.keys("k");
    tmux.until("the kill confirmation", |s| s.contains("Kill receiver-0?"))
        .await;
    tmux.keys("y");
    let screen = tmux
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
    tmux.until("receiver-0 running again with one restart", |s| {
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
    tmux.until("the lost connection on screen", |s| {
        s.contains("connection lost:")
    })
    .await;
    let mut ctx = context(dir.path(), &addr);
    ctx.start().await.expect("start again");
    assert_eq!(
        ctx.control_addr().map(|a| a.to_string()),
        Some(addr.clone())
    );
    tmux.until("the reconnection on screen", |s| {
        s.contains("reconnected to weir") && s.contains("receiver-0")
    })
    .await;

    tmux.keys("q");
    let screen = tmux
        .until("weir watch to exit", |s| s.contains("weir exited with"))
        .await;
    assert!(screen.contains("weir exited with 0"), "{screen}");
    assert!(
        !screen.contains("supervision tree"),
        "the alternate screen is left:\n{screen}"
    );
    let status = std::fs::read_to_string(&status_file).expect("status file");
    assert_eq!(status.trim(), "weir exited with 0");
    ctx.stop(true).await.expect("stop");
}
