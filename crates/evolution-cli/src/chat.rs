//! `evolution chat`: one prompt answered (streamed by default), or an
//! interactive session when there is no prompt and stdin is a terminal.
//!
//! With `--schema FILE.json` the answer is JSON matching that schema (see
//! [`crate::schema`]): printed indented (`--compact`: on one line), or with
//! `--json` as `{"value", "schema", "mode", "attempts", "usage",
//! "response"}`; `-v` says on stderr how it was obtained, and when the
//! answer does not fit even after the repair round (exit code 6), shows the
//! model's last answer there too.

use std::io::{self, IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Args;
use evolution_langchain::{ChatMessage, Error, OutputSchema, Tool};
use serde_json::json;
use tokio::runtime::Runtime;

use crate::answer::{client, response_text, stream_answer, Ending, Thinking};
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

    /// Print the full response (choices, finish reason, usage, the model's
    /// thinking) as JSON, once it is complete (so --no-stream is implied).
    /// With --schema: {"value", "schema", "mode" (json_schema or tool_call),
    /// "attempts", "usage" (summed over them), "response" (the last one)}.
    #[arg(long)]
    pub json: bool,

    /// Answer with JSON matching the JSON schema in this file (an object
    /// such as {"type": "object", "properties": {...}, "required": [...]},
    /// named by its "title" or the file's stem): sent as response_format
    /// json_schema (or a forced tool call where the server refuses that),
    /// checked, repaired once if it does not fit, and printed indented. Not
    /// streamed; needs a prompt (no interactive session).
    #[arg(long, value_name = "FILE.json", conflicts_with_all = ["tools", "show_reasoning"])]
    pub schema: Option<PathBuf>,

    /// With --schema: print the JSON on one line.
    #[arg(long, requires = "schema")]
    pub compact: bool,

    /// Print a reasoning model's thinking on stdout too, before the answer,
    /// between a `[thinking]` and an `[answer]` line. Without it stdout
    /// carries the answer only (a terminal on stderr sees the thinking dimmed).
    #[arg(long)]
    pub show_reasoning: bool,

    /// Offer the model the tools in this JSON file (an array of OpenAI-style
    /// `{"type": "function", "function": {...}}` entries). Tool calls the
    /// model makes are printed as `[tool call] NAME ARGUMENTS` lines.
    #[arg(long, value_name = "FILE")]
    pub tools: Option<PathBuf>,

    /// Interactive session: keep the line-editing history in this file
    /// [default: in memory only, prompts can be private].
    #[arg(long, value_name = "PATH", env = "EVOLUTION_HISTORY_FILE")]
    pub history_file: Option<PathBuf>,

    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `chat`: reads the prompt, or hands over to the interactive session.
pub fn run(
    runtime: &Runtime,
    args: ChatArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
    verbose: u8,
) -> Result<(), CliError> {
    // A bad schema file is reported before anything waits for stdin.
    let schema = args
        .schema
        .as_deref()
        .map(crate::schema::read)
        .transpose()?;
    if schema.is_some() && args.prompt.is_none() && io::stdin().is_terminal() {
        return Err(CliError::usage(
            "--schema needs a prompt (as an argument or on stdin), not an interactive session",
        ));
    }
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
            connection,
            &args.sampling,
            args.history_file.as_deref(),
            Thinking::choose(args.show_reasoning),
            embedded,
        );
    };
    match schema {
        Some(schema) => runtime.block_on(extract(
            &args, connection, embedded, prompt, &schema, verbose,
        )),
        None => runtime.block_on(one_shot(&args, connection, embedded, prompt)),
    }
}

