//! async-openai's own client on Cloud.ru: a chat and a stream through
//! `client.chat().create(..)` and `create_stream(..)`, with IAM tokens (or an
//! API key) handled by the bridge and its tower layer.
//!
//! ```text
//! cargo run -p evolution-langchain --features async-openai --example async_openai_chat
//! ```
//!
//! Without `EVOLUTION_*` credentials it runs against an in-process emulator;
//! with them, against the configured service (`EVOLUTION_MODEL` names the
//! model there).

mod common;

use async_openai::types::chat::{
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequest, CreateChatCompletionRequestArgs,
};
use common::{Backend, BoxError};
use evolution_langchain::bridges::async_openai::{client_with_config, EvolutionConfig};
use evolution_langchain::config::{env_var, ENV_MODEL};
use evolution_langchain::TokenManager;
use futures::StreamExt;
use std::io::Write;

fn request(model: &str, prompt: &str) -> Result<CreateChatCompletionRequest, BoxError> {
    Ok(CreateChatCompletionRequestArgs::default()
        .model(model)
        .messages([
            ChatCompletionRequestSystemMessage::from("Answer in one short sentence.").into(),
            ChatCompletionRequestUserMessage::from(prompt).into(),
        ])
        .build()?)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backend = Backend::connect().await?;
    let (config, model) = match &backend.emulator {
        None => (
            EvolutionConfig::from_env()?,
            env_var(ENV_MODEL).ok_or("set EVOLUTION_MODEL to the model to ask")?,
        ),
        Some(emu) => {
            let manager = TokenManager::builder()
                .key_id(emu.key_id())
                .secret(emu.secret())
                .auth_url(emu.auth_url())
                .build()?;
            let config = EvolutionConfig::from_token_manager(manager).with_api_base(emu.base_url());
            (config, emu.default_model().to_string())
        }
    };
    // async-openai's `Client<EvolutionConfig>`, with the token layer installed.
    let client = client_with_config(config);

    let reply = client
        .chat()
        .create(request(&model, "What is the capital of France?")?)
        .await?;
    let answer = reply
        .choices
        .first()
        .and_then(|choice| choice.message.content.clone())
        .ok_or("the reply carried no text")?;
    println!("chat: {answer}");

    let mut stream = client
        .chat()
        .create_stream(request(&model, "Name three colours of the rainbow.")?)
        .await?;
    let mut streamed = String::new();
    print!("stream: ");
    while let Some(chunk) = stream.next().await {
        for choice in chunk?.choices {
            if let Some(text) = choice.delta.content {
                print!("{text}");
                std::io::stdout().flush()?;
                streamed.push_str(&text);
            }
        }
    }
    println!();
    if streamed.trim().is_empty() {
        return Err("the stream carried no text".into());
    }
    Ok(())
}
