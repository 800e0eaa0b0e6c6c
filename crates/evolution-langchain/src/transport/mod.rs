//! One request to the model API, for every API group alike (chat,
//! embeddings, rerank, models, audio): base URL, headers, body kinds, size
//! limits and deadlines around the [`pipeline`] (bearer per attempt,
//! recovery from a rejected token, status classification, retries, request
//! ids).
//!
//! - [`connection`]: the builder settings and how they become a [`Transport`];
//! - [`pipeline`]: what happens around each request, shared with the bridges;
//! - [`http`]: the HTTP client (reqwest), its redirect policy, URL checks;
//! - [`body`]: reading bodies within a size limit;
//! - [`retry`]: backoff and `Retry-After`;
//! - [`server_error`]: what an error body says and what its status means.

pub(crate) mod body;
pub(crate) mod connection;
pub(crate) mod http;
pub(crate) mod pipeline;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub(crate) mod retry;
pub(crate) mod server_error;
pub(crate) mod shared;
pub(crate) mod throttle;
pub(crate) mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::TokenManager;
use crate::error::{AuthError, Error, RequestId, Result};
use body::{read_limited, read_prefix, BodyError};
use http::{describe_error, redirect_of};
use pipeline::{
    new_request_id, verdict_for_failed_send, verdict_for_status, Attempt, Pipeline, Sent, Verdict,
};
use retry::parse_retry_after;
use server_error::{message_or_reason, status_error, ServerError};

/// How much of an error body is read: enough for any server's message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Where servers put their own request id, in the order looked at.
const SERVER_REQUEST_ID_HEADERS: [HeaderName; 3] = [
    pipeline::REQUEST_ID_HEADER,
    HeaderName::from_static("request-id"),
    HeaderName::from_static("x-correlation-id"),
];

/// Everything a request needs; shared (behind an `Arc`) by clones of a
/// client and by the clients made from it.
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    pub(crate) pipeline: Pipeline,
    /// The manager behind the pipeline's tokens when the builder made one
    /// from a key id and secret.
    pub(crate) token_manager: Option<TokenManager>,
    /// Without a trailing slash.
    pub(crate) base_url: String,
    /// Sent with every request: the caller's default headers and the
    /// project id (the user agent is the HTTP client's own default, so a
    /// caller's `User-Agent` replaces it instead of adding a second).
    pub(crate) headers: HeaderMap,
    pub(crate) request_timeout: Duration,
    /// Largest reply body read.
    pub(crate) max_response_size: usize,
    /// Largest server-sent event (or line) of a stream.
    pub(crate) max_event_size: usize,
    /// Longest a stream may take from its head to its end (`None`: no bound).
    pub(crate) stream_deadline: Option<Duration>,
    /// The models whose server refused `response_format` `json_schema`:
    /// structured output goes to them as a forced tool call from then on
    /// (`chat::extract`).
    pub(crate) json_schema_refused: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// What a request carries; the `Content-Type` follows from it.
pub(crate) enum Body {
    /// Nothing (a `GET`).
    Empty,
    /// A JSON document, encoded once and sent again as it is on a retry.
    Json(Bytes),
    /// A multipart form, built anew for each attempt (a form is consumed
    /// by sending it), so a retry sends the whole upload again.
    Multipart(Arc<dyn Fn() -> reqwest::multipart::Form + Send + Sync>),
}

impl Body {
    /// `value` as JSON.
    pub(crate) fn json(value: &impl Serialize) -> Result<Self> {
        serde_json::to_vec(value)
            .map(|bytes| Body::Json(Bytes::from(bytes)))
            .map_err(|e| {
                Error::invalid_request("request", format!("could not be encoded as JSON: {e}"))
            })
    }
}

/// One request of an API group: method, path under the base URL, body,
/// and what it is expected to cost against a tokens-per-minute limit.
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Under the base URL, without a leading slash, e.g. `chat/completions`.
    pub(crate) path: &'static str,
    pub(crate) body: Body,
    /// Estimated tokens (prompt and answer), corrected later with
    /// [`Transport::settle`] when the server reports usage.
    pub(crate) tokens: u32,
}

