//! Streaming answers: server-sent events → [`ChatChunk`]s, and the
//! accumulator that folds chunks back into a [`ChatResponse`].

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use memchr::memmem::Finder;

use super::sse::{SseDecoder, SseEvent};
use super::wire::{ChatChunk, ChatResponse, Choice, ResponseMessage, ToolCall, Usage};
use crate::error::{Error, RequestId, Result};
use crate::telemetry::StreamTrace;
use crate::transport::connection::DEFAULT_MAX_EVENT_SIZE;
use crate::transport::http::describe_error;
use crate::transport::server_error::ServerError;
use crate::transport::{OpenStream, Transport};

/// A streamed answer: chunks as the model writes them.
///
/// Ends after the server's `[DONE]`. If the stream breaks first (connection
/// lost, malformed data, an error event, no `[DONE]`), the chunks that did
/// arrive are yielded and then one `Err` item; it is never retried once a
/// chunk has been delivered.
pub struct ChatStream {
    inner: Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>>,
    request_id: Option<RequestId>,
    /// The call's GenAI span, entered on every poll; `None` for a stream
    /// from [`from_byte_stream`](Self::from_byte_stream).
    trace: Option<StreamTrace>,
}

/// How a byte stream is read: the bounds that keep a hostile server from
/// holding it open or filling memory, and the call's ids for its errors.
struct ReadLimits {
    /// Where the stream comes from, for a stall's timeout error.
    url: String,
    idle_timeout: Duration,
    max_event_size: usize,
    deadline: Option<tokio::time::Instant>,
    request_id: Option<RequestId>,
}

impl ChatStream {
    /// Reads SSE from a stream the transport opened, within its limits.
    pub(crate) fn from_open(open: OpenStream) -> Self {
        let limits = ReadLimits {
            url: open.url,
            idle_timeout: open.idle_timeout,
            max_event_size: open.max_event_size,
            deadline: open.deadline,
            request_id: Some(open.request_id),
        };
        let body = futures::TryStreamExt::map_err(open.response.bytes_stream(), |e| {
            StreamReadError(describe_error(&e))
        });
        Self::decode(body, limits)
    }

    /// Decodes an SSE byte stream, e.g. one recorded earlier;
    /// `idle_timeout` bounds each wait for more, and one event may be up to
    /// [`DEFAULT_MAX_EVENT_SIZE`](crate::DEFAULT_MAX_EVENT_SIZE) long.
    pub fn from_byte_stream<S, B, E>(body: S, idle_timeout: Duration) -> Self
    where
        S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send,
        E: Into<StreamReadError> + Send,
    {
        let limits = ReadLimits {
            url: "the stream".to_string(),
            idle_timeout,
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            deadline: None,
            request_id: None,
        };
        Self::decode(body, limits)
    }

