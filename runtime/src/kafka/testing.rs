//! The Kafka-protocol test broker every Kafka test starts: [`TestBroker`] runs tansu
//! (installed and cached by `examples/tests/tools/install-tansu.sh`; docs/kafka.md, "The test
//! broker") on a free 127.0.0.1 port, with its SQLite storage and its log in a temp dir of its
//! own.
//!
//! Invariants: [`TestBroker::start`] and [`TestBroker::restart`] return only once the broker
//! answers a metadata request (polled, bounded by [`READY_TIMEOUT`]), or fail with an error
//! naming the broker's log file; the broker process never outlives its `TestBroker` (stopped
//! with SIGTERM, then SIGKILL, on [`TestBroker::stop`] and on drop); a restart keeps the port
//! and the storage, so clients reconnect to the same address and find the same topics and
//! offsets. When a test panics, or the broker does not start, the temp dir (storage and log)
//! is kept for the post-mortem and its path printed.
//!
//! Every call here blocks the calling thread (process management and bounded waits); from
//! async code call it inside `tokio::task::spawn_blocking`, or accept a short block in a test.
//!
//! ```no_run
//! use weir::kafka::testing::TestBroker;
//!
//! let broker = TestBroker::start()?;
//! broker.create_topic("lines", 4)?;
//! let producer: rdkafka::producer::BaseProducer = broker.client_config().create()?;
//! # let _ = producer;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// How long [`TestBroker::start`] and [`TestBroker::restart`] wait for the broker to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long [`TestBroker::stop`] waits after SIGTERM before it sends SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`TestBroker::create_topic`] waits for the topic to be created and visible.
pub const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);

/// The environment variable that names a tansu binary to use instead of the installed one.
pub const TANSU_ENV: &str = "WEIR_TANSU";

/// The install script, run when [`TANSU_ENV`] is not set (present in the repository, not in
/// the published crate).
const INSTALL_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../examples/tests/tools/install-tansu.sh"
);

/// The broker's SQLite file, inside its temp dir (tansu resolves `sqlite://` paths from its
/// working directory, which is the temp dir).
const STORAGE_FILE: &str = "tansu.db";

/// The broker's stdout and stderr, inside its temp dir.
const LOG_FILE: &str = "broker.log";

/// What went wrong with the test broker. Every message that involves a running broker names
/// its log file.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The broker could not be installed (the install script failed, or printed no path).
    #[error("installing the test broker failed: {0}")]
    Install(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, and the broker's log file.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The broker did not answer a metadata request in time, or exited while starting: where,
    /// how long, the last error, the log file and its last lines.
    #[error("{0}")]
    NotReady(String),
    /// A Kafka request to the broker failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done, and the broker's log file.
        what: String,
        /// The client's error.
        source: KafkaError,
    },
    /// Something about the broker's state was not as expected (a topic not visible in time,
    /// a signal to a process that is not running).
    #[error("{0}")]
    State(String),
}

/// A record read back by [`read_topic`]: where it is, and its key, value and headers as text
/// (lossy UTF-8; an absent key or value is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRecord {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The headers, by name (the last of a repeated name).
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    /// The value of header `name`, if the record has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Partitions `0..partitions` of `topic`, each at `offset`.
///
/// # Errors
///
/// The client library refuses the list (a negative partition count gives an empty one).
pub fn partition_list(
    topic: &str,
    partitions: i32,
    offset: Offset,
) -> Result<TopicPartitionList, KafkaError> {
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition_offset(topic, p, offset)?;
    }
    Ok(list)
}

/// Every record of partitions `0..partitions` of `topic`, from the beginning to each
/// partition's end as of reading, in (partition, offset) order: read by a consumer of `client`
/// `assign()`ed to them (no group subscription, nothing committed) at `isolation`
/// (`read_committed` or `read_uncommitted`) — rdkafka alone, none of weir's code, so that a
/// test checks weir's output with an independent client.
///
/// # Errors
///
/// The consumer cannot be made, a fetch fails, or a partition has not ended after `limit`
/// ([`BrokerError::State`], naming the partitions).
pub fn read_topic(
    client: &ClientConfig,
    topic: &str,
    partitions: i32,
    isolation: &str,
    limit: Duration,
) -> Result<Vec<ReadRecord>, BrokerError> {
    let kafka = |what: &str, source| BrokerError::Kafka {
        what: format!("reading {topic}: {what}"),
        source,
    };
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .map_err(|e| kafka("creating the consumer", e))?;
    let list = partition_list(topic, partitions, Offset::Beginning)
        .map_err(|e| kafka("listing the partitions", e))?;
    consumer
        .assign(&list)
        .map_err(|e| kafka("assigning the partitions", e))?;
    let mut open: BTreeSet<i32> = (0..partitions).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + limit;
    while !open.is_empty() {
        if Instant::now() >= deadline {
            return Err(BrokerError::State(format!(
                "reading {topic}: partitions {open:?} did not end within {limit:?}"
            )));
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                open.remove(&p);
            }
            Some(Err(e)) => return Err(kafka("fetching", e)),
            Some(Ok(m)) => {
                let text =
                    |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_owned(), text(h.value)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: text(m.key()),
                    value: text(m.payload()),
                    headers,
                });
            }
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    Ok(out)
}

