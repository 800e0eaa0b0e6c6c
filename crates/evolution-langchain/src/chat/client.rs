//! `EvolutionInference`: the chat-completions client.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tracing::{Instrument, Span};

use super::builder::EvolutionInferenceBuilder;
use super::options::ChatOptions;
use super::stream::ChatStream;
use super::wire::{ChatMessage, ChatRequest, ChatResponse, RequestBody};
use super::PATH;
use crate::auth::TokenManager;
use crate::error::{Error, Result};
use crate::telemetry::{self, StreamTrace};
use crate::transport::throttle::ThrottleStats;
use crate::transport::{Body, Request, Transport};

/// What [`EvolutionInference::llm_type`] returns, as in the original package.
pub const LLM_TYPE: &str = "cloud-ru-tech";

/// Default bound on concurrent requests in batches.
pub const DEFAULT_MAX_CONCURRENCY: usize = 8;

/// A client for an OpenAI-compatible Cloud.ru Foundation Models endpoint.
///
/// Tokens come from an API key, or from a [`TokenManager`] that exchanges a
/// key id and secret at IAM (or any [`TokenSource`](crate::TokenSource)); a
/// `401` or `403` from the API makes it refresh the token and retry once;
/// `429`, `5xx` and connection failures are retried with backoff. Cloning is
/// cheap: clones share the connection pool and the token cache, and each
/// keeps its own options.
///
/// ```no_run
/// # async fn run() -> evolution_langchain::Result<()> {
/// use evolution_langchain::EvolutionInference;
///
/// let llm = EvolutionInference::builder()
///     .model("openai/gpt-oss-120b")
///     .api_key("my-api-key") // or .key_id(..).secret(..)
///     .temperature(0.2)
///     .build()?; // base URL: https://foundation-models.api.cloud.ru/v1
/// println!("{}", llm.invoke("Hello!").await?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EvolutionInference {
    pub(crate) transport: Arc<Transport>,
    pub(crate) options: ChatOptions,
    pub(crate) max_concurrency: usize,
    /// Whether spans record message content (`record_content`).
    pub(crate) record_content: bool,
    /// langchain-rust's `streaming_func`, set through `LLM::add_options`:
    /// `LLM::generate` then streams and hands it each piece of text.
    #[cfg(feature = "langchain")]
    pub(crate) streaming_func: Option<crate::langchain::StreamingFunc>,
}

impl EvolutionInference {
    /// A builder with the defaults of [`ChatOptions::client_defaults`].
    pub fn builder() -> EvolutionInferenceBuilder {
        EvolutionInferenceBuilder::default()
    }

