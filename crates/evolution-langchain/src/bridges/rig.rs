//! [rig](https://docs.rs/rig-core) on Cloud.ru Foundation Models: rig's own
//! OpenAI Chat Completions and embeddings wires, and rig's agents, with
//! our IAM tokens. Feature `rig` (rig-core, rig-agent and rig-reqwest
//! 0.46, which ask for Rust 1.97.1).
//!
//! rig 0.46 builds every OpenAI-shaped provider the same way: an
//! [`OpenAIConfig`] (base URL, credential, a [`Dialect`] of wire quirks)
//! connected to an HTTP transport gives an [`OpenAI`] client whose
//! `chat(model)` and `embedding(model, ndims)` are [`Model`]s, and
//! `rig_agent::AgentBuilder::new(model)` makes an agent of a chat model.
//! [`EvolutionRig`] follows that way and fills the one gap: rig's
//! credential is a fixed string, while a key id + secret gives IAM tokens
//! that expire. So the configuration carries no key, and the transport is
//! rig's own reqwest transport ([`rig_reqwest::ReqwestClient`]) inside this
//! crate's request pipeline, the one
//! [`EvolutionInference`](crate::EvolutionInference) uses: a current bearer
//! (and the optional `x-project-id`) on every attempt, one refresh and one
//! more attempt when the API rejects the token (`401`/`403`), retries of
//! `408`, `429`, `5xx` and failed connections with backoff and full jitter
//! (the server's `Retry-After` honoured up to a cap), and one `X-Request-ID`
//! per call. A stream is retried only until it opens; an upload is sent
//! whole again on each attempt.
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

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Request, Response};
use rig_core::driver::Model;
use rig_core::http_client::{
    self, DynHttpClient, HttpClientExt, LazyBody, MultipartForm, StreamingResponse,
};
use rig_core::providers::openai::wire::{Auth, Chat, Dialect, Embeddings, Quirks, Transcriptions};
use rig_core::providers::openai::{OpenAI, OpenAIConfig};
use secrecy::SecretString;

use crate::auth::{TokenManager, TokenSource};
use crate::config::{EnvSettings, ENV_API_KEY};
use crate::error::{Error, Result};
use crate::transport::http::{base_without_slash, PROJECT_ID_HEADER};
use crate::transport::pipeline::{
    new_request_id, verdict_for_send_error, verdict_for_status, Attempt, Pipeline, Verdict,
};
use crate::transport::throttle::Throttle;
use crate::{RetryPolicy, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES};

pub use ::rig_agent;
pub use ::rig_core;

