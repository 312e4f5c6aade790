//! A real Prometheus scraping a running `word_count`: Debian's `prometheus` (installed by
//! `examples/tests/tools/install-prometheus.sh` when missing) started on 127.0.0.1 with a
//! one-second scrape interval. PromQL sees the batch counter grow and, after `weir kill
//! receiver-0`, the receiver's restart counter reach 1; `promtool check metrics` passes on a
//! scrape.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weir_examples::text_server::TextServer;

mod common;
use common::{Reaped, free_addr, weir_binary};

/// Every wait here is bounded by this.
const WAIT: Duration = Duration::from_secs(90);

/// The paths of `prometheus` and `promtool`, installed first if missing.
fn prometheus_tools() -> (PathBuf, PathBuf) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/install-prometheus.sh");
    let out = Command::new("bash").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "installing Prometheus failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let path = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {key} in {text}"))
    };
    (path("PROMETHEUS="), path("PROMTOOL="))
}

/// `GET path` on `addr`; the body, or `None` if nothing answers (yet).
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of an instant PromQL query with one series, once Prometheus has one.
fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let body = http_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    )?;
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Polls `promql` (Prometheus scrapes every second) until `ok` holds for its value.
fn until(prometheus: SocketAddr, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = query(prometheus, promql).filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered `{promql}` as expected (last: {:?})",
            query(prometheus, promql)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_word_count_and_sees_batches_and_a_restart() {
    let (prometheus_bin, promtool) = prometheus_tools();
    let weir = weir_binary();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("checkpoint");
    let server = TextServer::start(20, Duration::from_millis(10), 11)
        .await
        .unwrap();
    let (http, control) = (free_addr(), free_addr());
    let _word_count = Reaped(
        Command::new(env!("CARGO_BIN_EXE_word_count"))
            .args(["--socket", &server.addr().to_string()])
            .args(["--http-addr", &http.to_string()])
            .args(["--control-addr", &control.to_string()])
            .arg("--checkpoint-dir")
            .arg(&checkpoint)
            .arg("--output-dir")
            .arg(dir.path().join("output"))
            .args(["--batch-ms", "200", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Prometheus, scraping word_count every second.
    let web = free_addr();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: weir\n    static_configs:\n      \
             - targets: ['{http}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Reaped(
        Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // The batch counter, as Prometheus sees it, grows.
    let first = until(web, "weir_batches_completed_total", |v| v > 0.0);
    until(web, "weir_batches_completed_total", |v| v >= first + 3.0);
    let up = until(web, "up{job=\"weir\"}", |v| v == 1.0);
    assert_eq!(up, 1.0);
    until(web, "weir_receiver_records_total", |v| v > 0.0);

    // `weir kill receiver-0`: the restart counter reaches 1.
    let killed = Command::new(&weir)
        .args(["kill", "receiver-0", "--addr", &control.to_string()])
        .arg("--token-file")
        .arg(checkpoint.join("control-token"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(
        killed.status.success(),
        "weir kill: {}",
        String::from_utf8_lossy(&killed.stderr)
    );
    let restarts = until(
        web,
        "weir_actor_restarts_total{actor=\"receiver-0\"}",
        |v| v >= 1.0,
    );
    assert_eq!(restarts, 1.0, "one kill, one restart");

    // A scrape passes promtool's lint.
    let scrape = http_get(http, "/metrics").expect("a scrape");
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.stdout.is_empty(),
        "promtool found problems: {}",
        String::from_utf8_lossy(&checked.stdout)
    );
}
