//! The OpenAI-compatible wire format: what is sent to `/chat/completions`
//! and `/embeddings`, and what comes back. Plain serde types, no I/O.
//!
//! Replies are parsed leniently where servers differ (unknown fields are
//! ignored, `content` may be null) and strictly where a reply would be
//! meaningless without a field (`choices`, `message`, `data`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user.
    User,
    /// The model.
    Assistant,
    /// The result of a tool call.
    Tool,
}

/// A message's content: plain text, or parts (text and images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Text and image parts, for vision models.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content (text parts joined with newlines).
    pub fn text(&self) -> String {
        match self {
            MessageContent::Text(text) => text.clone(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    ContentPart::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// One part of a multi-part message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    /// A piece of text.
    Text {
        /// The text.
        text: String,
    },
    /// An image, by URL or `data:` URL.
    ImageUrl {
        /// Where the image is.
        image_url: ImageUrl,
    },
}

/// An image reference inside a [`ContentPart::ImageUrl`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageUrl {
    /// `https://…` or `data:image/png;base64,…`.
    pub url: String,
    /// `"auto"`, `"low"` or `"high"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A chat message as sent to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Who wrote it.
    pub role: Role,
    /// What it says; `None` for an assistant message that only calls tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    /// Optional author name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Tool calls made by an assistant message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// For a tool message: the id of the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    fn text(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: Some(MessageContent::Text(content.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::text(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::text(Role::User, content)
    }

    /// An assistant message (e.g. an earlier answer in a conversation).
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::text(Role::Assistant, content)
    }

    /// An assistant message that called tools.
    pub fn assistant_tool_calls(content: Option<String>, tool_calls: Vec<ToolCall>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.map(MessageContent::Text),
            name: None,
            tool_calls: Some(tool_calls),
            tool_call_id: None,
        }
    }

    /// The result of tool call `tool_call_id`.
    pub fn tool(tool_call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(tool_call_id.into()),
            ..Self::text(Role::Tool, content)
        }
    }

    /// A user message with text and images.
    pub fn user_with_images(
        text: impl Into<String>,
        image_urls: impl IntoIterator<Item = String>,
    ) -> Self {
        let text = text.into();
        let mut parts = Vec::new();
        if !text.is_empty() {
            parts.push(ContentPart::Text { text });
        }
        parts.extend(image_urls.into_iter().map(|url| ContentPart::ImageUrl {
            image_url: ImageUrl { url, detail: None },
        }));
        Self {
            role: Role::User,
            content: Some(MessageContent::Parts(parts)),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// The message's text, empty when it has none.
    pub fn content_text(&self) -> String {
        self.content
            .as_ref()
            .map(MessageContent::text)
            .unwrap_or_default()
    }
}

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `"function"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The function's description.
    pub function: FunctionDefinition,
}

impl Tool {
    /// A function tool.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: "function".into(),
            function: FunctionDefinition {
                name: name.into(),
                description: Some(description.into()),
                parameters: Some(parameters),
            },
        }
    }
}

/// A function's name, purpose and JSON-schema parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDefinition {
    /// The function's name.
    pub name: String,
    /// What it does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON schema of its arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
}

/// Whether and which tool the model must call.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// Never call a tool.
    None,
    /// The model decides.
    Auto,
    /// Call some tool.
    Required,
    /// Call this function.
    Function(String),
}

impl Serialize for ToolChoice {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolChoice::None => serializer.serialize_str("none"),
            ToolChoice::Auto => serializer.serialize_str("auto"),
            ToolChoice::Required => serializer.serialize_str("required"),
            ToolChoice::Function(name) => serde_json::json!({
                "type": "function",
                "function": { "name": name }
            })
            .serialize(serializer),
        }
    }
}

/// The format the model must answer in.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// Free text.
    Text,
    /// Any JSON object.
    JsonObject,
    /// JSON matching a schema: `{"name": …, "schema": …, "strict": …}`.
    JsonSchema(Value),
}

impl Serialize for ResponseFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value = match self {
            ResponseFormat::Text => serde_json::json!({ "type": "text" }),
            ResponseFormat::JsonObject => serde_json::json!({ "type": "json_object" }),
            ResponseFormat::JsonSchema(schema) => {
                serde_json::json!({ "type": "json_schema", "json_schema": schema })
            }
        };
        value.serialize(serializer)
    }
}

/// A tool call made by the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's id, quoted back in the tool message that answers it.
    #[serde(default)]
    pub id: String,
    /// Always `"function"`.
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    /// Which function, with what arguments.
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

impl ToolCall {
    /// A function call.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: function_kind(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }
}

/// A function name and its arguments as the model wrote them (a JSON string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// Its arguments, a JSON document as text.
    #[serde(default)]
    pub arguments: String,
}

/// `stream_options` of a streaming request.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamOptions {
    /// Send a last chunk with token usage.
    pub include_usage: bool,
}

/// The body of `POST /chat/completions`. `None` fields are omitted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    /// Model name; omitted when empty (the endpoint's own model), since some
    /// engines reject an empty name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature, 0–2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling mass, 0–1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// −2–2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// −2–2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Stop sequences.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<Vec<String>>,
    /// Stream the answer as server-sent events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Choices to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Seed for reproducible sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// Tools the model may call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// Whether/which tool to call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Answer format.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    /// Streaming options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
}

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// The assistant's message in a reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseMessage {
    /// Normally `assistant`.
    #[serde(default)]
    pub role: Option<String>,
    /// The text; `None` when the model only called tools.
    #[serde(default)]
    pub content: Option<String>,
    /// Tool calls the model made.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<ToolCall>,
    /// Reasoning text, for models that return it separately.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// One of the `n` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// Why generation stopped: `stop`, `length`, `tool_calls`, …
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A complete chat reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// The server's id for the reply.
    #[serde(default)]
    pub id: Option<String>,
    /// The model that answered.
    #[serde(default)]
    pub model: Option<String>,
    /// Unix time of creation.
    #[serde(default)]
    pub created: Option<u64>,
    /// The answers (one unless `n > 1`).
    pub choices: Vec<Choice>,
    /// Token counts.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatResponse {
    /// The first choice's text ("" when it has none).
    pub fn content(&self) -> &str {
        self.choices
            .first()
            .and_then(|c| c.message.content.as_deref())
            .unwrap_or("")
    }

    /// The first choice's tool calls.
    pub fn tool_calls(&self) -> &[ToolCall] {
        self.choices
            .first()
            .map(|c| c.message.tool_calls.as_slice())
            .unwrap_or(&[])
    }

    /// The first choice's finish reason.
    pub fn finish_reason(&self) -> Option<&str> {
        self.choices
            .first()
            .and_then(|c| c.finish_reason.as_deref())
    }
}

/// A fragment of a tool call inside a stream; fragments with the same
/// `index` are concatenated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call this fragment belongs to.
    #[serde(default)]
    pub index: u32,
    /// The call id (first fragment only).
    #[serde(default)]
    pub id: Option<String>,
    /// `"function"` (first fragment only).
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Name and/or a piece of the arguments.
    #[serde(default)]
    pub function: Option<FunctionCallDelta>,
}

/// Part of a function call inside a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    /// The function's name (first fragment only).
    #[serde(default)]
    pub name: Option<String>,
    /// A piece of the arguments text.
    #[serde(default)]
    pub arguments: Option<String>,
}

/// What a chunk adds to a choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// Set on the first chunk.
    #[serde(default)]
    pub role: Option<String>,
    /// New text.
    #[serde(default)]
    pub content: Option<String>,
    /// New reasoning text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// New tool-call fragments.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<ToolCallDelta>,
}

/// One choice's part of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// Which choice.
    #[serde(default)]
    pub index: u32,
    /// What it adds.
    #[serde(default)]
    pub delta: Delta,
    /// Set on the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One streamed chunk (`chat.completion.chunk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// The server's id for the reply.
    #[serde(default)]
    pub id: Option<String>,
    /// The model that answers.
    #[serde(default)]
    pub model: Option<String>,
    /// Unix time of creation.
    #[serde(default)]
    pub created: Option<u64>,
    /// Per-choice deltas; empty on the final usage chunk.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub choices: Vec<ChunkChoice>,
    /// Token counts, on the last chunk when `include_usage` was asked for.
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl ChatChunk {
    /// New reasoning text for the first choice (models that stream their
    /// reasoning separately), if this chunk brings any.
    pub fn reasoning(&self) -> Option<&str> {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .and_then(|c| c.delta.reasoning_content.as_deref())
            .filter(|text| !text.is_empty())
    }

    /// New text for the first choice, if this chunk brings any.
    pub fn content(&self) -> Option<&str> {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .and_then(|c| c.delta.content.as_deref())
            .filter(|text| !text.is_empty())
    }
}

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
    #[serde(default)]
    pub(crate) index: usize,
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

/// An OpenAI-style error body: `{"error": {"message", "type", "code"}}`, or
/// the looser shapes other servers use.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ServerError {
    pub(crate) message: String,
    pub(crate) error_type: Option<String>,
    pub(crate) code: Option<String>,
}

