//! The crate's one error type.
//!
//! Every variant says what happened and what to do about it, and none of them
//! carries a secret: server messages are kept, request bodies and tokens never.
//! Errors are `Clone` so one failed refresh can be handed to every caller that
//! was waiting for it. This module depends on nothing else in the crate.
//!
//! Which variant a failure becomes:
//!
//! | what happened | variant |
//! |---|---|
//! | a builder setting is missing or out of range | [`Error::Config`] |
//! | a call's own input is unusable (no messages, a parameter out of range) | [`Error::InvalidRequest`] |
//! | IAM refused or failed | [`Error::Auth`] with the IAM [`AuthError`] |
//! | the model API answered `401` to a refreshed token | `Error::Auth(AuthError::TokenRejected)` |
//! | the model API answered `401` to a fixed API key | `Error::Auth(AuthError::KeyRejected)` |
//! | another 4xx, or 501/505 | [`Error::Api`] |
//! | 408 or 5xx until the retries ran out | [`Error::Unavailable`] |
//! | 429 past the patience bound (`max_rate_limit_wait`) | [`Error::RateLimited`] |
//! | no answer in time / no connection | [`Error::Timeout`] / [`Error::Connection`] |
//! | a 2xx that is not a valid reply | [`Error::InvalidResponse`] |
//! | a stream that broke after it started | [`Error::Stream`] |
//! | a redirect to another origin (not followed) | [`Error::Redirected`] / `Error::Auth(AuthError::Redirected)` |
//! | a reply over a size limit | [`Error::TooLarge`] / `Error::Auth(AuthError::TooLarge)` |
//! | an upload over the limit, or answered `413` | [`Error::UploadTooLarge`] |
//! | a structured answer that is not JSON of the schema, even after a repair round | [`Error::Extraction`] |
//!
//! Errors from a call to the model API carry its [`RequestId`] (the
//! `X-Request-ID` sent, and the server's own id when it answered with one):
//! [`Error::request_id`], also shown at the end of the message, so it can be
//! quoted to support.
//! | the async runtime is gone or shutting down | [`Error::Runtime`] |
//! | some prompts of a batch failed | [`Error::Batch`] (the answers that succeeded are in the batch's own error type) |

