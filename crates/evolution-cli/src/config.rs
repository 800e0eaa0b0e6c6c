//! Where requests go and as whom: connection flags, their environment
//! variables, and the embedded emulator that replaces them all.
//!
//! Precedence is flags > environment (`EVOLUTION_*`) > `.env` > defaults:
//! clap reads each flag's variable when the flag is absent, and `.env` is
//! loaded into the environment before parsing without overriding variables
//! that are already set (see `main`).

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use evolution_emulator::EmulatorHandle;
use evolution_langchain::config::{
    ENV_BASE_URL, ENV_KEY_ID, ENV_PROJECT_ID, ENV_SECRET, ENV_TOKEN_URL,
};
use evolution_langchain::{
    EvolutionInference, EvolutionInferenceBuilder, TokenManager, TokenSource,
};
use secrecy::{ExposeSecret, SecretString};

use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;

/// How to reach the service. The secret has no flag on purpose: a flag's
/// value shows up in shell history and in `ps` output.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection (the secret comes from EVOLUTION_SECRET only)")]
pub struct ConnectionArgs {
    /// Access key id.
    #[arg(long, value_name = "ID", env = ENV_KEY_ID)]
    pub key_id: Option<String>,

    /// Model API base URL, e.g. https://foundation-models.api.cloud.ru/api/gigacube/openai/v1.
    #[arg(long, value_name = "URL", env = ENV_BASE_URL)]
    pub base_url: Option<String>,

    /// IAM token endpoint [default: Cloud.ru IAM].
    #[arg(long, value_name = "URL", env = ENV_TOKEN_URL)]
    pub token_url: Option<String>,

    /// Project id, sent as the x-project-id header.
    #[arg(long, value_name = "ID", env = ENV_PROJECT_ID)]
    pub project_id: Option<String>,

    /// Timeout of each request attempt, in seconds, token requests included
    /// (for streams: of each read).
    #[arg(long, value_name = "SECS", env = "EVOLUTION_TIMEOUT", default_value = "60",
          value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Retries after a 429, 5xx, timeout or connection failure (token
    /// requests included).
    #[arg(long, value_name = "N", env = "EVOLUTION_MAX_RETRIES", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub max_retries: u32,
}

/// A timeout in seconds: positive, finite, fractions allowed.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("expected a number of seconds, got {text:?}"))?;
    // NaN fails `is_finite`, infinity too (it is no timeout).
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err("must be more than 0 seconds".into());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} seconds is too long"))
}

/// What a command talks to, which decides the settings it cannot do without.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// IAM only (`token`): key id and secret.
    Iam,
    /// The model API (`chat`, `batch`, `models`): key id, secret, base URL.
    Api,
}

/// Resolved connection settings, ready to build clients from.
pub struct Endpoint {
    key_id: String,
    secret: SecretString,
    base_url: Option<String>,
    token_url: Option<String>,
    project_id: Option<String>,
    timeout: Duration,
    max_retries: u32,
    http: reqwest::Client,
    /// The embedded emulator, when `--emulator` is on. Kept so it lives as
    /// long as the command; the process exit stops it.
    emulator: Option<EmulatorHandle>,
    /// Whether the embedded emulator forwards to an upstream engine.
    forwards: bool,
}

