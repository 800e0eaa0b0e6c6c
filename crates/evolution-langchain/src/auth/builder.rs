//! `TokenManagerBuilder`: every setting of a [`TokenManager`], checked once.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use super::cache::CacheSettings;
use super::credentials::Credentials;
use super::iam::{DEFAULT_AUTH_URL, DEFAULT_MAX_AUTH_RESPONSE_SIZE};
use super::iam_fetcher::{IamFetcher, IamSettings};
use super::token_manager::{TokenManager, DEFAULT_AUTH_TIMEOUT, DEFAULT_REFRESH_BUFFER};
use crate::error::Result;
use crate::flavor::Async;
use crate::transport::retry::RetryPolicy;

/// Settings for a [`TokenManager`]; methods are named after the fields.
///
/// `M` says what `build` returns: the async manager (the default), or with
/// [`Blocking`](crate::flavor::Blocking) the
/// [blocking](crate::blocking::TokenManager) one; the setters are the same.
#[derive(Clone)]
pub struct TokenManagerBuilder<M = Async> {
    credentials: Credentials,
    fallbacks: Vec<Credentials>,
    auth_url: Option<String>,
    refresh_buffer: Option<Duration>,
    refresh_ahead: Option<Duration>,
    timeout: Option<Duration>,
    retry: Option<RetryPolicy>,
    http_client: Option<reqwest::Client>,
    max_response_size: Option<usize>,
    /// Redis for a fleet's shared token: a URL, or a connection shared with
    /// a client's rate limiter.
    #[cfg(feature = "redis")]
    redis: Option<Redis>,
    flavor: PhantomData<M>,
}

/// Where a fleet's token lives.
#[cfg(feature = "redis")]
#[derive(Clone, Debug)]
enum Redis {
    Url(String),
    Store(std::sync::Arc<crate::transport::redis::RedisStore>),
}

impl<M> Default for TokenManagerBuilder<M> {
    fn default() -> Self {
        Self {
            credentials: Credentials::default(),
            fallbacks: Vec::new(),
            auth_url: None,
            refresh_buffer: None,
            refresh_ahead: None,
            timeout: None,
            retry: None,
            http_client: None,
            max_response_size: None,
            #[cfg(feature = "redis")]
            redis: None,
            flavor: PhantomData,
        }
    }
}

