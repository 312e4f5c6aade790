//! Runs a [`Schedule`] against an in-process engine running a [`Workload`] under load, and
//! judges the [`History`].
//!
//! The runner starts an [`Engine`] (actor names under a prefix of its own), records every
//! engine event, samples resident memory, and injects each step's fault at its time:
//!
//! * kills by stable name through ractor's registry;
//! * panics inside an actor's handler (`weir_actors::faults`: the next message it handles);
//! * storage errors, torn writes, stalls and a full disk through `weir-actors`' failpoints;
//! * the driver killed while held at a [`HoldPoint`] ([`Fault`]s of the schedule, or
//!   [`Runner::kill_driver_at`]).
//!
//! After each fault it waits until the pipeline has recovered — the failed actor started again
//! and a batch with records completed — and records how long that took. After the last step it
//! lets a few more batches complete, stops the engine gracefully and checks the invariants.
//!
//! Failpoints are process-global, so runs in one process are serialised (a global lock).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use weir_actors::Event;
use weir_actors::EventSubscription;
use weir_actors::Names;
use weir_actors::Storage;
use weir_actors::{Engine, EngineConfig, EngineError};

use crate::history::{History, Recorder, rss_bytes};
use crate::hold::{HoldPoint, Holds, hold_failpoint};
use crate::invariants::{Bounds, Report, check};
use crate::schedule::{ActorKind, Fault, Schedule};
use crate::workload::{HarnessContext, Workload};

/// The message of every panic the harness injects.
pub const INJECTED_PANIC: &str = "injected by the chaos harness";

/// Installs (once) a panic hook that reports the harness's own panics in one line and leaves
/// every other panic to the previous hook. Without it each injected panic prints a backtrace,
/// and symbolising the first one loads the debug info (about 100 MiB of resident memory, which
/// the memory bound would count).
fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if message.is_some_and(|m| m.contains(INJECTED_PANIC)) {
                let thread = std::thread::current();
                eprintln!(
                    "thread '{}' panicked: {INJECTED_PANIC} (at {})",
                    thread.name().unwrap_or("<unnamed>"),
                    info.location().map_or_else(String::new, |l| l.to_string())
                );
            } else {
                previous(info);
            }
        }));
    });
}

/// How long an armed panic may wait for its actor's next message.
const PANIC_WAIT: Duration = Duration::from_secs(2);

static RUN_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The failpoint that makes WAL writes fail with "no space left on device".
pub const WAL_DISK_FULL: &str = "wal::write::enospc";
/// The failpoint that makes checkpoint writes fail with "no space left on device".
pub const CHECKPOINT_DISK_FULL: &str = "checkpoint::write::enospc";

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Where the engine keeps its WALs and checkpoints.
    pub storage: Storage,
    /// Prefix of the engine's actor names (unique per run in a process).
    pub name_prefix: String,
    /// The bounds the invariants are checked against.
    pub bounds: Bounds,
    /// How long to wait for the pipeline to recover after a fault before recording that it
    /// did not (and moving on).
    pub recovery_wait: Duration,
    /// Batches with records that must complete after the last fault before the engine is
    /// stopped.
    pub tail_batches: usize,
    /// Print a line per fault as it is injected.
    pub verbose: bool,
    /// If the engine gives up, call [`Workload::restarted`] and start it again over the same
    /// storage, let a few batches complete and stop it; the invariants then cover both lives
    /// (what was acknowledged before the give-up must be committed after the restart).
    pub restart_after_give_up: bool,
    /// Checkpoint writes in flight at once. Default: [`CHAOS_MAX_CONCURRENT_CHECKPOINTS`].
    pub max_concurrent_checkpoints: usize,
}

impl RunConfig {
    /// A run in `storage`, its actors named under `name_prefix`, with default bounds.
    pub fn new(storage: Storage, name_prefix: impl Into<String>) -> Self {
        RunConfig {
            storage,
            name_prefix: name_prefix.into(),
            bounds: Bounds::default(),
            recovery_wait: Duration::from_secs(30),
            tail_batches: 3,
            verbose: false,
            restart_after_give_up: false,
            max_concurrent_checkpoints: CHAOS_MAX_CONCURRENT_CHECKPOINTS,
        }
    }
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// Everything recorded.
    pub history: History,
    /// The invariants' verdict.
    pub report: Report,
    /// How the engine ended.
    pub engine: Result<(), EngineError>,
    /// How the second life ended, if the engine gave up and
    /// [`RunConfig::restart_after_give_up`] started it again.
    pub restarted: Option<Result<(), EngineError>>,
}