/// Of partitions `0..partitions` of `topic`: each one's high watermark, and `group`'s
/// committed offset for it (-1 where it has none), asked by a consumer of `client` that
/// joins nothing and commits nothing.
///
/// # Errors
///
/// The broker did not answer within 10 s (a loaded test broker may not: ask again).
pub fn group_positions(
    client: &ClientConfig,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<(Vec<i64>, Vec<i64>), KafkaError> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut ends = Vec::new();
    for p in 0..partitions {
        ends.push(
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))?
                .1,
        );
    }
    let committed = consumer
        .committed_offsets(
            partition_list(topic, partitions, Offset::Invalid)?,
            Duration::from_secs(10),
        )?
        .elements()
        .iter()
        .map(|e| e.offset().to_raw().unwrap_or(-1))
        .collect();
    Ok((ends, committed))
}

/// The tansu binary: [`TANSU_ENV`] if set, else the install script's (which builds it on
/// first use, minutes; cached under the workspace's `target/tools`). Run once per process.
///
/// # Errors
///
/// [`BrokerError::Install`] if the script fails or prints no `TANSU=` line.
pub fn tansu_binary() -> Result<PathBuf, BrokerError> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            if let Some(path) = std::env::var_os(TANSU_ENV) {
                return Ok(PathBuf::from(path));
            }
            let out = Command::new("bash")
                .arg(INSTALL_SCRIPT)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("running {INSTALL_SCRIPT}: {e}"))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "{INSTALL_SCRIPT} exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            stdout
                .lines()
                .rev()
                .find_map(|line| line.strip_prefix("TANSU="))
                .map(PathBuf::from)
                .ok_or_else(|| format!("{INSTALL_SCRIPT} printed no TANSU= line: {stdout}"))
        })
        .clone()
        .map_err(BrokerError::Install)
}

/// A tansu broker on 127.0.0.1 for one test: see the module docs.
#[derive(Debug)]
pub struct TestBroker {
    binary: PathBuf,
    /// Storage and log; `None` only after drop has kept it.
    dir: Option<tempfile::TempDir>,
    addr: SocketAddr,
    child: Option<Child>,
    paused: bool,
}

impl TestBroker {
    /// Installs the broker if needed ([`tansu_binary`]), starts it on a free port with empty
    /// storage, and waits until it answers.
    ///
    /// # Errors
    ///
    /// Installation, start-up or readiness failures; each names the broker's log.
    pub fn start() -> Result<Self, BrokerError> {
        Self::start_with(&tansu_binary()?)
    }

    /// As [`TestBroker::start`], with the given tansu binary.
    ///
    /// # Errors
    ///
    /// Start-up or readiness failures; each names the broker's log.
    pub fn start_with(binary: &Path) -> Result<Self, BrokerError> {
        let dir = tempfile::Builder::new()
            .prefix("weir-kafka-broker-")
            .tempdir()
            .map_err(|source| BrokerError::Io {
                what: "creating the broker's temp dir".into(),
                source,
            })?;
        let mut broker = TestBroker {
            binary: binary.to_owned(),
            dir: Some(dir),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            child: None,
            paused: false,
        };
        // A port another process takes between our probe and the broker's bind shows up as a
        // broker that exits at once: then try another port, twice more.
        for attempt in 1..=3 {
            broker.addr = free_addr().map_err(|source| BrokerError::Io {
                what: "finding a free port on 127.0.0.1".into(),
                source,
            })?;
            let started = broker.spawn().and_then(|()| broker.wait_ready());
            match started {
                Ok(()) => return Ok(broker),
                Err(BrokerError::NotReady(_)) if attempt < 3 && broker.child.is_none() => {}
                Err(err) => {
                    // The error names the log: keep it for the post-mortem.
                    broker.keep_dir();
                    return Err(err);
                }
            }
        }
        broker.keep_dir();
        Err(BrokerError::State("the broker did not start".into()))
    }

