//! The request pipeline: what happens around each request to the model API,
//! whoever builds the request — this crate's clients, the async-openai layer
//! or the rig transport. Written once, here:
//!
//! - a current bearer per attempt, from the [`TokenSource`];
//! - one refresh and one more attempt when the API rejects the token (`401`,
//!   or `403`, which some gateways send for an expired token), through
//!   [`TokenSource::invalidate_token`], so that a burst of rejections does not
//!   throw away a replacement another task already fetched;
//! - what every status means ([`verdict_for_status`]): done, rejected, or
//!   worth another attempt;
//! - retries with exponential backoff and full jitter, a server's
//!   `Retry-After` (seconds, milliseconds or an HTTP date) honoured up to a cap
//!   ([`RetryPolicy`]);
//! - one `X-Request-ID` per call, the same on each of its attempts.
//!
//! The pipeline does not know what a request or a response is: the caller
//! hands it one function that sends an attempt with the headers of an
//! [`Attempt`], and one that tells what came back.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;

use super::retry::{parse_retry_after, retryable_status, RetryPolicy};
use crate::auth::{AccessToken, TokenSource};
use crate::error::{Error, Result};

/// The header that carries a call's id.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What one attempt's outcome means to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A success, or a failure that another attempt cannot mend: the
    /// outcome goes back to the caller as it is.
    Done,
    /// The API refused the bearer (`401`/`403`): a new token may help.
    Rejected,
    /// Worth another attempt (`408`, `429`, `5xx` but `501`/`505`, a
    /// timeout, a failed connection), after the server's `Retry-After` when
    /// it gave one.
    Retry {
        /// The server's wish, when it stated one.
        retry_after: Option<Duration>,
    },
}

/// The verdict on a reply with `status` and `headers`: the one table every
/// client of this crate follows.
pub(crate) fn verdict_for_status(status: StatusCode, headers: &HeaderMap) -> Verdict {
    match status.as_u16() {
        401 | 403 => Verdict::Rejected,
        code if retryable_status(code) => Verdict::Retry {
            retry_after: parse_retry_after(headers),
        },
        _ => Verdict::Done,
    }
}

/// The headers the pipeline gives one attempt: the bearer (none when the
/// client sends no `Authorization`) and the call's id.
#[derive(Debug)]
pub(crate) struct Attempt {
    pub(crate) bearer: Option<HeaderValue>,
    pub(crate) request_id: HeaderValue,
}

impl Attempt {
    /// Sets this attempt's headers in `headers`, replacing any of the same name.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        if let Some(bearer) = &self.bearer {
            headers.insert(AUTHORIZATION, bearer.clone());
        }
        headers.insert(REQUEST_ID_HEADER, self.request_id.clone());
    }
}

/// What a call through the pipeline came to.
pub(crate) struct Sent<T> {
    /// The last attempt's outcome.
    pub(crate) outcome: T,
    /// Requests sent, the one after a token refresh included.
    pub(crate) attempts: u32,
}

/// Tokens and retries: the part of a client every request goes through.
/// Cheap to clone (an `Arc` and a few numbers).
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    /// `None`: no `Authorization` header (a model run with auth off).
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
    pub(crate) retry: RetryPolicy,
}

