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
//!   `POST /v1/rerank` (word-overlap scores), behind a bearer
//!   check against the tokens it issued (expiry on the real clock, revocation on demand)
//!   or Foundation Models API keys sent as they are
//!   ([`EmulatorBuilder::api_key`]); the check can be switched off
//!   ([`EmulatorBuilder::require_auth`]), as on a model run with auth off.
//!   Chat answers come from a deterministic scripted responder (it echoes the last user
//!   message, calls a tool the prompt names, reports tool results), streamed as SSE shaped
//!   like llama.cpp's and OpenAI's; [`REASONING_MODEL`] thinks first, in
//!   `reasoning_content` (or `reasoning`); or, in upstream mode, answers come from a real
//!   server it forwards to.
//! - Every `/v1` response carries `x-request-id`: the caller's `X-Request-ID` echoed,
//!   or a generated `emu-<n>`.
//! - `/_emulator/*`: JSON control routes (counters, faults, revocation, request log) for
//!   an emulator running in another process.
//!
//! Faults ([`Fault`]) can be queued per route family ([`Target`]) to rehearse a client's
//! error handling: error statuses, delays, garbage bodies, dropped connections and
//! streams cut short, and a hostile server's tricks: redirects, bodies that stall or
//! never end, oversized answers, odd access tokens, answers without content.

mod admin;
mod args;
mod chat;
mod embeddings;
mod extract;
mod fault;
mod gate;
mod hostile;
mod iam;
mod models;
mod reply;
mod request_id;
mod rerank;
mod script;
mod server;
mod state;
mod upstream;
mod util;

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use args::EmulatorArgs;
pub use fault::{Fault, FaultSpec, ParseFaultError, Target};
pub use state::{Counters, RecordedRequest};

use state::{Config, State};

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

/// A requested token lifetime as the emulator applies it, in whole seconds: rounded up,
/// at least 1, at most [`MAX_TOKEN_TTL_SECS`]. It is both the `expires_in` reported and
/// the token's real lifetime.
fn effective_ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    secs.clamp(1, MAX_TOKEN_TTL_SECS)
}

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

/// Configures an emulator; every setter takes and returns the builder by value.
#[derive(Debug, Clone)]
pub struct EmulatorBuilder {
    credentials: (String, String),
    extra_credentials: Vec<(String, String)>,
    forbidden: Vec<(String, String)>,
    api_keys: Vec<String>,
    require_auth: bool,
    token_ttl: Duration,
    omit_expires_in: bool,
    word_delay: Duration,
    upstream: Option<String>,
    upstream_api_key: Option<String>,
    models: Vec<String>,
    reasoning_field: String,
    embedding_dimensions: usize,
    request_log_limit: usize,
    port: u16,
}

impl Default for EmulatorBuilder {
    fn default() -> Self {
        EmulatorBuilder {
            credentials: (DEFAULT_KEY_ID.to_owned(), DEFAULT_SECRET.to_owned()),
            extra_credentials: Vec::new(),
            forbidden: Vec::new(),
            api_keys: Vec::new(),
            require_auth: true,
            token_ttl: Duration::from_secs(3600),
            omit_expires_in: false,
            word_delay: Duration::ZERO,
            upstream: None,
            upstream_api_key: None,
            models: vec![DEFAULT_MODEL.to_owned()],
            reasoning_field: DEFAULT_REASONING_FIELD.to_owned(),
            embedding_dimensions: 8,
            request_log_limit: DEFAULT_REQUEST_LOG_LIMIT,
            port: 0,
        }
    }
}

impl EmulatorBuilder {
    /// The primary valid key pair, reported by [`EmulatorHandle::key_id`] and
    /// [`EmulatorHandle::secret`]. Default `emulator-key-id` / `emulator-secret`.
    pub fn credentials(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.credentials = (key_id.into(), secret.into());
        self
    }

    /// Another valid key pair, e.g. a backup key for fallback tests.
    pub fn add_credentials(mut self, key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        self.extra_credentials.push((key_id.into(), secret.into()));
        self
    }

    /// A key pair that is recognised but has no rights: the token service answers `403`.
    pub fn forbidden_credentials(
        mut self,
        key_id: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        self.forbidden.push((key_id.into(), secret.into()));
        self
    }

