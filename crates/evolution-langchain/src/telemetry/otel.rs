//! The GenAI spans into OpenTelemetry, and the two GenAI client metrics
//! (feature `otel`: tracing-opentelemetry 0.34, opentelemetry 0.33, both
//! re-exported here so a program can name the same versions).
//!
//! - [`span_layer`]: a `tracing-opentelemetry` layer for your tracer that
//!   exports this crate's spans (and the retry and token-refresh events
//!   inside them) and nothing else. A program that already has such a layer
//!   for all its spans needs none: it exports ours too.
//! - [`metrics_layer`] ([`GenAiMetrics`]): records, when each call's span
//!   ends, the histograms [`OPERATION_DURATION`]
//!   (`gen_ai.client.operation.duration`, seconds) and [`TOKEN_USAGE`]
//!   (`gen_ai.client.token.usage`, one point per token type), with the
//!   conventions' attributes and bucket boundaries.
//! - [`layer()`](layer()) does both.
//!
//! ```no_run
//! use evolution_langchain::telemetry::otel::{self, opentelemetry};
//! use opentelemetry::metrics::MeterProvider as _;
//! use opentelemetry::trace::TracerProvider as _;
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//!
//! # fn wire(
//! #     tracer_provider: &opentelemetry_sdk::trace::SdkTracerProvider,
//! #     meter_provider: &opentelemetry_sdk::metrics::SdkMeterProvider,
//! # ) {
//! // Your OpenTelemetry SDK providers, with the exporters you use.
//! let tracer = tracer_provider.tracer(otel::SCOPE_NAME);
//! let meter = meter_provider.meter(otel::SCOPE_NAME);
//! tracing_subscriber::registry()
//!     .with(otel::layer(tracer, &meter))
//!     .init();
//! # }
//! ```
//!
//! Each metric point has `gen_ai.operation.name`, `gen_ai.provider.name`,
//! `server.address`, `server.port`, and when known `gen_ai.request.model`,
//! `gen_ai.response.model` and (for a failed call) `error.type`; token
//! points add `gen_ai.token.type` (`input` or `output`) and are recorded
//! only when the server reported usage. A stream's duration runs to its
//! end (or its error, or its being dropped), not to its first chunk.

use std::time::Instant;

pub use opentelemetry;
pub use tracing_opentelemetry;

use opentelemetry::metrics::{Histogram, Meter};
use opentelemetry::KeyValue;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use super::{
    ERROR_TYPE, OPERATION_NAME, PROVIDER_NAME_ATTR, REQUEST_MODEL, RESPONSE_MODEL, SERVER_ADDRESS,
    SERVER_PORT, SPAN_NAME, TARGET, USAGE_INPUT_TOKENS, USAGE_OUTPUT_TOKENS,
};

/// The instrumentation scope to name tracers and meters after.
pub const SCOPE_NAME: &str = "evolution-langchain";
/// The duration histogram: `gen_ai.client.operation.duration` (seconds).
pub const OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// The token histogram: `gen_ai.client.token.usage` (`{token}`).
pub const TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// The attribute telling input from output tokens: `gen_ai.token.type`.
pub const TOKEN_TYPE: &str = "gen_ai.token.type";
/// The conventions' bucket boundaries for [`OPERATION_DURATION`], seconds.
pub const DURATION_BOUNDARIES: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// The conventions' bucket boundaries for [`TOKEN_USAGE`].
pub const TOKEN_BOUNDARIES: [f64; 14] = [
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// What both layers look at: this crate's spans and the events in them, at
/// `INFO` and above.
fn crate_targets() -> Targets {
    Targets::new().with_target("evolution_langchain", Level::INFO)
}

/// A `tracing-opentelemetry` layer exporting this crate's GenAI spans (and
/// the retry and refresh events inside them) through `tracer`, and nothing
/// else of the program's.
///
/// The spans carry the GenAI attributes only: `tracing-opentelemetry`'s
/// own extras (code location, thread, target, busy/idle times) are off.
/// Build a layer with [`tracing_opentelemetry::layer`] for those.
pub fn span_layer<S, T>(tracer: T) -> Filtered<OpenTelemetryLayer<S, T>, Targets, S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(crate_targets())
}

/// [`GenAiMetrics`] for `meter`, looking only at this crate's spans.
pub fn metrics_layer<S>(meter: &Meter) -> Filtered<GenAiMetrics, Targets, S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    GenAiMetrics::new(meter).with_filter(crate_targets())
}

