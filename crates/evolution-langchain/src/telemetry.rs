//! OpenTelemetry GenAI spans: one [`tracing`] span per model call.
//!
//! Every chat ([`EvolutionInference::chat`](crate::EvolutionInference::chat),
//! [`send_request`](crate::EvolutionInference::send_request), streamed or
//! not), stream ([`stream_chat`](crate::EvolutionInference::stream_chat),
//! [`stream_request`](crate::EvolutionInference::stream_request)),
//! embeddings ([`EvolutionEmbeddings`](crate::EvolutionEmbeddings): one span
//! per `embed`/`embed_many` call, however many requests it takes) and rerank
//! ([`EvolutionRerank`](crate::EvolutionRerank)) call opens one span with
//! the attributes of the OpenTelemetry
//! [GenAI semantic conventions](https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
//!
//! # The span
//!
//! - level `INFO`, target [`TARGET`] (`evolution_langchain::gen_ai`);
//! - `tracing` span names are static, so the span is named [`SPAN_NAME`]
//!   (`"gen_ai"`) and carries the conventions' dynamic name
//!   `"{gen_ai.operation.name} {gen_ai.request.model}"` (e.g.
//!   `"chat openai/gpt-oss-120b"`) in the field [`OTEL_NAME`] (`otel.name`),
//!   which `tracing-opentelemetry` uses as the exported span's name. It also
//!   sets `otel.kind = "client"` and, on failure, `otel.status_code = "error"`.
//!
//! Fields are declared (empty) when the span is created and recorded as the
//! values become known; a field never learned (e.g. usage the server did not
//! send) stays empty and is not exported.
//!
//! | field | value |
//! |---|---|
//! | `gen_ai.operation.name` | [`OPERATION_CHAT`] `"chat"`, [`OPERATION_EMBEDDINGS`] `"embeddings"`, [`OPERATION_RERANK`] `"rerank"` and `"transcription"` (ours: the conventions name neither) |
//! | `gen_ai.provider.name` | [`PROVIDER_NAME`] `"cloud.ru"`, always (also against a local OpenAI-compatible server) |
//! | `gen_ai.request.model` | the model asked for (empty: the endpoint's own) |
//! | `gen_ai.request.max_tokens` | `max_tokens` sent |
//! | `gen_ai.request.temperature` | `temperature` sent |
//! | `gen_ai.request.top_p` | `top_p` sent |
//! | `gen_ai.request.frequency_penalty` | `frequency_penalty` sent |
//! | `gen_ai.request.presence_penalty` | `presence_penalty` sent |
//! | `gen_ai.request.stop_sequences` | `stop` sent, as a debug list (`["\n\n"]`) |
//! | `gen_ai.request.seed` | `seed` sent |
//! | `gen_ai.request.choice.count` | `n` sent, only when it is not 1 |
//! | `gen_ai.embeddings.dimension.count` | `dimensions` asked for (embeddings) |
//! | `gen_ai.response.id` | the reply's `id` (chat, rerank) |
//! | `gen_ai.response.model` | the reply's `model` (chat, rerank) |
//! | `gen_ai.response.finish_reasons` | one per choice, as a debug list (`["stop"]`) |
//! | `gen_ai.usage.input_tokens` | `usage.prompt_tokens` (chat, rerank; embeddings: summed over the call's requests) |
//! | `gen_ai.usage.output_tokens` | `usage.completion_tokens` (chat) |
//! | `gen_ai.response.time_to_first_chunk` | streams: seconds from the call's start to its first chunk (ours; not in the conventions) |
//! | `error.type` | on failure, a short stable class (see [`error_type`]) |
//! | `evolution.rate_limit.wait_ms` | ([`RATE_LIMIT_WAIT_MS`], ours) milliseconds the call waited for the rate limiter or a `429`'s pause, when it waited |
//! | `server.address` | the base URL's host |
//! | `server.port` | the base URL's port (or its scheme's default) |
//!
//! # Events inside the span
//!
//! The call future runs inside the span (and a stream enters it each time it
//! is polled), so this crate's own events during the call are children of
//! it: each retry (a `WARN` of target `evolution_langchain::retry`; an
//! `INFO` of that target for a `429` waited out) and each
//! token refresh after a `401`/`403` (an `INFO` "the model API rejected the
//! access token; …").
//!
//! # Message content: off unless asked for
//!
//! By default no message content is recorded (prompts, answers, reasoning,
//! tool arguments, documents, embedded texts), and never tokens, keys,
//! secrets or headers. A chat client built with
//! [`record_content(true)`](crate::EvolutionInferenceBuilder::record_content)
//! also records, as the conventions' JSON text:
//!
//! | field | value |
//! |---|---|
//! | `gen_ai.input.messages` | the messages sent: `[{"role":"user","parts":[{"type":"text","content":"…"}]}, …]`, tool calls as `tool_call` parts (arguments as an object), tool answers as `tool_call_response` parts, images as `uri` parts (an inline `data:` image keeps only its media type) |
//! | `gen_ai.output.messages` | the answers: `[{"role":"assistant","parts":[…],"finish_reason":"stop"}]`, with `reasoning`, `text` and `tool_call` parts; for a stream, recorded when it ends |
//!
//! Embeddings and rerank spans never carry content.
//!
//! # Exporting
//!
//! Any `tracing-opentelemetry` layer the program already has exports these
//! spans. The `otel` feature adds `telemetry::otel`: a ready layer for an
//! OpenTelemetry tracer, and the two GenAI client metrics computed from the
//! spans (`gen_ai.client.operation.duration`, `gen_ai.client.token.usage`).
//!
//! A span ends when its call does: for a stream, when the stream yields its
//! end or its error (or is dropped before).
//!
//! # Cost
//!
//! With no subscriber interested in [`TARGET`] at `INFO`, a span is a
//! disabled handle: nothing is formatted (the `otel.name` string is built
//! only for an enabled span) and streams skip all bookkeeping.

