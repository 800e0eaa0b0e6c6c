//! [async-openai](https://docs.rs/async-openai) on Cloud.ru Foundation
//! Models: its own `Client`, `chat().create(..)` and `create_stream(..)`,
//! with our IAM tokens. Feature `async-openai` (async-openai 0.43).
//!
//! Two pieces, used together by [`client`] and [`client_with_config`]:
//!
//! - [`EvolutionConfig`], async-openai's [`Config`] for Cloud.ru: the API
//!   base ([`DEFAULT_BASE_URL`] unless set), the optional `x-project-id`
//!   header, and the bearer from an API key or a [`TokenManager`].
//! - [`EvolutionAuthLayer`], a tower layer for async-openai's `middleware`
//!   feature that sends every request through this crate's own request
//!   pipeline, the one [`EvolutionInference`](crate::EvolutionInference)
//!   uses: a current bearer on every attempt, one refresh and one more
//!   attempt when the API rejects the token (`401`/`403`), retries of
//!   `408`, `429`, `5xx` and failed connections with backoff and full jitter
//!   (the server's `Retry-After` honoured up to a cap), and one
//!   `X-Request-ID` per call. A reply that is still an error after that goes
//!   back to async-openai, which turns it into its own `OpenAIError`.
//!
//! ```no_run
//! use async_openai::types::chat::{
//!     ChatCompletionRequestUserMessage, CreateChatCompletionRequestArgs,
//! };
//! use evolution_langchain::bridges::async_openai::client;
//! use evolution_langchain::TokenManager;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = client(TokenManager::new("my-key-id", "my-secret"));
//! let request = CreateChatCompletionRequestArgs::default()
//!     .model("ai-sage/GigaChat3-10B-A1.8B")
//!     .messages([ChatCompletionRequestUserMessage::from("Hello!").into()])
//!     .build()?;
//! let response = client.chat().create(request).await?; // async-openai's own call
//! println!("{:?}", response.choices[0].message.content);
//! # Ok(()) }
//! ```
//!
//! ## What the `Config` alone gives, and what the layer adds
//!
//! async-openai asks its `Config` for headers synchronously, so an
//! [`EvolutionConfig`] on its own (`Client::with_config(config)`) can only
//! send the token the manager has cached
//! ([`TokenManager::cached_token`]): the very first request, a request
//! after the token expired unused and a request after the server revoked
//! it go out without a valid bearer and fail with `401`. The layer closes
//! those gaps and brings the retries; [`client`] installs it. It replaces
//! async-openai's own retry layer: do not stack `OpenAIRetryLayer` over it,
//! or every failure is retried twice over.
//!
//! To build the stack yourself (e.g. to add a layer of yours outside it):
//!
//! ```no_run
//! # use std::sync::Arc;
//! use async_openai::middleware::ReqwestService;
//! use evolution_langchain::bridges::async_openai::{EvolutionAuthLayer, EvolutionConfig};
//! use evolution_langchain::TokenManager;
//!
//! let manager = TokenManager::new("my-key-id", "my-secret");
//! let http = reqwest::Client::new();
//! let service = tower::ServiceBuilder::new()
//!     .layer(EvolutionAuthLayer::new(Arc::new(manager.clone())))
//!     .service(ReqwestService::new(http.clone()));
//! let client = async_openai::Client::build(http, EvolutionConfig::from_token_manager(manager))
//!     .with_http_service(service);
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::async_openai::config::Config;
use ::async_openai::error::OpenAIError;
use ::async_openai::middleware::{HttpRequestFactory, ReqwestService};
use ::async_openai::Client;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::Response;
use secrecy::{ExposeSecret, SecretString};
use tower::{Layer, Service, ServiceExt};

use crate::auth::{AccessToken, TokenManager, TokenSource};
use crate::config::EnvSettings;
use crate::error::{Error, Result};
use crate::transport::http::{base_without_slash, PROJECT_ID_HEADER};
use crate::transport::pipeline::{
    bearer, new_request_id, verdict_for_send_error, verdict_for_status, Attempt, Pipeline, Verdict,
};
use crate::transport::throttle::Throttle;
use crate::{RetryPolicy, DEFAULT_BASE_URL};

/// The async-openai this bridge is built against, so users get a matching version.
pub use ::async_openai;

/// async-openai's [`Config`] for Cloud.ru Foundation Models.
///
/// Cloning is cheap and shares the token manager. `Debug` shows neither the
/// API key nor a token.
#[derive(Clone)]
pub struct EvolutionConfig {
    api_base: String,
    project_id: Option<HeaderValue>,
    auth: Auth,
    /// What [`Config::api_key`] returns without an API key: async-openai
    /// wants a reference, and a token manager has no fixed key.
    no_api_key: SecretString,
}

#[derive(Clone)]
enum Auth {
    ApiKey(SecretString),
    Tokens(TokenManager),
}

