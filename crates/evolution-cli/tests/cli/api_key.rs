//! API-key mode: `EVOLUTION_API_KEY` (or Cloud.ru's name for it) with
//! `EVOLUTION_BASE_URL`, against an emulator that accepts the key.

use evolution_emulator::Emulator;
use serde_json::Value;

use crate::common::{evolution, run, Emu};

const KEY: &str = "cli-api-key-7Hq2-never-printed";

/// The binary configured with an API key only.
fn with_key(emu: &Emu, variable: &str) -> std::process::Command {
    let mut command = evolution();
    command
        .env(variable, KEY)
        .env("EVOLUTION_BASE_URL", emu.handle.base_url());
    command
}

#[test]
fn chat_with_an_api_key_sends_it_as_the_bearer() {
    let emu = Emu::start(Emulator::builder().api_key(KEY));
    for variable in ["EVOLUTION_API_KEY", "CLOUD_RU_FOUNDATION_MODELS_API_KEY"] {
        let out = run(
            with_key(&emu, variable).args(["chat", "hello with a key"]),
            None,
        );
        assert_eq!(out.ok(), "hello with a key\n");
        assert!(!out.stderr.contains(KEY), "{out:#?}");
        let request = emu.handle.last_request().unwrap();
        assert_eq!(request.bearer.as_deref(), Some(KEY));
    }
    let out = run(
        with_key(&emu, "EVOLUTION_API_KEY").args(["chat", "--no-stream", "plain"]),
        None,
    );
    assert_eq!(out.ok(), "plain\n");
    assert_eq!(emu.handle.counters().auth_requests, 0);
    assert_eq!(emu.handle.counters().api_key_requests, 3);
}

#[test]
fn token_in_api_key_mode_checks_the_key_with_models() {
    let emu = Emu::start(Emulator::builder().api_key(KEY));
    let out = run(with_key(&emu, "EVOLUTION_API_KEY").arg("token"), None);
    let text = out.ok();
    assert!(text.contains("API key"), "{text}");
    assert!(text.contains(&emu.handle.base_url()), "{text}");
    assert!(!text.contains(KEY) && !out.stderr.contains(KEY), "{out:#?}");
    assert_eq!(emu.handle.counters().models_requests, 1);
    assert_eq!(emu.handle.counters().auth_requests, 0);

    let out = run(
        with_key(&emu, "EVOLUTION_API_KEY").args(["token", "--json"]),
        None,
    );
    let report: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(report["mode"], "api-key");
    assert_eq!(report["ok"], true);

    // A key the server does not know: bad credentials, key not printed.
    let mut wrong = evolution();
    wrong
        .env("EVOLUTION_API_KEY", "unknown-key-value-123")
        .env("EVOLUTION_BASE_URL", emu.handle.base_url())
        .arg("token");
    let out = run(&mut wrong, None);
    let line = out.fails_with(3);
    assert!(!line.contains("unknown-key-value-123"), "{line}");
}

#[test]
fn an_api_key_and_a_key_id_secret_together_are_refused() {
    let emu = Emu::start(Emulator::builder().api_key(KEY));
    for command in ["chat", "token", "models"] {
        let mut both = with_key(&emu, "EVOLUTION_API_KEY");
        both.env("EVOLUTION_KEY_ID", emu.handle.key_id())
            .env("EVOLUTION_SECRET", emu.handle.secret())
            .arg(command);
        if command == "chat" {
            both.arg("hi");
        }
        let out = run(&mut both, None);
        let line = out.fails_with(2);
        for name in ["EVOLUTION_API_KEY", "EVOLUTION_KEY_ID", "EVOLUTION_SECRET"] {
            assert!(line.contains(name), "{name} not named: {line}");
        }
        assert!(!line.contains(KEY), "{line}");
    }
    assert_eq!(emu.handle.requests().len(), 0, "nothing was sent");
}

#[test]
fn the_emulator_flag_stays_in_iam_mode() {
    let out = run(evolution().args(["--emulator", "token", "--json"]), None);
    let report: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(report["mode"], "iam");
}
