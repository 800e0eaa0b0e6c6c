//! `ClientBuilder`: the one builder of every client in this crate. The
//! connection settings (authentication, URLs, timeouts, retries, limits)
//! and their setters are written once here; each API group adds its own
//! settings `S` (the chat options, an embedding model, …) and its `build`.
//!
//! `M` says what `build` returns: the async client (the default), or with
//! [`Blocking`](crate::flavor::Blocking) the [blocking](crate::blocking)
//! twin. The setters are the same either way.

use std::fmt;
use std::marker::PhantomData;

use crate::config::EnvSettings;
use crate::error::Result;
use crate::flavor::Async;
use crate::transport::connection::Connection;
use crate::transport::Transport;

/// Settings of a client: how to reach and authenticate with the API (the
/// same for every client), and the API group's own settings `S`.
///
/// Used through its aliases: [`EvolutionInferenceBuilder`](crate::EvolutionInferenceBuilder),
/// [`EvolutionEmbeddingsBuilder`](crate::EvolutionEmbeddingsBuilder),
/// [`EvolutionRerankBuilder`](crate::EvolutionRerankBuilder). Methods are
/// named after the settings; `build()` checks them all and returns
/// [`Error::Config`](crate::Error::Config) naming the first one wrong.
#[derive(Clone, Default)]
pub struct ClientBuilder<S, M = Async> {
    pub(crate) connection: Connection,
    pub(crate) settings: S,
    flavor: PhantomData<M>,
}

impl<S, M> ClientBuilder<S, M> {
    /// Same settings, another kind of client.
    #[cfg(feature = "blocking")]
    pub(crate) fn into_flavor<N>(self) -> ClientBuilder<S, N> {
        ClientBuilder {
            connection: self.connection,
            settings: self.settings,
            flavor: PhantomData,
        }
    }

    /// Fills the connection settings not given yet from the environment
    /// (after `.env`), and the group's own through `fill`.
    pub(crate) fn fill_from_env(mut self, fill: impl FnOnce(&mut S, &EnvSettings)) -> Result<Self> {
        let env = EnvSettings::read()?;
        self.connection.fill_from_env(&env)?;
        fill(&mut self.settings, &env);
        Ok(self)
    }

    /// The group's settings and the transport the connection settings
    /// describe (checked; nothing is sent).
    pub(crate) fn into_parts(self) -> Result<(S, Transport)> {
        Ok((self.settings, self.connection.into_transport()?))
    }

