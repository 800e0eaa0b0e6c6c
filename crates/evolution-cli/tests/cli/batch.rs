//! `evolution batch`: faults, bad lines, resume, interruption.

use std::collections::HashSet;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, Fault, Target};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::common::{jsonl, parse_jsonl, run, signal, wait, Emu};

/// 200 prompts, half plain lines (id = line number), half JSON with ids.
fn two_hundred_prompts(dir: &std::path::Path) -> (std::path::PathBuf, Vec<(Value, String)>) {
    let mut text = String::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        if i % 2 == 0 {
            let prompt = format!("plain prompt {i} a b");
            text.push_str(&prompt);
            expected.push((json!(i + 1), prompt));
        } else {
            let prompt = format!("json prompt {i} c d");
            text.push_str(&json!({"id": format!("q{i}"), "prompt": prompt}).to_string());
            expected.push((json!(format!("q{i}")), prompt));
        }
        text.push('\n');
    }
    let path = dir.join("prompts.jsonl");
    fs::write(&path, text).unwrap();
    (path, expected)
}

/// Checks a finished batch output: one successful line per prompt.
fn assert_complete(output: &std::path::Path, expected: &[(Value, String)]) {
    let lines = jsonl(output);
    assert_eq!(lines.len(), expected.len());
    let mut seen = HashSet::new();
    for line in &lines {
        assert!(line["error"].is_null(), "{line}");
        assert!(seen.insert(line["id"].to_string()), "duplicate id: {line}");
        let (_, prompt) = expected
            .iter()
            .find(|(id, _)| *id == line["id"])
            .unwrap_or_else(|| panic!("unknown id: {line}"));
        assert_eq!(line["content"], json!(prompt));
        assert!(
            line["usage"]["total_tokens"].as_u64().unwrap() > 0,
            "{line}"
        );
    }
}

#[test]
fn batch_with_faults_then_resume_completes_only_the_missing() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let (input, expected) = two_hundred_prompts(dir.path());
    let output = dir.path().join("answers.jsonl");
    // Neither is retried by the client: 7 lines fail for good.
    emu.handle.inject(Target::Chat, Fault::Status(400), 4);
    emu.handle.inject(Target::Chat, Fault::MissingField, 3);

    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--concurrency", "8"]),
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("200 lines: 193 answered, 7 failed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("--resume"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
    let lines = jsonl(&output);
    assert_eq!(lines.len(), 200);
    let failed: Vec<&Value> = lines.iter().filter(|l| !l["error"].is_null()).collect();
    assert_eq!(failed.len(), 7);
    for line in &failed {
        assert!(
            line["content"].is_null() && line["usage"].is_null(),
            "{line}"
        );
    }
    let counters = emu.handle.counters();
    assert_eq!(counters.chat_requests, 200);
    assert!(counters.peak_in_flight <= 8, "{counters:?}");

    // Without --resume the answers are not overwritten by mistake.
    let refused = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output),
        None,
    );
    assert!(refused.fails_with(2).contains("--resume"));
    assert_eq!(jsonl(&output).len(), 200);

    emu.handle.reset_counters();
    let resumed = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .arg("--resume"),
        None,
    );
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
    assert!(
        resumed.stderr.contains("193 already answered"),
        "{}",
        resumed.stderr
    );
    assert_eq!(emu.handle.counters().chat_requests, 7);
    assert_complete(&output, &expected);
}

