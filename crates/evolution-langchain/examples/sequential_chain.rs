//! A `SequentialChain`: the first chain's output (`slogan`) fills the
//! second chain's prompt.
//!
//! `cargo run -p evolution-langchain --example sequential_chain`

mod common;

use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder, SequentialChainBuilder};
use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
use evolution_langchain::langchain_rust::{
    fmt_template, message_formatter, prompt_args, template_fstring,
};

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let llm = backend.llm()?;

    let slogan = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!(
                "Write a one-line slogan for {product}.",
                "product"
            ))
        )])
        .llm(llm.clone())
        .output_key("slogan")
        .build()?;
    let translation = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!(
                "Translate into French: {slogan}",
                "slogan"
            ))
        )])
        .llm(llm)
        .output_key("translation")
        .build()?;
    let chain = SequentialChainBuilder::new()
        .add_chain(slogan)
        .add_chain(translation)
        .build();

    let output = chain
        .execute(prompt_args! {"product" => "a solar-powered lamp"})
        .await?;
    // Outputs are JSON values; these two are strings.
    let text = |key: &str| output[key].as_str().unwrap_or_default().to_string();
    println!("Slogan: {}", text("slogan"));
    println!("Translation: {}", text("translation"));
    Ok(())
}
