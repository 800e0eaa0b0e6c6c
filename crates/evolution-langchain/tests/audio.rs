//! Audio transcription against the emulator over loopback: a file, bytes
//! and a reader, every response format, the size refused before sending
//! and answered 413, a rejected token recovered mid-upload, and retries
//! that send the whole upload again.

mod common;

use std::time::Duration;

use evolution_emulator::{Emulator, EmulatorHandle, Fault, Target};
use evolution_langchain::{
    Error, EvolutionAudio, EvolutionAudioBuilder, TimestampGranularity, TranscriptionFormat,
    TranscriptionOptions, DEFAULT_TRANSCRIPTION_MODEL,
};
use serde_json::Value;

const SPEECH: &str = "The quick brown fox. It jumps over the lazy dog.";

fn builder(emu: &EmulatorHandle) -> EvolutionAudioBuilder {
    EvolutionAudio::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
}

fn audio(emu: &EmulatorHandle) -> EvolutionAudio {
    builder(emu).build().unwrap()
}

/// The recorded form of each transcription request.
fn uploads(emu: &EmulatorHandle) -> Vec<Value> {
    emu.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/audio/transcriptions"))
        .map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn a_file_bytes_and_a_reader_are_transcribed() {
    let emu = common::emulator().await;
    let audio = audio(&emu);
    assert_eq!(audio.model(), DEFAULT_TRANSCRIPTION_MODEL);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("speech.mp3");
    std::fs::write(&path, SPEECH).unwrap();
    let from_file = audio
        .transcribe_file(&path, TranscriptionOptions::new().language("en"))
        .await
        .unwrap();
    assert_eq!(from_file.text, SPEECH);

    let from_bytes = audio
        .transcribe_bytes(
            "speech.wav",
            SPEECH.as_bytes().to_vec(),
            TranscriptionOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(from_bytes.text, SPEECH);

    let from_reader = audio
        .transcribe_reader("speech.ogg", SPEECH.as_bytes(), TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(from_reader.text, SPEECH);

    let forms = uploads(&emu);
    assert_eq!(forms.len(), 3);
    assert_eq!(forms[0]["model"], DEFAULT_TRANSCRIPTION_MODEL);
    assert_eq!(forms[0]["language"], "en");
    assert_eq!(forms[0]["file"]["filename"], "speech.mp3");
    assert_eq!(forms[0]["file"]["content_type"], "audio/mpeg");
    assert_eq!(forms[0]["file"]["bytes"], SPEECH.len());
    assert_eq!(forms[1]["file"]["content_type"], "audio/wav");
    assert_eq!(forms[2]["file"]["filename"], "speech.ogg");
    assert_eq!(emu.counters().transcription_requests, 3);
}

#[tokio::test]
async fn every_response_format() {
    let emu = common::emulator().await;
    let audio = audio(&emu);
    let with = |format| TranscriptionOptions::new().response_format(format);

    let json = audio
        .transcribe_bytes("a.wav", SPEECH, with(TranscriptionFormat::Json))
        .await
        .unwrap();
    assert_eq!(json.text, SPEECH);
    assert!(json.segments.is_empty());

    let text = audio
        .transcribe_bytes("a.wav", SPEECH, with(TranscriptionFormat::Text))
        .await
        .unwrap();
    assert_eq!(text.text.trim_end(), SPEECH);

    let verbose = audio
        .transcribe_bytes(
            "a.wav",
            SPEECH,
            with(TranscriptionFormat::VerboseJson)
                .timestamp_granularity(TimestampGranularity::Segment)
                .timestamp_granularity(TimestampGranularity::Word),
        )
        .await
        .unwrap();
    assert_eq!(verbose.text, SPEECH);
    assert_eq!(verbose.segments.len(), 2, "{verbose:?}");
    assert_eq!(verbose.segments[0].text.trim(), "The quick brown fox.");
    assert!(verbose.segments[1].start >= verbose.segments[0].end);
    assert_eq!(verbose.words.len(), 10);
    assert_eq!(verbose.words[1].word.trim(), "quick");
    assert!(verbose.duration.unwrap() > 0.0);
    let granularities = &uploads(&emu)[2]["timestamp_granularities[]"];
    assert_eq!(granularities, &serde_json::json!(["segment", "word"]));

    let srt = audio
        .transcribe_bytes("a.wav", SPEECH, with(TranscriptionFormat::Srt))
        .await
        .unwrap();
    assert!(srt.text.starts_with("1\n00:00:00,000 --> "), "{}", srt.text);
    assert!(srt.text.contains("\n2\n"), "{}", srt.text);

    let vtt = audio
        .transcribe_bytes("a.wav", SPEECH, with(TranscriptionFormat::Vtt))
        .await
        .unwrap();
    assert!(vtt.text.starts_with("WEBVTT"), "{}", vtt.text);
    assert!(vtt.text.contains(" --> "), "{}", vtt.text);

    // Granularities without verbose_json are refused before sending.
    let before = emu.counters().transcription_requests;
    let err = audio
        .transcribe_bytes(
            "a.wav",
            SPEECH,
            with(TranscriptionFormat::Json).timestamp_granularity(TimestampGranularity::Word),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "timestamp_granularities"),
        "{err}"
    );
    assert_eq!(emu.counters().transcription_requests, before);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_before_anything_is_sent() {
    let emu = common::emulator().await;
    let audio = builder(&emu).max_upload_size(16).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.wav");
    std::fs::write(&path, [0u8; 17]).unwrap();
    for outcome in [
        audio
            .transcribe_file(&path, TranscriptionOptions::new())
            .await,
        audio
            .transcribe_bytes("long.wav", vec![0u8; 17], TranscriptionOptions::new())
            .await,
        audio
            .transcribe_reader("long.wav", &[0u8; 40][..], TranscriptionOptions::new())
            .await,
    ] {
        match outcome.unwrap_err() {
            error @ Error::UploadTooLarge {
                limit: Some(16), ..
            } => {
                let text = error.to_string();
                assert!(text.contains("limit of 16 bytes"), "{text}");
                assert!(text.contains("max_upload_size"), "{text}");
            }
            other => panic!("{other:?}"),
        }
    }
    let Error::UploadTooLarge { size, .. } = audio
        .transcribe_reader("long.wav", &[0u8; 40][..], TranscriptionOptions::new())
        .await
        .unwrap_err()
    else {
        panic!("too large")
    };
    assert_eq!(size, 40, "the reader's whole size is reported");
    assert_eq!(emu.counters().transcription_requests, 0);
    assert_eq!(
        emu.counters().auth_requests,
        0,
        "not even a token was asked for"
    );
}

/// A file whose size is not known ahead (a pipe) is read only up to the
/// limit, not into memory whole and refused afterwards.
#[cfg(unix)]
#[tokio::test]
async fn a_pipe_over_the_limit_is_refused_too() {
    let emu = common::emulator().await;
    let audio = builder(&emu).max_upload_size(16).build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.wav");
    let made = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let writer = {
        let path = path.clone();
        std::thread::spawn(move || std::fs::write(path, [0u8; 40]).unwrap())
    };
    let Error::UploadTooLarge { size, limit, .. } = audio
        .transcribe_file(&path, TranscriptionOptions::new())
        .await
        .unwrap_err()
    else {
        panic!("too large")
    };
    writer.join().unwrap();
    assert_eq!((size, limit), (40, Some(16)));
    assert_eq!(emu.counters().transcription_requests, 0);
}

#[tokio::test]
async fn a_413_is_the_same_error() {
    let emu = Emulator::builder()
        .max_audio_bytes(32)
        .start()
        .await
        .unwrap();
    let err = audio(&emu)
        .transcribe_bytes("big.wav", vec![b'a'; 64], TranscriptionOptions::new())
        .await
        .unwrap_err();
    match &err {
        Error::UploadTooLarge {
            size: 64,
            limit: None,
            request_id: Some(_),
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("413"), "{err}");
    assert_eq!(err.status(), Some(413));
    assert_eq!(emu.counters().transcription_requests, 1, "not retried");
}

#[tokio::test]
async fn a_rejected_token_is_replaced_and_the_whole_upload_sent_again() {
    let emu = common::emulator().await;
    let audio = audio(&emu);
    audio
        .transcribe_bytes("warm.wav", "warm up", TranscriptionOptions::new())
        .await
        .unwrap();
    emu.revoke_tokens();
    emu.clear_requests();
    let transcript = audio
        .transcribe_bytes("speech.wav", SPEECH, TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, SPEECH);
    let requests = emu.requests();
    assert_eq!(requests.len(), 2);
    assert!(!requests[0].authorized && requests[1].authorized);
    assert_eq!(requests[1].body["file"]["bytes"], SPEECH.len());
    assert_eq!(emu.counters().tokens_issued, 2);
}

#[tokio::test]
async fn retries_send_the_whole_upload_again() {
    let emu = common::emulator().await;
    let audio = audio(&emu);
    emu.inject(Target::Audio, Fault::Status(503), 2);
    let transcript = audio
        .transcribe_bytes("speech.wav", SPEECH, TranscriptionOptions::new())
        .await
        .unwrap();
    assert_eq!(transcript.text, SPEECH);
    let forms = uploads(&emu);
    assert_eq!(forms.len(), 3);
    assert!(forms
        .iter()
        .all(|form| form["file"]["bytes"] == SPEECH.len()
            && form["model"] == DEFAULT_TRANSCRIPTION_MODEL));

    // Until the retries run out: a 503 with the attempts counted.
    emu.inject(Target::Audio, Fault::Status(503), 3);
    let err = audio
        .transcribe_bytes("speech.wav", SPEECH, TranscriptionOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                status: 503,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_slow_server_times_out() {
    let emu = common::emulator().await;
    emu.inject(Target::Audio, Fault::Delay(Duration::from_secs(3)), 1);
    let audio = builder(&emu)
        .request_timeout(Duration::from_millis(300))
        .max_retries(0)
        .build()
        .unwrap();
    let err = audio
        .transcribe_bytes("speech.wav", SPEECH, TranscriptionOptions::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

#[cfg(feature = "blocking")]
#[test]
fn the_blocking_twin() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let emu = runtime.block_on(common::emulator());
    let audio = evolution_langchain::blocking::EvolutionAudio::builder()
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    let from_reader = audio
        .transcribe_reader("a.wav", SPEECH.as_bytes(), TranscriptionOptions::new())
        .unwrap();
    assert_eq!(from_reader.text, SPEECH);
    let from_bytes = audio
        .transcribe_bytes(
            "a.wav",
            SPEECH,
            TranscriptionOptions::new().response_format(TranscriptionFormat::Text),
        )
        .unwrap();
    assert_eq!(from_bytes.text.trim_end(), SPEECH);
}
