//! `Connection`: where the model API is, as whom to call it, and how
//! patiently. Every client builder ([`ClientBuilder`](crate::ClientBuilder),
//! whose setters fill it) holds one and turns it into a [`Transport`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::SecretString;

use super::http::{
    base_without_slash, default_client, project_id_header, validate_http_url, PROJECT_ID_HEADER,
};
use super::pipeline::Pipeline;
use super::retry::RetryPolicy;
use super::shared::Buckets;
use super::throttle::{Limits, Throttle, DEFAULT_MAX_RATE_LIMIT_WAIT};
use super::Transport;
use crate::auth::{AccessToken, Credentials, StaticToken, TokenManager, TokenSource};
use crate::config::{EnvAuth, EnvSettings, ENV_API_KEY, ENV_KEY_ID, ENV_SECRET};
use crate::error::{Error, Result};

/// Cloud.ru's public Foundation Models endpoint, used unless `base_url` says
/// otherwise.
pub const DEFAULT_BASE_URL: &str = "https://foundation-models.api.cloud.ru/v1";

/// Default per-attempt timeout for model requests (the original's 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

/// Default limit on a JSON reply of the model API (32 MiB): far above any
/// real answer or embedding batch, low enough that a broken or hostile
/// server cannot exhaust memory. Set with `max_response_size`.
pub const DEFAULT_MAX_RESPONSE_SIZE: usize = 32 * 1024 * 1024;

/// Default limit on one server-sent event of a stream, or one line of it
/// (8 MiB). A chunk holds a few words; set with `max_event_size`.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 8 * 1024 * 1024;

/// How requests are authorized.
#[derive(Clone, Default)]
enum Auth {
    /// Not chosen in code: key id + secret, or `from_env` decides.
    #[default]
    Unset,
    /// A fixed API key.
    ApiKey(AccessToken),
    /// A token source of the caller's.
    Source(Arc<dyn TokenSource>),
    /// No `Authorization` header at all (a model run with auth off).
    Off,
}

/// Connection settings of a client builder.
#[derive(Clone, Default)]
pub(crate) struct Connection {
    /// Key id and secret for IAM, filled field by field by the setters.
    pub(crate) credentials: Credentials,
    auth: Auth,
    pub(crate) base_url: Option<String>,
    pub(crate) auth_url: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) request_timeout: Option<Duration>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) auth_timeout: Option<Duration>,
    pub(crate) auth_max_retries: Option<u32>,
    pub(crate) refresh_buffer: Option<Duration>,
    pub(crate) http_client: Option<reqwest::Client>,
    pub(crate) max_response_size: Option<usize>,
    pub(crate) max_event_size: Option<usize>,
    pub(crate) max_auth_response_size: Option<usize>,
    pub(crate) stream_deadline: Option<Duration>,
    /// Offer HTTP/2 to HTTPS servers (the crate's own client only).
    pub(crate) http2: bool,
    pub(crate) limits: Limits,
    pub(crate) max_rate_limit_wait: Option<Duration>,
    /// Redis for a fleet's limiter and token (feature `redis`).
    #[cfg(feature = "redis")]
    pub(crate) redis_url: Option<String>,
    pub(crate) headers: HeaderMap,
    /// A header that could not be parsed, reported by `build`.
    pub(crate) header_error: Option<Error>,
}

impl Connection {
    pub(crate) fn set_api_key(&mut self, key: SecretString) {
        self.auth = Auth::ApiKey(AccessToken::from_secret(key));
    }

    pub(crate) fn set_token_source(&mut self, source: Arc<dyn TokenSource>) {
        self.auth = Auth::Source(source);
    }

    pub(crate) fn set_no_auth(&mut self) {
        self.auth = Auth::Off;
    }

