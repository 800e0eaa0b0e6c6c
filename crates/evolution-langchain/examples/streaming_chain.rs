//! Streaming through a chain: `call_stream` yields the answer's text as the
//! model writes it, then the whole result with token usage.
//!
//! `cargo run -p evolution-langchain --example streaming_chain`

mod common;

use std::io::Write;

use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder};
use evolution_langchain::langchain_rust::language_models::LLMEvent;
use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
use evolution_langchain::langchain_rust::{
    fmt_template, message_formatter, prompt_args, template_fstring,
};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let chain = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!(
                "Tell a short story about {hero}.",
                "hero"
            ))
        )])
        .llm(backend.llm()?)
        .build()?;

    let mut events = chain.call_stream(prompt_args! {"hero" => "a brave hedgehog"});
    let mut chunks = 0;
    while let Some(event) = events.next().await {
        match event? {
            LLMEvent::Text(text) => {
                chunks += 1;
                print!("{text}");
                std::io::stdout().flush()?;
            }
            LLMEvent::Done(result) => {
                println!();
                println!("[{chunks} chunks, usage: {:?}]", result.tokens);
            }
            _ => {}
        }
    }
    Ok(())
}
