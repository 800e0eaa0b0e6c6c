//! GenAI spans: what a subscriber sees of chat, stream, embeddings and
//! rerank calls against the emulator, and that no content or secret is in
//! any field.

mod common;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use evolution_emulator::{EmulatorHandle, Fault, Target};
use evolution_langchain::chat::wire::ChatMessage;
use evolution_langchain::telemetry::{self, TARGET};
use evolution_langchain::{ChatOptions, EvolutionEmbeddings, EvolutionRerank};
use futures::StreamExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A prompt whose words are easy to look for in the captured fields.
const PROMPT: &str = "zebra quokka marmalade";

/// One span as the subscriber saw it.
#[derive(Debug, Default, Clone)]
struct Captured {
    id: u64,
    target: String,
    name: String,
    fields: BTreeMap<String, String>,
    /// Targets and messages of the events inside it.
    events: Vec<(String, String)>,
    /// Whether the span has ended.
    closed: bool,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut span = Captured {
            id: id.into_u64(),
            target: attrs.metadata().target().to_string(),
            name: attrs.metadata().name().to_string(),
            ..Captured::default()
        };
        attrs.record(&mut Fields(&mut span.fields));
        self.0.lock().unwrap().push(span);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some(span) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            span.closed = true;
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        // The nearest gen_ai span around the event, if any.
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        let Some(span) = scope.into_iter().find(|s| s.metadata().target() == TARGET) else {
            return;
        };
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or_default();
        let mut spans = self.0.lock().unwrap();
        if let Some(captured) = spans
            .iter_mut()
            .rev()
            .find(|s| s.id == span.id().into_u64())
        {
            captured
                .events
                .push((event.metadata().target().to_string(), message));
        }
    }
}

impl Capture {
    /// A subscriber that captures into `self`, set as the default until
    /// the guard drops (this thread only: tests run on a current-thread
    /// runtime).
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    /// The gen_ai spans captured so far.
    fn spans(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.target == TARGET)
            .cloned()
            .collect()
    }

    /// The one gen_ai span, checked to be the only one.
    fn one(&self) -> Captured {
        let spans = self.spans();
        assert_eq!(spans.len(), 1, "{spans:#?}");
        spans.into_iter().next().unwrap()
    }
}

impl Captured {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

/// No prompt word, secret or bearer token in any field or event of `spans`.
async fn assert_no_secrets(emu: &EmulatorHandle, spans: &[Captured], token: Option<String>) {
    let mut forbidden: Vec<String> = PROMPT.split(' ').map(str::to_string).collect();
    forbidden.push(emu.secret().to_string());
    forbidden.extend(token);
    for span in spans {
        let text = format!("{:?} {:?}", span.fields, span.events);
        for word in &forbidden {
            assert!(!text.contains(word.as_str()), "{word:?} in {text}");
        }
    }
}

#[tokio::test]
async fn one_chat_is_one_span_with_the_genai_attributes() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::client(&emu)
        .temperature(0.5)
        .max_tokens(64)
        .seed(7)
        .stop(["\n\n"])
        .build()
        .unwrap();
    let response = llm
        .chat([ChatMessage::user(PROMPT)], ChatOptions::new().top_p(0.9))
        .await
        .unwrap();
    let usage = response.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (3, 3));

    let span = capture.one();
    assert_eq!(span.name, telemetry::SPAN_NAME);
    let model = emu.default_model();
    let expect = [
        ("otel.name", format!("chat {model}")),
        ("otel.kind", "client".into()),
        ("gen_ai.operation.name", "chat".into()),
        ("gen_ai.provider.name", "cloud.ru".into()),
        ("gen_ai.request.model", model.into()),
        ("gen_ai.request.max_tokens", "64".into()),
        ("gen_ai.request.temperature", "0.5".into()),
        ("gen_ai.request.top_p", format!("{:?}", f64::from(0.9f32))),
        ("gen_ai.request.frequency_penalty", "0.0".into()),
        ("gen_ai.request.presence_penalty", "0.0".into()),
        ("gen_ai.request.stop_sequences", "[\"\\n\\n\"]".into()),
        ("gen_ai.request.seed", "7".into()),
        ("gen_ai.response.finish_reasons", "[\"stop\"]".into()),
        ("gen_ai.usage.input_tokens", "3".into()),
        ("gen_ai.usage.output_tokens", "3".into()),
        ("server.address", "127.0.0.1".into()),
        ("server.port", emu.addr().port().to_string()),
    ];
    for (name, value) in &expect {
        assert_eq!(span.get(name), Some(value.as_str()), "{name} in {span:#?}");
    }
    assert_eq!(span.get("gen_ai.response.id"), response.id.as_deref());
    assert_eq!(span.get("gen_ai.response.model"), response.model.as_deref());
    // n is 1 (the client default): not recorded. Nothing failed.
    for absent in [
        "gen_ai.request.choice.count",
        "error.type",
        "otel.status_code",
    ] {
        assert_eq!(span.get(absent), None, "{absent}");
    }
    // Every field the span has is a documented one.
    for name in span.fields.keys() {
        assert!(telemetry::FIELDS.contains(&name.as_str()), "{name}");
    }
    let token = llm
        .token_manager()
        .unwrap()
        .get_token()
        .await
        .unwrap()
        .expose_secret()
        .to_string();
    assert_no_secrets(&emu, &[span], Some(token)).await;
}

