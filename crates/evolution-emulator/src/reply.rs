//! Building responses: OpenAI-style errors, injected faults, and JSON bodies that a
//! fault may cut short.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, Target};
use crate::{hostile, util};

/// Response extension telling the connection layer to drop the TCP connection instead
/// of answering (see `server.rs`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropConnectionMarker;

/// Headers a request's answer carries whoever builds it, e.g. the `x-ratelimit-*`
/// headers decided at the gate: the connection layer puts an empty slot in every `/v1`
/// request's extensions and adds whatever it holds to the response.
#[derive(Debug, Clone, Default)]
pub(crate) struct ExtraHeaders(Arc<Mutex<HeaderMap>>);

impl ExtraHeaders {
    /// Adds `headers` to the answer (replacing earlier values of the same names).
    pub fn extend(&self, headers: HeaderMap) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(headers);
    }

    /// Everything added so far, leaving the slot empty.
    pub fn take(&self) -> HeaderMap {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// `{"error":{"message","type","code"}}` with the given status.
pub(crate) fn error(
    status: StatusCode,
    message: impl Into<String>,
    kind: &str,
    code: &str,
) -> Response {
    let body = json!({"error": {"message": message.into(), "type": kind, "code": code}});
    (status, axum::Json(body)).into_response()
}

/// An `invalid_request_error` with OpenAI's `param`: the form or body field at fault
/// (`null` when none is).
pub(crate) fn field_error(
    status: StatusCode,
    message: impl Into<String>,
    code: &str,
    param: Option<&str>,
) -> Response {
    let body = json!({"error": {
        "message": message.into(),
        "type": "invalid_request_error",
        "code": code,
        "param": param,
    }});
    (status, axum::Json(body)).into_response()
}

/// A `400` for a malformed request; `message` names what was wrong.
pub(crate) fn bad_request(message: impl Into<String>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        message,
        "invalid_request_error",
        "invalid_request",
    )
}

/// The error `type` and `code` OpenAI-compatible servers use for a status.
fn error_kind(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("permission_error", "forbidden"),
        404 => ("invalid_request_error", "not_found"),
        408 => ("timeout_error", "request_timeout"),
        409 => ("invalid_request_error", "conflict"),
        413 => ("invalid_request_error", "payload_too_large"),
        422 => ("invalid_request_error", "unprocessable_entity"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        500 => ("server_error", "internal_error"),
        502 => ("server_error", "bad_gateway"),
        503 => ("server_error", "service_unavailable"),
        504 => ("server_error", "gateway_timeout"),
        s if s >= 500 => ("server_error", "server_error"),
        _ => ("invalid_request_error", "error"),
    }
}

fn status_fault(code: u16, retry_after: Option<u64>) -> Response {
    // Programmatic faults can carry any u16; outside 200..=599 HTTP semantics break down.
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()));
    let Some(status) = status else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("injected fault carries an unusable status code {code}"),
            "server_error",
            "internal_error",
        );
    };
    let (kind, err_code) = error_kind(code);
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut response = error(
        status,
        format!("Injected fault: {code} {reason}"),
        kind,
        err_code,
    );
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The body a [`Fault::MissingField`] answer carries: plausible, minus the key field
/// (`results` for rerank).
fn missing_field_body(target: Target, model: &str) -> Value {
    match target {
        Target::Auth => json!({"expires_in": 3600, "token_type": "Bearer"}),
        Target::Chat => json!({
            "id": util::random_id("chatcmpl-", 32),
            "object": "chat.completion",
            "created": util::unix_now(),
            "model": model,
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        }),
        Target::Embeddings => json!({
            "object": "list",
            "model": model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}
        }),
        Target::Rerank => json!({
            "id": format!("rerank-{}", util::random_id("", 8)),
            "model": model,
            "usage": {"prompt_tokens": 0, "total_tokens": 0}
        }),
        Target::Audio => json!({"usage": {"type": "duration", "seconds": 0}}),
        Target::Models | Target::Api => json!({"object": "list"}),
    }
}

/// What the route should do about the fault it drew.
pub(crate) enum FaultOutcome {
    /// Answer with this instead of the normal response.
    Replace(Response),
    /// Serve normally, shaping the answer with this fault (streaming faults, `expires_in`).
    Shape(Fault),
    /// Serve normally.
    Proceed,
}

/// What a fault's answer may depend on.
pub(crate) struct FaultContext<'a> {
    /// The route family the request went to.
    pub target: Target,
    /// The model the request named (or the default), echoed by fault bodies.
    pub model: &'a str,
    /// Whether the request asked for a stream: selects the SSE form of a fault.
    pub stream: bool,
    /// Cancelled when the emulator shuts down; ends bodies that would never end.
    pub shutdown: &'a CancellationToken,
}

