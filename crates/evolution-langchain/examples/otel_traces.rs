//! One chat call traced through OpenTelemetry: its GenAI span and the two
//! GenAI client metrics, printed by OpenTelemetry's stdout exporters.
//!
//! ```text
//! cargo run -p evolution-langchain --features otel --example otel_traces
//! ```
//!
//! Without `EVOLUTION_*` credentials it runs against an in-process emulator;
//! with them, against the configured service. Everything goes to stdout: the
//! span as it ends (named e.g. `chat emulator/echo-1`), the answer, then the
//! metrics `gen_ai.client.operation.duration` and `gen_ai.client.token.usage`
//! as the meter provider shuts down.

mod common;

use common::{Backend, BoxError};
use evolution_langchain::telemetry::otel;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

// The versions the bridge was built with.
use otel::opentelemetry;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let tracer_provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_reader(
            PeriodicReader::builder(opentelemetry_stdout::MetricExporter::default()).build(),
        )
        .build();
    tracing_subscriber::registry()
        .with(otel::layer(
            tracer_provider.tracer(otel::SCOPE_NAME),
            &meter_provider.meter(otel::SCOPE_NAME),
        ))
        .init();

    let backend = Backend::connect().await?;
    let llm = backend.llm()?;
    let answer = llm.invoke("What is the capital of France?").await;

    let outcome = match answer {
        Ok(answer) if answer.trim().is_empty() => Err("the model gave an empty answer".into()),
        Ok(answer) => {
            println!("answer: {answer}");
            Ok(())
        }
        Err(error) => Err(error.into()),
    };
    // Flush both exporters, whatever the outcome.
    tracer_provider.shutdown()?;
    meter_provider.shutdown()?;
    outcome
}
