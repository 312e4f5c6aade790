//! The web dashboard in a real browser: `word_count --http-addr 127.0.0.1:0` counts the lines
//! of a local text server, and Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/dashboard.mjs`), opens its dashboard, sees one chart point per completed
//! batch, sees the supervision tree show `receiver-0` restarted after it is killed through
//! the API with the token (without reloading the page), and keeps a screenshot in
//! `target/test-artifacts/dashboard.png`.
//!
//! `tests/browser/setup.sh` installs what is missing first (Chromium with apt-get,
//! playwright-core with `npm ci` into `target/browser-tools`), once per machine and target
//! directory, so `cargo test` needs nothing installed by hand. Every wait is bounded and
//! every child is killed on every path.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_examples::text_server::TextServer;

mod common;
use common::Reaped;

/// How long `word_count` may take to start serving.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long the setup may take (installing Chromium with apt-get on a fresh machine).
const SETUP_WAIT: Duration = Duration::from_secs(20 * 60);
/// How long the browser script may take in all (each of its own waits is shorter).
const BROWSER_WAIT: Duration = Duration::from_secs(4 * 60);
/// The script's limit for each of its waits.
const STEP_WAIT_MS: u64 = 60_000;

/// The workspace's target directory (the parent of this test's `CARGO_TARGET_TMPDIR`).
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).to_path_buf()
}

/// `examples/tests/browser`.
fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// What a finished command left.
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `command` to its end, killing it if it takes longer than `limit`.
fn run_bounded(mut command: Command, limit: Duration, what: &str) -> Finished {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let (tx, rx) = mpsc::channel();
    // The child stays unreaped (its pid ours) until this thread's wait returns.
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(limit) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: `kill` has no memory-safety preconditions; `pid` is our unreaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let output = rx.recv().unwrap().unwrap();
            panic!(
                "{what} did not finish within {limit:?}; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    };
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Installs Chromium and playwright-core if missing; returns where playwright-core is.
fn setup_browser_tools() -> PathBuf {
    let tools = target_dir().join("browser-tools");
    let mut command = Command::new("bash");
    command.arg(browser_dir().join("setup.sh")).arg(&tools);
    let done = run_bounded(command, SETUP_WAIT, "tests/browser/setup.sh");
    assert!(
        done.status.success(),
        "tests/browser/setup.sh failed ({}):\n{}",
        done.status,
        done.stderr
    );
    tools
}

/// Starts `word_count` on `socket` with its HTTP server on an ephemeral loopback port, and
/// returns it with the address it reports (`http: listening on http://ADDR`).
fn start_word_count(socket: SocketAddr, dir: &Path) -> (Reaped, SocketAddr) {
    let mut child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_word_count"))
            .args([
                "--socket",
                &socket.to_string(),
                "--http-addr",
                "127.0.0.1:0",
                "--checkpoint-dir",
                dir.join("checkpoint").to_str().unwrap(),
                "--output-dir",
                dir.join("output").to_str().unwrap(),
                "--batch-ms",
                "500",
                "--quiet",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    // Reads every line to the end, so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + START_WAIT;
    let mut said = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!("word_count never said where it listens; it said:\n{said:#?}");
        };
        if let Some(rest) = line.strip_prefix("http: listening on http://") {
            // `http: listening on http://ADDR (dashboard at /, ...)`
            let addr = rest.split_whitespace().next().unwrap_or("");
            let addr = addr.trim_end_matches('/').parse().unwrap_or_else(|e| {
                panic!("`{line}` names no address: {e}");
            });
            return (child, addr);
        }
        said.push(line);
    }
}

#[test]
fn a_browser_sees_one_point_per_batch_and_the_tree_update_after_a_kill() {
    let tools = setup_browser_tools();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime
        .block_on(TextServer::start(20, Duration::from_millis(10), 7))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (word_count, addr) = start_word_count(server.addr(), dir.path());

    let screenshot = target_dir().join("test-artifacts/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut node = Command::new("node");
    node.arg(browser_dir().join("dashboard.mjs"))
        .arg("--url")
        .arg(format!("http://{addr}/"))
        .arg("--token-file")
        .arg(dir.path().join("checkpoint/control-token"))
        .arg("--screenshot")
        .arg(&screenshot)
        .arg("--tools")
        .arg(&tools)
        .arg("--actor")
        .arg("receiver-0")
        .arg("--timeout-ms")
        .arg(STEP_WAIT_MS.to_string());
    let done = run_bounded(node, BROWSER_WAIT, "the browser script");
    drop(word_count);
    drop(server);

    let last = done.stdout.lines().last().unwrap_or("");
    let seen: serde_json::Value = serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "the script printed no JSON line ({e}); stdout:\n{}\nstderr:\n{}",
            done.stdout, done.stderr
        )
    });
    println!("the browser saw: {seen}");
    assert!(
        done.status.success() && seen.get("error").is_none(),
        "the browser script failed ({}): {:#}\nstderr:\n{}",
        done.status,
        seen,
        done.stderr
    );

    // One point per completed batch, on every chart, at least three.
    let completed = seen["api_completed"].as_u64().unwrap();
    assert!(completed >= 3, "{seen:#}");
    for chart in [
        "chart-input-rate",
        "chart-scheduling-delay",
        "chart-processing-time",
        "chart-total-delay",
    ] {
        assert_eq!(
            seen["points"][chart].as_u64(),
            Some(completed),
            "{chart}: {seen:#}"
        );
    }
    // The tree before and after the kill, on the same page.
    assert_eq!(seen["restarts_before"], 0, "{seen:#}");
    assert_eq!(seen["kill"]["status"], 200, "{seen:#}");
    assert_eq!(seen["kill"]["body"]["ok"], true, "{seen:#}");
    assert_eq!(seen["restarts_after"], 1, "{seen:#}");
    assert!(seen["running_again_after_ms"].is_u64(), "{seen:#}");
    assert_eq!(seen["not_reloaded"], true, "{seen:#}");
    assert_eq!(seen["failure_in_event_log"], true, "{seen:#}");
    assert_eq!(seen["restart_in_event_log"], true, "{seen:#}");
    assert_eq!(seen["badge_before"], "live", "{seen:#}");
    // A batch's detail lists its outputs and what its source read.
    assert!(seen["detail_outputs"].as_u64().unwrap() >= 1, "{seen:#}");
    assert_eq!(
        seen["detail_sources"][0][0], "input-socket",
        "word_count's source, by its uid: {seen:#}"
    );
    // The page ran without a script error.
    assert_eq!(seen["page_errors"], serde_json::json!([]), "{seen:#}");
    assert_eq!(seen["console_errors"], serde_json::json!([]), "{seen:#}");

    let mut png = [0u8; 8];
    std::fs::File::open(&screenshot)
        .unwrap()
        .read_exact(&mut png)
        .unwrap();
    assert_eq!(
        &png,
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        screenshot.display()
    );
}
