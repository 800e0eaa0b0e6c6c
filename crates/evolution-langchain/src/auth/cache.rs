//! `TokenCache`: keeps one valid token from any [`TokenFetcher`], refreshed
//! before it expires, with one fetch in flight at a time. It knows nothing of
//! how tokens are obtained; IAM is one fetcher among others.
//!
//! How a call is served:
//! - *fresh* token: one atomic load and a clock comparison, no lock;
//! - inside the *refresh-ahead* window just before the buffer: the cached
//!   token at once, and one background refresh is started;
//! - *stale* (inside the buffer) or absent: the caller waits for the refresh
//!   in flight, starting it if there is none.
//!
//! A refresh runs in a task of its own and publishes its outcome through a
//! `watch` channel, so a caller that gives up (timeout, cancelled request)
//! never takes the refresh down with it, and every waiter sees the same
//! outcome, success or error. A refresh whose task dies with its runtime
//! drops the channel's sender, which its waiters notice; one that never ends
//! (its runtime is no longer driven) is given up after
//! [`CacheSettings::max_refresh_time`]. Either way the next caller starts a
//! new one on its own runtime.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::source::TokenSource;
use super::token::AccessToken;
use crate::error::{Error, Result};

/// Obtains a new token; what a [`TokenCache`] calls when it needs one.
///
/// Implement it to cache tokens from any source: the cache adds expiry,
/// refresh-ahead and single flight. A fetch should do its own retries; the
/// cache calls it once per refresh.
pub trait TokenFetcher: Send + Sync + 'static {
    /// One new token and how long it lives.
    fn fetch(&self) -> impl Future<Output = Result<IssuedToken>> + Send;
}

/// A token as its issuer handed it out.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token.
    pub token: AccessToken,
    /// How long it is valid from now.
    pub lifetime: Duration,
}

impl IssuedToken {
    /// A token valid for `lifetime` from now.
    pub fn new(token: AccessToken, lifetime: Duration) -> Self {
        Self { token, lifetime }
    }
}

/// How a [`TokenCache`] times its refreshes.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    /// How long before its real expiry a token is treated as expired.
    pub refresh_buffer: Duration,
    /// How long before the buffer a background refresh starts while callers
    /// keep the current token; at most a quarter of the token's usable life.
    /// Zero turns refresh-ahead off.
    pub refresh_ahead: Duration,
    /// After a background refresh fails, the next one waits this long.
    pub background_retry_pause: Duration,
    /// Longer than any refresh can take; a refresh still running after it
    /// is taken for one stuck on a runtime nobody drives, and replaced.
    pub max_refresh_time: Duration,
}

/// Thirty seconds covers clock skew and a request still in flight when the
/// token runs out, at under 1 % of a typical (one-hour) token's life.
pub const DEFAULT_REFRESH_BUFFER: Duration = Duration::from_secs(30);

/// After a failed background refresh the cached token is still good, and an
/// issuer that is down should not turn every call into another failing fetch.
const BACKGROUND_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// A generous bound for fetchers that do not say better: a fetch with its
/// retries taking five minutes is broken, not slow.
const DEFAULT_MAX_REFRESH_TIME: Duration = Duration::from_secs(300);

/// How often a caller starts a new refresh after the one it waited for died
/// or got stuck. Once is enough when the caller's own runtime is alive.
const MAX_RESTARTS: usize = 2;

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            refresh_buffer: DEFAULT_REFRESH_BUFFER,
            refresh_ahead: DEFAULT_REFRESH_BUFFER,
            background_retry_pause: BACKGROUND_RETRY_PAUSE,
            max_refresh_time: DEFAULT_MAX_REFRESH_TIME,
        }
    }
}

/// The cached token's state, without the token.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CacheState {
    /// Whether a token is cached.
    pub has_token: bool,
    /// Whether it is usable without waiting for a refresh.
    pub is_valid: bool,
    /// Time left until its real expiry.
    pub expires_in: Option<Duration>,
    /// The lifetime it was issued with.
    pub lifetime: Option<Duration>,
    /// When it was obtained (wall clock).
    pub obtained_at: Option<SystemTime>,
    /// Whether a refresh is running now.
    pub refresh_in_progress: bool,
}

/// A token with the moments that matter for it, on the monotonic clock.
#[derive(Debug)]
pub(crate) struct CachedToken {
    pub(crate) token: AccessToken,
    pub(crate) lifetime: Duration,
    obtained_wall: SystemTime,
    /// From here on, a call starts a background refresh.
    refresh_at: Instant,
    /// From here on, the token is treated as expired.
    stale_at: Instant,
    expires_at: Instant,
}

