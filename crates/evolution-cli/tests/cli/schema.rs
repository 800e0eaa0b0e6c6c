//! `chat --schema` and `batch --schema`: answers as JSON of a schema file.
//! The emulator answers a `json_schema` request (or a forced tool call)
//! with a document built from the schema, in which a property the prompt
//! mentions as `name: value` takes that value, and rehearses the repair
//! round (`OffSchema`) and the fallback (`refuse_json_schema`).

use std::fs;
use std::path::{Path, PathBuf};

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use serde_json::{json, Value};

use crate::common::{evolution, jsonl, run, Emu};

/// A ticket: a title, a priority, optional tags.
const TICKET: &str = r#"{
  "title": "ticket",
  "type": "object",
  "properties": {
    "title": {"type": "string"},
    "priority": {"enum": ["low", "high"]},
    "tags": {"type": "array", "items": {"type": "string"}}
  },
  "required": ["title", "priority"]
}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

/// The chat requests the emulator received, in order.
fn chat_requests(handle: &EmulatorHandle) -> Vec<Value> {
    handle
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/chat/completions"))
        .map(|r| r.body)
        .collect()
}

#[test]
fn chat_schema_prints_the_validated_json() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);

    let out = run(
        emu.command()
            .arg("chat")
            .arg("--schema")
            .arg(&schema)
            .arg("title: Printer on fire, priority: high"),
        None,
    );
    let text = out.ok();
    // Pretty by default: one property a line, indented.
    assert!(
        text.contains("\n  \"title\": \"Printer on fire\""),
        "{text}"
    );
    let value: Value = serde_json::from_str(text).unwrap();
    // `tags` was optional: the emulator's null for it is dropped.
    assert_eq!(
        value,
        json!({"title": "Printer on fire", "priority": "high"})
    );
    assert!(out.stderr.is_empty(), "{out:#?}");

    let requests = chat_requests(&emu.handle);
    assert_eq!(requests.len(), 1);
    let format = &requests[0]["response_format"];
    assert_eq!(format["type"], "json_schema");
    assert_eq!(format["json_schema"]["name"], "ticket");
    assert_eq!(format["json_schema"]["strict"], true);
    assert_eq!(
        format["json_schema"]["schema"]["required"],
        json!(["priority", "tags", "title"])
    );
    assert!(requests[0].get("stream").is_none_or(|s| s == false));

    // From stdin, on one line, named by the file when it has no title.
    let untitled = write(
        dir.path(),
        "city.json",
        r#"{"type": "object", "properties": {"name": {"type": "string"}, "population": {"type": "integer"}}, "required": ["name", "population"]}"#,
    );
    let out = run(
        emu.command()
            .arg("chat")
            .arg("--compact")
            .arg("--schema")
            .arg(&untitled),
        Some("name: Lima, population: 10000000\n"),
    );
    assert_eq!(out.ok(), "{\"name\":\"Lima\",\"population\":10000000}\n");
    let last = chat_requests(&emu.handle).pop().unwrap();
    assert_eq!(last["response_format"]["json_schema"]["name"], "city");
    assert_eq!(
        last["messages"],
        json!([{"role": "user", "content": "name: Lima, population: 10000000"}])
    );
}

