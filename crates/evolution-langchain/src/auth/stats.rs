//! What the token manager has done (`TokenStats`) and holds now (`TokenInfo`).

use std::time::{Duration, SystemTime};

/// Counters and averages over every refresh the manager has run.
///
/// A *refresh* is one attempt to obtain a token, retries and fallback
/// included; `iam_requests` counts the HTTP requests inside them. The averages
/// cover successful refreshes only, as failed ones have no token lifetime.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TokenStats {
    /// Refreshes started and finished (successful + failed).
    pub total_refreshes: u64,
    /// Refreshes that produced a token.
    pub successful_refreshes: u64,
    /// Refreshes that ended in an error.
    pub failed_refreshes: u64,
    /// `successful_refreshes / total_refreshes × 100`; 0 before the first refresh.
    pub success_rate: f64,
    /// Requests sent to IAM, retries included.
    pub iam_requests: u64,
    /// Mean wall time of a successful refresh.
    pub average_refresh_duration: Duration,
    /// Mean lifetime (`expires_in`) of the tokens obtained.
    pub average_token_lifetime: Duration,
    /// The message of the most recent failure, if any (never contains secrets).
    pub last_error: Option<String>,
    /// When the most recent successful refresh finished.
    pub last_refresh: Option<SystemTime>,
    /// How many times the manager moved on to fallback credentials.
    pub fallback_switches: u64,
    /// Whether fallback credentials are in use now.
    pub using_fallback: bool,
}

/// Accumulates refresh outcomes; lives behind the manager's stats lock.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    successes: u64,
    failures: u64,
    iam_requests: u64,
    total_success_time: Duration,
    total_lifetime: Duration,
    last_error: Option<String>,
    last_refresh: Option<SystemTime>,
    fallback_switches: u64,
}

impl StatsRecorder {
    pub(crate) fn record_success(&mut self, took: Duration, lifetime: Duration) {
        self.successes += 1;
        self.total_success_time += took;
        self.total_lifetime += lifetime;
        self.last_refresh = Some(SystemTime::now());
    }

    pub(crate) fn record_failure(&mut self, message: String) {
        self.failures += 1;
        self.last_error = Some(message);
    }

    pub(crate) fn record_iam_request(&mut self) {
        self.iam_requests += 1;
    }

    pub(crate) fn record_fallback_switch(&mut self) {
        self.fallback_switches += 1;
    }

    pub(crate) fn snapshot(&self, using_fallback: bool) -> TokenStats {
        let total = self.successes + self.failures;
        let mean = |sum: Duration| match u32::try_from(self.successes) {
            Ok(0) | Err(_) => Duration::ZERO,
            Ok(n) => sum / n,
        };
        TokenStats {
            total_refreshes: total,
            successful_refreshes: self.successes,
            failed_refreshes: self.failures,
            success_rate: if total == 0 {
                0.0
            } else {
                self.successes as f64 / total as f64 * 100.0
            },
            iam_requests: self.iam_requests,
            average_refresh_duration: mean(self.total_success_time),
            average_token_lifetime: mean(self.total_lifetime),
            last_error: self.last_error.clone(),
            last_refresh: self.last_refresh,
            fallback_switches: self.fallback_switches,
            using_fallback,
        }
    }
}

/// The token the manager holds right now, described without revealing it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TokenInfo {
    /// Whether a token is cached.
    pub has_token: bool,
    /// Whether the cached token is usable without waiting for a refresh.
    pub is_valid: bool,
    /// Time left until the token's real expiry (zero once expired).
    pub expires_in: Option<Duration>,
    /// The lifetime IAM granted the token.
    pub lifetime: Option<Duration>,
    /// When the token was obtained (wall clock).
    pub obtained_at: Option<SystemTime>,
    /// When the token expires (wall clock estimate).
    pub expires_at: Option<SystemTime>,
    /// How long before expiry a token is treated as expired.
    pub refresh_buffer: Duration,
    /// Whether a refresh is running now.
    pub refresh_in_progress: bool,
    /// The key id of the credentials in use.
    pub key_id: String,
    /// Whether those are fallback credentials.
    pub using_fallback: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_the_recorded_outcomes() {
        let mut r = StatsRecorder::default();
        assert_eq!(r.snapshot(false).success_rate, 0.0);
        r.record_success(Duration::from_millis(100), Duration::from_secs(3600));
        r.record_success(Duration::from_millis(300), Duration::from_secs(1800));
        r.record_failure("boom".into());
        r.record_iam_request();
        let s = r.snapshot(true);
        assert_eq!(s.total_refreshes, 3);
        assert_eq!(s.successful_refreshes, 2);
        assert_eq!(s.failed_refreshes, 1);
        assert!((s.success_rate - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.average_refresh_duration, Duration::from_millis(200));
        assert_eq!(s.average_token_lifetime, Duration::from_secs(2700));
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        assert!(s.using_fallback);
    }
}
