//! `POST /api/v1/auth/token`: the IAM token service.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::fault::{Fault, Target};
use crate::gate::{ParsedBody, RawBody};
use crate::reply::{self, FaultContext, FaultOutcome};
use crate::state::{Counter, State};
use crate::util;

/// A JWT-shaped token (the real service issues JWTs) whose claims tell a human reading
/// logs who it was for and when it expires. The signature is random: nothing verifies it
/// but the emulator's own token table.
fn make_token(key_id: &str, ttl_secs: u64) -> String {
    let now = util::unix_now();
    let header = json!({"alg": "HS256", "typ": "JWT"});
    let claims = json!({
        "iss": "evolution-emulator",
        "sub": key_id,
        "iat": now,
        "exp": now.saturating_add(ttl_secs),
        "jti": util::random_id("", 16),
    });
    let signature: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..))
        .take(32)
        .collect();
    format!(
        "{}.{}.{}",
        util::base64_url(header.to_string().as_bytes()),
        util::base64_url(claims.to_string().as_bytes()),
        util::base64_url(&signature)
    )
}

/// The `expires_in` of a reply shaped by [`Fault::AccessToken`].
const INJECTED_TOKEN_TTL_SECS: u64 = 3600;

fn string_field<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    match body.get(key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(format!("missing required field '{key}'")),
        Some(_) => Err(format!("'{key}' must be a string")),
    }
}

pub(crate) async fn token(
    AxumState(state): AxumState<Arc<State>>,
    RawBody(body): RawBody,
) -> Response {
    state.bump(Counter::AuthRequests);
    let parsed = ParsedBody::parse(&body);
    let fault = state.take_fault(Target::Auth);
    let cx = FaultContext {
        target: Target::Auth,
        model: "",
        stream: false,
        shutdown: &state.shutdown,
    };
    let shape = match reply::apply_fault(fault, cx).await {
        FaultOutcome::Replace(response) => return response,
        FaultOutcome::Shape(fault) => Some(fault),
        FaultOutcome::Proceed => None,
    };

    let object = match parsed.object() {
        Ok(object) => object,
        Err(message) => return reply::bad_request(message),
    };
    let (key_id, secret) = match (
        string_field(object, "keyId"),
        string_field(object, "secret"),
    ) {
        (Ok(k), Ok(s)) => (k, s),
        (Err(message), _) | (_, Err(message)) => return reply::bad_request(message),
    };

    let config = &state.config;
    let matches =
        |pairs: &[(String, String)]| pairs.iter().any(|(k, s)| k == key_id && s == secret);
    if !matches(&config.credentials) {
        tracing::debug!(key_id, "refusing credentials");
        return if matches(&config.forbidden) {
            reply::error(
                StatusCode::FORBIDDEN,
                "The service account key has no rights to obtain an access token",
                "permission_error",
                "forbidden",
            )
        } else {
            reply::error(
                StatusCode::UNAUTHORIZED,
                "Invalid key ID or secret",
                "authentication_error",
                "invalid_credentials",
            )
        };
    }

    let mut answer = Map::new();
    // A reply the client cannot read in full hands out no usable token.
    let delivered = !matches!(shape, Some(Fault::CutStream(_) | Fault::StreamError(_)));
    // An injected token is issued as it is, for the hour its reply announces.
    let (token, ttl_secs) = match &shape {
        Some(Fault::AccessToken(token)) => (token.clone(), INJECTED_TOKEN_TTL_SECS),
        _ => (
            make_token(key_id, config.token_ttl_secs),
            config.token_ttl_secs,
        ),
    };
    if delivered {
        // The token lives exactly the `expires_in` it is issued with (see `Config`).
        state.register_token(token.clone(), key_id, ttl_secs);
        state.bump(Counter::TokensIssued);
    }
    answer.insert("access_token".into(), Value::String(token));
    match &shape {
        Some(Fault::ExpiresIn(value)) => {
            answer.insert("expires_in".into(), value.clone());
        }
        Some(Fault::AccessToken(_)) => {
            answer.insert("expires_in".into(), json!(ttl_secs));
        }
        _ if config.omit_expires_in => {}
        _ => {
            answer.insert("expires_in".into(), json!(config.token_ttl_secs));
        }
    }
    tracing::debug!(key_id, "issued access token");
    reply::json_answer(&Value::Object(answer), shape.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_look_like_jwts() {
        let token = make_token("k", 5);
        assert_eq!(token.split('.').count(), 3);
        assert_ne!(token, make_token("k", 5));
    }
}
