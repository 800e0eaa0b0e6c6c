//! A `ConversationalChain` with memory: the second turn carries the first.
//!
//! `cargo run -p evolution-langchain --example conversation`

mod common;

use evolution_langchain::langchain_rust::chain::conversational::builder::ConversationalChainBuilder;
use evolution_langchain::langchain_rust::chain::Chain;
use evolution_langchain::langchain_rust::memory::SimpleMemory;
use evolution_langchain::langchain_rust::prompt_args;

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let chain = ConversationalChainBuilder::new()
        .llm(backend.llm()?)
        .memory(SimpleMemory::new().into())
        .build()?;

    for input in ["My name is Ana and I live in Kazan.", "Where do I live?"] {
        println!("Human: {input}");
        let answer = chain.invoke(prompt_args! {"input" => input}).await?;
        println!("AI: {answer}");
    }
    Ok(())
}
