//! The control endpoint over raw TCP: hello and snapshot first, a slow client gets a lag
//! marker while publishing never waits, commands are answered by id, a kill with the token
//! kills the named actor, and an overlong command line is refused and closes the connection.
//! Off loopback, nothing but the hello comes before the token; a connection over the cap is
//! told why and closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ControlConfigError;
use crate::observe::control::control_endpoint::{ControlEndpoint, ControlEndpointArgs, ControlMsg};
use crate::observe::control::protocol::{MAX_LINE, PROTOCOL_VERSION, Reply, ServerMessage};
use crate::observe::hub::{DEFAULT_CAPACITY, EventHub};
use crate::testing::CommitLogPipeline;
use crate::{Engine, EngineConfig, EngineError, Event, Names, Storage};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// An actor that does nothing, and keeps running when a child ends (a stand-in root).
struct Idle;

impl Actor for Idle {
    type Msg = ();
    type State = ();
    type Arguments = ();
    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<()>,
        _event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

struct Endpoint {
    actor: ActorRef<ControlMsg>,
    addr: SocketAddr,
    hub: EventHub,
}

async fn endpoint(prefix: &str, token: Option<&str>) -> Endpoint {
    endpoint_with(prefix, token, |_| {}).await
}

/// An endpoint whose arguments `tweak` changes first. Its `addr` is where a client connects:
/// on loopback also when it listens on every address.
async fn endpoint_with(
    prefix: &str,
    token: Option<&str>,
    tweak: impl FnOnce(&mut ControlEndpointArgs),
) -> Endpoint {
    let hub = EventHub::default();
    let handle = hub.tree().clone();
    let names = Names::new(prefix);
    let mut args = ControlEndpointArgs {
        addr: "127.0.0.1:0".parse().expect("addr"),
        hub: hub.clone(),
        names: names.clone(),
        name_prefix: prefix.to_owned(),
        token: token.map(Arc::from),
        handle: handle.clone(),
        max_connections: 8,
        auth_timeout: Duration::from_secs(30),
        stopper: None,
    };
    tweak(&mut args);
    let (actor, _) = Actor::spawn(Some(names.control_endpoint()), ControlEndpoint, args)
        .await
        .expect("spawn");
    let bound = handle.local_addr().expect("bound in pre_start");
    Endpoint {
        actor,
        addr: SocketAddr::from(([127, 0, 0, 1], bound.port())),
        hub,
    }
}

struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Client {
        let (read, write) = TcpStream::connect(addr)
            .await
            .expect("connect")
            .into_split();
        Client {
            lines: BufReader::new(read).lines(),
            write,
        }
    }

