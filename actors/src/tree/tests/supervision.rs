//! Deterministic tests of every supervision rule: strategies, restart types, a kill treated as
//! a failure, backoff delays, intensity escalation, a failed restart counted as a failure.
//!
//! Each test runs on a current-thread runtime with paused time, so backoff delays are exact
//! and no test sleeps: it waits for the events the supervisor publishes.

// Helpers outside `#[test]` fns are test code too; clippy.toml's `allow-unwrap-in-tests`
// does not see them.
#![allow(
    clippy::unwrap_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::Event;
use crate::messages::RestartChildren;
use crate::tree::children::{ChildSpec, Children};
use crate::tree::restart_policy::{Backoff, Intensity, RestartPolicy, RestartType, Strategy};
use crate::{EventHub, EventSubscription};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::time::Instant;

// ============================== a worker that fails on demand ============================== //

#[derive(Clone)]
struct Worker {
    /// `pre_start` fails while this is above zero (and counts it down).
    fail_starts: Arc<AtomicU32>,
}

enum WorkerMsg {
    Panic,
    Fail,
    Stop,
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<WorkerMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        let left = self.fail_starts.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_starts.store(left - 1, Ordering::SeqCst);
            return Err("checkpoint unreadable".into());
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Panic => panic!("worker panicked on purpose"),
            WorkerMsg::Fail => Err("worker failed on purpose".into()),
            WorkerMsg::Stop => {
                myself.stop(Some("done".into()));
                Ok(())
            }
        }
    }
}

// ============================== a supervisor built on Children ============================== //

#[derive(Clone)]
struct Sup;

struct SupArgs {
    name: String,
    policy: RestartPolicy,
    children: Vec<ChildSpec>,
    hub: EventHub,
}

enum SupMsg {
    Restart(RestartChildren),
}

impl Actor for Sup {
    type Msg = SupMsg;
    type State = Children;
    type Arguments = SupArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SupMsg>,
        args: SupArgs,
    ) -> Result<Children, ActorProcessingErr> {
        let mut children = Children::new(args.name, args.policy, 42, args.hub.sink());
        for spec in args.children {
            children.add(spec);
        }
        children
            .start_all(&myself.get_cell())
            .await
            .map_err(|(name, err)| format!("{name} did not start: {err}"))?;
        Ok(children)
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        SupMsg::Restart(RestartChildren(set)): SupMsg,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        let decision = children.restart(&myself.get_cell(), set).await;
        decision.carry_out(&myself, SupMsg::Restart)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        event: SupervisionEvent,
        children: &mut Children,
    ) -> Result<(), ActorProcessingErr> {
        let decision = children.handle(event).await;
        decision.carry_out(&myself, SupMsg::Restart)
    }
}

// ====================================== helpers ====================================== //

struct Tree {
    sup: ActorRef<SupMsg>,
    handle: tokio::task::JoinHandle<()>,
    events: EventSubscription,
    prefix: String,
    /// How many of b's next starts fail.
    b_fail_starts: Arc<AtomicU32>,
}

fn policy(strategy: Strategy, max_restarts: u32, backoff: Backoff) -> RestartPolicy {
    RestartPolicy {
        strategy,
        intensity: Intensity {
            max_restarts,
            period: Duration::from_secs(60),
        },
        backoff,
    }
}

fn fixed_backoff(ms: u64) -> Backoff {
    Backoff {
        initial: Duration::from_millis(ms),
        max: Duration::from_millis(ms),
        multiplier: 1,
        jitter: 0.0,
        reset_after: Duration::from_secs(3600),
    }
}

/// Starts a supervisor with children `a`, `b`, `c` (names prefixed by the test's name).
async fn tree(test: &str, policy: RestartPolicy, restart: [RestartType; 3]) -> Tree {
    let hub = EventHub::default();
    let events = hub.subscribe();
    let prefix = format!("{test}/");
    let b_fail_starts = Arc::new(AtomicU32::new(0));
    let children = ["a", "b", "c"]
        .iter()
        .zip(restart)
        .map(|(n, r)| {
            let fail_starts = if *n == "b" {
                Arc::clone(&b_fail_starts)
            } else {
                Arc::new(AtomicU32::new(0))
            };
            ChildSpec::new(format!("{prefix}{n}"), r, Worker { fail_starts }, || ())
        })
        .collect();
    let args = SupArgs {
        name: format!("{prefix}sup"),
        policy,
        children,
        hub,
    };
    let (sup, handle) = Actor::spawn(Some(format!("{prefix}sup")), Sup, args)
        .await
        .unwrap();
    let mut tree = Tree {
        sup,
        handle,
        events,
        prefix,
        b_fail_starts,
    };
    for n in ["a", "b", "c"] {
        tree.started(n).await;
    }
    tree
}

