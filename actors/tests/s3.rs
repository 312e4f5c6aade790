//! weir's storage on a real S3-compatible server (moto, started on 127.0.0.1 by
//! `weir_actors::testing::MotoServer`), where the other suites cannot reach: what the network
//! does between weir and the server.
//!
//! * A write whose answer is lost: a proxy between weir and moto forwards a `PutObject`, lets
//!   moto store it, and then drops the connection instead of passing the answer on. opendal's
//!   retry layer sends the request again; moto refuses it (`If-None-Match: *`, the name is
//!   taken — by the first attempt). weir must count that write as done, once: the log reads
//!   back every record exactly once.
//! * The same for a large state file written as a multipart upload: the answer to its
//!   completion is lost and the retried completion is refused (moto: the name is taken; S3
//!   may also answer that the upload is gone); the object there with exactly the bytes
//!   written counts as the write.
//! * A real conflict: a write-once name taken by different bytes is refused, never
//!   overwritten and never taken for ours.
//! * Settings: a server that does not answer fails an operation within the configured timeout
//!   and retries, with an error that names the object.
//!
//! The WAL and checkpoint suites run on S3 too (their `s3` mode; see tests/common/mod.rs and
//! tests/checkpoint.rs).

#![cfg(feature = "s3")]
#![allow(clippy::unwrap_used)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_actors::Storage;
use weir_actors::testing::MotoServer;
use weir_actors::wal::{Position, Wal, WalConfig};

/// A forwarding proxy that answers every request through moto, except that it swallows the
/// answers to the first `lose` requests `matches` picks (moto has handled them).
struct LossyProxy {
    addr: SocketAddr,
    lost: Arc<AtomicUsize>,
}

type Matcher = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

impl LossyProxy {
    fn start(upstream: SocketAddr, lose: usize, matches: Matcher) -> LossyProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lost = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&lost);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let (counter, matches) = (Arc::clone(&counter), Arc::clone(&matches));
                std::thread::spawn(move || {
                    let _ = serve(client, upstream, lose, &counter, &*matches);
                });
            }
        });
        LossyProxy { addr, lost }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }
}

/// One client connection: requests in turn (keep-alive), each over a fresh upstream connection.
fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    lose: usize,
    lost: &AtomicUsize,
    matches: &(dyn Fn(&str, &str) -> bool + Send + Sync),
) -> io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut writer = client;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        let mut request_line = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(()); // the client closed its connection
            }
            if request_line.is_empty() {
                request_line = line.clone();
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            assert!(
                !lower.starts_with("transfer-encoding:"),
                "the proxy forwards bodies with a content-length only: {line}"
            );
            if lower.starts_with("connection:") {
                continue; // replaced by `connection: close` below
            }
            if line == "\r\n" {
                head.extend_from_slice(b"connection: close\r\n\r\n");
                break;
            }
            head.extend_from_slice(line.as_bytes());
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let mut up = TcpStream::connect(upstream)?;
        up.write_all(&head)?;
        up.write_all(&body)?;
        let mut answer = Vec::new();
        up.read_to_end(&mut answer)?;
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if matches(method, path)
            && lost
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                    (n < lose).then_some(n + 1)
                })
                .is_ok()
        {
            // moto has stored it; the client never hears so.
            let _ = writer.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        writer.write_all(&answer)?;
    }
}

fn moto() -> &'static MotoServer {
    MotoServer::shared().unwrap_or_else(|e| panic!("moto's S3 server: {e}"))
}

