//! The machinery every supervising actor uses: its children, and what to do when one exits.
//!
//! A supervising actor (root, driver, receiver tracker, receiver supervisor, job scheduler)
//! keeps a [`Children`] in its state, starts them in `pre_start`, and hands every
//! [`SupervisionEvent`] to [`Children::handle`], which applies the [`RestartPolicy`]:
//!
//! 1. the exit is classified ([`Exit::classify`]: a kill is abnormal) and reported as
//!    [`Event::ActorFailed`];
//! 2. the child's [`RestartType`] decides whether it restarts at all;
//! 3. the [`Strategy`](crate::tree::restart_policy::Strategy) decides which children restart with it; the live ones among them are
//!    killed (and waited for) first, in reverse start order;
//! 4. the [`RestartTracker`] either allows the restart, with a backoff delay
//!    ([`Event::ActorRestarted`]), or gives up ([`Event::ActorGaveUp`]), in which case the
//!    supervising actor fails itself and the failure escalates to *its* supervisor.
//!
//! The actor then sends itself a restart message after the delay (ractor's `send_after`) and
//! calls [`Children::restart`]. A child that fails to start again — say its checkpoint is
//! unreadable — is a failure like any other: it goes through the same decision.
//!
//! Children are found by their stable registered names ([`spawn_named`]); a restarted child
//! has a new [`ActorRef`], so peers look names up rather than keep references.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorCell, ActorRef, SpawnErr, SupervisionEvent};
use tokio::time::Instant;

use crate::messages::RestartChildren;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::tree::restart_policy::{Exit, GaveUp, RestartPolicy, RestartTracker, RestartType};

/// How long a spawn waits for a stopping actor to release the name it needs, and how long a
/// supervisor waits for a sibling it kills to stop.
pub(crate) const STOP_WAIT: Duration = Duration::from_secs(10);

/// Spawns `actor` under `name`, linked to `supervisor`.
///
/// When an actor dies, ractor kills its children asynchronously, so their names may still be
/// registered for a moment; a new child with the same name would fail with
/// `ActorAlreadyRegistered`. This waits (up to [`STOP_WAIT`]) for a previous holder of the name
/// to stop first. A holder that is alive and well keeps the name, and the spawn fails.
///
/// # Errors
///
/// ractor's [`SpawnErr`]: `pre_start` failed, or the name is taken.
pub(crate) async fn spawn_named<A: Actor>(
    name: String,
    actor: A,
    args: A::Arguments,
    supervisor: ActorCell,
) -> Result<ActorRef<A::Msg>, SpawnErr> {
    if let Some(previous) = ractor::registry::where_is(name.clone()) {
        let _ = previous.wait(Some(STOP_WAIT)).await;
    }
    Actor::spawn_linked(Some(name), actor, args, supervisor)
        .await
        .map(|(actor, _)| actor)
}

/// The future a [`ChildSpec`] returns to start its child.
pub(crate) type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, SpawnErr>> + Send>>;

/// How to start one child, and when to restart it.
#[derive(Clone)]
pub(crate) struct ChildSpec {
    /// The child's stable registered name.
    pub name: String,
    /// When it is restarted.
    pub restart: RestartType,
    /// Starts it, linked to the given supervisor (use [`spawn_named`] with `name`).
    pub start: Arc<dyn Fn(ActorCell) -> StartFuture + Send + Sync>,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("name", &self.name)
            .field("restart", &self.restart)
            .finish()
    }
}

impl ChildSpec {
    /// A child of `actor` under `name`, started with the arguments `args()` each time.
    pub(crate) fn new<A, F>(
        name: impl Into<String>,
        restart: RestartType,
        actor: A,
        args: F,
    ) -> Self
    where
        A: Actor + Clone + Sync,
        F: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        let name = name.into();
        let child = name.clone();
        ChildSpec {
            name,
            restart,
            start: Arc::new(move |supervisor| {
                let (name, actor, args) = (child.clone(), actor.clone(), args());
                Box::pin(async move {
                    spawn_named(name, actor, args, supervisor)
                        .await
                        .map(|a| a.get_cell())
                })
            }),
        }
    }
}

