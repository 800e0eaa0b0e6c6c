//! [rig](https://docs.rs/rig-core) on Cloud.ru Foundation Models: rig's own
//! OpenAI Chat Completions and embeddings wires, and rig's agents, with
//! our IAM tokens. Feature `rig` (rig-core, rig-agent and rig-reqwest
//! 0.44).
//!
//! rig 0.44 builds every OpenAI-shaped provider the same way: an
//! [`OpenAIConfig`] (base URL, credential, a [`Dialect`] of wire quirks)
//! connected to an HTTP transport gives an [`OpenAI`] client whose
//! `chat(model)` and `embedding(model, ndims)` are [`Model`]s, and
//! `rig_agent::AgentBuilder::new(model)` makes an agent of a chat model.
//! [`EvolutionRig`] follows that way and fills the one gap: rig's
//! credential is a fixed string, while a key id + secret gives IAM tokens
//! that expire. So the configuration carries no key, and the transport
//! is rig's own reqwest transport ([`rig_reqwest::ReqwestClient`]) with
//!
//! - an [`HttpMiddleware`] that, before every request, awaits our
//!   [`TokenSource`] (a [`TokenManager`], or an API key) for a valid
//!   bearer (waiting only when no usable token is cached, never blocking
//!   a thread) and sets the optional `x-project-id` header, and
//! - an outer [`HttpClientExt`] with our retries, which rig's transport
//!   does not have: when the API answers `401`/`403` it makes the source
//!   drop its token and sends the request once more with a new one (not
//!   with an API key, which cannot be refreshed); a `429`, `500`, `502`,
//!   `503`, `504` or a failed connection is retried up to
//!   [`EvolutionRig::with_max_retries`] times (default
//!   [`DEFAULT_MAX_RETRIES`]), after the server's `Retry-After` or an
//!   exponential backoff. A stream is retried only until it opens.
//!
//! Everything else (messages, tool calls, streaming, usage, errors) is
//! rig's own code.
//!
//! ```no_run
//! use evolution_langchain::bridges::rig::EvolutionRig;
//! use evolution_langchain::TokenManager;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let rig = EvolutionRig::from_token_manager(TokenManager::new("my-key-id", "my-secret"));
//! let agent = rig
//!     .agent("ai-sage/GigaChat3-10B-A1.8B")
//!     .preamble("Be concise.")
//!     .build();
//! let answer = agent.prompt("Hello!").await?; // rig's own call
//! println!("{}", answer.output());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::{Method, Request, Response, StatusCode, Uri};
use rig_core::driver::Model;
use rig_core::http_client::{
    self, DynHttpClient, HttpClientExt, HttpMiddleware, LazyBody, MultipartForm, StreamingResponse,
};
use rig_core::providers::openai::wire::{Auth, Chat, Dialect, Embeddings, Quirks};
use rig_core::providers::openai::{OpenAI, OpenAIConfig};
use rig_core::wasm_compat::WasmBoxedFuture;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::auth::{AccessToken, StaticToken, TokenManager, TokenSource};
use crate::config::{EnvSettings, ENV_API_KEY};
use crate::error::Result;
use crate::{DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES};

pub use ::rig_agent;
pub use ::rig_core;

/// The provider name rig records for replies of this client.
pub const PROVIDER_NAME: &str = "cloudru";

const PROJECT_ID_HEADER: &str = "x-project-id";

/// The rig dialect of Cloud.ru: rig's OpenAI-compatible baseline, with
/// the `Authorization` header left to our middleware.
pub fn dialect() -> Dialect {
    let mut quirks = Quirks::openai();
    quirks.auth = Auth::OptionalBearer;
    Dialect::gateway(PROVIDER_NAME, DEFAULT_BASE_URL, ENV_API_KEY).with_quirks(quirks)
}

/// A rig provider for Cloud.ru: builds rig chat and embedding [`Model`]s
/// and agents that send through our token management.
///
/// Cheap to clone; clones share the HTTP connections and the token.
#[derive(Clone)]
pub struct EvolutionRig {
    base_url: String,
    project_id: Option<HeaderValue>,
    source: Arc<dyn TokenSource>,
    http: reqwest::Client,
    max_retries: u32,
}

