//! `evolution`: Cloud.ru Foundation Models from a terminal.
//!
//! ```text
//! evolution [--emulator] chat [PROMPT]        stream an answer, or chat interactively
//! evolution [--emulator] chat --schema S PROMPT  the answer as JSON of a JSON schema
//! evolution [--emulator] batch INPUT -o OUT   answer a JSONL/plain file, resumable
//!                                             (--schema S: each answer as JSON too)
//! evolution [--emulator] token                check the credentials
//! evolution [--emulator] models               list the models
//! evolution [--emulator] rerank -q Q FILE     order documents by relevance
//! evolution [--emulator] transcribe FILE|-    speech to text (Whisper), or subtitles
//! evolution emulator                          run the emulator for other programs
//! ```
//!
//! The connection flags (`--timeout`, `--max-retries`, `--base-url`, …),
//! `--emulator` and the embedded emulator's flags, and `-v` are global:
//! accepted before or after the subcommand. `evolution emulator` runs an
//! emulator itself and refuses them (except `-v`).
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
//! | 2 | usage or configuration error: bad flag, missing credentials, unreadable file, a `--schema` file that is not a JSON schema, an audio file over `--max-upload-size`; nothing was sent |
//! | 3 | bad credentials (401): IAM rejected the key id or secret, or the model API rejected a freshly issued token |
//! | 4 | forbidden (403): the key has no rights, at IAM or at the model API |
//! | 5 | network or timeout: the service could not be reached, or did not answer (or stopped mid-answer) within `--timeout` |
//! | 6 | API error: the service refused the request (a 413 for an upload included) or answered badly, or the answer did not fit `--schema` even after the repair round |
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
mod message;
mod models;
mod options;
mod output;
mod rerank;
mod schema;
mod signal;
mod token;
mod transcribe;

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::ConnectionArgs;
use crate::emulator::EmbeddedArgs;
use crate::exit::{CliError, EXIT_CODES_HELP};

/// The `evolution` command line.
#[derive(Debug, Parser)]
#[command(
    name = "evolution",
    version,
    about = "Cloud.ru Evolution Foundation Models from the terminal: chat (free text or JSON of a schema), batches, transcription, token checks, and an offline emulator",
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

    #[command(flatten)]
    connection: ConnectionArgs,

    #[command(subcommand)]
    command: Command,
}

/// The subcommand that runs an emulator itself, for which the global
/// options of the commands that call the service mean nothing.
const EMULATOR: &str = "emulator";

/// The command line's definition: [`Cli`]'s, with the global options kept
/// out of `evolution emulator`. Clap copies a global option into every
/// subcommand unless the subcommand has an argument of the same id, so the
/// emulator gets a hidden stand-in for each (under a name of its own where
/// the emulator's own options use the option's): `emulator --help` does not
/// list them, and [`refuse_for_emulator`] turns their use into a clear
/// error instead of an "unexpected argument".
fn command() -> clap::Command {
    let cli = Cli::command();
    let globals: Vec<clap::Arg> = cli
        .get_arguments()
        .filter(|arg| arg.is_global_set() && arg.get_id() != "verbose")
        .cloned()
        .collect();
    cli.mut_subcommand(EMULATOR, |emulator| {
        let taken: Vec<String> = emulator
            .get_arguments()
            .filter_map(|arg| arg.get_long().map(str::to_string))
            .collect();
        globals.into_iter().fold(emulator, |emulator, global| {
            let mut stand_in = global.global(false).hide(true);
            if let Some(long) = stand_in.get_long().filter(|l| taken.iter().any(|t| t == l)) {
                // Clap takes `'static` names; the few bytes of the few
                // renamed stand-ins live as long as the process anyway.
                let long: &'static str = Box::leak(format!("client-{long}").into_boxed_str());
                stand_in = stand_in.long(long);
            }
            emulator.arg(stand_in)
        })
    })
}

/// Parses the command line.
fn parse() -> Result<Cli, clap::Error> {
    let matches = command().try_get_matches()?;
    refuse_for_emulator(&matches)?;
    Cli::from_arg_matches(&matches)
}

