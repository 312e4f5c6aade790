//! `kill -9` of a whole process, on a schedule: a program is started, killed with `SIGKILL`
//! after each step's gap, and started again with the same arguments; the last life is left
//! running for the caller to finish and check.
//!
//! Works on any program (yours too): give [`ProcessChaos`] its path, its arguments, a
//! directory for the logs of every life, and a `ready` marker — a prefix of the stdout line the
//! program prints once it has recovered and runs (weir's examples print `running;`). The time
//! from a restart to that line is the life's recovery time.
//!
//! [`example_binary`] builds one of `weir-examples`' binaries with the `cargo` that runs the
//! tests and returns its path (a test of this package cannot depend on another package's
//! binary directly).

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::schedule::{Fault, Schedule};

/// Why a process run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The program could not be started.
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A log file could not be written.
    #[error("cannot write the log `{path}`: {source}")]
    Log {
        /// The log file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A life ended by itself before it was killed.
    #[error("life {life} exited by itself with {status} before it was killed")]
    ExitedEarly {
        /// Which life (from 0).
        life: usize,
        /// How it ended.
        status: ExitStatus,
    },
    /// A life did not print its `ready` line in time.
    #[error("life {life} did not print a line starting with `{marker}` within {waited:?}")]
    NotReady {
        /// Which life.
        life: usize,
        /// The marker.
        marker: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The moment a test waited for to kill a life never came.
    #[error("life {life}: the moment to kill it never came: {what}")]
    NoMoment {
        /// Which life.
        life: usize,
        /// What was waited for.
        what: String,
    },
    /// Killing or reaping failed, or the process ended by another signal.
    #[error("life {life}: {what}")]
    Kill {
        /// Which life.
        life: usize,
        /// What went wrong.
        what: String,
    },
    /// Building a binary failed.
    #[error("`cargo build -p {package} --bin {bin}` failed: {output}")]
    Build {
        /// The package.
        package: String,
        /// The binary.
        bin: String,
        /// What cargo said.
        output: String,
    },
}

/// One life of the process.
#[derive(Debug)]
pub struct Life {
    /// When it was started, from the start of the run.
    pub started_at: Duration,
    /// How long until it printed its `ready` line (its recovery time after a kill).
    pub ready_after: Option<Duration>,
    /// How it ended (`None` for the life left running).
    pub status: Option<ExitStatus>,
}

/// A running life: the child and its stdout lines.
#[derive(Debug)]
pub struct Running {
    /// The process.
    pub child: Child,
    lines: mpsc::Receiver<String>,
    copier: Option<JoinHandle<()>>,
    started: Instant,
}

impl Running {
    /// Waits (at most `limit`) for a stdout line starting with `marker`; how long it took.
    pub fn wait_for_line(&mut self, marker: &str, limit: Duration) -> Option<Duration> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(marker) => return Some(self.started.elapsed()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits (at most `limit`) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        // The stdout copier ends when the process closes its stdout, i.e. when it exits
        // (or closes it): an awaited event, then the status is there to reap.
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
        self.child.wait().ok()
    }

    /// Sends `SIGKILL` and reaps the process.
    pub fn kill9(mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        let status = self.child.wait()?;
        if let Some(copier) = self.copier.take() {
            let _ = copier.join();
        }
        Ok(status)
    }
}

/// A program killed with `kill -9` on a schedule (see the module documentation).
#[derive(Clone, Debug)]
pub struct ProcessChaos {
    /// The program.
    pub program: PathBuf,
    /// Its arguments (the same for every life).
    pub args: Vec<OsString>,
    /// Environment variables set for every life, beside the test's own.
    pub env: Vec<(OsString, OsString)>,
    /// Where `life-<n>.stdout` and `life-<n>.stderr` go.
    pub logs: PathBuf,
    /// The stdout line prefix a life prints once it runs.
    pub ready: String,
    /// How long a life may take to print it.
    pub ready_within: Duration,
}

impl ProcessChaos {
    /// Starts life `n`.
    pub fn spawn(&self, n: usize) -> Result<Running, ProcessError> {
        let log = |what: &str| {
            let path = self.logs.join(format!("life-{n}.{what}"));
            File::create(&path).map_err(|source| ProcessError::Log {
                path: path.display().to_string(),
                source,
            })
        };
        let mut stdout_log = log("stdout")?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log("stderr")?)
            .spawn()
            .map_err(|source| ProcessError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        let (tx, lines) = mpsc::channel();
        let copier = child.stdout.take().map(|stdout| {
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let _ = writeln!(stdout_log, "{line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
        });
        Ok(Running {
            child,
            lines,
            copier,
            started: Instant::now(),
        })
    }

    /// Runs one life per [`Fault::ProcessKill9`] step of `schedule`: each life is killed with
    /// `SIGKILL` after the step's gap from the previous one (measured from when the life was
    /// ready), and must not have ended by itself before. Returns the lives and the next,
    /// running one.
    pub fn run(&self, schedule: &Schedule) -> Result<(Vec<Life>, Running), ProcessError> {
        let gaps: Vec<Duration> = schedule
            .steps
            .iter()
            .filter(|s| matches!(s.fault, Fault::ProcessKill9))
            .scan(Duration::ZERO, |previous, step| {
                let gap = step.at.saturating_sub(*previous);
                *previous = step.at;
                Some(gap)
            })
            .collect();
        // The life runs for the step's gap (the schedule's timing), then is killed.
        self.run_killing(gaps.len(), |n, _| {
            std::thread::sleep(gaps[n]);
            Ok(())
        })
    }

    /// Runs `lives` lives, each killed with `SIGKILL` as soon as `kill_when(n, life)` returns
    /// `Ok` (it is called once the life printed [`ready`](Self::ready), and waits for the moment
    /// to kill: an event the test watches for, or a delay); a life must not end by itself
    /// before. Returns the lives and the next, running one.
    pub fn run_killing(
        &self,
        lives: usize,
        mut kill_when: impl FnMut(usize, &mut Running) -> Result<(), ProcessError>,
    ) -> Result<(Vec<Life>, Running), ProcessError> {
        let start = Instant::now();
        let mut done = Vec::new();
        for n in 0..lives {
            let started_at = start.elapsed();
            let mut running = self.spawn(n)?;
            let ready_after = running.wait_for_line(&self.ready, self.ready_within);
            if ready_after.is_none() {
                let _ = running.kill9();
                return Err(ProcessError::NotReady {
                    life: n,
                    marker: self.ready.clone(),
                    waited: self.ready_within,
                });
            }
            if let Err(err) = kill_when(n, &mut running) {
                let _ = running.kill9();
                return Err(err);
            }
            if let Ok(Some(status)) = running.child.try_wait() {
                return Err(ProcessError::ExitedEarly { life: n, status });
            }
            let status = running.kill9().map_err(|e| ProcessError::Kill {
                life: n,
                what: e.to_string(),
            })?;
            if status.signal() != Some(9) {
                return Err(ProcessError::Kill {
                    life: n,
                    what: format!("ended with {status}, not by SIGKILL"),
                });
            }
            done.push(Life {
                started_at,
                ready_after,
                status: Some(status),
            });
        }
        let last = self.spawn(done.len())?;
        Ok((done, last))
    }

    /// Everything the lives wrote to stdout and stderr, for a failure message.
    pub fn logs(&self) -> String {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.logs)
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|p| {
                format!(
                    "== {}\n{}",
                    p.display(),
                    std::fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// The features [`example_binary`] builds with: those of the build this test binary belongs
/// to, as far as they can be told, so that the build reuses its artifacts (a different feature
/// set of weir-actors or weir-streaming recompiles both, and the example: minutes in CI).
///
/// Both of this package's features on is taken for the README's `cargo test --workspace
/// --all-features` (CI's run), which builds every crate with all its features; otherwise the
/// features this package builds weir-actors with. A wrong guess costs a build, never a result.
/// With `s3`, the examples take `s3://` locations too. (The full list names weir-examples' own
/// `kafka` feature: it is used for that package only.)
fn example_features(package: &str) -> &'static str {
    if cfg!(all(feature = "s3", feature = "kafka")) && package == "weir-examples" {
        "weir-actors/failpoints,weir-actors/fuzzing,weir-actors/s3,\
         weir-streaming/failpoints,weir-streaming/fuzzing,weir-streaming/s3,weir-streaming/kafka,\
         kafka"
    } else if cfg!(feature = "s3") {
        "weir-actors/failpoints,weir-actors/s3"
    } else {
        "weir-actors/failpoints"
    }
}

/// Builds binary `bin` of `package` (which must depend on `weir-actors`) with the `cargo`
/// running the tests (same target directory, same profile as this test binary, weir-actors'
/// `failpoints` feature on as in this package) and returns its path.
///
/// A test cannot depend on another package's binary (`CARGO_BIN_EXE_*` is only set for the
/// package's own), so the test builds it; cargo does not hold its build lock while tests
/// run, and the second build of an unchanged binary is a no-op.
pub fn example_binary(package: &str, bin: &str) -> Result<PathBuf, ProcessError> {
    let build_error = |output: String| ProcessError::Build {
        package: package.to_owned(),
        bin: bin.to_owned(),
        output,
    };
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().map_err(|e| build_error(e.to_string()))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| build_error(format!("no target directory above {}", exe.display())))?;
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| build_error(format!("no target directory above {}", exe.display())))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--features", example_features(package)])
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        command.arg("--release");
    }
    let output = command.output().map_err(|e| build_error(e.to_string()))?;
    if !output.status.success() {
        return Err(build_error(
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ));
    }
    Ok(profile_dir.join(bin))
}
