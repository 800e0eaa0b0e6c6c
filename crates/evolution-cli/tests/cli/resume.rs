//! `evolution batch --resume` after the input changed: every answer stays
//! with its own prompt. The emulator echoes the prompt, so an answer is
//! right exactly when its text is the prompt on its line.

use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::thread;
use std::time::Duration;

use evolution_emulator::{Emulator, Fault, Target};
use serde_json::{json, Value};

use crate::common::{jsonl, run, Emu, Run};

/// Runs `batch INPUT -o OUTPUT` (with `--resume`), and `extra`.
fn batch(emu: &Emu, dir: &Path, resume: bool, extra: &[&str]) -> Run {
    let mut command = emu.command();
    command
        .arg("batch")
        .arg(dir.join("in.txt"))
        .arg("-o")
        .arg(dir.join("out.jsonl"))
        .args(["--concurrency", "4"])
        .args(extra);
    if resume {
        command.arg("--resume");
    }
    run(&mut command, None)
}

/// The prompt on each non-blank line of `text` (a JSON line's `prompt`),
/// `None` for a line that is not valid JSON.
fn prompts(text: &str) -> HashMap<u64, Option<String>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let prompt = if line.starts_with('{') {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .map(|v| v["prompt"].as_str().unwrap().to_string())
            } else {
                Some(line.to_string())
            };
            (index as u64 + 1, prompt)
        })
        .collect()
}

/// Checks the output against the input as it is now: one output line per
/// input line, each answer the answer to the prompt on its line (and
/// numbered lines known by their number), each bad line an error.
fn assert_each_answer_with_its_prompt(dir: &Path) -> Vec<Value> {
    let input = fs::read_to_string(dir.join("in.txt")).unwrap();
    let expected = prompts(&input);
    let lines = jsonl(&dir.join("out.jsonl"));
    let mut seen = HashMap::new();
    for line in &lines {
        let number = line["line"].as_u64().expect("line");
        assert!(
            seen.insert(number, line.clone()).is_none(),
            "two output lines for input line {number}: {lines:#?}"
        );
        match expected.get(&number) {
            Some(Some(prompt)) => {
                assert!(line["error"].is_null(), "{line}");
                assert_eq!(line["content"], json!(prompt), "line {number}: {line}");
                assert!(line["fingerprint"].is_string(), "{line}");
            }
            Some(None) => assert!(line["id"].is_null() && line["error"].is_string(), "{line}"),
            None => panic!("an answer for line {number}, which has no prompt: {line}"),
        }
    }
    assert_eq!(seen.len(), expected.len(), "{lines:#?}");
    lines
}

fn write_input(dir: &Path, text: &str) {
    fs::write(dir.join("in.txt"), text).unwrap();
}

#[test]
fn a_fixed_bad_line_is_asked_and_the_lines_below_keep_their_answers() {
    // The case: the CLI's own advice is to fix the line and resume.
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "alpha\n{\"prompt\": broken\nbeta\ngamma\n");
    let first = batch(&emu, dir.path(), false, &[]);
    assert_eq!(first.code, Some(1), "{first:?}");
    assert!(first.stderr.contains("rerun with --resume"), "{first:?}");
    assert_each_answer_with_its_prompt(dir.path());

    write_input(dir.path(), "alpha\nbeta\ngamma\n");
    emu.handle.reset_counters();
    let resumed = batch(&emu, dir.path(), true, &[]);
    assert_eq!(resumed.code, Some(0), "{resumed:?}");
    // beta and gamma moved up a line with their answers: nothing to ask.
    assert_eq!(emu.handle.counters().chat_requests, 0);
    assert!(
        resumed
            .stderr
            .contains("3 lines: 0 answered, 0 failed, 3 already answered"),
        "{}",
        resumed.stderr
    );
    assert!(resumed.stderr.contains("2 moved"), "{}", resumed.stderr);
    let lines = assert_each_answer_with_its_prompt(dir.path());
    let ids: Vec<(u64, Value)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["id"].clone()))
        .collect();
    for (line, id) in ids {
        assert_eq!(id, json!(line), "a numbered line's id is its number");
    }
}

