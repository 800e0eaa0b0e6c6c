//! The HTTP client (reqwest, the only one), its redirect policy, URL
//! checks, and turning HTTP errors into text.

use std::time::Duration;

use crate::error::{Error, Result};

/// How long connecting may take before a request fails, for the clients this
/// crate builds itself. Loopback and cloud endpoints connect in milliseconds;
/// ten seconds leaves room for a slow network without hiding an outage.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The user agent of the clients this crate builds.
pub(crate) const USER_AGENT: &str = concat!("evolution-langchain-rs/", env!("CARGO_PKG_VERSION"));

/// The client used when the caller does not bring one: pooled, with a
/// connect timeout, the crate's user agent and the process's shared TLS
/// setup ([`tls`](super::tls)). It speaks HTTP/1.1 unless `http2`, in which
/// case HTTPS servers are offered HTTP/2 as well (see the
/// [`http2`](crate::ClientBuilder::http2) setting for why HTTP/1.1 is the
/// default). When every target is on this machine (an emulator, a local
/// gateway), system proxy settings are ignored: a proxy could not reach
/// them anyway.
pub(crate) fn default_client(targets: &[&str], http2: bool) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(USER_AGENT)
        .redirect(same_origin_redirects());
    if !http2 {
        builder = builder.http1_only();
    }
    if !targets.is_empty() && targets.iter().all(|target| is_loopback(target)) {
        builder = builder.no_proxy();
    }
    super::tls::configure(builder, http2)?.build().map_err(|e| {
        Error::config(
            "http_client",
            format!("could not be built: {}", describe_error(&e)),
        )
    })
}

/// Most redirects followed within one origin.
pub(crate) const MAX_REDIRECTS: usize = 5;

/// The redirect policy of the clients this crate builds: a redirect within
/// the same origin (scheme, host and port) is followed, up to
/// [`MAX_REDIRECTS`]; one to another origin is not, and its 3xx reply comes
/// back to the caller, which reports it ([`redirect_of`]). A key secret in
/// an IAM request body, or a request meant for `base_url`, never goes
/// elsewhere.
pub(crate) fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt
            .previous()
            .last()
            .is_some_and(|from| same_origin(from, attempt.url()));
        if same && attempt.previous().len() <= MAX_REDIRECTS {
            attempt.follow()
        } else {
            attempt.stop()
        }
    })
}

/// Whether two URLs share scheme, host and port.
pub(crate) fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Where a reply says to go instead of `requested`: a 3xx status (with its
/// `Location`, resolved against the URL the reply came from), or a reply
/// that came from another origin (a caller's own client followed a
/// redirect). The returned status is `None` in the second case.
pub(crate) fn redirect_of(
    requested: &url::Url,
    reply: &reqwest::Response,
) -> Option<(Option<u16>, String)> {
    let came_from = reply.url();
    if !reply.status().is_redirection() {
        return (!same_origin(requested, came_from))
            .then(|| (None, crate::error::truncate_message(came_from.as_str())));
    }
    let location = reply
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
        .map(|location| {
            came_from
                .join(&location)
                .map(String::from)
                .unwrap_or(location)
        })
        .unwrap_or_else(|| "(no Location header)".to_string());
    Some((
        Some(reply.status().as_u16()),
        crate::error::truncate_message(&location),
    ))
}

/// Whether `url` points at this machine (an unparsable URL does not).
pub(crate) fn is_loopback(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url.trim()) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The header that names the Cloud.ru project a request belongs to.
pub(crate) const PROJECT_ID_HEADER: reqwest::header::HeaderName =
    reqwest::header::HeaderName::from_static("x-project-id");

/// A base URL as the clients keep it: trimmed, without a trailing slash.
pub(crate) fn base_without_slash(base_url: &str) -> &str {
    base_url.trim().trim_end_matches('/')
}

/// The `x-project-id` header value for `project_id`; an id that cannot be
/// a header value is a configuration error. Shared by the clients and the
/// bridges.
pub(crate) fn project_id_header(project_id: &str) -> Result<reqwest::header::HeaderValue> {
    reqwest::header::HeaderValue::from_str(project_id.trim()).map_err(|_| {
        Error::config(
            "project_id",
            "contains characters not allowed in an HTTP header",
        )
    })
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

/// An error with its causes, e.g. "error sending request: connection closed
/// before message completed". Most HTTP errors' own `Display` stops at the
/// first level, which rarely says what actually happened.
pub(crate) fn describe_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("http://127.0.0.1:8080/v1"));
        assert!(is_loopback("http://localhost/v1"));
        assert!(is_loopback("http://[::1]:9/v1"));
        assert!(!is_loopback("https://foundation-models.api.cloud.ru/v1"));
        assert!(!is_loopback("not a url"));
    }
}
