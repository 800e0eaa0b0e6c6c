//! Measures request throughput and latency of `invoke`.
//!
//! ```text
//! cargo run --release -p evolution-langchain --example throughput -- --concurrency 16 --seconds 10
//! cargo run --release -p evolution-langchain --example throughput -- \
//!     --base-url http://127.0.0.1:8080/v1 --token sk-local --concurrency 4
//! ```
//!
//! Without `--base-url` it starts the emulator in-process in "instant" mode
//! (no word delay), so the figures show the client's own overhead.

use std::time::{Duration, Instant};

use clap::Parser;
use evolution_langchain::EvolutionInference;

#[derive(Parser)]
struct Args {
    /// OpenAI-compatible base URL; omit to use an embedded emulator.
    #[arg(long)]
    base_url: Option<String>,
    /// Bearer token (API key) for `--base-url`.
    #[arg(long, default_value = "")]
    token: String,
    /// Model name.
    #[arg(long, default_value = "")]
    model: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// How long to run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// The prompt sent every time.
    #[arg(long, default_value = "What is the capital of France?")]
    prompt: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut emulator = None;
    let llm = match &args.base_url {
        Some(base_url) => EvolutionInference::builder()
            .base_url(base_url)
            .api_key(&args.token)
            .model(&args.model)
            .build()?,
        None => {
            let emu = evolution_emulator::Emulator::start().await?;
            let llm = EvolutionInference::builder()
                .base_url(emu.base_url())
                .auth_url(emu.auth_url())
                .key_id(emu.key_id())
                .secret(emu.secret())
                .build()?;
            emulator = Some(emu);
            llm
        }
    };
    llm.invoke(&args.prompt).await?; // warm up: token and connection

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let workers: Vec<_> = (0..args.concurrency.max(1))
        .map(|_| {
            let llm = llm.clone();
            let prompt = args.prompt.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match llm.invoke(&prompt).await {
                        Ok(_) => latencies.push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (mut l, e) = worker.await?;
        latencies.append(&mut l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "target={} concurrency={} requests={} errors={} requests/s={:.0} p50={:.3}ms p99={:.3}ms",
        if emulator.is_some() {
            "emulator(instant)"
        } else {
            "base-url"
        },
        args.concurrency,
        latencies.len(),
        errors,
        latencies.len() as f64 / elapsed,
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}
