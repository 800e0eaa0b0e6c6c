//! The emulator, two ways: `evolution emulator` runs it standalone for other
//! programs, and the global `--emulator` flag embeds one in any command so a
//! newcomer sees the whole flow without an account.

use std::io::{self, Write};
use std::path::PathBuf;

use clap::Args;
use evolution_emulator::{env_lines, env_lines_api_key, EmulatorArgs, EmulatorHandle, FaultSpec};

use crate::exit::{CliError, Exit};
use crate::output::replace_file;

/// Options of the embedded emulator (global `--emulator` mode).
///
/// Global flags, accepted before or after the subcommand like the
/// connection flags, named apart from the `emulator` subcommand's
/// (`--word-delay-ms`, `--token-ttl`, `--fault`) and from `chat --model`.
/// They are not for `evolution emulator`, which refuses them (see `main`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Embedded emulator")]
pub struct EmbeddedArgs {
    /// Run against an embedded emulator on a free loopback port instead of
    /// Cloud.ru: no account or credentials needed.
    #[arg(long, global = true, env = "EVOLUTION_EMULATOR", value_parser = parse_switch)]
    pub emulator: bool,

    /// Let the embedded emulator forward chat, models and embeddings to this
    /// OpenAI-compatible engine (e.g. a local llama.cpp server); implies
    /// --emulator. Blank means unset.
    #[arg(
        id = "embedded_upstream",
        long = "upstream",
        global = true,
        value_name = "URL",
        env = "EVOLUTION_EMULATOR_UPSTREAM"
    )]
    pub upstream: Option<String>,

    /// Bearer token the embedded emulator sends to the upstream.
    #[arg(
        id = "embedded_upstream_api_key",
        long = "upstream-api-key",
        global = true,
        value_name = "KEY",
        env = "EVOLUTION_EMULATOR_UPSTREAM_API_KEY",
        hide_env_values = true
    )]
    pub upstream_api_key: Option<String>,

    /// Pause of the embedded emulator before each streamed word, in milliseconds.
    #[arg(
        long,
        global = true,
        value_name = "MS",
        env = "EVOLUTION_EMULATOR_WORD_DELAY_MS",
        default_value_t = 0
    )]
    pub emulator_word_delay_ms: u64,

    /// Lifetime of the embedded emulator's tokens, in seconds (1 to 31622400,
    /// i.e. 366 days).
    #[arg(long, global = true, value_name = "SECS", env = "EVOLUTION_EMULATOR_TOKEN_TTL",
          default_value_t = 3600, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u64).range(1..=MAX_TOKEN_TTL_SECS))]
    pub emulator_token_ttl: u64,

    /// Queue a fault in the embedded emulator, `TARGET=FAULT[xN]`, e.g.
    /// `chat=status:503x2` (repeatable).
    #[arg(long, global = true, value_name = "TARGET=FAULT[xN]")]
    pub emulator_fault: Vec<FaultSpec>,
}

/// The longest token lifetime the embedded emulator accepts: 366 days. A
/// longer one tests nothing a year does not, and the bound keeps expiry
/// times far from the limits of time arithmetic.
const MAX_TOKEN_TTL_SECS: u64 = 86_400 * 366;

/// `EVOLUTION_EMULATOR`'s value: the usual yes/no words, and an empty
/// value (`EVOLUTION_EMULATOR=` in a `.env` file) meaning "off".
fn parse_switch(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" | "n" | "f" => Ok(false),
        "1" | "true" | "yes" | "on" | "y" | "t" => Ok(true),
        _ => Err("expected 1 or 0 (also true/false, yes/no, on/off)".into()),
    }
}

impl EmbeddedArgs {
    /// Whether `id` is one of the embedded emulator's own options (not
    /// `--emulator` itself).
    pub fn is_embedded_option(id: &str) -> bool {
        matches!(
            id,
            "embedded_upstream"
                | "embedded_upstream_api_key"
                | "emulator_word_delay_ms"
                | "emulator_token_ttl"
                | "emulator_fault"
        )
    }

    /// Whether commands run against an embedded emulator.
    pub fn enabled(&self) -> bool {
        self.emulator || self.upstream().is_some()
    }

    /// The upstream engine, if one is set. A blank value (an empty
    /// `EVOLUTION_EMULATOR_UPSTREAM=` in a `.env` file) is no upstream, as
    /// for the other settings.
    pub fn upstream(&self) -> Option<&str> {
        non_blank(self.upstream.as_deref())
    }

