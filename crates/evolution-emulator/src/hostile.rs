//! Answers of a hostile or broken server, for the faults that replace a response with
//! something a careful client must survive: redirects, bodies that stall, never end or
//! never stop growing, and chat replies without an answer.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::fault::Target;
use crate::reply;
use crate::util;

/// How much filler one piece of an oversized body carries.
const PIECE: usize = 64 * 1024;

/// The shortest pause between two keep-alive comments of a trickle.
const MIN_TRICKLE: Duration = Duration::from_millis(1);

/// A `500` explaining that a programmatic fault carries a value HTTP cannot express.
fn unusable(what: String) -> Response {
    reply::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("injected fault carries {what}"),
        "server_error",
        "internal_error",
    )
}

/// `status` with `Location: url` and an empty body.
pub(crate) fn redirect(code: u16, url: &str) -> Response {
    let Some(status) = StatusCode::from_u16(code)
        .ok()
        .filter(|s| (300..=399).contains(&s.as_u16()))
    else {
        return unusable(format!("an unusable redirect status {code}"));
    };
    let Ok(location) = HeaderValue::from_str(url) else {
        return unusable(format!("an unusable redirect URL {url:?}"));
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    response
}

/// A body that yields nothing until shutdown, then fails (which closes the connection);
/// if the client leaves first, hyper drops it with the connection.
fn endless(shutdown: CancellationToken) -> Body {
    Body::from_stream(async_stream::stream! {
        shutdown.cancelled().await;
        yield Err::<Bytes, std::io::Error>(reply::cut_error());
    })
}

/// The head of a `code` response, and then nothing.
pub(crate) fn stall_body(code: u16, stream: bool, shutdown: &CancellationToken) -> Response {
    let Some(status) = StatusCode::from_u16(code)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
    else {
        return unusable(format!("an unusable status code {code}"));
    };
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let mut response = (
        status,
        [(header::CONTENT_TYPE, content_type)],
        endless(shutdown.clone()),
    )
        .into_response();
    if stream {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    response
}

/// `prefix`, then `unit` repeated `units` times, then `suffix`, in pieces of about
/// [`PIECE`] bytes: memory stays bounded however large the body.
fn repeated(prefix: String, unit: &'static [u8], units: u64, suffix: String) -> Body {
    let per_piece = (PIECE / unit.len()).max(1);
    let piece = Bytes::from(unit.repeat(per_piece));
    Body::from_stream(async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(Bytes::from(prefix));
        let mut left = units;
        while left > 0 {
            let take = left.min(per_piece as u64);
            // `take <= per_piece`, so the slice is within the piece.
            yield Ok(piece.slice(..take as usize * unit.len()));
            left -= take;
        }
        yield Ok(Bytes::from(suffix));
    })
}

/// How many `unit_len`-byte units make `prefix + units + suffix` longer than `limit`.
fn units_to_exceed(limit: usize, prefix: usize, suffix: usize, unit_len: usize) -> u64 {
    // u128, so that even `usize::MAX + 1` is exact.
    let needed = (limit as u128 + 1).saturating_sub((prefix + suffix) as u128);
    u64::try_from(needed.div_ceil(unit_len.max(1) as u128)).unwrap_or(u64::MAX)
}

/// The JSON before and after the long part of an oversized answer, and the filler unit.
fn oversize_shape(target: Target, model: &str) -> (String, &'static [u8], String) {
    let model = json!(model);
    let created = util::unix_now();
    match target {
        Target::Auth => (
            r#"{"access_token":""#.to_owned(),
            b"x",
            r#"","expires_in":3600}"#.to_owned(),
        ),
        Target::Chat => (
            format!(
                r#"{{"id":{},"object":"chat.completion","created":{created},"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":""#,
                json!(util::random_id("chatcmpl-", 32))
            ),
            b"x",
            r#""},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}}"#
                .to_owned(),
        ),
        Target::Embeddings => (
            format!(
                r#"{{"object":"list","model":{model},"data":[{{"object":"embedding","index":0,"embedding":["#
            ),
            b"0,",
            r#"0]}],"usage":{"prompt_tokens":0,"total_tokens":0}}"#.to_owned(),
        ),
        Target::Rerank => (
            format!(
                r#"{{"id":"rerank-0","model":{model},"usage":{{"prompt_tokens":0,"total_tokens":0}},"results":[{{"index":0,"relevance_score":1.0,"document":{{"text":""#
            ),
            b"x",
            r#""}}]}"#.to_owned(),
        ),
        Target::Audio => (
            r#"{"text":""#.to_owned(),
            b"x",
            r#"","usage":{"type":"duration","seconds":0}}"#.to_owned(),
        ),
        Target::Models | Target::Api => (
            r#"{"object":"list","data":[{"id":""#.to_owned(),
            b"x",
            format!(r#"","object":"model","created":{created},"owned_by":"emulator"}}]}}"#),
        ),
    }
}

/// A `200` answer longer than `limit` bytes. A streaming request gets one SSE `data:`
/// line of exactly `limit` bytes and no line break instead.
pub(crate) fn oversize(target: Target, model: &str, stream: bool, limit: usize) -> Response {
    if stream {
        let head = "data: ";
        let prefix = head[..limit.min(head.len())].to_owned();
        let units = limit.saturating_sub(head.len()) as u64;
        return reply::sse_response(repeated(prefix, b"x", units, String::new()));
    }
    let (prefix, unit, suffix) = oversize_shape(target, model);
    let units = units_to_exceed(limit, prefix.len(), suffix.len(), unit.len());
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        repeated(prefix, unit, units, suffix),
    )
        .into_response()
}

/// One `chat.completion.chunk` with a single choice.
fn chunk(id: &str, created: u64, model: &str, delta: Value) -> Bytes {
    let chunk = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

/// A chat reply without an answer: `content: null`, no finish reason.
pub(crate) fn content_null(model: &str, stream: bool) -> Response {
    let id = util::random_id("chatcmpl-", 32);
    let created = util::unix_now();
    if stream {
        let mut body = Vec::new();
        body.extend_from_slice(&chunk(&id, created, model, json!({"role": "assistant"})));
        body.extend_from_slice(&chunk(&id, created, model, json!({})));
        body.extend_from_slice(b"data: [DONE]\n\n");
        return reply::sse_response(Body::from(body));
    }
    let answer = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": null},
            "finish_reason": null,
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    });
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// The role chunk, then `: keep-alive` comments every `interval` until shutdown (or
/// until the client leaves and hyper drops the body).
pub(crate) fn trickle(model: &str, interval: Duration, shutdown: &CancellationToken) -> Response {
    let interval = interval.max(MIN_TRICKLE);
    let first = chunk(
        &util::random_id("chatcmpl-", 32),
        util::unix_now(),
        model,
        json!({"role": "assistant"}),
    );
    let shutdown = shutdown.clone();
    reply::sse_response(Body::from_stream(async_stream::stream! {
        yield Ok::<Bytes, std::io::Error>(first);
        loop {
            let stopped = tokio::time::timeout(interval, shutdown.cancelled()).await.is_ok();
            if stopped {
                yield Err(reply::cut_error());
                return;
            }
            yield Ok(Bytes::from_static(b": keep-alive\n\n"));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_bodies_just_exceed_the_limit() {
        assert_eq!(units_to_exceed(10, 3, 3, 1), 5);
        assert_eq!(units_to_exceed(10, 3, 3, 2), 3);
        assert_eq!(units_to_exceed(0, 3, 3, 1), 0);
        assert_eq!(units_to_exceed(usize::MAX, 3, 3, 1), usize::MAX as u64 - 5);
    }

    #[test]
    fn oversize_shapes_are_json_when_filled() {
        for target in [
            Target::Auth,
            Target::Chat,
            Target::Embeddings,
            Target::Rerank,
            Target::Audio,
            Target::Models,
            Target::Api,
        ] {
            let (prefix, unit, suffix) = oversize_shape(target, "m/\"quoted\"");
            let filler = String::from_utf8(unit.repeat(3)).unwrap();
            let text = format!("{prefix}{filler}{suffix}");
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{target}: {e}: {text}"));
            assert!(value.is_object(), "{target}");
        }
    }
}
