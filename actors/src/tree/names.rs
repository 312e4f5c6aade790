//! The stable names actors are registered under.
//!
//! Tests and the CLI find actors by these names (ractor's registry), and a restarted actor keeps
//! its name. ractor's registry is process-global, so every name carries the engine's prefix
//! (empty by default): two engines in one process — or two tests — use different prefixes.
//!
//! A restarted actor has a new reference, so peers find each other by name, through one typed
//! look-up, [`peer`], which tells "not running" (restarting, or stopped) from "running, but
//! not the actor you meant" (a name taken by something else).

use ractor::{ActorRef, Message};

use crate::ingest::blocks::StreamId;

/// Builds the names of one engine's actors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    /// Names under `prefix` (e.g. `""`, or `"test-17/"`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    fn name(&self, base: &str) -> String {
        format!("{}{base}", self.prefix)
    }

    /// `root`
    pub fn root(&self) -> String {
        self.name("root")
    }
    /// `event-bus`
    pub fn event_bus(&self) -> String {
        self.name("event-bus")
    }
    /// `control-endpoint`
    pub fn control_endpoint(&self) -> String {
        self.name("control-endpoint")
    }
    /// `http-server`
    pub fn http_server(&self) -> String {
        self.name("http-server")
    }
    /// `driver`
    pub fn driver(&self) -> String {
        self.name("driver")
    }
    /// `receiver-tracker`
    pub fn receiver_tracker(&self) -> String {
        self.name("receiver-tracker")
    }
    /// `received-block-tracker`
    pub fn received_block_tracker(&self) -> String {
        self.name("received-block-tracker")
    }
    /// `receiver-supervisor-<stream>`
    pub fn receiver_supervisor(&self, stream: StreamId) -> String {
        self.name(&format!("receiver-supervisor-{stream}"))
    }
    /// `receiver-<stream>`
    pub fn receiver(&self, stream: StreamId) -> String {
        self.name(&format!("receiver-{stream}"))
    }
    /// `job-generator`
    pub fn job_generator(&self) -> String {
        self.name("job-generator")
    }
    /// `job-scheduler`
    pub fn job_scheduler(&self) -> String {
        self.name("job-scheduler")
    }
    /// `executor-<n>`
    pub fn executor(&self, n: usize) -> String {
        self.name(&format!("executor-{n}"))
    }
}

/// Why a peer could not be looked up by its name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PeerError {
    /// Nothing is registered under the name: the actor is restarting, stopped, or never ran.
    #[error("`{name}` is not running")]
    NotRunning {
        /// The name looked up.
        name: String,
    },
    /// Something is registered under the name, but it does not take the messages asked for.
    #[error("`{name}` is running but is not the actor expected (it does not take {expected})")]
    WrongType {
        /// The name looked up.
        name: String,
        /// The message type asked for.
        expected: &'static str,
    },
}

/// The actor registered as `name`, as one that takes `M`.
///
/// # Errors
///
/// [`PeerError::NotRunning`] if nothing is registered under `name`, [`PeerError::WrongType`]
/// if what is registered takes other messages than `M`.
pub(crate) fn peer<M: Message>(name: &str) -> Result<ActorRef<M>, PeerError> {
    let Some(cell) = ractor::registry::where_is(name) else {
        return Err(PeerError::NotRunning {
            name: name.to_owned(),
        });
    };
    // `None`: a remote actor, whose type is not known here; weir has none.
    if cell.is_message_type_of::<M>() == Some(false) {
        let full = std::any::type_name::<M>();
        return Err(PeerError::WrongType {
            name: name.to_owned(),
            expected: full.rsplit("::").next().unwrap_or(full),
        });
    }
    Ok(cell.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peer_is_found_by_name_and_type_and_each_miss_says_why() {
        struct Echo;
        impl ractor::Actor for Echo {
            type Msg = u32;
            type State = ();
            type Arguments = ();
            async fn pre_start(
                &self,
                _: ActorRef<u32>,
                _: (),
            ) -> Result<(), ractor::ActorProcessingErr> {
                Ok(())
            }
        }
        let name = "names-test/echo";
        assert_eq!(
            peer::<u32>(name).map(|_| ()),
            Err(PeerError::NotRunning {
                name: name.to_owned()
            })
        );
        let (echo, handle) = ractor::Actor::spawn(Some(name.to_owned()), Echo, ())
            .await
            .unwrap();
        assert_eq!(peer::<u32>(name).unwrap().get_id(), echo.get_id());
        let wrong = peer::<String>(name).map(|_| ()).unwrap_err();
        assert_eq!(
            wrong,
            PeerError::WrongType {
                name: name.to_owned(),
                expected: "String"
            }
        );
        assert_eq!(
            wrong.to_string(),
            "`names-test/echo` is running but is not the actor expected (it does not take String)"
        );
        echo.stop(None);
        handle.await.unwrap();
    }

    #[test]
    fn names_are_the_documented_ones_under_the_prefix() {
        let n = Names::default();
        assert_eq!(n.receiver_supervisor(3), "receiver-supervisor-3");
        assert_eq!(n.executor(0), "executor-0");
        assert_eq!(
            Names::new("t/").received_block_tracker(),
            "t/received-block-tracker"
        );
    }
}
