//! Rate control: how fast one client (its clones, and every client made
//! from it, which share its transport) sends, so that the provider's limits
//! are used to the full without requests being sent into `429`s.
//!
//! Three mechanisms, all in one [`Throttle`] the pipeline consults around
//! every attempt:
//!
//! - **A limiter** for requests and tokens per minute (when configured):
//!   GCRA, the "generic cell rate algorithm" (one timestamp per limit, the
//!   time the bucket would be empty; a cost moves it forward by
//!   `cost × 60 s / limit`), with a burst of half a second of the rate. Each
//!   attempt waits until both limits can pay for it. A request's tokens are
//!   estimated before it is sent (its text and `max_tokens`, as providers
//!   charge at admission) and corrected upward when the usage the server
//!   reports is more. The state is local, or shared by a fleet through Redis
//!   (feature `redis`, [`shared`](super::shared)).
//! - **A pause**: a `429` with `Retry-After` stops new sends of the whole
//!   client until it passes, instead of every call in flight retrying on its
//!   own timer.
//! - **An adaptive window** for batches: the configured concurrency is the
//!   ceiling. As TCP does: a batch starts with two calls in flight and each
//!   success adds one (the window doubles every round trip: "slow start")
//!   until the first sign of overload, so a batch does not open with a
//!   burst the provider refuses; from then on a `429`, `503` or timeout
//!   halves the window and each success grows it by `1 / window` (one more
//!   call per window of successes): AIMD. It needs no model of the server,
//!   reacts at once to overload and probes back up slowly. The halving
//!   happens at most once per round trip (the smoothed latency), so a burst
//!   of `429`s from calls sent together counts as one signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Default patience for `429`s: how long one call may spend waiting out the
/// provider's rate limit before it fails with [`Error::RateLimited`](crate::Error::RateLimited).
pub const DEFAULT_MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(300);

/// The burst a limit allows: this much of its sustained rate may be sent
/// at once. Short, because providers enforce their per-minute limits over
/// short windows (a second, not a minute); and under a second, so that a
/// server whose bucket holds one second keeps some of it in reserve for the
/// jitter between when we send and when it counts.
pub(crate) const BURST: Duration = Duration::from_millis(500);

/// A pause after a call's first `429` that named no `Retry-After`, before
/// jitter; it doubles with each further one of the same call, up to
/// [`LONGEST_DEFAULT_PAUSE`].
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);

/// The longest pause a `429` without `Retry-After` brings (before jitter).
const LONGEST_DEFAULT_PAUSE: Duration = Duration::from_secs(32);

/// The window a batch starts with (its concurrency, when lower).
const INITIAL_WINDOW: f64 = 2.0;

/// The configured limits, each `None` when unset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    pub(crate) requests_per_minute: Option<u32>,
    pub(crate) tokens_per_minute: Option<u32>,
}

impl Limits {
    pub(crate) fn is_set(&self) -> bool {
        self.requests_per_minute.is_some() || self.tokens_per_minute.is_some()
    }
}

/// GCRA state of the two limits: for each, the theoretical arrival time,
/// the instant its bucket would be empty again.
#[derive(Debug, Default)]
pub(crate) struct Gcra {
    requests: Option<Instant>,
    tokens: Option<Instant>,
}

/// How long `units` of a `per_minute` limit take to drip back.
fn emission(per_minute: u32, units: f64) -> Duration {
    Duration::from_secs_f64(60.0 * units / f64::from(per_minute.max(1)))
}

/// For one limit: the new arrival time if `cost` is paid at `now`, or the
/// wait until it can be.
fn gcra_step(
    tat: Option<Instant>,
    per_minute: u32,
    cost: f64,
    now: Instant,
) -> Result<Instant, Duration> {
    let increment = emission(per_minute, cost);
    let new_tat = tat.map_or(now, |tat| tat.max(now)) + increment;
    // One second of the rate, or the cost itself when that is more (a large
    // request waits until the bucket is empty, then goes alone).
    let tolerance = BURST.max(emission(per_minute, 1.0)).max(increment);
    let ahead = new_tat.saturating_duration_since(now);
    if ahead <= tolerance {
        Ok(new_tat)
    } else {
        Err(ahead - tolerance)
    }
}

