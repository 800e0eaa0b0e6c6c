//! The OpenAI-compatible wire format: what is sent to `/chat/completions`
//! and `/embeddings`, and what comes back. Plain serde types, no I/O.
//!
//! Replies are parsed leniently where servers differ (unknown fields are
//! ignored, `content` may be null) and strictly where a reply would be
//! meaningless without a field (`choices`, `message`, `data`).

mod request;
mod response;

use serde::{Deserialize, Deserializer, Serialize};

pub use request::{
    ChatMessage, ChatRequest, ContentPart, FunctionCall, FunctionDefinition, ImageUrl,
    MessageContent, ResponseFormat, Role, StreamOptions, Tool, ToolCall, ToolChoice,
};
pub use response::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Delta, FunctionCallDelta, ResponseMessage,
    ToolCallDelta, Usage,
};

/// An entry of `GET /models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// The name to pass as `model`.
    pub id: String,
    /// Who provides it.
    #[serde(default)]
    pub owned_by: Option<String>,
    /// Unix time of creation.
    #[serde(default)]
    pub created: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ModelList {
    pub(crate) data: Vec<ModelInfo>,
}

/// The body of `POST /embeddings`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EmbeddingRequest<'a> {
    pub(crate) model: &'a str,
    pub(crate) input: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dimensions: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingData {
    /// Absent on some servers; the position in `data` then.
    #[serde(default)]
    pub(crate) index: Option<usize>,
    pub(crate) embedding: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EmbeddingResponse {
    pub(crate) data: Vec<EmbeddingData>,
}

fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_recorded_llama_reply() {
        let body = include_str!("../../../tests/fixtures/llama-server.chat.json");
        let reply: ChatResponse = serde_json::from_str(body).unwrap();
        assert_eq!(reply.content(), "The capital of France is Paris.");
        assert_eq!(reply.finish_reason(), Some("stop"));
        assert_eq!(reply.usage.unwrap().total_tokens, 35);
    }

    #[test]
    fn null_usage_counts_are_zero() {
        let reply: ChatResponse = serde_json::from_value(json!({
            "choices": [{"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": null}
        }))
        .unwrap();
        assert_eq!(reply.usage().unwrap().total_tokens, 0);
        assert_eq!(reply.usage().unwrap().prompt_tokens, 3);
    }

    #[test]
    fn missing_choices_is_an_error() {
        assert!(serde_json::from_value::<ChatResponse>(json!({"id": "x"})).is_err());
    }

    #[test]
    fn request_omits_unset_fields() {
        let mut request = ChatRequest::new(
            vec![ChatMessage::user("hi")],
            crate::inference::ChatOptions::new()
                .model("m")
                .max_tokens(5)
                .tool_choice(ToolChoice::Function("f".into()))
                .response_format(ResponseFormat::JsonObject),
        );
        request.stream = None;
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "model": "m",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": 5,
                "tool_choice": {"type": "function", "function": {"name": "f"}},
                "response_format": {"type": "json_object"}
            })
        );
    }

    #[test]
    fn message_shapes() {
        let tool = ChatMessage::tool("call_1", "42");
        assert_eq!(
            serde_json::to_value(&tool).unwrap(),
            json!({"role": "tool", "content": "42", "tool_call_id": "call_1"})
        );
        let images =
            ChatMessage::user_with_images("what is this?", ["https://x/y.png".to_string()]);
        assert_eq!(
            serde_json::to_value(&images).unwrap()["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://x/y.png"}})
        );
        assert_eq!(images.content_text(), "what is this?");
    }

    #[test]
    fn models_list_with_both_lists() {
        let body = include_str!("../../../tests/fixtures/llama-server.models.json");
        let list: ModelList = serde_json::from_str(body).unwrap();
        assert!(!list.data.is_empty());
    }
}
