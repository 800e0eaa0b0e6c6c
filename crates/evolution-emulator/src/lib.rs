//! A local, faithful stand-in for Cloud.ru's IAM token service and its OpenAI-compatible
//! Foundation Models API, for tests, the CLI and offline work.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use evolution_emulator::{Emulator, Fault, Target};
//!
//! let emulator = Emulator::start().await?;
//! let http = reqwest::Client::builder().no_proxy().build()?;
//!
//! let token: serde_json::Value = http
//!     .post(emulator.auth_url())
//!     .json(&serde_json::json!({"keyId": emulator.key_id(), "secret": emulator.secret()}))
//!     .send()
//!     .await?
//!     .error_for_status()?
//!     .json()
//!     .await?;
//! assert_eq!(token["expires_in"], 3600);
//!
//! // The next chat request fails, as the real service sometimes does.
//! emulator.inject(Target::Chat, Fault::Status(503), 1);
//! assert_eq!(emulator.counters().tokens_issued, 1);
//! emulator.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! What it serves:
//!
//! - `POST /api/v1/auth/token` (IAM): `{"keyId","secret"}` → `{"access_token","expires_in"}`,
//!   `401` for wrong credentials, `403` for a key without rights, `400` for a malformed body.
//! - `POST /v1/chat/completions`, `GET /v1/models`, `POST /v1/embeddings`,
//!   `POST /v1/rerank` (word-overlap scores), `POST /v1/audio/transcriptions` (Whisper's
//!   multipart upload; the transcript of a UTF-8 file is its text, in `json`, `text`,
//!   `verbose_json`, `srt` or `vtt`), behind a bearer
//!   check against the tokens it issued (expiry on the real clock, revocation on demand)
//!   or Foundation Models API keys sent as they are
//!   ([`EmulatorBuilder::api_key`]); the check can be switched off
//!   ([`EmulatorBuilder::require_auth`]), as on a model run with auth off.
//!   Chat answers come from a deterministic scripted responder (it echoes the last user
//!   message, calls a tool the prompt names or `tool_choice` forces, reports tool results,
//!   answers a `response_format` `json_schema` with a JSON document that fits it; a
//!   server without structured output is one setting away,
//!   [`EmulatorBuilder::refuse_json_schema`]), streamed as SSE shaped
//!   like llama.cpp's and OpenAI's; [`REASONING_MODEL`] thinks first, in
//!   `reasoning_content` (or `reasoning`); or, in upstream mode, answers come from a real
//!   server it forwards to.
//! - Rate limits like the service's, per key ([`EmulatorBuilder::requests_per_minute`],
//!   [`EmulatorBuilder::tokens_per_minute`]): token buckets that allow a burst up to the
//!   per-minute limit, then the sustained rate; a request over the limit gets `429` with
//!   `Retry-After` and OpenAI's `x-ratelimit-*` headers. A fixed answer latency
//!   ([`EmulatorBuilder::latency`]) models a server that takes its time.
//! - Every `/v1` response carries `x-request-id`: the caller's `X-Request-ID` echoed,
//!   or a generated `emu-<n>`.
//! - `/_emulator/*`: JSON control routes (counters, faults, revocation, request log,
//!   rate-limit buckets) for an emulator running in another process.
//!
//! Beside it, for a fleet of clients sharing limits and a token through Redis,
//! [`RedisServer`] starts a throwaway `redis-server` on a free loopback port.
//!
//! Faults ([`Fault`]) can be queued per route family ([`Target`]) to rehearse a client's
//! error handling: error statuses, delays, garbage bodies, dropped connections and
//! streams cut short, and a hostile server's tricks: redirects, bodies that stall or
//! never end, oversized answers, odd access tokens, answers without content, structured
//! output refused or off its schema.

mod admin;
mod args;
mod audio;
mod builder;
mod chat;
mod cost;
mod embeddings;
mod extract;
mod fault;
mod gate;
mod handle;
mod hostile;
mod iam;
mod limiter;
mod models;
mod redis_server;
mod reply;
mod request_id;
mod rerank;
mod script;
mod server;
mod state;
mod structured;
mod transcript;
mod upload;
mod upstream;
mod util;