/// [`span_layer`] and [`metrics_layer`] together.
pub fn layer<S, T>(tracer: T, meter: &Meter) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
    T: opentelemetry::trace::Tracer + 'static,
    T::Span: Send + Sync,
{
    span_layer(tracer).and_then(metrics_layer(meter))
}

/// A `tracing` layer recording the two GenAI client metrics from the calls'
/// spans when they end.
///
/// Use it through [`metrics_layer`], which filters it to this crate's
/// targets; unfiltered in a stack, it would make every callsite of the
/// program interesting to the subscriber.
#[derive(Debug, Clone)]
pub struct GenAiMetrics {
    duration: Histogram<f64>,
    tokens: Histogram<u64>,
}

impl GenAiMetrics {
    /// Creates the two histograms on `meter`.
    pub fn new(meter: &Meter) -> Self {
        let duration = meter
            .f64_histogram(OPERATION_DURATION)
            .with_unit("s")
            .with_description("GenAI operation duration")
            .with_boundaries(DURATION_BOUNDARIES.to_vec())
            .build();
        let tokens = meter
            .u64_histogram(TOKEN_USAGE)
            .with_unit("{token}")
            .with_description("Number of input and output tokens used")
            .with_boundaries(TOKEN_BOUNDARIES.to_vec())
            .build();
        Self { duration, tokens }
    }
}

/// What a call's span has said so far.
#[derive(Debug, Default)]
struct Call {
    operation: Option<String>,
    provider: Option<String>,
    request_model: Option<String>,
    response_model: Option<String>,
    server_address: Option<String>,
    server_port: Option<i64>,
    error_type: Option<String>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// A call's fields and when its span began.
struct Timed {
    started: Instant,
    call: Call,
}

impl Visit for Call {
    fn record_str(&mut self, field: &Field, value: &str) {
        let slot = match field.name() {
            OPERATION_NAME => &mut self.operation,
            PROVIDER_NAME_ATTR => &mut self.provider,
            REQUEST_MODEL => &mut self.request_model,
            RESPONSE_MODEL => &mut self.response_model,
            SERVER_ADDRESS => &mut self.server_address,
            ERROR_TYPE => &mut self.error_type,
            _ => return,
        };
        *slot = Some(value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match field.name() {
            SERVER_PORT => self.server_port = Some(value),
            USAGE_INPUT_TOKENS => self.input_tokens = u64::try_from(value).ok(),
            USAGE_OUTPUT_TOKENS => self.output_tokens = u64::try_from(value).ok(),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            SERVER_PORT => self.server_port = i64::try_from(value).ok(),
            USAGE_INPUT_TOKENS => self.input_tokens = Some(value),
            USAGE_OUTPUT_TOKENS => self.output_tokens = Some(value),
            _ => {}
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {
        // Debug-formatted fields (stop sequences, finish reasons) are not
        // metric attributes.
    }
}

impl Call {
    /// The attributes every point of this call carries.
    fn attributes(&self) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(8);
        let strings = [
            (OPERATION_NAME, &self.operation),
            (PROVIDER_NAME_ATTR, &self.provider),
            (REQUEST_MODEL, &self.request_model),
            (RESPONSE_MODEL, &self.response_model),
            (SERVER_ADDRESS, &self.server_address),
            (ERROR_TYPE, &self.error_type),
        ];
        for (key, value) in strings {
            // An empty request model means "the endpoint's own": not known.
            if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                attributes.push(KeyValue::new(key, value.to_string()));
            }
        }
        if let Some(port) = self.server_port {
            attributes.push(KeyValue::new(SERVER_PORT, port));
        }
        attributes
    }
}

fn is_call_span(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.target() == TARGET && metadata.name() == SPAN_NAME && metadata.is_span()
}

impl<S> Layer<S> for GenAiMetrics
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !is_call_span(attrs.metadata()) {
            return;
        }
        let Some(span) = ctx.span(id) else { return };
        let mut call = Call::default();
        attrs.record(&mut call);
        span.extensions_mut().insert(Timed {
            started: Instant::now(),
            call,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(timed) = extensions.get_mut::<Timed>() {
            values.record(&mut timed.call);
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(timed) = span.extensions_mut().remove::<Timed>() else {
            return;
        };
        let call = &timed.call;
        let attributes = call.attributes();
        self.duration
            .record(timed.started.elapsed().as_secs_f64(), &attributes);
        for (kind, count) in [("input", call.input_tokens), ("output", call.output_tokens)] {
            if let Some(count) = count {
                let mut with_type = attributes.clone();
                with_type.push(KeyValue::new(TOKEN_TYPE, kind));
                self.tokens.record(count, &with_type);
            }
        }
    }
}
