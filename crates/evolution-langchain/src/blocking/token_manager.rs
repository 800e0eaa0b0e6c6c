//! Blocking `TokenManager` and its builder.

use super::{call, runtime, wait};
use crate::auth::{AccessToken, TokenInfo};
use crate::error::Result;
use crate::flavor::{Async, Blocking};

/// Blocking counterpart of [`crate::TokenManager`]. Cloning shares the
/// cache; clones may be used from many threads at once.
#[derive(Debug, Clone)]
pub struct TokenManager {
    inner: crate::auth::TokenManager,
}

/// Blocking counterpart of [`crate::TokenManagerBuilder`]: the same type
/// and setters; `build` returns the blocking manager.
pub type TokenManagerBuilder = crate::auth::TokenManagerBuilder<Blocking>;

impl crate::auth::TokenManagerBuilder<Blocking> {
    /// Checks the settings and creates the blocking manager.
    pub fn build(self) -> Result<TokenManager> {
        Ok(TokenManager {
            inner: self.build_async()?,
        })
    }
}

impl crate::auth::TokenManagerBuilder<Async> {
    /// Checks the settings and creates a [blocking](TokenManager) manager
    /// (the same as building through [`TokenManager::builder`]).
    pub fn build_blocking(self) -> Result<TokenManager> {
        self.into_flavor::<Blocking>().build()
    }
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

    /// A builder with the same setters as [`crate::TokenManagerBuilder`].
    pub fn builder() -> TokenManagerBuilder {
        TokenManagerBuilder::default()
    }

    /// Wraps an async manager, sharing its cache.
    pub fn from_async(inner: crate::auth::TokenManager) -> Self {
        Self { inner }
    }

    /// The async manager behind this facade (shares the cache).
    pub fn as_async(&self) -> &crate::auth::TokenManager {
        &self.inner
    }

    /// See [`crate::TokenManager::get_token`].
    pub fn get_token(&self) -> Result<AccessToken> {
        call!(self, |manager| manager.get_token())
    }

    /// See [`crate::TokenManager::cached_token`]; a background refresh it
    /// starts runs on the facade's runtime.
    pub fn cached_token(&self) -> Option<AccessToken> {
        match runtime() {
            Ok(runtime) => {
                let _context = runtime.enter();
                self.inner.cached_token()
            }
            Err(_) => self.inner.cached_token(),
        }
    }

    /// See [`crate::TokenManager::invalidate`].
    pub fn invalidate(&self) {
        self.inner.invalidate();
    }

    /// See [`crate::TokenManager::invalidate_token`].
    pub fn invalidate_token(&self, rejected: &AccessToken) {
        self.inner.invalidate_token(rejected);
    }

    /// See [`crate::TokenManager::info`].
    pub fn info(&self) -> TokenInfo {
        self.inner.info()
    }

    /// See [`crate::TokenManager::stats`].
    pub fn stats(&self) -> crate::auth::TokenStats {
        self.inner.stats()
    }

    /// See [`crate::TokenManager::auth_url`].
    pub fn auth_url(&self) -> &str {
        self.inner.auth_url()
    }
}