    /// The access key id (with [`secret`](Self::secret)), exchanged at
    /// IAM for access tokens that are cached and refreshed.
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.connection.credentials.set_key_id(key_id.into());
        self
    }

    /// The access key secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.connection.credentials.set_secret(secret.into().into());
        self
    }

    /// Key id and secret together.
    pub fn credentials(mut self, credentials: crate::Credentials) -> Self {
        self.connection.credentials = credentials;
        self
    }

    /// A Foundation Models API key, sent as the bearer token as it is (no
    /// IAM exchange). Not together with a key id and secret.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.connection.set_api_key(api_key.into().into());
        self
    }

    /// Where tokens come from, instead of an API key or key id + secret.
    pub fn token_source(self, source: impl crate::TokenSource + 'static) -> Self {
        self.shared_token_source(std::sync::Arc::new(source))
    }

    /// A shared token source, e.g. one `TokenManager` for several clients.
    pub fn shared_token_source(mut self, source: std::sync::Arc<dyn crate::TokenSource>) -> Self {
        self.connection.set_token_source(source);
        self
    }

    /// Sends no `Authorization` header at all: for a dedicated model run
    /// whose authentication is switched off.
    pub fn no_auth(mut self) -> Self {
        self.connection.set_no_auth();
        self
    }

    /// The API base URL (default [`DEFAULT_BASE_URL`](crate::DEFAULT_BASE_URL);
    /// a model run's is `https://<model_run_id>.modelrun.inference.cloud.ru/v1`).
    /// A trailing slash is fine.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.connection.base_url = Some(base_url.into());
        self
    }

    /// The IAM token endpoint (default: Cloud.ru IAM).
    pub fn auth_url(mut self, auth_url: impl Into<String>) -> Self {
        self.connection.auth_url = Some(auth_url.into());
        self
    }

    /// Sent as the `x-project-id` header (only when set).
    pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
        self.connection.project_id = Some(project_id.into());
        self
    }

    /// Timeout of each attempt (default 60 s), body included. For
    /// streams it bounds the wait for the response head (with an error
    /// reply's body) and each further read; see also `stream_deadline`.
    pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.connection.request_timeout = Some(timeout);
        self
    }

    /// Retries after a 408, 5xx, timeout or connection failure (default
    /// 2; 0 sends each request once). A `429` is waited out instead, up to
    /// [`max_rate_limit_wait`](Self::max_rate_limit_wait).
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.connection.max_retries = Some(max_retries);
        self
    }

    /// Timeout of each IAM token request (default 10 s).
    pub fn auth_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.connection.auth_timeout = Some(timeout);
        self
    }

    /// Retries of a failed IAM token request (default 2; 0 sends it once).
    pub fn auth_max_retries(mut self, max_retries: u32) -> Self {
        self.connection.auth_max_retries = Some(max_retries);
        self
    }

    /// The token manager's refresh buffer (default 30 s).
    pub fn refresh_buffer(mut self, buffer: std::time::Duration) -> Self {
        self.connection.refresh_buffer = Some(buffer);
        self
    }

    /// The key's limit of requests per minute (default: none). Set, calls
    /// wait for capacity instead of being sent into a `429`: every request
    /// of this client and its clones (and of clients sharing its transport,
    /// e.g. [`EvolutionEmbeddings::from_inference`](crate::EvolutionEmbeddings::from_inference))
    /// counts, paced at the limit with a burst of half a second's worth.
    /// `EVOLUTION_REQUESTS_PER_MINUTE` in [`from_env`](crate::EvolutionInference::from_env).
    pub fn requests_per_minute(mut self, limit: u32) -> Self {
        self.connection.limits.requests_per_minute = Some(limit);
        self
    }

    /// The key's limit of tokens per minute (default: none), like
    /// [`requests_per_minute`](Self::requests_per_minute). A request is
    /// charged its estimated prompt tokens (a quarter of its characters)
    /// plus `max_tokens` × `n` before it is sent (as providers charge at
    /// admission), and charged the rest when the usage the server reports
    /// is more. `EVOLUTION_TOKENS_PER_MINUTE`.
    pub fn tokens_per_minute(mut self, limit: u32) -> Self {
        self.connection.limits.tokens_per_minute = Some(limit);
        self
    }

    /// How long one call may wait out the provider's rate limit before it
    /// fails with [`Error::RateLimited`](crate::Error::RateLimited) (default
    /// [`DEFAULT_MAX_RATE_LIMIT_WAIT`](crate::DEFAULT_MAX_RATE_LIMIT_WAIT),
    /// five minutes; zero fails at the first `429`). A `429` is not a failed
    /// attempt: it pauses the client for its `Retry-After` and is tried
    /// again, however many times, within this bound; `max_retries` counts
    /// only `5xx`, timeouts and connection failures.
    /// `EVOLUTION_MAX_RATE_LIMIT_WAIT` (seconds).
    pub fn max_rate_limit_wait(mut self, patience: std::time::Duration) -> Self {
        self.connection.max_rate_limit_wait = Some(patience);
        self
    }

    /// Shares this key's rate limits and IAM token with every process using
    /// the same key, through the Redis server at `url`
    /// (`redis://[:password@]host:port[/db]`, `rediss://` for TLS; feature
    /// `redis`; `EVOLUTION_REDIS_URL`). The limiter's state lives there,
    /// updated by an atomic script on the server's clock, so N processes
    /// together stay under [`requests_per_minute`](Self::requests_per_minute)
    /// and [`tokens_per_minute`](Self::tokens_per_minute); and the fleet
    /// makes one IAM request per token lifetime. Nothing secret is in a key
    /// name, and the token is stored encrypted with a key derived from the
    /// secret. While Redis cannot answer, calls go on with this process's
    /// own limiter and token cache (one warning), and nothing is lost.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.connection.redis_url = Some(url.into());
        self
    }

    /// Whether the crate's own HTTP client offers HTTP/2 to HTTPS servers
    /// (default `false`: HTTP/1.1).
    ///
    /// HTTP/1.1 is the default because it is faster where this crate's
    /// calls go: over TLS on loopback a call costs the client about half
    /// the CPU time it costs through HTTP/2, and with many calls in flight
    /// HTTP/1.1 opens a connection per call in flight instead of queueing
    /// them on one connection behind the server's limit on concurrent
    /// streams (the README's benchmark section has the figures). HTTP/2
    /// saves connections (and handshakes) when many clients share one
    /// server; turn it on for that. Ignored with [`http_client`](Self::http_client).
    pub fn http2(mut self, http2: bool) -> Self {
        self.connection.http2 = http2;
        self
    }

    /// The HTTP client (and connection pool) to use for the model API and IAM.
    ///
    /// The crate's own client follows redirects within one origin only.
    /// Yours follows whatever its policy says (reqwest's default: up to
    /// 10, to any origin); the crate still refuses a reply that redirects
    /// to, or came from, another origin ([`Error::Redirected`](crate::Error::Redirected),
    /// [`AuthError::Redirected`](crate::AuthError::Redirected)), but by
    /// then your client has re-sent the request there, for IAM with the
    /// key secret in its body. Build it with
    /// `.redirect(reqwest::redirect::Policy::none())` unless you need more.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.connection.http_client = Some(client);
        self
    }

    /// Largest JSON reply read from the model API, in bytes (default
    /// [`DEFAULT_MAX_RESPONSE_SIZE`](crate::DEFAULT_MAX_RESPONSE_SIZE),
    /// 32 MiB). A larger one fails with [`Error::TooLarge`](crate::Error::TooLarge)
    /// as soon as the limit is passed; memory stays near the limit.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.connection.max_response_size = Some(bytes);
        self
    }

    /// Largest server-sent event of a stream (and line of one), in bytes
    /// (default [`DEFAULT_MAX_EVENT_SIZE`](crate::DEFAULT_MAX_EVENT_SIZE),
    /// 8 MiB). A larger one ends the stream with [`Error::TooLarge`](crate::Error::TooLarge).
    pub fn max_event_size(mut self, bytes: usize) -> Self {
        self.connection.max_event_size = Some(bytes);
        self
    }

    /// Largest IAM token reply, in bytes (default
    /// [`DEFAULT_MAX_AUTH_RESPONSE_SIZE`](crate::auth::DEFAULT_MAX_AUTH_RESPONSE_SIZE),
    /// 64 KiB); a larger one is [`AuthError::TooLarge`](crate::AuthError::TooLarge).
    pub fn max_auth_response_size(mut self, bytes: usize) -> Self {
        self.connection.max_auth_response_size = Some(bytes);
        self
    }

    /// Longest a stream may last from its first byte to its end (default:
    /// no bound, as an answer may legitimately take long). Past it the
    /// stream ends with an [`Error::Stream`](crate::Error::Stream) that
    /// says so, even if the server keeps trickling bytes or keep-alive
    /// comments.
    pub fn stream_deadline(mut self, deadline: std::time::Duration) -> Self {
        self.connection.stream_deadline = Some(deadline);
        self
    }

    /// A header sent with every request. An invalid name or value is
    /// reported by `build`.
    pub fn default_header(mut self, name: &str, value: &str) -> Self {
        self.connection.add_header(name, value);
        self
    }

    /// Headers sent with every request.
    pub fn default_headers(mut self, headers: reqwest::header::HeaderMap) -> Self {
        self.connection.headers.extend(headers);
        self
    }
}

impl<S: fmt::Debug, M> fmt::Debug for ClientBuilder<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("connection", &self.connection)
            .field("settings", &self.settings)
            .finish()
    }
}
