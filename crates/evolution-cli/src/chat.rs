//! `evolution chat`: one prompt answered (streamed by default), or an
//! interactive session when there is no prompt and stdin is a terminal.

use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;

use clap::Args;
use evolution_langchain::ChatMessage;
use tokio::runtime::Runtime;

use crate::answer::{client, stream_answer, Ending};
use crate::config::ConnectionArgs;
use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;
use crate::options::SamplingArgs;

/// `evolution chat` options.
#[derive(Debug, Clone, Args)]
pub struct ChatArgs {
    /// The prompt; `-` reads it from stdin. Without one: an interactive
    /// session when stdin is a terminal, else the prompt is read from stdin.
    #[arg(value_name = "PROMPT")]
    pub prompt: Option<String>,

    /// Wait for the whole answer instead of streaming it (one prompt only:
    /// the interactive session always streams).
    #[arg(long)]
    pub no_stream: bool,

    /// Print the full response (choices, finish reason, usage) as JSON.
    #[arg(long, conflicts_with = "no_stream")]
    pub json: bool,

    /// Interactive session: keep the line-editing history in this file
    /// [default: in memory only, prompts can be private].
    #[arg(long, value_name = "PATH", env = "EVOLUTION_HISTORY_FILE")]
    pub history_file: Option<PathBuf>,

    #[command(flatten)]
    pub sampling: SamplingArgs,

    #[command(flatten)]
    pub connection: ConnectionArgs,
}

/// Runs `chat`: reads the prompt, or hands over to the interactive session.
pub fn run(runtime: &Runtime, args: ChatArgs, embedded: &EmbeddedArgs) -> Result<(), CliError> {
    let prompt = match args.prompt.as_deref() {
        Some("-") => Some(read_stdin_prompt()?),
        Some(prompt) if prompt.trim().is_empty() => {
            return Err(CliError::usage("the prompt is empty"))
        }
        Some(prompt) => Some(prompt.to_string()),
        None if io::stdin().is_terminal() => None,
        None => Some(read_stdin_prompt()?),
    };
    let Some(prompt) = prompt else {
        if args.json {
            return Err(CliError::usage(
                "--json needs a prompt (as an argument or on stdin), not an interactive session",
            ));
        }
        return crate::interactive::run(
            runtime,
            &args.connection,
            &args.sampling,
            args.history_file.as_deref(),
            embedded,
        );
    };
    runtime.block_on(one_shot(&args, embedded, prompt))
}

/// The prompt piped into stdin, without its final line break.
fn read_stdin_prompt() -> Result<String, CliError> {
    let mut text = String::new();
    io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| CliError::usage(format!("cannot read the prompt from stdin: {e}")))?;
    let prompt = text.trim_end_matches(['\n', '\r']);
    if prompt.trim().is_empty() {
        return Err(CliError::usage(
            "no prompt: stdin was empty (pass PROMPT or pipe text in)",
        ));
    }
    Ok(prompt.to_string())
}

async fn one_shot(
    args: &ChatArgs,
    embedded: &EmbeddedArgs,
    prompt: String,
) -> Result<(), CliError> {
    let (_endpoint, llm) = client(&args.connection, embedded).await?;
    let options = args.sampling.chat_options();
    let mut messages: Vec<ChatMessage> = args.sampling.system_message().into_iter().collect();
    messages.push(ChatMessage::user(prompt));

    if args.json || args.no_stream {
        let response = tokio::select! {
            response = llm.chat(&messages, &options) => response?,
            () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
        };
        let text = if args.json {
            serde_json::to_string_pretty(&response)
                .map_err(|e| CliError::failure(format!("cannot encode the response: {e}")))?
        } else {
            response.content().to_string()
        };
        return crate::output::print_text(&format!("{text}\n"));
    }

    let mut stdout = io::stdout();
    let streamed = stream_answer(&llm, &messages, &options, &mut stdout).await;
    if let Some(usage) = streamed.usage {
        tracing::info!(
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            "usage"
        );
    }
    match streamed.ending {
        Ending::Complete => Ok(()),
        Ending::Interrupted => Err(CliError::interrupted("interrupted")),
        Ending::Failed(error) => Err(error),
    }
}
