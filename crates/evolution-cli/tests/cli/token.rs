//! `evolution token` and `evolution models`.

use std::time::Duration;

use evolution_emulator::Emulator;
use serde_json::Value;

use crate::common::{assert_no_token, closed_port, evolution, run, Emu};

#[test]
fn token_shows_expiry_and_lifetime_never_the_token() {
    let emu = Emu::start(Emulator::builder().token_ttl(Duration::from_secs(120)));
    let out = run(emu.command().arg("token"), None);
    let text = out.ok();
    assert!(
        text.contains("credentials: ok (key emulator-key-id"),
        "{text}"
    );
    assert!(text.contains("lifetime:    2m 0s"), "{text}");
    assert!(text.contains("expires:     20"), "{text}");
    assert!(!text.contains("prefix"), "{text}");
    assert_no_token(text);
    assert_no_token(&out.stderr);

    let out = run(emu.command().args(["token", "--show-prefix"]), None);
    let text = out.ok();
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("prefix:"))
        .expect("prefix line")
        .trim()
        .trim_end_matches('…');
    assert_eq!(prefix.chars().count(), 8, "{text}");
    assert_no_token(text);

    let out = run(
        emu.command().args(["token", "--json", "--show-prefix"]),
        None,
    );
    let report: Value = serde_json::from_str(out.ok()).expect("JSON");
    assert_eq!(report["ok"], true);
    assert_eq!(report["lifetime_secs"], 120);
    assert_eq!(report["token_prefix"].as_str().unwrap().len(), 8);
    assert_no_token(&out.stdout);
}

#[test]
fn token_failures_have_distinct_exit_codes() {
    let emu = Emu::start(Emulator::builder().forbidden_credentials("no-rights", "s3cret-value"));

    let bad = run(
        emu.command().arg("token").env("EVOLUTION_SECRET", "wrong"),
        None,
    );
    let line = bad.fails_with(3);
    assert!(line.contains("401"), "{line}");
    assert!(!line.contains("wrong"), "the secret was printed: {line}");

    let forbidden = run(
        emu.command()
            .arg("token")
            .env("EVOLUTION_KEY_ID", "no-rights")
            .env("EVOLUTION_SECRET", "s3cret-value"),
        None,
    );
    let line = forbidden.fails_with(4);
    assert!(line.contains("403"), "{line}");
    assert!(!line.contains("s3cret-value"), "{line}");

    let unreachable = run(
        emu.command().arg("token").env(
            "EVOLUTION_TOKEN_URL",
            format!("http://127.0.0.1:{}/api/v1/auth/token", closed_port()),
        ),
        None,
    );
    unreachable.fails_with(5);

    let missing = run(evolution().arg("token"), None);
    let line = missing.fails_with(2);
    assert!(
        line.contains("EVOLUTION_KEY_ID") && !line.contains("EVOLUTION_BASE_URL"),
        "{line}"
    );
}

#[test]
fn models_lists_the_served_models() {
    let emu = Emu::start(Emulator::builder().models(vec!["a/one".into(), "b/two".into()]));
    assert_eq!(
        run(emu.command().arg("models"), None).ok(),
        "a/one\nb/two\nemulator/reasoner-1\n"
    );
    let json: Value =
        serde_json::from_str(run(emu.command().args(["models", "--json"]), None).ok()).unwrap();
    assert_eq!(json[1]["id"], "b/two");
    let bad = run(
        emu.command().arg("models").env("EVOLUTION_SECRET", "nope"),
        None,
    );
    bad.fails_with(3);
}

#[test]
fn token_timeout_bounds_the_token_request() {
    // IAM answers after 3 s, every time; --timeout 1 gives up after 1 s a
    // request (3 attempts by default), where IAM's own default of 10 s
    // would have waited.
    let started = std::time::Instant::now();
    let out = run(
        evolution().args([
            "--emulator",
            "--emulator-fault",
            "auth=delay:3sx5",
            "token",
            "--timeout",
            "1",
        ]),
        None,
    );
    let line = out.fails_with(5);
    assert!(line.contains("did not answer within 1s"), "{line}");
    assert!(line.contains("3 attempt"), "{line}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // EVOLUTION_TIMEOUT does the same, and --max-retries counts here too.
    let out = run(
        evolution()
            .args([
                "--emulator",
                "--emulator-fault",
                "auth=delay:3sx5",
                "token",
                "--max-retries",
                "0",
            ])
            .env("EVOLUTION_TIMEOUT", "0.5"),
        None,
    );
    let line = out.fails_with(5);
    assert!(
        line.contains("did not answer within 500ms after 1 attempt"),
        "{line}"
    );
}
