//! `evolution chat` one-shot: streaming, stdin, JSON, flags, errors.

use std::process::Stdio;
use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, Fault, Target};
use serde_json::{json, Value};

use crate::common::{closed_port, run, timed_reads, wait, Emu};

#[test]
fn chat_streams_the_answer_as_it_is_written() {
    // 12 words, 150 ms apart: the answer takes about 1.8 s to finish.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(150)));
    let prompt = "one two three four five six seven eight nine ten eleven twelve";
    let mut child = emu
        .command()
        .args(["chat", prompt])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let reads = timed_reads(child.stdout.take().expect("stdout"));

    let (first_at, first) = reads
        .recv_timeout(Duration::from_secs(20))
        .expect("some output");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the first words arrived only after the process ended"
    );
    let mut output = first;
    let mut last_at = first_at;
    while let Ok((at, bytes)) = reads.recv_timeout(Duration::from_secs(20)) {
        output.extend(bytes);
        last_at = at;
    }
    assert!(wait(&mut child, Duration::from_secs(20)).success());
    assert_eq!(String::from_utf8(output).unwrap(), format!("{prompt}\n"));
    assert!(
        last_at - first_at >= Duration::from_millis(900),
        "the answer arrived in one piece ({:?} between first and last write)",
        last_at - first_at
    );
    assert_eq!(emu.handle.counters().stream_requests, 1);
}

#[test]
fn chat_reads_a_piped_prompt() {
    let emu = Emu::start(Emulator::builder());
    let piped = run(emu.command().arg("chat"), Some("a prompt from a pipe\n"));
    assert_eq!(piped.ok(), "a prompt from a pipe\n");
    let dash = run(emu.command().args(["chat", "-"]), Some("dash means stdin"));
    assert_eq!(dash.ok(), "dash means stdin\n");

    let empty = run(emu.command().arg("chat"), Some(""));
    assert!(empty.fails_with(2).contains("stdin was empty"));
}

#[test]
fn chat_json_is_the_full_response() {
    let emu = Emu::start(Emulator::builder());
    let out = run(emu.command().args(["chat", "--json", "Hello JSON"]), None);
    let response: Value = serde_json::from_str(out.ok()).expect("valid JSON");
    assert_eq!(response["choices"][0]["message"]["content"], "Hello JSON");
    assert_eq!(response["choices"][0]["finish_reason"], "stop");
    assert_eq!(response["usage"]["completion_tokens"], 2);
}

#[test]
fn chat_flags_reach_the_request() {
    let emu = Emu::start(Emulator::builder());
    let out = run(
        emu.command().args([
            "chat",
            "--no-stream",
            "--model",
            "my-model",
            "--system",
            "Be brief.",
            "--temperature",
            "0.5",
            "--max-tokens",
            "3",
            "--top-p",
            "0.9",
            "--stop",
            "END",
            "alpha beta gamma delta",
        ]),
        None,
    );
    assert_eq!(out.ok(), "alpha beta gamma\n");
    let body = emu.handle.last_request().expect("a request").body;
    assert_eq!(body["model"], "my-model");
    assert_eq!(body["stream"], false);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["max_tokens"], 3);
    assert_eq!(body["stop"], json!(["END"]));
    assert!((body["top_p"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "alpha beta gamma delta"},
        ])
    );
}