    /// A client configured from the environment or a `.env` file:
    /// `EVOLUTION_API_KEY` (or `CLOUD_RU_FOUNDATION_MODELS_API_KEY`), or
    /// `EVOLUTION_KEY_ID` and `EVOLUTION_SECRET`; `EVOLUTION_BASE_URL`
    /// (default [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL)),
    /// `EVOLUTION_MODEL`, `EVOLUTION_TOKEN_URL`, `EVOLUTION_PROJECT_ID`.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env()?.build()
    }

    pub(crate) fn from_parts(
        transport: Transport,
        options: ChatOptions,
        max_concurrency: usize,
        record_content: bool,
    ) -> Self {
        Self {
            transport: Arc::new(transport),
            options,
            max_concurrency,
            record_content,
            #[cfg(feature = "langchain")]
            streaming_func: None,
        }
    }

    /// The options sent with every request unless a call overrides them.
    pub fn options(&self) -> &ChatOptions {
        &self.options
    }

    /// Mutable access to the options, e.g. to change the temperature of
    /// this clone only. They are checked by the next call.
    pub fn options_mut(&mut self) -> &mut ChatOptions {
        &mut self.options
    }

    /// The model name ("" for the endpoint's own model).
    pub fn model(&self) -> &str {
        self.options.model_name()
    }

    /// The API base URL (without a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.transport.base_url
    }

    /// The token manager, when the client exchanges a key id and secret at
    /// IAM itself (not with an API key, a token source of yours, or no auth).
    pub fn token_manager(&self) -> Option<&TokenManager> {
        self.transport.token_manager.as_ref()
    }

    /// `"cloud-ru-tech"`.
    pub fn llm_type(&self) -> &'static str {
        LLM_TYPE
    }

    /// The parameters that identify this model configuration (for caching
    /// and tracing): the options as sent, `streaming`, and `base_url`.
    pub fn identifying_params(&self) -> Value {
        let mut params = serde_json::to_value(&self.options).unwrap_or_default();
        params["model"] = Value::from(self.model());
        params["streaming"] = Value::from(self.options.is_streaming());
        params["base_url"] = Value::from(self.base_url());
        params
    }

    /// Sends one user message and returns the answer's text (see
    /// [`Choice::answer`](crate::chat::wire::Choice::answer)).
    pub async fn invoke(&self, prompt: &str) -> Result<String> {
        let response = self
            .chat(&[ChatMessage::user(prompt)], &ChatOptions::default())
            .await?;
        Ok(response.answer().unwrap_or_default().to_string())
    }

    /// Sends a conversation; returns every choice, tool calls and usage.
    /// Streams under the hood when the client was built with `streaming(true)`.
    ///
    /// `messages` may be a slice, an array or a `Vec`; `options` a
    /// `ChatOptions` or a reference to one. A reply whose choices give no
    /// [answer](crate::chat::wire::Choice::answer) is an
    /// [`Error::InvalidResponse`].
    pub async fn chat(
        &self,
        messages: impl AsRef<[ChatMessage]>,
        options: impl Borrow<ChatOptions>,
    ) -> Result<ChatResponse> {
        let merged = self.options.overlay(options.borrow());
        // The body is written from the caller's messages: no copy of the
        // conversation per call.
        let body = RequestBody::new(messages.as_ref(), &merged, merged.is_streaming());
        self.send_body(body).await
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
        let merged = self.options.overlay(options.borrow());
        self.stream_body(RequestBody::new(messages.as_ref(), &merged, true))
            .await
    }

    /// The request body [`chat`](Self::chat) would send for `messages` and
    /// `options` (the client's options with the call's laid over them).
    pub fn build_request(
        &self,
        messages: &[ChatMessage],
        options: &ChatOptions,
        stream: bool,
    ) -> Result<ChatRequest> {
        let request =
            ChatRequest::with_stream(messages.to_vec(), self.options.overlay(options), stream);
        check(&request.body())?;
        Ok(request)
    }

    /// Sends `request` as it is (the client's options are not added; use
    /// [`build_request`](Self::build_request) for that) and returns the
    /// whole reply, reading the stream when `request.stream` is true.
    pub async fn send_request(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.send_body(request.body()).await
    }

    /// [`send_request`](Self::send_request) for a borrowed body: what
    /// [`chat`](Self::chat) and extraction send, written from the caller's
    /// conversation and options without copying them.
    pub(super) async fn send_body(&self, body: RequestBody<'_>) -> Result<ChatResponse> {
        let started = Instant::now();
        let span = self.chat_span(&body);
        let outcome = self
            .send_body_in(body, StreamTrace::new(span.clone(), started))
            .instrument(span.clone())
            .await;
        telemetry::record_outcome(&span, &outcome, |span, response| {
            telemetry::record_chat_response(span, response);
            if self.record_content {
                telemetry::content::record_output(span, response);
            }
        });
        outcome
    }

    async fn send_body_in(
        &self,
        body: RequestBody<'_>,
        trace: StreamTrace,
    ) -> Result<ChatResponse> {
        check(&body)?;
        if body.stream == Some(true) {
            // The stream settles the tokens limiter itself, from its usage chunk.
            let stream = self.open_stream(&body, trace).await?;
            let id = stream.request_id().cloned();
            let response = stream.collect_response().await?;
            match (self.check_answers(&response), id) {
                (Err(e), Some(id)) => Err(e.with_request_id(&id)),
                (outcome, _) => outcome.map(|()| response),
            }
        } else {
            let estimated = self.estimate(&body);
            let response: ChatResponse = self
                .transport
                .json_checked(
                    Request::post(PATH, Body::json(&body)?).tokens(estimated),
                    |response: &ChatResponse| self.check_answers(response),
                )
                .await?;
            if let Some(usage) = response.usage {
                self.transport.settle(estimated, usage.charged()).await;
            }
            Ok(response)
        }
    }

    /// What a request is expected to cost against a tokens-per-minute
    /// limit: its text's estimated tokens, plus `max_tokens` for each of
    /// the `n` answers. Zero (and nothing counted) when no such limit is set.
    fn estimate(&self, body: &RequestBody<'_>) -> u32 {
        if !self.transport.pipeline.throttle.counts_tokens() {
            return 0;
        }
        let prompt = self
            .transport
            .estimate(body.messages.iter().map(ChatMessage::content_text));
        let answers = body
            .options
            .max_tokens
            .unwrap_or(0)
            .saturating_mul(body.options.n.unwrap_or(1));
        prompt.saturating_add(answers)
    }

    /// What the rate control has seen: the batch window now, time spent
    /// waiting for the limiter or a `429`'s pause, and the `429`s met.
    /// Shared by clones and by the clients made from this one.
    pub fn throttle_stats(&self) -> ThrottleStats {
        self.transport.pipeline.throttle.stats()
    }

    /// Sends `request` as it is, streamed (whatever its `stream` says).
    pub async fn stream_request(&self, request: ChatRequest) -> Result<ChatStream> {
        self.stream_body(request.body()).await
    }

    /// [`stream_request`](Self::stream_request) for a borrowed body.
    async fn stream_body(&self, body: RequestBody<'_>) -> Result<ChatStream> {
        let started = Instant::now();
        let span = self.chat_span(&body);
        let trace = StreamTrace::new(span.clone(), started).recording_content(self.record_content);
        let outcome = async {
            check(&body)?;
            self.open_stream(&body.streamed(), trace).await
        }
        .instrument(span.clone())
        .await;
        telemetry::record_outcome(&span, &outcome, |_, _| {});
        outcome
    }

    /// The GenAI span of one chat call, with the parameters it sends.
    fn chat_span(&self, body: &RequestBody<'_>) -> Span {
        let span = telemetry::span(
            telemetry::OPERATION_CHAT,
            body.options.model_name(),
            &self.transport.base_url,
        );
        telemetry::record_chat_request(&span, body.options);
        if self.record_content {
            telemetry::content::record_input(&span, body.messages);
        }
        span
    }

    async fn open_stream(
        &self,
        request: &RequestBody<'_>,
        trace: StreamTrace,
    ) -> Result<ChatStream> {
        let estimated = self.estimate(request);
        let open = self
            .transport
            .stream(Request::post(PATH, Body::json(request)?).tokens(estimated))
            .await?;
        let mut stream = ChatStream::from_open(open);
        if estimated > 0 {
            stream = stream.settling(Arc::clone(&self.transport), estimated);
        }
        // A disabled span stays disabled: its stream skips the bookkeeping.
        Ok(if trace.span().is_disabled() {
            stream
        } else {
            stream.traced(trace)
        })
    }

    /// The one answer rule ([`Choice::answer`](crate::chat::wire::Choice::answer))
    /// applied to a whole reply: at least one choice, each with an answer.
    pub(crate) fn check_answers(&self, response: &ChatResponse) -> Result<()> {
        let invalid = |message: String| Error::invalid_response(self.transport.url(PATH), message);
        if response.choices.is_empty() {
            return Err(invalid("the reply has no choices".into()));
        }
        match response.choices.iter().find(|c| c.answer().is_none()) {
            Some(choice) => Err(invalid(format!(
                "choice {} has no content, no tool calls and no finish reason",
                choice.index
            ))),
            None => Ok(()),
        }
    }
}

