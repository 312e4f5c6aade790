//! The event bus: one feed of [`Event`]s for tracing, tests, the CLI, and a persisted log.
//!
//! Two pieces, because they live differently:
//!
//! * [`EventHub`] — a broadcast channel with bounded per-subscriber buffers. Publishing never
//!   blocks and never fails: a subscriber that falls more than the capacity behind receives an
//!   [`Event::Lagged`] marker saying how many events it missed, and then continues. The hub is
//!   a plain value created by whoever builds the tree (the root), so it outlives every actor:
//!   subscribers keep their subscription across driver restarts and event-bus restarts.
//! * [`EventBus`] — the actor registered as `event-bus`, a child of the root. It subscribes to
//!   the hub, logs every event through `tracing` (target `weir::events`), and appends it as a
//!   JSON line to `<dir>/events.jsonl` (rotated to `events.1.jsonl` past a size limit), so the
//!   events can be read after the process is gone ([`read_event_log`]).
//!
//! # What a crash leaves behind
//!
//! The log is written without fsync: it is for people and tools, not for recovery. A killed
//! process may lose its last lines, or leave a last line cut short, which [`read_event_log`]
//! skips. Events published while the `event-bus` actor is restarting are still delivered to
//! every other subscriber, but miss the log.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::events::{Event, EventRecord, EventSink};
use crate::wal::now_ms;

/// The registered name of the event-bus actor.
pub const NAME: &str = "event-bus";
/// How many events a subscriber may fall behind before it gets a lag marker.
pub const DEFAULT_CAPACITY: usize = 4096;
/// The event log's file name.
pub const LOG_FILE: &str = "events.jsonl";
/// The previous event log, after rotation.
pub const ROTATED_LOG_FILE: &str = "events.1.jsonl";
/// The event log rotates past this size.
pub const DEFAULT_LOG_MAX_BYTES: u64 = 8 << 20;

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

// ============================== the event-bus actor ============================== //

/// The `event-bus` actor: logs the hub's events to `tracing` and to a file.
#[derive(Clone, Debug)]
pub struct EventBus;

/// What the event-bus actor starts from.
#[derive(Clone, Debug)]
pub struct EventBusArgs {
    /// The feed to follow.
    pub hub: EventHub,
    /// Where to keep `events.jsonl`; `None` logs to `tracing` only.
    pub log_dir: Option<PathBuf>,
    /// Rotate the log past this size.
    pub log_max_bytes: u64,
}

/// The event-bus actor's state.
#[derive(Debug)]
pub struct EventBusState {
    log: Option<EventLog>,
    forward: JoinHandle<()>,
}

/// Messages of the event-bus actor.
#[derive(Debug)]
pub enum EventBusMsg {
    /// An event from the hub (sent by the actor's own forwarding task).
    Record(EventRecord),
    /// Replies once every event received so far is written to the log file.
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

/// The append-only JSON-lines event log, rotated by size.
#[derive(Debug)]
struct EventLog {
    dir: PathBuf,
    out: BufWriter<File>,
    bytes: u64,
    max_bytes: u64,
}

impl EventLog {
    fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG_FILE))?;
        let bytes = file.metadata()?.len();
        Ok(EventLog {
            dir: dir.to_path_buf(),
            out: BufWriter::new(file),
            bytes,
            max_bytes,
        })
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        if self.bytes > 0 && self.bytes + line.len() as u64 + 1 > self.max_bytes {
            self.out.flush()?;
            fs::rename(self.dir.join(LOG_FILE), self.dir.join(ROTATED_LOG_FILE))?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join(LOG_FILE))?;
            self.out = BufWriter::new(file);
            self.bytes = 0;
        }
        self.out.write_all(line.as_bytes())?;
        self.out.write_all(b"\n")?;
        self.bytes += line.len() as u64 + 1;
        // Lines reach the file promptly (events are rare next to records), not durably.
        self.out.flush()
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Reads the persisted event log in `dir` (the rotated file first), oldest first. A line that
/// does not parse — the last line of a killed process, cut short — is skipped and counted.
///
/// # Errors
///
/// Reading the files failed (a missing log is no events, not an error).
pub fn read_event_log(dir: &Path) -> std::io::Result<(Vec<EventRecord>, usize)> {
    let mut records = Vec::new();
    let mut skipped = 0;
    for name in [ROTATED_LOG_FILE, LOG_FILE] {
        let file = match File::open(dir.join(name)) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for line in BufReader::new(file).lines() {
            match serde_json::from_str::<EventRecord>(&line?) {
                Ok(record) => records.push(record),
                Err(_) => skipped += 1,
            }
        }
    }
    Ok((records, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(actor: &str) -> Event {
        Event::ActorStarted {
            actor: actor.to_owned(),
        }
    }

    #[test]
    fn json_has_time_kind_and_actor() {
        let record = EventRecord {
            time_ms: 5,
            event: Event::ActorRestarted {
                actor: "receiver-0".into(),
                attempt: 2,
                delay_ms: 200,
            },
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["time_ms"], 5);
        assert_eq!(json["kind"], "actor_restarted");
        assert_eq!(json["actor"], "receiver-0");
        assert_eq!(json["attempt"], 2);
        let back: EventRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
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

    #[test]
    fn the_log_rotates_and_a_cut_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = EventLog::open(dir.path(), 200).unwrap();
        for i in 0..10 {
            let record = EventRecord {
                time_ms: i,
                event: started("x"),
            };
            log.append(&serde_json::to_string(&record).unwrap())
                .unwrap();
        }
        log.out.write_all(b"{\"time_ms\":99,\"ki").unwrap();
        log.flush().unwrap();
        assert!(dir.path().join(ROTATED_LOG_FILE).exists());
        let (records, skipped) = read_event_log(dir.path()).unwrap();
        assert_eq!(skipped, 1);
        let times: Vec<u64> = records.iter().map(|r| r.time_ms).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
        assert_eq!(times.last(), Some(&9));
    }
}