#[test]
fn batch_reports_bad_lines_and_runs_the_rest() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    fs::write(
        &input,
        "first\n{\"id\":\"a\",\"prompt\":\"second\"}\n{broken\n\n\
         {\"id\":\"b\",\"prompt\":\"x\",\"temprature\":1}\n\
         {\"id\":\"c\",\"prompt\":\"y\",\"temperature\":9}\nlast one\n",
    )
    .unwrap();
    // Answers to stdout this time.
    let out = run(emu.command().arg("batch").arg(&input), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    for reported in [
        "input line 3:",
        "input line 5:",
        "temprature",
        "input line 6:",
        "temperature",
    ] {
        assert!(out.stderr.contains(reported), "{reported}: {}", out.stderr);
    }
    let lines = parse_jsonl(&out.stdout);
    assert_eq!(lines.len(), 6);
    let answered: HashSet<String> = lines
        .iter()
        .filter(|l| l["error"].is_null())
        .map(|l| l["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        answered,
        HashSet::from(["first".into(), "second".into(), "last one".into()])
    );
    let ids: Vec<String> = lines
        .iter()
        .filter(|l| l["error"].is_null())
        .map(|l| l["id"].to_string())
        .collect();
    for id in ["1", "\"a\"", "7"] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
    // Bad lines are known by their line number, under the id null.
    let mut bad: Vec<u64> = lines
        .iter()
        .filter(|l| !l["error"].is_null())
        .map(|l| {
            assert!(l["id"].is_null(), "{l}");
            l["line"].as_u64().unwrap()
        })
        .collect();
    bad.sort_unstable();
    assert_eq!(bad, [3, 5, 6]);
    assert_eq!(emu.handle.counters().chat_requests, 3);
}

#[test]
fn batch_stops_at_bad_credentials_without_writing_failures() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = two_hundred_prompts(dir.path());
    let output = dir.path().join("out.jsonl");
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .env("EVOLUTION_SECRET", "wrong"),
        None,
    );
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(out.stderr.contains("401"), "{}", out.stderr);
    assert!(jsonl(&output).is_empty());
}

#[test]
fn batch_stops_at_a_403_from_the_model_api_with_the_forbidden_code() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let (input, _) = two_hundred_prompts(dir.path());
    let output = dir.path().join("out.jsonl");
    // IAM issues tokens, but the model API refuses them all (the client's
    // refresh and second try included): the key has no rights to the model.
    emu.handle.inject(Target::Chat, Fault::Status(403), 1000);
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--concurrency", "4"]),
        None,
    );
    assert_eq!(out.code, Some(4), "{out:?}");
    assert!(out.stderr.contains("403"), "{}", out.stderr);
    // No line is written as failed: all of them can be resumed.
    assert!(jsonl(&output).is_empty());
    let asked = emu.handle.counters().chat_requests;
    assert!(
        asked < 200,
        "the batch went on after the 403: {asked} requests"
    );
}

/// Starts a slow batch (about 5 s), waits until `min_lines` answers are
/// saved, and sends `sig`. Returns the exit status and the lines saved.
fn interrupt_batch(emu: &Emu, sig: Signal, dir: &std::path::Path) -> (Option<i32>, usize, String) {
    let (input, _) = two_hundred_prompts(dir);
    let output = dir.join("out.jsonl");
    let mut child = emu
        .command()
        .arg("batch")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--concurrency", "4"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().unwrap();
    let started = Instant::now();
    loop {
        let saved = fs::read_to_string(&output).map_or(0, |t| t.lines().count());
        if saved >= 20 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the batch made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(child.id(), sig);
    let status = wait(&mut child, Duration::from_secs(20));
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut { stderr }, &mut errors).unwrap();
    let saved = jsonl(&output);
    for line in &saved {
        assert!(
            line["error"].is_null() && line["content"].is_string(),
            "{line}"
        );
    }
    (status.code(), saved.len(), errors)
}

/// Resumes the batch in `dir` and checks that only the missing prompts ran.
fn resume_batch(emu: &Emu, dir: &std::path::Path, saved: usize) {
    let (input, expected) = two_hundred_prompts(dir);
    let output = dir.join("out.jsonl");
    emu.handle.reset_counters();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--resume", "--concurrency", "64"]),
        None,
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(emu.handle.counters().chat_requests as usize, 200 - saved);
    assert_complete(&output, &expected);
}

