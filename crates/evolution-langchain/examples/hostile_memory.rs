//! Peak memory against a hostile server: an embedded emulator answers with
//! replies far over the size limits (a huge JSON body, a huge IAM reply, one
//! giant SSE line), and the client refuses each. Prints the process's peak
//! resident memory (`VmHWM`, Linux) after each, to show it stays near the
//! limits, not the reply sizes.
//!
//! ```sh
//! cargo run --release -p evolution-langchain --example hostile_memory [MB]
//! ```

use std::time::Duration;

use evolution_emulator::{Emulator, Fault, Target};
use evolution_langchain::EvolutionInference;

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmHWM:"))
                .map(|line| line["VmHWM:".len()..].trim().to_string())
        })
        .unwrap_or_else(|| "unknown (no /proc/self/status)".into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let megabytes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let size = megabytes << 20;
    let emu = Emulator::start().await?;
    let llm = EvolutionInference::builder()
        .model(emu.default_model())
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .max_retries(0)
        .request_timeout(Duration::from_secs(120))
        .build()?;
    println!("start: peak RSS {}", peak_rss());
    println!("{}", llm.invoke("warm up").await?);
    println!("after one normal answer: peak RSS {}", peak_rss());

    emu.inject(Target::Chat, Fault::Oversize(size), 1);
    let err = llm.invoke("hi").await.unwrap_err();
    println!(
        "{megabytes} MB JSON reply: {err}\n  peak RSS {}",
        peak_rss()
    );

    emu.inject(Target::Chat, Fault::Oversize(size), 1);
    let outcome = llm.stream("hi").await?.collect_response().await;
    println!(
        "{megabytes} MB SSE line: {}\n  peak RSS {}",
        outcome.unwrap_err(),
        peak_rss()
    );

    llm.token_manager().expect("IAM mode").invalidate();
    emu.inject(Target::Auth, Fault::Oversize(size), 1);
    let err = llm.invoke("hi").await.unwrap_err();
    println!("{megabytes} MB IAM reply: {err}\n  peak RSS {}", peak_rss());
    emu.shutdown().await;
    Ok(())
}