use std::fmt;
use std::time::Duration;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting is missing or out of range. Nothing was sent.
    #[error("invalid configuration: `{field}` {message}")]
    Config {
        /// The builder field or environment variable at fault.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },

    /// A call's own input cannot be sent: no messages, a parameter out of
    /// range, a body that cannot be encoded. Nothing was sent; fix the call.
    #[error("invalid request: `{field}` {message}")]
    InvalidRequest {
        /// The argument or parameter at fault.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },

    /// The async runtime that had to run the work is gone or shutting down
    /// (e.g. a token refresh whose runtime stopped, or the blocking facade's
    /// runtime could not start).
    #[error("the async runtime stopped: {message}")]
    Runtime {
        /// What could not run.
        message: String,
    },

    /// Getting an access token from IAM failed.
    #[error(transparent)]
    Auth(#[from] AuthError),

    /// The model API refused the request: a 4xx other than 401/408/429, or
    /// 501/505 (the server cannot do this at all). Not retried.
    #[error("the model API answered {status}{}: {message}; {}{}",
        error_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(), api_remedy(*status), shown(request_id))]
    Api {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// The server's error `type`, when it sent one.
        error_type: Option<String>,
        /// The server's error `code`, when it sent one.
        code: Option<String>,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API kept answering 408 or 5xx (except 501/505) until the
    /// retries ran out.
    #[error("the model API is unavailable ({status}) after {attempts} attempt(s): {message}; try again later or raise max_retries{}", shown(request_id))]
    Unavailable {
        /// HTTP status of the last attempt.
        status: u16,
        /// The server's message from the last attempt.
        message: String,
        /// How many requests were sent.
        attempts: u32,
        /// The server's last `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The provider's rate limit (`429`) held the call past the patience
    /// bound (`max_rate_limit_wait`). Every `429` before that was waited out,
    /// the whole client pausing for its `Retry-After`.
    #[error("the model API kept answering 429 (rate limited) for {waited:?} over {attempts} attempt(s): {message}; set requests_per_minute / tokens_per_minute to the key's limits so calls wait instead of being refused, send fewer at once, or raise max_rate_limit_wait{}", shown(request_id))]
    RateLimited {
        /// The server's message from the last attempt.
        message: String,
        /// How many requests were sent.
        attempts: u32,
        /// How long the call waited from its first `429`.
        waited: Duration,
        /// The server's last `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API did not answer within the request timeout.
    #[error("no answer from {url} within {timeout:?} after {attempts} attempt(s); check connectivity or raise request_timeout{}", shown(request_id))]
    Timeout {
        /// Where the request went.
        url: String,
        /// The per-attempt timeout.
        timeout: Duration,
        /// How many requests were sent.
        attempts: u32,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API could not be reached, or dropped the connection.
    #[error("could not talk to {url} after {attempts} attempt(s): {message}; check connectivity and base_url{}", shown(request_id))]
    Connection {
        /// Where the request went.
        url: String,
        /// What the transport said.
        message: String,
        /// How many requests were sent.
        attempts: u32,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API answered 200 with something that is not a valid reply.
    #[error("invalid response from {url}: {message}; check that base_url points at an OpenAI-compatible API{}", shown(request_id))]
    InvalidResponse {
        /// Where the request went.
        url: String,
        /// What was wrong with it.
        message: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API answered with a redirect (3xx) to another origin, or a
    /// client of the caller's followed one. It is not acted on: the request
    /// and its bearer token are meant for `base_url` only, and the token is
    /// not refreshed (nothing was wrong with it).
    #[error("{url} {} {location}, another origin: not followed; if that address is right, set base_url to it{}",
        redirect_verb(*status), shown(request_id))]
    Redirected {
        /// Where the request went.
        url: String,
        /// The redirect's status; `None` when a caller's HTTP client
        /// followed it and the reply came from elsewhere.
        status: Option<u16>,
        /// Where it pointed (the `Location` header, or where the reply came from).
        location: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// A reply (a JSON body, or one server-sent event of a stream) was larger
    /// than the limit that keeps memory bounded. Not retried.
    #[error("{what} is larger than the limit of {limit} bytes; if such replies are expected, raise it with `{setting}`{}", shown(request_id))]
    TooLarge {
        /// What was too large, e.g. "the reply from https://…/chat/completions".
        what: String,
        /// The limit in bytes.
        limit: usize,
        /// The builder setting that raises it.
        setting: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// An upload (an audio file to transcribe) is larger than the server
    /// takes: refused before anything is sent when the size is known, or
    /// answered `413` by the server. Not retried.
    #[error("the upload is {size} bytes, {}; split or compress it (for audio: shorter pieces, or mono 16 kHz in a compressed format such as mp3 or ogg){}",
        match limit {
            Some(limit) => format!("over the limit of {limit} bytes (raise `max_upload_size` if your server takes more)"),
            None => "more than the server takes (it answered 413)".to_string(),
        },
        shown(request_id))]
    UploadTooLarge {
        /// The upload's size.
        size: u64,
        /// Our limit, when it was ours that refused; `None` when the server
        /// answered `413`.
        limit: Option<u64>,
        /// The call's request ids, when the server refused it.
        request_id: Option<RequestId>,
    },

    /// Some prompts of a batch failed. The batch call's own error type
    /// ([`BatchError`](crate::BatchError)) also carries the answers that
    /// succeeded; this variant is what it becomes with `?`.
    #[error("{failed} of {total} prompts failed; the first (prompt {index}): {first}")]
    Batch {
        /// How many prompts failed.
        failed: usize,
        /// How many prompts there were.
        total: usize,
        /// Position of the first failed prompt.
        index: usize,
        /// Its error.
        first: Box<Error>,
    },

    /// A structured-output call
    /// ([`extract`](crate::EvolutionInference::extract)) got an answer that
    /// is not JSON, or not JSON of the schema, and the one repair round
    /// (the model shown its answer and what is wrong with it) did not mend
    /// it. Carries the last answer as written and why it was refused.
    #[error("the model's answer does not fit the schema `{schema}` after {attempts} attempt(s): {reason}; \
        try a model that supports structured output, a simpler type, clearer instructions, \
        or a higher max_tokens if the answer was cut")]
    Extraction {
        /// The schema's name (the Rust type's, sanitised).
        schema: String,
        /// Why the last answer was refused: the JSON error, or where and how
        /// it does not fit.
        reason: String,
        /// The last answer as the model wrote it: the message's content, or
        /// the arguments of its tool call (the reasoning is never part of it).
        raw: String,
        /// How many answers were read (2: the first and the repaired one).
        attempts: u32,
    },

    /// A stream ended abnormally after it had started: cut, malformed, or an
    /// error event sent by the server. Chunks before it were delivered.
    #[error("the response stream broke: {message}{}", shown(request_id))]
    Stream {
        /// What went wrong.
        message: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },
}

/// The ids of one call to the model API, to quote to support. Shown as the
/// id sent, followed by the server's own when it differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Box<Ids>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Ids {
    sent: String,
    server: Option<String>,
}

impl RequestId {
    pub(crate) fn new(sent: String, server: Option<String>) -> Self {
        Self(Box::new(Ids { sent, server }))
    }

    /// The `X-Request-ID` this crate sent: fresh for each call, the same on
    /// each of its retries and on the retry after a token refresh.
    pub fn sent(&self) -> &str {
        &self.0.sent
    }

    /// The request id header the server answered with (`x-request-id`,
    /// `request-id` or `x-correlation-id`), if any.
    pub fn server(&self) -> Option<&str> {
        self.0.server.as_deref()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sent())?;
        match self.server() {
            Some(server) if server != self.sent() => write!(f, " (server's: {server})"),
            _ => Ok(()),
        }
    }
}

/// " [request id …]" for a message, or nothing.
fn shown(request_id: &Option<RequestId>) -> String {
    request_id
        .as_ref()
        .map(|id| format!(" [request id {id}]"))
        .unwrap_or_default()
}

/// What to do about a refusal with `status`.
fn api_remedy(status: u16) -> &'static str {
    match status {
        403 => {
            "the key or token has no permission for this model or project: check the key's \
                rights, the model name and project_id with your Cloud.ru administrator"
        }
        404 => "check the model name and that base_url points at the API (e.g. …/v1)",
        413 => "the request is too large for the server: send less at once",
        _ => "fix the request (model name, parameters, messages) before retrying",
    }
}

fn redirect_verb(status: Option<u16>) -> String {
    match status {
        Some(status) => format!("answered {status}, a redirect to"),
        None => "was redirected (by the HTTP client) to".to_string(),
    }
}

/// Why an access token could not be obtained.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// IAM answered 401: the key id or secret is wrong.
    #[error("IAM rejected the credentials for key `{key_id}` (401 Unauthorized): check key_id and secret (EVOLUTION_KEY_ID, EVOLUTION_SECRET)")]
    InvalidCredentials {
        /// The key id that was rejected (ids are not secret).
        key_id: String,
    },

    /// IAM answered 403: the key is valid but lacks rights.
    #[error("IAM refused key `{key_id}` (403 Forbidden): the key has no rights for this service; ask your Cloud.ru administrator to grant them")]
    Forbidden {
        /// The key id that was refused.
        key_id: String,
    },

    /// IAM did not answer in time.
    #[error("IAM at {auth_url} did not answer within {timeout:?} after {attempts} attempt(s); check network connectivity")]
    Timeout {
        /// The token endpoint.
        auth_url: String,
        /// The per-attempt timeout.
        timeout: Duration,
        /// How many requests were sent.
        attempts: u32,
    },

    /// IAM could not be reached, or dropped the connection.
    #[error("could not reach IAM at {auth_url} after {attempts} attempt(s): {message}; check network connectivity and auth_url")]
    Connection {
        /// The token endpoint.
        auth_url: String,
        /// What the transport said.
        message: String,
        /// How many requests were sent.
        attempts: u32,
    },

    /// IAM kept answering 429 or 5xx until the retries ran out.
    #[error(
        "IAM at {auth_url} is unavailable ({status}) after {attempts} attempt(s); try again later"
    )]
    Transient {
        /// The token endpoint.
        auth_url: String,
        /// HTTP status of the last attempt.
        status: u16,
        /// How many requests were sent.
        attempts: u32,
        /// The server's last `Retry-After`, if any.
        retry_after: Option<Duration>,
    },

    /// The model API answered 401 to a token that IAM had just issued.
    #[error("the model API rejected a freshly issued access token (401): {message}; check that the key has access to this endpoint and that project_id is right{}", shown(request_id))]
    TokenRejected {
        /// The server's message.
        message: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// The model API answered 401 to a fixed API key (a static token source).
    #[error("the model API rejected the API key (401): {message}; check the key and that it is meant for this endpoint{}", shown(request_id))]
    KeyRejected {
        /// The server's message.
        message: String,
        /// The call's request ids.
        request_id: Option<RequestId>,
    },

    /// IAM answered with a redirect (3xx) to another origin, or a client of
    /// the caller's followed one. The crate's own client never follows such a
    /// redirect, so the key secret was not sent there; no token is accepted.
    #[error("IAM at {auth_url} {} {location}, another origin: not followed, no token accepted; if that address is right, set auth_url to it",
        redirect_verb(*status))]
    Redirected {
        /// The token endpoint.
        auth_url: String,
        /// The redirect's status; `None` when a caller's HTTP client followed
        /// it and the reply came from elsewhere.
        status: Option<u16>,
        /// Where it pointed.
        location: String,
    },

    /// IAM's reply was larger than the limit (a token reply is a few KB).
    #[error("the reply from IAM at {auth_url} is larger than the limit of {limit} bytes; if that is expected, raise it with `max_auth_response_size` (TokenManagerBuilder::max_response_size)")]
    TooLarge {
        /// The token endpoint.
        auth_url: String,
        /// The limit in bytes.
        limit: usize,
    },

    /// IAM answered with something that is not a token response.
    #[error("invalid response from IAM at {auth_url}: {message}; check that auth_url points at the IAM token endpoint")]
    InvalidResponse {
        /// The token endpoint.
        auth_url: String,
        /// What was wrong with it.
        message: String,
    },
}

