//! The control endpoint against a flood of idle connections under a low `ulimit -n`: the
//! engine's own files (WAL segments, checkpoints, the event log) keep opening, so batches
//! complete and checkpoints are written while hundreds of connections are held open; the
//! endpoint serves at most its cap of them and turns the others away at once.
//!
//! The file-descriptor limit is process-wide, so this is a test binary of its own, and the
//! connections are held by a second process — this binary run again, the test in it acting as
//! the holder ([`hold`]) — whose descriptors do not count against the engine's.
//!
//! The defect this guards (issue 16, item 2): the endpoint accepted every connection, so idle
//! clients took every descriptor the process had, the engine's checkpoint and WAL files could
//! no longer be opened, and a failing `accept` was retried in a hot loop.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir_actors::testing::{CommitLog, CommitLogPipeline, NumberedReceiver, verify};
use weir_actors::{Engine, EngineConfig, Event, EventSubscription, Storage};

/// The process's descriptor limit while the engine runs: room for the engine and the cap's
/// sessions, far from room for every connection.
const FD_LIMIT: u64 = 256;
/// Connections the holder opens and keeps open.
const CONNECTIONS: usize = 400;
/// The endpoint's connection cap (the default).
const CAP: usize = 64;
/// Where the holder process finds the endpoint.
const HOLDER_ADDR: &str = "WEIR_FD_LIMIT_HOLDER_ADDR";
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the holder waits for a connection to be made, and then for its first line.
const WAIT: Duration = Duration::from_secs(10);

