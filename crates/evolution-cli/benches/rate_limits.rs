//! `evolution batch` at a provider's rate limit: prompts failed, efficiency
//! and the share of requests answered `429`, for the ways a user runs a
//! batch, printed as a table (figures, not a timed test).
//!
//! ```text
//! cargo bench -p evolution-cli --bench rate_limits
//! cargo bench -p evolution-cli --bench rate_limits -- --prompts 300 --only fleet
//! ```
//!
//! The service: the emulator in this process, allowing 600 requests a
//! minute per key, enforced per second (its bucket holds one second's
//! worth, 10 requests), answering after 200 ms, `429` with `Retry-After`
//! when the bucket is empty. Each run gets a fresh emulator (fresh buckets
//! and counters) and the built `evolution` binary, configured through the
//! environment as a user's would be, with 300 plain prompts.
//!
//! - efficiency: the time the sustained limit allows (300 prompts at 10 a
//!   second: 30 s) over the wall time; 1.0 uses the limit to the full;
//! - 429 share: requests the service refused over all requests it got;
//! - IAM: token exchanges (the fleet shares one through Redis).
//!
//! The fleet runs start a `redis-server` of their own on a free port.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, EmulatorHandle, RedisServer};

/// The service's limit, per minute.
const RPM: u32 = 600;
/// How long the service takes per answer.
const LATENCY: Duration = Duration::from_millis(200);

/// One way of running the batch.
struct Case {
    name: &'static str,
    /// Processes sharing the key (the prompts split between them).
    processes: usize,
    /// Flags of each `evolution batch`.
    flags: Vec<String>,
    /// Whether the processes share a Redis.
    redis: bool,
    /// Only with `--only <group>`.
    group: &'static str,
}

/// What a run came to.
struct Figures {
    failed: usize,
    wall: Duration,
    requests: u64,
    refused: u64,
    iam: u64,
}

fn cases() -> Vec<Case> {
    let flags = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
    vec![
        Case {
            name: "-c 32, nothing configured (adaptive only)",
            processes: 1,
            flags: flags(&["-c", "32"]),
            redis: false,
            group: "single",
        },
        Case {
            name: "-c 32 --rpm 600",
            processes: 1,
            flags: flags(&["-c", "32", "--rpm", "600"]),
            redis: false,
            group: "single",
        },
        Case {
            name: "-c 32 --max-rate-limit-wait 0 (no patience for 429s)",
            processes: 1,
            flags: flags(&["-c", "32", "--max-rate-limit-wait", "0"]),
            redis: false,
            group: "single",
        },
        Case {
            name: "4 processes -c 8 --rpm 600, Redis",
            processes: 4,
            flags: flags(&["-c", "8", "--rpm", "600"]),
            redis: true,
            group: "fleet",
        },
        Case {
            name: "4 processes -c 8 --rpm 600, no Redis",
            processes: 4,
            flags: flags(&["-c", "8", "--rpm", "600"]),
            redis: false,
            group: "fleet",
        },
    ]
}

/// Writes `count` prompts starting at `first` to `path`.
fn write_prompts(path: &Path, first: usize, count: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    for i in first..first + count {
        writeln!(file, "prompt number {i}").unwrap();
    }
}

/// Error lines in a batch's output.
fn failures(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .map(|v| !v["error"].is_null())
                .unwrap_or(true)
        })
        .count()
}

fn run(case: &Case, prompts: usize, runtime: &tokio::runtime::Runtime) -> Figures {
    let emu: EmulatorHandle = runtime
        .block_on(
            Emulator::builder()
                .requests_per_minute(RPM)
                .rate_burst(Duration::from_secs(1))
                .latency(LATENCY)
                .request_log_limit(0)
                .start(),
        )
        .expect("the emulator starts");
    let redis = case.redis.then(RedisServer::start);
    let dir = tempfile::tempdir().unwrap();
    let share = prompts.div_ceil(case.processes);
    let started = Instant::now();
    let children: Vec<(Child, PathBuf)> = (0..case.processes)
        .map(|i| {
            let first = i * share;
            let count = share.min(prompts - first);
            let input = dir.path().join(format!("in{i}.txt"));
            let output = dir.path().join(format!("out{i}.jsonl"));
            write_prompts(&input, first, count);
            let mut command = Command::new(env!("CARGO_BIN_EXE_evolution"));
            command
                .env_clear()
                .env("EVOLUTION_KEY_ID", emu.key_id())
                .env("EVOLUTION_SECRET", emu.secret())
                .env("EVOLUTION_BASE_URL", emu.base_url())
                .env("EVOLUTION_TOKEN_URL", emu.auth_url())
                .current_dir(dir.path())
                .args(["batch", "-q", "--max-tokens", "4"])
                .args(&case.flags)
                .arg("-o")
                .arg(&output)
                .arg(&input)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(redis) = &redis {
                command.args(["--redis-url", &redis.url()]);
            }
            (command.spawn().expect("the evolution binary"), output)
        })
        .collect();
    let mut failed = 0;
    for (mut child, output) in children {
        child.wait().unwrap();
        failed += failures(&output);
    }
    let wall = started.elapsed();
    let counters = emu.counters();
    runtime.block_on(emu.shutdown());
    Figures {
        failed,
        wall,
        requests: counters.chat_requests,
        refused: counters.rate_limited,
        iam: counters.tokens_issued,
    }
}

fn main() {
    let mut prompts = 300;
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--prompts" => {
                prompts = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--prompts N")
            }
            "--only" => only = args.next(),
            _ => {} // `--bench` from cargo
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ideal = Duration::from_secs_f64(prompts as f64 * 60.0 / f64::from(RPM));
    println!(
        "evolution batch, {prompts} prompts, against a service allowing {RPM} requests a minute \
         (10 a second) answering in {} ms; the limit allows {:.0} s\n",
        LATENCY.as_millis(),
        ideal.as_secs_f64()
    );
    println!(
        "| run | prompts failed | wall | efficiency | requests | answered 429 | IAM requests |"
    );
    println!("|---|---|---|---|---|---|---|");
    for case in cases() {
        if only.as_deref().is_some_and(|only| only != case.group) {
            continue;
        }
        let figures = run(&case, prompts, &runtime);
        println!(
            "| {} | {} | {:.1} s | {:.2} | {} | {:.1} % | {} |",
            case.name,
            figures.failed,
            figures.wall.as_secs_f64(),
            ideal.as_secs_f64() / figures.wall.as_secs_f64(),
            figures.requests,
            100.0 * figures.refused as f64 / figures.requests.max(1) as f64,
            figures.iam,
        );
    }
}
