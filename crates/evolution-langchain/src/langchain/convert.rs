//! Translations between langchain-rust's types and the wire types: messages
//! in, results and stream chunks out, `CallOptions` into `ChatOptions`.

use langchain_rust::language_models::options::CallOptions;
use langchain_rust::language_models::{GenerateResult, LLMError, TokenUsage};
use langchain_rust::schemas::{
    FunctionCallBehavior, FunctionDefinition as LcFunction, ImageContent, Message, MessageType,
    ResponseFormat as LcResponseFormat, StreamData, ToolCall as LcToolCall,
};
use serde_json::{json, Value};

use crate::chat::wire::{
    ChatChunk, ChatMessage, ChatResponse, ContentPart, FunctionDefinition, ImageUrl,
    MessageContent, ResponseFormat, Role, Tool, ToolCall, ToolChoice, Usage,
};
use crate::chat::ChatOptions;

/// The conversation as chat messages, in order.
pub(super) fn chat_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, LLMError> {
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| chat_message(index, message))
        .collect()
}

fn chat_message(index: usize, message: &Message) -> Result<ChatMessage, LLMError> {
    match message.message_type {
        MessageType::SystemMessage => Ok(ChatMessage::system(&message.content)),
        MessageType::HumanMessage => Ok(human_message(message)),
        MessageType::AIMessage => ai_message(index, message),
        MessageType::ToolMessage => {
            // Without the call id the server cannot pair the result with its
            // call and rejects the request with a vaguer message than this.
            let id = message
                .id
                .as_deref()
                .filter(|id| !id.is_empty())
                .ok_or_else(|| {
                    LLMError::OtherError(format!(
                        "messages[{index}] is a tool message without the id of the call it \
                         answers; create it with Message::new_tool_message(content, call_id)"
                    ))
                })?;
            Ok(ChatMessage::tool(id, &message.content))
        }
    }
}

/// Plain text, or text and image parts when the message has images.
fn human_message(message: &Message) -> ChatMessage {
    let images = message.images.as_deref().unwrap_or_default();
    if images.is_empty() {
        return ChatMessage::user(&message.content);
    }
    let mut parts = Vec::with_capacity(images.len() + 1);
    if !message.content.is_empty() {
        parts.push(ContentPart::Text {
            text: message.content.clone(),
        });
    }
    parts.extend(images.iter().map(|image| ContentPart::ImageUrl {
        image_url: image_url(image),
    }));
    ChatMessage {
        role: Role::User,
        content: Some(MessageContent::Parts(parts)),
        name: None,
        tool_calls: None,
        tool_call_id: None,
    }
}

/// langchain-rust takes an http(s) URL, a `data:` URL or bare base64; the
/// API takes only URLs, so bare data becomes a `data:` URL.
fn image_url(image: &ImageContent) -> ImageUrl {
    let source = image.image_url.trim();
    let url = if ["http://", "https://", "data:"]
        .iter()
        .any(|scheme| source.starts_with(scheme))
    {
        source.to_string()
    } else {
        format!("data:{};base64,{source}", base64_media_type(source))
    };
    ImageUrl {
        url,
        detail: image.detail.clone(),
    }
}

/// The media type of base64 image data, from its encoded magic bytes.
fn base64_media_type(data: &str) -> &'static str {
    [
        ("/9j/", "image/jpeg"),
        ("iVBORw0KGgo", "image/png"),
        ("R0lGOD", "image/gif"),
        ("UklGR", "image/webp"),
    ]
    .into_iter()
    .find(|(prefix, _)| data.starts_with(prefix))
    .map_or("application/octet-stream", |(_, media_type)| media_type)
}

/// An earlier answer; with `tool_calls` (OpenAI-style JSON, as agents store
/// them) an assistant message that called tools.
fn ai_message(index: usize, message: &Message) -> Result<ChatMessage, LLMError> {
    let calls: Vec<ToolCall> = match &message.tool_calls {
        None | Some(Value::Null) => Vec::new(),
        // Dropping malformed calls would orphan the tool messages that
        // follow, so they are an error.
        Some(value) => serde_json::from_value(value.clone()).map_err(|e| {
            LLMError::ParsingError(format!(
                "messages[{index}].tool_calls is not a list of OpenAI-style tool calls \
                 ({{\"id\", \"type\": \"function\", \"function\": {{\"name\", \"arguments\"}}}}): {e}"
            ))
        })?,
    };
    if calls.is_empty() {
        return Ok(ChatMessage::assistant(&message.content));
    }
    let content = (!message.content.is_empty()).then(|| message.content.clone());
    Ok(ChatMessage::assistant_tool_calls(content, calls))
}

