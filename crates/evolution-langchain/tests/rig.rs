//! rig on Cloud.ru through our bridge, against the emulator over loopback:
//! an agent with one tool (awaited and streamed, key id + secret and API
//! key) and embeddings of three texts.

#![cfg(feature = "rig")]

mod common;

use std::convert::Infallible;

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use evolution_langchain::bridges::rig::rig_agent::agent::MultiTurnStreamItem;
use evolution_langchain::bridges::rig::rig_core::tool::{Tool, ToolContext};
use evolution_langchain::bridges::rig::EvolutionRig;
use evolution_langchain::TokenManager;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

/// Upper-cases its `text` argument.
struct Uppercase;

#[derive(Deserialize)]
struct UppercaseArgs {
    text: String,
}

impl Tool for Uppercase {
    const NAME: &'static str = "uppercase";
    type Args = UppercaseArgs;
    type Output = String;
    type Error = Infallible;

    fn description(&self) -> String {
        "Converts text to upper case".into()
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": { "text": { "type": "string", "description": "the text" } },
            "required": ["text"]
        })
    }

    async fn call(
        &self,
        _context: &mut ToolContext,
        args: UppercaseArgs,
    ) -> Result<String, Infallible> {
        Ok(args.text.to_uppercase())
    }
}

fn with_tokens(emu: &EmulatorHandle) -> EvolutionRig {
    let manager = TokenManager::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .auth_url(emu.auth_url())
        .build()
        .expect("a token manager");
    EvolutionRig::from_token_manager(manager).with_base_url(emu.base_url())
}

const PROMPT: &str = "uppercase hello rig";
const ANSWER: &str = "Tool result: HELLO RIG";

#[tokio::test]
async fn agent_with_a_tool_answers() {
    let emu = Emulator::start().await.expect("the emulator starts");
    let agent = with_tokens(&emu)
        .agent(emu.default_model())
        .tool(Uppercase)
        .build();
    let response = agent
        .prompt(PROMPT)
        .max_turns(3)
        .await
        .expect("the agent answers");
    assert_eq!(response.output(), ANSWER);
}

#[tokio::test]
async fn agent_with_a_tool_streams() {
    let emu = Emulator::start().await.expect("the emulator starts");
    let agent = with_tokens(&emu)
        .agent(emu.default_model())
        .tool(Uppercase)
        .build();
    let mut stream = agent.prompt(PROMPT).max_turns(3).stream();
    let (mut tool_results, mut answer) = (Vec::new(), None);
    while let Some(item) = stream.next().await {
        match item.expect("every item arrives") {
            MultiTurnStreamItem::ToolResult { tool_result } => tool_results.push(tool_result),
            MultiTurnStreamItem::FinalResponse(response) => answer = Some(response.output()),
            _ => {}
        }
    }
    assert_eq!(tool_results.len(), 1, "{tool_results:?}");
    assert_eq!(answer.as_deref(), Some(ANSWER));
}

#[tokio::test]
async fn agent_with_an_api_key() {
    let emu = Emulator::builder()
        .api_key("sk-rig-test-key")
        .start()
        .await
        .expect("the emulator starts");
    let agent = EvolutionRig::from_api_key("sk-rig-test-key")
        .with_base_url(emu.base_url())
        .agent(emu.default_model())
        .tool(Uppercase)
        .build();
    let response = agent
        .prompt(PROMPT)
        .max_turns(3)
        .await
        .expect("the agent answers");
    assert_eq!(response.output(), ANSWER);
}

#[tokio::test]
async fn embeddings_of_three_texts() {
    let emu = Emulator::start().await.expect("the emulator starts");
    let model = with_tokens(&emu).embedding_model(emu.default_model());
    let texts = vec!["one".to_string(), "two".to_string(), "three".to_string()];
    let response = model.call(texts.clone()).await.expect("the embeddings");
    assert_eq!(response.embeddings.len(), 3);
    let dims = response.embeddings[0].vec.len();
    assert!(dims > 0);
    for (embedding, text) in response.embeddings.iter().zip(&texts) {
        assert_eq!(embedding.vec.len(), dims);
        assert_eq!(&embedding.document, text);
    }
    assert_ne!(response.embeddings[0].vec, response.embeddings[1].vec);
    let again = model.embed_text("two").await.expect("one embedding");
    assert_eq!(
        again.vec, response.embeddings[1].vec,
        "deterministic vectors"
    );
}

