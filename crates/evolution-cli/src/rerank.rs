//! `evolution rerank`: documents (one a line) ordered by relevance to a
//! query, printed `index<TAB>score<TAB>document`, best first.

use std::io::{self, Read};
use std::path::PathBuf;

use clap::Args;
use evolution_langchain::{EvolutionRerank, RerankOptions, ENV_RERANK_MODEL};

use crate::config::{ConnectionArgs, Service};
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::output::print_text;

/// `evolution rerank` options.
#[derive(Debug, Clone, Args)]
pub struct RerankArgs {
    /// What the documents are ranked against.
    #[arg(short, long, value_name = "TEXT")]
    pub query: String,

    /// The documents, one a line (blank lines skipped); `-` reads stdin.
    #[arg(value_name = "FILE|-")]
    pub input: PathBuf,

    /// Show only the best N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub top_n: Option<u64>,

    /// Print the full response (results with indices, scores and documents,
    /// usage) as JSON.
    #[arg(long)]
    pub json: bool,

    /// Reranker model [default: the endpoint's].
    #[arg(short, long, value_name = "NAME", env = ENV_RERANK_MODEL)]
    pub model: Option<String>,
}

/// Runs `rerank`.
pub async fn run(
    args: RerankArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
) -> Result<(), CliError> {
    if args.query.trim().is_empty() {
        return Err(CliError::usage("the query is empty"));
    }
    let documents = read_documents(&args.input)?;
    let service = Service::resolve(connection, embedded).await?;
    let llm = service.inference().build()?;
    let model = args.model.as_deref().map(str::trim).unwrap_or_default();
    let reranker = EvolutionRerank::from_inference(&llm, model);
    let mut options = RerankOptions::new();
    if let Some(top_n) = args.top_n {
        options = options.top_n(usize::try_from(top_n).unwrap_or(usize::MAX));
    }
    let reply = tokio::select! {
        reply = reranker.rerank_with(&args.query, &documents, options) => reply?,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    if args.json {
        let mut json = serde_json::to_string_pretty(&reply)
            .map_err(|e| CliError::failure(format!("cannot encode the response: {e}")))?;
        json.push('\n');
        return print_text(&json);
    }
    let text: String = reply
        .results
        .iter()
        .map(|result| {
            // The input is ours: show it even if the server did not echo it.
            let document = result
                .text()
                .or_else(|| documents.get(result.index).map(String::as_str))
                .unwrap_or_default();
            format!(
                "{}\t{:.4}\t{document}\n",
                result.index, result.relevance_score
            )
        })
        .collect();
    print_text(&text)
}

/// The non-blank lines of `input` (a file, or stdin for `-`).
fn read_documents(input: &std::path::Path) -> Result<Vec<String>, CliError> {
    let text = if input.as_os_str() == "-" {
        let mut text = String::new();
        io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("cannot read the documents from stdin: {e}")))?;
        text
    } else {
        std::fs::read_to_string(input)
            .map_err(|e| CliError::usage(format!("cannot read {}: {e}", input.display())))?
    };
    let documents = documents_of(&text);
    if documents.is_empty() {
        return Err(CliError::usage(format!(
            "no documents: {} has no non-blank lines",
            if input.as_os_str() == "-" {
                "stdin".to_string()
            } else {
                input.display().to_string()
            }
        )));
    }
    Ok(documents)
}

/// One document per non-blank line, line breaks (`\n` or `\r\n`) removed.
fn documents_of(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.trim().is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_lines_are_skipped() {
        assert_eq!(
            documents_of("a b\r\n\n   \nc\n"),
            vec!["a b".to_string(), "c".to_string()]
        );
        assert!(documents_of("\n\n").is_empty());
    }
}
