//! What is sent: messages, tools, and the chat request body.

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::chat::options::ChatOptions;

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

/// Reads what [`Serialize`] writes: `"none"`, `"auto"`, `"required"` or
/// `{"type": "function", "function": {"name": …}}`.
impl<'de> Deserialize<'de> for ToolChoice {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Named {
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Mode(String),
            Function { function: Named },
        }
        match Shape::deserialize(deserializer)? {
            Shape::Mode(mode) => match mode.as_str() {
                "none" => Ok(ToolChoice::None),
                "auto" => Ok(ToolChoice::Auto),
                "required" => Ok(ToolChoice::Required),
                other => Err(serde::de::Error::invalid_value(
                    serde::de::Unexpected::Str(other),
                    &r#""none", "auto", "required" or {"type": "function", "function": {"name": …}}"#,
                )),
            },
            Shape::Function { function } => Ok(ToolChoice::Function(function.name)),
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

/// Reads what [`Serialize`] writes: `{"type": "text"}`,
/// `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": …}`.
impl<'de> Deserialize<'de> for ResponseFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
        enum Shape {
            Text,
            JsonObject,
            JsonSchema { json_schema: Value },
        }
        Ok(match Shape::deserialize(deserializer)? {
            Shape::Text => ResponseFormat::Text,
            Shape::JsonObject => ResponseFormat::JsonObject,
            Shape::JsonSchema { json_schema } => ResponseFormat::JsonSchema(json_schema),
        })
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

/// The body of `POST /chat/completions`: the conversation, the parameters
/// ([`ChatOptions`], embedded under their own names) and the stream switch.
///
/// [`EvolutionInference::build_request`](crate::EvolutionInference::build_request)
/// makes the one a call would send;
/// [`send_request`](crate::EvolutionInference::send_request) and
/// [`stream_request`](crate::EvolutionInference::stream_request) send one as it is.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Model, sampling and tool parameters; unset ones are omitted.
    pub options: ChatOptions,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
}

/// The body as the API takes it: `messages`, then the options' parameters
/// at the top level, then `stream` and `stream_options` when set.
impl Serialize for ChatRequest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.body().serialize(serializer)
    }
}

/// A chat request body made of borrowed parts: what a call sends, written
/// from the caller's conversation and the merged options as they are,
/// without copying them into a [`ChatRequest`] first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestBody<'a> {
    pub(crate) messages: &'a [ChatMessage],
    pub(crate) options: &'a ChatOptions,
    pub(crate) stream: Option<bool>,
    pub(crate) stream_options: Option<StreamOptions>,
}

impl<'a> RequestBody<'a> {
    /// The body a call sends: `stream` set either way, and a usage chunk
    /// asked for in streams unless `options.stream_usage` is false.
    pub(crate) fn new(messages: &'a [ChatMessage], options: &'a ChatOptions, stream: bool) -> Self {
        Self {
            messages,
            options,
            stream: Some(stream),
            stream_options: (stream && options.stream_usage.unwrap_or(true)).then_some(
                StreamOptions {
                    include_usage: true,
                },
            ),
        }
    }

    /// The same body, streamed.
    pub(crate) fn streamed(self) -> Self {
        Self {
            stream: Some(true),
            ..self
        }
    }
}

impl Serialize for RequestBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("messages", self.messages)?;
        self.options.serialize_entries(&mut map)?;
        if let Some(stream) = &self.stream {
            map.serialize_entry("stream", stream)?;
        }
        if let Some(options) = &self.stream_options {
            map.serialize_entry("stream_options", options)?;
        }
        map.end()
    }
}

impl ChatRequest {
    /// A request for `messages` with `options`, not streamed.
    pub fn new(messages: Vec<ChatMessage>, options: ChatOptions) -> Self {
        Self::with_stream(messages, options, false)
    }

    /// The request as a call sends it: `stream` set either way, and a usage
    /// chunk asked for in streams unless `options.stream_usage` is false.
    pub fn with_stream(messages: Vec<ChatMessage>, options: ChatOptions, stream: bool) -> Self {
        let stream_options = RequestBody::new(&messages, &options, stream).stream_options;
        Self {
            messages,
            options,
            stream: Some(stream),
            stream_options,
        }
    }

    /// The body this request sends, borrowed.
    pub(crate) fn body(&self) -> RequestBody<'_> {
        RequestBody {
            messages: &self.messages,
            options: &self.options,
            stream: self.stream,
            stream_options: self.stream_options,
        }
    }
}
