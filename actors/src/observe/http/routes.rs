//! The HTTP server's routes: the dashboard, `/metrics`, the JSON API, and the commands.
//!
//! Reads (`GET`) are open on a loopback address; every command (`POST`: kill or panic an
//! actor, take a checkpoint or a savepoint, stop) needs the control token, as does every request when the
//! server listens on another address. The token travels as `Authorization: Bearer <token>` (or
//! `?token=` on a `GET`, for a browser's `EventSource`, which sets no headers). Every answer is
//! built from what the hub keeps — metrics, history, tree model — under short locks; none waits
//! for an actor but the checkpoint request (bounded by [`COMMAND_TIMEOUT`]) and the savepoint
//! request (answered once the savepoint is written, or after two minutes). The API is
//! described in `docs/operations.md`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ractor::DerivedActorRef;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::batch::job_generator::JobGeneratorMsg;
use crate::batch::take_savepoint::take_for_client;
use crate::clock::now_ms;
use crate::messages::Stop;
use crate::observe::control::control_endpoint::kill_or_panic;
use crate::observe::control::token::token_matches;
use crate::observe::history::MAX_EVENTS;
use crate::observe::hub::EventHub;
use crate::observe::metrics::CONTENT_TYPE;
use crate::tree::names::{Names, peer};

/// The largest request body read (commands carry none).
pub(crate) const MAX_BODY_BYTES: usize = 4096;
/// How long a command waits for the actor it asks.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches listed when the request does not say.
const DEFAULT_BATCHES: usize = 100;
/// Batches listed at most.
const MAX_BATCHES_LISTED: usize = 1000;
/// Events listed when the request does not say.
const DEFAULT_EVENTS: usize = 50;

/// What the routes answer from. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Api {
    /// The event feed, the metrics and the history.
    pub(crate) hub: EventHub,
    /// The engine's actor names.
    pub(crate) names: Names,
    /// The engine's name prefix.
    pub(crate) name_prefix: String,
    /// The control token; `None`: every command is refused.
    pub(crate) token: Option<Arc<str>>,
    /// Whether reads need the token too (the server is not on loopback).
    pub(crate) token_for_reads: bool,
    /// The effective configuration.
    pub(crate) settings: Arc<BTreeMap<String, String>>,
    /// The batch interval.
    pub(crate) batch_interval_ms: u64,
    /// Stops the engine (the root).
    pub(crate) stopper: DerivedActorRef<Stop>,
}

/// A command's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Answer {
    ok: bool,
    message: String,
}

fn answer(status: StatusCode, ok: bool, message: impl Into<String>) -> Response {
    let body = Answer {
        ok,
        message: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

/// Every route, behind the token rules.
pub(crate) fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/dashboard.js", get(script))
        .route("/dashboard.css", get(style))
        .route("/metrics", get(metrics))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/batches", get(batches))
        .route("/api/v1/checkpoints", get(checkpoints).post(checkpoint_now))
        .route("/api/v1/tree", get(tree))
        .route("/api/v1/receivers", get(receivers))
        .route("/api/v1/sources", get(sources))
        .route("/api/v1/wal", get(wal))
        .route("/api/v1/config", get(config))
        .route("/api/v1/events", get(events))
        .route("/api/v1/events/recent", get(recent_events))
        .route("/api/v1/actors/{name}/kill", post(kill))
        .route("/api/v1/actors/{name}/panic", post(panic))
        .route("/api/v1/stop", post(stop))
        .route("/api/v1/savepoints", post(savepoint))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(api.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(api)
}

/// The token a request carries: `Authorization: Bearer <token>`, or `?token=` on a `GET`.
fn presented_token(method: &Method, headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if bearer.is_some() || method != Method::GET {
        return bearer;
    }
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("token=")?;
        Some(value.to_owned())
    })
}

