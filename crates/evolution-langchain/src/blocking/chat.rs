//! Blocking `EvolutionInference`, its builder, and iterators over streams
//! and batches.

use std::borrow::Borrow;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{call, wait};
use crate::auth::TokenManager;
use crate::builder::ClientBuilder;
use crate::chat::wire::{ChatChunk, ChatMessage, ChatRequest, ChatResponse};
use crate::chat::{BatchError, ChatOptions, ChatSettings, Extracted, LLMResult, OutputSchema};
use crate::error::Result;
use crate::flavor::{Async, Blocking};
use crate::models::ModelInfo;

/// Blocking counterpart of [`crate::EvolutionInference`]: the same calls,
/// returning when the answer is complete. Cloning shares the connection pool
/// and the token cache.
#[derive(Debug, Clone)]
pub struct EvolutionInference {
    inner: crate::chat::EvolutionInference,
}

/// Blocking counterpart of [`crate::EvolutionInferenceBuilder`]: the same
/// type and setters; `build` returns the blocking client.
pub type EvolutionInferenceBuilder = crate::chat::EvolutionInferenceBuilder<Blocking>;

impl ClientBuilder<ChatSettings, Blocking> {
    /// Checks every setting and creates the blocking client.
    pub fn build(self) -> Result<EvolutionInference> {
        Ok(EvolutionInference {
            inner: self.build_async()?,
        })
    }
}

impl ClientBuilder<ChatSettings, Async> {
    /// Checks the settings and creates a [blocking](EvolutionInference) client
    /// (the same as building through [`EvolutionInference::builder`]).
    pub fn build_blocking(self) -> Result<EvolutionInference> {
        self.into_flavor::<Blocking>().build()
    }
}

impl EvolutionInference {
    /// A builder with the same settings as [`crate::EvolutionInferenceBuilder`].
    pub fn builder() -> EvolutionInferenceBuilder {
        EvolutionInferenceBuilder::default()
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// Wraps an async client, sharing its pool and token cache.
    pub fn from_async(inner: crate::chat::EvolutionInference) -> Self {
        Self { inner }
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::chat::EvolutionInference {
        &self.inner
    }

    /// See [`crate::EvolutionInference::options`].
    pub fn options(&self) -> &ChatOptions {
        self.inner.options()
    }

    /// See [`crate::EvolutionInference::options_mut`].
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        self.inner.options_mut()
    }

    /// See [`crate::EvolutionInference::model`].
    pub fn model(&self) -> &str {
        self.inner.model()
    }

    /// See [`crate::EvolutionInference::base_url`].
    pub fn base_url(&self) -> &str {
        self.inner.base_url()
    }

    /// See [`crate::EvolutionInference::token_manager`] (the async manager;
    /// wrap it with [`super::TokenManager::from_async`] for blocking calls).
    pub fn token_manager(&self) -> Option<&TokenManager> {
        self.inner.token_manager()
    }

    /// `"cloud-ru-tech"`.
    pub fn llm_type(&self) -> &'static str {
        self.inner.llm_type()
    }

    /// See [`crate::EvolutionInference::batch_permit`]: blocks until a
    /// place in the window is free.
    pub fn batch_permit(&self) -> Result<crate::BatchPermit> {
        call!(self, |llm| async move { Ok(llm.batch_permit().await) })
    }

    /// See [`crate::EvolutionInference::throttle_stats`].
    pub fn throttle_stats(&self) -> crate::ThrottleStats {
        self.inner.throttle_stats()
    }

    /// See [`crate::EvolutionInference::identifying_params`].
    pub fn identifying_params(&self) -> Value {
        self.inner.identifying_params()
    }

    /// See [`crate::EvolutionInference::invoke`].
    pub fn invoke(&self, prompt: &str) -> Result<String> {
        let prompt = prompt.to_string();
        call!(self, |llm| llm.invoke(&prompt))
    }

    /// See [`crate::EvolutionInference::chat`].
    pub fn chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatResponse> {
        let (messages, options) = (messages.as_ref().to_vec(), options.borrow().clone());
        call!(self, |llm| llm.chat(messages, options))
    }

    /// See [`crate::EvolutionInference::build_request`].
    pub fn build_request(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        stream: bool,
    ) -> Result<ChatRequest> {
        self.inner.build_request(messages, options, stream)
    }

