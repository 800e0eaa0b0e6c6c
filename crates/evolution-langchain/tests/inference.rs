//! EvolutionInference and EvolutionEmbeddings against the emulator over real
//! loopback HTTP: parameters on the wire, token recovery, retries, batches,
//! streaming, tools and embeddings.

use std::time::{Duration, Instant};

use evolution_emulator::{Emulator, Fault, Target};
use evolution_langchain::{
    AuthError, ChatMessage, ChatOptions, Error, EvolutionEmbeddings, EvolutionInference,
    EvolutionInferenceBuilder, ResponseFormat, Tool, ToolChoice,
};
use futures::StreamExt;
use serde_json::json;

mod common;
use common::{client, emulator, last_body};

#[tokio::test]
async fn defaults_reach_the_wire_and_nulls_are_omitted() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    assert_eq!(llm.invoke("hello there").await.unwrap(), "hello there");
    let body = last_body(&emu);
    assert_eq!(body["model"], "emulator/echo-1");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": "hello there"}])
    );
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["temperature"], 1.0);
    assert_eq!(body["top_p"], 1.0);
    assert_eq!(body["frequency_penalty"], 0.0);
    assert_eq!(body["presence_penalty"], 0.0);
    assert_eq!(body["stream"], false);
    assert_eq!(body["n"], 1);
    for absent in [
        "stop",
        "seed",
        "tools",
        "tool_choice",
        "response_format",
        "stream_options",
    ] {
        assert!(
            body.get(absent).is_none(),
            "{absent} sent as {:?}",
            body.get(absent)
        );
    }
    assert_eq!(emu.last_request().unwrap().project_id, None);
}

