//! `evolution-emulator`: runs the emulator until Ctrl-C, after printing the environment a
//! client needs (`eval "$(evolution-emulator …)"`-friendly: only those lines go to stdout).

use std::io::Write;

use clap::Parser;
use evolution_emulator::{env_lines, EmulatorArgs};
use tracing_subscriber::EnvFilter;

/// Local stand-in for the Cloud.ru IAM and Foundation Models APIs.
#[derive(Debug, Parser)]
#[command(name = "evolution-emulator", version, about)]
struct Cli {
    #[command(flatten)]
    emulator: EmulatorArgs,
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

    let handle = match cli.emulator.builder().start().await {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("evolution-emulator: cannot start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    cli.emulator.apply_faults(&handle);

    let mut stdout = std::io::stdout().lock();
    // A closed stdout (e.g. piped into `head`) must not stop the server.
    let _ = stdout.write_all(env_lines(&handle).as_bytes());
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
