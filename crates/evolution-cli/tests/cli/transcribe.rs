//! `evolution transcribe`: a file or stdin uploaded to the emulator's
//! `/v1/audio/transcriptions`, which "transcribes" a UTF-8 text file to
//! its own text (two words a second, a segment per sentence).

use std::fs;
use std::path::{Path, PathBuf};

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use serde_json::{json, Value};

use crate::common::{evolution, run, Emu};

const SPEECH: &str = "Hello from the emulator. Two sentences here.";

fn speech(dir: &Path) -> PathBuf {
    let path = dir.join("speech.wav");
    fs::write(&path, SPEECH).unwrap();
    path
}

/// The form of the last upload, as the emulator recorded it (fields, and
/// the file's name, type and size).
fn last_upload(handle: &EmulatorHandle) -> Value {
    handle
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path.ends_with("/audio/transcriptions"))
        .expect("an upload")
        .body
}

#[test]
fn a_file_in_each_format() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());
    let transcribe =
        |extra: &[&str]| run(emu.command().arg("transcribe").arg(&file).args(extra), None);

    // json (the default): the text alone.
    assert_eq!(transcribe(&[]).ok(), format!("{SPEECH}\n"));
    let upload = last_upload(&emu.handle);
    assert_eq!(upload["model"], "openai/whisper-large-v3");
    assert_eq!(upload["response_format"], "json");
    assert_eq!(
        upload["file"],
        json!({"filename": "speech.wav", "content_type": "audio/wav", "bytes": SPEECH.len()})
    );

    assert_eq!(
        transcribe(&["--format", "text"]).ok(),
        format!("{SPEECH}\n")
    );
    assert_eq!(last_upload(&emu.handle)["response_format"], "text");

    assert_eq!(
        transcribe(&["--format", "srt"]).ok(),
        "1\n00:00:00,000 --> 00:00:02,000\nHello from the emulator.\n\n\
         2\n00:00:02,000 --> 00:00:03,500\nTwo sentences here.\n\n"
    );
    assert_eq!(
        transcribe(&["-f", "vtt"]).ok(),
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nHello from the emulator.\n\n\
         00:00:02.000 --> 00:00:03.500\nTwo sentences here.\n\n"
    );

    let verbose: Value =
        serde_json::from_str(transcribe(&["--format", "verbose_json"]).ok()).unwrap();
    assert_eq!(verbose["text"], SPEECH);
    assert_eq!(verbose["language"], "en");
    assert_eq!(verbose["duration"], 3.5);
    let segments: Vec<(&str, f64, f64)> = verbose["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["text"].as_str().unwrap(),
                s["start"].as_f64().unwrap(),
                s["end"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        segments,
        [
            ("Hello from the emulator.", 0.0, 2.0),
            ("Two sentences here.", 2.0, 3.5)
        ]
    );
    assert!(verbose.get("words").is_none(), "{verbose}");

    // --json: the transcription as JSON whatever the format.
    let whole: Value = serde_json::from_str(transcribe(&["--json"]).ok()).unwrap();
    assert_eq!(whole["text"], SPEECH);
    assert_eq!(whole["usage"], json!({"type": "duration", "seconds": 4}));
    let subtitles: Value =
        serde_json::from_str(transcribe(&["--json", "--format", "srt"]).ok()).unwrap();
    assert!(
        subtitles["text"]
            .as_str()
            .unwrap()
            .starts_with("1\n00:00:00,000 --> 00:00:02,000\n"),
        "{subtitles}"
    );
    assert_eq!(emu.handle.counters().transcription_requests, 7);
}

