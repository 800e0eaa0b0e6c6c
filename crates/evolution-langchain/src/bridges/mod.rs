//! Bridges to other Rust LLM libraries: our token management plugged into
//! their own extension points, so programs written against them reach
//! Cloud.ru with a key id and secret as easily as with an API key.
//!
//! - `async_openai` (feature `async-openai`): a `Config` and a tower
//!   layer for async-openai's client.
//! - `rig` (feature `rig`): completion and embedding models and agents
//!   for rig (rig-core / rig-agent 0.46).
//! - `genai` (feature `genai`): resolvers for genai's client (genai 0.7).

#[cfg(feature = "async-openai")]
pub mod async_openai;
#[cfg(feature = "genai")]
pub mod genai;
#[cfg(feature = "rig")]
pub mod rig;

use std::sync::Arc;

use crate::auth::{AccessToken, StaticToken, TokenManager, TokenSource};
use crate::config::{EnvAuth, EnvSettings, ENV_API_KEY, ENV_KEY_ID, ENV_SECRET};
use crate::error::{Error, Result};

/// Where a bridge built from the environment gets its bearer.
pub(crate) enum EnvSource {
    /// An API key, sent as it is.
    ApiKey(secrecy::SecretString),
    /// A token manager for the key id and secret (and `EVOLUTION_TOKEN_URL`).
    Manager(TokenManager),
}

impl EnvSource {
    /// The token source this stands for.
    pub(crate) fn into_token_source(self) -> Arc<dyn TokenSource> {
        match self {
            EnvSource::ApiKey(key) => api_key_source(key),
            EnvSource::Manager(manager) => Arc::new(manager),
        }
    }
}

/// A fixed API key as a token source.
pub(crate) fn api_key_source(key: secrecy::SecretString) -> Arc<dyn TokenSource> {
    Arc::new(StaticToken::from_token(AccessToken::from_secret(key)))
}

/// The bridges' reading of the environment: an API key or a key id +
/// secret, never both (the same rule as the clients' `from_env`).
pub(crate) fn env_source(env: &EnvSettings) -> Result<EnvSource> {
    match env.auth()? {
        Some(EnvAuth::ApiKey(key)) => Ok(EnvSource::ApiKey(key)),
        Some(EnvAuth::KeyPair { key_id, secret }) => {
            let mut manager = TokenManager::builder().key_id(key_id.unwrap_or_default());
            if let Some(secret) = secret {
                manager = manager.secret(secrecy::ExposeSecret::expose_secret(&secret));
            }
            if let Some(auth_url) = &env.auth_url {
                manager = manager.auth_url(auth_url);
            }
            Ok(EnvSource::Manager(manager.build()?))
        }
        None => Err(Error::Config {
            field: ENV_API_KEY.to_string(),
            message: format!(
                "is not set, nor are {ENV_KEY_ID} and {ENV_SECRET}: set an API key or \
                 a key id and secret (in the environment or .env)"
            ),
        }),
    }
}

/// The HTTP client a bridge uses unless given one: this crate's default
/// client (the process's shared TLS setup, HTTP/1.1, same-origin redirects
/// only, a connect timeout); `reqwest::Client::default()` if that cannot be
/// built.
pub(crate) fn default_http_client() -> reqwest::Client {
    crate::transport::http::default_client(&[], false).unwrap_or_default()
}
