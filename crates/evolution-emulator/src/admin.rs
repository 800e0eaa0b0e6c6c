//! `/_emulator/*`: JSON control routes for driving an emulator in another process
//! (the CLI binary) the way the handle drives an in-process one.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as AxumState;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::fault::{Fault, FaultSpec, Target};
use crate::gate::{ParsedBody, RawBody};
use crate::limiter::{self, Snapshot};
use crate::reply;
use crate::state::State;

pub(crate) async fn counters(AxumState(state): AxumState<Arc<State>>) -> Response {
    Json(state.counters()).into_response()
}

pub(crate) async fn reset(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.reset_counters();
    Json(state.counters()).into_response()
}

pub(crate) async fn revoke(AxumState(state): AxumState<Arc<State>>) -> Response {
    let revoked = state.revoke_tokens();
    Json(json!({"revoked": revoked})).into_response()
}

/// `{"requests_per_minute","tokens_per_minute","keys":{"<bucket>":{"requests":{"limit",
/// "remaining","reset"}|null,"tokens":…}}}`: the limits and every key's buckets as of
/// now (`reset` as the `x-ratelimit-reset-*` headers write it).
pub(crate) async fn rate_limits(AxumState(state): AxumState<Arc<State>>) -> Response {
    let snapshot = |s: Option<Snapshot>| {
        s.map(|s| {
            json!({
                "limit": s.limit,
                "remaining": s.remaining,
                "reset": limiter::reset_text(s.reset),
            })
        })
    };
    let keys: serde_json::Map<String, Value> = state
        .limiter
        .snapshot(Instant::now())
        .into_iter()
        .map(|(key, status)| {
            let value = json!({
                "requests": snapshot(status.requests),
                "tokens": snapshot(status.tokens),
            });
            (key, value)
        })
        .collect();
    Json(json!({
        "requests_per_minute": state.limiter.requests_per_minute(),
        "tokens_per_minute": state.limiter.tokens_per_minute(),
        "keys": keys,
    }))
    .into_response()
}

/// Refills every bucket, as [`EmulatorHandle::reset_rate_limits`] does.
///
/// [`EmulatorHandle::reset_rate_limits`]: crate::EmulatorHandle::reset_rate_limits
pub(crate) async fn reset_rate_limits(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.limiter.reset();
    Json(json!({"reset": true})).into_response()
}

pub(crate) async fn requests(AxumState(state): AxumState<Arc<State>>) -> Response {
    Json(state.requests()).into_response()
}

pub(crate) async fn clear_requests(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.clear_requests();
    Json(json!({"cleared": true})).into_response()
}

/// `{"faults":[{"target","fault","times"}]}`: each queued fault once, in the order they
/// will be served, with how many more requests get it.
pub(crate) async fn list_faults(AxumState(state): AxumState<Arc<State>>) -> Response {
    let faults: Vec<Value> = state
        .pending_faults()
        .into_iter()
        .map(|(target, fault, times)| {
            json!({"target": target.as_str(), "fault": fault.to_string(), "times": times})
        })
        .collect();
    Json(json!({"faults": faults})).into_response()
}

pub(crate) async fn clear_faults(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.clear_faults();
    Json(json!({"cleared": true})).into_response()
}

/// `{"target":"chat","fault":"status:503","times":2}`; `times` defaults to 1.
pub(crate) async fn add_fault(
    AxumState(state): AxumState<Arc<State>>,
    RawBody(body): RawBody,
) -> Response {
    let parsed = ParsedBody::parse(&body);
    let object = match parsed.object() {
        Ok(object) => object,
        Err(message) => return reply::bad_request(message),
    };
    let text = |key: &str| match object.get(key) {
        Some(Value::String(s)) => Ok(s.as_str()),
        None | Some(Value::Null) => Err(format!("missing required field '{key}'")),
        Some(_) => Err(format!("'{key}' must be a string")),
    };
    let target: Target = match text("target").map(str::parse) {
        Ok(Ok(target)) => target,
        Ok(Err(e)) => return reply::bad_request(format!("invalid 'target': {e}")),
        Err(message) => return reply::bad_request(message),
    };
    let fault: Fault = match text("fault").map(str::parse) {
        Ok(Ok(fault)) => fault,
        Ok(Err(e)) => return reply::bad_request(format!("invalid 'fault': {e}")),
        Err(message) => return reply::bad_request(message),
    };
    let times = match object.get("times") {
        None | Some(Value::Null) => 1,
        Some(v) => match v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=FaultSpec::MAX_TIMES).contains(n))
        {
            Some(n) => n,
            None => {
                return reply::bad_request(format!(
                    "'times' must be an integer between 1 and {}, got {v}",
                    FaultSpec::MAX_TIMES
                ))
            }
        },
    };
    state.inject(target, fault.clone(), times);
    Json(json!({"target": target.as_str(), "fault": fault.to_string(), "times": times}))
        .into_response()
}
