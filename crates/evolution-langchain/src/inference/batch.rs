//! Many prompts at once: bounded concurrency, answers kept in prompt order,
//! nothing lost when some fail.

use std::borrow::Borrow;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::client::EvolutionInference;
use super::options::ChatOptions;
use super::wire::{ChatMessage, ChatResponse, ToolCall, Usage};
use crate::error::{Error, Result};

/// One generated answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The text.
    pub text: String,
    /// Why generation stopped.
    pub finish_reason: Option<String>,
    /// Tool calls the model made.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
}

/// The result of [`EvolutionInference::generate`]: for each prompt, in
/// order, its choices; and the usage of all calls together.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LLMResult {
    /// `generations[i]` holds the choices for prompt `i` (`n` of them).
    pub generations: Vec<Vec<Generation>>,
    /// Token usage summed over every call.
    pub usage: Usage,
}

impl LLMResult {
    /// The first choice's text for each prompt.
    pub fn texts(&self) -> Vec<&str> {
        self.generations
            .iter()
            .map(|g| g.first().map_or("", |g| g.text.as_str()))
            .collect()
    }
}

/// The generations in a response.
pub(crate) fn generations(response: &ChatResponse) -> Vec<Generation> {
    response
        .choices
        .iter()
        .map(|choice| Generation {
            text: choice.message.content.clone().unwrap_or_default(),
            finish_reason: choice.finish_reason.clone(),
            tool_calls: choice.message.tool_calls.clone(),
        })
        .collect()
}

impl EvolutionInference {
    /// Answers each prompt (as one user message) with at most
    /// `max_concurrency` requests in flight. If any prompt fails the result is
    /// [`Error::Batch`], which still carries every answer that succeeded;
    /// [`batch`](Self::batch) returns each prompt's own outcome instead.
    pub async fn generate<S: AsRef<str>>(&self, prompts: &[S]) -> Result<LLMResult> {
        self.generate_with_options(prompts, &ChatOptions::default())
            .await
    }

    /// [`generate`](Self::generate) with per-call overrides (e.g. `stop`).
    pub async fn generate_with_options<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: impl Borrow<ChatOptions>,
    ) -> Result<LLMResult> {
        let options = options.borrow();
        let conversations = prompts
            .iter()
            .map(|p| vec![ChatMessage::user(p.as_ref())])
            .collect();
        let outcomes = self.batch(conversations, options).await;
        let total = outcomes.len();
        let mut failures = Vec::new();
        let mut result = LLMResult::default();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(response) => {
                    if let Some(usage) = response.usage {
                        result.usage += usage;
                    }
                    result.generations.push(generations(&response));
                }
                Err(error) => {
                    result.generations.push(Vec::new());
                    failures.push((index, error));
                }
            }
        }
        if let Some((index, first)) = failures.first().cloned() {
            return Err(Error::Batch {
                partial: Box::new(result),
                failed: failures.len(),
                total,
                index,
                first: Box::new(first),
            });
        }
        Ok(result)
    }

    /// Sends every conversation, at most `max_concurrency` at a time, and
    /// returns each outcome in input order: one failure costs nothing else.
    pub async fn batch(
        &self,
        conversations: Vec<Vec<ChatMessage>>,
        options: impl Borrow<ChatOptions>,
    ) -> Vec<Result<ChatResponse>> {
        let options = options.borrow();
        futures::stream::iter(conversations)
            .map(|messages| async move { self.chat(&messages, options).await })
            .buffered(self.max_concurrency)
            .collect()
            .await
    }

    /// Like [`batch`](Self::batch), yielding `(index, outcome)` as each call
    /// finishes, so results can be saved one by one.
    pub fn batch_unordered<'a>(
        &'a self,
        conversations: Vec<Vec<ChatMessage>>,
        options: impl Borrow<ChatOptions>,
    ) -> impl Stream<Item = (usize, Result<ChatResponse>)> + Send + 'a {
        let options = Arc::new(options.borrow().clone());
        futures::stream::iter(conversations.into_iter().enumerate())
            .map(move |(index, messages)| {
                let options = Arc::clone(&options);
                async move { (index, self.chat(&messages, &*options).await) }
            })
            .buffer_unordered(self.max_concurrency)
    }
}
