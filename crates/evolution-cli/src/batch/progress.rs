//! Batch progress on stderr: a live bar with rate and ETA on a terminal,
//! a plain status line every few seconds otherwise (a CI log or a file
//! would fill up with a bar's redraws). The batch loop decides when the
//! plain line is due (`--progress-interval-ms`, hidden; 5 s by default).

use std::time::{Duration, Instant};

use evolution_langchain::ThrottleStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Counts finished prompts and shows them.
pub struct Progress {
    bar: Option<ProgressBar>,
    plain: bool,
    total: u64,
    done: u64,
    failed: u64,
    started: Instant,
}

impl Progress {
    /// A bar when `terminal`, plain lines otherwise; nothing at all when
    /// `quiet`.
    pub fn new(total: usize, terminal: bool, quiet: bool) -> Self {
        let total = total as u64;
        let bar = (terminal && !quiet).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {rate} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            // indicatif's own `per_sec` prints four decimals.
            .with_key(
                "rate",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}/s", state.per_sec());
                },
            );
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            plain: !terminal && !quiet,
            total,
            done: 0,
            failed: 0,
            started: Instant::now(),
        }
    }

    /// Whether the plain status line is in use (no terminal, not quiet).
    pub fn wants_plain_lines(&self) -> bool {
        self.plain
    }

    /// One prompt finished; `throttle` is the client's rate control now.
    pub fn record(&mut self, ok: bool, throttle: ThrottleStats) {
        self.done += 1;
        if !ok {
            self.failed += 1;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let mut message = limit_status(throttle);
            if self.failed > 0 {
                message = format!("{} failed {message}", self.failed);
            }
            bar.set_message(message);
        }
    }

    /// Prints the plain status line.
    pub fn print_plain(&self, throttle: ThrottleStats) {
        eprintln!("batch: {} {}", self.status(), limit_status(throttle));
    }

    /// `120/200 done, 3 failed, 24.1/s, ETA 3s`.
    fn status(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            self.done as f64 / elapsed
        } else {
            0.0
        };
        let left = self.total.saturating_sub(self.done);
        let eta = if rate > 0.0 {
            format!("{:.0}s", left as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{}/{} done, {} failed, {rate:.1}/s, ETA {eta}",
            self.done, self.total, self.failed
        )
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Prompts finished so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Prompts that failed so far.
    pub fn failed(&self) -> u64 {
        self.failed
    }

    /// Time since the start.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `window 8, 12.5s waiting for the limit, 3 × 429`: the window always,
/// the rest once there is something to say.
fn limit_status(throttle: ThrottleStats) -> String {
    let mut text = format!("window {}", throttle.window);
    if !throttle.waited.is_zero() {
        text.push_str(&format!(
            ", {:.1}s waiting for the limit",
            throttle.waited.as_secs_f64()
        ));
    }
    if throttle.rate_limited > 0 {
        text.push_str(&format!(", {} × 429", throttle.rate_limited));
    }
    text
}
