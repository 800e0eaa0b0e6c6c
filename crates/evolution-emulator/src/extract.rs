//! [`ApiRequest`]: the preamble every `/v1/*` handler shares, as an axum extractor.
//! Extracting one reads and parses the body, starts in-flight counting, runs the gate
//! (recording, counters, rate limits, faults, bearer check), waits out the configured
//! latency and, in upstream mode, forwards the request; a handler that receives an
//! `ApiRequest` only has to answer it.

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use crate::cost;
use crate::fault::{Fault, Target};
use crate::gate::{self, Admission, ParsedBody, RawBody};
use crate::reply::ExtraHeaders;
use crate::state::{Counter, InFlightGuard, State};
use crate::upstream;

/// The `/v1` route family a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Chat,
    Embeddings,
    Models,
    Rerank,
    /// An unknown `/v1` path: gated like the others, then answered `404`.
    Other,
}

impl Route {
    pub fn of(path: &str) -> Route {
        match path {
            "/v1/chat/completions" => Route::Chat,
            "/v1/embeddings" => Route::Embeddings,
            "/v1/models" => Route::Models,
            "/v1/rerank" => Route::Rerank,
            p if p.starts_with("/v1/models/") => Route::Models,
            _ => Route::Other,
        }
    }

    /// The fault queue the route draws from first.
    fn target(self) -> Target {
        match self {
            Route::Chat => Target::Chat,
            Route::Embeddings => Target::Embeddings,
            Route::Models => Target::Models,
            Route::Rerank => Target::Rerank,
            Route::Other => Target::Api,
        }
    }

    /// Whether the route's requests count towards `in_flight`.
    fn counts_in_flight(self) -> bool {
        matches!(self, Route::Chat | Route::Embeddings | Route::Rerank)
    }

    /// Whether the route names a model in its body (models and unknown routes do not).
    fn names_model(self) -> bool {
        matches!(self, Route::Chat | Route::Embeddings | Route::Rerank)
    }

    /// The tokens a request costs against the tokens-per-minute limit, on the routes the
    /// rate limits cover.
    fn cost(self, body: &Value) -> Option<u64> {
        match self {
            Route::Chat => Some(cost::chat(body)),
            Route::Embeddings => Some(cost::embeddings(body)),
            Route::Rerank => Some(cost::rerank(body)),
            Route::Models | Route::Other => None,
        }
    }

    /// Whether upstream mode forwards the route (unknown routes are not forwarded).
    fn forwards(self) -> bool {
        !matches!(self, Route::Other)
    }

    fn counters(self, stream: bool) -> &'static [Counter] {
        match self {
            Route::Chat if stream => &[Counter::ChatRequests, Counter::StreamRequests],
            Route::Chat => &[Counter::ChatRequests],
            Route::Embeddings => &[Counter::EmbeddingsRequests],
            Route::Models => &[Counter::ModelsRequests],
            Route::Rerank => &[Counter::RerankRequests],
            Route::Other => &[],
        }
    }
}

/// A `/v1` request that has passed the gate and is the scripted responder's to answer.
pub(crate) struct ApiRequest {
    pub state: Arc<State>,
    /// The request path, e.g. `/v1/models/org/model-a`.
    pub path: String,
    pub body: ParsedBody,
    /// A fault the route must apply to its own answer (streaming faults and the like).
    pub shape: Option<Fault>,
    /// Present on routes counted in flight; a streamed answer moves it into its body.
    pub guard: Option<InFlightGuard>,
}

impl FromRequest<Arc<State>> for ApiRequest {
    /// The whole answer when the request is not the route's to answer: an injected
    /// fault, a `401`, a body that cannot be read, or the upstream's reply.
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<Self, Response> {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let headers = req.headers().clone();
        let extra_headers = req.extensions().get::<ExtraHeaders>().cloned();
        let route = Route::of(&path);
        let RawBody(raw) = RawBody::from_request(req, state).await?;

        let guard = route.counts_in_flight().then(|| InFlightGuard::new(state));
        let body = ParsedBody::parse(&raw);
        let stream = route == Route::Chat && body.value.get("stream") == Some(&Value::Bool(true));
        let default_model = state.config.default_model();
        let model = if route.names_model() {
            body.model_or(default_model)
        } else {
            default_model.to_owned()
        };
        let admission = Admission {
            target: route.target(),
            counters: route.counters(stream),
            method: &method,
            path: &path,
            headers: &headers,
            body: &body,
            model: &model,
            stream,
            // Estimated only when a limit is set: the walk over the messages is wasted otherwise.
            cost: state
                .limiter
                .enabled()
                .then(|| route.cost(&body.value))
                .flatten(),
            extra_headers: extra_headers.as_ref(),
        };
        let shape = gate::admit(state, admission).await?;
        if route.counts_in_flight() {
            state.answer_latency().await;
        }

        if route.forwards() && state.upstream_client.is_some() {
            let body = if method == Method::GET {
                Bytes::new()
            } else {
                raw
            };
            return Err(forward(state, &method, &path, &headers, body, guard, shape).await);
        }
        Ok(ApiRequest {
            state: Arc::clone(state),
            path,
            body,
            shape,
            guard,
        })
    }
}

/// Sends the request to the upstream below its base URL (`/v1/x` becomes `{base}/x`).
async fn forward(
    state: &Arc<State>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    guard: Option<InFlightGuard>,
    shape: Option<Fault>,
) -> Response {
    // `/v1/models/` (no id) is the listing, as the route itself treats it.
    let below_base = path
        .strip_prefix("/v1")
        .unwrap_or(path)
        .trim_end_matches('/');
    let request = upstream::Forward {
        method: method.clone(),
        path: below_base,
        headers,
        body,
    };
    upstream::forward(state, request, guard, shape).await
}
