//! Settings from the environment and a `.env` file: the variable names, and
//! reading them. Builders decide what the values mean.

use crate::error::{Error, Result};

/// Environment variable holding the access key id.
pub const ENV_KEY_ID: &str = "EVOLUTION_KEY_ID";
/// Environment variable holding the access key secret.
pub const ENV_SECRET: &str = "EVOLUTION_SECRET";
/// Environment variable holding the model API base URL.
pub const ENV_BASE_URL: &str = "EVOLUTION_BASE_URL";
/// Environment variable holding the model name.
pub const ENV_MODEL: &str = "EVOLUTION_MODEL";
/// Environment variable holding the IAM token endpoint.
pub const ENV_TOKEN_URL: &str = "EVOLUTION_TOKEN_URL";
/// Environment variable holding the project id (`x-project-id` header).
pub const ENV_PROJECT_ID: &str = "EVOLUTION_PROJECT_ID";
/// Environment variable holding the key's requests-per-minute limit.
pub const ENV_REQUESTS_PER_MINUTE: &str = "EVOLUTION_REQUESTS_PER_MINUTE";
/// Environment variable holding the key's tokens-per-minute limit.
pub const ENV_TOKENS_PER_MINUTE: &str = "EVOLUTION_TOKENS_PER_MINUTE";
/// Environment variable holding the patience for `429`s, in seconds.
pub const ENV_MAX_RATE_LIMIT_WAIT: &str = "EVOLUTION_MAX_RATE_LIMIT_WAIT";
/// Environment variable holding the Redis URL a fleet shares its rate
/// limits and IAM token through (feature `redis`).
pub const ENV_REDIS_URL: &str = "EVOLUTION_REDIS_URL";

/// Loads `.env` from the current directory (or a parent) into the process
/// environment, once. Variables already set win over the file. A missing
/// file is fine; a malformed one is reported.
pub fn load_dotenv() -> Result<()> {
    static LOADED: std::sync::OnceLock<Result<()>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(dotenv_error(&e)),
        })
        .clone()
}

