//! A `ConversationalAgent`: tools described in the prompt, the model
//! answers with a JSON action in text, the agent parses and runs it.
//!
//! `cargo run -p evolution-langchain --example conversational_agent`

mod common;

use std::sync::Arc;

use evolution_langchain::langchain_rust::agent::{AgentExecutor, ConversationalAgentBuilder};
use evolution_langchain::langchain_rust::chain::Chain;
use evolution_langchain::langchain_rust::prompt_args;

/// The user's input before the tool list: the agent parses the first JSON
/// block of the answer, and the emulator's answer is the prompt itself.
const SUFFIX: &str = "{{input}}

TOOLS
------
You can ask the user to use these tools:

{{tools}}

{{format_instructions}}

Respond with a markdown code snippet of a json blob with a single action, and NOTHING else.";

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let agent = ConversationalAgentBuilder::new()
        .tools(&[Arc::new(common::Uppercase)])
        .suffix(SUFFIX)
        .build(backend.llm()?)?;
    let executor = AgentExecutor::from_agent(agent).with_max_iterations(3);

    let question = if backend.emulator.is_some() {
        // The emulator echoes instead of thinking: give it the reply a model
        // following the format instructions would write.
        "```json\n{\"action\": \"uppercase\", \"action_input\": \"the quick brown fox\"}\n```"
    } else {
        "Use a tool to convert 'the quick brown fox' to upper case."
    };
    println!("Question: {question}");
    let answer = executor.invoke(prompt_args! {"input" => question}).await?;
    println!("Answer: {answer}");
    Ok(())
}