impl EvolutionConfig {
    /// Authenticates with a Foundation Models API key, sent as the bearer.
    pub fn from_api_key(api_key: impl Into<String>) -> Self {
        Self::with_auth(Auth::ApiKey(SecretString::from(api_key.into())))
    }

    /// Authenticates with the IAM tokens of `manager` (see the
    /// [module docs](self) for what the `Config` alone can do with them).
    pub fn from_token_manager(manager: TokenManager) -> Self {
        Self::with_auth(Auth::Tokens(manager))
    }

    /// From `EVOLUTION_*` (after `.env`): an API key (`EVOLUTION_API_KEY`)
    /// or a key id and secret (`EVOLUTION_KEY_ID`, `EVOLUTION_SECRET`,
    /// optionally `EVOLUTION_TOKEN_URL`), never both; `EVOLUTION_BASE_URL`
    /// and `EVOLUTION_PROJECT_ID` when set.
    pub fn from_env() -> Result<Self> {
        let env = EnvSettings::read()?;
        let mut config = match super::env_source(&env)? {
            super::EnvSource::ApiKey(key) => Self::from_api_key(key.expose_secret()),
            super::EnvSource::Manager(manager) => Self::from_token_manager(manager),
        };
        if let Some(base_url) = &env.base_url {
            config = config.with_api_base(base_url);
        }
        if let Some(project_id) = &env.project_id {
            config = config.with_project_id(project_id)?;
        }
        Ok(config)
    }

    fn with_auth(auth: Auth) -> Self {
        Self {
            api_base: DEFAULT_BASE_URL.to_string(),
            project_id: None,
            auth,
            no_api_key: SecretString::from(String::new()),
        }
    }

    /// The API base URL, e.g. a dedicated endpoint's `…/v1`; defaults to
    /// [`DEFAULT_BASE_URL`]. A trailing `/` is dropped; an unusable URL
    /// shows as async-openai's error on the first request.
    pub fn with_api_base(mut self, api_base: impl Into<String>) -> Self {
        let api_base = api_base.into();
        self.api_base = base_without_slash(&api_base).to_string();
        self
    }

    /// Sends `x-project-id: {project_id}` with every request. An id that
    /// cannot be an HTTP header value is an [`Error::Config`].
    pub fn with_project_id(mut self, project_id: impl AsRef<str>) -> Result<Self> {
        self.project_id = Some(crate::transport::http::project_id_header(
            project_id.as_ref(),
        )?);
        Ok(self)
    }

    /// The token manager, when the config authenticates through IAM.
    pub fn token_manager(&self) -> Option<&TokenManager> {
        match &self.auth {
            Auth::Tokens(manager) => Some(manager),
            Auth::ApiKey(_) => None,
        }
    }

    /// Where [`EvolutionAuthLayer`] gets its bearer for this config: the
    /// token manager, or the API key as a [`StaticToken`](crate::StaticToken).
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        match &self.auth {
            Auth::Tokens(manager) => Arc::new(manager.clone()),
            Auth::ApiKey(key) => super::api_key_source(key.clone()),
        }
    }
}

impl Config for EvolutionConfig {
    /// `x-project-id` when set, and `Authorization: Bearer …` with the API
    /// key or the manager's cached token (none when nothing valid is
    /// cached; the layer, when installed, sets it for every attempt).
    fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(project_id) = &self.project_id {
            headers.insert(PROJECT_ID_HEADER, project_id.clone());
        }
        let bearer = match &self.auth {
            Auth::ApiKey(key) => bearer(&AccessToken::from_secret(key.clone())).ok(),
            Auth::Tokens(manager) => manager.cached_token().and_then(|token| bearer(&token).ok()),
        };
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer);
        }
        headers
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api_base)
    }

    fn query(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }

    fn api_base(&self) -> &str {
        &self.api_base
    }

    /// The API key; empty with a token manager, whose tokens change.
    fn api_key(&self) -> &SecretString {
        match &self.auth {
            Auth::ApiKey(key) => key,
            Auth::Tokens(_) => &self.no_api_key,
        }
    }
}

impl fmt::Debug for EvolutionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("EvolutionConfig");
        debug
            .field("api_base", &self.api_base)
            .field("project_id", &self.project_id);
        match &self.auth {
            Auth::ApiKey(_) => debug.field("api_key", &"<redacted>"),
            Auth::Tokens(manager) => debug.field("token_manager", manager),
        };
        debug.finish()
    }
}

/// A tower layer for async-openai's middleware that sends each request
/// through this crate's request pipeline (see the [module docs](self)):
/// bearer per attempt, token recovery, retries, request ids.
#[derive(Clone, Debug)]
pub struct EvolutionAuthLayer {
    pipeline: Pipeline,
}

impl EvolutionAuthLayer {
    /// A layer taking its tokens from `source` (a [`TokenManager`], a
    /// [`StaticToken`](crate::StaticToken), or your own [`TokenSource`]), retrying as the
    /// crate's clients do by default.
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self {
            pipeline: Pipeline {
                tokens: Some(source),
                retry: RetryPolicy::default(),
                throttle: Arc::new(Throttle::unlimited()),
            },
        }
    }

    /// Retries with `retry` instead of the default policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.pipeline.retry = retry;
        self
    }
}