#[tokio::test]
async fn a_failed_call_records_its_error_type() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    emu.inject(Target::Chat, Fault::Status(400), 1);
    llm.invoke(PROMPT).await.unwrap_err();
    let span = capture.one();
    assert_eq!(span.get("error.type"), Some("http_400"), "{span:#?}");
    assert_eq!(span.get("otel.status_code"), Some("error"));
    assert_eq!(span.get("gen_ai.usage.input_tokens"), None);
    assert_no_secrets(&emu, &[span], None).await;
}

#[tokio::test]
async fn a_retry_and_a_token_refresh_are_events_of_the_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    llm.invoke("warm up").await.unwrap();
    emu.revoke_tokens();
    emu.inject(Target::Chat, Fault::Status(503), 1);
    llm.invoke(PROMPT).await.unwrap();
    let spans = capture.spans();
    assert_eq!(spans.len(), 2);
    let events = &spans[1].events;
    assert!(
        events
            .iter()
            .any(|(target, _)| target == "evolution_langchain::retry"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|(_, message)| message.contains("rejected the access token")),
        "{events:#?}"
    );
    assert_eq!(spans[1].get("error.type"), None);
    assert_no_secrets(&emu, &spans, None).await;
}

#[tokio::test]
async fn a_stream_records_its_first_chunk_time_and_usage() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    let mut stream = llm
        .stream_chat([ChatMessage::user(PROMPT)], ChatOptions::new().n(2))
        .await
        .unwrap();
    let mut id = None;
    while let Some(chunk) = stream.next().await {
        assert!(!capture.one().closed, "the span ended before the stream");
        let chunk = chunk.unwrap();
        id = id.or(chunk.id);
    }
    // The call is over when the stream ends, not when it is dropped.
    assert!(capture.one().closed, "the span outlived its stream");
    drop(stream);
    let span = capture.one();
    let first: f64 = span
        .get("gen_ai.response.time_to_first_chunk")
        .expect("first-chunk time")
        .parse()
        .unwrap();
    assert!(first > 0.0 && first < 30.0, "{first}");
    assert_eq!(span.get("gen_ai.request.choice.count"), Some("2"));
    assert_eq!(span.get("gen_ai.usage.input_tokens"), Some("3"));
    assert!(span.get("gen_ai.usage.output_tokens").is_some());
    assert_eq!(
        span.get("gen_ai.response.finish_reasons"),
        Some("[\"stop\", \"stop\"]")
    );
    assert_eq!(span.get("gen_ai.response.id"), id.as_deref());
    assert_eq!(span.get("error.type"), None);
    assert_no_secrets(&emu, &[span], None).await;
}