impl CachedToken {
    fn new(issued: IssuedToken, settings: &CacheSettings) -> Self {
        let now = Instant::now();
        let lifetime = issued.lifetime;
        // A buffer as long as the token would make every call refresh; use
        // half the lifetime instead.
        let buffer = if settings.refresh_buffer >= lifetime {
            tracing::warn!(
                lifetime_secs = lifetime.as_secs_f64(),
                refresh_buffer_secs = settings.refresh_buffer.as_secs_f64(),
                "token lifetime is not longer than refresh_buffer; refreshing at half its lifetime"
            );
            lifetime / 2
        } else {
            settings.refresh_buffer
        };
        let usable = lifetime - buffer;
        // Short-lived tokens get a proportionally short window, so refreshing
        // ahead never makes refreshes much more frequent than expiry would.
        let ahead = settings.refresh_ahead.min(usable / 4);
        Self {
            token: issued.token,
            lifetime,
            obtained_wall: SystemTime::now(),
            refresh_at: now + usable - ahead,
            stale_at: now + usable,
            expires_at: now + lifetime,
        }
    }
}

/// What a refresh publishes: `None` until it is done.
type Outcome = Option<Result<Arc<CachedToken>>>;

/// The refresh in flight, if any, and when a background one may start again.
#[derive(Default)]
struct Slot {
    running: Option<watch::Receiver<Outcome>>,
    background_paused_until: Option<Instant>,
}

struct Inner<F> {
    fetcher: F,
    settings: CacheSettings,
    current: ArcSwapOption<CachedToken>,
    slot: Mutex<Slot>,
}

/// Keeps a valid token from `F`, refreshed ahead of expiry, one fetch at a
/// time however many tasks ask. Cloning is cheap and shares the cache.
///
/// ```
/// use std::time::Duration;
/// use evolution_langchain::auth::{IssuedToken, TokenCache, TokenFetcher};
/// use evolution_langchain::AccessToken;
///
/// struct Fixed;
/// impl TokenFetcher for Fixed {
///     async fn fetch(&self) -> evolution_langchain::Result<IssuedToken> {
///         Ok(IssuedToken::new(AccessToken::new("t"), Duration::from_secs(600)))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> evolution_langchain::Result<()> {
/// let cache = TokenCache::new(Fixed);
/// assert_eq!(cache.token().await?.expose_secret(), "t");
/// # Ok(()) }
/// ```
pub struct TokenCache<F> {
    inner: Arc<Inner<F>>,
}

impl<F> Clone for TokenCache<F> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<F: TokenFetcher> TokenCache<F> {
    /// A cache with the default settings.
    pub fn new(fetcher: F) -> Self {
        Self::with_settings(fetcher, CacheSettings::default())
    }

    /// A cache with these settings.
    pub fn with_settings(fetcher: F, settings: CacheSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                fetcher,
                settings,
                current: ArcSwapOption::empty(),
                slot: Mutex::new(Slot::default()),
            }),
        }
    }

    /// The fetcher behind the cache.
    pub fn fetcher(&self) -> &F {
        &self.inner.fetcher
    }

    /// The settings in use.
    pub fn settings(&self) -> &CacheSettings {
        &self.inner.settings
    }

    /// A valid token: the cached one while it is fresh, otherwise the
    /// outcome of the one refresh in flight.
    pub async fn token(&self) -> Result<AccessToken> {
        if let Some(cached) = &*self.inner.current.load() {
            let now = Instant::now();
            if now < cached.refresh_at {
                return Ok(cached.token.clone());
            }
            if now < cached.stale_at {
                Inner::start_background_refresh(&self.inner, now);
                return Ok(cached.token.clone());
            }
        }
        self.refresh_and_wait().await
    }

    /// The cached token without waiting, for code that cannot await (such
    /// as a synchronous header hook): `Some` until the token's real expiry,
    /// `None` when none is cached or it has expired.
    ///
    /// Once the token enters its refresh-ahead window, and whenever there is
    /// no usable token, this starts one background refresh (when called on a
    /// Tokio runtime; elsewhere it only reads), so a caller that keeps asking
    /// finds the replacement soon after. Inside the refresh buffer the old
    /// token is still returned: the server accepts it for up to the buffer,
    /// and a caller that cannot wait has nothing better. [`token`](Self::token)
    /// waits for the new one instead.
    pub fn cached(&self) -> Option<AccessToken> {
        let now = Instant::now();
        let current = self.inner.current.load();
        match &*current {
            Some(cached) if now < cached.refresh_at => Some(cached.token.clone()),
            Some(cached) if now < cached.expires_at => {
                Inner::start_background_refresh(&self.inner, now);
                Some(cached.token.clone())
            }
            _ => {
                Inner::start_background_refresh(&self.inner, now);
                None
            }
        }
    }

    /// Forgets the cached token: the next [`token`](Self::token) fetches a
    /// new one. A refresh already in flight is not affected.
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

    /// The cached token's state.
    pub fn state(&self) -> CacheState {
        let cached = self.inner.current.load_full();
        let now = Instant::now();
        CacheState {
            has_token: cached.is_some(),
            is_valid: cached.as_ref().is_some_and(|c| now < c.stale_at),
            expires_in: cached
                .as_ref()
                .map(|c| c.expires_at.saturating_duration_since(now)),
            lifetime: cached.as_ref().map(|c| c.lifetime),
            obtained_at: cached.as_ref().map(|c| c.obtained_wall),
            refresh_in_progress: self.inner.lock_slot().running.is_some(),
        }
    }

    async fn refresh_and_wait(&self) -> Result<AccessToken> {
        for _ in 0..=MAX_RESTARTS {
            let mut refresh = {
                let mut slot = self.inner.lock_slot();
                // Someone may have published a token between our check and the lock.
                if let Some(cached) = &*self.inner.current.load() {
                    if Instant::now() < cached.stale_at {
                        return Ok(cached.token.clone());
                    }
                }
                Inner::running_or_start(&self.inner, &mut slot)?
            };
            let limit = self.inner.settings.max_refresh_time;
            let waited = tokio::time::timeout(limit, async {
                refresh
                    .wait_for(Option::is_some)
                    .await
                    .map(|outcome| outcome.clone())
            })
            .await;
            match waited {
                Ok(Ok(Some(outcome))) => return outcome.map(|cached| cached.token.clone()),
                // Its task died with another runtime (e.g. a cache shared
                // between tests) before publishing; start one on ours.
                Ok(Ok(None)) | Ok(Err(_)) => self.inner.forget(&refresh),
                Err(_) => {
                    tracing::warn!(
                        "a token refresh overran its time limit (its runtime may have stopped); starting another"
                    );
                    self.inner.forget(&refresh);
                }
            }
        }
        Err(Error::Runtime {
            message:
                "the token refresh could not finish: the Tokio runtime it ran on is shutting down"
                    .into(),
        })
    }
}

