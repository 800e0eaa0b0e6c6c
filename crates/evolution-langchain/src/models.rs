//! The models API group: `GET /models`, the models an endpoint serves
//! (also a model run's health check), as a method of the chat client.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::chat::EvolutionInference;
use crate::error::Result;
use crate::transport::Request;

/// The path of the models endpoint under the base URL.
const PATH: &str = "models";

impl EvolutionInference {
    /// The models the endpoint serves.
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>> {
        let list: ModelList = self.transport.json(Request::get(PATH)).await?;
        Ok(list.data)
    }
}

/// An entry of `GET /models`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name to pass as `model`.
    pub id: String,
    /// Who provides it.
    #[serde(default)]
    pub owned_by: Option<String>,
    /// Unix time of creation.
    #[serde(default)]
    pub created: Option<u64>,
    /// Fields the server sent that this type does not name; Cloud.ru's
    /// catalogue adds `is_billable` and `cost` (see the helpers).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelInfo {
    /// Whether using the model is billed (`is_billable`), when the server says.
    pub fn is_billable(&self) -> Option<bool> {
        self.extra
            .get("is_billable")
            .and_then(serde_json::Value::as_bool)
    }

    /// The model's `cost` as a number, when the server sent one (a number, or
    /// a string holding one). The unit is the provider's.
    pub fn cost(&self) -> Option<f64> {
        match self.extra.get("cost")? {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModelList {
    pub(crate) data: Vec<ModelInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn model_entries_keep_billing_fields() {
        let model: ModelInfo = serde_json::from_value(json!({
            "id": "zai-org/GLM-4.7", "object": "model", "owned_by": "cloud.ru",
            "is_billable": true, "cost": "1.5"
        }))
        .unwrap();
        assert_eq!(model.is_billable(), Some(true));
        assert_eq!(model.cost(), Some(1.5));
        assert_eq!(model.extra["object"], "model");
        let free: ModelInfo =
            serde_json::from_value(json!({"id": "m", "is_billable": false, "cost": 0})).unwrap();
        assert_eq!((free.is_billable(), free.cost()), (Some(false), Some(0.0)));
        let bare: ModelInfo = serde_json::from_value(json!({"id": "m"})).unwrap();
        assert_eq!((bare.is_billable(), bare.cost()), (None, None));
    }

    #[test]
    fn models_list_with_both_lists() {
        let body = include_str!("../tests/fixtures/llama-server.models.json");
        let list: ModelList = serde_json::from_str(body).unwrap();
        assert!(!list.data.is_empty());
    }
}
