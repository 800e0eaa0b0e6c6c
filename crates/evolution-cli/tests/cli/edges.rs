//! The command line's edges: numbers that look like flags, clap's tips,
//! global options on either side of the subcommand, and what `evolution
//! emulator` takes and refuses.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, Fault, Target};
use nix::sys::signal::Signal;

use crate::common::{evolution, run, signal, wait, Emu};

#[test]
fn negative_numbers_get_the_allowed_range() {
    for (args, expected) in [
        (
            &["chat", "-t", "-1", "hi"][..],
            "--temperature: must be between 0 and 2, got -1",
        ),
        (
            &["chat", "--temperature", "3", "hi"],
            "between 0 and 2, got 3",
        ),
        (
            &["chat", "--top-p", "-0.5", "hi"],
            "--top-p: must be between 0 and 1",
        ),
        (
            &["batch", "in.txt", "--frequency-penalty", "-3"],
            "--frequency-penalty: must be between -2 and 2",
        ),
        (
            &["chat", "--max-tokens", "0", "hi"],
            "--max-tokens: must be at least 1",
        ),
        (
            &["--max-retries", "-1", "chat", "hi"],
            "-1 is not in 0..=10",
        ),
        (
            &["chat", "--timeout", "-1", "hi"],
            "must be more than 0 seconds",
        ),
        (&["batch", "in.txt", "-c", "-4"], "-4 is not in 1..=1024"),
    ] {
        let out = run(evolution().args(args), None);
        let line = out.fails_with(2);
        assert!(line.contains(expected), "{args:?}: {line}");
        assert!(!line.contains("unexpected argument"), "{args:?}: {line}");
        assert!(line.contains("--help"), "{args:?}: {line}");
    }
}

#[test]
fn clap_tips_are_kept() {
    let out = run(evolution().args(["chat", "--temprature", "1", "hi"]), None);
    let line = out.fails_with(2);
    assert!(
        line.contains("tip: a similar argument exists: '--temperature'"),
        "{line}"
    );
    assert!(line.ends_with("(see 'evolution chat --help')"), "{line}");
    let out = run(evolution().args(["chta", "hi"]), None);
    let line = out.fails_with(2);
    assert!(
        line.contains("tip: a similar subcommand exists: 'chat'"),
        "{line}"
    );
}

#[test]
fn global_options_work_before_and_after_the_subcommand() {
    let emu = Emu::start(Emulator::builder());
    // One 503: the default two retries get past it, no retry does not.
    for args in [
        &["--max-retries", "0", "chat", "--no-stream", "hi"][..],
        &["chat", "--no-stream", "--max-retries", "0", "hi"],
        &["chat", "--no-stream", "hi", "--max-retries", "0"],
    ] {
        emu.handle.inject(Target::Chat, Fault::Status(503), 1);
        let out = run(emu.command().args(args), None);
        let line = out.fails_with(6);
        assert!(line.contains("after 1 attempt"), "{args:?}: {line}");
    }
    emu.handle.inject(Target::Chat, Fault::Status(503), 1);
    assert_eq!(
        run(emu.command().args(["chat", "--no-stream", "hi"]), None).ok(),
        "hi\n"
    );
    // --timeout before the subcommand bounds the call.
    emu.handle
        .inject(Target::Chat, Fault::Delay(Duration::from_secs(3)), 1);
    let started = Instant::now();
    let out = run(
        emu.command()
            .args(["--timeout", "0.5", "--max-retries", "0", "chat", "hi"]),
        None,
    );
    out.fails_with(5);
    assert!(started.elapsed() < Duration::from_secs(3));

    // The embedded emulator's options, after the subcommand as well.
    let out = run(
        evolution().args([
            "chat",
            "--emulator",
            "--emulator-fault",
            "chat=status:400",
            "hi",
        ]),
        None,
    );
    out.fails_with(6);
    let out = run(
        evolution().args(["models", "--emulator", "--key-id", "ignored", "-v"]),
        None,
    );
    assert_eq!(out.ok(), "emulator/echo-1\nemulator/reasoner-1\n");
}

#[test]
fn the_emulator_command_refuses_the_other_commands_options() {
    for (args, expected) in [
        (&["--emulator", "emulator"][..], "drop --emulator"),
        (&["emulator", "--emulator"], "drop --emulator"),
        (
            &["emulator", "--max-retries", "3"],
            "--max-retries is an option of the commands that call the service",
        ),
        (&["--timeout", "5", "emulator"], "--timeout is an option"),
        (
            &["--emulator-token-ttl", "60", "emulator"],
            "--emulator-token-ttl configures the emulator that --emulator embeds",
        ),
    ] {
        let out = run(evolution().args(args), None);
        let line = out.fails_with(2);
        assert!(line.contains(expected), "{args:?}: {line}");
        assert!(
            line.contains("evolution emulator --help"),
            "{args:?}: {line}"
        );
    }
}

#[test]
fn emulator_help_lists_its_own_options_and_a_pattern_that_works() {
    let out = run(evolution().args(["emulator", "--help"]), None);
    let help = out.ok();
    for absent in [
        "  --emulator",
        "--max-retries",
        "--base-url",
        "--timeout",
        "eval",
    ] {
        assert!(!help.contains(absent), "{absent} in:\n{help}");
    }
    for present in ["--port", "--env-file", "--upstream", "-v, --verbose"] {
        assert!(help.contains(present), "{present} not in:\n{help}");
    }
    // The other commands list the global options.
    let help = run(evolution().args(["chat", "--help"]), None);
    for present in ["--max-retries", "--timeout", "  --emulator"] {
        assert!(help.ok().contains(present), "{present}");
    }
}

#[test]
fn the_emulator_writes_an_env_file_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("emu.env");
    // The client settings of the environment are for the other commands:
    // `emulator` neither refuses nor takes them.
    let mut child = evolution()
        .args(["emulator", "--port", "0", "--export", "--env-file"])
        .arg(&env_file)
        .env("EVOLUTION_KEY_ID", "the-client-s-key")
        .env("EVOLUTION_MAX_RETRIES", "5")
        .env("EVOLUTION_EMULATOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let text = loop {
        if let Ok(text) = fs::read_to_string(&env_file) {
            if !text.is_empty() {
                break text;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no env file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let vars: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let line = line.strip_prefix("export ").expect("export prefix");
            let (k, v) = line.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect();
    assert_eq!(vars.len(), 5, "{text}");
    assert_eq!(
        vars[0],
        ("EVOLUTION_KEY_ID".into(), "emulator-key-id".into())
    );
    // Still serving: a client configured from the file gets an answer.
    let mut chat = evolution();
    chat.args(["chat", "from the env file"]);
    chat.envs(vars.iter().map(|(k, v)| (k, v)));
    assert_eq!(run(&mut chat, None).ok(), "from the env file\n");
    signal(child.id(), Signal::SIGTERM);
    assert!(wait(&mut child, Duration::from_secs(10)).success());
}
