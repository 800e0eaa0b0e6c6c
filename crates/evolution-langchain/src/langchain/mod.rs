//! langchain-rust integration (feature `langchain`, on by default):
//! [`EvolutionInference`] is an [`LLM`] and [`EvolutionEmbeddings`] an
//! [`Embedder`], so chains, agents, memory, caches and vector stores take
//! them as they are.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use evolution_langchain::langchain_rust::chain::options::ChainCallOptions;
//! use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder};
//! use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
//! use evolution_langchain::langchain_rust::{fmt_template, message_formatter, prompt_args, template_fstring};
//! use evolution_langchain::EvolutionInference;
//!
//! let llm = EvolutionInference::from_env()?;
//! let prompt = message_formatter![fmt_template!(HumanMessagePromptTemplate::new(
//!     template_fstring!("Name a dish from {country}.", "country")
//! ))];
//! let chain = LLMChainBuilder::new()
//!     .prompt(prompt)
//!     .llm(llm.clone()) // clones share the connection pool and the token cache
//!     .options(ChainCallOptions::new().with_top_p(0.9))
//!     .build()?;
//! println!("{}", chain.invoke(prompt_args! {"country" => "Peru"}).await?);
//! # Ok(()) }
//! ```
//!
//! `EvolutionInference` has inherent `invoke`, `generate` and `stream`
//! methods with other signatures; method-call syntax picks those. Call the
//! trait's with `LLM::generate(&llm, &messages)`, or through `Box<dyn LLM>`.
//!
//! # `CallOptions`
//!
//! [`LLM::add_options`] merges the way langchain-rust's own `merge_options`
//! does (a set scalar replaces, lists are appended) into the client's
//! [`ChatOptions`]:
//!
//! | `CallOptions` field | request field |
//! |---|---|
//! | `max_tokens` | `max_tokens` |
//! | `temperature` | `temperature` |
//! | `top_p` | `top_p` |
//! | `frequency_penalty`, `presence_penalty` | the same |
//! | `stop_words` | `stop` (appended, duplicates dropped) |
//! | `seed` | `seed` |
//! | `n`, else `candidate_count` | `n` (`generate` returns the first choice; [`EvolutionInference::chat`] returns all) |
//! | `functions` | `tools` (appended; a function with the same name is replaced) |
//! | `function_call_behavior` | `tool_choice`: `None` → `"none"`, `Auto` → `"auto"`, `Named` → `{"type":"function",…}` |
//! | `response_format` | `response_format` (`text`, `json_object`, `json_schema`) |
//! | `stream_usage` | `stream_options.include_usage` on streamed requests |
//! | `streaming_func` | not sent: `generate` streams and calls it with each piece of text |
//! | `top_k`, `min_length`, `max_length`, `repetition_penalty` | none: the OpenAI-compatible API has no such fields; ignored with a warning |
//!
//! Values out of range (e.g. `temperature` 3) are reported by the next call
//! as [`Error::Config`].
//!
//! # Errors
//!
//! [`Error`] becomes [`LLMError::ParsingError`] when the server's reply was
//! not a valid chat completion ([`Error::InvalidResponse`]) and
//! [`LLMError::OtherError`] otherwise, with our message unchanged in both
//! (it names the cause and the remedy). Embedding errors become
//! `EmbedderError::HttpError`; its `From<Error>` impl says with which status.

mod convert;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Stream, StreamExt};
use langchain_rust::embedding::EmbedderError;
use langchain_rust::language_models::options::CallOptions;
use langchain_rust::language_models::{GenerateResult, LLMError, LLMEvent, LLMEventStream};
use langchain_rust::schemas::{Message, StreamData};

pub use langchain_rust::embedding::Embedder;
pub use langchain_rust::language_models::llm::LLM;

use crate::chat::wire::{ChatMessage, ChatResponse};
use crate::chat::EvolutionInference;
use crate::chat::{ChatOptions, StreamAccumulator};
use crate::embeddings::EvolutionEmbeddings;
use crate::error::{AuthError, Error};

/// The type of `CallOptions::streaming_func`.
pub(crate) type StreamingFunc = Arc<
    tokio::sync::Mutex<
        dyn FnMut(String) -> Pin<Box<dyn Future<Output = Result<(), ()>> + Send>> + Send,
    >,
>;