#[test]
fn chat_errors_are_one_line_with_their_exit_code() {
    let emu = Emu::start(Emulator::builder());

    // The API refuses the request.
    emu.handle.inject(Target::Chat, Fault::Status(400), 1);
    let refused = run(emu.command().args(["chat", "hi"]), None);
    assert!(refused.fails_with(6).contains("400"), "{refused:?}");

    // A stream cut midway: the words that came are shown, then the error.
    emu.handle.inject(Target::Chat, Fault::CutStream(3), 1);
    let cut = run(emu.command().args(["chat", "a b c d e f"]), None);
    assert!(cut.fails_with(6).contains("stream"), "{cut:?}");
    assert!(
        cut.stdout.starts_with("a b") && cut.stdout.ends_with('\n'),
        "the words before the cut were lost: {cut:?}"
    );
    assert!(
        "a b c d e f".starts_with(cut.stdout.trim_end()) && cut.stdout.trim_end() != "a b c d e f",
        "{cut:?}"
    );

    // The model API forbids the key (403 after a refreshed token too): the
    // same code as IAM's 403.
    emu.handle.inject(Target::Chat, Fault::Status(403), 2);
    let forbidden = run(emu.command().args(["chat", "hi"]), None);
    let line = forbidden.fails_with(4);
    assert!(line.contains("403"), "{line}");
    // A permission problem, not a malformed request.
    assert!(line.contains("no permission"), "{line}");
    assert!(!line.contains("fix the request"), "{line}");

    // The model API rejects a freshly issued token (401 twice): bad credentials.
    emu.handle.inject(Target::Chat, Fault::Status(401), 2);
    let rejected = run(emu.command().args(["chat", "hi"]), None);
    assert!(rejected.fails_with(3).contains("401"), "{rejected:?}");

    // Nothing listens at the base URL.
    let unreachable = run(
        emu.command().args(["chat", "hi"]).env(
            "EVOLUTION_BASE_URL",
            format!("http://127.0.0.1:{}/v1", closed_port()),
        ),
        None,
    );
    unreachable.fails_with(5);

    // A base URL that is not a URL.
    let invalid = run(
        emu.command()
            .args(["chat", "hi"])
            .env("EVOLUTION_BASE_URL", "not a url"),
        None,
    );
    let line = invalid.fails_with(2);
    assert!(line.contains("--base-url (EVOLUTION_BASE_URL)"), "{line}");
}

