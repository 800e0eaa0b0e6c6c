//! What comes back: complete replies, stream chunks and token usage.

use serde::{Deserialize, Serialize};

use super::{null_as_empty, ToolCall};

/// Token counts of one call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub prompt_tokens: u32,
    /// Tokens generated.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub total_tokens: u32,
}

/// Some servers send `null` for counts they do not track.
fn null_as_zero<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    Ok(Option::<u32>::deserialize(deserializer)?.unwrap_or_default())
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

impl Choice {
    /// The answer this choice gives, deciding once for the whole crate what
    /// counts as one: its text when it has any; `""` when it has none but
    /// called tools or says why it stopped (`length` when a reasoning model
    /// spent its budget thinking, `content_filter`, …); `None` when it has
    /// neither text nor tool calls nor a finish reason, which is no answer
    /// at all. `invoke`, `chat`, batches, streams and the langchain `LLM` all
    /// apply this rule, so streaming on or off never changes the outcome.
    pub fn answer(&self) -> Option<&str> {
        match self.message.content.as_deref() {
            Some(text) if !text.is_empty() => Some(text),
            _ if !self.message.tool_calls.is_empty() || self.finish_reason.is_some() => Some(""),
            _ => None,
        }
    }
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
    /// Token counts, when the server reported them.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The first choice's [answer](Choice::answer), `None` when the reply
    /// has no choice or its first choice no answer.
    pub fn answer(&self) -> Option<&str> {
        self.choices.first().and_then(Choice::answer)
    }

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
        self.first_delta_text(|delta| delta.reasoning_content.as_deref())
    }

    /// New text for the first choice, if this chunk brings any.
    pub fn content(&self) -> Option<&str> {
        self.first_delta_text(|delta| delta.content.as_deref())
    }

    fn first_delta_text<'a>(
        &'a self,
        field: impl Fn(&'a Delta) -> Option<&'a str>,
    ) -> Option<&'a str> {
        self.choices
            .iter()
            .find(|c| c.index == 0)
            .and_then(|c| field(&c.delta))
            .filter(|text| !text.is_empty())
    }
}
