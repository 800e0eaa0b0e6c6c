//! When and how long to wait before trying again.
//!
//! One policy serves both IAM and the model API: exponential backoff with
//! full jitter, a server's `Retry-After` taking precedence. Backoff arithmetic
//! comes from `backon`; this module only decides what counts as retryable (the
//! error's own classification) and turns backon's delay into a full-jitter one.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use crate::error::{Error, Result};

/// How failed requests are retried.
///
/// Only errors for which [`Error::is_retryable`] is true are retried: timeouts,
/// connection failures, 429 and 5xx. Wrong credentials or a bad request fail at
/// once.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: each request is sent once).
    pub max_retries: u32,
    /// Upper bound of the first pause; it doubles on each retry.
    pub initial_backoff: Duration,
    /// Upper bound of any pause computed by backoff.
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this long. A longer one is
    /// not waited for at all: the pause is the normal backoff instead, as if
    /// the server had not said (what openai-python does). Waiting for the
    /// cap instead would park every retry of a call for a minute on a value
    /// that is a misconfiguration or a unit mix-up far more often than a
    /// real plan; failing at once would turn an overload that passes in a
    /// second into an error. After the retries the error still carries the
    /// server's value ([`Error::Unavailable`]'s `retry_after`).
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    /// Two retries, pauses drawn from 0–200 ms then 0–400 ms.
    fn default() -> Self {
        Self {
            max_retries: 2,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The default policy with at most `max_retries` retries.
    pub fn with_max_retries(max_retries: u32) -> Self {
        Self {
            max_retries,
            ..Self::default()
        }
    }

    /// A policy that sends each request once.
    pub fn no_retries() -> Self {
        Self::with_max_retries(0)
    }

    /// Requests sent at most, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.max_retries.saturating_add(1)
    }

    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_max_times(self.max_retries as usize)
    }

    /// The pause before the next attempt: the server's wish when it stated
    /// one within [`max_retry_after`](Self::max_retry_after), otherwise a
    /// uniformly random fraction of the backoff step ("full jitter"), which
    /// spreads out clients that failed together.
    pub(crate) fn pause(&self, retry_after: Option<Duration>, step: Duration) -> Duration {
        match retry_after {
            Some(wait) if wait <= self.max_retry_after => wait,
            _ => step.mul_f64(fastrand::f64()),
        }
    }

    /// Runs `op` until it succeeds, fails permanently (as
    /// [`Error::is_retryable`] says), or the attempts run out. The returned
    /// error records how many attempts were made.
    pub(crate) async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let attempts = AtomicU32::new(0);
        let counted = || {
            attempts.fetch_add(1, Ordering::Relaxed);
            op()
        };
        counted
            .retry(self.backoff())
            .sleep(tokio::time::sleep)
            .when(Error::is_retryable)
            .adjust(|error, backoff| backoff.map(|b| self.pause(error.retry_after(), b)))
            .notify(|error, pause| {
                tracing::warn!(
                    target: "evolution_langchain::retry",
                    what,
                    attempt = attempts.load(Ordering::Relaxed),
                    pause_ms = pause.as_millis() as u64,
                    error = %error,
                    "request failed, retrying"
                );
            })
            .await
            .map_err(|mut error| {
                error.set_attempts(attempts.load(Ordering::Relaxed));
                error
            })
    }
}

/// Whether a reply with this status may succeed if sent again: `408`,
/// `429` and the `5xx` statuses but `501` and `505`, which say the server
/// cannot do this at all. The one rule for IAM, the model API and the
/// bridges.
pub(crate) fn retryable_status(code: u16) -> bool {
    matches!(code, 408 | 429 | 500 | 502..=504 | 506..=599)
}

/// When the server wants the next attempt, from `retry-after-ms`
/// (milliseconds, as OpenAI sends it) or `Retry-After` (seconds, possibly
/// fractional, or an HTTP date).
pub(crate) fn parse_retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let text = |name| headers.get(name)?.to_str().ok().map(str::trim);
    let seconds = |value: &str, scale: f64| {
        let number = value.parse::<f64>().ok()?;
        (number.is_finite() && number >= 0.0)
            .then(|| Duration::try_from_secs_f64(number / scale).ok())
            .flatten()
    };
    if let Some(wait) = text("retry-after-ms").and_then(|ms| seconds(ms, 1000.0)) {
        return Some(wait);
    }
    let value = text(reqwest::header::RETRY_AFTER.as_str())?;
    if let Some(wait) = seconds(value, 1.0) {
        return Some(wait);
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AuthError;
    use std::time::SystemTime;

    fn transient(retry_after: Option<Duration>) -> Error {
        Error::Auth(AuthError::Transient {
            auth_url: "u".into(),
            status: 503,
            attempts: 1,
            retry_after,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_and_counts_attempts() {
        let policy = RetryPolicy::with_max_retries(2);
        let calls = AtomicU32::new(0);
        let err = policy
            .run("test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(transient(None))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert!(err.to_string().contains("3 attempt"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let _ = RetryPolicy::default()
            .run("test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(Error::Auth(AuthError::InvalidCredentials {
                    key_id: "k".into(),
                }))
            })
            .await;
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_pause() {
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let out = RetryPolicy::default()
            .run("test", || async {
                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    Err(transient(Some(Duration::from_secs(7))))
                } else {
                    Ok(42)
                }
            })
            .await
            .unwrap();
        assert_eq!(out, 42);
        assert!(start.elapsed() >= Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn an_absurd_retry_after_costs_no_more_than_the_backoff() {
        let policy = RetryPolicy::default();
        let start = tokio::time::Instant::now();
        let calls = AtomicU32::new(0);
        let err = policy
            .run("test", || async {
                calls.fetch_add(1, Ordering::Relaxed);
                Err::<(), _>(transient(Some(Duration::from_secs(99_999_999))))
            })
            .await
            .unwrap_err();
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        // Two pauses of at most 200 ms and 400 ms.
        assert!(
            start.elapsed() <= Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.retry_after(), Some(Duration::from_secs(99_999_999)));
        // At the cap it is still honoured.
        assert_eq!(
            policy.pause(Some(policy.max_retry_after), Duration::from_millis(1)),
            policy.max_retry_after
        );
    }

    #[test]
    fn full_jitter_spreads_over_the_whole_backoff() {
        let policy = RetryPolicy::default();
        let pauses: Vec<Duration> = (0..1000)
            .map(|_| policy.pause(None, Duration::from_millis(400)))
            .collect();
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(400)));
        // Full jitter draws from [0, backoff]: both ends are reached.
        assert!(pauses.iter().any(|p| *p < Duration::from_millis(40)));
        assert!(pauses.iter().any(|p| *p > Duration::from_millis(360)));
    }

    #[test]
    fn retry_after_header_forms() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(parse_retry_after(&h), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        h.insert("retry-after", later.parse().unwrap());
        let wait = parse_retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(110) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
        h.insert("retry-after", "1.5".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(1500)));
        h.insert("retry-after", "-1".parse().unwrap());
        assert_eq!(parse_retry_after(&h), None);
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(parse_retry_after(&h), Some(Duration::from_millis(250)));
    }
}
