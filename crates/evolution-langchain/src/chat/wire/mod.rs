//! The OpenAI-compatible chat wire format: what is sent to
//! `/chat/completions` and what comes back. Plain serde types, no I/O.
//!
//! Replies are parsed leniently where servers differ (unknown fields are
//! kept in `extra` maps, `content` may be null) and strictly where a reply would be
//! meaningless without a field (`choices`, `message`, `data`).

mod request;
mod response;

use serde::{Deserialize, Deserializer};

pub(crate) use request::RequestBody;
pub use request::{
    ChatMessage, ChatRequest, ContentPart, FunctionCall, FunctionDefinition, ImageUrl,
    MessageContent, ResponseFormat, Role, StreamOptions, Tool, ToolCall, ToolChoice,
};
pub use response::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Delta,
    FunctionCallDelta, PromptTokensDetails, ResponseMessage, ToolCallDelta, Usage,
};

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
            crate::chat::ChatOptions::new()
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
        // Streamed, with an extra body field: the exact text, in order.
        let streamed = ChatRequest::with_stream(
            vec![ChatMessage::user("hi")],
            crate::chat::ChatOptions::new().model("m").extra("top_k", 3),
            true,
        );
        assert_eq!(
            serde_json::to_string(&streamed).unwrap(),
            r#"{"messages":[{"role":"user","content":"hi"}],"model":"m","top_k":3,"stream":true,"stream_options":{"include_usage":true}}"#
        );
        // A call writes the same body from borrowed parts.
        let borrowed = RequestBody::new(&streamed.messages, &streamed.options, true);
        assert_eq!(
            serde_json::to_string(&borrowed).unwrap(),
            serde_json::to_string(&streamed).unwrap()
        );
        let plain = crate::chat::ChatOptions::new().stream_usage(false);
        let unstreamed = RequestBody::new(&streamed.messages, &plain, false);
        assert_eq!(
            serde_json::to_value(unstreamed.streamed()).unwrap(),
            json!({"messages": [{"role": "user", "content": "hi"}], "stream": true})
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
    fn unknown_fields_round_trip() {
        let reply = json!({
            "id": "c1", "model": "m", "created": 1,
            "object": "chat.completion", "system_fingerprint": "fp",
            "choices": [{
                "index": 0, "stop_reason": 42, "logprobs": null,
                "message": {"role": "assistant", "content": "hi", "audio": {"id": "a"}},
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                      "completion_tokens_details": {"reasoning_tokens": 1},
                      "prompt_tokens_details": {"cached_tokens": 0}},
            "kv_transfer_params": {"x": 1}
        });
        let parsed: ChatResponse = serde_json::from_value(reply.clone()).unwrap();
        assert_eq!(parsed.extra["system_fingerprint"], "fp");
        assert_eq!(parsed.extra["kv_transfer_params"], json!({"x": 1}));
        assert_eq!(parsed.choices[0].extra["stop_reason"], 42);
        assert_eq!(parsed.choices[0].message.extra["audio"], json!({"id": "a"}));
        assert_eq!(serde_json::to_value(&parsed).unwrap(), reply);

        // Chunks keep their top-level fields (nested ones are skipped: hot path).
        let chunk = json!({
            "id": "c2", "model": "m", "created": 1, "usage": null,
            "object": "chat.completion.chunk", "system_fingerprint": "fp",
            "choices": [{
                "index": 0, "finish_reason": null,
                "delta": {"role": "assistant", "content": "x"}
            }]
        });
        let parsed: ChatChunk = serde_json::from_value(chunk.clone()).unwrap();
        assert_eq!(parsed.extra["object"], "chat.completion.chunk");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), chunk);
        let text = chunk.to_string();
        let from_text: ChatChunk = serde_json::from_str(&text).unwrap();
        assert_eq!(from_text, parsed);
        let nulls: ChatChunk = serde_json::from_str(r#"{"choices":null,"usage":null}"#).unwrap();
        assert!(nulls.choices.is_empty() && nulls.usage.is_none());
        assert!(serde_json::from_str::<ChatChunk>(r#"{"id":"a","id":"b"}"#).is_err());
        assert!(serde_json::from_str::<ChatChunk>("[1]").is_err());
    }

    #[test]
    fn reasoning_under_either_name() {
        for field in ["reasoning_content", "reasoning"] {
            let reply: ChatResponse = serde_json::from_value(json!({
                "choices": [{"message": {"content": "4", field: "2+2"}, "finish_reason": "stop"}]
            }))
            .unwrap();
            assert_eq!(reply.reasoning(), Some("2+2"), "{field}");
            assert!(reply.choices[0].message.extra.is_empty());
            let chunk: ChatChunk = serde_json::from_value(json!({
                "choices": [{"index": 0, "delta": {field: "think"}}]
            }))
            .unwrap();
            assert_eq!(chunk.reasoning(), Some("think"), "{field}");
            assert_eq!(chunk.content(), None);
        }
        // Both names with the same text (vLLM in transition): no error, once.
        let reply: ChatResponse = serde_json::from_value(json!({
            "choices": [{"message": {"content": "4", "reasoning_content": "t", "reasoning": "t"}}]
        }))
        .unwrap();
        assert_eq!(reply.reasoning(), Some("t"));
        let plain: ChatResponse = serde_json::from_value(json!({
            "choices": [{"message": {"content": "4"}}]
        }))
        .unwrap();
        assert_eq!(plain.reasoning(), None);
    }

    #[test]
    fn usage_details_parse_and_add_up() {
        let mut usage: Usage = serde_json::from_value(json!({
            "prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": 4, "audio_tokens": null},
            "prompt_tokens_details": {"cached_tokens": 2}
        }))
        .unwrap();
        assert_eq!(usage.reasoning_tokens(), Some(4));
        assert_eq!(usage.cached_tokens(), Some(2));
        let plain: Usage = serde_json::from_value(json!({"prompt_tokens": 1})).unwrap();
        assert_eq!(plain.completion_tokens_details, None);
        assert_eq!(plain.reasoning_tokens(), None);
        let nulls: Usage = serde_json::from_value(json!({
            "completion_tokens_details": null, "prompt_tokens_details": null
        }))
        .unwrap();
        assert_eq!(nulls, Usage::default());
        usage += plain;
        usage += usage;
        assert_eq!(usage.prompt_tokens, 8);
        assert_eq!(usage.reasoning_tokens(), Some(8));
        assert_eq!(usage.cached_tokens(), Some(4));
        let mut none = Usage::default();
        none += Usage::default();
        assert_eq!(none.completion_tokens_details, None);
    }
}