    /// Accepts `key` as a Foundation Models API key: `/v1` requests sending
    /// `Authorization: Bearer <key>` are served without any token exchange. May be called
    /// several times; [`EmulatorHandle::api_key`] reports the first. API keys are never
    /// revoked by [`EmulatorHandle::revoke_tokens`]. An empty key makes
    /// [`EmulatorBuilder::start`] fail.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// Whether `/v1` routes check the bearer at all (default true). With `false` they
    /// serve requests with or without an `Authorization` header, valid or not, like a
    /// dedicated model run with auth switched off.
    pub fn require_auth(mut self, require: bool) -> Self {
        self.require_auth = require;
        self
    }

    /// How long issued tokens stay valid (default 3600 s). The lifetime is applied in whole
    /// seconds, rounded up: `expires_in` reports it, and the token stays valid for exactly
    /// that many seconds from issue, never less (so 1.5 s gives `expires_in: 2` and a
    /// token valid for 2 s). [`Duration::ZERO`] and other sub-second values mean the 1 s
    /// minimum; anything above [`MAX_TOKEN_TTL_SECS`] (366 days) is capped to it.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// Answer token requests without `expires_in`, as some IAM deployments do.
    pub fn omit_expires_in(mut self, omit: bool) -> Self {
        self.omit_expires_in = omit;
        self
    }

    /// Pause before each streamed word; non-streamed answers wait words × delay in total.
    /// Default zero.
    pub fn word_delay(mut self, delay: Duration) -> Self {
        self.word_delay = delay;
        self
    }

    /// Forward chat, models, embeddings and rerank to this OpenAI-compatible base URL (ending in
    /// `/v1` or equivalent) instead of answering them; auth stays the emulator's.
    pub fn upstream(mut self, base_url: impl Into<String>) -> Self {
        self.upstream = Some(base_url.into());
        self
    }

    /// Bearer token sent to the upstream (none by default).
    pub fn upstream_api_key(mut self, key: impl Into<String>) -> Self {
        self.upstream_api_key = Some(key.into());
        self
    }

    /// The models `GET /v1/models` lists (default `["emulator/echo-1"]`), followed by
    /// [`REASONING_MODEL`] unless it is among them; the first is used when a request
    /// names none ([`DEFAULT_MODEL`] if the list is empty).
    pub fn models(mut self, models: Vec<String>) -> Self {
        self.models = models;
        self
    }

    /// The JSON field the reasoning model's thinking goes in: `"reasoning_content"`
    /// (the default) or `"reasoning"` (newer vLLM), in `message` and in stream deltas.
    /// Any other name makes [`EmulatorBuilder::start`] fail.
    pub fn reasoning_field(mut self, name: impl Into<String>) -> Self {
        self.reasoning_field = name.into();
        self
    }

    /// Length of embedding vectors (default 8).
    pub fn embedding_dimensions(mut self, dimensions: usize) -> Self {
        self.embedding_dimensions = dimensions;
        self
    }

    /// How many of the most recent `/v1` requests [`EmulatorHandle::requests`] (and
    /// `GET /_emulator/requests`) keep; older ones are dropped as new ones arrive, so a
    /// long-running emulator's memory stays bounded. Default
    /// [`DEFAULT_REQUEST_LOG_LIMIT`] (10,000); 0 records nothing. The counters are exact
    /// whatever the limit.
    pub fn request_log_limit(mut self, limit: usize) -> Self {
        self.request_log_limit = limit;
        self
    }

    /// The port to listen on; 0 (the default) picks a free one. Always on 127.0.0.1.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Binds the port and starts serving on the current tokio runtime.
    pub async fn start(self) -> io::Result<EmulatorHandle> {
        let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
        if self.embedding_dimensions == 0 {
            return Err(invalid("embedding dimensions must be at least 1".into()));
        }
        if !REASONING_FIELDS.contains(&self.reasoning_field.as_str()) {
            return Err(invalid(format!(
                "reasoning field {:?} must be one of {}",
                self.reasoning_field,
                REASONING_FIELDS.join(", ")
            )));
        }
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(invalid("an API key must not be empty".into()));
        }
        let upstream_client = match &self.upstream {
            None => None,
            Some(raw) => {
                let url = reqwest::Url::parse(raw)
                    .map_err(|e| invalid(format!("invalid upstream URL {raw:?}: {e}")))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(invalid(format!(
                        "upstream URL {raw:?} must be http or https"
                    )));
                }
                Some(upstream::client(&url).map_err(io::Error::other)?)
            }
        };

        let mut credentials = vec![self.credentials];
        credentials.extend(self.extra_credentials);
        let config = Config {
            credentials,
            forbidden: self.forbidden,
            api_keys: self.api_keys,
            require_auth: self.require_auth,
            token_ttl_secs: effective_ttl_secs(self.token_ttl),
            omit_expires_in: self.omit_expires_in,
            word_delay: self.word_delay,
            upstream: self.upstream,
            upstream_api_key: self.upstream_api_key,
            models: self.models,
            reasoning_field: self.reasoning_field,
            embedding_dimensions: self.embedding_dimensions,
            request_log_limit: self.request_log_limit,
        };
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let state = Arc::new(State::new(config, upstream_client, shutdown.clone()));
        let task = tokio::spawn(server::run(listener, Arc::clone(&state), shutdown.clone()));
        tracing::info!(%addr, "evolution emulator listening");
        Ok(EmulatorHandle {
            inner: Arc::new(HandleInner {
                addr,
                state,
                shutdown,
                task: Mutex::new(Some(task)),
            }),
        })
    }
}

