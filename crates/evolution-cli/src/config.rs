//! Where requests go and as whom: connection flags, their environment
//! variables, and the embedded emulator that replaces them all.
//!
//! Precedence is flags > environment (`EVOLUTION_*`) > `.env` > defaults:
//! clap reads each flag's variable when the flag is absent, and `.env` is
//! loaded into the environment before parsing without overriding variables
//! that are already set (see `main`).

use std::time::Duration;

use clap::Args;
use evolution_emulator::EmulatorHandle;
use evolution_langchain::config::{
    EnvSettings, ENV_API_KEY, ENV_BASE_URL, ENV_KEY_ID, ENV_MAX_RATE_LIMIT_WAIT, ENV_PROJECT_ID,
    ENV_REDIS_URL, ENV_REQUESTS_PER_MINUTE, ENV_SECRET, ENV_TOKENS_PER_MINUTE, ENV_TOKEN_URL,
};
use evolution_langchain::{
    ClientBuilder, EvolutionInference, EvolutionInferenceBuilder, DEFAULT_BASE_URL,
};
use secrecy::{ExposeSecret, SecretString};

use crate::emulator::EmbeddedArgs;
use crate::exit::CliError;

/// How to reach the service: options of every command that calls it,
/// accepted before or after the subcommand (`evolution --timeout 5 chat …`
/// or `evolution chat --timeout 5 …`). The API key and the secret have no
/// flag on purpose: a flag's value shows up in shell history and in `ps`
/// output.
///
/// The ids are prefixed so they never meet the `emulator` subcommand's own
/// (`--key-id` is also the emulator's key id), which these options are not
/// for (see `main`).
#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Connection (secrets come from EVOLUTION_API_KEY or EVOLUTION_SECRET only)"
)]
pub struct ConnectionArgs {
    /// Access key id.
    #[arg(id = "connection_key_id", long = "key-id", global = true, value_name = "ID",
          env = ENV_KEY_ID)]
    pub key_id: Option<String>,

    /// Model API base URL [default: https://foundation-models.api.cloud.ru/v1]; a
    /// dedicated model run's is https://<model_run_id>.modelrun.inference.cloud.ru/v1.
    #[arg(id = "connection_base_url", long = "base-url", global = true, value_name = "URL",
          env = ENV_BASE_URL)]
    pub base_url: Option<String>,

    /// IAM token endpoint [default: Cloud.ru IAM].
    #[arg(id = "connection_token_url", long = "token-url", global = true, value_name = "URL",
          env = ENV_TOKEN_URL)]
    pub token_url: Option<String>,

    /// Project id, sent as the x-project-id header.
    #[arg(id = "connection_project_id", long = "project-id", global = true, value_name = "ID",
          env = ENV_PROJECT_ID)]
    pub project_id: Option<String>,

    /// Timeout of each request attempt, token requests included (for
    /// streams: the longest wait for more of the answer): seconds, or a
    /// duration such as 500ms or 2m.
    #[arg(id = "connection_timeout", long = "timeout", global = true, value_name = "SECS",
          env = "EVOLUTION_TIMEOUT", default_value = "60", allow_negative_numbers = true,
          value_parser = parse_timeout)]
    pub timeout: Duration,

    /// Retries after a 5xx, timeout or connection failure (token requests
    /// included), 0–10. A 429 is waited out instead (see
    /// --max-rate-limit-wait).
    #[arg(id = "connection_max_retries", long = "max-retries", global = true, value_name = "N",
          env = "EVOLUTION_MAX_RETRIES", default_value_t = 2, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub max_retries: u32,

    /// The key's requests-per-minute limit: calls wait for it instead of
    /// being sent into 429s [default: no limit].
    #[arg(id = "connection_rpm", long = "rpm", global = true, value_name = "N",
          env = ENV_REQUESTS_PER_MINUTE, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,

    /// The key's tokens-per-minute limit (prompt and max tokens, estimated,
    /// then corrected by the usage reported) [default: no limit].
    #[arg(id = "connection_tpm", long = "tpm", global = true, value_name = "N",
          env = ENV_TOKENS_PER_MINUTE, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: Option<u32>,

    /// How long one call may wait out the provider's rate limit (429s)
    /// before it fails: seconds, or a duration such as 10m.
    #[arg(id = "connection_max_rate_limit_wait", long = "max-rate-limit-wait", global = true,
          value_name = "SECS", env = ENV_MAX_RATE_LIMIT_WAIT, default_value = "300",
          value_parser = parse_patience)]
    pub max_rate_limit_wait: Duration,

    /// Share the key's rate limits and IAM token with every process using
    /// it, through this Redis server (redis://host:port[/db]).
    #[arg(id = "connection_redis_url", long = "redis-url", global = true, value_name = "URL",
          env = ENV_REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,
}