#[test]
fn a_deleted_line_takes_its_answer_with_it() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "one\ntwo\nthree\nfour\n");
    batch(&emu, dir.path(), false, &[]).ok();

    write_input(dir.path(), "one\nthree\nfour\n");
    emu.handle.reset_counters();
    let resumed = batch(&emu, dir.path(), true, &[]);
    resumed.ok();
    assert_eq!(emu.handle.counters().chat_requests, 0);
    assert!(
        resumed.stderr.contains("1 no longer match"),
        "{}",
        resumed.stderr
    );
    let lines = assert_each_answer_with_its_prompt(dir.path());
    assert_eq!(lines.len(), 3);
}

#[test]
fn a_line_inserted_at_the_top_is_asked_and_only_it() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    // A repeated prompt, and an explicit id: all move down a line.
    let before = "first\nsecond\nfirst\n{\"id\": \"x\", \"prompt\": \"with an id\"}\n";
    write_input(dir.path(), before);
    batch(&emu, dir.path(), false, &[]).ok();

    write_input(dir.path(), &format!("inserted on top\n{before}"));
    emu.handle.reset_counters();
    let resumed = batch(&emu, dir.path(), true, &[]);
    resumed.ok();
    assert_eq!(emu.handle.counters().chat_requests, 1);
    let request = emu.handle.last_request().unwrap();
    assert_eq!(request.body["messages"][0]["content"], "inserted on top");
    let lines = assert_each_answer_with_its_prompt(dir.path());
    let x = lines.iter().find(|l| l["line"] == 5).unwrap();
    assert_eq!(x["id"], "x");
    // Resumed again: nothing changes, nothing is asked.
    let text = fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    emu.handle.reset_counters();
    batch(&emu, dir.path(), true, &[]).ok();
    assert_eq!(emu.handle.counters().chat_requests, 0);
    assert_eq!(
        fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        text
    );
}

#[test]
fn an_edited_line_is_asked_again() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    write_input(
        dir.path(),
        "one\ntwo\n{\"id\": 7, \"prompt\": \"seven\"}\nfour\n",
    );
    batch(&emu, dir.path(), false, &[]).ok();

    // A plain line and the prompt of a line with an id change in place.
    write_input(
        dir.path(),
        "one\nTWO, edited\n{\"id\": 7, \"prompt\": \"seven, edited\"}\nfour\n",
    );
    emu.handle.reset_counters();
    let resumed = batch(&emu, dir.path(), true, &[]);
    resumed.ok();
    assert_eq!(emu.handle.counters().chat_requests, 2);
    assert!(
        resumed.stderr.contains("2 no longer match"),
        "{}",
        resumed.stderr
    );
    assert_each_answer_with_its_prompt(dir.path());

    // Its parameters are part of the question: a changed flag asks again.
    emu.handle.reset_counters();
    batch(&emu, dir.path(), true, &["--max-tokens", "64"]).ok();
    assert_eq!(emu.handle.counters().chat_requests, 4);
    assert_each_answer_with_its_prompt(dir.path());
}

#[test]
fn lines_swapped_and_the_old_output_format_never_mix_up_answers() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), "north\nsouth\neast\nwest\n");
    batch(&emu, dir.path(), false, &[]).ok();
    write_input(dir.path(), "west\neast\nsouth\nnorth\n");
    emu.handle.reset_counters();
    batch(&emu, dir.path(), true, &[]).ok();
    assert_eq!(emu.handle.counters().chat_requests, 0);
    assert_each_answer_with_its_prompt(dir.path());

    // Answers saved without a fingerprint cannot be vouched for: asked again.
    let out = dir.path().join("out.jsonl");
    let old: String = jsonl(&out)
        .into_iter()
        .map(|mut line| {
            line.as_object_mut().unwrap().remove("fingerprint");
            format!("{line}\n")
        })
        .collect();
    fs::write(&out, old).unwrap();
    emu.handle.reset_counters();
    batch(&emu, dir.path(), true, &[]).ok();
    assert_eq!(emu.handle.counters().chat_requests, 4);
    assert_each_answer_with_its_prompt(dir.path());
}

