//! The socket text receiver against real TCP servers on 127.0.0.1, driven through a receiver
//! supervisor the test plays (`weir_actors::testing::ManualSupervisor`).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use weir::sources::rate::RateLimiter;
use weir::sources::socket::{LongLines, SocketStats, SocketTextReceiver};
use weir_actors::pipeline::{Receiver, UserError};
use weir_actors::testing::{HandedOver, ManualSupervisor};

const PATIENCE: Duration = Duration::from_secs(10);

/// What the fake supervisor does with a store request.
#[derive(Clone, Copy)]
enum Answer {
    Store,
    Fail,
}

/// A receiver running against a supervisor that answers every block itself.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    /// Every block stored, in order.
    blocks: watch::Receiver<Vec<Vec<String>>>,
    task: JoinHandle<Result<(), UserError>>,
    stats: Arc<SocketStats>,
}

fn run(receiver: SocketTextReceiver, answer: Answer) -> Running {
    let (mut supervisor, ctx) = ManualSupervisor::new(0, 4);
    let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
    let (blocks_tx, blocks) = watch::channel(Vec::new());
    tokio::spawn(async move {
        let mut stopping = Some(stopping);
        let mut n = 0;
        loop {
            let block = match stopping.as_mut() {
                Some(stop) => tokio::select! {
                    block = supervisor.next() => block,
                    // Asked to stop (or the test is gone): tell the receiver, answer on.
                    _ = stop => {
                        stopping = None;
                        supervisor.stop();
                        continue;
                    }
                },
                None => supervisor.next().await,
            };
            let Some(block) = block else {
                break;
            };
            match answer {
                Answer::Store => {
                    let lines = request_lines(&block);
                    blocks_tx.send_modify(|b| b.push(lines));
                    block.stored_as(n);
                }
                Answer::Fail => block.failed("the disk is full"),
            }
            n += 1;
        }
    });
    let stats = receiver.stats();
    let task = tokio::spawn(async move {
        let mut receiver = receiver;
        receiver.start(ctx).await
    });
    Running {
        stop,
        blocks,
        task,
        stats,
    }
}

impl Running {
    /// Waits until `n` lines are stored, and returns all the lines stored.
    async fn lines(&mut self, n: usize) -> Vec<String> {
        let blocks = timeout(
            PATIENCE,
            self.blocks
                .wait_for(|b| b.iter().map(Vec::len).sum::<usize>() >= n),
        )
        .await
        .unwrap_or_else(|_| panic!("{n} lines were not stored in time"))
        .expect("the fake supervisor is alive");
        blocks.iter().flatten().cloned().collect()
    }

    fn block_count(&self) -> usize {
        self.blocks.borrow().len()
    }

    /// Asks the receiver to stop and returns how it ended.
    async fn stop(self) -> Result<(), UserError> {
        let _ = self.stop.send(());
        timeout(Duration::from_secs(2), self.task)
            .await
            .expect("the receiver stops promptly")
            .expect("the receiver does not panic")
    }
}

/// The lines of a block handed over.
fn request_lines(request: &HandedOver) -> Vec<String> {
    request
        .records()
        .iter()
        .map(|r| String::from_utf8(r.to_vec()).expect("the receiver stores UTF-8"))
        .collect()
}

/// The next block the receiver hands over, within [`PATIENCE`].
async fn next_request(requests: &mut ManualSupervisor, what: &str) -> HandedOver {
    timeout(PATIENCE, requests.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: not handed over in time"))
        .expect("the receiver is alive")
}

/// Answers a block as the `n`-th stored.
fn answer_stored(request: HandedOver, n: u64) {
    request.stored_as(n);
}

/// A receiver against a supervisor the test plays by hand: the supervisor and the receiver's
/// task.
fn run_by_hand(
    receiver: SocketTextReceiver,
) -> (ManualSupervisor, JoinHandle<Result<(), UserError>>) {
    let (supervisor, ctx) = ManualSupervisor::new(0, 4);
    let task = tokio::spawn(async move {
        let mut receiver = receiver;
        receiver.start(ctx).await
    });
    (supervisor, task)
}

/// Polls a condition that no channel announces (a counter), bounded in time.
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn listener() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    (listener, addr)
}