/// Applies a fault that does not depend on the normal answer; sleeps for
/// [`Fault::Delay`].
pub(crate) async fn apply_fault(fault: Option<Fault>, cx: FaultContext<'_>) -> FaultOutcome {
    let Some(fault) = fault else {
        return FaultOutcome::Proceed;
    };
    let FaultContext {
        target,
        model,
        stream,
        shutdown,
    } = cx;
    tracing::debug!(%target, %fault, "injecting fault");
    let response = match fault {
        Fault::Status(code) => status_fault(code, None),
        Fault::StatusRetryAfter(code, secs) => status_fault(code, Some(secs)),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            return FaultOutcome::Proceed;
        }
        Fault::NotJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "upstream said: this is not JSON {{{ at all",
        )
            .into_response(),
        Fault::Html => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            HTML_PAGE,
        )
            .into_response(),
        Fault::MissingField if stream && target != Target::Auth => {
            let mut chunk = missing_field_body(target, model);
            if let Some(obj) = chunk.as_object_mut() {
                obj.insert("object".into(), json!("chat.completion.chunk"));
                obj.remove("usage");
            }
            let body = format!("data: {chunk}\n\ndata: [DONE]\n\n");
            sse_response(Body::from(body))
        }
        Fault::MissingField => (
            StatusCode::OK,
            axum::Json(missing_field_body(target, model)),
        )
            .into_response(),
        Fault::DropConnection => {
            let mut response = Response::new(Body::empty());
            response.extensions_mut().insert(DropConnectionMarker);
            response
        }
        Fault::Redirect(code, url) => hostile::redirect(code, &url),
        Fault::StallBody(code) => hostile::stall_body(code, stream, shutdown),
        Fault::Oversize(limit) => hostile::oversize(target, model, stream, limit),
        Fault::ContentNull if target == Target::Chat => hostile::content_null(model, stream),
        Fault::Trickle(interval) if target == Target::Chat && stream => {
            hostile::trickle(model, interval, shutdown)
        }
        f @ (Fault::RefuseJsonSchema | Fault::OffSchema) if target == Target::Chat => {
            return FaultOutcome::Shape(f)
        }
        // Harmless where they make no sense: consumed, then a normal answer.
        Fault::ContentNull | Fault::Trickle(_) | Fault::RefuseJsonSchema | Fault::OffSchema => {
            return FaultOutcome::Proceed
        }
        Fault::AccessToken(_) if target != Target::Auth => return FaultOutcome::Proceed,
        f @ (Fault::ExpiresIn(_)
        | Fault::AccessToken(_)
        | Fault::CutStream(_)
        | Fault::StreamError(_)) => return FaultOutcome::Shape(f),
    };
    FaultOutcome::Replace(response)
}

const HTML_PAGE: &str = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n\
<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>\n";

/// The in-band error object streaming faults send.
pub(crate) fn stream_error_object() -> Value {
    json!({"error": {
        "message": "Injected fault: the model stopped with an internal error",
        "type": "server_error",
        "code": "internal_error"
    }})
}

/// Wraps an SSE body with the headers llama.cpp and OpenAI send.
pub(crate) fn sse_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The error a body yields to make the connection layer abort the connection mid-body.
pub(crate) fn cut_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "injected fault: body cut",
    )
}

/// Waits briefly before a body fails. A body error makes hyper drop the connection at
/// once, discarding whatever it still buffers; pausing returns `Pending`, during which
/// hyper flushes the chunks already yielded, so the client really gets them.
pub(crate) async fn flush_before_cut() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A body that sends `bytes[..cut]` and then fails, which aborts the connection.
pub(crate) fn truncated_body(bytes: Bytes, cut: usize) -> Body {
    let head = bytes.slice(..cut.min(bytes.len()));
    Body::from_stream(async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(head);
        flush_before_cut().await;
        yield Err(cut_error());
    })
}

/// A `200` JSON answer, shaped by a streaming fault drawn for a non-streamed request:
/// [`Fault::CutStream`] cuts the JSON in half, [`Fault::StreamError`] replaces it with an
/// error object.
pub(crate) fn json_answer(value: &Value, shape: Option<&Fault>) -> Response {
    match shape {
        Some(Fault::CutStream(_) | Fault::StreamError(_)) => {
            body_answer("application/json", Bytes::from(value.to_string()), shape)
        }
        _ => (StatusCode::OK, axum::Json(value)).into_response(),
    }
}

/// A `200` with this body and content type, shaped like [`json_answer`] by a streaming
/// fault: [`Fault::CutStream`] cuts it in half, [`Fault::StreamError`] replaces it with
/// the JSON error object.
pub(crate) fn body_answer(
    content_type: &'static str,
    bytes: Bytes,
    shape: Option<&Fault>,
) -> Response {
    match shape {
        Some(Fault::CutStream(_)) => {
            let cut = bytes.len() / 2;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, content_type)],
                truncated_body(bytes, cut),
            )
                .into_response()
        }
        Some(Fault::StreamError(_)) => {
            (StatusCode::OK, axum::Json(stream_error_object())).into_response()
        }
        _ => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, content_type)],
            bytes,
        )
            .into_response(),
    }
}

/// Sleeps `per_word * words`, saturating instead of overflowing on absurd inputs.
pub(crate) async fn word_pause(per_word: Duration, words: usize) {
    if per_word.is_zero() || words == 0 {
        return;
    }
    let words = u32::try_from(words).unwrap_or(u32::MAX);
    tokio::time::sleep(per_word.saturating_mul(words)).await;
}
