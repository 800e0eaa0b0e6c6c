//! Per-key rate limits like the service's: requests per minute and tokens per minute,
//! each a token bucket that refills continuously at limit/60 per second and holds
//! `burst` seconds of that (by default 60: the whole per-minute limit). A fresh key can
//! burst up to what its bucket holds, then is held to the sustained rate. A refused
//! request takes nothing from either bucket.
//!
//! A request costing more tokens than its bucket holds (a short burst), but no more than
//! the per-minute limit, is let in once the bucket is full and leaves it in debt: the
//! level goes below zero and refills at the sustained rate, so such requests are held to
//! that rate as GCRA holds them. Only a request costing more than the whole per-minute
//! limit can never fit.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One bucket: how much it holds now, as of `updated`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    updated: Instant,
}

/// Slack for float rounding: a bucket that is short by less than this has enough.
const EPSILON: f64 = 1e-9;

/// The shape of one limit's bucket: the per-minute limit and how much it holds.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// The per-minute limit.
    limit: u32,
    /// Most the bucket holds: `burst` seconds of the sustained rate, at least 1.
    capacity: f64,
}

impl Shape {
    fn new(limit: u32, burst: Duration) -> Self {
        Shape {
            limit,
            capacity: (f64::from(limit) * burst.as_secs_f64() / 60.0).max(1.0),
        }
    }

    /// Units per second.
    fn rate(self) -> f64 {
        f64::from(self.limit) / 60.0
    }
}

impl Bucket {
    fn full(shape: Shape, now: Instant) -> Self {
        Bucket {
            level: shape.capacity,
            updated: now,
        }
    }

    /// Adds what has dripped in since `updated` (limit/60 per second), up to the capacity.
    fn refill(&mut self, shape: Shape, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.level = (self.level + elapsed * shape.rate()).min(shape.capacity);
        self.updated = self.updated.max(now);
    }

    /// How long until the bucket holds `amount`, or is full when `amount` is more than
    /// it can hold (zero when it already does).
    fn wait_for(&self, shape: Shape, amount: f64) -> Duration {
        let amount = amount.min(shape.capacity);
        let missing = amount - self.level;
        if missing <= EPSILON || shape.limit == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(missing / shape.rate())
    }

    /// What the bucket reports: its limit, what is left (whole units) and how long until
    /// it is full again.
    fn snapshot(&self, shape: Shape) -> Snapshot {
        Snapshot {
            limit: shape.limit,
            remaining: (self.level + EPSILON).floor().max(0.0) as u64,
            reset: self.wait_for(shape, shape.capacity),
        }
    }
}

/// One bucket's state as the `x-ratelimit-*` headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The per-minute limit (= the bucket's capacity).
    pub limit: u32,
    /// Whole units left in the bucket.
    pub remaining: u64,
    /// How long until the bucket is full again.
    pub reset: Duration,
}

/// Both buckets of one key, each present only when its limit is set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RateStatus {
    pub requests: Option<Snapshot>,
    pub tokens: Option<Snapshot>,
}

/// Which limit refused a request: OpenAI's error `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Requests,
    Tokens,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Requests => "requests per minute (RPM)",
            Kind::Tokens => "tokens per minute (TPM)",
        }
    }
}

/// The limiter's decision on one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Paid for; the buckets after payment.
    Allowed(RateStatus),
    /// Not now: the `kind` bucket holds `used` of its limit spent and cannot pay
    /// `requested` before `retry_after`.
    Limited {
        kind: Kind,
        retry_after: Duration,
        used: u64,
        requested: u64,
        status: RateStatus,
    },
    /// Never: the request costs more tokens than the whole per-minute limit.
    TooLarge { requested: u64, status: RateStatus },
}

#[derive(Debug, Clone, Copy)]
struct KeyBuckets {
    requests: Bucket,
    tokens: Bucket,
}

/// The buckets of every key, under one lock (each check is a few float operations).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    requests: Shape,
    tokens: Shape,
    buckets: Mutex<HashMap<String, KeyBuckets>>,
}

impl RateLimiter {
    /// A limiter with these per-minute limits (0 means no limit of that kind), whose
    /// buckets hold the whole limit.
    #[cfg(test)]
    pub fn new(requests_per_minute: u32, tokens_per_minute: u32) -> Self {
        Self::with_burst(
            requests_per_minute,
            tokens_per_minute,
            Duration::from_secs(60),
        )
    }

