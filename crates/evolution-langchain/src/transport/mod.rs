//! One request to the model API, for chat, embeddings, rerank and model
//! listing alike: base URL, headers, bearer token, recovery from a rejected
//! token, status classification and retries.
//!
//! - [`connection`]: the builder settings and how they become a [`Transport`];
//! - [`http`]: the HTTP client and URL checks;
//! - [`direct`]: plain-HTTP requests straight through hyper;
//! - [`reply`]: a reply from either client;
//! - [`retry`]: backoff and `Retry-After`;
//! - [`server_error`]: what an error body says and what its status means.

pub(crate) mod body;
pub(crate) mod connection;
pub(crate) mod direct;
pub(crate) mod http;
pub(crate) mod reply;
pub(crate) mod retry;
pub(crate) mod server_error;
pub(crate) mod tls;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, USER_AGENT,
};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::auth::{AccessToken, TokenManager, TokenSource};
use crate::error::{AuthError, Error, RequestId, Result};
use body::{read_limited, read_prefix, BodyError};
use direct::{DirectClient, DirectRequest};
use http::redirect_of;
use reply::{HttpError, Reply};
use retry::{parse_retry_after, RetryPolicy};
use server_error::{status_error, ServerError};

/// How much of an error body is read: enough for any server's message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// The header that carries a call's id.
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// Where servers put their own request id, in the order looked at.
const SERVER_REQUEST_ID_HEADERS: [HeaderName; 3] = [
    REQUEST_ID_HEADER,
    HeaderName::from_static("request-id"),
    HeaderName::from_static("x-correlation-id"),
];

/// Everything a request needs; shared (behind an `Arc`) by clones of a client.
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    /// The plain-HTTP client model requests go through instead of
    /// `client`, when [`direct::eligible`].
    pub(crate) direct: Option<DirectClient>,
    /// `None`: no `Authorization` header (a model run with auth off).
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
    /// The manager behind `tokens` when the builder made one from a key id
    /// and secret.
    pub(crate) token_manager: Option<TokenManager>,
    /// Without a trailing slash.
    pub(crate) base_url: String,
    /// The endpoints' URLs, parsed once.
    pub(crate) endpoints: Endpoints,
    pub(crate) headers: HeaderMap,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
    /// Largest JSON reply read.
    pub(crate) max_response_size: usize,
    /// Largest server-sent event (or line) of a stream.
    pub(crate) max_event_size: usize,
    /// Longest a stream may take from its head to its end (`None`: no bound).
    pub(crate) stream_deadline: Option<Duration>,
}

/// A stream the server accepted, with what its reader needs to know.
pub(crate) struct OpenStream {
    pub(crate) response: Reply,
    pub(crate) request_id: RequestId,
    /// Bound on each wait for more of the body.
    pub(crate) idle_timeout: Duration,
    pub(crate) max_event_size: usize,
    /// When the whole stream must have ended, if ever.
    pub(crate) deadline: Option<Instant>,
}

/// Errors the retry loop may try again. Token errors are excluded: the
/// token source has already retried those in its own way.
fn retryable(error: &Error) -> bool {
    error.is_retryable() && !matches!(error, Error::Auth(_))
}

/// A fresh id for one logical call: 32 hex digits.
fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    digits.iter().map(|&d| char::from(d)).collect()
}

/// An endpoint of the model API this crate calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `chat/completions`.
    Chat,
    /// `embeddings`.
    Embeddings,
    /// `models`.
    Models,
    /// `rerank`.
    Rerank,
}

impl Endpoint {
    const ALL: [Endpoint; 4] = [
        Endpoint::Chat,
        Endpoint::Embeddings,
        Endpoint::Models,
        Endpoint::Rerank,
    ];

    /// The path under the base URL.
    fn path(self) -> &'static str {
        match self {
            Endpoint::Chat => "chat/completions",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Models => "models",
            Endpoint::Rerank => "rerank",
        }
    }
}

/// The URLs of the [`Endpoint`]s, parsed once when the client is built
/// instead of on every request, also as the URIs hyper takes.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    urls: [url::Url; 4],
    uris: [hyper::Uri; 4],
}

