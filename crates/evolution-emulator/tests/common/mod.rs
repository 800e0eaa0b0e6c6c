//! Helpers shared by the integration tests: a loopback HTTP client with time limits and
//! shortcuts for the emulator's endpoints.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use evolution_emulator::EmulatorHandle;
use futures::StreamExt;
use serde_json::{json, Value};

/// A client with its own connection pool, for tests about connection reuse. Every
/// request is bounded, so a hang fails the test instead of stalling CI.
pub fn pooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

/// A shared client (building one costs tens of milliseconds). It keeps no idle
/// connections: those would belong to the runtime of the test that opened them, and
/// every `#[tokio::test]` has its own runtime.
pub fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(15))
                .build()
                .expect("client")
        })
        .clone()
}

/// The emulator's own credentials as an IAM request body.
pub fn credentials(emu: &EmulatorHandle) -> Value {
    json!({"keyId": emu.key_id(), "secret": emu.secret()})
}

/// The whole IAM reply for these credentials (it must be a success).
pub async fn token_reply(auth_url: &str, key_id: &str, secret: &str) -> Value {
    client()
        .post(auth_url)
        .json(&json!({"keyId": key_id, "secret": secret}))
        .send()
        .await
        .expect("auth request")
        .error_for_status()
        .expect("auth status")
        .json()
        .await
        .expect("auth json")
}

/// A fresh token from the emulator's IAM endpoint.
pub async fn token(emu: &EmulatorHandle) -> String {
    token_reply(&emu.auth_url(), emu.key_id(), emu.secret()).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// POSTs `body` to `{base_url}{path}` with a bearer token.
pub async fn post(emu: &EmulatorHandle, token: &str, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", emu.base_url()))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// A non-streamed chat completion; returns status and JSON body.
pub async fn chat(emu: &EmulatorHandle, token: &str, body: Value) -> (u16, Value) {
    let response = post(emu, token, "/chat/completions", body).await;
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// A chat request with one user message.
pub fn user(text: &str) -> Value {
    json!({"model": "test-model", "messages": [{"role": "user", "content": text}]})
}

/// The same chat body with `"stream": true`.
pub fn streamed(text: &str) -> Value {
    let mut body = user(text);
    body["stream"] = json!(true);
    body
}

/// GETs `url` (with a bearer token when given) and parses the JSON reply.
pub async fn get_json(url: impl reqwest::IntoUrl, token: Option<&str>) -> Value {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("JSON reply")
}

/// One SSE event's `data:` payload and when it arrived.
#[derive(Debug, Clone)]
pub struct Event {
    pub data: String,
    pub at: Instant,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("bad chunk {:?}: {e}", self.data))
    }
}

/// Reads an SSE body event by event. The `Err` carries the events seen before the body
/// failed, for tests of streams cut short.
pub async fn read_sse(response: reqwest::Response) -> Result<Vec<Event>, (Vec<Event>, String)> {
    let mut events = Vec::new();
    let mut buf = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => return Err((events, e.to_string())),
        };
        buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        while let Some(end) = buf.find("\n\n") {
            let raw: String = buf.drain(..end + 2).collect();
            let data = raw
                .trim_end()
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data line: {raw:?}"))
                .to_owned();
            events.push(Event {
                data,
                at: Instant::now(),
            });
        }
    }
    assert!(
        buf.is_empty(),
        "trailing bytes after the last event: {buf:?}"
    );
    Ok(events)
}

/// The concatenated `delta.content` of choice `index`.
pub fn joined_content(events: &[Event], index: u64) -> String {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(Event::json)
        .flat_map(|chunk| chunk["choices"].as_array().cloned().unwrap_or_default())
        .filter(|choice| choice["index"] == index)
        .filter_map(|choice| choice["delta"]["content"].as_str().map(str::to_owned))
        .collect()
}

/// A `multipart/form-data` body built by hand, byte for byte, so tests control exactly
/// what the emulator receives (file parts with any bytes, repeated fields, broken framing).
#[derive(Debug, Clone)]
pub struct Form {
    boundary: String,
    body: Vec<u8>,
}

impl Default for Form {
    fn default() -> Self {
        Form {
            boundary: "----emulator-test-boundary-7MA4YWxkTrZu0gW".to_owned(),
            body: Vec::new(),
        }
    }
}

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Form::default()
    }

    /// A text field.
    pub fn text(mut self, name: &str, value: &str) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// A file part.
    pub fn file(mut self, name: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Self {
        let head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
             Content-Type: {content_type}\r\n\r\n",
            self.boundary
        );
        self.body.extend_from_slice(head.as_bytes());
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The `Content-Type` header value.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The complete body, closing boundary included.
    pub fn body(&self) -> Vec<u8> {
        let mut body = self.body.clone();
        body.extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        body
    }

    /// The body without its closing boundary: broken framing.
    pub fn unterminated_body(&self) -> Vec<u8> {
        self.body.clone()
    }
}

/// POSTs `form` to `/v1/audio/transcriptions`, with a bearer when given.
pub async fn transcribe(
    emu: &EmulatorHandle,
    token: Option<&str>,
    form: &Form,
) -> reqwest::Response {
    let mut request = client()
        .post(format!("{}/audio/transcriptions", emu.base_url()))
        .header("content-type", form.content_type())
        .body(form.body());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("transcription request")
}