#[tokio::test]
async fn every_parameter_reaches_the_wire() {
    let emu = emulator().await;
    let llm = client(&emu)
        .model("custom/model")
        .max_tokens(77)
        .temperature(0.25)
        .top_p(0.5)
        .frequency_penalty(0.75)
        .presence_penalty(-1.5)
        .stop(["STOP", "END"])
        .n(2)
        .seed(42)
        .reasoning_effort("high")
        .parallel_tool_calls(false)
        .response_format(ResponseFormat::JsonObject)
        .tool_choice(ToolChoice::None)
        .project_id("project-123")
        .default_header("x-extra", "yes")
        .build()
        .unwrap();
    let response = llm
        .chat(
            &[ChatMessage::system("be brief"), ChatMessage::user("a b c")],
            &ChatOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(response.choices.len(), 2, "n = 2 gives two choices");
    let request = emu.last_request().unwrap();
    assert_eq!(request.project_id.as_deref(), Some("project-123"));
    let body = request.body;
    assert_eq!(body["model"], "custom/model");
    assert_eq!(body["max_tokens"], 77);
    assert_eq!(body["temperature"], 0.25);
    assert_eq!(body["top_p"], 0.5);
    assert_eq!(body["frequency_penalty"], 0.75);
    assert_eq!(body["presence_penalty"], -1.5);
    assert_eq!(body["stop"], json!(["STOP", "END"]));
    assert_eq!(body["n"], 2);
    assert_eq!(body["seed"], 42);
    assert_eq!(body["reasoning_effort"], "high");
    assert_eq!(body["parallel_tool_calls"], false);
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
    assert_eq!(body["tool_choice"], "none");
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    // Per-call options override the client's; the rest stay.
    llm.chat(
        &[ChatMessage::user("x")],
        &ChatOptions::new()
            .temperature(0.0)
            .stop(["\n"])
            .max_tokens(3)
            .reasoning_effort(evolution_langchain::ReasoningEffort::Low)
            .n(1),
    )
    .await
    .unwrap();
    let body = last_body(&emu);
    assert_eq!(
        (body["temperature"].as_f64(), body["max_tokens"].as_u64()),
        (Some(0.0), Some(3))
    );
    assert_eq!(body["stop"], json!(["\n"]));
    assert_eq!(body["reasoning_effort"], "low");
    assert_eq!(body["seed"], 42);
    assert_eq!(body["parallel_tool_calls"], false);

    // The whole set at once through `.options(..)`.
    let llm = client(&emu)
        .options(
            ChatOptions::new()
                .seed(7)
                .temperature(0.5)
                .parallel_tool_calls(true),
        )
        .build()
        .unwrap();
    llm.invoke("y").await.unwrap();
    let body = last_body(&emu);
    assert_eq!(
        (body["seed"].as_u64(), body["temperature"].as_f64()),
        (Some(7), Some(0.5))
    );
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(
        body["max_tokens"], 512,
        "defaults the options leave unset stay"
    );
}

#[tokio::test]
async fn invalid_settings_are_config_errors_naming_the_field() {
    let emu = emulator().await;
    let cases: Vec<(&str, EvolutionInferenceBuilder)> = vec![
        (
            "key_id",
            EvolutionInference::builder()
                .secret("s")
                .base_url(emu.base_url()),
        ),
        (
            "secret",
            EvolutionInference::builder()
                .key_id("k")
                .base_url(emu.base_url()),
        ),
        ("base_url", client(&emu).base_url("ftp://host/v1")),
        ("base_url", client(&emu).base_url("not a url")),
        ("auth_url", client(&emu).auth_url("iam.example")),
        ("temperature", client(&emu).temperature(2.5)),
        ("temperature", client(&emu).temperature(-0.1)),
        ("top_p", client(&emu).top_p(1.5)),
        ("frequency_penalty", client(&emu).frequency_penalty(2.1)),
        ("presence_penalty", client(&emu).presence_penalty(-2.1)),
        ("max_tokens", client(&emu).max_tokens(0)),
        ("n", client(&emu).n(0)),
        ("reasoning_effort", client(&emu).reasoning_effort("")),
        ("max_concurrency", client(&emu).max_concurrency(0)),
        (
            "request_timeout",
            client(&emu).request_timeout(Duration::ZERO),
        ),
        ("project_id", client(&emu).project_id("bad\nvalue")),
    ];
    for (field, builder) in cases {
        let err = builder.build().expect_err(field);
        assert!(
            matches!(&err, Error::Config { field: f, .. } if f == field),
            "expected a config error for {field}, got {err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
    // Out-of-range per-call options are the caller's mistake, caught
    // before sending: an invalid request, not a configuration error.
    let llm = client(&emu).build().unwrap();
    let err = llm
        .chat(&[ChatMessage::user("x")], &ChatOptions::new().top_p(7.0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "top_p"),
        "{err}"
    );
    let err = llm
        .stream_chat(&[ChatMessage::user("x")], &ChatOptions::new().n(0))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRequest { ref field, .. } if field == "n"),
        "{err}"
    );
    let err = llm.chat(&[], &ChatOptions::default()).await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { ref field, .. } if field == "messages"));
    assert!(!err.is_retryable());
    // Changed on a clone after build: caught by the next call the same way.
    let mut changed = llm.clone();
    changed.options_mut().temperature = Some(9.0);
    let err = changed.invoke("x").await.unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { ref field, .. } if field == "temperature"));
    assert_eq!(emu.counters().chat_requests, 0);
}

#[tokio::test]
async fn trailing_slashes_in_base_url_are_handled() {
    let emu = emulator().await;
    let llm = client(&emu)
        .base_url(format!("{}//", emu.base_url()))
        .build()
        .unwrap();
    assert_eq!(llm.base_url(), emu.base_url());
    llm.invoke("ok").await.unwrap();
    assert_eq!(emu.last_request().unwrap().path, "/v1/chat/completions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_never_reach_the_caller() {
    let emu = Emulator::builder()
        .token_ttl(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let llm = client(&emu)
        .refresh_buffer(Duration::from_secs(1))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut calls = 0u64;
    while started.elapsed() < Duration::from_secs(6) {
        llm.invoke("still here")
            .await
            .expect("no 401 reaches the caller");
        calls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let counters = emu.counters();
    // About 6 / (2 - 1) refreshes: one per usable second, never one per request.
    assert!(
        (4..=10).contains(&counters.auth_requests),
        "{} IAM calls for {calls} requests",
        counters.auth_requests
    );
    assert!(calls > 5 * counters.auth_requests);
    assert_eq!(
        counters.unauthorized, 0,
        "tokens were refreshed before expiry"
    );
}

#[tokio::test]
async fn revoked_tokens_are_replaced_after_one_refresh() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("one").await.unwrap();
    emu.revoke_tokens();
    assert_eq!(llm.invoke("two").await.unwrap(), "two");
    let counters = emu.counters();
    assert_eq!(counters.auth_requests, 2);
    assert_eq!(counters.unauthorized, 1);
    assert_eq!(counters.chat_requests, 3);
}

#[tokio::test]
async fn a_second_401_is_an_auth_error() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("warm up").await.unwrap();
    emu.inject(Target::Chat, Fault::Status(401), 2);
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::TokenRejected { .. })),
        "{err:?}"
    );
    let counters = emu.counters();
    assert_eq!(counters.chat_requests, 3, "one retry with a new token");
    assert_eq!(counters.auth_requests, 2);
}

