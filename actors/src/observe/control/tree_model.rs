//! What the control endpoint knows of the supervision tree: a model fed by the events, kept in
//! the [`ControlHandle`] that the engine and every incarnation of the endpoint share.
//!
//! The model counts each actor's restarts, keeps its last failure and its last known state,
//! and remembers the [`RECENT_EVENTS`] most recent events. A snapshot combines it with ractor's
//! live supervision links, so an actor that is down (failed, restarting, given up) still shows
//! where it was last seen. The handle outlives the endpoint actor, so a restarted endpoint keeps
//! the counts and binds the address it had. Nothing here is persisted: a new process starts
//! with an empty model.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ractor::{ActorCell, ActorStatus};

use crate::clock::now_ms;
use crate::observe::control::protocol::{ActorInfo, ActorState, RECENT_EVENTS, TreeSnapshot};
use crate::observe::event::{Event, EventRecord};

#[derive(Clone, Debug)]
struct Entry {
    parent: Option<String>,
    state: ActorState,
    restarts: u32,
    last_failure: Option<String>,
}

/// What the endpoint knows of the tree from the events: restarts, failures, recent events.
#[derive(Debug, Default)]
struct TreeModel {
    actors: BTreeMap<String, Entry>,
    recent: VecDeque<EventRecord>,
}

impl TreeModel {
    fn entry(&mut self, actor: &str) -> &mut Entry {
        self.actors.entry(actor.to_owned()).or_insert(Entry {
            parent: None,
            state: ActorState::Running,
            restarts: 0,
            last_failure: None,
        })
    }

    fn apply(&mut self, record: &EventRecord) {
        match &record.event {
            Event::ActorStarted { actor } => self.entry(actor).state = ActorState::Running,
            Event::ActorFailed { actor, reason } => {
                let e = self.entry(actor);
                e.state = ActorState::Failed;
                e.last_failure = Some(reason.clone());
            }
            Event::ActorRestarted { actor, .. } => {
                let e = self.entry(actor);
                e.state = ActorState::Restarting;
                e.restarts += 1;
            }
            Event::ActorGaveUp { child, .. } => self.entry(child).state = ActorState::GaveUp,
            Event::BlockStored { .. } | Event::Lagged { .. } => return,
            _ => {}
        }
        if self.recent.len() == RECENT_EVENTS {
            self.recent.pop_front();
        }
        self.recent.push_back(record.clone());
    }
}

/// Shared between the engine and its control endpoint: the bound address and the tree model.
#[derive(Clone, Debug, Default)]
pub(crate) struct ControlHandle {
    inner: Arc<HandleInner>,
}

#[derive(Debug, Default)]
struct HandleInner {
    bound: Mutex<Option<SocketAddr>>,
    model: Mutex<TreeModel>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlHandle {
    /// The address the endpoint listens on, once it has bound.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        *lock(&self.inner.bound)
    }

    /// Records the address the endpoint bound (where a restarted endpoint listens again).
    pub(crate) fn set_local_addr(&self, bound: SocketAddr) {
        *lock(&self.inner.bound) = Some(bound);
    }

    /// Feeds one event to the model.
    pub(crate) fn apply(&self, record: &EventRecord) {
        lock(&self.inner.model).apply(record);
    }

    /// The tree as it is now: the live actors under `root` (from ractor's supervision links),
    /// with the restarts and failures seen in the events, and the actors that are down
    /// (failed, restarting, given up) where they were last seen.
    pub(crate) fn snapshot(&self, root: &str) -> TreeSnapshot {
        let mut live = Vec::new();
        if let Some(cell) = ractor::registry::where_is(root) {
            walk(&cell, None, &mut live);
        }
        let mut model = lock(&self.inner.model);
        let mut actors: Vec<ActorInfo> = Vec::with_capacity(live.len());
        for (name, parent, status) in live {
            let entry = model.entry(&name);
            entry.parent.clone_from(&parent);
            let state = match status {
                ActorStatus::Unstarted | ActorStatus::Starting => ActorState::Starting,
                ActorStatus::Running | ActorStatus::Upgrading => ActorState::Running,
                ActorStatus::Draining | ActorStatus::Stopping => ActorState::Stopping,
                ActorStatus::Stopped => ActorState::Stopped,
            };
            entry.state = state;
            actors.push(ActorInfo {
                name,
                parent,
                state,
                restarts: entry.restarts,
                last_failure: entry.last_failure.clone(),
            });
        }
        // Actors that are down now: after their parent (or at the end).
        for (name, entry) in &model.actors {
            if actors.iter().any(|a| &a.name == name) || entry.state == ActorState::Running {
                continue;
            }
            let info = ActorInfo {
                name: name.clone(),
                parent: entry.parent.clone(),
                state: entry.state,
                restarts: entry.restarts,
                last_failure: entry.last_failure.clone(),
            };
            let at = entry
                .parent
                .as_ref()
                .and_then(|p| actors.iter().position(|a| &a.name == p))
                .map_or(actors.len(), |i| i + 1);
            actors.insert(at, info);
        }
        TreeSnapshot {
            time_ms: now_ms(),
            actors,
            recent: model.recent.iter().cloned().collect(),
        }
    }
}