#[tokio::test]
async fn chat_streamed_under_the_hood_is_one_span() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::client(&emu).streaming(true).build().unwrap();
    llm.invoke(PROMPT).await.unwrap();
    let span = capture.one();
    assert!(span.get("gen_ai.response.time_to_first_chunk").is_some());
    assert_eq!(span.get("gen_ai.usage.output_tokens"), Some("3"));
    assert_eq!(
        span.get("gen_ai.response.finish_reasons"),
        Some("[\"stop\"]")
    );
}

#[tokio::test]
async fn embeddings_and_rerank_have_their_spans() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let llm = common::llm(&emu);
    let embeddings = EvolutionEmbeddings::from_inference(&llm, "emulator/embed-1");
    embeddings.embed_many(&[PROMPT, "second"]).await.unwrap();
    // Two inputs, four words: the emulator's usage, summed on the span.
    assert_eq!(
        capture.spans()[0].get("gen_ai.usage.input_tokens"),
        Some("4")
    );
    let reranker = EvolutionRerank::from_inference(&llm, "emulator/rerank-1");
    let reply = reranker.rerank("zebra", &[PROMPT, "other"]).await.unwrap();
    let spans = capture.spans();
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(
        spans[0].get("otel.name"),
        Some("embeddings emulator/embed-1")
    );
    assert_eq!(spans[0].get("gen_ai.operation.name"), Some("embeddings"));
    assert_eq!(spans[1].get("otel.name"), Some("rerank emulator/rerank-1"));
    assert_eq!(spans[1].get("gen_ai.operation.name"), Some("rerank"));
    if let Some(usage) = reply.usage {
        let input = usage.prompt_tokens.to_string();
        assert_eq!(
            spans[1].get("gen_ai.usage.input_tokens"),
            Some(input.as_str())
        );
    }
    for span in &spans {
        assert_eq!(span.get("server.address"), Some("127.0.0.1"));
        assert_eq!(span.get("error.type"), None);
    }
    // The rerank query word "zebra" is content too: not in any field.
    assert_no_secrets(&emu, &spans, None).await;
}

/// The JSON text of a content field, parsed.
fn json_field(span: &Captured, name: &str) -> serde_json::Value {
    let text = span
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {span:#?}"));
    serde_json::from_str(text).unwrap()
}

#[tokio::test]
async fn content_is_recorded_only_when_asked_for() {
    let capture = Capture::default();
    let _guard = capture.install();
    let emu = common::emulator().await;
    let messages = [ChatMessage::system("be brief"), ChatMessage::user(PROMPT)];

    // Off by default: no content fields (and no prompt words, checked above).
    common::llm(&emu)
        .chat(&messages, ChatOptions::new())
        .await
        .unwrap();
    let spans = capture.spans();
    assert_eq!(spans[0].get("gen_ai.input.messages"), None);
    assert_eq!(spans[0].get("gen_ai.output.messages"), None);

    let llm = common::client(&emu).record_content(true).build().unwrap();
    let reply = llm.chat(&messages, ChatOptions::new()).await.unwrap();
    let span = &capture.spans()[1];
    assert_eq!(
        json_field(span, "gen_ai.input.messages"),
        serde_json::json!([
            {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
            {"role": "user", "parts": [{"type": "text", "content": PROMPT}]},
        ])
    );
    assert_eq!(
        json_field(span, "gen_ai.output.messages"),
        serde_json::json!([{
            "role": "assistant",
            "parts": [{"type": "text", "content": reply.answer().unwrap()}],
            "finish_reason": "stop",
        }])
    );

    // A stream records its whole answer when it ends.
    let mut stream = llm
        .stream_chat(&messages, ChatOptions::new())
        .await
        .unwrap();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(chunk.unwrap().content().unwrap_or_default());
    }
    let span = &capture.spans()[2];
    assert!(span.closed);
    let output = json_field(span, "gen_ai.output.messages");
    assert_eq!(output[0]["parts"][0]["content"], text.as_str(), "{output}");
    assert_eq!(output[0]["finish_reason"], "stop");
    assert!(!text.is_empty());
}