impl Gcra {
    /// Pays one request and `tokens` at `now`; or returns how long to wait
    /// before trying again (nothing is paid then).
    pub(crate) fn take(
        &mut self,
        limits: Limits,
        tokens: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let requests = limits
            .requests_per_minute
            .map(|rpm| gcra_step(self.requests, rpm, 1.0, now))
            .transpose();
        let tokens = limits
            .tokens_per_minute
            .map(|tpm| gcra_step(self.tokens, tpm, f64::from(tokens), now))
            .transpose();
        match (requests, tokens) {
            (Ok(requests), Ok(tokens)) => {
                if requests.is_some() {
                    self.requests = requests;
                }
                if tokens.is_some() {
                    self.tokens = tokens;
                }
                Ok(())
            }
            (Err(a), Err(b)) => Err(a.max(b)),
            (Err(wait), _) | (_, Err(wait)) => Err(wait),
        }
    }

    /// Charges the tokens limit `extra` more tokens: a call cost more than
    /// its estimate.
    pub(crate) fn charge(&mut self, limits: Limits, extra: u32, now: Instant) {
        if let Some(tpm) = limits.tokens_per_minute {
            let tat = self.tokens.map_or(now, |tat| tat.max(now));
            self.tokens = Some(tat + emission(tpm, f64::from(extra)));
        }
    }
}

/// What a client's rate control has seen ([`EvolutionInference::throttle_stats`](crate::EvolutionInference::throttle_stats)), for progress displays and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ThrottleStats {
    /// The adaptive window now: how many batch calls may be in flight (the
    /// batch's concurrency until a sign of overload).
    pub window: usize,
    /// Batch calls in flight now.
    pub in_flight: usize,
    /// Time calls spent waiting for the limiter or a `Retry-After` pause,
    /// summed over calls.
    pub waited: Duration,
    /// `429` answers met.
    pub rate_limited: u64,
}

/// The state behind the window and the pause.
#[derive(Debug)]
struct State {
    /// No new send before this.
    paused_until: Option<Instant>,
    /// The adaptive window (fractional: it grows by `1 / window`).
    window: f64,
    /// The largest ceiling asked for so far (a batch's concurrency).
    ceiling: usize,
    /// Until the first sign of overload, each success adds a whole call.
    slow_start: bool,
    in_flight: usize,
    last_decrease: Option<Instant>,
    /// Smoothed time from send to answer: how long a decrease takes to show.
    latency: Duration,
}

/// Rate control of one client: limiter, pause and adaptive window.
#[derive(Debug)]
pub(crate) struct Throttle {
    limits: Limits,
    buckets: super::shared::Buckets,
    pub(crate) max_rate_limit_wait: Duration,
    state: Mutex<State>,
    changed: Notify,
    waited_micros: AtomicU64,
    rate_limited: AtomicU64,
    /// Whether a pause may be in force: calls look at the state only then
    /// (the common path takes no lock).
    pausing: AtomicBool,
    /// Whether a batch window is in use: successes update it only then.
    windowed: AtomicBool,
}

impl Throttle {
    /// A throttle with `limits` (none set: only the pause and the window),
    /// keeping its limiter state in `buckets`.
    pub(crate) fn new(
        limits: Limits,
        buckets: super::shared::Buckets,
        max_rate_limit_wait: Duration,
    ) -> Self {
        Self {
            limits,
            buckets,
            max_rate_limit_wait,
            state: Mutex::new(State {
                paused_until: None,
                window: 0.0,
                ceiling: 0,
                slow_start: true,
                in_flight: 0,
                last_decrease: None,
                latency: Duration::from_millis(100),
            }),
            changed: Notify::new(),
            waited_micros: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            pausing: AtomicBool::new(false),
            windowed: AtomicBool::new(false),
        }
    }

