//! `TokenManager`: IAM access tokens for an access key, cached and refreshed
//! so callers never see one expire. It is a [`TokenCache`] around an
//! [`IamFetcher`]: the cache decides when to fetch, the fetcher how.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use super::builder::TokenManagerBuilder;
use super::cache::{CacheSettings, TokenCache};
use super::iam_fetcher::IamFetcher;
use super::source::TokenSource;
use super::stats::{TokenInfo, TokenStats};
use super::token::AccessToken;
use crate::error::Result;

pub use super::cache::DEFAULT_REFRESH_BUFFER;

/// Per-request timeout for IAM. IAM answers in milliseconds; ten seconds
/// tolerates a slow network without stalling callers for a minute.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// Obtains IAM access tokens for an access key and keeps a valid one cached.
///
/// - a *fresh* token costs one atomic load and a clock comparison, no lock;
/// - in the refresh-ahead window before the buffer, callers keep the current
///   token while one background refresh runs;
/// - a stale or missing token is fetched once for all concurrent callers;
///   a caller that gives up does not cancel the fetch.
///
/// Cloning is cheap and shares the cache: give every task a clone.
///
/// ```no_run
/// # async fn run() -> evolution_langchain::Result<()> {
/// use evolution_langchain::TokenManager;
///
/// let manager = TokenManager::new("my-key-id", "my-secret");
/// let token = manager.get_token().await?; // authenticates on first use
/// let request = reqwest::Client::new()
///     .get("https://example.invalid/api")
///     .bearer_auth(token.expose_secret());
/// # let _ = request;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TokenManager {
    cache: TokenCache<IamFetcher>,
}

impl TokenManager {
    /// A manager for the Cloud.ru IAM endpoint with default settings.
    ///
    /// Empty credentials are reported by the first [`get_token`](Self::get_token)
    /// as [`Error::Config`](crate::Error::Config); use [`builder`](Self::builder)
    /// to have them reported here instead.
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self::builder().key_id(key_id).secret(secret).assemble()
    }

    /// A builder for every setting.
    pub fn builder() -> TokenManagerBuilder {
        TokenManagerBuilder::default()
    }

    /// A manager caching what `fetcher` obtains. A refresh is taken for
    /// stuck only after the longest a fetch can take, the wait for another
    /// process's exchange through Redis included.
    pub(super) fn from_parts(fetcher: IamFetcher, mut settings: CacheSettings) -> Self {
        settings.max_refresh_time = fetcher.longest_refresh();
        Self {
            cache: TokenCache::with_settings(fetcher, settings),
        }
    }

    pub(super) fn fetcher(&self) -> &IamFetcher {
        self.cache.fetcher()
    }

    /// A valid access token: from the cache when it is fresh, otherwise from
    /// IAM (one request for all concurrent callers).
    pub async fn get_token(&self) -> Result<AccessToken> {
        self.cache.token().await
    }

    /// The cached token without waiting, for code that cannot await (a
    /// synchronous hook such as async-openai's `Config::headers`). `None`
    /// when no token is cached yet or it has expired; from the refresh-ahead
    /// window on, and when it returns `None`, it starts one background
    /// refresh (on a Tokio runtime). See [`TokenCache::cached`].
    pub fn cached_token(&self) -> Option<AccessToken> {
        self.cache.cached()
    }

    /// Forgets the cached token: the next [`get_token`](Self::get_token)
    /// obtains a new one. A refresh already in flight is not affected.
    pub fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// Forgets the cached token if it is `rejected` (and not a newer one);
    /// with a fleet's token in Redis, that token is not taken from there again.
    pub fn invalidate_token(&self, rejected: &AccessToken) {
        self.fetcher().rejected(rejected);
        self.cache.invalidate_token(rejected);
    }

    /// The cached token's state, without revealing it.
    pub fn info(&self) -> TokenInfo {
        let state = self.cache.state();
        let fetcher = self.fetcher();
        TokenInfo {
            has_token: state.has_token,
            is_valid: state.is_valid,
            expires_in: state.expires_in,
            lifetime: state.lifetime,
            obtained_at: state.obtained_at,
            expires_at: state
                .obtained_at
                .zip(state.lifetime)
                .map(|(at, life)| at + life),
            refresh_buffer: self.cache.settings().refresh_buffer,
            refresh_in_progress: state.refresh_in_progress,
            key_id: fetcher.active_credentials().key_id().to_string(),
            using_fallback: fetcher.using_fallback(),
        }
    }

    /// Counters and averages over all refreshes so far.
    pub fn stats(&self) -> TokenStats {
        self.fetcher().stats()
    }

    /// The IAM endpoint in use.
    pub fn auth_url(&self) -> &str {
        self.fetcher().auth_url()
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fetcher = self.fetcher();
        f.debug_struct("TokenManager")
            .field("auth_url", &fetcher.auth_url())
            .field("key_id", &fetcher.active_credentials().key_id())
            .field("fallbacks", &fetcher.fallback_count())
            .field("refresh_buffer", &self.cache.settings().refresh_buffer)
            .field("has_token", &self.cache.state().has_token)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TokenSource for TokenManager {
    async fn token(&self) -> Result<AccessToken> {
        self.get_token().await
    }

    fn invalidate(&self) {
        TokenManager::invalidate(self);
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        TokenManager::invalidate_token(self, rejected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[tokio::test]
    async fn empty_credentials_are_reported_by_get_token() {
        let manager = TokenManager::new("", "secret");
        let err = manager.get_token().await.unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "key_id"),
            "{err}"
        );
        let err = TokenManager::builder().key_id("k").build().unwrap_err();
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "secret"),
            "{err}"
        );
    }

    #[test]
    fn bad_auth_url_is_a_config_error() {
        let err = TokenManager::builder()
            .key_id("k")
            .secret("s")
            .auth_url("ftp://iam")
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("auth_url"), "{err}");
    }

    #[test]
    fn a_refresh_is_given_as_long_as_one_exchange_can_take() {
        let manager = TokenManager::new("k", "s");
        let longest = manager.fetcher().longest_fetch();
        assert_eq!(manager.cache.settings().max_refresh_time, longest);
        // The defaults: three attempts of 10 s, two pauses of up to 60 s.
        assert_eq!(longest, Duration::from_secs(151));
    }

    /// A fetch through the fleet's token may wait for other processes'
    /// exchanges before making its own: the cache must not take it for
    /// stuck meanwhile.
    #[cfg(feature = "redis")]
    #[test]
    fn a_shared_fetch_is_given_the_wait_for_the_fleet_too() {
        // Nothing is connected until the first fetch.
        let manager = TokenManager::builder()
            .key_id("k")
            .secret("s")
            .redis_url("redis://127.0.0.1:1")
            .build()
            .unwrap();
        let exchange = manager.fetcher().longest_fetch();
        let limit = manager.cache.settings().max_refresh_time;
        // The wait (twice the lock, which outlasts one exchange), then an
        // exchange of its own under the lock.
        assert!(
            limit >= exchange * 3,
            "{limit:?} for exchanges of {exchange:?}"
        );
        assert_eq!(limit, manager.fetcher().longest_refresh());
    }

    #[test]
    fn absurd_retry_settings_do_not_overflow_the_bound() {
        let manager = TokenManager::builder()
            .key_id("k")
            .secret("s")
            .retry(crate::RetryPolicy {
                max_retries: u32::MAX,
                max_retry_after: Duration::MAX,
                ..crate::RetryPolicy::default()
            })
            .build()
            .unwrap();
        assert_eq!(manager.cache.settings().max_refresh_time, Duration::MAX);
    }
}