impl Tree {
    fn child(&self, n: &str) -> Option<ActorCell> {
        ractor::registry::where_is(format!("{}{n}", self.prefix))
    }

    fn send(&self, n: &str, msg: WorkerMsg) {
        let cell = self.child(n).expect("child is running");
        ActorRef::<WorkerMsg>::from(cell).cast(msg).unwrap();
    }

    fn name(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    /// Waits for the next event matching `pred`, returning it with the (virtual) time it came.
    async fn wait_for(&mut self, pred: impl Fn(&Event) -> bool) -> (Event, Instant) {
        let deadline = Duration::from_secs(3600);
        tokio::time::timeout(deadline, async {
            loop {
                let record = self.events.next().await.expect("hub open");
                if pred(&record.event) {
                    return (record.event, Instant::now());
                }
            }
        })
        .await
        .expect("event did not come")
    }

    async fn started(&mut self, n: &str) -> Instant {
        let name = self.name(n);
        self.wait_for(|e| matches!(e, Event::ActorStarted { actor } if *actor == name))
            .await
            .1
    }

    async fn restarted(&mut self, n: &str) -> (u32, u64) {
        let name = self.name(n);
        match self
            .wait_for(|e| matches!(e, Event::ActorRestarted { actor, .. } if *actor == name))
            .await
            .0
        {
            Event::ActorRestarted {
                attempt, delay_ms, ..
            } => (attempt, delay_ms),
            _ => unreachable!(),
        }
    }

    async fn failed(&mut self, n: &str) -> String {
        let name = self.name(n);
        match self
            .wait_for(|e| matches!(e, Event::ActorFailed { actor, .. } if *actor == name))
            .await
            .0
        {
            Event::ActorFailed { reason, .. } => reason,
            _ => unreachable!(),
        }
    }

    fn ids(&self) -> Vec<Option<ractor::ActorId>> {
        ["a", "b", "c"]
            .iter()
            .map(|n| self.child(n).map(|c| c.get_id()))
            .collect()
    }

    async fn shutdown(self) {
        self.sup.stop(None);
        let _ = self.handle.await;
    }
}

const PERMANENT: [RestartType; 3] = [RestartType::Permanent; 3];

// ====================================== strategies ====================================== //

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    let mut t = tree(
        "one_for_one",
        policy(Strategy::OneForOne, 5, fixed_backoff(100)),
        PERMANENT,
    )
    .await;
    let before = t.ids();
    t.send("b", WorkerMsg::Panic);
    assert!(t.failed("b").await.contains("panicked on purpose"));
    t.started("b").await;
    let after = t.ids();
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_eq!(after[2], before[2]);
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_restarts_every_child() {
    let mut t = tree(
        "one_for_all",
        policy(Strategy::OneForAll, 5, fixed_backoff(100)),
        PERMANENT,
    )
    .await;
    let before = t.ids();
    t.send("b", WorkerMsg::Fail);
    assert!(t.failed("b").await.contains("failed on purpose"));
    for n in ["a", "b", "c"] {
        t.started(n).await;
    }
    let after = t.ids();
    assert!(
        before
            .iter()
            .zip(&after)
            .all(|(x, y)| x != y && y.is_some()),
        "{before:?} {after:?}"
    );
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_the_failed_child_and_those_started_after_it() {
    let mut t = tree(
        "rest_for_one",
        policy(Strategy::RestForOne, 5, fixed_backoff(100)),
        PERMANENT,
    )
    .await;
    let before = t.ids();
    t.send("b", WorkerMsg::Panic);
    t.started("b").await;
    t.started("c").await;
    let after = t.ids();
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_ne!(after[2], before[2]);
    t.shutdown().await;
}

// ==================================== restart types ==================================== //

#[tokio::test(start_paused = true)]
async fn a_kill_is_a_failure_and_is_restarted() {
    let mut t = tree(
        "kill_is_failure",
        policy(Strategy::OneForOne, 5, fixed_backoff(100)),
        PERMANENT,
    )
    .await;
    let before = t.ids();
    t.child("b").unwrap().kill();
    assert_eq!(t.failed("b").await, "killed");
    t.started("b").await;
    assert_ne!(t.ids()[1], before[1]);
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transient_children_restart_only_after_failures_and_temporary_never() {
    let types = [
        RestartType::Transient,
        RestartType::Transient,
        RestartType::Temporary,
    ];
    let mut t = tree(
        "restart_types",
        policy(Strategy::OneForOne, 5, fixed_backoff(100)),
        types,
    )
    .await;
    // A transient child that stops normally stays stopped.
    let a = t.child("a").unwrap();
    t.send("a", WorkerMsg::Stop);
    a.wait(None).await.unwrap();
    // A transient child that fails is restarted.
    t.send("b", WorkerMsg::Panic);
    t.started("b").await;
    // A temporary child that fails is not.
    let c = t.child("c").unwrap();
    t.send("c", WorkerMsg::Panic);
    t.failed("c").await;
    c.wait(None).await.unwrap();
    // Let any (wrong) restart timers fire: paused time, so this advances virtual time only.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        t.child("a").is_none(),
        "a normal exit of a transient child was restarted"
    );
    assert!(t.child("c").is_none(), "a temporary child was restarted");
    assert!(t.child("b").is_some());
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_permanent_child_that_stops_normally_is_restarted() {
    let mut t = tree(
        "permanent_normal",
        policy(Strategy::OneForOne, 5, fixed_backoff(100)),
        PERMANENT,
    )
    .await;
    let before = t.ids();
    t.send("a", WorkerMsg::Stop);
    t.started("a").await;
    assert_ne!(t.ids()[0], before[0]);
    t.shutdown().await;
}

// ================================ backoff and intensity ================================ //

#[tokio::test(start_paused = true)]
async fn restarts_wait_for_the_exponential_backoff() {
    let backoff = Backoff {
        initial: Duration::from_millis(1000),
        max: Duration::from_secs(60),
        multiplier: 2,
        jitter: 0.0,
        reset_after: Duration::from_secs(3600),
    };
    let mut t = tree(
        "backoff",
        policy(Strategy::OneForOne, 10, backoff),
        PERMANENT,
    )
    .await;
    for expected_ms in [1000u64, 2000, 4000] {
        t.send("b", WorkerMsg::Panic);
        let (_, delay_ms) = t.restarted("b").await;
        let decided = Instant::now();
        assert_eq!(delay_ms, expected_ms);
        let started = t.started("b").await;
        assert_eq!(started - decided, Duration::from_millis(expected_ms));
    }
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exceeding_the_intensity_gives_up_and_fails_the_supervisor() {
    let mut t = tree(
        "give_up",
        policy(Strategy::OneForOne, 2, fixed_backoff(10)),
        PERMANENT,
    )
    .await;
    for _ in 0..2 {
        t.send("b", WorkerMsg::Panic);
        t.started("b").await;
    }
    t.send("b", WorkerMsg::Panic);
    let sup_name = t.name("sup");
    let (event, _) = t.wait_for(|e| matches!(e, Event::ActorGaveUp { .. })).await;
    match event {
        Event::ActorGaveUp {
            actor,
            child,
            reason,
        } => {
            assert_eq!(actor, sup_name);
            assert_eq!(child, t.name("b"));
            assert!(
                reason.contains("3 restarts") && reason.contains("panicked"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
    // The supervisor itself has failed (escalation), taking its children with it.
    let sup = t.sup.get_cell();
    sup.wait(None).await.unwrap();
    assert!(t.child("a").is_none() && t.child("c").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_counts_as_a_failure() {
    let mut t = tree(
        "failed_restart",
        policy(Strategy::OneForOne, 5, fixed_backoff(10)),
        PERMANENT,
    )
    .await;
    // b's next two starts fail (as a driver's would with an unreadable checkpoint).
    t.b_fail_starts.store(2, Ordering::SeqCst);
    t.send("b", WorkerMsg::Panic);
    assert!(t.failed("b").await.contains("panicked"));
    for attempt in 1..=2 {
        assert_eq!(t.restarted("b").await.0, attempt);
        let reason = t.failed("b").await;
        assert!(
            reason.contains("failed to start") && reason.contains("checkpoint unreadable"),
            "{reason}"
        );
    }
    assert_eq!(t.restarted("b").await.0, 3);
    t.started("b").await;
    t.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn failed_restarts_spend_the_budget_and_give_up() {
    let mut t = tree(
        "failed_restart_gives_up",
        policy(Strategy::OneForOne, 2, fixed_backoff(10)),
        PERMANENT,
    )
    .await;
    t.b_fail_starts.store(u32::MAX, Ordering::SeqCst);
    t.send("b", WorkerMsg::Panic);
    let (event, _) = t.wait_for(|e| matches!(e, Event::ActorGaveUp { .. })).await;
    assert!(
        matches!(&event, Event::ActorGaveUp { reason, .. } if reason.contains("checkpoint unreadable")),
        "{event:?}"
    );
    t.sup.get_cell().wait(None).await.unwrap();
}