#[test]
fn batch_interrupted_by_ctrl_c_keeps_every_finished_answer() {
    // Each answer takes 5 words × 20 ms; 4 at a time: about 5 s in all.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let (code, saved, stderr) = interrupt_batch(&emu, Signal::SIGINT, dir.path());
    assert_eq!(code, Some(130), "{stderr}");
    assert!(saved < 200, "the batch finished before the signal");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(stderr.contains("not run"), "{stderr}");
    resume_batch(&emu, dir.path(), saved);
}

#[test]
fn batch_killed_leaves_only_complete_lines() {
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let (code, saved, _) = interrupt_batch(&emu, Signal::SIGKILL, dir.path());
    assert_eq!(code, None, "killed by the signal");
    assert!(saved < 200, "the batch finished before the signal");
    resume_batch(&emu, dir.path(), saved);
}

/// The error lines of a batch output, as (line, error), sorted by line.
fn error_lines(lines: &[Value]) -> Vec<(u64, String)> {
    let mut errors: Vec<(u64, String)> = lines
        .iter()
        .filter(|l| !l["error"].is_null())
        .map(|l| {
            assert!(l["id"].is_null(), "a bad line has an id: {l}");
            (
                l["line"].as_u64().unwrap(),
                l["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    errors.sort();
    errors
}

#[test]
fn bad_lines_are_reported_on_every_run_and_never_count_as_answered() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    // Line 1 used to get id 1 (its number), and line 4 the id "z": both
    // collided with the answers of lines 2 and 3.
    fs::write(
        &input,
        "{broken\n{\"id\":1,\"prompt\":\"x\"}\n{\"id\":\"z\",\"prompt\":\"y\"}\n\
         {\"id\":\"z\",\"prompt\":\"dup\"}\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let batch = |resume: bool| {
        let mut command = emu.command();
        command.arg("batch").arg(&input).arg("-o").arg(&output);
        if resume {
            command.arg("--resume");
        }
        run(&mut command, None)
    };

    let check = |out: &crate::common::Run| {
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(
            out.stderr.contains("input line 1: invalid JSON"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("input line 4: duplicate id \"z\""),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("2 bad input lines"), "{}", out.stderr);
        let lines = jsonl(&output);
        assert_eq!(lines.len(), 4, "one output line per input line: {lines:?}");
        let answered: Vec<String> = lines
            .iter()
            .filter(|l| l["error"].is_null())
            .map(|l| l["id"].to_string())
            .collect();
        assert_eq!(answered.len(), 2, "{lines:?}");
        assert!(answered.contains(&"1".to_string()), "{answered:?}");
        assert!(answered.contains(&"\"z\"".to_string()), "{answered:?}");
        let errors = error_lines(&lines);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 1);
        assert!(errors[0].1.starts_with("input line 1:"), "{errors:?}");
        assert_eq!(errors[1].0, 4);
        assert!(errors[1].1.contains("duplicate id"), "{errors:?}");
    };

    let first = batch(false);
    check(&first);
    assert_eq!(emu.handle.counters().chat_requests, 2);

    emu.handle.reset_counters();
    let resumed = batch(true);
    check(&resumed);
    assert!(
        resumed.stderr.contains("2 already answered"),
        "{}",
        resumed.stderr
    );
    assert_eq!(emu.handle.counters().chat_requests, 0);

    // Once more: the output does not grow.
    check(&batch(true));
}

#[test]
fn an_id_used_by_a_bad_line_is_not_reused() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    fs::write(
        &input,
        "{\"id\":\"q\",\"prompt\":\"x\",\"temprature\":1}\n{\"id\":\"q\",\"prompt\":\"y\"}\nz\n",
    )
    .unwrap();
    let out = run(emu.command().arg("batch").arg(&input), None);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("input line 2: duplicate id \"q\" (first used on line 1)"),
        "{}",
        out.stderr
    );
    let lines = parse_jsonl(&out.stdout);
    assert_eq!(lines.len(), 3);
    let errors = error_lines(&lines);
    assert_eq!(
        errors.iter().map(|e| e.0).collect::<Vec<_>>(),
        [1, 2],
        "{errors:?}"
    );
    assert_eq!(emu.handle.counters().chat_requests, 1);
}

#[test]
fn a_byte_order_mark_does_not_spoil_the_first_line() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bom.jsonl");
    fs::write(
        &input,
        "\u{feff}{\"id\":\"first\",\"prompt\":\"hello there\"}\nsecond line\n",
    )
    .unwrap();
    let out = run(emu.command().arg("batch").arg(&input), None);
    let lines = parse_jsonl(out.ok());
    assert_eq!(lines.len(), 2);
    let first = lines.iter().find(|l| l["line"] == 1).expect("line 1");
    assert_eq!(first["id"], "first");
    assert_eq!(first["content"], "hello there");
}

