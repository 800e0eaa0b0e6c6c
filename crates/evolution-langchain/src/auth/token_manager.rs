//! `TokenManager`: turns an access key into IAM access tokens, cached and
//! refreshed so callers never see one expire.
//!
//! How a call is served:
//! - *fresh* token: one atomic load and a clock comparison, no lock;
//! - inside the *refresh-ahead* window just before the buffer: the cached
//!   token at once, and one background refresh is started;
//! - *stale* (inside the buffer) or absent: the caller waits for the single
//!   refresh in flight, starting it if there is none.
//!
//! A refresh runs in its own task, so a caller that gives up (timeout,
//! cancelled request) never takes the refresh down with it; every waiter gets
//! the same outcome, success or error.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use super::builder::TokenManagerBuilder;
use super::credentials::Credentials;
use super::iam::{self, IssuedToken};
use super::source::TokenSource;
use super::stats::{StatsRecorder, TokenInfo, TokenStats};
use super::token::{AccessToken, TokenStripes};
use crate::error::{AuthError, Error, Result};
use crate::retry::RetryPolicy;

/// How long before its real expiry a token is treated as expired. Thirty
/// seconds covers clock skew and a request that is still in flight when the
/// token runs out, at a cost of under 1 % of a typical token's life.
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(30);

/// Per-request timeout for IAM. IAM answers in milliseconds; ten seconds
/// tolerates a slow network without stalling callers for a minute.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// After a background refresh fails, the next one waits this long: the cached
/// token is still good, and IAM being down should not turn every call into
/// another failing request.
const BACKGROUND_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A refresh as every waiter sees it; `None` when its task died with the
/// runtime it was spawned on, before finishing.
type RefreshFuture = Shared<BoxFuture<'static, Option<Result<Arc<CachedToken>>>>>;

/// How often a caller starts a new refresh after the one it waited for died
/// with its runtime. Once is enough when the caller's own runtime is alive.
const MAX_ORPHANED_REFRESHES: usize = 2;

/// A token with the moments that matter for it, on the monotonic clock.
#[derive(Debug)]
struct CachedToken {
    token: AccessToken,
    /// Per-thread copies served on the hot path.
    stripes: TokenStripes,
    lifetime: Duration,
    obtained_wall: SystemTime,
    /// From here on, a call starts a background refresh.
    refresh_at: Instant,
    /// From here on, the token is treated as expired.
    stale_at: Instant,
    expires_at: Instant,
}

impl CachedToken {
    fn new(issued: IssuedToken, refresh_buffer: Duration, refresh_ahead: Duration) -> Self {
        let now = Instant::now();
        let lifetime = issued.lifetime;
        // A buffer as long as the token would make every call refresh; use
        // half the lifetime instead.
        let buffer = if refresh_buffer >= lifetime {
            tracing::warn!(
                lifetime_secs = lifetime.as_secs_f64(),
                refresh_buffer_secs = refresh_buffer.as_secs_f64(),
                "token lifetime is not longer than refresh_buffer; refreshing at half its lifetime"
            );
            lifetime / 2
        } else {
            refresh_buffer
        };
        let usable = lifetime - buffer;
        // Short-lived tokens get a proportionally short window, so refreshing
        // ahead never makes refreshes much more frequent than expiry would.
        let ahead = refresh_ahead.min(usable / 4);
        Self {
            stripes: TokenStripes::new(&issued.token),
            token: issued.token,
            lifetime,
            obtained_wall: SystemTime::now(),
            refresh_at: now + usable - ahead,
            stale_at: now + usable,
            expires_at: now + lifetime,
        }
    }
}

/// The refresh in flight, if any, and when a background one may start again.
#[derive(Default)]
struct RefreshSlot {
    running: Option<RefreshFuture>,
    /// Numbers the refreshes, so a stale one cannot clear its successor.
    generation: u64,
    background_paused_until: Option<Instant>,
}

/// What a manager is configured with; the builder fills it in.
pub(super) struct Settings {
    /// The primary credentials first, then the fallbacks in order.
    pub(super) credentials: Vec<Credentials>,
    pub(super) auth_url: String,
    pub(super) refresh_buffer: Duration,
    pub(super) refresh_ahead: Duration,
    pub(super) timeout: Duration,
    pub(super) retry: RetryPolicy,
    pub(super) client: reqwest::Client,
}

