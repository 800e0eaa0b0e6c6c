//! `POST /v1/chat/completions`: the scripted answer as one JSON object or as an SSE
//! stream produced word by word.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::extract::ApiRequest;
use crate::fault::Fault;
use crate::reply;
use crate::script::{self, Answer, Choice, Reply};
use crate::state::InFlightGuard;
use crate::{structured, util};

/// Identifies the emulator the way `system_fingerprint` identifies a backend build.
const FINGERPRINT: &str = "evolution-emulator";

pub(crate) async fn completions(request: ApiRequest) -> Response {
    let ApiRequest {
        state,
        body,
        shape,
        guard,
        ..
    } = request;
    let object = match body.object() {
        Ok(object) => object,
        Err(message) => return reply::bad_request(message),
    };
    let mut request = match script::parse_request(object, state.config.default_model()) {
        Ok(request) => request,
        Err(message) => return reply::bad_request(message),
    };
    if let Some(format) = &request.json_schema {
        if state.config.refuse_json_schema || shape == Some(Fault::RefuseJsonSchema) {
            return reply::field_error(
                StatusCode::BAD_REQUEST,
                "response_format json_schema is not supported",
                "invalid_request",
                Some("response_format"),
            );
        }
        if format.strict {
            if let Err(message) = structured::check_strict(&format.name, &format.schema) {
                return reply::field_error(
                    StatusCode::BAD_REQUEST,
                    message,
                    "invalid_request",
                    Some("response_format"),
                );
            }
        }
    }
    request.off_schema = shape == Some(Fault::OffSchema);
    let answer = script::answer(&request, || state.next_id());
    let meta = Meta {
        id: util::random_id("chatcmpl-", 32),
        created: util::unix_now(),
        model: request.model.clone(),
        reasoning_field: state.config.reasoning_field.clone(),
    };

    if request.stream {
        let events = stream_events(&meta, &answer, request.include_usage);
        return reply::sse_response(sse_body(events, state.config.word_delay, shape, guard));
    }

    // A non-streamed answer takes as long as streaming it would have.
    let pauses = answer.choices.first().map_or(0, pauses_for);
    reply::word_pause(state.config.word_delay, pauses).await;
    let response = reply::json_answer(&completion(&meta, &answer), shape.as_ref());
    drop(guard);
    response
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    /// Where thinking goes: `reasoning_content` or `reasoning`.
    reasoning_field: String,
}

/// How many `word_delay` pauses a choice takes when streamed.
fn pauses_for(choice: &Choice) -> usize {
    let thinking = choice.thinking.as_deref().map_or(0, util::word_count);
    thinking
        + match &choice.reply {
            Reply::Text(text) => util::word_count(text),
            Reply::ToolCall { .. } => 2,
        }
}

/// The words of `text` as stream deltas of `field`: the first bare, later ones with a
/// leading space, so the joined deltas give back the text.
fn word_deltas(text: &str, field: &str) -> Vec<(bool, Value)> {
    text.split(' ')
        .filter(|w| !w.is_empty())
        .enumerate()
        .map(|(i, word)| {
            let piece = if i == 0 {
                word.to_owned()
            } else {
                format!(" {word}")
            };
            let mut delta = serde_json::Map::new();
            delta.insert(field.to_owned(), Value::String(piece));
            (true, Value::Object(delta))
        })
        .collect()
}

fn completion(meta: &Meta, answer: &Answer) -> Value {
    let choices: Vec<Value> = answer
        .choices
        .iter()
        .enumerate()
        .map(|(index, choice)| {
            let mut message = match &choice.reply {
                Reply::Text(text) => json!({"role": "assistant", "content": text}),
                Reply::ToolCall {
                    id,
                    name,
                    arguments,
                } => json!({
                    "role": "assistant",
                    "content": null,
                    "tool_calls": [{
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments}
                    }]
                }),
            };
            if let Some(thinking) = &choice.thinking {
                message[meta.reasoning_field.as_str()] = json!(thinking);
            }
            json!({
                "index": index,
                "message": message,
                "logprobs": null,
                "finish_reason": choice.finish_reason,
            })
        })
        .collect();
    json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
        "usage": answer.usage(),
    })
}

/// One SSE `data:` payload, and whether `word_delay` is waited before it.
struct Event {
    pause: bool,
    data: String,
}

fn chunk(meta: &Meta, choices: Value) -> String {
    json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": FINGERPRINT,
        "choices": choices,
    })
    .to_string()
}