    /// This stream, correcting the tokens limiter of `transport` (which
    /// charged `estimated` tokens for it) when the usage chunk arrives.
    pub(crate) fn settling(mut self, transport: Arc<Transport>, estimated: u32) -> Self {
        let inner = std::mem::replace(&mut self.inner, Box::pin(futures::stream::empty()));
        self.inner = Box::pin(inner.inspect(move |item| {
            let Some(usage) = item.as_ref().ok().and_then(|chunk| chunk.usage) else {
                return;
            };
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let transport = Arc::clone(&transport);
                runtime.spawn(async move { transport.settle(estimated, usage.charged()).await });
            }
        }));
        self
    }

    /// The ids of the call that opened this stream (`None` for a stream
    /// from [`from_byte_stream`](Self::from_byte_stream)).
    pub fn request_id(&self) -> Option<&RequestId> {
        self.request_id.as_ref()
    }

    fn decode<S, B, E>(body: S, limits: ReadLimits) -> Self
    where
        S: Stream<Item = std::result::Result<B, E>> + Send + 'static,
        B: AsRef<[u8]> + Send,
        E: Into<StreamReadError> + Send,
    {
        let ReadLimits {
            url,
            idle_timeout,
            max_event_size,
            deadline,
            request_id,
        } = limits;
        let inner = async_stream::stream! {
            let mut body = std::pin::pin!(body);
            let mut decoder = SseDecoder::with_max_event_size(max_event_size);
            let mut ended = false;
            while !ended {
                let wait = tokio::time::Instant::now() + idle_timeout;
                let until = deadline.map_or(wait, |d| d.min(wait));
                match tokio::time::timeout_at(until, body.next()).await {
                    Err(_) if deadline.is_some_and(|d| d <= until) => {
                        yield Err(stream_error("the stream did not end within stream_deadline; the server kept it open".into()));
                        return;
                    }
                    Err(_) => {
                        // The server went quiet: the same failure as a reply
                        // that never came, whatever had arrived before.
                        yield Err(Error::Timeout { url, timeout: idle_timeout, attempts: 1, request_id: None });
                        return;
                    }
                    Ok(Some(Err(e))) => {
                        let e: StreamReadError = e.into();
                        yield Err(stream_error(format!("the connection broke: {}", e.0)));
                        return;
                    }
                    Ok(Some(Ok(bytes))) => decoder.push(bytes.as_ref()),
                    Ok(None) => ended = true,
                }
                if decoder.is_over_limit() {
                    yield Err(Error::TooLarge {
                        what: "a server-sent event (or line) of the stream".into(),
                        limit: max_event_size,
                        setting: "max_event_size".into(),
                        request_id: None,
                    });
                    return;
                }
                // At the end, a last event without its blank line still counts.
                let mut last = if ended { decoder.finish() } else { None };
                while let Some(event) = decoder.next_event().or_else(|| last.take()) {
                    match interpret(event) {
                        Step::Chunk(chunk) => yield Ok(*chunk),
                        Step::Skip => {}
                        Step::Done => return,
                        Step::Fail(error) => {
                            yield Err(error);
                            return;
                        }
                    }
                }
            }
            yield Err(stream_error("the stream ended without [DONE]; the answer may be incomplete".into()));
        };
        let inner: Pin<Box<dyn Stream<Item = Result<ChatChunk>> + Send>> = match request_id.clone()
        {
            Some(id) => Box::pin(inner.map(move |item| item.map_err(|e| e.with_request_id(&id)))),
            None => Box::pin(inner),
        };
        Self {
            inner,
            request_id,
            trace: None,
        }
    }

    /// Runs the stream in the call's span, recording what its chunks say.
    pub(crate) fn traced(mut self, trace: StreamTrace) -> Self {
        self.trace = Some(trace);
        self
    }

    /// Reads the whole stream and assembles the complete response (text,
    /// tool calls, finish reasons, usage).
    pub async fn collect_response(mut self) -> Result<ChatResponse> {
        let mut accumulator = StreamAccumulator::default();
        while let Some(chunk) = self.next().await {
            accumulator.push(&chunk?);
        }
        Ok(accumulator.finish())
    }
}

/// A transport error while reading a stream body, as text.
#[derive(Debug)]
pub struct StreamReadError(String);

impl From<reqwest::Error> for StreamReadError {
    fn from(error: reqwest::Error) -> Self {
        Self(describe_error(&error))
    }
}

impl From<std::io::Error> for StreamReadError {
    fn from(error: std::io::Error) -> Self {
        Self(error.to_string())
    }
}

impl From<std::convert::Infallible> for StreamReadError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl Stream for ChatStream {
    type Item = Result<ChatChunk>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(trace) = this.trace.as_mut() else {
            return this.inner.as_mut().poll_next(cx);
        };
        let polled = trace.span().in_scope(|| this.inner.as_mut().poll_next(cx));
        if let Poll::Ready(Some(item)) = &polled {
            trace.observe(item);
        }
        // The end, or an error (always the last item): the call is over.
        // Ending its span now gives it its true duration, however long the
        // stream itself is kept.
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            trace.finish();
            this.trace = None;
        }
        polled
    }
}

impl fmt::Debug for ChatStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChatStream")
    }
}

fn stream_error(message: String) -> Error {
    Error::stream(message)
}

enum Step {
    Chunk(Box<ChatChunk>),
    Skip,
    Done,
    Fail(Error),
}

