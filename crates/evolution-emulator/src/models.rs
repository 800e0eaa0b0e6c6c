//! `GET /v1/models` and `GET /v1/models/{id}`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::extract::ApiRequest;
use crate::reply;
use crate::state::State;

fn model_object(state: &State, id: &str) -> Value {
    json!({
        "id": id,
        "object": "model",
        "created": state.started_unix,
        "owned_by": "emulator",
        // Cloud.ru's catalogue marks free models this way.
        "is_billable": false,
        "cost": 0,
    })
}

/// Serves both routes; the path tells them apart because model ids may contain `/`.
pub(crate) async fn models(request: ApiRequest) -> Response {
    let ApiRequest {
        state, path, shape, ..
    } = request;
    let wanted = path.strip_prefix("/v1/models/").filter(|id| !id.is_empty());
    let answer = match wanted {
        None => {
            let data: Vec<Value> = state
                .config
                .listed_models()
                .map(|id| model_object(&state, id))
                .collect();
            json!({"object": "list", "data": data})
        }
        Some(id) if state.config.listed_models().any(|m| m == id) => model_object(&state, id),
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