    /// No limits, the default patience, local state: what the bridges use.
    #[cfg(any(test, feature = "async-openai", feature = "rig"))]
    pub(crate) fn unlimited() -> Self {
        Self::new(
            Limits::default(),
            super::shared::Buckets::local(),
            DEFAULT_MAX_RATE_LIMIT_WAIT,
        )
    }

    /// Whether a tokens-per-minute limit is set (else calls need not
    /// estimate their tokens).
    pub(crate) fn counts_tokens(&self) -> bool {
        self.limits.tokens_per_minute.is_some()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until an attempt costing one request and `tokens` may be sent:
    /// past any pause, and within the limits. Returns how long it waited.
    pub(crate) async fn admit(&self, tokens: u32) -> Duration {
        if !self.pausing.load(Ordering::Acquire) && !self.limits.is_set() {
            return Duration::ZERO;
        }
        let started = Instant::now();
        loop {
            if self.pausing.load(Ordering::Acquire) {
                let paused = {
                    let mut state = self.state();
                    let until = state.paused_until.filter(|&until| until > Instant::now());
                    if until.is_none() {
                        state.paused_until = None;
                        self.pausing.store(false, Ordering::Release);
                    }
                    until
                };
                if let Some(until) = paused {
                    tokio::time::sleep_until(until).await;
                    continue;
                }
            }
            if !self.limits.is_set() {
                break;
            }
            match self.buckets.take(self.limits, tokens).await {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        let waited = started.elapsed();
        if !waited.is_zero() {
            self.waited_micros
                .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
        }
        waited
    }

    /// The provider answered `429`, the `nth` of one call (from 1): pause
    /// new sends until `retry_after` passes (when it named none, a jittered
    /// pause that doubles with each `429` of the call), at most `cap`, and
    /// shrink the window. Returns the pause.
    pub(crate) fn rate_limited(
        &self,
        retry_after: Option<Duration>,
        cap: Duration,
        nth: u32,
    ) -> Duration {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
        let pause = match retry_after {
            Some(wait) => wait,
            None => DEFAULT_PAUSE
                .saturating_mul(1 << nth.clamp(1, 6).saturating_sub(1))
                .min(LONGEST_DEFAULT_PAUSE)
                .mul_f64(0.5 + fastrand::f64()),
        }
        .min(cap);
        let until = Instant::now() + pause;
        {
            let mut state = self.state();
            state.paused_until = Some(state.paused_until.map_or(until, |p| p.max(until)));
            self.pausing.store(true, Ordering::Release);
        }
        self.congested();
        pause
    }

    /// A sign of overload (`429`, `503`, a timeout): halve the window, at
    /// most once per round trip.
    pub(crate) fn congested(&self) {
        let now = Instant::now();
        let mut state = self.state();
        let recent = state
            .last_decrease
            .is_some_and(|at| now.saturating_duration_since(at) < state.latency);
        if state.ceiling > 0 && !recent {
            state.window = (state.window / 2.0).max(1.0);
            state.slow_start = false;
            state.last_decrease = Some(now);
            tracing::debug!(window = state.window, "overload: the batch window shrinks");
        }
    }

    /// A call answered in `latency`: grow the window by `1 / window`.
    pub(crate) fn succeeded(&self, latency: Duration) {
        if !self.windowed.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state();
        state.latency = (state.latency * 7 + latency) / 8;
        if state.ceiling > 0 && state.window < state.ceiling as f64 {
            let step = if state.slow_start {
                1.0
            } else {
                1.0 / state.window.max(1.0)
            };
            state.window = (state.window + step).min(state.ceiling as f64);
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// Corrects the tokens limit once a call's real cost is known: a call
    /// that cost more than estimated is charged the rest. One that cost
    /// less is not refunded, as providers charge a request its estimate
    /// (prompt and `max_tokens`) when they admit it.
    pub(crate) async fn settle(&self, estimated: u32, actual: u32) {
        if self.limits.tokens_per_minute.is_some() && actual > estimated {
            self.buckets.charge(self.limits, actual - estimated).await;
        }
    }

    /// A place in the batch window of a batch whose concurrency is
    /// `ceiling`: waits until fewer calls than the window are in flight.
    pub(crate) async fn permit(self: &Arc<Self>, ceiling: usize) -> BatchPermit {
        let ceiling = ceiling.max(1);
        self.windowed.store(true, Ordering::Relaxed);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if state.ceiling == 0 {
                    // The first batch: slow start.
                    state.window = INITIAL_WINDOW.min(ceiling as f64);
                }
                state.ceiling = state.ceiling.max(ceiling);
                let allowed = (state.window.floor() as usize).clamp(1, ceiling);
                if state.in_flight < allowed {
                    state.in_flight += 1;
                    return BatchPermit {
                        throttle: Arc::clone(self),
                    };
                }
            }
            notified.await;
        }
    }

    /// What the throttle has seen so far.
    pub(crate) fn stats(&self) -> ThrottleStats {
        let state = self.state();
        ThrottleStats {
            window: (state.window.floor() as usize).clamp(1, state.ceiling.max(1)),
            in_flight: state.in_flight,
            waited: Duration::from_micros(self.waited_micros.load(Ordering::Relaxed)),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

/// A call's place in the adaptive batch window
/// ([`EvolutionInference::batch_permit`](crate::EvolutionInference::batch_permit)),
/// given back when dropped.
#[derive(Debug)]
#[must_use = "the place is given back as soon as the permit is dropped"]
pub struct BatchPermit {
    throttle: Arc<Throttle>,
}

impl Drop for BatchPermit {
    fn drop(&mut self) {
        self.throttle.state().in_flight -= 1;
        self.throttle.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: Option<u32>, tpm: Option<u32>) -> Limits {
        Limits {
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn gcra_allows_half_a_second_of_burst_then_the_rate() {
        let mut gcra = Gcra::default();
        let now = Instant::now();
        let rpm = limits(Some(600), None);
        for _ in 0..5 {
            assert_eq!(gcra.take(rpm, 0, now), Ok(()));
        }
        assert_eq!(gcra.take(rpm, 0, now), Err(Duration::from_millis(100)));
        assert_eq!(gcra.take(rpm, 0, now + Duration::from_millis(100)), Ok(()));
        // Over a minute, the limit plus the burst is paid, no more.
        let mut paid = 6;
        let mut t = now;
        while t < now + Duration::from_secs(60) {
            if gcra.take(rpm, 0, t).is_ok() {
                paid += 1;
            }
            t += Duration::from_millis(10);
        }
        assert!((600..=606).contains(&paid), "{paid}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_take_pays_nothing_and_both_limits_must_pass() {
        let mut gcra = Gcra::default();
        let now = Instant::now();
        let both = limits(Some(60), Some(600));
        // 600 tokens per minute: half a second holds 5; a call of 10 is
        // more, so it goes alone into an empty bucket.
        assert_eq!(gcra.take(both, 10, now), Ok(()));
        // The request limit (1/s) refuses the next; the tokens are not paid.
        let wait = gcra.take(both, 5, now).unwrap_err();
        assert_eq!(wait, Duration::ZERO.max(wait));
        assert!(gcra.take(both, 5, now + Duration::from_secs(1)).is_ok());
        // A call larger than a second's worth waits for an empty bucket, then goes.
        let mut big = Gcra::default();
        let tokens = limits(None, Some(600));
        assert_eq!(big.take(tokens, 100, now), Ok(()));
        assert!(big.take(tokens, 100, now).is_err());
        assert_eq!(big.take(tokens, 100, now + Duration::from_secs(10)), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cost_more_is_charged_the_rest() {
        let mut gcra = Gcra::default();
        let now = Instant::now();
        let tokens = limits(None, Some(60));
        assert_eq!(gcra.take(tokens, 1, now), Ok(()));
        // One token a second, a burst of one: the next waits a second...
        assert_eq!(gcra.take(tokens, 1, now), Err(Duration::from_secs(1)));
        // ...and five more once the call turned out to cost six.
        gcra.charge(tokens, 5, now);
        assert_eq!(gcra.take(tokens, 1, now), Err(Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_without_retry_after_pauses_longer_each_time_within_the_cap() {
        let throttle = Throttle::unlimited();
        let minute = Duration::from_secs(60);
        let secs = |nth| throttle.rate_limited(None, minute, nth).as_secs_f64();
        for _ in 0..50 {
            let (first, third, tenth) = (secs(1), secs(3), secs(10));
            assert!((0.5..=1.5).contains(&first), "{first}");
            assert!((2.0..=6.0).contains(&third), "{third}");
            assert!((16.0..=48.0).contains(&tenth), "{tenth}");
        }
        assert_eq!(
            throttle.rate_limited(None, Duration::from_millis(300), 10),
            Duration::from_millis(300),
            "never past the call's patience"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_send_until_it_passes() {
        let throttle = Throttle::unlimited();
        assert_eq!(throttle.admit(0).await, Duration::ZERO);
        let pause = throttle.rate_limited(Some(Duration::from_secs(3)), Duration::from_secs(60), 1);
        assert_eq!(pause, Duration::from_secs(3));
        let started = Instant::now();
        let (a, b) = tokio::join!(throttle.admit(0), throttle.admit(0));
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!((a, b), (Duration::from_secs(3), Duration::from_secs(3)));
        let stats = throttle.stats();
        assert_eq!(stats.rate_limited, 1);
        assert_eq!(stats.waited, Duration::from_secs(6));
        // A Retry-After past the cap pauses for the cap.
        assert_eq!(
            throttle.rate_limited(Some(Duration::from_secs(900)), Duration::from_secs(60), 1),
            Duration::from_secs(60)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_starts_small_halves_on_overload_once_per_round_trip_and_grows_back() {
        let throttle = Arc::new(Throttle::unlimited());
        // Slow start: two at first, one more per success, up to the ceiling.
        let (a, b) = (throttle.permit(8).await, throttle.permit(8).await);
        let third = tokio::time::timeout(Duration::from_millis(10), throttle.permit(8)).await;
        assert!(third.is_err());
        drop((a, b));
        for _ in 0..6 {
            throttle.succeeded(Duration::from_millis(100));
        }
        assert_eq!(throttle.stats().window, 8);
        let permits: Vec<_> = futures::future::join_all((0..8).map(|_| throttle.permit(8))).await;
        assert_eq!(throttle.stats().in_flight, 8);
        throttle.congested();
        throttle.congested(); // the same round trip: one signal
        assert_eq!(throttle.stats().window, 4);
        drop(permits);
        tokio::time::advance(Duration::from_secs(1)).await;
        throttle.congested();
        assert_eq!(throttle.stats().window, 2);
        // Two at a time now: a third waits.
        let (a, b) = (throttle.permit(8).await, throttle.permit(8).await);
        let third = tokio::time::timeout(Duration::from_millis(10), throttle.permit(8)).await;
        assert!(third.is_err());
        // Successes grow it by 1/window each: 2 → 2.5 → 2.9 → 3.24.
        throttle.succeeded(Duration::from_millis(100));
        throttle.succeeded(Duration::from_millis(100));
        assert_eq!(throttle.stats().window, 2);
        throttle.succeeded(Duration::from_millis(100));
        assert_eq!(throttle.stats().window, 3);
        let c = tokio::time::timeout(Duration::from_millis(10), throttle.permit(8))
            .await
            .expect("room for a third");
        drop((a, b, c));
        // Never below one, never above the ceiling.
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(1)).await;
            throttle.congested();
        }
        assert_eq!(throttle.stats().window, 1);
        for _ in 0..1000 {
            throttle.succeeded(Duration::from_millis(100));
        }
        assert_eq!(throttle.stats().window, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn the_limiter_paces_admissions() {
        let throttle = Throttle::new(
            limits(Some(600), None),
            super::super::shared::Buckets::local(),
            DEFAULT_MAX_RATE_LIMIT_WAIT,
        );
        let started = Instant::now();
        for _ in 0..30 {
            throttle.admit(0).await;
        }
        // Five at once, then one every 100 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(2500));
    }
}