impl Pipeline {
    /// Sends a call's attempts through `send` until one is [`Verdict::Done`]
    /// (as `judge` sees it), the retries run out, or a rejected token cannot
    /// be replaced. `what` names the call in log events; `request_id` goes
    /// out with every attempt. A token that cannot be had ends the call with
    /// `lift(error)`: the token source has retried in its own way.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        request_id: &str,
        mut send: F,
        judge: impl Fn(&Result<T, E>) -> Verdict,
        lift: impl Fn(Error) -> E,
    ) -> Sent<Result<T, E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let request_id = HeaderValue::from_str(request_id)
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"));
        let mut backoff = self.retry.backoff().build();
        let mut attempts = 0u32;
        let mut refreshed = false;
        let mut token = match self.token().await {
            Ok(token) => token,
            Err(error) => return Sent::new(Err(lift(error)), attempts),
        };
        loop {
            let bearer = match token.as_ref().map(bearer).transpose() {
                Ok(bearer) => bearer,
                Err(error) => return Sent::new(Err(lift(error)), attempts),
            };
            attempts += 1;
            let outcome = send(Attempt {
                bearer,
                request_id: request_id.clone(),
            })
            .await;
            match judge(&outcome) {
                Verdict::Done => return Sent::new(outcome, attempts),
                Verdict::Rejected => {
                    let (Some(tokens), Some(rejected)) = (&self.tokens, &token) else {
                        return Sent::new(outcome, attempts);
                    };
                    if refreshed || !tokens.refreshes() {
                        return Sent::new(outcome, attempts);
                    }
                    refreshed = true;
                    tokens.invalidate_token(rejected);
                    let fresh = match tokens.token().await {
                        Ok(fresh) => fresh,
                        Err(error) => return Sent::new(Err(lift(error)), attempts),
                    };
                    if fresh.same_as(rejected) {
                        // The source has nothing newer: the rejection stands.
                        return Sent::new(outcome, attempts);
                    }
                    tracing::info!(
                        what,
                        request_id = request_id.to_str().unwrap_or_default(),
                        rejected_prefix = rejected.prefix(),
                        "the model API rejected the access token; trying once more with a new one"
                    );
                    token = Some(fresh);
                }
                Verdict::Retry { retry_after } => {
                    let Some(step) = backoff.next() else {
                        return Sent::new(outcome, attempts);
                    };
                    let pause = self.retry.pause(retry_after, step);
                    tracing::warn!(
                        target: "evolution_langchain::retry",
                        what,
                        attempt = attempts,
                        pause_ms = pause.as_millis() as u64,
                        request_id = request_id.to_str().unwrap_or_default(),
                        "request failed, retrying"
                    );
                    drop(outcome);
                    tokio::time::sleep(pause).await;
                    // A token that expired during the pause is replaced.
                    token = match self.token().await {
                        Ok(token) => token,
                        Err(error) => return Sent::new(Err(lift(error)), attempts),
                    };
                }
            }
        }
    }

    async fn token(&self) -> Result<Option<AccessToken>> {
        match &self.tokens {
            Some(tokens) => tokens.token().await.map(Some),
            None => Ok(None),
        }
    }

    /// Whether a `401` after this pipeline's recovery means a rejected key
    /// (no refresh possible) rather than a rejected fresh token.
    pub(crate) fn refreshes(&self) -> bool {
        self.tokens.as_ref().is_some_and(|t| t.refreshes())
    }
}

impl<T> Sent<T> {
    fn new(outcome: T, attempts: u32) -> Self {
        Self { outcome, attempts }
    }
}

