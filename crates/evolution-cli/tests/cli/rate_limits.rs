//! `evolution batch` against a rate-limited service: no prompt lost to
//! 429s, with and without `--rpm`, the window and waits shown, the 429s
//! counted in the summary.

use std::fs;
use std::time::Duration;

use evolution_emulator::Emulator;

use crate::common::{jsonl, run, Emu};

/// A service allowing `rpm` requests a minute, enforced per second,
/// answering after 50 ms.
fn limited(rpm: u32) -> Emu {
    Emu::start(
        Emulator::builder()
            .requests_per_minute(rpm)
            .rate_burst(Duration::from_secs(1))
            .latency(Duration::from_millis(50)),
    )
}

fn prompts(dir: &std::path::Path, n: usize) -> std::path::PathBuf {
    let path = dir.join("prompts.txt");
    let text: String = (0..n).map(|i| format!("prompt number {i}\n")).collect();
    fs::write(&path, text).unwrap();
    path
}

/// Every line answered, each with its own prompt.
fn all_answered(out: &std::path::Path, n: usize) {
    let mut lines = jsonl(out);
    assert_eq!(lines.len(), n);
    lines.sort_by_key(|l| l["line"].as_u64());
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["error"], serde_json::Value::Null, "{line}");
        assert_eq!(line["content"], format!("prompt number {i}"), "{line}");
    }
}

#[test]
fn a_batch_over_the_limit_loses_nothing_and_says_what_it_met() {
    let emu = limited(600);
    let dir = tempfile::tempdir().unwrap();
    let input = prompts(dir.path(), 30);
    let out = dir.path().join("out.jsonl");
    let run = run(
        emu.command()
            .args(["batch", "-c", "16", "--progress-interval-ms", "200", "-o"])
            .arg(&out)
            .arg(&input),
        None,
    );
    run.ok();
    all_answered(&out, 30);
    assert!(
        emu.handle.counters().rate_limited > 0,
        "the burst met the limit"
    );
    assert!(run.stderr.contains("window "), "{}", run.stderr);
    assert!(
        run.stderr.contains("rate-limited (429) answers waited out"),
        "{}",
        run.stderr
    );
}

#[test]
fn with_rpm_the_batch_waits_instead_of_meeting_429s() {
    let emu = limited(600);
    let dir = tempfile::tempdir().unwrap();
    let input = prompts(dir.path(), 30);
    let out = dir.path().join("out.jsonl");
    let run = run(
        emu.command()
            .args(["batch", "-c", "16", "--rpm", "600", "-o"])
            .arg(&out)
            .arg(&input),
        None,
    );
    run.ok();
    all_answered(&out, 30);
    assert!(
        emu.handle.counters().rate_limited <= 1,
        "{:?}",
        emu.handle.counters()
    );
    assert!(
        run.stderr.contains("spent waiting for the limit"),
        "{}",
        run.stderr
    );
}

#[test]
fn rate_limit_flags_are_checked_and_come_from_the_environment() {
    let emu = limited(60);
    let bad = run(emu.command().args(["--rpm", "0", "chat", "hi"]), None);
    assert!(bad.fails_with(2).contains("--rpm"), "{}", bad.stderr);
    let bad = run(emu.command().args(["chat", "--tpm", "-5", "hi"]), None);
    bad.fails_with(2);
    // One request a second and no patience: the second call at once fails
    // with the rate limit named, exit 6.
    let ok = run(emu.command().args(["chat", "--no-stream", "first"]), None);
    ok.ok();
    let limited = run(
        emu.command()
            .env("EVOLUTION_MAX_RATE_LIMIT_WAIT", "0")
            .args(["chat", "--no-stream", "second"]),
        None,
    );
    let text = limited.fails_with(6);
    assert!(text.contains("429") && text.contains("--rpm"), "{text}");
}
