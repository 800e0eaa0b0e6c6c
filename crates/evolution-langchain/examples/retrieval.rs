//! Retrieval in a few lines: embed documents, pick the one nearest to the
//! question, answer from it.
//!
//! `cargo run -p evolution-langchain --example retrieval`

mod common;

use evolution_langchain::langchain::Embedder;
use evolution_langchain::langchain_rust::chain::{Chain, LLMChainBuilder};
use evolution_langchain::langchain_rust::prompt::HumanMessagePromptTemplate;
use evolution_langchain::langchain_rust::{
    fmt_template, message_formatter, prompt_args, template_fstring,
};

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    let backend = common::Backend::connect().await?;
    let llm = backend.llm()?;
    let embeddings = backend.embeddings(&llm);

    let documents = [
        "Kazan stands where the Kazanka river meets the Volga.",
        "Rust frees memory without a garbage collector.",
        "Green tea is made from unoxidized leaves.",
    ]
    .map(String::from);
    let question = "How does Rust manage memory?";

    let vectors = embeddings.embed_documents(&documents).await?;
    let query = embeddings.embed_query(question).await?;
    let (nearest, score) = vectors
        .iter()
        .map(|v| cosine(&query, v))
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or("no documents")?;
    if backend.emulator.is_some() {
        println!("(The emulator's vectors are hashes of the text: the pick is arbitrary.)");
    }
    println!("Nearest document ({score:.3}): {}", documents[nearest]);

    let chain = LLMChainBuilder::new()
        .prompt(message_formatter![fmt_template!(
            HumanMessagePromptTemplate::new(template_fstring!(
                "Answer from this context only.\nContext: {context}\nQuestion: {question}",
                "context",
                "question"
            ))
        )])
        .llm(llm)
        .build()?;
    let answer = chain
        .invoke(prompt_args! {"context" => documents[nearest], "question" => question})
        .await?;
    println!("Answer: {answer}");
    Ok(())
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}