#[test]
fn flags_reach_the_form() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());
    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(&file)
            .args(["--language", "ru", "--prompt", "Names: Ivan."])
            .args(["--temperature", "0.2", "--timestamps", "segment,word"])
            .args(["--model", "my/whisper", "--file-name", "take1.ogg"]),
        None,
    );
    let verbose: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(verbose["language"], "ru");
    let words: Vec<&str> = verbose["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["word"].as_str().unwrap())
        .collect();
    assert_eq!(words[..3], ["Hello", "from", "the"]);
    assert_eq!(verbose["words"][1]["start"], 0.5);
    let upload = last_upload(&emu.handle);
    assert_eq!(upload["model"], "my/whisper");
    assert_eq!(upload["language"], "ru");
    assert_eq!(upload["prompt"], "Names: Ivan.");
    assert_eq!(upload["temperature"], "0.2");
    assert_eq!(upload["response_format"], "verbose_json");
    assert_eq!(
        upload["timestamp_granularities[]"],
        json!(["segment", "word"])
    );
    assert_eq!(upload["file"]["filename"], "take1.ogg");
    assert_eq!(upload["file"]["content_type"], "audio/ogg");

    // The model from the environment.
    let out = run(
        emu.command()
            .env("EVOLUTION_TRANSCRIPTION_MODEL", "env/whisper")
            .arg("transcribe")
            .arg(&file),
        None,
    );
    out.ok();
    assert_eq!(last_upload(&emu.handle)["model"], "env/whisper");

    // Flags checked before anything is sent.
    for (args, words) in [
        (
            vec!["--format", "srt", "--timestamps", "word"],
            "--timestamps needs --format verbose_json",
        ),
        (
            vec!["--temperature", "1.5"],
            "--temperature: must be between 0 and 1",
        ),
        (vec!["--format", "mp3"], "unknown response format \"mp3\""),
        (vec!["--timestamps", "sentence"], "expected segment or word"),
        (vec!["--language", " "], "--language is empty"),
        (vec!["--max-upload-size", "0"], "at least 1 byte"),
    ] {
        emu.handle.reset_counters();
        let out = run(emu.command().arg("transcribe").arg(&file).args(&args), None);
        let line = out.fails_with(2);
        assert!(line.contains(words), "{args:?}: {line}");
        assert_eq!(emu.handle.counters().transcription_requests, 0);
    }
}

#[test]
fn standard_input_is_named_by_its_format_or_by_file_name() {
    let emu = Emu::start(Emulator::builder());

    // Named explicitly.
    let out = run(
        emu.command()
            .args(["transcribe", "-", "--file-name", "mic.mp3"]),
        Some(SPEECH),
    );
    assert_eq!(out.ok(), format!("{SPEECH}\n"));
    let upload = last_upload(&emu.handle);
    assert_eq!(upload["file"]["filename"], "mic.mp3");
    assert_eq!(upload["file"]["content_type"], "audio/mpeg");
    assert_eq!(upload["file"]["bytes"], SPEECH.len());

    // A WAV header names it audio.wav (the rest is "transcribed" as text).
    let wav = format!("RIFF\u{24}\0\0\0WAVE {SPEECH}");
    let out = run(emu.command().args(["transcribe", "-"]), Some(&wav));
    assert!(out.ok().ends_with(&format!("WAVE {SPEECH}\n")), "{out:#?}");
    let upload = last_upload(&emu.handle);
    assert_eq!(upload["file"]["filename"], "audio.wav");
    assert_eq!(upload["file"]["bytes"], wav.len());

    // Neither: a usage error before anything is sent.
    emu.handle.reset_counters();
    let out = run(emu.command().args(["transcribe", "-"]), Some(SPEECH));
    assert!(out.fails_with(2).contains("--file-name"), "{out:#?}");
    let out = run(
        emu.command()
            .args(["transcribe", "-", "--file-name", "a.wav"]),
        Some(""),
    );
    assert!(
        out.fails_with(2).contains("standard input is empty"),
        "{out:#?}"
    );
    assert_eq!(emu.handle.counters().transcription_requests, 0);
}

