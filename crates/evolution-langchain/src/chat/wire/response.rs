//! What comes back: complete replies, stream chunks and token usage.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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
    /// A breakdown of `completion_tokens` (e.g. the reasoning share), when
    /// the server sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    /// A breakdown of `prompt_tokens` (e.g. served from cache), when the
    /// server sent one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

impl Usage {
    /// Tokens a reasoning model spent thinking, when reported.
    pub fn reasoning_tokens(&self) -> Option<u32> {
        self.completion_tokens_details?.reasoning_tokens
    }

    /// Prompt tokens served from the prefix cache, when reported.
    pub fn cached_tokens(&self) -> Option<u32> {
        self.prompt_tokens_details?.cached_tokens
    }

    /// What the call cost against a tokens-per-minute limit: the total, or
    /// the prompt's count when a server (embeddings, rerank) leaves the
    /// total out.
    pub(crate) fn charged(&self) -> u32 {
        self.total_tokens.max(self.prompt_tokens)
    }
}

/// `usage.completion_tokens_details`; each count `None` when not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CompletionTokensDetails {
    /// Tokens spent on reasoning (thinking), part of `completion_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u32>,
    /// Audio tokens generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u32>,
    /// Predicted-output tokens that were used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted_prediction_tokens: Option<u32>,
    /// Predicted-output tokens that were not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_prediction_tokens: Option<u32>,
}

/// `usage.prompt_tokens_details`; each count `None` when not reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the prefix cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u32>,
    /// Audio tokens in the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_tokens: Option<u32>,
}

/// Adds counts that either side reported (unreported + unreported stays
/// unreported).
fn add_counts(total: &mut Option<u32>, other: Option<u32>) {
    if let Some(other) = other {
        *total = Some(total.unwrap_or(0).saturating_add(other));
    }
}

impl std::ops::AddAssign for CompletionTokensDetails {
    fn add_assign(&mut self, other: Self) {
        add_counts(&mut self.reasoning_tokens, other.reasoning_tokens);
        add_counts(&mut self.audio_tokens, other.audio_tokens);
        add_counts(
            &mut self.accepted_prediction_tokens,
            other.accepted_prediction_tokens,
        );
        add_counts(
            &mut self.rejected_prediction_tokens,
            other.rejected_prediction_tokens,
        );
    }
}

impl std::ops::AddAssign for PromptTokensDetails {
    fn add_assign(&mut self, other: Self) {
        add_counts(&mut self.cached_tokens, other.cached_tokens);
        add_counts(&mut self.audio_tokens, other.audio_tokens);
    }
}

fn add_details<T: std::ops::AddAssign + Default + Copy>(total: &mut Option<T>, other: Option<T>) {
    if let Some(other) = other {
        *total.get_or_insert_with(T::default) += other;
    }
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
        add_details(
            &mut self.completion_tokens_details,
            other.completion_tokens_details,
        );
        add_details(&mut self.prompt_tokens_details, other.prompt_tokens_details);
    }
}

/// The assistant's message in a reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Reasoning text, for models that return it separately, under the
    /// name most servers use (vLLM before 0.10, SGLang, DeepSeek).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Reasoning text under newer vLLM's name. Some servers send both
    /// names with the same text; read [`reasoning`](Self::reasoning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// Fields the server sent that this type does not name.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ResponseMessage {
    /// The reasoning text, whichever name the server used for it
    /// (`reasoning_content` first), `None` when there is none.
    pub fn reasoning(&self) -> Option<&str> {
        either_reasoning(&self.reasoning_content, &self.reasoning)
    }
}

/// The first non-empty of the two reasoning fields.
fn either_reasoning<'a>(content: &'a Option<String>, newer: &'a Option<String>) -> Option<&'a str> {
    content
        .as_deref()
        .filter(|t| !t.is_empty())
        .or_else(|| newer.as_deref().filter(|t| !t.is_empty()))
}

/// One of the `n` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// Position among the choices.
    #[serde(default)]
    pub index: u32,
    /// The answer.
    pub message: ResponseMessage,
    /// Why generation stopped: `stop`, `length`, `tool_calls`, …
    #[serde(default)]
    pub finish_reason: Option<String>,
    /// Fields the server sent that this type does not name (e.g. `logprobs`,
    /// vLLM's `stop_reason`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Fields the server sent that this type does not name (e.g. `object`,
    /// `system_fingerprint`, `prompt_logprobs`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
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

    /// The first choice's reasoning text, whichever field the server put it
    /// in (`reasoning_content` or `reasoning`).
    pub fn reasoning(&self) -> Option<&str> {
        self.choices.first().and_then(|c| c.message.reasoning())
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
    /// New reasoning text (most servers' name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// New reasoning text (newer vLLM's name); read
    /// [`reasoning_text`](Self::reasoning_text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// New tool-call fragments.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tool_calls: Vec<ToolCallDelta>,
}

impl Delta {
    /// The new reasoning text, whichever name the server used.
    pub fn reasoning_text(&self) -> Option<&str> {
        either_reasoning(&self.reasoning_content, &self.reasoning)
    }
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
///
/// Chunks are the hot path of streaming, so unknown fields are kept at the
/// top level only (in [`extra`](Self::extra)); a choice's or delta's
/// unknown fields are skipped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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
    /// Fields the server sent that this type does not name (e.g. `object`,
    /// `system_fingerprint`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatChunk {
    /// New reasoning text for the first choice (models that stream their
    /// reasoning separately), if this chunk brings any.
    pub fn reasoning(&self) -> Option<&str> {
        self.first_delta_text(Delta::reasoning_text)
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
