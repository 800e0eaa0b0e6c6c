//! [`EmulatorBuilder`]: an emulator's configuration, checked and started.

use std::io;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::handle::{EmulatorHandle, HandleInner};
use crate::state::{Config, State};
#[cfg(doc)]
use crate::REASONING_MODEL;
use crate::{
    server, upstream, DEFAULT_KEY_ID, DEFAULT_MAX_AUDIO_BYTES, DEFAULT_MODEL,
    DEFAULT_REASONING_FIELD, DEFAULT_REQUEST_LOG_LIMIT, DEFAULT_SECRET, MAX_TOKEN_TTL_SECS,
    REASONING_FIELDS,
};

/// A requested token lifetime as the emulator applies it, in whole seconds: rounded up,
/// at least 1, at most [`MAX_TOKEN_TTL_SECS`]. It is both the `expires_in` reported and
/// the token's real lifetime.
fn effective_ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    secs.clamp(1, MAX_TOKEN_TTL_SECS)
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
    requests_per_minute: u32,
    tokens_per_minute: u32,
    rate_burst: Duration,
    latency: Duration,
    max_audio_bytes: usize,
    refuse_json_schema: bool,
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
            requests_per_minute: 0,
            tokens_per_minute: 0,
            rate_burst: Duration::from_secs(60),
            latency: Duration::ZERO,
            max_audio_bytes: DEFAULT_MAX_AUDIO_BYTES,
            refuse_json_schema: false,
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
    /// `/v1` or equivalent) instead of answering them; auth, rate limits and latency stay
    /// the emulator's, and transcriptions are always answered by the emulator.
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

    /// Limits every key to this many requests per minute, as the service does (0, the
    /// default, is no limit). Each key (an IAM key id, for the tokens issued to it; an API
    /// key; or one shared bucket when auth is off) has a token bucket holding `rpm`
    /// requests, refilled continuously at `rpm / 60` per second: a fresh key can send
    /// `rpm` requests at once, then one every `60 / rpm` seconds. Chat, embeddings, rerank
    /// and transcription requests count; models and IAM do not. A request the bucket
    /// cannot pay is answered `429` with `Retry-After` and `x-ratelimit-*` headers, and
    /// costs nothing.
    pub fn requests_per_minute(mut self, rpm: u32) -> Self {
        self.requests_per_minute = rpm;
        self
    }

    /// Limits every key to this many tokens per minute, a token bucket like
    /// [`EmulatorBuilder::requests_per_minute`]'s (0, the default, is no limit). A
    /// request costs its estimated prompt tokens (characters / 4, rounded up) plus
    /// `max_completion_tokens` / `max_tokens` (16 when a chat request names neither, times
    /// `n`); a transcription costs its transcript's words. A request costing more than the
    /// whole limit is refused `429` with a message saying it can never fit.
    pub fn tokens_per_minute(mut self, tpm: u32) -> Self {
        self.tokens_per_minute = tpm;
        self
    }

    /// How much of the sustained rate a key's buckets hold (default 60 s: the whole
    /// per-minute limit, so a fresh key may send a minute's worth at once). A shorter
    /// burst models a service that enforces its per-minute limits over shorter windows,
    /// as large providers do: with `rpm` 600 and a burst of 1 s, a key may send 10
    /// requests at once, then one every 100 ms. At least one request (or token) always fits.
    /// A request costing more tokens than the bucket holds, but no more than the
    /// per-minute limit, is let in once the bucket is full and leaves it in debt, which
    /// refills at the sustained rate before anything else fits.
    pub fn rate_burst(mut self, burst: Duration) -> Self {
        self.rate_burst = burst;
        self
    }

    /// How long every chat, embeddings, rerank and transcription answer waits before it
    /// is sent (a streamed chat answer: its head), like a server that takes this long to
    /// answer; default zero. Unlike [`EmulatorBuilder::word_delay`] it does not depend on
    /// the answer's length. Requests waiting it out count as in flight.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The largest audio file `POST /v1/audio/transcriptions` accepts, in bytes
    /// (default [`DEFAULT_MAX_AUDIO_BYTES`], 25 MiB); a larger file is answered `413`.
    pub fn max_audio_bytes(mut self, bytes: usize) -> Self {
        self.max_audio_bytes = bytes;
        self
    }

    /// Answer every chat request whose `response_format` is `json_schema` with `400`
    /// `{"error":{"message":"response_format json_schema is not supported","type":
    /// "invalid_request_error","code":"invalid_request","param":"response_format"}}`, as a
    /// server without structured output does (default false: such requests get a JSON
    /// document that fits the schema). Forced tool calls are still served. Upstream mode
    /// forwards the request instead. [`Fault::RefuseJsonSchema`](crate::Fault::RefuseJsonSchema)
    /// refuses a number of requests only.
    pub fn refuse_json_schema(mut self, refuse: bool) -> Self {
        self.refuse_json_schema = refuse;
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
            requests_per_minute: self.requests_per_minute,
            tokens_per_minute: self.tokens_per_minute,
            rate_burst: self.rate_burst,
            latency: self.latency,
            max_audio_bytes: self.max_audio_bytes,
            refuse_json_schema: self.refuse_json_schema,
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
