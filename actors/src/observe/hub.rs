//! The hub: one feed of [`Event`]s for tracing, tests, the CLI and the persisted log.
//!
//! [`EventHub`] is a broadcast channel with bounded per-subscriber buffers. Publishing never
//! blocks and never fails: a subscriber that falls more than the capacity behind receives an
//! [`Event::Lagged`] marker saying how many events it missed, and then continues. The hub is a
//! plain value created by whoever builds the tree (the engine), so it outlives every actor:
//! subscribers keep their subscription across driver restarts and event-bus restarts.
//! Components report through an [`EventSink`], which a hub hands out ([`EventHub::sink`]).

use std::fmt;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::clock::now_ms;
use crate::observe::event::{Event, EventRecord};

/// How many events a subscriber may fall behind before it gets a lag marker.
pub(crate) const DEFAULT_CAPACITY: usize = 4096;
/// The broadcast point of all events. Cheap to clone; all clones publish to the same feed.
#[derive(Clone, Debug)]
pub struct EventHub {
    tx: broadcast::Sender<EventRecord>,
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
        EventHub { tx }
    }

    /// Publishes `event`, stamped with the current time. Never blocks; with no subscriber the
    /// event is dropped.
    pub fn publish(&self, event: Event) {
        let _ = self.tx.send(EventRecord {
            time_ms: now_ms(),
            event,
        });
    }

    /// An [`EventSink`] that publishes here.
    pub fn sink(&self) -> EventSink {
        let hub = self.clone();
        EventSink::new(move |event| hub.publish(event))
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
pub struct EventSink(Arc<dyn Fn(Event) + Send + Sync>);

impl EventSink {
    /// A sink that calls `f` for every event.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        EventSink(Arc::new(f))
    }

    /// A sink that drops every event (they are still logged through `tracing`).
    pub fn discard() -> Self {
        EventSink::new(|_| {})
    }

    /// Reports one event.
    pub fn emit(&self, event: Event) {
        (self.0)(event)
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
