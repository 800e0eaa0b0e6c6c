//! The emulator's answers against real llama.cpp replies (tests/fixtures): same shapes,
//! and relayed byte for byte in upstream mode.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use common::{chat, post as post_v1, read_sse, token};
use evolution_emulator::Emulator;
use serde_json::{json, Value};

const CHAT: &str = include_str!("fixtures/llama-server.chat.json");
const STREAM: &str = include_str!("fixtures/llama-server.stream-short.sse");
const MODELS: &str = include_str!("fixtures/llama-server.models.json");
const ERROR_400: &str = include_str!("fixtures/llama-server.error-400.json");

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every listed key of `reference` is in `ours` with the same JSON type.
fn assert_same_shape(ours: &Value, reference: &Value, keys: &[&str], what: &str) {
    for key in keys {
        let r = reference
            .get(key)
            .unwrap_or_else(|| panic!("fixture {what} lacks {key}"));
        let o = ours
            .get(key)
            .unwrap_or_else(|| panic!("our {what} lacks {key}: {ours}"));
        assert_eq!(kind(o), kind(r), "{what}.{key}: ours {o}, llama.cpp {r}");
    }
}

const TOP: &[&str] = &[
    "id",
    "object",
    "created",
    "model",
    "system_fingerprint",
    "choices",
];
const USAGE: &[&str] = &["prompt_tokens", "completion_tokens", "total_tokens"];

fn question() -> Value {
    json!({"model": "smollm2-135m-instruct", "max_tokens": 30, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"}
    ]})
}

#[tokio::test]
async fn json_answer_has_the_llama_cpp_shape() {
    let reference: Value = serde_json::from_str(CHAT).unwrap();
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, ours) = chat(&emu, &token, question()).await;
    assert_eq!(status, 200);
    assert_same_shape(&ours, &reference, TOP, "completion");
    assert_eq!(ours["object"], reference["object"]);
    assert_same_shape(&ours["usage"], &reference["usage"], USAGE, "usage");
    let (o, r) = (&ours["choices"][0], &reference["choices"][0]);
    assert_same_shape(o, r, &["index", "finish_reason", "message"], "choice");
    assert_same_shape(
        &o["message"],
        &r["message"],
        &["role", "content"],
        "message",
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn error_400_matches_llama_cpp() {
    let reference: Value = serde_json::from_str(ERROR_400).unwrap();
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, ours) = chat(&emu, &token, json!({"model": "m", "messages": "nope"})).await;
    assert_eq!(status, 400);
    assert_eq!(ours["error"]["message"], reference["error"]["message"]);
    assert_eq!(ours["error"]["type"], reference["error"]["type"]);
    emu.shutdown().await;
}

fn fixture_events() -> Vec<Value> {
    STREAM
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn sse_chunks_have_the_llama_cpp_shape() {
    let reference = fixture_events();
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut body = question();
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = read_sse(post_v1(&emu, &token, "/chat/completions", body).await)
        .await
        .unwrap();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert!(STREAM.ends_with("data: [DONE]\n\n"));
    let ours: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();

    // role chunk, first content chunk, finish chunk, usage chunk
    let pairs = [
        (&ours[0], &reference[0]),
        (&ours[1], &reference[1]),
        (&ours[ours.len() - 2], &reference[reference.len() - 2]),
    ];
    for (o, r) in pairs {
        assert_same_shape(o, r, TOP, "chunk");
        assert_eq!(o["object"], r["object"]);
        let (oc, rc) = (&o["choices"][0], &r["choices"][0]);
        assert_same_shape(oc, rc, &["index", "delta", "finish_reason"], "chunk choice");
    }
    assert_eq!(ours[0]["choices"][0]["delta"]["role"], "assistant");
    assert_same_shape(
        &ours[1]["choices"][0]["delta"],
        &reference[1]["choices"][0]["delta"],
        &["content"],
        "delta",
    );
    let (ou, ru) = (ours.last().unwrap(), reference.last().unwrap());
    assert_same_shape(
        ou,
        ru,
        &["id", "object", "created", "model", "choices", "usage"],
        "usage chunk",
    );
    assert_eq!(ou["choices"], json!([]));
    assert_eq!(ru["choices"], json!([]));
    assert_same_shape(&ou["usage"], &ru["usage"], USAGE, "usage");
    emu.shutdown().await;
}

/// A stand-in llama-server that replays the recorded bytes, one event at a time.
async fn llama_replay() -> (String, tokio::task::JoinHandle<()>) {
    let stream = || async {
        let events: Vec<String> = STREAM.split_inclusive("\n\n").map(str::to_owned).collect();
        let body = Body::from_stream(async_stream::stream! {
            for event in events {
                tokio::time::sleep(Duration::from_millis(2)).await;
                yield Ok::<Bytes, std::io::Error>(Bytes::from(event));
            }
        });
        ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
    };
    let models =
        || async { ([(header::CONTENT_TYPE, "application/json")], MODELS).into_response() };
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(stream))
        .route("/v1/models", get(models));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, task)
}

#[tokio::test]
async fn upstream_mode_relays_llama_cpp_bytes_unchanged() {
    let (upstream, server) = llama_replay().await;
    let emu = Emulator::builder()
        .upstream(upstream)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;

    let mut body = question();
    body["stream"] = json!(true);
    let response = post_v1(&emu, &token, "/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.text().await.unwrap(), STREAM);

    let response = common::client()
        .get(format!("{}/models", emu.base_url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.text().await.unwrap(), MODELS);
    emu.shutdown().await;
    server.abort();
}