#[test]
fn numbered_lines_and_explicit_ids_never_collide() {
    // The README's own `{"id": 2, "messages": …}` below a plain prompt on line 2.
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    write_input(
        dir.path(),
        "first\nsecond\n{\"id\": 2, \"messages\": [{\"role\": \"user\", \"content\": \"third\"}]}\n\
         {\"id\": 1, \"prompt\": \"fourth\"}\n",
    );
    let out = batch(&emu, dir.path(), false, &[]);
    out.ok();
    assert!(!out.stderr.contains("duplicate"), "{}", out.stderr);
    let lines = jsonl(&dir.path().join("out.jsonl"));
    let mut by_line: Vec<(u64, Value, String)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["id"].clone(),
                l["content"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_line.sort_by_key(|l| l.0);
    assert_eq!(
        by_line,
        [
            (1, json!(1), "first".to_string()),
            (2, json!(2), "second".to_string()),
            (3, json!(2), "third".to_string()),
            (4, json!(1), "fourth".to_string()),
        ]
    );
    // Resumed: each answer is recognised as its own line's.
    emu.handle.reset_counters();
    batch(&emu, dir.path(), true, &[]).ok();
    assert_eq!(emu.handle.counters().chat_requests, 0);
    assert_eq!(jsonl(&dir.path().join("out.jsonl")).len(), 4);

    // Two explicit ids that are the same are still refused.
    write_input(
        dir.path(),
        "{\"id\": 2, \"prompt\": \"a\"}\n{\"id\": 2, \"prompt\": \"b\"}\n",
    );
    let out = batch(&emu, dir.path(), false, &["--overwrite"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("input line 2: duplicate id 2 (first used on line 1)"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_line_changed_while_the_batch_runs_is_refused_not_skipped() {
    // Lines long enough that line 150 is far past what the reader buffers
    // when the batch starts.
    let line = |i: usize| format!("prompt number {i} {}", "x".repeat(200));
    let text = |edited: Option<usize>| -> String {
        (1..=200)
            .map(|i| match edited {
                Some(e) if e == i => format!("an edited prompt {}\n", "y".repeat(200)),
                _ => line(i) + "\n",
            })
            .collect()
    };
    let dir = tempfile::tempdir().unwrap();
    write_input(dir.path(), &text(None));
    // The first run: the first hundred requests are refused, so the lines
    // at the top are left to resume and line 150 has its answer.
    let quick = Emu::start(Emulator::builder());
    quick.handle.inject(Target::Chat, Fault::Status(400), 100);
    assert_eq!(batch(&quick, dir.path(), false, &[]).code, Some(1));
    let answered_150 = jsonl(&dir.path().join("out.jsonl"))
        .into_iter()
        .any(|l| l["line"] == 150 && l["error"].is_null());
    assert!(answered_150, "line 150 was answered by the first run");

    // The resumed run answers slowly; meanwhile line 150 is edited in place.
    let slow = Emu::start(Emulator::builder().latency(Duration::from_millis(50)));
    let editor = {
        let (path, edited) = (dir.path().join("in.txt"), text(Some(150)));
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            fs::write(path, edited).unwrap();
        })
    };
    let resumed = batch(&slow, dir.path(), true, &[]);
    editor.join().unwrap();
    assert_eq!(resumed.code, Some(2), "{resumed:?}");
    assert!(
        resumed.stderr.contains("line 150 of")
            && resumed.stderr.contains("changed while the batch ran"),
        "{}",
        resumed.stderr
    );

    // Resumed once more, the edited line is asked and every answer sits
    // with its own prompt.
    let again = batch(&slow, dir.path(), true, &[]);
    assert_eq!(again.code, Some(0), "{again:?}");
    let lines = assert_each_answer_with_its_prompt(dir.path());
    assert!(lines.iter().any(|l| l["line"] == 150
        && l["content"]
            .as_str()
            .unwrap()
            .starts_with("an edited prompt")));
}