#[test]
fn chat_timeouts_exit_with_the_network_code() {
    let emu = Emu::start(Emulator::builder());

    // The model API does not answer in time.
    emu.handle
        .inject(Target::Chat, Fault::Delay(Duration::from_secs(3)), 1);
    let started = Instant::now();
    let slow = run(
        emu.command()
            .args(["chat", "--timeout", "0.5", "--max-retries", "0", "hi"]),
        None,
    );
    let line = slow.fails_with(5);
    assert!(line.contains("time"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(3), "{slow:?}");

    // Nor does IAM: --timeout bounds the token request too (IAM's own
    // default is 10 s, which a 3 s delay would pass).
    emu.handle
        .inject(Target::Auth, Fault::Delay(Duration::from_secs(3)), 5);
    let started = Instant::now();
    let slow_iam = run(
        emu.command()
            .args(["chat", "--timeout", "0.5", "--max-retries", "0", "hi"]),
        None,
    );
    let line = slow_iam.fails_with(5);
    assert!(line.contains("did not answer within 500ms"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(3), "{slow_iam:?}");
}

#[test]
fn very_verbose_output_shows_the_call_span_in_one_line() {
    let out = run(
        crate::common::evolution().args(["--emulator", "-vv", "chat", "zebra quokka"]),
        None,
    );
    assert_eq!(out.ok(), "zebra quokka\n");
    let closes: Vec<&str> = out
        .stderr
        .lines()
        .filter(|line| line.contains("evolution_langchain::gen_ai") && line.contains("close"))
        .collect();
    assert_eq!(closes.len(), 1, "{}", out.stderr);
    let line = closes[0];
    for part in [
        "otel.name=\"chat emulator/echo-1\"",
        "gen_ai.provider.name=\"cloud.ru\"",
        "gen_ai.usage.input_tokens=2",
        "gen_ai.usage.output_tokens=2",
        "gen_ai.response.finish_reasons=[\"stop\"]",
        "server.address=\"127.0.0.1\"",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    // No message text or token in the span line (tokens are JWTs: "eyJ…");
    // no secret or bearer header anywhere.
    for content in ["zebra", "quokka", "eyJ"] {
        assert!(!line.contains(content), "{content} in {line}");
    }
    for secret in ["emulator-secret", "Bearer"] {
        assert!(!out.stderr.contains(secret), "{secret} in {}", out.stderr);
    }
}

#[test]
fn a_stalled_stream_exits_like_any_timeout() {
    // The answer starts, then the next word is 3 s away: past --timeout.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_secs(3)));
    let started = Instant::now();
    let stalled = run(
        emu.command().args([
            "chat",
            "--timeout",
            "0.5",
            "--max-retries",
            "0",
            "one two three",
        ]),
        None,
    );
    let line = stalled.fails_with(5);
    assert!(line.contains("stopped arriving"), "{line}");
    assert!(line.contains("raise --timeout"), "{line}");
    assert!(!line.contains("request_timeout"), "{line}");
    assert!(started.elapsed() < Duration::from_secs(3), "{stalled:?}");

    // The same timeout without streaming: the same exit code.
    emu.handle
        .inject(Target::Chat, Fault::Delay(Duration::from_secs(3)), 1);
    let whole = run(
        emu.command().args([
            "chat",
            "--no-stream",
            "--timeout",
            "0.5",
            "--max-retries",
            "0",
            "hi",
        ]),
        None,
    );
    let line = whole.fails_with(5);
    assert!(line.contains("raise --timeout"), "{line}");
}

#[test]
fn errors_name_the_flags_and_count_the_real_attempts() {
    let emu = Emu::start(Emulator::builder());

    // IAM unreachable: every attempt the CLI allowed is counted.
    let closed = format!("http://127.0.0.1:{}/api/v1/auth/token", closed_port());
    for (retries, attempts) in [("2", "after 3 attempts"), ("0", "after 1 attempt:")] {
        for command in ["chat", "token"] {
            let mut evolution = emu.command();
            evolution
                .args(["--max-retries", retries, command])
                .env("EVOLUTION_TOKEN_URL", &closed);
            if command == "chat" {
                evolution.arg("hi");
            }
            let out = run(&mut evolution, None);
            let line = out.fails_with(5);
            assert!(
                line.contains(attempts),
                "{command} --max-retries {retries}: {line}"
            );
            assert!(line.contains("--token-url (EVOLUTION_TOKEN_URL)"), "{line}");
            assert!(!line.contains("auth_url"), "{line}");
        }
    }

    // 503 after the retries: the flag that raises them.
    emu.handle.inject(Target::Chat, Fault::Status(503), 2);
    let busy = run(
        emu.command()
            .args(["chat", "--no-stream", "--max-retries", "1", "hi"]),
        None,
    );
    let line = busy.fails_with(6);
    assert!(line.contains("after 2 attempts"), "{line}");
    assert!(line.contains("raise --max-retries"), "{line}");
    assert!(!line.contains("max_retries"), "{line}");

    // 404: the model and the base URL, as flags.
    emu.handle.inject(Target::Chat, Fault::Status(404), 1);
    let missing = run(emu.command().args(["chat", "hi"]), None);
    let line = missing.fails_with(6);
    assert!(
        line.contains("--model") && line.contains("--base-url"),
        "{line}"
    );
}

#[test]
fn json_with_no_stream_is_json() {
    let emu = Emu::start(Emulator::builder());
    for args in [
        &["chat", "--json", "--no-stream", "Hello JSON"][..],
        &["chat", "--no-stream", "--json", "Hello JSON"],
    ] {
        let out = run(emu.command().args(args), None);
        let response: Value = serde_json::from_str(out.ok()).expect("valid JSON");
        assert_eq!(response["choices"][0]["message"]["content"], "Hello JSON");
    }
}

#[test]
fn new_sampling_flags_reach_the_request() {
    let emu = Emu::start(Emulator::builder());
    let out = run(
        emu.command().args([
            "chat",
            "--seed",
            "42",
            "--frequency-penalty",
            "-0.5",
            "--presence-penalty",
            "1",
            "--reasoning-effort",
            "low",
            "hi",
        ]),
        None,
    );
    assert_eq!(out.ok(), "hi\n");
    let body = emu.handle.last_request().expect("a request").body;
    assert_eq!(body["seed"], 42);
    assert_eq!(body["frequency_penalty"], -0.5);
    assert_eq!(body["presence_penalty"], 1.0);
    assert_eq!(body["reasoning_effort"], "low");
}