    /// A limiter whose buckets hold `burst` of the sustained rate (at least one unit).
    pub fn with_burst(requests_per_minute: u32, tokens_per_minute: u32, burst: Duration) -> Self {
        RateLimiter {
            requests: Shape::new(requests_per_minute, burst),
            tokens: Shape::new(tokens_per_minute, burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any limit is set.
    pub fn enabled(&self) -> bool {
        self.requests.limit > 0 || self.tokens.limit > 0
    }

    /// The requests-per-minute limit (0: none).
    pub fn requests_per_minute(&self) -> u32 {
        self.requests.limit
    }

    /// The tokens-per-minute limit (0: none).
    pub fn tokens_per_minute(&self) -> u32 {
        self.tokens.limit
    }

    fn status(&self, buckets: &KeyBuckets) -> RateStatus {
        RateStatus {
            requests: (self.requests.limit > 0).then(|| buckets.requests.snapshot(self.requests)),
            tokens: (self.tokens.limit > 0).then(|| buckets.tokens.snapshot(self.tokens)),
        }
    }

    /// Charges `key` one request and `cost` tokens at `now`, or says why not; a refused
    /// request is charged nothing.
    pub fn check(&self, key: &str, cost: u64, now: Instant) -> Verdict {
        let (rpm, tpm) = (self.requests, self.tokens);
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let buckets = all.entry(key.to_owned()).or_insert_with(|| KeyBuckets {
            requests: Bucket::full(rpm, now),
            tokens: Bucket::full(tpm, now),
        });
        buckets.requests.refill(rpm, now);
        buckets.tokens.refill(tpm, now);

        // Only the whole per-minute limit bounds a request: one that costs more than the
        // bucket holds waits for a full bucket and leaves it in debt (see the module docs).
        if tpm.limit > 0 && cost > u64::from(tpm.limit) {
            return Verdict::TooLarge {
                requested: cost,
                status: self.status(buckets),
            };
        }
        let mut short: Option<(Kind, Duration, u64, u64)> = None;
        let used = |bucket: &Bucket, shape: Shape| {
            (shape.capacity - bucket.level - EPSILON).ceil().max(0.0) as u64
        };
        if rpm.limit > 0 {
            let wait = buckets.requests.wait_for(rpm, 1.0);
            if !wait.is_zero() {
                short = Some((Kind::Requests, wait, used(&buckets.requests, rpm), 1));
            }
        }
        if tpm.limit > 0 {
            let wait = buckets.tokens.wait_for(tpm, cost as f64);
            if !wait.is_zero() && short.is_none_or(|(_, w, _, _)| wait > w) {
                short = Some((Kind::Tokens, wait, used(&buckets.tokens, tpm), cost));
            }
        }
        if let Some((kind, retry_after, used, requested)) = short {
            return Verdict::Limited {
                kind,
                retry_after,
                used,
                requested,
                status: self.status(buckets),
            };
        }
        if rpm.limit > 0 {
            buckets.requests.level -= 1.0;
        }
        if tpm.limit > 0 {
            buckets.tokens.level -= cost as f64;
        }
        Verdict::Allowed(self.status(buckets))
    }

    /// Every key's buckets as of `now`, by key label, for the admin route.
    pub fn snapshot(&self, now: Instant) -> BTreeMap<String, RateStatus> {
        let mut all = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        all.iter_mut()
            .map(|(key, buckets)| {
                buckets.requests.refill(self.requests, now);
                buckets.tokens.refill(self.tokens, now);
                (key.clone(), self.status(buckets))
            })
            .collect()
    }

    /// Forgets every key: all buckets are full again.
    pub fn reset(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

/// Whole seconds, rounded up, at least 1: a `Retry-After` value.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it (Go's format, to the
/// millisecond, rounded up): `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3s`.
pub(crate) fn reset_text(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, sec_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let seconds = if sec_ms % 1000 == 0 {
        (sec_ms / 1000).to_string()
    } else {
        let text = format!("{}.{:03}", sec_ms / 1000, sec_ms % 1000);
        text.trim_end_matches('0').to_owned()
    };
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

/// The `x-ratelimit-*` headers for a status: the `-requests` family when a
/// requests-per-minute limit is set, the `-tokens` family when a tokens-per-minute one is.
pub(crate) fn headers(status: &RateStatus) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (family, snapshot) in [("requests", status.requests), ("tokens", status.tokens)] {
        let Some(s) = snapshot else { continue };
        let mut put = |name: &str, value: String| {
            if let (Ok(name), Ok(value)) = (
                HeaderName::try_from(format!("x-ratelimit-{name}-{family}")),
                HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        };
        put("limit", s.limit.to_string());
        put("remaining", s.remaining.to_string());
        put("reset", reset_text(s.reset));
    }
    headers
}

fn error_body(message: String, kind: Kind) -> Value {
    json!({"error": {
        "message": message,
        "type": kind.as_str(),
        "code": "rate_limit_exceeded",
        "param": null,
    }})
}

/// The `429` for a refused request, or `None` when it was allowed.
pub(crate) fn refusal(verdict: &Verdict) -> Option<Response> {
    let (body, retry_after, status) = match verdict {
        Verdict::Allowed(_) => return None,
        Verdict::Limited {
            kind,
            retry_after,
            used,
            requested,
            status,
        } => {
            let secs = retry_after_secs(*retry_after);
            let limit = match kind {
                Kind::Requests => status.requests.map_or(0, |s| s.limit),
                Kind::Tokens => status.tokens.map_or(0, |s| s.limit),
            };
            let message = format!(
                "Rate limit reached for {} on this key: Limit {limit}, Used {used}, \
                 Requested {requested}. Please try again in {secs}s.",
                kind.label()
            );
            (error_body(message, *kind), Some(secs), status)
        }
        Verdict::TooLarge { requested, status } => {
            let limit = status.tokens.map_or(0, |s| s.limit);
            let message = format!(
                "Request too large for {} on this key: Limit {limit}, Requested {requested}. \
                 It can never fit: reduce the input or max_tokens.",
                Kind::Tokens.label()
            );
            (error_body(message, Kind::Tokens), None, status)
        }
    };
    let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    let h = response.headers_mut();
    h.extend(headers(status));
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Some(response)
}

/// Rough tokens for a text: characters / 4, rounded up (OpenAI's rule of thumb).
pub(crate) fn text_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn bursts_to_the_limit_then_refills_at_the_sustained_rate() {
        let limiter = RateLimiter::new(60, 0);
        let t0 = Instant::now();
        for i in 0..60 {
            match limiter.check("k", 0, t0) {
                Verdict::Allowed(s) => assert_eq!(s.requests.unwrap().remaining, 59 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        let Verdict::Limited {
            kind,
            retry_after,
            used,
            ..
        } = limiter.check("k", 0, at(t0, 250))
        else {
            panic!("the 61st request fits");
        };
        assert_eq!(kind, Kind::Requests);
        assert_eq!(used, 60);
        // One request per second: 0.75 s still to wait, announced as 1 s.
        assert!(
            (retry_after.as_secs_f64() - 0.75).abs() < 1e-6,
            "{retry_after:?}"
        );
        assert_eq!(retry_after_secs(retry_after), 1);
        // A refused request costs nothing, so a second later exactly one more fits.
        assert!(matches!(
            limiter.check("k", 0, at(t0, 1000)),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            limiter.check("k", 0, at(t0, 1000)),
            Verdict::Limited { .. }
        ));
        // Other keys have their own buckets.
        assert!(matches!(limiter.check("other", 0, t0), Verdict::Allowed(_)));
        limiter.reset();
        assert!(matches!(
            limiter.check("k", 0, at(t0, 1000)),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn tokens_limit_costs_and_too_large_requests() {
        let limiter = RateLimiter::new(0, 600);
        let t0 = Instant::now();
        let Verdict::Allowed(status) = limiter.check("k", 500, t0) else {
            panic!("500 of 600 fits");
        };
        assert_eq!(status.requests, None);
        let tokens = status.tokens.unwrap();
        assert_eq!((tokens.limit, tokens.remaining), (600, 100));
        // 500 tokens back at 10 per second: 50 s until full.
        assert_eq!(tokens.reset, Duration::from_secs(50));
        let Verdict::Limited {
            kind,
            retry_after,
            requested,
            used,
            ..
        } = limiter.check("k", 200, t0)
        else {
            panic!("200 more fit");
        };
        assert_eq!((kind, requested, used), (Kind::Tokens, 200, 500));
        assert_eq!(retry_after, Duration::from_secs(10));
        assert!(matches!(
            limiter.check("k", 601, t0),
            Verdict::TooLarge { requested: 601, .. }
        ));
        assert!(matches!(
            limiter.check("k", 200, at(t0, 10_000)),
            Verdict::Allowed(_)
        ));
    }

    #[test]
    fn a_request_larger_than_a_short_burst_waits_for_a_full_bucket_and_leaves_debt() {
        // 60,000 a minute, a bucket of one second's worth: 1,000 tokens.
        let limiter = RateLimiter::with_burst(0, 60_000, Duration::from_secs(1));
        let t0 = Instant::now();
        let Verdict::Allowed(status) = limiter.check("k", 1_100, t0) else {
            panic!("1,100 tokens fit a full bucket of 1,000 under a limit of 60,000");
        };
        let tokens = status.tokens.unwrap();
        assert_eq!((tokens.limit, tokens.remaining), (60_000, 0));
        // 100 tokens of debt plus the whole bucket back at 1,000 a second.
        assert_eq!(tokens.reset, Duration::from_millis(1_100));
        // In debt, even the smallest request waits until the debt is paid.
        let Verdict::Limited {
            kind,
            retry_after,
            used,
            requested,
            ..
        } = limiter.check("k", 1, t0)
        else {
            panic!("the bucket is in debt");
        };
        assert_eq!((kind, used, requested), (Kind::Tokens, 1_100, 1));
        assert!(
            (retry_after.as_secs_f64() - 0.101).abs() < 1e-6,
            "{retry_after:?}"
        );
        // Another large one waits for a full bucket again: 1.1 s.
        let Verdict::Limited { retry_after, .. } = limiter.check("k", 1_100, at(t0, 500)) else {
            panic!("the bucket is not full yet");
        };
        assert!(
            (retry_after.as_secs_f64() - 0.6).abs() < 1e-6,
            "{retry_after:?}"
        );
        assert!(matches!(
            limiter.check("k", 1_100, at(t0, 1_100)),
            Verdict::Allowed(_)
        ));
        // The whole limit fits a full bucket; one token more never does.
        limiter.reset();
        assert!(matches!(
            limiter.check("k", 60_000, t0),
            Verdict::Allowed(_)
        ));
        assert!(matches!(
            limiter.check("k", 60_001, at(t0, 120_000)),
            Verdict::TooLarge {
                requested: 60_001,
                ..
            }
        ));
    }

    #[test]
    fn the_longer_wait_names_the_limit() {
        let limiter = RateLimiter::new(60, 60);
        let t0 = Instant::now();
        assert!(matches!(limiter.check("k", 60, t0), Verdict::Allowed(_)));
        let Verdict::Limited {
            kind, retry_after, ..
        } = limiter.check("k", 30, t0)
        else {
            panic!("no tokens left");
        };
        assert_eq!((kind, retry_after), (Kind::Tokens, Duration::from_secs(30)));
    }

    #[test]
    fn a_short_burst_holds_that_much_of_the_rate() {
        let limiter = RateLimiter::with_burst(600, 0, Duration::from_secs(1));
        let start = Instant::now();
        for _ in 0..10 {
            assert!(matches!(limiter.check("k", 0, start), Verdict::Allowed(_)));
        }
        let Verdict::Limited { retry_after, .. } = limiter.check("k", 0, start) else {
            panic!("the eleventh request at once is refused");
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        assert!(matches!(
            limiter.check("k", 0, at(start, 100)),
            Verdict::Allowed(_)
        ));
        // Never less than one unit, however short the burst.
        let tiny = RateLimiter::with_burst(6, 0, Duration::from_millis(1));
        assert!(matches!(tiny.check("k", 0, start), Verdict::Allowed(_)));
    }

    #[test]
    fn reset_texts_read_like_openai_headers() {
        assert_eq!(reset_text(Duration::ZERO), "0s");
        assert_eq!(reset_text(Duration::from_micros(19_200)), "20ms");
        assert_eq!(reset_text(Duration::from_secs(1)), "1s");
        assert_eq!(reset_text(Duration::from_millis(1500)), "1.5s");
        assert_eq!(reset_text(Duration::from_millis(1_250)), "1.25s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn text_tokens_round_up() {
        assert_eq!(text_tokens(0), 0);
        assert_eq!(text_tokens(1), 1);
        assert_eq!(text_tokens(8), 2);
        assert_eq!(text_tokens(9), 3);
    }
}
