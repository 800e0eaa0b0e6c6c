//! Shared mutable state: configuration, counters, issued tokens, fault queues and the
//! request log. Locks are `std` mutexes held only for short, non-async sections.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, Target};
use crate::limiter::RateLimiter;
use crate::util;

/// A snapshot of the emulator's request counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Requests to `POST /api/v1/auth/token`, whatever their outcome.
    pub auth_requests: u64,
    /// Tokens handed out (answers that carried an `access_token`).
    pub tokens_issued: u64,
    /// Requests to `POST /v1/chat/completions`, streamed or not, authorized or not.
    pub chat_requests: u64,
    /// The subset of `chat_requests` with `"stream": true`.
    pub stream_requests: u64,
    /// Requests to `GET /v1/models` and `GET /v1/models/{id}`.
    pub models_requests: u64,
    /// Requests to `POST /v1/embeddings`.
    pub embeddings_requests: u64,
    /// `401` answers from `/v1` routes (missing, unknown, expired or revoked token).
    pub unauthorized: u64,
    /// `/v1` requests whose bearer was one of the configured API keys
    /// ([`EmulatorBuilder::api_key`](crate::EmulatorBuilder::api_key)).
    pub api_key_requests: u64,
    /// Requests to `POST /v1/rerank`.
    pub rerank_requests: u64,
    /// Chat, embeddings, rerank and transcription requests being served right now (a
    /// stream counts until its body ends; a request waiting out
    /// [`EmulatorBuilder::latency`](crate::EmulatorBuilder::latency) counts too).
    pub in_flight: u64,
    /// The highest `in_flight` seen since start or the last reset.
    pub peak_in_flight: u64,
    /// `429` answers from the rate limiter
    /// ([`EmulatorBuilder::requests_per_minute`](crate::EmulatorBuilder::requests_per_minute),
    /// [`EmulatorBuilder::tokens_per_minute`](crate::EmulatorBuilder::tokens_per_minute));
    /// injected `429` faults are not counted here.
    pub rate_limited: u64,
    /// Requests to `POST /v1/audio/transcriptions`, whatever their outcome.
    pub transcription_requests: u64,
}

/// One request to a `/v1/*` route, as the emulator received it.
///
/// Its `Debug` form never shows the bearer value, only whether one was sent.
#[derive(Clone, PartialEq, Serialize)]
pub struct RecordedRequest {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path, e.g. `/v1/chat/completions` (without the query string).
    pub path: String,
    /// The `x-project-id` header, if sent.
    pub project_id: Option<String>,
    /// Whether the request was authorized at arrival: its bearer was a live token this
    /// emulator issued or a configured API key, or auth is off
    /// ([`EmulatorBuilder::require_auth`](crate::EmulatorBuilder::require_auth)).
    pub authorized: bool,
    /// The JSON body; `null` when empty, a string when the body was not JSON.
    pub body: serde_json::Value,
    /// The bearer value of the `Authorization` header, as received (`None` when there was
    /// no `Bearer` credential). Kept so tests can assert what was on the wire; `Debug`
    /// redacts it.
    pub bearer: Option<String>,
    /// The `X-Request-ID` header, as received.
    pub request_id: Option<String>,
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bearer = self.bearer.as_ref().map(|_| "<redacted>");
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("project_id", &self.project_id)
            .field("authorized", &self.authorized)
            .field("body", &self.body)
            .field("bearer", &bearer)
            .field("request_id", &self.request_id)
            .finish()
    }
}

/// Everything fixed at start-up.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Valid key pairs; the first is the one the handle reports.
    pub credentials: Vec<(String, String)>,
    /// Pairs that authenticate but lack rights.
    pub forbidden: Vec<(String, String)>,
    /// Bearer values accepted on `/v1` as they are, without a token exchange.
    pub api_keys: Vec<String>,
    /// When false, `/v1` serves requests whatever their `Authorization` header says.
    pub require_auth: bool,
    /// Token lifetime in whole seconds, already normalised to
    /// `1..=MAX_TOKEN_TTL_SECS`: both the `expires_in` reported and the real expiry.
    pub token_ttl_secs: u64,
    pub omit_expires_in: bool,
    pub word_delay: Duration,
    pub upstream: Option<String>,
    pub upstream_api_key: Option<String>,
    /// The models configured; [`Config::listed_models`] adds the reasoning model.
    pub models: Vec<String>,
    /// The JSON field reasoning goes in: `reasoning_content` or `reasoning`.
    pub reasoning_field: String,
    pub embedding_dimensions: usize,
    /// How many recent `/v1` requests the log keeps; 0 records none.
    pub request_log_limit: usize,
    /// Per-key requests per minute; 0 is no limit.
    pub requests_per_minute: u32,
    /// Per-key tokens per minute; 0 is no limit.
    pub tokens_per_minute: u32,
    /// How many seconds of the sustained rate a key's bucket holds.
    pub rate_burst: std::time::Duration,
    /// How long every counted `/v1` answer waits before it is sent.
    pub latency: Duration,
    /// The largest audio file `POST /v1/audio/transcriptions` accepts, in bytes.
    pub max_audio_bytes: usize,
    /// Refuse `response_format` `json_schema` with a `400`, like a server without
    /// structured output.
    pub refuse_json_schema: bool,
}