impl<F: TokenFetcher> Inner<F> {
    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        // The slot holds plain data; a panic elsewhere cannot leave it torn.
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clears the slot if it still holds `refresh`, so the next caller
    /// starts a new one.
    fn forget(&self, refresh: &watch::Receiver<Outcome>) {
        let mut slot = self.lock_slot();
        if slot
            .running
            .as_ref()
            .is_some_and(|r| r.same_channel(refresh))
        {
            slot.running = None;
        }
    }

    fn start_background_refresh(this: &Arc<Self>, now: Instant) {
        let mut slot = this.lock_slot();
        if slot.running.is_some() || slot.background_paused_until.is_some_and(|t| now < t) {
            return;
        }
        // A refresh may have completed while we were on our way here.
        if let Some(cached) = &*this.current.load() {
            if now < cached.refresh_at {
                return;
            }
        }
        tracing::debug!("token enters its refresh-ahead window; refreshing in the background");
        // Outside a runtime there is nobody to refresh; the caller still has its token.
        let _ = Inner::running_or_start(this, &mut slot);
    }

    /// The refresh in flight, or a new one. Called with the slot locked, so
    /// at most one exists.
    fn running_or_start(this: &Arc<Self>, slot: &mut Slot) -> Result<watch::Receiver<Outcome>> {
        if let Some(running) = &slot.running {
            return Ok(running.clone());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::Runtime {
            message: "a token is needed but no Tokio runtime is running; call from within one, \
                      or use the blocking facade"
                .into(),
        })?;
        let (publish, refresh) = watch::channel(None);
        let mine = refresh.clone();
        let inner = Arc::clone(this);
        runtime.spawn(async move {
            let outcome = inner.refresh().await;
            {
                let mut slot = inner.lock_slot();
                // A refresh given up as stuck must not clear its successor.
                if slot.running.as_ref().is_some_and(|r| r.same_channel(&mine)) {
                    slot.running = None;
                    slot.background_paused_until = outcome
                        .is_err()
                        .then(|| Instant::now() + inner.settings.background_retry_pause);
                }
            }
            // Nobody may be waiting (a background refresh); that is fine.
            let _ = publish.send(Some(outcome));
        });
        slot.running = Some(refresh.clone());
        Ok(refresh)
    }

    /// Fetches a token and publishes it.
    async fn refresh(&self) -> Result<Arc<CachedToken>> {
        let issued = self.fetcher.fetch().await?;
        let cached = Arc::new(CachedToken::new(issued, &self.settings));
        self.current.store(Some(Arc::clone(&cached)));
        tracing::debug!(
            token_prefix = cached.token.prefix(),
            "new access token cached"
        );
        Ok(cached)
    }
}

impl<F> fmt::Debug for TokenCache<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCache")
            .field("settings", &self.inner.settings)
            .field("has_token", &self.inner.current.load().is_some())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<F: TokenFetcher> TokenSource for TokenCache<F> {
    async fn token(&self) -> Result<AccessToken> {
        TokenCache::token(self).await
    }

    fn invalidate(&self) {
        TokenCache::invalidate(self);
    }

    fn invalidate_token(&self, rejected: &AccessToken) {
        TokenCache::invalidate_token(self, rejected);
    }
}

#[cfg(test)]
mod tests;
