//! Blocking `TokenManager` and its builder.

use std::time::Duration;

use super::wait;
use crate::auth::{AccessToken, Credentials, TokenInfo, TokenStats};
use crate::error::Result;
use crate::transport::retry::RetryPolicy;

/// Blocking counterpart of [`crate::TokenManager`]. Cloning shares the
/// cache; clones may be used from many threads at once.
#[derive(Debug, Clone)]
pub struct TokenManager {
    inner: crate::auth::TokenManager,
}

impl TokenManager {
    /// A manager for the Cloud.ru IAM endpoint with default settings; as in
    /// the async API, empty credentials are reported by the first
    /// [`get_token`](Self::get_token).
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            inner: crate::auth::TokenManager::new(key_id, secret),
        }
    }

    /// A builder for every setting.
    pub fn builder() -> TokenManagerBuilder {
        TokenManagerBuilder(crate::auth::TokenManager::builder())
    }

    /// Wraps an async manager, sharing its cache.
    pub fn from_async(inner: crate::auth::TokenManager) -> Self {
        Self { inner }
    }

    /// A valid access token; see [`crate::TokenManager::get_token`].
    pub fn get_token(&self) -> Result<AccessToken> {
        let inner = self.inner.clone();
        wait(async move { inner.get_token().await })?
    }

    /// Forgets the cached token.
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// Forgets the cached token if it is `rejected` (and not a newer one).
    pub fn invalidate_token(&self, rejected: &AccessToken) {
        self.inner.invalidate_token(rejected);
    }

    /// The IAM endpoint in use.
    pub fn auth_url(&self) -> &str {
        self.inner.auth_url()
    }

    /// The cached token's state, without revealing it.
    pub fn info(&self) -> TokenInfo {
        self.inner.info()
    }

    /// Counters and averages over all refreshes so far.
    pub fn stats(&self) -> TokenStats {
        self.inner.stats()
    }

    /// The async manager behind this facade (shares the cache).
    pub fn as_async(&self) -> &crate::auth::TokenManager {
        &self.inner
    }
}

/// Blocking counterpart of [`crate::TokenManagerBuilder`]; same methods.
#[derive(Debug, Clone)]
pub struct TokenManagerBuilder(crate::auth::TokenManagerBuilder);

impl TokenManagerBuilder {
    /// The access key id.
    pub fn key_id(self, key_id: impl Into<String>) -> Self {
        Self(self.0.key_id(key_id))
    }
    /// The access key secret.
    pub fn secret(self, secret: impl Into<String>) -> Self {
        Self(self.0.secret(secret))
    }
    /// Key id and secret together.
    pub fn credentials(self, credentials: Credentials) -> Self {
        Self(self.0.credentials(credentials))
    }
    /// Backup credentials, used when IAM refuses the ones before them.
    pub fn fallback_credentials(self, credentials: Credentials) -> Self {
        Self(self.0.fallback_credentials(credentials))
    }
    /// The IAM token endpoint.
    pub fn auth_url(self, auth_url: impl Into<String>) -> Self {
        Self(self.0.auth_url(auth_url))
    }
    /// How long before expiry a token is treated as expired.
    pub fn refresh_buffer(self, refresh_buffer: Duration) -> Self {
        Self(self.0.refresh_buffer(refresh_buffer))
    }
    /// How long before the buffer a background refresh starts.
    pub fn refresh_ahead(self, refresh_ahead: Duration) -> Self {
        Self(self.0.refresh_ahead(refresh_ahead))
    }
    /// Timeout for each request to IAM.
    pub fn timeout(self, timeout: Duration) -> Self {
        Self(self.0.timeout(timeout))
    }
    /// How transient failures are retried.
    pub fn retry(self, retry: RetryPolicy) -> Self {
        Self(self.0.retry(retry))
    }
    /// Retries of a failed token request.
    pub fn max_retries(self, max_retries: u32) -> Self {
        Self(self.0.max_retries(max_retries))
    }
    /// The HTTP client to use.
    pub fn http_client(self, client: reqwest::Client) -> Self {
        Self(self.0.http_client(client))
    }
    /// Checks the settings and creates the manager.
    pub fn build(self) -> Result<TokenManager> {
        Ok(TokenManager {
            inner: self.0.build()?,
        })
    }
}
