//! `EvolutionInference`: the chat-completions client.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde_json::{json, Value};

use super::options::{ChatOptions, ChatParams};
use super::stream::ChatStream;
use super::transport::Transport;
use super::wire::{
    ChatMessage, ChatRequest, ChatResponse, ModelInfo, ModelList, ResponseFormat, Tool, ToolChoice,
};
use crate::config::{connection_setters, ConnectionConfig, ENV_MODEL};
use crate::error::{Error, Result};

/// What [`EvolutionInference::llm_type`] returns, as in the original package.
pub const LLM_TYPE: &str = "cloud-ru-tech";

/// Default bound on concurrent requests in [`EvolutionInference::generate`].
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// A client for an OpenAI-compatible Cloud.ru Foundation Models endpoint.
///
/// Tokens are obtained and refreshed by its [`TokenManager`](crate::TokenManager)
/// (or any [`TokenSource`](crate::TokenSource)); a `401` from the API makes it
/// refresh the token and retry once; `429`, `5xx` and connection failures are
/// retried with backoff. Cloning is cheap: clones share the connection pool
/// and the token cache, and each keeps its own parameters.
///
/// ```no_run
/// # async fn run() -> evolution_langchain::Result<()> {
/// use evolution_langchain::EvolutionInference;
///
/// let llm = EvolutionInference::builder()
///     .model("deepseek-ai/DeepSeek-R1-Distill-Llama-70B")
///     .key_id("my-key-id")
///     .secret("my-secret")
///     .base_url("https://foundation-models.api.cloud.ru/api/gigacube/openai/v1")
///     .temperature(0.2)
///     .build()?;
/// println!("{}", llm.invoke("Hello!").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EvolutionInference {
    pub(crate) transport: Arc<Transport>,
    pub(crate) params: ChatParams,
    pub(crate) max_concurrency: usize,
    /// langchain-rust's `streaming_func`, set through `LLM::add_options`:
    /// `LLM::generate` then streams and hands it each piece of text.
    #[cfg(feature = "langchain")]
    pub(crate) streaming_func: Option<crate::langchain::StreamingFunc>,
}

impl EvolutionInference {
    /// A builder with the defaults of [`ChatParams`].
    pub fn builder() -> EvolutionInferenceBuilder {
        EvolutionInferenceBuilder::default()
    }

    /// A client configured from `EVOLUTION_KEY_ID`, `EVOLUTION_SECRET`,
    /// `EVOLUTION_BASE_URL`, `EVOLUTION_MODEL`, `EVOLUTION_TOKEN_URL` and
    /// `EVOLUTION_PROJECT_ID`, read from the environment or a `.env` file.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    /// The parameters sent with every request.
    pub fn params(&self) -> &ChatParams {
        &self.params
    }

    /// Mutable access to the parameters, e.g. to change the temperature of
    /// this clone only.
    pub fn params_mut(&mut self) -> &mut ChatParams {
        &mut self.params
    }