    /// See [`crate::EvolutionInference::extract`]: the answer as a `T`.
    pub fn extract<T>(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned + Send + 'static,
    {
        let (messages, options) = (messages.as_ref().to_vec(), options.borrow().clone());
        call!(self, |llm| llm.extract::<T>(messages, options))
    }

    /// See [`crate::EvolutionInference::extract_prompt`].
    pub fn extract_prompt<T>(&self, prompt: &str) -> Result<T>
    where
        T: JsonSchema + DeserializeOwned + Send + 'static,
    {
        let prompt = prompt.to_string();
        call!(self, |llm| llm.extract_prompt::<T>(&prompt))
    }

    /// See [`crate::EvolutionInference::extract_with_schema`].
    pub fn extract_with_schema(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
        schema: &OutputSchema,
    ) -> Result<Extracted<Value>> {
        let (messages, options, schema) = (
            messages.as_ref().to_vec(),
            options.borrow().clone(),
            schema.clone(),
        );
        call!(self, |llm| llm
            .extract_with_schema(messages, options, &schema))
    }

    /// See [`crate::EvolutionInference::send_request`].
    pub fn send_request(&self, request: ChatRequest) -> Result<ChatResponse> {
        call!(self, |llm| llm.send_request(request))
    }

    /// See [`crate::EvolutionInference::stream_request`].
    pub fn stream_request(&self, request: ChatRequest) -> Result<ChatStream> {
        let inner = call!(self, |llm| llm.stream_request(request))?;
        Ok(ChatStream { inner: Some(inner) })
    }

    /// See [`crate::EvolutionInference::invoke_batch`]. If the facade's
    /// runtime cannot run the batch, every prompt fails with that error.
    pub fn invoke_batch<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: impl Borrow<ChatOptions>,
    ) -> std::result::Result<LLMResult, BatchError> {
        let prompts: Vec<String> = prompts.iter().map(|p| p.as_ref().to_string()).collect();
        let (llm, options, total) = (self.inner.clone(), options.borrow().clone(), prompts.len());
        match wait(async move { llm.invoke_batch(&prompts, options).await }) {
            Ok(outcome) => outcome,
            Err(_) if total == 0 => Ok(LLMResult::default()),
            Err(error) => Err(BatchError {
                partial: LLMResult {
                    generations: vec![Vec::new(); total],
                    ..LLMResult::default()
                },
                failures: (0..total).map(|index| (index, error.clone())).collect(),
                total,
            }),
        }
    }

    /// See [`crate::EvolutionInference::batch`]. If the facade's runtime
    /// cannot run the batch, every conversation fails with that error.
    pub fn batch(
        &self,
        conversations: Vec<Vec<ChatMessage>>,
        options: impl Borrow<ChatOptions>,
    ) -> Vec<Result<ChatResponse>> {
        let (llm, options, total) = (
            self.inner.clone(),
            options.borrow().clone(),
            conversations.len(),
        );
        match wait(async move { llm.batch(conversations, options).await }) {
            Ok(outcomes) => outcomes,
            Err(error) => (0..total).map(|_| Err(error.clone())).collect(),
        }
    }

    /// See [`crate::EvolutionInference::batch_unordered`]: `(index, outcome)`
    /// pairs from an iterator, as each call finishes.
    pub fn batch_unordered(
        &self,
        conversations: Vec<Vec<ChatMessage>>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<BatchResults> {
        use futures::StreamExt;
        let (llm, options) = (self.inner.clone(), options.borrow().clone());
        // Bounded: finished answers wait here only as long as the reader lags.
        let (sender, receiver) = tokio::sync::mpsc::channel(self.inner.max_concurrency);
        super::runtime()?.spawn(async move {
            let mut outcomes = std::pin::pin!(llm.batch_unordered(conversations, options));
            while let Some(outcome) = outcomes.next().await {
                if sender.send(outcome).await.is_err() {
                    return; // the reader is gone
                }
            }
        });
        Ok(BatchResults { receiver })
    }

    /// See [`crate::EvolutionInference::stream`]; chunks come from an iterator.
    pub fn stream(&self, prompt: &str) -> Result<ChatStream> {
        self.stream_chat([ChatMessage::user(prompt)], ChatOptions::default())
    }

    /// See [`crate::EvolutionInference::stream_chat`].
    pub fn stream_chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatStream> {
        let (messages, options) = (messages.as_ref().to_vec(), options.borrow().clone());
        let inner = call!(self, |llm| llm.stream_chat(messages, options))?;
        Ok(ChatStream { inner: Some(inner) })
    }

    /// See [`crate::EvolutionInference::list_models`].
    pub fn list_models(&self) -> Result<Vec<ModelInfo>> {
        call!(self, |llm| llm.list_models())
    }
}

/// A streamed answer read by blocking the calling thread for each chunk.
#[derive(Debug)]
pub struct ChatStream {
    /// Taken while a chunk is being read on the runtime.
    inner: Option<crate::ChatStream>,
}

impl ChatStream {
    /// Reads the rest of the stream and assembles the whole response.
    pub fn collect_response(mut self) -> Result<ChatResponse> {
        let stream = self
            .inner
            .take()
            .expect("a stream is read by one call at a time");
        wait(stream.collect_response())?
    }
}

impl Iterator for ChatStream {
    type Item = Result<ChatChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt;
        let mut stream = self.inner.take()?;
        match wait(async move {
            let item = stream.next().await;
            (item, stream)
        }) {
            Ok((item, stream)) => {
                self.inner = Some(stream);
                item
            }
            Err(error) => Some(Err(error)),
        }
    }
}

/// The outcomes of [`EvolutionInference::batch_unordered`] as they finish.
#[derive(Debug)]
pub struct BatchResults {
    receiver: tokio::sync::mpsc::Receiver<(usize, Result<ChatResponse>)>,
}

impl Iterator for BatchResults {
    type Item = (usize, Result<ChatResponse>);

    fn next(&mut self) -> Option<Self::Item> {
        // A plain park, like `wait`: allowed on every thread.
        futures::executor::block_on(self.receiver.recv())
    }
}
