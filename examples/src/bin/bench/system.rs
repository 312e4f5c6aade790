//! The systems under test as child processes: weir's `word_count`, Spark's `JavaWordCount`
//! (a JVM started with `java` directly, so its pid is the JVM's) and PySpark's
//! `word_count.py` (python, which starts a JVM of its own). Per-batch timings come from
//! weir's event log (`<checkpoint>/events/events.jsonl`, kind `batch_completed`) and from
//! the Spark jobs' StreamingListener lines on stdout; memory from `/proc/<pid>/status` of the
//! process and its descendants.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use weir::Event;
use weir_actors::EventRecord;

/// Which system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// weir's `word_count`.
    Weir,
    /// Spark Streaming, Java API.
    SparkJava,
    /// Spark Streaming, PySpark.
    PySpark,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Weir => "weir",
            Kind::SparkJava => "Spark (Java)",
            Kind::PySpark => "PySpark",
        })
    }
}

/// Where a run's input comes from.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    /// The feeder's TCP listener.
    Socket(SocketAddr),
    /// A directory the feeder drops files into.
    Dir(PathBuf),
}

/// What the Spark side needs (from `examples/bench/setup.sh`).
#[derive(Clone, Debug)]
pub(crate) struct SparkSetup {
    /// PySpark's `jars` directory.
    pub(crate) jars: PathBuf,
    /// The compiled `JavaWordCount`.
    pub(crate) classes: PathBuf,
    /// The venv's python.
    pub(crate) python: PathBuf,
    /// `examples/bench/word_count.py`.
    pub(crate) script: PathBuf,
}

/// How to start each system.
#[derive(Clone, Debug)]
pub(crate) struct Launch {
    /// weir's `word_count` binary.
    pub(crate) word_count: PathBuf,
    /// Extra arguments for it (`--weir-arg`).
    pub(crate) weir_args: Vec<String>,
    /// Extra environment variables for it (the `overload` phase's `WEIR_…` settings).
    pub(crate) weir_env: Vec<(String, String)>,
    /// The Spark side, if set up.
    pub(crate) spark: Option<SparkSetup>,
}

/// One run's directories (checkpoint, output, logs) under `root`.
#[derive(Clone, Debug)]
pub(crate) struct RunDirs {
    /// The checkpoint directory.
    pub(crate) checkpoint: PathBuf,
    /// The output directory (`batch-<ms>/part-*`).
    pub(crate) output: PathBuf,
    /// Where stdout/stderr go.
    pub(crate) logs: PathBuf,
}

impl RunDirs {
    /// Fresh directories under `root` (removed first).
    pub(crate) fn fresh(root: &Path) -> io::Result<RunDirs> {
        let _ = fs::remove_dir_all(root);
        let dirs = RunDirs {
            checkpoint: root.join("checkpoint"),
            output: root.join("output"),
            logs: root.join("logs"),
        };
        fs::create_dir_all(&dirs.logs)?;
        Ok(dirs)
    }

    /// Removes what a measured run wrote (its checkpoints, WAL and output: gigabytes at the
    /// top rates), keeping its logs. A search runs dozens of steps; without this the bench
    /// filled the disk.
    pub(crate) fn discard_data(&self) {
        let _ = fs::remove_dir_all(&self.checkpoint);
        let _ = fs::remove_dir_all(&self.output);
    }
}

/// One completed batch as the system reported it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BatchStat {
    /// The batch time (ms since the epoch).
    pub(crate) batch_time_ms: u64,
    /// Processing time.
    pub(crate) processing_ms: u64,
    /// Scheduling delay.
    pub(crate) scheduling_ms: u64,
    /// Wall-clock ms at completion, as the system reported it.
    pub(crate) completed_wall_ms: u64,
    /// When the bench saw it.
    pub(crate) seen: Instant,
}

#[derive(Debug, Default)]
struct Shared {
    batches: Vec<BatchStat>,
}

/// A started system.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    /// When it was spawned.
    pub(crate) spawned: Instant,
    shared: Arc<(Mutex<Shared>, Condvar)>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    rss: Arc<Mutex<Vec<(Instant, u64)>>>,
    peak_kb: u64,
}

