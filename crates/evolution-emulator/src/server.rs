//! The HTTP server: routes, and an accept loop that serves each connection with hyper
//! directly. Serving connections ourselves (rather than `axum::serve`) is what lets a
//! handler drop a connection without answering: the service wrapper turns a marked
//! response into a service error, and hyper closes the socket on service errors.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest};
use axum::http::{Method, Request, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::Service;

use crate::extract::ApiRequest;
use crate::reply::{self, DropConnectionMarker, ExtraHeaders};
use crate::state::State;
use crate::{admin, audio, chat, embeddings, iam, models, request_id, rerank};

/// How long in-flight responses may keep running once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/api/v1/auth/token", post(iam::token))
        .route("/v1/chat/completions", post(chat::completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/rerank", post(rerank::rerank))
        // The route reads and limits its upload itself (see `upload.rs`), so axum's
        // 2 MB default must not cut in first.
        .route(
            "/v1/audio/transcriptions",
            post(audio::transcriptions).layer(DefaultBodyLimit::disable()),
        )
        .route("/v1/models", get(models::models))
        .route("/v1/models/{*id}", get(models::models))
        .route("/_emulator/counters", get(admin::counters))
        .route("/_emulator/reset", post(admin::reset))
        .route("/_emulator/revoke", post(admin::revoke))
        .route(
            "/_emulator/faults",
            get(admin::list_faults)
                .post(admin::add_fault)
                .delete(admin::clear_faults),
        )
        .route(
            "/_emulator/rate-limits",
            get(admin::rate_limits).delete(admin::reset_rate_limits),
        )
        .route(
            "/_emulator/requests",
            get(admin::requests).delete(admin::clear_requests),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Unknown `/v1/*` routes still pass the gate (recorded, `api` faults, bearer check), as
/// they would at the real endpoint; anything else is simply not found.
async fn fallback(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    request: axum::extract::Request,
) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    if path == "/v1" || path.starts_with("/v1/") {
        if let Err(response) = ApiRequest::from_request(request, &state).await {
            return response;
        }
    }
    reply::error(
        StatusCode::NOT_FOUND,
        format!("No route for {method} {path}"),
        "invalid_request_error",
        "not_found",
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    reply::error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("Method {method} is not allowed on {}", uri.path()),
        "invalid_request_error",
        "method_not_allowed",
    )
}

/// The error that makes hyper close a connection without writing a response.
#[derive(Debug)]
struct ConnectionDropped;

impl std::fmt::Display for ConnectionDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by injected fault")
    }
}

impl std::error::Error for ConnectionDropped {}

async fn serve_connection(
    stream: TcpStream,
    router: Router,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let service = hyper::service::service_fn(move |request: Request<HyperBody>| {
        let mut router = router.clone();
        // Decided before routing, so that every `/v1` answer carries it, whoever made it.
        let api = request_id::applies_to(request.uri().path());
        let request_id = api.then(|| request_id::for_request(request.headers(), &state));
        let mut request = request;
        let extra_headers = api.then(|| {
            let slot = ExtraHeaders::default();
            request.extensions_mut().insert(slot.clone());
            slot
        });
        async move {
            // Router is always ready, so `call` needs no `poll_ready` first.
            let mut response = match router.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            if let Some(id) = request_id {
                response.headers_mut().insert(request_id::HEADER, id);
            }
            if let Some(slot) = extra_headers {
                response.headers_mut().extend(slot.take());
            }
            if response
                .extensions()
                .get::<DropConnectionMarker>()
                .is_some()
            {
                Err(ConnectionDropped)
            } else {
                Ok::<_, ConnectionDropped>(response)
            }
        }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => Ok(()),
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accepts until `shutdown` fires, then waits for the open connections to wind down.
pub(crate) async fn run(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let router = router(Arc::clone(&state));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::trace!(%peer, "accepted connection");
                    // SSE chunks are small and latency is what the tests measure.
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(
                        stream,
                        router.clone(),
                        Arc::clone(&state),
                        shutdown.clone(),
                    ));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}