impl EvolutionRig {
    /// A provider whose bearer comes from `source` (checked before every
    /// request, refreshed on `401`/`403` when the source can refresh).
    pub fn from_token_source(source: Arc<dyn TokenSource>) -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_string(),
            project_id: None,
            source,
            http: super::default_http_client(),
            max_retries: DEFAULT_MAX_RETRIES,
        }
    }

    /// A provider with IAM tokens from `manager` (key id + secret).
    pub fn from_token_manager(manager: TokenManager) -> Self {
        Self::from_token_source(Arc::new(manager))
    }

    /// A provider with a fixed API key.
    pub fn from_api_key(api_key: impl Into<String>) -> Self {
        let key = SecretString::from(api_key.into());
        Self::from_token_source(Arc::new(StaticToken::from_token(AccessToken::from_secret(
            key,
        ))))
    }

    /// A provider from the `EVOLUTION_*` variables (and `.env`): an API
    /// key or a key id + secret (not both), and the optional base URL,
    /// token URL and project id.
    pub fn from_env() -> Result<Self> {
        let env = EnvSettings::read()?;
        let mut rig = match super::env_source(&env)? {
            super::EnvSource::ApiKey(key) => Self::from_api_key(key.expose_secret()),
            super::EnvSource::Manager(manager) => Self::from_token_manager(manager),
        };
        if let Some(base_url) = &env.base_url {
            rig = rig.with_base_url(base_url);
        }
        if let Some(project_id) = &env.project_id {
            rig = rig.with_project_id(project_id)?;
        }
        Ok(rig)
    }

    /// The API base, e.g. `https://…/v1` ([`DEFAULT_BASE_URL`] unless set).
    pub fn with_base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = base_url.into().trim().trim_end_matches('/').to_string();
        self
    }

    /// Sends `x-project-id: <project_id>` with every request.
    pub fn with_project_id(mut self, project_id: impl AsRef<str>) -> Result<Self> {
        self.project_id = Some(crate::transport::http::project_id_header(
            project_id.as_ref(),
        )?);
        Ok(self)
    }

    /// Sends through `http` (its timeouts, proxy and TLS settings) instead
    /// of a default reqwest client.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// How often a `429`, `500`, `502`, `503`, `504` or a failed connection
    /// is retried ([`DEFAULT_MAX_RETRIES`] unless set; `0` turns it off).
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The API base requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// rig's transport for Cloud.ru: rig's reqwest transport with our
    /// bearer middleware, inside our retries (refresh and retry once on
    /// `401`/`403`; `429`, `5xx` and failed connections up to
    /// [`with_max_retries`](Self::with_max_retries) times).
    pub fn transport(&self) -> DynHttpClient {
        let inner = DynHttpClient::new(rig_reqwest::ReqwestClient::from(self.http.clone()))
            .with_middleware(BearerMiddleware {
                source: Arc::clone(&self.source),
                project_id: self.project_id.clone(),
            });
        DynHttpClient::new(ResilientHttp {
            inner,
            source: Arc::clone(&self.source),
            max_retries: self.max_retries,
        })
    }

    /// rig's [`OpenAIConfig`] for Cloud.ru: this base URL, the Cloud.ru
    /// [`dialect`], and no key of its own (the transport sets the bearer).
    pub fn config(&self) -> OpenAIConfig {
        let mut config = OpenAIConfig::with_key(&dialect(), "");
        config.base_url = self.base_url.clone();
        config.with_auth(Auth::OptionalBearer)
    }

    /// rig's OpenAI-shaped client on Cloud.ru, for everything it builds.
    pub fn client(&self) -> OpenAI {
        self.config().connect(self.transport())
    }

    /// The chat model `model` (OpenAI Chat Completions: text, tool calls,
    /// streaming), for rig's `call`/`stream` or an agent.
    pub fn completion_model(&self, model: impl Into<String>) -> Model<Chat> {
        self.client().chat(model)
    }

    /// The embedding model `model` (`/embeddings`).
    pub fn embedding_model(&self, model: impl Into<String>) -> Model<Embeddings> {
        self.client().embedding(model, None)
    }

    /// A rig agent builder on the chat model `model`.
    pub fn agent(&self, model: impl Into<String>) -> rig_agent::AgentBuilder {
        rig_agent::AgentBuilder::new(self.completion_model(model))
    }
}

impl fmt::Debug for EvolutionRig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionRig")
            .field("base_url", &self.base_url)
            .field("project_id", &self.project_id)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Sets a current bearer (and the project header) on every request.
struct BearerMiddleware {
    source: Arc<dyn TokenSource>,
    project_id: Option<HeaderValue>,
}

impl HttpMiddleware for BearerMiddleware {
    fn before_request_headers<'a>(
        &'a self,
        _method: &'a Method,
        _uri: &'a Uri,
        headers: &'a mut HeaderMap,
    ) -> WasmBoxedFuture<'a, http_client::Result<()>> {
        Box::pin(async move {
            let token = self
                .source
                .token()
                .await
                .map_err(|error| http_client::Error::Instance(Box::new(error)))?;
            let bearer = bearer_value(token.expose_secret()).ok_or_else(|| {
                http_client::Error::Instance(
                    "the access token contains characters an HTTP header cannot carry".into(),
                )
            })?;
            headers.insert(AUTHORIZATION, bearer);
            if let Some(project_id) = &self.project_id {
                headers.insert(PROJECT_ID_HEADER, project_id.clone());
            }
            Ok(())
        })
    }
}

