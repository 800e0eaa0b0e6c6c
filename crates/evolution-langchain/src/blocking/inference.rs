//! Blocking `EvolutionInference`, its builder, and an iterator over a stream.

use std::borrow::Borrow;
use std::time::Duration;

use super::wait;
use crate::error::Result;
use crate::inference::wire::{
    ChatChunk, ChatMessage, ChatResponse, ResponseFormat, Tool, ToolChoice,
};
use crate::{ChatOptions, LLMResult, TokenSource};

/// Blocking counterpart of [`crate::EvolutionInference`]: the same calls,
/// returning when the answer is complete. Cloning shares the connection pool
/// and the token cache.
#[derive(Debug, Clone)]
pub struct EvolutionInference {
    inner: crate::EvolutionInference,
}

impl EvolutionInference {
    /// A builder with the same settings as [`crate::EvolutionInferenceBuilder`].
    pub fn builder() -> EvolutionInferenceBuilder {
        EvolutionInferenceBuilder(crate::EvolutionInference::builder())
    }

    /// A client configured from the `EVOLUTION_*` variables.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// Wraps an async client, sharing its pool and token cache.
    pub fn from_async(inner: crate::EvolutionInference) -> Self {
        Self { inner }
    }

    /// The async client behind this facade.
    pub fn as_async(&self) -> &crate::EvolutionInference {
        &self.inner
    }

    /// See [`crate::EvolutionInference::invoke`].
    pub fn invoke(&self, prompt: &str) -> Result<String> {
        let (llm, prompt) = (self.inner.clone(), prompt.to_string());
        wait(async move { llm.invoke(&prompt).await })?
    }

    /// See [`crate::EvolutionInference::chat`].
    pub fn chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatResponse> {
        let llm = self.inner.clone();
        let (messages, options) = (messages.as_ref().to_vec(), options.borrow().clone());
        wait(async move { llm.chat(messages, options).await })?
    }

    /// See [`crate::EvolutionInference::generate`].
    pub fn generate<S: AsRef<str>>(&self, prompts: &[S]) -> Result<LLMResult> {
        self.generate_with_options(prompts, ChatOptions::default())
    }

    /// See [`crate::EvolutionInference::generate_with_options`].
    pub fn generate_with_options<S: AsRef<str>>(
        &self,
        prompts: &[S],
        options: impl Borrow<ChatOptions>,
    ) -> Result<LLMResult> {
        let llm = self.inner.clone();
        let prompts: Vec<String> = prompts.iter().map(|p| p.as_ref().to_string()).collect();
        let options = options.borrow().clone();
        wait(async move { llm.generate_with_options(&prompts, options).await })?
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
        let llm = self.inner.clone();
        let (messages, options) = (messages.as_ref().to_vec(), options.borrow().clone());
        let inner = wait(async move { llm.stream_chat(messages, options).await })??;
        Ok(ChatStream { inner: Some(inner) })
    }
}

/// A streamed answer read by blocking the calling thread for each chunk.
#[derive(Debug)]
pub struct ChatStream {
    /// Taken while a chunk is being read on the runtime.
    inner: Option<crate::ChatStream>,
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

/// Forwards setters to the async builder, so both builders offer the same
/// methods without writing each one twice.
macro_rules! forward {
    ($($(#[$doc:meta])* $name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $($arg: $ty),*) -> Self {
                Self(self.0.$name($($arg),*))
            }
        )*
    };
}

/// Blocking counterpart of [`crate::EvolutionInferenceBuilder`]: the same
/// setters; [`build`](Self::build) returns the blocking client.
#[derive(Debug, Clone)]
pub struct EvolutionInferenceBuilder(crate::EvolutionInferenceBuilder);

impl EvolutionInferenceBuilder {
    forward! {
        /// The access key id.
        key_id(key_id: impl Into<String>);
        /// The access key secret.
        secret(secret: impl Into<String>);
        /// The API base URL.
        base_url(base_url: impl Into<String>);
        /// The IAM token endpoint.
        auth_url(auth_url: impl Into<String>);
        /// Sent as the `x-project-id` header.
        project_id(project_id: impl Into<String>);
        /// Timeout of each attempt.
        request_timeout(timeout: Duration);
        /// Retries after a 429, 5xx, timeout or connection failure.
        max_retries(max_retries: u32);
        /// The HTTP client to use.
        http_client(client: reqwest::Client);
        /// A header sent with every request.
        default_header(name: &str, value: &str);
        /// Headers sent with every request.
        default_headers(headers: reqwest::header::HeaderMap);
        /// Where tokens come from, instead of `key_id` + `secret`.
        token_source(source: impl TokenSource + 'static);
        /// A shared token source.
        shared_token_source(source: std::sync::Arc<dyn TokenSource>);
        /// A fixed API key instead of IAM tokens.
        api_key(api_key: impl Into<String>);
        /// The token manager's refresh buffer.
        refresh_buffer(buffer: Duration);
        /// The model name.
        model(model: impl Into<String>);
        /// Most tokens to generate.
        max_tokens(max_tokens: u32);
        /// Sampling temperature, 0–2.
        temperature(temperature: f32);
        /// Nucleus sampling mass, 0–1.
        top_p(top_p: f32);
        /// −2–2.
        frequency_penalty(penalty: f32);
        /// −2–2.
        presence_penalty(penalty: f32);
        /// Stop sequences.
        stop(stop: impl IntoIterator<Item = impl Into<String>>);
        /// Choices per prompt.
        n(n: u32);
        /// Stream answers even for `invoke`/`chat`.
        streaming(streaming: bool);
        /// Seed for reproducible sampling.
        seed(seed: u64);
        /// Ask for a final usage chunk in streams.
        stream_usage(stream_usage: bool);
        /// Tools offered on every call.
        tools(tools: Vec<Tool>);
        /// Tool choice on every call.
        tool_choice(choice: ToolChoice);
        /// Answer format on every call.
        response_format(format: ResponseFormat);
        /// Most requests in flight at once in `generate`.
        max_concurrency(max_concurrency: usize);
    }

    /// Fills every setting not given yet from the `EVOLUTION_*` variables.
    pub fn from_env(self) -> Result<Self> {
        Ok(Self(self.0.from_env()?))
    }

    /// Checks every setting and creates the blocking client.
    pub fn build(self) -> Result<EvolutionInference> {
        Ok(EvolutionInference {
            inner: self.0.build()?,
        })
    }
}

impl crate::EvolutionInferenceBuilder {
    /// Checks the settings and creates a [blocking](EvolutionInference) client
    /// (the same as building through [`EvolutionInference::builder`]).
    pub fn build_blocking(self) -> Result<EvolutionInference> {
        EvolutionInferenceBuilder(self).build()
    }
}