#[test]
fn files_over_the_limit_are_refused_before_sending() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());

    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(&file)
            .args(["--max-upload-size", "16"]),
        None,
    );
    let line = out.fails_with(2);
    assert!(
        line.contains(&format!(
            "{} is {} bytes, over the limit of 16 bytes",
            file.display(),
            SPEECH.len()
        )),
        "{line}"
    );
    assert!(line.contains("--max-upload-size"), "{line}");

    let out = run(
        emu.command().args([
            "transcribe",
            "-",
            "--file-name",
            "a.wav",
            "--max-upload-size",
            "16",
        ]),
        Some(SPEECH),
    );
    assert!(
        out.fails_with(2)
            .contains("standard input is 44 bytes, over the limit of 16 bytes"),
        "{out:#?}"
    );

    // The default limit is 25 MiB (a sparse file: nothing is written or read).
    let big = dir.path().join("long.mp3");
    fs::File::create(&big)
        .unwrap()
        .set_len(25 * 1024 * 1024 + 1)
        .unwrap();
    let out = run(emu.command().arg("transcribe").arg(&big), None);
    assert!(
        out.fails_with(2)
            .contains("is 26214401 bytes, over the limit of 26214400 bytes"),
        "{out:#?}"
    );
    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(&big)
            .args(["--file-name", "x.mp3"]),
        None,
    );
    assert!(out.fails_with(2).contains("over the limit"), "{out:#?}");
    assert_eq!(emu.handle.counters().transcription_requests, 0);

    // Not a file at all.
    let out = run(emu.command().arg("transcribe").arg(dir.path()), None);
    assert!(out.fails_with(2).contains("is a directory"), "{out:#?}");
    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(dir.path().join("missing.wav")),
        None,
    );
    assert!(out.fails_with(2).contains("cannot read"), "{out:#?}");
    fs::write(dir.path().join("empty.wav"), "").unwrap();
    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(dir.path().join("empty.wav")),
        None,
    );
    assert!(out.fails_with(2).contains("is empty"), "{out:#?}");
}

#[test]
fn a_413_from_the_server_is_an_api_error() {
    let emu = Emu::start(Emulator::builder().max_audio_bytes(16));
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());
    let out = run(emu.command().arg("transcribe").arg(&file), None);
    let line = out.fails_with(6);
    assert!(
        line.contains(&format!(
            "{} is {} bytes, more than the service takes (413)",
            file.display(),
            SPEECH.len()
        )),
        "{line}"
    );
    assert!(line.contains("[request id "), "{line}");
    assert!(!line.contains("--max-upload-size"), "{line}");
    // Not retried: the same upload would be refused again.
    assert_eq!(emu.handle.counters().transcription_requests, 1);
}

#[test]
fn a_503_is_retried_with_the_whole_upload() {
    let emu = Emu::start(Emulator::builder());
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());
    emu.handle.inject(Target::Audio, Fault::Status(503), 1);
    let out = run(emu.command().arg("transcribe").arg(&file), None);
    assert_eq!(out.ok(), format!("{SPEECH}\n"));
    assert_eq!(emu.handle.counters().transcription_requests, 2);
    let uploads: Vec<Value> = emu
        .handle
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/audio/transcriptions"))
        .map(|r| r.body["file"].clone())
        .collect();
    assert_eq!(uploads.len(), 2);
    assert_eq!(uploads[0], uploads[1]);
    assert_eq!(uploads[1]["bytes"], SPEECH.len());

    // From stdin too: the retry resends what was read.
    emu.handle.inject(Target::Audio, Fault::Status(503), 1);
    let out = run(
        emu.command()
            .args(["transcribe", "-", "--file-name", "a.wav"]),
        Some(SPEECH),
    );
    assert_eq!(out.ok(), format!("{SPEECH}\n"));

    // Past --max-retries: exit code 6.
    emu.handle.inject(Target::Audio, Fault::Status(503), 2);
    let out = run(
        emu.command()
            .arg("transcribe")
            .arg(&file)
            .args(["--max-retries", "1"]),
        None,
    );
    assert!(
        out.fails_with(6)
            .contains("unavailable (503) after 2 attempts"),
        "{out:#?}"
    );
}

#[test]
fn the_embedded_emulator_serves_transcriptions() {
    let dir = tempfile::tempdir().unwrap();
    let file = speech(dir.path());
    let out = run(
        evolution()
            .args(["--emulator", "--emulator-fault", "audio=status:503"])
            .args(["transcribe", "--format", "vtt"])
            .arg(&file),
        None,
    );
    assert!(
        out.ok()
            .starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:02.000\nHello from the emulator.\n"),
        "{out:#?}"
    );
}
