//! Configuration: missing settings, invalid flags, precedence, the
//! embedded emulator and the `emulator` command.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use evolution_emulator::Emulator;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::{assert_no_token, evolution, read_lines, run, signal, wait, Emu};

#[test]
fn missing_credentials_say_what_to_set() {
    let out = run(evolution().args(["chat", "hi"]), None);
    let line = out.fails_with(2);
    for needed in [
        "EVOLUTION_API_KEY",
        "EVOLUTION_KEY_ID",
        "EVOLUTION_SECRET",
        "--emulator",
    ] {
        assert!(line.contains(needed), "{needed} missing from: {line}");
    }
    let partial = run(
        evolution()
            .args(["models"])
            .env("EVOLUTION_KEY_ID", "k")
            .env("EVOLUTION_BASE_URL", "http://127.0.0.1:9/v1"),
        None,
    );
    let line = partial.fails_with(2);
    assert!(line.contains("or EVOLUTION_SECRET ("), "{line}");
}

#[test]
fn invalid_flag_values_are_usage_errors() {
    for args in [
        &["chat", "--temperature", "3", "hi"][..],
        &["chat", "--temperature", "warm", "hi"],
        &["chat", "--top-p", "1.5", "hi"],
        &["chat", "--max-tokens", "0", "hi"],
        &["chat", "--timeout", "-1", "hi"],
        &["batch", "in.txt", "--concurrency", "0"],
        &["batch", "in.txt", "--resume"],
        &["chat", "--no-such-flag"],
        &["frobnicate"],
    ] {
        let out = run(evolution().args(args), None);
        let line = out.fails_with(2);
        assert!(line.contains("--help"), "{args:?}: {line}");
    }
    let bad_switch = run(
        evolution().arg("models").env("EVOLUTION_EMULATOR", "maybe"),
        None,
    );
    bad_switch.fails_with(2);
}

#[test]
fn the_embedded_emulator_needs_no_account() {
    // No EVOLUTION_* variable at all: the README's first command.
    let chat = run(evolution().args(["--emulator", "chat", "Hello"]), None);
    assert_eq!(chat.ok(), "Hello\n");
    let env = run(
        evolution().args(["token"]).env("EVOLUTION_EMULATOR", "1"),
        None,
    );
    assert!(env.ok().contains("credentials: ok"));
    let models = run(evolution().args(["models", "--emulator"]), None);
    assert_eq!(models.ok(), "emulator/echo-1\nemulator/reasoner-1\n");
    let fault = run(
        evolution().args([
            "--emulator",
            "--emulator-fault",
            "chat=status:400",
            "chat",
            "hi",
        ]),
        None,
    );
    fault.fails_with(6);

    // Logs at every level keep the secret and the token to themselves.
    for verbosity in ["-v", "-vv", "-vvv"] {
        let out = run(
            evolution().args(["--emulator", verbosity, "chat", "hi"]),
            None,
        );
        assert_eq!(out.ok(), "hi\n");
        assert!(out.stderr.contains("INFO"), "{verbosity}: {}", out.stderr);
        assert!(!out.stderr.contains("emulator-secret"), "{}", out.stderr);
        assert_no_token(&out.stderr);
    }
}

#[test]
fn flags_beat_environment_beats_dotenv() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let h = &emu.handle;
    fs::write(
        dir.path().join(".env"),
        format!(
            "EVOLUTION_KEY_ID={}\nEVOLUTION_SECRET={}\nEVOLUTION_BASE_URL={}\n\
             EVOLUTION_TOKEN_URL={}\nEVOLUTION_MODEL=from-dotenv\n",
            h.key_id(),
            h.secret(),
            h.base_url(),
            h.auth_url()
        ),
    )
    .unwrap();
    let model = |command: &mut std::process::Command| {
        let out = run(command.current_dir(dir.path()), None);
        let response: Value = serde_json::from_str(out.ok()).expect("JSON");
        response["model"].as_str().unwrap().to_string()
    };
    assert_eq!(
        model(evolution().args(["chat", "--json", "hi"])),
        "from-dotenv"
    );
    assert_eq!(
        model(
            evolution()
                .args(["chat", "--json", "hi"])
                .env("EVOLUTION_MODEL", "from-env")
        ),
        "from-env"
    );
    assert_eq!(
        model(
            evolution()
                .args(["chat", "--json", "--model", "from-flag", "hi"])
                .env("EVOLUTION_MODEL", "from-env")
        ),
        "from-flag"
    );
    // The environment beats the file...
    let wrong_secret = run(
        evolution()
            .args(["token"])
            .current_dir(dir.path())
            .env("EVOLUTION_SECRET", "wrong"),
        None,
    );
    wrong_secret.fails_with(3);
    // ...and a flag beats the environment.
    let fixed = run(
        evolution()
            .args(["token", "--key-id", h.key_id()])
            .current_dir(dir.path())
            .env("EVOLUTION_KEY_ID", "wrong-key"),
        None,
    );
    fixed.ok();
}