/// Searchers for the two keys `interpret` looks for, built once.
static CHOICES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));
static ERROR_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"error\""));

/// Every field of a chunk has a default, so any JSON object parses as one;
/// a real chunk names `choices` (possibly empty) or carries usage.
fn is_chunk(chunk: &ChatChunk, data: &str) -> bool {
    !chunk.choices.is_empty()
        || chunk.usage.is_some()
        || CHOICES_KEY.find(data.as_bytes()).is_some()
}

fn interpret(event: SseEvent) -> Step {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Step::Done;
    }
    if data.is_empty() {
        return Step::Skip;
    }
    // Fast path: a chunk parses straight into its type. Only events that
    // mention an "error" key (rare) take the slower look at the raw JSON.
    if event.event.as_deref() != Some("error") && ERROR_KEY.find(data.as_bytes()).is_none() {
        if let Ok(chunk) = serde_json::from_str::<ChatChunk>(data) {
            if is_chunk(&chunk, data) {
                return Step::Chunk(Box::new(chunk));
            }
        }
    }
    let value: serde_json::Value = match serde_json::from_str(data) {
        Ok(value) => value,
        Err(e) => {
            return Step::Fail(stream_error(format!(
                "a chunk is not JSON ({e}): {}",
                crate::error::truncate_message(data)
            )))
        }
    };
    let error_object = value.get("error").is_some_and(|e| !e.is_null())
        || value.get("object").and_then(|o| o.as_str()) == Some("error");
    if event.event.as_deref() == Some("error") || error_object {
        let server = ServerError::from_value(&value).unwrap_or_default();
        return Step::Fail(stream_error(format!(
            "the server sent an error: {}",
            if server.message.is_empty() {
                data
            } else {
                &server.message
            }
        )));
    }
    match serde_json::from_value::<ChatChunk>(value) {
        Ok(chunk) if is_chunk(&chunk, data) => Step::Chunk(Box::new(chunk)),
        Ok(_) => Step::Fail(stream_error(format!(
            "an event has neither `choices` nor `usage`: {}",
            crate::error::truncate_message(data)
        ))),
        Err(e) => Step::Fail(stream_error(format!(
            "a chunk is not a chat.completion.chunk ({e}): {}",
            crate::error::truncate_message(data)
        ))),
    }
}

/// Folds stream chunks into a complete [`ChatResponse`]: text appended per
/// choice, tool-call fragments joined by their index, the last finish
/// reason and usage kept.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    choices: BTreeMap<u32, ChoiceParts>,
    usage: Option<Usage>,
}

#[derive(Debug, Default)]
struct ChoiceParts {
    content: String,
    has_content: bool,
    reasoning: Option<String>,
    tool_calls: BTreeMap<u32, ToolCall>,
    finish_reason: Option<String>,
}

