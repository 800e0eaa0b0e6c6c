//! Settings from the environment (and a `.env` file), and the checks shared
//! by every builder.

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

/// Checks that `value` is an absolute http(s) URL with a host.
pub(crate) fn validate_http_url(field: &str, value: &str) -> Result<url::Url> {
    let parsed = url::Url::parse(value.trim()).map_err(|e| {
        Error::config(
            field,
            format!("is not a valid URL ({e}): expected e.g. https://host/path, got {value:?}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(Error::config(
            field,
            format!("must be an http:// or https:// URL with a host, got {value:?}"),
        ));
    }
    Ok(parsed)
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

    #[test]
    fn url_checks() {
        assert!(validate_http_url("base_url", "https://host/v1").is_ok());
        assert!(validate_http_url("base_url", "http://127.0.0.1:8080").is_ok());
        for bad in ["", "host/v1", "ftp://host", "https://", "not a url"] {
            let err = validate_http_url("base_url", bad).unwrap_err();
            assert!(err.to_string().contains("base_url"), "{bad}: {err}");
        }
    }
}

/// What both model clients need to reach the API: where, as whom, and how
/// patiently. Their builders share it (and its setters, through
/// `connection_setters!`), so both validate it the same way.
#[derive(Clone, Default)]
pub(crate) struct ConnectionConfig {
    pub(crate) key_id: Option<String>,
    pub(crate) secret: Option<secrecy::SecretString>,
    pub(crate) base_url: Option<String>,
    pub(crate) auth_url: Option<String>,
    pub(crate) project_id: Option<String>,
    pub(crate) request_timeout: Option<std::time::Duration>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) http_client: Option<reqwest::Client>,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) token_source: Option<std::sync::Arc<dyn crate::TokenSource>>,
    pub(crate) refresh_buffer: Option<std::time::Duration>,
    /// A header that could not be parsed, reported by `build`.
    pub(crate) header_error: Option<Error>,
}

/// Default per-attempt timeout for model requests (the original's 60 s).
pub const DEFAULT_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 2;

impl ConnectionConfig {
    /// Fills unset fields from `EVOLUTION_*` variables (after loading `.env`).
    pub(crate) fn fill_from_env(&mut self) -> Result<()> {
        load_dotenv()?;
        if self.key_id.is_none() {
            self.key_id = env_var(ENV_KEY_ID);
        }
        if self.secret.is_none() {
            self.secret = env_var(ENV_SECRET).map(secrecy::SecretString::from);
        }
        if self.base_url.is_none() {
            self.base_url = env_var(ENV_BASE_URL);
        }
        if self.auth_url.is_none() {
            self.auth_url = env_var(ENV_TOKEN_URL);
        }
        if self.project_id.is_none() {
            self.project_id = env_var(ENV_PROJECT_ID);
        }
        Ok(())
    }

    /// Validates the settings and assembles the shared transport.
    pub(crate) fn into_transport(self) -> Result<crate::inference::transport::Transport> {
        use secrecy::ExposeSecret;

        if let Some(error) = self.header_error {
            return Err(error);
        }
        let base_url = self.base_url.as_deref().map(str::trim).unwrap_or_default();
        if base_url.is_empty() {
            return Err(Error::config(
                "base_url",
                format!("is not set: pass .base_url(...) or set {ENV_BASE_URL} (e.g. https://foundation-models.api.cloud.ru/api/gigacube/openai/v1)"),
            ));
        }
        validate_http_url("base_url", base_url)?;
        let base_url = base_url.trim_end_matches('/').to_string();

        let request_timeout = self.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if request_timeout.is_zero() {
            return Err(Error::config("request_timeout", "must be longer than zero"));
        }
        let client = match self.http_client {
            Some(client) => client,
            None => crate::http::default_client()?,
        };

        let tokens: std::sync::Arc<dyn crate::TokenSource> = match self.token_source {
            Some(source) => source,
            None => {
                let key_id = self.key_id.unwrap_or_default();
                let secret = self
                    .secret
                    .as_ref()
                    .map(|s| s.expose_secret().to_string())
                    .unwrap_or_default();
                if key_id.trim().is_empty() {
                    return Err(Error::config(
                        "key_id",
                        format!("is not set: pass .key_id(...) or set {ENV_KEY_ID} (or give a token_source / api_key)"),
                    ));
                }
                if secret.trim().is_empty() {
                    return Err(Error::config(
                        "secret",
                        format!("is not set: pass .secret(...) or set {ENV_SECRET}"),
                    ));
                }
                let mut manager = crate::TokenManager::builder()
                    .key_id(key_id)
                    .secret(secret)
                    .http_client(client.clone());
                if let Some(auth_url) = self.auth_url {
                    manager = manager.auth_url(auth_url);
                }
                if let Some(buffer) = self.refresh_buffer {
                    manager = manager.refresh_buffer(buffer);
                }
                std::sync::Arc::new(manager.build()?)
            }
        };

        let mut headers = self.headers;
        if let Some(project_id) = self.project_id.filter(|p| !p.trim().is_empty()) {
            let value =
                reqwest::header::HeaderValue::from_str(project_id.trim()).map_err(|_| {
                    Error::config(
                        "project_id",
                        "contains characters not allowed in an HTTP header",
                    )
                })?;
            headers.insert("x-project-id", value);
        }
        Ok(crate::inference::transport::Transport {
            client,
            tokens,
            base_url,
            headers,
            request_timeout,
            retry: crate::RetryPolicy::with_max_attempts(
                self.max_retries
                    .unwrap_or(DEFAULT_MAX_RETRIES)
                    .saturating_add(1),
            ),
        })
    }
}

