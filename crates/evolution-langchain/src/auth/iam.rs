//! The IAM token endpoint: request body, reply parsing, the mapping of HTTP
//! outcomes to [`AuthError`]s, and [`IamFetcher`], the token fetcher that
//! adds retries, fallback credentials and statistics.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zeroize::Zeroizing;

use super::cache::IssuedToken;
use super::credentials::Credentials;
use super::token::AccessToken;
use crate::error::{truncate_message, AuthError, Error};
use crate::transport::body::{read_limited, read_prefix, BodyError};
use crate::transport::http::{describe_error, redirect_of};
use crate::transport::retry::{parse_retry_after, retryable_status};

/// How much of an IAM error body is read: enough for its message.
const ERROR_BODY_LIMIT: usize = 16 * 1024;

/// Cloud.ru's IAM token endpoint, used unless `auth_url` says otherwise.
pub const DEFAULT_AUTH_URL: &str = "https://iam.api.cloud.ru/api/v1/auth/token";

/// Default limit on an IAM reply (64 KiB): a token reply is a few KB.
pub const DEFAULT_MAX_AUTH_RESPONSE_SIZE: usize = 64 * 1024;

/// Lifetime assumed when IAM omits `expires_in` (what the original client assumed).
pub(crate) const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// Longest lifetime accepted as plausible. Anything above it is a broken
/// server or a unit mix-up (milliseconds), and caching such a token "forever"
/// would hide the problem until requests start failing.
const MAX_EXPIRES_IN: f64 = 366.0 * 24.0 * 3600.0;

#[derive(Serialize)]
struct TokenRequest<'a> {
    #[serde(rename = "keyId")]
    key_id: &'a str,
    secret: &'a str,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: Option<String>,
    expires_in: Option<Value>,
}

/// One request to IAM, no retries. The whole exchange, body included, is
/// bounded by `timeout`, and the reply by `max_size` bytes.
pub(crate) async fn request_token(
    client: &reqwest::Client,
    auth_url: &str,
    credentials: &Credentials,
    timeout: Duration,
    max_size: usize,
) -> Result<IssuedToken, Error> {
    let timed_out = || -> Error {
        AuthError::Timeout {
            auth_url: auth_url.to_string(),
            timeout,
            attempts: 1,
        }
        .into()
    };
    tokio::time::timeout(
        timeout,
        exchange(client, auth_url, credentials, timeout, max_size),
    )
    .await
    .unwrap_or_else(|_| Err(timed_out()))
}

async fn exchange(
    client: &reqwest::Client,
    auth_url: &str,
    credentials: &Credentials,
    timeout: Duration,
    max_size: usize,
) -> Result<IssuedToken, Error> {
    // The body holds the secret: keep it in a buffer that is wiped when the
    // request is done with it.
    let body = Zeroizing::new(
        serde_json::to_vec(&TokenRequest {
            key_id: credentials.key_id(),
            secret: credentials.expose_secret(),
        })
        .expect("a struct of two strings always serializes"),
    );
    let response = client
        .post(auth_url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::ACCEPT, "application/json")
        .body(Bytes::from_owner(body))
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| http_error(&e, auth_url, timeout))?;

    // auth_url was checked when the manager was built: it parses.
    let Ok(requested) = url::Url::parse(auth_url) else {
        return Err(Error::config(
            "auth_url",
            format!("is not a URL: {auth_url:?}"),
        ));
    };
    let redirect = redirect_of(&requested, &response);
    if let Some((status, location)) = redirect {
        tracing::warn!(
            auth_url,
            ?status,
            location,
            "IAM redirected to another origin; not followed"
        );
        return Err(AuthError::Redirected {
            auth_url: auth_url.to_string(),
            status,
            location,
        }
        .into());
    }
    let status = response.status();
    let retry_after = parse_retry_after(response.headers());
    if status.is_success() {
        let body = read_limited(response, max_size)
            .await
            .map_err(|e| match e {
                BodyError::Transport(e) => http_error(&e, auth_url, timeout),
                BodyError::TooLarge => AuthError::TooLarge {
                    auth_url: auth_url.to_string(),
                    limit: max_size,
                }
                .into(),
            })?;
        return parse_reply(&body, auth_url);
    }
    let body = read_prefix(response, max_size.min(ERROR_BODY_LIMIT))
        .await
        .map_err(|e| http_error(&e, auth_url, timeout))?;

    let error = match status.as_u16() {
        401 => AuthError::InvalidCredentials {
            key_id: credentials.key_id().to_string(),
        },
        403 => AuthError::Forbidden {
            key_id: credentials.key_id().to_string(),
        },
        code if retryable_status(code) => AuthError::Transient {
            auth_url: auth_url.to_string(),
            status: code,
            attempts: 1,
            retry_after,
        },
        code => AuthError::InvalidResponse {
            auth_url: auth_url.to_string(),
            message: format!(
                "unexpected HTTP {code}: {}",
                truncate_message(&String::from_utf8_lossy(&body))
            ),
        },
    };
    Err(error.into())
}