#[tokio::test]
async fn a_403_is_retried_once_with_a_refreshed_token() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("warm up").await.unwrap();
    // Some gateways answer an expired token with 403: one refresh, then success.
    emu.inject(Target::Chat, Fault::Status(403), 1);
    assert_eq!(llm.invoke("again").await.unwrap(), "again");
    let counters = emu.counters();
    assert_eq!(counters.auth_requests, 2, "exactly one refresh");
    assert_eq!(counters.chat_requests, 3);
    // Twice: the key really has no rights, reported as the API's 403.
    emu.inject(Target::Chat, Fault::Status(403), 2);
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(matches!(err, Error::Api { status: 403, .. }), "{err:?}");
    assert_eq!(emu.counters().auth_requests, 3);
    assert_eq!(emu.counters().chat_requests, 5);
}

#[tokio::test]
async fn a_rejected_api_key_is_final_at_once() {
    let emu = emulator().await;
    // An API key and a key id/secret together: refused, naming both.
    let err = client(&emu).api_key("some-key").build().unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "api_key"),
        "{err}"
    );
    let llm = EvolutionInference::builder()
        .base_url(emu.base_url())
        .api_key("not-a-token-the-emulator-issued")
        .build()
        .unwrap();
    let err = llm.invoke("hi").await.unwrap_err();
    assert!(
        matches!(err, Error::Auth(AuthError::KeyRejected { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("API key"), "{err}");
    assert_eq!(emu.counters().chat_requests, 1);
}

#[tokio::test]
async fn rate_limits_wait_for_retry_after() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("warm up").await.unwrap();
    emu.inject(Target::Chat, Fault::StatusRetryAfter(429, 1), 1);
    let started = Instant::now();
    assert_eq!(
        llm.invoke("after the wait").await.unwrap(),
        "after the wait"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(emu.counters().chat_requests, 3);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_with_attempts() {
    let emu = emulator().await;
    let llm = client(&emu).max_retries(2).build().unwrap();
    emu.inject(Target::Chat, Fault::Status(500), 3);
    let err = llm.invoke("x").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("3 attempt"), "{err}");
    assert_eq!(emu.counters().chat_requests, 3);

    for status in [502, 503, 504] {
        emu.inject(Target::Chat, Fault::Status(status), 1);
        assert_eq!(
            llm.invoke("recovers").await.unwrap(),
            "recovers",
            "{status}"
        );
    }
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("warm up").await.unwrap();
    for status in [400u16, 404, 422] {
        let before = emu.counters().chat_requests;
        emu.inject(Target::Chat, Fault::Status(status), 1);
        let err = llm.invoke("x").await.unwrap_err();
        match &err {
            Error::Api {
                status: s, message, ..
            } => {
                assert_eq!(*s, status);
                assert!(!message.is_empty());
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(
            emu.counters().chat_requests,
            before + 1,
            "{status} sent once"
        );
    }
}

#[tokio::test]
async fn timeouts_and_unreachable_servers() {
    let emu = emulator().await;
    let llm = client(&emu)
        .request_timeout(Duration::from_millis(300))
        .max_retries(1)
        .build()
        .unwrap();
    llm.invoke("warm up").await.unwrap();
    emu.inject(Target::Chat, Fault::Delay(Duration::from_secs(3)), 2);
    let err = llm.invoke("slow").await.unwrap_err();
    assert!(matches!(err, Error::Timeout { attempts: 2, .. }), "{err:?}");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let llm = client(&emu)
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .max_retries(1)
        .build()
        .unwrap();
    let err = llm.invoke("nobody home").await.unwrap_err();
    assert!(
        matches!(err, Error::Connection { attempts: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("base_url"), "{err}");
}

#[tokio::test]
async fn malformed_replies_are_invalid_responses() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    for fault in [Fault::MissingField, Fault::NotJson, Fault::Html] {
        emu.inject(Target::Chat, fault.clone(), 1);
        let err = llm.invoke("x").await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidResponse { .. }),
            "{fault:?}: {err:?}"
        );
    }
    emu.inject(Target::Chat, Fault::DropConnection, 1);
    assert_eq!(llm.invoke("dropped once").await.unwrap(), "dropped once");
}

#[tokio::test]
async fn generate_keeps_order_and_bounds_concurrency() {
    let emu = Emulator::builder()
        .word_delay(Duration::from_millis(5))
        .start()
        .await
        .unwrap();
    let llm = client(&emu).max_concurrency(8).build().unwrap();
    let prompts: Vec<String> = (0..100).map(|i| format!("prompt number {i}")).collect();
    let result = llm
        .invoke_batch(&prompts, ChatOptions::default())
        .await
        .unwrap();
    assert_eq!(result.generations.len(), 100);
    for (i, generation) in result.generations.iter().enumerate() {
        assert_eq!(generation[0].text, format!("prompt number {i}"));
        assert_eq!(generation[0].finish_reason.as_deref(), Some("stop"));
    }
    let peak = emu.counters().peak_in_flight;
    assert!(peak > 1 && peak <= 8, "peak in flight {peak}");
    assert_eq!(result.usage.completion_tokens, 300);
    assert_eq!(result.usage.total_tokens, result.usage.prompt_tokens + 300);

    // Per-call stop override.
    let stopped = llm
        .invoke_batch(&["alpha beta gamma"], &ChatOptions::new().stop(["gamma"]))
        .await
        .unwrap();
    assert_eq!(stopped.texts(), vec!["alpha beta"]);
}

#[tokio::test]
async fn a_failed_prompt_does_not_lose_the_others() {
    let emu = emulator().await;
    let llm = client(&emu)
        .max_concurrency(1)
        .max_retries(0)
        .build()
        .unwrap();
    llm.invoke("warm up").await.unwrap();
    emu.inject(Target::Chat, Fault::Status(400), 1);
    let conversations = (0..5)
        .map(|i| vec![ChatMessage::user(format!("p{i}"))])
        .collect();
    let outcomes = llm.batch(conversations, &ChatOptions::default()).await;
    assert!(outcomes[0].is_err());
    for (i, outcome) in outcomes.iter().enumerate().skip(1) {
        assert_eq!(outcome.as_ref().unwrap().content(), format!("p{i}"));
    }
    emu.inject(Target::Chat, Fault::Status(400), 1);
    let err = llm
        .invoke_batch(&["a", "b"], ChatOptions::default())
        .await
        .unwrap_err();
    // The answer that succeeded is kept; only the failed prompt is empty.
    assert_eq!(err.partial.texts(), vec!["", "b"]);
    assert!(err.partial.generations[0].is_empty());
    assert_eq!(err.failures.len(), 1);
    assert_eq!(err.first().0, 0);
    assert_eq!(err.first().1.status(), Some(400));
    // With `?` it becomes Error::Batch.
    let err: Error = err.into();
    assert!(
        matches!(
            err,
            Error::Batch {
                failed: 1,
                total: 2,
                index: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn streaming_delivers_chunks_as_they_are_written() {
    let emu = Emulator::builder()
        .word_delay(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    let llm = client(&emu).build().unwrap();
    let started = Instant::now();
    let mut stream = llm.stream("one two three four five six").await.unwrap();
    let mut first_text_at = None;
    let mut text = String::new();
    let mut usage = None;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        if let Some(piece) = chunk.content() {
            first_text_at.get_or_insert_with(|| started.elapsed());
            text.push_str(piece);
        }
        usage = usage.or(chunk.usage);
    }
    let total = started.elapsed();
    let first = first_text_at.unwrap();
    assert!(
        total - first >= Duration::from_millis(400),
        "first chunk at {first:?}, done at {total:?}"
    );
    assert_eq!(text, "one two three four five six");
    assert_eq!(usage.expect("usage chunk").completion_tokens, 6);
    let body = last_body(&emu);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn streamed_and_plain_answers_agree() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    let prompt = "the quick brown fox jumps over the lazy dog";
    let plain = llm.invoke(prompt).await.unwrap();
    let joined: String = llm
        .stream(prompt)
        .await
        .unwrap()
        .filter_map(|c| async move { c.unwrap().content().map(str::to_string) })
        .collect()
        .await;
    assert_eq!(joined, plain);
    // A client built with streaming(true) streams under invoke.
    let streaming = client(&emu).streaming(true).build().unwrap();
    assert_eq!(streaming.invoke(prompt).await.unwrap(), plain);
    assert_eq!(last_body(&emu)["stream"], true);
}

#[tokio::test]
async fn a_stream_that_stalls_past_the_timeout_is_a_timeout() {
    let emu = Emulator::builder()
        .word_delay(Duration::from_millis(1500))
        .start()
        .await
        .unwrap();
    let llm = client(&emu)
        .request_timeout(Duration::from_millis(500))
        .max_retries(0)
        .build()
        .unwrap();
    let mut stream = llm.stream("a b").await.unwrap();
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    match last.unwrap() {
        Err(Error::Timeout { url, timeout, .. }) => {
            assert!(url.ends_with("/chat/completions"), "{url}");
            assert_eq!(timeout, Duration::from_millis(500));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_cut_stream_yields_its_chunks_then_an_error() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    llm.invoke("warm up").await.unwrap();
    let before = emu.counters().chat_requests;
    emu.inject(Target::Chat, Fault::CutStream(3), 1);
    let items: Vec<_> = llm.stream("a b c d e f g").await.unwrap().collect().await;
    let (last, chunks) = items.split_last().unwrap();
    assert_eq!(chunks.len(), 3);
    assert!(chunks.iter().all(Result::is_ok));
    assert!(matches!(last, Err(Error::Stream { .. })), "{last:?}");
    assert_eq!(
        emu.counters().chat_requests,
        before + 1,
        "never retried midway"
    );

    emu.inject(Target::Chat, Fault::StreamError(2), 1);
    let items: Vec<_> = llm.stream("a b c d").await.unwrap().collect().await;
    let err = items.last().unwrap().as_ref().unwrap_err();
    assert!(
        err.to_string().contains("the server sent an error"),
        "{err}"
    );
}

#[tokio::test]
async fn stream_start_failures_are_retried() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    emu.inject(Target::Chat, Fault::Status(503), 1);
    let response = llm
        .stream("still works")
        .await
        .unwrap()
        .collect_response()
        .await
        .unwrap();
    assert_eq!(response.content(), "still works");
}

#[tokio::test]
async fn tool_calls_round_trip() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    let weather = Tool::function(
        "get_weather",
        "Current weather in a city",
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
    );
    let options = ChatOptions::new()
        .tools(vec![weather.clone()])
        .tool_choice(ToolChoice::Auto);
    let mut messages = vec![ChatMessage::user("please get_weather Paris")];
    let response = llm.chat(&messages, &options).await.unwrap();
    assert_eq!(response.finish_reason(), Some("tool_calls"));
    let call = response.tool_calls()[0].clone();
    assert_eq!(call.function.name, "get_weather");
    let arguments: serde_json::Value = serde_json::from_str(&call.function.arguments).unwrap();
    assert_eq!(arguments["city"], "Paris");
    let body = last_body(&emu);
    assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(body["tool_choice"], "auto");

    // The same call streamed arrives in fragments and is joined.
    let streamed = llm
        .stream_chat(&messages, &options)
        .await
        .unwrap()
        .collect_response()
        .await
        .unwrap();
    assert_eq!(streamed.tool_calls()[0].function.name, "get_weather");
    assert_eq!(
        streamed.tool_calls()[0].function.arguments,
        call.function.arguments
    );

    messages.push(ChatMessage::assistant_tool_calls(None, vec![call.clone()]));
    messages.push(ChatMessage::tool(call.id.clone(), "sunny, 21 C"));
    let answer = llm.chat(&messages, &options).await.unwrap();
    assert_eq!(answer.content(), "Tool result: sunny, 21 C");
    let body = last_body(&emu);
    assert_eq!(body["messages"][2]["tool_call_id"], call.id);
    assert_eq!(
        body["messages"][1]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
}

#[tokio::test]
async fn embeddings_keep_order_and_dimensions() {
    let emu = Emulator::builder()
        .embedding_dimensions(12)
        .start()
        .await
        .unwrap();
    let embeddings = EvolutionEmbeddings::builder()
        .model("emulator/embed")
        .key_id(emu.key_id())
        .secret(emu.secret())
        .base_url(emu.base_url())
        .auth_url(emu.auth_url())
        .build()
        .unwrap();
    let texts = ["first text", "second text", "third text"];
    let vectors = embeddings.embed_many(&texts).await.unwrap();
    assert_eq!(vectors.len(), 3);
    assert!(vectors.iter().all(|v| v.len() == 12));
    assert_ne!(vectors[0], vectors[1]);
    assert_eq!(embeddings.embed("second text").await.unwrap(), vectors[1]);
    assert_eq!(last_body(&emu)["model"], "emulator/embed");

    // Sharing the chat client's pool and token cache: no new IAM request.
    let llm = client(&emu).build().unwrap();
    llm.invoke("hi").await.unwrap();
    let shared = EvolutionEmbeddings::from_inference(&llm, "emulator/embed");
    let auth_before = emu.counters().auth_requests;
    shared.embed("x").await.unwrap();
    assert_eq!(emu.counters().auth_requests, auth_before);
}

#[tokio::test]
async fn models_are_listed() {
    let emu = emulator().await;
    let llm = client(&emu).build().unwrap();
    let models = llm.list_models().await.unwrap();
    assert_eq!(models[0].id, "emulator/echo-1");
}

#[tokio::test]
async fn identity_and_clones() {
    let emu = emulator().await;
    let llm = client(&emu).temperature(0.5).build().unwrap();
    assert_eq!(llm.llm_type(), "cloud-ru-tech");
    let params = llm.identifying_params();
    assert_eq!(params["temperature"], 0.5);
    assert_eq!(params["base_url"], emu.base_url());
    assert_eq!(params["max_tokens"], 512);

    // Clones share the token cache but keep their own parameters.
    let mut other = llm.clone();
    other.options_mut().temperature = Some(0.0);
    llm.invoke("a").await.unwrap();
    other.invoke("b").await.unwrap();
    assert_eq!(emu.counters().auth_requests, 1);
    assert_eq!(last_body(&emu)["temperature"], 0.0);
    assert_eq!(llm.options().temperature, Some(0.5));
    let shown = format!("{llm:?}");
    assert!(!shown.contains(emu.secret()), "{shown}");
}

#[tokio::test]
async fn configuration_from_the_environment() {
    let emu = emulator().await;
    // The only test touching these variables.
    std::env::set_var("EVOLUTION_KEY_ID", emu.key_id());
    std::env::set_var("EVOLUTION_SECRET", emu.secret());
    std::env::set_var("EVOLUTION_BASE_URL", emu.base_url());
    std::env::set_var("EVOLUTION_TOKEN_URL", emu.auth_url());
    std::env::set_var("EVOLUTION_MODEL", "env/model");
    std::env::set_var("EVOLUTION_PROJECT_ID", "env-project");
    let llm = EvolutionInference::from_env().unwrap();
    assert_eq!(llm.invoke("from env").await.unwrap(), "from env");
    let request = emu.last_request().unwrap();
    assert_eq!(request.body["model"], "env/model");
    assert_eq!(request.project_id.as_deref(), Some("env-project"));
    // Explicit settings win over the environment.
    let llm = EvolutionInference::builder()
        .model("explicit")
        .from_env()
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(llm.model(), "explicit");
    for name in [
        "EVOLUTION_KEY_ID",
        "EVOLUTION_SECRET",
        "EVOLUTION_BASE_URL",
        "EVOLUTION_TOKEN_URL",
        "EVOLUTION_MODEL",
        "EVOLUTION_PROJECT_ID",
    ] {
        std::env::remove_var(name);
    }
    let err = EvolutionInference::from_env().unwrap_err();
    assert!(err.to_string().contains("EVOLUTION_"), "{err}");
}

#[tokio::test]
async fn an_unreachable_iam_reports_the_attempts_it_made() {
    let emu = emulator().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let auth_url = format!("http://{}/api/v1/auth/token", closed.local_addr().unwrap());
    drop(closed);
    let llm = client(&emu)
        .auth_url(auth_url)
        .auth_max_retries(2)
        .build()
        .unwrap();
    let err = llm.invoke("hi").await.unwrap_err();
    match &err {
        Error::Auth(AuthError::Connection { attempts, .. }) => assert_eq!(*attempts, 3),
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("after 3 attempt(s)"), "{err}");
    assert_eq!(emu.counters().chat_requests, 0);
}