impl Request {
    /// `GET path`.
    pub(crate) fn get(path: &'static str) -> Self {
        Self {
            method: Method::GET,
            path,
            body: Body::Empty,
            tokens: 0,
        }
    }

    /// `POST path` with `body`.
    pub(crate) fn post(path: &'static str, body: Body) -> Self {
        Self {
            method: Method::POST,
            path,
            body,
            tokens: 0,
        }
    }

    /// The same request, expected to cost `tokens`.
    pub(crate) fn tokens(mut self, tokens: u32) -> Self {
        self.tokens = tokens;
        self
    }
}

/// A rough token count of `text` for the limiter, before the server counts
/// it: a token is about four characters of English (fewer of Russian, so
/// this errs high there, which only makes the limiter cautious until the
/// server's usage corrects it).
pub(crate) fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(text.len().div_ceil(4)).unwrap_or(u32::MAX)
}

/// A 2xx reply whose body has been read.
pub(crate) struct Received {
    pub(crate) body: Bytes,
    pub(crate) request_id: RequestId,
}

/// A stream the server accepted, with what its reader needs to know.
pub(crate) struct OpenStream {
    pub(crate) response: reqwest::Response,
    /// Where it comes from.
    pub(crate) url: String,
    pub(crate) request_id: RequestId,
    /// Bound on each wait for more of the body.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_event_size: usize,
    /// When the whole stream must have ended, if ever.
    pub(crate) deadline: Option<Instant>,
}

