//! What a server says when it refuses: the error body's message, type and
//! code, whatever shape the server chose, and what its status means for us.

use serde_json::Value;

use super::retry::retryable_status;
use crate::error::{truncate_message, Error};

/// An OpenAI-style error body: `{"error": {"message", "type", "code"}}`, or
/// the looser shapes other servers use.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ServerError {
    pub(crate) message: String,
    pub(crate) error_type: Option<String>,
    pub(crate) code: Option<String>,
}

impl ServerError {
    pub(crate) fn parse(body: &[u8]) -> Self {
        let text = || truncate_message(&String::from_utf8_lossy(body));
        let Ok(value) = serde_json::from_slice::<Value>(body) else {
            return Self {
                message: text(),
                ..Self::default()
            };
        };
        Self::from_value(&value).unwrap_or_else(|| Self {
            message: text(),
            ..Self::default()
        })
    }

    pub(crate) fn from_value(value: &Value) -> Option<Self> {
        let as_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        let error = value.get("error").filter(|e| !e.is_null()).unwrap_or(value);
        if let Value::String(message) = error {
            return Some(Self {
                message: message.clone(),
                ..Self::default()
            });
        }
        let message = error
            .get("message")
            .or_else(|| error.get("detail"))
            .and_then(as_text)?;
        Some(Self {
            message: truncate_message(&message),
            error_type: error.get("type").and_then(as_text),
            code: error.get("code").and_then(as_text),
        })
    }
}

/// The server's message, or the status's reason phrase when it sent none.
pub(crate) fn message_or_reason(status: u16, message: String) -> String {
    if !message.is_empty() {
        return message;
    }
    reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("no message")
        .to_string()
}

/// The error for a non-2xx status from the model API (`401`, `429` and
/// redirects are the transport's, which knows about tokens and waits).
/// Statuses that may pass ([`retryable_status`]) are [`Error::Unavailable`];
/// `501` and `505` say the server cannot do this at all; other `4xx` are
/// the caller's to fix.
pub(crate) fn status_error(
    status: u16,
    server: ServerError,
    retry_after: Option<std::time::Duration>,
) -> Error {
    let message = message_or_reason(status, server.message);
    if retryable_status(status) {
        return Error::Unavailable {
            status,
            message,
            attempts: 1,
            retry_after,
            request_id: None,
        };
    }
    Error::Api {
        status,
        message,
        error_type: server.error_type,
        code: server.code,
        request_id: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_error_shapes() {
        let e = ServerError::parse(include_bytes!(
            "../../tests/fixtures/llama-server.error-400.json"
        ));
        assert_eq!(e.message, "Expected 'messages' to be an array");
        assert_eq!(e.error_type.as_deref(), Some("invalid_request_error"));
        assert_eq!(e.code.as_deref(), Some("400"));
        assert_eq!(ServerError::parse(b"{\"detail\":\"nope\"}").message, "nope");
        assert_eq!(
            ServerError::parse(b"<html>bad gateway</html>").message,
            "<html>bad gateway</html>"
        );
    }

    #[test]
    fn statuses_are_classified() {
        for code in [408, 429, 500, 502, 503, 504, 520, 599] {
            assert!(
                status_error(code, ServerError::default(), None).is_retryable(),
                "{code}"
            );
        }
        for code in [400, 404, 422, 501, 505] {
            let error = status_error(code, ServerError::default(), None);
            assert!(matches!(error, Error::Api { .. }), "{code}: {error}");
        }
        let error = status_error(404, ServerError::default(), None);
        assert!(error.to_string().contains("Not Found"), "{error}");
    }
}