/// The provider name rig records for replies of this client.
pub const PROVIDER_NAME: &str = "cloudru";

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
    /// Shared by clones and every model made from this provider.
    throttle: Arc<Throttle>,
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
            throttle: Arc::new(Throttle::unlimited()),
        }
    }

    /// A provider with IAM tokens from `manager` (key id + secret).
    pub fn from_token_manager(manager: TokenManager) -> Self {
        Self::from_token_source(Arc::new(manager))
    }

    /// A provider with a fixed API key.
    pub fn from_api_key(api_key: impl Into<String>) -> Self {
        Self::from_token_source(super::api_key_source(SecretString::from(api_key.into())))
    }

    /// A provider from the `EVOLUTION_*` variables (and `.env`): an API
    /// key or a key id + secret (not both), and the optional base URL,
    /// token URL and project id.
    pub fn from_env() -> Result<Self> {
        let env = EnvSettings::read()?;
        let mut rig = Self::from_token_source(super::env_source(&env)?.into_token_source());
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
        self.base_url = base_without_slash(&base_url.into()).to_string();
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

    /// How often a `408`, `429`, `5xx` (but `501`/`505`), a timeout or a
    /// failed connection is retried ([`DEFAULT_MAX_RETRIES`] unless set;
    /// `0` turns it off), as with the crate's own clients.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The API base requests go to.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// rig's transport for Cloud.ru: rig's reqwest transport inside this
    /// crate's request pipeline (see the [module docs](self)).
    pub fn transport(&self) -> DynHttpClient {
        DynHttpClient::new(PipelineHttp {
            inner: DynHttpClient::new(rig_reqwest::ReqwestClient::from(self.http.clone())),
            pipeline: Pipeline {
                tokens: Some(Arc::clone(&self.source)),
                retry: RetryPolicy::with_max_retries(self.max_retries),
                throttle: Arc::clone(&self.throttle),
            },
            project_id: self.project_id.clone(),
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

    /// The transcription model `model` (`/audio/transcriptions`, Whisper:
    /// `openai/whisper-large-v3` on Cloud.ru): the upload goes through the
    /// pipeline, sent whole again on each attempt.
    pub fn transcription_model(&self, model: impl Into<String>) -> Model<Transcriptions> {
        self.client().transcription(model)
    }

    /// A rig agent builder on the chat model `model` (rig's typed output,
    /// `output_schema` / `prompt_typed`, works through it: the schema goes
    /// as a `json_schema` response format).
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

/// rig's transport inside the request pipeline: each attempt is the same
/// request again, with the attempt's bearer and request id (and the
/// project header).
#[derive(Clone)]
struct PipelineHttp {
    inner: DynHttpClient,
    pipeline: Pipeline,
    project_id: Option<HeaderValue>,
}

/// The pipeline's view of an attempt: rig's transport turns a non-2xx reply
/// into an error that keeps its status and headers.
fn judge<R>(outcome: &http_client::Result<R>) -> Verdict {
    let Err(error) = outcome else {
        return Verdict::Success;
    };
    if let Some(status) = error.non_success_status() {
        let none = HeaderMap::new();
        return verdict_for_status(status, error.non_success_headers().unwrap_or(&none));
    }
    match error {
        http_client::Error::Instance(inner) => match inner.downcast_ref::<reqwest::Error>() {
            Some(e) => verdict_for_send_error(e),
            None => Verdict::Done,
        },
        _ => Verdict::Done,
    }
}

/// A token that could not be had, as rig's error (callers can downcast it
/// to [`Error`]).
fn token_error(error: Error) -> http_client::Error {
    http_client::Error::Instance(Box::new(error))
}

impl PipelineHttp {
    /// Runs `attempt` through the pipeline with a copy of the request's
    /// head and body for each attempt.
    async fn run<B: Clone, R, F, Fut>(
        self,
        parts: http::request::Parts,
        body: B,
        attempt: F,
    ) -> http_client::Result<R>
    where
        F: Fn(DynHttpClient, Request<B>) -> Fut,
        Fut: Future<Output = http_client::Result<R>>,
    {
        let what = parts.uri.to_string();
        let request_id = new_request_id();
        self.pipeline
            .run(
                &what,
                &request_id,
                0,
                |headers: Attempt| {
                    attempt(
                        self.inner.clone(),
                        self.rebuild(&parts, body.clone(), &headers),
                    )
                },
                judge,
                token_error,
            )
            .await
            .outcome
    }

    /// The same request again: method, URI, version and headers, with the
    /// attempt's own headers set.
    fn rebuild<B>(&self, parts: &http::request::Parts, body: B, attempt: &Attempt) -> Request<B> {
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = parts.uri.clone();
        *request.version_mut() = parts.version;
        *request.headers_mut() = parts.headers.clone();
        attempt.apply(request.headers_mut());
        if let Some(project_id) = &self.project_id {
            request
                .headers_mut()
                .insert(PROJECT_ID_HEADER, project_id.clone());
        }
        request
    }
}

impl HttpClientExt for PipelineHttp {
    fn send<T, U>(
        &self,
        req: Request<T>,
    ) -> impl Future<Output = http_client::Result<Response<LazyBody<U>>>> + Send + 'static
    where
        T: Into<Bytes> + Send,
        U: From<Bytes> + Send + 'static,
    {
        let (parts, body) = req.into_parts();
        let body: Bytes = body.into();
        self.clone().run(parts, body, |inner, request| async move {
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
        let (parts, form) = req.into_parts();
        self.clone().run(parts, form, |inner, request| async move {
            inner.send_multipart::<U>(request).await
        })
    }

    fn send_streaming<T>(
        &self,
        req: Request<T>,
    ) -> impl Future<Output = http_client::Result<StreamingResponse>> + Send
    where
        T: Into<Bytes> + Send,
    {
        let (parts, body) = req.into_parts();
        let body: Bytes = body.into();
        self.clone().run(parts, body, |inner, request| async move {
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
