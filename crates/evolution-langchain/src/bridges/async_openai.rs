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
//!   feature: every attempt awaits the token source for a valid bearer,
//!   and a `401`/`403` answer makes it drop that token, get a new one and
//!   send the request once more.
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
//! ([`TokenManager::cached_token`]). Once the manager holds a token, that
//! is enough for a long-running program: each request's header read
//! starts a background refresh when the token nears its expiry, and the
//! replacement is in place before it is needed. But the very first
//! request (nothing cached yet), a request after the token expired
//! unused, and a request after the server revoked the token go out
//! without a valid bearer and fail with `401`, unless the program awaited
//! [`TokenManager::get_token`] first.
//!
//! The layer closes those gaps: it awaits a valid token before every
//! attempt (waiting only when none is usable, never blocking a thread),
//! and recovers from a rejected one. [`client`] installs it together with
//! async-openai's own retry layer (`429`, `5xx`, connection errors), which
//! `Client::with_http_service` would otherwise replace. With an API key
//! there is nothing to refresh: the layer sets the key and passes a
//! `401`/`403` on as async-openai's error.
//!
//! To build your own tower stack, put [`EvolutionAuthLayer`] inside any
//! retry layer, so every retry gets a current token:
//!
//! ```no_run
//! # use std::sync::Arc;
//! use async_openai::middleware::{retry::OpenAIRetryLayer, ReqwestService};
//! use evolution_langchain::bridges::async_openai::{EvolutionAuthLayer, EvolutionConfig};
//! use evolution_langchain::TokenManager;
//!
//! let manager = TokenManager::new("my-key-id", "my-secret");
//! let http = reqwest::Client::new();
//! let service = tower::ServiceBuilder::new()
//!     .layer(OpenAIRetryLayer::default())
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
use ::async_openai::middleware::retry::OpenAIRetryLayer;
use ::async_openai::middleware::{HttpRequestFactory, ReqwestService};
use ::async_openai::Client;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use tower::{Layer, Service, ServiceExt};
use zeroize::Zeroizing;

use crate::auth::{AccessToken, StaticToken, TokenManager, TokenSource};
use crate::config::EnvSettings;
use crate::error::{Error, Result};
use crate::DEFAULT_BASE_URL;

/// The async-openai this bridge is built against, so users get a matching version.
pub use ::async_openai;

/// The header naming the Cloud.ru project a request is billed to.
const PROJECT_ID_HEADER: &str = "x-project-id";

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
        self.api_base = api_base.trim().trim_end_matches('/').to_string();
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
    /// token manager, or the API key as a [`StaticToken`].
    pub fn token_source(&self) -> Arc<dyn TokenSource> {
        match &self.auth {
            Auth::Tokens(manager) => Arc::new(manager.clone()),
            Auth::ApiKey(key) => Arc::new(StaticToken::from_token(AccessToken::from_secret(
                key.clone(),
            ))),
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
            Auth::ApiKey(key) => bearer_value(key.expose_secret()),
            Auth::Tokens(manager) => manager
                .cached_token()
                .and_then(|token| bearer_value(token.expose_secret())),
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

/// `Bearer {secret}` as a header value marked sensitive (so `http` never
/// prints it); `None` when the secret cannot be a header value.
fn bearer_value(secret: &str) -> Option<HeaderValue> {
    let text = Zeroizing::new(format!("Bearer {secret}"));
    let mut value = HeaderValue::from_str(&text).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// A tower layer for async-openai's middleware: a valid bearer on every
/// attempt, and one refresh and retry when the API rejects it.
///
/// Put it inside retry layers (they then get a current token per retry);
/// [`client`] does.
#[derive(Clone, Debug)]
pub struct EvolutionAuthLayer {
    source: Arc<dyn TokenSource>,
}

impl EvolutionAuthLayer {
    /// A layer taking its tokens from `source`: a [`TokenManager`], a
    /// [`StaticToken`], or your own [`TokenSource`].
    pub fn new(source: Arc<dyn TokenSource>) -> Self {
        Self { source }
    }
}

impl<S> Layer<S> for EvolutionAuthLayer {
    type Service = EvolutionAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EvolutionAuth {
            inner,
            source: Arc::clone(&self.source),
        }
    }
}

/// The service [`EvolutionAuthLayer`] wraps around an inner one.
#[derive(Clone, Debug)]
pub struct EvolutionAuth<S> {
    inner: S,
    source: Arc<dyn TokenSource>,
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
        let ready = std::mem::replace(&mut self.inner, clone);
        let again = ready.clone();
        let source = Arc::clone(&self.source);
        Box::pin(async move {
            let token = source.token().await.map_err(token_error)?;
            let response = send(ready, &request, &token).await?;
            if !is_rejection(response.status()) || !source.refreshes() {
                return Ok(response);
            }
            source.invalidate_token(&token);
            let fresh = source.token().await.map_err(token_error)?;
            if fresh.same_as(&token) {
                // The source has nothing newer; the rejection stands.
                return Ok(response);
            }
            tracing::info!(
                status = response.status().as_u16(),
                rejected_prefix = token.prefix(),
                "the model API rejected the access token; retrying once with a new one"
            );
            drop(response);
            send(again, &request, &fresh).await
        })
    }
}

/// `401` (unknown, expired or revoked token) and `403` (a token the
/// service no longer honours) are what a new token can cure.
fn is_rejection(status: StatusCode) -> bool {
    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
}

/// One attempt through `service`, with `token` as the bearer.
async fn send<S>(
    service: S,
    request: &HttpRequestFactory,
    token: &AccessToken,
) -> Result<Response, OpenAIError>
where
    S: Service<HttpRequestFactory, Response = Response>,
    S::Error: Into<OpenAIError>,
{
    let bearer = bearer_value(token.expose_secret()).ok_or_else(|| {
        OpenAIError::InvalidArgument(
            "the access token contains characters an HTTP header cannot carry".into(),
        )
    })?;
    let original = request.clone();
    // The factory rebuilds the request for each attempt, so the body never
    // needs cloning; ours adds the header to whatever it builds.
    let with_bearer = HttpRequestFactory::new(move || {
        let original = original.clone();
        let bearer = bearer.clone();
        async move {
            let mut built = original.build().await?;
            built.headers_mut().insert(AUTHORIZATION, bearer);
            Ok(built)
        }
    });
    service.oneshot(with_bearer).await.map_err(Into::into)
}

/// Our error, boxed into async-openai's, so callers can downcast it to
/// [`Error`].
fn token_error(error: Error) -> OpenAIError {
    OpenAIError::Boxed(Box::new(error))
}

/// async-openai's client for Cloud.ru with `manager`'s tokens: the default
/// API base, [`EvolutionAuthLayer`] and async-openai's retry layer.
pub fn client(manager: TokenManager) -> Client<EvolutionConfig> {
    client_with_config(EvolutionConfig::from_token_manager(manager))
}

/// async-openai's client for `config`, with [`EvolutionAuthLayer`] (its
/// tokens from [`EvolutionConfig::token_source`]) inside async-openai's
/// retry layer, over one pooled `reqwest::Client`.
pub fn client_with_config(config: EvolutionConfig) -> Client<EvolutionConfig> {
    let http = super::default_http_client();
    let service = tower::ServiceBuilder::new()
        .layer(OpenAIRetryLayer::default())
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