/// JVM options spark-submit adds on Java 17 (Spark's `JavaModuleOptions`).
const JAVA17_OPTS: &[&str] = &[
    "-XX:+IgnoreUnrecognizedVMOptions",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.invoke=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.cs=ALL-UNNAMED",
    "--add-opens=java.base/sun.security.action=ALL-UNNAMED",
    "--add-opens=java.base/sun.util.calendar=ALL-UNNAMED",
    "-Djdk.reflect.useDirectMethodHandle=false",
];

impl Launch {
    /// Starts `kind` on `source` with `batch_ms` batches in `dirs`; `wal` turns the receiver
    /// WAL on (weir's `--no-receiver-wal` when off, on the socket source only: its directory
    /// source has no receiver). `tag` names the log files.
    pub(crate) fn start(
        &self,
        kind: Kind,
        source: &Source,
        batch_ms: u64,
        wal: bool,
        dirs: &RunDirs,
        tag: &str,
    ) -> io::Result<Running> {
        let stdout_log = dirs.logs.join(format!("{tag}.stdout"));
        let stderr = File::create(dirs.logs.join(format!("{tag}.stderr")))?;
        let (mode, where_) = match source {
            Source::Socket(addr) => ("socket", addr.to_string()),
            Source::Dir(dir) => ("dir", dir.display().to_string()),
        };
        let spark = || {
            self.spark
                .as_ref()
                .ok_or_else(|| io::Error::other(format!("{kind} is not set up (run setup.sh)")))
        };
        let mut command = match kind {
            Kind::Weir => {
                let mut c = Command::new(&self.word_count);
                match source {
                    Source::Socket(addr) => c.arg("--socket").arg(addr.to_string()),
                    Source::Dir(dir) => c.arg("--input-dir").arg(dir),
                };
                c.arg("--checkpoint-dir")
                    .arg(&dirs.checkpoint)
                    .arg("--output-dir")
                    .arg(&dirs.output)
                    .arg("--batch-ms")
                    .arg(batch_ms.to_string())
                    .arg("--quiet");
                if !wal && matches!(source, Source::Socket(_)) {
                    c.arg("--no-receiver-wal");
                }
                c.args(&self.weir_args);
                c.envs(self.weir_env.iter().map(|(k, v)| (k, v)));
                c
            }
            Kind::SparkJava => {
                let s = spark()?;
                let mut c = Command::new("java");
                c.args(JAVA17_OPTS)
                    // spark-submit's default driver memory.
                    .arg("-Xmx1g")
                    .arg("-cp")
                    .arg(format!("{}:{}/*", s.classes.display(), s.jars.display()))
                    .arg("JavaWordCount");
                c
            }
            Kind::PySpark => {
                let s = spark()?;
                let mut c = Command::new(&s.python);
                c.arg(&s.script).env("PYSPARK_PYTHON", &s.python);
                c
            }
        };
        if kind != Kind::Weir {
            command
                .arg(mode)
                .arg(&where_)
                .arg(batch_ms.to_string())
                .arg(&dirs.output)
                .arg(&dirs.checkpoint)
                .arg(if wal { "true" } else { "false" });
        }
        let shared = Arc::new((Mutex::new(Shared::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let spawned = Instant::now();
        let mut child = if kind == Kind::Weir {
            let child = command
                .stdin(Stdio::null())
                .stdout(File::create(&stdout_log)?)
                .stderr(stderr)
                .spawn()?;
            let log = dirs.checkpoint.join("events").join("events.jsonl");
            // A restart appends to the log of the run before: follow only what is new.
            let from = fs::metadata(&log).map_or(0, |m| m.len());
            let (sh, st) = (Arc::clone(&shared), Arc::clone(&stop));
            threads.push(std::thread::spawn(move || {
                tail_events(&log, from, &sh, &st)
            }));
            child
        } else {
            let mut child = command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(stderr)
                .spawn()?;
            let out = child
                .stdout
                .take()
                .ok_or_else(|| io::Error::other("the child has no stdout pipe"))?;
            let sh = Arc::clone(&shared);
            let mut tee = File::create(&stdout_log)?;
            threads.push(std::thread::spawn(move || {
                read_listener_lines(out, &mut tee, &sh);
            }));
            child
        };
        let rss = Arc::new(Mutex::new(Vec::new()));
        let (r, st, pid) = (Arc::clone(&rss), Arc::clone(&stop), child.id());
        threads.push(std::thread::spawn(move || {
            // Memory sampled every 100 ms (a sampling period, not a wait for an event).
            while !st.load(Ordering::SeqCst) {
                let kb: u64 = tree(pid)
                    .iter()
                    .filter_map(|p| status_kb(*p, "VmRSS:"))
                    .sum();
                if kb > 0 {
                    r.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((Instant::now(), kb));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(io::Error::other(format!(
                "{kind} exited at once with {status}"
            )));
        }
        Ok(Running {
            child,
            spawned,
            shared,
            stop,
            threads,
            rss,
            peak_kb: 0,
        })
    }
}

impl Running {
    /// The batches completed so far.
    pub(crate) fn batches(&self) -> Vec<BatchStat> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .batches
            .clone()
    }

    /// Waits until `n` batches have completed (or `timeout`, or the process exits); the
    /// moment the n-th was seen.
    pub(crate) fn wait_batches(&mut self, n: usize, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.shared;
        let mut guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(b) = guard.batches.get(n.saturating_sub(1)) {
                return Some(b.seen);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            // Woken by each batch; the bounded wait also notices an exited child.
            let (g, _) = cvar
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)))
                .unwrap_or_else(PoisonError::into_inner);
            guard = g;
            drop(guard);
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return None;
            }
            guard = lock.lock().unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Peak RSS (sum of VmHWM over the process tree) as of now, in KiB; remembered.
    pub(crate) fn peak_rss_kb(&mut self) -> u64 {
        let kb: u64 = tree(self.child.id())
            .iter()
            .filter_map(|p| status_kb(*p, "VmHWM:"))
            .sum();
        self.peak_kb = self.peak_kb.max(kb);
        self.peak_kb
    }

    /// CPU time (user + system, all threads) the process tree has used so far, in seconds,
    /// from `/proc/PID/stat` (clock ticks of `getconf CLK_TCK`, 100 on Linux).
    pub(crate) fn cpu_secs(&self) -> Option<f64> {
        let ticks: u64 = tree(self.child.id())
            .iter()
            .filter_map(|p| cpu_ticks(*p))
            .sum();
        (ticks > 0).then(|| ticks as f64 / clock_ticks_per_sec())
    }

    /// CPU seconds (user + system) each thread of the process (not its descendants) has used
    /// so far: (thread id, thread name, seconds), from `/proc/PID/task/TID/stat`.
    pub(crate) fn thread_cpu(&self) -> Vec<(u32, String, f64)> {
        let pid = self.child.id();
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .filter_map(|t| {
                let tid: u32 = t.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
                let name = stat.get(stat.find('(')? + 1..stat.rfind(')')?)?.to_owned();
                let mut after = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
                let utime: u64 = after.next()?.parse().ok()?;
                let stime: u64 = after.next()?.parse().ok()?;
                Some((tid, name, (utime + stime) as f64 / clock_ticks_per_sec()))
            })
            .collect()
    }

    /// The RSS samples (every 100 ms, KiB of the process tree) taken after `since`.
    pub(crate) fn rss_samples(&self, since: Instant) -> Vec<(Instant, u64)> {
        self.rss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(t, _)| *t >= since)
            .copied()
            .collect()
    }

    /// Median sampled RSS (KiB) of the samples taken after `since`.
    pub(crate) fn rss_median_kb(&self, since: Instant) -> Option<u64> {
        let mut v: Vec<u64> = self
            .rss
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|(t, _)| *t >= since)
            .map(|(_, kb)| *kb)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    /// `kill -9` of the process and every descendant (the JVM under PySpark).
    pub(crate) fn kill9(mut self) -> io::Result<()> {
        self.peak_rss_kb();
        let pids = tree(self.child.id());
        for pid in pids.iter().skip(1) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(pid.to_string())
                .status();
        }
        self.child.kill()?;
        self.child.wait()?;
        self.finish();
        Ok(())
    }

    /// Stops it: SIGTERM (weir stops gracefully, a JVM runs its shutdown hooks), then
    /// `kill -9` of what is left after `grace`. Returns the peak RSS in KiB.
    pub(crate) fn stop(mut self, grace: Duration) -> io::Result<u64> {
        let peak = self.peak_rss_kb();
        let pids = tree(self.child.id());
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                break;
            }
            // Polling the exit of a child we signalled; bounded by `grace`.
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in pids.iter().skip(1) {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
        if self.child.try_wait()?.is_none() {
            self.child.kill()?;
        }
        self.child.wait()?;
        self.finish();
        Ok(peak)
    }

    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.finish();
        }
    }
}