fn bearer_value(secret: &str) -> Option<HeaderValue> {
    let text = Zeroizing::new(format!("Bearer {secret}"));
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Sends through `inner`, and answers rejected tokens and transient
/// failures: a `401`/`403` makes the source drop its token and the request
/// go out once more (the middleware then fetches a new token); a `429`,
/// `500`, `502`, `503`, `504` or a failed connection is retried up to
/// `max_retries` times, after the server's `Retry-After` (capped) or an
/// exponential backoff.
#[derive(Clone)]
struct ResilientHttp {
    inner: DynHttpClient,
    source: Arc<dyn TokenSource>,
    max_retries: u32,
}

fn rejected(error: &http_client::Error) -> bool {
    matches!(
        error.non_success_status(),
        Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
    )
}

fn transient(error: &http_client::Error) -> bool {
    match error.non_success_status() {
        Some(status) => matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504),
        None => match error {
            http_client::Error::Instance(inner) => inner
                .downcast_ref::<reqwest::Error>()
                .is_some_and(reqwest::Error::is_connect),
            _ => false,
        },
    }
}

const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

fn backoff(error: &http_client::Error, retry: u32) -> Duration {
    let retry_after = error
        .non_success_headers()
        .and_then(|headers| headers.get(http::header::RETRY_AFTER))
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    retry_after
        .unwrap_or_else(|| Duration::from_millis(200 << retry.min(6)))
        .min(MAX_RETRY_AFTER)
}

/// The same request again: method, URI, version and headers (the bearer
/// is replaced by the middleware).
fn rebuild(parts: &http::request::Parts, body: Bytes) -> Request<Bytes> {
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    *request.version_mut() = parts.version;
    *request.headers_mut() = parts.headers.clone();
    request
}

impl ResilientHttp {
    async fn attempts<R, F, Fut>(
        self,
        parts: http::request::Parts,
        body: Bytes,
        attempt: F,
    ) -> http_client::Result<R>
    where
        F: Fn(DynHttpClient, Request<Bytes>) -> Fut,
        Fut: Future<Output = http_client::Result<R>>,
    {
        let (mut refreshed, mut retries) = (false, 0);
        loop {
            let error = match attempt(self.inner.clone(), rebuild(&parts, body.clone())).await {
                Err(error) => error,
                ok => return ok,
            };
            if !refreshed && rejected(&error) && self.source.refreshes() {
                tracing::debug!("the API rejected the token; refreshing it and retrying once");
                refreshed = true;
                self.source.invalidate();
            } else if retries < self.max_retries && transient(&error) {
                retries += 1;
                let wait = backoff(&error, retries);
                tracing::debug!(retry = retries, ?wait, "transient failure; retrying");
                tokio::time::sleep(wait).await;
            } else {
                return Err(error);
            }
        }
    }
}

impl HttpClientExt for ResilientHttp {
    fn send<T, U>(
        &self,
        req: Request<T>,
    ) -> impl Future<Output = http_client::Result<Response<LazyBody<U>>>> + Send + 'static
    where
        T: Into<Bytes> + Send,
        U: From<Bytes> + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        self.clone()
            .attempts(parts, body.into(), |inner, request| async move {
                inner.send::<Bytes, U>(request).await
            })
    }

    fn send_multipart<U>(
        &self,
        req: Request<MultipartForm>,
    ) -> impl Future<Output = http_client::Result<Response<LazyBody<U>>>> + Send + 'static
    where
        U: From<Bytes> + Send + 'static,
    {
        self.inner.send_multipart(req)
    }

    fn send_streaming<T>(
        &self,
        req: Request<T>,
    ) -> impl Future<Output = http_client::Result<StreamingResponse>> + Send
    where
        T: Into<Bytes> + Send,
    {
        let (parts, body) = req.into_parts();
        self.clone()
            .attempts(parts, body.into(), |inner, request| async move {
                inner.send_streaming(request).await
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_config_never_leak_the_key() {
        let rig = EvolutionRig::from_api_key("sk-very-secret-key")
            .with_base_url("http://127.0.0.1:1/v1/")
            .with_project_id("proj-1")
            .unwrap();
        assert_eq!(rig.base_url(), "http://127.0.0.1:1/v1");
        let config = rig.config();
        assert_eq!(config.base_url, "http://127.0.0.1:1/v1");
        let shown = format!("{rig:?} {config:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
        assert!(rig.with_project_id("a\nb").is_err());
    }
}
