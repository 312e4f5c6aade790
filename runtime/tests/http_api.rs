//! The HTTP server, black box: every route over a real socket, the token rules, the limits
//! (connections, request sizes), a client that never reads, and a stop through the API.
//!
//! The client is a few lines of HTTP/1.1 over a `TcpStream`, so that what is sent — an
//! oversized head, a silent connection — is exactly what the test says.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use weir::dstream::QueueStream;
use weir::{StreamingConfig, StreamingContext};
use weir_actors::Event;

/// Long enough for a loaded CI machine; every wait in this file is bounded by it.
const PATIENCE: Duration = Duration::from_secs(60);

/// A response: status, head (lower-cased), body.
#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
async fn request(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = tokio::time::timeout(PATIENCE, TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        head.push_str("content-length: 0\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await.expect("write");
    read_response(stream).await
}

async fn read_response(mut stream: TcpStream) -> Response {
    // Read to the end; a reset after the answer (the server closes a connection whose body
    // it refused while the client still sends it) ends the read, keeping what arrived.
    let mut raw = Vec::new();
    tokio::time::timeout(PATIENCE, async {
        let mut chunk = [0u8; 8192];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(err) if !raw.is_empty() => break drop(err),
                Err(err) => panic!("read: {err}"),
            }
        }
    })
    .await
    .expect("an answer in time");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    Response {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, &[]).await
}

fn config(dir: &std::path::Path, prefix: &str) -> StreamingConfig {
    let mut config = StreamingConfig::local(dir)
        .batch_interval(Duration::from_millis(100))
        .http_addr("127.0.0.1:0".parse().unwrap());
    config.engine.name_prefix = prefix.to_owned();
    config.engine.executors = 2;
    config.parallelism = 2;
    config
}

/// A started context counting a queue stream, with its HTTP address.
async fn started(config: StreamingConfig) -> (StreamingContext, QueueStream<u32>, SocketAddr) {
    let mut ctx = StreamingContext::new(config);
    let queue = QueueStream::<u32>::new(true, 1);
    ctx.queue_stream(&queue)
        .uid("queue")
        .count()
        .foreach_batch(|_| Ok(()));
    ctx.start().await.unwrap();
    let addr = ctx.http_addr().expect("the HTTP server listens");
    (ctx, queue, addr)
}

async fn batch_completed(ctx: &StreamingContext, n: usize) {
    let mut events = ctx.events().unwrap();
    for _ in 0..n {
        events
            .next_matching(PATIENCE, |e| matches!(e, Event::BatchCompleted { .. }))
            .await
            .expect("a batch completes");
    }
}

