//! The `control-endpoint` actor: listens for `weir` clients, serves each with a
//! [`Connection`], and carries out their commands — `snapshot`, and `kill` and `panic` after
//! checking the token.
//!
//! `kill` and `panic` reach only the engine's own actors: a name is looked up under the
//! engine's prefix (added when the command lacks it), and the actor found must be in the
//! tree under the engine's root.
//!
//! Opt-in ([`EngineConfig::control_addr`](crate::config::EngineConfig::control_addr)); a child
//! of the root, so it survives driver restarts. The protocol is in
//! [`protocol`](crate::observe::control::protocol).
//!
//! # Restarts
//!
//! After a restart the endpoint binds the address it had before (also when it was configured
//! with port 0), so clients reconnect to the same place. The tree model lives in the
//! [`ControlHandle`], which outlives the actor. The listener, the model feed and every
//! session are tasks owned by abort-on-drop guards in the actor's state, so a killed endpoint
//! leaves no listener and no session behind.

use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::observe::control::connection::{AbortOnDrop, CommandRequest, Connection};
use crate::observe::control::protocol::{Command, PROTOCOL_VERSION, Reply, ServerMessage};
use crate::observe::control::token::token_matches;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::hub::EventHub;
use crate::tree::names::Names;

/// The `control-endpoint` actor.
#[derive(Clone, Debug)]
pub(crate) struct ControlEndpoint;

/// What the control endpoint starts from.
#[derive(Clone, Debug)]
pub(crate) struct ControlEndpointArgs {
    /// Where to listen (the address bound before, after a restart).
    pub(crate) addr: SocketAddr,
    /// The event feed.
    pub(crate) hub: EventHub,
    /// The engine's actor names.
    pub(crate) names: Names,
    /// The engine's name prefix.
    pub(crate) name_prefix: String,
    /// The token; `None`: every command that changes anything is refused.
    pub(crate) token: Option<Arc<str>>,
    /// Shared with the engine.
    pub(crate) handle: ControlHandle,
}

/// Messages of the control endpoint.
#[derive(Debug)]
pub(crate) enum ControlMsg {
    /// Carry out a command from a connection.
    Command(CommandRequest),
}

impl From<CommandRequest> for ControlMsg {
    fn from(request: CommandRequest) -> Self {
        ControlMsg::Command(request)
    }
}

/// The way back, which ractor needs to return an undelivered request to its session.
impl From<ControlMsg> for CommandRequest {
    fn from(message: ControlMsg) -> Self {
        let ControlMsg::Command(request) = message;
        request
    }
}

/// The control endpoint's state.
#[derive(Debug)]
pub(crate) struct ControlEndpointState {
    args: ControlEndpointArgs,
    _tasks: Vec<AbortOnDrop>,
}

impl Actor for ControlEndpoint {
    type Msg = ControlMsg;
    type State = ControlEndpointState;
    type Arguments = ControlEndpointArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ControlEndpointArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let addr = args.handle.local_addr().unwrap_or(args.addr);
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("the control endpoint could not listen on {addr}: {e}"))?;
        let bound = listener.local_addr()?;
        args.handle.set_local_addr(bound);
        tracing::info!(%bound, "control endpoint listening");

        let mut subscription = args.hub.subscribe();
        let handle = args.handle.clone();
        let model = AbortOnDrop(tokio::spawn(async move {
            while let Some(record) = subscription.next().await {
                handle.apply(&record);
            }
        }));
        let conn = Arc::new(Connection::new(
            ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: format!("weir {}", env!("CARGO_PKG_VERSION")),
                pid: std::process::id(),
                name_prefix: args.name_prefix.clone(),
            },
            args.hub.clone(),
            args.handle.clone(),
            args.names.root(),
            myself.get_derived(),
        ));
        let accept = AbortOnDrop(tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "control client connected");
                            connections.spawn(Arc::clone(&conn).serve(stream));
                        }
                        Err(err) => tracing::warn!(error = %err, "control endpoint accept failed"),
                    },
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
        Ok(ControlEndpointState {
            args,
            _tasks: vec![model, accept],
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let ControlMsg::Command(CommandRequest { command, reply }) = message;
        let answer = carry_out(&state.args, command);
        if !reply.is_closed() {
            let _ = reply.send(answer);
        }
        Ok(())
    }
}

/// Kill or panic, after checking the token.
fn carry_out(args: &ControlEndpointArgs, command: Command) -> Reply {
    let (id, actor, token, kill) = match command {
        Command::Snapshot { id } => {
            return Reply::ok(id, "snapshot sent".to_owned());
        }
        Command::Kill { id, actor, token } => (id, actor, token, true),
        Command::Panic { id, actor, token } => (id, actor, token, false),
    };
    let verb = if kill { "kill" } else { "panic" };
    let Some(expected) = &args.token else {
        return Reply::refused(
            id,
            format!(
                "refused to {verb} {actor}: this engine has no control token (its storage is \
                 not a local directory), so commands that change anything are refused"
            ),
        );
    };
    match token {
        None => {
            return Reply::refused(
                id,
                format!("refused to {verb} {actor}: the command carries no token"),
            );
        }
        Some(given) if !token_matches(expected, &given) => {
            return Reply::refused(
                id,
                format!("refused to {verb} {actor}: the token does not match"),
            );
        }
        Some(_) => {}
    }
    // Only under this engine's prefix: never the name as given when it lacks the prefix, which
    // could be another engine's actor, or anything else registered in the process.
    let name = if actor.starts_with(&args.name_prefix) {
        actor.clone()
    } else {
        format!("{}{actor}", args.name_prefix)
    };
    let Some(cell) = ractor::registry::where_is(name.clone()) else {
        return Reply::refused(
            id,
            format!("refused to {verb} {actor}: no running actor has that name"),
        );
    };
    let root = args.names.root();
    if name == root {
        return Reply::refused(
            id,
            format!(
                "refused to {verb} {name}: the root would take the whole engine down; stop the process instead"
            ),
        );
    }
    // With an empty prefix every name is "under" it: the actor must also be in this engine's
    // supervision tree.
    if !descends_from(&cell, &root) {
        return Reply::refused(
            id,
            format!("refused to {verb} {name}: it is not an actor of this engine"),
        );
    }
    if kill {
        tracing::warn!(actor = %name, "killing an actor on request of the control endpoint");
        cell.kill();
        Reply::ok(id, format!("killed {name}"))
    } else {
        tracing::warn!(actor = %name, "arming a panic on request of the control endpoint");
        crate::faults::arm_panic(
            name.clone(),
            format!("panic injected through the control endpoint into {name}"),
        );
        Reply::ok(id, format!("{name} panics when it next handles a message"))
    }
}

