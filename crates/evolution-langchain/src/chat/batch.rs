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
use crate::transport::throttle::BatchPermit;

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

/// The result of [`EvolutionInference::invoke_batch`]: for each prompt, in
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

/// The generations in a response: each choice's [answer](super::wire::Choice::answer).
pub(crate) fn generations(response: &ChatResponse) -> Vec<Generation> {
    response
        .choices
        .iter()
        .map(|choice| Generation {
            text: choice.answer().unwrap_or_default().to_string(),
            finish_reason: choice.finish_reason.clone(),
            tool_calls: choice.message.tool_calls.clone(),
        })
        .collect()
}

/// Some prompts of [`EvolutionInference::invoke_batch`] failed. Nothing that
/// succeeded is lost: `partial` holds every answer, with an empty entry for
/// each failed prompt, so only those need to run again. With `?` it becomes
/// [`Error::Batch`] (without the partial result).
#[derive(Debug, Clone)]
pub struct BatchError {
    /// Every prompt's choices in order; an empty list for a failed prompt.
    pub partial: LLMResult,
    /// Each failed prompt's position and error, in order.
    pub failures: Vec<(usize, Error)>,
    /// How many prompts there were.
    pub total: usize,
}

impl BatchError {
    /// The first failure's position and error.
    pub fn first(&self) -> (usize, &Error) {
        let (index, error) = &self.failures[0];
        (*index, error)
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (index, first) = self.first();
        write!(
            f,
            "{} of {} prompts failed; the first (prompt {index}): {first}",
            self.failures.len(),
            self.total
        )
    }
}

impl std::error::Error for BatchError {}

impl From<BatchError> for Error {
    fn from(error: BatchError) -> Self {
        let total = error.total;
        let failed = error.failures.len();
        let (index, first) = error
            .failures
            .into_iter()
            .next()
            .expect("a batch error has a failure");
        Error::Batch {
            failed,
            total,
            index,
            first: Box::new(first),
        }
    }
}

impl EvolutionInference {
    /// Answers each prompt (as one user message) with at most
    /// `max_concurrency` requests in flight, in order. If any prompt fails
    /// the error still carries every answer that succeeded;
    /// [`batch`](Self::batch) returns each prompt's own outcome instead.
    pub async fn invoke_batch<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: impl Borrow<ChatOptions>,
    ) -> Result<LLMResult, BatchError> {
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
        if failures.is_empty() {
            Ok(result)
        } else {
            Err(BatchError {
                partial: result,
                failures,
                total,
            })
        }
    }

    /// Sends every conversation, at most `max_concurrency` at a time, and
    /// returns each outcome in input order: one failure costs nothing else.
    /// The number in flight adapts: it halves when the server answers
    /// `429`, `503` or times out, and grows back with successes (see
    /// [`throttle_stats`](Self::throttle_stats)).
    pub async fn batch(
        &self,
        conversations: Vec<Vec<ChatMessage>>,
        options: impl Borrow<ChatOptions>,
    ) -> Vec<Result<ChatResponse>> {
        let options = options.borrow();
        futures::stream::iter(conversations)
            .map(|messages| async move {
                let _place = self.batch_permit().await;
                self.chat(&messages, options).await
            })
            .buffered(self.max_concurrency)
            .collect()
            .await
    }

    /// Like [`batch`](Self::batch), yielding `(index, outcome)` as each call
    /// finishes, so results can be saved one by one. Conversations are taken
    /// from `conversations` only as slots free up, so an iterator over a
    /// large input is never held in memory whole.
    pub fn batch_unordered<'a, I>(
        &'a self,
        conversations: I,
        options: impl Borrow<ChatOptions>,
    ) -> impl Stream<Item = (usize, Result<ChatResponse>)> + Send + 'a
    where
        I: IntoIterator<Item = Vec<ChatMessage>>,
        I::IntoIter: Send + 'a,
    {
        let options = Arc::new(options.borrow().clone());
        futures::stream::iter(conversations.into_iter().enumerate())
            .map(move |(index, messages)| {
                let options = Arc::clone(&options);
                async move {
                    let _place = self.batch_permit().await;
                    (index, self.chat(&messages, &*options).await)
                }
            })
            .buffer_unordered(self.max_concurrency)
    }

    /// Waits for a place in the adaptive batch window, for a batch loop of
    /// your own (the batch methods here take one per call): at most
    /// `max_concurrency` places, fewer while the server shows overload
    /// (`429`, `503`, timeouts), growing back with successes. Hold the
    /// permit for the duration of one call.
    ///
    /// ```no_run
    /// # async fn run(llm: evolution_langchain::EvolutionInference) -> evolution_langchain::Result<()> {
    /// for prompt in ["a", "b"] {
    ///     let _place = llm.batch_permit().await;
    ///     println!("{}", llm.invoke(prompt).await?);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn batch_permit(&self) -> BatchPermit {
        self.transport
            .pipeline
            .throttle
            .permit(self.max_concurrency)
            .await
    }
}