/// A timeout, or a connection failure saying what happened.
fn http_error(error: &reqwest::Error, auth_url: &str, timeout: Duration) -> Error {
    let error = if error.is_timeout() {
        AuthError::Timeout {
            auth_url: auth_url.to_string(),
            timeout,
            attempts: 1,
        }
    } else {
        AuthError::Connection {
            auth_url: auth_url.to_string(),
            message: describe_error(error),
            attempts: 1,
        }
    };
    error.into()
}

fn parse_reply(body: &[u8], auth_url: &str) -> Result<IssuedToken, Error> {
    let invalid = |message: String| -> Error {
        AuthError::InvalidResponse {
            auth_url: auth_url.to_string(),
            message,
        }
        .into()
    };
    let reply: TokenReply = serde_json::from_slice(body).map_err(|e| {
        // Quote the start of the body only when it cannot hold a token.
        let shown = if memchr::memmem::find(body, b"access_token").is_some() {
            String::from("(not shown: it mentions access_token)")
        } else {
            format!("{:?}", String::from_utf8_lossy(&body[..body.len().min(40)]))
        };
        invalid(format!(
            "the body is not a JSON token reply ({}); it starts with {shown}",
            json_error_position(&e)
        ))
    })?;
    let token = match reply.access_token {
        // It goes into an `Authorization` header; a token that cannot is
        // a broken reply, not a network problem on every later call.
        Some(token) if reqwest::header::HeaderValue::from_str(&token).is_err() => {
            return Err(invalid(
                "`access_token` holds characters not allowed in an HTTP header (e.g. a line break)"
                    .into(),
            ))
        }
        Some(token) if !token.trim().is_empty() => AccessToken::new(token),
        Some(_) => return Err(invalid("`access_token` is empty".into())),
        None => return Err(invalid("the reply has no `access_token`".into())),
    };
    let lifetime = parse_expires_in(reply.expires_in.as_ref()).map_err(invalid)?;
    Ok(IssuedToken::new(token, lifetime))
}

/// A JSON error's kind and position, never its text (which may quote input).
fn json_error_position(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "unexpected field type",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!("{kind} at line {} column {}", error.line(), error.column())
}

/// `expires_in` in seconds: absent or null means the default; a number or a
/// numeric string must be positive and plausible.
fn parse_expires_in(value: Option<&Value>) -> Result<Duration, String> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_EXPIRES_IN),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match seconds {
        Some(s) if s.is_finite() && s > 0.0 && s <= MAX_EXPIRES_IN => {
            Ok(Duration::from_secs_f64(s))
        }
        _ => Err(format!(
            "`expires_in` is {} — expected a positive number of seconds",
            value.map(Value::to_string).unwrap_or_default()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expires_in_forms() {
        assert_eq!(parse_expires_in(None), Ok(DEFAULT_EXPIRES_IN));
        assert_eq!(parse_expires_in(Some(&Value::Null)), Ok(DEFAULT_EXPIRES_IN));
        assert_eq!(
            parse_expires_in(Some(&json!(600))),
            Ok(Duration::from_secs(600))
        );
        assert_eq!(
            parse_expires_in(Some(&json!("90"))),
            Ok(Duration::from_secs(90))
        );
        assert_eq!(
            parse_expires_in(Some(&json!(1.5))),
            Ok(Duration::from_millis(1500))
        );
        for bad in [
            json!(-5),
            json!(0),
            json!("soon"),
            json!(true),
            json!([1]),
            json!(1e12),
        ] {
            assert!(parse_expires_in(Some(&bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn a_broken_reply_never_quotes_the_token() {
        let body = br#"{"access_token":"opaque-SECRET-token-0123456789abcdef","expires_in":3600}}"#;
        let err = parse_reply(body, "u").err().unwrap().to_string();
        assert!(!err.contains("SECRET"), "{err}");
        let err = parse_reply(b"<html>bad gateway</html>", "u")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("<html>bad gateway"), "{err}");
    }

    #[test]
    fn reply_parsing() {
        let ok = parse_reply(
            br#"{"access_token":"abc.def","expires_in":300,"extra":1}"#,
            "u",
        )
        .unwrap();
        assert_eq!(ok.token.expose_secret(), "abc.def");
        assert_eq!(ok.lifetime, Duration::from_secs(300));
        for bad in [
            &b"<html>oops</html>"[..],
            br#"{"expires_in":300}"#,
            br#"{"access_token":""}"#,
            b"{\"access_token\":\"abc\\ndef\"}",
            b"",
        ] {
            let err = parse_reply(bad, "u").expect_err("accepted a bad reply");
            assert!(
                matches!(err, Error::Auth(AuthError::InvalidResponse { .. })),
                "{err:?}"
            );
        }
    }
}