    /// The emulator options these flags stand for.
    fn emulator_args(&self) -> EmulatorArgs {
        EmulatorArgs {
            token_ttl: self.emulator_token_ttl,
            word_delay_ms: self.emulator_word_delay_ms,
            upstream: self.upstream().map(str::to_string),
            upstream_api_key: non_blank(self.upstream_api_key.as_deref()).map(str::to_string),
            fault: self.emulator_fault.clone(),
            // The log of recent requests is for tests and the admin API;
            // here it would only hold up to 10 000 request bodies (schemas
            // included) in a long batch's memory.
            request_log_limit: EMBEDDED_REQUEST_LOG_LIMIT,
            ..EmulatorArgs::default()
        }
    }

    /// Starts the embedded emulator on a free loopback port.
    pub async fn start(&self) -> Result<EmulatorHandle, CliError> {
        let args = self.emulator_args();
        let handle = start(&args).await?;
        tracing::info!(url = %handle.url(), upstream = ?args.upstream, "embedded emulator started");
        Ok(handle)
    }
}

/// How many recent requests the embedded emulator's log keeps.
const EMBEDDED_REQUEST_LOG_LIMIT: usize = 100;

/// `value` trimmed, or `None` when it is missing or blank.
fn non_blank(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// How to use `evolution emulator` from a script, shown in its help.
pub const EMULATOR_HELP: &str = "\
The emulator serves until Ctrl-C (or SIGTERM): it never returns, so its output
cannot be captured with $(…). From a script, run it in the background and read
the variables from the file it writes once it listens:
  rm -f emu.env
  evolution emulator --export --env-file emu.env &
  emulator=$!
  until [ -s emu.env ]; do sleep 0.1; done
  . ./emu.env                 # EVOLUTION_* now point at the emulator
  evolution chat \"Hello\"
  kill $emulator
For one command, `evolution --emulator …` embeds an emulator instead.";

/// `evolution emulator`: the emulator's own options.
#[derive(Debug, Clone, Args)]
#[command(after_help = EMULATOR_HELP)]
pub struct EmulatorCommand {
    #[command(flatten)]
    args: EmulatorArgs,

    /// Prefix each printed line with `export `, for a shell that sources
    /// them (see --env-file).
    #[arg(long)]
    export: bool,

    /// Also write the variables to this file once the emulator listens
    /// (replaced whole, never seen half-written), and keep serving: a
    /// script waits for the file, then sources it (see below).
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,

    /// Print the API-key form (EVOLUTION_API_KEY, EVOLUTION_BASE_URL and
    /// EVOLUTION_MODEL) instead of the key id/secret one; needs --api-key.
    #[arg(long, requires = "api_key")]
    api_key_env: bool,
}

/// Starts an emulator and queues its faults.
async fn start(args: &EmulatorArgs) -> Result<EmulatorHandle, CliError> {
    let handle = args.builder().start().await.map_err(|e| {
        let exit = if e.kind() == io::ErrorKind::InvalidInput {
            Exit::Usage
        } else {
            Exit::Failure
        };
        CliError::new(exit, format!("cannot start the emulator: {e}"))
    })?;
    args.apply_faults(&handle);
    Ok(handle)
}

/// Runs the emulator until Ctrl-C or SIGTERM, after printing the variables a
/// client needs (only those go to stdout, so the output can be sourced) and
/// writing them to `--env-file`.
pub async fn run(command: EmulatorCommand) -> Result<(), CliError> {
    let handle = start(&command.args).await?;
    let prefix = if command.export { "export " } else { "" };
    let text: String = env_lines_for(&handle, command.api_key_env)
        .lines()
        .map(|line| format!("{prefix}{line}\n"))
        .collect();
    if let Some(path) = &command.env_file {
        // Whole or not at all: a reader waiting for the file never sees part of it.
        if let Err(e) = replace_file(path, |out| {
            out.write_all(text.as_bytes()).map(|()| ((), true))
        }) {
            handle.shutdown().await;
            return Err(CliError::failure(format!(
                "cannot write {}: {e}",
                path.display()
            )));
        }
    }
    let mut stdout = io::stdout().lock();
    // A closed stdout (piped into `head`) must not stop the server.
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
    drop(stdout);
    eprintln!(
        "evolution: emulator listening on {}; Ctrl-C to stop",
        handle.url()
    );
    crate::signal::ctrl_c_or_term().await;
    handle.shutdown().await;
    Ok(())
}

/// The variables a client needs: the key id/secret form, or the API-key
/// form.
fn env_lines_for(handle: &EmulatorHandle, api_key: bool) -> String {
    match env_lines_api_key(handle).filter(|_| api_key) {
        Some(lines) => lines,
        None => env_lines(handle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_values() {
        for on in ["1", "true", "YES", " on "] {
            assert_eq!(parse_switch(on), Ok(true), "{on}");
        }
        for off in ["", "0", "false", "No", "off"] {
            assert_eq!(parse_switch(off), Ok(false), "{off}");
        }
        assert!(parse_switch("maybe").is_err());
    }
}
