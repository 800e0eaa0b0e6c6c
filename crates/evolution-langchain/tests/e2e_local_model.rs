//! End to end on a real model: EvolutionInference → emulator (IAM, bearer
//! checks, `--upstream`) → llama.cpp's llama-server serving SmolLM2-135M.
//!
//! Needs `LOCAL_MODEL_URL` (e.g. `http://127.0.0.1:18080/v1`), which
//! `scripts/test.sh` sets after `scripts/local-model.sh start`. The tests are
//! `#[ignore]`d so a plain `cargo test` does not need the model; the test
//! script runs them with `--ignored` and fails loudly when the model is
//! missing. Run alone: `LOCAL_MODEL_URL=… cargo test -p evolution-langchain
//! --test e2e_local_model -- --ignored --test-threads 1`.
#![cfg(feature = "langchain")]

use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, EmulatorHandle};
use evolution_langchain::langchain_rust::chain::conversational::builder::ConversationalChainBuilder;
use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder};
use evolution_langchain::langchain_rust::memory::SimpleMemory;
use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
use evolution_langchain::langchain_rust::{
    fmt_template, message_formatter, prompt_args, template_fstring,
};
use evolution_langchain::{
    ChatMessage, ChatOptions, EvolutionInference, EvolutionInferenceBuilder,
};
use futures::StreamExt;

const MODEL: &str = "smollm2-135m-instruct";

fn model_url() -> String {
    std::env::var("LOCAL_MODEL_URL").expect(
        "LOCAL_MODEL_URL is not set: run scripts/test.sh, or scripts/local-model.sh start and export the URL it prints",
    )
}

async fn stack(token_ttl: Duration) -> EmulatorHandle {
    Emulator::builder()
        .upstream(model_url())
        .token_ttl(token_ttl)
        .start()
        .await
        .expect("emulator starts")
}

fn client(emu: &EmulatorHandle) -> EvolutionInferenceBuilder {
    EvolutionInference::builder()
        .model(MODEL)
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .temperature(0.0)
        // A 135M model on two cores: generous, but bounded.
        .request_timeout(Duration::from_secs(120))
}