/// What one attempt got back.
enum Answer {
    /// A 2xx reply: its body read, or (for a stream) still to be read.
    Success { id: RequestId, body: Reading },
    /// Any other status, with the start of its body.
    Failure {
        id: RequestId,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

enum Reading {
    Read(Bytes),
    Open(reqwest::Response),
}

/// The pipeline's view of an attempt of ours.
fn judge(outcome: &Result<Answer>) -> Verdict {
    match outcome {
        Ok(Answer::Success { .. }) => Verdict::Success,
        Ok(Answer::Failure {
            status, headers, ..
        }) => verdict_for_status(*status, headers),
        Err(error @ (Error::Timeout { .. } | Error::Connection { .. })) => {
            verdict_for_failed_send(matches!(error, Error::Timeout { .. }))
        }
        Err(_) => Verdict::Done,
    }
}

/// The server's own request id header, if it sent one.
fn server_request_id(headers: &HeaderMap) -> Option<String> {
    SERVER_REQUEST_ID_HEADERS.iter().find_map(|name| {
        let value = headers.get(name)?.to_str().ok()?.trim();
        (!value.is_empty()).then(|| crate::error::truncate_message(value))
    })
}

impl Transport {
    /// The URL of `path` under the base URL, e.g. for an error message.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url)
    }

    /// Sends `request` and parses the JSON reply.
    pub(crate) async fn json<T: DeserializeOwned>(&self, request: Request) -> Result<T> {
        self.json_checked(request, |_| Ok(())).await
    }

    /// Like [`json`](Self::json); `check` looks at the parsed reply, and its
    /// error carries the call's request id like any other.
    pub(crate) async fn json_checked<T: DeserializeOwned>(
        &self,
        request: Request,
        check: impl Fn(&T) -> Result<()>,
    ) -> Result<T> {
        let path = request.path;
        let received = self.receive(request).await?;
        let id = &received.request_id;
        let value: T = parse_json(&received.body).map_err(|e| {
            Error::invalid_response(
                self.url(path),
                format!(
                    "{e}; the body starts with {:?}",
                    String::from_utf8_lossy(&received.body[..received.body.len().min(60)])
                ),
            )
            .with_request_id(id)
        })?;
        check(&value).map_err(|e| e.with_request_id(id))?;
        Ok(value)
    }

    /// Sends `request` and reads the whole reply body (within
    /// `max_response_size`).
    pub(crate) async fn receive(&self, request: Request) -> Result<Received> {
        let (request_id, reading) = self.call(&request, false).await?;
        match reading {
            Reading::Read(body) => Ok(Received { body, request_id }),
            Reading::Open(_) => unreachable!("only streams are left open"),
        }
    }

    /// Sends a streaming request; returns once a 2xx head has arrived,
    /// leaving the body to the caller. Only this part is retried: once
    /// chunks flow, a failure is the stream's to report.
    pub(crate) async fn stream(&self, request: Request) -> Result<OpenStream> {
        let (request_id, reading) = self.call(&request, true).await?;
        match reading {
            Reading::Open(response) => Ok(OpenStream {
                response,
                url: self.url(request.path),
                request_id,
                idle_timeout: self.request_timeout,
                max_event_size: self.max_event_size,
                deadline: self.stream_deadline.map(|d| Instant::now() + d),
            }),
            Reading::Read(_) => unreachable!("streams are left open"),
        }
    }

    /// One call: its attempts through the pipeline, then a failure turned
    /// into the error it means.
    async fn call(&self, request: &Request, streaming: bool) -> Result<(RequestId, Reading)> {
        let text = self.url(request.path);
        let url = url::Url::parse(&text).map_err(|e| {
            Error::config("base_url", format!("gives no valid URL for {text:?}: {e}"))
        })?;
        let sent = new_request_id();
        let Sent {
            outcome,
            attempts,
            rate_limit_wait,
        } = self
            .pipeline
            .run(
                &text,
                &sent,
                request.tokens,
                |attempt| self.attempt(request, &url, attempt, streaming, &sent),
                judge,
                |error| error,
            )
            .await;
        match outcome {
            Ok(Answer::Success { id, body }) => Ok((id, body)),
            Ok(Answer::Failure {
                id,
                status,
                headers,
                body,
            }) => {
                let mut error = self.status_error(status, &headers, &body, rate_limit_wait);
                error.set_attempts(attempts);
                tracing::debug!(url = text, status = status.as_u16(), %error, "the model API answered with an error");
                Err(error.with_request_id(&id))
            }
            // A token error keeps the attempts the token source counted.
            Err(error @ Error::Auth(_)) => Err(error),
            Err(mut error) => {
                error.set_attempts(attempts);
                Err(error)
            }
        }
    }

    /// One attempt: the request sent with the attempt's headers, a redirect
    /// to another origin refused, and the body read within the request
    /// timeout (all of it for a 2xx reply unless streaming, a prefix for
    /// any other status).
    async fn attempt(
        &self,
        request: &Request,
        url: &url::Url,
        attempt: Attempt,
        streaming: bool,
        sent: &str,
    ) -> Result<Answer> {
        // Head and body share one deadline per request sent (a stream's
        // body is bounded by its reader, between chunks).
        let deadline = Instant::now() + self.request_timeout;
        let mut headers = self.headers.clone();
        attempt.apply(&mut headers);
        if streaming {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        let mut builder = self
            .client
            .request(request.method.clone(), url.clone())
            .headers(headers);
        match &request.body {
            Body::Empty => {}
            Body::Json(bytes) => {
                builder = builder
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(bytes.clone());
            }
            Body::Multipart(form) => builder = builder.multipart(form()),
        }
        // Failed before any answer: only our own id to carry.
        let unidentified = || RequestId::new(sent.to_string(), None);
        let mut response = match tokio::time::timeout_at(deadline, builder.send()).await {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                return Err(self
                    .http_error(&e, url.as_str())
                    .with_request_id(&unidentified()))
            }
            Err(_) => {
                return Err(self
                    .timeout_error(url.as_str())
                    .with_request_id(&unidentified()))
            }
        };
        let id = RequestId::new(sent.to_string(), server_request_id(response.headers()));
        if let Some((status, location)) = redirect_of(url, &response) {
            tracing::warn!(
                url = url.as_str(),
                ?status,
                location,
                "the model API redirected to another origin; not followed"
            );
            return Err(Error::Redirected {
                url: url.to_string(),
                status,
                location,
                request_id: Some(id),
            });
        }
        let status = response.status();
        if status.is_success() && streaming {
            return Ok(Answer::Success {
                id,
                body: Reading::Open(response),
            });
        }
        if status.is_success() {
            let read =
                tokio::time::timeout_at(deadline, read_limited(response, self.max_response_size))
                    .await;
            let body = match read {
                Ok(Ok(body)) => body,
                Ok(Err(BodyError::Transport(e))) => {
                    return Err(self.http_error(&e, url.as_str()).with_request_id(&id))
                }
                Ok(Err(BodyError::TooLarge)) => {
                    return Err(Error::TooLarge {
                        what: format!("the reply from {url}"),
                        limit: self.max_response_size,
                        setting: "max_response_size".into(),
                        request_id: Some(id),
                    })
                }
                Err(_) => return Err(self.timeout_error(url.as_str()).with_request_id(&id)),
            };
            return Ok(Answer::Success {
                id,
                body: Reading::Read(body),
            });
        }
        let headers = std::mem::take(response.headers_mut());
        let body = match tokio::time::timeout_at(deadline, read_prefix(response, ERROR_BODY_LIMIT))
            .await
        {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => return Err(self.http_error(&e, url.as_str()).with_request_id(&id)),
            Err(_) => return Err(self.timeout_error(url.as_str()).with_request_id(&id)),
        };
        Ok(Answer::Failure {
            id,
            status,
            headers,
            body,
        })
    }

    /// The error a final non-2xx reply means. A `401` after the pipeline's
    /// recovery is final: a fixed key cannot be replaced, and a fresh token
    /// failed too.
    fn status_error(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        rate_limit_wait: Duration,
    ) -> Error {
        let server = ServerError::parse(body);
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Error::RateLimited {
                message: message_or_reason(status.as_u16(), server.message),
                attempts: 1,
                waited: rate_limit_wait,
                retry_after: parse_retry_after(headers),
                request_id: None,
            };
        }
        if status == StatusCode::UNAUTHORIZED && self.pipeline.tokens.is_some() {
            let message = server.message;
            return if self.pipeline.refreshes() {
                AuthError::TokenRejected {
                    message,
                    request_id: None,
                }
            } else {
                AuthError::KeyRejected {
                    message,
                    request_id: None,
                }
            }
            .into();
        }
        status_error(status.as_u16(), server, parse_retry_after(headers))
    }