use std::io;

pub use args::EmulatorArgs;
pub use builder::EmulatorBuilder;
pub use fault::{Fault, FaultSpec, ParseFaultError, Target};
pub use handle::EmulatorHandle;
pub use redis_server::RedisServer;
pub use state::{Counters, RecordedRequest};

/// The key id the emulator accepts unless told otherwise.
pub const DEFAULT_KEY_ID: &str = "emulator-key-id";
/// The secret the emulator accepts unless told otherwise.
pub const DEFAULT_SECRET: &str = "emulator-secret";
/// The model requests naming none get, unless [`EmulatorBuilder::models`] says otherwise.
pub const DEFAULT_MODEL: &str = "emulator/echo-1";
/// A model that "thinks" before it answers, as reasoning models served by vLLM do: always
/// listed by `GET /v1/models`, after the configured models.
pub const REASONING_MODEL: &str = "emulator/reasoner-1";
/// The JSON field reasoning goes in by default (vLLM's older name).
pub const DEFAULT_REASONING_FIELD: &str = "reasoning_content";
/// The field names [`EmulatorBuilder::reasoning_field`] accepts.
pub const REASONING_FIELDS: [&str; 2] = ["reasoning_content", "reasoning"];
/// The longest token lifetime the emulator issues: 366 days, in seconds. Longer requests
/// are capped to it (the builder) or refused (`--token-ttl`).
pub const MAX_TOKEN_TTL_SECS: u64 = 31_622_400;
/// How many recent `/v1` requests the log keeps unless told otherwise.
pub const DEFAULT_REQUEST_LOG_LIMIT: usize = 10_000;
/// The largest audio file `POST /v1/audio/transcriptions` accepts unless told otherwise:
/// 25 MiB, OpenAI's limit.
pub const DEFAULT_MAX_AUDIO_BYTES: usize = 26_214_400;

/// Entry point: [`Emulator::start`] with defaults, or [`Emulator::builder`] to configure.
#[derive(Debug, Clone, Copy, Default)]
pub struct Emulator;

impl Emulator {
    /// A builder with every default.
    pub fn builder() -> EmulatorBuilder {
        EmulatorBuilder::default()
    }

    /// Starts an emulator with every default on a free loopback port.
    pub async fn start() -> io::Result<EmulatorHandle> {
        EmulatorBuilder::default().start().await
    }
}

/// The environment a client needs to reach this emulator, one `NAME=value` per line:
/// `EVOLUTION_KEY_ID`, `EVOLUTION_SECRET`, `EVOLUTION_BASE_URL`, `EVOLUTION_TOKEN_URL`,
/// and `EVOLUTION_MODEL` (the default model).
pub fn env_lines(handle: &EmulatorHandle) -> String {
    format!(
        "EVOLUTION_KEY_ID={}\nEVOLUTION_SECRET={}\nEVOLUTION_BASE_URL={}\nEVOLUTION_TOKEN_URL={}\nEVOLUTION_MODEL={}\n",
        handle.key_id(),
        handle.secret(),
        handle.base_url(),
        handle.auth_url(),
        handle.default_model(),
    )
}

/// The environment a client needs to reach this emulator with an API key instead of
/// IAM credentials: `EVOLUTION_API_KEY` (the first configured key), `EVOLUTION_BASE_URL`
/// and `EVOLUTION_MODEL`, one `NAME=value` per line, and no key id or secret (a client
/// given both a key and a key id / secret refuses to start). `None` when no API key is
/// configured.
pub fn env_lines_api_key(handle: &EmulatorHandle) -> Option<String> {
    let key = handle.api_key()?;
    Some(format!(
        "EVOLUTION_API_KEY={key}\nEVOLUTION_BASE_URL={}\nEVOLUTION_MODEL={}\n",
        handle.base_url(),
        handle.default_model(),
    ))
}