/// What a supervising actor must do after [`Children::handle`] or [`Children::restart`].
#[derive(Debug, PartialEq)]
pub(crate) enum Decision {
    /// Nothing.
    None,
    /// Call [`Children::restart`] with `set` after `delay`.
    Restart {
        /// The children to restart, by start-order index.
        set: Range<usize>,
        /// The backoff delay.
        delay: Duration,
    },
    /// Fail this supervising actor with the error, escalating to its own supervisor.
    GiveUp(GaveUp),
}

impl Decision {
    /// Carries the decision out for the supervising actor `myself`: sends it
    /// `restart(RestartChildren(set))` after the backoff delay, or returns the give-up as its error, which fails
    /// it and escalates to its own supervisor.
    ///
    /// # Errors
    ///
    /// The [`GaveUp`] of a [`Decision::GiveUp`].
    pub(crate) fn carry_out<M: ractor::Message>(
        self,
        myself: &ActorRef<M>,
        restart: impl FnOnce(RestartChildren) -> M + Send + 'static,
    ) -> Result<(), ractor::ActorProcessingErr> {
        match self {
            Decision::None => Ok(()),
            Decision::Restart { set, delay } => {
                myself.send_after(delay, move || restart(RestartChildren(set)));
                Ok(())
            }
            Decision::GiveUp(gave_up) => Err(gave_up.into()),
        }
    }
}

/// Answers `reply` unless the caller has gone away (a caller that timed out or was killed).
pub(crate) fn answer<T: Send + 'static>(reply: ractor::RpcReplyPort<T>, value: T) {
    if !reply.is_closed() {
        let _ = reply.send(value);
    }
}

/// A supervising actor's children, in start order, with their restart bookkeeping.
#[derive(Debug)]
pub(crate) struct Children {
    supervisor: String,
    specs: Vec<ChildSpec>,
    cells: Vec<Option<ActorCell>>,
    tracker: RestartTracker,
    events: EventSink,
}

impl Children {
    /// An empty set of children for the supervising actor named `supervisor`.
    pub(crate) fn new(
        supervisor: impl Into<String>,
        policy: RestartPolicy,
        seed: u64,
        events: EventSink,
    ) -> Self {
        Children {
            supervisor: supervisor.into(),
            specs: Vec::new(),
            cells: Vec::new(),
            tracker: RestartTracker::new(policy, seed),
            events,
        }
    }

    /// Adds a child (started by [`Children::start_all`] or [`Children::start_one`]).
    pub(crate) fn add(&mut self, spec: ChildSpec) -> usize {
        self.specs.push(spec);
        self.cells.push(None);
        self.specs.len() - 1
    }

    /// Starts every child that is not running, in order.
    ///
    /// # Errors
    ///
    /// The first child that fails to start, with its name; the ones started before it keep
    /// running (the caller's own failure will take them down, as they are linked to it).
    pub(crate) async fn start_all(
        &mut self,
        supervisor: &ActorCell,
    ) -> Result<(), (String, SpawnErr)> {
        for i in 0..self.specs.len() {
            self.start_one(supervisor, i).await?;
        }
        Ok(())
    }

    /// Starts child `i` if it is not running.
    ///
    /// # Errors
    ///
    /// Its name and why it failed to start.
    pub(crate) async fn start_one(
        &mut self,
        supervisor: &ActorCell,
        i: usize,
    ) -> Result<(), (String, SpawnErr)> {
        if self.cells[i].is_some() {
            return Ok(());
        }
        let spec = &self.specs[i];
        match (spec.start)(supervisor.clone()).await {
            Ok(cell) => {
                self.cells[i] = Some(cell);
                Ok(())
            }
            Err(err) => Err((spec.name.clone(), err)),
        }
    }

    /// The running child called `name`.
    pub(crate) fn cell(&self, name: &str) -> Option<&ActorCell> {
        let i = self.specs.iter().position(|s| s.name == name)?;
        self.cells[i].as_ref()
    }