struct Inner {
    settings: Settings,
    active: AtomicUsize,
    /// Set when `TokenManager::new` got unusable input; reported by `get_token`.
    config_error: Option<Error>,
    current: ArcSwapOption<CachedToken>,
    refresh: Mutex<RefreshSlot>,
    stats: Mutex<StatsRecorder>,
}

/// Obtains IAM access tokens for an access key and keeps a valid one cached.
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
    inner: Arc<Inner>,
}

impl TokenManager {
    /// A manager for the Cloud.ru IAM endpoint with default settings.
    ///
    /// Empty credentials are reported by the first [`get_token`](Self::get_token)
    /// as [`Error::Config`]; use [`builder`](Self::builder) to have them
    /// reported here instead.
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        let client = crate::http::default_client().unwrap_or_default();
        let mut manager = Self::builder()
            .key_id(key_id)
            .secret(secret)
            .assemble(client);
        if let Err(error) = manager.validate() {
            Arc::get_mut(&mut manager.inner)
                .expect("the manager was just created")
                .config_error = Some(error);
        }
        manager
    }

    /// A builder for every setting.
    pub fn builder() -> TokenManagerBuilder {
        TokenManagerBuilder::default()
    }

    /// A valid access token: from the cache when it is fresh, otherwise from
    /// IAM (one request for all concurrent callers).
    pub async fn get_token(&self) -> Result<AccessToken> {
        if let Some(cached) = &*self.inner.current.load() {
            let now = Instant::now();
            if now < cached.refresh_at {
                return Ok(cached.stripes.get().clone());
            }
            if now < cached.stale_at {
                self.inner.start_background_refresh(now);
                return Ok(cached.stripes.get().clone());
            }
        }
        self.refresh_and_wait().await
    }

    /// Forgets the cached token: the next [`get_token`](Self::get_token)
    /// obtains a new one. A refresh already in flight is not affected.
    pub fn invalidate(&self) {
        self.inner.current.store(None);
    }

    /// Forgets the cached token if it is `rejected` (and not a newer one).
    pub fn invalidate_token(&self, rejected: &AccessToken) {
        let current = self.inner.current.load_full();
        if let Some(cached) = &current {
            if cached.token.same_as(rejected) {
                self.inner.current.compare_and_swap(&current, None);
            }
        }
    }

    /// The cached token's state, without revealing it.
    pub fn info(&self) -> TokenInfo {
        let cached = self.inner.current.load_full();
        let now = Instant::now();
        let refresh_in_progress = self.inner.lock_refresh().running.is_some();
        TokenInfo {
            has_token: cached.is_some(),
            is_valid: cached.as_ref().is_some_and(|c| now < c.stale_at),
            expires_in: cached
                .as_ref()
                .map(|c| c.expires_at.saturating_duration_since(now)),
            lifetime: cached.as_ref().map(|c| c.lifetime),
            obtained_at: cached.as_ref().map(|c| c.obtained_wall),
            expires_at: cached.as_ref().map(|c| c.obtained_wall + c.lifetime),
            refresh_buffer: self.inner.settings.refresh_buffer,
            refresh_in_progress,
            key_id: self.inner.active_credentials().key_id().to_string(),
            using_fallback: self.inner.using_fallback(),
        }
    }

    /// Counters and averages over all refreshes so far.
    pub fn stats(&self) -> TokenStats {
        let using_fallback = self.inner.using_fallback();
        self.inner.lock_stats().snapshot(using_fallback)
    }

    /// The IAM endpoint in use.
    pub fn auth_url(&self) -> &str {
        &self.inner.settings.auth_url
    }

    async fn refresh_and_wait(&self) -> Result<AccessToken> {
        if let Some(error) = &self.inner.config_error {
            return Err(error.clone());
        }
        for _ in 0..=MAX_ORPHANED_REFRESHES {
            let (generation, refresh) = {
                let mut slot = self.inner.lock_refresh();
                // Someone may have published a token between our check and the lock.
                if let Some(cached) = &*self.inner.current.load() {
                    if Instant::now() < cached.stale_at {
                        return Ok(cached.token.clone());
                    }
                }
                let refresh = Inner::running_or_start(&self.inner, &mut slot);
                (slot.generation, refresh)
            };
            match tokio::time::timeout(self.inner.longest_refresh(), refresh).await {
                Ok(Some(outcome)) => return outcome.map(|cached| cached.token.clone()),
                // The refresh died with another runtime (e.g. a manager
                // shared between tests); start one on ours.
                Ok(None) => {}
                // Far longer than a refresh can take: it runs on a runtime
                // that nobody drives any more. Start one on ours.
                Err(_) => self.inner.abandon(generation),
            }
        }
        Err(AuthError::Connection {
            auth_url: self.inner.settings.auth_url.clone(),
            message: "the token refresh was cancelled: the Tokio runtime is shutting down".into(),
            attempts: 0,
        }
        .into())
    }
}