/// Depth-first, children in name order (ractor keeps them unordered).
fn walk(
    cell: &ActorCell,
    parent: Option<String>,
    out: &mut Vec<(String, Option<String>, ActorStatus)>,
) {
    let name = cell
        .get_name()
        .unwrap_or_else(|| format!("actor-{}", cell.get_id()));
    out.push((name.clone(), parent, cell.get_status()));
    let mut children = cell.get_children();
    children.sort_by_key(|c| c.get_name().unwrap_or_default());
    for child in children {
        walk(&child, Some(name.clone()), out);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

    use super::*;

    #[test]
    fn the_model_counts_restarts_and_keeps_the_last_failure() {
        let mut model = TreeModel::default();
        let rec = |event| EventRecord { time_ms: 1, event };
        model.apply(&rec(Event::ActorFailed {
            actor: "receiver-0".into(),
            reason: "killed".into(),
        }));
        model.apply(&rec(Event::ActorRestarted {
            actor: "receiver-0".into(),
            attempt: 1,
            delay_ms: 100,
        }));
        let e = &model.actors["receiver-0"];
        assert_eq!((e.state, e.restarts), (ActorState::Restarting, 1));
        assert_eq!(e.last_failure.as_deref(), Some("killed"));
        model.apply(&rec(Event::ActorStarted {
            actor: "receiver-0".into(),
        }));
        assert_eq!(model.actors["receiver-0"].state, ActorState::Running);
        for _ in 0..RECENT_EVENTS + 5 {
            model.apply(&rec(Event::ActorStarted { actor: "x".into() }));
        }
        assert_eq!(model.recent.len(), RECENT_EVENTS);
    }

    /// An actor that answers pings, and keeps running when a child ends.
    struct Idle;

    impl Actor for Idle {
        type Msg = RpcReplyPort<()>;
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            _: ActorRef<Self::Msg>,
            ping: Self::Msg,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            let _ = ping.send(());
            Ok(())
        }
        async fn handle_supervisor_evt(
            &self,
            _: ActorRef<Self::Msg>,
            _: SupervisionEvent,
            _: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    /// Returns once `actor` has handled a message, so it is running.
    async fn running(actor: &ActorRef<RpcReplyPort<()>>) {
        let answer = actor.call(|ping| ping, Some(Duration::from_secs(30))).await;
        assert!(matches!(answer, Ok(ractor::rpc::CallResult::Success(()))));
    }

    #[tokio::test]
    async fn a_snapshot_lists_live_children_in_name_order_and_a_down_actor_after_its_parent() {
        let (root, root_done) = Actor::spawn(Some("tm-snap/root".to_owned()), Idle, ())
            .await
            .expect("spawn");
        let mut children = Vec::new();
        for name in ["tm-snap/b", "tm-snap/a", "tm-snap/c"] {
            let (child, done) =
                Actor::spawn_linked(Some(name.to_owned()), Idle, (), root.get_cell())
                    .await
                    .expect("spawn");
            running(&child).await;
            children.push((child, done));
        }
        running(&root).await;
        let handle = ControlHandle::default();
        let names = |s: &TreeSnapshot| -> Vec<(String, ActorState)> {
            s.actors.iter().map(|a| (a.name.clone(), a.state)).collect()
        };
        let first = handle.snapshot("tm-snap/root");
        assert_eq!(
            names(&first),
            [
                ("tm-snap/root".to_owned(), ActorState::Running),
                ("tm-snap/a".to_owned(), ActorState::Running),
                ("tm-snap/b".to_owned(), ActorState::Running),
                ("tm-snap/c".to_owned(), ActorState::Running),
            ]
        );
        assert_eq!(first.actors[1].parent.as_deref(), Some("tm-snap/root"));

        // `b` fails and is gone; the model still shows it, under its parent, with the failure.
        let (b, b_done) = children.remove(0);
        b.kill();
        tokio::time::timeout(Duration::from_secs(30), b_done)
            .await
            .expect("b ends")
            .expect("join");
        handle.apply(&EventRecord {
            time_ms: 1,
            event: Event::ActorFailed {
                actor: "tm-snap/b".into(),
                reason: "killed".into(),
            },
        });
        let second = handle.snapshot("tm-snap/root");
        assert_eq!(
            names(&second),
            [
                ("tm-snap/root".to_owned(), ActorState::Running),
                ("tm-snap/b".to_owned(), ActorState::Failed),
                ("tm-snap/a".to_owned(), ActorState::Running),
                ("tm-snap/c".to_owned(), ActorState::Running),
            ]
        );
        assert_eq!(second.actors[1].parent.as_deref(), Some("tm-snap/root"));
        assert_eq!(second.actors[1].last_failure.as_deref(), Some("killed"));
        assert_eq!(second.recent.len(), 1);

        root.stop(None);
        root_done.await.expect("join");
    }
}
