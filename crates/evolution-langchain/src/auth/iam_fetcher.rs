//! `IamFetcher`: the [`TokenFetcher`] behind `TokenManager`. One fetch is
//! an IAM token request with retries; when IAM refuses the credentials for
//! good, it moves on to the fallback credentials and stays there. It keeps
//! the statistics of every fetch.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::cache::{IssuedToken, TokenFetcher};
use super::credentials::Credentials;
use super::iam;
use super::stats::{StatsRecorder, TokenStats};
use crate::error::{Error, Result};
use crate::transport::retry::RetryPolicy;

/// What an IAM fetcher is configured with; the manager's builder fills it in.
pub(crate) struct IamSettings {
    /// The primary credentials first, then the fallbacks in order.
    pub(crate) credentials: Vec<Credentials>,
    pub(crate) auth_url: String,
    pub(crate) timeout: Duration,
    pub(crate) retry: RetryPolicy,
    pub(crate) client: reqwest::Client,
    /// Largest reply read, in bytes.
    pub(crate) max_response_size: usize,
    /// The fleet's token in Redis, tried before IAM.
    #[cfg(feature = "redis")]
    pub(crate) shared: Option<super::shared::SharedToken>,
}

impl IamSettings {
    /// An upper bound on one exchange with IAM: every attempt timing out
    /// after the longest pause a server may ask for, for each set of
    /// credentials, plus a second of slack (saturating, for settings too
    /// large to add up).
    pub(crate) fn longest_exchange(&self) -> Duration {
        let attempts = self.retry.max_attempts();
        let one_key = self.timeout.saturating_mul(attempts).saturating_add(
            self.retry
                .max_retry_after
                .saturating_mul(attempts.saturating_sub(1)),
        );
        let keys = u32::try_from(self.credentials.len()).unwrap_or(u32::MAX);
        one_key
            .saturating_mul(keys)
            .saturating_add(Duration::from_secs(1))
    }
}

/// One fetch of a token: the exchange with IAM (retries and fallback
/// credentials included), through the fleet's token in Redis when there is
/// one.
pub(crate) struct IamFetcher {
    settings: IamSettings,
    active: AtomicUsize,
    /// Set when the settings were unusable; every fetch reports it.
    config_error: Option<Error>,
    stats: Mutex<StatsRecorder>,
}

impl IamFetcher {
    /// A fetcher; `setup_error` (e.g. an HTTP client that could not be
    /// built) or a problem with the settings is reported by every fetch.
    pub(crate) fn new(settings: IamSettings, setup_error: Option<Error>) -> Self {
        let config_error = setup_error.or_else(|| Self::validate(&settings).err());
        Self {
            settings,
            active: AtomicUsize::new(0),
            config_error,
            stats: Mutex::new(StatsRecorder::default()),
        }
    }

    /// The problem with the settings, if any; the error names the field.
    pub(crate) fn config_error(&self) -> Option<&Error> {
        self.config_error.as_ref()
    }

    fn validate(settings: &IamSettings) -> Result<()> {
        settings.credentials[0].validate("")?;
        for fallback in &settings.credentials[1..] {
            fallback.validate("fallback ")?;
        }
        crate::transport::http::validate_http_url("auth_url", &settings.auth_url)?;
        if settings.timeout.is_zero() {
            return Err(Error::config("timeout", "must be longer than zero"));
        }
        if settings.max_response_size == 0 {
            return Err(Error::config(
                "max_response_size",
                "must be at least 1 byte",
            ));
        }
        Ok(())
    }

    pub(crate) fn auth_url(&self) -> &str {
        &self.settings.auth_url
    }

    pub(crate) fn fallback_count(&self) -> usize {
        self.settings.credentials.len() - 1
    }

    pub(crate) fn active_credentials(&self) -> &Credentials {
        &self.settings.credentials[self.active.load(Ordering::Acquire)]
    }

    pub(crate) fn using_fallback(&self) -> bool {
        self.active.load(Ordering::Acquire) > 0
    }

    pub(crate) fn stats(&self) -> TokenStats {
        self.lock_stats().snapshot(self.using_fallback())
    }

    /// An upper bound on one exchange with IAM; see
    /// [`IamSettings::longest_exchange`].
    pub(crate) fn longest_fetch(&self) -> Duration {
        self.settings.longest_exchange()
    }

    /// An upper bound on one [`fetch`](TokenFetcher::fetch): one exchange,
    /// or with the fleet's token in Redis, the wait for other processes'
    /// exchanges as well.
    pub(crate) fn longest_refresh(&self) -> Duration {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.settings.shared {
            return shared.longest_fetch().max(self.longest_fetch());
        }
        self.longest_fetch()
    }

    fn lock_stats(&self) -> MutexGuard<'_, StatsRecorder> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tries the active credentials (with retries); when IAM refuses them
    /// for good and fallback credentials remain, moves on to the next pair.
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
                        self.settings.max_response_size,
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

impl TokenFetcher for IamFetcher {
    async fn fetch(&self) -> Result<IssuedToken> {
        if let Some(error) = &self.config_error {
            return Err(error.clone());
        }
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.settings.shared {
            return shared.fetch(|| self.exchange()).await;
        }
        self.exchange().await
    }
}

impl IamFetcher {
    /// The model API rejected `token`: a fleet's shared token is not
    /// reused.
    pub(crate) fn rejected(&self, token: &super::token::AccessToken) {
        #[cfg(feature = "redis")]
        if let Some(shared) = &self.settings.shared {
            shared.rejected(token);
        }
        let _ = token;
    }

    /// One token from IAM, recorded in the statistics.
    async fn exchange(&self) -> Result<IssuedToken> {
        let started = Instant::now();
        match self.request_with_fallback().await {
            Ok(issued) => {
                let took = started.elapsed();
                self.lock_stats().record_success(took, issued.lifetime);
                tracing::info!(
                    key_id = self.active_credentials().key_id(),
                    lifetime_secs = issued.lifetime.as_secs_f64(),
                    took_ms = took.as_millis() as u64,
                    "obtained an access token"
                );
                Ok(issued)
            }
            Err(error) => {
                self.lock_stats().record_failure(error.to_string());
                tracing::error!(error = %error, "could not obtain an access token");
                Err(error)
            }
        }
    }
}