impl Endpoints {
    /// The endpoints under `base_url` (already checked to be an http(s) URL
    /// with a host, without a trailing slash, so each joins into a URL).
    pub(crate) fn parse(base_url: &str) -> Result<Self> {
        let mut urls = Vec::with_capacity(Endpoint::ALL.len());
        let mut uris = Vec::with_capacity(Endpoint::ALL.len());
        for endpoint in Endpoint::ALL {
            let text = format!("{base_url}/{}", endpoint.path());
            let invalid = |e: &dyn fmt::Display| {
                Error::config("base_url", format!("gives no valid URL for {text:?}: {e}"))
            };
            let url = url::Url::parse(&text).map_err(|e| invalid(&e))?;
            uris.push(url.as_str().parse().map_err(|e| invalid(&e))?);
            urls.push(url);
        }
        Ok(Self {
            urls: urls.try_into().expect("one URL per endpoint"),
            uris: uris.try_into().expect("one URI per endpoint"),
        })
    }

    fn get(&self, endpoint: Endpoint) -> &url::Url {
        &self.urls[endpoint as usize]
    }

    fn uri(&self, endpoint: Endpoint) -> &hyper::Uri {
        &self.uris[endpoint as usize]
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
    /// The URL of `endpoint`, e.g. for an error message.
    pub(crate) fn url(&self, endpoint: Endpoint) -> &str {
        self.endpoints.get(endpoint).as_str()
    }

    /// POSTs `body` and parses the JSON reply, with retries.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
    ) -> Result<T> {
        self.post_json_checked(endpoint, body, |_| Ok(())).await
    }

