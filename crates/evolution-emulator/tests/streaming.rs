//! SSE streaming from the scripted responder.

mod common;

use std::time::{Duration, Instant};

use common::{chat, joined_content, post, read_sse, streamed, token, user};
use evolution_emulator::Emulator;
use serde_json::{json, Value};

#[tokio::test]
async fn stream_shape_matches_openai_and_the_json_answer() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let prompt = "The   capital of\nFrance is Paris.";
    let (_, json_answer) = chat(&emu, &token, user(prompt)).await;

    let mut body = streamed(prompt);
    body["stream_options"] = json!({"include_usage": true});
    let response = post(&emu, &token, "/chat/completions", body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = read_sse(response).await.unwrap();

    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    let id = chunks[0]["id"].clone();
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], id, "one id for the whole stream");
        assert_eq!(chunk["model"], "test-model");
    }
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    // role, 6 words, finish, usage
    assert_eq!(chunks.len(), 1 + 6 + 1 + 1);
    assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "The");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], " capital");
    let finish = &chunks[7]["choices"][0];
    assert_eq!(finish["finish_reason"], "stop");
    assert_eq!(finish["delta"], json!({}));
    for chunk in &chunks[..7] {
        assert_eq!(chunk["choices"][0]["finish_reason"], Value::Null);
    }
    let usage_chunk = &chunks[8];
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(usage_chunk["usage"], json_answer["usage"]);

    assert_eq!(
        joined_content(&events, 0),
        json_answer["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    let c = emu.counters();
    assert_eq!((c.chat_requests, c.stream_requests), (2, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn no_usage_chunk_unless_asked() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let response = post(&emu, &token, "/chat/completions", streamed("a b")).await;
    let events = read_sse(response).await.unwrap();
    assert!(events.iter().all(|e| !e.data.contains("\"usage\"")));
    assert_eq!(events.len(), 1 + 2 + 1 + 1);
    emu.shutdown().await;
}

#[tokio::test]
async fn streamed_truncation_stop_and_n() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    let mut body = streamed("one two three four");
    body["max_tokens"] = json!(2);
    body["n"] = json!(2);
    let events = read_sse(post(&emu, &token, "/chat/completions", body).await)
        .await
        .unwrap();
    for index in 0..2 {
        assert_eq!(joined_content(&events, index), "one two");
    }
    let finishes: Vec<(Value, Value)> = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| e.json())
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .map(|c| {
            (
                c["choices"][0]["index"].clone(),
                c["choices"][0]["finish_reason"].clone(),
            )
        })
        .collect();
    assert_eq!(
        finishes,
        [(json!(0), json!("length")), (json!(1), json!("length"))]
    );

    let mut body = streamed("keep this STOP not this");
    body["stop"] = json!("STOP");
    let events = read_sse(post(&emu, &token, "/chat/completions", body).await)
        .await
        .unwrap();
    assert_eq!(joined_content(&events, 0), "keep this");
    emu.shutdown().await;
}

#[tokio::test]
async fn tool_calls_stream_as_deltas() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let mut body = streamed("lookup Oslo");
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let events = read_sse(post(&emu, &token, "/chat/completions", body).await)
        .await
        .unwrap();
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant"})
    );
    let head = &chunks[1]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(head["index"], 0);
    assert!(head["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(head["type"], "function");
    assert_eq!(head["function"]["name"], "lookup");
    let fragments: Vec<&str> = chunks[2..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert!(fragments.iter().all(|f| !f.is_empty()));
    let args: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(args, json!({"query": "Oslo"}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(chunks.len(), 5);
    emu.shutdown().await;
}

#[tokio::test]
async fn words_are_written_as_they_are_produced() {
    let delay = Duration::from_millis(150);
    let emu = Emulator::builder().word_delay(delay).start().await.unwrap();
    let token = token(&emu).await;
    let started = Instant::now();
    let response = post(
        &emu,
        &token,
        "/chat/completions",
        streamed("w1 w2 w3 w4 w5 w6"),
    )
    .await;

    // Read the first word by hand, and check the stream is still running meanwhile.
    let mut body = response.bytes_stream();
    let mut seen = String::new();
    use futures::StreamExt;
    while !seen.contains("\"w1\"") {
        let chunk = body.next().await.expect("more body").expect("chunk");
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let first_word_at = started.elapsed();
    assert!(!seen.contains("w6"), "the last word must not be sent yet");
    assert_eq!(emu.counters().in_flight, 1, "the stream is still in flight");
    while let Some(chunk) = body.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let total = started.elapsed();
    assert!(seen.ends_with("data: [DONE]\n\n"));
    assert!(first_word_at >= delay, "{first_word_at:?}");
    assert!(total >= delay * 6, "{total:?}");
    assert!(
        total - first_word_at >= delay * 4,
        "first {first_word_at:?}, total {total:?}"
    );
    // The guard is released when the body ends.
    tokio::time::timeout(Duration::from_secs(2), async {
        while emu.counters().in_flight != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("in_flight returns to 0");
    emu.shutdown().await;
}

#[tokio::test]
async fn non_streamed_answers_take_words_times_delay() {
    let delay = Duration::from_millis(100);
    let emu = Emulator::builder().word_delay(delay).start().await.unwrap();
    let token = token(&emu).await;
    let started = Instant::now();
    let (status, _) = chat(&emu, &token, user("a b c d")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay * 4, "{:?}", started.elapsed());
    emu.shutdown().await;
}
