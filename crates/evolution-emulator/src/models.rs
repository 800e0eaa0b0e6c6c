//! `GET /v1/models` and `GET /v1/models/{id}`.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::fault::Target;
use crate::gate::{self, Incoming, ParsedBody, RawBody};
use crate::state::{Counter, State};
use crate::{reply, upstream};

fn model_object(state: &State, id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": state.started_unix,
        "owned_by": "emulator",
    })
}

/// Serves both routes; `uri` tells them apart because model ids may contain `/`.
pub(crate) async fn models(
    AxumState(state): AxumState<Arc<State>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    RawBody(body): RawBody,
) -> Response {
    let parsed = ParsedBody::parse(&body);
    let incoming = Incoming::new(&method, &uri, &headers, &parsed);
    let model = state.config.default_model().to_owned();
    let shape = match gate::admit(
        &state,
        Target::Models,
        &[Counter::ModelsRequests],
        incoming,
        &model,
        false,
    )
    .await
    {
        Ok(shape) => shape,
        Err(response) => return response,
    };

    let wanted = uri
        .path()
        .strip_prefix("/v1/models/")
        .filter(|id| !id.is_empty());
    if state.upstream_client.is_some() {
        let path = match wanted {
            Some(id) => format!("/models/{id}"),
            None => "/models".to_owned(),
        };
        let forward = upstream::Forward {
            method: Method::GET,
            path: &path,
            headers: &headers,
            body: Bytes::new(),
        };
        return upstream::forward(&state, forward, None, shape).await;
    }

    let answer = match wanted {
        None => {
            let data: Vec<Value> = state
                .config
                .models
                .iter()
                .map(|id| model_object(&state, id))
                .collect();
            json!({"object": "list", "data": data})
        }
        Some(id) if state.config.models.iter().any(|m| m == id) => model_object(&state, id),
        Some(id) => {
            return reply::error(
                StatusCode::NOT_FOUND,
                format!("The model '{id}' does not exist"),
                "invalid_request_error",
                "model_not_found",
            )
        }
    };
    reply::json_answer(&answer, shape.as_ref())
}
