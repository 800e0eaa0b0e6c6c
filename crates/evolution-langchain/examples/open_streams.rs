//! Memory per open stream: holds N streams open at once (default 10,000)
//! through one `EvolutionInference` (clones share its connection pool) and
//! reports how much the process's resident memory grew.
//!
//! ```text
//! cargo run --release -p evolution-langchain --example open_streams
//! cargo run --release -p evolution-langchain --example open_streams -- --streams 2000
//! ```
//!
//! The emulator runs in a child process (this same program, started again
//! with `--serve-emulator`), so the memory measured is the client's alone:
//! its tasks, HTTP/1.1 connections (one per stream) and stream decoders.
//! The emulator sends each stream's first chunk at once and then one word
//! every `--word-delay-ms` (default 10 s, well inside the client's default
//! 60 s read timeout), so every stream stays open, receiving now and then,
//! until the program closes them all.
//!
//! Each side needs a file descriptor per stream: the soft `RLIMIT_NOFILE`
//! is raised to what is needed when the hard limit allows it, and the
//! program stops with a message saying so when it does not. The exit code
//! is non-zero if any stream failed to open, failed while held, or ended
//! early.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use evolution_emulator::Emulator;
use evolution_langchain::EvolutionInference;
use futures::StreamExt;
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::sync::{mpsc, watch, Semaphore};

/// The API key the child emulator accepts and the client sends.
const API_KEY: &str = "sk-open-streams";

/// Descriptors needed besides one per stream (runtime, stdio, pipes).
const SPARE_FDS: u64 = 256;

/// Words in each streamed answer: with the default delay, a stream lasts
/// five minutes, longer than opening them all takes.
const WORDS: usize = 30;

/// Command-line options.
#[derive(Parser)]
struct Args {
    /// Streams held open at once.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Pause of the emulator before each word after the first chunk, in
    /// milliseconds.
    #[arg(long, default_value_t = 10_000)]
    word_delay_ms: u64,
    /// Streams being opened at any moment (the rest wait their turn).
    #[arg(long, default_value_t = 256)]
    open_parallel: usize,
    /// Give up if the streams are not all open after this many seconds.
    #[arg(long, default_value_t = 240)]
    timeout_secs: u64,
    /// Internal: run as the emulator process, print its base URL, and stop
    /// when stdin closes.
    #[arg(long, hide = true)]
    serve_emulator: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if args.serve_emulator {
        serve_emulator(&args)
    } else {
        measure(&args)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!(
                "open_streams{}: {message}",
                if args.serve_emulator {
                    " (emulator)"
                } else {
                    ""
                }
            );
            ExitCode::FAILURE
        }
    }
}

/// Makes sure this process may hold `needed` file descriptors.
fn raise_fd_limit(needed: u64) -> Result<(), String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    if soft >= needed {
        return Ok(());
    }
    if hard < needed {
        return Err(format!(
            "{needed} file descriptors are needed but the hard RLIMIT_NOFILE is {hard} \
             (soft {soft}); raise it (e.g. `ulimit -Hn {needed}` as root, or \
             LimitNOFILE= in a unit) or pass a smaller --streams"
        ));
    }
    setrlimit(Resource::RLIMIT_NOFILE, needed, hard).map_err(|e| {
        format!("cannot raise the soft RLIMIT_NOFILE from {soft} to {needed} (hard {hard}): {e}")
    })
}

/// The child: an emulator on a free port until stdin closes.
fn serve_emulator(args: &Args) -> Result<(), String> {
    raise_fd_limit(args.streams as u64 + SPARE_FDS)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("no runtime: {e}"))?;
    runtime.block_on(async {
        let emulator = Emulator::builder()
            .api_key(API_KEY)
            .word_delay(Duration::from_millis(args.word_delay_ms))
            .request_log_limit(0)
            .start()
            .await
            .map_err(|e| format!("cannot start: {e}"))?;
        let mut stdout = io::stdout().lock();
        writeln!(stdout, "{}", emulator.base_url())
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot report the URL: {e}"))?;
        drop(stdout);
        // The parent closes our stdin (or exits) when it is done.
        let _ = tokio::task::spawn_blocking(|| io::stdin().read_to_end(&mut Vec::new())).await;
        emulator.shutdown().await;
        Ok(())
    })
}

/// The child emulator process; stopped and reaped when dropped.
struct EmulatorProcess {
    /// The process, its stdin still open.
    child: Child,
    /// Its base URL.
    base_url: String,
}

impl EmulatorProcess {
    /// Starts this program again as the emulator and reads its URL.
    fn start(args: &Args) -> Result<Self, String> {
        let program =
            std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
        let mut child = Command::new(program)
            .arg("--serve-emulator")
            .arg(format!("--streams={}", args.streams))
            .arg(format!("--word-delay-ms={}", args.word_delay_ms))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start the emulator process: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut process = Self {
            child,
            base_url: String::new(),
        };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the emulator's URL: {e}"))?;
        process.base_url = line.trim().to_string();
        if process.base_url.is_empty() {
            return Err("the emulator process exited without printing its URL".into());
        }
        Ok(process)
    }

    /// The emulator's resident memory, in KiB, if it can be read.
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status_field(&status, "VmRSS:")
    }
}

impl Drop for EmulatorProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take()); // asks it to stop
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `kB` field of `/proc/*/status`, in KiB.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// This process's resident memory and its peak, in KiB.
fn own_memory() -> Result<(u64, u64), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    match (
        status_field(&status, "VmRSS:"),
        status_field(&status, "VmHWM:"),
    ) {
        (Some(rss), Some(hwm)) => Ok((rss, hwm)),
        _ => Err("/proc/self/status has no VmRSS/VmHWM".into()),
    }
}

