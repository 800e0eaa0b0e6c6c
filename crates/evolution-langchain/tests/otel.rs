//! Feature `otel`: the GenAI spans exported through an OpenTelemetry tracer
//! and the two GenAI client metrics, read back from in-memory exporters
//! after calls against the emulator.
#![cfg(feature = "otel")]

mod common;

use std::collections::BTreeMap;

use evolution_emulator::{Fault, Target};
use evolution_langchain::chat::wire::ChatMessage;
use evolution_langchain::telemetry::otel::{self, opentelemetry};
use evolution_langchain::{ChatOptions, EvolutionEmbeddings};
use futures::StreamExt;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{SpanKind, Status, TracerProvider as _};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;

/// Tracer and meter providers writing to memory, and the subscriber guard
/// that routes this thread's spans to them.
struct Pipeline {
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

/// One metric point: its attributes as text, its count and sum.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    attributes: BTreeMap<String, String>,
    count: u64,
    sum: f64,
}

impl Pipeline {
    fn install() -> Self {
        let spans = InMemorySpanExporter::default();
        let metrics = InMemoryMetricExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(metrics.clone()).build())
            .build();
        let subscriber = tracing_subscriber::registry().with(otel::layer(
            tracer_provider.tracer(otel::SCOPE_NAME),
            &meter_provider.meter(otel::SCOPE_NAME),
        ));
        let _guard = tracing::subscriber::set_default(subscriber);
        Self {
            spans,
            metrics,
            tracer_provider,
            meter_provider,
            _guard,
        }
    }

    fn spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().unwrap();
        self.spans.get_finished_spans().unwrap()
    }

    /// The points of histogram `name`, as last exported.
    fn points(&self, name: &str) -> Vec<Point> {
        self.meter_provider.force_flush().unwrap();
        let exported = self.metrics.get_finished_metrics().unwrap();
        let Some(last) = exported.last() else {
            return Vec::new();
        };
        let mut points = Vec::new();
        for scope in last.scope_metrics() {
            assert_eq!(scope.scope().name(), otel::SCOPE_NAME);
            for metric in scope.metrics().filter(|m| m.name() == name) {
                match metric.data() {
                    AggregatedMetrics::F64(MetricData::Histogram(h)) => {
                        assert_eq!(metric.unit(), "s");
                        points.extend(h.data_points().map(|p| Point {
                            attributes: text_attributes(p.attributes()),
                            count: p.count(),
                            sum: p.sum(),
                        }));
                    }
                    AggregatedMetrics::U64(MetricData::Histogram(h)) => {
                        assert_eq!(metric.unit(), "{token}");
                        points.extend(h.data_points().map(|p| Point {
                            attributes: text_attributes(p.attributes()),
                            count: p.count(),
                            sum: p.sum() as f64,
                        }));
                    }
                    other => panic!("{name} is not a histogram: {other:?}"),
                }
            }
        }
        points.sort_by(|a, b| a.attributes.cmp(&b.attributes));
        points
    }
}

