//! Upstream mode: `/v1` requests that passed the emulator's own gate are forwarded to a
//! real OpenAI-compatible server, and its status and body come back untouched. Bodies
//! are relayed chunk by chunk, so SSE keeps its pace.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;

use crate::fault::Fault;
use crate::reply;
use crate::state::{InFlightGuard, State};

/// Builds the client for `base_url`. Loopback upstreams bypass any system proxy, which
/// could not reach them anyway.
pub(crate) fn client(base_url: &reqwest::Url) -> reqwest::Result<reqwest::Client> {
    let loopback = base_url.host_str().is_some_and(|host| {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    let builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
    let builder = if loopback {
        builder.no_proxy()
    } else {
        builder
    };
    builder.build()
}

/// What to send upstream.
pub(crate) struct Forward<'a> {
    pub method: Method,
    /// Path below the upstream base URL, e.g. `/chat/completions`.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// Headers that describe one hop's connection, not the message.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

pub(crate) async fn forward(
    state: &Arc<State>,
    request: Forward<'_>,
    guard: Option<InFlightGuard>,
    shape: Option<Fault>,
) -> Response {
    let (Some(client), Some(base)) = (&state.upstream_client, &state.config.upstream) else {
        return reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream mode is not configured",
            "server_error",
            "internal_error",
        );
    };
    let url = format!("{}{}", base.trim_end_matches('/'), request.path);
    let mut outgoing = client.request(request.method, &url);
    for name in [header::ACCEPT, header::CONTENT_TYPE] {
        if let Some(value) = request.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    for name in ["x-project-id", "x-request-id"] {
        if let Some(value) = request.headers.get(name) {
            outgoing = outgoing.header(name, value);
        }
    }
    if let Some(key) = &state.config.upstream_api_key {
        outgoing = outgoing.bearer_auth(key);
    }
    if !request.body.is_empty() {
        if !request.headers.contains_key(header::CONTENT_TYPE) {
            outgoing = outgoing.header(header::CONTENT_TYPE, "application/json");
        }
        outgoing = outgoing.body(request.body);
    }

    let upstream = match outgoing.send().await {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(%url, error = %e, "upstream request failed");
            return reply::error(
                StatusCode::BAD_GATEWAY,
                format!("upstream request to {url} failed: {e}"),
                "server_error",
                "bad_gateway",
            );
        }
    };

    let status = upstream.status();
    let mut headers = HeaderMap::new();
    for (name, value) in upstream.headers() {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let is_sse = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));

    let body = match shape {
        Some(fault @ (Fault::CutStream(_) | Fault::StreamError(_))) if is_sse => {
            limited_sse(upstream, fault, guard)
        }
        Some(fault @ (Fault::CutStream(_) | Fault::StreamError(_))) => {
            // Non-streamed answers are shaped as the scripted responder shapes them.
            return match upstream.bytes().await {
                Ok(bytes) => {
                    let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
                    });
                    reply::json_answer(&value, Some(&fault))
                }
                Err(e) => upstream_body_error(e),
            };
        }
        _ => passthrough(upstream, guard),
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

fn upstream_body_error(e: reqwest::Error) -> Response {
    reply::error(
        StatusCode::BAD_GATEWAY,
        format!("reading the upstream response failed: {e}"),
        "server_error",
        "bad_gateway",
    )
    .into_response()
}

/// Relays the body as it arrives; an upstream failure mid-body aborts ours too, so the
/// client sees the same cut the emulator saw.
fn passthrough(upstream: reqwest::Response, guard: Option<InFlightGuard>) -> Body {
    let mut chunks = upstream.bytes_stream();
    Body::from_stream(async_stream::stream! {
        let _guard = guard;
        while let Some(chunk) = chunks.next().await {
            yield chunk.map_err(std::io::Error::other);
        }
    })
}

/// Where the first complete SSE event in `buf` ends (after its blank line).
fn event_end(buf: &[u8]) -> Option<usize> {
    let find = |needle: &[u8]| {
        buf.windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + needle.len())
    };
    match (find(b"\n\n"), find(b"\r\n\r\n")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn is_done(event: &[u8]) -> bool {
    String::from_utf8_lossy(event).trim() == "data: [DONE]"
}

/// Relays upstream SSE events until `fault` says to stop (counting events before
/// `[DONE]`, as the scripted stream does), then cuts or sends an error event.
fn limited_sse(upstream: reqwest::Response, fault: Fault, guard: Option<InFlightGuard>) -> Body {
    let limit = match fault {
        Fault::CutStream(n) | Fault::StreamError(n) => n,
        _ => usize::MAX,
    };
    let mut chunks = upstream.bytes_stream();
    Body::from_stream(async_stream::stream! {
        let _guard = guard;
        let mut buf: Vec<u8> = Vec::new();
        let mut sent = 0usize;
        'relay: loop {
            while let Some(end) = event_end(&buf) {
                let event: Vec<u8> = buf.drain(..end).collect();
                if sent >= limit || is_done(&event) {
                    break 'relay;
                }
                sent += 1;
                yield Ok::<Bytes, std::io::Error>(Bytes::from(event));
            }
            match chunks.next().await {
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
                Some(Err(e)) => {
                    yield Err(std::io::Error::other(e));
                    return;
                }
                None => break,
            }
        }
        match fault {
            Fault::StreamError(_) => {
                let data = reply::stream_error_object().to_string();
                yield Ok(Bytes::from(format!("data: {data}\n\n")));
            }
            _ => {
                reply::flush_before_cut().await;
                yield Err(reply::cut_error());
            }
        }
    })
}