/// Checkpoint writes in flight at once in a chaos run ([`chaos_config`]).
pub const CHAOS_MAX_CONCURRENT_CHECKPOINTS: usize = 3;

/// The engine settings a chaos run starts from: short intervals, up to
/// [`CHAOS_MAX_CONCURRENT_CHECKPOINTS`] checkpoint writes at once, and restart budgets large
/// enough that repeated kills are healed rather than given up on (a workload's
/// [`Workload::configure`] may change any of it, e.g. to spend a budget on purpose).
pub fn chaos_config(storage: Storage, name_prefix: &str) -> EngineConfig {
    let mut c = EngineConfig::new(storage);
    c.name_prefix = name_prefix.to_owned();
    c.batch_interval = Duration::from_millis(100);
    c.block_interval = Duration::from_millis(20);
    c.receiver_restart_delay = Duration::from_millis(20);
    c.executors = 2;
    // Received blocks held in memory (the rest is read back from the WAL): the part of the
    // memory bound the engine is configured with.
    c.block_store_bytes = 16 << 20;
    c.graceful_stop_timeout = Duration::from_secs(30);
    // Checkpoints overlap (Flink's maximum concurrent checkpoints): batches are held until
    // their checkpoint is durable, writes finish out of order, cleanup follows durability —
    // the paths that lost records before they were fixed (docs/chaos.md, "Findings").
    c.checkpoint_policy.max_concurrent = CHAOS_MAX_CONCURRENT_CHECKPOINTS;
    for policy in [
        &mut c.driver_policy,
        &mut c.receiver_policy,
        &mut c.executor_policy,
    ] {
        policy.intensity.max_restarts = 1_000_000;
        policy.backoff.initial = Duration::from_millis(10);
        policy.backoff.max = Duration::from_millis(100);
    }
    c
}

/// Runs schedules against one workload.
#[derive(Debug)]
pub struct Runner<W: Workload> {
    workload: Arc<W>,
    config: RunConfig,
}

/// The part of a run shared by the fault injectors.
struct Live {
    names: Names,
    recorder: Recorder,
    holds: Holds,
    waiter: EventSubscription,
    recovery_wait: Duration,
    verbose: bool,
    failpoints_set: BTreeSet<&'static str>,
    ended: bool,
}

impl<W: Workload> Runner<W> {
    /// A runner for `workload`.
    pub fn new(workload: Arc<W>, config: RunConfig) -> Self {
        Runner { workload, config }
    }

    /// The workload.
    pub fn workload(&self) -> &Arc<W> {
        &self.workload
    }

    /// Runs `schedule` and checks the invariants.
    pub async fn run(&self, schedule: &Schedule) -> Outcome {
        let steps: Vec<_> = schedule.steps.clone();
        self.run_steps(
            steps
                .into_iter()
                .map(|s| (s.at, Action::Fault(s.fault)))
                .collect(),
        )
        .await
    }

    /// Kills the driver while it is held at each of `points` in turn, then checks the
    /// invariants.
    pub async fn kill_driver_at(&self, points: &[HoldPoint], gap: Duration) -> Outcome {
        let mut at = Duration::ZERO;
        let actions = points
            .iter()
            .map(|p| {
                at += gap;
                (at, Action::KillDriverAt(*p))
            })
            .collect();
        self.run_steps(actions).await
    }

    /// Starts one life of the engine over the workload's parts, and a task feeding the
    /// engine's events to the recorder.
    async fn start_engine(
        &self,
        ctx: &HarnessContext,
    ) -> Result<(Engine, JoinHandle<()>, EventSubscription, Names), EngineError> {
        let parts = self.workload.build(ctx);
        let mut config = chaos_config(self.config.storage.clone(), &self.config.name_prefix);
        config.checkpoint_policy.max_concurrent = self.config.max_concurrent_checkpoints;
        self.workload.configure(&mut config);
        let names = config.names();
        let engine = Engine::start(config, parts.pipeline, parts.receivers).await?;
        let mut events = engine.events();
        let waiter = engine.events();
        let rec = ctx.recorder.clone();
        let recording = tokio::spawn(async move {
            while let Some(r) = events.next().await {
                rec.event(&r.event);
            }
        });
        Ok((engine, recording, waiter, names))
    }

