//! Reasoning models, tool calls and empty answers in `evolution chat`: stdout
//! carries the answer, the thinking only when asked for, tool calls instead
//! of nothing, and no answer at all is an error.

use std::io::Write;

use evolution_emulator::{Emulator, Fault, Target};
use serde_json::Value;

use crate::common::{evolution, run, Emu};

const REASONER: &str = "emulator/reasoner-1";

#[test]
fn stdout_carries_the_answer_only_unless_asked() {
    for field in ["reasoning_content", "reasoning"] {
        let emu = Emu::start(Emulator::builder().reasoning_field(field));
        for extra in [&[][..], &["--no-stream"][..]] {
            let out = run(
                emu.command()
                    .args(["chat", "--model", REASONER])
                    .args(extra)
                    .arg("two words"),
                None,
            );
            assert_eq!(out.ok(), "two words\n", "{field} {extra:?}");
            assert!(!out.stderr.contains("Thinking"), "not a terminal: {out:#?}");

            let shown = run(
                emu.command()
                    .args(["chat", "--model", REASONER, "--show-reasoning"])
                    .args(extra)
                    .arg("two words"),
                None,
            );
            assert_eq!(
                shown.ok(),
                "[thinking]\nThinking about 2 words.\n[answer]\ntwo words\n",
                "{field} {extra:?}"
            );
        }
        // A model without thinking: no marks.
        let plain = run(
            emu.command()
                .args(["chat", "--show-reasoning", "just this"]),
            None,
        );
        assert_eq!(plain.ok(), "just this\n");
    }
}

#[test]
fn json_includes_the_thinking_and_reasoning_effort_is_sent() {
    for field in ["reasoning_content", "reasoning"] {
        let emu = Emu::start(Emulator::builder().reasoning_field(field));
        let out = run(
            emu.command().args([
                "chat",
                "--json",
                "--model",
                REASONER,
                "--reasoning-effort",
                "High",
                "one two three",
            ]),
            None,
        );
        let reply: Value = serde_json::from_str(out.ok()).expect("JSON");
        let message = &reply["choices"][0]["message"];
        assert_eq!(message[field], "Thinking about 3 words.", "{reply:#}");
        assert_eq!(message["content"], "one two three");
        assert_eq!(
            reply["usage"]["completion_tokens_details"]["reasoning_tokens"],
            4
        );
        assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        let body = emu.handle.last_request().unwrap().body;
        assert_eq!(body["reasoning_effort"], "high");
    }
    let bad = run(
        evolution().args(["--emulator", "chat", "--reasoning-effort", "very high", "x"]),
        None,
    );
    assert_eq!(bad.code, Some(2), "{bad:?}");
}

fn tools_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(
        br#"[{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]"#,
    )
    .unwrap();
    file
}

#[test]
fn an_answer_of_tool_calls_prints_them() {
    let emu = Emu::start(Emulator::builder());
    let tools = tools_file();
    for extra in [&[][..], &["--no-stream"][..]] {
        let out = run(
            emu.command()
                .args(["chat", "--tools"])
                .arg(tools.path())
                .args(extra)
                .arg("weather Lima"),
            None,
        );
        assert_eq!(
            out.ok(),
            "[tool call] weather {\"city\":\"Lima\"}\n",
            "{extra:?}"
        );
        let body = emu.handle.last_request().unwrap().body;
        assert_eq!(body["tools"][0]["function"]["name"], "weather");
    }
    // Offered but not named: a plain answer.
    let out = run(
        emu.command()
            .args(["chat", "--tools"])
            .arg(tools.path())
            .arg("hello there"),
        None,
    );
    assert_eq!(out.ok(), "hello there\n");

    let mut bad = tempfile::NamedTempFile::new().unwrap();
    bad.write_all(b"{not json").unwrap();
    let out = run(
        emu.command()
            .args(["chat", "--tools"])
            .arg(bad.path())
            .arg("x"),
        None,
    );
    assert!(out.fails_with(2).contains("tools file"), "{out:?}");
}

#[test]
fn no_answer_at_all_is_an_error_streamed_or_not() {
    let emu = Emu::start(Emulator::builder());
    emu.handle.inject(Target::Chat, Fault::ContentNull, 1);
    let plain = run(emu.command().args(["chat", "--no-stream", "hi"]), None);
    let line = plain.fails_with(6);
    assert!(line.contains("no content"), "{line}");
    assert_eq!(plain.stdout, "");

    emu.handle.inject(Target::Chat, Fault::ContentNull, 1);
    let streamed = run(emu.command().args(["chat", "hi"]), None);
    let line = streamed.fails_with(6);
    assert!(line.contains("no answer"), "{line}");
    assert_eq!(streamed.stdout, "");
}

#[test]
fn models_long_shows_billing() {
    let out = run(evolution().args(["--emulator", "models", "--long"]), None);
    let text = out.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("ID"), "{text}");
    assert!(
        lines[0].contains("BILLABLE") && lines[0].contains("COST"),
        "{text}"
    );
    let echo: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(echo[..4], ["emulator/echo-1", "no", "0", "emulator"]);
    let json = run(evolution().args(["--emulator", "models", "--json"]), None);
    let models: Value = serde_json::from_str(json.ok()).unwrap();
    assert_eq!(models[0]["is_billable"], false);
    assert_eq!(models[0]["cost"], 0);
}