impl Config {
    /// The first configured model, else [`crate::DEFAULT_MODEL`]. Never the reasoning
    /// model unless configured first, so that requests naming no model do not think.
    pub fn default_model(&self) -> &str {
        self.models
            .first()
            .map(String::as_str)
            .unwrap_or(crate::DEFAULT_MODEL)
    }

    /// What `GET /v1/models` lists: the configured models, then
    /// [`crate::REASONING_MODEL`] unless it is among them.
    pub fn listed_models(&self) -> impl Iterator<Item = &str> {
        let reasoner = (!self.models.iter().any(|m| m == crate::REASONING_MODEL))
            .then_some(crate::REASONING_MODEL);
        self.models.iter().map(String::as_str).chain(reasoner)
    }
}

#[derive(Default)]
struct CounterCells {
    auth_requests: AtomicU64,
    tokens_issued: AtomicU64,
    chat_requests: AtomicU64,
    stream_requests: AtomicU64,
    models_requests: AtomicU64,
    embeddings_requests: AtomicU64,
    unauthorized: AtomicU64,
    api_key_requests: AtomicU64,
    rerank_requests: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    rate_limited: AtomicU64,
    transcription_requests: AtomicU64,
}

/// Which counter a request bumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counter {
    AuthRequests,
    TokensIssued,
    ChatRequests,
    StreamRequests,
    ModelsRequests,
    EmbeddingsRequests,
    Unauthorized,
    ApiKeyRequests,
    RerankRequests,
    RateLimited,
    TranscriptionRequests,
}

struct TokenInfo {
    /// The key id the token was issued to: its rate-limit bucket.
    key_id: String,
    expires: Instant,
    revoked: bool,
}

/// Why a bearer token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRejection {
    Missing,
    Unknown,
    Expired,
    Revoked,
}

impl TokenRejection {
    pub fn message(self) -> &'static str {
        match self {
            TokenRejection::Missing => "Missing bearer token: send `Authorization: Bearer <token>`",
            TokenRejection::Unknown => "Invalid access token",
            TokenRejection::Expired => "Access token has expired",
            TokenRejection::Revoked => "Access token has been revoked",
        }
    }
}

/// Why a `/v1` request was let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// A live token this emulator issued, to this key id.
    Token { key_id: String },
    /// One of the configured API keys (its position in the list, from 0).
    ApiKey { index: usize },
    /// Neither, but auth is off.
    Open,
}

pub(crate) struct State {
    pub config: Config,
    /// Used for `created` in model listings, so it stays stable for the emulator's life.
    pub started_unix: u64,
    /// Present only in upstream mode.
    pub upstream_client: Option<reqwest::Client>,
    /// Cancelled when the emulator shuts down, so that bodies meant never to end do end.
    pub shutdown: CancellationToken,
    counters: CounterCells,
    tokens: Mutex<HashMap<String, TokenInfo>>,
    /// Each queued fault once, with how many more requests get it (always at least 1),
    /// so a queue costs memory per `inject` call, not per repetition.
    faults: Mutex<HashMap<Target, VecDeque<(Fault, usize)>>>,
    /// The most recent `config.request_log_limit` requests, oldest first.
    requests: Mutex<VecDeque<RecordedRequest>>,
    next_id: AtomicU64,
    next_request_number: AtomicU64,
    /// Per-key request and token buckets.
    pub limiter: RateLimiter,
}