fn push(shared: &(Mutex<Shared>, Condvar), stat: BatchStat) {
    let (lock, cvar) = shared;
    lock.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .batches
        .push(stat);
    cvar.notify_all();
}

/// Follows weir's event log (it is flushed line by line) from byte `from` until `stop`.
fn tail_events(log: &Path, from: u64, shared: &(Mutex<Shared>, Condvar), stop: &AtomicBool) {
    let mut offset = from;
    let mut partial = String::new();
    while !stop.load(Ordering::SeqCst) {
        if let Ok(mut file) = File::open(log)
            && file.seek(SeekFrom::Start(offset)).is_ok()
        {
            let mut reader = BufReader::new(file);
            let mut line = String::new();
            while let Ok(n) = reader.read_line(&mut line) {
                if n == 0 {
                    break;
                }
                offset += n as u64;
                partial.push_str(&line);
                line.clear();
                if !partial.ends_with('\n') {
                    continue; // a line still being written
                }
                if let Ok(record) = serde_json::from_str::<EventRecord>(partial.trim_end())
                    && let Event::BatchCompleted {
                        batch_time_ms,
                        scheduling_delay_ms,
                        processing_ms,
                        ..
                    } = record.event
                {
                    push(
                        shared,
                        BatchStat {
                            batch_time_ms,
                            processing_ms,
                            scheduling_ms: scheduling_delay_ms,
                            completed_wall_ms: record.time_ms,
                            seen: Instant::now(),
                        },
                    );
                }
                partial.clear();
            }
        }
        // The log is a file another process appends to: look again in 5 ms.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses the Spark jobs' `WEIR_BENCH batch_completed k=v ...` lines (and copies stdout to
/// `tee`).
fn read_listener_lines(out: impl io::Read, tee: &mut File, shared: &(Mutex<Shared>, Condvar)) {
    use std::io::Write;
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(tee, "{line}");
        let Some(rest) = line.strip_prefix("WEIR_BENCH batch_completed ") else {
            continue;
        };
        let kv: HashMap<&str, u64> = rest
            .split_whitespace()
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k, v.parse::<i64>().ok()?.max(0) as u64))
            })
            .collect();
        let get = |k: &str| kv.get(k).copied().unwrap_or(0);
        push(
            shared,
            BatchStat {
                batch_time_ms: get("batch_time_ms"),
                processing_ms: get("processing_ms"),
                scheduling_ms: get("scheduling_delay_ms"),
                completed_wall_ms: get("wall_ms"),
                seen: Instant::now(),
            },
        );
    }
}

