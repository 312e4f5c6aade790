//! The root supervisor: keeps the event bus and the driver alive, and gives up clearly.
//!
//! Registered as `root`. Its children, one-for-one and permanent:
//!
//! * `event-bus` — started first, so that every later step is recorded; it survives driver
//!   restarts (it is the root's child, not the driver's).
//! * `control-endpoint` — only with [`EngineConfig::control_addr`]: started before the driver
//!   (so it sees the driver start), with a token created now and written to
//!   `<storage>/control-token` (see [`crate::observe::control`]).
//! * `http-server` — only with [`EngineConfig::http_addr`]: metrics, the JSON API and the
//!   dashboard (see [`crate::observe::http`]), with the same token.
//! * `driver` — restarted from the latest valid checkpoint after any failure, under the
//!   engine's restart intensity and exponential backoff ([`EngineConfig::driver_policy`]).
//!
//! When the intensity is exceeded the root gives up: it records *which* actor failed, how
//! often and why in the engine's outcome slot, publishes [`crate::Event::ActorGaveUp`], and
//! fails — [`crate::engine::Engine::await_termination`] then returns
//! [`EngineError::GaveUp`].

use std::sync::{Arc, Mutex, PoisonError};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::messages::{RestartChildren, Stop};
use crate::observe::control::control_endpoint::{ControlEndpoint, ControlEndpointArgs};
use crate::observe::control::token::create_token;
use crate::observe::control::tree_model::ControlHandle;
use crate::observe::event_bus::{EventBus, EventBusArgs};
use crate::observe::http::http_server::{HttpHandle, HttpServer, HttpServerArgs};
use crate::observe::http::routes::Api;
use crate::observe::hub::EventHub;
use crate::tree::children::{ChildSpec, Children, Decision};
use crate::tree::driver::{Driver, DriverArgs, DriverMsg};
use crate::tree::names::peer;
use crate::tree::restart_policy::RestartType;

/// The root actor.
#[derive(Clone, Debug)]
pub(crate) struct Root;

/// What the root starts from.
#[derive(Clone, Debug)]
pub(crate) struct RootArgs {
    /// The engine's configuration.
    pub config: Arc<EngineConfig>,
    /// What the driver runs.
    pub driver: DriverArgs,
    /// The event feed.
    pub hub: EventHub,
    /// Where the root records why it gave up.
    pub outcome: Arc<Mutex<Option<EngineError>>>,
    /// Shared with the control endpoint (unused without one).
    pub control: ControlHandle,
    /// Shared with the HTTP server (unused without one).
    pub http: HttpHandle,
}

/// The root's state.
#[derive(Debug)]
pub(crate) struct RootState {
    children: Children,
    outcome: Arc<Mutex<Option<EngineError>>>,
    driver_name: String,
}

/// Messages of the root.
#[derive(Debug)]
pub(crate) enum RootMsg {
    /// Restart children after their backoff (sent to itself).
    Restart(RestartChildren),
    /// Stop the engine (see [`DriverMsg::Stop`]); replies when everything is stopped.
    Stop(Stop),
}

/// The narrowed reference the HTTP server stops the engine through.
impl From<Stop> for RootMsg {
    fn from(stop: Stop) -> Self {
        RootMsg::Stop(stop)
    }
}

impl TryFrom<RootMsg> for Stop {
    type Error = RootMsg;

    fn try_from(message: RootMsg) -> Result<Self, RootMsg> {
        match message {
            RootMsg::Stop(stop) => Ok(stop),
            other => Err(other),
        }
    }
}

/// The configuration the HTTP API shows: the engine's settings (those of the layer above
/// included) and where it listens.
fn effective_settings(config: &EngineConfig) -> std::collections::BTreeMap<String, String> {
    let mut settings = config.settings();
    let addr =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    settings.insert("storage".to_owned(), config.storage.describe());
    settings.insert("name_prefix".to_owned(), config.name_prefix.clone());
    settings.insert("control_addr".to_owned(), addr(config.control_addr));
    settings.insert("http_addr".to_owned(), addr(config.http_addr));
    settings.insert(
        "http_max_connections".to_owned(),
        config.http_max_connections.to_string(),
    );
    settings.insert(
        "control_max_connections".to_owned(),
        config.control_max_connections.to_string(),
    );
    settings
}

