//! `evolution`: Cloud.ru Foundation Models from a terminal.
//!
//! ```text
//! evolution [--emulator] chat [PROMPT]      stream an answer, or chat interactively
//! evolution [--emulator] batch INPUT -o OUT answer a JSONL/plain file, resumable
//! evolution [--emulator] token              check the credentials
//! evolution [--emulator] models             list the models
//! evolution [--emulator] rerank -q Q FILE    order documents by relevance
//! evolution emulator                        run the emulator for other programs
//! ```
//!
//! Configuration: flags > environment (`EVOLUTION_KEY_ID`, `EVOLUTION_SECRET`,
//! `EVOLUTION_BASE_URL`, `EVOLUTION_TOKEN_URL`, `EVOLUTION_MODEL`,
//! `EVOLUTION_PROJECT_ID`, …) > a `.env` file > defaults. `--emulator` (or
//! `EVOLUTION_EMULATOR=1`) starts an embedded emulator on a free loopback
//! port and points the command at it, so everything works without an account.
//!
//! Exit codes (also in `--help`):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | some batch lines failed, or another error |
//! | 2 | usage or configuration error: bad flag, missing credentials, unreadable file |
//! | 3 | bad credentials (401): IAM rejected the key id or secret, or the model API rejected a freshly issued token |
//! | 4 | forbidden (403): the key has no rights, at IAM or at the model API |
//! | 5 | network: the service could not be reached or timed out |
//! | 6 | API error: the service refused the request or answered badly |
//! | 130 | interrupted (Ctrl-C) |
//!
//! Errors are one line on stderr, prefixed `evolution: `; secrets (the key
//! secret, tokens) are never printed.

// Doc comments double as `--help` text, where `<…>` around URLs would show.
#![allow(rustdoc::bare_urls)]

mod answer;
mod batch;
mod chat;
mod config;
mod emulator;
mod exit;
mod interactive;
mod models;
mod options;
mod output;
mod rerank;
mod signal;
mod token;

use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::emulator::EmbeddedArgs;
use crate::exit::{CliError, EXIT_CODES_HELP};

/// The `evolution` command line.
#[derive(Debug, Parser)]
#[command(
    name = "evolution",
    version,
    about = "Cloud.ru Evolution Foundation Models from the terminal: chat, batches, token checks, and an offline emulator",
    long_about = None,
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP,
    arg_required_else_help = true,
)]
struct Cli {
    /// More log output on stderr: -v info, -vv debug, -vvv trace (RUST_LOG, if set, wins).
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    #[command(flatten)]
    embedded: EmbeddedArgs,

    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Ask one question (streamed), or chat interactively when no prompt is given.
    Chat(chat::ChatArgs),
    /// Answer every line of a file (plain prompts or JSONL), saving each answer as it comes.
    Batch(batch::BatchArgs),
    /// Obtain a token to check the credentials; shows its expiry, never the token.
    Token(token::TokenArgs),
    /// List the models the endpoint serves.
    Models(models::ModelsArgs),
    /// Order documents (one a line) by relevance to a query, best first.
    Rerank(rerank::RerankArgs),
    /// Run the emulator until Ctrl-C, printing the variables a client needs.
    Emulator(emulator::EmulatorCommand),
}

fn main() -> ExitCode {
    // `.env` goes into the environment before parsing, so the flags' `env`
    // fallbacks see it; variables already set win (dotenvy never overrides).
    let dotenv = evolution_langchain::config::load_dotenv();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit::clap_error(error),
    };
    init_logging(cli.verbose);
    let result = dotenv.map_err(CliError::from).and_then(|()| run(cli));
    match result {
        Ok(()) => exit::Exit::Ok.into(),
        Err(error) => {
            eprintln!("evolution: {}", exit::one_line(&error.message));
            error.exit.into()
        }
    }
}