    pub(crate) fn add_header(&mut self, name: &str, value: &str) {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(name), Ok(value)) => {
                self.headers.insert(name, value);
            }
            _ => {
                self.header_error = Some(Error::config(
                    "default_header",
                    format!("{name:?} is not a valid HTTP header name/value pair"),
                ))
            }
        }
    }

    /// Fills what the code left unset from `EVOLUTION_*` (after `.env`).
    /// Credentials come from the environment only when the code chose no way
    /// of authenticating; an API key and a key id/secret pair both set there
    /// is an error, as nobody can tell which one was meant.
    pub(crate) fn fill_from_env(&mut self, env: &EnvSettings) -> Result<()> {
        let chosen_in_code = !matches!(self.auth, Auth::Unset)
            || !self.credentials.key_id().is_empty()
            || !self.credentials.expose_secret().is_empty();
        if !chosen_in_code {
            match env.auth()? {
                Some(EnvAuth::ApiKey(key)) => self.set_api_key(key),
                Some(EnvAuth::KeyPair { key_id, secret }) => {
                    if let Some(key_id) = key_id {
                        self.credentials.set_key_id(key_id);
                    }
                    if let Some(secret) = secret {
                        self.credentials.set_secret(secret);
                    }
                }
                None => {}
            }
        }
        fill(&mut self.base_url, &env.base_url);
        fill(&mut self.auth_url, &env.auth_url);
        fill(&mut self.project_id, &env.project_id);
        fill(
            &mut self.limits.requests_per_minute,
            &env.requests_per_minute,
        );
        fill(&mut self.limits.tokens_per_minute, &env.tokens_per_minute);
        fill(&mut self.max_rate_limit_wait, &env.max_rate_limit_wait);
        #[cfg(feature = "redis")]
        fill(&mut self.redis_url, &env.redis_url);
        Ok(())
    }

    /// Checks every setting and assembles the transport. Nothing is sent.
    pub(crate) fn into_transport(self) -> Result<Transport> {
        if let Some(error) = self.header_error {
            return Err(error);
        }
        let base_url = self
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .unwrap_or(DEFAULT_BASE_URL);
        validate_http_url("base_url", base_url)?;
        let base_url = base_without_slash(base_url).to_string();

        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(Error::config("request_timeout", "must be longer than zero"));
        }
        for (field, value) in [
            ("max_response_size", self.max_response_size),
            ("max_event_size", self.max_event_size),
            ("max_auth_response_size", self.max_auth_response_size),
        ] {
            if value == Some(0) {
                return Err(Error::config(field, "must be at least 1 byte"));
            }
        }
        if self.stream_deadline.is_some_and(|d| d.is_zero()) {
            return Err(Error::config("stream_deadline", "must be longer than zero"));
        }
        for (field, value) in [
            ("requests_per_minute", self.limits.requests_per_minute),
            ("tokens_per_minute", self.limits.tokens_per_minute),
        ] {
            if value == Some(0) {
                return Err(Error::config(
                    field,
                    "must be at least 1 (leave it unset for no limit)",
                ));
            }
        }
        let has_credentials = !self.credentials.key_id().trim().is_empty()
            || !self.credentials.expose_secret().trim().is_empty();
        #[cfg(feature = "redis")]
        let redis = self
            .redis_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .map(|url| super::redis::RedisStore::open(url).map(Arc::new))
            .transpose()?;
        // What names this key's shared limiter state in Redis, hashed.
        #[cfg(feature = "redis")]
        let scope = match &self.auth {
            Auth::ApiKey(key) => super::redis::scope(&["api-key", key.expose_secret()]),
            _ if has_credentials => super::redis::scope(&["key-id", self.credentials.key_id()]),
            _ => super::redis::scope(&["base-url", &base_url]),
        };
        let client = match self.http_client {
            Some(client) => client,
            None => {
                let mut targets = vec![base_url.as_str()];
                targets.extend(self.auth_url.as_deref());
                default_client(&targets, self.http2)?
            }
        };

        let mut token_manager = None;
        let tokens: Option<Arc<dyn TokenSource>> = match self.auth {
            Auth::Off | Auth::ApiKey(_) | Auth::Source(_) if has_credentials => {
                return Err(Error::config(
                    "api_key",
                    "is set together with a key id/secret (or a token source or no_auth \
                     together with them): choose one way to authenticate",
                ))
            }
            Auth::Off => None,
            Auth::ApiKey(key) if key.expose_secret().trim().is_empty() => {
                return Err(Error::config(
                    "api_key",
                    format!("is empty: pass your API key, or set {ENV_API_KEY}"),
                ))
            }
            Auth::ApiKey(key) => Some(Arc::new(StaticToken::from_token(key))),
            Auth::Source(source) => Some(source),
            Auth::Unset => {
                if !has_credentials {
                    return Err(Error::config(
                        "key_id",
                        format!(
                            "is not set: pass .api_key(...) or .key_id(...) and .secret(...), \
                             or set {ENV_API_KEY} (or {ENV_KEY_ID} and {ENV_SECRET})"
                        ),
                    ));
                }
                let mut manager = TokenManager::builder()
                    .credentials(self.credentials)
                    .http_client(client.clone());
                if let Some(auth_url) = self.auth_url {
                    manager = manager.auth_url(auth_url);
                }
                if let Some(buffer) = self.refresh_buffer {
                    manager = manager.refresh_buffer(buffer);
                }
                if let Some(timeout) = self.auth_timeout {
                    manager = manager.timeout(timeout);
                }
                if let Some(retries) = self.auth_max_retries {
                    manager = manager.max_retries(retries);
                }
                if let Some(limit) = self.max_auth_response_size {
                    manager = manager.max_response_size(limit);
                }
                #[cfg(feature = "redis")]
                if let Some(store) = &redis {
                    manager = manager.redis_store(Arc::clone(store));
                }
                let manager = manager.build()?;
                token_manager = Some(manager.clone());
                Some(Arc::new(manager))
            }
        };

        #[cfg(feature = "redis")]
        let buckets = match redis {
            Some(store) => Buckets::shared(super::redis::RedisBuckets::new(store, &scope)),
            None => Buckets::local(),
        };
        #[cfg(not(feature = "redis"))]
        let buckets = Buckets::local();
        let mut headers = self.headers;
        if let Some(project_id) = self.project_id.filter(|p| !p.trim().is_empty()) {
            headers.insert(PROJECT_ID_HEADER, project_id_header(&project_id)?);
        }
        Ok(Transport {
            client,
            pipeline: Pipeline {
                tokens,
                retry: RetryPolicy::with_max_retries(
                    self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
                ),
                throttle: Arc::new(Throttle::new(
                    self.limits,
                    buckets,
                    self.max_rate_limit_wait
                        .unwrap_or(DEFAULT_MAX_RATE_LIMIT_WAIT),
                )),
            },
            token_manager,
            base_url,
            headers,
            request_timeout,
            max_response_size: self.max_response_size.unwrap_or(DEFAULT_MAX_RESPONSE_SIZE),
            max_event_size: self.max_event_size.unwrap_or(DEFAULT_MAX_EVENT_SIZE),
            stream_deadline: self.stream_deadline,
            json_schema_refused: Default::default(),
        })
    }
}

fn fill<T: Clone>(slot: &mut Option<T>, from: &Option<T>) {
    if slot.is_none() {
        slot.clone_from(from);
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::Unset => "key id + secret",
            Auth::ApiKey(_) => "api key <redacted>",
            Auth::Source(_) => "token source",
            Auth::Off => "none",
        };
        f.debug_struct("Connection")
            .field("credentials", &self.credentials)
            .field("auth", &auth)
            .field("base_url", &self.base_url)
            .field("auth_url", &self.auth_url)
            .field("project_id", &self.project_id)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("max_response_size", &self.max_response_size)
            .field("max_event_size", &self.max_event_size)
            .field("stream_deadline", &self.stream_deadline)
            .field("limits", &self.limits)
            .field("max_rate_limit_wait", &self.max_rate_limit_wait)
            .finish_non_exhaustive()
    }
}
