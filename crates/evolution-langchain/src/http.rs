//! Small helpers shared by every HTTP call the crate makes.

use std::error::Error as _;
use std::time::Duration;

/// How long connecting may take before a request fails, for the clients this
/// crate builds itself. Loopback and cloud endpoints connect in milliseconds;
/// ten seconds leaves room for a slow network without hiding an outage.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client used when the caller does not bring one: pooled, HTTP/1.1 and
/// HTTP/2, with a connect timeout and the crate's user agent.
pub(crate) fn default_client() -> Result<reqwest::Client, crate::Error> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!(
            "evolution-langchain-rs/",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
        .map_err(|e| {
            crate::Error::config(
                "http_client",
                format!("could not be built: {}", describe_transport_error(&e)),
            )
        })
}

/// A transport error with its causes, e.g. "error sending request: connection
/// closed before message completed". reqwest's own `Display` stops at the
/// first level, which rarely says what actually happened.
pub(crate) fn describe_transport_error(error: &reqwest::Error) -> String {
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