    /// The API base URL (without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.transport.base_url
    }

    /// `"cloud-ru-tech"`.
    pub fn llm_type(&self) -> &'static str {
        LLM_TYPE
    }

    /// The parameters that identify this model configuration (for caching
    /// and tracing): the sampling defaults plus `base_url`.
    pub fn identifying_params(&self) -> Value {
        let p = &self.params;
        json!({
            "model": p.model,
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "frequency_penalty": p.frequency_penalty,
            "presence_penalty": p.presence_penalty,
            "stop": p.stop,
            "streaming": p.streaming,
            "n": p.n,
            "base_url": self.transport.base_url,
        })
    }

    /// Sends one user message and returns the answer's text.
    pub async fn invoke(&self, prompt: &str) -> Result<String> {
        let response = self
            .chat(&[ChatMessage::user(prompt)], &ChatOptions::default())
            .await?;
        answer_text(response).ok_or_else(|| Error::InvalidResponse {
            url: self.transport.url("chat/completions"),
            message: "the answer has no content, no tool calls and no finish reason".into(),
        })
    }

    /// Sends a conversation; returns every choice, tool calls and usage.
    /// Streams under the hood when the client was built with `streaming(true)`.
    ///
    /// `messages` may be a slice, an array or a `Vec`; `options` a
    /// `ChatOptions` or a reference to one.
    pub async fn chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatResponse> {
        let (messages, options) = (messages.as_ref(), options.borrow());
        let params = self.call_params(messages, options)?;
        let streaming = params.streaming;
        let request = params.request(messages.to_vec(), streaming);
        let response = if streaming {
            self.open_stream(&request).await?.collect_response().await?
        } else {
            self.transport
                .post_json::<ChatResponse>("chat/completions", &request)
                .await?
        };
        if response.choices.is_empty() {
            return Err(Error::InvalidResponse {
                url: self.transport.url("chat/completions"),
                message: "the reply has no choices".into(),
            });
        }
        Ok(response)
    }

    /// Streams the answer to one user message.
    pub async fn stream(&self, prompt: &str) -> Result<ChatStream> {
        self.stream_chat(&[ChatMessage::user(prompt)], &ChatOptions::default())
            .await
    }

    /// Streams the answer to a conversation. Returns once the server has
    /// accepted the request (errors before that are retried as usual).
    pub async fn stream_chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatStream> {
        let (messages, options) = (messages.as_ref(), options.borrow());
        let request = self
            .call_params(messages, options)?
            .request(messages.to_vec(), true);
        self.open_stream(&request).await
    }

    /// The models the endpoint serves.
    pub async fn list_models(&self) -> Result<Vec<ModelInfo>> {
        let list: ModelList = self.transport.get_json("models").await?;
        Ok(list.data)
    }

    /// The request body `chat` would send for `messages` and `options`.
    pub fn build_request(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        stream: bool,
    ) -> Result<ChatRequest> {
        let params = self.call_params(messages, options)?;
        Ok(params.request(messages.to_vec(), stream))
    }

    fn call_params(&self, messages: &[ChatMessage], options: &ChatOptions) -> Result<ChatParams> {
        if messages.is_empty() {
            return Err(Error::config(
                "messages",
                "is empty: send at least one message",
            ));
        }
        let params = self.params.merged(options);
        params.validate()?;
        Ok(params)
    }

    async fn open_stream(&self, request: &ChatRequest) -> Result<ChatStream> {
        let response = self
            .transport
            .post_stream("chat/completions", request)
            .await?;
        Ok(ChatStream::from_response(
            response,
            self.transport.request_timeout,
        ))
    }
}

/// The first choice's text (`chat` has checked there is one). A choice
/// without content is an empty answer when the server says why it stopped
/// (tool calls, or `length` when a reasoning model spent the budget
/// thinking); without even that there is no answer, and `invoke` says the
/// reply is invalid rather than returning a silent empty string.
fn answer_text(response: ChatResponse) -> Option<String> {
    let choice = response.choices.into_iter().next()?;
    match choice.message.content {
        Some(text) => Some(text),
        None if !choice.message.tool_calls.is_empty() || choice.finish_reason.is_some() => {
            Some(String::new())
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::wire::{Choice, ResponseMessage};

    fn reply(content: Option<&str>, finish_reason: Option<&str>) -> ChatResponse {
        ChatResponse {
            id: None,
            model: None,
            created: None,
            choices: vec![Choice {
                index: 0,
                message: ResponseMessage {
                    role: None,
                    content: content.map(str::to_string),
                    tool_calls: Vec::new(),
                    reasoning_content: None,
                },
                finish_reason: finish_reason.map(str::to_string),
            }],
            usage: None,
        }
    }

    #[test]
    fn answer_text_cases() {
        assert_eq!(answer_text(reply(Some("hi"), Some("stop"))).unwrap(), "hi");
        // A reasoning model that spent max_tokens thinking: empty, not an error.
        assert_eq!(answer_text(reply(None, Some("length"))).unwrap(), "");
        assert!(answer_text(reply(None, None)).is_none());
        let mut empty = reply(None, None);
        empty.choices.clear();
        assert!(answer_text(empty).is_none());
    }
}

impl fmt::Debug for EvolutionInference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionInference")
            .field("params", &self.params)
            .field("transport", &self.transport)
            .field("max_concurrency", &self.max_concurrency)
            .finish()
    }
}