impl AuthError {
    /// Whether trying again later may succeed (timeouts, connection failures, 429/5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AuthError::Timeout { .. } | AuthError::Connection { .. } | AuthError::Transient { .. }
        )
    }

    /// Whether the credentials themselves were refused (401/403): the cue to
    /// switch to fallback credentials.
    pub fn is_credential_error(&self) -> bool {
        matches!(
            self,
            AuthError::InvalidCredentials { .. } | AuthError::Forbidden { .. }
        )
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            AuthError::Transient { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            AuthError::Timeout { attempts, .. }
            | AuthError::Connection { attempts, .. }
            | AuthError::Transient { attempts, .. } => *attempts = n,
            _ => {}
        }
    }
}

/// Matches the variants that carry a call's request id, binding it: the one
/// list of them, for both the reading and the recording side.
macro_rules! on_request_id {
    ($error:expr, $id:ident => $then:expr, _ => $otherwise:expr) => {
        match $error {
            Error::Api {
                request_id: $id, ..
            }
            | Error::Unavailable {
                request_id: $id, ..
            }
            | Error::RateLimited {
                request_id: $id, ..
            }
            | Error::Timeout {
                request_id: $id, ..
            }
            | Error::Connection {
                request_id: $id, ..
            }
            | Error::InvalidResponse {
                request_id: $id, ..
            }
            | Error::Redirected {
                request_id: $id, ..
            }
            | Error::TooLarge {
                request_id: $id, ..
            }
            | Error::UploadTooLarge {
                request_id: $id, ..
            }
            | Error::Stream {
                request_id: $id, ..
            }
            | Error::Auth(
                AuthError::TokenRejected {
                    request_id: $id, ..
                }
                | AuthError::KeyRejected {
                    request_id: $id, ..
                },
            ) => $then,
            _ => $otherwise,
        }
    };
}

