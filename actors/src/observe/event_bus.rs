//! The `event-bus` actor: writes the hub's events to `tracing` and to the event log.
//!
//! Registered as `event-bus`, a child of the root. It subscribes to the
//! [`EventHub`](super::hub::EventHub), logs every event through `tracing` (target
//! `weir::events`), and appends it as a JSON line to the event log
//! ([`super::event_log`]), so the events can be read after the process is gone.
//!
//! # What a crash leaves behind
//!
//! Events published while the `event-bus` actor is restarting are still delivered to every
//! other subscriber, but miss the log.

use std::path::PathBuf;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::observe::event::EventRecord;
use crate::observe::event_log::EventLog;
use crate::observe::hub::EventHub;

// ============================== the event-bus actor ============================== //

/// The `event-bus` actor: logs the hub's events to `tracing` and to a file.
#[derive(Clone, Debug)]
pub(crate) struct EventBus;

/// What the event-bus actor starts from.
#[derive(Clone, Debug)]
pub(crate) struct EventBusArgs {
    /// The feed to follow.
    pub hub: EventHub,
    /// Where to keep `events.jsonl`; `None` logs to `tracing` only.
    pub log_dir: Option<PathBuf>,
    /// Rotate the log past this size.
    pub log_max_bytes: u64,
}

/// The event-bus actor's state.
#[derive(Debug)]
pub(crate) struct EventBusState {
    log: Option<EventLog>,
    forward: JoinHandle<()>,
}

/// Messages of the event-bus actor.
#[derive(Debug)]
pub(crate) enum EventBusMsg {
    /// An event from the hub (sent by the actor's own forwarding task).
    Record(EventRecord),
    /// Replies once every event received so far is written to the log file.
    #[cfg_attr(
        not(test),
        expect(
            dead_code,
            reason = "an introspection query: the tests ask it; nothing in the engine does yet"
        )
    )]
    Flush(RpcReplyPort<()>),
}

impl Actor for EventBus {
    type Msg = EventBusMsg;
    type State = EventBusState;
    type Arguments = EventBusArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: EventBusArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let log = match &args.log_dir {
            Some(dir) => Some(EventLog::open(dir, args.log_max_bytes)?),
            None => None,
        };
        let mut subscription = args.hub.subscribe();
        // The task forwards until the actor is gone: a killed actor never runs `post_stop`, so
        // the task notices by its next send failing.
        let forward = tokio::spawn(async move {
            while let Some(record) = subscription.next().await {
                if myself.cast(EventBusMsg::Record(record)).is_err() {
                    break;
                }
            }
        });
        Ok(EventBusState { log, forward })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            EventBusMsg::Record(record) => {
                let line = serde_json::to_string(&record)?;
                tracing::debug!(target: "weir::events", "{line}");
                if let Some(log) = state.log.as_mut() {
                    log.append(&line)?;
                }
            }
            EventBusMsg::Flush(reply) => {
                if let Some(log) = state.log.as_mut() {
                    log.flush()?;
                }
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.forward.abort();
        if let Some(log) = state.log.as_mut() {
            log.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::event::Event;
    use crate::observe::event_log::{DEFAULT_LOG_MAX_BYTES, read_event_log};

    fn started(actor: &str) -> Event {
        Event::ActorStarted {
            actor: actor.to_owned(),
        }
    }

    #[tokio::test]
    async fn the_bus_persists_events_and_they_survive_its_restart() {
        let dir = tempfile::tempdir().unwrap();
        let hub = EventHub::default();
        let args = || EventBusArgs {
            hub: hub.clone(),
            log_dir: Some(dir.path().to_path_buf()),
            log_max_bytes: DEFAULT_LOG_MAX_BYTES,
        };
        let (bus, handle) = Actor::spawn(None, EventBus, args()).await.unwrap();
        hub.publish(started("one"));
        ractor::call!(bus, EventBusMsg::Flush).unwrap();
        bus.kill();
        handle.await.unwrap();

        let (bus, handle) = Actor::spawn(None, EventBus, args()).await.unwrap();
        hub.publish(started("two"));
        ractor::call!(bus, EventBusMsg::Flush).unwrap();
        bus.stop(None);
        handle.await.unwrap();

        let (records, skipped) = read_event_log(dir.path()).unwrap();
        let events: Vec<Event> = records.into_iter().map(|r| r.event).collect();
        assert_eq!(events, vec![started("one"), started("two")]);
        assert_eq!(skipped, 0);
    }
}
