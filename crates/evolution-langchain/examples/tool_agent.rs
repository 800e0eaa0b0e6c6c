//! An `OpenAiToolAgent`: the tool is offered as a native function, the
//! model calls it, and its result goes back as a tool message.
//!
//! `cargo run -p evolution-langchain --example tool_agent`

mod common;

use std::sync::Arc;

use evolution_langchain::langchain_rust::agent::{AgentExecutor, OpenAiToolAgentBuilder};
use evolution_langchain::langchain_rust::chain::Chain;
use evolution_langchain::langchain_rust::prompt_args;

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let agent = OpenAiToolAgentBuilder::new()
        .tools(&[Arc::new(common::Uppercase)])
        .build(backend.llm()?)?;
    let executor = AgentExecutor::from_agent(agent).with_max_iterations(3);

    let question = "Please uppercase the quick brown fox";
    println!("Question: {question}");
    let answer = executor.invoke(prompt_args! {"input" => question}).await?;
    println!("Answer: {answer}");
    Ok(())
}