/// Deeper than any tree of the engine: a supervisor chain longer than this is not one.
const MAX_DEPTH: usize = 64;

/// Whether `cell` is supervised, directly or through its supervisors, by the actor registered
/// as `root`.
fn descends_from(cell: &ActorCell, root: &str) -> bool {
    let Some(root) = ractor::registry::where_is(root.to_owned()) else {
        return false;
    };
    let mut supervisor = cell.try_get_supervisor();
    for _ in 0..MAX_DEPTH {
        match supervisor {
            Some(s) if s.get_id() == root.get_id() => return true,
            Some(s) => supervisor = s.try_get_supervisor(),
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(token: Option<&str>) -> ControlEndpointArgs {
        args_under("ce-unit/", token)
    }

    fn args_under(prefix: &str, token: Option<&str>) -> ControlEndpointArgs {
        ControlEndpointArgs {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            hub: EventHub::default(),
            names: Names::new(prefix),
            name_prefix: prefix.to_owned(),
            token: token.map(Arc::from),
            handle: ControlHandle::default(),
        }
    }

    /// An actor that does nothing.
    struct Idle;

    impl Actor for Idle {
        type Msg = ();
        type State = ();
        type Arguments = ();
        async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<(), ActorProcessingErr> {
            Ok(())
        }
    }

    fn kill(id: u64, actor: &str, token: Option<&str>) -> Command {
        Command::Kill {
            id,
            actor: actor.to_owned(),
            token: token.map(str::to_owned),
        }
    }

    #[test]
    fn without_a_token_every_changing_command_is_refused_and_snapshot_is_not() {
        let args = args(None);
        let reply = carry_out(&args, kill(1, "driver", Some("anything")));
        assert_eq!((reply.id, reply.ok), (1, false));
        assert!(
            reply.message.contains("this engine has no control token"),
            "{}",
            reply.message
        );
        let panic = Command::Panic {
            id: 2,
            actor: "driver".to_owned(),
            token: None,
        };
        let reply = carry_out(&args, panic);
        assert_eq!((reply.id, reply.ok), (2, false));
        assert!(
            reply.message.starts_with("refused to panic driver"),
            "{}",
            reply.message
        );
        let reply = carry_out(&args, Command::Snapshot { id: 3 });
        assert_eq!(reply, Reply::ok(3, "snapshot sent".to_owned()));
    }

    #[tokio::test]
    async fn kill_and_panic_reach_no_actor_outside_the_engines_own_tree() {
        // Another engine in the same process (its root and its driver, under its own prefix),
        // and a registered actor that belongs to no engine.
        let (other_root, other_root_done) = Actor::spawn(Some("ce-other/root".into()), Idle, ())
            .await
            .expect("spawn");
        let (other_driver, other_driver_done) = Actor::spawn_linked(
            Some("ce-other/driver".into()),
            Idle,
            (),
            other_root.get_cell(),
        )
        .await
        .expect("spawn");
        let (loner, loner_done) = Actor::spawn(Some("ce-loner".into()), Idle, ())
            .await
            .expect("spawn");
        // This engine's endpoint, under a prefix of its own and under the empty one.
        for prefix in ["ce-mine/", ""] {
            let args = args_under(prefix, Some("secret"));
            for actor in ["ce-other/driver", "ce-loner"] {
                let reply = carry_out(&args, kill(1, actor, Some("secret")));
                assert!(!reply.ok, "{prefix:?} killed {actor}: {}", reply.message);
                let panic = Command::Panic {
                    id: 2,
                    actor: actor.to_owned(),
                    token: Some("secret".to_owned()),
                };
                let reply = carry_out(&args, panic);
                assert!(!reply.ok, "{prefix:?} armed {actor}: {}", reply.message);
                assert!(!crate::faults::is_armed(actor), "{prefix:?}: {actor} armed");
            }
        }
        other_driver.stop(None);
        loner.stop(None);
        other_root.stop(None);
        loner_done.await.expect("join");
        other_root_done.await.expect("join");
        other_driver_done.await.expect("join");
    }

    #[test]
    fn a_matching_token_for_an_unknown_actor_is_refused_by_name() {
        let args = args(Some("secret"));
        let reply = carry_out(&args, kill(4, "no-such-actor", Some("secret\n")));
        assert_eq!(
            reply,
            Reply::refused(
                4,
                "refused to kill no-such-actor: no running actor has that name".to_owned()
            )
        );
    }
}
