//! Fault injection into running actors: "panic the next message of actor X".
//!
//! A process-global table of armed faults, keyed by an actor's registered name. Every actor of
//! the tree calls `faults::check` at the top of its `handle`; when nothing is armed that is one
//! relaxed atomic load. When the actor's name is armed, the fault is disarmed (it fires once)
//! and the handler panics with the armed message, inside ractor's handler, which catches the
//! panic and reports it to the actor's supervisor like any other panic: the actor fails and is
//! restarted by its supervisor's policy.
//!
//! The control endpoint's `panic` command and the chaos tests arm faults here. A fault fires
//! only when the actor *handles a message*: an actor whose handler runs for a long time (a
//! receiver runs its receiver inside one message) sees it when its next message arrives.
//!
//! ```
//! use weir_actors::faults;
//!
//! faults::arm_panic("doc-example/executor-0", "injected by the docs");
//! assert!(faults::is_armed("doc-example/executor-0"));
//! assert!(faults::disarm("doc-example/executor-0"));
//! assert!(!faults::is_armed("doc-example/executor-0"));
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use ractor::ActorCell;

/// How many faults are armed: the fast path of [`check`] reads only this.
static ARMED: AtomicUsize = AtomicUsize::new(0);
/// Actor name → the panic message it fires with.
static TABLE: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn table() -> MutexGuard<'static, Option<HashMap<String, String>>> {
    TABLE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Arms a panic: the next message the actor registered as `actor` handles panics with
/// `message`. Arming an already armed actor replaces its message.
pub fn arm_panic(actor: impl Into<String>, message: impl Into<String>) {
    let mut table = table();
    let map = table.get_or_insert_with(HashMap::new);
    map.insert(actor.into(), message.into());
    ARMED.store(map.len(), Ordering::SeqCst);
}

/// Disarms the fault armed for `actor`; whether one was armed.
pub fn disarm(actor: &str) -> bool {
    let mut table = table();
    let Some(map) = table.as_mut() else {
        return false;
    };
    let removed = map.remove(actor).is_some();
    ARMED.store(map.len(), Ordering::SeqCst);
    removed
}

/// Whether a fault is armed for `actor`.
pub fn is_armed(actor: &str) -> bool {
    ARMED.load(Ordering::Relaxed) > 0 && table().as_ref().is_some_and(|m| m.contains_key(actor))
}

/// Takes the fault armed for `actor`, if any: the message it would panic with.
pub(crate) fn take(actor: &str) -> Option<String> {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let mut table = table();
    let map = table.as_mut()?;
    let message = map.remove(actor);
    ARMED.store(map.len(), Ordering::SeqCst);
    message
}

/// Panics if a fault is armed for this actor (by its registered name). Call it first thing in
/// an actor's `handle`; it costs one atomic load when nothing is armed.
///
/// # Panics
///
/// Exactly when a fault was armed for the actor: that is its purpose.
#[allow(
    clippy::panic,
    reason = "the injected fault is a panic inside the handler"
)]
pub(crate) fn check(actor: &ActorCell) {
    if ARMED.load(Ordering::Relaxed) == 0 {
        return;
    }
    if let Some(name) = actor.get_name()
        && let Some(message) = take(&name)
    {
        panic!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ractor::{Actor, ActorProcessingErr, ActorRef};

    #[test]
    fn a_fault_fires_once_and_only_for_its_actor() {
        arm_panic("faults-test/a", "boom");
        assert!(is_armed("faults-test/a"));
        assert!(!is_armed("faults-test/b"));
        assert_eq!(take("faults-test/b"), None);
        assert_eq!(take("faults-test/a").as_deref(), Some("boom"));
        assert_eq!(take("faults-test/a"), None);
        assert!(!disarm("faults-test/a"));
    }

    struct Echo;
    impl Actor for Echo {
        type Msg = ractor::RpcReplyPort<u32>;
        type State = ();
        type Arguments = ();
        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
        async fn handle(
            &self,
            myself: ActorRef<Self::Msg>,
            reply: Self::Msg,
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            check(&myself);
            let _ = reply.send(7);
            Ok(())
        }
    }

    #[tokio::test]
    async fn an_armed_actor_panics_in_its_next_handler_and_ends_with_the_message() {
        let name = "faults-test/echo".to_owned();
        let (echo, handle) = Actor::spawn(Some(name.clone()), Echo, ())
            .await
            .expect("spawn");
        assert_eq!(ractor::call!(echo, |r| r).expect("call"), 7);
        arm_panic(name.clone(), "injected panic for the test");
        assert!(ractor::call!(echo, |r| r).is_err(), "the call must fail");
        let joined = handle.await;
        assert!(joined.is_ok(), "ractor catches the handler's panic");
        assert!(!is_armed(&name), "the fault fired once");
    }
}
