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
            Err(e) => Err(Error::config(".env", format!("could not be read: {e}"))),
        })
        .clone()
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
    fn url_checks() {
        assert!(validate_http_url("base_url", "https://host/v1").is_ok());
        assert!(validate_http_url("base_url", "http://127.0.0.1:8080").is_ok());
        for bad in ["", "host/v1", "ftp://host", "https://", "not a url"] {
            let err = validate_http_url("base_url", bad).unwrap_err();
            assert!(err.to_string().contains("base_url"), "{bad}: {err}");
        }
    }
}