fn set_fd_limit(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` and `setrlimit` read and write the one struct passed, which lives
    // on this stack frame for the duration of each call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = soft.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

fn raise_fd_limit_to_hard() {
    set_fd_limit(u64::MAX);
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// `count` events matching `f`, within [`PATIENCE`]; what else happened meanwhile if not.
async fn expect_events(
    events: &mut EventSubscription,
    count: usize,
    what: &str,
    context: &str,
    f: fn(&Event) -> bool,
) {
    let mut seen = 0;
    let mut failures = Vec::new();
    let result = tokio::time::timeout(PATIENCE, async {
        while seen < count {
            let record = events.next().await.expect("the event feed is open");
            if f(&record.event) {
                seen += 1;
            } else if matches!(
                record.event,
                Event::CheckpointFailed { .. }
                    | Event::ActorFailed { .. }
                    | Event::ActorGaveUp { .. }
            ) && failures.len() < 8
            {
                failures.push(format!("{:?}", record.event));
            }
        }
    })
    .await;
    assert!(
        result.is_ok(),
        "{seen} of {count} {what} within {PATIENCE:?} ({context}); failures meanwhile: \
         {failures:#?}"
    );
}

/// The holder process: connects to the endpoint, classifies what each connection is told.
struct Holder {
    child: Child,
    reports: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Holder {
    fn start(addr: std::net::SocketAddr) -> Holder {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "batches_and_checkpoints_go_on_while_hundreds_of_idle_connections_are_held",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(HOLDER_ADDR, addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, reports) = tokio::sync::mpsc::unbounded_channel();
        // Its reports are read on a thread of their own (reading a pipe blocks).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                // libtest may have begun the line (`test holder ... `).
                if let Some((_, report)) = line.split_once("holder: ")
                    && tx.send(report.to_owned()).is_err()
                {
                    return;
                }
            }
        });
        Holder { child, reports }
    }

    /// The holder's next report line (`holder: …`), without the prefix.
    async fn report(&mut self) -> String {
        match tokio::time::timeout(PATIENCE, self.reports.recv()).await {
            Ok(Some(report)) => report,
            Ok(None) => panic!("the holder ended without reporting"),
            Err(_) => panic!("the holder did not report within {PATIENCE:?}"),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_and_checkpoints_go_on_while_hundreds_of_idle_connections_are_held() {
    // This binary run again by `Holder::start`: hold the connections, nothing else.
    if let Ok(addr) = std::env::var(HOLDER_ADDR) {
        hold(addr).await;
        return;
    }
    set_fd_limit(FD_LIMIT);
    let dir = tempfile::tempdir().unwrap();
    let mut config = EngineConfig::new(Storage::local(dir.path()));
    assert_eq!(config.control_max_connections, CAP, "the default cap");
    config.name_prefix = "fd-limit/".to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.block_interval = Duration::from_millis(10);
    config.executors = 2;
    config.control_addr = Some("127.0.0.1:0".parse().unwrap());
    let log = Arc::new(CommitLog::default());
    let receiver = NumberedReceiver::new(5, Duration::from_millis(2));
    let factory = receiver.factory();
    let pipeline = Arc::new(CommitLogPipeline::new(Arc::clone(&log), Duration::ZERO));
    let engine = Engine::start(config, pipeline, vec![(0, factory)])
        .await
        .unwrap();
    let mut events = engine.events();
    expect_events(&mut events, 2, "checkpoints", "before the flood", |e| {
        matches!(e, Event::CheckpointWritten { .. })
    })
    .await;
    let before = open_fds();
    assert!(
        before + CAP + 32 < FD_LIMIT as usize,
        "the engine alone holds {before} descriptors: the limit leaves no room to test"
    );

    let mut holder = Holder::start(engine.control_addr().unwrap());
    let connected = holder.report().await;
    // Every connection was answered (or not) by now; all of them stay open.
    let answered = holder.report().await;

    // Meanwhile the engine goes on: batches with records complete, checkpoints are written.
    let mut events = engine.events();
    let context = format!("holder: {connected}; {answered}");
    expect_events(
        &mut events,
        5,
        "batches with records",
        &context,
        |e| matches!(e, Event::BatchCompleted { records, .. } if *records > 0),
    )
    .await;
    expect_events(&mut events, 5, "checkpoints written", &context, |e| {
        matches!(e, Event::CheckpointWritten { .. })
    })
    .await;

    // The cap: that many sessions, every other connection told why and closed at once.
    assert_eq!(connected, format!("connected {CONNECTIONS} failed 0"));
    assert_eq!(
        answered,
        format!(
            "served {CAP} refused {} closed 0 silent 0 other 0",
            CONNECTIONS - CAP
        ),
        "(served: a hello; refused: one line saying why; closed: nothing, then the end; \
         silent: nothing within {WAIT:?})"
    );
    assert!(
        open_fds() <= before + CAP + 8,
        "the sessions hold what they need, no more: {} descriptors, {before} before",
        open_fds()
    );
    drop(holder);
    engine.stop(true).await.unwrap();
    let verdict = verify(&receiver.acknowledged(), &log);
    assert!(verdict.is_exactly_once(), "{verdict:?}");
}

/// The holder process's work, for the test above (which runs this binary again with
/// [`HOLDER_ADDR`] set, the test then doing only this): opens [`CONNECTIONS`] connections,
/// reads the first line of each for a while, reports what they were told, and keeps them all
/// open until its standard input closes.
async fn hold(addr: String) {
    use tokio::io::AsyncBufReadExt;
    raise_fd_limit_to_hard();
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..CONNECTIONS {
        let addr = addr.clone();
        connects.spawn(async move {
            tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(addr)).await
        });
    }
    let mut connections = Vec::with_capacity(CONNECTIONS);
    let mut failed = 0;
    while let Some(connected) = connects.join_next().await {
        match connected.unwrap() {
            Ok(Ok(stream)) => connections.push(stream),
            _ => failed += 1,
        }
    }
    println!("holder: connected {} failed {failed}", connections.len());
    // The first line of each: a hello (served), a reply (refused), the end (closed), or nothing
    // within the time (silent: neither served nor refused).
    let mut readers = tokio::task::JoinSet::new();
    for stream in connections {
        readers.spawn(async move {
            let mut reader = tokio::io::BufReader::new(stream);
            let mut line = String::new();
            let read = tokio::time::timeout(WAIT, reader.read_line(&mut line)).await;
            let kind = match read {
                Ok(Ok(0) | Err(_)) => "closed",
                Ok(Ok(_)) if line.contains(r#""type":"hello""#) => "served",
                Ok(Ok(_)) if line.contains("serves at most") => "refused",
                Ok(Ok(_)) => "other",
                Err(_) => "silent",
            };
            (kind, reader)
        });
    }
    let mut counts = std::collections::BTreeMap::new();
    let mut held = Vec::new();
    while let Some(joined) = readers.join_next().await {
        let (kind, reader) = joined.unwrap();
        *counts.entry(kind).or_insert(0) += 1;
        held.push(reader);
    }
    let count = |kind| counts.get(kind).copied().unwrap_or(0);
    println!(
        "holder: served {} refused {} closed {} silent {} other {}",
        count("served"),
        count("refused"),
        count("closed"),
        count("silent"),
        count("other")
    );
    // Hold every connection until the test is done with this process.
    let mut stdin = String::new();
    let _ = std::io::stdin().read_line(&mut stdin);
    drop(held);
}