/// A patience: like a timeout, but zero is allowed (fail at the first 429).
fn parse_patience(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(0.0) => Ok(Duration::ZERO),
        _ => parse_timeout(text),
    }
}

/// A timeout: a number of seconds (fractions allowed) or a duration such as
/// `500ms`; positive and finite.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<f64>() {
        // NaN fails `is_finite`, infinity too (it is no timeout).
        Ok(seconds) if !seconds.is_finite() || seconds <= 0.0 => None,
        Ok(seconds) => Some(
            Duration::try_from_secs_f64(seconds)
                .map_err(|_| format!("{text:?} seconds is too long"))?,
        ),
        Err(_) => Some(humantime::parse_duration(text).map_err(|_| {
            format!("expected a number of seconds or a duration such as 500ms, got {text:?}")
        })?),
    };
    duration
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("must be more than 0 seconds, got {text}"))
}

/// How the command authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// A Foundation Models API key, sent as it is.
    ApiKey,
    /// A key id and secret, exchanged at IAM for access tokens.
    Iam,
}

/// The service a command talks to: Cloud.ru's (or another base URL's), as
/// the connection settings resolve it, or the embedded emulator. Fills the
/// connection into any of the library's client builders (chat, audio, …).
pub struct Service {
    /// The connection, as every builder gets it.
    connect: Connect,
    mode: AuthMode,
    /// The embedded emulator, when `--emulator` is on. Kept so it lives as
    /// long as the command; the process exit stops it.
    emulator: Option<EmulatorHandle>,
    /// Whether the embedded emulator forwards to an upstream engine.
    forwards: bool,
}

/// The resolved connection settings: what [`Service::connect`] puts into a
/// client builder.
#[derive(Clone)]
struct Connect {
    timeout: Duration,
    max_retries: u32,
    max_rate_limit_wait: Duration,
    project_id: Option<String>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    redis_url: Option<String>,
    base_url: String,
    auth: Auth,
}

/// How the client authenticates.
#[derive(Clone)]
enum Auth {
    ApiKey(SecretString),
    Iam {
        key_id: String,
        secret: SecretString,
        auth_url: Option<String>,
    },
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

impl Service {
    /// Resolves the settings, or starts the embedded emulator and points
    /// everything at it. Must run inside the runtime (the emulator is served
    /// by it).
    pub async fn resolve(
        connection: &ConnectionArgs,
        embedded: &EmbeddedArgs,
    ) -> Result<Self, CliError> {
        let connect = |base_url: String, auth: Auth| Connect {
            timeout: connection.timeout,
            max_retries: connection.max_retries,
            max_rate_limit_wait: connection.max_rate_limit_wait,
            project_id: given(&connection.project_id),
            rpm: connection.rpm,
            tpm: connection.tpm,
            redis_url: given(&connection.redis_url),
            base_url,
            auth,
        };

        if embedded.enabled() {
            let handle = embedded.start().await?;
            // The emulator replaces the service, credentials included; any
            // configured real credentials are deliberately not sent to it.
            let auth = Auth::Iam {
                key_id: handle.key_id().to_string(),
                secret: SecretString::from(handle.secret().to_string()),
                auth_url: Some(handle.auth_url()),
            };
            return Ok(Self {
                connect: connect(handle.base_url(), auth),
                mode: AuthMode::Iam,
                forwards: embedded.upstream().is_some(),
                emulator: Some(handle),
            });
        }

        let env = EnvSettings::read()?;
        let key_id = given(&connection.key_id);
        let base_url = given(&connection.base_url).unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        let (auth, mode) = match (env.api_key, key_id, env.secret) {
            (Some((name, _)), Some(_), _) | (Some((name, _)), _, Some(_)) => {
                return Err(CliError::usage(format!(
                    "both an API key ({name}) and a key id/secret ({ENV_KEY_ID}/{ENV_SECRET} or \
                     --key-id) are configured: keep one of them"
                )))
            }
            (Some((_, key)), None, None) => (Auth::ApiKey(key), AuthMode::ApiKey),
            (None, Some(key_id), Some(secret)) => (
                Auth::Iam {
                    key_id,
                    secret,
                    auth_url: given(&connection.token_url),
                },
                AuthMode::Iam,
            ),
            (None, key_id, secret) => {
                let mut missing = Vec::new();
                if key_id.is_none() {
                    missing.push(ENV_KEY_ID);
                }
                if secret.is_none() {
                    missing.push(ENV_SECRET);
                }
                return Err(missing_settings(&missing));
            }
        };
        Ok(Self {
            connect: connect(base_url, auth),
            mode,
            emulator: None,
            forwards: false,
        })
    }

