//! Taking a savepoint of a running engine: what [`Engine::savepoint`](crate::Engine::savepoint),
//! the control endpoint's `savepoint` command and `POST /api/v1/savepoints` share.
//!
//! The steps: the job generator says whether the pipeline can be savepointed (every stateful
//! operator has an explicit id) and hands over its checkpoint store; a checkpoint is asked
//! for now (`CheckpointNow`, as `POST /api/v1/checkpoints` does); once a checkpoint at or after
//! that batch time is durable (its `checkpoint_written` event), it is exported to the target
//! ([`export`]). The invariant: a savepoint is only ever made of a durable checkpoint taken
//! after it was asked for. If retention removes that checkpoint or one of its state files
//! while it is being copied, the copy is made again of a newer one (which retention only
//! deletes after writing newer ones), a few times at most.

use std::sync::Arc;
use std::time::Duration;

use ractor::DerivedActorRef;
use ractor::rpc::CallResult;

use crate::batch::job_generator::JobGeneratorMsg;
use crate::checkpoint::savepoint::{SavepointError, SavepointInfo, export};
use crate::checkpoint::{CheckpointError, CheckpointId, CheckpointStore};
use crate::messages::Stop;
use crate::observe::event::Event;
use crate::observe::hub::EventHub;
use crate::storage::location::Storage;
use crate::tree::names::{Names, peer};

/// How long taking a savepoint waits for its checkpoint to become durable, by default.
pub(crate) const SAVEPOINT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a question to the job generator may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times a copy is made again when retention removed what it was copying.
const COPY_ATTEMPTS: usize = 3;

/// The job generator's checkpoint store, once it says the pipeline can be savepointed.
pub(crate) async fn check(names: &Names) -> Result<Arc<CheckpointStore>, SavepointError> {
    let generator = peer::<JobGeneratorMsg>(&names.job_generator()).map_err(|_| {
        SavepointError::Engine(
            "the job generator is not running (the driver is restarting or stopping); try again"
                .to_owned(),
        )
    })?;
    match generator
        .call(JobGeneratorMsg::SavepointCheck, Some(ASK_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(Ok(store))) => Ok(store),
        Ok(CallResult::Success(Err(why))) => Err(SavepointError::Refused(why)),
        _ => Err(SavepointError::Engine(
            "the job generator did not answer; try again".to_owned(),
        )),
    }
}

fn gone(err: &CheckpointError) -> bool {
    matches!(
        err,
        CheckpointError::NotFound { .. } | CheckpointError::StateFileNotFound { .. }
    )
}

/// Takes a checkpoint now and exports it to `target` once it is durable.
pub(crate) async fn take(
    names: &Names,
    hub: &EventHub,
    target: &Storage,
    timeout: Duration,
) -> Result<SavepointInfo, SavepointError> {
    let store = check(names).await?;
    let store_name = store.storage().describe();
    // Subscribed before the checkpoint is asked for, so that its event cannot be missed.
    let mut events = hub.subscribe();
    let generator = peer::<JobGeneratorMsg>(&names.job_generator())
        .map_err(|err| SavepointError::Engine(err.to_string()))?;
    let asked_ms = match generator
        .call(JobGeneratorMsg::CheckpointNow, Some(ASK_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(Ok(t))) => t,
        Ok(CallResult::Success(Err(why))) => return Err(SavepointError::Refused(why)),
        _ => {
            return Err(SavepointError::Engine(
                "the job generator did not answer; try again".to_owned(),
            ));
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let record = events
            .next_matching(left, |e| {
                matches!(e, Event::CheckpointWritten { store, .. }
                    | Event::CheckpointFailed { store, .. } if *store == store_name)
            })
            .await;
        let Some(record) = record else {
            return Err(SavepointError::Engine(format!(
                "no checkpoint at or after batch time {asked_ms} became durable within {}s",
                timeout.as_secs()
            )));
        };
        let id = match record.event {
            Event::CheckpointWritten { id, .. } => CheckpointId(id),
            Event::CheckpointFailed { reason, .. } => {
                return Err(SavepointError::Engine(format!(
                    "the checkpoint for the savepoint failed: {reason}"
                )));
            }
            _ => continue,
        };
        let data = match store.peek(id).await {
            Ok(data) => data,
            Err(err) if gone(&err) => continue,
            Err(err) => return Err(err.into()),
        };
        if data.checkpoint_time_ms < asked_ms {
            continue;
        }
        match export(&store, id, &data, target).await {
            Err(SavepointError::Checkpoint(err)) if gone(&err) && attempts + 1 < COPY_ATTEMPTS => {
                attempts += 1;
                tracing::info!(
                    error = %err,
                    "retention removed the checkpoint being copied; copying a newer one"
                );
            }
            done => return done,
        }
    }
}

/// Takes a savepoint for a remote client (the control endpoint, the HTTP API) at `location`
/// (an absolute local path or an `s3://` URL); with `stop`, then asks the engine to stop
/// gracefully. Answers with one sentence.
pub(crate) async fn take_for_client(
    names: &Names,
    hub: &EventHub,
    stopper: Option<&DerivedActorRef<Stop>>,
    location: &str,
    stop: bool,
) -> Result<String, String> {
    if !location.starts_with("s3://") && !std::path::Path::new(location).is_absolute() {
        return Err(format!(
            "the savepoint path {location:?} must be absolute (or an s3:// URL): the engine \
             runs in another directory than the client"
        ));
    }
    let target = Storage::from_location(location).map_err(|err| err.to_string())?;
    let info = take(names, hub, &target, SAVEPOINT_TIMEOUT)
        .await
        .map_err(|err| err.to_string())?;
    let mut message = format!(
        "savepoint written to {} at batch time {} ({} operator(s) with state, {} state file(s))",
        info.location,
        info.manifest.checkpoint_time_ms,
        info.manifest.operators.len(),
        info.manifest.state_files.len()
    );
    if stop {
        let (reply, _ignored) = ractor::concurrency::oneshot();
        let request = Stop {
            graceful: true,
            reply: reply.into(),
        };
        if stopper.is_some_and(|stopper| stopper.send_message(request).is_ok()) {
            message.push_str("; the engine stops gracefully");
        } else {
            message.push_str("; the engine was already stopping");
        }
    }
    Ok(message)
}