#[test]
fn batch_into_a_closed_pipe_ends_quietly() {
    // `evolution batch f | head -1`: 40 prompts of 5 words at 20 ms a word,
    // one at a time, take about 4 s; the reader leaves after the first.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(20)));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..40).map(|i| format!("prompt {i} a b c\n")).collect();
    fs::write(&input, text).unwrap();
    let mut child = emu
        .command()
        .arg("batch")
        .arg(&input)
        .args(["--concurrency", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut reader = std::io::BufReader::new(stdout);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut reader, &mut first).unwrap();
    assert!(first.contains("prompt 0"), "{first}");
    // Closing our end is all `head` does.
    drop(reader);
    let status = wait(&mut child, Duration::from_secs(30));
    let mut errors = String::new();
    std::io::Read::read_to_string(&mut { stderr }, &mut errors).unwrap();
    assert_eq!(status.code(), Some(0), "{errors}");
    assert!(!errors.contains("Broken pipe"), "{errors}");
    assert!(
        emu.handle.counters().chat_requests < 40,
        "the batch went on after its reader left"
    );
}

#[test]
fn batch_output_that_is_a_directory_is_named_as_such() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    fs::write(&input, "hello\n").unwrap();
    for resume in [false, true] {
        let mut command = emu.command();
        command.arg("batch").arg(&input).arg("-o").arg(dir.path());
        if resume {
            command.arg("--resume");
        }
        let out = run(&mut command, None);
        let line = out.fails_with(2);
        assert!(line.contains("is a directory"), "{line}");
        assert!(!line.contains("already has answers"), "{line}");
    }
    assert_eq!(emu.handle.counters().chat_requests, 0);
}

#[test]
fn batch_prints_plain_progress_lines_when_stderr_is_not_a_terminal() {
    // 6 prompts of 5 words at 50 ms a word, one at a time: about 1.5 s,
    // with a status line due every 200 ms.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(50)));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    let text: String = (0..6).map(|i| format!("prompt {i} a b c\n")).collect();
    fs::write(&input, text).unwrap();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .args(["--concurrency", "1"])
            .env("EVOLUTION_PROGRESS_INTERVAL_MS", "200"),
        None,
    );
    out.ok();
    let status: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("batch: ") && l.contains("/6 done, "))
        .collect();
    assert!(!status.is_empty(), "no progress line: {}", out.stderr);
    for line in &status {
        assert!(line.contains(" failed, ") && line.contains("ETA"), "{line}");
    }
    assert!(
        out.stderr.contains("batch: 6 lines: 6 answered, 0 failed"),
        "{}",
        out.stderr
    );

    // --quiet: none.
    let quiet = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .args(["--concurrency", "1", "--quiet"])
            .env("EVOLUTION_PROGRESS_INTERVAL_MS", "200"),
        None,
    );
    quiet.ok();
    assert!(!quiet.stderr.contains("/6 done"), "{}", quiet.stderr);
}

