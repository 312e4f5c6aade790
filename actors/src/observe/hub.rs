//! The hub: one feed of [`Event`]s for tracing, tests, the CLI, the persisted log, the
//! metrics and the HTTP API.
//!
//! [`EventHub`] is a broadcast channel with bounded per-subscriber buffers. Publishing never
//! blocks and never fails: a subscriber that falls more than the capacity behind receives an
//! [`Event::Lagged`] marker saying how many events it missed, and then continues. The hub is a
//! plain value created by whoever builds the tree (the engine), so it outlives every actor:
//! subscribers keep their subscription across driver restarts and event-bus restarts.
//! Components report through an [`EventSink`], which a hub hands out ([`EventHub::sink`]).
//!
//! Before it is broadcast, every event updates what the hub keeps itself, under short locks
//! and in bounded memory: the [`EngineMetrics`], the [`History`] the HTTP API shows, and the
//! tree model of the control endpoint. So they miss no event, whoever is watching.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::event::{Event, EventRecord};
use crate::observe::history::History;
use crate::observe::metrics::EngineMetrics;

/// How many events a subscriber may fall behind before it gets a lag marker.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;
/// The broadcast point of all events. Cheap to clone; all clones publish to the same feed.
#[derive(Clone, Debug)]
pub struct EventHub {
    tx: broadcast::Sender<EventRecord>,
    observed: Arc<Observed>,
}

/// What the hub keeps from the events it publishes.
#[derive(Debug, Default)]
struct Observed {
    metrics: Arc<EngineMetrics>,
    history: Mutex<History>,
    tree: ControlHandle,
}

impl Default for EventHub {
    fn default() -> Self {
        EventHub::new(DEFAULT_CAPACITY)
    }
}

impl EventHub {
    /// A hub whose subscribers may each fall `capacity` events behind (at least 1).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventHub {
            tx,
            observed: Arc::default(),
        }
    }

    /// Publishes `event`, stamped with the current time: updates the metrics, the history and
    /// the tree model, then broadcasts it. Never blocks; with no subscriber the broadcast is
    /// dropped.
    pub fn publish(&self, event: Event) {
        let record = EventRecord {
            time_ms: now_ms(),
            event,
        };
        self.observed.metrics.observe(&record.event);
        lock(&self.observed.history).apply(&record);
        self.observed.tree.apply(&record);
        let _ = self.tx.send(record);
    }

    /// An [`EventSink`] that publishes here, and whose [`metrics`](EventSink::metrics) are
    /// this hub's.
    pub fn sink(&self) -> EventSink {
        let hub = self.clone();
        let mut sink = EventSink::new(move |event| hub.publish(event));
        sink.metrics = Some(Arc::clone(&self.observed.metrics));
        sink
    }

    /// The engine's metrics.
    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.observed.metrics
    }

    /// The recent past, from the events (locked while the guard lives: keep it short).
    pub fn history(&self) -> MutexGuard<'_, History> {
        lock(&self.observed.history)
    }

    /// The tree model that the control endpoint and the HTTP API show.
    pub(crate) fn tree(&self) -> &ControlHandle {
        &self.observed.tree
    }

    /// A new subscription: it sees every event published from now on.
    pub fn subscribe(&self) -> EventSubscription {
        EventSubscription {
            rx: self.tx.subscribe(),
        }
    }
}

/// One subscriber's view of the feed: a bounded queue of its own.
#[derive(Debug)]
pub struct EventSubscription {
    rx: broadcast::Receiver<EventRecord>,
}

impl EventSubscription {
    /// The next event; an [`Event::Lagged`] marker if events were missed; `None` once every
    /// hub is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call loses no event.
    pub async fn next(&mut self) -> Option<EventRecord> {
        match self.rx.recv().await {
            Ok(record) => Some(record),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(lagged(missed)),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }

    /// The next event for which `f` holds, skipping the others (lag markers included); `None`
    /// if the feed ends or `timeout` passes first. What tests and supervisors of an engine
    /// wait on instead of sleeping.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in that no event is lost from the queue; the skipped ones are consumed.
    pub async fn next_matching(
        &mut self,
        timeout: std::time::Duration,
        f: impl Fn(&Event) -> bool,
    ) -> Option<EventRecord> {
        tokio::time::timeout(timeout, async {
            while let Some(record) = self.next().await {
                if f(&record.event) {
                    return Some(record);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next(&mut self) -> Option<EventRecord> {
        match self.rx.try_recv() {
            Ok(record) => Some(record),
            Err(broadcast::error::TryRecvError::Lagged(missed)) => Some(lagged(missed)),
            Err(_) => None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lagged(missed: u64) -> EventRecord {
    EventRecord {
        time_ms: now_ms(),
        event: Event::Lagged { missed },
    }
}

/// Where a component reports its [`Event`]s. Cheap to clone.
///
/// The callback runs on the reporting component's task: it must return quickly and never block.
#[derive(Clone)]
pub struct EventSink {
    emit: Arc<dyn Fn(Event) + Send + Sync>,
    metrics: Option<Arc<EngineMetrics>>,
}

impl EventSink {
    /// A sink that calls `f` for every event (and has no metrics).
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink {
            emit: Arc::new(f),
            metrics: None,
        }
    }

    /// The metrics a component updates directly (the WAL's group commits), when the sink comes
    /// from a hub ([`EventHub::sink`]).
    pub fn metrics(&self) -> Option<&EngineMetrics> {
        self.metrics.as_deref()
    }

    /// A sink that drops every event (they are still logged through `tracing`).
    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        (self.emit)(event)
    }
}

impl Default for EventSink {
    fn default() -> Self {
        EventSink::discard()
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(actor: &str) -> Event {
        Event::ActorStarted {
            actor: actor.to_owned(),
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_gets_a_lag_marker_and_never_blocks_the_publisher() {
        let hub = EventHub::new(4);
        let mut slow = hub.subscribe();
        for i in 0..10 {
            hub.publish(started(&format!("a{i}"))); // never waits
        }
        assert_eq!(
            slow.next().await.unwrap().event,
            Event::Lagged { missed: 6 }
        );
        let rest: Vec<Event> = std::iter::from_fn(|| slow.try_next())
            .map(|r| r.event)
            .collect();
        assert_eq!(
            rest,
            (6..10)
                .map(|i| started(&format!("a{i}")))
                .collect::<Vec<_>>()
        );
    }
}
