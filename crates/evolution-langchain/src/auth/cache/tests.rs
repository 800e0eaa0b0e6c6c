//! The cache against a fake fetcher under paused Tokio time: no HTTP.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::error::AuthError;

/// Hands out `token-1`, `token-2`, … after `delay`, or the scripted errors
/// first; counts its calls.
struct FakeFetcher {
    calls: AtomicUsize,
    delay: Duration,
    lifetime: Duration,
    failures: Mutex<VecDeque<Error>>,
}

impl FakeFetcher {
    fn new(delay: Duration, lifetime: Duration) -> Self {
        Self {
            calls: AtomicUsize::new(0),
            delay,
            lifetime,
            failures: Mutex::new(VecDeque::new()),
        }
    }

    fn failing_first(self, errors: usize) -> Self {
        for _ in 0..errors {
            self.failures.lock().unwrap().push_back(unavailable());
        }
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn unavailable() -> Error {
    Error::Auth(AuthError::Transient {
        auth_url: "fake".into(),
        status: 503,
        attempts: 1,
        retry_after: None,
    })
}

impl TokenFetcher for FakeFetcher {
    async fn fetch(&self) -> Result<IssuedToken> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        if let Some(error) = self.failures.lock().unwrap().pop_front() {
            return Err(error);
        }
        Ok(IssuedToken::new(
            AccessToken::new(format!("token-{n}")),
            self.lifetime,
        ))
    }
}

fn cache(delay_ms: u64, lifetime_secs: u64, buffer_secs: u64) -> TokenCache<FakeFetcher> {
    TokenCache::with_settings(
        FakeFetcher::new(
            Duration::from_millis(delay_ms),
            Duration::from_secs(lifetime_secs),
        ),
        CacheSettings {
            refresh_buffer: Duration::from_secs(buffer_secs),
            refresh_ahead: Duration::from_secs(buffer_secs),
            ..CacheSettings::default()
        },
    )
}

async fn text(cache: &TokenCache<FakeFetcher>) -> String {
    cache.token().await.unwrap().expose_secret().to_string()
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_callers_cause_one_fetch() {
    let cache = cache(100, 3600, 30);
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { text(&cache).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), "token-1");
    }
    assert_eq!(cache.fetcher().calls(), 1);
    // Served from the cache from now on.
    assert_eq!(text(&cache).await, "token-1");
    assert_eq!(cache.fetcher().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stale_token_is_replaced_at_expiry_minus_buffer() {
    // 100 s tokens, 10 s buffer, no refresh-ahead.
    let cache = TokenCache::with_settings(
        FakeFetcher::new(Duration::ZERO, Duration::from_secs(100)),
        CacheSettings {
            refresh_buffer: Duration::from_secs(10),
            refresh_ahead: Duration::ZERO,
            ..CacheSettings::default()
        },
    );
    assert_eq!(text(&cache).await, "token-1");
    tokio::time::advance(Duration::from_millis(89_999)).await;
    assert_eq!(text(&cache).await, "token-1");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(!cache.state().is_valid);
    assert_eq!(text(&cache).await, "token-2");
    assert_eq!(cache.fetcher().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_the_old_token_and_refreshes_once_in_the_background() {
    // 100 s tokens, 10 s buffer: the window is [80 s, 90 s).
    let cache = cache(2_000, 100, 10);
    assert_eq!(text(&cache).await, "token-1");
    tokio::time::advance(Duration::from_secs(81)).await;
    // A slow fetch (2 s) starts, but nobody waits for it.
    for _ in 0..50 {
        let started = Instant::now();
        assert_eq!(text(&cache).await, "token-1");
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
    assert!(cache.state().refresh_in_progress);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(text(&cache).await, "token-2");
    assert_eq!(cache.fetcher().calls(), 2);
    assert!(!cache.state().refresh_in_progress);
}

#[tokio::test(start_paused = true)]
async fn a_failing_refresh_reaches_every_waiter_and_the_next_call_tries_again() {
    let cache = TokenCache::new(
        FakeFetcher::new(Duration::from_millis(50), Duration::from_secs(3600)).failing_first(1),
    );
    let waiters: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    for waiter in waiters {
        let error = waiter.await.unwrap().unwrap_err();
        assert!(error.is_retryable(), "{error}");
    }
    assert_eq!(cache.fetcher().calls(), 1);
    assert!(!cache.state().has_token);
    assert_eq!(text(&cache).await, "token-2");
    assert_eq!(cache.fetcher().calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_pauses_the_next_one() {
    let cache = TokenCache::with_settings(
        FakeFetcher::new(Duration::ZERO, Duration::from_secs(100)),
        CacheSettings {
            refresh_buffer: Duration::from_secs(10),
            refresh_ahead: Duration::from_secs(10),
            background_retry_pause: Duration::from_secs(5),
            ..CacheSettings::default()
        },
    );
    assert_eq!(text(&cache).await, "token-1");
    cache
        .fetcher()
        .failures
        .lock()
        .unwrap()
        .push_back(unavailable());
    tokio::time::advance(Duration::from_secs(81)).await;
    assert_eq!(text(&cache).await, "token-1"); // starts the failing refresh
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cache.fetcher().calls(), 2);
    // Within the pause: still the old token, no new fetch.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(text(&cache).await, "token-1");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cache.fetcher().calls(), 2);
    // After it: the next call refreshes.
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(text(&cache).await, "token-1");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(cache.fetcher().calls(), 3);
    assert_eq!(text(&cache).await, "token-3");
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_does_not_cancel_the_refresh() {
    let cache = cache(1_000, 3600, 30);
    let gave_up = tokio::time::timeout(Duration::from_millis(10), cache.token()).await;
    assert!(gave_up.is_err(), "the caller should have timed out");
    assert!(cache.state().refresh_in_progress);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The refresh finished on its own and published its token.
    assert!(cache.state().has_token);
    assert_eq!(text(&cache).await, "token-1");
    assert_eq!(cache.fetcher().calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_refresh_is_replaced_after_the_time_limit() {
    let cache = TokenCache::with_settings(
        FakeFetcher::new(Duration::from_secs(3600), Duration::from_secs(3600)),
        CacheSettings {
            max_refresh_time: Duration::from_secs(5),
            ..CacheSettings::default()
        },
    );
    let started = Instant::now();
    let error = cache.token().await.unwrap_err();
    // Three tries (the first and two restarts), each given up after 5 s.
    assert!(matches!(error, Error::Runtime { .. }), "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(15));
    assert_eq!(cache.fetcher().calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn invalidate_token_forgets_only_that_token() {
    let cache = cache(0, 3600, 30);
    let first = cache.token().await.unwrap();
    cache.invalidate();
    let second = cache.token().await.unwrap();
    assert_eq!(second.expose_secret(), "token-2");
    // A late report about the first token must not discard the second.
    cache.invalidate_token(&first);
    assert_eq!(text(&cache).await, "token-2");
    cache.invalidate_token(&second);
    assert_eq!(text(&cache).await, "token-3");
}

#[test]
fn a_refresh_that_died_with_its_runtime_is_restarted_on_the_next() {
    let cache = TokenCache::new(FakeFetcher::new(
        Duration::from_secs(60),
        Duration::from_secs(3600),
    ));
    let first = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    first.block_on(async {
        let _ = tokio::time::timeout(Duration::from_millis(20), cache.token()).await;
    });
    assert!(cache.state().refresh_in_progress);
    drop(first); // takes the refresh task with it
    cache.fetcher().calls.store(0, Ordering::SeqCst);
    let second = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    let token = second.block_on(async { text(&cache).await });
    assert_eq!(token, "token-1");
    assert_eq!(cache.fetcher().calls(), 1);
}

#[test]
fn outside_a_runtime_a_cold_cache_says_so() {
    let cache = cache(0, 3600, 30);
    let error = futures::executor::block_on(cache.token()).unwrap_err();
    assert!(matches!(error, Error::Runtime { .. }), "{error}");
}

#[tokio::test(start_paused = true)]
async fn deadlines_follow_buffer_and_window() {
    let settings = CacheSettings::default();
    let issued = |secs| IssuedToken::new(AccessToken::new("t"), Duration::from_secs(secs));
    let c = CachedToken::new(issued(3600), &settings);
    let obtained = c.expires_at - Duration::from_secs(3600);
    assert_eq!(c.stale_at - obtained, Duration::from_secs(3570));
    assert_eq!(c.refresh_at - obtained, Duration::from_secs(3540));
    // Two seconds of life, one of buffer: the window shrinks to 250 ms.
    let short = CacheSettings {
        refresh_buffer: Duration::from_secs(1),
        refresh_ahead: Duration::from_secs(1),
        ..settings.clone()
    };
    let c = CachedToken::new(issued(2), &short);
    let obtained = c.expires_at - Duration::from_secs(2);
    assert_eq!(c.stale_at - obtained, Duration::from_secs(1));
    assert_eq!(c.refresh_at - obtained, Duration::from_millis(750));
    // A buffer longer than the token: refresh at half-life.
    let c = CachedToken::new(issued(20), &settings);
    assert_eq!(c.expires_at - c.stale_at, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn cached_reads_without_waiting_and_refreshes_in_the_background() {
    // 100 s tokens, 10 s buffer: the window is [80 s, 90 s), expiry at 100 s.
    let cache = cache(1_000, 100, 10);
    // Nothing cached: `None`, and a background fetch starts.
    assert!(cache.cached().is_none());
    assert!(cache.state().refresh_in_progress);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let token = |c: &TokenCache<FakeFetcher>| c.cached().map(|t| t.expose_secret().to_string());
    assert_eq!(token(&cache).as_deref(), Some("token-1"));
    assert!(!cache.state().refresh_in_progress);
    // Inside the refresh buffer, the old token still, and one refresh.
    tokio::time::advance(Duration::from_secs(94)).await;
    assert_eq!(token(&cache).as_deref(), Some("token-1"));
    assert_eq!(token(&cache).as_deref(), Some("token-1"));
    assert!(cache.state().refresh_in_progress);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(token(&cache).as_deref(), Some("token-2"));
    assert_eq!(cache.fetcher().calls(), 2);
    // Past its real expiry: `None`, never the expired token.
    tokio::time::advance(Duration::from_secs(101)).await;
    assert!(cache.cached().is_none());
}

#[test]
fn cached_outside_a_runtime_only_reads() {
    let cache = cache(0, 100, 10);
    assert!(cache.cached().is_none());
    assert!(!cache.state().refresh_in_progress);
}