/// The first choice as a langchain result. Tool calls go into `tool_calls`
/// and, as langchain-rust expects, into `generation` as a JSON array.
pub(super) fn generate_result(response: ChatResponse) -> Result<GenerateResult, LLMError> {
    let tokens = response.usage.map(token_usage);
    let choice = response
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LLMError::ParsingError("the reply has no choices".into()))?;
    // The crate's one answer rule, as for `invoke` and streams.
    let generation = choice
        .answer()
        .ok_or_else(|| {
            LLMError::ParsingError(
                "the answer has no content, no tool calls and no finish reason".into(),
            )
        })?
        .to_string();
    let calls: Vec<LcToolCall> = choice
        .message
        .tool_calls
        .into_iter()
        .map(|call| LcToolCall::new(call.id, call.function.name, call.function.arguments))
        .collect();
    Ok(GenerateResult {
        tokens,
        generation,
        tool_calls: Vec::new(),
    }
    .with_tool_calls(calls))
}

fn token_usage(usage: Usage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        total_tokens: usage.total_tokens,
    }
}

/// A chunk for the legacy `LLM::stream`: the raw chunk, its text (empty for
/// role, tool-call and usage chunks) and its usage.
pub(super) fn stream_data(chunk: &ChatChunk) -> StreamData {
    StreamData::new(
        serde_json::to_value(chunk).unwrap_or(Value::Null),
        chunk.usage.map(token_usage),
        chunk.content().unwrap_or_default(),
    )
}

/// Merges `options` into `params` as langchain-rust's `merge_options` merges
/// two `CallOptions`: a set scalar replaces, lists are appended.
/// `streaming_func` is taken out by the caller, which keeps it.
pub(super) fn merge_call_options(params: &mut ChatOptions, options: CallOptions) {
    // Destructured without `..`: a field added to `CallOptions` by a new
    // langchain-rust fails to compile here instead of being dropped silently.
    let CallOptions {
        candidate_count,
        max_tokens,
        temperature,
        stop_words,
        streaming_func: _,
        top_k,
        top_p,
        seed,
        min_length,
        max_length,
        n,
        repetition_penalty,
        frequency_penalty,
        presence_penalty,
        functions,
        function_call_behavior,
        response_format,
        stream_usage,
    } = options;

    if max_tokens.is_some() {
        params.max_tokens = max_tokens;
    }
    if temperature.is_some() {
        params.temperature = temperature;
    }
    if top_p.is_some() {
        params.top_p = top_p;
    }
    if frequency_penalty.is_some() {
        params.frequency_penalty = frequency_penalty;
    }
    if presence_penalty.is_some() {
        params.presence_penalty = presence_penalty;
    }
    if let Some(seed) = seed {
        params.seed = Some(u64::try_from(seed).unwrap_or(u64::MAX));
    }
    // `candidate_count` is another provider's name for `n`.
    if let Some(n) = n.or(candidate_count) {
        params.n = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if stream_usage.is_some() {
        params.stream_usage = stream_usage;
    }
    if let Some(words) = stop_words {
        let stop = params.stop.get_or_insert_with(Vec::new);
        for word in words {
            if !word.is_empty() && !stop.contains(&word) {
                stop.push(word);
            }
        }
    }
    if let Some(functions) = functions {
        let tools = params.tools.get_or_insert_with(Vec::new);
        for tool in functions.into_iter().map(tool) {
            // An agent rebuilt on a clone offers its tools again: replace,
            // since a request must not name a function twice.
            match tools
                .iter_mut()
                .find(|t| t.function.name == tool.function.name)
            {
                Some(existing) => *existing = tool,
                None => tools.push(tool),
            }
        }
    }
    if let Some(behavior) = function_call_behavior {
        params.tool_choice = Some(match behavior {
            FunctionCallBehavior::None => ToolChoice::None,
            FunctionCallBehavior::Auto => ToolChoice::Auto,
            FunctionCallBehavior::Named(name) => ToolChoice::Function(name),
        });
    }
    if let Some(format) = response_format {
        params.response_format = Some(response_format_of(format));
    }

    let unsupported: Vec<&str> = [
        ("top_k", top_k.is_some()),
        ("min_length", min_length.is_some()),
        ("max_length", max_length.is_some()),
        ("repetition_penalty", repetition_penalty.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if !unsupported.is_empty() {
        tracing::warn!(
            options = ?unsupported,
            "ignoring call options the OpenAI-compatible API does not have"
        );
    }
}

fn tool(function: LcFunction) -> Tool {
    Tool {
        kind: "function".into(),
        function: FunctionDefinition {
            name: function.name,
            description: (!function.description.is_empty()).then_some(function.description),
            parameters: Some(function.parameters),
        },
    }
}

fn response_format_of(format: LcResponseFormat) -> ResponseFormat {
    match format {
        LcResponseFormat::Text => ResponseFormat::Text,
        LcResponseFormat::JsonObject => ResponseFormat::JsonObject,
        LcResponseFormat::JsonSchema {
            description,
            name,
            schema,
            strict,
        } => {
            // The API requires a schema; an empty one accepts any JSON.
            let mut spec = json!({"name": name, "schema": schema.unwrap_or_else(|| json!({}))});
            if let Some(description) = description {
                spec["description"] = json!(description);
            }
            if let Some(strict) = strict {
                spec["strict"] = json!(strict);
            }
            ResponseFormat::JsonSchema(spec)
        }
    }
}