fn text_attributes<'a>(
    attributes: impl Iterator<Item = &'a opentelemetry::KeyValue>,
) -> BTreeMap<String, String> {
    attributes
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn span_attributes(span: &SpanData) -> BTreeMap<String, String> {
    text_attributes(span.attributes.iter())
}

#[tokio::test]
async fn a_chat_is_one_client_span_and_one_point_per_metric() {
    let pipeline = Pipeline::install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    let reply = llm
        .chat(
            [ChatMessage::user("zebra quokka marmalade")],
            ChatOptions::new(),
        )
        .await
        .unwrap();
    let model = emu.default_model();

    let spans = pipeline.spans();
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, format!("chat {model}"));
    assert_eq!(span.span_kind, SpanKind::Client);
    assert_eq!(span.status, Status::Unset);
    assert_eq!(span.instrumentation_scope.name(), otel::SCOPE_NAME);
    let attributes = span_attributes(span);
    let port = emu.addr().port().to_string();
    for (key, value) in [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.provider.name", "cloud.ru"),
        ("gen_ai.request.model", model),
        ("gen_ai.response.model", reply.model.as_deref().unwrap()),
        ("gen_ai.response.id", reply.id.as_deref().unwrap()),
        ("gen_ai.usage.input_tokens", "3"),
        ("gen_ai.usage.output_tokens", "3"),
        ("server.address", "127.0.0.1"),
        ("server.port", port.as_str()),
    ] {
        assert_eq!(
            attributes.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    // Only GenAI and server attributes: none of tracing-opentelemetry's extras.
    for key in attributes.keys() {
        assert!(
            key.starts_with("gen_ai.") || key.starts_with("server."),
            "{key}"
        );
    }
    assert!(!format!("{span:?}").contains("quokka"));

    let common_attributes = |extra: &[(&str, &str)]| {
        let mut map: BTreeMap<String, String> = [
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "cloud.ru"),
            ("gen_ai.request.model", model),
            ("gen_ai.response.model", model),
            ("server.address", "127.0.0.1"),
            ("server.port", port.as_str()),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        map.retain(|_, v| !v.is_empty());
        map
    };
    let durations = pipeline.points(otel::OPERATION_DURATION);
    assert_eq!(durations.len(), 1, "{durations:#?}");
    assert_eq!(durations[0].attributes, common_attributes(&[]));
    assert_eq!(durations[0].count, 1);
    assert!(durations[0].sum > 0.0 && durations[0].sum < 30.0);

    let tokens = pipeline.points(otel::TOKEN_USAGE);
    assert_eq!(
        tokens,
        vec![
            Point {
                attributes: common_attributes(&[("gen_ai.token.type", "input")]),
                count: 1,
                sum: 3.0,
            },
            Point {
                attributes: common_attributes(&[("gen_ai.token.type", "output")]),
                count: 1,
                sum: 3.0,
            },
        ]
    );
}

#[tokio::test]
async fn a_failed_call_is_an_error_span_and_a_duration_with_its_error_type() {
    let pipeline = Pipeline::install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    emu.inject(Target::Chat, Fault::Status(400), 1);
    llm.invoke("hello").await.unwrap_err();

    let spans = pipeline.spans();
    assert_eq!(spans.len(), 1);
    assert!(
        matches!(spans[0].status, Status::Error { .. }),
        "{:?}",
        spans[0].status
    );
    assert_eq!(
        span_attributes(&spans[0])
            .get("error.type")
            .map(String::as_str),
        Some("http_400")
    );
    let durations = pipeline.points(otel::OPERATION_DURATION);
    assert_eq!(durations.len(), 1);
    assert_eq!(
        durations[0]
            .attributes
            .get("error.type")
            .map(String::as_str),
        Some("http_400")
    );
    // No usage came back: no token points.
    assert!(pipeline.points(otel::TOKEN_USAGE).is_empty());
}

#[tokio::test]
async fn a_retry_is_an_event_of_the_exported_span() {
    let pipeline = Pipeline::install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    emu.inject(Target::Chat, Fault::Status(503), 1);
    llm.invoke("hello").await.unwrap();
    let spans = pipeline.spans();
    assert_eq!(spans.len(), 1);
    let retries: Vec<_> = spans[0]
        .events
        .iter()
        .filter(|e| {
            e.attributes.iter().any(|kv| {
                kv.key.as_str() == "target" && kv.value.as_str() == "evolution_langchain::retry"
            })
        })
        .collect();
    assert_eq!(retries.len(), 1, "{:#?}", spans[0].events);
    assert_eq!(retries[0].name, "request failed, retrying");
}

#[tokio::test]
async fn a_stream_is_measured_to_its_end() {
    let pipeline = Pipeline::install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    let mut stream = llm
        .stream_chat([ChatMessage::user("one two three")], ChatOptions::new())
        .await
        .unwrap();
    while let Some(chunk) = stream.next().await {
        chunk.unwrap();
        // Not exported while chunks are still coming.
        if pipeline.spans().is_empty() {
            continue;
        }
        panic!("the span ended before the stream did");
    }
    // Ended with the stream, though the stream is still held.
    let spans = pipeline.spans();
    assert_eq!(spans.len(), 1);
    assert!(span_attributes(&spans[0]).contains_key("gen_ai.response.time_to_first_chunk"));
    assert_eq!(pipeline.points(otel::OPERATION_DURATION).len(), 1);
    let tokens = pipeline.points(otel::TOKEN_USAGE);
    assert_eq!(tokens.len(), 2, "{tokens:#?}");
    drop(stream);
}

#[tokio::test]
async fn embeddings_report_their_input_tokens() {
    let pipeline = Pipeline::install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    let embeddings = EvolutionEmbeddings::from_inference(&llm, "emulator/embed-1");
    embeddings.embed_many(&["a b c", "d"]).await.unwrap();
    let spans = pipeline.spans();
    assert_eq!(spans[0].name, "embeddings emulator/embed-1");
    let tokens = pipeline.points(otel::TOKEN_USAGE);
    assert_eq!(tokens.len(), 1, "{tokens:#?}");
    assert_eq!(tokens[0].sum, 4.0);
    assert_eq!(
        tokens[0]
            .attributes
            .get("gen_ai.token.type")
            .map(String::as_str),
        Some("input")
    );
    assert_eq!(
        tokens[0]
            .attributes
            .get("gen_ai.operation.name")
            .map(String::as_str),
        Some("embeddings")
    );
}