impl Inner {
    fn lock_refresh(&self) -> MutexGuard<'_, RefreshSlot> {
        // The slot holds plain data; a panic elsewhere cannot leave it torn.
        self.refresh.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An upper bound on one refresh: every attempt timing out after the
    /// longest pause a server may ask for, for each set of credentials, plus
    /// a second of slack.
    fn longest_refresh(&self) -> Duration {
        let attempts = self.settings.retry.max_attempts.max(1);
        let one_key =
            self.settings.timeout * attempts + self.settings.retry.max_retry_after * (attempts - 1);
        one_key * self.settings.credentials.len() as u32 + Duration::from_secs(1)
    }

    /// Forgets refresh `generation` if it is still the one in the slot, so
    /// the next caller starts a new one.
    fn abandon(&self, generation: u64) {
        let mut slot = self.lock_refresh();
        if slot.generation == generation {
            tracing::warn!("a token refresh overran its time limit (its runtime may have stopped); starting another");
            slot.running = None;
        }
    }

    fn lock_stats(&self) -> MutexGuard<'_, StatsRecorder> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn active_credentials(&self) -> &Credentials {
        &self.settings.credentials[self.active.load(Ordering::Acquire)]
    }

    fn using_fallback(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    fn start_background_refresh(self: &Arc<Self>, now: Instant) {
        let mut slot = self.lock_refresh();
        if slot.running.is_some() || slot.background_paused_until.is_some_and(|t| now < t) {
            return;
        }
        // A refresh may have completed while we were on our way here.
        if let Some(cached) = &*self.current.load() {
            if now < cached.refresh_at {
                return;
            }
        }
        tracing::debug!("token enters its refresh-ahead window; refreshing in the background");
        drop(Inner::running_or_start(self, &mut slot));
    }

    /// The refresh in flight, or a new one. Called with the slot locked, so
    /// at most one exists.
    fn running_or_start(self: &Arc<Self>, slot: &mut RefreshSlot) -> RefreshFuture {
        if let Some(running) = &slot.running {
            return running.clone();
        }
        slot.generation = slot.generation.wrapping_add(1);
        let generation = slot.generation;
        let inner = Arc::clone(self);
        let task = tokio::spawn(async move {
            let outcome = inner.refresh().await;
            let mut slot = inner.lock_refresh();
            // An abandoned refresh that finishes late must not clear its successor.
            if slot.generation == generation {
                slot.running = None;
                slot.background_paused_until = match &outcome {
                    Ok(_) => None,
                    Err(_) => Some(Instant::now() + BACKGROUND_RETRY_PAUSE),
                };
            }
            outcome
        });
        // Weak: the slot owns this future, which must not keep the manager alive.
        let owner = Arc::downgrade(self);
        let refresh = async move {
            match task.await {
                Ok(outcome) => Some(outcome),
                Err(_) => {
                    // The task was dropped with its runtime before it could
                    // clear the slot; clear it here so the next caller starts over.
                    if let Some(inner) = owner.upgrade() {
                        let mut slot = inner.lock_refresh();
                        if slot.generation == generation {
                            slot.running = None;
                        }
                    }
                    None
                }
            }
        }
        .boxed()
        .shared();
        slot.running = Some(refresh.clone());
        refresh
    }

    /// Obtains a token (retries and fallback included), publishes it and
    /// records the outcome.
    async fn refresh(&self) -> Result<Arc<CachedToken>> {
        let started = Instant::now();
        match self.request_with_fallback().await {
            Ok(issued) => {
                let cached = Arc::new(CachedToken::new(
                    issued,
                    self.settings.refresh_buffer,
                    self.settings.refresh_ahead,
                ));
                self.current.store(Some(Arc::clone(&cached)));
                let took = started.elapsed();
                self.lock_stats().record_success(took, cached.lifetime);
                tracing::info!(
                    key_id = self.active_credentials().key_id(),
                    lifetime_secs = cached.lifetime.as_secs_f64(),
                    took_ms = took.as_millis() as u64,
                    "obtained an access token"
                );
                tracing::debug!(token_prefix = cached.token.prefix(), "new access token");
                Ok(cached)
            }
            Err(error) => {
                self.lock_stats().record_failure(error.to_string());
                tracing::error!(error = %error, "could not obtain an access token");
                Err(error)
            }
        }
    }

    /// Tries the active credentials (with retries); when IAM refuses them
    /// for good and fallback credentials remain, moves on to the next pair
    /// and stays there.
    async fn request_with_fallback(&self) -> Result<IssuedToken> {
        loop {
            let index = self.active.load(Ordering::Acquire);
            let credentials = &self.settings.credentials[index];
            let outcome = self
                .settings
                .retry
                .run("IAM token request", || {
                    self.lock_stats().record_iam_request();
                    iam::request_token(
                        &self.settings.client,
                        &self.settings.auth_url,
                        credentials,
                        self.settings.timeout,
                    )
                })
                .await;
            match outcome {
                Err(Error::Auth(error))
                    if error.is_credential_error()
                        && index + 1 < self.settings.credentials.len() =>
                {
                    let next = &self.settings.credentials[index + 1];
                    tracing::warn!(
                        key_id = credentials.key_id(),
                        fallback_key_id = next.key_id(),
                        error = %error,
                        "credentials refused; switching to fallback credentials"
                    );
                    self.active.store(index + 1, Ordering::Release);
                    self.lock_stats().record_fallback_switch();
                }
                other => return other,
            }
        }
    }
}

