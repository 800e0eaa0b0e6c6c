//! genai's own client, configured through our bridge, against the emulator
//! over loopback: chat, streaming and embeddings, with a key id + secret
//! and with an API key, and tokens refreshed as they expire.
#![cfg(feature = "genai")]

mod common;

use std::time::Duration;

use evolution_emulator::Emulator;
use evolution_langchain::bridges::genai::genai::chat::{ChatMessage, ChatRequest, ChatStreamEvent};
use evolution_langchain::bridges::genai::EvolutionGenai;
use futures::StreamExt;

fn request(prompt: &str) -> ChatRequest {
    ChatRequest::new(vec![ChatMessage::user(prompt)])
}

#[tokio::test]
async fn chat_stream_and_embeddings_with_managed_tokens() {
    let emu = common::emulator().await;
    let manager = common::manager_for(&emu).build().unwrap();
    let genai = EvolutionGenai::from_token_manager(manager)
        .with_base_url(emu.base_url())
        .client()
        .unwrap();
    // Cloud.ru's model ids have a slash; genai must not route them elsewhere.
    let model = emu.default_model();
    assert!(model.contains('/'));

    let reply = genai
        .exec_chat(model, request("hello from genai"), None)
        .await
        .unwrap();
    assert_eq!(reply.first_text(), Some("hello from genai"));

    let mut stream = genai
        .exec_chat_stream(model, request("one two three"), None)
        .await
        .unwrap()
        .stream;
    let mut text = String::new();
    while let Some(event) = stream.next().await {
        if let ChatStreamEvent::Chunk(chunk) = event.unwrap() {
            text.push_str(&chunk.content);
        }
    }
    assert_eq!(text, "one two three");

    let embedded = genai.embed(model, "some text", None).await.unwrap();
    assert_eq!(embedded.embeddings.len(), 1);
    assert_eq!(embedded.embeddings[0].vector().len(), 8);

    let counters = emu.counters();
    assert_eq!(counters.tokens_issued, 1, "one token for every request");
    assert_eq!(counters.unauthorized, 0);
    let seen = emu.requests();
    assert!(seen.iter().all(|r| r.authorized), "{seen:?}");
    assert!(seen.iter().any(|r| r.path.ends_with("/embeddings")));
}

#[tokio::test]
async fn an_api_key_and_short_lived_tokens() {
    let emu = Emulator::builder()
        .api_key("sk-genai")
        .start()
        .await
        .unwrap();
    let genai = EvolutionGenai::from_api_key("sk-genai")
        .with_base_url(emu.base_url())
        .client()
        .unwrap();
    let reply = genai
        .exec_chat(emu.default_model(), request("with a key"), None)
        .await
        .unwrap();
    assert_eq!(reply.first_text(), Some("with a key"));
    assert_eq!(emu.counters().api_key_requests, 1);

    // Two-second tokens over five seconds: refreshed before they expire,
    // so no request is refused.
    let emu = Emulator::builder()
        .token_ttl(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let manager = common::manager_for(&emu)
        .refresh_buffer(Duration::from_millis(500))
        .build()
        .unwrap();
    let genai = EvolutionGenai::from_token_manager(manager)
        .with_base_url(emu.base_url())
        .client()
        .unwrap();
    for i in 0..10 {
        let prompt = format!("call {i}");
        let reply = genai
            .exec_chat(emu.default_model(), request(&prompt), None)
            .await
            .unwrap();
        assert_eq!(reply.first_text(), Some(prompt.as_str()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(emu.counters().unauthorized, 0);
    assert!(emu.counters().tokens_issued >= 3, "{:?}", emu.counters());
}