use std::borrow::Cow;
use std::time::Instant;

use tracing::field::Empty;
use tracing::Span;

use crate::chat::wire::{ChatChunk, ChatResponse, Usage};
use crate::chat::ChatOptions;
use crate::chat::StreamAccumulator;
use crate::error::Error;

pub(crate) mod content;
#[cfg(feature = "otel")]
pub mod otel;

/// The target of the spans.
pub const TARGET: &str = "evolution_langchain::gen_ai";
/// The static `tracing` name of the spans (the dynamic one is in [`OTEL_NAME`]).
pub const SPAN_NAME: &str = "gen_ai";
/// The value of [`PROVIDER_NAME_ATTR`] for every call: Cloud.ru.
pub const PROVIDER_NAME: &str = "cloud.ru";

/// `gen_ai.operation.name` of chat completions, streamed or not.
pub const OPERATION_CHAT: &str = "chat";
/// `gen_ai.operation.name` of embeddings.
pub const OPERATION_EMBEDDINGS: &str = "embeddings";
/// `gen_ai.operation.name` of reranking (ours; the conventions name none).
pub const OPERATION_RERANK: &str = "rerank";

/// The field `tracing-opentelemetry` takes as the span's name.
pub const OTEL_NAME: &str = "otel.name";
/// The field `tracing-opentelemetry` takes as the span's kind (`"client"`).
pub const OTEL_KIND: &str = "otel.kind";
/// The field `tracing-opentelemetry` takes as the span's status (`"error"` on failure).
pub const OTEL_STATUS_CODE: &str = "otel.status_code";
/// `gen_ai.operation.name`.
pub const OPERATION_NAME: &str = "gen_ai.operation.name";
/// How long the call waited for the rate limiter or a provider's
/// `Retry-After` pause, in milliseconds (ours: the conventions have none);
/// set only when it waited.
pub const RATE_LIMIT_WAIT_MS: &str = "evolution.rate_limit.wait_ms";
/// `gen_ai.provider.name`.
pub const PROVIDER_NAME_ATTR: &str = "gen_ai.provider.name";
/// `gen_ai.request.model`.
pub const REQUEST_MODEL: &str = "gen_ai.request.model";
/// `gen_ai.request.max_tokens`.
pub const REQUEST_MAX_TOKENS: &str = "gen_ai.request.max_tokens";
/// `gen_ai.request.temperature`.
pub const REQUEST_TEMPERATURE: &str = "gen_ai.request.temperature";
/// `gen_ai.request.top_p`.
pub const REQUEST_TOP_P: &str = "gen_ai.request.top_p";
/// `gen_ai.request.frequency_penalty`.
pub const REQUEST_FREQUENCY_PENALTY: &str = "gen_ai.request.frequency_penalty";
/// `gen_ai.request.presence_penalty`.
pub const REQUEST_PRESENCE_PENALTY: &str = "gen_ai.request.presence_penalty";
/// `gen_ai.request.stop_sequences`.
pub const REQUEST_STOP_SEQUENCES: &str = "gen_ai.request.stop_sequences";
/// `gen_ai.request.seed`.
pub const REQUEST_SEED: &str = "gen_ai.request.seed";
/// `gen_ai.request.choice.count` (only when not 1).
pub const REQUEST_CHOICE_COUNT: &str = "gen_ai.request.choice.count";
/// `gen_ai.embeddings.dimension.count`.
pub const EMBEDDINGS_DIMENSION_COUNT: &str = "gen_ai.embeddings.dimension.count";
/// `gen_ai.response.id`.
pub const RESPONSE_ID: &str = "gen_ai.response.id";
/// `gen_ai.response.model`.
pub const RESPONSE_MODEL: &str = "gen_ai.response.model";
/// `gen_ai.response.finish_reasons`.
pub const RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
/// `gen_ai.usage.input_tokens`.
pub const USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// `gen_ai.usage.output_tokens`.
pub const USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
/// Streams: seconds from the call's start to the first chunk (ours).
pub const RESPONSE_TIME_TO_FIRST_CHUNK: &str = "gen_ai.response.time_to_first_chunk";
/// `gen_ai.input.messages` (only with `record_content`).
pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
/// `gen_ai.output.messages` (only with `record_content`).
pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
/// `error.type`.
pub const ERROR_TYPE: &str = "error.type";
/// `server.address`.
pub const SERVER_ADDRESS: &str = "server.address";
/// `server.port`.
pub const SERVER_PORT: &str = "server.port";

