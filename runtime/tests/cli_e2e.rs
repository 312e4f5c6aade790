//! The `weir` binary against a running engine: `events --addr --json` follows the stream,
//! `kill` is refused without the token (and with a wrong one) and carried out with it, the
//! kill's failure and restart appear in the stream; `panic` makes an actor fail in its handler;
//! after the stop, `checkpoints list/show`, `wal inspect` (read-only, also of a torn tail) and
//! `events --dir` read what the process left. Off loopback, `events` and `kill` present the
//! token file first, and without it nothing flows.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;
use weir_actors::EventRecord;
use weir_actors::EventSubscription;
use weir_actors::pipeline::Receiver;
use weir_actors::testing::NumberedReceiver;

const WAIT: Duration = Duration::from_secs(60);

/// Runs `weir args...` to completion (on the blocking pool: the engine keeps its workers).
async fn weir(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(&args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run weir")
    })
    .await
    .expect("join")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A running `weir events --addr A --json`, its stdout lines arriving on a channel.
struct Follower {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Follower {
    fn start(addr: SocketAddr) -> Follower {
        Follower::start_with(addr, &[])
    }

    /// `weir events --addr A --json`, then `more` arguments.
    fn start_with(addr: SocketAddr, more: &[&str]) -> Follower {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["events", "--addr", &addr.to_string(), "--json"])
            .args(more)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn weir events");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next event the follower printed (each line must be an event record).
    async fn next(&mut self) -> EventRecord {
        let line = tokio::time::timeout(WAIT, self.lines.recv())
            .await
            .expect("weir events printed nothing in time")
            .expect("weir events ended early");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("`{line}` is not an event record: {e}"))
    }

    /// Reads events until `f` matches one; returns the ones read, the match last.
    async fn until(&mut self, what: &str, f: impl Fn(&Event) -> bool) -> Vec<EventRecord> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            let record = self.next().await;
            let hit = f(&record.event);
            seen.push(record);
            if hit {
                return seen;
            }
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn first_batch(events: &mut EventSubscription) {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = events.next().await.expect("the event feed is open");
            if matches!(r.event, Event::BatchCompleted { records, .. } if records > 0) {
                return;
            }
        }
    })
    .await
    .expect("a batch with records completes");
}

fn context(dir: &Path, prefix: &str) -> StreamingContext {
    context_on(dir, prefix, "127.0.0.1:0")
}