/// The size rule (a declared body over [`MAX_BODY_BYTES`] is refused unread), then the token
/// rules: commands always need the token; reads need it off loopback.
async fn guard(State(api): State<Api>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            false,
            format!("a request body may have at most {MAX_BODY_BYTES} bytes"),
        );
    }
    // Only `POST` changes anything; other methods than `GET` and `POST` get `405` below.
    let reading = *request.method() != Method::POST;
    if reading && !api.token_for_reads {
        return next.run(request).await;
    }
    let Some(expected) = &api.token else {
        return answer(
            StatusCode::FORBIDDEN,
            false,
            "this engine has no control token (its storage is not a local directory), so \
             commands that change anything are refused",
        );
    };
    let given = presented_token(request.method(), request.headers(), request.uri().query());
    match given {
        None => answer(
            StatusCode::UNAUTHORIZED,
            false,
            "this request needs the control token: send `Authorization: Bearer <token>` with \
             the token in <checkpoint-dir>/control-token",
        ),
        Some(given) if !token_matches(expected, &given) => {
            answer(StatusCode::UNAUTHORIZED, false, "the token does not match")
        }
        Some(_) => next.run(request).await,
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

async fn index() -> Response {
    asset(
        "text/html; charset=utf-8",
        include_str!("dashboard/index.html"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("dashboard/dashboard.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("dashboard/dashboard.css"),
    )
}

async fn not_found() -> Response {
    answer(
        StatusCode::NOT_FOUND,
        false,
        "no such route; the API is under /api/v1/ (see docs/operations.md)",
    )
}

async fn metrics(State(api): State<Api>) -> Response {
    let body = api.hub.metrics().encode();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

async fn overview(State(api): State<Api>) -> Response {
    let totals = api.hub.history().totals();
    axum::Json(json!({
        "server": format!("weir {}", env!("CARGO_PKG_VERSION")),
        "pid": std::process::id(),
        "name_prefix": api.name_prefix,
        "started_ms": totals.started_ms,
        "now_ms": now_ms(),
        "batch_interval_ms": api.batch_interval_ms,
        "batches_completed": totals.batches_completed,
        "batches_failed": totals.batches_failed,
        "records_total": totals.records_total,
        "last_checkpoint_id": totals.last_checkpoint_id,
        "restarts_total": totals.restarts_total,
    }))
    .into_response()
}

/// `?limit=N`.
#[derive(Debug, Deserialize)]
struct Limit {
    limit: Option<usize>,
}

async fn batches(State(api): State<Api>, Query(limit): Query<Limit>) -> Response {
    let limit = limit
        .limit
        .unwrap_or(DEFAULT_BATCHES)
        .min(MAX_BATCHES_LISTED);
    let batches = api.hub.history().batches(limit);
    axum::Json(json!({
        "batch_interval_ms": api.batch_interval_ms,
        "batches": batches,
    }))
    .into_response()
}

async fn checkpoints(State(api): State<Api>) -> Response {
    let checkpoints = api.hub.history().checkpoints();
    axum::Json(json!({ "checkpoints": checkpoints })).into_response()
}

async fn tree(State(api): State<Api>) -> Response {
    let root = api.names.root();
    axum::Json(api.hub.tree().snapshot(&root)).into_response()
}

async fn receivers(State(api): State<Api>) -> Response {
    let receivers = api.hub.history().receivers();
    axum::Json(json!({ "receivers": receivers })).into_response()
}

async fn sources(State(api): State<Api>) -> Response {
    let sources: Vec<_> = api
        .hub
        .metrics()
        .sources()
        .into_iter()
        .map(|s| {
            json!({
                "source": s.source,
                "partition": s.partition,
                "planned": s.planned,
                "latest": s.latest,
                "lag": s.lag(),
            })
        })
        .collect();
    axum::Json(json!({ "sources": sources })).into_response()
}

async fn wal(State(api): State<Api>) -> Response {
    let (appends, bytes, groups, fsync_mean_s) = api.hub.metrics().wal_totals();
    let events = api.hub.history().wal();
    axum::Json(json!({
        "appends": appends,
        "bytes": bytes,
        "groups": groups,
        "fsyncs": groups,
        "fsync_mean_ms": fsync_mean_s.map(|s| s * 1000.0),
        "segments_rolled": events.segments_rolled,
        "segments_cleaned": events.segments_cleaned,
        "torn_tails_cut": events.torn_tails_cut,
    }))
    .into_response()
}

async fn config(State(api): State<Api>) -> Response {
    axum::Json(json!({ "settings": *api.settings })).into_response()
}

async fn recent_events(State(api): State<Api>, Query(limit): Query<Limit>) -> Response {
    let limit = limit.limit.unwrap_or(DEFAULT_EVENTS).min(MAX_EVENTS);
    let events = api.hub.history().events(limit);
    axum::Json(json!({ "events": events })).into_response()
}

/// The live events, as server-sent events: one `data:` line of JSON per event. A client that
/// falls behind its bounded queue gets a `lagged` event saying how many it missed.
async fn events(State(api): State<Api>) -> Response {
    let subscription = api.hub.subscribe();
    let stream = futures::stream::unfold(subscription, |mut subscription| async move {
        let record = subscription.next().await?;
        let data = serde_json::to_string(&record).unwrap_or_default();
        Some((
            Ok::<_, Infallible>(SseEvent::default().data(data)),
            subscription,
        ))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn kill(State(api): State<Api>, Path(name): Path<String>) -> Response {
    act(&api, &name, true)
}

async fn panic(State(api): State<Api>, Path(name): Path<String>) -> Response {
    act(&api, &name, false)
}

fn act(api: &Api, name: &str, kill: bool) -> Response {
    match kill_or_panic(&api.names, &api.name_prefix, name, kill) {
        Ok(message) => answer(StatusCode::OK, true, message),
        Err(refusal) if refusal.not_found => answer(StatusCode::NOT_FOUND, false, refusal.message),
        Err(refusal) => answer(StatusCode::FORBIDDEN, false, refusal.message),
    }
}

async fn checkpoint_now(State(api): State<Api>) -> Response {
    let Ok(generator) = peer::<JobGeneratorMsg>(&api.names.job_generator()) else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the job generator is not running (the driver is restarting or stopping); try again",
        );
    };
    let asked = generator
        .call(JobGeneratorMsg::CheckpointNow, Some(COMMAND_TIMEOUT))
        .await;
    match asked {
        Ok(ractor::rpc::CallResult::Success(Ok(t))) => answer(
            StatusCode::ACCEPTED,
            true,
            format!(
                "a checkpoint at batch time {t} is started (or waits for a free slot); \
                 /api/v1/checkpoints lists it once written"
            ),
        ),
        Ok(ractor::rpc::CallResult::Success(Err(why))) => answer(StatusCode::CONFLICT, false, why),
        _ => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            false,
            "the job generator did not answer; try again",
        ),
    }
}

/// `?graceful=true|false` (default true).
#[derive(Debug, Deserialize)]
struct Graceful {
    graceful: Option<bool>,
}

async fn stop(State(api): State<Api>, Query(graceful): Query<Graceful>) -> Response {
    let graceful = graceful.graceful.unwrap_or(true);
    // The answer goes before the stop takes this server down with the rest of the engine.
    let (reply, _ignored) = ractor::concurrency::oneshot();
    let message = Stop {
        graceful,
        reply: reply.into(),
    };
    if api.stopper.send_message(message).is_err() {
        return answer(
            StatusCode::CONFLICT,
            false,
            "the engine is already stopping",
        );
    }
    let how = if graceful {
        "gracefully: what was received is processed and checkpointed first"
    } else {
        "immediately"
    };
    answer(
        StatusCode::ACCEPTED,
        true,
        format!("the engine stops {how}"),
    )
}

/// `?path=…` (an absolute local directory or an `s3://` URL) and `&stop=true|false` (default
/// false).
#[derive(Debug, Deserialize)]
struct SavepointQuery {
    path: Option<String>,
    stop: Option<bool>,
}

async fn savepoint(State(api): State<Api>, Query(query): Query<SavepointQuery>) -> Response {
    let Some(path) = query.path else {
        return answer(
            StatusCode::BAD_REQUEST,
            false,
            "say where the savepoint goes: ?path=<absolute directory or s3:// URL>",
        );
    };
    let stop = query.stop.unwrap_or(false);
    match take_for_client(&api.names, &api.hub, Some(&api.stopper), &path, stop).await {
        Ok(message) => answer(StatusCode::OK, true, message),
        Err(message) => answer(StatusCode::CONFLICT, false, message),
    }
}
