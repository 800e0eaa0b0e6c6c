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
//! - rate control ([`Throttle`]): each attempt waits for the limiter and
//!   any pause; a `429` pauses the whole client and is waited out up to a
//!   patience bound rather than counted against `max_retries`; overload
//!   shrinks the batch window and successes grow it;
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
use super::throttle::Throttle;
use crate::auth::{AccessToken, TokenSource};
use crate::error::{Error, Result};

/// The header that carries a call's id.
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// What one attempt's outcome means to the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A success: the outcome goes back to the caller.
    Success,
    /// A failure that another attempt cannot mend: back to the caller too.
    Done,
    /// The API refused the bearer (`401`/`403`): a new token may help.
    Rejected,
    /// Worth another attempt (`408`, `429`, `5xx` but `501`/`505`, a
    /// timeout, a failed connection), after the server's `Retry-After` when
    /// it gave one.
    Retry {
        /// The server's wish, when it stated one.
        retry_after: Option<Duration>,
        /// What kind of failure it was.
        kind: RetryKind,
    },
}

/// Why an attempt is worth repeating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RetryKind {
    /// `429`: the provider's rate limit. Waited out (up to the patience
    /// bound), not counted against `max_retries`.
    RateLimited,
    /// `503`, `408`, `504`, a timeout: the server is overloaded; the batch
    /// window shrinks.
    Overloaded,
    /// Anything else worth another try (`500`, `502`, a dropped connection).
    Failed,
}

/// The verdict on a reply with `status` and `headers`: the one table every
/// client of this crate follows.
pub(crate) fn verdict_for_status(status: StatusCode, headers: &HeaderMap) -> Verdict {
    let kind = match status.as_u16() {
        code if (200..300).contains(&code) => return Verdict::Success,
        401 | 403 => return Verdict::Rejected,
        code if !retryable_status(code) => return Verdict::Done,
        429 => RetryKind::RateLimited,
        408 | 503 | 504 => RetryKind::Overloaded,
        _ => RetryKind::Failed,
    };
    Verdict::Retry {
        retry_after: parse_retry_after(headers),
        kind,
    }
}

/// The verdict on a request that got no reply: worth another attempt, and
/// a sign of overload when it timed out.
pub(crate) fn verdict_for_failed_send(timed_out: bool) -> Verdict {
    Verdict::Retry {
        retry_after: None,
        kind: if timed_out {
            RetryKind::Overloaded
        } else {
            RetryKind::Failed
        },
    }
}