impl ServerError {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let text = || crate::error::truncate_message(&String::from_utf8_lossy(body));
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self {
                message: text(),
                ..Self::default()
            };
        };
        Self::from_value(&value).unwrap_or_else(|| Self {
            message: text(),
            ..Self::default()
        })
    }

    pub(crate) fn from_value(value: &Value) -> Option<Self> {
        let as_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        let error = value.get("error").unwrap_or(value);
        if let Value::String(message) = error {
            return Some(Self {
                message: message.clone(),
                ..Self::default()
            });
        }
        let message = error
            .get("message")
            .or_else(|| error.get("detail"))
            .and_then(as_text)?;
        Some(Self {
            message: crate::error::truncate_message(&message),
            error_type: error.get("type").and_then(as_text),
            code: error.get("code").and_then(as_text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_recorded_llama_reply() {
        let body = include_str!("../../tests/fixtures/llama-server.chat.json");
        let reply: ChatResponse = serde_json::from_str(body).unwrap();
        assert_eq!(reply.content(), "The capital of France is Paris.");
        assert_eq!(reply.finish_reason(), Some("stop"));
        assert_eq!(reply.usage.unwrap().total_tokens, 35);
    }

    #[test]
    fn missing_choices_is_an_error() {
        assert!(serde_json::from_value::<ChatResponse>(json!({"id": "x"})).is_err());
    }

    #[test]
    fn request_omits_unset_fields() {
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::user("hi")],
            max_tokens: Some(5),
            temperature: None,
            top_p: None,
            frequency_penalty: None,
            presence_penalty: None,
            stop: None,
            stream: None,
            n: None,
            seed: None,
            tools: None,
            tool_choice: Some(ToolChoice::Function("f".into())),
            response_format: Some(ResponseFormat::JsonObject),
            stream_options: None,
        };
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
    fn server_error_shapes() {
        let e = ServerError::parse(include_bytes!(
            "../../tests/fixtures/llama-server.error-400.json"
        ));
        assert_eq!(e.message, "Expected 'messages' to be an array");
        assert_eq!(e.error_type.as_deref(), Some("invalid_request_error"));
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(ServerError::parse(b"{\"detail\":\"nope\"}").message, "nope");
        assert_eq!(
            ServerError::parse(b"<html>bad gateway</html>").message,
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn models_list_with_both_lists() {
        let body = include_str!("../../tests/fixtures/llama-server.models.json");
        let list: ModelList = serde_json::from_str(body).unwrap();
        assert!(!list.data.is_empty());
    }
}