/// A poisoned lock only means another request panicked mid-update; the data is still
/// usable for an emulator, and refusing service would turn one bug into many.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    pub fn new(
        config: Config,
        upstream_client: Option<reqwest::Client>,
        shutdown: CancellationToken,
    ) -> Self {
        State {
            started_unix: util::unix_now(),
            upstream_client,
            shutdown,
            counters: CounterCells::default(),
            tokens: Mutex::new(HashMap::new()),
            faults: Mutex::new(HashMap::new()),
            requests: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(1),
            next_request_number: AtomicU64::new(1),
            limiter: RateLimiter::with_burst(
                config.requests_per_minute,
                config.tokens_per_minute,
                config.rate_burst,
            ),
            config,
        }
    }

    pub fn bump(&self, counter: Counter) {
        let c = &self.counters;
        let cell = match counter {
            Counter::AuthRequests => &c.auth_requests,
            Counter::TokensIssued => &c.tokens_issued,
            Counter::ChatRequests => &c.chat_requests,
            Counter::StreamRequests => &c.stream_requests,
            Counter::ModelsRequests => &c.models_requests,
            Counter::EmbeddingsRequests => &c.embeddings_requests,
            Counter::Unauthorized => &c.unauthorized,
            Counter::ApiKeyRequests => &c.api_key_requests,
            Counter::RerankRequests => &c.rerank_requests,
            Counter::RateLimited => &c.rate_limited,
            Counter::TranscriptionRequests => &c.transcription_requests,
        };
        cell.fetch_add(1, Ordering::SeqCst);
    }

    pub fn counters(&self) -> Counters {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Counters {
            auth_requests: get(&c.auth_requests),
            tokens_issued: get(&c.tokens_issued),
            chat_requests: get(&c.chat_requests),
            stream_requests: get(&c.stream_requests),
            models_requests: get(&c.models_requests),
            embeddings_requests: get(&c.embeddings_requests),
            unauthorized: get(&c.unauthorized),
            api_key_requests: get(&c.api_key_requests),
            rerank_requests: get(&c.rerank_requests),
            in_flight: get(&c.in_flight),
            peak_in_flight: get(&c.peak_in_flight),
            rate_limited: get(&c.rate_limited),
            transcription_requests: get(&c.transcription_requests),
        }
    }

    /// Zeroes every counter except `in_flight`: live requests still hold guards that will
    /// decrement it, so it must stay truthful. The peak restarts from the current level.
    pub fn reset_counters(&self) {
        let c = &self.counters;
        for cell in [
            &c.auth_requests,
            &c.tokens_issued,
            &c.chat_requests,
            &c.stream_requests,
            &c.models_requests,
            &c.embeddings_requests,
            &c.unauthorized,
            &c.api_key_requests,
            &c.rerank_requests,
            &c.rate_limited,
            &c.transcription_requests,
        ] {
            cell.store(0, Ordering::SeqCst);
        }
        c.peak_in_flight
            .store(c.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// A number unique within this emulator, for tool-call ids and tokens.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }

    /// The number of the next generated `x-request-id` (`emu-<n>`): 1, 2, 3, …
    pub fn next_request_number(&self) -> u64 {
        self.next_request_number.fetch_add(1, Ordering::SeqCst)
    }

    /// Registers a token issued to `key_id` that stays valid for exactly `ttl_secs` whole
    /// seconds from now: the `expires_in` it was issued with, so it never dies before the
    /// client was told.
    pub fn register_token(&self, token: String, key_id: &str, ttl_secs: u64) {
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        // Pruning here keeps the map bounded by the tokens alive at once.
        tokens.retain(|_, info| info.expires > now);
        // The builder caps the TTL at `MAX_TOKEN_TTL_SECS` (366 days), far from any
        // `Instant` limit; saturate anyway rather than panic if that ever changes.
        let expires = now
            .checked_add(Duration::from_secs(ttl_secs))
            .unwrap_or_else(|| now + Duration::from_secs(crate::MAX_TOKEN_TTL_SECS));
        tokens.insert(
            token,
            TokenInfo {
                key_id: key_id.to_owned(),
                expires,
                revoked: false,
            },
        );
    }

    /// Decides whether a `/v1` request with this bearer value is served: a configured API
    /// key or a live issued token is; anything else is refused unless auth is off.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<Access, TokenRejection> {
        if let Some(index) = bearer.and_then(|b| self.config.api_keys.iter().position(|k| k == b)) {
            return Ok(Access::ApiKey { index });
        }
        match self.check_token(bearer) {
            Ok(key_id) => Ok(Access::Token { key_id }),
            Err(_) if !self.config.require_auth => Ok(Access::Open),
            Err(rejection) => Err(rejection),
        }
    }

    /// The key id a live token was issued to, or why the token is refused.
    fn check_token(&self, token: Option<&str>) -> Result<String, TokenRejection> {
        let token = token.ok_or(TokenRejection::Missing)?;
        let tokens = lock(&self.tokens);
        let info = tokens.get(token).ok_or(TokenRejection::Unknown)?;
        if info.revoked {
            Err(TokenRejection::Revoked)
        } else if info.expires <= Instant::now() {
            Err(TokenRejection::Expired)
        } else {
            Ok(info.key_id.clone())
        }
    }

    /// The rate-limit bucket a request let in by `access` pays from: `key-id:<id>` for
    /// an issued token, `api-key#<n>` (n from 1, in configuration order, so the label
    /// never shows the key) for an API key, and one `shared` bucket when auth is off.
    pub fn rate_key(&self, access: &Access) -> String {
        match access {
            _ if !self.config.require_auth => "shared".to_owned(),
            Access::Token { key_id } => format!("key-id:{key_id}"),
            Access::ApiKey { index } => format!("api-key#{}", index + 1),
            Access::Open => "shared".to_owned(),
        }
    }

    /// Waits [`Config::latency`] (or until shutdown), as a server that takes that long to
    /// answer.
    pub async fn answer_latency(&self) {
        let latency = self.config.latency;
        if latency.is_zero() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(latency) => {}
            () = self.shutdown.cancelled() => {}
        }
    }

    /// Marks every token issued so far as revoked; returns how many were still valid.
    pub fn revoke_tokens(&self) -> usize {
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        let mut live = 0;
        for info in tokens.values_mut() {
            if !info.revoked && info.expires > now {
                live += 1;
            }
            info.revoked = true;
        }
        live
    }

    /// Queues `fault` for the next `times` requests to `target` in O(1) memory, whatever
    /// `times` is; a repeat of the fault at the back of the queue extends its count.
    pub fn inject(&self, target: Target, fault: Fault, times: usize) {
        if times == 0 {
            return;
        }
        let mut faults = lock(&self.faults);
        let queue = faults.entry(target).or_default();
        match queue.back_mut() {
            Some((last, remaining)) if *last == fault => {
                *remaining = remaining.saturating_add(times);
            }
            _ => queue.push_back((fault, times)),
        }
    }

    pub fn clear_faults(&self) {
        lock(&self.faults).clear();
    }

    /// Queued faults per target with their remaining counts, for the admin API.
    pub fn pending_faults(&self) -> Vec<(Target, Fault, usize)> {
        let faults = lock(&self.faults);
        let mut out = Vec::new();
        for target in [
            Target::Auth,
            Target::Chat,
            Target::Models,
            Target::Embeddings,
            Target::Rerank,
            Target::Audio,
            Target::Api,
        ] {
            if let Some(queue) = faults.get(&target) {
                out.extend(queue.iter().map(|(f, n)| (target, f.clone(), *n)));
            }
        }
        out
    }

    /// Takes the next fault for a request to `target`. `/v1` routes fall back to the
    /// [`Target::Api`] queue; both are consulted under one lock so that concurrent
    /// requests never take the same entry.
    pub fn take_fault(&self, target: Target) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let mut pop = |t: Target| {
            let queue = faults.get_mut(&t)?;
            let (fault, remaining) = queue.front_mut()?;
            if *remaining > 1 {
                *remaining -= 1;
                Some(fault.clone())
            } else {
                queue.pop_front().map(|(fault, _)| fault)
            }
        };
        match target {
            Target::Auth | Target::Api => pop(target),
            Target::Chat | Target::Models | Target::Embeddings | Target::Rerank | Target::Audio => {
                pop(target).or_else(|| pop(Target::Api))
            }
        }
    }

    /// Whether requests are recorded at all (`request_log_limit > 0`), so callers can skip
    /// building a [`RecordedRequest`] nobody will keep.
    pub fn records_requests(&self) -> bool {
        self.config.request_log_limit > 0
    }

    /// Appends to the log, dropping the oldest entries beyond `request_log_limit`.
    pub fn record(&self, request: RecordedRequest) {
        let limit = self.config.request_log_limit;
        if limit == 0 {
            return;
        }
        let mut requests = lock(&self.requests);
        while requests.len() >= limit {
            requests.pop_front();
        }
        requests.push_back(request);
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.requests).iter().cloned().collect()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.requests).back().cloned()
    }

    pub fn clear_requests(&self) {
        lock(&self.requests).clear();
    }
}

/// Counts a request as in flight for as long as it lives; responses that stream move it
/// into their body so the count covers the whole transfer.
pub(crate) struct InFlightGuard {
    state: Arc<State>,
}

impl InFlightGuard {
    pub fn new(state: &Arc<State>) -> Self {
        let c = &state.counters;
        let now = c.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        c.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlightGuard {
            state: Arc::clone(state),
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.state.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