async fn accept(listener: &TcpListener) -> TcpStream {
    timeout(PATIENCE, listener.accept())
        .await
        .expect("the receiver connects in time")
        .expect("accept")
        .0
}

#[tokio::test]
async fn lines_arrive_in_order_and_whole_in_few_blocks() {
    let (listener, addr) = listener().await;
    let mut rng = fastrand::Rng::with_seed(1);
    let expected: Vec<String> = (0..20_000)
        .map(|i| format!("line {i} {}", "x".repeat(rng.usize(0..200))))
        .collect();
    let mut wire = Vec::new();
    for (i, line) in expected.iter().enumerate() {
        wire.extend_from_slice(line.as_bytes());
        wire.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
    }
    let mut running = run(SocketTextReceiver::new(&addr), Answer::Store);
    let mut server = accept(&listener).await;
    // Write in pieces of random sizes, so lines straddle reads.
    let mut at = 0;
    while at < wire.len() {
        let end = (at + rng.usize(1..8192)).min(wire.len());
        server.write_all(&wire[at..end]).await.expect("write");
        at = end;
    }
    assert_eq!(running.lines(expected.len()).await, expected);
    let blocks = running.block_count();
    assert!(
        blocks < 200,
        "{blocks} blocks for {} lines: not chunked",
        expected.len()
    );
    running.stop().await.expect("stops with Ok");
}

#[tokio::test]
async fn a_trickle_is_stored_without_waiting_for_a_full_chunk() {
    let (listener, addr) = listener().await;
    let mut running = run(SocketTextReceiver::new(&addr), Answer::Store);
    let mut server = accept(&listener).await;
    server.write_all(b"first\n").await.expect("write");
    // The connection stays open and the chunk is far from full: only the flush interval
    // can store the line.
    assert_eq!(running.lines(1).await, vec!["first"]);
    server.write_all(b"second\n").await.expect("write");
    assert_eq!(running.lines(2).await, vec!["first", "second"]);
    assert_eq!(running.block_count(), 2);
    running.stop().await.expect("stops with Ok");
    drop(server);
}

#[tokio::test]
async fn bad_utf8_and_overlong_lines_are_reported_and_skipped() {
    let (listener, addr) = listener().await;
    let receiver = SocketTextReceiver::new(&addr).max_line_len(10);
    let mut running = run(receiver, Answer::Store);
    let mut server = accept(&listener).await;
    let mut wire = b"a\n\xff\xfeb\nb\n".to_vec();
    wire.extend_from_slice("x".repeat(100).as_bytes());
    wire.extend_from_slice(b"\nc\nlast without newline");
    server.write_all(&wire).await.expect("write");
    drop(server); // the last line ends with the connection
    assert_eq!(running.lines(3).await, vec!["a", "b", "c"]);
    let stats = running.stats.clone();
    eventually("the closed connection", || {
        stats.snapshot().disconnects >= 1
    })
    .await;
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.bad_utf8_lines, 1);
    assert_eq!(
        snapshot.long_lines, 2,
        "the 100 x's and the unterminated last line"
    );
    assert_eq!(snapshot.lines, 3);
    running.stop().await.expect("stops with Ok");
}

#[tokio::test]
async fn overlong_lines_can_be_cut_instead() {
    let (listener, addr) = listener().await;
    let receiver = SocketTextReceiver::new(&addr)
        .max_line_len(5)
        .long_lines(LongLines::Truncate);
    let mut running = run(receiver, Answer::Store);
    let mut server = accept(&listener).await;
    server
        .write_all(b"abcdefghijkl\nok\n")
        .await
        .expect("write");
    assert_eq!(running.lines(2).await, vec!["abcde", "ok"]);
    running.stop().await.expect("stops with Ok");
}

