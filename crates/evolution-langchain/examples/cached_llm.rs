//! `CachedLLM` in front of `EvolutionInference`: the repeated question is
//! answered from the cache, without a request.
//!
//! `cargo run -p evolution-langchain --example cached_llm`

mod common;

use std::sync::Arc;
use std::time::Instant;

use evolution_langchain::langchain::LLM;
use evolution_langchain::langchain_rust::llm::{CachedLLM, InMemoryLLMCache};
use evolution_langchain::langchain_rust::schemas::Message;

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let llm = backend.llm()?;
    // The cache cannot see the model name inside the LLM: namespace by it.
    let namespace = llm.model().to_string();
    let cached = CachedLLM::new(llm, Arc::new(InMemoryLLMCache::new())).with_namespace(namespace);

    let question = [Message::new_human_message("Name three rivers of Russia.")];
    for attempt in 1..=2 {
        let started = Instant::now();
        let result = cached.generate(&question).await?;
        // A hit costs nothing, so it reports no token usage.
        let source = if result.tokens.is_some() {
            "model"
        } else {
            "cache"
        };
        println!(
            "Call {attempt} from the {source} in {:?}: {}",
            started.elapsed(),
            result.generation
        );
    }
    if let Some(emulator) = &backend.emulator {
        println!(
            "Chat requests the emulator received: {}",
            emulator.counters().chat_requests
        );
    }
    Ok(())
}