/// Setters for the [`ConnectionConfig`] inside a builder, written once for
/// every client builder.
macro_rules! connection_setters {
    () => {
        /// The access key id (with [`secret`](Self::secret)); not needed with a token source.
        pub fn key_id(mut self, key_id: impl Into<String>) -> Self {
            self.connection.key_id = Some(key_id.into());
            self
        }

        /// The access key secret.
        pub fn secret(mut self, secret: impl Into<String>) -> Self {
            self.connection.secret = Some(secrecy::SecretString::from(secret.into()));
            self
        }

        /// The API base URL, e.g.
        /// `https://foundation-models.api.cloud.ru/api/gigacube/openai/v1`.
        /// A trailing slash is fine.
        pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
            self.connection.base_url = Some(base_url.into());
            self
        }

        /// The IAM token endpoint (default: Cloud.ru IAM).
        pub fn auth_url(mut self, auth_url: impl Into<String>) -> Self {
            self.connection.auth_url = Some(auth_url.into());
            self
        }

        /// Sent as the `x-project-id` header.
        pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
            self.connection.project_id = Some(project_id.into());
            self
        }

        /// Timeout of each attempt (default 60 s). For streams it bounds the
        /// wait for the response head and for each further read.
        pub fn request_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connection.request_timeout = Some(timeout);
            self
        }

        /// Retries after a 429, 5xx, timeout or connection failure (default 2).
        pub fn max_retries(mut self, max_retries: u32) -> Self {
            self.connection.max_retries = Some(max_retries);
            self
        }

        /// The HTTP client (and connection pool) to use.
        pub fn http_client(mut self, client: reqwest::Client) -> Self {
            self.connection.http_client = Some(client);
            self
        }

        /// A header sent with every request. An invalid name or value is
        /// reported by `build`.
        pub fn default_header(mut self, name: &str, value: &str) -> Self {
            match (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                (Ok(name), Ok(value)) => {
                    self.connection.headers.insert(name, value);
                }
                _ => {
                    self.connection.header_error = Some($crate::Error::Config {
                        field: "default_header".into(),
                        message: format!("{name:?} is not a valid HTTP header name/value pair"),
                    })
                }
            }
            self
        }

        /// Headers sent with every request.
        pub fn default_headers(mut self, headers: reqwest::header::HeaderMap) -> Self {
            self.connection.headers.extend(headers);
            self
        }

        /// Where tokens come from, instead of `key_id` + `secret`.
        pub fn token_source(mut self, source: impl $crate::TokenSource + 'static) -> Self {
            self.connection.token_source = Some(std::sync::Arc::new(source));
            self
        }

        /// A shared token source, e.g. one `TokenManager` for several clients.
        pub fn shared_token_source(
            mut self,
            source: std::sync::Arc<dyn $crate::TokenSource>,
        ) -> Self {
            self.connection.token_source = Some(source);
            self
        }

        /// A fixed API key instead of IAM tokens.
        pub fn api_key(self, api_key: impl Into<String>) -> Self {
            self.token_source($crate::StaticToken::new(api_key))
        }

        /// The token manager's refresh buffer (default 30 s).
        pub fn refresh_buffer(mut self, buffer: std::time::Duration) -> Self {
            self.connection.refresh_buffer = Some(buffer);
            self
        }
    };
}
pub(crate) use connection_setters;

impl std::fmt::Debug for ConnectionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionConfig")
            .field("key_id", &self.key_id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("base_url", &self.base_url)
            .field("auth_url", &self.auth_url)
            .field("project_id", &self.project_id)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("token_source", &self.token_source)
            .finish_non_exhaustive()
    }
}