    async fn run_steps(&self, actions: Vec<(Duration, Action)>) -> Outcome {
        let _serial = RUN_LOCK.lock().await;
        quiet_injected_panics();
        let recorder = Recorder::new();
        let holds = Holds::default();
        let ctx = HarnessContext {
            recorder: recorder.clone(),
            holds: holds.clone(),
        };
        let (engine, recording, waiter, names) = match self.start_engine(&ctx).await {
            Ok(started) => started,
            Err(err) => return self.finish(&recorder, Err(err), None),
        };
        let rec = recorder.clone();
        let sampling = tokio::spawn(async move {
            loop {
                if let Some(rss) = rss_bytes() {
                    rec.memory_sample(rss);
                }
                // Pacing of the sampler, not synchronisation.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let mut live = Live {
            names,
            recorder: recorder.clone(),
            holds,
            waiter,
            recovery_wait: self.config.recovery_wait,
            verbose: self.config.verbose,
            failpoints_set: BTreeSet::new(),
            ended: false,
        };
        // Warm up: the pipeline works before the first fault.
        if live.batches_with_records(1).await
            && let Some(rss) = rss_bytes()
        {
            recorder.memory_baseline(rss);
        }
        let start = Instant::now();
        for (at, action) in actions {
            if live.ended {
                break;
            }
            tokio::time::sleep_until(start + at).await;
            live.act(action).await;
        }
        live.clear_failpoints();
        if self.config.bounds.give_up_expected {
            // The scenario spends a restart budget: wait (bounded) for the engine to give up.
            live.wait_for(|_| false).await;
        } else if !live.ended {
            live.batches_with_records(self.config.tail_batches).await;
        }
        let engine_result = if live.ended {
            end_of(engine).await
        } else {
            engine.stop(true).await
        };
        // The feed ends once every actor (and with them the hub) is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), recording).await;
        let mut second_life = None;
        if engine_result.is_err() && self.config.restart_after_give_up {
            // As an operator would: fix the cause, start again over the same storage.
            self.workload.restarted();
            second_life = Some(match self.start_engine(&ctx).await {
                Ok((engine, recording, waiter, _)) => {
                    live.waiter = waiter;
                    live.ended = false;
                    live.batches_with_records(self.config.tail_batches).await;
                    let result = if live.ended {
                        end_of(engine).await
                    } else {
                        engine.stop(true).await
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(5), recording).await;
                    result
                }
                Err(err) => Err(err),
            });
        }
        sampling.abort();
        self.finish(&recorder, engine_result, second_life)
    }

    fn finish(
        &self,
        recorder: &Recorder,
        engine: Result<(), EngineError>,
        restarted: Option<Result<(), EngineError>>,
    ) -> Outcome {
        if let Err(err) = &engine {
            recorder.engine_error(err.to_string());
        }
        if let Some(visible) = self.workload.visible() {
            recorder.set_visible(visible);
        }
        let history = recorder.history();
        let report = check(&history, &self.config.bounds);
        Outcome {
            history,
            report,
            engine,
            restarted,
        }
    }
}

/// Waits (bounded) for an engine that gave up to end.
async fn end_of(engine: Engine) -> Result<(), EngineError> {
    tokio::time::timeout(Duration::from_secs(30), engine.await_termination())
        .await
        .unwrap_or_else(|_| {
            Err(EngineError::Failed(
                "the engine gave up but did not end within 30 s".to_owned(),
            ))
        })
}

/// Lets a held part go (and cleans up the hold).
type Release = Box<dyn FnOnce(&mut Live) + Send>;

enum Action {
    Fault(Fault),
    KillDriverAt(HoldPoint),
}

impl Live {
    fn say(&self, line: impl FnOnce() -> String) {
        if self.verbose {
            println!("{:>8} ms  {}", self.recorder.elapsed().as_millis(), line());
        }
    }

    /// Waits for `n` batches with records to complete; false if they did not within the wait,
    /// or the engine ended.
    async fn batches_with_records(&mut self, n: usize) -> bool {
        let mut seen = 0;
        self.wait_for(|e| {
            if matches!(e, Event::BatchCompleted { records, .. } if *records > 0) {
                seen += 1;
            }
            seen >= n
        })
        .await
    }

    /// Waits until `done` says so for an event; false after the recovery wait, or if the
    /// engine ended (the root gave up).
    async fn wait_for(&mut self, done: impl FnMut(&Event) -> bool) -> bool {
        self.wait_within(self.recovery_wait, done).await
    }

    /// [`Live::wait_for`] with another bound.
    async fn wait_within(&mut self, bound: Duration, mut done: impl FnMut(&Event) -> bool) -> bool {
        let root = self.names.root();
        let waiter = &mut self.waiter;
        let ended = &mut self.ended;
        tokio::time::timeout(bound, async {
            loop {
                let Some(r) = waiter.next().await else {
                    *ended = true;
                    return false;
                };
                if matches!(&r.event, Event::ActorGaveUp { actor, .. } if *actor == root) {
                    *ended = true;
                    return false;
                }
                if done(&r.event) {
                    return true;
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Waits until `name` has failed, started again, and a batch with records completed.
    async fn healed(&mut self, name: &str) -> bool {
        let (mut failed, mut started) = (false, false);
        self.wait_for(|e| match e {
            Event::ActorFailed { actor, .. } if actor == name => {
                failed = true;
                false
            }
            Event::ActorStarted { actor } if failed && actor == name => {
                started = true;
                false
            }
            Event::BatchCompleted { records, .. } => started && *records > 0,
            _ => false,
        })
        .await
    }

    fn set_failpoint(&mut self, name: &'static str, actions: &str) -> Result<(), String> {
        self.failpoints_set.insert(name);
        fail::cfg(name, actions)
    }

    fn clear_failpoints(&mut self) {
        for name in std::mem::take(&mut self.failpoints_set) {
            fail::remove(name);
        }
    }

    /// Forgets the events that arrived before now, so that a wait sees only what follows.
    fn drain(&mut self) {
        let root = self.names.root();
        while let Some(r) = self.waiter.try_next() {
            if matches!(&r.event, Event::ActorGaveUp { actor, .. } if *actor == root) {
                self.ended = true;
            }
        }
    }

    async fn act(&mut self, action: Action) {
        self.drain();
        if self.ended {
            return;
        }
        match action {
            Action::Fault(fault) => self.inject(fault).await,
            Action::KillDriverAt(point) => self.kill_driver_at(point).await,
        }
    }

    async fn inject(&mut self, fault: Fault) {
        self.say(|| fault.to_string());
        match fault {
            Fault::Kill(kind) => {
                let name = kind.name(&self.names);
                let Some(cell) = self.find(&name).await else {
                    self.recorder
                        .fault(fault, Some(format!("{name} was not running")));
                    return;
                };
                let index = self.recorder.fault(fault, None);
                cell.kill();
                let ok = self.healed(&name).await;
                self.recorder.recovered(index, ok);
            }
            Fault::Panic(kind) => {
                let name = kind.name(&self.names);
                if self.find(&name).await.is_none() {
                    self.recorder
                        .fault(fault, Some(format!("{name} was not running")));
                    return;
                }
                let index = self.recorder.fault(fault, None);
                weir_actors::faults::arm_panic(&name, INJECTED_PANIC);
                // An actor that handles no message for a while never fires its panic.
                let fired = self
                    .wait_within(
                        PANIC_WAIT,
                        |e| matches!(e, Event::ActorFailed { actor, .. } if *actor == name),
                    )
                    .await;
                let ok = fired && self.restarted_and_completed(&name).await;
                if weir_actors::faults::disarm(&name) {
                    // It never handled a message (a receiver runs inside one long handler).
                    self.recorder.skipped(
                        index,
                        format!("{name} handled no message while the panic was armed"),
                    );
                } else {
                    self.recorder.recovered(index, ok);
                }
            }
            Fault::StorageError(edge, count) => {
                self.storage_fault(fault, edge.failpoint(), &format!("{count}*return->off"))
                    .await;
            }
            Fault::TornWrite(edge) => match edge.torn_failpoint() {
                Some(name) => self.storage_fault(fault, name, "1*return->off").await,
                None => {
                    self.recorder
                        .fault(fault, Some(format!("{edge} has no torn-write failpoint")));
                }
            },
            Fault::Stall(edge, d) => {
                let actions = format!("1*sleep({})->off", d.as_millis());
                self.storage_fault(fault, edge.failpoint(), &actions).await;
            }
            Fault::DiskFull(d) => {
                let index = self.recorder.fault(fault, None);
                let set = self
                    .set_failpoint(WAL_DISK_FULL, "return")
                    .and_then(|()| self.set_failpoint(CHECKPOINT_DISK_FULL, "return"));
                if let Err(err) = set {
                    self.recorder.recovered(index, false);
                    self.say(|| format!("cannot set the disk-full failpoints: {err}"));
                    return;
                }
                // The outage lasts `d` (the fault's duration, not a synchronisation wait).
                tokio::time::sleep(d).await;
                fail::remove(WAL_DISK_FULL);
                fail::remove(CHECKPOINT_DISK_FULL);
                let ok = self.batches_with_records(1).await;
                self.recorder.recovered(index, ok);
            }
            Fault::ProcessKill9 => {
                self.recorder.fault(
                    fault,
                    Some(
                        "kill -9 of the process needs a process run (see tests/kill9_*.rs)"
                            .to_owned(),
                    ),
                );
            }
        }
    }

    async fn storage_fault(&mut self, fault: Fault, name: &'static str, actions: &str) {
        // A storage fault replaces whatever the previous one left configured at the edge.
        let index = self.recorder.fault(fault, None);
        if let Err(err) = self.set_failpoint(name, actions) {
            self.say(|| format!("cannot set failpoint {name}: {err}"));
            self.recorder.recovered(index, false);
            return;
        }
        let ok = self.batches_with_records(1).await;
        self.recorder.recovered(index, ok);
    }

    /// The running actor called `name`, waiting (bounded) for it to start if it is not running.
    async fn find(&mut self, name: &str) -> Option<ractor::ActorCell> {
        if let Some(cell) = ractor::registry::where_is(name) {
            return Some(cell);
        }
        let started = self
            .wait_for(|e| matches!(e, Event::ActorStarted { actor } if actor == name))
            .await;
        if started {
            ractor::registry::where_is(name)
        } else {
            None
        }
    }

    async fn kill_driver_at(&mut self, point: HoldPoint) {
        let fault = Fault::Kill(ActorKind::Driver);
        let driver = self.names.driver();
        self.say(|| format!("kill the driver {point}"));
        // Hold the first caller at the point.
        let (reached, release): (oneshot::Receiver<()>, Release) = match point.failpoint() {
            Some((name, torn)) => match hold_failpoint(name) {
                Ok(hold) => {
                    self.failpoints_set.insert(name);
                    let release = hold.release;
                    (
                        hold.reached,
                        Box::new(move |live: &mut Self| {
                            // What a crash leaves of the held write: a torn write.
                            let _ = live.set_failpoint(torn, "1*return->off");
                            fail::remove(name);
                            let _ = release.send(());
                        }),
                    )
                }
                Err(err) => {
                    self.recorder
                        .fault(fault, Some(format!("cannot hold at {name}: {err}")));
                    return;
                }
            },
            None => {
                let held = self.holds.arm(point);
                let release = held.release;
                (
                    held.reached,
                    Box::new(move |live: &mut Self| {
                        live.holds.disarm();
                        let _ = release.send(true);
                    }),
                )
            }
        };
        let reached = tokio::time::timeout(self.recovery_wait, reached).await;
        if !matches!(reached, Ok(Ok(()))) {
            release(self);
            self.recorder.fault(
                fault,
                Some(format!("nothing reached the hold point {point} in time")),
            );
            return;
        }
        let Some(cell) = ractor::registry::where_is(driver.clone()) else {
            release(self);
            self.recorder
                .fault(fault, Some(format!("{driver} was not running")));
            return;
        };
        let index = self.recorder.fault(fault, None);
        cell.kill();
        let failed = self
            .wait_for(|e| matches!(e, Event::ActorFailed { actor, .. } if *actor == driver))
            .await;
        release(self);
        let ok = failed && self.restarted_and_completed(&driver).await;
        self.recorder.recovered(index, ok);
    }

    async fn restarted_and_completed(&mut self, name: &str) -> bool {
        let mut started = false;
        self.wait_for(|e| match e {
            Event::ActorStarted { actor } if actor == name => {
                started = true;
                false
            }
            Event::BatchCompleted { records, .. } => started && *records > 0,
            _ => false,
        })
        .await
    }
}
