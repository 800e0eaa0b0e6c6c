//! `POST /v1/audio/transcriptions`: multipart uploads, every response format, errors,
//! size limits, faults, the request log and rate limits.

mod common;

use std::time::{Duration, Instant};

use common::{client, token, transcribe, Form};
use evolution_emulator::{Emulator, EmulatorHandle, Fault, FaultSpec, Target};
use serde_json::{json, Value};

const SPEECH: &str = "  Hello world. This is a test of the emulator.\n";

fn speech_form() -> Form {
    Form::new()
        .file("file", "speech.txt", "text/plain", SPEECH.as_bytes())
        .text("model", "openai/whisper-large-v3")
}

async fn json_reply(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

fn content_type(response: &reqwest::Response) -> String {
    response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn transcribes_text_uploads_as_json_by_default() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("application/json"));
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    // 9 words at 0.5 s each: 4.5 s, reported as 5 whole seconds.
    assert_eq!(
        body,
        json!({
            "text": "Hello world. This is a test of the emulator.",
            "usage": {"type": "duration", "seconds": 5}
        })
    );
    let form = speech_form().text("response_format", "json");
    let (_, again) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
    assert_eq!(again, body);
    assert_eq!(emu.counters().transcription_requests, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn binary_audio_gets_a_deterministic_transcript() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let audio: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    let form = |bytes: &[u8]| {
        Form::new()
            .file("file", "clip.wav", "audio/wav", bytes)
            .text("model", "openai/whisper-large-v3")
    };
    let (status, first) = json_reply(transcribe(&emu, Some(&token), &form(&audio)).await).await;
    assert_eq!(status, 200);
    let text = first["text"].as_str().unwrap();
    assert!(
        text.starts_with("audio of 1000 bytes, fingerprint "),
        "{text}"
    );
    let other = Emulator::start().await.unwrap();
    let other_token = common::token(&other).await;
    let (_, second) = json_reply(transcribe(&other, Some(&other_token), &form(&audio)).await).await;
    assert_eq!(
        second, first,
        "same bytes, same transcript, in any emulator"
    );
    let mut changed = audio.clone();
    changed[500] ^= 1;
    let (_, third) = json_reply(transcribe(&emu, Some(&token), &form(&changed)).await).await;
    assert_ne!(third["text"], first["text"]);
    emu.shutdown().await;
    other.shutdown().await;
}

#[tokio::test]
async fn text_srt_and_vtt_formats() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    let response = transcribe(
        &emu,
        Some(&token),
        &speech_form().text("response_format", "text"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(content_type(&response).starts_with("text/plain"));
    assert_eq!(
        response.text().await.unwrap(),
        "Hello world. This is a test of the emulator.\n"
    );

    let response = transcribe(
        &emu,
        Some(&token),
        &speech_form().text("response_format", "srt"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "1\n00:00:00,000 --> 00:00:01,000\nHello world.\n\n\
         2\n00:00:01,000 --> 00:00:04,500\nThis is a test of the emulator.\n\n"
    );

    let response = transcribe(
        &emu,
        Some(&token),
        &speech_form().text("response_format", "vtt"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.text().await.unwrap(),
        "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello world.\n\n\
         00:00:01.000 --> 00:00:04.500\nThis is a test of the emulator.\n\n"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn verbose_json_has_segments_and_words_when_asked() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let form = speech_form()
        .text("response_format", "verbose_json")
        .text("language", "ru")
        .text("temperature", "0.2")
        .text("prompt", "ignored context");
    let (status, body) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["task"], "transcribe");
    assert_eq!(body["language"], "ru");
    assert_eq!(body["duration"], 4.5);
    assert_eq!(body["text"], "Hello world. This is a test of the emulator.");
    assert_eq!(body["usage"], json!({"type": "duration", "seconds": 5}));
    let segments = body["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 2);
    assert_eq!(segments[0]["id"], 0);
    assert_eq!(segments[0]["start"], 0.0);
    assert_eq!(segments[0]["end"], 1.0);
    assert_eq!(segments[0]["text"], "Hello world.");
    assert_eq!(segments[1]["id"], 1);
    assert_eq!(segments[1]["start"], 1.0);
    assert_eq!(segments[1]["end"], 4.5);
    assert_eq!(segments[1]["temperature"], 0.2);
    assert!(body.get("words").is_none(), "words only when asked");

    let form = speech_form()
        .text("response_format", "verbose_json")
        .text("timestamp_granularities[]", "word")
        .text("timestamp_granularities[]", "segment");
    let (status, body) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
    assert_eq!(status, 200);
    assert_eq!(body["language"], "en");
    let words = body["words"].as_array().unwrap();
    assert_eq!(words.len(), 9);
    assert_eq!(words[0], json!({"word": "Hello", "start": 0.0, "end": 0.5}));
    assert_eq!(
        words[8],
        json!({"word": "emulator.", "start": 4.0, "end": 4.5})
    );
    assert_eq!(body["segments"].as_array().unwrap().len(), 2);

    // Long speech without sentence ends is cut every 12 words.
    let long: String = (1..=30).map(|i| format!("w{i} ")).collect();
    let form = Form::new()
        .file("file", "long.txt", "text/plain", long.as_bytes())
        .text("model", "m")
        .text("response_format", "verbose_json");
    let (_, body) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
    let lengths: Vec<usize> = body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap().split(' ').count())
        .collect();
    assert_eq!(lengths, [12, 12, 6]);
    assert_eq!(body["segments"][2]["end"], 15.0);
    emu.shutdown().await;
}

#[tokio::test]
async fn malformed_forms_are_400_naming_the_field() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let text_file = |form: Form| form.file("file", "a.txt", "text/plain", b"hi");
    let cases: Vec<(Form, &str, &str)> = vec![
        (
            Form::new().text("model", "m"),
            "file",
            "missing required field 'file'",
        ),
        (
            Form::new().text("file", "not a file").text("model", "m"),
            "file",
            "must be a file upload",
        ),
        (
            text_file(Form::new()),
            "model",
            "missing required field 'model'",
        ),
        (
            text_file(Form::new().text("model", "  ")),
            "model",
            "'model'",
        ),
        (
            text_file(Form::new().text("model", "m")).file("file", "b.txt", "text/plain", b"again"),
            "file",
            "only one 'file'",
        ),
        (
            text_file(Form::new().text("model", "m")).text("response_format", "xml"),
            "response_format",
            "json, text, verbose_json, srt, vtt",
        ),
        (
            text_file(Form::new().text("model", "m")).text("temperature", "1.5"),
            "temperature",
            "between 0 and 1",
        ),
        (
            text_file(Form::new().text("model", "m")).text("timestamp_granularities[]", "word"),
            "timestamp_granularities[]",
            "verbose_json",
        ),
        (
            text_file(Form::new().text("model", "m"))
                .text("response_format", "verbose_json")
                .text("timestamp_granularities[]", "char"),
            "timestamp_granularities[]",
            "\"char\"",
        ),
    ];
    for (form, param, needle) in cases {
        let (status, body) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
        assert_eq!(status, 400, "{needle}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], param, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    // A body that is not multipart at all.
    let response = client()
        .post(format!("{}/audio/transcriptions", emu.base_url()))
        .bearer_auth(&token)
        .json(&json!({"model": "m", "file": "base64?"}))
        .send()
        .await
        .unwrap();
    let (status, body) = json_reply(response).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("multipart/form-data"), "{message}");
    assert_eq!(emu.last_request().unwrap().body["model"], "m");

    // Broken framing: no closing boundary.
    let form = speech_form();
    let response = client()
        .post(format!("{}/audio/transcriptions", emu.base_url()))
        .bearer_auth(&token)
        .header("content-type", form.content_type())
        .body(form.unterminated_body())
        .send()
        .await
        .unwrap();
    let (status, body) = json_reply(response).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed multipart"),
        "{body}"
    );
    emu.shutdown().await;
}

/// Sends raw bytes on a new connection and returns what comes back within a few
/// seconds (the emulator closes a connection whose request body it did not read).
async fn raw_exchange(emu: &EmulatorHandle, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(emu.addr()).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

async fn upload_of(emu: &EmulatorHandle, token: &str, size: usize) -> reqwest::Response {
    let form = Form::new().text("model", "m").file(
        "file",
        "big.bin",
        "application/octet-stream",
        &vec![0xff; size],
    );
    transcribe(emu, Some(token), &form).await
}

#[tokio::test]
async fn files_over_the_limit_are_413() {
    let emu = Emulator::builder()
        .max_audio_bytes(1000)
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    let (status, body) = json_reply(upload_of(&emu, &token, 1000).await).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["text"].as_str().unwrap()[..20],
        *"audio of 1000 bytes,"
    );

    let (status, body) = json_reply(upload_of(&emu, &token, 1001).await).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["code"], "payload_too_large");
    assert_eq!(body["error"]["param"], "file");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1001 bytes"), "{message}");
    assert!(message.contains("limit of 1000 bytes"), "{message}");

    // Well over the limit: read to its end and discarded, then a clean 413.
    let (status, body) = json_reply(upload_of(&emu, &token, 500_000).await).await;
    assert_eq!(status, 413);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("'file' is 500000 bytes"), "{message}");
    // The log records the too-large request without any file.
    assert_eq!(emu.last_request().unwrap().body, json!({"model": "m"}));

    // Declared larger than the emulator would ever read: answered at once.
    let form = Form::new().text("model", "m");
    let head = format!(
        "POST /v1/audio/transcriptions HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {token}\r\n\
         content-type: {}\r\ncontent-length: 1000000000\r\n\r\n",
        emu.addr(),
        form.content_type()
    );
    let reply = raw_exchange(&emu, head.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("request body exceeds"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");
    assert_eq!(emu.counters().transcription_requests, 4);
    emu.shutdown().await;
}

#[tokio::test]
async fn the_default_limit_is_25_mib_not_axums_2_mb() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;
    let limit = evolution_emulator::DEFAULT_MAX_AUDIO_BYTES;
    assert_eq!(limit, 26_214_400);
    let (status, body) = json_reply(upload_of(&emu, &token, limit).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["text"]
        .as_str()
        .unwrap()
        .starts_with("audio of 26214400 bytes"));
    let (status, body) = json_reply(upload_of(&emu, &token, limit + 1).await).await;
    assert_eq!(status, 413);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("26214401 bytes"));
    emu.shutdown().await;
}

#[tokio::test]
async fn bearer_checks_request_ids_log_and_counters() {
    let emu = Emulator::builder()
        .api_key("sk-audio")
        .start()
        .await
        .unwrap();
    let (status, body) = json_reply(transcribe(&emu, None, &speech_form()).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let (status, _) = json_reply(transcribe(&emu, Some("bad"), &speech_form()).await).await;
    assert_eq!(status, 401);
    // A bad token is 401 before a bad form is 400.
    let (status, _) = json_reply(transcribe(&emu, Some("bad"), &Form::new()).await).await;
    assert_eq!(status, 401);

    let response = client()
        .post(format!("{}/audio/transcriptions", emu.base_url()))
        .bearer_auth("sk-audio")
        .header("x-request-id", "audio-req-1")
        .header("x-project-id", "proj")
        .header("content-type", speech_form().content_type())
        .body(speech_form().text("language", "en").body())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-request-id"], "audio-req-1");

    let logged = emu.last_request().unwrap();
    assert_eq!(logged.method, "POST");
    assert_eq!(logged.path, "/v1/audio/transcriptions");
    assert_eq!(logged.project_id.as_deref(), Some("proj"));
    assert_eq!(logged.request_id.as_deref(), Some("audio-req-1"));
    assert!(logged.authorized);
    assert_eq!(
        logged.body,
        json!({
            "model": "openai/whisper-large-v3",
            "language": "en",
            "file": {"filename": "speech.txt", "content_type": "text/plain", "bytes": SPEECH.len()}
        })
    );
    assert!(
        !logged.body.to_string().contains("Hello"),
        "never the bytes"
    );

    let c = emu.counters();
    assert_eq!(c.transcription_requests, 4);
    assert_eq!(c.unauthorized, 3);
    assert_eq!(c.api_key_requests, 1);
    assert_eq!((c.in_flight, c.peak_in_flight), (0, 1));
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_apply_to_the_audio_route() {
    let emu = Emulator::start().await.unwrap();
    let token = token(&emu).await;

    emu.inject(Target::Audio, Fault::StatusRetryAfter(503, 4), 1);
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "4");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "service_unavailable");

    // The text form, as the CLI and the admin route take it.
    let spec: FaultSpec = "audio=status:500x2".parse().unwrap();
    assert_eq!(
        (spec.target, spec.fault.clone(), spec.times),
        (Target::Audio, Fault::Status(500), 2)
    );
    assert_eq!(spec.to_string(), "audio=status:500x2");
    emu.inject(spec.target, spec.fault, spec.times);
    for _ in 0..2 {
        let response = transcribe(&emu, Some(&token), &speech_form()).await;
        assert_eq!(response.status(), 500);
    }
    assert_eq!(
        transcribe(&emu, Some(&token), &speech_form())
            .await
            .status(),
        200
    );

    // `api` faults reach it too, after its own queue.
    emu.inject(Target::Api, Fault::Status(502), 1);
    assert_eq!(
        transcribe(&emu, Some(&token), &speech_form())
            .await
            .status(),
        502
    );

    emu.inject(Target::Audio, Fault::MissingField, 1);
    let (status, body) = json_reply(transcribe(&emu, Some(&token), &speech_form()).await).await;
    assert_eq!(status, 200);
    assert!(body.get("text").is_none(), "{body}");

    emu.inject(Target::Audio, Fault::NotJson, 1);
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert!(response.json::<Value>().await.is_err());

    emu.inject(Target::Audio, Fault::Delay(Duration::from_millis(200)), 1);
    let started = Instant::now();
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert_eq!(response.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(200));

    emu.inject(Target::Audio, Fault::DropConnection, 1);
    let result = client()
        .post(format!("{}/audio/transcriptions", emu.base_url()))
        .bearer_auth(&token)
        .header("content-type", speech_form().content_type())
        .body(speech_form().body())
        .send()
        .await;
    assert!(result.is_err(), "the connection is dropped");

    // A cut body: half the text answer, then the connection aborts.
    emu.inject(Target::Audio, Fault::CutStream(0), 1);
    let response = transcribe(
        &emu,
        Some(&token),
        &speech_form().text("response_format", "text"),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(response.text().await.is_err(), "the body is cut");

    emu.inject(Target::Audio, Fault::Oversize(10_000), 1);
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    let text = response.text().await.unwrap();
    assert!(text.len() > 10_000);
    let body: Value = serde_json::from_str(&text).unwrap();
    assert!(body["text"].as_str().unwrap().len() > 9_000);

    // Faults come before the bearer check, as on every route.
    emu.inject(Target::Audio, Fault::Status(503), 1);
    assert_eq!(
        transcribe(&emu, Some("bad"), &speech_form()).await.status(),
        503
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn rate_limits_and_latency_apply_to_transcriptions() {
    let emu = Emulator::builder()
        .tokens_per_minute(12)
        .latency(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let token = token(&emu).await;
    // The speech has 9 words: 9 tokens of 12.
    let started = Instant::now();
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert!(started.elapsed() >= Duration::from_millis(200), "latency");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ratelimit-remaining-tokens"], "3");
    let response = transcribe(&emu, Some(&token), &speech_form()).await;
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "tokens");
    // 13 words can never fit into 12 a minute.
    let form = Form::new()
        .file(
            "file",
            "long.txt",
            "text/plain",
            "a b c d e f g h i j k l m".as_bytes(),
        )
        .text("model", "m");
    let (status, body) = json_reply(transcribe(&emu, Some(&token), &form).await).await;
    assert_eq!(status, 429);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("can never fit"));
    assert_eq!(emu.counters().rate_limited, 2);
    emu.shutdown().await;
}