    /// What `texts` are expected to cost against a tokens-per-minute limit;
    /// zero (and nothing counted) when no such limit is set.
    pub(crate) fn estimate<S: AsRef<str>>(&self, texts: impl IntoIterator<Item = S>) -> u32 {
        if !self.pipeline.throttle.counts_tokens() {
            return 0;
        }
        texts
            .into_iter()
            .map(|text| estimate_tokens(text.as_ref()))
            .fold(0, u32::saturating_add)
    }

    /// Corrects the tokens-per-minute limiter once a call's usage is known.
    pub(crate) async fn settle(&self, estimated: u32, actual: u32) {
        self.pipeline.throttle.settle(estimated, actual).await;
    }

    /// A timeout, or a connection failure saying what happened.
    fn http_error(&self, error: &reqwest::Error, url: &str) -> Error {
        if error.is_timeout() {
            self.timeout_error(url)
        } else {
            Error::Connection {
                url: url.to_string(),
                message: describe_error(error),
                attempts: 1,
                request_id: None,
            }
        }
    }

    pub(crate) fn timeout_error(&self, url: &str) -> Error {
        Error::Timeout {
            url: url.to_string(),
            timeout: self.request_timeout,
            attempts: 1,
            request_id: None,
        }
    }
}

/// Parses a JSON reply. The whole body is checked to be UTF-8 once (fast
/// for the mostly-ASCII text of replies), so the parser need not check each
/// string again; a body that is not UTF-8 is parsed as bytes, for the
/// parser's own precise error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may hold user secrets; show names only.
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .field("tokens", &self.pipeline.tokens)
            .field("headers", &header_names)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.pipeline.retry)
            .field("max_response_size", &self.max_response_size)
            .field("max_event_size", &self.max_event_size)
            .field("stream_deadline", &self.stream_deadline)
            .finish()
    }
}
