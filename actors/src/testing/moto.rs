//! An S3-compatible server for tests: moto's `moto_server` (from PyPI), started on 127.0.0.1.
//!
//! [`MotoServer::shared`] is one server per test process, started on first use and killed by
//! the kernel when the process exits (it is spawned from a thread that never ends, with
//! `PR_SET_PDEATHSIG`); [`MotoServer::start`] is a server of one's own, killed on drop, for
//! tests that stop or restart it. [`MotoServer::fresh`] gives a [`Storage`] in a new bucket, so
//! tests sharing a server never see each other's objects.
//!
//! The server binary is found in `WEIR_MOTO_SERVER`, else installed (once, into the
//! workspace's `target/tools/`) by `examples/tests/tools/install-moto.sh`. moto keeps its
//! objects in memory: a server that is stopped loses them.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::storage::location::Storage;
use crate::storage::s3::S3Options;

/// The install script, in the repository this crate was built from.
const INSTALL_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/tests/tools/install-moto.sh"
);

/// How long a server may take to answer its first request (moto imports a lot of Python).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `moto_server` on 127.0.0.1.
#[derive(Debug)]
pub struct MotoServer {
    child: Option<Child>,
    addr: SocketAddr,
    log: PathBuf,
}

/// The path of `moto_server`: `WEIR_MOTO_SERVER`, else what the install script installed.
fn binary() -> io::Result<PathBuf> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if let Some(path) = std::env::var_os("WEIR_MOTO_SERVER") {
                return Ok(PathBuf::from(path));
            }
            let out = Command::new("bash")
                .arg(INSTALL_SCRIPT)
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run {INSTALL_SCRIPT}: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "{INSTALL_SCRIPT} failed ({}): moto's S3 server could not be installed",
                    out.status
                ));
            }
            out.stdout
                .lines()
                .map_while(Result::ok)
                .find_map(|l| l.strip_prefix("MOTO_SERVER=").map(PathBuf::from))
                .ok_or_else(|| format!("{INSTALL_SCRIPT} printed no MOTO_SERVER= line"))
        })
        .clone()
        .map_err(io::Error::other)
}

fn unique(what: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Spawns `moto_server` on a free port; with `die_with_parent`, the kernel kills it when the
/// spawning thread ends.
fn spawn(die_with_parent: bool) -> io::Result<(Child, SocketAddr, PathBuf)> {
    let bin = binary()?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let log = std::env::temp_dir().join(format!("{}.log", unique("weir-moto")));
    let out = std::fs::File::create(&log)?;
    let mut command = Command::new(&bin);
    command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    if die_with_parent {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn()?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Err(io::Error::other(format!(
                "{} exited with {status} before answering (log: {})",
                bin.display(),
                log.display()
            )));
        }
        if request(addr, "GET", "/", b"").is_ok() {
            return Ok((child, addr, log));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(format!(
                "moto_server did not answer on {addr} within {START_TIMEOUT:?} (log: {})",
                log.display()
            )));
        }
        // Polling a starting server's port: bounded by START_TIMEOUT.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One unsigned HTTP/1.1 request; the status code.
fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> io::Result<u16> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    c.write_all(body)?;
    let mut answer = String::new();
    c.read_to_string(&mut answer)?;
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP answer from {addr}: {answer:.80}")))
}

impl MotoServer {
    /// A server of one's own; [`stop`](Self::stop)ped (killed) on drop.
    ///
    /// # Errors
    ///
    /// moto cannot be installed or does not start (the message names its log).
    pub fn start() -> io::Result<MotoServer> {
        let (child, addr, log) = spawn(false)?;
        Ok(MotoServer {
            child: Some(child),
            addr,
            log,
        })
    }

    /// The test process's shared server (started on first use, gone with the process).
    ///
    /// # Errors
    ///
    /// As for [`start`](Self::start) (remembered: every later call fails the same way).
    pub fn shared() -> io::Result<&'static MotoServer> {
        static SHARED: OnceLock<Result<MotoServer, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                // Spawned from a thread that parks forever, so the death signal fires when
                // the process ends, not when the test that started it does.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name("weir-moto-parent".to_owned())
                    .spawn(move || {
                        let spawned = spawn(true).map(|(child, addr, log)| {
                            // The child stays ours (never waited for): it dies with us.
                            std::mem::forget(child);
                            MotoServer {
                                child: None,
                                addr,
                                log,
                            }
                        });
                        let _ = tx.send(spawned.map_err(|e| e.to_string()));
                        loop {
                            std::thread::park();
                        }
                    })
                    .map_err(|e| e.to_string())?;
                rx.recv()
                    .map_err(|_| "the moto starter thread ended".to_owned())?
            })
            .as_ref()
            .map_err(|e| io::Error::other(e.clone()))
    }

    /// The endpoint URL, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The server's log file (its stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Creates `bucket`.
    ///
    /// # Errors
    ///
    /// The server cannot be reached or refuses.
    pub fn create_bucket(&self, bucket: &str) -> io::Result<()> {
        match request(self.addr, "PUT", &format!("/{bucket}"), b"")? {
            200 => Ok(()),
            code => Err(io::Error::other(format!(
                "creating bucket {bucket} on {}: HTTP {code}",
                self.addr
            ))),
        }
    }

    /// Options for `bucket` on this server: its endpoint, moto's dummy credentials, and short
    /// retries and timeouts (a test should fail in seconds, not minutes).
    pub fn options(&self, bucket: &str) -> S3Options {
        S3Options::new(bucket)
            .endpoint(self.endpoint())
            .credentials("weir-test", "weir-test-secret")
            .retries(3, Duration::from_millis(20), Duration::from_millis(500))
            .timeouts(Duration::from_secs(10), Duration::from_secs(10))
    }

    /// A new, empty bucket and the options for it.
    ///
    /// # Errors
    ///
    /// As for [`create_bucket`](Self::create_bucket).
    pub fn fresh_bucket(&self) -> io::Result<S3Options> {
        let bucket = unique("weir").to_lowercase();
        self.create_bucket(&bucket)?;
        Ok(self.options(&bucket))
    }

    /// A [`Storage`] in a new, empty bucket.
    ///
    /// # Errors
    ///
    /// As for [`create_bucket`](Self::create_bucket).
    pub fn fresh(&self) -> io::Result<Storage> {
        Storage::s3(&self.fresh_bucket()?).map_err(io::Error::other)
    }

    /// Kills the server (its objects are gone: moto keeps them in memory). A no-op for the
    /// shared server.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}