#[test]
fn batch_lines_take_every_parameter_of_the_library() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    fs::write(
        &input,
        "{\"prompt\":\"one two\",\"reasoning_effort\":\"high\",\"seed\":7,\"n\":2,\
         \"extra_body\":{\"top_k\":20},\"stop\":\"x\",\"frequency_penalty\":0.5}\n",
    )
    .unwrap();
    let out = run(emu.command().arg("batch").arg(&input), None);
    let lines = parse_jsonl(out.ok());
    assert_eq!(lines[0]["content"], "one two");
    assert_eq!(lines[0]["choices"], json!(["one two", "one two"]));
    let body = emu.handle.last_request().expect("a request").body;
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(body["seed"], 7);
    assert_eq!(body["n"], 2);
    assert_eq!(body["top_k"], 20);
    assert_eq!(body["stop"], json!(["x"]));
    assert_eq!(body["frequency_penalty"], 0.5);

    // A flag and a line: the line wins; both are checked by the library.
    fs::write(
        &input,
        "{\"prompt\":\"a\",\"seed\":3}\n{\"prompt\":\"b\",\"n\":0}\n{\"prompt\":\"c\",\"temprature\":1}\n",
    )
    .unwrap();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .args(["--seed", "9", "--concurrency", "1"]),
        None,
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("input line 2: `n` must be between 1 and 128, got 0"),
        "{}",
        out.stderr
    );
    for part in [
        "input line 3: unknown field `temprature`, expected one of",
        "`reasoning_effort`",
        "`extra_body`",
        "or a line's own `id`, `prompt`, `messages`, `system`",
    ] {
        assert!(out.stderr.contains(part), "{part}: {}", out.stderr);
    }
    let body = emu.handle.last_request().expect("a request").body;
    assert_eq!(body["seed"], 3);

    // A flag out of range is a usage error naming the flag.
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .args(["--temperature", "3"]),
        None,
    );
    let line = out.fails_with(2);
    assert!(
        line.contains("--temperature: must be between 0 and 2, got 3"),
        "{line}"
    );
}

#[test]
fn a_line_answered_with_tool_calls_keeps_them() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let tools = json!([{"type": "function", "function": {"name": "weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    // The emulator's model calls a tool its prompt names, and otherwise echoes.
    let lines = [
        json!({"id": "call", "prompt": "weather Lima", "tools": tools}),
        json!({"id": "plain", "prompt": "hello there", "tools": tools}),
    ];
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(&input, &text).unwrap();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output),
        None,
    );
    out.ok();
    let body = emu.handle.last_request().expect("a request").body;
    assert_eq!(body["tools"][0]["function"]["name"], "weather");

    let check = |saved: &[Value], line: u64| {
        assert_eq!(saved.len(), 2 + line as usize - 1, "{saved:?}");
        let call = saved.iter().find(|l| l["id"] == "call").expect("call");
        assert_eq!(call["line"], line);
        assert!(call["error"].is_null(), "{call}");
        assert_eq!(call["finish_reason"], "tool_calls", "{call}");
        assert_eq!(call["content"], "", "{call}");
        let calls = call["tool_calls"].as_array().expect("tool_calls");
        assert_eq!(calls.len(), 1, "{call}");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Lima\"}");
        let id = calls[0]["id"].as_str().expect("a call id");
        assert!(id.starts_with("call_"), "{id}");
        // No call, no key.
        let plain = saved.iter().find(|l| l["id"] == "plain").expect("plain");
        assert_eq!(plain["content"], "hello there", "{plain}");
        assert_eq!(plain["finish_reason"], "stop", "{plain}");
        assert!(plain.get("tool_calls").is_none(), "{plain}");
    };
    check(&jsonl(&output), 1);

    // A line inserted above: the saved answers move with their prompts,
    // tool calls and all, and only the new line is asked.
    fs::write(&input, format!("new line\n{text}")).unwrap();
    emu.handle.reset_counters();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .arg("--resume"),
        None,
    );
    out.ok();
    assert_eq!(emu.handle.counters().chat_requests, 1);
    let saved = jsonl(&output);
    check(&saved, 2);
    assert_eq!(
        saved.iter().find(|l| l["id"] == 1).unwrap()["content"],
        "new line"
    );
}