/// `chat --schema`: the answer as JSON of the schema.
async fn extract(
    args: &ChatArgs,
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
    prompt: String,
    schema: &OutputSchema,
    verbose: u8,
) -> Result<(), CliError> {
    let options = args.sampling.chat_options("chat")?;
    let (_service, llm) = client(connection, embedded).await?;
    let mut messages: Vec<ChatMessage> = args.sampling.system_message().into_iter().collect();
    messages.push(ChatMessage::user(prompt));
    let outcome = tokio::select! {
        outcome = llm.extract_with_schema(&messages, &options, schema) => outcome,
        () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
    };
    let extracted = match outcome {
        Ok(extracted) => extracted,
        Err(error) => {
            if let (Error::Extraction { raw, .. }, 1..) = (&error, verbose) {
                eprintln!("evolution: the model's last answer was:\n{raw}");
            }
            return Err(error.into());
        }
    };
    if verbose > 0 {
        let tokens = extracted
            .usage
            .as_ref()
            .map(|u| format!(", {} tokens", u.total_tokens))
            .unwrap_or_default();
        eprintln!(
            "evolution: schema `{}`: answered through {} in {} attempt{}{tokens}",
            schema.name(),
            crate::schema::mode_name(extracted.mode),
            extracted.attempts,
            if extracted.attempts == 1 { "" } else { "s" },
        );
    }
    let shown = if args.json {
        json!({
            "value": extracted.value,
            "schema": schema.name(),
            "mode": crate::schema::mode_name(extracted.mode),
            "attempts": extracted.attempts,
            "usage": extracted.usage,
            "response": extracted.response,
        })
    } else {
        extracted.value
    };
    let encoded = if args.compact {
        serde_json::to_string(&shown)
    } else {
        serde_json::to_string_pretty(&shown)
    };
    let mut text =
        encoded.map_err(|e| CliError::failure(format!("cannot encode the answer: {e}")))?;
    text.push('\n');
    crate::output::print_text(&text)
}

/// The tools of `--tools FILE`: a JSON array of tool definitions.
fn read_tools(path: &Path) -> Result<Vec<Tool>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CliError::usage(format!(
            "cannot read the tools file {}: {e}",
            path.display()
        ))
    })?;
    let tools: Vec<Tool> = serde_json::from_str(&text).map_err(|e| {
        CliError::usage(format!(
            "the tools file {} is not a JSON array of {{\"type\": \"function\", \"function\": \
             {{\"name\", \"description\", \"parameters\"}}}} entries: {e}",
            path.display()
        ))
    })?;
    if tools.is_empty() {
        return Err(CliError::usage(format!(
            "the tools file {} lists no tools",
            path.display()
        )));
    }
    Ok(tools)
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
    connection: &ConnectionArgs,
    embedded: &EmbeddedArgs,
    prompt: String,
) -> Result<(), CliError> {
    let tools = match &args.tools {
        Some(path) => Some(read_tools(path)?),
        None => None,
    };
    let mut options = args.sampling.chat_options("chat")?;
    let (_service, llm) = client(connection, embedded).await?;
    options.tools = tools;
    let thinking = Thinking::choose(args.show_reasoning);
    let mut messages: Vec<ChatMessage> = args.sampling.system_message().into_iter().collect();
    messages.push(ChatMessage::user(prompt));

    if args.json || args.no_stream {
        let response = tokio::select! {
            response = llm.chat(&messages, &options) => response?,
            () = crate::signal::ctrl_c() => return Err(CliError::interrupted("interrupted")),
        };
        let text = if args.json {
            let mut json = serde_json::to_string_pretty(&response)
                .map_err(|e| CliError::failure(format!("cannot encode the response: {e}")))?;
            json.push('\n');
            json
        } else {
            // Dimmed thinking is for streams; a whole answer prints at once.
            let shown = if thinking == Thinking::Shown {
                Thinking::Shown
            } else {
                Thinking::Hidden
            };
            response_text(&response, shown)
        };
        return crate::output::print_text(&text);
    }

    let mut stdout = io::stdout();
    let streamed = stream_answer(&llm, &messages, &options, thinking, &mut stdout).await;
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