impl Actor for Root {
    type Msg = RootMsg;
    type State = RootState;
    type Arguments = RootArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RootArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let names = args.config.names();
        let mut children = Children::new(
            names.root(),
            args.config.driver_policy,
            args.config.seed,
            args.hub.sink(),
        );
        let bus_args = EventBusArgs {
            hub: args.hub.clone(),
            log_dir: args.config.event_log_dir(),
            log_max_bytes: crate::observe::event_log::DEFAULT_LOG_MAX_BYTES,
        };
        children.add(ChildSpec::new(
            names.event_bus(),
            RestartType::Permanent,
            EventBus,
            move || bus_args.clone(),
        ));
        // One token for the control endpoint and the HTTP server, written once.
        let token = match (
            args.config.control_addr.or(args.config.http_addr),
            args.config.storage.local_dir(),
        ) {
            (Some(_), Some(dir)) => Some(Arc::<str>::from(create_token(dir)?)),
            _ => None,
        };
        let endpoint = match args.config.control_addr {
            Some(addr) => {
                let token = token.clone();
                let endpoint_args = ControlEndpointArgs {
                    addr,
                    hub: args.hub.clone(),
                    names: names.clone(),
                    name_prefix: args.config.name_prefix.clone(),
                    token,
                    handle: args.control.clone(),
                    max_connections: args.config.control_max_connections,
                    auth_timeout: crate::observe::control::protocol::AUTH_TIMEOUT,
                    stopper: Some(myself.get_derived()),
                };
                Some(children.add(ChildSpec::new(
                    names.control_endpoint(),
                    RestartType::Permanent,
                    ControlEndpoint,
                    move || endpoint_args.clone(),
                )))
            }
            None => None,
        };
        let http = match args.config.http_addr {
            Some(addr) => {
                let http_args = HttpServerArgs {
                    addr,
                    handle: args.http.clone(),
                    max_connections: args.config.http_max_connections,
                    api: Api {
                        hub: args.hub.clone(),
                        names: names.clone(),
                        name_prefix: args.config.name_prefix.clone(),
                        token,
                        token_for_reads: false,
                        settings: Arc::new(effective_settings(&args.config)),
                        batch_interval_ms: u64::try_from(args.config.batch_interval.as_millis())
                            .unwrap_or(u64::MAX),
                        stopper: myself.get_derived(),
                    },
                };
                Some(children.add(ChildSpec::new(
                    names.http_server(),
                    RestartType::Permanent,
                    HttpServer,
                    move || http_args.clone(),
                )))
            }
            None => None,
        };
        let driver_args = args.driver.clone();
        let driver = children.add(ChildSpec::new(
            names.driver(),
            RestartType::Permanent,
            Driver,
            move || driver_args.clone(),
        ));
        let cell = myself.get_cell();
        children
            .start_one(&cell, 0)
            .await
            .map_err(|(n, e)| format!("{n} did not start: {e}"))?;
        for child in [endpoint, http].into_iter().flatten() {
            children
                .start_one(&cell, child)
                .await
                .map_err(|(n, e)| format!("{n} did not start: {e}"))?;
        }
        let mut state = RootState {
            children,
            outcome: args.outcome,
            driver_name: names.driver(),
        };
        // A driver that cannot start (an unreadable checkpoint, say) is a failure like any
        // other: `restart` counts it against the intensity and backs off.
        let decision = state.children.restart(&cell, driver..driver + 1).await;
        act(&myself, &mut state, decision)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        match message {
            RootMsg::Restart(RestartChildren(set)) => {
                let decision = state.children.restart(&myself.get_cell(), set).await;
                act(&myself, state, decision)
            }
            RootMsg::Stop(Stop { graceful, reply }) => {
                // A graceful stop drains what was received, so acknowledged records are
                // committed by this run. If the driver is between a failure and its restart
                // (waiting out the backoff, or its job generator just failed), start it now
                // and stop it again — a few times at most.
                for _ in 0..GRACEFUL_STOP_ATTEMPTS {
                    let mut driver = peer::<DriverMsg>(&state.driver_name).ok();
                    if driver.is_none() && graceful {
                        let driver_name = state.driver_name.clone();
                        let index = state.children.names().position(|n| n == driver_name);
                        if let Some(i) = index {
                            let _ = state.children.restart(&myself.get_cell(), i..i + 1).await;
                            driver = peer::<DriverMsg>(&driver_name).ok();
                        }
                    }
                    let Some(driver) = driver else {
                        break;
                    };
                    let reached = driver
                        .call(|reply| DriverMsg::Stop(Stop { graceful, reply }), None)
                        .await;
                    let _ = driver.get_cell().wait(None).await;
                    if !graceful || matches!(reached, Ok(ractor::rpc::CallResult::Success(true))) {
                        break;
                    }
                }
                state
                    .children
                    .stop_all(std::time::Duration::from_secs(10))
                    .await;
                if !reply.is_closed() {
                    let _ = reply.send(());
                }
                myself.stop(Some("stopped".to_owned()));
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let decision = state.children.handle(event).await;
        act(&myself, state, decision)
    }
}

/// How many times a graceful stop starts a driver caught between a failure and its restart.
const GRACEFUL_STOP_ATTEMPTS: usize = 3;

fn act(
    myself: &ActorRef<RootMsg>,
    state: &mut RootState,
    decision: Decision,
) -> Result<(), ActorProcessingErr> {
    if let Decision::GiveUp(gave_up) = &decision {
        let error = EngineError::GaveUp {
            actor: state.driver_name.clone(),
            restarts: gave_up.restarts,
            period: gave_up.period,
            reason: gave_up.last_reason.clone(),
        };
        *state.outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
    }
    decision.carry_out(myself, RootMsg::Restart)
}