/// Describes a `.env` problem without quoting the offending line, which may
/// well hold the secret: only the variable's name is shown.
fn dotenv_error(error: &dotenvy::Error) -> Error {
    match error {
        dotenvy::Error::LineParse(line, index) => {
            let name = line
                .split_once('=')
                .map(|(name, _)| name.trim().trim_start_matches("export ").trim())
                .filter(|name| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
            let which = match name {
                Some(name) => format!("the line setting {name}"),
                None => "a line".to_string(),
            };
            Error::config(
                ".env",
                format!("could not be parsed: {which} is malformed at character {index} (check quotes and spaces; the line is not shown as it may hold a secret)"),
            )
        }
        other => Error::config(".env", format!("could not be read: {other}")),
    }
}

/// A variable's value, `None` when unset or blank.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Environment variable holding a Foundation Models API key (instead of a
/// key id and secret).
pub const ENV_API_KEY: &str = "EVOLUTION_API_KEY";
/// The name Cloud.ru's own tools read the API key from; used when
/// [`ENV_API_KEY`] is unset.
pub const ENV_CLOUD_RU_API_KEY: &str = "CLOUD_RU_FOUNDATION_MODELS_API_KEY";

/// The connection settings the environment holds (after `.env` is loaded),
/// each `None` when unset or blank.
#[derive(Clone, Default)]
pub struct EnvSettings {
    /// The API key and the variable it came from.
    pub api_key: Option<(&'static str, secrecy::SecretString)>,
    /// `EVOLUTION_KEY_ID`.
    pub key_id: Option<String>,
    /// `EVOLUTION_SECRET`.
    pub secret: Option<secrecy::SecretString>,
    /// `EVOLUTION_BASE_URL`.
    pub base_url: Option<String>,
    /// `EVOLUTION_TOKEN_URL`.
    pub auth_url: Option<String>,
    /// `EVOLUTION_PROJECT_ID`.
    pub project_id: Option<String>,
    /// `EVOLUTION_MODEL`.
    pub model: Option<String>,
    /// `EVOLUTION_REQUESTS_PER_MINUTE`.
    pub requests_per_minute: Option<u32>,
    /// `EVOLUTION_TOKENS_PER_MINUTE`.
    pub tokens_per_minute: Option<u32>,
    /// `EVOLUTION_MAX_RATE_LIMIT_WAIT`, in seconds.
    pub max_rate_limit_wait: Option<std::time::Duration>,
    /// `EVOLUTION_REDIS_URL`.
    pub redis_url: Option<String>,
}

impl EnvSettings {
    /// Loads `.env` (see [`load_dotenv`]) and reads the variables.
    pub fn read() -> Result<Self> {
        load_dotenv()?;
        Ok(Self {
            api_key: [ENV_API_KEY, ENV_CLOUD_RU_API_KEY]
                .into_iter()
                .find_map(|name| env_var(name).map(|key| (name, key.into()))),
            key_id: env_var(ENV_KEY_ID),
            secret: env_var(ENV_SECRET).map(Into::into),
            base_url: env_var(ENV_BASE_URL),
            auth_url: env_var(ENV_TOKEN_URL),
            project_id: env_var(ENV_PROJECT_ID),
            model: env_var(ENV_MODEL),
            requests_per_minute: env_number(ENV_REQUESTS_PER_MINUTE)?,
            tokens_per_minute: env_number(ENV_TOKENS_PER_MINUTE)?,
            max_rate_limit_wait: env_number::<u64>(ENV_MAX_RATE_LIMIT_WAIT)?
                .map(std::time::Duration::from_secs),
            redis_url: env_var(ENV_REDIS_URL),
        })
    }
}

/// A whole number from the environment; a value that is not one is an
/// error naming the variable.
fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    env_var(name)
        .map(|text| {
            text.parse()
                .map_err(|_| Error::config(name, format!("must be a whole number, got {text:?}")))
        })
        .transpose()
}

/// How the environment says to authenticate.
pub enum EnvAuth {
    /// A Foundation Models API key.
    ApiKey(secrecy::SecretString),
    /// A key id and/or secret (either may be missing; the builder says so).
    KeyPair {
        /// `EVOLUTION_KEY_ID`.
        key_id: Option<String>,
        /// `EVOLUTION_SECRET`.
        secret: Option<secrecy::SecretString>,
    },
}

impl EnvSettings {
    /// Which way of authenticating the environment configures: `None` when
    /// none; an error naming the variables when both an API key and a key
    /// id/secret are set, as nobody can tell which one was meant.
    pub fn auth(&self) -> Result<Option<EnvAuth>> {
        let pair_set = self.key_id.is_some() || self.secret.is_some();
        match (&self.api_key, pair_set) {
            (Some((name, _)), true) => Err(Error::config(
                *name,
                format!(
                    "is set together with {ENV_KEY_ID}/{ENV_SECRET}: configure either an \
                     API key ({ENV_API_KEY}) or a key id and secret, not both"
                ),
            )),
            (Some((_, key)), false) => Ok(Some(EnvAuth::ApiKey(key.clone()))),
            (None, true) => Ok(Some(EnvAuth::KeyPair {
                key_id: self.key_id.clone(),
                secret: self.secret.clone(),
            })),
            (None, false) => Ok(None),
        }
    }
}

impl std::fmt::Debug for EnvAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EnvAuth::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            EnvAuth::KeyPair { key_id, .. } => f
                .debug_struct("KeyPair")
                .field("key_id", key_id)
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

impl std::fmt::Debug for EnvSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvSettings")
            .field(
                "api_key",
                &self.api_key.as_ref().map(|(name, _)| (name, "<redacted>")),
            )
            .field("key_id", &self.key_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("auth_url", &self.auth_url)
            .field("project_id", &self.project_id)
            .field("model", &self.model)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_errors_never_quote_the_line() {
        let error = dotenv_error(&dotenvy::Error::LineParse(
            "EVOLUTION_SECRET=\"top-secret-value".into(),
            34,
        ));
        let text = error.to_string();
        assert!(!text.contains("top-secret-value"), "{text}");
        assert!(text.contains("EVOLUTION_SECRET"), "{text}");
        let text = dotenv_error(&dotenvy::Error::LineParse("garbage secret".into(), 3)).to_string();
        assert!(
            !text.contains("garbage secret") && text.contains("a line"),
            "{text}"
        );
    }
}