/// A KiB field of `/proc/<pid>/status`.
fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `utime + stime` of `pid` (fields 14 and 15 of `/proc/PID/stat`), in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)` start at field 3 (state): utime is the 12th of them.
    let mut after = stat[stat.rfind(')')? + 1..].split_whitespace().skip(11);
    let utime: u64 = after.next()?.parse().ok()?;
    let stime: u64 = after.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `getconf CLK_TCK` (asked once), or Linux's 100 if it cannot be asked.
fn clock_ticks_per_sec() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// `pid` and its descendants (from `/proc/*/stat`).
fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Fields after the `(comm)`: state ppid ...
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<u32>().ok())
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// The output directory read back: words per batch (`batch-<ms>/part-*`).
pub(crate) fn read_output(dir: &Path) -> BTreeMap<u64, HashMap<String, u64>> {
    let mut out = BTreeMap::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(ms) = name
            .strip_prefix("batch-")
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        let mut counts: HashMap<String, u64> = HashMap::new();
        if let Ok(parts) = fs::read_dir(e.path()) {
            for p in parts.flatten() {
                if !p.file_name().to_string_lossy().starts_with("part-") {
                    continue;
                }
                if let Ok(text) = fs::read_to_string(p.path()) {
                    for line in text.lines() {
                        if let Some((w, c)) = line.split_once('\t') {
                            *counts.entry(w.to_owned()).or_insert(0) +=
                                c.trim().parse::<u64>().unwrap_or(0);
                        }
                    }
                }
            }
        }
        out.insert(ms, counts);
    }
    out
}