#[tokio::test]
async fn a_server_that_drops_and_comes_back_is_reconnected() {
    let (listener, addr) = listener().await;
    let receiver =
        SocketTextReceiver::new(&addr).backoff(Duration::from_millis(5), Duration::from_millis(50));
    let mut running = run(receiver, Answer::Store);
    let mut server = accept(&listener).await;
    server.write_all(b"a\nb\n").await.expect("write");
    assert_eq!(running.lines(2).await, vec!["a", "b"]);
    // The server goes away entirely: connections are refused for a while.
    drop(server);
    drop(listener);
    let stats = running.stats.clone();
    eventually("a refused reconnection attempt", || {
        stats.snapshot().connect_failures >= 2
    })
    .await;
    // It comes back on the same port.
    let listener = TcpListener::bind(&addr).await.expect("rebind the port");
    let mut server = accept(&listener).await;
    server.write_all(b"c\n").await.expect("write");
    assert_eq!(running.lines(3).await, vec!["a", "b", "c"]);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.connects, 2);
    assert_eq!(snapshot.disconnects, 1);
    running.stop().await.expect("stops with Ok");
}

#[tokio::test]
async fn stop_is_prompt_while_connected_and_stores_what_was_read() {
    let (listener, addr) = listener().await;
    // Nothing but the stop can store these lines: the chunk is not full, the flush is an
    // hour away.
    let receiver = SocketTextReceiver::new(&addr).flush_interval(Duration::from_secs(3600));
    let running = run(receiver, Answer::Store);
    let mut server = accept(&listener).await;
    server.write_all(b"x\ny\nz\n").await.expect("write");
    let stats = running.stats.clone();
    eventually("the lines to be read", || stats.snapshot().bytes == 6).await;
    assert_eq!(running.block_count(), 0);
    let blocks = running.blocks.clone();
    running.stop().await.expect("stops with Ok");
    assert_eq!(*blocks.borrow(), vec![vec!["x", "y", "z"]]);
    drop(server);
}

#[tokio::test]
async fn stop_is_prompt_while_waiting_to_reconnect() {
    // A port nobody listens on.
    let (listener, addr) = listener().await;
    drop(listener);
    let receiver = SocketTextReceiver::new(&addr)
        .backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    let running = run(receiver, Answer::Store);
    let stats = running.stats.clone();
    eventually("a refused connection attempt", || {
        stats.snapshot().connect_failures >= 1
    })
    .await;
    running.stop().await.expect("stops with Ok");
    assert_eq!(stats.snapshot().connects, 0);
}

#[tokio::test]
async fn the_rate_limit_spaces_the_lines() {
    let (listener, addr) = listener().await;
    let limiter = RateLimiter::new(200.0)
        .expect("rate")
        .with_burst(10.0)
        .expect("burst");
    let mut running = run(
        SocketTextReceiver::new(&addr).rate_limiter(limiter),
        Answer::Store,
    );
    let mut server = accept(&listener).await;
    let start = Instant::now();
    let wire: String = (0..110).map(|i| format!("{i}\n")).collect();
    server.write_all(wire.as_bytes()).await.expect("write");
    let lines = running.lines(110).await;
    // 10 pass with the full bucket, the other 100 at 200/s.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(490),
        "took only {elapsed:?}"
    );
    assert_eq!(lines.len(), 110);
    assert!(
        running.block_count() > 1,
        "lines are not held while waiting"
    );
    running.stop().await.expect("stops with Ok");
}

#[tokio::test]
async fn a_failed_store_fails_the_receiver_so_it_is_restarted() {
    let (listener, addr) = listener().await;
    let running = run(SocketTextReceiver::new(&addr), Answer::Fail);
    let mut server = accept(&listener).await;
    server.write_all(b"lost\n").await.expect("write");
    let err = timeout(PATIENCE, running.task)
        .await
        .expect("the receiver ends")
        .expect("no panic")
        .expect_err("a failed store is an error");
    assert_eq!(
        err.to_string(),
        "stream 0: storing a block failed: the disk is full"
    );
}

#[tokio::test]
async fn the_receiver_is_its_own_factory_and_shares_its_stats() {
    use weir_actors::pipeline::ReceiverFactory;
    let receiver = SocketTextReceiver::new("127.0.0.1:1");
    let stats = receiver.stats();
    let _fresh = receiver.create();
    assert!(Arc::ptr_eq(&stats, &receiver.clone().stats()));
}