impl StreamAccumulator {
    /// Adds one chunk.
    pub fn push(&mut self, chunk: &ChatChunk) {
        self.id = self.id.take().or_else(|| chunk.id.clone());
        self.model = self.model.take().or_else(|| chunk.model.clone());
        self.created = self.created.or(chunk.created);
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        for choice in &chunk.choices {
            let parts = self.choices.entry(choice.index).or_default();
            if let Some(text) = &choice.delta.content {
                parts.content.push_str(text);
                parts.has_content = true;
            }
            if let Some(text) = choice.delta.reasoning_text() {
                parts
                    .reasoning
                    .get_or_insert_with(String::new)
                    .push_str(text);
            }
            for fragment in &choice.delta.tool_calls {
                let call = parts
                    .tool_calls
                    .entry(fragment.index)
                    .or_insert_with(|| ToolCall::new("", "", ""));
                if let Some(id) = fragment.id.as_deref().filter(|id| !id.is_empty()) {
                    call.id = id.to_string();
                }
                if let Some(function) = &fragment.function {
                    if let Some(name) = &function.name {
                        call.function.name.push_str(name);
                    }
                    if let Some(arguments) = &function.arguments {
                        call.function.arguments.push_str(arguments);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                parts.finish_reason = choice.finish_reason.clone();
            }
        }
    }

    /// The usage reported so far.
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// The assembled response.
    pub fn finish(self) -> ChatResponse {
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self
                .choices
                .into_iter()
                .map(|(index, parts)| Choice {
                    index,
                    message: ResponseMessage {
                        role: Some("assistant".into()),
                        content: parts.has_content.then_some(parts.content),
                        tool_calls: parts.tool_calls.into_values().collect(),
                        reasoning_content: parts.reasoning,
                        ..ResponseMessage::default()
                    },
                    finish_reason: parts.finish_reason,
                    ..Choice::default()
                })
                .collect(),
            usage: self.usage,
            ..ChatResponse::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_bytes(parts: Vec<&'static [u8]>) -> ChatStream {
        let reads = futures::stream::iter(parts.into_iter().map(Ok::<_, std::convert::Infallible>));
        ChatStream::from_byte_stream(reads, Duration::from_secs(5))
    }

    #[tokio::test]
    async fn recorded_stream_assembles_the_answer() {
        let body = include_bytes!("../../tests/fixtures/llama-server.stream-short.sse");
        let response = from_bytes(vec![body]).collect_response().await.unwrap();
        assert_eq!(
            response.content(),
            "L'Étoile, la Marseillaise, la femme au martyre, la femme au martyre. La femme au"
        );
        assert_eq!(response.finish_reason(), Some("length"));
        assert_eq!(response.usage.unwrap().completion_tokens, 30);
        let usage = response.usage.expect("usage chunk");
        assert_eq!(
            usage.total_tokens,
            usage.prompt_tokens + usage.completion_tokens
        );
    }

    #[tokio::test]
    async fn a_stream_without_done_ends_in_an_error() {
        let mut stream = from_bytes(vec![
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        ]);
        assert_eq!(stream.next().await.unwrap().unwrap().content(), Some("Hi"));
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("without [DONE]"), "{err}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn a_final_done_without_blank_line_still_ends_cleanly() {
        let stream = from_bytes(vec![
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            b"data: [DONE]",
        ]);
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().content(), Some("Hi"));
    }

    #[tokio::test]
    async fn null_error_fields_and_error_objects() {
        // Some proxies put `"error": null` on every chunk: not an error.
        let items: Vec<_> = from_bytes(vec![
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}],\"error\":null}\n\ndata: [DONE]\n\n",
        ])
        .collect()
        .await;
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].as_ref().unwrap().content(), Some("ok"));
        // vLLM's older error shape, then [DONE]: an error, not a clean end.
        let items: Vec<_> = from_bytes(vec![
            b"data: {\"object\":\"error\",\"message\":\"CUDA out of memory\"}\n\ndata: [DONE]\n\n",
        ])
        .collect()
        .await;
        let err = items[0].as_ref().unwrap_err().to_string();
        assert!(err.contains("CUDA out of memory"), "{err}");
        // A JSON object that is no chunk at all.
        let items: Vec<_> = from_bytes(vec![b"data: {\"unrelated\":1}\n\ndata: [DONE]\n\n"])
            .collect()
            .await;
        assert!(items[0].is_err());
    }

    #[tokio::test]
    async fn an_error_event_ends_the_stream() {
        let mut stream = from_bytes(vec![
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
            b"data: {\"error\":{\"message\":\"model overloaded\",\"type\":\"server_error\"}}\n\n",
        ]);
        assert!(stream.next().await.unwrap().is_ok());
        let err = stream.next().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("model overloaded"), "{err}");
        assert!(stream.next().await.is_none());
    }

    #[tokio::test]
    async fn tool_call_fragments_are_joined_by_index() {
        let body: &'static [u8] = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Lima\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: [DONE]\n\n";
        let response = from_bytes(vec![body]).collect_response().await.unwrap();
        assert_eq!(
            response.tool_calls(),
            &[ToolCall::new("call_1", "weather", "{\"city\":\"Lima\"}")]
        );
        assert_eq!(response.finish_reason(), Some("tool_calls"));
        assert_eq!(response.choices[0].message.content, None);
    }
}