impl<S> Layer<S> for EvolutionAuthLayer {
    type Service = EvolutionAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EvolutionAuth {
            inner,
            pipeline: self.pipeline.clone(),
        }
    }
}

/// The service [`EvolutionAuthLayer`] wraps around an inner one.
#[derive(Clone, Debug)]
pub struct EvolutionAuth<S> {
    inner: S,
    pipeline: Pipeline,
}

/// What [`EvolutionAuth`] returns for a request.
pub type EvolutionAuthFuture =
    Pin<Box<dyn Future<Output = Result<Response, OpenAIError>> + Send + 'static>>;

impl<S> Service<HttpRequestFactory> for EvolutionAuth<S>
where
    S: Service<HttpRequestFactory, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<OpenAIError>,
{
    type Response = Response;
    type Error = OpenAIError;
    type Future = EvolutionAuthFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), OpenAIError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        // Tower's rule: use the service that was polled ready, leave a clone.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        let pipeline = self.pipeline.clone();
        Box::pin(async move {
            let request_id = new_request_id();
            let request = &request;
            pipeline
                .run(
                    "async-openai request",
                    &request_id,
                    0,
                    move |attempt| send(service.clone(), request, attempt),
                    judge,
                    token_error,
                )
                .await
                .outcome
        })
    }
}

/// The pipeline's view of an attempt: async-openai's service answers every
/// status with a response, and fails only to send.
fn judge(outcome: &Result<Response, OpenAIError>) -> Verdict {
    match outcome {
        Ok(response) => verdict_for_status(response.status(), response.headers()),
        Err(OpenAIError::Reqwest(error)) => verdict_for_send_error(error),
        Err(_) => Verdict::Done,
    }
}

/// One attempt through `service`, with the attempt's bearer and request id.
async fn send<S>(
    service: S,
    request: &HttpRequestFactory,
    attempt: Attempt,
) -> Result<Response, OpenAIError>
where
    S: Service<HttpRequestFactory, Response = Response>,
    S::Error: Into<OpenAIError>,
{
    let original = request.clone();
    let attempt = Arc::new(attempt);
    // The factory rebuilds the request for each attempt, so the body never
    // needs cloning; ours adds the headers to whatever it builds.
    let with_headers = HttpRequestFactory::new(move || {
        let original = original.clone();
        let attempt = Arc::clone(&attempt);
        async move {
            let mut built = original.build().await?;
            attempt.apply(built.headers_mut());
            Ok(built)
        }
    });
    service.oneshot(with_headers).await.map_err(Into::into)
}

/// Our error, boxed into async-openai's, so callers can downcast it to
/// [`Error`].
fn token_error(error: Error) -> OpenAIError {
    OpenAIError::Boxed(Box::new(error))
}

/// async-openai's client for Cloud.ru with `manager`'s tokens: the default
/// API base and [`EvolutionAuthLayer`].
pub fn client(manager: TokenManager) -> Client<EvolutionConfig> {
    client_with_config(EvolutionConfig::from_token_manager(manager))
}

/// async-openai's client for `config`, with [`EvolutionAuthLayer`] (its
/// tokens from [`EvolutionConfig::token_source`]) over one pooled
/// `reqwest::Client`.
pub fn client_with_config(config: EvolutionConfig) -> Client<EvolutionConfig> {
    let http = super::default_http_client();
    let service = tower::ServiceBuilder::new()
        .layer(EvolutionAuthLayer::new(config.token_source()))
        .service(ReqwestService::new(http.clone()));
    Client::build(http, config).with_http_service(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_headers_and_debug_never_leak_the_key() {
        let config = EvolutionConfig::from_api_key("sk-very-secret-key")
            .with_api_base("http://127.0.0.1:1/v1/")
            .with_project_id("proj-1")
            .unwrap();
        assert_eq!(config.api_base(), "http://127.0.0.1:1/v1");
        assert_eq!(
            config.url("/chat/completions"),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        let headers = config.headers();
        assert_eq!(headers[PROJECT_ID_HEADER], "proj-1");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers[AUTHORIZATION], "Bearer sk-very-secret-key");
        let shown = format!("{config:?} {headers:?}");
        assert!(!shown.contains("very-secret"), "{shown}");
    }

    #[test]
    fn defaults_and_bad_project_id() {
        let config = EvolutionConfig::from_token_manager(TokenManager::new("id", "s3cr3t-value"));
        assert_eq!(config.api_base(), DEFAULT_BASE_URL);
        assert!(config.api_key().expose_secret().is_empty());
        // Nothing cached (and no runtime to refresh on): no bearer.
        assert!(config.headers().get(AUTHORIZATION).is_none());
        assert!(!format!("{config:?}").contains("s3cr3t"));
        let err = config.with_project_id("a\nb").unwrap_err();
        assert!(err.to_string().contains("project_id"), "{err}");
    }
}