impl Error {
    /// Whether trying the same call again later may succeed: timeouts,
    /// connection failures, 408, 429 and 5xx answers (from the model API,
    /// 501 and 505 excepted).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Auth(e) => e.is_retryable(),
            Error::Unavailable { .. }
            | Error::RateLimited { .. }
            | Error::Timeout { .. }
            | Error::Connection { .. } => true,
            Error::Config { .. }
            | Error::InvalidRequest { .. }
            | Error::Runtime { .. }
            | Error::Api { .. }
            | Error::InvalidResponse { .. }
            | Error::Stream { .. }
            | Error::Redirected { .. }
            | Error::TooLarge { .. }
            | Error::UploadTooLarge { .. }
            | Error::Extraction { .. }
            | Error::Batch { .. } => false,
        }
    }

    /// The HTTP status behind this error, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } | Error::Unavailable { status, .. } => Some(*status),
            Error::RateLimited { .. } => Some(429),
            Error::UploadTooLarge { limit: None, .. } => Some(413),
            Error::Auth(AuthError::InvalidCredentials { .. }) => Some(401),
            Error::Auth(AuthError::Forbidden { .. }) => Some(403),
            Error::Auth(AuthError::TokenRejected { .. } | AuthError::KeyRejected { .. }) => {
                Some(401)
            }
            Error::Auth(AuthError::Transient { status, .. }) => Some(*status),
            _ => None,
        }
    }

    /// The ids of the model API call that failed: the `X-Request-ID` sent
    /// and the server's own, when it answered with one. `None` for errors
    /// that did not come from a call (configuration, IAM, input checks).
    pub fn request_id(&self) -> Option<&RequestId> {
        on_request_id!(self, request_id => request_id.as_ref(), _ => None)
    }

    /// Records the call's request ids, unless the error already has them
    /// (or cannot hold them).
    pub(crate) fn with_request_id(mut self, id: &RequestId) -> Self {
        let slot = on_request_id!(&mut self, request_id => request_id, _ => return self);
        if slot.is_none() {
            *slot = Some(id.clone());
        }
        self
    }

    /// An invalid reply from the model API (no request id yet).
    pub(crate) fn invalid_response(url: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidResponse {
            url: url.into(),
            message: message.into(),
            request_id: None,
        }
    }

    /// A broken stream (no request id yet).
    pub(crate) fn stream(message: impl Into<String>) -> Self {
        Error::Stream {
            message: message.into(),
            request_id: None,
        }
    }

    pub(crate) fn config(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_request(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Auth(e) => e.retry_after(),
            Error::Unavailable { retry_after, .. } | Error::RateLimited { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            Error::Auth(e) => e.set_attempts(n),
            Error::Unavailable { attempts, .. }
            | Error::RateLimited { attempts, .. }
            | Error::Timeout { attempts, .. }
            | Error::Connection { attempts, .. } => *attempts = n,
            _ => {}
        }
    }
}

