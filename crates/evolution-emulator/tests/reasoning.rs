//! The reasoning model: thinking before the answer, in `reasoning_content` (or
//! `reasoning`), streamed word by word, with reasoning usage details.

mod common;

use clap::Parser;
use common::{chat, client, get_json, read_sse, token};
use evolution_emulator::{Emulator, EmulatorArgs, DEFAULT_MODEL, REASONING_MODEL};
use serde_json::{json, Value};

fn ask(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn the_reasoner_is_listed_after_the_configured_models() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let list = get_json(format!("{}/models", emu.base_url()), Some(&token)).await;
    assert_eq!(ids(&list), [DEFAULT_MODEL, REASONING_MODEL]);
    let one = get_json(
        format!("{}/models/{REASONING_MODEL}", emu.base_url()),
        Some(&token),
    )
    .await;
    assert_eq!(one["id"], REASONING_MODEL);
    assert_eq!(
        (one["is_billable"].clone(), one["cost"].clone()),
        (json!(false), json!(0))
    );
    emu.shutdown().await;

    let emu = Emulator::builder()
        .models(vec![REASONING_MODEL.into(), "b".into()])
        .start()
        .await
        .unwrap();
    let token = common::token(&emu).await;
    let list = get_json(format!("{}/models", emu.base_url()), Some(&token)).await;
    assert_eq!(ids(&list), [REASONING_MODEL, "b"], "listed once");
    emu.shutdown().await;

    let emu = Emulator::builder()
        .models(Vec::new())
        .start()
        .await
        .unwrap();
    let token = common::token(&emu).await;
    let list = get_json(format!("{}/models", emu.base_url()), Some(&token)).await;
    assert_eq!(ids(&list), [REASONING_MODEL]);
    let (_, body) = chat(
        &emu,
        &token,
        json!({"messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(
        body["model"], DEFAULT_MODEL,
        "requests naming no model do not think"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn a_non_streamed_answer_carries_its_thinking() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let (status, body) = chat(&emu, &token, ask(REASONING_MODEL, "why is  the sky")).await;
    assert_eq!(status, 200, "{body}");
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning_content"], "Thinking about 4 words.");
    assert_eq!(message["content"], "why is the sky");
    assert!(message.get("reasoning").is_none());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({
            "prompt_tokens": 4,
            "completion_tokens": 8,
            "total_tokens": 12,
            "completion_tokens_details": {"reasoning_tokens": 4},
            "prompt_tokens_details": {"cached_tokens": 0},
        })
    );

    // The word budget is the answer's; the thinking comes in full on top.
    let mut budgeted = ask(REASONING_MODEL, "one two three");
    budgeted["max_tokens"] = json!(1);
    let (_, body) = chat(&emu, &token, budgeted).await;
    assert_eq!(body["choices"][0]["message"]["content"], "one");
    assert_eq!(
        body["choices"][0]["message"]["reasoning_content"],
        "Thinking about 3 words."
    );
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["completion_tokens"], 1 + 4);

    // Other models neither think nor report reasoning usage.
    let (_, body) = chat(&emu, &token, ask(DEFAULT_MODEL, "plain")).await;
    assert!(body["choices"][0]["message"]
        .get("reasoning_content")
        .is_none());
    assert!(body["usage"].get("completion_tokens_details").is_none());
    emu.shutdown().await;
}

async fn stream(emu: &evolution_emulator::EmulatorHandle, token: &str, text: &str) -> Vec<Value> {
    let mut body = ask(REASONING_MODEL, text);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = client()
        .post(format!("{}/chat/completions", emu.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let events = read_sse(response).await.unwrap();
    assert_eq!(events.last().unwrap().data, "[DONE]");
    events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect()
}

#[tokio::test]
async fn a_stream_thinks_word_by_word_before_answering() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let chunks = stream(&emu, &token, "hello there").await;
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|choice| &choice["delta"]))
        .collect();
    assert_eq!(deltas[0], &json!({"role": "assistant"}));
    let thinking: Vec<&str> = deltas[1..5]
        .iter()
        .map(|d| d["reasoning_content"].as_str().unwrap())
        .collect();
    assert_eq!(thinking, ["Thinking", " about", " 2", " words."]);
    let answer: Vec<&str> = deltas[5..7]
        .iter()
        .map(|d| d["content"].as_str().unwrap())
        .collect();
    assert_eq!(answer, ["hello", " there"]);
    assert_eq!(deltas[7], &json!({}));
    assert_eq!(deltas.len(), 8);
    assert_eq!(chunks[7]["choices"][0]["finish_reason"], "stop");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 4);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_field_name_can_be_the_newer_reasoning() {
    let emu = Emulator::builder()
        .reasoning_field("reasoning")
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let (_, body) = chat(&emu, &token, ask(REASONING_MODEL, "a")).await;
    let message = &body["choices"][0]["message"];
    assert_eq!(message["reasoning"], "Thinking about 1 words.");
    assert!(message.get("reasoning_content").is_none());
    let chunks = stream(&emu, &token, "a").await;
    assert_eq!(
        chunks[1]["choices"][0]["delta"],
        json!({"reasoning": "Thinking"})
    );
    emu.shutdown().await;

    let err = Emulator::builder()
        .reasoning_field("thoughts")
        .start()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
}

#[test]
fn reasoning_field_flag() {
    let args = Cli::try_parse_from(["x"]).unwrap().emulator;
    assert_eq!(args.reasoning_field, "reasoning_content");
    let args = Cli::try_parse_from(["x", "--reasoning-field", "reasoning"])
        .unwrap()
        .emulator;
    assert_eq!(args.reasoning_field, "reasoning");
    let err = Cli::try_parse_from(["x", "--reasoning-field", "thoughts"]).unwrap_err();
    assert!(err.to_string().contains("thoughts"), "{err}");
}