    async fn next(&mut self) -> ServerMessage {
        let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("the server keeps the connection open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{line}`: {e}"))
    }

    async fn send(&mut self, line: &str) {
        self.write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
    }

    /// Every line until the server closes the connection.
    async fn rest(&mut self) -> Vec<ServerMessage> {
        let mut rest = Vec::new();
        loop {
            let line = tokio::time::timeout(Duration::from_secs(30), self.lines.next_line())
                .await
                .expect("the connection closes in time");
            match line {
                Ok(Some(line)) => rest
                    .push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{line}`: {e}"))),
                _ => return rest,
            }
        }
    }

    async fn reply(&mut self) -> Reply {
        loop {
            if let ServerMessage::Reply(reply) = self.next().await {
                return reply;
            }
        }
    }
}

// A current-thread runtime: the connection task cannot run while the test publishes, so the
// client is as slow as a client can be, by construction.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_client_gets_a_lag_marker_and_publishing_never_waits() {
    let ep = endpoint("ce-lag/", None).await;
    let mut client = Client::connect(ep.addr).await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Hello { protocol, .. } if protocol == PROTOCOL_VERSION
    ));
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    let published = DEFAULT_CAPACITY as u64 + 904;
    for i in 0..published {
        // Synchronous and never blocking: no await between these.
        ep.hub.publish(Event::ActorStarted {
            actor: format!("a{i}"),
        });
    }
    match client.next().await {
        ServerMessage::Event(record) => {
            assert_eq!(record.event, Event::Lagged { missed: 904 });
        }
        other => panic!("expected the lag marker first, got {other:?}"),
    }
    match client.next().await {
        ServerMessage::Event(record) => assert_eq!(
            record.event,
            Event::ActorStarted {
                actor: "a904".into()
            },
            "then the newest events, in order"
        ),
        other => panic!("expected an event, got {other:?}"),
    }
    ep.actor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_answered_by_id_and_kill_needs_the_token() {
    let ep = endpoint("ce-cmd/", Some("secret-token")).await;
    // The victim is an actor of the engine: in the tree under its root.
    let (root, root_done) = Actor::spawn(Some("ce-cmd/root".to_owned()), Idle, ())
        .await
        .expect("spawn");
    let (victim, victim_done) =
        Actor::spawn_linked(Some("ce-cmd/victim".to_owned()), Idle, (), root.get_cell())
            .await
            .expect("spawn");
    let mut client = Client::connect(ep.addr).await;
    client.next().await; // hello
    client.next().await; // snapshot

    client.send(r#"{"cmd":"snapshot","id":7}"#).await;
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (7, true));

    client
        .send(r#"{"cmd":"kill","id":8,"actor":"victim","token":"wrong-token!"}"#)
        .await;
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (8, false));
    assert!(
        reply.message.contains("the token does not match"),
        "{}",
        reply.message
    );
    client
        .send(r#"{"cmd":"kill","id":9,"actor":"victim"}"#)
        .await;
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (9, false));
    assert!(
        victim.get_status() == ractor::ActorStatus::Running,
        "still alive"
    );

    client.send("not json").await;
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (0, false));
    assert!(
        reply.message.contains("is not understood"),
        "{}",
        reply.message
    );

    client
        .send(r#"{"cmd":"kill","id":10,"actor":"ce-cmd/root","token":"secret-token"}"#)
        .await;
    let reply = client.reply().await;
    assert!(!reply.ok, "root is never killed");

    // Without the prefix: the endpoint adds it.
    client
        .send(r#"{"cmd":"kill","id":11,"actor":"victim","token":"secret-token"}"#)
        .await;
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (11, true), "{}", reply.message);
    assert_eq!(reply.message, "killed ce-cmd/victim");
    tokio::time::timeout(Duration::from_secs(30), victim_done)
        .await
        .expect("the victim ends")
        .expect("join");
    root.stop(None);
    root_done.await.expect("join");
    ep.actor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_endpoint_listens_on_the_address_it_had() {
    let hub = EventHub::default();
    let handle = hub.tree().clone();
    let args = ControlEndpointArgs {
        addr: "127.0.0.1:0".parse().expect("addr"),
        hub,
        names: Names::new("ce-restart/"),
        name_prefix: "ce-restart/".into(),
        token: None,
        handle: handle.clone(),
        max_connections: 8,
        auth_timeout: Duration::from_secs(30),
        stopper: None,
    };
    let (first, done) = Actor::spawn(None, ControlEndpoint, args.clone())
        .await
        .expect("spawn");
    let addr = handle.local_addr().expect("bound");
    let mut client = Client::connect(addr).await;
    client.next().await;
    first.kill();
    done.await.expect("join");
    // The killed endpoint's connection is closed (its tasks went with its state).
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match client.lines.next_line().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection closes with the endpoint");
    let (second, _) = Actor::spawn(None, ControlEndpoint, args)
        .await
        .expect("the address is free again");
    assert_eq!(handle.local_addr(), Some(addr));
    let mut client = Client::connect(addr).await;
    assert!(matches!(client.next().await, ServerMessage::Hello { .. }));
    second.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_line_over_the_bound_is_refused_and_closes_the_connection() {
    let ep = endpoint("ce-long/", None).await;
    let mut client = Client::connect(ep.addr).await;
    client.next().await; // hello
    client.next().await; // snapshot

    // A line of exactly the bound is read (and is not a command).
    client.send(&"x".repeat(MAX_LINE)).await;
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (0, false));
    assert!(
        reply.message.contains("is not understood"),
        "{}",
        &reply.message[..80]
    );

    // One byte more, with no newline in sight: refused, naming the bound, and closed.
    client
        .write
        .write_all("y".repeat(MAX_LINE + 1).as_bytes())
        .await
        .expect("write");
    let reply = client.reply().await;
    assert_eq!((reply.id, reply.ok), (0, false));
    assert_eq!(
        reply.message,
        format!("a command line is longer than {MAX_LINE} bytes; closing the connection")
    );
    let end = tokio::time::timeout(Duration::from_secs(30), client.lines.next_line())
        .await
        .expect("the connection closes in time");
    assert!(matches!(end, Ok(None)), "{end:?}");
    ep.actor.stop(None);
}

/// The hello of an endpoint that wants the token first: it says so, and names nothing else.
fn assert_guarded_hello(message: &ServerMessage) {
    assert_eq!(
        message,
        &ServerMessage::Hello {
            protocol: PROTOCOL_VERSION,
            server: "weir".to_owned(),
            pid: 0,
            name_prefix: String::new(),
            token_required: true,
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_a_connection_gets_nothing_but_the_hello_without_the_token() {
    let ep = endpoint_with("ce-remote/", Some("secret-token"), |args| {
        args.addr = "0.0.0.0:0".parse().expect("addr");
        args.auth_timeout = Duration::from_millis(300);
    })
    .await;
    let first_lines = [
        // Nothing at all: refused when the time is up.
        None,
        Some(r#"{"cmd":"auth","id":4,"token":"wrong-token!"}"#),
        Some(r#"{"cmd":"snapshot","id":5}"#),
        Some(r#"{"cmd":"kill","id":6,"actor":"driver","token":"secret-token"}"#),
        Some("not json"),
    ];
    for first in first_lines {
        let mut client = Client::connect(ep.addr).await;
        assert_guarded_hello(&client.next().await);
        // Events published now reach no one who has not presented the token.
        for i in 0..3 {
            ep.hub.publish(Event::ActorStarted {
                actor: format!("a{i}"),
            });
        }
        if let Some(line) = first {
            client.send(line).await;
        }
        let rest = client.rest().await;
        let [ServerMessage::Reply(reply)] = &rest[..] else {
            panic!("{first:?}: one refusal, then the end; got {rest:?}");
        };
        assert!(!reply.ok, "{first:?}: {reply:?}");
        let expected = match first {
            None => "none came within 300ms",
            Some(line) if line.contains("wrong-token") => "the token does not match",
            Some(_) => "this endpoint needs the token first",
        };
        assert!(reply.message.contains(expected), "{first:?}: {reply:?}");
    }
    ep.actor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_the_token_as_first_line_opens_the_snapshot_and_the_events() {
    let ep = endpoint_with("ce-remote-ok/", Some("secret-token"), |args| {
        args.addr = "0.0.0.0:0".parse().expect("addr");
    })
    .await;
    let mut client = Client::connect(ep.addr).await;
    assert_guarded_hello(&client.next().await);
    client
        .send(r#"{"cmd":"auth","id":1,"token":"secret-token"}"#)
        .await;
    match client.next().await {
        ServerMessage::Hello {
            pid,
            name_prefix,
            token_required,
            ..
        } => assert_eq!(
            (pid, name_prefix.as_str(), token_required),
            (std::process::id(), "ce-remote-ok/", false),
            "the full hello"
        ),
        other => panic!("expected the full hello, got {other:?}"),
    }
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    ep.hub.publish(Event::ActorStarted {
        actor: "seen".into(),
    });
    match client.next().await {
        ServerMessage::Event(record) => assert_eq!(
            record.event,
            Event::ActorStarted {
                actor: "seen".into()
            }
        ),
        other => panic!("expected the event, got {other:?}"),
    }
    // Commands work as on loopback (a kill still carries the token itself).
    client.send(r#"{"cmd":"snapshot","id":2}"#).await;
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    assert_eq!(
        client.reply().await,
        Reply::ok(2, "snapshot sent".to_owned())
    );
    ep.actor.stop(None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_told_why_and_closed_and_a_freed_place_is_taken_again() {
    let ep = endpoint_with("ce-cap/", None, |args| args.max_connections = 2).await;
    let mut served = Vec::new();
    for _ in 0..2 {
        let mut client = Client::connect(ep.addr).await;
        assert!(matches!(client.next().await, ServerMessage::Hello { .. }));
        served.push(client);
    }
    let mut third = Client::connect(ep.addr).await;
    assert_eq!(
        third.rest().await,
        [ServerMessage::Reply(Reply::refused(
            0,
            "the control endpoint serves at most 2 connections at once; this one is closed, try \
             again later"
                .to_owned()
        ))]
    );
    // The served ones are still served.
    for client in &mut served {
        client.send(r#"{"cmd":"snapshot","id":3}"#).await;
        assert_eq!(client.reply().await.id, 3);
    }
    // One leaves; its place is free again once the endpoint has seen it go.
    drop(served.remove(0));
    let taken = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut client = Client::connect(ep.addr).await;
            if matches!(client.next().await, ServerMessage::Hello { .. }) {
                return client;
            }
        }
    })
    .await;
    assert!(taken.is_ok(), "a freed place is taken again");
    ep.actor.stop(None);
}

fn engine_config(prefix: &str, storage: Storage, addr: &str) -> EngineConfig {
    let mut config = EngineConfig::new(storage);
    config.name_prefix = prefix.to_owned();
    config.batch_interval = Duration::from_millis(50);
    config.control_addr = Some(addr.parse().expect("addr"));
    config
}

fn pipeline() -> Arc<CommitLogPipeline> {
    Arc::new(CommitLogPipeline::new(Arc::default(), Duration::ZERO))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_control_address_is_refused_at_start_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = engine_config(
        "ce-engine-refused/",
        Storage::local(dir.path()),
        "0.0.0.0:0",
    );
    match Engine::start(config.clone(), pipeline(), Vec::new()).await {
        Err(EngineError::InvalidControlConfig(ControlConfigError::NotLoopback { addr })) => {
            assert_eq!(addr, "0.0.0.0:0".parse().expect("addr"));
        }
        other => panic!("expected the address refused, got {other:?}"),
    }
    // Nothing was started, no token written.
    assert!(ractor::registry::where_is(config.names().root()).is_none());
    assert!(!dir.path().join("control-token").exists());
    // Allowed, it still needs a token, which only local storage has.
    let mut config = engine_config("ce-engine-refused/", Storage::memory(), "[::]:0");
    config.control_allow_remote = true;
    let refused = Engine::start(config, pipeline(), Vec::new()).await;
    assert!(
        matches!(
            refused,
            Err(EngineError::InvalidControlConfig(
                ControlConfigError::RemoteWithoutToken { .. }
            ))
        ),
        "{refused:?}"
    );
    // Loopback needs no option, in either family.
    for addr in ["127.0.0.1:0", "[::1]:0", "[::ffff:127.0.0.1]:0"] {
        let config = engine_config("x/", Storage::memory(), addr);
        assert_eq!(config.validate_control(), Ok(()), "{addr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_allowed_off_loopback_sends_events_only_to_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = engine_config("ce-engine-remote/", Storage::local(dir.path()), "0.0.0.0:0");
    config.control_allow_remote = true;
    let engine = Engine::start(config, pipeline(), Vec::new())
        .await
        .expect("start");
    let port = engine.control_addr().expect("bound").port();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let token = std::fs::read_to_string(dir.path().join("control-token")).expect("token");

    // Without the token: the guarded hello, then a refusal — no snapshot, no event.
    let mut stranger = Client::connect(addr).await;
    assert_guarded_hello(&stranger.next().await);
    stranger
        .send(r#"{"cmd":"auth","id":1,"token":"not-the-token"}"#)
        .await;
    let rest = stranger.rest().await;
    assert!(
        matches!(&rest[..], [ServerMessage::Reply(Reply { ok: false, .. })]),
        "{rest:?}"
    );

    // With it: the full hello, the snapshot, and the engine's events.
    let mut client = Client::connect(addr).await;
    assert_guarded_hello(&client.next().await);
    let auth = serde_json::json!({"cmd": "auth", "id": 2, "token": token.trim()});
    client.send(&auth.to_string()).await;
    assert!(matches!(
        client.next().await,
        ServerMessage::Hello {
            token_required: false,
            ..
        }
    ));
    assert!(matches!(client.next().await, ServerMessage::Snapshot(_)));
    let batch = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let ServerMessage::Event(record) = client.next().await
                && matches!(record.event, Event::BatchCompleted { .. })
            {
                return;
            }
        }
    })
    .await;
    assert!(
        batch.is_ok(),
        "the engine's events reach the client with the token"
    );
    engine.stop(false).await.expect("stop");
}
