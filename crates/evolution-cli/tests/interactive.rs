//! The interactive `evolution chat` session, driven through a real
//! pseudo-terminal: typed lines, streamed answers, Ctrl-C, Ctrl-D.

mod common;

use std::time::Duration;

use common::{evolution, Emu};
use evolution_emulator::{Emulator, EmulatorHandle};
use nix::sys::wait::WaitStatus;
use rexpect::reader::Options;
use rexpect::session::{spawn_with_options, PtySession};
use serde_json::{json, Value};

/// The session's prompt.
const PROMPT: &str = "you> ";

/// Starts `evolution chat` (no prompt) on a pseudo-terminal, configured for
/// `emu`, and waits for its first prompt.
fn session(emu: &Emu) -> PtySession {
    let mut command = evolution();
    command
        .arg("chat")
        .env("TERM", "xterm")
        .env("EVOLUTION_KEY_ID", emu.handle.key_id())
        .env("EVOLUTION_SECRET", emu.handle.secret())
        .env("EVOLUTION_BASE_URL", emu.handle.base_url())
        .env("EVOLUTION_TOKEN_URL", emu.handle.auth_url());
    let options = Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(true);
    let mut session = spawn_with_options(command, options).expect("spawn on a pty");
    session.exp_string("/help for commands").expect("banner");
    session.exp_string(PROMPT).expect("first prompt");
    session
}

/// The messages of the last chat request the emulator received.
fn last_messages(handle: &EmulatorHandle) -> Vec<Value> {
    let request = handle
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/chat/completions"))
        .expect("a chat request");
    request.body["messages"]
        .as_array()
        .expect("messages")
        .clone()
}

/// Ends the session with Ctrl-D and checks it exits cleanly.
fn quit(mut session: PtySession) {
    session.send_control('d').expect("Ctrl-D");
    session.exp_eof().expect("the session ends");
    match session.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 0),
        other => panic!("unexpected end: {other:?}"),
    }
}

#[test]
fn two_turns_share_the_conversation() {
    let emu = Emu::start(Emulator::builder());
    let mut chat = session(&emu);

    chat.send_line("alpha beta").expect("type");
    // The answer is a line of its own (the echo of the typed line follows
    // the prompt), then the next prompt.
    chat.exp_regex(r"\nalpha beta\r?\n").expect("first answer");
    chat.exp_string(PROMPT).expect("second prompt");

    chat.send_line("gamma delta").expect("type");
    chat.exp_regex(r"\ngamma delta\r?\n")
        .expect("second answer");
    chat.exp_string(PROMPT).expect("third prompt");

    assert_eq!(
        last_messages(&emu.handle),
        [
            json!({"role": "user", "content": "alpha beta"}),
            json!({"role": "assistant", "content": "alpha beta"}),
            json!({"role": "user", "content": "gamma delta"}),
        ]
    );
    assert_eq!(emu.handle.counters().stream_requests, 2);
    quit(chat);
}

#[test]
fn ctrl_c_stops_the_answer_not_the_session() {
    // 20 words at 200 ms: four seconds of answer to interrupt.
    let emu = Emu::start(Emulator::builder().word_delay(Duration::from_millis(200)));
    let mut chat = session(&emu);
    let long = "count one two three four five six seven eight nine ten \
                eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen";

    chat.send_line(long).expect("type");
    chat.exp_regex(r"\ncount one").expect("the answer starts");
    chat.send_control('c').expect("Ctrl-C");
    chat.exp_string("(answer interrupted)")
        .expect("interrupted");
    chat.exp_string(PROMPT).expect("the session goes on");

    // Ctrl-C at the prompt clears the line and prompts again. (Typing on
    // before the new prompt would race the editor, which drops what it had
    // read ahead when Ctrl-C ends its line.)
    chat.send("never sent").expect("type");
    chat.send_control('c').expect("Ctrl-C at the prompt");
    chat.exp_string(PROMPT).expect("a fresh prompt");

    chat.send_line("after").expect("type");
    chat.exp_regex(r"\nafter\r?\n").expect("next answer");
    chat.exp_string(PROMPT).expect("prompt");

    let messages = last_messages(&emu.handle);
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert_eq!(messages[0], json!({"role": "user", "content": long}));
    assert_eq!(messages[1]["role"], "assistant");
    let partial = messages[1]["content"].as_str().expect("partial answer");
    assert!(
        partial.starts_with("count one") && partial.len() < long.len(),
        "the interrupted answer should be a strict prefix: {partial:?}"
    );
    assert!(long.starts_with(partial), "{partial:?}");
    assert_eq!(messages[2], json!({"role": "user", "content": "after"}));
    quit(chat);
}

#[test]
fn an_unknown_command_is_flagged_not_sent() {
    let emu = Emu::start(Emulator::builder());
    let mut chat = session(&emu);

    chat.send_line("/rest").expect("type");
    chat.exp_string("unknown command /rest: the commands are /help, /reset, /exit")
        .expect("flagged");
    chat.exp_string(PROMPT).expect("prompt");
    assert_eq!(emu.handle.counters().stream_requests, 0);

    // A doubled slash sends the line, one slash less.
    chat.send_line("//etc/hosts").expect("type");
    chat.exp_regex(r"\n/etc/hosts\r?\n").expect("answer");
    chat.exp_string(PROMPT).expect("prompt");
    assert_eq!(
        last_messages(&emu.handle),
        [json!({"role": "user", "content": "/etc/hosts"})]
    );
    quit(chat);
}

#[test]
fn schema_needs_a_prompt_not_a_session() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("s.json");
    std::fs::write(&schema, r#"{"type": "object"}"#).unwrap();
    let mut command = evolution();
    command
        .arg("chat")
        .arg("--schema")
        .arg(&schema)
        .env("TERM", "xterm")
        .env("EVOLUTION_KEY_ID", emu.handle.key_id())
        .env("EVOLUTION_SECRET", emu.handle.secret())
        .env("EVOLUTION_BASE_URL", emu.handle.base_url())
        .env("EVOLUTION_TOKEN_URL", emu.handle.auth_url());
    let options = Options::new()
        .timeout_ms(Some(20_000))
        .strip_ansi_escape_codes(true);
    let mut session = spawn_with_options(command, options).expect("spawn on a pty");
    session
        .exp_string(
            "--schema needs a prompt (as an argument or on stdin), not an interactive session",
        )
        .expect("refused");
    session.exp_eof().expect("exits");
    match session.process().wait().expect("wait") {
        WaitStatus::Exited(_, code) => assert_eq!(code, 2),
        other => panic!("unexpected end: {other:?}"),
    }
    assert_eq!(emu.handle.counters().auth_requests, 0);
}
