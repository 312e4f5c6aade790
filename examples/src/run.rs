//! Running a streaming context until it is told to stop: Ctrl-C or SIGTERM, a number of batches, a
//! duration — or the engine giving up, which is the one fatal outcome and is returned as the
//! engine's error.

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use weir::config_file::{ConfigFileError, ConfigOverrides};
use weir::logging::{LOG_FORMAT_VAR, LogFormat};
use weir::{Event, StreamingConfig, StreamingContext};

/// An error from an example, printed as one sentence before a non-zero exit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The flags every example shares (`#[command(flatten)]` them into its `Args`).
#[derive(clap::Args, Clone, Debug)]
pub struct CommonArgs {
    /// How log lines are written to stderr: `text`, or `json` (one object a line, with the
    /// `batch_time_ms` of the batch they belong to). `RUST_LOG` filters them (default: warn).
    #[arg(long, value_name = "FORMAT", env = LOG_FORMAT_VAR, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Read the engine's and the streaming settings from this TOML file (docs/operations.md,
    /// "Configuration file"). Precedence: a flag given explicitly, then a `WEIR_…`
    /// environment variable, then the file, then the example's default.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Start from this savepoint (a directory or an s3:// URL written by `weir savepoint`),
    /// also after a change to the program: state is matched by operator id. Restored once:
    /// a later start with the same flag resumes from the job's own checkpoints.
    #[arg(long, value_name = "PATH")]
    pub restore_from: Option<String>,
    /// With --restore-from: drop the state of operators that no longer exist instead of
    /// refusing to start (Flink's --allowNonRestoredState).
    #[arg(long, requires = "restore_from")]
    pub allow_non_restored_state: bool,
}

impl CommonArgs {
    /// What `--config FILE` (if given) and then the `WEIR_…` environment variables set; the
    /// example adds its explicit flags with [`ConfigOverrides::set`] and applies the lot over
    /// its defaults.
    ///
    /// # Errors
    ///
    /// The file or a variable is invalid: one sentence naming the key and the file or variable.
    pub fn overrides(&self) -> Result<ConfigOverrides, ConfigFileError> {
        weir::config_file::load(self.config.as_deref())
    }

    /// `config` with what `--restore-from` and `--allow-non-restored-state` ask for.
    ///
    /// # Errors
    ///
    /// The `--restore-from` location is not usable (an `s3://` URL in a build without S3).
    pub fn restore(&self, mut config: StreamingConfig) -> Result<StreamingConfig, weir::Error> {
        if let Some(path) = &self.restore_from {
            let savepoint = weir::Storage::from_location(path)
                .map_err(|e| weir::Error::Config(format!("--restore-from: {e}")))?;
            config = config.restore_from_savepoint(savepoint);
        }
        if self.allow_non_restored_state {
            config = config.allow_non_restored_state(true);
        }
        Ok(config)
    }
}

/// Runs `program` on a multi-threaded tokio runtime, with `tracing` output at `warn` (or as
/// `RUST_LOG` says) on stderr in `log_format` (see [`weir::logging`]); an error is printed as
/// `<name>: <error>` and the process exits with status 1.
pub fn main_with<F>(name: &str, log_format: LogFormat, program: F) -> ExitCode
where
    F: Future<Output = Result<(), BoxError>>,
{
    // Before any other thread starts: two malloc arenas keep the process's memory near what
    // the engine holds (weir::memory; `MALLOC_ARENA_MAX` in the environment wins).
    weir::memory::limit_malloc_arenas(2);
    let _ = weir::logging::init(log_format);
    // Thread names by role, so that per-thread CPU (the bench's per-stage report, `top -H`)
    // shows where the time goes: tokio starts its workers first, when the runtime is built,
    // and every later thread is the blocking pool's (the batch jobs, planning).
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let started = std::sync::atomic::AtomicUsize::new(0);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name_fn(move || {
            let n = started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n < workers {
                format!("weir-worker-{n}")
            } else {
                "weir-blocking".to_owned()
            }
        })
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{name}: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(program);
    // What is still running (actors winding down) ends first, so the error is the last line.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("{name}: {err}");
            ExitCode::FAILURE
        }
    }
}

/// When [`run_until_stopped`] stops the context (besides Ctrl-C).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// Stop gracefully after this many batches completed (in this process).
    pub max_batches: Option<u64>,
    /// Stop gracefully after this long.
    pub duration: Option<Duration>,
}

/// Why [`run_until_stopped`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Ctrl-C (SIGINT) or SIGTERM.
    Interrupted,
    /// `max_batches` batches completed.
    Batches,
    /// `duration` passed.
    Duration,
    /// The program's event handler asked to stop.
    Asked,
    /// The engine was stopped from outside (`POST /api/v1/stop`).
    Remote,
}

/// Starts `ctx`, hands every engine event to `on_event` (which returns `true` to stop), and
/// stops the context gracefully when asked, when a limit is reached, or on Ctrl-C (SIGINT)
/// or SIGTERM. Prints `running; ...` once
/// those signals stop it gracefully.
///
/// # Errors
///
/// The context did not start, or the engine failed or gave up
/// ([`weir::EngineError::GaveUp`] names the actor, how often it failed and why).
pub async fn run_until_stopped(
    mut ctx: StreamingContext,
    limits: Limits,
    mut on_event: impl FnMut(&Event) -> bool,
) -> Result<Stopped, BoxError> {
    let root = ctx.config().engine.names().root();
    ctx.start().await?;
    let mut events = ctx.events()?;
    if let Some(addr) = ctx.http_addr() {
        println!(
            "http: listening on http://{addr} (dashboard at /, metrics at /metrics, API under /api/v1/)"
        );
    }
    let ended = ctx.ended();
    let ended = async move {
        match ended {
            Some(ended) => ended.await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(ended);
    let deadline = async {
        match limits.duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    // Registered now, so a signal from here on stops gracefully (before, it ends the process).
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    println!("running; Ctrl-C (SIGINT) or SIGTERM stops gracefully");
    let mut completed = 0u64;
    let stopped = loop {
        tokio::select! {
            _ = interrupt.recv() => break Stopped::Interrupted,
            _ = terminate.recv() => break Stopped::Interrupted,
            () = &mut deadline => break Stopped::Duration,
            () = &mut ended => {
                // Stopped from outside (the HTTP API), or it gave up: this says which.
                ctx.await_termination().await?;
                return Ok(Stopped::Remote);
            }
            record = events.next() => {
                let Some(record) = record else {
                    // The event feed closed: the engine is gone; stop reports why.
                    ctx.stop(false).await?;
                    return Err("the engine ended on its own".into());
                };
                if on_event(&record.event) {
                    break Stopped::Asked;
                }
                match &record.event {
                    Event::ActorGaveUp { actor, .. } if *actor == root => {
                        // The engine gave up: stopping returns its error.
                        ctx.stop(false).await?;
                        return Err("the engine gave up".into());
                    }
                    Event::BatchCompleted { .. } => {
                        completed += 1;
                        if limits.max_batches.is_some_and(|max| completed >= max) {
                            break Stopped::Batches;
                        }
                    }
                    _ => {}
                }
            }
        }
    };
    ctx.stop(true).await?;
    Ok(stopped)
}