fn france() -> Vec<ChatMessage> {
    vec![
        // "Answer in one short sentence" gives the model a clear margin;
        // without it SmolLM2-135M wavers between English and French here.
        ChatMessage::system("You are a helpful assistant. Answer in one short sentence."),
        ChatMessage::user("What is the capital of France?"),
    ]
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn answers_the_france_question_with_consistent_usage() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu).max_tokens(30).build().unwrap();
    let response = llm.chat(&france(), &ChatOptions::default()).await.unwrap();
    assert!(
        response.content().contains("Paris"),
        "{:?}",
        response.content()
    );
    let usage = response.usage.expect("llama-server reports usage");
    assert!(usage.completion_tokens > 0);
    assert!(usage.completion_tokens <= 30);
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(emu.counters().auth_requests, 1);
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn streaming_matches_the_plain_answer() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu).max_tokens(40).build().unwrap();
    let plain = llm.chat(&france(), &ChatOptions::default()).await.unwrap();
    let mut stream = llm
        .stream_chat(&france(), &ChatOptions::default())
        .await
        .unwrap();
    let mut joined = String::new();
    let mut pieces = 0;
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(text) = chunk.content() {
            joined.push_str(text);
            pieces += 1;
        }
        usage = usage.or(chunk.usage);
    }
    assert_eq!(joined, plain.content());
    assert!(pieces > 1, "streamed in {pieces} piece(s)");
    assert_eq!(
        usage.unwrap().completion_tokens,
        plain.usage.unwrap().completion_tokens
    );
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn stop_sequences_and_max_tokens_are_honoured() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu).build().unwrap();
    let short = llm
        .chat(&france(), &ChatOptions::new().max_tokens(3))
        .await
        .unwrap();
    assert_eq!(short.finish_reason(), Some("length"));
    assert!(short.usage.unwrap().completion_tokens <= 3);

    let stopped = llm
        .chat(
            &france(),
            &ChatOptions::new().max_tokens(30).stop(["Paris"]),
        )
        .await
        .unwrap();
    assert_eq!(stopped.finish_reason(), Some("stop"));
    assert!(
        !stopped.content().contains("Paris"),
        "{:?}",
        stopped.content()
    );
    assert!(
        stopped.content().contains("France"),
        "{:?}",
        stopped.content()
    );
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn generate_keeps_prompt_order() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu)
        .max_tokens(16)
        .max_concurrency(4)
        .build()
        .unwrap();
    // Questions this model answers correctly at temperature 0.
    let cases = [
        ("Germany", "Berlin"),
        ("Japan", "Tokyo"),
        ("England", "London"),
        ("Russia", "Moscow"),
        ("China", "Beijing"),
        ("Germany", "Berlin"),
        ("Japan", "Tokyo"),
        ("England", "London"),
    ];
    let prompts: Vec<String> = cases
        .iter()
        .map(|(country, _)| format!("What is the capital of {country}?"))
        .collect();
    let result = llm
        .invoke_batch(&prompts, ChatOptions::default())
        .await
        .unwrap();
    assert_eq!(result.generations.len(), 8);
    for (generation, (country, capital)) in result.generations.iter().zip(cases) {
        assert!(
            generation[0].text.contains(capital),
            "{country}: {:?}",
            generation[0].text
        );
    }
    assert!(result.usage.completion_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a local model: scripts/test.sh"]
async fn five_second_tokens_during_a_twenty_second_streaming_session() {
    let emu = stack(Duration::from_secs(5)).await;
    let llm = client(&emu)
        .temperature(0.7)
        .max_tokens(48)
        .refresh_buffer(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut streams = 0;
    let mut chunks = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let mut stream = llm.stream("Tell me a story about a dragon.").await.unwrap();
        while let Some(chunk) = stream.next().await {
            chunk.expect("no failure while tokens expire underneath");
            chunks += 1;
        }
        streams += 1;
    }
    let counters = emu.counters();
    // Tokens expired and were replaced at least twice during the session.
    assert!(counters.auth_requests >= 3, "{counters:?}");
    assert_eq!(counters.unauthorized, 0, "{counters:?}");
    assert!(
        streams >= 2 && chunks > streams * 2,
        "{streams} streams, {chunks} chunks"
    );
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn langchain_chains_run_on_the_real_model() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu).max_tokens(30).build().unwrap();

    let prompt = message_formatter![fmt_template!(HumanMessagePromptTemplate::new(
        template_fstring!("What is the capital of {country}?", "country")
    ))];
    let chain = LLMChainBuilder::new()
        .prompt(prompt)
        .llm(llm.clone())
        .build()
        .unwrap();
    let answer = chain
        .invoke(prompt_args! {"country" => "Japan"})
        .await
        .unwrap();
    assert!(answer.contains("Tokyo"), "{answer:?}");

    // langchain's default conversation prompt is too wordy for a 135M model;
    // this shorter one keeps the same variables.
    let conversation_prompt = HumanMessagePromptTemplate::new(template_fstring!(
        "Conversation:\n{history}\n\nQuestion: {input}\nAnswer:",
        "history",
        "input"
    ));
    let conversation = ConversationalChainBuilder::new()
        .llm(llm)
        .prompt(conversation_prompt)
        .memory(SimpleMemory::new().into())
        .build()
        .unwrap();
    conversation
        .invoke(prompt_args! {"input" => "My name is Ada."})
        .await
        .unwrap();
    let second = conversation
        .invoke(prompt_args! {"input" => "What is my name?"})
        .await
        .unwrap();
    assert!(
        second.contains("Ada"),
        "{second:?}\n{}",
        emu.last_request().unwrap().body
    );
    let last = emu.last_request().unwrap().body.to_string();
    assert!(
        last.contains("My name is Ada."),
        "memory reached the model: {last}"
    );
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn the_cli_prints_a_real_answer() {
    // The `evolution` binary sits next to this test's directory once the
    // workspace is built (scripts/test.sh builds it first).
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("evolution"))
        .expect("target directory");
    assert!(
        bin.exists(),
        "{} is missing: run cargo build -p evolution-cli",
        bin.display()
    );
    let output = tokio::process::Command::new(&bin)
        .args([
            "--emulator",
            "--upstream",
            &model_url(),
            "chat",
            "--model",
            MODEL,
            "--temperature",
            "0",
            "--max-tokens",
            "20",
            "What is the capital of Germany?",
        ])
        .env_remove("EVOLUTION_KEY_ID")
        .env_remove("EVOLUTION_SECRET")
        .env_remove("EVOLUTION_BASE_URL")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), output)
        .await
        .expect("the CLI finishes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("Berlin"), "{stdout}");
}

/// Where a country lies.
#[derive(Debug, PartialEq, serde::Deserialize, schemars::JsonSchema)]
enum Continent {
    Africa,
    America,
    Asia,
    Europe,
    Oceania,
}

/// A country.
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Country {
    continent: Continent,
    name: String,
}

/// A city and the country it is in. (Models write properties in the order
/// the schema lists them; without serde_json's `preserve_order` that order
/// is alphabetical, so the fields are named to read well that way.)
#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct Place {
    /// The city's name.
    city: String,
    country: Country,
}

#[tokio::test]
#[ignore = "needs a local model: scripts/test.sh"]
async fn extracts_a_typed_struct_from_the_real_model() {
    let emu = stack(Duration::from_secs(3600)).await;
    let llm = client(&emu).max_tokens(80).build().unwrap();
    // The emulator forwards response_format as it is; llama.cpp turns the
    // json_schema into a grammar, so even a 135M model can only answer JSON
    // of the schema ($ref and enum included). Its facts are its own: only
    // the city is checked.
    let place: Place = llm
        .extract(
            &[
                ChatMessage::system("Extract the city and its country as JSON."),
                ChatMessage::user("Paris is the capital of France."),
            ],
            &ChatOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(place.city, "Paris", "{place:?}");
    assert!(!place.country.name.trim().is_empty(), "{place:?}");
    // The grammar allows only the enum's names (which one is the model's call).
    assert!(
        matches!(
            place.country.continent,
            Continent::Africa
                | Continent::America
                | Continent::Asia
                | Continent::Europe
                | Continent::Oceania
        ),
        "{place:?}"
    );
    // One request, no repair round, the schema sent strict.
    let requests = emu.requests();
    let chats: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .collect();
    assert_eq!(chats.len(), 1, "{chats:?}");
    let format = &chats[0].body["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "Place");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["$defs"]["Continent"]["enum"],
        serde_json::json!(["Africa", "America", "Asia", "Europe", "Oceania"])
    );
}