/// Every field a span declares, in declaration order.
pub const FIELDS: [&str; 27] = [
    OTEL_NAME,
    OTEL_KIND,
    OTEL_STATUS_CODE,
    OPERATION_NAME,
    PROVIDER_NAME_ATTR,
    REQUEST_MODEL,
    REQUEST_MAX_TOKENS,
    REQUEST_TEMPERATURE,
    REQUEST_TOP_P,
    REQUEST_FREQUENCY_PENALTY,
    REQUEST_PRESENCE_PENALTY,
    REQUEST_STOP_SEQUENCES,
    REQUEST_SEED,
    REQUEST_CHOICE_COUNT,
    EMBEDDINGS_DIMENSION_COUNT,
    RESPONSE_ID,
    RESPONSE_MODEL,
    RESPONSE_FINISH_REASONS,
    USAGE_INPUT_TOKENS,
    USAGE_OUTPUT_TOKENS,
    RESPONSE_TIME_TO_FIRST_CHUNK,
    INPUT_MESSAGES,
    OUTPUT_MESSAGES,
    ERROR_TYPE,
    RATE_LIMIT_WAIT_MS,
    SERVER_ADDRESS,
    SERVER_PORT,
];

/// The `error.type` of a failed call: a short, stable class.
///
/// `http_{status}` for an answer the API refused or kept failing
/// ([`Error::Api`], [`Error::Unavailable`], [`Error::RateLimited`] as
/// `http_429`, [`Error::UploadTooLarge`] after a `413`); otherwise one of
/// `timeout`, `connection`, `invalid_response`, `invalid_request`,
/// `config`, `auth`, `redirected`, `too_large`, `stream`, `runtime`,
/// `batch`, or `_OTHER`.
pub fn error_type(error: &Error) -> Cow<'static, str> {
    match error {
        Error::Api { status, .. } | Error::Unavailable { status, .. } => {
            Cow::Owned(format!("http_{status}"))
        }
        Error::RateLimited { .. } => "http_429".into(),
        Error::UploadTooLarge { limit: None, .. } => "http_413".into(),
        Error::UploadTooLarge { .. } => "too_large".into(),
        Error::Timeout { .. } => "timeout".into(),
        Error::Connection { .. } => "connection".into(),
        Error::InvalidResponse { .. } => "invalid_response".into(),
        Error::InvalidRequest { .. } => "invalid_request".into(),
        Error::Config { .. } => "config".into(),
        Error::Auth(_) => "auth".into(),
        Error::Redirected { .. } => "redirected".into(),
        Error::TooLarge { .. } => "too_large".into(),
        Error::Stream { .. } => "stream".into(),
        Error::Runtime { .. } => "runtime".into(),
        Error::Batch { .. } => "batch".into(),
        #[allow(unreachable_patterns)] // the enum is non_exhaustive
        _ => "_OTHER".into(),
    }
}

