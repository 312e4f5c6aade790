//! The control endpoint over raw TCP: hello and snapshot first, a slow client gets a lag
//! marker while publishing never waits, commands are answered by id, a kill with the token
//! kills the named actor, and an overlong command line is refused and closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::Event;
use crate::Names;
use crate::observe::control::control_endpoint::{ControlEndpoint, ControlEndpointArgs, ControlMsg};
use crate::observe::control::protocol::{MAX_LINE, PROTOCOL_VERSION, Reply, ServerMessage};
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::hub::{DEFAULT_CAPACITY, EventHub};
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
    let hub = EventHub::default();
    let handle = ControlHandle::default();
    let names = Names::new(prefix);
    let args = ControlEndpointArgs {
        addr: "127.0.0.1:0".parse().expect("addr"),
        hub: hub.clone(),
        names: names.clone(),
        name_prefix: prefix.to_owned(),
        token: token.map(Arc::from),
        handle: handle.clone(),
    };
    let (actor, _) = Actor::spawn(Some(names.control_endpoint()), ControlEndpoint, args)
        .await
        .expect("spawn");
    Endpoint {
        actor,
        addr: handle.local_addr().expect("bound in pre_start"),
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
    let handle = ControlHandle::default();
    let args = ControlEndpointArgs {
        addr: "127.0.0.1:0".parse().expect("addr"),
        hub,
        names: Names::new("ce-restart/"),
        name_prefix: "ce-restart/".into(),
        token: None,
        handle: handle.clone(),
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