fn token(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("control-token"))
        .expect("the token file")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_route_answers_and_unknown_ones_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, queue, addr) = started(config(dir.path(), "http-routes/")).await;
    queue.push(vec![1, 2, 3]);
    batch_completed(&ctx, 3).await;

    let page = get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.head.contains("content-type: text/html"),
        "{}",
        page.head
    );
    assert!(
        page.body.contains("dashboard.js"),
        "the page loads its script"
    );
    for (path, kind) in [
        ("/dashboard.js", "text/javascript"),
        ("/dashboard.css", "text/css"),
    ] {
        let asset = get(addr, path).await;
        assert_eq!(asset.status, 200, "{path}");
        assert!(asset.head.contains(kind), "{path}: {}", asset.head);
    }

    let metrics = get(addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .head
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        metrics.head
    );
    let completed: f64 = metrics
        .body
        .lines()
        .find_map(|l| l.strip_prefix("weir_batches_completed_total "))
        .expect("the batch counter")
        .parse()
        .unwrap();
    assert!(completed >= 3.0, "{completed}");
    assert!(metrics.body.contains("process_resident_memory_bytes"));

    let overview = get(addr, "/api/v1/overview").await.json();
    assert_eq!(overview["batch_interval_ms"], 100);
    assert_eq!(overview["name_prefix"], "http-routes/");
    assert!(overview["batches_completed"].as_u64().unwrap() >= 3);

    let batches = get(addr, "/api/v1/batches?limit=2").await.json();
    let list = batches["batches"].as_array().unwrap();
    assert_eq!(list.len(), 2, "the limit is honoured");
    assert!(
        list[0]["batch_time_ms"].as_u64() > list[1]["batch_time_ms"].as_u64(),
        "newest first"
    );
    let done = get(addr, "/api/v1/batches").await.json();
    let completed = done["batches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["status"] == "completed")
        .expect("a completed batch")
        .clone();
    assert!(completed["processing_ms"].is_u64(), "{completed}");
    assert!(
        !completed["outputs"].as_array().unwrap().is_empty(),
        "{completed}"
    );

    let checkpoints = get(addr, "/api/v1/checkpoints").await.json();
    let first = &checkpoints["checkpoints"][0];
    assert_eq!(first["outcome"], "written", "{checkpoints}");
    assert!(first["bytes"].as_u64().unwrap() > 0);

    let tree = get(addr, "/api/v1/tree").await.json();
    let names: Vec<&str> = tree["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    for actor in [
        "http-routes/root",
        "http-routes/driver",
        "http-routes/http-server",
    ] {
        assert!(names.contains(&actor), "{actor} in {names:?}");
    }

    let config = get(addr, "/api/v1/config").await.json();
    assert_eq!(config["settings"]["batch_interval_ms"], "100");
    assert_eq!(config["settings"]["parallelism"], "2");
    assert_eq!(config["settings"]["http_addr"], addr.to_string());

    for path in ["/api/v1/receivers", "/api/v1/sources", "/api/v1/wal"] {
        assert_eq!(get(addr, path).await.status, 200, "{path}");
    }
    let wal = get(addr, "/api/v1/wal").await.json();
    assert!(wal["appends"].is_u64(), "{wal}");
    let recent = get(addr, "/api/v1/events/recent?limit=5").await.json();
    assert_eq!(recent["events"].as_array().unwrap().len(), 5);

    let missing = get(addr, "/api/v2/nothing").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["ok"], false);
    assert_eq!(
        request(addr, "DELETE", "/api/v1/stop", &[]).await.status,
        405
    );
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_need_the_token_and_do_what_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _queue, addr) = started(config(dir.path(), "http-cmd/")).await;
    batch_completed(&ctx, 1).await;
    let token = token(dir.path());
    let bearer = format!("Bearer {token}");
    let with_token = [("authorization", bearer.as_str())];

    // Without the token, or with another one: refused, nothing happens.
    let kill = "/api/v1/actors/job-scheduler/kill";
    let refused = request(addr, "POST", kill, &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let wrong = request(addr, "POST", kill, &[("authorization", "Bearer nope")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["message"], "the token does not match");
    // A token in the query is for reads only.
    let query = request(addr, "POST", &format!("{kill}?token={token}"), &[]).await;
    assert_eq!(query.status, 401);

    // The root and strangers are refused by name.
    let root = request(addr, "POST", "/api/v1/actors/root/kill", &with_token).await;
    assert_eq!(root.status, 403, "{}", root.body);
    let nobody = request(addr, "POST", "/api/v1/actors/nobody/kill", &with_token).await;
    assert_eq!(nobody.status, 404);

    // A kill with the token: the scheduler fails and is restarted, as the tree shows.
    let mut events = ctx.events().unwrap();
    let killed = request(addr, "POST", kill, &with_token).await;
    assert_eq!(killed.status, 200, "{}", killed.body);
    assert_eq!(killed.json()["message"], "killed http-cmd/job-scheduler");
    events
        .next_matching(PATIENCE, |e| matches!(e, Event::ActorRestarted { .. }))
        .await
        .expect("the tree recovers");
    let tree = get(addr, "/api/v1/tree").await.json();
    let failed = tree["actors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "http-cmd/job-scheduler")
        .expect("the scheduler is listed");
    assert_eq!(failed["last_failure"], "killed", "{failed}");

    // A checkpoint on request: accepted, and written.
    batch_completed(&ctx, 1).await;
    let mut events = ctx.events().unwrap();
    let asked = request(addr, "POST", "/api/v1/checkpoints", &with_token).await;
    assert_eq!(asked.status, 202, "{}", asked.body);
    events
        .next_matching(PATIENCE, |e| matches!(e, Event::CheckpointWritten { .. }))
        .await
        .expect("a checkpoint is written");

    // A savepoint on request: only with the token, somewhere absolute; written once answered.
    let elsewhere = tempfile::tempdir().unwrap();
    let savepoint = elsewhere.path().join("savepoint");
    let take = format!("/api/v1/savepoints?path={}", savepoint.display());
    assert_eq!(request(addr, "POST", &take, &[]).await.status, 401);
    let nowhere = request(addr, "POST", "/api/v1/savepoints", &with_token).await;
    assert_eq!(nowhere.status, 400, "{}", nowhere.body);
    let relative = "/api/v1/savepoints?path=relative/savepoint";
    let relative = request(addr, "POST", relative, &with_token).await;
    assert_eq!(relative.status, 409, "{}", relative.body);
    assert!(
        relative.body.contains("must be absolute"),
        "{}",
        relative.body
    );
    let taken = request(addr, "POST", &take, &with_token).await;
    assert_eq!(taken.status, 200, "{}", taken.body);
    let said = taken.json()["message"].as_str().unwrap().to_owned();
    assert!(said.starts_with("savepoint written to"), "{said}");
    assert!(said.contains(&savepoint.display().to_string()), "{said}");
    assert!(savepoint.join("savepoint.json").is_file());

    // A stop through the API: answered, then the engine ends on its own.
    let ended = ctx.ended().expect("started");
    let stop = request(addr, "POST", "/api/v1/stop?graceful=true", &with_token).await;
    assert_eq!(stop.status, 202, "{}", stop.body);
    tokio::time::timeout(PATIENCE, ended)
        .await
        .expect("the engine ends after a stop through the API");
    ctx.await_termination().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_and_request_sizes_are_bounded_and_a_silent_client_slows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), "http-limits/");
    config.engine.http_max_connections = 4;
    let (ctx, _queue, addr) = started(config).await;

    // Four connections that send nothing, and one event stream that is never read.
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/events HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    // One more connection is answered 503 at once, and closed.
    let full = get(addr, "/api/v1/overview").await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert!(full.head.contains("retry-after"), "{}", full.head);

    // Meanwhile the engine goes on: batches complete and checkpoints are written, while the
    // event stream's client reads nothing.
    let mut events = ctx.events().unwrap();
    for _ in 0..20 {
        events
            .next_matching(PATIENCE, |e| matches!(e, Event::BatchCompleted { .. }))
            .await
            .expect("batches go on");
    }
    events
        .next_matching(PATIENCE, |e| matches!(e, Event::CheckpointWritten { .. }))
        .await
        .expect("checkpoints go on");

    // A closed connection frees its place.
    drop(idle.pop());
    let served = tokio::time::timeout(PATIENCE, async {
        loop {
            let r = get(addr, "/api/v1/overview").await;
            if r.status == 200 {
                return r;
            }
            // The server notices the close when its read returns; ask again until it has.
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("served once a place is free");
    assert_eq!(served.json()["name_prefix"], "http-limits/");
    drop(idle);
    drop(reader);

    // A request head larger than the server reads is refused; a body over the cap too.
    let huge = "x".repeat(64 * 1024);
    let big_head = request(addr, "GET", "/api/v1/overview", &[("x-filler", &huge)]).await;
    assert_eq!(big_head.status, 431, "{}", big_head.head);
    let token = token(dir.path());
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = vec![b'a'; 64 * 1024];
    let head = format!(
        "POST /api/v1/checkpoints HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         authorization: Bearer {token}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let _ = stream.write_all(&body).await; // the server may close before reading it all
    let too_big = read_response(stream).await;
    assert_eq!(too_big.status, 413, "{}", too_big.body);
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_it_must_be_allowed_and_then_every_request_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut refused = config(dir.path(), "http-remote-refused/");
    refused.engine.http_addr = Some("0.0.0.0:0".parse().unwrap());
    let mut ctx = StreamingContext::new(refused);
    let queue = QueueStream::<u32>::new(true, 1);
    ctx.queue_stream(&queue).count().foreach_batch(|_| Ok(()));
    let err = ctx
        .start()
        .await
        .expect_err("refused without http_allow_remote");
    assert!(
        err.to_string().contains("http_allow_remote"),
        "the error names the setting: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut allowed = config(dir.path(), "http-remote/").http_allow_remote(true);
    allowed.engine.http_addr = Some("0.0.0.0:0".parse().unwrap());
    let (ctx, _queue, bound) = started(allowed).await;
    let addr = SocketAddr::from(([127, 0, 0, 1], bound.port()));
    let token = token(dir.path());
    assert_eq!(get(addr, "/api/v1/overview").await.status, 401);
    assert_eq!(get(addr, "/metrics").await.status, 401);
    assert_eq!(get(addr, "/").await.status, 401);
    let bearer = format!("Bearer {token}");
    let ok = request(
        addr,
        "GET",
        "/api/v1/overview",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let by_query = get(addr, &format!("/api/v1/overview?token={token}")).await;
    assert_eq!(
        by_query.status, 200,
        "a browser's EventSource sends the token in the query"
    );
    ctx.stop(true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offset_sources_records_per_batch_and_lag_per_partition_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = weir::testing::MemoryLog::new("log", 2);
    let words: Vec<String> = (0..100).map(|i| format!("w{i}")).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    log.append(0, &words);
    log.append(1, &["a", "b", "c", "d"]);
    let mut ctx = StreamingContext::new(config(dir.path(), "http-lag/"));
    // Three records per partition and batch: partition 0 stays behind for a while.
    ctx.direct_stream(
        log.clone(),
        weir::dstream::StartingOffsets::Earliest,
        Some(3),
    )
    .uid("log")
    .count()
    .foreach_batch(|_| Ok(()));
    ctx.start().await.unwrap();
    let addr = ctx.http_addr().unwrap();
    let mut events = ctx.events().unwrap();
    let inputs = events
        .next_matching(
            PATIENCE,
            |e| matches!(e, Event::BatchInputs { records, .. } if *records > 0),
        )
        .await
        .expect("a batch's inputs are published");
    let Event::BatchInputs {
        batch_time_ms,
        records,
        sources,
    } = inputs.event
    else {
        unreachable!("matched above")
    };
    assert_eq!(
        sources.get("log"),
        Some(&records),
        "counted under the source's uid"
    );
    assert!(records <= 6, "at most three per partition: {records}");
    let batches = get(addr, "/api/v1/batches").await.json();
    let batch = batches["batches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["batch_time_ms"] == batch_time_ms)
        .expect("the batch is listed")
        .clone();
    assert_eq!(batch["records"], records, "{batch}");
    assert_eq!(batch["sources"]["log"], records, "{batch}");

    let sources = get(addr, "/api/v1/sources").await.json();
    let list = sources["sources"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{sources}");
    for (p, latest) in [(0, 100), (1, 4)] {
        let s = &list[p];
        assert_eq!(s["source"], "log");
        assert_eq!(s["partition"], p);
        assert_eq!(s["latest"], latest);
        let planned = s["planned"].as_u64().unwrap();
        assert!(planned > 0 && planned <= latest, "{s}");
        assert_eq!(s["lag"].as_u64().unwrap(), latest - planned, "{s}");
    }
    assert!(list[0]["lag"].as_u64().unwrap() > 0, "{sources}");
    let metrics = get(addr, "/metrics").await.body;
    assert!(
        metrics.contains("weir_source_lag_records{partition=\"0\",source=\"log\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_source_records_total{source=\"log\"}"),
        "{metrics}"
    );
    ctx.stop(true).await.unwrap();
}