/// Chat completions as a langchain-rust LLM.
///
/// - `generate` sends one request (streamed when a `streaming_func` is set
///   or the client was built with `streaming(true)`) and returns the first
///   choice's text, its tool calls and the token usage.
/// - `stream` and `generate_stream` stream for real: text as the model
///   writes it; `generate_stream` ends with `Done` carrying the whole
///   answer, tool calls joined from their fragments, and usage.
/// - `add_options` maps every `CallOptions` field that exists on the wire;
///   see the [module docs](self) for the table.
/// - Errors: see the [module docs](self#errors).
#[async_trait]
impl LLM for EvolutionInference {
    async fn generate(&self, messages: &[Message]) -> Result<GenerateResult, LLMError> {
        let messages = convert::chat_messages(messages)?;
        let response = match &self.streaming_func {
            Some(func) => self.chat_with_streaming_func(&messages, func).await?,
            None => self.chat(&messages, &ChatOptions::default()).await?,
        };
        convert::generate_result(response)
    }

    async fn stream(
        &self,
        messages: &[Message],
    ) -> Result<Pin<Box<dyn Stream<Item = Result<StreamData, LLMError>> + Send>>, LLMError> {
        let messages = convert::chat_messages(messages)?;
        let chunks = self.stream_chat(&messages, &ChatOptions::default()).await?;
        Ok(Box::pin(chunks.map(|chunk| {
            chunk.map(|c| convert::stream_data(&c)).map_err(Into::into)
        })))
    }

    fn generate_stream<'a>(&'a self, messages: &'a [Message]) -> LLMEventStream<'a> {
        llm_events(async_stream::try_stream! {
            let messages = convert::chat_messages(messages)?;
            let mut chunks = self.stream_chat(&messages, &ChatOptions::default()).await?;
            let mut answer = StreamAccumulator::default();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                answer.push(&chunk);
                if let Some(text) = chunk.content() {
                    yield LLMEvent::Text(text.to_string());
                }
            }
            yield LLMEvent::Done(convert::generate_result(answer.finish())?);
        })
    }

    fn add_options(&mut self, mut options: CallOptions) {
        if let Some(func) = options.streaming_func.take() {
            self.streaming_func = Some(func);
        }
        convert::merge_call_options(&mut self.options, options);
    }
}

impl EvolutionInference {
    /// Streams the answer, handing each piece of text to `func` as it
    /// arrives, and assembles the whole response. A failing `func` stops the
    /// generation: it is how a consumer says it no longer wants the text.
    async fn chat_with_streaming_func(
        &self,
        messages: &[ChatMessage],
        func: &StreamingFunc,
    ) -> Result<ChatResponse, LLMError> {
        let mut chunks = self.stream_chat(messages, &ChatOptions::default()).await?;
        let mut answer = StreamAccumulator::default();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk?;
            answer.push(&chunk);
            if let Some(text) = chunk.content() {
                let mut func = func.lock().await;
                if func(text.to_string()).await.is_err() {
                    return Err(LLMError::OtherError(
                        "streaming_func failed; generation stopped".into(),
                    ));
                }
            }
        }
        Ok(answer.finish())
    }
}

/// Pins the item type of a `try_stream!` block so that `?` knows to convert
/// into `LLMError`.
fn llm_events<'a, S>(events: S) -> LLMEventStream<'a>
where
    S: Stream<Item = Result<LLMEvent, LLMError>> + Send + 'a,
{
    Box::pin(events)
}

/// `InvalidResponse` → `ParsingError`, everything else → `OtherError`; the
/// message is ours, unchanged.
impl From<Error> for LLMError {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidResponse { .. } => LLMError::ParsingError(error.to_string()),
            other => LLMError::OtherError(other.to_string()),
        }
    }
}

/// Vectors from `/embeddings` as a langchain-rust embedder (`f32` widened to
/// `f64`; long document lists are split into several requests).
#[async_trait]
impl Embedder for EvolutionEmbeddings {
    async fn embed_documents(&self, documents: &[String]) -> Result<Vec<Vec<f64>>, EmbedderError> {
        let vectors = self.embed_many(documents).await?;
        Ok(vectors.into_iter().map(widen).collect())
    }

    async fn embed_query(&self, text: &str) -> Result<Vec<f64>, EmbedderError> {
        Ok(widen(self.embed(text).await?))
    }
}

fn widen(vector: Vec<f32>) -> Vec<f64> {
    vector.into_iter().map(f64::from).collect()
}

/// Always [`EmbedderError::HttpError`] with our message unchanged, since
/// `EmbedderError` has no variant for a message alone. `status_code` is the
/// server's status when there was one; otherwise the status a gateway would
/// report for the same failure: 504 for a timeout, 400 for a configuration
/// error (nothing was sent), 502 for a failed connection or an invalid reply.
impl From<Error> for EmbedderError {
    fn from(error: Error) -> Self {
        let status = error.status().unwrap_or(match &error {
            Error::Timeout { .. } | Error::Auth(AuthError::Timeout { .. }) => 504,
            Error::Config { .. } => 400,
            _ => 502,
        });
        EmbedderError::HttpError {
            status_code: reqwest::StatusCode::from_u16(status)
                .unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
            error_message: error.to_string(),
        }
    }
}