/// KiB as MB with one decimal.
fn mb(kib: u64) -> String {
    format!("{:.1} MB", kib as f64 / 1024.0)
}

/// The parent: opens the streams, measures, closes them.
fn measure(args: &Args) -> Result<(), String> {
    if args.streams == 0 {
        return Err("--streams must be at least 1".into());
    }
    raise_fd_limit(args.streams as u64 + SPARE_FDS)?;
    let emulator = EmulatorProcess::start(args)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("no runtime: {e}"))?;
    let outcome = runtime.block_on(hold_streams(args, &emulator));
    drop(runtime);
    drop(emulator);
    outcome
}

/// Why a stream did not stay open till the end.
type Failure = String;

/// Opens every stream, waits for every first chunk, measures, closes.
async fn hold_streams(args: &Args, emulator: &EmulatorProcess) -> Result<(), String> {
    let llm = EvolutionInference::builder()
        .base_url(&emulator.base_url)
        .api_key(API_KEY)
        .model(evolution_emulator::DEFAULT_MODEL)
        .build()
        .map_err(|e| format!("cannot build the client: {e}"))?;
    // Warm up the client (connection pool, TLS setup, lazy statics) without
    // holding a stream: the models list answers at once.
    llm.list_models()
        .await
        .map_err(|e| format!("the emulator does not answer: {e}"))?;
    let (rss_before, hwm_before) = own_memory()?;
    let prompt = vec!["hold"; WORDS].join(" ");

    let (close, closed) = watch::channel(false);
    let (report, mut reports) = mpsc::unbounded_channel::<Result<(), Failure>>();
    let opening = Arc::new(Semaphore::new(args.open_parallel.max(1)));
    let started = Instant::now();
    let tasks: Vec<_> = (0..args.streams)
        .map(|_| {
            let llm = llm.clone();
            let prompt = prompt.clone();
            let mut closed = closed.clone();
            let report = report.clone();
            let opening = Arc::clone(&opening);
            // Reports whether its stream opened; returns why it failed
            // afterwards, if it did.
            tokio::spawn(async move {
                // Boxed: opening takes a much larger future than holding
                // does, and only the box (freed once open) should pay for it,
                // not every held stream's task.
                let open = Box::pin(async {
                    let _permit = opening.acquire_owned().await.expect("never closed");
                    let mut stream = llm.stream(&prompt).await.map_err(|e| e.to_string())?;
                    match stream.next().await {
                        Some(Ok(_)) => Ok(stream),
                        Some(Err(e)) => Err(e.to_string()),
                        None => Err("the stream ended before its first chunk".to_string()),
                    }
                });
                let opened = tokio::select! {
                    // Given up on (the time ran out): counted as not open.
                    _ = closed.wait_for(|closed| *closed) => return None,
                    opened = open => opened,
                };
                let mut stream = match opened {
                    Ok(stream) => {
                        let _ = report.send(Ok(()));
                        stream
                    }
                    Err(failure) => {
                        let _ = report.send(Err(failure));
                        return None;
                    }
                };
                loop {
                    tokio::select! {
                        _ = closed.wait_for(|closed| *closed) => return None,
                        item = stream.next() => match item {
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Some(format!("while held open: {e}")),
                            None => return Some("ended while held open".to_string()),
                        },
                    }
                }
            })
        })
        .collect();
    drop(report);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.timeout_secs);
    let (mut open, mut failed) = (0usize, Vec::new());
    let mut next_progress = Instant::now() + Duration::from_secs(5);
    while open + failed.len() < args.streams {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(failure))) => failed.push(failure),
            Ok(None) => break,
            Err(_) => {
                failed.push(format!(
                    "{} streams not open after {} s",
                    args.streams - open - failed.len(),
                    args.timeout_secs
                ));
                break;
            }
        }
        if Instant::now() >= next_progress {
            eprintln!(
                "  {open} open, {} failed after {:.0} s",
                failed.len(),
                started.elapsed().as_secs_f64()
            );
            next_progress += Duration::from_secs(5);
        }
    }
    let open_time = started.elapsed();
    let (rss_open, hwm_open) = own_memory()?;
    let emulator_rss = emulator.rss_kib();

    let _ = close.send(true);
    let mut held_failures = 0usize;
    for task in tasks {
        match task.await {
            Ok(None) => {}
            Ok(Some(failure)) => {
                held_failures += 1;
                failed.push(failure);
            }
            Err(e) => {
                held_failures += 1;
                failed.push(format!("task: {e}"));
            }
        }
    }
    drop(llm);
    let (rss_closed, _) = own_memory()?;

    let growth = rss_open.saturating_sub(rss_before);
    println!(
        "{open} streams open: {:.1} KB per stream (RSS +{})",
        growth as f64 / open.max(1) as f64,
        mb(growth)
    );
    println!(
        "  RSS before {} / all open {} / all closed {}; peak (VmHWM) {} before, {} open",
        mb(rss_before),
        mb(rss_open),
        mb(rss_closed),
        mb(hwm_before),
        mb(hwm_open)
    );
    println!(
        "  opened in {:.1} s ({} at a time); one client, emulator in a separate process{}",
        open_time.as_secs_f64(),
        args.open_parallel,
        emulator_rss.map_or(String::new(), |kib| format!(" (its RSS {})", mb(kib)))
    );
    if failed.is_empty() && held_failures == 0 && open == args.streams {
        Ok(())
    } else {
        failed.sort();
        failed.dedup();
        for failure in failed.iter().take(10) {
            eprintln!("  failure: {failure}");
        }
        Err(format!(
            "{} of {} streams failed ({} after opening)",
            args.streams - open + held_failures,
            args.streams,
            held_failures
        ))
    }
}