struct HandleInner {
    addr: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Controls a running emulator. Clones share it; dropping them does not stop it,
/// [`EmulatorHandle::shutdown`] does.
#[derive(Clone)]
pub struct EmulatorHandle {
    inner: Arc<HandleInner>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.inner.addr)
            .field("upstream", &self.inner.state.config.upstream)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The IAM token endpoint: `{url}/api/v1/auth/token`.
    pub fn auth_url(&self) -> String {
        format!("{}/api/v1/auth/token", self.url())
    }

    /// The OpenAI-compatible base URL: `{url}/v1`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// The primary valid key id.
    pub fn key_id(&self) -> &str {
        &self.inner.state.config.credentials[0].0
    }

    /// The primary valid secret.
    pub fn secret(&self) -> &str {
        &self.inner.state.config.credentials[0].1
    }

    /// The first API key configured with [`EmulatorBuilder::api_key`], if any.
    pub fn api_key(&self) -> Option<&str> {
        self.inner.state.config.api_keys.first().map(String::as_str)
    }

    /// The first configured model, used when a request names none.
    pub fn default_model(&self) -> &str {
        self.inner.state.config.default_model()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.inner.state.counters()
    }

    /// Zeroes the counters; `in_flight` keeps counting live requests and the peak
    /// restarts from it.
    pub fn reset_counters(&self) {
        self.inner.state.reset_counters();
    }

    /// Invalidates every token issued so far: using one gets `401`.
    pub fn revoke_tokens(&self) {
        self.inner.state.revoke_tokens();
    }

    /// Queues `fault` for the next `times` requests to `target`. Requests to a `/v1`
    /// route take from their own queue first, then from [`Target::Api`]'s. The fault is
    /// stored once with its remaining count, so any `times` (even `usize::MAX`, in effect
    /// "until cleared") costs the same memory; `times == 0` queues nothing.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        self.inner.state.inject(target, fault, times);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.inner.state.clear_faults();
    }

    /// The requests to `/v1/*` so far, in arrival order: the most recent
    /// [`EmulatorBuilder::request_log_limit`] of them (default 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.state.requests()
    }

    /// The most recent request to `/v1/*`.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.state.last_request()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.inner.state.clear_requests();
    }

    /// Stops accepting, lets open responses finish for up to a second, and returns when
    /// the server has stopped. Later calls return at once.
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let task = self
            .inner
            .task
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
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
/// IAM credentials: `EVOLUTION_API_KEY` (the first configured key) and
/// `EVOLUTION_BASE_URL`, one `NAME=value` per line, and nothing else (a client given both
/// a key and a key id / secret refuses to start). `None` when no API key is configured.
pub fn env_lines_api_key(handle: &EmulatorHandle) -> Option<String> {
    let key = handle.api_key()?;
    Some(format!(
        "EVOLUTION_API_KEY={key}\nEVOLUTION_BASE_URL={}\n",
        handle.base_url()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ttls_are_whole_seconds_within_bounds() {
        assert_eq!(effective_ttl_secs(Duration::from_secs(3600)), 3600);
        assert_eq!(effective_ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(effective_ttl_secs(Duration::from_millis(10)), 1);
        assert_eq!(effective_ttl_secs(Duration::ZERO), 1);
        assert_eq!(
            effective_ttl_secs(Duration::from_secs(MAX_TOKEN_TTL_SECS)),
            MAX_TOKEN_TTL_SECS
        );
        assert_eq!(
            effective_ttl_secs(Duration::from_secs(MAX_TOKEN_TTL_SECS + 1)),
            MAX_TOKEN_TTL_SECS
        );
        assert_eq!(effective_ttl_secs(Duration::MAX), MAX_TOKEN_TTL_SECS);
    }
}