/// The verdict on a request reqwest could not complete, for clients that
/// see reqwest's own error (the bridges): like this crate's own client,
/// every failure to connect, send or read is worth another attempt (a
/// timeout a sign of overload), but a request that could not even be built.
#[cfg(any(feature = "async-openai", feature = "rig"))]
pub(crate) fn verdict_for_send_error(error: &reqwest::Error) -> Verdict {
    if error.is_builder() {
        Verdict::Done
    } else {
        verdict_for_failed_send(error.is_timeout())
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
    /// How long the call waited for the provider's rate limit, from its
    /// first `429` on.
    pub(crate) rate_limit_wait: Duration,
}

/// Tokens, rate control and retries: the part of a client every request
/// goes through. Cheap to clone (`Arc`s and a few numbers).
#[derive(Debug, Clone)]
pub(crate) struct Pipeline {
    /// `None`: no `Authorization` header (a model run with auth off).
    pub(crate) tokens: Option<Arc<dyn TokenSource>>,
    pub(crate) retry: RetryPolicy,
    pub(crate) throttle: Arc<Throttle>,
}

impl Pipeline {
    /// Sends a call's attempts through `send` until one succeeds or fails
    /// for good (as `judge` sees it), the retries run out, the provider's
    /// rate limit outlasts the patience bound, or a rejected token cannot be
    /// replaced. `what` names the call in log events; `request_id` goes out
    /// with every attempt; `tokens` is what the call is expected to cost
    /// against a tokens-per-minute limit. A token that cannot be had ends
    /// the call with `lift(error)`: the token source has retried in its own way.
    pub(crate) async fn run<T, E, F, Fut>(
        &self,
        what: &str,
        request_id: &str,
        tokens: u32,
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
        let mut sent = Sent {
            outcome: (),
            attempts: 0u32,
            rate_limit_wait: Duration::ZERO,
        };
        let mut first_rate_limit: Option<tokio::time::Instant> = None;
        let mut rate_limits_met = 0u32;
        let mut waited = Duration::ZERO;
        let mut refreshed = false;
        let mut token = match self.token().await {
            Ok(token) => token,
            Err(error) => return sent.with(Err(lift(error))),
        };
        let outcome = loop {
            waited += self.throttle.admit(tokens).await;
            if let Some(since) = first_rate_limit {
                sent.rate_limit_wait = since.elapsed();
            }
            let bearer = match token.as_ref().map(bearer).transpose() {
                Ok(bearer) => bearer,
                Err(error) => break Err(lift(error)),
            };
            sent.attempts += 1;
            let started = tokio::time::Instant::now();
            let outcome = send(Attempt {
                bearer,
                request_id: request_id.clone(),
            })
            .await;
            let verdict = judge(&outcome);
            match verdict {
                Verdict::Success => {
                    self.throttle.succeeded(started.elapsed());
                    break outcome;
                }
                Verdict::Done => {
                    break outcome;
                }
                Verdict::Rejected => {
                    let (Some(tokens), Some(rejected)) = (&self.tokens, &token) else {
                        break outcome;
                    };
                    if refreshed || !tokens.refreshes() {
                        break outcome;
                    }
                    refreshed = true;
                    tokens.invalidate_token(rejected);
                    let fresh = match tokens.token().await {
                        Ok(fresh) => fresh,
                        Err(error) => break Err(lift(error)),
                    };
                    if fresh.same_as(rejected) {
                        // The source has nothing newer: the rejection stands.
                        break outcome;
                    }
                    tracing::info!(
                        what,
                        request_id = request_id.to_str().unwrap_or_default(),
                        rejected_prefix = rejected.prefix(),
                        "the model API rejected the access token; trying once more with a new one"
                    );
                    token = Some(fresh);
                    continue;
                }
                Verdict::Retry {
                    retry_after,
                    kind: RetryKind::RateLimited,
                } => {
                    // Waited out up to the patience bound, the whole client
                    // pausing; the next attempt's admission does the waiting.
                    rate_limits_met += 1;
                    let since = *first_rate_limit.get_or_insert_with(tokio::time::Instant::now);
                    let patience = self.throttle.max_rate_limit_wait;
                    let left = patience.saturating_sub(since.elapsed());
                    sent.rate_limit_wait = since.elapsed();
                    if left.is_zero() || retry_after.is_some_and(|wait| wait > left) {
                        break outcome;
                    }
                    let pause = self.throttle.rate_limited(
                        retry_after,
                        self.retry.max_retry_after.min(left),
                        rate_limits_met,
                    );
                    tracing::info!(
                        target: "evolution_langchain::retry",
                        what,
                        attempt = sent.attempts,
                        pause_ms = pause.as_millis() as u64,
                        request_id = request_id.to_str().unwrap_or_default(),
                        "rate limited (429): pausing new sends, then trying again"
                    );
                }
                Verdict::Retry { retry_after, kind } => {
                    if kind == RetryKind::Overloaded {
                        self.throttle.congested();
                    }
                    let Some(step) = backoff.next() else {
                        break outcome;
                    };
                    let pause = self.retry.pause(retry_after, step);
                    tracing::warn!(
                        target: "evolution_langchain::retry",
                        what,
                        attempt = sent.attempts,
                        pause_ms = pause.as_millis() as u64,
                        request_id = request_id.to_str().unwrap_or_default(),
                        "request failed, retrying"
                    );
                    drop(outcome);
                    tokio::time::sleep(pause).await;
                }
            }
            // A token that expired while waiting is replaced.
            token = match self.token().await {
                Ok(token) => token,
                Err(error) => break Err(lift(error)),
            };
        };
        record_wait(waited);
        sent.with(outcome)
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

impl Sent<()> {
    fn with<T>(self, outcome: T) -> Sent<T> {
        Sent {
            outcome,
            attempts: self.attempts,
            rate_limit_wait: self.rate_limit_wait,
        }
    }
}

/// Records on the call's span how long it waited for the limiter or a
/// pause, when it did.
fn record_wait(waited: Duration) {
    if !waited.is_zero() {
        tracing::Span::current().record(
            crate::telemetry::RATE_LIMIT_WAIT_MS,
            waited.as_millis() as u64,
        );
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
            throttle: Arc::new(Throttle::unlimited()),
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
                0,
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
                    Ok((status, headers)) => verdict_for_status(*status, headers),
                    Err(_) => Verdict::Done,
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
    async fn a_429_is_waited_out_within_the_patience_not_the_retries() {
        // No retries at all, yet five 429s in a row are waited out.
        let p = pipeline(None, 0);
        let start = tokio::time::Instant::now();
        let script = [(429, Some("2")); 5];
        let mut with_answer = script.to_vec();
        with_answer.push((200, None));
        let (_, status, attempts) = replay(&p, &with_answer).await;
        assert_eq!((status, attempts), (200, 6));
        assert_eq!(start.elapsed().as_secs(), 10);
        assert_eq!(p.throttle.stats().rate_limited, 5);
        // Past the patience: the 429 is the outcome.
        let impatient = Pipeline {
            throttle: Arc::new(Throttle::new(
                Default::default(),
                super::super::shared::Buckets::local(),
                Duration::from_secs(5),
            )),
            ..pipeline(None, 2)
        };
        let start = tokio::time::Instant::now();
        let (_, status, attempts) = replay(&impatient, &[(429, Some("2"))]).await;
        assert_eq!(status, 429);
        assert_eq!(
            attempts, 3,
            "two waits of 2 s fit in 5 s; a third would not"
        );
        assert_eq!(start.elapsed().as_secs(), 4);
        // A Retry-After longer than the patience left is not waited for.
        let (_, status, attempts) = replay(&impatient, &[(429, Some("60"))]).await;
        assert_eq!((status, attempts), (429, 1));
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
