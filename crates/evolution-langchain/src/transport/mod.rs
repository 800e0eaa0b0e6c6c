//! One request to the model API, for chat, embeddings, rerank and model
//! listing alike: base URL, headers, bearer token, recovery from a rejected
//! token, status classification and retries.
//!
//! - [`connection`]: the builder settings and how they become a [`Transport`];
//! - [`http`]: the HTTP client and URL checks;
//! - [`retry`]: backoff and `Retry-After`;
//! - [`server_error`]: what an error body says and what its status means.

pub(crate) mod connection;
pub(crate) mod http;
pub(crate) mod retry;
pub(crate) mod server_error;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::auth::{AccessToken, TokenManager, TokenSource};
use crate::error::{AuthError, Error, Result};
use http::describe_transport_error;
use retry::{parse_retry_after, RetryPolicy};
use server_error::{status_error, ServerError};

/// Everything a request needs; shared (behind an `Arc`) by clones of a client.
pub(crate) struct Transport {
    pub(crate) client: reqwest::Client,
    /// `None`: no `Authorization` header (a model run with auth off).
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
    /// The manager behind `tokens` when the builder made one from a key id
    /// and secret.
    pub(crate) token_manager: Option<TokenManager>,
    /// Without a trailing slash.
    pub(crate) base_url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) request_timeout: Duration,
    pub(crate) retry: RetryPolicy,
}

/// Errors the retry loop may try again. Token errors are excluded: the
/// token source has already retried those in its own way.
fn retryable(error: &Error) -> bool {
    error.is_retryable() && !matches!(error, Error::Auth(_))
}

impl Transport {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// POSTs `body` and parses the JSON reply, with retries.
    pub(crate) async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T> {
        let body = encode(body)?;
        self.json(Method::POST, path, Some(body)).await
    }

    /// GETs `path` and parses the JSON reply, with retries.
    pub(crate) async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None).await
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<T> {
        let url = self.url(path);
        self.retry
            .run_if(&url, retryable, || async {
                let response = self.attempt(&method, &url, body.clone(), false).await?;
                let bytes = response
                    .bytes()
                    .await
                    .map_err(|e| self.transport_error(e, &url))?;
                serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                    url: url.clone(),
                    message: format!(
                        "{e}; the body starts with {:?}",
                        String::from_utf8_lossy(&bytes[..bytes.len().min(60)])
                    ),
                })
            })
            .await
    }

    /// POSTs a streaming request; returns once a 2xx status has arrived,
    /// leaving the body to the caller. Only this part is retried: once
    /// chunks flow, a failure is the stream's to report.
    pub(crate) async fn post_stream(&self, path: &str, body: &impl Serialize) -> Result<Response> {
        let body = encode(body)?;
        let url = self.url(path);
        self.retry
            .run_if(&url, retryable, || {
                self.attempt(&Method::POST, &url, Some(body.clone()), true)
            })
            .await
    }

    /// One request, plus one more with a new token if the first token was
    /// rejected (`401`, or `403`, which some gateways send for an expired
    /// token). Returns a response with a 2xx status.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        body: Option<Bytes>,
        streaming: bool,
    ) -> Result<Response> {
        let Some(tokens) = &self.tokens else {
            let response = self.send(method, url, None, body, streaming).await?;
            return self.check_status(url, response).await;
        };
        let token = tokens.token().await?;
        let mut response = self
            .send(method, url, Some(&token), body.clone(), streaming)
            .await?;
        let rejected = |status| matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN);
        if rejected(response.status()) && tokens.refreshes() {
            tracing::info!(
                url,
                status = response.status().as_u16(),
                "the model API rejected the access token; refreshing it and trying once more"
            );
            tokens.invalidate_token(&token);
            let token = tokens.token().await?;
            response = self
                .send(method, url, Some(&token), body, streaming)
                .await?;
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            // Final: a fixed key cannot be replaced, and a fresh token failed too.
            let message = ServerError::parse(&response.bytes().await.unwrap_or_default()).message;
            return Err(if tokens.refreshes() {
                AuthError::TokenRejected { message }
            } else {
                AuthError::KeyRejected { message }
            }
            .into());
        }
        self.check_status(url, response).await
    }

    async fn send(
        &self,
        method: &Method,
        url: &str,
        token: Option<&AccessToken>,
        body: Option<Bytes>,
        streaming: bool,
    ) -> Result<Response> {
        let mut request = self
            .client
            .request(method.clone(), url)
            .headers(self.headers.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token.expose_secret());
        }
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        if streaming {
            // A whole-request timeout would cut long answers; bound the wait
            // for the response head here, and the gaps between chunks in the
            // stream reader.
            request = request.header(ACCEPT, HeaderValue::from_static("text/event-stream"));
            match tokio::time::timeout(self.request_timeout, request.send()).await {
                Ok(sent) => sent.map_err(|e| self.transport_error(e, url)),
                Err(_) => Err(self.timeout_error(url)),
            }
        } else {
            request
                .timeout(self.request_timeout)
                .send()
                .await
                .map_err(|e| self.transport_error(e, url))
        }
    }

    async fn check_status(&self, url: &str, response: Response) -> Result<Response> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = parse_retry_after(response.headers());
        let body = response.bytes().await.unwrap_or_default();
        let error = status_error(status.as_u16(), ServerError::parse(&body), retry_after);
        tracing::debug!(url, status = status.as_u16(), %error, "the model API answered with an error");
        Err(error)
    }

    pub(crate) fn transport_error(&self, error: reqwest::Error, url: &str) -> Error {
        if error.is_timeout() {
            self.timeout_error(url)
        } else {
            Error::Connection {
                url: url.to_string(),
                message: describe_transport_error(&error),
                attempts: 1,
            }
        }
    }

    pub(crate) fn timeout_error(&self, url: &str) -> Error {
        Error::Timeout {
            url: url.to_string(),
            timeout: self.request_timeout,
            attempts: 1,
        }
    }
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
            .field("tokens", &self.tokens)
            .field("headers", &header_names)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}
