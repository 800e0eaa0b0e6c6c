//! Reasoning models under both field names (`reasoning_content`, newer
//! vLLM's `reasoning`), streamed and not, through `chat`, the stream
//! accumulator and langchain's `LLM::generate`; usage details; provider
//! fields (`extra_body`) on the wire and unknown reply fields kept.

use evolution_emulator::{Emulator, EmulatorHandle, REASONING_FIELDS, REASONING_MODEL};
use evolution_langchain::chat::StreamAccumulator;
use evolution_langchain::langchain::LLM;
use evolution_langchain::langchain_rust::schemas::Message;
use evolution_langchain::{ChatMessage, ChatOptions, Error, EvolutionInference};
use futures::StreamExt;
use serde_json::json;

mod common;

async fn reasoner(field: &str) -> (EmulatorHandle, EvolutionInference) {
    let emu = Emulator::builder()
        .reasoning_field(field)
        .start()
        .await
        .unwrap();
    let llm = common::client(&emu).model(REASONING_MODEL).build().unwrap();
    (emu, llm)
}

#[tokio::test]
async fn chat_exposes_the_thinking_apart_from_the_answer() {
    for field in REASONING_FIELDS {
        let (_emu, llm) = reasoner(field).await;
        let reply = llm
            .chat(&[ChatMessage::user("one two three")], &ChatOptions::new())
            .await
            .unwrap();
        assert_eq!(reply.content(), "one two three", "{field}");
        assert_eq!(
            reply.reasoning(),
            Some("Thinking about 3 words."),
            "{field}"
        );
        let usage = reply.usage().unwrap();
        assert_eq!(usage.reasoning_tokens(), Some(4), "{field}");
        assert_eq!(usage.cached_tokens(), Some(0), "{field}");
        assert_eq!(usage.completion_tokens, 7, "thinking + answer words");
        // The raw field is there under the name the server used.
        let raw = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            raw["choices"][0]["message"][field],
            "Thinking about 3 words."
        );
        assert_eq!(
            llm.invoke("a b").await.unwrap(),
            "a b",
            "invoke: the answer only"
        );
    }
}

#[tokio::test]
async fn streams_and_the_accumulator_join_the_thinking() {
    for field in REASONING_FIELDS {
        let (_emu, llm) = reasoner(field).await;
        let mut stream = llm.stream("alpha beta").await.unwrap();
        let (mut thinking, mut answer) = (String::new(), String::new());
        let mut accumulator = StreamAccumulator::default();
        let mut thinking_done_before_answer = true;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.unwrap();
            accumulator.push(&chunk);
            if let Some(piece) = chunk.reasoning() {
                thinking_done_before_answer &= answer.is_empty();
                thinking.push_str(piece);
            }
            if let Some(piece) = chunk.content() {
                answer.push_str(piece);
            }
        }
        assert_eq!(thinking, "Thinking about 2 words.", "{field}");
        assert_eq!(answer, "alpha beta", "{field}");
        assert!(thinking_done_before_answer);
        let usage = accumulator.usage().unwrap();
        assert_eq!(usage.reasoning_tokens(), Some(4));
        let reply = accumulator.finish();
        assert_eq!(reply.reasoning(), Some("Thinking about 2 words."));
        assert_eq!(reply.content(), "alpha beta");

        // A client that streams under the hood gives the same reply.
        let streaming = llm.clone();
        let reply = streaming
            .chat(
                &[ChatMessage::user("alpha beta")],
                &ChatOptions::new().streaming(true),
            )
            .await
            .unwrap();
        assert_eq!(reply.reasoning(), Some("Thinking about 2 words."));
        assert_eq!(reply.content(), "alpha beta");
        assert_eq!(reply.usage().unwrap().reasoning_tokens(), Some(4));
    }
}

#[tokio::test]
async fn langchain_generate_returns_the_answer_without_the_thinking() {
    for field in REASONING_FIELDS {
        let (_emu, llm) = reasoner(field).await;
        let result = LLM::generate(&llm, &[Message::new_human_message("red green blue")])
            .await
            .unwrap();
        assert_eq!(result.generation, "red green blue", "{field}");
        assert!(!result.generation.contains("Thinking"));
        assert_eq!(result.tokens.unwrap().completion_tokens, 7);
    }
}

#[tokio::test]
async fn reasoning_effort_and_extra_body_reach_the_wire() {
    let emu = common::emulator().await;
    let llm = common::client(&emu)
        .reasoning_effort("low")
        .extra_body(
            json!({"top_k": 20, "chat_template_kwargs": {"enable_thinking": true}})
                .as_object()
                .unwrap()
                .clone(),
        )
        .build()
        .unwrap();
    llm.chat(
        &[ChatMessage::user("hi")],
        ChatOptions::new()
            .extra("top_k", 5)
            .extra("repetition_penalty", 1.05),
    )
    .await
    .unwrap();
    let body = common::last_body(&emu);
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(body["top_k"], 5, "the call's key wins");
    assert_eq!(body["repetition_penalty"], 1.05);
    assert_eq!(
        body["chat_template_kwargs"],
        json!({"enable_thinking": true})
    );
    assert_eq!(body["model"], "emulator/echo-1", "standard fields stay");
    assert!(body.get("extra_body").is_none());

    // Streamed requests carry them too.
    let mut stream = llm
        .stream_chat(&[ChatMessage::user("s")], ChatOptions::new())
        .await
        .unwrap();
    while stream.next().await.is_some() {}
    assert_eq!(common::last_body(&emu)["top_k"], 20);

    // A key naming a standard field is refused before anything is sent.
    let before = emu.counters().chat_requests;
    for clash in [
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
    ] {
        let err = llm
            .chat(
                &[ChatMessage::user("x")],
                ChatOptions::new().extra(clash, 1),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { ref field, .. } if field == "extra_body"),
            "{clash}: {err:?}"
        );
        assert!(err.to_string().contains(clash), "{err}");
    }
    assert_eq!(emu.counters().chat_requests, before);
    // At build time the same rule is a configuration error.
    let err = common::client(&emu)
        .options(ChatOptions::new().extra("messages", json!([])))
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
}

#[tokio::test]
async fn models_keep_the_catalogue_fields() {
    let emu = common::emulator().await;
    let models = common::llm(&emu).list_models().await.unwrap();
    assert!(models.len() >= 2);
    for model in &models {
        assert_eq!(model.is_billable(), Some(false), "{}", model.id);
        assert_eq!(model.cost(), Some(0.0));
        assert_eq!(model.extra["object"], "model");
    }
}