    /// The broker's address, `127.0.0.1:PORT` (for `bootstrap.servers`).
    #[must_use]
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The broker's socket address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The file the broker's stdout and stderr go to (appended to across restarts).
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.work_dir().join(LOG_FILE)
    }

    /// The last `lines` lines of the broker's log (for failure messages).
    #[must_use]
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// A client configuration with `bootstrap.servers` set to this broker and short
    /// reconnect back-offs (so a restarted broker is found again quickly).
    #[must_use]
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap())
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500");
        config
    }

    /// The broker process's id, while it runs.
    #[must_use]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the broker process is running (possibly paused).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Creates `name` with `partitions` partitions (replication 1) and waits until the
    /// broker's metadata shows all of them.
    ///
    /// # Errors
    ///
    /// The broker refused the topic, or did not show it within [`TOPIC_TIMEOUT`].
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), BrokerError> {
        let kafka = |what: String| {
            let log = self.log_path();
            move |source| BrokerError::Kafka {
                what: format!("{what} (broker log: {})", log.display()),
                source,
            }
        };
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .map_err(kafka("creating an admin client".into()))?;
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(TOPIC_TIMEOUT));
        let results = futures::executor::block_on(admin.create_topics([&topic], &options))
            .map_err(kafka(format!("creating topic {name}")))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(BrokerError::State(format!(
                    "creating topic {topic} with {partitions} partitions: {code} (broker log: {})",
                    self.log_path().display()
                )));
            }
        }
        let consumer: BaseConsumer = self
            .client_config()
            .create()
            .map_err(kafka("creating a metadata client".into()))?;
        let deadline = Instant::now() + TOPIC_TIMEOUT;
        let mut seen = String::from("no answer");
        while Instant::now() < deadline {
            match consumer.fetch_metadata(Some(name), Duration::from_secs(2)) {
                Ok(metadata) => {
                    let found = metadata
                        .topics()
                        .iter()
                        .find(|t| t.name() == name)
                        .map_or(0, |t| t.partitions().len());
                    if found == usize::try_from(partitions).unwrap_or(usize::MAX) {
                        return Ok(());
                    }
                    seen = format!("{found} partitions");
                }
                Err(e) => seen = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(BrokerError::State(format!(
            "topic {name} does not show {partitions} partitions after {TOPIC_TIMEOUT:?} (last: {seen}; broker log: {})",
            self.log_path().display()
        )))
    }

    /// Pauses the broker with SIGSTOP: its port still accepts connections (the kernel does),
    /// but nothing answers — "a broker that never answers".
    ///
    /// # Errors
    ///
    /// [`BrokerError::State`] if it is not running.
    pub fn pause(&mut self) -> Result<(), BrokerError> {
        self.signal(Signal::SIGSTOP)?;
        self.paused = true;
        Ok(())
    }

    /// Resumes a paused broker with SIGCONT.
    ///
    /// # Errors
    ///
    /// [`BrokerError::State`] if it is not running.
    pub fn resume(&mut self) -> Result<(), BrokerError> {
        self.signal(Signal::SIGCONT)?;
        self.paused = false;
        Ok(())
    }

    /// Stops the broker: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Its storage stays, for
    /// [`TestBroker::start_again`]. Returns how it exited (`None` if it was not running).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Io`] if the process could not be waited for.
    pub fn stop(&mut self) -> Result<Option<ExitStatus>, BrokerError> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let pid = child_pid(&child);
        if self.paused {
            // A stopped process holds SIGTERM pending until it continues.
            let _ = kill(pid, Signal::SIGCONT);
            self.paused = false;
        }
        let _ = kill(pid, Signal::SIGTERM);
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send(());
            status
        });
        if rx.recv_timeout(STOP_TIMEOUT).is_err() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let status = waiter
            .join()
            .map_err(|_| BrokerError::State("the broker's waiter thread panicked".into()))?;
        status.map(Some).map_err(|source| BrokerError::Io {
            what: format!(
                "waiting for the broker to exit (broker log: {})",
                self.log_path().display()
            ),
            source,
        })
    }

    /// Kills the broker with SIGKILL at once (a crash), and reaps it. Its storage stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// Starts a stopped (or killed) broker again on the same port and storage, and waits
    /// until it answers.
    ///
    /// # Errors
    ///
    /// [`BrokerError::State`] if it is still running; start-up or readiness failures.
    pub fn start_again(&mut self) -> Result<(), BrokerError> {
        if self.child.is_some() {
            return Err(BrokerError::State(
                "start_again: the broker is still running; stop or kill it first".into(),
            ));
        }
        self.spawn()?;
        self.wait_ready()
    }

    /// [`TestBroker::stop`] then [`TestBroker::start_again`]: same port, same storage.
    ///
    /// # Errors
    ///
    /// As those two.
    pub fn restart(&mut self) -> Result<(), BrokerError> {
        self.stop()?;
        self.start_again()
    }

    /// Waits until the broker answers a metadata request, polled until [`READY_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// [`BrokerError::NotReady`] (with the log's end) if it exits or the time runs out.
    pub fn wait_ready(&mut self) -> Result<(), BrokerError> {
        let started = Instant::now();
        let not_ready = |broker: &Self, cause: String| {
            BrokerError::NotReady(format!(
                "the test broker on {} is not ready after {:?}: {cause} (broker log: {}; its \
                 end:\n{})",
                broker.addr,
                started.elapsed(),
                broker.log_path().display(),
                broker.log_tail(20)
            ))
        };
        let consumer: BaseConsumer = self
            .client_config()
            .set("socket.connection.setup.timeout.ms", "1000")
            .create()
            .map_err(|e| not_ready(self, format!("creating a metadata client: {e}")))?;
        let mut cause = String::from("no answer yet");
        while started.elapsed() < READY_TIMEOUT {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(not_ready(self, format!("the broker exited with {status}")));
            }
            let attempt = Instant::now();
            match consumer.fetch_metadata(None, Duration::from_millis(1000)) {
                Ok(metadata) if !metadata.brokers().is_empty() => return Ok(()),
                Ok(_) => cause = "metadata lists no broker".into(),
                Err(e) => cause = e.to_string(),
            }
            // The client fails fast while nothing listens: poll at most every 100 ms.
            if let Some(rest) = Duration::from_millis(100).checked_sub(attempt.elapsed()) {
                std::thread::sleep(rest);
            }
        }
        Err(not_ready(self, cause))
    }

    /// Keeps the temp dir (storage and log) after this broker is dropped, and says where.
    fn keep_dir(&mut self) {
        if let Some(dir) = self.dir.take() {
            let kept = dir.keep();
            eprintln!(
                "test broker: kept its storage and log for the post-mortem in {}",
                kept.display()
            );
        }
    }

    /// The directory holding the storage and the log.
    fn work_dir(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |dir| dir.path())
    }

    /// Starts the broker process on `self.addr`, output appended to the log.
    fn spawn(&mut self) -> Result<(), BrokerError> {
        let log_path = self.log_path();
        let io = |what: &str| {
            let what = format!("{what} (broker log: {})", log_path.display());
            move |source| BrokerError::Io { what, source }
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io("opening the broker's log"))?;
        let url = format!("tcp://{}", self.addr);
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", &format!("sqlite://{STORAGE_FILE}")])
            .current_dir(self.work_dir())
            // Plain text in the log file: no colour codes.
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("WEIR_TANSU_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io("sharing the broker's log"))?)
            .stderr(log)
            .spawn()
            .map_err(io(&format!("starting {}", self.binary.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    /// Sends `signal` to the running broker.
    fn signal(&mut self, signal: Signal) -> Result<(), BrokerError> {
        if !self.is_running() {
            return Err(BrokerError::State(format!(
                "cannot send {signal} to the broker: it is not running (broker log: {})",
                self.log_path().display()
            )));
        }
        let pid = self.child.as_ref().map(child_pid);
        pid.map_or(Ok(()), |pid| kill(pid, signal))
            .map_err(|e| BrokerError::State(format!("sending {signal} to the broker: {e}")))
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.stop();
        if std::thread::panicking() {
            self.keep_dir();
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released for the broker).
fn free_addr() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// The child's pid as nix wants it.
fn child_pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX))
}

/// The last `lines` lines of the file at `path` (its last 64 KiB at most), or why not.
fn tail(path: &Path, lines: usize) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let all: Vec<&str> = text.lines().collect();
        Ok(all[all.len().saturating_sub(lines)..].join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}