/// A setting's value, `None` when unset or blank (an empty variable in a
/// `.env` file means "not configured", not "empty key").
fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl Endpoint {
    /// Resolves the settings, or starts the embedded emulator and points
    /// everything at it. Must run inside the runtime (the emulator is served
    /// by it).
    pub async fn resolve(
        connection: &ConnectionArgs,
        embedded: &EmbeddedArgs,
        needs: Needs,
    ) -> Result<Self, CliError> {
        if embedded.enabled() {
            let handle = embedded.start().await?;
            // The emulator replaces the service, credentials included; any
            // configured real credentials are deliberately not sent to it.
            let http = http_client(&[&handle.base_url()])?;
            return Ok(Self {
                key_id: handle.key_id().to_string(),
                secret: SecretString::from(handle.secret().to_string()),
                base_url: Some(handle.base_url()),
                token_url: Some(handle.auth_url()),
                project_id: given(&connection.project_id),
                timeout: connection.timeout,
                max_retries: connection.max_retries,
                http,
                emulator: Some(handle),
                forwards: embedded.upstream().is_some(),
            });
        }

        let key_id = given(&connection.key_id);
        let secret = evolution_langchain::config::env_var(ENV_SECRET);
        let base_url = given(&connection.base_url);
        let mut missing = Vec::new();
        if key_id.is_none() {
            missing.push(ENV_KEY_ID);
        }
        if secret.is_none() {
            missing.push(ENV_SECRET);
        }
        if needs == Needs::Api && base_url.is_none() {
            missing.push(ENV_BASE_URL);
        }
        if !missing.is_empty() {
            return Err(missing_settings(&missing));
        }
        let token_url = given(&connection.token_url);
        let targets: Vec<&str> = [base_url.as_deref(), token_url.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        let http = http_client(&targets)?;
        Ok(Self {
            key_id: key_id.unwrap_or_default(),
            secret: SecretString::from(secret.unwrap_or_default()),
            base_url,
            token_url,
            project_id: given(&connection.project_id),
            timeout: connection.timeout,
            max_retries: connection.max_retries,
            http,
            emulator: None,
            forwards: false,
        })
    }

    /// A client builder with the connection filled in; the caller adds the
    /// model parameters and builds. Its tokens come from
    /// [`token_manager`](Self::token_manager), so `--timeout` and
    /// `--max-retries` bound the token requests as well.
    pub fn inference(&self) -> Result<EvolutionInferenceBuilder, CliError> {
        let tokens: Arc<dyn TokenSource> = Arc::new(self.token_manager()?);
        let mut builder = EvolutionInference::builder()
            .model(self.fallback_model().unwrap_or_default())
            .shared_token_source(tokens)
            .base_url(self.base_url.clone().unwrap_or_default())
            .request_timeout(self.timeout)
            .max_retries(self.max_retries)
            .http_client(self.http.clone());
        if let Some(project) = &self.project_id {
            builder = builder.project_id(project.clone());
        }
        Ok(builder)
    }

    /// A token manager for the configured key, with the connection's timeout
    /// and retries (the library's own default timeout would otherwise apply
    /// to IAM requests, whatever `--timeout` says).
    pub fn token_manager(&self) -> Result<TokenManager, CliError> {
        let mut builder = TokenManager::builder()
            .key_id(self.key_id.clone())
            .secret(self.secret.expose_secret())
            .timeout(self.timeout)
            .max_attempts(self.max_retries.saturating_add(1))
            .http_client(self.http.clone());
        if let Some(url) = &self.token_url {
            builder = builder.auth_url(url.clone());
        }
        Ok(builder.build()?)
    }

    /// The key id in use (ids are not secret).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The model API base URL, when configured.
    pub fn base_url(&self) -> Option<&str> {
        self.base_url.as_deref()
    }

    /// The model to use when none is configured: the embedded emulator's
    /// own (so its answers name a model), unless it forwards to an upstream
    /// engine, which knows its models better.
    pub fn fallback_model(&self) -> Option<String> {
        match &self.emulator {
            Some(handle) if !self.forwards => Some(handle.default_model().to_string()),
            _ => None,
        }
    }

    /// The embedded emulator, if one is running.
    pub fn emulator(&self) -> Option<&EmulatorHandle> {
        self.emulator.as_ref()
    }
}

/// The error for missing settings: which variables to set, and the way to
/// try everything without an account.
fn missing_settings(missing: &[&str]) -> CliError {
    let list = match missing {
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => String::new(),
    };
    let what = if missing.len() == 3 {
        "no credentials configured"
    } else {
        "incomplete configuration"
    };
    CliError::usage(format!(
        "{what}: set {list} (in the environment or a .env file), \
         or add --emulator to try everything against a local emulator without an account"
    ))
}

/// The HTTP client for all requests. Loopback targets (the emulator, a local
/// gateway) bypass any system proxy, which could not reach them anyway.
fn http_client(targets: &[&str]) -> Result<reqwest::Client, CliError> {
    let loopback = !targets.is_empty() && targets.iter().all(|target| is_loopback(target));
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("evolution-cli/", env!("CARGO_PKG_VERSION")));
    let builder = if loopback {
        builder.no_proxy()
    } else {
        builder
    };
    builder
        .build()
        .map_err(|e| CliError::failure(format!("cannot create the HTTP client: {e}")))
}

/// Whether `url` points at this machine (an unparsable URL is not: the
/// library reports it properly later).
fn is_loopback(url: &str) -> bool {
    let Ok(url) = reqwest::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_are_named() {
        let all = missing_settings(&[ENV_KEY_ID, ENV_SECRET, ENV_BASE_URL]).message;
        assert!(
            all.contains("EVOLUTION_KEY_ID, EVOLUTION_SECRET and EVOLUTION_BASE_URL"),
            "{all}"
        );
        assert!(all.contains("--emulator"), "{all}");
        let one = missing_settings(&[ENV_SECRET]).message;
        assert!(one.contains("set EVOLUTION_SECRET (in"), "{one}");
    }

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:8080/v1"));
        assert!(is_loopback("http://localhost/v1"));
        assert!(is_loopback("http://[::1]:9/v1"));
        assert!(!is_loopback("https://foundation-models.api.cloud.ru/v1"));
        assert!(!is_loopback("not a url"));
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("NaN").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
