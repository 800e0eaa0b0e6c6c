//! A rig agent with one tool on Cloud.ru: rig's own `AgentBuilder`,
//! `prompt(..)` and streamed `prompt(..).stream()`, on the chat model our
//! bridge builds (IAM tokens or an API key handled by its transport).
//!
//! ```text
//! cargo run -p evolution-langchain --features rig --example rig_agent
//! ```
//!
//! (rig 0.46 asks for Rust 1.97.1; on an older toolchain add
//! `--ignore-rust-version`.)
//!
//! Without `EVOLUTION_*` credentials it runs against an in-process emulator
//! (whose scripted model calls the tool a prompt names); with them, against
//! the configured service (`EVOLUTION_MODEL` names the model there).

mod common;

use std::convert::Infallible;
use std::io::Write;

use common::{Backend, BoxError};
use evolution_langchain::bridges::rig::rig_agent::agent::MultiTurnStreamItem;
use evolution_langchain::bridges::rig::rig_core::tool::{Tool, ToolContext};
use evolution_langchain::bridges::rig::EvolutionRig;
use evolution_langchain::config::{env_var, ENV_MODEL};
use evolution_langchain::TokenManager;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

/// The agent's tool: upper-cases its `text` argument.
struct Uppercase;

/// The arguments the model passes to [`Uppercase`].
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
            "properties": { "text": { "type": "string", "description": "the text to convert" } },
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

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backend = Backend::connect().await?;
    let (rig, model) = match &backend.emulator {
        None => (
            EvolutionRig::from_env()?,
            env_var(ENV_MODEL).ok_or("set EVOLUTION_MODEL to the model to ask")?,
        ),
        Some(emu) => {
            let manager = TokenManager::builder()
                .key_id(emu.key_id())
                .secret(emu.secret())
                .auth_url(emu.auth_url())
                .build()?;
            let rig = EvolutionRig::from_token_manager(manager).with_base_url(emu.base_url());
            (rig, emu.default_model().to_string())
        }
    };
    let agent = rig
        .agent(model)
        .preamble("Use the uppercase tool when asked to upper-case text.")
        .tool(Uppercase)
        .build();

    let response = agent
        .prompt("uppercase hello from rig")
        .max_turns(3)
        .await?;
    println!("Answer: {}", response.output());

    print!("Streamed: ");
    let mut stream = agent
        .prompt("uppercase streamed from rig")
        .max_turns(3)
        .stream();
    let mut answered = false;
    while let Some(item) = stream.next().await {
        match item? {
            MultiTurnStreamItem::ToolResult { .. } => print!("[tool ran] "),
            MultiTurnStreamItem::FinalResponse(response) => {
                print!("{}", response.output());
                answered = true;
            }
            _ => {}
        }
        std::io::stdout().flush()?;
    }
    println!();
    if !answered {
        return Err("the streamed run ended without a final answer".into());
    }
    Ok(())
}