/// Dispatches to the subcommand on a fresh runtime.
fn run(cli: Cli) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failure(format!("cannot start the async runtime: {e}")))?;
    let embedded = cli.embedded;
    match cli.command {
        // The interactive session drives the runtime itself, turn by turn.
        Command::Chat(args) => chat::run(&runtime, args, &embedded),
        Command::Batch(args) => runtime.block_on(batch::run(args, &embedded)),
        Command::Token(args) => runtime.block_on(token::run(args, &embedded)),
        Command::Models(args) => runtime.block_on(models::run(args, &embedded)),
        Command::Rerank(args) => runtime.block_on(rerank::run(args, &embedded)),
        Command::Emulator(args) => runtime.block_on(emulator::run(args)),
    }
}

/// Logs go to stderr, so stdout carries only answers. Silent by default;
/// `-v` levels cover this workspace's crates; HTTP internals stay at debug
/// even with `-vvv`, as their trace output is noise. From `-vv` on, each
/// model call's GenAI span (see `evolution_langchain::telemetry`) is also
/// printed as one line when it closes: its operation, model, parameters,
/// usage, finish reasons and timings; never content, tokens or secrets.
fn init_logging(verbose: u8) {
    use tracing_subscriber::field::MakeExt;
    use tracing_subscriber::filter::{filter_fn, Targets};
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        // Targets match by prefix: `evolution` covers this binary and the
        // `evolution_langchain` and `evolution_emulator` crates.
        _ => EnvFilter::new(match verbose {
            // Failures end in one line of our own; the libraries' error
            // events would say the same thing twice.
            0 => "off",
            // rustyline warns through `log` when a terminal does not report
            // the cursor position; it copes, so the user need not hear of it.
            1 => "warn,rustyline=error,evolution=info",
            2 => "info,rustyline=error,evolution=debug",
            _ => "trace,hyper=debug,hyper_util=debug,h2=debug,reqwest=debug",
        }),
    };
    let events = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    // The spans' close lines, from a layer of their own that sees the GenAI
    // spans and nothing else (the events inside them are the other layer's).
    // Its own field formatter (a type of its own) keeps its copy of a span's
    // fields apart from the other layer's, which would otherwise be shared
    // and show each field twice.
    let spans = (verbose >= 2).then(|| {
        let fields =
            tracing_subscriber::fmt::format::debug_fn(|writer, field, value| match field.name() {
                "message" => write!(writer, "{value:?}"),
                name => write!(writer, "{name}={value:?}"),
            })
            .delimited(" ");
        tracing_subscriber::fmt::layer()
            .fmt_fields(fields)
            .with_writer(std::io::stderr)
            .with_span_events(FmtSpan::CLOSE)
            .with_filter(
                Targets::new()
                    .with_target(evolution_langchain::telemetry::TARGET, tracing::Level::INFO),
            )
            .with_filter(filter_fn(|metadata| metadata.is_span()))
    });
    // Fails only if a subscriber is already set, which cannot happen here.
    let _ = tracing_subscriber::registry()
        .with(events)
        .with(spans)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn emulator_flags_before_the_subcommand() {
        let cli = Cli::try_parse_from([
            "evolution",
            "--emulator",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "chat",
            "--model",
            "m",
            "hi",
        ])
        .unwrap();
        assert!(cli.embedded.enabled());
        assert_eq!(cli.embedded.upstream(), Some("http://127.0.0.1:9/v1"));
        let Command::Chat(chat) = cli.command else {
            panic!("expected chat");
        };
        assert_eq!(chat.sampling.model.as_deref(), Some("m"));
        assert_eq!(chat.prompt.as_deref(), Some("hi"));
    }

    #[test]
    fn the_emulator_subcommand_keeps_its_own_flags() {
        let cli = Cli::try_parse_from([
            "evolution",
            "emulator",
            "--port",
            "0",
            "--model",
            "a",
            "--upstream",
            "http://127.0.0.1:9/v1",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Emulator(_)));
        assert!(cli.embedded.upstream().is_none());
    }
}