#[test]
fn the_emulator_command_prints_what_a_client_needs() {
    let mut child = evolution()
        .args([
            "emulator",
            "--port",
            "0",
            "--token-ttl",
            "90",
            "--model",
            "x/y",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let lines = read_lines(child.stdout.take().unwrap(), 5, Duration::from_secs(20));
    let vars: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    let names: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "EVOLUTION_KEY_ID",
            "EVOLUTION_SECRET",
            "EVOLUTION_BASE_URL",
            "EVOLUTION_TOKEN_URL",
            "EVOLUTION_MODEL"
        ]
    );

    // Another process uses exactly those lines.
    let mut token = evolution();
    token.arg("token");
    token.envs(vars.iter().map(|(k, v)| (k, v)));
    assert!(run(&mut token, None).ok().contains("lifetime:    1m 30s"));

    signal(child.id(), Signal::SIGINT);
    assert!(wait(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn the_emulator_command_prints_the_api_key_form_when_asked() {
    let mut child = evolution()
        .args([
            "emulator",
            "--port",
            "0",
            "--api-key",
            "emu-api-key-1",
            "--api-key-env",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let lines = read_lines(child.stdout.take().unwrap(), 3, Duration::from_secs(20));
    assert_eq!(lines[0], "EVOLUTION_API_KEY=emu-api-key-1");
    assert!(
        lines[1].starts_with("EVOLUTION_BASE_URL=http://127.0.0.1:"),
        "{lines:?}"
    );
    // The model too, as in the key id/secret form.
    assert_eq!(lines[2], "EVOLUTION_MODEL=emulator/echo-1");
    let vars: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let (k, v) = l.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    // A client given only those lines works in API-key mode.
    let mut token = evolution();
    token.arg("token");
    token.envs(vars.iter().map(|(k, v)| (k, v)));
    assert!(run(&mut token, None).ok().contains("API key"));
    let mut chat = evolution();
    chat.args(["chat", "--json", "hi"]);
    chat.envs(vars.iter().map(|(k, v)| (k, v)));
    let response: Value = serde_json::from_str(run(&mut chat, None).ok()).unwrap();
    assert_eq!(response["model"], "emulator/echo-1");

    signal(child.id(), Signal::SIGINT);
    assert!(wait(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn a_blank_upstream_is_no_upstream() {
    // `EVOLUTION_EMULATOR_UPSTREAM=` in a .env file: the real configuration
    // (here: an emulator of the test's own) stays in charge.
    let emu = Emu::start(Emulator::builder().models(vec!["real/one".into()]));
    let out = run(
        emu.command()
            .arg("models")
            .env("EVOLUTION_EMULATOR_UPSTREAM", "")
            .env("EVOLUTION_EMULATOR_UPSTREAM_API_KEY", ""),
        None,
    );
    assert_eq!(out.ok(), "real/one\nemulator/reasoner-1\n");

    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join(".env"),
        "EVOLUTION_EMULATOR_UPSTREAM=\nEVOLUTION_EMULATOR=\n",
    )
    .unwrap();
    let out = run(emu.command().arg("models").current_dir(dir.path()), None);
    assert_eq!(out.ok(), "real/one\nemulator/reasoner-1\n");

    // Blank with --emulator: the emulator answers by itself.
    let out = run(
        evolution()
            .args(["--emulator", "chat", "echo me"])
            .env("EVOLUTION_EMULATOR_UPSTREAM", "  "),
        None,
    );
    assert_eq!(out.ok(), "echo me\n");
}

#[test]
fn the_embedded_token_lifetime_is_bounded() {
    for ttl in ["0", "31622401", "18446744073709551615"] {
        let out = run(
            evolution().args(["--emulator", "--emulator-token-ttl", ttl, "token"]),
            None,
        );
        let line = out.fails_with(2);
        assert!(line.contains("--emulator-token-ttl"), "{ttl}: {line}");
    }
    let longest = run(
        evolution().args(["--emulator", "--emulator-token-ttl", "31622400", "token"]),
        None,
    );
    assert!(
        longest.ok().contains("lifetime:    8784h 0m 0s"),
        "{longest:?}"
    );
    let from_env = run(
        evolution()
            .args(["--emulator", "token"])
            .env("EVOLUTION_EMULATOR_TOKEN_TTL", "31622401"),
        None,
    );
    from_env.fails_with(2);
}