/// A new span for one call of `operation` on `model` against `base_url`.
pub(crate) fn span(operation: &'static str, model: &str, base_url: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        SPAN_NAME,
        otel.name = Empty,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.provider.name = PROVIDER_NAME,
        gen_ai.request.model = Empty,
        gen_ai.request.max_tokens = Empty,
        gen_ai.request.temperature = Empty,
        gen_ai.request.top_p = Empty,
        gen_ai.request.frequency_penalty = Empty,
        gen_ai.request.presence_penalty = Empty,
        gen_ai.request.stop_sequences = Empty,
        gen_ai.request.seed = Empty,
        gen_ai.request.choice.count = Empty,
        gen_ai.embeddings.dimension.count = Empty,
        gen_ai.response.id = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.time_to_first_chunk = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        error.type = Empty,
        evolution.rate_limit.wait_ms = Empty,
        server.address = Empty,
        server.port = Empty,
    );
    if span.is_disabled() {
        return span;
    }
    let model = model.trim();
    span.record(OTEL_NAME, format!("{operation} {model}").trim_end());
    span.record(REQUEST_MODEL, model);
    if let Ok(url) = url::Url::parse(base_url) {
        if let Some(host) = url.host_str() {
            span.record(
                SERVER_ADDRESS,
                host.trim_start_matches('[').trim_end_matches(']'),
            );
        }
        if let Some(port) = url.port_or_known_default() {
            span.record(SERVER_PORT, i64::from(port));
        }
    }
    span
}

/// Records the parameters a chat request sends.
pub(crate) fn record_chat_request(span: &Span, options: &ChatOptions) {
    if span.is_disabled() {
        return;
    }
    if let Some(v) = options.max_tokens {
        span.record(REQUEST_MAX_TOKENS, i64::from(v));
    }
    if let Some(v) = options.temperature {
        span.record(REQUEST_TEMPERATURE, f64::from(v));
    }
    if let Some(v) = options.top_p {
        span.record(REQUEST_TOP_P, f64::from(v));
    }
    if let Some(v) = options.frequency_penalty {
        span.record(REQUEST_FREQUENCY_PENALTY, f64::from(v));
    }
    if let Some(v) = options.presence_penalty {
        span.record(REQUEST_PRESENCE_PENALTY, f64::from(v));
    }
    if let Some(stop) = options.stop.as_ref().filter(|s| !s.is_empty()) {
        span.record(REQUEST_STOP_SEQUENCES, tracing::field::debug(stop));
    }
    if let Some(v) = options.seed {
        span.record(REQUEST_SEED, v);
    }
    if let Some(n) = options.n.filter(|n| *n != 1) {
        span.record(REQUEST_CHOICE_COUNT, i64::from(n));
    }
}

/// Records a failure.
pub(crate) fn record_error(span: &Span, error: &Error) {
    if span.is_disabled() {
        return;
    }
    span.record(ERROR_TYPE, error_type(error).as_ref());
    span.record(OTEL_STATUS_CODE, "error");
}

/// Records token counts; `output` false for operations without output tokens.
pub(crate) fn record_usage(span: &Span, usage: &Usage, output: bool) {
    span.record(USAGE_INPUT_TOKENS, i64::from(usage.prompt_tokens));
    if output {
        span.record(USAGE_OUTPUT_TOKENS, i64::from(usage.completion_tokens));
    }
}