/// What is checked once per call before anything is sent: there are
/// messages, and every parameter is in range.
fn check(request: &RequestBody<'_>) -> Result<()> {
    if request.messages.is_empty() {
        return Err(Error::invalid_request(
            "messages",
            "is empty: send at least one message",
        ));
    }
    request.options.check_request()
}

impl fmt::Debug for EvolutionInference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionInference")
            .field("options", &self.options)
            .field("transport", &self.transport)
            .field("max_concurrency", &self.max_concurrency)
            .field("record_content", &self.record_content)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use crate::chat::wire::{ChatResponse, Choice, ResponseMessage};

    fn choice(content: Option<&str>, finish_reason: Option<&str>, tools: bool) -> Choice {
        Choice {
            index: 0,
            message: ResponseMessage {
                role: None,
                content: content.map(str::to_string),
                tool_calls: if tools {
                    vec![crate::chat::wire::ToolCall::new("c", "f", "{}")]
                } else {
                    Vec::new()
                },
                ..ResponseMessage::default()
            },
            finish_reason: finish_reason.map(str::to_string),
            ..Choice::default()
        }
    }

    #[test]
    fn the_answer_rule() {
        assert_eq!(choice(Some("hi"), Some("stop"), false).answer(), Some("hi"));
        assert_eq!(choice(Some("hi"), None, false).answer(), Some("hi"));
        // A reasoning model that spent max_tokens thinking: empty, not an error.
        assert_eq!(choice(None, Some("length"), false).answer(), Some(""));
        assert_eq!(choice(Some(""), Some("stop"), false).answer(), Some(""));
        assert_eq!(choice(None, None, true).answer(), Some(""));
        assert_eq!(choice(None, None, false).answer(), None);
        assert_eq!(choice(Some(""), None, false).answer(), None);
        let empty = ChatResponse::default();
        assert_eq!(empty.answer(), None);
    }
}
