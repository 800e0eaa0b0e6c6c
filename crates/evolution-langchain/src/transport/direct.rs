//! Plain-HTTP requests straight through hyper's pooled client, for the
//! servers a program reaches without TLS or a proxy: the emulator, a local
//! llama.cpp or vLLM, a gateway on the same network.
//!
//! reqwest is hyper's pooled client plus layers this crate does not need
//! there (proxy matching, cookies, its redirect bookkeeping), and on every
//! request it turns the URL into text and parses it again, three times:
//! with that bookkeeping, over a third of the instructions a call took on
//! the client's side. Here the endpoint URIs
//! are parsed once, and the rest is what reqwest does on plain HTTP:
//! keep-alive pool (idle connections closed after 90 s), `TCP_NODELAY`, the
//! same connect timeout, same-origin redirects followed (at most
//! [`MAX_REDIRECTS`](super::http::MAX_REDIRECTS)), the same headers.
//!
//! TLS, proxies and a caller's own `reqwest::Client` stay with reqwest
//! ([`eligible`] decides).

use std::ffi::OsString;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{HeaderMap, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::time::Instant;

use super::http::{describe_error, is_loopback_url, same_origin, CONNECT_TIMEOUT, MAX_REDIRECTS};
use super::reply::{HttpError, Reply};

/// How long an idle pooled connection is kept (reqwest's default).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The environment variables through which reqwest picks a proxy for
/// plain HTTP.
const PROXY_VARIABLES: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

/// Whether requests to `base_url` may go through the direct client: plain
/// HTTP without credentials in the URL, and no proxy that reqwest would use
/// for it. A loopback server never
/// goes through a proxy (this crate's clients turn proxies off for it); any
/// other host does only when a proxy variable is set, which this checks on
/// Linux and the BSDs. Elsewhere reqwest reads the system's proxy settings,
/// so only loopback servers qualify.
pub(crate) fn eligible(base_url: &url::Url) -> bool {
    eligible_with(base_url, |name| std::env::var_os(name))
}

/// [`eligible`], reading the environment through `var`.
fn eligible_with(base_url: &url::Url, var: impl Fn(&str) -> Option<OsString>) -> bool {
    // Credentials in the URL become a Basic header in reqwest; keep that there.
    if base_url.scheme() != "http"
        || !base_url.username().is_empty()
        || base_url.password().is_some()
    {
        return false;
    }
    if is_loopback_url(base_url) {
        return true;
    }
    let env_only = cfg!(all(unix, not(target_os = "macos")));
    env_only
        && PROXY_VARIABLES
            .iter()
            .all(|name| var(name).is_none_or(|value| value.is_empty()))
}

/// The pooled plain-HTTP client. Cloning shares the pool.
#[derive(Clone)]
pub(crate) struct DirectClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

/// One request for the direct client. The URI is the endpoint's, parsed
/// when the client was built; `headers` makes the request's headers, once
/// per request sent (a redirect sends another).
pub(crate) struct DirectRequest<'a> {
    pub(crate) method: &'a Method,
    pub(crate) url: &'a url::Url,
    pub(crate) uri: &'a hyper::Uri,
    pub(crate) headers: &'a (dyn Fn() -> HeaderMap + Sync),
    pub(crate) body: Option<Bytes>,
}

impl DirectClient {
    /// A client with its own pool; nothing connects until the first request.
    pub(crate) fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Self { client }
    }

    /// Sends `request`, following redirects within its origin. The reply's
    /// body must be read by `body_deadline` when one is given.
    pub(crate) async fn send(
        &self,
        request: DirectRequest<'_>,
        body_deadline: Option<Instant>,
    ) -> Result<Reply, HttpError> {
        let DirectRequest {
            method,
            url,
            uri,
            headers,
            mut body,
        } = request;
        let mut method = method.clone();
        let mut uri = uri.clone();
        // Set only once a redirect was followed.
        let mut current: Option<url::Url> = None;
        let mut redirects = 0;
        // Whether a redirect turned the request into a GET without its body.
        let mut body_dropped = false;
        loop {
            let mut builder = hyper::Request::builder().method(method.clone()).uri(uri);
            if let Some(map) = builder.headers_mut() {
                *map = headers();
                if body_dropped {
                    map.remove(CONTENT_TYPE);
                    map.remove(CONTENT_LENGTH);
                }
            }
            let request = builder
                .body(Full::new(body.clone().unwrap_or_default()))
                .map_err(|e| HttpError::Invalid(describe_error(&e)))?;
            let response: hyper::Response<Incoming> = self
                .client
                .request(request)
                .await
                .map_err(HttpError::Send)?;
            let from = current.as_ref().unwrap_or(url);
            let Some(next) = same_origin_redirect(from, &response) else {
                return Ok(Reply::from_direct(response, current, body_deadline));
            };
            if redirects == MAX_REDIRECTS {
                return Ok(Reply::from_direct(response, current, body_deadline));
            }
            redirects += 1;
            // As browsers and reqwest do: 303, and 301/302 after a POST, go
            // on as a GET without the body; 307 and 308 repeat the request.
            let status = response.status();
            if status == StatusCode::SEE_OTHER
                || (method == Method::POST
                    && matches!(status, StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND))
            {
                if method != Method::HEAD {
                    method = Method::GET;
                }
                body = None;
                body_dropped = true;
            }
            drop(response);
            uri = match next.as_str().parse() {
                Ok(uri) => uri,
                Err(e) => {
                    return Err(HttpError::Invalid(format!(
                        "the redirect to {next} is not a valid URI: {e}"
                    )))
                }
            };
            current = Some(next);
        }
    }
}

/// Where a redirect reply sends the request, if it is one this client
/// follows: 301, 302, 303, 307 or 308 with a `Location` in the same origin.
fn same_origin_redirect(from: &url::Url, response: &hyper::Response<Incoming>) -> Option<url::Url> {
    if !matches!(
        response.status(),
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    ) {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    let next = from.join(location).ok()?;
    same_origin(from, &next).then_some(next)
}

impl std::fmt::Debug for DirectClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectClient")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_without_a_proxy_qualifies() {
        let url = |text: &str| url::Url::parse(text).unwrap();
        let none = |_: &str| None;
        let proxy =
            |name: &str| (name == "HTTP_PROXY").then(|| OsString::from("http://proxy:3128"));
        let empty = |_: &str| Some(OsString::new());
        assert!(eligible_with(&url("http://127.0.0.1:8080/v1"), none));
        assert!(
            eligible_with(&url("http://localhost/v1"), proxy),
            "loopback skips proxies"
        );
        assert!(
            !eligible_with(&url("https://127.0.0.1/v1"), none),
            "TLS is reqwest's"
        );
        assert!(!eligible_with(
            &url("https://foundation-models.api.cloud.ru/v1"),
            none
        ));
        let lan = url("http://10.0.0.5:8000/v1");
        assert!(!eligible_with(&lan, proxy), "a proxy is reqwest's to use");
        let env_only = cfg!(all(unix, not(target_os = "macos")));
        assert_eq!(eligible_with(&lan, none), env_only);
        assert_eq!(
            eligible_with(&lan, empty),
            env_only,
            "an empty variable sets no proxy"
        );
    }
}