fn upstream(server: &MotoServer) -> SocketAddr {
    server
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

async fn read_all(wal: &Wal) -> Vec<Bytes> {
    let records = wal.iter_from(Position::START).collect_all().await.unwrap();
    records.into_iter().map(|r| r.payload).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_was_lost_is_retried_and_counted_once() {
    let server = moto();
    let options = server.fresh_bucket().unwrap();
    // Lose the answers to the first three WAL chunk writes after the segment header.
    let proxy = LossyProxy::start(
        upstream(server),
        3,
        Arc::new(|method: &str, path: &str| {
            method == "PUT"
                && path.ends_with(".walc")
                && !path.ends_with("-00000000000000000000.walc")
        }),
    );
    let through_proxy = Storage::s3(&options.clone().endpoint(proxy.endpoint())).unwrap();
    let (wal, _) = Wal::open(through_proxy.join("wal"), WalConfig::default())
        .await
        .unwrap();
    let mut written = Vec::new();
    for i in 0..20u32 {
        let payload = Bytes::from(format!("record {i}"));
        wal.append(payload.clone()).await.unwrap();
        written.push(payload);
    }
    wal.close().await.unwrap();
    assert_eq!(
        proxy.lost(),
        3,
        "the proxy lost no answer: the test proved nothing"
    );

    // Read back directly from moto: every record once, in order.
    let direct = Storage::s3(&options).unwrap();
    let (wal, _) = Wal::open(direct.join("wal"), WalConfig::default())
        .await
        .unwrap();
    assert_eq!(read_all(&wal).await, written);
    wal.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_state_file_whose_completion_answer_is_lost_is_written_once() {
    use std::io::Write as _;
    use weir_actors::checkpoint::{
        CheckpointConfig, CheckpointData, CheckpointStore, OperatorState, StateBytes, StateData,
        StateUpload, StateWriter,
    };
    let server = moto();
    let options = server.fresh_bucket().unwrap();
    // Lose the answer to the first completion of a multipart upload (a POST with its id).
    let proxy = LossyProxy::start(
        upstream(server),
        1,
        Arc::new(|method: &str, path: &str| method == "POST" && path.contains("uploadId=")),
    );
    let through_proxy = Storage::s3(&options.clone().endpoint(proxy.endpoint())).unwrap();
    let store = CheckpointStore::open(through_proxy, CheckpointConfig::default())
        .await
        .unwrap();
    let payload: Vec<u8> = (0..17 * (1u32 << 20) + 99)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let spill = tempfile::tempdir().unwrap();
    let mut writer = StateWriter::new(StateBytes::temp_file_in(spill.path()).unwrap());
    writer.write_all(&payload).unwrap();
    let (bytes, _) = writer.finish().unwrap();
    let data = CheckpointData {
        operator_state: vec![OperatorState {
            schema_version: 1,
            operator_id: "op".to_owned(),
            type_name: "State".to_owned(),
            data: StateData::Chain(Vec::new()),
        }],
        ..CheckpointData::default()
    };
    let upload = StateUpload {
        operator_id: "op".to_owned(),
        bytes,
    };
    let (_, written) = store
        .write_reserved_with_uploads(store.reserve().unwrap(), data, vec![upload])
        .await
        .unwrap();
    assert_eq!(
        proxy.lost(),
        1,
        "the proxy lost no answer: the test proved nothing"
    );
    // Read back directly from moto: the file, exactly.
    let direct = CheckpointStore::open(Storage::s3(&options).unwrap(), CheckpointConfig::default())
        .await
        .unwrap();
    let file = written.state_files().next().unwrap();
    assert_eq!(direct.read_state_file(file).await.unwrap(), payload);
    let latest = direct.read_latest().await.unwrap().unwrap();
    assert_eq!(latest.data.state_files().next(), Some(file));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_once_name_taken_by_other_bytes_is_a_conflict_not_ours() {
    let server = moto();
    let storage = server.fresh().unwrap().join("wal");
    let (wal, _) = Wal::open(storage.clone(), WalConfig::default())
        .await
        .unwrap();
    wal.append(Bytes::from_static(b"first")).await.unwrap();
    let segment = wal.newest_segment();
    // Someone else takes the name of the next chunk of the active segment.
    let Storage::Object { op, prefix } = &storage else {
        panic!("S3 storage is object storage")
    };
    let listed = op.list(prefix).await.unwrap();
    let mut chunk_ends: Vec<u64> = Vec::new();
    for entry in &listed {
        let name = entry.name();
        let Some((id, start)) = name
            .strip_suffix(".walc")
            .and_then(|n| n.split_once('-'))
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        else {
            continue;
        };
        if id == segment {
            let len = op.stat(entry.path()).await.unwrap().content_length();
            chunk_ends.push(start + len);
        }
    }
    let next = chunk_ends.into_iter().max().unwrap();
    let squatter = format!("{prefix}{segment:020}-{next:020}.walc");
    op.write(&squatter, b"not weir's".to_vec()).await.unwrap();

    let err = wal
        .append(Bytes::from_static(b"second"))
        .await
        .expect_err("an append over another writer's object must fail");
    let text = err.to_string();
    assert!(
        text.contains(&squatter),
        "the error names the object: {text}"
    );
    assert!(
        text.contains(&format!("s3://{}/", op.info().name())),
        "the error names the bucket: {text}"
    );
    // The squatter's bytes are untouched.
    assert_eq!(
        op.read(&squatter).await.unwrap().to_vec(),
        b"not weir's".to_vec()
    );
    drop(wal);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_within_the_timeouts_and_retries() {
    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(8) {
            conns.push(c);
        }
        conns.len()
    });
    let options = moto()
        .options("no-such-bucket")
        .endpoint(format!("http://{addr}"))
        .retries(2, Duration::from_millis(10), Duration::from_millis(20))
        .timeouts(Duration::from_millis(300), Duration::from_millis(300));
    let storage = Storage::s3(&options).unwrap();
    let started = Instant::now();
    let err = Wal::open(storage.join("wal"), WalConfig::default())
        .await
        .expect_err("a server that never answers cannot be opened");
    let took = started.elapsed();
    // Three attempts of at most ~300 ms each, plus short back-offs: well under 10 s.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        took >= Duration::from_millis(600),
        "gave up after {took:?}: the retries did not happen"
    );
    let text = err.to_string();
    assert!(
        text.contains("wal"),
        "the error names what was asked: {text}"
    );
    drop(held);
}