/// Settings for an [`EvolutionInference`]; methods are named after the fields.
#[derive(Debug, Clone, Default)]
pub struct EvolutionInferenceBuilder {
    connection: ConnectionConfig,
    params: ChatParams,
    max_concurrency: Option<usize>,
}

impl EvolutionInferenceBuilder {
    connection_setters!();

    /// Fills every setting not given yet from `EVOLUTION_*` variables
    /// (loading `.env` first, without overriding the process environment).
    pub fn from_env(mut self) -> Result<Self> {
        self.connection.fill_from_env()?;
        if self.params.model.is_empty() {
            if let Some(model) = crate::config::env_var(ENV_MODEL) {
                self.params.model = model;
            }
        }
        Ok(self)
    }

    /// The model name.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.params.model = model.into();
        self
    }
    /// Most tokens to generate (default 512).
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.params.max_tokens = max_tokens;
        self
    }
    /// Sampling temperature, 0–2 (default 1.0).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.params.temperature = temperature;
        self
    }
    /// Nucleus sampling mass, 0–1 (default 1.0).
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.params.top_p = top_p;
        self
    }
    /// −2–2 (default 0).
    pub fn frequency_penalty(mut self, penalty: f32) -> Self {
        self.params.frequency_penalty = penalty;
        self
    }
    /// −2–2 (default 0).
    pub fn presence_penalty(mut self, penalty: f32) -> Self {
        self.params.presence_penalty = penalty;
        self
    }
    /// Stop sequences.
    pub fn stop<I, S>(mut self, stop: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.params.stop = Some(stop.into_iter().map(Into::into).collect());
        self
    }
    /// Choices per prompt (default 1).
    pub fn n(mut self, n: u32) -> Self {
        self.params.n = n;
        self
    }
    /// Stream answers even for `invoke`/`chat` (default false).
    pub fn streaming(mut self, streaming: bool) -> Self {
        self.params.streaming = streaming;
        self
    }
    /// Seed for reproducible sampling.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = Some(seed);
        self
    }
    /// Ask for a final usage chunk in streams (default true).
    pub fn stream_usage(mut self, stream_usage: bool) -> Self {
        self.params.stream_usage = stream_usage;
        self
    }
    /// Tools offered on every call.
    pub fn tools(mut self, tools: Vec<Tool>) -> Self {
        self.params.tools = Some(tools);
        self
    }
    /// Tool choice on every call.
    pub fn tool_choice(mut self, choice: ToolChoice) -> Self {
        self.params.tool_choice = Some(choice);
        self
    }
    /// Answer format on every call.
    pub fn response_format(mut self, format: ResponseFormat) -> Self {
        self.params.response_format = Some(format);
        self
    }
    /// Most requests in flight at once in `generate`/`batch` (default 8).
    pub fn max_concurrency(mut self, max_concurrency: usize) -> Self {
        self.max_concurrency = Some(max_concurrency);
        self
    }

    /// Checks every setting and creates the client. Nothing is sent yet.
    pub fn build(self) -> Result<EvolutionInference> {
        self.params.validate()?;
        let max_concurrency = self.max_concurrency.unwrap_or(DEFAULT_MAX_CONCURRENCY);
        if max_concurrency == 0 {
            return Err(Error::config("max_concurrency", "must be at least 1"));
        }
        Ok(EvolutionInference {
            transport: Arc::new(self.connection.into_transport()?),
            params: self.params,
            max_concurrency,
            #[cfg(feature = "langchain")]
            streaming_func: None,
        })
    }
}
