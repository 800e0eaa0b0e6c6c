//! `evolution batch`: faults, bad lines, resume, interruption.

use std::collections::HashSet;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, Fault, Target};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::common::{jsonl, run, signal, wait, Emu};

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
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
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
    let ids: Vec<String> = lines.iter().map(|l| l["id"].to_string()).collect();
    for id in ["1", "\"a\"", "3", "\"b\"", "\"c\"", "7"] {
        assert!(ids.contains(&id.to_string()), "{id} missing from {ids:?}");
    }
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