/// Shortens a server-supplied message so a huge HTML page does not become an
/// error message.
pub(crate) fn truncate_message(text: &str) -> String {
    const MAX: usize = 300;
    let text = text.trim();
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classes() {
        let transient = Error::Auth(AuthError::Transient {
            auth_url: "u".into(),
            status: 503,
            attempts: 3,
            retry_after: None,
        });
        assert!(transient.is_retryable());
        assert!(!Error::Auth(AuthError::InvalidCredentials { key_id: "k".into() }).is_retryable());
        assert!(!Error::config("model", "is empty").is_retryable());
        assert_eq!(transient.status(), Some(503));
    }

    #[test]
    fn messages_name_the_remedy() {
        let e = Error::Auth(AuthError::Forbidden {
            key_id: "k1".into(),
        });
        assert!(e.to_string().contains("administrator"), "{e}");
        let e = Error::Auth(AuthError::InvalidCredentials {
            key_id: "k1".into(),
        });
        assert!(e.to_string().contains("check key_id and secret"), "{e}");
    }

    #[test]
    fn refusals_name_the_remedy_for_their_status() {
        let api = |status| Error::Api {
            status,
            message: "no".into(),
            error_type: None,
            code: None,
            request_id: None,
        };
        assert!(api(403).to_string().contains("permission"), "{}", api(403));
        assert!(!api(403).to_string().contains("fix the request"));
        assert!(api(404).to_string().contains("model name"));
        assert!(api(400).to_string().contains("fix the request"));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let long = "я".repeat(400);
        let short = truncate_message(&long);
        assert!(short.ends_with('…'));
        assert!(short.len() <= 304);
    }
}