/// Records the reply's id and model.
pub(crate) fn record_response_ids(span: &Span, id: Option<&str>, model: Option<&str>) {
    if let Some(id) = id {
        span.record(RESPONSE_ID, id);
    }
    if let Some(model) = model {
        span.record(RESPONSE_MODEL, model);
    }
}

/// Records what a whole chat reply says.
pub(crate) fn record_chat_response(span: &Span, response: &ChatResponse) {
    if span.is_disabled() {
        return;
    }
    record_response_ids(span, response.id.as_deref(), response.model.as_deref());
    let reasons: Vec<&str> = response
        .choices
        .iter()
        .filter_map(|c| c.finish_reason.as_deref())
        .collect();
    if !reasons.is_empty() {
        span.record(RESPONSE_FINISH_REASONS, tracing::field::debug(&reasons));
    }
    if let Some(usage) = &response.usage {
        record_usage(span, usage, true);
    }
}

/// Records the outcome of a call on its span.
pub(crate) fn record_outcome<T>(
    span: &Span,
    outcome: &crate::Result<T>,
    on_ok: impl FnOnce(&Span, &T),
) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(value) => on_ok(span, value),
        Err(error) => record_error(span, error),
    }
}

/// What a stream's span learns as its chunks pass.
#[derive(Debug)]
pub(crate) struct StreamTrace {
    span: Span,
    started: Instant,
    first_seen: bool,
    ids_seen: bool,
    /// Finish reasons by choice index.
    finish_reasons: Vec<(u32, String)>,
    /// With `record_content`: the answer so far, recorded when the stream ends.
    content: Option<Box<StreamAccumulator>>,
}

impl StreamTrace {
    /// Traces a stream on `span`, for a call that started at `started`.
    pub(crate) fn new(span: Span, started: Instant) -> Self {
        Self {
            span,
            started,
            first_seen: false,
            ids_seen: false,
            finish_reasons: Vec::new(),
            content: None,
        }
    }

    /// Also records the streamed answer (`gen_ai.output.messages`) when the
    /// stream ends, if `record` is true.
    pub(crate) fn recording_content(mut self, record: bool) -> Self {
        if record && !self.span.is_disabled() {
            self.content = Some(Box::default());
        }
        self
    }

    /// The stream has ended (normally or with an error): records the
    /// streamed answer when asked to.
    pub(crate) fn finish(&mut self) {
        if let Some(accumulator) = self.content.take() {
            content::record_output(&self.span, &accumulator.finish());
        }
    }

    /// The span the stream runs in.
    pub(crate) fn span(&self) -> &Span {
        &self.span
    }

    /// Looks at one item of the stream.
    pub(crate) fn observe(&mut self, item: &crate::Result<ChatChunk>) {
        if self.span.is_disabled() {
            return;
        }
        let chunk = match item {
            Ok(chunk) => chunk,
            Err(error) => return record_error(&self.span, error),
        };
        if let Some(accumulator) = self.content.as_mut() {
            accumulator.push(chunk);
        }
        if !self.first_seen {
            self.first_seen = true;
            self.span.record(
                RESPONSE_TIME_TO_FIRST_CHUNK,
                self.started.elapsed().as_secs_f64(),
            );
        }
        if !self.ids_seen && (chunk.id.is_some() || chunk.model.is_some()) {
            self.ids_seen = true;
            record_response_ids(&self.span, chunk.id.as_deref(), chunk.model.as_deref());
        }
        if let Some(usage) = &chunk.usage {
            record_usage(&self.span, usage, true);
        }
        let mut changed = false;
        for choice in &chunk.choices {
            if let Some(reason) = &choice.finish_reason {
                match self
                    .finish_reasons
                    .iter_mut()
                    .find(|(i, _)| *i == choice.index)
                {
                    Some((_, r)) => r.clone_from(reason),
                    None => self.finish_reasons.push((choice.index, reason.clone())),
                }
                changed = true;
            }
        }
        if changed {
            self.finish_reasons.sort_by_key(|(i, _)| *i);
            let reasons: Vec<&str> = self
                .finish_reasons
                .iter()
                .map(|(_, r)| r.as_str())
                .collect();
            self.span
                .record(RESPONSE_FINISH_REASONS, tracing::field::debug(&reasons));
        }
    }
}
