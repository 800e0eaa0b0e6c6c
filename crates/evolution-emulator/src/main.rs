//! `evolution-emulator`: runs the emulator until Ctrl-C, after printing the environment a
//! client needs (only those lines go to stdout). It keeps running, so read the lines while
//! it does, e.g. `evolution-emulator --port 8000 > emulator.env &`, then, once the file
//! has its lines, `set -a; . ./emulator.env; set +a` in the shell that runs the client.
//! `--print-env iam` (the default) prints the IAM form ([`env_lines`]); `--print-env
//! api-key` prints the API-key form ([`env_lines_api_key`]) and needs `--api-key`.

use std::io::Write;

use clap::Parser;
use evolution_emulator::{env_lines, env_lines_api_key, EmulatorArgs};
use tracing_subscriber::EnvFilter;

/// Local stand-in for the Cloud.ru IAM and Foundation Models APIs.
#[derive(Debug, Parser)]
#[command(name = "evolution-emulator", version, about)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,

    /// Which client environment to print: IAM credentials or the first API key.
    #[arg(long, value_enum, default_value_t = PrintEnv::Iam)]
    print_env: PrintEnv,
}

/// The forms of client environment the binary can print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PrintEnv {
    /// `EVOLUTION_KEY_ID`, `EVOLUTION_SECRET`, `EVOLUTION_BASE_URL`, `EVOLUTION_TOKEN_URL`,
    /// `EVOLUTION_MODEL`.
    Iam,
    /// `EVOLUTION_API_KEY` and `EVOLUTION_BASE_URL` only.
    ApiKey,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.print_env == PrintEnv::ApiKey && cli.emulator.api_key.is_empty() {
        eprintln!("evolution-emulator: --print-env api-key needs at least one --api-key");
        return std::process::ExitCode::from(2);
    }

    let handle = match cli.emulator.builder().start().await {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("evolution-emulator: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    cli.emulator.apply_faults(&handle);
    let env = match cli.print_env {
        PrintEnv::Iam => env_lines(&handle),
        // Checked above: a key is configured.
        PrintEnv::ApiKey => env_lines_api_key(&handle).unwrap_or_default(),
    };

    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the server.
    let _ = stdout.write_all(env.as_bytes());
    let _ = stdout.flush();
    drop(stdout);

    wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// Ctrl-C, or SIGTERM where there is one (service managers and CI scripts send it).
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