impl<M> TokenManagerBuilder<M> {
    /// The access key id.
    pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
        self.credentials.set_key_id(key_id.into());
        self
    }

    /// The access key secret.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.credentials.set_secret(secret.into().into());
        self
    }

    /// Key id and secret together (instead of `key_id` + `secret`).
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Backup credentials, tried in the order added when IAM refuses the
    /// ones before them (401/403).
    pub fn fallback_credentials(mut self, credentials: Credentials) -> Self {
        self.fallbacks.push(credentials);
        self
    }

    /// The IAM token endpoint; defaults to [`DEFAULT_AUTH_URL`].
    pub fn auth_url(mut self, auth_url: impl Into<String>) -> Self {
        self.auth_url = Some(auth_url.into());
        self
    }

    /// How long before expiry a token is treated as expired
    /// (default [`DEFAULT_REFRESH_BUFFER`]).
    pub fn refresh_buffer(mut self, refresh_buffer: Duration) -> Self {
        self.refresh_buffer = Some(refresh_buffer);
        self
    }

    /// How long before the buffer a background refresh starts while callers
    /// keep using the current token (default: as long as the buffer; at most
    /// a quarter of the token's usable life). `Duration::ZERO` turns
    /// refresh-ahead off.
    pub fn refresh_ahead(mut self, refresh_ahead: Duration) -> Self {
        self.refresh_ahead = Some(refresh_ahead);
        self
    }

    /// Timeout for each request to IAM (default [`DEFAULT_AUTH_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How transient failures are retried (default: 2 retries, exponential
    /// backoff with full jitter).
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Retries of a failed token request (default 2; 0 sends it once): the
    /// [`RetryPolicy`] with this `max_retries`.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        let policy = self.retry.take().unwrap_or_default();
        self.retry = Some(RetryPolicy {
            max_retries,
            ..policy
        });
        self
    }

    /// The HTTP client to use (default: a pooled client of the crate's own).
    ///
    /// The crate's own client follows no redirect to another origin, so the
    /// key secret in the request body goes to `auth_url` only. Yours follows
    /// its own policy (reqwest's default: any origin, re-sending the body on
    /// 307/308); a reply that came from elsewhere is still refused
    /// ([`AuthError::Redirected`](crate::AuthError::Redirected)), but the
    /// secret has been sent by then. Give it
    /// `.redirect(reqwest::redirect::Policy::none())`.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Largest IAM reply read, in bytes (default
    /// [`DEFAULT_MAX_AUTH_RESPONSE_SIZE`], 64 KiB). A larger one is
    /// [`AuthError::TooLarge`](crate::AuthError::TooLarge), read no further.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.max_response_size = Some(bytes);
        self
    }

    /// Same settings, another kind of manager.
    #[cfg(feature = "blocking")]
    pub(crate) fn into_flavor<N>(self) -> TokenManagerBuilder<N> {
        TokenManagerBuilder {
            credentials: self.credentials,
            fallbacks: self.fallbacks,
            auth_url: self.auth_url,
            refresh_buffer: self.refresh_buffer,
            refresh_ahead: self.refresh_ahead,
            timeout: self.timeout,
            retry: self.retry,
            http_client: self.http_client,
            max_response_size: self.max_response_size,
            #[cfg(feature = "redis")]
            redis: self.redis,
            flavor: PhantomData,
        }
    }

    /// Shares the token with every process using the same key id and IAM
    /// URL through the Redis server at `url` (`redis://host:port[/db]`,
    /// `rediss://` for TLS; feature `redis`): the fleet makes one IAM
    /// request per token lifetime. The token is stored encrypted with a key
    /// derived from the secret, with its expiry as the key's TTL; see
    /// `EVOLUTION_REDIS_URL` for clients. While Redis cannot answer, each
    /// process fetches its own.
    #[cfg(feature = "redis")]
    pub fn redis_url(mut self, url: impl Into<String>) -> Self {
        self.redis = Some(Redis::Url(url.into()));
        self
    }

    /// Shares the token through `store` (a client's connection).
    #[cfg(feature = "redis")]
    pub(crate) fn redis_store(
        mut self,
        store: std::sync::Arc<crate::transport::redis::RedisStore>,
    ) -> Self {
        self.redis = Some(Redis::Store(store));
        self
    }

    /// Checks the settings and creates the async manager.
    pub(crate) fn build_async(self) -> Result<TokenManager> {
        let manager = self.assemble();
        match manager.fetcher().config_error() {
            Some(error) => Err(error.clone()),
            None => Ok(manager),
        }
    }

    /// The manager these settings describe; a problem with them is kept by
    /// the fetcher and reported by the first `get_token`.
    pub(super) fn assemble(self) -> TokenManager {
        let refresh_buffer = self.refresh_buffer.unwrap_or(DEFAULT_REFRESH_BUFFER);
        let (client, client_error) = match self.http_client {
            Some(client) => (client, None),
            None => {
                let targets: Vec<&str> = self.auth_url.as_deref().into_iter().collect();
                match crate::transport::http::default_client(&targets, false) {
                    Ok(client) => (client, None),
                    Err(error) => (reqwest::Client::new(), Some(error)),
                }
            }
        };
        let refresh_ahead = self.refresh_ahead.unwrap_or(refresh_buffer);
        let auth_url = self
            .auth_url
            .unwrap_or_else(|| DEFAULT_AUTH_URL.to_string());
        #[cfg(feature = "redis")]
        let (store, client_error) = match self.redis {
            None => (None, client_error),
            Some(Redis::Store(store)) => (Some(store), client_error),
            Some(Redis::Url(url)) => match crate::transport::redis::RedisStore::open(&url) {
                Ok(store) => (Some(std::sync::Arc::new(store)), client_error),
                Err(error) => (None, client_error.or(Some(error))),
            },
        };
        let mut credentials = vec![self.credentials];
        credentials.extend(self.fallbacks);
        #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
        let mut settings = IamSettings {
            credentials,
            auth_url,
            timeout: self.timeout.unwrap_or(DEFAULT_AUTH_TIMEOUT),
            retry: self.retry.unwrap_or_default(),
            client,
            max_response_size: self
                .max_response_size
                .unwrap_or(DEFAULT_MAX_AUTH_RESPONSE_SIZE),
            #[cfg(feature = "redis")]
            shared: None,
        };
        #[cfg(feature = "redis")]
        if let Some(store) = store {
            // The lock and the wait for another process's exchange are
            // measured by how long one exchange of these settings can take.
            settings.shared = Some(super::shared::SharedToken::new(
                store,
                &settings.credentials[0],
                &settings.auth_url,
                // Less than this left, the cache would refresh at once.
                refresh_buffer + refresh_ahead + Duration::from_secs(5),
                settings.longest_exchange(),
            ));
        }
        let fetcher = IamFetcher::new(settings, client_error);
        TokenManager::from_parts(
            fetcher,
            CacheSettings {
                refresh_buffer,
                refresh_ahead,
                ..CacheSettings::default()
            },
        )
    }
}

impl TokenManagerBuilder<Async> {
    /// Checks the settings and creates the manager. Nothing is sent yet.
    pub fn build(self) -> Result<TokenManager> {
        self.build_async()
    }
}

impl<M> fmt::Debug for TokenManagerBuilder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManagerBuilder")
            .field("credentials", &self.credentials)
            .field("fallbacks", &self.fallbacks)
            .field("auth_url", &self.auth_url)
            .field("refresh_buffer", &self.refresh_buffer)
            .finish_non_exhaustive()
    }
}
