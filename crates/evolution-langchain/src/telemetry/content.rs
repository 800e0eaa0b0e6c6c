//! Message content on spans, for clients built with
//! [`record_content(true)`](crate::EvolutionInferenceBuilder::record_content):
//! `gen_ai.input.messages` and `gen_ai.output.messages` as the JSON the GenAI
//! conventions describe (a list of `{"role", "parts": [...]}` objects).

use serde_json::{json, Map, Value};
use tracing::Span;

use super::{INPUT_MESSAGES, OUTPUT_MESSAGES};
use crate::chat::wire::{ChatMessage, ChatResponse, ContentPart, MessageContent, Role, ToolCall};

/// Records the messages a chat request sends.
pub(crate) fn record_input(span: &Span, messages: &[ChatMessage]) {
    if span.is_disabled() {
        return;
    }
    let list: Vec<Value> = messages.iter().map(input_message).collect();
    span.record(INPUT_MESSAGES, Value::Array(list).to_string());
}

/// Records the answers of a whole reply.
pub(crate) fn record_output(span: &Span, response: &ChatResponse) {
    if span.is_disabled() {
        return;
    }
    let list: Vec<Value> = response
        .choices
        .iter()
        .map(|choice| {
            let message = &choice.message;
            let mut parts = Vec::new();
            if let Some(reasoning) = message.reasoning() {
                parts.push(json!({"type": "reasoning", "content": reasoning}));
            }
            if let Some(text) = message.content.as_deref().filter(|t| !t.is_empty()) {
                parts.push(json!({"type": "text", "content": text}));
            }
            parts.extend(message.tool_calls.iter().map(tool_call_part));
            let mut object = Map::new();
            object.insert("role".into(), "assistant".into());
            object.insert("parts".into(), Value::Array(parts));
            if let Some(reason) = &choice.finish_reason {
                object.insert("finish_reason".into(), reason.as_str().into());
            }
            Value::Object(object)
        })
        .collect();
    span.record(OUTPUT_MESSAGES, Value::Array(list).to_string());
}

fn input_message(message: &ChatMessage) -> Value {
    let role = match message.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    let mut parts = Vec::new();
    match (&message.role, &message.tool_call_id) {
        // A tool's answer is one `tool_call_response` part.
        (Role::Tool, Some(id)) => parts.push(json!({
            "type": "tool_call_response",
            "id": id,
            "response": message.content.as_ref().map(MessageContent::text).unwrap_or_default(),
        })),
        _ => match &message.content {
            Some(MessageContent::Text(text)) => {
                parts.push(json!({"type": "text", "content": text}));
            }
            Some(MessageContent::Parts(list)) => parts.extend(list.iter().map(content_part)),
            None => {}
        },
    }
    if let Some(calls) = &message.tool_calls {
        parts.extend(calls.iter().map(tool_call_part));
    }
    let mut object = Map::new();
    object.insert("role".into(), role.into());
    if let Some(name) = &message.name {
        object.insert("name".into(), name.as_str().into());
    }
    object.insert("parts".into(), Value::Array(parts));
    Value::Object(object)
}

fn content_part(part: &ContentPart) -> Value {
    match part {
        ContentPart::Text { text } => json!({"type": "text", "content": text}),
        ContentPart::ImageUrl { image_url } => {
            // An inline image would put megabytes of base64 on the span: only
            // its media type is kept.
            let uri = match image_url.url.strip_prefix("data:") {
                Some(rest) => {
                    let media = rest.split([';', ',']).next().unwrap_or_default();
                    format!("data:{media};…")
                }
                None => image_url.url.clone(),
            };
            json!({"type": "uri", "modality": "image", "uri": uri})
        }
    }
}

fn tool_call_part(call: &ToolCall) -> Value {
    // Arguments are JSON text on the wire; the conventions record the object.
    let arguments = serde_json::from_str::<Value>(&call.function.arguments)
        .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
    json!({
        "type": "tool_call",
        "id": call.id,
        "name": call.function.name,
        "arguments": arguments,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::wire::ImageUrl;

    #[test]
    fn input_messages_follow_the_conventions_shape() {
        let messages = [
            ChatMessage::system("be brief"),
            ChatMessage::user("weather in Paris?"),
            ChatMessage::assistant_tool_calls(
                None,
                vec![ToolCall::new("c1", "weather", r#"{"city":"Paris"}"#)],
            ),
            ChatMessage::tool("c1", "rainy"),
        ];
        let list: Vec<Value> = messages.iter().map(input_message).collect();
        assert_eq!(
            Value::Array(list),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
                {"role": "user", "parts": [{"type": "text", "content": "weather in Paris?"}]},
                {"role": "assistant", "parts": [
                    {"type": "tool_call", "id": "c1", "name": "weather", "arguments": {"city": "Paris"}}
                ]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "rainy"}]},
            ])
        );
    }

    #[test]
    fn inline_images_keep_only_their_media_type() {
        let part = ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "data:image/png;base64,AAAA".into(),
                detail: None,
            },
        };
        assert_eq!(
            content_part(&part),
            json!({"type": "uri", "modality": "image", "uri": "data:image/png;…"})
        );
        let linked = ContentPart::ImageUrl {
            image_url: ImageUrl {
                url: "https://example.com/a.png".into(),
                detail: None,
            },
        };
        assert_eq!(content_part(&linked)["uri"], "https://example.com/a.png");
    }

    #[test]
    fn arguments_that_are_not_json_stay_text() {
        let call = ToolCall::new("c2", "f", "not json");
        assert_eq!(tool_call_part(&call)["arguments"], "not json");
    }
}