    /// The names of the children, in start order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().map(|s| s.name.as_str())
    }

    /// Applies the restart policy to a supervision event about one of the children.
    ///
    /// Takes the event by value: it may carry the dead actor's state, which is not `Sync`, so
    /// it is reduced to what the policy needs before anything is awaited.
    pub(crate) async fn handle(&mut self, event: SupervisionEvent) -> Decision {
        let (id, exit) = match &event {
            SupervisionEvent::ActorStarted(cell) => (cell.get_id(), None),
            other => match (other.actor_cell(), Exit::classify(other)) {
                (Some(cell), Some(exit)) => (cell.get_id(), Some(exit)),
                _ => return Decision::None,
            },
        };
        drop(event);
        let Some(i) = self
            .cells
            .iter()
            .position(|c| c.as_ref().is_some_and(|c| c.get_id() == id))
        else {
            // An exit we caused (a sibling killed as part of a restart set, whose cell was
            // already cleared), or an actor that is no longer ours.
            return Decision::None;
        };
        let Some(exit) = exit else {
            self.events.emit(Event::ActorStarted {
                actor: self.specs[i].name.clone(),
            });
            return Decision::None;
        };
        self.cells[i] = None;
        self.on_exit(i, exit).await
    }

    /// Restarts the children in `set` that are not running, in order. A child that fails to
    /// start counts as a failure of that child, and the decision is made again.
    pub(crate) async fn restart(&mut self, supervisor: &ActorCell, set: Range<usize>) -> Decision {
        for i in set {
            if let Err((_, err)) = self.start_one(supervisor, i).await {
                let reason = format!("failed to start: {err}");
                return self.on_exit(i, Exit::Abnormal { reason }).await;
            }
        }
        Decision::None
    }

    /// Stops every running child gracefully, in reverse start order, each within `timeout`
    /// (then it is killed).
    pub(crate) async fn stop_all(&mut self, timeout: Duration) {
        for i in (0..self.cells.len()).rev() {
            let Some(cell) = self.cells[i].take() else {
                continue;
            };
            let stopped = cell
                .stop_and_wait(Some("shutdown".to_owned()), Some(timeout))
                .await;
            if stopped.is_err() {
                let _ = cell.kill_and_wait(Some(timeout)).await;
            }
        }
    }

    async fn on_exit(&mut self, i: usize, exit: Exit) -> Decision {
        let name = self.specs[i].name.clone();
        if exit.is_abnormal() {
            tracing::warn!(supervisor = %self.supervisor, child = %name, reason = exit.reason(),
                "child failed");
            self.events.emit(Event::ActorFailed {
                actor: name.clone(),
                reason: exit.reason().to_owned(),
            });
        } else {
            tracing::info!(supervisor = %self.supervisor, child = %name, reason = exit.reason(),
                "child stopped");
        }
        if !self.specs[i].restart.restarts_after(&exit) {
            return Decision::None;
        }
        let set = self
            .tracker
            .policy()
            .strategy
            .restart_set(i, self.specs.len());
        // Stop the rest of the set, last started first, as OTP does.
        for j in set.clone().rev() {
            if let Some(cell) = self.cells[j].take() {
                let _ = cell.kill_and_wait(Some(STOP_WAIT)).await;
            }
        }
        match self.tracker.on_restart(Instant::now(), exit.reason()) {
            Ok(delay) => {
                let attempt = u32::try_from(self.tracker.recent_restarts()).unwrap_or(u32::MAX);
                self.events.emit(Event::ActorRestarted {
                    actor: name,
                    attempt,
                    delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                });
                Decision::Restart { set, delay }
            }
            Err(gave_up) => {
                tracing::error!(supervisor = %self.supervisor, child = %name, %gave_up,
                    "restart intensity exceeded; escalating");
                self.events.emit(Event::ActorGaveUp {
                    actor: self.supervisor.clone(),
                    child: name,
                    reason: gave_up.to_string(),
                });
                Decision::GiveUp(gave_up)
            }
        }
    }
}
