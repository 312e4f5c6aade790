//! The receiver actor: runs one [`Receiver`] of one stream, registered as `receiver-<stream>`.
//!
//! Its supervisor, the `receiver-supervisor-<stream>`, starts it with the stream's
//! [`ReceiverFactory`] and a [`ReceiverContext`] wired to itself. The actor makes a *fresh*
//! receiver from the factory and runs [`Receiver::start`] as the handler of one message it
//! sends itself right after starting, so that a `kill()` cancels the receiver at its next
//! `.await`. How `start` ends decides what happens next:
//!
//! * `Ok(())` — the receiver is done (it saw [`ReceiverContext::stopping`], or its source
//!   ended): the actor stops normally and is not restarted.
//! * `Err(e)` — the actor fails with `e` ([`Event::ReceiverError`]); its supervisor restarts it,
//!   after the receiver restart delay, with a new receiver from the factory.
//! * a panic or a kill — the same as an error, reported by the supervisor.
//!
//! # What a crash leaves behind
//!
//! Nothing the receiver acknowledged is lost: it acknowledges its source only after
//! [`ReceiverContext::store`] returned `Ok`, and by then the block is durable in the WAL and
//! known to the block tracker. A store cut short by a kill never returned `Ok`, so the records
//! were not acknowledged, and the restarted receiver gets them again from its source. Records
//! [`pushed`](ReceiverContext::push) but not yet cut into a block stay in the supervisor's
//! buffer, which outlives a receiver restart; they are lost only with the supervisor.

use std::fmt;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::ingest::blocks::StreamId;
use crate::observe::event::Event;
use crate::observe::hub::EventSink;
use crate::pipeline::{Receiver, ReceiverContext, ReceiverFactory};

/// The receiver actor (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReceiverActor;

/// What a receiver actor starts from (built by its supervisor, again for every restart).
#[derive(Clone)]
pub(crate) struct ReceiverArgs {
    /// The stream.
    pub stream: StreamId,
    /// The actor's registered name (`receiver-<stream>` under the engine's prefix), for events.
    pub name: String,
    /// Makes the receiver.
    pub factory: Arc<dyn ReceiverFactory>,
    /// Where the receiver hands its records: wired to the receiver supervisor.
    pub ctx: ReceiverContext,
    /// Where [`Event::ReceiverStarted`] and [`Event::ReceiverError`] go.
    pub events: EventSink,
}

impl fmt::Debug for ReceiverArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverArgs")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The receiver actor's state: the receiver until it runs, and what it runs with.
pub(crate) struct ReceiverState {
    args: ReceiverArgs,
    receiver: Option<Box<dyn Receiver>>,
}

impl fmt::Debug for ReceiverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverState")
            .field("args", &self.args)
            .field("running", &self.receiver.is_none())
            .finish()
    }
}

/// Messages of the receiver actor.
#[derive(Debug)]
pub(crate) enum ReceiverMsg {
    /// Runs the receiver until it returns (sent by the actor to itself once, after it started).
    Run,
}

/// The reason a receiver actor gives when its receiver returned `Ok`.
pub(crate) const FINISHED: &str = "finished";

impl Actor for ReceiverActor {
    type Msg = ReceiverMsg;
    type State = ReceiverState;
    type Arguments = ReceiverArgs;

    /// Makes a fresh receiver from the factory.
    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ReceiverArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let receiver = args.factory.create();
        Ok(ReceiverState {
            args,
            receiver: Some(receiver),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let ReceiverArgs {
            stream,
            name,
            events,
            ..
        } = &state.args;
        tracing::info!(actor = %name, stream, "receiver started");
        events.emit(Event::ReceiverStarted {
            actor: name.clone(),
            stream: *stream,
        });
        myself.cast(ReceiverMsg::Run)?;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        crate::faults::check(&myself);
        let ReceiverMsg::Run = message;
        let Some(mut receiver) = state.receiver.take() else {
            return Ok(());
        };
        let ReceiverArgs {
            stream,
            name,
            ctx,
            events,
            ..
        } = &state.args;
        // A kill cancels this await: the receiver is dropped where it stands.
        match receiver.start(ctx.clone()).await {
            Ok(()) => {
                tracing::info!(actor = %name, stream, "receiver finished");
                myself.stop(Some(FINISHED.to_owned()));
                Ok(())
            }
            Err(err) => {
                tracing::warn!(actor = %name, stream, error = %err, "receiver failed");
                events.emit(Event::ReceiverError {
                    actor: name.clone(),
                    stream: *stream,
                    error: err.to_string(),
                });
                Err(format!("the receiver of stream {stream} failed: {err}").into())
            }
        }
    }
}
