//! What every `/v1/*` request goes through before its route answers: recording,
//! counting, the rate limits (for requests the bearer lets in), fault injection and the
//! bearer check (issued token, API key, or none when auth is off), in that order. Faults
//! come before the bearer check because they stand for the network and gateways in front
//! of the real service, which fail regardless of the caller's token; the rate limits
//! come before faults because a refused request must not consume one, and apply only to
//! requests the bearer lets in, so a bad token is still a `401`, never a `429`.

use std::sync::Arc;
use std::time::Instant;

use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::fault::{Fault, Target};
use crate::limiter::{self, Verdict};
use crate::reply::{self, ExtraHeaders, FaultContext, FaultOutcome};
use crate::state::{Access, Counter, RecordedRequest, State};

/// A request body as JSON, or why it is not JSON (reported only once the route needs it,
/// so that faults and the bearer check take precedence over a `400`).
pub(crate) struct ParsedBody {
    /// `null` for an empty body, a string holding the text when it is not JSON.
    pub value: Value,
    pub error: Option<String>,
}

impl ParsedBody {
    pub fn parse(bytes: &Bytes) -> Self {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return ParsedBody {
                value: Value::Null,
                error: Some("request body is empty; expected a JSON object".into()),
            };
        }
        match serde_json::from_slice::<Value>(bytes) {
            Ok(value) => ParsedBody { value, error: None },
            Err(e) => ParsedBody {
                value: Value::String(String::from_utf8_lossy(bytes).into_owned()),
                error: Some(format!("request body is not valid JSON: {e}")),
            },
        }
    }

    /// The `model` the request names, or `default` when it names none.
    pub fn model_or(&self, default: &str) -> String {
        self.value
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    }

    /// The body as a JSON object, or what is wrong with it (for a `400`).
    pub fn object(&self) -> Result<&serde_json::Map<String, Value>, String> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        self.value
            .as_object()
            .ok_or_else(|| "request body must be a JSON object".to_owned())
    }
}

/// The token from `Authorization: Bearer <token>`; the scheme is case-insensitive as
/// RFC 7235 says.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// What the gate needs to know about one request.
pub(crate) struct Admission<'a> {
    /// The fault queue consulted first.
    pub target: Target,
    /// The counters the request bumps.
    pub counters: &'a [Counter],
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a ParsedBody,
    /// The model named in the body (or the default), for fault bodies that carry one.
    pub model: &'a str,
    /// Whether the request asked for a stream, for faults with an SSE form.
    pub stream: bool,
    /// The tokens the request costs against the tokens-per-minute limit, on routes the
    /// rate limits cover when a limit is set; `None` otherwise (no limit, models, unknown
    /// routes), which skips the limiter.
    pub cost: Option<u64>,
    /// Where headers for the eventual answer go (the `x-ratelimit-*` of an allowed
    /// request).
    pub extra_headers: Option<&'a ExtraHeaders>,
}

/// Records and counts the request, then applies the rate limits (to a request the bearer
/// lets in), a queued fault and the bearer check.
/// `Ok` carries a fault the route must apply to its own answer; `Err` is the answer.
pub(crate) async fn admit(
    state: &Arc<State>,
    request: Admission<'_>,
) -> Result<Option<Fault>, Response> {
    let bearer = bearer(request.headers);
    let check = state.authorize(bearer);
    if state.records_requests() {
        state.record(RecordedRequest {
            method: request.method.to_string(),
            path: request.path.to_owned(),
            project_id: request
                .headers
                .get("x-project-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            authorized: check.is_ok(),
            body: request.body.value.clone(),
            bearer: bearer.map(str::to_owned),
            request_id: request
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }
    for &counter in request.counters {
        state.bump(counter);
    }
    if matches!(check, Ok(Access::ApiKey { .. })) {
        state.bump(Counter::ApiKeyRequests);
    }

    let mut rate_headers = None;
    if let (Ok(access), Some(cost)) = (&check, request.cost) {
        if state.limiter.enabled() {
            let verdict = state
                .limiter
                .check(&state.rate_key(access), cost, Instant::now());
            if let Some(refusal) = limiter::refusal(&verdict) {
                state.bump(Counter::RateLimited);
                tracing::debug!(path = request.path, ?verdict, "rate limit refuses request");
                return Err(refusal);
            }
            if let Verdict::Allowed(status) = verdict {
                rate_headers = Some(limiter::headers(&status));
            }
        }
    }

    let fault = state.take_fault(request.target);
    let cx = FaultContext {
        target: request.target,
        model: request.model,
        stream: request.stream,
        shutdown: &state.shutdown,
    };
    let shape = match reply::apply_fault(fault, cx).await {
        FaultOutcome::Replace(response) => return Err(response),
        FaultOutcome::Shape(fault) => Some(fault),
        FaultOutcome::Proceed => None,
    };

    if let Err(rejection) = check {
        state.bump(Counter::Unauthorized);
        tracing::debug!(path = request.path, ?rejection, "rejecting bearer token");
        return Err(reply::error(
            StatusCode::UNAUTHORIZED,
            rejection.message(),
            "invalid_request_error",
            "invalid_api_key",
        ));
    }
    if let (Some(slot), Some(headers)) = (request.extra_headers, rate_headers) {
        slot.extend(headers);
    }
    Ok(shape)
}

/// Bodies larger than this are refused; chat histories are far smaller.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// The raw request body. Unlike axum's `Bytes` extractor, a failure here is answered
/// with the same JSON error shape as every other refusal.
pub(crate) struct RawBody(pub Bytes);

impl<S: Send + Sync> axum::extract::FromRequest<S> for RawBody {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, _state: &S) -> Result<Self, Response> {
        let too_large = || {
            reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body exceeds {MAX_BODY} bytes"),
                "invalid_request_error",
                "payload_too_large",
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(too_large());
        }
        match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(e) if e.to_string().contains("length limit") => Err(too_large()),
            Err(e) => Err(reply::bad_request(format!(
                "could not read the request body: {e}"
            ))),
        }
    }
}