/// `Bearer <token>`, marked sensitive so that nothing prints it.
pub(crate) fn bearer(token: &AccessToken) -> Result<HeaderValue> {
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

/// A fresh id for one logical call: 32 hex digits.
pub(crate) fn new_request_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::StaticToken;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    /// A source that hands out `t1`, `t2`, … and counts invalidations.
    #[derive(Debug, Default)]
    struct Counting {
        issued: AtomicU32,
        current: Mutex<Option<String>>,
        invalidated: AtomicU32,
    }

    #[async_trait::async_trait]
    impl TokenSource for Counting {
        async fn token(&self) -> Result<AccessToken> {
            let mut current = self.current.lock().unwrap();
            let token = current.get_or_insert_with(|| {
                format!("t{}", self.issued.fetch_add(1, Ordering::SeqCst) + 1)
            });
            Ok(AccessToken::new(token.clone()))
        }

        fn invalidate(&self) {
            self.invalidated.fetch_add(1, Ordering::SeqCst);
            *self.current.lock().unwrap() = None;
        }
    }

    fn pipeline(tokens: Option<Arc<dyn TokenSource>>, max_retries: u32) -> Pipeline {
        Pipeline {
            tokens,
            retry: RetryPolicy::with_max_retries(max_retries),
        }
    }

    /// Runs a call whose attempts answer the statuses of `script` in turn;
    /// returns the bearers seen, the last status and the attempts.
    async fn replay(
        pipeline: &Pipeline,
        script: &[(u16, Option<&str>)],
    ) -> (Vec<String>, u16, u32) {
        let seen = Mutex::new(Vec::new());
        let next = AtomicU32::new(0);
        let sent = pipeline
            .run(
                "test",
                "0123",
                |attempt| {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    let bearer = attempt
                        .bearer
                        .map(|b| b.to_str().unwrap().to_string())
                        .unwrap_or_default();
                    seen.lock().unwrap().push(bearer);
                    assert_eq!(attempt.request_id, "0123");
                    let (status, retry_after) = script[i.min(script.len() - 1)];
                    async move {
                        let mut headers = HeaderMap::new();
                        if let Some(value) = retry_after {
                            headers.insert("retry-after", value.parse().unwrap());
                        }
                        Ok::<_, Error>((StatusCode::from_u16(status).unwrap(), headers))
                    }
                },
                |outcome| match outcome {
                    Ok((status, headers)) if !status.is_success() => {
                        verdict_for_status(*status, headers)
                    }
                    _ => Verdict::Done,
                },
                |e| e,
            )
            .await;
        let status = sent.outcome.unwrap().0.as_u16();
        (seen.into_inner().unwrap(), status, sent.attempts)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_token_is_replaced_once() {
        let source = Arc::new(Counting::default());
        let p = pipeline(Some(source.clone()), 2);
        let (bearers, status, attempts) = replay(&p, &[(401, None), (200, None)]).await;
        assert_eq!(bearers, ["Bearer t1", "Bearer t2"]);
        assert_eq!((status, attempts), (200, 2));
        // Rejected twice: one refresh only, and the second rejection stands.
        let (bearers, status, _) = replay(&p, &[(403, None), (403, None), (200, None)]).await;
        assert_eq!(bearers, ["Bearer t2", "Bearer t3"]);
        assert_eq!(status, 403);
        assert_eq!(source.invalidated.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fixed_key_is_not_retried_on_rejection() {
        let p = pipeline(Some(Arc::new(StaticToken::new("key"))), 2);
        let (bearers, status, attempts) = replay(&p, &[(401, None), (200, None)]).await;
        assert_eq!(bearers, ["Bearer key"]);
        assert_eq!((status, attempts), (401, 1));
        let (bearers, _, _) = replay(&pipeline(None, 0), &[(200, None)]).await;
        assert_eq!(bearers, [""]);
    }

    #[tokio::test(start_paused = true)]
    async fn retryable_statuses_are_retried_up_to_the_limit() {
        let p = pipeline(None, 2);
        let (_, status, attempts) = replay(&p, &[(503, None), (429, None), (200, None)]).await;
        assert_eq!((status, attempts), (200, 3));
        let (_, status, attempts) = replay(&p, &[(500, None)]).await;
        assert_eq!((status, attempts), (500, 3));
        for permanent in [400, 404, 422, 501, 505] {
            let (_, status, attempts) = replay(&p, &[(permanent, None), (200, None)]).await;
            assert_eq!((status, attempts), (permanent, 1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_sets_the_pause() {
        let p = pipeline(None, 1);
        let start = tokio::time::Instant::now();
        let (_, status, _) = replay(&p, &[(429, Some("7")), (200, None)]).await;
        assert_eq!(status, 200);
        assert_eq!(start.elapsed().as_secs(), 7);
    }

    #[test]
    fn request_ids_are_32_hex_digits() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, new_request_id());
    }
}