    /// `builder` (any of the library's clients') with the connection filled
    /// in: credentials, URLs, `--timeout` and `--max-retries` (for the token
    /// requests as well), rate limits, the project and the user agent.
    pub fn connect<S, M>(&self, builder: ClientBuilder<S, M>) -> ClientBuilder<S, M> {
        let c = &self.connect;
        let mut builder = builder
            .default_header("user-agent", USER_AGENT)
            .request_timeout(c.timeout)
            .max_retries(c.max_retries)
            .auth_timeout(c.timeout)
            .auth_max_retries(c.max_retries)
            .max_rate_limit_wait(c.max_rate_limit_wait)
            .base_url(c.base_url.clone());
        if let Some(project) = &c.project_id {
            builder = builder.project_id(project.clone());
        }
        if let Some(rpm) = c.rpm {
            builder = builder.requests_per_minute(rpm);
        }
        if let Some(tpm) = c.tpm {
            builder = builder.tokens_per_minute(tpm);
        }
        if let Some(url) = &c.redis_url {
            builder = builder.redis_url(url.clone());
        }
        match &c.auth {
            Auth::ApiKey(key) => builder.api_key(key.expose_secret()),
            Auth::Iam {
                key_id,
                secret,
                auth_url,
            } => {
                let builder = builder
                    .key_id(key_id.clone())
                    .secret(secret.expose_secret());
                match auth_url {
                    Some(url) => builder.auth_url(url.clone()),
                    None => builder,
                }
            }
        }
    }

    /// A chat client builder with the connection filled in; the caller adds
    /// the model parameters and builds.
    pub fn inference(&self) -> EvolutionInferenceBuilder {
        self.connect(EvolutionInference::builder())
            .model(self.fallback_model().unwrap_or_default())
    }

    /// How requests are authenticated.
    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The model API base URL.
    pub fn base_url(&self) -> &str {
        &self.connect.base_url
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

/// The CLI's user agent on model API requests.
const USER_AGENT: &str = concat!("evolution-cli/", env!("CARGO_PKG_VERSION"));

/// The error for missing settings: which variables to set, and the way to
/// try everything without an account.
fn missing_settings(missing: &[&str]) -> CliError {
    let list = match missing {
        [one] => (*one).to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => String::new(),
    };
    let what = if missing.len() == 2 {
        "no credentials configured"
    } else {
        "incomplete configuration"
    };
    CliError::usage(format!(
        "{what}: set {ENV_API_KEY}, or {list} (in the environment or a .env file), \
         or add --emulator to try everything against a local emulator without an account"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_settings_are_named() {
        let all = missing_settings(&[ENV_KEY_ID, ENV_SECRET]).message;
        assert!(
            all.contains("set EVOLUTION_API_KEY, or EVOLUTION_KEY_ID and EVOLUTION_SECRET"),
            "{all}"
        );
        assert!(all.contains("--emulator"), "{all}");
        let one = missing_settings(&[ENV_SECRET]).message;
        assert!(one.contains("or EVOLUTION_SECRET (in"), "{one}");
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_timeout("-1").unwrap_err().contains("more than 0"));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("-1").is_err());
        assert!(parse_timeout("NaN").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
