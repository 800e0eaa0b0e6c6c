//! [genai](https://docs.rs/genai) on Cloud.ru Foundation Models: genai's
//! own `Client`, `exec_chat`, `exec_chat_stream` and `embed`, with our IAM
//! tokens. Feature `genai` (genai 0.7).
//!
//! genai takes its credentials and its target from two resolvers, and
//! [`EvolutionGenai`] provides both:
//!
//! - an async **auth resolver** that awaits our [`TokenSource`] (a
//!   [`TokenManager`] for a key id and secret, or an API key) before every
//!   request: a valid token from the cache, a refresh when it nears its
//!   expiry, one IAM request however many tasks ask;
//! - a **service target resolver** that sends every model, whatever its
//!   name (Cloud.ru's ids contain `/`, e.g. `openai/gpt-oss-120b`), to the
//!   OpenAI-compatible adapter at the Cloud.ru base URL
//!   ([`DEFAULT_BASE_URL`] unless set).
//!
//! genai has no hook around its HTTP requests, so this crate's request
//! pipeline cannot wrap them as it does for async-openai and rig: a `401`
//! after a revocation, a `429` or a `5xx` comes back as genai's error (the
//! next request gets a current token). Use
//! [`EvolutionInference`](crate::EvolutionInference), or the async-openai
//! or rig bridges, where those matter.
//!
//! ```no_run
//! use evolution_langchain::bridges::genai::EvolutionGenai;
//! use evolution_langchain::bridges::genai::genai::chat::{ChatMessage, ChatRequest};
//! use evolution_langchain::TokenManager;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let genai = EvolutionGenai::from_token_manager(TokenManager::new("my-key-id", "my-secret"))
//!     .client()?;
//! let request = ChatRequest::new(vec![ChatMessage::user("Hello!")]);
//! let reply = genai.exec_chat("openai/gpt-oss-120b", request, None).await?; // genai's own call
//! println!("{:?}", reply.first_text());
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ::genai::adapter::AdapterKind;
use ::genai::resolver::{AuthData, AuthResolver, Endpoint, ServiceTargetResolver};
use ::genai::{Client, ClientBuilder, ModelIden, ServiceTarget};
use secrecy::SecretString;

use crate::auth::{TokenManager, TokenSource};
use crate::config::EnvSettings;
use crate::error::Result;
use crate::transport::http::base_without_slash;
use crate::DEFAULT_BASE_URL;

/// The genai this bridge is built against, so users get a matching version.
pub use ::genai;

/// genai's resolvers for Cloud.ru Foundation Models, and a genai `Client`
/// made with them. Cheap to clone; clones share the token source.
#[derive(Clone)]
pub struct EvolutionGenai {
    /// With a trailing slash, as genai joins paths to it.
    base_url: Arc<str>,
    source: Arc<dyn TokenSource>,
}

impl EvolutionGenai {
    /// Tokens from `source` (checked before every request).
    pub fn from_token_source(source: Arc<dyn TokenSource>) -> Self {
        Self {
            base_url: with_slash(DEFAULT_BASE_URL),
            source,
        }
    }

    /// IAM tokens from `manager` (key id + secret).
    pub fn from_token_manager(manager: TokenManager) -> Self {
        Self::from_token_source(Arc::new(manager))
    }

    /// A fixed API key.
    pub fn from_api_key(api_key: impl Into<String>) -> Self {
        Self::from_token_source(super::api_key_source(SecretString::from(api_key.into())))
    }

    /// From the `EVOLUTION_*` variables (and `.env`): an API key or a key
    /// id + secret (not both), the optional base URL and token URL.
    pub fn from_env() -> Result<Self> {
        let env = EnvSettings::read()?;
        let genai = Self::from_token_source(super::env_source(&env)?.into_token_source());
        Ok(match &env.base_url {
            Some(base_url) => genai.with_base_url(base_url),
            None => genai,
        })
    }

    /// The API base, e.g. `https://…/v1` ([`DEFAULT_BASE_URL`] unless set).
    pub fn with_base_url(mut self, base_url: impl AsRef<str>) -> Self {
        self.base_url = with_slash(base_url.as_ref());
        self
    }

    /// The API base requests go to (with a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// genai's auth resolver: a current bearer from the token source for
    /// every request. A token that cannot be had is genai's resolver error,
    /// with our error's message (never a secret).
    pub fn auth_resolver(&self) -> AuthResolver {
        let source = Arc::clone(&self.source);
        AuthResolver::from_resolver_async_fn(
            move |_model: ModelIden| -> Pin<
                Box<dyn Future<Output = ::genai::resolver::Result<Option<AuthData>>> + Send>,
            > {
                let source = Arc::clone(&source);
                Box::pin(async move {
                    let token = source
                        .token()
                        .await
                        .map_err(|e| ::genai::resolver::Error::Custom(e.to_string()))?;
                    Ok(Some(AuthData::from_single(token.expose_secret())))
                })
            },
        )
    }

    /// genai's service target resolver: every model goes to the
    /// OpenAI-compatible adapter at this base URL, under its own name.
    pub fn target_resolver(&self) -> ServiceTargetResolver {
        let base_url = Arc::clone(&self.base_url);
        ServiceTargetResolver::from_resolver_fn(
            move |target: ServiceTarget| -> ::genai::resolver::Result<ServiceTarget> {
                Ok(ServiceTarget {
                    endpoint: Endpoint::from_owned(Arc::clone(&base_url)),
                    auth: target.auth,
                    model: ModelIden::new(AdapterKind::OpenAI, target.model.model_name),
                })
            },
        )
    }

    /// A genai client builder with both resolvers and this crate's HTTP
    /// client (the process's shared TLS setup, same-origin redirects only).
    pub fn client_builder(&self) -> ClientBuilder {
        Client::builder()
            .with_reqwest(super::default_http_client())
            .with_auth_resolver(self.auth_resolver())
            .with_service_target_resolver(self.target_resolver())
    }

    /// A genai client on Cloud.ru. genai's own setup failing is an
    /// [`Error::Config`](crate::Error::Config).
    pub fn client(&self) -> Result<Client> {
        self.client_builder()
            .build()
            .map_err(|e| crate::Error::Config {
                field: "genai".into(),
                message: format!("client could not be built: {e}"),
            })
    }
}

impl fmt::Debug for EvolutionGenai {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvolutionGenai")
            .field("base_url", &self.base_url)
            .field("source", &self.source)
            .finish()
    }
}

fn with_slash(base_url: &str) -> Arc<str> {
    format!("{}/", base_without_slash(base_url)).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key_and_the_base_ends_in_a_slash() {
        let genai = EvolutionGenai::from_api_key("sk-very-secret").with_base_url("http://h:1/v1");
        assert_eq!(genai.base_url(), "http://h:1/v1/");
        assert!(!format!("{genai:?}").contains("very-secret"));
    }
}