/// A receiver cutting chunks of 2 lines, one store in flight, connected to a server that
/// sent `wire`; played by hand as in [`run_by_hand`] (the server's end is returned to keep the
/// connection open).
async fn two_line_chunks_by_hand(
    wire: &[u8],
) -> (
    ManualSupervisor,
    JoinHandle<Result<(), UserError>>,
    TcpStream,
) {
    let (listener, addr) = listener().await;
    let (requests, task) = run_by_hand(
        SocketTextReceiver::new(&addr)
            .chunk_records(2)
            .stores_in_flight(1),
    );
    let mut server = accept(&listener).await;
    server.write_all(wire).await.expect("write");
    (requests, task, server)
}

/// Waits for a receiver to return `Ok` (within 2 s).
async fn stops_ok(task: JoinHandle<Result<(), UserError>>) {
    timeout(Duration::from_secs(2), task)
        .await
        .expect("the receiver stops in time")
        .expect("the receiver does not panic")
        .expect("stops with Ok");
}

/// With one store in flight, the receiver reads and hands over the next chunk while the first
/// is unanswered, but no third one until the first is answered; the chunks come in order.
#[tokio::test]
async fn the_next_chunk_is_read_while_one_is_being_stored_but_no_more() {
    let wire: String = (0..8).map(|i| format!("line {i}\n")).collect();
    let (mut requests, task, _server) = two_line_chunks_by_hand(wire.as_bytes()).await;
    let first = next_request(&mut requests, "the first chunk").await;
    let second = next_request(&mut requests, "the second chunk, the first unanswered").await;
    assert_eq!(request_lines(&first), ["line 0", "line 1"]);
    assert_eq!(request_lines(&second), ["line 2", "line 3"]);
    // Both are unanswered: the receiver must not hand over a third (it has read it).
    assert!(
        timeout(Duration::from_millis(300), requests.next())
            .await
            .is_err(),
        "a third chunk was handed over while two were in flight"
    );
    answer_stored(first, 0);
    let third = next_request(&mut requests, "the third chunk, after the first answer").await;
    assert_eq!(request_lines(&third), ["line 4", "line 5"]);
    answer_stored(second, 1);
    answer_stored(third, 2);
    let fourth = next_request(&mut requests, "the fourth chunk").await;
    assert_eq!(request_lines(&fourth), ["line 6", "line 7"]);
    answer_stored(fourth, 3);
    requests.stop();
    stops_ok(task).await;
}

/// Waits (300 ms) for a receiver that must not return yet: it still has a chunk unanswered.
async fn still_running(task: &mut JoinHandle<Result<(), UserError>>, why: &str) {
    assert!(
        timeout(Duration::from_millis(300), task).await.is_err(),
        "the receiver returned while {why}"
    );
}

/// A graceful stop with chunks in flight hands over what was read and returns only once every
/// chunk is answered: the stopping supervisor drops requests left after the receiver returned.
#[tokio::test]
async fn a_stop_with_chunks_in_flight_waits_for_their_answers() {
    let (mut requests, mut task, _server) =
        two_line_chunks_by_hand(b"line 0\nline 1\nline 2\n").await;
    let first = next_request(&mut requests, "the full chunk").await;
    assert_eq!(request_lines(&first), ["line 0", "line 1"]);
    // "line 2" waits in the open chunk (or, after its 20 ms flush interval, in flight).
    requests.stop();
    let second = next_request(&mut requests, "the partial chunk").await;
    assert_eq!(request_lines(&second), ["line 2"]);
    still_running(&mut task, "two chunks were unanswered").await;
    answer_stored(first, 0);
    still_running(&mut task, "a chunk was unanswered").await;
    answer_stored(second, 1);
    stops_ok(task).await;
}

/// When a store fails because the receiver is stopping, the receiver still waits for the
/// answer of the other chunk in flight before it returns.
#[tokio::test]
async fn a_store_failing_at_the_stop_still_waits_for_the_chunk_behind_it() {
    let (mut requests, mut task, _server) =
        two_line_chunks_by_hand(b"line 0\nline 1\nline 2\nline 3\n").await;
    let first = next_request(&mut requests, "the first chunk").await;
    let second = next_request(&mut requests, "the second chunk").await;
    assert_eq!(request_lines(&second), ["line 2", "line 3"]);
    requests.stop();
    first.closed();
    still_running(&mut task, "the second chunk was unanswered").await;
    answer_stored(second, 0);
    stops_ok(task).await;
}