#[tokio::test]
async fn a_revoked_token_costs_one_refresh_and_no_failed_call() {
    let emu = Emulator::start().await.expect("the emulator starts");
    let agent = with_tokens(&emu)
        .with_project_id("proj-rig")
        .expect("a valid project id")
        .agent(emu.default_model())
        .build();
    let first = agent.prompt("before").await.expect("the first call");
    assert_eq!(first.output(), "before");
    emu.revoke_tokens();
    let second = agent
        .prompt("after")
        .await
        .expect("the call after revoking");
    assert_eq!(second.output(), "after");
    emu.revoke_tokens();
    let mut stream = agent.prompt("streamed after").stream();
    let mut answer = None;
    while let Some(item) = stream.next().await {
        if let MultiTurnStreamItem::FinalResponse(response) = item.expect("every item arrives") {
            answer = Some(response.output());
        }
    }
    assert_eq!(answer.as_deref(), Some("streamed after"));
    let counters = emu.counters();
    assert_eq!(counters.unauthorized, 2, "{counters:?}");
    assert_eq!(
        counters.tokens_issued, 3,
        "one refresh per revocation: {counters:?}"
    );
    for request in emu.requests().iter().filter(|r| r.path.starts_with("/v1")) {
        assert_eq!(
            request.project_id.as_deref(),
            Some("proj-rig"),
            "{}",
            request.path
        );
    }
}

#[tokio::test]
async fn transient_failures_are_retried() {
    let emu = Emulator::start().await.expect("the emulator starts");
    let rig = with_tokens(&emu);
    emu.inject(Target::Chat, Fault::Status(503), 1);
    let agent = rig.agent(emu.default_model()).build();
    let answer = agent.prompt("after a 503").await.expect("retried");
    assert_eq!(answer.output(), "after a 503");
    assert_eq!(emu.counters().chat_requests, 2);

    emu.inject(Target::Embeddings, Fault::StatusRetryAfter(429, 0), 1);
    let model = rig.embedding_model(emu.default_model());
    model.embed_text("after a 429").await.expect("retried");
    assert_eq!(emu.counters().embeddings_requests, 2);

    emu.inject(Target::Chat, Fault::Status(503), 2);
    let agent = rig.with_max_retries(0).agent(emu.default_model()).build();
    assert!(agent.prompt("no retries").await.is_err());
}

#[tokio::test]
async fn the_pipeline_table_through_the_transport() {
    common::pipeline_cases::run_all("rig", |base_url, tokens| async move {
        let rig = EvolutionRig::from_token_source(tokens).with_base_url(base_url);
        let agent = rig.agent("m").build();
        match agent.prompt("hi").await {
            Ok(answer) => Ok(answer.output().to_string()),
            Err(error) => Err(status_of(&error)),
        }
    })
    .await;
}

/// The HTTP status inside a rig error, if its chain holds one.
fn status_of(error: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let text = error.to_string();
    let mut source = Some(error);
    while let Some(current) = source {
        if let Some(http) = current
            .downcast_ref::<evolution_langchain::bridges::rig::rig_core::http_client::Error>()
        {
            if let Some(status) = http.non_success_status() {
                return Some(status.as_u16());
            }
        }
        source = current.source();
    }
    // rig's agent reports a provider's refusal as text: "… status 500 …".
    let after = text
        .split_once("status ")
        .unwrap_or_else(|| panic!("no HTTP status in the error: {text}"))
        .1;
    after.get(..3).and_then(|code| code.parse().ok())
}

#[tokio::test]
async fn typed_output_and_transcription_through_the_provider() {
    use evolution_langchain::bridges::rig::rig_core::transcription::TranscriptionRequestBuilder;

    #[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
    struct City {
        name: String,
        population: u32,
    }

    let emu = Emulator::start().await.expect("the emulator starts");
    let rig = with_tokens(&emu);
    // The emulator answers a json_schema request with a document of the
    // schema, taking the values the prompt names.
    let agent = rig.agent(emu.default_model()).build();
    let city: City = agent
        .prompt_typed::<City>("name: Lima, population: 10000")
        .await
        .expect("a typed answer")
        .output;
    assert_eq!((city.name.as_str(), city.population), ("Lima", 10000));
    let sent = emu.last_request().unwrap().body;
    assert_eq!(sent["response_format"]["type"], "json_schema", "{sent}");

    let whisper = rig.transcription_model("openai/whisper-large-v3");
    let heard = whisper
        .call(
            TranscriptionRequestBuilder::new(b"Hello from rig.".to_vec())
                .filename(Some("hello.wav".to_string()))
                .build(),
        )
        .await
        .expect("a transcript");
    assert_eq!(heard.text, "Hello from rig.");
    let upload = emu.last_request().unwrap();
    assert!(upload.path.ends_with("/audio/transcriptions"));
    assert!(upload.authorized);
    assert_eq!(upload.body["model"], "openai/whisper-large-v3");
}