impl TokenManager {
    /// A manager with these settings, unchecked (see [`validate`](Self::validate)).
    pub(super) fn assemble(settings: Settings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                active: AtomicUsize::new(0),
                config_error: None,
                current: ArcSwapOption::empty(),
                refresh: Mutex::new(RefreshSlot::default()),
                stats: Mutex::new(StatsRecorder::default()),
            }),
        }
    }

    /// Checks the settings; the error names the field at fault.
    pub(super) fn validate(&self) -> Result<()> {
        let inner = &self.inner;
        inner.settings.credentials[0].validate("")?;
        for fallback in &inner.settings.credentials[1..] {
            fallback.validate("fallback ")?;
        }
        crate::config::validate_http_url("auth_url", &inner.settings.auth_url)?;
        if inner.settings.timeout.is_zero() {
            return Err(Error::config("timeout", "must be longer than zero"));
        }
        if inner.settings.retry.max_attempts == 0 {
            return Err(Error::config(
                "max_attempts",
                "must be at least 1 (1 means no retries)",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("auth_url", &self.inner.settings.auth_url)
            .field("key_id", &self.inner.active_credentials().key_id())
            .field("fallbacks", &(self.inner.settings.credentials.len() - 1))
            .field("refresh_buffer", &self.inner.settings.refresh_buffer)
            .field("has_token", &self.inner.current.load().is_some())
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

    fn issued(lifetime: u64) -> IssuedToken {
        IssuedToken {
            token: AccessToken::new("t"),
            lifetime: Duration::from_secs(lifetime),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_buffer_and_window() {
        let c = CachedToken::new(
            issued(3600),
            Duration::from_secs(30),
            Duration::from_secs(30),
        );
        let obtained = c.expires_at - Duration::from_secs(3600);
        assert_eq!(c.stale_at - obtained, Duration::from_secs(3570));
        assert_eq!(c.refresh_at - obtained, Duration::from_secs(3540));
    }

    #[tokio::test(start_paused = true)]
    async fn short_lifetimes_get_short_windows() {
        // Two seconds of life, one of buffer: the window shrinks to 250 ms.
        let c = CachedToken::new(issued(2), Duration::from_secs(1), Duration::from_secs(1));
        let obtained = c.expires_at - Duration::from_secs(2);
        assert_eq!(c.stale_at - obtained, Duration::from_secs(1));
        assert_eq!(c.refresh_at - obtained, Duration::from_millis(750));
        // A buffer longer than the token: refresh at half-life.
        let c = CachedToken::new(issued(20), Duration::from_secs(30), Duration::from_secs(30));
        assert_eq!(c.expires_at - c.stale_at, Duration::from_secs(10));
    }

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
}
