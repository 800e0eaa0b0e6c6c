//! An `LLMChain`: a prompt template rendered and sent with the chain's
//! sampling options.
//!
//! `cargo run -p evolution-langchain --example llm_chain`

mod common;

use evolution_langchain::langchain_rust::chain::options::ChainCallOptions;
use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder};
use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
use evolution_langchain::langchain_rust::schemas::Message;
use evolution_langchain::langchain_rust::{
    fmt_message, fmt_template, message_formatter, prompt_args, template_fstring,
};

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let prompt = message_formatter![
        fmt_message!(Message::new_system_message(
            "You are a travel guide. Answer in one sentence."
        )),
        fmt_template!(HumanMessagePromptTemplate::new(template_fstring!(
            "What should I see in {city}?",
            "city"
        ))),
    ];
    let chain = LLMChainBuilder::new()
        .prompt(prompt)
        .llm(backend.llm()?)
        .options(
            ChainCallOptions::new()
                .with_temperature(0.3)
                .with_top_p(0.9)
                .with_max_tokens(200),
        )
        .build()?;

    let answer = chain.invoke(prompt_args! {"city" => "Kazan"}).await?;
    println!("Answer: {answer}");
    Ok(())
}