/// An engine whose control endpoint listens on `addr` (allowed off loopback too).
fn context_on(dir: &Path, prefix: &str, addr: &str) -> StreamingContext {
    let addr: SocketAddr = addr.parse().expect("addr");
    let mut config = StreamingConfig::local(dir)
        .batch_interval(Duration::from_millis(100))
        .control_addr(addr);
    config.engine.control_allow_remote = !addr.ip().is_loopback();
    config.engine.name_prefix = prefix.to_owned();
    config.engine.block_interval = Duration::from_millis(20);
    config.engine.receiver_restart_delay = Duration::from_millis(50);
    config.engine.executors = 2;
    config.parallelism = 2;
    let ctx = StreamingContext::new(config);
    let numbers = NumberedReceiver::new(10, Duration::from_millis(5));
    ctx.receiver_stream(move || Box::new(numbers.clone()) as Box<dyn Receiver>)
        .count()
        .foreach_batch(|_| Ok(()));
    ctx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_kill_and_the_offline_commands_against_a_real_engine() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path").to_owned();
    let mut ctx = context(dir.path(), "");
    let mut events = {
        ctx.start().await.expect("start");
        ctx.events().expect("events")
    };
    let addr = ctx.control_addr().expect("the endpoint is bound");
    assert!(addr.ip().is_loopback());
    first_batch(&mut events).await;

    // The token: created at start, private.
    let token_file = dir.path().join("control-token");
    let token = std::fs::read_to_string(&token_file).expect("the token file exists");
    assert_eq!(token.trim().len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }

    let mut follower = Follower::start(addr);
    // The follower is subscribed once it prints its first event.
    follower.next().await;

    let addr_s = addr.to_string();
    let refused = weir(&["kill", "receiver-0", "--addr", &addr_s]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("refused to kill receiver-0: the command carries no token"),
        "{}",
        text(&refused.stderr)
    );
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, "0".repeat(64)).expect("write");
    let refused = weir(&[
        "kill",
        "receiver-0",
        "--addr",
        &addr_s,
        "--token-file",
        wrong.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        text(&refused.stderr).contains("the token does not match"),
        "{}",
        text(&refused.stderr)
    );
    let unknown = weir(&[
        "kill",
        "no-such-actor",
        "--addr",
        &addr_s,
        "--token-file",
        token_file.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("no running actor has that name"));

    let killed = weir(&[
        "kill",
        "receiver-0",
        "--addr",
        &addr_s,
        "--token-file",
        token_file.to_str().expect("utf-8"),
    ])
    .await;
    assert_eq!(killed.status.code(), Some(0), "{killed:?}");
    assert_eq!(text(&killed.stdout).trim(), "killed receiver-0");

    // The stream shows the failure, then the restart, then the new receiver.
    let before_failure = follower
        .until("receiver-0's failure", |e| {
            matches!(e, Event::ActorFailed { actor, reason } if actor == "receiver-0" && reason == "killed")
        })
        .await;
    assert!(
        !before_failure[..before_failure.len() - 1]
            .iter()
            .any(|r| matches!(&r.event, Event::ActorFailed { actor, .. } if actor == "receiver-0")),
        "the refused kills killed nothing"
    );
    follower
        .until(
            "receiver-0's restart",
            |e| matches!(e, Event::ActorRestarted { actor, .. } if actor == "receiver-0"),
        )
        .await;
    follower
        .until(
            "receiver-0 started again",
            |e| matches!(e, Event::ActorStarted { actor } if actor == "receiver-0"),
        )
        .await;
    follower
        .until(
            "a batch with records after the restart",
            |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
        )
        .await;

    // Usage errors exit with 2.
    assert_eq!(weir(&["kill"]).await.status.code(), Some(2));
    assert_eq!(weir(&["events"]).await.status.code(), Some(2));
    let help = weir(&["--help"]).await;
    assert_eq!(help.status.code(), Some(0));
    assert!(
        text(&help.stdout).contains("weir kill receiver-0 --addr"),
        "--help shows examples"
    );

    ctx.stop(true).await.expect("stop");
    // The follower sees the endpoint go away and ends by itself, successfully.
    let status = tokio::time::timeout(
        WAIT,
        tokio::task::spawn_blocking(move || follower.child.wait().expect("wait")),
    )
    .await
    .expect("weir events ends by itself")
    .expect("join");
    assert!(status.success(), "{status:?}");

    // What the process left, read by the offline commands.
    let list = weir(&["checkpoints", "list", &data]).await;
    assert_eq!(list.status.code(), Some(0), "{list:?}");
    let out = text(&list.stdout);
    assert!(out.contains("valid") && out.contains('*'), "{out}");
    let show = weir(&["checkpoints", "show", &data]).await;
    assert_eq!(show.status.code(), Some(0), "{show:?}");
    let out = text(&show.stdout);
    assert!(out.starts_with("checkpoint "), "{out}");
    assert!(out.contains("batch interval   100 ms"), "{out}");
    assert!(out.contains("pending batches"), "{out}");
    // The effective configuration, as `key = value` lines named as the configuration file's.
    assert!(
        out.contains("(the configuration it was written with)"),
        "{out}"
    );
    for line in [
        "    batch_interval_ms = 100",
        "    block_interval_ms = 20",
        "    executors = 2",
        "    parallelism = 2",
        "    receiver_restart_delay_ms = 50",
    ] {
        assert!(out.lines().any(|l| l == line), "no `{line}` in:\n{out}");
    }
    let missing = weir(&["checkpoints", "show", &data, "999999"]).await;
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("there is no checkpoint 999999"));

    let inspect = weir(&["wal", "inspect", &data]).await;
    assert_eq!(inspect.status.code(), Some(0), "{inspect:?}");
    let out = text(&inspect.stdout);
    assert!(
        out.contains("receiver-wal") && out.contains("tracker-wal"),
        "{out}"
    );
    assert!(out.contains("recovery: nothing to do"), "{out}");

    let offline = weir(&["events", "--dir", &data, "--json"]).await;
    assert_eq!(offline.status.code(), Some(0), "{offline:?}");
    let records: Vec<EventRecord> = text(&offline.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("an event record"))
        .collect();
    assert!(records.iter().any(|r| matches!(
        &r.event,
        Event::ActorFailed { actor, reason } if actor == "receiver-0" && reason == "killed"
    )));

    // A torn tail is reported with what recovery would do, and left on disk.
    let wal_dir = dir.path().join("receiver-wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal_dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    let newest = segments.last().expect("a segment").clone();
    let mut bytes = std::fs::read(&newest).expect("read");
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&[0x5a; 9]);
    std::fs::write(&newest, &bytes).expect("tear");
    let inspect = weir(&["wal", "inspect", wal_dir.to_str().expect("utf-8")]).await;
    assert_eq!(inspect.status.code(), Some(0), "{inspect:?}");
    let out = text(&inspect.stdout);
    assert!(
        out.contains(&format!("at offset {len}, discarding 9 bytes")),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&newest).expect("stat").len(),
        len + 9,
        "read-only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_makes_an_actor_fail_inside_its_handler_and_it_is_restarted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctx = context(dir.path(), "panic-e2e/");
    ctx.start().await.expect("start");
    let mut events = ctx.events().expect("events");
    first_batch(&mut events).await;
    let addr = ctx.control_addr().expect("bound").to_string();
    let token_file = dir.path().join("control-token");
    let token_file = token_file.to_str().expect("utf-8");

    let refused = weir(&["panic", "executor-0", "--addr", &addr]).await;
    assert_eq!(refused.status.code(), Some(1));
    let armed = weir(&[
        "panic",
        "executor-0",
        "--addr",
        &addr,
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(armed.status.code(), Some(0), "{armed:?}");
    assert!(
        text(&armed.stdout).contains("panic-e2e/executor-0 panics when it next handles a message")
    );

    let mut failed = false;
    tokio::time::timeout(WAIT, async {
        loop {
            let r = events.next().await.expect("open");
            match &r.event {
                Event::ActorFailed { actor, reason } if actor == "panic-e2e/executor-0" => {
                    assert!(
                        reason.contains("panic injected through the control endpoint"),
                        "{reason}"
                    );
                    failed = true;
                }
                Event::ActorStarted { actor } if failed && actor == "panic-e2e/executor-0" => {
                    return;
                }
                _ => {}
            }
        }
    })
    .await
    .expect("executor-0 panics and is restarted");
    ctx.stop(true).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_events_and_kill_present_the_token_file_and_nothing_flows_without_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ctx = context_on(dir.path(), "remote-e2e/", "0.0.0.0:0");
    ctx.start().await.expect("start");
    let mut events = ctx.events().expect("events");
    first_batch(&mut events).await;
    let port = ctx.control_addr().expect("bound").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let addr_s = addr.to_string();
    let token_file = dir.path().join("control-token");
    let token_file = token_file.to_str().expect("utf-8");

    let refused = weir(&["events", "--addr", &addr_s, "--json"]).await;
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(refused.stdout.is_empty(), "no event without the token");
    assert!(
        text(&refused.stderr)
            .contains("requires the token before anything else; pass --token-file"),
        "{}",
        text(&refused.stderr)
    );

    let mut follower = Follower::start_with(addr, &["--token-file", token_file]);
    follower
        .until("a batch, followed with the token", |e| {
            matches!(e, Event::BatchCompleted { .. })
        })
        .await;
    let killed = weir(&[
        "kill",
        "receiver-0",
        "--addr",
        &addr_s,
        "--token-file",
        token_file,
    ])
    .await;
    assert_eq!(killed.status.code(), Some(0), "{killed:?}");
    assert_eq!(text(&killed.stdout).trim(), "killed remote-e2e/receiver-0");
    follower
        .until(
            "the receiver's failure",
            |e| matches!(e, Event::ActorFailed { actor, .. } if actor == "remote-e2e/receiver-0"),
        )
        .await;
    drop(follower);
    ctx.stop(true).await.expect("stop");
}
