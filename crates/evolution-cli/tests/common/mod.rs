//! Helpers for the tests that run the built `evolution` binary against an
//! emulator started in the test process, on loopback.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use evolution_emulator::{EmulatorBuilder, EmulatorHandle};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Longest any single run of the binary may take before the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// An emulator served by its own runtime, which lives as long as this value.
pub struct Emu {
    /// Controls the emulator.
    pub handle: EmulatorHandle,
    _runtime: tokio::runtime::Runtime,
}

impl Emu {
    /// Starts an emulator configured by `builder` on a free loopback port.
    pub fn start(builder: EmulatorBuilder) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let handle = runtime.block_on(builder.start()).expect("emulator starts");
        Self {
            handle,
            _runtime: runtime,
        }
    }

    /// A command for the binary, configured for this emulator through the
    /// environment (as a user with an account would configure it).
    pub fn command(&self) -> Command {
        let mut command = evolution();
        command
            .env("EVOLUTION_KEY_ID", self.handle.key_id())
            .env("EVOLUTION_SECRET", self.handle.secret())
            .env("EVOLUTION_BASE_URL", self.handle.base_url())
            .env("EVOLUTION_TOKEN_URL", self.handle.auth_url());
        command
    }
}

/// The binary with a clean environment: no `EVOLUTION_*` or `RUST_LOG` from
/// the developer's shell, and a working directory without a `.env` file.
pub fn evolution() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evolution"));
    command.env_clear().current_dir(std::env::temp_dir());
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command
}

/// What a finished run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        &self.stdout
    }

    /// Asserts a failure with `code` and a single, clean line on stderr.
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "{self:#?}");
        let line = self.stderr.trim_end();
        assert_eq!(line.lines().count(), 1, "one line expected: {self:#?}");
        assert!(line.starts_with("evolution: "), "{self:#?}");
        for noise in ["panicked", "backtrace", "RUST_BACKTRACE", "Error {"] {
            assert!(!line.contains(noise), "{noise} in {line}");
        }
        line
    }
}

/// Runs `command` to completion (feeding `stdin` if given), within
/// [`RUN_TIMEOUT`].
pub fn run(command: &mut Command, stdin: Option<&str>) -> Run {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn evolution");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).expect("write stdin");
        // Dropping the pipe is the end of input.
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => {
            let output = output.expect("wait for evolution");
            Run {
                code: output.status.code(),
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            }
        }
        Err(_) => {
            signal(pid, Signal::SIGKILL);
            panic!("evolution did not finish within {RUN_TIMEOUT:?}");
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: Signal) {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    kill(pid, signal).expect("send signal");
}

/// Waits for `child` to exit, killing it and failing after `timeout`.
pub fn wait(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a child's pipe on a thread, forwarding each read with its arrival
/// time, so a test can tell when output appeared.
pub fn timed_reads(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<(Instant, Vec<u8>)> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Reads `count` lines from a child's pipe, failing after `timeout`.
pub fn read_lines(
    pipe: impl Read + Send + 'static,
    count: usize,
    timeout: Duration,
) -> Vec<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    (0..count)
        .map(|_| {
            let left = deadline.saturating_duration_since(Instant::now());
            rx.recv_timeout(left).expect("line in time")
        })
        .collect()
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Fails if `text` contains anything shaped like a whole JWT (the
/// emulator's tokens are JWT-shaped: three dot-separated base64 parts).
pub fn assert_no_token(text: &str) {
    let base64url = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    for word in text.split(|c: char| c.is_whitespace() || "\"',".contains(c)) {
        let parts: Vec<&str> = word.split('.').collect();
        let looks_like_jwt =
            word.len() > 20 && parts.len() == 3 && parts.iter().all(|p| base64url(p));
        assert!(!looks_like_jwt, "a token-like string was printed: {word}");
    }
}

/// The lines of a JSONL file, each parsed; panics on a line that is not JSON.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    parse_jsonl(&std::fs::read_to_string(path).expect("read output"))
}

/// Parses JSONL output, requiring every line (the last included) to be complete.
pub fn parse_jsonl(text: &str) -> Vec<serde_json::Value> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output ends mid-line: {:?}",
        &text[text.len().saturating_sub(80)..]
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
        })
        .collect()
}