/// `evolution --emulator emulator`, `evolution emulator --timeout 5`, …:
/// options of the commands that call the service, given (on the command
/// line; the environment may well hold them for the other commands) to the
/// one that does not.
fn refuse_for_emulator(matches: &ArgMatches) -> Result<(), clap::Error> {
    let Some((EMULATOR, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let cli = Cli::command();
    for global in cli.get_arguments().filter(|a| a.is_global_set()) {
        let id = global.get_id().as_str();
        if id == "verbose" || sub.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = format!("--{}", global.get_long().unwrap_or(id));
        let message = if id == "emulator" {
            "--emulator runs another command against an embedded emulator; \
             `evolution emulator` is an emulator itself: drop --emulator"
                .to_string()
        } else if EmbeddedArgs::is_embedded_option(id) {
            format!(
                "{flag} configures the emulator that --emulator embeds in another command; \
                 `evolution emulator` has options of its own"
            )
        } else {
            format!(
                "{flag} is an option of the commands that call the service (chat, batch, \
                 token, models, rerank, transcribe), not of `evolution emulator`"
            )
        };
        // Raised by the subcommand, so the pointer to its help is the
        // emulator's.
        let mut command = command();
        command.build();
        let emulator = command
            .find_subcommand_mut(EMULATOR)
            .expect("the emulator subcommand");
        return Err(emulator.error(clap::error::ErrorKind::ArgumentConflict, message));
    }
    Ok(())
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
    /// Transcribe speech in an audio file (or stdin) to text or subtitles.
    Transcribe(transcribe::TranscribeArgs),
    /// Run the emulator until Ctrl-C, printing the variables a client needs.
    Emulator(emulator::EmulatorCommand),
}

fn main() -> ExitCode {
    // `.env` goes into the environment before parsing, so the flags' `env`
    // fallbacks see it; variables already set win (dotenvy never overrides).
    let dotenv = evolution_langchain::config::load_dotenv();
    let cli = match parse() {
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
    let (connection, embedded) = (&cli.connection, &cli.embedded);
    match cli.command {
        // The interactive session drives the runtime itself, turn by turn.
        Command::Chat(args) => chat::run(&runtime, args, connection, embedded, cli.verbose),
        Command::Batch(args) => runtime.block_on(batch::run(args, connection, embedded)),
        Command::Token(args) => runtime.block_on(token::run(args, connection, embedded)),
        Command::Models(args) => runtime.block_on(models::run(args, connection, embedded)),
        Command::Rerank(args) => runtime.block_on(rerank::run(args, connection, embedded)),
        Command::Transcribe(args) => runtime.block_on(transcribe::run(args, connection, embedded)),
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

    fn parse_from(args: &[&str]) -> Result<Cli, clap::Error> {
        let matches = command().try_get_matches_from(args)?;
        refuse_for_emulator(&matches)?;
        Cli::from_arg_matches(&matches)
    }

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn emulator_flags_before_the_subcommand() {
        let cli = parse_from(&[
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
    fn global_options_go_on_either_side_of_the_subcommand() {
        for args in [
            &[
                "evolution",
                "--max-retries",
                "5",
                "--timeout",
                "3",
                "models",
            ][..],
            &[
                "evolution",
                "models",
                "--max-retries",
                "5",
                "--timeout",
                "3",
            ],
            &[
                "evolution",
                "--max-retries",
                "5",
                "models",
                "--timeout",
                "3",
            ],
        ] {
            let cli = parse_from(args).unwrap();
            assert_eq!(cli.connection.max_retries, 5, "{args:?}");
            assert_eq!(cli.connection.timeout.as_secs(), 3, "{args:?}");
        }
        let cli = parse_from(&["evolution", "chat", "--upstream", "http://h/v1", "hi"]).unwrap();
        assert_eq!(cli.embedded.upstream(), Some("http://h/v1"));
    }

    #[test]
    fn the_emulator_subcommand_keeps_its_own_flags() {
        let cli = parse_from(&[
            "evolution",
            "emulator",
            "--port",
            "0",
            "--model",
            "a",
            "--upstream",
            "http://127.0.0.1:9/v1",
            "--key-id",
            "k",
            "-v",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Emulator(_)));
        assert!(cli.embedded.upstream().is_none());
        assert!(cli.connection.key_id.is_none());
    }

    #[test]
    fn the_emulator_subcommand_refuses_the_client_options() {
        for (args, named) in [
            (
                &["evolution", "--emulator", "emulator"][..],
                "drop --emulator",
            ),
            (&["evolution", "emulator", "--emulator"], "drop --emulator"),
            (
                &["evolution", "--max-retries", "1", "emulator"],
                "--max-retries is an option",
            ),
            (
                &["evolution", "emulator", "--timeout", "1"],
                "--timeout is an option",
            ),
            (
                &["evolution", "--upstream", "http://h/v1", "emulator"],
                "--upstream configures",
            ),
        ] {
            let error = parse_from(args).expect_err("refused").to_string();
            assert!(error.contains(named), "{args:?}: {error}");
        }
        let help = command()
            .try_get_matches_from(["evolution", "emulator", "--help"])
            .expect_err("help")
            .render()
            .to_string();
        for hidden in [
            "  --emulator",
            "--max-retries",
            "--timeout",
            "--base-url",
            "eval",
        ] {
            assert!(
                !help.contains(hidden),
                "{hidden} in emulator --help:\n{help}"
            );
        }
        assert!(help.contains("--env-file"), "{help}");
    }
}