#[test]
fn chat_schema_json_and_verbose_say_how_the_answer_came() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);

    let out = run(
        emu.command()
            .args(["chat", "--json", "--schema"])
            .arg(&schema)
            .arg("title: Lost keys"),
        None,
    );
    let info: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(
        info["value"],
        json!({"title": "Lost keys", "priority": "low"})
    );
    assert_eq!(info["schema"], "ticket");
    assert_eq!(info["mode"], "json_schema");
    assert_eq!(info["attempts"], 1);
    assert!(
        info["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "{info}"
    );
    let raw = info["response"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(raw).unwrap()["title"],
        "Lost keys"
    );

    let out = run(
        emu.command()
            .args(["chat", "-v", "--schema"])
            .arg(&schema)
            .arg("title: Lost keys"),
        None,
    );
    out.ok();
    assert!(
        out.stderr
            .contains("schema `ticket`: answered through json_schema in 1 attempt"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_answer_off_the_schema_is_repaired_once_then_an_error() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);
    let ask = |extra: &[&str]| {
        run(
            emu.command()
                .arg("chat")
                .args(extra)
                .arg("--schema")
                .arg(&schema)
                .arg("title: Broken chair, priority: high"),
            None,
        )
    };

    // Once off the schema: the repair round mends it.
    emu.handle.inject(Target::Chat, Fault::OffSchema, 1);
    let out = ask(&["-v"]);
    let value: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(value, json!({"title": "Broken chair", "priority": "high"}));
    assert!(out.stderr.contains("in 2 attempts"), "{}", out.stderr);
    let requests = chat_requests(&emu.handle);
    assert_eq!(requests.len(), 2);
    // The repair round shows the model its answer and what is wrong.
    let repair = requests[1]["messages"].as_array().unwrap();
    assert_eq!(repair[1]["role"], "assistant");
    assert!(
        repair[2]["content"]
            .as_str()
            .unwrap()
            .contains("missing required property `priority`"),
        "{repair:?}"
    );

    // Twice: exit code 6 with the reason, and nothing on stdout.
    emu.handle.clear_requests();
    emu.handle.inject(Target::Chat, Fault::OffSchema, 2);
    let out = ask(&[]);
    let line = out.fails_with(6);
    assert!(
        line.contains("does not fit the schema `ticket` after 2 attempts"),
        "{line}"
    );
    assert!(
        line.contains("missing required property `priority`"),
        "{line}"
    );
    assert!(line.contains("--max-tokens"), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");
    assert_eq!(chat_requests(&emu.handle).len(), 2);

    // With -v the model's last answer is shown on stderr.
    emu.handle.inject(Target::Chat, Fault::OffSchema, 2);
    let out = ask(&["-v"]);
    assert_eq!(out.code, Some(6), "{out:#?}");
    assert!(
        out.stderr.contains("the model's last answer was:\n{"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\"title\":\"Broken chair\""),
        "{}",
        out.stderr
    );
}

#[test]
fn a_server_refusing_json_schema_gets_a_forced_tool_call() {
    let emu = Emu::start(Emulator::builder().refuse_json_schema(true));
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);
    let out = run(
        emu.command()
            .args(["chat", "-v", "--schema"])
            .arg(&schema)
            .arg("title: Flood, priority: high"),
        None,
    );
    let value: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(value, json!({"title": "Flood", "priority": "high"}));
    assert!(
        out.stderr
            .contains("answered through tool_call in 1 attempt"),
        "{}",
        out.stderr
    );
    let requests = chat_requests(&emu.handle);
    assert_eq!(requests.len(), 2, "the refusal, then the tool call");
    assert_eq!(requests[0]["response_format"]["type"], "json_schema");
    assert!(
        requests[1].get("response_format").is_none(),
        "{}",
        requests[1]
    );
    assert_eq!(requests[1]["tools"][0]["function"]["name"], "ticket");
    assert_eq!(
        requests[1]["tool_choice"],
        json!({"type": "function", "function": {"name": "ticket"}})
    );

    // The embedded emulator rehearses it too, through its fault flag.
    let out = run(
        evolution()
            .args(["--emulator", "--emulator-fault", "chat=refuse-json-schema"])
            .args(["chat", "--json", "--schema"])
            .arg(&schema)
            .arg("title: Flood"),
        None,
    );
    let info: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(info["mode"], "tool_call");
    assert_eq!(info["value"]["title"], "Flood");
}

#[test]
fn bad_schema_files_and_conflicts_are_usage_errors() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);
    let tools = write(
        dir.path(),
        "tools.json",
        r#"[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]"#,
    );
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            dir.path().join("missing.json"),
            "cannot read the schema file",
        ),
        (
            write(dir.path(), "broken.json", "{\"type\": "),
            "is not JSON",
        ),
        (
            write(dir.path(), "list.json", "[\"title\"]"),
            "is not a JSON schema: expected an object",
        ),
        (
            write(dir.path(), "text.json", "\"object\""),
            "found a string",
        ),
    ];
    for (path, words) in cases {
        let out = run(
            emu.command()
                .arg("chat")
                .arg("--schema")
                .arg(&path)
                .arg("hi"),
            None,
        );
        let line = out.fails_with(2);
        assert!(line.contains(words), "{line}");
        assert!(line.contains(&path.display().to_string()), "{line}");
    }
    for extra in [
        vec!["--tools".to_string(), tools.display().to_string()],
        vec!["--show-reasoning".to_string()],
    ] {
        let out = run(
            emu.command()
                .arg("chat")
                .arg("--schema")
                .arg(&schema)
                .args(&extra)
                .arg("hi"),
            None,
        );
        let line = out.fails_with(2);
        assert!(line.contains("cannot be used with"), "{line}");
    }
    let out = run(emu.command().args(["chat", "--compact", "hi"]), None);
    assert!(out.fails_with(2).contains("--schema"), "{out:#?}");
    // No prompt (stdin empty): a prompt is needed.
    let out = run(
        emu.command().arg("chat").arg("--schema").arg(&schema),
        Some(""),
    );
    assert!(out.fails_with(2).contains("stdin was empty"), "{out:#?}");
    assert_eq!(emu.handle.counters().chat_requests, 0);
}