    /// Like [`post_json`](Self::post_json); `check` looks at the parsed
    /// reply, and its error carries the call's request id like any other.
    pub(crate) async fn post_json_checked<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
        check: impl Fn(&T) -> Result<()>,
    ) -> Result<T> {
        let body = encode(body)?;
        self.json(Method::POST, endpoint, Some(body), check).await
    }

    /// GETs `path` and parses the JSON reply, with retries.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, endpoint: Endpoint) -> Result<T> {
        self.json(Method::GET, endpoint, None, |_| Ok(())).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        endpoint: Endpoint,
        body: Option<Bytes>,
        check: impl Fn(&T) -> Result<()>,
    ) -> Result<T> {
        let url = self.url(endpoint);
        let sent = new_request_id();
        let check = &check;
        self.retry
            .run_if(url, retryable, || async {
                let mut id = RequestId::new(sent.clone(), None);
                let outcome = async {
                    let response = self
                        .attempt(&method, endpoint, body.clone(), false, &mut id)
                        .await?;
                    // The reply bounds its body: reqwest with the request's
                    // own timeout (set on every request, so on a client the
                    // caller brought too), the direct client with its deadline.
                    let bytes = match read_limited(response, self.max_response_size).await {
                        Err(BodyError::Transport(e)) => return Err(self.http_error(e, url)),
                        Err(BodyError::TooLarge) => {
                            return Err(Error::TooLarge {
                                what: format!("the reply from {url}"),
                                limit: self.max_response_size,
                                setting: "max_response_size".into(),
                                request_id: None,
                            })
                        }
                        Ok(bytes) => bytes,
                    };
                    let value: T = parse_json(&bytes).map_err(|e| {
                        Error::invalid_response(
                            url,
                            format!(
                                "{e}; the body starts with {:?}",
                                String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                            ),
                        )
                    })?;
                    check(&value)?;
                    Ok(value)
                }
                .await;
                outcome.map_err(|e| e.with_request_id(&id))
            })
            .await
    }

    /// POSTs a streaming request; returns once a 2xx status has arrived,
    /// leaving the body to the caller. Only this part is retried: once
    /// chunks flow, a failure is the stream's to report.
    pub(crate) async fn post_stream(
        &self,
        endpoint: Endpoint,
        body: &impl Serialize,
    ) -> Result<OpenStream> {
        let body = encode(body)?;
        let sent = new_request_id();
        self.retry
            .run_if(self.url(endpoint), retryable, || async {
                let mut id = RequestId::new(sent.clone(), None);
                match self
                    .attempt(&Method::POST, endpoint, Some(body.clone()), true, &mut id)
                    .await
                {
                    Ok(response) => Ok(OpenStream {
                        response,
                        request_id: id,
                        idle_timeout: self.request_timeout,
                        max_event_size: self.max_event_size,
                        deadline: self.stream_deadline.map(|d| Instant::now() + d),
                    }),
                    Err(e) => Err(e.with_request_id(&id)),
                }
            })
            .await
    }

    /// One request, plus one more with a new token if the first token was
    /// rejected (`401`, or `403`, which some gateways send for an expired
    /// token). Returns a response with a 2xx status; `id.server` is set from
    /// the last reply's headers.
    async fn attempt(
        &self,
        method: &Method,
        endpoint: Endpoint,
        body: Option<Bytes>,
        streaming: bool,
        id: &mut RequestId,
    ) -> Result<Reply> {
        let url = self.url(endpoint);
        // Head and error body share one deadline per request sent.
        let mut deadline = Instant::now() + self.request_timeout;
        let Some(tokens) = &self.tokens else {
            let response = self
                .send(method, endpoint, None, body, streaming, id, deadline)
                .await?;
            return self.check_status(url, response, deadline).await;
        };
        let token = tokens.token().await?;
        let mut response = self
            .send(
                method,
                endpoint,
                Some(&token),
                body.clone(),
                streaming,
                id,
                deadline,
            )
            .await?;
        let rejected = |status| matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        if rejected(response.status) && tokens.refreshes() {
            tracing::info!(
                url,
                status = response.status.as_u16(),
                request_id = id.sent(),
                "the model API rejected the access token; refreshing it and trying once more"
            );
            // Its body is not needed: dropped unread.
            drop(response);
            tokens.invalidate_token(&token);
            let token = tokens.token().await?;
            deadline = Instant::now() + self.request_timeout;
            response = self
                .send(
                    method,
                    endpoint,
                    Some(&token),
                    body,
                    streaming,
                    id,
                    deadline,
                )
                .await?;
        }
        if response.status == StatusCode::UNAUTHORIZED {
            // Final: a fixed key cannot be replaced, and a fresh token failed too.
            let body = tokio::time::timeout_at(deadline, read_prefix(response, ERROR_BODY_LIMIT))
                .await
                .map_err(|_| self.timeout_error(url))?
                .map_err(|e| self.http_error(e, url))?;
            let message = ServerError::parse(&body).message;
            return Err(if tokens.refreshes() {
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
            .into());
        }
        self.check_status(url, response, deadline).await
    }

    /// Sends one request with the call's id, through the direct client
    /// when there is one. A reply that redirects to (or came from) another
    /// origin is an [`Error::Redirected`], before its status means anything
    /// else.
    #[allow(clippy::too_many_arguments)] // one request's parts, all distinct
    async fn send(
        &self,
        method: &Method,
        endpoint: Endpoint,
        token: Option<&AccessToken>,
        body: Option<Bytes>,
        streaming: bool,
        id: &mut RequestId,
        deadline: Instant,
    ) -> Result<Reply> {
        let requested = self.endpoints.get(endpoint);
        let url = requested.as_str();
        let bearer = token.map(bearer).transpose()?;
        let has_body = body.is_some();
        let headers = || self.request_headers(id, bearer.as_ref(), has_body, streaming);
        let reply = match &self.direct {
            Some(direct) => {
                let request = DirectRequest {
                    method,
                    url: requested,
                    uri: self.endpoints.uri(endpoint),
                    headers: &headers,
                    body,
                };
                // A stream's body is bounded by its reader, between chunks.
                let body_deadline = (!streaming).then_some(deadline);
                match tokio::time::timeout_at(deadline, direct.send(request, body_deadline)).await {
                    Ok(Ok(reply)) => reply,
                    Ok(Err(e)) => return Err(self.http_error(e, url)),
                    Err(_) => return Err(self.timeout_error(url)),
                }
            }
            None => {
                let mut request = self
                    .client
                    .request(method.clone(), requested.clone())
                    .headers(headers());
                if let Some(body) = body {
                    request = request.body(body);
                }
                let response = if streaming {
                    // A whole-request timeout would cut long answers; bound
                    // the wait for the response head here, and the gaps
                    // between chunks in the stream reader.
                    match tokio::time::timeout_at(deadline, request.send()).await {
                        Ok(sent) => sent.map_err(|e| self.http_error(e.into(), url))?,
                        Err(_) => return Err(self.timeout_error(url)),
                    }
                } else {
                    request
                        .timeout(self.request_timeout)
                        .send()
                        .await
                        .map_err(|e| self.http_error(e.into(), url))?
                };
                Reply::from_reqwest(response, requested)
            }
        };
        id.set_server(server_request_id(&reply.headers));
        if let Some((status, location)) = redirect_of(requested, &reply) {
            tracing::warn!(
                url,
                ?status,
                location,
                "the model API redirected to another origin; not followed"
            );
            return Err(Error::Redirected {
                url: url.to_string(),
                status,
                location,
                request_id: None,
            });
        }
        Ok(reply)
    }

    /// The headers of one request: the client's own (user agent, default
    /// headers, project id), the call's id, the bearer token, and the body's
    /// and the answer's types. The same whichever client sends it.
    fn request_headers(
        &self,
        id: &RequestId,
        bearer: Option<&HeaderValue>,
        has_body: bool,
        streaming: bool,
    ) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.headers.len() + 6);
        headers.insert(USER_AGENT, HeaderValue::from_static(http::USER_AGENT));
        for (name, value) in &self.headers {
            headers.append(name, value.clone());
        }
        if let Ok(value) = HeaderValue::from_str(id.sent()) {
            headers.insert(REQUEST_ID_HEADER, value);
        }
        if let Some(bearer) = bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        if has_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        // What reqwest sends unless told otherwise, and what a stream takes.
        let accept = if streaming {
            "text/event-stream"
        } else {
            "*/*"
        };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        headers
    }

    /// Passes a 2xx reply; otherwise reads (a bounded prefix of) the error
    /// body within the request timeout and classifies the status.
    async fn check_status(&self, url: &str, response: Reply, deadline: Instant) -> Result<Reply> {
        let status = response.status;
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = parse_retry_after(&response.headers);
        let body = tokio::time::timeout_at(deadline, read_prefix(response, ERROR_BODY_LIMIT))
            .await
            .map_err(|_| self.timeout_error(url))?
            .map_err(|e| self.http_error(e, url))?;
        let error = status_error(status.as_u16(), ServerError::parse(&body), retry_after);
        tracing::debug!(url, status = status.as_u16(), %error, "the model API answered with an error");
        Err(error)
    }

    /// A timeout, or a connection failure saying what happened.
    fn http_error(&self, error: HttpError, url: &str) -> Error {
        if error.is_timeout() {
            self.timeout_error(url)
        } else {
            Error::Connection {
                url: url.to_string(),
                message: error.describe(),
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
/// string again, and unknown fields are kept as text
/// ([`from_json_text`](crate::inference::wire::from_json_text)); a body that
/// is not UTF-8 is parsed as bytes, for the parser's own precise error.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(bytes) {
        Ok(text) => crate::inference::wire::from_json_text(text),
        Err(_) => serde_json::from_slice(bytes),
    }
}

/// `Bearer <token>`, marked sensitive so that nothing prints it.
fn bearer(token: &AccessToken) -> Result<HeaderValue> {
    let secret = token.expose_secret();
    let mut text = Vec::with_capacity("Bearer ".len() + secret.len());
    text.extend_from_slice(b"Bearer ");
    text.extend_from_slice(secret.as_bytes());
    let mut value = HeaderValue::from_maybe_shared(Bytes::from(text)).map_err(|_| {
        Error::config(
            "api_key",
            "the access token contains characters not allowed in an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn encode(body: &impl Serialize) -> Result<Bytes> {
    serde_json::to_vec(body).map(Bytes::from).map_err(|e| {
        Error::invalid_request("request", format!("could not be encoded as JSON: {e}"))
    })
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may hold user secrets; show names only.
        let header_names: Vec<&str> = self.headers.keys().map(|k| k.as_str()).collect();
        f.debug_struct("Transport")
            .field("base_url", &self.base_url)
            .field("direct", &self.direct.is_some())
            .field("tokens", &self.tokens)
            .field("headers", &header_names)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("max_response_size", &self.max_response_size)
            .field("max_event_size", &self.max_event_size)
            .field("stream_deadline", &self.stream_deadline)
            .finish()
    }
}