fn delta_chunk(meta: &Meta, index: usize, delta: Value, finish_reason: Option<&str>) -> String {
    chunk(
        meta,
        json!([{
            "index": index,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason,
        }]),
    )
}

/// Splits at the char boundary nearest the middle, so both fragments are valid UTF-8.
fn halves(text: &str) -> (&str, &str) {
    let mut mid = text.len() / 2;
    while !text.is_char_boundary(mid) {
        mid += 1;
    }
    text.split_at(mid)
}

/// The deltas of one choice, in order, each with its pause flag: thinking words first
/// (reasoning model only), then the answer.
fn choice_deltas(choice: &Choice, reasoning_field: &str) -> Vec<(bool, Value)> {
    let mut deltas = choice
        .thinking
        .as_deref()
        .map_or_else(Vec::new, |t| word_deltas(t, reasoning_field));
    deltas.extend(reply_deltas(choice));
    deltas
}

fn reply_deltas(choice: &Choice) -> Vec<(bool, Value)> {
    match &choice.reply {
        Reply::Text(text) => word_deltas(text, "content"),
        Reply::ToolCall {
            id,
            name,
            arguments,
        } => {
            let (first, second) = halves(arguments);
            let fragment =
                |part: &str| json!({"tool_calls": [{"index": 0, "function": {"arguments": part}}]});
            vec![
                (
                    false,
                    json!({"tool_calls": [{
                        "index": 0,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""}
                    }]}),
                ),
                (true, fragment(first)),
                (true, fragment(second)),
            ]
        }
    }
}

/// Every event of the stream except `[DONE]`. With `n > 1` the choices advance in
/// lockstep, one pause per step, as a batched server would emit them.
fn stream_events(meta: &Meta, answer: &Answer, include_usage: bool) -> Vec<Event> {
    let mut events: Vec<Event> = (0..answer.choices.len())
        .map(|index| Event {
            pause: false,
            data: delta_chunk(meta, index, json!({"role": "assistant"}), None),
        })
        .collect();

    let deltas: Vec<Vec<(bool, Value)>> = answer
        .choices
        .iter()
        .map(|choice| choice_deltas(choice, &meta.reasoning_field))
        .collect();
    let steps = deltas.iter().map(Vec::len).max().unwrap_or(0);
    for step in 0..steps {
        let mut paused = false;
        for (index, choice_deltas) in deltas.iter().enumerate() {
            if let Some((pause, delta)) = choice_deltas.get(step) {
                events.push(Event {
                    pause: *pause && !paused,
                    data: delta_chunk(meta, index, delta.clone(), None),
                });
                paused |= *pause;
            }
        }
    }

    for (index, choice) in answer.choices.iter().enumerate() {
        events.push(Event {
            pause: false,
            data: delta_chunk(meta, index, json!({}), Some(choice.finish_reason)),
        });
    }
    if include_usage {
        let usage_chunk = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": answer.usage(),
        });
        events.push(Event {
            pause: false,
            data: usage_chunk.to_string(),
        });
    }
    events
}

fn data_line(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// The SSE body. Each event is yielded only after its pause, so hyper writes it to the
/// socket as it is produced; the in-flight guard lives inside the stream and is released
/// when the body ends or the client goes away.
fn sse_body(
    events: Vec<Event>,
    word_delay: Duration,
    shape: Option<Fault>,
    guard: Option<InFlightGuard>,
) -> Body {
    let total = events.len();
    let stream = async_stream::stream! {
        let _guard = guard;
        for (sent, event) in events.into_iter().enumerate() {
            match shape {
                Some(Fault::CutStream(n)) if n == sent => {
                    reply::flush_before_cut().await;
                    yield Err(reply::cut_error());
                    return;
                }
                Some(Fault::StreamError(n)) if n == sent => {
                    yield Ok(data_line(&reply::stream_error_object().to_string()));
                    return;
                }
                _ => {}
            }
            if event.pause && !word_delay.is_zero() {
                tokio::time::sleep(word_delay).await;
            }
            yield Ok::<Bytes, std::io::Error>(data_line(&event.data));
        }
        match shape {
            Some(Fault::CutStream(n)) if n >= total => {
                reply::flush_before_cut().await;
                yield Err(reply::cut_error());
            }
            Some(Fault::StreamError(n)) if n >= total => {
                yield Ok(data_line(&reply::stream_error_object().to_string()));
            }
            _ => yield Ok(data_line("[DONE]")),
        }
    };
    Body::from_stream(stream)
}