/// Runs `batch in.txt -o out.jsonl --schema SCHEMA -c 1`, and `extra`.
fn batch(emu: &Emu, dir: &Path, schema: &Path, extra: &[&str]) -> crate::common::Run {
    run(
        emu.command()
            .arg("batch")
            .arg(dir.join("in.txt"))
            .arg("-o")
            .arg(dir.join("out.jsonl"))
            .arg("--schema")
            .arg(schema)
            .args(["-c", "1", "--quiet"])
            .args(extra),
        None,
    )
}

/// The output lines by input line number.
fn by_line(dir: &Path) -> Vec<Value> {
    let mut lines = jsonl(&dir.join("out.jsonl"));
    lines.sort_by_key(|l| l["line"].as_u64());
    lines
}

#[test]
fn batch_schema_writes_json_per_line_and_resumes_what_did_not_fit() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);
    write(
        dir.path(),
        "in.txt",
        "title: Alpha, priority: high\n\
         {\"id\": \"b\", \"prompt\": \"title: Beta\"}\n\
         title: Gamma, priority: low\n",
    );

    // The first line is answered off the schema twice: an error line.
    emu.handle.inject(Target::Chat, Fault::OffSchema, 2);
    let out = batch(&emu, dir.path(), &schema, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr.contains("1 of 3 prompts failed"),
        "{}",
        out.stderr
    );
    let lines = by_line(dir.path());
    assert_eq!(lines.len(), 3);
    let failed = &lines[0];
    assert_eq!(failed["id"], 1);
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("does not fit the schema `ticket`"),
        "{error}"
    );
    assert!(failed.get("json").is_none(), "{failed}");
    // Its content is the model's last answer, for a look at what went wrong.
    let raw: Value = serde_json::from_str(failed["content"].as_str().unwrap()).unwrap();
    assert_eq!(raw["title"], "Alpha");
    assert!(raw.get("priority").is_none(), "{raw}");
    assert_eq!(
        lines[1]["json"],
        json!({"title": "Beta", "priority": "low"})
    );
    assert_eq!(lines[1]["id"], "b");
    assert_eq!(
        lines[2]["json"],
        json!({"title": "Gamma", "priority": "low"})
    );
    // `content` is the text the value was read from.
    let content: Value = serde_json::from_str(lines[2]["content"].as_str().unwrap()).unwrap();
    assert_eq!(content["title"], "Gamma");
    for line in &lines[1..] {
        assert!(line["error"].is_null(), "{line}");
        assert_eq!(line["finish_reason"], "stop");
        assert!(line["usage"]["total_tokens"].as_u64().unwrap() > 0);
        assert!(line["fingerprint"].is_string());
    }
    let requests = chat_requests(&emu.handle);
    assert_eq!(requests.len(), 4, "two for line 1, one each for the others");
    assert!(requests
        .iter()
        .all(|r| r["response_format"]["json_schema"]["name"] == "ticket"));

    // --resume asks the failed line again, and only it.
    emu.handle.clear_requests();
    let out = batch(&emu, dir.path(), &schema, &["--resume"]);
    out.ok();
    let requests = chat_requests(&emu.handle);
    assert_eq!(requests.len(), 1);
    assert_eq!(
        requests[0]["messages"][0]["content"],
        "title: Alpha, priority: high"
    );
    let lines = by_line(dir.path());
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0]["json"],
        json!({"title": "Alpha", "priority": "high"})
    );
    assert!(lines.iter().all(|l| l["error"].is_null()), "{lines:#?}");

    // Nothing left to ask.
    emu.handle.clear_requests();
    batch(&emu, dir.path(), &schema, &["--resume"]).ok();
    assert!(chat_requests(&emu.handle).is_empty());

    // A changed schema: every saved answer is stale, every line asked again.
    let wider = TICKET
        .replace(
            r#""tags": {"type": "array", "items": {"type": "string"}}"#,
            r#""tags": {"type": "array", "items": {"type": "string"}}, "owner": {"type": "string"}"#,
        )
        .replace(
            r#""required": ["title", "priority"]"#,
            r#""required": ["title", "priority", "owner"]"#,
        );
    fs::write(&schema, wider).unwrap();
    emu.handle.clear_requests();
    let out = batch(&emu, dir.path(), &schema, &["--resume"]);
    out.ok();
    assert!(
        out.stderr
            .contains("3 no longer match the prompt on their line and were dropped"),
        "{}",
        out.stderr
    );
    assert_eq!(chat_requests(&emu.handle).len(), 3);
    let values: Vec<Value> = by_line(dir.path())
        .into_iter()
        .map(|l| l["json"].clone())
        .collect();
    // The emulator fills a string nobody mentioned with its name.
    assert_eq!(
        values,
        [
            json!({"title": "Alpha", "priority": "high", "owner": "owner"}),
            json!({"title": "Beta", "priority": "low", "owner": "owner"}),
            json!({"title": "Gamma", "priority": "low", "owner": "owner"}),
        ]
    );

    // The same batch without --schema asks every line again too.
    emu.handle.clear_requests();
    let out = run(
        emu.command()
            .arg("batch")
            .arg(dir.path().join("in.txt"))
            .arg("-o")
            .arg(dir.path().join("out.jsonl"))
            .args(["--resume", "--quiet"]),
        None,
    );
    out.ok();
    assert_eq!(chat_requests(&emu.handle).len(), 3);
    assert!(by_line(dir.path()).iter().all(|l| l.get("json").is_none()));
}

#[test]
fn batch_schema_lines_may_not_set_their_own_format() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = write(dir.path(), "ticket.json", TICKET);
    write(
        dir.path(),
        "in.txt",
        "title: One\n\
         {\"prompt\": \"title: Two\", \"response_format\": {\"type\": \"json_object\"}}\n\
         {\"prompt\": \"title: Three\", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\": {}}}]}\n",
    );
    let out = batch(&emu, dir.path(), &schema, &[]);
    assert_eq!(out.code, Some(1), "{out:#?}");
    let lines = by_line(dir.path());
    assert_eq!(lines[0]["json"]["title"], "One");
    for (line, key) in [(&lines[1], "response_format"), (&lines[2], "tools")] {
        assert!(line["id"].is_null());
        let error = line["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("`{key}` cannot be used with --schema")),
            "{error}"
        );
    }
    assert_eq!(chat_requests(&emu.handle).len(), 1);

    // A bad schema file stops the batch before anything is sent or written.
    let out = batch(
        &emu,
        dir.path(),
        &dir.path().join("nope.json"),
        &["--overwrite"],
    );
    assert!(out.fails_with(2).contains("nope.json"), "{out:#?}");
    assert_eq!(by_line(dir.path()).len(), 3);
}
